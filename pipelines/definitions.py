"""The one `Definitions` of soundharvest (`workspace.yaml` loads it)."""

from dagster import Definitions

from assets.ml_dataset import ml_dataset
from assets.run_manifest import run_manifest
from assets.sound_catalog import sound_catalog
from assets.sound_features import sound_features
from assets.sound_files import sound_files
from assets.sound_generations import sound_generations
from pipelines.automation import ml_feed_automation, with_automation
from pipelines.deployment import executor_from_env, with_backfill_policy
from pipelines.freshness import catalog_freshness
from pipelines.jobs import daily_harvest
from pipelines.schedules import daily_harvest_schedule
from pipelines.sensors import manifest_sensor, pending_sweep, prompt_sensor
from resources.camb_resource import CambResource
from resources.storage_resource import StorageResource

freshness_checks, freshness_sensor = catalog_freshness()

defs = Definitions(
    assets=with_automation(
        with_backfill_policy(
            [
                sound_generations,
                run_manifest,
                sound_files,
                sound_catalog,
                sound_features,
                ml_dataset,
            ]
        )
    ),
    asset_checks=freshness_checks,
    jobs=[daily_harvest],
    schedules=[daily_harvest_schedule],
    sensors=[manifest_sensor, prompt_sensor, pending_sweep, ml_feed_automation, freshness_sensor],
    resources={
        "camb": CambResource(),  # CAMB_API_KEY and the rest come from the environment
        "storage": StorageResource(),
    },
    executor=executor_from_env(),
)
