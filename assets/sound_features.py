"""`sound_features`: loudness, peak, clipping and silence of every stored clip, per day."""

import time
from concurrent.futures import Executor
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.harvest.catalog_rows import read_partition, table_bytes
from assets.harvest.day_summary import markdown_table
from assets.harvest.records import read_state
from assets.ml.clip_features import (
    FILE_MISSING,
    HARVEST_STATE,
    DayFeatures,
    FeatureParams,
    day_features,
    feature_workers,
    features_relpath,
    features_table,
)
from assets.partitions import daily_partitions
from assets.sound_catalog import sound_catalog
from assets.steps.metadata import MIB, figures_table, location, mib, per_partition, typed
from resources.storage import Storage
from resources.storage_resource import StorageResource


class FeaturesConfig(Config):
    silence_threshold_dbfs: float = Field(
        -60.0, description="A window whose RMS is below this (dBFS) is silent."
    )
    silence_window_ms: float = Field(10.0, description="Length of the silence windows (ms).")
    clip_threshold_dbfs: float = Field(
        -0.001, description="A sample at or above this magnitude (dBFS) counts as clipped."
    )
    workers: int = Field(2, description="Processes measuring files (1: in the run's process).")

    def params(self) -> FeatureParams:
        return FeatureParams(**self.model_dump(exclude={"workers"}))


@asset(
    deps=[sound_catalog],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="ml",
    kinds={"parquet"},
)
def sound_features(
    context: AssetExecutionContext, config: FeaturesConfig, storage: StorageResource
) -> MaterializeResult:
    """`{CATALOG_ROOT}/sound_features/date=D/part-0.parquet`: one row per `ok` catalog row,
    keyed by run_id and sha256, each day replaced atomically.

    Incremental: rows of an earlier run (or of the harvest) with the same file and
    thresholds are kept; only new files, changed files and changed thresholds are measured.
    """
    try:
        params = config.params()
    except ValueError as exc:
        raise Failure(description=f"sound_features config: {exc}") from None
    catalog = storage.catalog()
    started = time.monotonic()
    days: dict[str, DayFeatures] = {}
    with feature_workers(config.workers) as pool:  # shut down with the step
        for day in context.partition_keys:
            days[day] = measure_day(catalog, day, params, pool, context.log)
    metadata = features_metadata(context, catalog, days, time.monotonic() - started)
    metadata["params"] = params_table(params)
    return MaterializeResult(metadata=metadata)


def measure_day(
    catalog: Storage, day: str, params: FeatureParams, pool: Executor | None, log: Any
) -> DayFeatures:
    """The features of the day's `ok` catalog rows, written as its partition file."""
    rows = read_partition(catalog.fs, catalog.root, day)
    if rows is None:
        raise Failure(description=f"{day}: no sound_catalog partition: materialize it first")
    ok = rows.loc[rows["status"] == "ok", ["run_id", "sha256", "uri", "size_bytes"]]
    result = day_features(
        ok,
        _read_features(catalog, features_relpath(day)),
        read_state(catalog, HARVEST_STATE, day),
        params,
        pool=pool,
    )
    catalog.write_bytes(table_bytes(features_table(result.rows)), features_relpath(day))
    log.info(
        f"{day}: {len(ok)} files: {result.kept} kept, {result.from_harvest} from the "
        f"harvest, {result.computed} measured ({result.errors} with an error)"
    )
    return result


def features_metadata(
    context: AssetExecutionContext,
    catalog: Storage,
    days: dict[str, DayFeatures],
    elapsed: float,
) -> dict[str, Any]:
    """Each day's counts, preview and location; the range's totals; the step's rate."""
    measured_bytes = sum(result.computed_bytes for result in days.values())
    per_day = {
        day: {
            **{name: typed(n) for name, n in counts(result).items()},
            "preview": _preview(result.rows),
            "location": location(catalog, features_relpath(day)),
        }
        for day, result in days.items()
    }

    def totals() -> dict[str, int | float]:
        each = [counts(result) for result in days.values()]
        whole = {name: sum(figures[name] for figures in each) for name in each[0]}
        return whole | {"measured (MiB)": mib(measured_bytes)}  # not a sum of rounded days

    step = {
        "elapsed (s)": round(elapsed, 2),
        "measured MiB per s": round(measured_bytes / MIB / max(elapsed, 1e-9), 2),
    }
    return per_partition(context, per_day, totals, step)


def params_table(params: FeatureParams) -> MetadataValue:
    return figures_table(
        {
            "silence threshold (dBFS)": params.silence_threshold_dbfs,
            "silence window (ms)": params.silence_window_ms,
            "clip threshold (dBFS)": params.clip_threshold_dbfs,
            "fingerprint version": params.fingerprint,
        },
        "value",
        label="parameter",
    )


def counts(result: DayFeatures) -> dict[str, int | float]:
    """A day's clips by where their features came from, and the errors by cause."""
    errors = result.rows["error"].dropna()
    missing = int((errors == FILE_MISSING).sum())
    return {
        "clips": len(result.rows),
        "kept": result.kept,
        "from harvest": result.from_harvest,
        "measured": result.computed,
        "file missing": missing,
        "unreadable": len(errors) - missing,
        "measured (MiB)": mib(result.computed_bytes),
    }


def _read_features(catalog: Storage, relpath: str) -> pd.DataFrame | None:
    if not catalog.exists(relpath):
        return None
    with catalog.open(relpath) as file:
        return pd.read_parquet(file)


def _preview(rows: pd.DataFrame) -> MetadataValue:
    columns = ["run_id", "lufs", "peak_dbfs", "clipped_fraction", "silence_fraction", "error"]
    return MetadataValue.md(markdown_table(rows[columns].head(10), floatfmt=".2f"))
