"""`sound_catalog`: one Parquet file per day describing every manifest row, and its checks."""

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, asset

from assets.harvest.catalog_publish import (
    CHECK_SPECS,
    catalog_fingerprints,
    catalog_relpath,
    check_results,
    final_sweep,
    publish_day,
    sweep_policy,
)
from assets.partitions import daily_partitions
from assets.sound_files import sound_files
from assets.steps.days import mark_done, run_days
from assets.steps.failures import fail, preflight, settings
from assets.steps.metadata import day_metadata, location, report_days
from resources.storage_resource import StorageResource


@asset(
    deps=[sound_files],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="harvest",
    kinds={"parquet"},
    check_specs=CHECK_SPECS,
)
def sound_catalog(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    """`{CATALOG_ROOT}/sound_catalog/date=D/part-0.parquet`, each day replaced atomically.

    Read the whole tree with pyarrow.dataset, pandas, DuckDB or Polars: hive partitioning
    gives the `date` column.
    """
    config, sweep = settings(), sweep_policy()
    preflight(context, config, lambda: storage.probe_writable("catalog"))
    audio, catalog_store = storage.audio(), storage.catalog()
    prints = catalog_fingerprints(catalog_store, audio, sweep)
    days = run_days(
        context.partition_keys,
        lambda day: publish_day(
            day, catalog_store, audio, sweep, prints, final_sweep=final_sweep(context, day)
        ),
    )
    links = {day: location(catalog_store, catalog_relpath(day)) for day in days.done}
    if days.failed:
        mark_done(context, days.done, lambda day: day_metadata(days.done[day].summary, links[day]))
        fail(context, days, config)
    summaries = {day: published.summary for day, published in days.done.items()}
    return MaterializeResult(
        metadata=report_days(context, summaries, links), check_results=check_results(days.done)
    )
