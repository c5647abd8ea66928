"""Jobs: the daily harvest materializes the three partitioned assets in order."""

from dagster import AssetSelection, define_asset_job

from assets.partitions import daily_partitions

HARVEST_ASSETS = AssetSelection.assets("run_manifest", "sound_files", "sound_catalog")

daily_harvest = define_asset_job(
    "daily_harvest",
    selection=HARVEST_ASSETS,
    partitions_def=daily_partitions,
    description="Manifests -> WAV files -> Parquet catalog for one day (or a range in a backfill).",
)
