"""One API limit shared by every run: per-step shares of the total, the gate, and the rate
shared through a real Redis across processes."""

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest
from dagster import instance_for_test

from pipelines.instance_home import prepare
from resources.camb import DAY_BUDGET_SPENT, Fetched, Pending
from resources.camb.limits import (
    POOL,
    LimitConfigError,
    RedisRate,
    RequestGate,
    pool_limit,
    request_gate,
    step_in_flight,
)

from support import PROJECT
from support.client_helpers import harvest, leftovers, ready_ids, settings_for
from support.pipeline_kit import cli_env, launch_together, read_whole_catalog, write_manifest

TOTAL = 4
HANG_GUARD_S = 60  # generous: only says "bounded", never "fast"


def test_each_step_gets_an_equal_share_of_the_total():
    assert step_in_flight(12, 4) == 3
    assert step_in_flight(10, 4) == 2  # rounded down: 4 steps x 2 <= 10
    with pytest.raises(LimitConfigError, match="dagster instance concurrency set camb_api"):
        step_in_flight(8, None)
    with pytest.raises(LimitConfigError, match="more than CAMB_TOTAL_CONCURRENCY=3"):
        step_in_flight(3, 4)


def test_the_pool_limit_is_the_instances(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "default").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "plain")) as instance:
        assert pool_limit(instance) is None
    overrides = {"concurrency": {"pools": {"default_limit": 3}}}
    with instance_for_test(temp_dir=str(tmp_path / "default"), overrides=overrides) as instance:
        assert pool_limit(instance) == 3
        instance.event_log_storage.set_concurrency_slots(POOL, 5)
        assert pool_limit(instance) == 5
    assert pool_limit(None) is None


class CountingRate:
    def __init__(self) -> None:
        self.tokens = 0

    async def acquire(self) -> None:
        self.tokens += 1


def test_the_gate_holds_its_slots_and_takes_tokens_for_api_calls_only():
    rate = CountingRate()
    gate = RequestGate(3, rate)
    in_flight, peak = 0, 0

    async def request(api: bool) -> None:
        nonlocal in_flight, peak
        async with gate.request(api=api):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1

    async def main() -> None:
        await asyncio.gather(*(request(api=i % 2 == 0) for i in range(20)))

    asyncio.run(main())
    assert peak == 3 and rate.tokens == 10


def test_without_redis_the_rate_is_split_among_the_pool_slots():
    gate = request_gate(4, 6.0, pool_slots=3)
    assert gate.max_in_flight == 4
    assert gate._rate.max_rate == 2.0  # 6/s shared by 3 steps


def rate_cut_by_the_deadline(sandbox, tmp_path, gate: RequestGate) -> None:
    """Ten runs are two bulk calls; a rate of one call per 1000 s lets only the first through,
    so the second batch waits for a token inside the gate until the day's deadline ends it."""
    run_ids = ready_ids(14_000, 10)
    started = time.monotonic()
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path, gate, deadline=started + 1.0)

    assert time.monotonic() - started < HANG_GUARD_S  # not the 1000 s the rate asks for
    assert sandbox.stats()["api_requests"] == 1
    waited = [outcomes[i] for i in run_ids if not isinstance(outcomes[i], Fetched)]
    assert len(waited) >= 5 and all(o == Pending(o.run_id, DAY_BUDGET_SPENT) for o in waited)
    assert leftovers(tmp_path, outcomes) == set()


def test_a_wait_for_a_rate_token_ends_at_the_day_deadline(sandbox, tmp_path):
    rate_cut_by_the_deadline(sandbox, tmp_path, request_gate(8, 0.001))


def test_a_wait_for_a_redis_rate_token_ends_at_the_day_deadline(sandbox, tmp_path, redis_server):
    rate = RedisRate(redis_server.url(), 0.001, key=f"test-{uuid.uuid4().hex}")
    rate_cut_by_the_deadline(sandbox, tmp_path, RequestGate(8, rate))


RATE_CLIENT = """
import asyncio, json, sys, time
from resources.camb.limits import RedisRate

async def main(url, key, hits):
    rate = RedisRate(url, 5, key=key)
    print("ready", flush=True)
    sys.stdin.readline()  # every process starts together
    started = time.time()
    for _ in range(hits):
        await rate.acquire()
    print(json.dumps([started, time.time()]), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_a_rate_shared_through_redis_holds_across_processes(redis_server):
    """Three processes take 5 tokens each from one 5/s window: 15 tokens need at least 2 s
    (token i and i+5 lie a second apart). Alone, each process would be done at once. The bound
    is a lower one, which a slow machine only makes easier to meet."""
    key = f"test-{uuid.uuid4().hex}"
    command = [sys.executable, "-c", RATE_CLIENT, redis_server.url(), key, "5"]
    processes = [
        subprocess.Popen(
            command, cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    spans = []
    for process in processes:
        spans.append(json.loads(process.stdout.readline()))
        assert process.wait(timeout=60) == 0

    first_start, last_token = min(s for s, _ in spans), max(e for _, e in spans)
    assert last_token - first_start >= 2.0


@pytest.mark.slow
def test_days_in_separate_processes_never_exceed_the_total(sandbox, tmp_path):
    """Three days materialized by three CLI processes at once, on one instance whose
    `camb_api` pool has two slots, with CAMB_TOTAL_CONCURRENCY=4: each step may keep two
    requests in flight, so the sandbox must never see more than four at once. (Without the
    share a single process keeps eight in flight: 40 runs are eight bulk calls.)"""
    days = ("2026-11-01", "2026-11-02", "2026-11-03")
    for offset, day in enumerate(days):
        write_manifest(
            tmp_path / "manifests", day, list(range(2000 + 100 * offset, 2040 + 100 * offset))
        )
    # The project's instance config (its pool of two; its SQLite event log claims a slot in one
    # statement: Dagster's own let steps starting at once share one). Its tables are created
    # once, as `dagster instance migrate` does in a deployment: three processes racing to
    # create a fresh SQLite instance can corrupt its schema version.
    prepare(tmp_path / "dagster_home", PROJECT / "pipelines" / "dagster.yaml")
    env = cli_env(sandbox, tmp_path) | {"CAMB_TOTAL_CONCURRENCY": str(TOTAL)}
    sandbox.set_faults(latency_s=0.1)  # API calls overlap, as they do against the real API

    launch_together(list(days), env)
    stats = sandbox.stats()
    print(
        f"\npeak in flight with {len(days)} runs at once: {stats['max_in_flight']} (total {TOTAL})"
    )
    assert 1 <= stats["max_in_flight"] <= TOTAL
    assert stats["downloads"] > 0
    catalog = read_whole_catalog(tmp_path)
    assert sorted(catalog.date.astype(str).unique()) == list(days) and len(catalog) == 120
