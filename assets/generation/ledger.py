"""The submissions ledger: every generation ever sent, by key, so none is paid for twice.

Kept in the catalog storage, one folder per sheet day, `_state/sound_generations/date=D/`, as
small Parquet files that are only ever added (object stores have no append): `seg-N.parquet`,
one per write, and `part-N.parquet`, the day compacted up to N. A record holds a key, its
details (sheet, line, prompt, duration, audio type, take, round), and a state:

| state       | meaning                                                       | sent again        |
|-------------|---------------------------------------------------------------|-------------------|
| `intended`  | about to be sent: written before the create leaves            | never (in doubt)  |
| `created`   | the API answered with a task id                               | never             |
| `in doubt`  | sent, answer lost (or the sender died after its intent)       | only when asked   |
| `not sent`  | never left, or refused before any work (429/5xx, 402)          | by a later run    |
| `refused`   | the API said what is wrong with it (422, ...)                  | never             |
| `unpaid`    | created, but its task ended PAYMENT_REQUIRED: nothing made    | by a later run    |

Write-ahead: a window's intents are one segment, written (atomically, synced) before any of
them is sent; their outcomes follow in later segments. The latest record of a key (by
sequence number) is its state, so readers merge every file of a day, and a crash between a
compaction and the removal of what it replaced changes nothing. An intent without an outcome
when a run starts is from a run that died: `settle` records it `in doubt`.

Asking about a new sheet reads only the key columns of every day (`history`, filtered by
the sheet's base keys): a year at 10,000 a day is a few hundred small reads (bench/README.md).
"""

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from assets.generation.keys import KEY_BYTES
from assets.harvest.catalog_rows import table_bytes
from resources.storage import Storage

LEDGER_DIR = "_state/sound_generations"
SUBMITTED = ("intended", "created", "in doubt")  # never sent again by itself
SPENT = SUBMITTED  # what counts against the budget: it may have been charged
DEAD_INTENT = (
    "the run that sent it stopped before its answer was recorded (killed?): it may have "
    "been created; `soundharvest generate D --resubmit-in-doubt` sends it again"
)
_UTC = pa.timestamp("us", tz="UTC")
_KEY = pa.binary(KEY_BYTES)
SCHEMA = pa.schema(
    [
        ("key", _KEY),
        ("base", _KEY),  # the key without its round: every round of a row shares it
        ("round", pa.int32()),
        ("seq", pa.int64()),  # the file's sequence number: the latest record wins
        ("state", pa.string()),
        ("task_id", pa.string()),
        ("reason", pa.string()),
        ("sheet", pa.string()),
        ("line", pa.int64()),
        ("take", pa.int32()),
        ("prompt", pa.string()),
        ("duration", pa.float64()),
        ("audio_type", pa.string()),
        ("intended_at", _UTC),  # when it was (about to be) sent: what the budget counts by
        ("answered_at", _UTC),
        ("dagster_run_id", pa.string()),
    ]
)
_FILE = re.compile(r"(seg|part)-(\d+)\.parquet")
_DATE = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


@dataclass(frozen=True)
class Entry:
    """What the ledger keeps of one generation besides its state: where it came from."""

    key: bytes
    base: bytes
    round: int
    sheet: str
    line: int
    take: int
    prompt: str
    duration: float | None
    audio_type: str


def day_dir(day: str) -> str:
    return f"{LEDGER_DIR}/date={day}"


