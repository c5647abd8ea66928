"""Tell a bad run from a bad API or a bad configuration.

The rule (quoted in the README): one run's trouble never fails a day, trouble of the whole
API or of the configuration does, with one message. The client reports here the *final*
outcome of every call, after its retries, and decides:

- **Outage** (`CambOutageError`): a count-based sliding window over the final outcomes of
  the last 20 calls, as in a circuit breaker. Once it holds 20 outcomes and at least half
  are failures (5xx, 429 or a connection problem that outlasted the retry policy), the API
  is down and the day stops. The numbers are Hystrix's documented defaults (a request
  volume threshold of 20, an error threshold of 50 %; 50 % is resilience4j's default failure
  rate too). A burst of errors shorter than one call's retry budget is never a failure
  here: the retries absorb it. Below 20 calls the client cannot tell an outage from a few
  bad runs, so it blames the runs: they end `failed` with the reason and are tried again by
  the next materialization. Downloads from the storage host have a window of their own
  with the same numbers.
- **Configuration** (`CambConfigError`): no call has succeeded yet, and calls for at least
  two different runs (calls with no run id in common) were all refused with the very same
  answer (status and detail), e.g. `HTTP 404: Not Found` from a base URL with one `/apis`
  too many. Before saying so, the client asks the bulk endpoint one question that names
  no run (an empty list), which an endpoint that exists answers with 200 or 422; only if
  that gets the same refusal too is it a configuration error. Otherwise the refusals
  belong to the runs (each ends `failed` with the API's answer) and the rule is off for
  the rest of the day.
- **A rejected key** (401/403 from the API, `CambAuthError`) stops the day at once.
"""

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class HealthRule:
    window: int = 20  # final outcomes of calls kept (count-based sliding window)
    min_calls: int = 20  # no verdict of outage before this many outcomes
    failure_rate: float = 0.5  # share of failures in the window that means an outage

    def __post_init__(self) -> None:
        if not 1 <= self.min_calls <= self.window:
            raise ValueError(f"HealthRule: need 1 <= min_calls <= window, got {self}")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError(f"HealthRule.failure_rate must be in (0, 1], got {self}")


class CallHealth:
    """The outcomes of one day's calls to one peer (the API, or the storage host)."""

    def __init__(self, rule: HealthRule) -> None:
        self._rule = rule
        self._failed: deque[bool] = deque(maxlen=rule.window)
        self._succeeded = False
        self._refusal: str | None = None  # the one refusal seen while none succeeded
        self._refused_calls: list[frozenset[Hashable]] = []
        self._config_ruled_out = False

    # -- outage ---------------------------------------------------------------------------

    def answered(self) -> None:
        """The peer answered (any status that is not worth a retry): it is up."""
        self._failed.append(False)

    def failed(self) -> bool:
        """A call outlasted its retries; True when the window now says outage."""
        self._failed.append(True)
        return self.outage()

    def outage(self) -> bool:
        calls = len(self._failed)
        return calls >= self._rule.min_calls and self.failures >= self._rule.failure_rate * calls

    @property
    def failures(self) -> int:
        return sum(self._failed)

    @property
    def calls(self) -> int:
        return len(self._failed)

    # -- configuration --------------------------------------------------------------------

    def succeeded(self) -> None:
        """A call got the answer it asked for: the configuration works."""
        self._succeeded = True

    def refused(self, run_ids: Iterable[Hashable], answer: str) -> bool:
        """Record a refusal; True when the configuration rule holds (confirm it with a probe).
        The calls are told apart by what they name: run ids, task ids, creates' keys."""
        if self._succeeded or self._config_ruled_out:
            return False
        if self._refusal is None:
            self._refusal = answer
        elif answer != self._refusal:
            self._config_ruled_out = True  # refused in different ways: the runs differ
            return False
        ids = frozenset(run_ids)
        other_runs = any(not ids & earlier for earlier in self._refused_calls)
        self._refused_calls.append(ids)
        return other_runs

    @property
    def undecided(self) -> bool:
        """Nothing has succeeded yet, and the configuration is not ruled out."""
        return not self._succeeded and not self._config_ruled_out

    def rule_out_config(self) -> None:
        """The probe was answered: the endpoint exists, the refusals belong to the runs."""
        self._config_ruled_out = True
