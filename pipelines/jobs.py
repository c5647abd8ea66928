"""Jobs: the daily harvest materializes the three partitioned assets in order."""

from dagster import AssetSelection, define_asset_job

HARVEST_ASSETS = AssetSelection.assets("run_manifest", "sound_files", "sound_catalog")

# Partitioned by day, as the assets are (Dagster infers it from the selection).
daily_harvest = define_asset_job(
    "daily_harvest",
    selection=HARVEST_ASSETS,
    description="Manifests -> WAV files -> Parquet catalog for one day (or a range in a backfill).",
)
