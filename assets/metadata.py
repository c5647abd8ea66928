"""Materialization metadata shared by the assets: counts, volume, throughput, a preview."""

from typing import Any

import pandas as pd
from dagster import MetadataValue

from assets.core.catalog import STATUSES

PREVIEW_COLUMNS = [
    "run_id",
    "status",
    "error",
    "duration_s",
    "sample_rate",
    "channels",
    "size_bytes",
]


def outcome_metadata(rows: pd.DataFrame, elapsed_s: float | None = None) -> dict[str, Any]:
    """Counts by status, stored bytes and audio hours; throughput when the run was timed."""
    counts = rows["status"].value_counts()
    ok = rows[rows["status"] == "ok"]
    stored_bytes = int(ok["size_bytes"].sum())
    metadata: dict[str, Any] = {status: int(counts.get(status, 0)) for status in STATUSES}
    metadata.update(
        runs=len(rows),
        stored_bytes=stored_bytes,
        audio_hours=round(float(ok["duration_s"].sum()) / 3600, 4),
    )
    if elapsed_s:
        metadata.update(
            elapsed_s=round(elapsed_s, 2),
            runs_per_s=round(len(rows) / elapsed_s, 1),
            mb_per_s=round(stored_bytes / elapsed_s / 1e6, 2),
        )
    preview = rows.reindex(columns=PREVIEW_COLUMNS).sort_values("run_id").head(10)
    metadata["preview"] = MetadataValue.md(preview.to_markdown(index=False))
    return metadata
