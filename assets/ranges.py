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
days go on. Trouble of the whole run stops it: a refused key or a wrong configuration
(`CambAuthError`, `CambConfigError`) would fail every other day the same way, and an API
outage or a storage error would only spend the other days' budgets; those two may pass, so
the step is retried after `SOUNDHARVEST_STEP_RETRY_DELAY_S`.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, Failure, RetryRequested

from assets.core.settings import PipelineSettings, SettingsError
from resources.camb_client import CambApiError, CambAuthError, CambConfigError
from resources.storage import StorageError

T = TypeVar("T")

# Failures that stop the days of a step; the first two are never worth a retry.
FATAL = (CambAuthError, CambConfigError)
RUN_WIDE = (CambApiError, StorageError)


class DayProblem(Exception):
    """Something wrong with one day's own inputs: that day fails, the others go on."""


@dataclass
class Days(Generic[T]):
    """The outcome of running a step's days: results of the completed ones, the rest."""

    keys: Sequence[str]
    done: dict[str, T] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # day -> why
    not_tried: list[str] = field(default_factory=list)
    retriable: bool = False

    def report(self) -> str:
        """One message: the failures, then what completed and what was not tried."""
        lines = [f"{day}: {why}" for day, why in self.failed.items()]
        if len(self.keys) > 1:
            if self.done:
                lines.append(f"completed: {day_ranges(self.done)}")
            if self.not_tried:
                lines.append(f"not tried: {day_ranges(self.not_tried)}")
        return "\n".join(lines)


def run_days(keys: Sequence[str], work: Callable[[str], T]) -> Days[T]:
    """`work(day)` for each day in order, as far as the failures allow (see the module doc)."""
    days: Days[T] = Days(keys)
    for index, day in enumerate(keys):
        try:
            days.done[day] = work(day)
        except DayProblem as exc:
            days.failed[day] = str(exc)
        except RUN_WIDE as exc:
            days.failed[day] = str(exc)
            days.not_tried = list(keys[index + 1 :])
            days.retriable = not isinstance(exc, FATAL)
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


def settings() -> PipelineSettings:
    """The settings of this step; a bad one fails it with a message naming the variable."""
    try:
        return PipelineSettings.from_env()
    except SettingsError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None


def fail(context: AssetExecutionContext, days: Days[Any], settings: PipelineSettings) -> NoReturn:
    """Raise the step's failure: a retry request while retries are left and worth it."""
    message = days.report()
    attempt = context.retry_number
    # RetryRequested rather than a RetryPolicy on the asset: the policy is fixed when the
    # definitions load, while delay and count are settings read when the step runs.
    if days.retriable and attempt < settings.step_retries:
        context.log.warning(
            f"{message}\nretrying in {settings.step_retry_delay_s:g} s "
            f"(retry {attempt + 1} of {settings.step_retries})"
        )
        raise RetryRequested(
            max_retries=settings.step_retries, seconds_to_wait=settings.step_retry_delay_s
        ) from Failure(description=message)
    raise Failure(description=message, allow_retries=False)
