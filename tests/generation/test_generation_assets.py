"""`sound_generations` materialized in process against the sandbox over real HTTP: a sheet
becomes tasks and then catalog rows; no key is created twice, on a rerun or on another day;
takes, in doubt, 402 mid-day, PAYMENT_REQUIRED, budgets, throttling, a wrong key, a new round.
The sandbox counts the tasks it created per prompt: that count is the proof."""

import pandas as pd
import pytest
from dagster import DagsterInstance

from assets.generation.ledger import DEAD_INTENT
from resources.error_kinds import ERROR_KIND_KEY, OPERATOR

from support.generation_kit import (
    CHAIN,
    DAY,
    NEXT,
    creates,
    generate,
    ledger_of,
    prompts,
    rows_of,
    statuses,
    storage_with_prompts,
    write_sheet,
)
from support.pipeline_kit import failure_messages, read_catalog, step_events


@pytest.fixture
def storage(tmp_path):
    return storage_with_prompts(tmp_path)


@pytest.fixture
def sheets(tmp_path):
    return tmp_path / "prompts"


def materialization(result, asset: str = "sound_generations"):
    [event] = [
        e.event_specific_data.materialization
        for e in step_events(result, "ASSET_MATERIALIZATION")
        if e.event_specific_data.materialization.asset_key.to_user_string() == asset
    ]
    return event.metadata


def in_doubt_check(result):
    [check] = [
        e.event_specific_data
        for e in step_events(result, "ASSET_CHECK_EVALUATION")
        if e.event_specific_data.check_name == "generations_in_doubt"
    ]
    return check


def test_a_sheet_becomes_catalog_rows_carrying_its_prompts_and_a_rerun_creates_nothing(
    sandbox, storage, sheets
) -> None:
    sandbox.set_faults(generation_s=0.0)
    write_sheet(
        sheets,
        DAY,
        [
            {"prompt": "rain on a tin roof", "duration": 2, "takes": 2, "mood": "calm"},
            {"prompt": "thunder", "duration": 3, "audio_type": "music"},
            {"prompt": "", "duration": 2},
            {"prompt": "a crowd cheers", "duration": 90},
        ],
    )
    assert generate(sandbox, storage, assets=CHAIN).success
    assert creates(sandbox) == {"rain on a tin roof": 2, "thunder": 1}
    catalog = read_catalog(storage, DAY).sort_values(["status", "extra"])
    assert list(catalog["status"]) == ["ok", "ok", "ok", "rejected", "rejected"]
    ok = catalog[catalog["status"] == "ok"]
    assert list(ok["prompt"]) == ["rain on a tin roof", "rain on a tin roof", "thunder"]
    assert list(ok["audio_type"]) == ["sound", "sound", "music"]
    assert list(ok["requested_duration_s"]) == [2.0, 2.0, 3.0]
    assert list(ok["extra"]) == ['{"mood": "calm", "take": 1}', '{"mood": "calm", "take": 2}',
                                 '{"take": 1}']  # fmt: skip
    assert ok["task_id"].notna().all() and ok["manifest"].eq(str(sheets / f"{DAY}.csv")).all()
    # A rejected row keeps its prompt as the sheet has it, as a rejected manifest row does.
    rejected = catalog[catalog["status"] == "rejected"]
    assert {
        error: prompt if isinstance(prompt, str) else None
        for error, prompt in zip(rejected["error"], rejected["prompt"], strict=True)
    } == {
        "line 4: prompt is empty": None,
        "line 5: duration 90 s is outside 0.5..30 s (SOUNDHARVEST_GENERATE_MIN_DURATION_S, "
        "SOUNDHARVEST_GENERATE_MAX_DURATION_S)": "a crowd cheers",
    }
    # Rerun, then harvest again: not one create more, the catalog as it was.
    assert generate(sandbox, storage, assets=CHAIN).success
    assert creates(sandbox) == {"rain on a tin roof": 2, "thunder": 1}
    again = read_catalog(storage, DAY).sort_values(["status", "extra"])
    assert list(again["run_id"]) == list(catalog["run_id"])


