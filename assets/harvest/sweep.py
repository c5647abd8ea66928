"""How long soundharvest keeps coming back for runs that were not ready, and when it stops.

A day whose catalog still holds `pending` rows is materialized again after growing intervals
(by default 10 min, 1 h, 4 h, then daily: the first wait is short because generations and
runs just finishing are ready within minutes) until `give_up_after` has passed since the day
ended. Then the sweep runs it one last time (run key `sweep:<day>:final`): that run's catalog
says in the `error` of each row still pending that soundharvest gave up, and from then on
nothing sweeps the day. A rerun by hand still tries those rows; while they stay pending they
keep saying it (the sweep still will not come back), and no other run ever writes it: a day
nobody swept (the sweep is off, or the day was harvested late) has pending rows, not given-up
ones.

| variable                           | default        |
|------------------------------------|----------------|
| `SOUNDHARVEST_SWEEP_INTERVALS`     | `10m,1h,4h,1d` |
| `SOUNDHARVEST_GIVE_UP_AFTER_DAYS`  | `7`            |
"""

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from assets.harvest.catalog_rows import row_keys
from resources.storage import Storage

GAVE_UP = "soundharvest gave up waiting"
# The sensor ticks every 10 minutes, a little early or late: a wait that ends within this of
# a tick is over at that tick, or a 10-minute wait would often take 20.
TICK_SLACK = timedelta(minutes=1)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def day_end(day: str) -> datetime:
    """When the UTC day `YYYY-MM-DD` ends (its partition exists from then on)."""
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC) + timedelta(days=1)


