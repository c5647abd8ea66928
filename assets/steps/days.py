"""The days of one step: what completed, what failed and why, what was never tried.

A range run (`--partition-range`, `BackfillPolicy.single_run`) gives one step every day of the
range. A day that fails must not throw away the days that completed, so each asset runs its
days through `run_days`, and when some failed:

1. it reports every completed day as materialized, one `AssetMaterialization` per partition
   (`mark_done`: a step's `MaterializeResult` would stand for all its partitions; with these
   events Dagster shows the completed partitions materialized and only the others failed);
2. it raises one error naming the failed days, the completed ones and those not tried, as
   ranges ready for `--partition-range` (`Days.report`); `failures.py` raises it, retried
   when the cause may pass.

Which failures end the loop: a problem of one day's own inputs (`DayProblem`) lets the other
days go on. Trouble of the whole run stops it: an operator's mistake (`OperatorError`: a
refused or missing key, a wrong base URL, an API never reached, every download refused by
the policy, a storage root that cannot be written or reached, a full disk) would fail every
other day the same way, and an API outage or a storage error would only spend the other
days' budgets. A step whose failed days all failed for a reason only the operator can mend
(`DayProblem.fix`: a manifest that cannot be parsed) is the operator's too, after the other
days went on.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization

from resources.camb import CambApiError
from resources.error_kinds import OperatorError
from resources.storage import StorageError
from resources.storage.operator_faults import operator_error

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
