"""One limit on the requests soundharvest sends, however many runs and machines share it.

The client asks a `RequestGate` before every HTTP request (`async with gate.request(api=...)`):
a slot among the requests in flight (API calls and downloads together), and for API calls
a token of the optional requests-per-second limit.

**Concurrency across runs.** The asset that calls the API sits in the Dagster pool `camb_api`.
Dagster counts that pool's slots in the instance database, so at most `pool_limit` such steps
run at once across every process and machine sharing the instance, whatever the executor
(in-process, multiprocess and Celery all claim slots). Each step takes an equal share of the
configured total, `total // pool_limit` requests in flight, so the API never sees more than
the total. A Redis semaphore would repeat what those slots already do, with leases to expire
by hand; Dagster's run monitoring already frees the slots of a crashed run.

**Rate across runs.** Without Redis each step gets `rate / pool_limit` from `aiolimiter`; with
`CAMB_RATE_LIMIT_REDIS_URL` every process draws from one moving window in the deployment's
Redis, kept by the `limits` library (its timestamps come from the clients' clocks: keep them
in sync, as NTP does).
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from dagster import DagsterInstance

POOL = "camb_api"  # the Dagster pool of every step that calls the API


class LimitConfigError(ValueError):
    """The limits asked for cannot be kept with this instance's configuration."""


class Rate(Protocol):
    async def acquire(self) -> None: ...


class RequestGate:
    """May I start an HTTP request? At most `max_in_flight` at once; API calls also wait for
    a token of `rate` (downloads go to storage hosts, not the API, so they take none)."""

    def __init__(self, max_in_flight: int, rate: Rate | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._rate = rate

    @asynccontextmanager
    async def request(self, *, api: bool) -> AsyncIterator[None]:
        async with self._slots:
            # The token is taken holding the slot, so the request starts right after it.
            if api and self._rate is not None:
                await self._rate.acquire()
            yield


def local_rate(requests_per_second: float) -> AsyncLimiter:
    """A per-process limit; below 1/s it allows one request every 1/rate seconds."""
    if requests_per_second <= 0:
        raise ValueError(f"requests_per_second must be positive, not {requests_per_second}")
    if requests_per_second >= 1:
        return AsyncLimiter(requests_per_second, 1)
    return AsyncLimiter(1, 1 / requests_per_second)


class RedisRate:
    """One moving window of `requests_per_second` shared by every process using `url`.

    Fractional rates become whole requests per whole seconds, rounded down (2.5/s allows 2
    each second, 0.5/s one every 2 s): the limit is never exceeded.
    """

    def __init__(self, url: str, requests_per_second: float, *, key: str = POOL) -> None:
        from limits import RateLimitItemPerSecond
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        if requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, not {requests_per_second}")
        if not url.startswith(("redis://", "rediss://")):
            raise LimitConfigError("CAMB_RATE_LIMIT_REDIS_URL must be a redis:// or rediss:// URL")
        seconds = 1 if requests_per_second >= 1 else math.ceil(1 / requests_per_second)
        self.item = RateLimitItemPerSecond(max(1, int(requests_per_second * seconds)), seconds)
        self._key = key
        self._limiter = MovingWindowRateLimiter(
            RedisStorage(f"async+{url}", implementation="redispy")
        )

    async def acquire(self) -> None:
        while not await self._limiter.hit(self.item, self._key):
            stats = await self._limiter.get_window_stats(self.item, self._key)
            await asyncio.sleep(min(max(stats.reset_time - time.time(), 0.01), 1.0))


def pool_limit(instance: "DagsterInstance | None", pool: str = POOL) -> int | None:
    """The limit the instance puts on `pool` (its own, else the default), or None if none."""
    if instance is None:
        return None
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    for limit in storage.get_pool_limits():
        if limit.name == pool:
            return limit.limit
    return instance.get_concurrency_config().pool_config.default_pool_limit


def step_in_flight(total: int, pool_slots: int | None) -> int:
    """Requests one step may have in flight so that all steps of the pool stay within `total`."""
    if total < 1:
        raise LimitConfigError(f"CAMB_TOTAL_CONCURRENCY must be at least 1, not {total}")
    if pool_slots is None:
        raise LimitConfigError(
            f"CAMB_TOTAL_CONCURRENCY={total} needs a limit on the Dagster pool {POOL!r}, which "
            "this instance does not set: run `dagster instance concurrency set "
            f"{POOL} N` or set concurrency.pools.default_limit in dagster.yaml"
        )
    if pool_slots > total:
        raise LimitConfigError(
            f"the pool {POOL!r} lets {pool_slots} steps run at once, more than "
            f"CAMB_TOTAL_CONCURRENCY={total} requests: lower the pool limit or raise the total"
        )
    return total // pool_slots


def request_gate(
    max_in_flight: int,
    requests_per_second: float | None,
    *,
    redis_url: str | None = None,
    pool_slots: int | None = None,
) -> RequestGate:
    """The gate of one step: the rate through Redis when it is shared, else split evenly
    among the pool's slots (a step alone gets all of it when the pool has no limit)."""
    rate: Rate | None = None
    if requests_per_second is not None and redis_url:
        rate = RedisRate(redis_url, requests_per_second)
    elif requests_per_second is not None:
        rate = local_rate(requests_per_second / (pool_slots or 1))
    return RequestGate(max_in_flight, rate)