@dataclass(frozen=True)
class SweepPolicy:
    intervals: tuple[timedelta, ...] = (
        timedelta(minutes=10),
        timedelta(hours=1),
        timedelta(hours=4),
        timedelta(days=1),
    )
    give_up_after: timedelta = timedelta(days=7)  # counted from the end of the day

    def __post_init__(self) -> None:
        if not self.intervals or min(self.intervals) <= timedelta(0):
            raise ValueError("sweep intervals must be positive, e.g. 1h,4h,1d")
        if self.give_up_after <= timedelta(0):
            raise ValueError("the give-up horizon must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "SweepPolicy":
        env = os.environ if environ is None else environ
        intervals = env.get("SOUNDHARVEST_SWEEP_INTERVALS", "").strip()
        days = env.get("SOUNDHARVEST_GIVE_UP_AFTER_DAYS", "").strip()
        return cls(
            _intervals(intervals) if intervals else cls.intervals,
            _days(days) if days else cls.give_up_after,
        )

    def interval(self, sweeps_done: int) -> timedelta:
        """The wait before the next sweep: the intervals in turn, then the last one again."""
        return self.intervals[min(sweeps_done, len(self.intervals) - 1)]

    def gave_up(self, day: str, now: datetime) -> bool:
        return now >= day_end(day) + self.give_up_after


def _days(text: str) -> timedelta:
    try:
        return timedelta(days=float(text))
    except ValueError:
        raise ValueError(f"SOUNDHARVEST_GIVE_UP_AFTER_DAYS={text!r} is not a number") from None


def _intervals(text: str) -> tuple[timedelta, ...]:
    parts = [part.strip() for part in text.split(",")]
    matches = [_DURATION.fullmatch(part) for part in parts]
    if not all(matches):
        raise ValueError(
            f"SOUNDHARVEST_SWEEP_INTERVALS={text!r}: expected durations like 1h,4h,1d (m, h, d)"
        )
    return tuple(timedelta(**{_UNITS[m[2]]: float(m[1])}) for m in matches if m)


def final_sweep_key(day: str) -> str:
    """The run key of the sweep's last run of `day`, the run that gives up on it."""
    return f"sweep:{day}:final"


def mark_given_up(
    catalog: pd.DataFrame,
    day: str,
    now: datetime,
    policy: SweepPolicy,
    *,
    final_sweep: bool = False,
    given_up: Collection[str] = (),
) -> pd.DataFrame:
    """The day's catalog with its pending rows saying soundharvest gave up, the answer the API
    last gave kept at the end of the text: every pending row in the sweep's final run of the
    day (`final_sweep`), and in any other run the rows whose earlier catalog row said so
    already (`given_up`, their keys: `catalog.row_keys`). Only past the horizon: a policy
    moved further out makes the sweep come back, and then the text would not be true.
    """
    if not policy.gave_up(day, now) or not (final_sweep or given_up):
        return catalog
    age = (now - day_end(day)).days
    limit = policy.give_up_after / timedelta(days=1)
    prefix = (
        f"{GAVE_UP}: still pending {age} days after the day ended, past the {limit:g}-day "
        "limit, so no sweep fetches it again (rerun the day to try); last answer: "
    )
    out = catalog.copy()
    error = out["error"].astype("string").fillna("")
    rows = (out["status"] == "pending") & ~error.str.startswith(GAVE_UP)
    if not final_sweep:
        rows &= row_keys(out).isin(list(given_up)).fillna(False).astype(bool)
    out.loc[rows, "error"] = [prefix + text for text in error[rows]]
    return out


def given_up_rows(catalog: Storage, day: str) -> set[str]:
    """The keys of the rows of the day's catalog (as it is now) that say soundharvest gave up."""
    try:
        with catalog.open(f"sound_catalog/date={day}/part-0.parquet") as file:
            columns = ["run_id", "task_id", "status", "error"]
            table = pq.read_table(file, columns=columns).to_pandas()
    except FileNotFoundError:
        return set()
    said = (table["status"] == "pending") & table["error"].fillna("").str.startswith(GAVE_UP)
    return set(row_keys(table[said]).dropna())


@dataclass(frozen=True)
class DayPending:
    """What a day's catalog says about its pending rows."""

    pending: int
    given_up: int  # pending rows that already say soundharvest gave up


@dataclass(frozen=True)
class Sweep:
    day: str
    run_key: str


def plan_sweeps(
    days: Mapping[str, DayPending],
    state: Mapping[str, Any],
    now: datetime,
    policy: SweepPolicy,
) -> tuple[list[Sweep], dict[str, Any]]:
    """The days to materialize again now, and the new state (per day: sweeps done so far and
    when the last one was asked for; the clock starts when pending rows are first seen).

    Past the horizon a day gets one last run, after which its catalog says soundharvest gave
    up; from then on it is left alone. Days without pending rows drop out of the state.
    """
    sweeps, new_state = [], {}
    for day, rows in sorted(days.items()):
        if rows.pending == 0:
            continue
        if policy.gave_up(day, now):
            if rows.given_up < rows.pending:
                sweeps.append(Sweep(day, final_sweep_key(day)))
            continue
        seen = state.get(day)
        if seen is None:
            new_state[day] = {"sweeps": 0, "since": now.isoformat()}
        elif now + TICK_SLACK >= datetime.fromisoformat(seen["since"]) + policy.interval(
            seen["sweeps"]
        ):
            done = seen["sweeps"] + 1
            sweeps.append(Sweep(day, f"sweep:{day}:{done}"))
            new_state[day] = {"sweeps": done, "since": now.isoformat()}
        else:
            new_state[day] = dict(seen)
    return sweeps, new_state


def catalog_days(catalog: Storage) -> list[str]:
    """The days that have a catalog partition under `catalog` (the catalog root)."""
    return [
        name.removeprefix("date=")
        for name in catalog.listdir("sound_catalog")
        if name.startswith("date=")
    ]


def day_pending(catalog: Storage, day: str) -> DayPending:
    """Counts of a day's pending rows, reading only the two columns that tell."""
    with catalog.open(f"sound_catalog/date={day}/part-0.parquet") as file:
        table = pq.read_table(file, columns=["status", "error"]).to_pandas()
    pending = table[table["status"] == "pending"]
    given_up = pending["error"].fillna("").str.startswith(GAVE_UP)
    return DayPending(pending=len(pending), given_up=int(given_up.sum()))
