"""The `sound_generations` step: each day's prompt sheets submitted, each generation once.

The asset (`assets/sound_generations.py`) builds a `GenerationStep` and returns what `run`
gives. For each day, in order (`generate`):

1. hold the lease of the submissions, one run at a time whatever the day, so that no two
   runs ever send the same key (`hold_lease`);
2. settle the day's ledger: intents a dead run left are `in doubt`, created tasks that
   ended PAYMENT_REQUIRED are `unpaid` (`settle`);
3. plan the day's rows: the sheets, the ledger of every day, the budget (`generation_plan`);
4. send what is to send through `CambResource.submit`, each intent durable before its
   create, each outcome recorded after (`submit`);
5. keep the day's rows as decided, for `run_manifest` and `soundharvest status`, and compact
   its ledger (`finish`), whatever stopped the submission.

A 402 stops the day's submissions at once: the rest stay `deferred`, and one warning line
says what to do. A day that fails lets the others go on (`assets/steps/days.py`); a refused
key, a wrong base URL or an API never reached stop the step as the operator's mistake.
"""

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckSeverity, AssetExecutionContext, MaterializeResult, MetadataValue

from assets.generation.generation_plan import (
    TO_SEND,
    UNPAID,
    DayPlan,
    Options,
    RowPlan,
    day_view,
    plan_day,
    write_rows,
)
from assets.generation.keys import short
from assets.generation.ledger import DEAD_INTENT, Entry, Ledger, day_dir, in_doubt
from assets.generation.limits import GenerationLimits
from assets.generation.prompt_sheets import PromptSheetError
from assets.harvest.lease import DayLease, LeaseHeld, LeaseLost, holding
from assets.harvest.settings import PipelineSettings
from assets.steps.days import DayProblem, day_ranges, mark_done, run_days
from assets.steps.failures import fail, preflight, settings
from assets.steps.metadata import check_result, location, per_partition
from resources.camb.creates import OUT_OF_CREDITS, CreateOutcome, Creation
from resources.camb_resource import CambResource
from resources.storage import Storage
from resources.storage_resource import StorageResource

IN_DOUBT_CHECK = "generations_in_doubt"
LEASE = "generation"  # `_state/lease/generation.json`: the submissions, whatever the day
OUT_OF_CREDITS_FIX = "top up the account's credits, then run `soundharvest generate {day}` again"
_LEDGER_STATE = {"out of credits": "not sent"}  # outcome -> ledger state, where they differ


@dataclass
class DayGenerations:
    """One day's figures, as metadata and the console show them."""

    counts: dict[str, int]  # rows by status
    sent: int  # creates sent by this run
    seconds: float  # of audio requested by them
    budget_left: dict[str, float | None]
    submit_s: float = 0.0  # from the first intent to the last outcome recorded
    stopped: str | None = None  # why the submissions stopped early (out of credits)

    def metadata(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            status: MetadataValue.int(self.counts.get(status, 0)) for status in _SHOWN
        }
        figures["sent by this run"] = MetadataValue.int(self.sent)
        figures["submission (s)"] = MetadataValue.float(round(float(self.submit_s), 2))
        seconds = round(float(self.seconds), 1)
        figures["audio requested by this run (s)"] = MetadataValue.float(seconds)
        left = {k: v for k, v in self.budget_left.items() if v is not None}
        figures["budget left"] = MetadataValue.json(left or {"limits": "none set"})
        if self.stopped:
            figures["stopped"] = MetadataValue.text(self.stopped)
        return figures


_SHOWN = ("created", "in doubt", "deferred", "rejected", "duplicate", "already submitted")


