"""Helpers for the client-level tests: settings for the sandbox, a harvest, ready run ids."""

import asyncio
from pathlib import Path

from resources.camb import CambClient, ClientSettings, RunOutcome
from resources.camb.limits import RequestGate
from resources.camb.retry import RetryPolicy
from sandbox import run_state

from support.sandbox_api import SANDBOX_KEY

FAST_RETRY = RetryPolicy(max_attempts=4, budget_s=10, initial_backoff_s=0.01, max_backoff_s=0.05)


def settings_for(sandbox, **overrides) -> ClientSettings:
    values = dict(
        api_key=SANDBOX_KEY,
        base_url=sandbox.base_url,
        download_allow_hosts=frozenset({"127.0.0.1"}),
        api_retry=FAST_RETRY,
        download_retry=FAST_RETRY,
    )
    values.update(overrides)
    return ClientSettings(**values)


def harvest(
    settings: ClientSettings, run_ids, workdir: Path, gate: RequestGate | None = None, **options
) -> dict[int, RunOutcome]:
    """Every outcome by run id; fails the test if a run gets two or none."""

    async def collect() -> list[RunOutcome]:
        async with CambClient(settings, gate) as client:
            return [outcome async for outcome in client.harvest(run_ids, workdir, **options)]

    outcomes = asyncio.run(collect())
    by_id = {outcome.run_id: outcome for outcome in outcomes}
    assert len(by_id) == len(outcomes), "a run got two outcomes"
    assert sorted(by_id) == sorted(run_ids), "a run got no outcome, or a stranger got one"
    return by_id


def ready_ids(start: int, count: int) -> list[int]:
    ids = []
    run_id = start
    while len(ids) < count:
        if run_state(run_id) == "ready":
            ids.append(run_id)
        run_id += 1
    return ids


def leftovers(workdir: Path, outcomes: dict[int, RunOutcome]) -> set[Path]:
    """Files in the workdir that no `Fetched` outcome owns: temporaries left behind."""
    owned = {getattr(outcome, "path", None) for outcome in outcomes.values()}
    return set(workdir.iterdir()) - owned
