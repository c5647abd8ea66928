"""The one `Definitions` of soundharvest (`workspace.yaml` loads it)."""

from dagster import Definitions, EnvVar, in_process_executor

from assets.audio import sound_files
from assets.catalog import sound_catalog
from assets.dataset import ml_dataset
from assets.features import sound_features
from assets.manifests import run_manifest
from pipelines.jobs import daily_harvest
from pipelines.schedules import daily_harvest_schedule
from resources.camb_resource import CambResource
from resources.storage_resource import StorageResource

defs = Definitions(
    assets=[run_manifest, sound_files, sound_catalog, sound_features, ml_dataset],
    jobs=[daily_harvest],
    schedules=[daily_harvest_schedule],
    resources={
        "camb": CambResource(api_key=EnvVar("CAMB_API_KEY")),
        "storage": StorageResource(),
    },
    # Steps of one run follow each other; several days run in parallel as separate runs
    # (a backfill), where the multiprocess executor's ~2 s per step would buy nothing.
    executor=in_process_executor,
)
