"""What may still be spent today and this month, and which rows it allows.

Limits come from `limits.GenerationLimits` (`SOUNDHARVEST_GENERATE_*`, unset: none), per UTC
day and per UTC calendar month, in generations and in seconds of audio requested. What was
spent is read from the ledger by when each create was sent, whatever its sheet's day: every
generation whose latest state is intended, created or in doubt (it may have been charged).

Rows are allowed in sheet order while every limit has room; a row that would pass one is
`deferred`, saying which limit, and a later run sends it when there is room again. Rows are
never dropped, and a later row that would fit is not sent before an earlier one that does
not: the sheet's order is the order of priority.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from assets.generation.ledger import spent_since
from assets.generation.limits import GenerationLimits, variable
from resources.storage import Storage


@dataclass
class Spent:
    today: int = 0
    today_s: float = 0.0
    month: int = 0
    month_s: float = 0.0


def spent(state: Storage, limits: GenerationLimits, now: datetime | None = None) -> Spent:
    """What the ledger says was sent this UTC month, and today."""
    now = now or datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    records = spent_since(state, month_start)
    seconds = records["duration"].map(
        lambda d: limits.budget_seconds(None if d is None or d != d else float(d))
    )
    today = records["intended_at"] >= day_start
    return Spent(
        today=int(today.sum()),
        today_s=float(seconds[today].sum()),
        month=len(records),
        month_s=float(seconds.sum()),
    )


class Allowance:
    """The room left under each limit, taken row by row."""

    def __init__(self, limits: GenerationLimits, spent: Spent) -> None:
        self.limits = limits
        self.spent = spent
        self.closed: str | None = None  # the limit a row met: no later row is sent either

    def take(self, duration: float | None) -> str | None:
        """None when the row fits (and is counted), else why it is deferred."""
        if self.closed is not None:
            return self.closed
        seconds = self.limits.budget_seconds(duration)
        s, limits = self.spent, self.limits
        for field, used, amount, unit, span in (
            ("per_day", s.today, 1, "generations", "today"),
            ("per_month", s.month, 1, "generations", "this month"),
            ("seconds_per_day", s.today_s, seconds, "s of audio", "today"),
            ("seconds_per_month", s.month_s, seconds, "s of audio", "this month"),
        ):
            limit = getattr(limits, field)
            if limit is not None and used + amount > limit:
                self.closed = (
                    f"deferred: over the budget ({variable(field)}={limit:g}; {used:g} "
                    f"{unit} sent {span}): sent by a later run when there is room"
                )
                return self.closed
        s.today, s.month = s.today + 1, s.month + 1
        s.today_s, s.month_s = s.today_s + seconds, s.month_s + seconds
        return None

    def left(self) -> dict[str, float | None]:
        """Room left under each limit (None: no limit)."""
        s, limits = self.spent, self.limits
        used = {
            "per_day": s.today,
            "per_month": s.month,
            "seconds_per_day": s.today_s,
            "seconds_per_month": s.month_s,
        }
        return {
            field: None if getattr(limits, field) is None else max(getattr(limits, field) - n, 0)
            for field, n in used.items()
        }
