"""`sound_catalog`: one Parquet file per day describing every manifest row, and its checks."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    asset,
)

from assets.audio import sound_files
from assets.metadata import outcome_metadata
from assets.partitions import daily_partitions
from assets.publish import CHECKS, publish_day
from assets.ranges import fail, mark_done, run_days, settings
from resources.storage_resource import StorageResource


@asset(
    deps=[sound_files],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="harvest",
    kinds={"parquet"},
    check_specs=[
        AssetCheckSpec(name, asset="sound_catalog", description=d) for name, d in CHECKS.items()
    ],
)
def sound_catalog(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    """`{CATALOG_ROOT}/sound_catalog/date=D/part-0.parquet`, each day replaced atomically.

    Read the whole tree with pyarrow.dataset, pandas, DuckDB or Polars: hive partitioning
    gives the `date` column.
    """
    config = settings()
    audio, catalog_store = storage.audio(), storage.catalog()
    days = run_days(context.partition_keys, lambda day: publish_day(day, catalog_store, audio))
    if days.failed:
        mark_done(context, days.done, lambda day: outcome_metadata(days.done[day].rows))
        fail(context, days, config)
    problems = {name: [] for name in CHECKS}
    for published in days.done.values():
        for name, problem in published.findings.items():
            if problem:
                problems[name].append(problem)
    rows = pd.concat([published.rows for published in days.done.values()], ignore_index=True)
    return MaterializeResult(
        metadata=outcome_metadata(rows),
        check_results=[
            AssetCheckResult(
                check_name=name,
                passed=not found,
                severity=AssetCheckSeverity.ERROR,
                metadata={"problems": "; ".join(found) or "none"},
            )
            for name, found in problems.items()
        ],
    )