@dataclass
class GenerationStep:
    """State of the `sound_generations` step."""

    context: AssetExecutionContext
    camb: CambResource  # `submit`: the creates
    config: PipelineSettings  # leases, step retries
    limits: GenerationLimits  # row rules and budget
    options: Options  # regenerate, resubmit in doubt
    state: Storage  # the catalog root: the ledger, the rows record, the lease
    prompts: Storage  # the prompt sheets
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(
        cls,
        context: AssetExecutionContext,
        camb: CambResource,
        storage: StorageResource,
        options: Options,
    ) -> "GenerationStep":
        """Settings and storage probes before any day: a bad one fails it in seconds."""
        config = settings()
        holder: list[GenerationLimits] = []
        preflight(
            context,
            config,
            lambda: holder.append(GenerationLimits.from_env()),
            lambda: storage.probe_writable("catalog"),
            lambda: storage.probe_readable("prompts"),
        )
        state, prompts = storage.catalog(), storage.prompts()
        return cls(context, camb, config, holder[0], options, state, prompts)

    def run(self) -> MaterializeResult:
        days = run_days(self.context.partition_keys, self.generate)
        check = self.in_doubt_check()
        if days.failed:
            mark_done(self.context, days.done, lambda day: days.done[day].metadata())
            fail(self.context, days, self.config)
        per_day = {day: done.metadata() for day, done in days.done.items()}
        for day in per_day:
            per_day[day]["ledger"] = location(self.state, day_dir(day))
        return MaterializeResult(
            metadata=per_partition(self.context, per_day, lambda: self.totals(days.done)),
            check_results=[check],
        )

    def generate(self, day: str) -> DayGenerations:
        with self.hold_lease():
            ledger = Ledger(self.state, day, self.context.run.run_id)
            self.settle(ledger, day)
            try:
                plan = plan_day(self.state, self.prompts, day, self.limits, self.options)
            except PromptSheetError as exc:  # only fixing the sheet helps: never retried
                raise DayProblem(f"prompt sheet cannot be read: {exc}", fix=exc.fix) from None
            self.say_plan(plan)
            outcomes: dict[bytes, CreateOutcome] = {}
            started = time.monotonic()
            try:
                self.submit(ledger, plan, outcomes)
            except BaseException:
                with contextlib.suppress(Exception):  # what stopped it says more
                    self.finish(ledger, plan, outcomes, time.monotonic() - started)
                raise
            return self.finish(ledger, plan, outcomes, time.monotonic() - started)

    @contextlib.contextmanager
    def hold_lease(self) -> Iterator[None]:
        lease = DayLease(
            self.state,
            "the submission of prompt sheets",
            self.context.run.run_id,
            self.config.lease_ttl_s,
            name=LEASE,
            doing="made",
        )
        waiting = lambda holder: self.context.log.info(f"waiting for {holder} to submit")  # noqa: E731
        try:
            with holding(lease, self.config.lease_wait_s, on_wait=waiting):
                yield
        except (LeaseHeld, LeaseLost) as exc:
            raise DayProblem(str(exc)) from None

    def settle(self, ledger: Ledger, day: str) -> None:
        """What the ledger's last run left: dead intents in doubt, unpaid tasks unpaid."""
        view = day_view(self.state, day)
        ledger.restate(view.dead, "in doubt", DEAD_INTENT)
        ledger.restate(view.unpaid, "unpaid", UNPAID)
        if len(view.dead):
            self.context.log.warning(
                f"{day}: {len(view.dead)} creates a stopped run sent without recording their "
                "answer are in doubt: `soundharvest generate "
                f"{day} --resubmit-in-doubt` sends them again"
            )

    def say_plan(self, plan: DayPlan) -> None:
        counts = _counts(plan.plans)
        said = ", ".join(f"{n} {status}" for status, n in counts.items())
        rows = sum(counts.values())
        self.context.log.info(f"{plan.day}: {rows} sheet rows (one per take): {said}")

    def submit(self, ledger: Ledger, plan: DayPlan, outcomes: dict[bytes, CreateOutcome]) -> None:
        """Send the rows to send; each outcome into `outcomes` once it is recorded."""
        to_send = plan.to_send()
        if not to_send:
            return
        ledger.expect(_entry(row) for row in to_send)
        creations = [self.creation(plan.day, row) for row in to_send]

        def record(batch: Sequence[CreateOutcome]) -> None:
            ledger.record(
                [
                    (bytes.fromhex(o.key), _LEDGER_STATE.get(o.state, o.state), o.task_id, o.reason)
                    for o in batch
                ]
            )
            outcomes.update((bytes.fromhex(o.key), o) for o in batch)

        self.camb.submit(
            creations,
            intend=lambda window: ledger.intend([bytes.fromhex(c.key) for c in window]),
            record=record,
        )

    def creation(self, day: str, plan: RowPlan) -> Creation:
        request, key = plan.row.request, plan.key
        assert request is not None and key is not None
        return Creation(
            key=key.hex(),
            prompt=request.prompt,
            duration=request.duration,
            audio_type=request.audio_type,
            # What a person searches for in the vendor's studio: the day and the sheet, the key.
            project_name=f"soundharvest {day} {os.path.basename(plan.row.sheet)}",
            project_description=f"soundharvest key {short(key)} run {self.context.run.run_id[:8]}",
        )

    def finish(
        self,
        ledger: Ledger,
        plan: DayPlan,
        outcomes: dict[bytes, CreateOutcome],
        elapsed_s: float,
    ) -> DayGenerations:
        """The rows as the submission left them, kept; the ledger compacted; the figures."""
        stopped = apply_outcomes(plan, outcomes)
        write_rows(self.state, plan.day, plan.plans)
        ledger.compact()
        sent = [o for o in outcomes.values() if o.state in ("created", "in doubt")]
        seconds = sum(
            self.limits.budget_seconds(ledger.entries[bytes.fromhex(o.key)].duration) for o in sent
        )
        done = DayGenerations(
            _counts(plan.plans), len(sent), seconds, plan.allowance.left(), elapsed_s, stopped
        )
        self.say_done(plan.day, done)
        return done

    def say_done(self, day: str, done: DayGenerations) -> None:
        counts = ", ".join(f"{done.counts.get(s, 0)} {s}" for s in _SHOWN if done.counts.get(s))
        self.context.log.info(
            f"{day}: {done.sent} creates sent in {done.submit_s:.1f} s; rows: {counts or 'none'}"
        )
        if done.stopped:
            self.context.log.warning(f"{day}: {done.stopped}")

    def in_doubt_check(self) -> Any:
        days = in_doubt(self.state)
        total = sum(days.values())
        listed = ", ".join(f"{day} ({n})" for day, n in sorted(days.items()))
        failure = (
            f"{total} generation{'s' * (total != 1)} in doubt (sent, their answer lost: maybe "
            f"created and charged): {listed}; `soundharvest generate D --resubmit-in-doubt` "
            "sends a day's again"
            if days
            else ""
        )
        metadata = {
            "days": MetadataValue.text(day_ranges(days) if days else ""),
            "in doubt": MetadataValue.int(total),
        }
        return check_result(IN_DOUBT_CHECK, AssetCheckSeverity.WARN, failure, metadata)

    @staticmethod
    def totals(done: dict[str, DayGenerations]) -> dict[str, int | float]:
        totals: dict[str, int | float] = {
            s: sum(d.counts.get(s, 0) for d in done.values()) for s in _SHOWN
        }
        totals["sent by this run"] = sum(d.sent for d in done.values())
        return totals


