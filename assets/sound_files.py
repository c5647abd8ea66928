"""`sound_files`: each accepted run's audio as a verified WAV file on storage."""

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, asset

from assets.harvest.files_step import FilesStep
from assets.partitions import daily_partitions
from assets.run_manifest import run_manifest
from resources.camb_resource import CambResource
from resources.storage_resource import StorageResource


@asset(
    deps=[run_manifest],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool="camb_api",  # partitions running at once share the API's rate limit
    group_name="harvest",
    kinds={"wav"},
)
def sound_files(
    context: AssetExecutionContext, camb: CambResource, storage: StorageResource
) -> MaterializeResult:
    """`{AUDIO_ROOT}/D/{run_id}.wav` for every ready run, published only once verified.

    Reruns are incremental: files already stored are kept, files found without a record
    are adopted, pending and failed runs are tried again. Each day may spend at most
    `SOUNDHARVEST_DAY_BUDGET_S` fetching; its files ledger is saved as it goes.
    """
    return FilesStep.start(context, camb, storage).run()
