"""`sound_files`: each accepted run's audio as a verified WAV file on storage."""

import time
from collections.abc import Callable
from functools import partial

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    asset,
)

from assets.harvest.catalog_publish import (
    catalog_fingerprints,
    catalog_relpath,
    final_sweep,
    publish_day,
    sweep_policy,
)
from assets.harvest.day_fingerprint import Fingerprints, file_stamp, listing_stamp
from assets.harvest.day_harvest import DayHarvest
from assets.harvest.day_plan import audio_relpath, index_rows
from assets.harvest.day_summary import DaySummary
from assets.harvest.lease import DayLease, Holder, LeaseHeld, LeaseLost, holding
from assets.harvest.records import read_state, state_relpath, write_files, write_tasks
from assets.harvest.settings import SettingsError
from assets.harvest.task_map import TASK_STATE, TaskMap, has_tasks, resolve_rows, unclaimed
from assets.ml.clip_features import HARVEST_STATE, HarvestFeatures
from assets.partitions import daily_partitions
from assets.run_manifest import run_manifest
from assets.steps.days import (
    DayProblem,
    fail,
    mark_done,
    operator_failure,
    preflight,
    run_days,
    settings,
)
from assets.steps.dead_runs import mark_dead_runs
from assets.steps.metadata import day_metadata, location, report_days, summary_line, unchanged_line
from resources.camb_client import DAY_BUDGET_SPENT
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
    try:  # ML features of fresh files, where reading them back later would cost (PLAN #3)
        harvest_features = HarvestFeatures.setting()
    except SettingsError as exc:
        raise operator_failure(str(exc)) from None
    # Before any API call: roots that cannot be written and a missing key fail in seconds.
    preflight(context, config, lambda: storage.probe_writable("audio", "catalog"), camb.check)
    audio, state = storage.audio(), storage.catalog()
    measure_fresh = HarvestFeatures.wanted(audio, harvest_features)
    started = time.monotonic()
    if not DayLease.supported(state):
        context.log.warning(f"{state}: no per-day lease on this storage: run each day once")
    # Before waiting on a day's lease: a run that died holding it is failed, not left STARTED.
    for gone in mark_dead_runs(context.instance, state, by=f"run {context.run.run_id[:8]}"):
        context.log.warning(f"marked failed: {gone}")
    prints = Fingerprints(state, "sound_files", audio=audio.uri(""))
    unchanged: dict[str, DaySummary] = {}

    def inputs(day: str) -> str:
        records = [
            file_stamp(state, state_relpath(a, day))
            for a in ("run_manifest", "sound_files", TASK_STATE)
        ]
        return prints.stamp(records, listing_stamp(audio, day))

    def harvest(day: str) -> DaySummary:
        if (summary := prints.unchanged(day, inputs(day))) is not None:
            unchanged[day] = summary  # complete, and nothing it depends on changed
            return summary
        lease = DayLease(state, day, context.run.run_id, config.lease_ttl_s)
        try:
            with holding(lease, config.lease_wait_s, on_wait=waiting(day)):
                # The run we waited for may have completed the day.
                if (summary := prints.unchanged(day, inputs(day))) is not None:
                    unchanged[day] = summary
                    return summary
                return harvest_day(day)
        except (LeaseHeld, LeaseLost) as exc:
            raise DayProblem(str(exc)) from None

    def waiting(day: str) -> Callable[[Holder], None]:
        return lambda holder: context.log.info(f"{day}: waiting for {holder} to finish it")

    def harvest_day(day: str) -> DaySummary:
        manifest = read_state(state, "run_manifest", day)
        if manifest is None:
            raise DayProblem("its run_manifest is missing: materialize it first")
        # Rows may name their run by task id: runs of tasks resolved earlier are harvested
        # like run ids, the other tasks are asked about beside the harvest (task_map.py).
        tasks = TaskMap(read_state(state, TASK_STATE, day) if has_tasks(manifest) else None)
        plan = tasks.plan(manifest[manifest["status"] == "accepted"])
        fetch = partial(
            camb.harvest, task_ids=plan.poll, on_task=tasks.record, task_joins=plan.joins
        )
        features = HarvestFeatures() if measure_fresh else None

        def save(rows: pd.DataFrame) -> None:
            if plan.poll:  # before the ledger: its rows' runs never lack their task's answer
                write_tasks(state, day, tasks.frame())
            if features:  # with every checkpoint: a crash keeps what was measured
                try:
                    features.save(state, state_relpath(HARVEST_STATE, day))
                except Exception as exc:  # sound_features measures those files instead
                    context.log.warning(f"{day}: features measured at harvest not saved: {exc}")
            write_files(state, day, rows)

        previous = read_state(state, "sound_files", day)
        ledger = DayHarvest(
            day,
            audio,
            fetch if plan.poll else camb.harvest,
            log=context.log,
            save=save,
            budget_s=config.day_budget_s,
            checkpoint_s=config.checkpoint_s,
            on_fresh_file=features.add if features else None,
            resolving=len(plan.poll),
            dagster_run_id=context.run.run_id,
        ).run(plan.run_ids, index_rows(previous))
        if previous is None:  # a day with nothing to fetch (no manifest, all rejected) too
            write_files(state, day, ledger)
        if plan.poll:  # tasks the day budget left unasked stay pending, saying so
            tasks.unanswered(plan.poll, DAY_BUDGET_SPENT)
            write_tasks(state, day, tasks.frame())
        resolved = resolve_rows(manifest, tasks.frame())
        if has_tasks(manifest) and (stray := unclaimed(ledger, resolved)):
            # No catalog row will name these runs: the ledger forgets them first (no row then
            # names a missing file), then their files go.
            ledger = ledger[~ledger["run_id"].isin(stray)].reset_index(drop=True)
            write_files(state, day, ledger)
            for run_id in stray:
                audio.remove(audio_relpath(day, run_id))
            context.log.info(
                f"{day}: removed runs {', '.join(map(str, stray))}, fetched for rows rejected "
                "once their task resolved to another run"
            )
        # The day's figures count the rows its catalog will have beyond the ledger's too:
        # rejected ones, and those of tasks that never resolved.
        keys = ["run_id", "task_id", "status", "error"]  # a task never resolved: its task id
        others = resolved.loc[resolved["status"] != "accepted", keys]
        rejected = int((others["status"] == "rejected").sum())
        unresolved = others[others["status"] != "rejected"]
        shown = pd.concat([ledger, unresolved], ignore_index=True) if len(unresolved) else ledger
        context.log.info(summary_line(day, shown, rejected, context.run.run_id))
        summary = DaySummary.of(pd.concat([ledger, others]) if len(others) else ledger)
        prints.record(day, inputs(day), summary)
        return summary

    days = run_days(context.partition_keys, harvest)
    if unchanged:  # one line for them all rather than one each
        context.log.info(unchanged_line(list(unchanged), list(unchanged.values())))
    links = {day: location(audio, day) for day in days.done}
    if not days.failed:
        metadata = report_days(context, days.done, links, time.monotonic() - started)
        return MaterializeResult(metadata=metadata)
    # sound_catalog will not run after this step fails: publish the completed days' catalog
    # partitions here, the way sound_catalog does, and report both assets' partitions.
    catalogs, published = {}, catalog_fingerprints(state, audio, sweep)
    for day in days.done:
        try:
            final = final_sweep(context, day)
            done = publish_day(day, state, audio, sweep, published, final_sweep=final)
            catalogs[day] = done.summary
        except (DayProblem, StorageError) as exc:
            days.failed[day] = f"files stored, but the catalog could not be written: {exc}"
    mark_done(context, days.done, lambda day: day_metadata(days.done[day], links[day]))
    mark_done(
        context,
        catalogs,
        lambda day: day_metadata(catalogs[day], location(state, catalog_relpath(day))),
        asset_key=SOUND_CATALOG,
    )
    fail(context, days, config)
