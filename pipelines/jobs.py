"""Jobs: the daily harvest materializes the day's partitioned assets in order, from its prompt
sheets (if any) to its catalog."""

from dagster import AssetSelection, define_asset_job

HARVEST_ASSETS = AssetSelection.assets(
    "sound_generations", "run_manifest", "sound_files", "sound_catalog"
)

# Partitioned by day, as the assets are (Dagster infers it from the selection).
daily_harvest = define_asset_job(
    "daily_harvest",
    selection=HARVEST_ASSETS,
    description="Prompt sheets -> generations, and manifests -> WAV files -> Parquet catalog "
    "for one day (or a range in a backfill).",
)