def apply_outcomes(plan: DayPlan, outcomes: dict[bytes, CreateOutcome]) -> str | None:
    """Each row sent: what came of it; each row to send that was not: deferred, saying why.
    Returns the line to say when the submissions stopped early (out of credits)."""
    credits = any(o.state == "out of credits" for o in outcomes.values())
    fix = OUT_OF_CREDITS_FIX.format(day=plan.day)
    for row in plan.plans:
        if row.status != TO_SEND:
            continue
        outcome = outcomes.get(row.key) if row.key is not None else None
        if outcome is None or outcome.state in ("not sent", "out of credits"):
            why = outcome.reason if outcome is not None else "not sent: the run stopped first"
            row.status = "deferred"
            row.reason = f"deferred: {OUT_OF_CREDITS}: {fix}" if credits else why
        elif outcome.state == "created":
            row.status, row.task_id = "created", outcome.task_id
        elif outcome.state == "refused":
            row.status, row.reason = "rejected", outcome.reason
        else:
            row.status, row.reason = "in doubt", outcome.reason
    if not credits:
        return None
    deferred = sum(1 for row in plan.plans if row.status == "deferred")
    return f"{OUT_OF_CREDITS}: submissions stopped, {deferred} rows deferred: {fix}"


def _entry(plan: RowPlan) -> Entry:
    request, key = plan.row.request, plan.key
    assert request is not None and key is not None
    return Entry(
        key=key,
        base=request.base,
        round=plan.round,
        sheet=plan.row.sheet,
        line=plan.row.line,
        take=request.take,
        prompt=request.prompt,
        duration=request.duration,
        audio_type=request.audio_type,
    )


def _counts(plans: Sequence[RowPlan]) -> dict[str, int]:
    return dict(Counter(plan.status for plan in plans))
