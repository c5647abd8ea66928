"""The pipeline's reliability settings, read from the environment when a step starts.

- `SOUNDHARVEST_DAY_BUDGET_S` (default 14400, four hours): the longest one day may spend
  fetching; runs not finished by then become `pending` rows that say the budget was spent.
- `SOUNDHARVEST_CHECKPOINT_S` (60): the files ledger of a running day is saved at most this
  often, so a crash loses at most that much of its records.
- `SOUNDHARVEST_STEP_RETRIES` (2), `SOUNDHARVEST_STEP_RETRY_DELAY_S` (10) and
  `SOUNDHARVEST_STEP_RETRY_MAX_DELAY_S` (300): how often a step that failed for a passing
  reason (an API outage, a storage error) is tried again by Dagster, and after how long: the
  first wait is the delay, each further one twice the last, plus a jitter of up to half the
  delay, never more than the maximum (`resources/camb/retry.py`, `step_retry_wait_s`). Seconds, not
  minutes: most such trouble is a blip (a storage endpoint failing over, a dropped network)
  that is over by the first retry, and a longer outage gets ever longer waits. The API's own
  per-call retries (`CAMB_RETRY_*`) have already waited out minutes before a step fails.
- `SOUNDHARVEST_LEASE_TTL_S` (300) and `SOUNDHARVEST_LEASE_WAIT_S` (900): a run holds each
  day's lease while it fetches that day, renewing it every third of the TTL; a crashed
  holder's lease expires after the TTL. Another run of the day waits at most the wait, then
  stops that day naming the holder (`assets/harvest/lease.py`).
"""

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "SOUNDHARVEST_"
# The first day of the daily partitions: structural (read when the definitions load), and what
# the UI counts partitions from, so a default far before the first manifest shows mostly
# empty days (`soundharvest doctor` warns).
FIRST_DAY_VARIABLE = ENV_PREFIX + "FIRST_DAY"
FIRST_DAY_DEFAULT = "2024-01-01"


class SettingsError(ValueError):
    """A setting in the environment that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class PipelineSettings:
    day_budget_s: float = 4 * 3600.0
    checkpoint_s: float = 60.0
    step_retries: int = 2
    step_retry_delay_s: float = 10.0
    step_retry_max_delay_s: float = 300.0
    lease_ttl_s: float = 300.0
    lease_wait_s: float = 900.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "PipelineSettings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = ENV_PREFIX + field.name.upper()
            raw = environ.get(name, "").strip()
            if raw:
                values[field.name] = _parse(name, raw, int if field.type is int else float)
        settings = cls(**values)
        if settings.day_budget_s <= 0:
            raise SettingsError(f"{ENV_PREFIX}DAY_BUDGET_S must be positive")
        if settings.lease_ttl_s <= 0:
            raise SettingsError(f"{ENV_PREFIX}LEASE_TTL_S must be positive")
        return settings


def _parse(name: str, raw: str, kind: type) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name}={raw!r} must be a finite number >= 0")
    return value


def first_day(environ: Mapping[str, str] | None = None) -> dt.date:
    """`SOUNDHARVEST_FIRST_DAY` (default 2024-01-01); SettingsError when it is not a day."""
    environ = os.environ if environ is None else environ
    raw = environ.get(FIRST_DAY_VARIABLE, "").strip() or FIRST_DAY_DEFAULT
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{FIRST_DAY_VARIABLE}={raw!r} is not a day (YYYY-MM-DD)") from None
