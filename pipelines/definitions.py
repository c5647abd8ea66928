"""The one `Definitions` of soundharvest (`workspace.yaml` loads it)."""

from dagster import Definitions

from assets.audio import sound_files
from assets.catalog import sound_catalog
from assets.dataset import ml_dataset
from assets.features import sound_features
from assets.manifests import run_manifest
from pipelines.deployment import executor_from_env, with_backfill_policy
from pipelines.jobs import daily_harvest
from pipelines.schedules import daily_harvest_schedule
from pipelines.sensors import manifest_sensor, pending_sweep
from resources.camb_resource import CambResource
from resources.storage_resource import StorageResource

defs = Definitions(
    assets=with_backfill_policy(
        [run_manifest, sound_files, sound_catalog, sound_features, ml_dataset]
    ),
    jobs=[daily_harvest],
    schedules=[daily_harvest_schedule],
    sensors=[manifest_sensor, pending_sweep],
    resources={
        "camb": CambResource(),  # CAMB_API_KEY and the rest come from the environment
        "storage": StorageResource(),
    },
    executor=executor_from_env(),
)
