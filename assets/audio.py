"""`sound_files`: each accepted run's audio as a verified WAV file on storage."""

import time

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    asset,
)

from assets.core.features import HARVEST_STATE, HarvestFeatures
from assets.core.harvest import DayHarvest, index_rows
from assets.core.settings import SettingsError
from assets.manifests import run_manifest
from assets.metadata import outcome_metadata
from assets.partitions import daily_partitions
from assets.publish import publish_day, sweep_policy
from assets.ranges import (
    DayProblem,
    fail,
    mark_done,
    operator_failure,
    preflight,
    run_days,
    settings,
)
from assets.state import read_state, state_relpath, write_files
from resources.camb_resource import CambResource
from resources.storage import StorageError
from resources.storage_resource import StorageResource

SOUND_CATALOG = AssetKey("sound_catalog")  # downstream: its module imports this one


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
    config, sweep = settings(), sweep_policy()
    audio, state = storage.audio(), storage.catalog()
    try:  # ML features of fresh files, where reading them back later would cost (PLAN #3)
        measure_fresh = HarvestFeatures.wanted(audio)
    except SettingsError as exc:
        raise operator_failure(str(exc)) from None
    # Before any API call: roots that cannot be written and a missing key fail in seconds.
    preflight(context, config, lambda: storage.probe_writable("audio", "catalog"), camb.check)
    started = time.monotonic()

    def harvest(day: str) -> pd.DataFrame:
        manifest = read_state(state, "run_manifest", day)
        if manifest is None:
            raise DayProblem("its run_manifest is missing: materialize it first")
        run_ids = [int(i) for i in manifest.loc[manifest["status"] == "accepted", "run_id"]]
        features = HarvestFeatures() if measure_fresh else None

        def save(rows: pd.DataFrame) -> None:
            if features:  # with every checkpoint: a crash keeps what was measured
                try:
                    features.save(state, state_relpath(HARVEST_STATE, day))
                except Exception as exc:  # sound_features measures those files instead
                    context.log.warning(f"{day}: features measured at harvest not saved: {exc}")
            write_files(state, day, rows)

        previous = read_state(state, "sound_files", day)
        rows = DayHarvest(
            day,
            audio,
            camb.harvest,
            log=context.log,
            save=save,
            budget_s=config.day_budget_s,
            checkpoint_s=config.checkpoint_s,
            on_fresh_file=features.add if features else None,
        ).run(run_ids, index_rows(previous))
        if previous is None:  # a day with nothing to fetch (no manifest, all rejected) too
            write_files(state, day, rows)
        return rows

    days = run_days(context.partition_keys, harvest)
    if not days.failed:
        rows = pd.concat(days.done.values(), ignore_index=True)
        return MaterializeResult(metadata=outcome_metadata(rows, time.monotonic() - started))
    # sound_catalog will not run after this step fails: publish the completed days' catalog
    # partitions here, the way sound_catalog does, and report both assets' partitions.
    catalogs = {}
    for day in days.done:
        try:
            catalogs[day] = publish_day(day, state, audio, sweep).rows
        except (DayProblem, StorageError) as exc:
            days.failed[day] = f"files stored, but the catalog could not be written: {exc}"
    mark_done(context, days.done, lambda day: outcome_metadata(days.done[day]))
    mark_done(
        context,
        catalogs,
        lambda day: outcome_metadata(catalogs[day]),
        asset_key=SOUND_CATALOG,
    )
    fail(context, days, config)
