"""What people are told about one day's rows: counts, volume, top failure reasons, a preview.

Rows and runs are counted apart: a manifest may name a run on several rows (the copies are
`rejected` as duplicates), so a day's rows by status add up to its rows, and its distinct runs
are the keys of the rows that are not rejected (the run id, else the task id of a task that
never resolved).

Plain and small, so a day whose inputs did not change can show its figures from the record
kept with its fingerprint (`assets/harvest/day_fingerprint.py`) instead of re-reading its rows.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from assets.harvest.catalog_rows import row_keys
from assets.harvest.reasons import reason_group

TOP_REASONS = 5
PREVIEW_COLUMNS = [
    "run_id",
    "status",
    "error",
    "duration_s",
    "sample_rate",
    "channels",
    "size_bytes",
]


@dataclass(frozen=True)
class DaySummary:
    counts: dict[str, int]  # rows by status
    distinct_runs: int = 0  # run ids (task ids of tasks never resolved) of rows not rejected
    stored_bytes: int = 0  # of the ok rows' files
    audio_s: float = 0.0
    reasons: list[tuple[str, int, str]] = field(default_factory=list)  # (group, rows, example)
    preview: str = ""  # markdown, the first rows by run id

    @classmethod
    def of(cls, rows: pd.DataFrame, top: int = TOP_REASONS) -> "DaySummary":
        ok = rows[rows["status"] == "ok"]
        errors = rows.loc[rows["status"] != "ok", "error"].dropna().astype(str)
        grouped = errors.groupby(errors.map(reason_group), sort=False).agg(["size", "first"])
        grouped = grouped.sort_values("size", ascending=False, kind="stable").head(top)
        preview = rows.reindex(columns=PREVIEW_COLUMNS).sort_values("run_id").head(10)
        live = rows[rows["status"] != "rejected"]
        return cls(
            counts={str(k): int(v) for k, v in rows["status"].value_counts().items()},
            distinct_runs=int(row_keys(live).nunique()),
            stored_bytes=int(ok["size_bytes"].sum()) if "size_bytes" in ok else 0,
            audio_s=float(ok["duration_s"].sum()) if "duration_s" in ok else 0.0,
            reasons=[(group, int(n), example) for group, (n, example) in grouped.iterrows()],
            preview=markdown_table(preview),
        )

    @classmethod
    def total(cls, days: Iterable["DaySummary"]) -> "DaySummary":
        """The sums of several days (no reasons, no preview)."""
        counts: dict[str, int] = {}
        runs, stored, audio = 0, 0, 0.0
        for day in days:
            for status, n in day.counts.items():
                counts[status] = counts.get(status, 0) + n
            runs += day.distinct_runs
            stored, audio = stored + day.stored_bytes, audio + day.audio_s
        return cls(counts, runs, stored, audio)

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def complete(self) -> bool:
        """Nothing left to try again: no pending and no failed rows."""
        return not self.count("pending") and not self.count("failed")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DaySummary":
        return cls(**{**data, "reasons": [tuple(r) for r in data.get("reasons", [])]})


def markdown_table(frame: pd.DataFrame, floatfmt: str = "g") -> str:
    """`frame` as a Markdown table, missing values as blank cells (never `nan` or `<NA>`)."""
    cells = frame.astype(object).where(frame.notna(), None)
    return cells.to_markdown(index=False, floatfmt=floatfmt)
