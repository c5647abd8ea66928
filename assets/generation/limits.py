"""What a sheet row may ask for, and what may be spent: the `SOUNDHARVEST_GENERATE_*` settings.

Read from the environment when a step starts (a bad value fails it, naming the variable).

Row rules, each with a default:

| variable                               | default | a row is rejected when                  |
|----------------------------------------|---------|-----------------------------------------|
| `SOUNDHARVEST_GENERATE_MAX_PROMPT_CHARS` | 1000  | its prompt (normalized) is longer        |
| `SOUNDHARVEST_GENERATE_MIN_DURATION_S`  | 0.5    | its duration is shorter                 |
| `SOUNDHARVEST_GENERATE_MAX_DURATION_S`  | 30     | its duration is longer                  |
| `SOUNDHARVEST_GENERATE_MAX_TAKES`       | 10     | it asks for more takes                  |

The vendor publishes no prompt limit that we found; 1,000 characters is far beyond any sound
description and far below what a runaway cell (a pasted document) holds.

Budget, unset = no limit; per UTC day and per UTC calendar month, counted by when a create
was sent (a create in doubt counts: it may have been charged):

| variable                                 | limits                                   |
|------------------------------------------|------------------------------------------|
| `SOUNDHARVEST_GENERATE_PER_DAY`          | generations sent per day                 |
| `SOUNDHARVEST_GENERATE_PER_MONTH`        | generations sent per month               |
| `SOUNDHARVEST_GENERATE_SECONDS_PER_DAY`  | seconds of audio requested per day       |
| `SOUNDHARVEST_GENERATE_SECONDS_PER_MONTH`| seconds of audio requested per month     |

A row without a duration asks for the API's default, which is not published: it counts as
`SOUNDHARVEST_GENERATE_MAX_DURATION_S` against the seconds (it may be as long).
"""

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from resources.error_kinds import SettingError

PREFIX = "SOUNDHARVEST_GENERATE_"


@dataclass(frozen=True)
class GenerationLimits:
    max_prompt_chars: int = 1000
    min_duration_s: float = 0.5
    max_duration_s: float = 30.0
    max_takes: int = 10
    per_day: int | None = None
    per_month: int | None = None
    seconds_per_day: float | None = None
    seconds_per_month: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "GenerationLimits":
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = environ.get(variable(field.name), "").strip()
            if raw:
                whole = field.type in (int, int | None)
                values[field.name] = _number(variable(field.name), raw, whole)
        limits = cls(**values)
        limits.check()
        return limits

    def check(self) -> None:
        if self.max_prompt_chars < 1 or self.max_takes < 1:
            name = "MAX_PROMPT_CHARS" if self.max_prompt_chars < 1 else "MAX_TAKES"
            raise _error(PREFIX + name, "must be at least 1")
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise _error(
                PREFIX + "MIN_DURATION_S",
                f"must be above 0 and at most {PREFIX}MAX_DURATION_S ({self.max_duration_s:g})",
            )

    def budget_seconds(self, duration: float | None) -> float:
        """What one generation counts against the seconds budget."""
        return self.max_duration_s if duration is None else duration

    @property
    def limited(self) -> bool:
        return any(
            value is not None
            for value in (
                self.per_day,
                self.per_month,
                self.seconds_per_day,
                self.seconds_per_month,
            )
        )


def variable(field: str) -> str:
    return PREFIX + field.upper()


def _number(name: str, raw: str, whole: bool) -> float:
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise _error(name, f"{raw!r} is not a {'whole number' if whole else 'number'}") from None
    if not math.isfinite(value) or value < 0:
        raise _error(name, f"{raw!r} must be a finite number >= 0")
    return value


def _error(name: str, problem: str) -> SettingError:
    return SettingError(
        f"{name} {problem}", fix=f"set {name} (README: From a prompt sheet)", setting=name
    )