def test_a_prompt_sent_on_another_day_is_not_sent_again(sandbox, storage, sheets) -> None:
    write_sheet(sheets, DAY, ["rain", "wind"])
    write_sheet(sheets, NEXT, ["wind", "hail", {"prompt": "rain", "takes": 2}])
    assert generate(sandbox, storage, DAY).success
    task = rows_of(storage, DAY).set_index("prompt").loc["wind", "task_id"]
    assert generate(sandbox, storage, NEXT).success
    assert creates(sandbox) == {"rain": 2, "wind": 1, "hail": 1}  # rain's take 2 is new
    rows = rows_of(storage, NEXT)
    assert statuses(rows) == {"created": 2, "already submitted": 2}
    wind = rows.set_index("prompt").loc["wind"]
    assert wind["reason"] == f"sent on {DAY} (task {task})"
    # The day that sent it keeps it: its rerun is no new create either.
    assert generate(sandbox, storage, DAY).success
    assert statuses(rows_of(storage, DAY)) == {"created": 2}
    assert sum(creates(sandbox).values()) == 4


def test_takes_are_generations_of_their_own(sandbox, storage, sheets) -> None:
    write_sheet(sheets, DAY, [{"prompt": "a bell", "duration": 1, "takes": 3}, "a bell"])
    assert generate(sandbox, storage).success
    rows = rows_of(storage)
    assert list(rows["take"]) == [1, 2, 3, 1]
    assert list(rows["status"]) == ["created", "created", "created", "created"]
    assert creates(sandbox) == {"a bell": 4}  # the last row has no duration: another key


def test_a_lost_answer_is_in_doubt_everywhere_and_sent_again_only_on_request(
    sandbox, storage, sheets
) -> None:
    write_sheet(sheets, DAY, prompts(3))
    sandbox.script("api", "lost")  # the first create is made, its answer dropped
    result = generate(sandbox, storage, camb={"max_concurrency": 1})
    assert result.success
    rows = rows_of(storage)
    assert statuses(rows) == {"created": 2, "in doubt": 1}
    doubtful = rows[rows["status"] == "in doubt"].iloc[0]
    assert "RemoteProtocolError" in doubtful["reason"]
    assert materialization(result)["in doubt"].value == 1
    check = in_doubt_check(result)
    assert not check.passed and check.severity.value == "WARN"
    assert check.description.startswith("1 generation in doubt (sent, their answer lost")
    assert f"{DAY} (1)" in check.description and "--resubmit-in-doubt" in check.description
    assert creates(sandbox) == {f"a sound {i}": 1 for i in range(3)}
    # A plain rerun leaves it alone; asked, it is sent again (paid twice, as asked).
    rerun = generate(sandbox, storage)
    assert statuses(rows_of(storage)) == {"created": 2, "in doubt": 1}
    assert not in_doubt_check(rerun).passed
    asked = generate(sandbox, storage, config={"resubmit_in_doubt": True})
    assert statuses(rows_of(storage)) == {"created": 3}
    assert creates(sandbox)[doubtful["prompt"]] == 2
    assert in_doubt_check(asked).passed


def warnings_of(instance: DagsterInstance, result) -> list[str]:
    logs = instance.all_logs(result.run_id)
    return [log.user_message for log in logs if log.level >= 30 and log.dagster_event is None]


def test_402_mid_day_defers_the_rest_with_one_line_and_a_rerun_sends_them(
    sandbox, storage, sheets
) -> None:
    write_sheet(sheets, DAY, prompts(8))
    sandbox.set_faults(credits=3)
    instance = DagsterInstance.ephemeral()
    result = generate(sandbox, storage, camb={"max_concurrency": 1}, instance=instance)
    assert result.success  # what was created goes on to the harvest
    rows = rows_of(storage)
    assert statuses(rows) == {"created": 3, "deferred": 5}
    fix = f"top up the account's credits, then run `soundharvest generate {DAY}` again"
    assert rows.loc[rows["status"] == "deferred", "reason"].str.endswith(fix).all()
    stopped = materialization(result)["stopped"].value
    assert (
        stopped
        == f"the API is out of credits (HTTP 402): submissions stopped, 5 rows deferred: {fix}"
    )
    assert f"{DAY}: {stopped}" in warnings_of(instance, result)
    assert sandbox.stats()["create_requests"] == 4  # the one that met the 402, no more
    sandbox.set_faults(credits=100)  # topped up
    assert generate(sandbox, storage).success
    assert statuses(rows_of(storage)) == {"created": 8}
    assert creates(sandbox) == {f"a sound {i}": 1 for i in range(8)}


