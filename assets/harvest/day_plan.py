"""Which of a day's runs to fetch: the earlier row kept, the stored file adopted, or fetched.

For each accepted run id of the day:

- an `ok` row from an earlier materialization whose file is still there with its size is
  kept as it is: nothing is fetched again;
- a file found at its final path without such a row (a crash came between publishing the
  file and writing the ledger) is verified, hashed and adopted instead of downloaded;
- everything else is fetched: pending and failed runs are tried again.

The day's WAVs are `{AUDIO_ROOT}/D/{run_id}.wav` (`audio_relpath`).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from resources.storage import Storage

AUDIO_SUFFIX = ".wav"


def index_rows(ledger: pd.DataFrame | None) -> dict[int, dict[str, Any]]:
    """An earlier ledger as plain rows by run id (pandas' NA becomes None)."""
    if ledger is None:
        return {}
    rows = ledger.astype(object).where(ledger.notna(), None).to_dict("records")
    return {int(row["run_id"]): row for row in rows}


def audio_relpath(day: str, run_id: int) -> str:
    return f"{day}/{run_id}{AUDIO_SUFFIX}"


@dataclass(frozen=True)
class Plan:
    keep: list[dict[str, Any]]  # earlier ok rows whose file is still in place
    adopt: list[int]  # files at their final path with no matching ok row
    fetch: list[int]


def plan_day(
    run_ids: Iterable[int], previous: Mapping[int, dict[str, Any]], stored_sizes: Mapping[int, int]
) -> Plan:
    """Decide per run: keep the earlier row, adopt the stored file, or fetch from the API."""
    plan = Plan([], [], [])
    for run_id in run_ids:
        row = previous.get(run_id)
        size = stored_sizes.get(run_id)
        if row is not None and row["status"] == "ok" and size == row["size_bytes"]:
            plan.keep.append(row)
        elif size is not None:
            plan.adopt.append(run_id)
        else:
            plan.fetch.append(run_id)
    return plan


def stored_sizes(storage: Storage, day: str) -> dict[int, int]:
    """Sizes of the day's final-named audio files, from one listing."""
    sizes = {}
    for name, size in storage.sizes(day).items():
        stem = name.removesuffix(AUDIO_SUFFIX)
        if name.endswith(AUDIO_SUFFIX) and stem.isdigit():
            sizes[int(stem)] = size
    return sizes
