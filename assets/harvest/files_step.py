"""This file implements the `sound_files` step: each day of the step harvested into storage.

The asset (`assets/sound_files.py`) builds a `FilesStep` and returns what `run` gives. For
each day, in order (`harvest`, then `harvest_day`):

1. skip it when it is complete and nothing it depends on changed (`skip_unchanged`: its
   manifest record, files ledger, task answers and audio listing stamp as recorded);
2. hold the day's lease, so that no other run harvests it at once (`hold_lease`);
3. read its manifest record and plan its runs: run ids, and task ids to ask about
   (`plan_runs`);
4. fetch what the ledger lacks (`fetch`, `DayHarvest`), saving the day's records at each
   checkpoint (`save_records`); tasks the day budget left unasked stay pending, saying so
   (`leave_unanswered`);
5. forget the runs fetched for rows that their task then rejected (`forget_strays`);
6. say the day's figures and record its stamp (`summarize`).

A day that fails lets the others go on (`assets/steps/days.py`). When any failed, the step
publishes the completed days' catalog partitions itself (`publish_catalogs`), since
`sound_catalog` does not run after a failed step, and then fails (`assets/steps/failures.py`).
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue

from assets.harvest.catalog_publish import (
    catalog_fingerprints,
    catalog_relpath,
    final_sweep,
    publish_day,
    sweep_policy,
)
from assets.harvest.day_fingerprint import Fingerprints, file_stamp, listing_stamp
from assets.harvest.day_harvest import DayHarvest, Fetch
from assets.harvest.day_plan import audio_relpath, index_rows
from assets.harvest.day_summary import DaySummary
from assets.harvest.lease import DayLease, Holder, LeaseHeld, LeaseLost, holding
from assets.harvest.records import read_state, state_relpath, write_files, write_tasks
from assets.harvest.settings import PipelineSettings, SettingsError
from assets.harvest.sweep import SweepPolicy
from assets.harvest.task_map import (
    TASK_STATE,
    TaskMap,
    TaskPlan,
    has_tasks,
    resolve_rows,
    unclaimed,
)
from assets.ml.clip_features import HARVEST_STATE, HarvestFeatures
from assets.steps.days import DayProblem, Days, mark_done, run_days
from assets.steps.dead_runs import mark_dead_runs
from assets.steps.failures import fail, operator_failure, preflight, settings
from assets.steps.metadata import (
    day_metadata,
    location,
    report_days,
    summary_line,
    unchanged_line,
)
from resources.camb import DAY_BUDGET_SPENT
from resources.camb_resource import CambResource
from resources.storage import Storage, StorageError
from resources.storage_resource import StorageResource

SOUND_CATALOG = AssetKey("sound_catalog")  # downstream: its module imports `sound_files`
# The records a day's outcome depends on, besides its audio listing.
INPUT_RECORDS = ("run_manifest", "sound_files", TASK_STATE)


@dataclass
class FilesStep:
    """State of the `sound_files` step."""

    context: AssetExecutionContext  # the step: its days (partition keys), run, log, instance
    camb: CambResource  # the API: `harvest` fetches runs, resolving task ids beside them
    config: PipelineSettings  # day budget, checkpoints, leases, step retries
    sweep: SweepPolicy  # when pending rows are given up on, for the catalogs this step publishes
    audio: Storage  # where the WAVs go: `{AUDIO_ROOT}/D/{run_id}.wav`
    state: Storage  # the catalog root: `_state/` records, leases, fingerprints
    measure_fresh: bool  # whether fresh files' features are measured here (object stores)
    prints: Fingerprints  # each day's recorded input stamp and summary
    unchanged: dict[str, DaySummary] = field(default_factory=dict)  # days skipped, said once
    started: float = field(default_factory=time.monotonic)  # for the step's rate

    @classmethod
    def start(
        cls, context: AssetExecutionContext, camb: CambResource, storage: StorageResource
    ) -> "FilesStep":
        """The step's settings and checks, before any day and any API call: a bad setting, a
        root that cannot be written or a missing key fails it in seconds."""
        config, sweep = settings(), sweep_policy()
        try:  # ML features of fresh files, where reading them back later would cost
            harvest_features = HarvestFeatures.setting()
        except SettingsError as exc:
            raise operator_failure(str(exc)) from None
        preflight(context, config, lambda: storage.probe_writable("audio", "catalog"), camb.check)
        audio, state = storage.audio(), storage.catalog()
        return cls(
            context=context,
            camb=camb,
            config=config,
            sweep=sweep,
            audio=audio,
            state=state,
            measure_fresh=HarvestFeatures.wanted(audio, harvest_features),
            prints=Fingerprints(state, "sound_files", audio=audio.uri("")),
        )

    def run(self) -> MaterializeResult:
        """Every day of the step, then its report; or, when a day failed, its failure."""
        self.warn_unleased()
        self.mark_dead_runs()
        days = run_days(self.context.partition_keys, self.harvest)
        self.say_unchanged()
        links = {day: location(self.audio, day) for day in days.done}
        if not days.failed:
            elapsed = time.monotonic() - self.started
            return MaterializeResult(metadata=report_days(self.context, days.done, links, elapsed))
        self.publish_catalogs(days, links)
        fail(self.context, days, self.config)

    def warn_unleased(self) -> None:
        if not DayLease.supported(self.state):
            self.context.log.warning(
                f"{self.state}: no per-day lease on this storage: run each day once"
            )

    def mark_dead_runs(self) -> None:
        """Before waiting on a day's lease: a run that died holding it is failed, not left
        STARTED."""
        by = f"run {self.context.run.run_id[:8]}"
        for gone in mark_dead_runs(self.context.instance, self.state, by=by):
            self.context.log.warning(f"marked failed: {gone}")

    def harvest(self, day: str) -> DaySummary:
        """One day: skipped when unchanged, else harvested while holding its lease."""
        if (summary := self.skip_unchanged(day)) is not None:
            return summary
        with self.hold_lease(day):
            # The run we waited for may have completed the day.
            if (summary := self.skip_unchanged(day)) is not None:
                return summary
            return self.harvest_day(day)

    def harvest_day(self, day: str) -> DaySummary:
        """The day's runs into storage, and its figures."""
        manifest, tasks, plan = self.plan_runs(day)
        ledger = self.fetch(day, plan, tasks)
        self.leave_unanswered(day, plan, tasks)
        resolved = resolve_rows(manifest, tasks.frame())
        if has_tasks(manifest):
            ledger = self.forget_strays(day, ledger, resolved)
        return self.summarize(day, ledger, resolved)

    def inputs(self, day: str) -> str:
        """The stamp of what the day's outcome depends on."""
        records = [file_stamp(self.state, state_relpath(a, day)) for a in INPUT_RECORDS]
        return self.prints.stamp(records, listing_stamp(self.audio, day))

    def skip_unchanged(self, day: str) -> DaySummary | None:
        """The day's recorded summary when it is complete and nothing it depends on changed."""
        if (summary := self.prints.unchanged(day, self.inputs(day))) is not None:
            self.unchanged[day] = summary
        return summary

    @contextmanager
    def hold_lease(self, day: str) -> Iterator[None]:
        """The day's lease held for the block: one run per day (`lease.py`)."""
        lease = DayLease(self.state, day, self.context.run.run_id, self.config.lease_ttl_s)
        try:
            with holding(lease, self.config.lease_wait_s, on_wait=self.waiting(day)):
                yield
        except (LeaseHeld, LeaseLost) as exc:
            raise DayProblem(str(exc)) from None

    def waiting(self, day: str) -> Callable[[Holder], None]:
        return lambda holder: self.context.log.info(f"{day}: waiting for {holder} to finish it")

    def plan_runs(self, day: str) -> tuple[pd.DataFrame, TaskMap, TaskPlan]:
        """The day's manifest record, its task answers so far, and the plan: the run ids to
        harvest, and the task ids to ask about beside the harvest (`task_map.py`): runs of
        tasks resolved earlier are harvested like run ids."""
        manifest = read_state(self.state, "run_manifest", day)
        if manifest is None:
            raise DayProblem("its run_manifest is missing: materialize it first")
        tasks = TaskMap(read_state(self.state, TASK_STATE, day) if has_tasks(manifest) else None)
        return manifest, tasks, tasks.plan(manifest[manifest["status"] == "accepted"])

    def fetch(self, day: str, plan: TaskPlan, tasks: TaskMap) -> pd.DataFrame:
        """The day's files ledger once its runs were kept, adopted or fetched (`DayHarvest`),
        the day's records saved at each checkpoint."""
        features = HarvestFeatures() if self.measure_fresh else None
        previous = read_state(self.state, "sound_files", day)
        ledger = DayHarvest(
            day,
            self.audio,
            self.api_fetch(plan, tasks),
            log=self.context.log,
            save=partial(self.save_records, day, tasks if plan.poll else None, features),
            budget_s=self.config.day_budget_s,
            checkpoint_s=self.config.checkpoint_s,
            on_fresh_file=features.add if features else None,
            resolving=len(plan.poll),
            dagster_run_id=self.context.run.run_id,
        ).run(plan.run_ids, index_rows(previous))
        if previous is None:  # a day with nothing to fetch (no manifest, all rejected) too
            write_files(self.state, day, ledger)
        return ledger

    def api_fetch(self, plan: TaskPlan, tasks: TaskMap) -> Fetch:
        """The API's harvest; with task ids to ask about, each answer recorded and each run
        joining the harvest as its task resolves."""
        if not plan.poll:
            return self.camb.harvest
        return partial(
            self.camb.harvest, task_ids=plan.poll, on_task=tasks.record, task_joins=plan.joins
        )

    def save_records(
        self,
        day: str,
        tasks: TaskMap | None,
        features: HarvestFeatures | None,
        ledger: pd.DataFrame,
    ) -> None:
        """The day's records at a checkpoint of its ledger: the task answers first (the
        ledger's runs never lack their task's answer), the features measured so far (a crash
        keeps them), then the ledger."""
        if tasks is not None:
            write_tasks(self.state, day, tasks.frame())
        if features is not None:
            try:
                features.save(self.state, state_relpath(HARVEST_STATE, day))
            except Exception as exc:  # sound_features measures those files instead
                self.context.log.warning(f"{day}: features measured at harvest not saved: {exc}")
        write_files(self.state, day, ledger)

    def leave_unanswered(self, day: str, plan: TaskPlan, tasks: TaskMap) -> None:
        """Tasks the day budget left unasked stay pending, saying so."""
        if plan.poll:
            tasks.unanswered(plan.poll, DAY_BUDGET_SPENT)
            write_tasks(self.state, day, tasks.frame())

    def forget_strays(self, day: str, ledger: pd.DataFrame, resolved: pd.DataFrame) -> pd.DataFrame:
        """The ledger without runs fetched for rows rejected once their task resolved to
        another run. No catalog row will name them: the ledger forgets them first (no row then
        names a missing file), then their files go."""
        if not (stray := unclaimed(ledger, resolved)):
            return ledger
        ledger = ledger[~ledger["run_id"].isin(stray)].reset_index(drop=True)
        write_files(self.state, day, ledger)
        for run_id in stray:
            self.audio.remove(audio_relpath(day, run_id))
        self.context.log.info(
            f"{day}: removed runs {', '.join(map(str, stray))}, fetched for rows rejected "
            "once their task resolved to another run"
        )
        return ledger

    def summarize(self, day: str, ledger: pd.DataFrame, resolved: pd.DataFrame) -> DaySummary:
        """The day's console line and summary, recorded with the stamp of its inputs. Its
        figures count the rows its catalog will have beyond the ledger's too: rejected ones,
        and those of tasks that never resolved."""
        keys = ["run_id", "task_id", "status", "error"]  # a task never resolved: its task id
        others = resolved.loc[resolved["status"] != "accepted", keys]
        rejected = int((others["status"] == "rejected").sum())
        unresolved = others[others["status"] != "rejected"]
        shown = pd.concat([ledger, unresolved], ignore_index=True) if len(unresolved) else ledger
        self.context.log.info(summary_line(day, shown, rejected, self.context.run.run_id))
        summary = DaySummary.of(pd.concat([ledger, others]) if len(others) else ledger)
        self.prints.record(day, self.inputs(day), summary)
        return summary

    def say_unchanged(self) -> None:
        if self.unchanged:  # one line for them all rather than one each
            days, summaries = list(self.unchanged), list(self.unchanged.values())
            self.context.log.info(unchanged_line(days, summaries))

    def publish_catalogs(self, days: Days[DaySummary], links: dict[str, MetadataValue]) -> None:
        """`sound_catalog` will not run after this step fails: publish the completed days'
        catalog partitions here, the way it does, and report both assets' partitions."""
        catalogs, published = {}, catalog_fingerprints(self.state, self.audio, self.sweep)
        for day in days.done:
            try:
                final = final_sweep(self.context, day)
                done = publish_day(
                    day, self.state, self.audio, self.sweep, published, final_sweep=final
                )
                catalogs[day] = done.summary
            except (DayProblem, StorageError) as exc:
                days.failed[day] = f"files stored, but the catalog could not be written: {exc}"
        mark_done(self.context, days.done, lambda day: day_metadata(days.done[day], links[day]))
        mark_done(
            self.context,
            catalogs,
            lambda day: day_metadata(catalogs[day], location(self.state, catalog_relpath(day))),
            asset_key=SOUND_CATALOG,
        )