class Ledger:
    """One day's ledger, as one run writes it (one run at a time: the generation lease)."""

    def __init__(self, state: Storage, day: str, dagster_run_id: str) -> None:
        self.state = state
        self.day = day
        self.run_id = dagster_run_id
        self._lock = threading.Lock()  # intents and outcomes are written from two threads
        self._seq = max((seq for _, seq in self._files()), default=0)
        self.entries: dict[bytes, Entry] = {}  # what this run is about to send
        self.intended_at: dict[bytes, datetime] = {}

    # -- reading ---------------------------------------------------------------------------

    def _files(self) -> list[tuple[str, int]]:
        found = []
        for name in self.state.listdir(day_dir(self.day)):
            if match := _FILE.fullmatch(name):
                found.append((name, int(match[2])))
        return sorted(found, key=lambda item: item[1])

    def latest(self) -> pd.DataFrame:
        """The day's latest record of each key (empty, with the columns, when none)."""
        tables = []
        for name, _ in self._files():
            with self.state.open(f"{day_dir(self.day)}/{name}") as file:
                tables.append(pq.read_table(file, schema=SCHEMA))
        if not tables:
            return SCHEMA.empty_table().to_pandas()
        return merged(pa.concat_tables(tables).to_pandas())

    # -- writing ---------------------------------------------------------------------------

    def expect(self, entries: Iterable[Entry]) -> None:
        """The details of what this run may send, by key, for its intents and outcomes."""
        self.entries.update((entry.key, entry) for entry in entries)

    def intend(self, keys: Sequence[bytes]) -> None:
        """The intents of a window, durable before any of it is sent."""
        now = datetime.now(UTC)
        records = []
        for key in keys:
            self.intended_at[key] = now
            records.append(self._record(self.entries[key], "intended", None, None, None))
        self._write(records)

    def record(self, outcomes: Sequence[tuple[bytes, str, str | None, str | None]]) -> None:
        """Outcomes (key, state, task id, reason) of creates this run sent or meant to."""
        now = datetime.now(UTC)
        self._write(
            [
                self._record(self.entries[key], state, task_id, reason, now)
                for key, state, task_id, reason in outcomes
            ]
        )

    def restate(self, rows: pd.DataFrame, state: str, reason: str) -> None:
        """New state for records of the day as `latest` read them (dead intents, unpaid)."""
        if rows.empty:
            return
        now = datetime.now(UTC)
        table = pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False)
        records = table.to_pylist()
        for record in records:
            record.update(state=state, reason=reason, answered_at=now)
            record["dagster_run_id"] = self.run_id
        self._write(records)

    def _record(
        self,
        entry: Entry,
        state: str,
        task_id: str | None,
        reason: str | None,
        answered_at: datetime | None,
    ) -> dict[str, Any]:
        return {
            **asdict(entry),
            "state": state,
            "task_id": task_id,
            "reason": reason,
            "intended_at": self.intended_at.get(entry.key),
            "answered_at": answered_at,
            "dagster_run_id": self.run_id,
        }

    def _write(self, records: list[dict[str, Any]], prefix: str = "seg") -> None:
        with self._lock:
            self._seq += 1
            for record in records:
                record["seq"] = self._seq
            data = table_bytes(pa.Table.from_pylist(records, schema=SCHEMA))
            self.state.write_bytes(data, f"{day_dir(self.day)}/{prefix}-{self._seq:08d}.parquet")

    def compact(self) -> None:
        """The day's files as one (`part-N`), then the files it replaces removed."""
        files = self._files()
        if len(files) < 2:
            return
        latest = self.latest()
        with self._lock:
            last = max(seq for _, seq in files)
            table = pa.Table.from_pandas(latest, schema=SCHEMA, preserve_index=False)
            relpath = f"{day_dir(self.day)}/part-{last:08d}.parquet"
            self.state.write_bytes(table_bytes(table), relpath)
        for name, seq in files:
            if seq <= last and name != f"part-{last:08d}.parquet":
                self.state.remove(f"{day_dir(self.day)}/{name}")


def merged(records: pd.DataFrame) -> pd.DataFrame:
    """The latest record of each key (of each day, when `date` is a column)."""
    by = ["date", "key"] if "date" in records else ["key"]
    ordered = records.sort_values("seq", kind="stable")
    return ordered.drop_duplicates(by, keep="last").reset_index(drop=True)


# -- every day at once -----------------------------------------------------------------------


def _dataset(state: Storage) -> ds.Dataset | None:
    root = state.path(LEDGER_DIR)
    if not state.exists(LEDGER_DIR):
        return None
    return ds.dataset(
        root,
        filesystem=state.fs,
        format="parquet",
        partitioning=_DATE,
        schema=SCHEMA.append(pa.field("date", pa.string())),
        ignore_prefixes=[".", "_"],
    )


def _scan(state: Storage, columns: list[str], where: ds.Expression) -> pd.DataFrame:
    dataset = _dataset(state)
    if dataset is None:
        return pd.DataFrame(columns=columns)
    return dataset.to_table(columns=columns, filter=where).to_pandas()


def history(state: Storage, bases: Iterable[bytes], *, besides: str | None = None) -> pd.DataFrame:
    """The latest record of every key, on any day (but `besides`), whose base is in `bases`:
    date, key, base, round, state, task id, reason. Reads the key columns only, then just the
    records of those keys."""
    wanted = pa.array(list(set(bases)), _KEY)
    if not len(wanted):
        return pd.DataFrame(columns=["date", "key", "base", "round", "state", "task_id"])
    where = ds.field("base").isin(wanted)
    if besides is not None:
        where &= ds.field("date") != besides
    columns = ["date", "key", "base", "round", "seq", "state", "task_id", "reason"]
    return merged(_scan(state, columns, where)).drop(columns="seq")


def in_doubt(state: Storage) -> dict[str, int]:
    """Day -> generations whose latest record is in doubt (or an intent a dead run left)."""
    doubtful = ds.field("state").isin(pa.array(["in doubt", "intended"]))
    candidates = _scan(state, ["key"], doubtful)
    if candidates.empty:
        return {}
    keys = pa.array(candidates["key"].unique(), _KEY)
    latest = merged(_scan(state, ["date", "key", "seq", "state"], ds.field("key").isin(keys)))
    latest = latest[latest["state"].isin(["in doubt", "intended"])]
    return {str(day): int(n) for day, n in latest.groupby("date").size().items()}


def spent_since(state: Storage, since: datetime) -> pd.DataFrame:
    """Generations sent (intended) since `since` whose latest state counts as spent:
    intended_at and duration, one row each."""
    columns = ["date", "key", "seq", "state", "intended_at", "duration"]
    records = merged(_scan(state, columns, ds.field("intended_at") >= pa.scalar(since, _UTC)))
    return records[records["state"].isin(SPENT)][["intended_at", "duration"]]


def latest_of_days(state: Storage, days: Iterable[str]) -> Mapping[str, pd.DataFrame]:
    """Each day's latest records, for the days asked (those without a ledger left out)."""
    found = {}
    for day in days:
        latest = Ledger(state, day, "").latest()
        if not latest.empty:
            found[day] = latest
    return found