def test_a_task_that_ended_payment_required_is_sent_again_once_credits_are_back(
    sandbox, storage, sheets
) -> None:
    sandbox.set_faults(credits=1, out_of_credits="task", generation_s=0.0)
    write_sheet(sheets, DAY, prompts(2))
    assert generate(sandbox, storage, assets=CHAIN, camb={"max_concurrency": 1}).success
    catalog = read_catalog(storage, DAY)
    assert sorted(catalog["status"]) == ["failed", "ok"]
    assert "PAYMENT_REQUIRED" in catalog.loc[catalog["status"] == "failed", "error"].iloc[0]
    sandbox.set_faults(credits=10)
    assert generate(sandbox, storage, assets=CHAIN).success
    assert creates(sandbox) == {"a sound 0": 1, "a sound 1": 2}  # the unpaid one again
    assert sorted(read_catalog(storage, DAY)["status"]) == ["ok", "ok"]
    assert set(ledger_of(storage)["state"]) == {"created"}


def test_the_day_budget_defers_rows_and_counts_every_day_sent_today(
    sandbox, storage, sheets, monkeypatch
) -> None:
    monkeypatch.setenv("SOUNDHARVEST_GENERATE_PER_DAY", "3")
    write_sheet(sheets, DAY, prompts(2, "first"))
    write_sheet(sheets, NEXT, prompts(3, "second"))
    assert generate(sandbox, storage, DAY).success
    result = generate(sandbox, storage, NEXT)
    rows = rows_of(storage, NEXT)
    assert list(rows["status"]) == ["created", "deferred", "deferred"]
    assert rows["reason"].iloc[1] == (
        "deferred: over the budget (SOUNDHARVEST_GENERATE_PER_DAY=3; 3 generations sent "
        "today): sent by a later run when there is room"
    )
    assert materialization(result)["budget left"].value == {"per_day": 0}
    assert sum(creates(sandbox).values()) == 3
    monkeypatch.setenv("SOUNDHARVEST_GENERATE_PER_DAY", "10")  # tomorrow, as it were
    assert generate(sandbox, storage, NEXT).success
    assert statuses(rows_of(storage, NEXT)) == {"created": 3}


def test_the_seconds_budget_counts_audio_requested(sandbox, storage, sheets, monkeypatch) -> None:
    monkeypatch.setenv("SOUNDHARVEST_GENERATE_SECONDS_PER_MONTH", "10")
    write_sheet(sheets, DAY, [{"prompt": "a", "duration": 4}, {"prompt": "b", "duration": 4},
                              {"prompt": "c", "duration": 4}])  # fmt: skip
    assert generate(sandbox, storage).success
    assert statuses(rows_of(storage)) == {"created": 2, "deferred": 1}
    assert (
        "SOUNDHARVEST_GENERATE_SECONDS_PER_MONTH=10; 8 s of audio"
        in rows_of(storage)["reason"].iloc[2]
    )


def test_429_and_5xx_on_creates_are_retried_and_nothing_is_in_doubt(
    sandbox, storage, sheets
) -> None:
    sandbox.set_faults(retry_after="0")
    sandbox.script("api", "429", "503", "500", "502", "429")
    write_sheet(sheets, DAY, prompts(6))
    result = generate(sandbox, storage, camb={"max_concurrency": 2})
    assert result.success
    assert statuses(rows_of(storage)) == {"created": 6}
    assert creates(sandbox) == {f"a sound {i}": 1 for i in range(6)}
    assert sum(sandbox.stats()["faults_injected"].values()) == 5
    assert in_doubt_check(result).passed


