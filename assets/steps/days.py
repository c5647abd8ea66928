"""The days of one step: what completed, what failed and why, what was never tried.

A range run (`--partition-range`, `BackfillPolicy.single_run`) gives one step every day of the
range. A day that fails must not throw away the days that completed, so each asset runs its
days through `run_days`, and when some failed:

1. it reports every completed day as materialized, one `AssetMaterialization` per partition
   (a step's `MaterializeResult` would stand for all its partitions; with these events
   Dagster shows the completed partitions materialized and only the others failed);
2. it raises one error naming the failed days, the completed ones and those not tried, as
   ranges ready for `--partition-range`; Dagster retries it when the cause may pass.

Which failures end the loop: a problem of one day's own inputs (`DayProblem`) lets the other
days go on. Trouble of the whole run stops it: an operator's mistake (`OperatorError`: a
refused or missing key, a wrong base URL, an API never reached, every download refused by
the policy, a storage root that cannot be written or reached, a full disk) would fail every
other day the same way, and an API outage or a storage error would only spend the other
days' budgets. Only trouble that may pass is retried, after a wait that starts at
`SOUNDHARVEST_STEP_RETRY_DELAY_S` and doubles (`step_retry_wait_s`); an operator's mistake
fails at once with `ERROR_KIND_KEY: OPERATOR` in the failure's metadata and its one line
(what is wrong, what to fix) last in the message. So does a step whose failed days all
failed for a reason only the operator can mend (`DayProblem.fix`: a manifest that cannot be
parsed), after the other days went on.
"""

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, Failure, RetryRequested

from assets.harvest.settings import PipelineSettings, SettingsError
from resources.camb_client import CambApiError
from resources.errors import ERROR_KIND_KEY, OPERATOR, OperatorError
from resources.retry import step_retry_wait_s
from resources.storage import StorageError
from resources.storage_faults import StorageUnreachable, operator_error

T = TypeVar("T")

# Failures that stop the days of a step; an OperatorError is never worth a retry.
RUN_WIDE = (CambApiError, StorageError, OperatorError)


class DayProblem(Exception):
    """Something wrong with one day's own inputs: that day fails, the others go on.

    With a `fix`, only the operator can mend it (a manifest that cannot be parsed): the
    message says what to do, and a step whose failed days all carry one is the operator's
    mistake, never retried.
    """

    def __init__(self, problem: str, *, fix: str = "") -> None:
        super().__init__(f"{problem}: {fix}" if fix else problem)
        self.fix = fix


@dataclass
class Days(Generic[T]):
    """The outcome of running a step's days: results of the completed ones, the rest."""

    keys: Sequence[str]
    done: dict[str, T] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # day -> why
    not_tried: list[str] = field(default_factory=list)
    retriable: bool = False
    operator: OperatorError | None = None  # the operator's mistake that stopped the days
    to_fix: set[str] = field(default_factory=set)  # failed days only the operator can mend

    def report(self) -> str:
        """One message: the failures, then what completed and what was not tried; an
        operator's mistake is said last, once, without a day (it is no day's own)."""
        failed = {d: why for d, why in self.failed.items() if self.operator is None}
        lines = [f"{day}: {why}" for day, why in failed.items()]
        if len(self.keys) > 1:
            if self.done:
                lines.append(f"completed: {day_ranges(self.done)}")
            not_tried = [*self.not_tried, *(self.failed if self.operator else [])]
            if not_tried:
                lines.append(f"not tried: {day_ranges(not_tried)}")
        if self.operator is not None:
            lines.append(str(self.operator))
        return "\n".join(lines)

    def operators(self) -> bool:
        """Is every failure the operator's to fix (so that no retry can help)?"""
        return self.operator is not None or (
            not self.retriable and bool(self.failed) and self.to_fix >= set(self.failed)
        )


def run_days(keys: Sequence[str], work: Callable[[str], T]) -> Days[T]:
    """`work(day)` for each day in order, as far as the failures allow (see the module doc)."""
    days: Days[T] = Days(keys)
    for index, day in enumerate(keys):
        try:
            days.done[day] = work(day)
        except DayProblem as exc:
            days.failed[day] = str(exc)
            if exc.fix:
                days.to_fix.add(day)
        except RUN_WIDE as exc:
            if isinstance(exc, StorageError):  # a full disk is the operator's wherever met
                exc = operator_error(exc, first_contact=False) or exc
            days.failed[day] = str(exc)
            days.not_tried = list(keys[index + 1 :])
            days.operator = exc if isinstance(exc, OperatorError) else None
            # A storage error with a lasting cause (a read-only disk found mid-day) cannot
            # pass either: it fails without a retry, naming the URI.
            days.retriable = days.operator is None and not getattr(exc, "lasting", False)
            break
    return days


