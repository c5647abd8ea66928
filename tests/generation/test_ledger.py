"""The submissions ledger and the budget as plain modules on a local catalog root: write-ahead
intents, the latest record winning, compaction that a crash cannot spoil, dead intents in
doubt, the cross-day history by base key, and what the budget counts by day and by month."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from assets.generation.budget import Allowance, Spent, spent
from assets.generation.generation_plan import day_view
from assets.generation.keys import Request
from assets.generation.ledger import SCHEMA, Entry, Ledger, day_dir, history, in_doubt
from assets.generation.limits import GenerationLimits
from assets.harvest.catalog_rows import table_bytes
from resources.storage import Storage

DAY, OTHER = "2026-11-05", "2026-11-04"


def entry(prompt: str, duration: float | None = 2.0, round_: int = 1) -> Entry:
    request = Request(prompt, duration, "sound", 1)
    return Entry(
        request.key(round_), request.base, round_, "s.csv", 2, 1, prompt, duration, "sound"
    )


def send(ledger: Ledger, *entries: Entry, state: str = "created") -> None:
    ledger.expect(entries)
    ledger.intend([e.key for e in entries])
    ledger.record([(e.key, state, f"task-{e.prompt}", None) for e in entries])


def files(state: Storage, day: str = DAY) -> list[str]:
    return state.listdir(day_dir(day))


def test_the_latest_record_of_a_key_is_its_state(tmp_path) -> None:
    state = Storage(str(tmp_path))
    ledger = Ledger(state, DAY, "run-1")
    rain, wind = entry("rain"), entry("wind")
    ledger.expect([rain, wind])
    ledger.intend([rain.key, wind.key])
    before = Ledger(state, DAY, "").latest()
    assert list(before["state"]) == ["intended", "intended"]  # durable before any answer
    ledger.record([(rain.key, "created", "t1", None), (wind.key, "in doubt", None, "lost")])
    latest = Ledger(state, DAY, "").latest().set_index("prompt")
    assert (latest.loc["rain", "state"], latest.loc["rain", "task_id"]) == ("created", "t1")
    assert (latest.loc["wind", "state"], latest.loc["wind", "reason"]) == ("in doubt", "lost")
    assert latest["intended_at"].notna().all() and latest["dagster_run_id"].eq("run-1").all()
    assert files(state) == ["seg-00000001.parquet", "seg-00000002.parquet"]


def test_compaction_leaves_one_file_and_a_crash_halfway_changes_nothing(tmp_path) -> None:
    state = Storage(str(tmp_path))
    ledger = Ledger(state, DAY, "run-1")
    for prompt in ("rain", "wind", "hail"):
        send(ledger, entry(prompt))
    before = Ledger(state, DAY, "").latest()
    segments = files(state)
    # A crash after the compacted file was written, before the segments were removed:
    leftovers = {name: state.read_bytes(f"{day_dir(DAY)}/{name}") for name in segments}
    ledger.compact()
    assert files(state) == ["part-00000006.parquet"]
    assert Ledger(state, DAY, "").latest().equals(before)
    for name, data in leftovers.items():
        state.write_bytes(data, f"{day_dir(DAY)}/{name}")
    assert Ledger(state, DAY, "").latest().equals(before)
    # A new run numbers its segments after everything there, and compacts again.
    later = Ledger(state, DAY, "run-2")
    send(later, entry("snow"))
    assert files(state)[-1] == "seg-00000008.parquet"
    later.compact()
    assert files(state) == ["part-00000008.parquet"]
    assert len(Ledger(state, DAY, "").latest()) == 4


def test_an_intent_a_dead_run_left_is_seen_in_doubt(tmp_path) -> None:
    state = Storage(str(tmp_path))
    ledger = Ledger(state, DAY, "killed")
    rain, wind = entry("rain"), entry("wind")
    ledger.expect([rain, wind])
    ledger.intend([rain.key, wind.key])
    ledger.record([(rain.key, "created", "t1", None)])  # then kill -9
    view = day_view(state, DAY)
    assert list(view.dead["prompt"]) == ["wind"]
    states = view.latest.set_index("prompt")["state"]
    assert dict(states) == {"rain": "created", "wind": "in doubt"}
    assert in_doubt(state) == {DAY: 1}  # the check counts it before any run settled it
    Ledger(state, DAY, "next").restate(view.dead, "in doubt", "died")
    assert in_doubt(state) == {DAY: 1}
    resent = Ledger(state, DAY, "resubmit")
    send(resent, wind)
    assert in_doubt(state) == {}


def test_history_finds_a_key_on_any_other_day_by_its_base_alone(tmp_path) -> None:
    state = Storage(str(tmp_path))
    send(Ledger(state, OTHER, "r"), entry("rain"), entry("wind", round_=2))
    send(Ledger(state, DAY, "r"), entry("hail"))
    found = history(
        state, [entry("rain").base, entry("wind").base, entry("snow").base], besides=DAY
    )
    assert sorted(zip(found["date"], found["round"], found["state"], strict=True)) == [
        (OTHER, 1, "created"),
        (OTHER, 2, "created"),
    ]
    assert history(state, [entry("hail").base], besides=DAY).empty
    assert list(history(state, [entry("hail").base])["date"]) == [DAY]
    assert history(Storage(str(tmp_path / "none")), [entry("rain").base]).empty


def write_spent(state: Storage, day: str, when: datetime, n: int, duration: float | None) -> None:
    """`n` generations of `day` sent at `when`, as a run would have recorded them."""
    records = []
    for i in range(n):
        e = entry(f"{day} {when.isoformat()} {i}", duration)
        records.append({**e.__dict__, "seq": 1, "state": "created", "intended_at": when})
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    state.write_bytes(
        table_bytes(table), f"{day_dir(day)}/seg-{abs(hash(when)) % 10**8:08d}.parquet"
    )


def test_the_budget_counts_what_was_sent_today_and_this_month_whatever_the_day(tmp_path) -> None:
    state = Storage(str(tmp_path))
    now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    write_spent(state, OTHER, now - timedelta(hours=2), 3, 2.0)  # today
    write_spent(state, DAY, now - timedelta(days=5), 4, None)  # this month, default duration
    write_spent(state, DAY, datetime(2026, 10, 31, 23, 0, tzinfo=UTC), 7, 2.0)  # last month
    limits = GenerationLimits(max_duration_s=30)
    assert spent(state, limits, now) == Spent(today=3, today_s=6.0, month=7, month_s=126.0)


def test_rows_over_a_limit_wait_saying_which_and_later_rows_wait_too() -> None:
    limits = GenerationLimits(per_day=5, per_month=100)
    allowance = Allowance(limits, Spent(today=3, month=50))
    assert [allowance.take(2.0) for _ in range(2)] == [None, None]
    third = allowance.take(2.0)
    assert third.startswith("deferred: over the budget (SOUNDHARVEST_GENERATE_PER_DAY=5; 5 ")
    assert allowance.take(None) == third  # the sheet's order is its priority
    assert allowance.left()["per_day"] == 0 and allowance.left()["per_month"] == 48


def test_the_month_can_be_spent_while_the_day_has_room() -> None:
    limits = GenerationLimits(per_day=100, per_month=10, seconds_per_month=1000)
    allowance = Allowance(limits, Spent(today=0, month=9, month_s=18))
    assert allowance.take(2.0) is None
    assert "SOUNDHARVEST_GENERATE_PER_MONTH=10; 10 generations sent this month" in allowance.take(
        2.0
    )


def test_seconds_limits_count_an_empty_duration_as_the_longest() -> None:
    limits = GenerationLimits(max_duration_s=30, seconds_per_day=40)
    allowance = Allowance(limits, Spent())
    assert allowance.take(None) is None  # 30 s counted
    assert "SOUNDHARVEST_GENERATE_SECONDS_PER_DAY=40" in allowance.take(15.0)
    assert Allowance(GenerationLimits(), Spent(today=10**6)).take(None) is None  # no limit
