"""What the sandbox counts: requests by kind, per run id and per task id, the faults it served,
and the peaks of requests in flight; `SandboxServer.stats` says what each counter holds."""

import dataclasses
import threading
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    api_requests: int = 0
    bulk_requests: int = 0
    bulk_batch_sizes: list[int] = field(default_factory=list)
    single_requests: int = 0
    status_requests: int = 0
    status_polls: Counter[str] = field(default_factory=Counter)  # task id -> status calls
    create_requests: int = 0  # creates past faults, auth and validation (402s included)
    tasks_created: int = 0
    creates_by_prompt: Counter[str] = field(default_factory=Counter)  # prompt -> tasks created
    downloads: int = 0
    downloads_with_api_key: int = 0
    download_redirects: int = 0
    max_in_flight_api: int = 0
    max_in_flight: int = 0  # API calls and downloads together
    faults_injected: Counter[str] = field(default_factory=Counter)
    # Per run id (keys are strings in JSON): how often it was looked up and downloaded.
    lookups_by_run: Counter[int] = field(default_factory=Counter)
    downloads_by_run: Counter[int] = field(default_factory=Counter)


_COUNTERS = (
    "faults_injected", "lookups_by_run", "downloads_by_run", "status_polls", "creates_by_prompt",
)  # fmt: skip


class Counters:
    """The `Stats` behind one lock: bumped by the handlers, read and reset by the thread that
    controls the sandbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = Stats()
        self._in_flight_api = 0
        self._in_flight = 0

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self._stats, name, getattr(self._stats, name) + n)

    def count_each(self, counter: str, keys: Iterable[Hashable]) -> None:
        """One more for each of `keys` in the per-key counter named (`lookups_by_run`, ...)."""
        with self._lock:
            getattr(self._stats, counter).update(keys)

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self._stats.faults_injected[kind] += 1

    def count_batch(self, size: int | None) -> None:
        with self._lock:
            self._stats.bulk_requests += 1
            if size is not None:
                self._stats.bulk_batch_sizes.append(size)

    def enter_api(self) -> None:
        with self._lock:
            self._stats.api_requests += 1
            self._in_flight_api += 1
            self._stats.max_in_flight_api = max(self._stats.max_in_flight_api, self._in_flight_api)

    def leave_api(self) -> None:
        with self._lock:
            self._in_flight_api -= 1

    def track(self, change: int) -> None:
        with self._lock:
            self._in_flight += change
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._in_flight)

    def in_flight(self) -> int:
        """API calls and downloads being answered now."""
        with self._lock:
            return self._in_flight

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stats = dataclasses.asdict(self._stats)
            for name in _COUNTERS:
                stats[name] = dict(getattr(self._stats, name))
            return stats

    def reset(self) -> None:
        with self._lock:
            # Requests still running stay counted in the new peak.
            self._stats = Stats(
                max_in_flight_api=self._in_flight_api, max_in_flight=self._in_flight
            )