def day_ranges(days: Iterable[str]) -> str:
    """`2026-11-01...2026-11-03, 2026-11-05`: consecutive days folded as the CLI writes them."""
    dates = sorted(dt.date.fromisoformat(day) for day in days)
    spans: list[list[dt.date]] = []
    for date in dates:
        if spans and date - spans[-1][1] == dt.timedelta(days=1):
            spans[-1][1] = date
        else:
            spans.append([date, date])
    return ", ".join(str(first) if first == last else f"{first}...{last}" for first, last in spans)


def mark_done(
    context: AssetExecutionContext,
    days: Mapping[str, Any],
    metadata: Callable[[str], Mapping[str, Any]],
    asset_key: AssetKey | None = None,
) -> None:
    """Report each completed day as a materialized partition (of this asset by default)."""
    for day in days:
        context.log_event(
            AssetMaterialization(
                asset_key=asset_key or context.asset_key, partition=day, metadata=metadata(day)
            )
        )


def operator_failure(message: str, setting: str | None = None) -> Failure:
    """The step's failure for an operator's mistake: never retried, tagged as such."""
    metadata = {ERROR_KIND_KEY: OPERATOR}
    if setting:
        metadata["setting"] = setting
    return Failure(description=message, allow_retries=False, metadata=metadata)


def settings() -> PipelineSettings:
    """The settings of this step; a bad one fails it with a message naming the variable."""
    try:
        return PipelineSettings.from_env()
    except SettingsError as exc:
        raise operator_failure(str(exc)) from None


def preflight(
    context: AssetExecutionContext, config: PipelineSettings, *checks: Callable[[], object]
) -> None:
    """The step's checks before any day and any API call (storage probes, the key).

    An operator's mistake fails the step at once; storage trouble that may pass fails it as
    a day would (retried), before any day was tried. A storage endpoint that cannot be
    reached is the operator's on the step's first attempt only: a retry follows an attempt
    whose probes passed (or met trouble that may pass), so the endpoint was lost since.
    """
    try:
        for check in checks:
            check()
    except OperatorError as exc:
        if not (isinstance(exc, StorageUnreachable) and context.retry_number > 0):
            raise operator_failure(str(exc), exc.setting) from None
        _failed_before_any_day(context, config, str(exc), retriable=True)
    except StorageError as exc:
        _failed_before_any_day(context, config, str(exc), retriable=not exc.lasting)


def _failed_before_any_day(
    context: AssetExecutionContext, config: PipelineSettings, why: str, *, retriable: bool
) -> NoReturn:
    keys = list(context.partition_keys)
    days: Days[Any] = Days(keys, failed={keys[0]: why}, not_tried=keys[1:], retriable=retriable)
    fail(context, days, config)


def fail(context: AssetExecutionContext, days: Days[Any], settings: PipelineSettings) -> NoReturn:
    """Raise the step's failure: a retry request while retries are left and worth it."""
    message = days.report()
    if days.operators():
        raise operator_failure(message, days.operator.setting if days.operator else None)
    attempt = context.retry_number
    # RetryRequested rather than a RetryPolicy on the asset: the policy is fixed when the
    # definitions load, while delay and count are settings read when the step runs.
    if days.retriable and attempt < settings.step_retries:
        wait = step_retry_wait_s(
            attempt + 1, settings.step_retry_delay_s, settings.step_retry_max_delay_s
        )
        context.log.warning(
            f"{message}\nretrying in {wait:.3g} s (retry {attempt + 1} of {settings.step_retries})"
        )
        # The delay is waited here, in the step, not by Dagster (`seconds_to_wait`): told to
        # stop, a step raises at once, while the in-process executor's own wait for a retry
        # cannot be interrupted (SIGTERM used to wait out all 300 s).
        time.sleep(wait)
        raise RetryRequested(max_retries=settings.step_retries) from Failure(description=message)
    raise Failure(description=message, allow_retries=False)
