"""`sound_files`: each accepted run's audio as a verified WAV file on storage."""

import time

import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, Failure, MaterializeResult, asset

from assets.core.features import HARVEST_STATE, HarvestFeatures
from assets.core.harvest import DayHarvest, index_rows
from assets.manifests import run_manifest
from assets.metadata import outcome_metadata
from assets.partitions import daily_partitions
from assets.state import read_state, state_relpath, write_files
from resources.camb_client import CambApiError
from resources.camb_resource import CambResource
from resources.storage import StorageError
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
    are adopted, pending and failed runs are tried again.
    """
    audio, state = storage.audio(), storage.catalog()
    started = time.monotonic()
    ledgers = []
    for day in context.partition_keys:
        manifest = read_state(state, "run_manifest", day)
        if manifest is None:
            raise Failure(description=f"run_manifest of {day} is missing: materialize it first")
        run_ids = [int(i) for i in manifest.loc[manifest["status"] == "accepted", "run_id"]]
        earlier = index_rows(read_state(state, "sound_files", day))
        features = HarvestFeatures.when_worthwhile(audio)  # ML features of fresh files
        harvest = DayHarvest(
            day, audio, camb.harvest, log=context.log,
            on_fresh_file=features.add if features else None,
        )  # fmt: skip
        try:
            ledger = harvest.run(run_ids, earlier)
        except (CambApiError, StorageError) as exc:
            raise Failure(description=f"{day}: {exc}") from None
        write_files(state, day, ledger)
        if features:
            features.save(state, state_relpath(HARVEST_STATE, day))
        ledgers.append(ledger)
    rows = pd.concat(ledgers, ignore_index=True)
    return MaterializeResult(metadata=outcome_metadata(rows, time.monotonic() - started))