def test_a_wrong_key_fails_in_seconds_as_the_operators_mistake_never_retried(
    sandbox, storage, sheets
) -> None:
    write_sheet(sheets, DAY, prompts(5))
    result = generate(sandbox, storage, camb={"api_key": "wrong-key"}, raise_on_error=False)
    assert not result.success
    [message] = failure_messages(result)
    assert "the API rejected the API key (HTTP 401: Invalid API key): check CAMB_API_KEY" in message
    [failure] = step_events(result, "STEP_FAILURE")
    assert failure.step_failure_data.user_failure_data.metadata[ERROR_KIND_KEY].value == OPERATOR
    assert step_events(result, "STEP_UP_FOR_RETRY") == []
    assert sandbox.stats()["tasks_created"] == 0 and sandbox.stats()["api_requests"] <= 5
    assert set(ledger_of(storage)["state"]) == {"not sent"}  # nothing in doubt
    assert "wrong-key" not in message


def test_regenerate_asks_for_a_new_round_and_the_ledger_keeps_both(
    sandbox, storage, sheets
) -> None:
    write_sheet(sheets, DAY, ["rain", "wind"])
    assert generate(sandbox, storage).success
    first = rows_of(storage)
    assert generate(sandbox, storage, config={"regenerate": True}).success
    second = rows_of(storage)
    assert list(second["round"]) == [2, 2, 1, 1]  # the first round keeps its catalog rows
    assert set(second["key"][:2]).isdisjoint(first["key"]) and statuses(second) == {"created": 4}
    assert creates(sandbox) == {"rain": 2, "wind": 2}
    ledger = ledger_of(storage)
    assert sorted(ledger["round"]) == [1, 1, 2, 2] and set(ledger["state"]) == {"created"}
    assert generate(sandbox, storage).success  # a plain rerun: round 2 stays, nothing new
    assert creates(sandbox) == {"rain": 2, "wind": 2}


def test_a_sheet_that_cannot_be_parsed_fails_its_day_naming_file_and_line(
    sandbox, storage, sheets
) -> None:
    sheets.mkdir()
    (sheets / f"{DAY}.csv").write_text('prompt\n"rain\n')
    result = generate(sandbox, storage, raise_on_error=False)
    [message] = failure_messages(result)
    assert message == (
        f"{DAY}: prompt sheet cannot be read: {sheets / DAY}.csv, line 2: malformed CSV: "
        "unexpected end of data: fix line 2 of that file (or remove it), then generate the "
        "day again"
    )
    assert creates(sandbox) == {}


def test_a_generation_whose_row_left_its_sheet_keeps_its_catalog_row(
    sandbox, storage, sheets
) -> None:
    sandbox.set_faults(generation_s=0.0)
    write_sheet(sheets, DAY, ["rain", "wind"])
    assert generate(sandbox, storage, assets=CHAIN).success
    write_sheet(sheets, DAY, ["rain"])  # wind was created: it stays, it was paid for
    assert generate(sandbox, storage, assets=CHAIN).success
    assert sorted(read_catalog(storage, DAY)["prompt"]) == ["rain", "wind"]
    assert sum(creates(sandbox).values()) == 2


def test_a_created_task_still_generating_is_pending_then_swept_to_ok(
    sandbox, storage, sheets
) -> None:
    sandbox.set_faults(generation_s=30.0)
    write_sheet(sheets, DAY, ["rain"])
    assert generate(sandbox, storage, assets=CHAIN).success
    [row] = read_catalog(storage, DAY).itertuples()
    assert (row.status, pd.isna(row.run_id)) == ("pending", True)
    assert row.error == "task status PENDING"


def test_dead_intents_are_settled_in_doubt_when_the_day_runs_again(
    sandbox, storage, sheets
) -> None:
    from assets.generation.generation_plan import day_view
    from assets.generation.keys import Request
    from assets.generation.ledger import Entry, Ledger

    write_sheet(sheets, DAY, ["rain", "wind"])
    request = Request("rain", None, "sound", 1)
    killed = Ledger(storage.catalog(), DAY, "killed-run")
    killed.expect([Entry(request.key(1), request.base, 1, "s.csv", 2, 1, "rain", None, "sound")])
    killed.intend([request.key(1)])  # and then the process died
    assert not day_view(storage.catalog(), DAY).dead.empty
    result = generate(sandbox, storage)
    rows = rows_of(storage).set_index("prompt")
    assert (rows.loc["rain", "status"], rows.loc["rain", "reason"]) == ("in doubt", DEAD_INTENT)
    assert rows.loc["wind", "status"] == "created"
    assert creates(sandbox) == {"wind": 1}
    assert not in_doubt_check(result).passed
