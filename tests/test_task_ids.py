"""Manifests of task ids (issue 15): resolved through the status endpoint, then harvested.

- the status mapping, row by row, through the pipeline, and a rerun asking only about tasks
  without a final answer: `test_every_task_outcome_reaches_the_catalog_and_a_rerun_asks_less`
- the fault-matrix rows for the status endpoint (429 with Retry-After, 5xx bursts, resets,
  timeouts, one task failing forever): `test_status_calls_absorb_faults_like_results_calls`,
  `test_a_task_whose_status_fails_forever_fails_alone`
- a wrong key or base URL still fails the day loudly: `test_status_calls_keep_the_api_rules`
- pipelining, and never more requests in flight than the concurrency:
  `test_resolved_runs_join_bulk_batches_while_tasks_are_still_asked`
- a task id is one path segment: `test_a_task_id_never_reaches_another_endpoint`
- the vendor SDK's status call: `test_the_vendor_sdk_reads_task_statuses`
"""

import asyncio
import time
from pathlib import Path

import pandas as pd
import pytest
from client_helpers import settings_for

from assets.core.catalog import validate_invariants
from resources.camb_client import CambAuthError, CambClient, CambConfigError
from resources.task_resolver import NO_SUCH_TASK, TaskAnswer, TaskResolver
from sandbox import run_state
from sandbox.rules import task_fate, task_id_for

from conftest import SANDBOX_KEY
from pipeline_kit import (
    DAY,
    assert_ok_rows_verify,
    local_storage,
    read_catalog,
    run,
    scratch_fixture,  # noqa: F401  (the `scratch` fixture)
)


def resolve(settings, task_ids, run_ids=(), workdir: Path | None = None, **options):
    """(answers by task id, outcomes by run id) of one harvest with a task resolver."""
    answers: dict[str, TaskAnswer] = {}

    def record(answer: TaskAnswer) -> None:
        assert answer.task_id not in answers, "a task was asked twice"
        answers[answer.task_id] = answer

    async def go() -> dict:
        async with CambClient(settings) as client:
            resolver = TaskResolver(task_ids, record, concurrency=settings.max_concurrency)
            harvest = client.harvest(run_ids, workdir, resolve=resolver, **options)
            return {outcome.run_id: outcome async for outcome in harvest}

    outcomes = asyncio.run(go())
    for outcome in outcomes.values():
        getattr(outcome, "path", Path("/nonexistent")).unlink(missing_ok=True)
    return answers, outcomes


def ready_tasks(start: int, count: int) -> list[str]:
    ids = [i for i in range(start, start + 3 * count) if run_state(i) == "ready"][:count]
    return [task_id_for(i) for i in ids]


# -- the pipeline -----------------------------------------------------------------------------

TRAVERSAL = "../text-to-sound-result/1014"
ROWS = {  # (run_id, task_id) -> (status, run_id in the catalog, words of its error)
    ("", "task-1001"): ("ok", 1001, None),
    ("", "task-1017"): ("pending", 1017, None),  # resolved; the run is pending
    ("", "task-1002-pending"): ("pending", None, "task status PENDING"),
    ("", "task-1003-error"): ("failed", None, "task status ERROR: INTERNAL_ERROR"),
    ("", "task-1004-timeout"): ("failed", None, "task status TIMEOUT"),
    ("", "task-1005-payment"): ("failed", None, "task status PAYMENT_REQUIRED: PAYMENT_REQ"),
    ("", "task-1006-norun"): ("failed", None, "SUCCESS without a run id"),
    ("", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"): ("failed", None, NO_SUCH_TASK),
    ("", TRAVERSAL): ("failed", None, NO_SUCH_TASK),
    ("", "task-1001-success"): ("rejected", 1001, "duplicate of run_id 1001 at"),
    ("1008", "task-1008"): ("ok", 1008, None),  # both ids, agreeing
    ("1009", "task-1011"): ("rejected", 1009, "run_id 1009 disagrees with task_id 'task-1011'"),
    ("1012", ""): ("ok", 1012, None),
    ("", "x" * 300): ("rejected", None, "task_id of 300 characters"),
}


@pytest.fixture(scope="module")
def task_day(sandbox_server, tmp_path_factory):
    """One task-id day materialized twice: (storage, catalog, stats of run 1, of run 2)."""
    tmp_path = tmp_path_factory.mktemp("task-day")
    storage = local_storage(tmp_path)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    lines = ["run_id,task_id,prompt"] + [f"{r},{t},sound" for r, t in ROWS]
    (manifests / f"{DAY}.csv").write_text("\n".join(lines) + "\n")
    sandbox_server.reset()
    assert run(sandbox_server, storage).success
    first = sandbox_server.stats()
    catalog = read_catalog(storage)
    sandbox_server.reset()
    assert run(sandbox_server, storage).success
    yield storage, catalog, first, sandbox_server.stats(), read_catalog(storage)
    sandbox_server.reset()


def test_every_task_outcome_reaches_the_catalog_and_a_rerun_asks_less(task_day):
    _, catalog, first, second, again = task_day
    assert len(catalog) == len(ROWS) and not validate_invariants(catalog)
    by_task = {
        row.task_id if isinstance(row.task_id, str) else "": row for row in catalog.itertuples()
    }
    for (_, task_id), (status, run_id, words) in ROWS.items():
        row = by_task[task_id]
        assert row.status == status, (task_id, row.error)
        assert (None if pd.isna(row.run_id) else int(row.run_id)) == run_id
        if words:
            assert words in row.error, (task_id, row.error)
    assert_ok_rows_verify(catalog)
    # Every task asked once; the path-like one reached the status endpoint and nothing else.
    asked = {task for _, task in ROWS if task and len(task) < 300}
    assert first["status_polls"] == dict.fromkeys(asked, 1)
    assert first["single_requests"] == 0
    # The rerun asks only about tasks without a final answer (pending, SUCCESS without run).
    assert second["status_polls"] == {"task-1002-pending": 1, "task-1006-norun": 1}
    assert again[["status", "error"]].equals(catalog[["status", "error"]])


def test_a_rerun_of_a_resolved_day_asks_nothing(sandbox, tmp_path, scratch):
    storage = local_storage(tmp_path)
    (tmp_path / "manifests").mkdir()
    tasks = ready_tasks(2000, 12)
    (tmp_path / "manifests" / f"{DAY}.csv").write_text("task_id\n" + "\n".join(tasks) + "\n")
    assert run(sandbox, storage).success
    assert sandbox.stats()["status_requests"] == len(tasks)
    assert (read_catalog(storage)["status"] == "ok").all()
    sandbox.reset()
    assert run(sandbox, storage).success
    assert sandbox.stats()["api_requests"] == 0


# -- the client -------------------------------------------------------------------------------


def test_resolved_runs_join_bulk_batches_while_tasks_are_still_asked(sandbox, tmp_path):
    sandbox.set_faults(latency_s=0.03)
    tasks = ready_tasks(3000, 40)
    settings = settings_for(sandbox, max_concurrency=4)
    answers, outcomes = resolve(settings, tasks, workdir=tmp_path)
    assert {a.status for a in answers.values()} == {"resolved"}
    assert sorted(outcomes) == sorted(task_fate(t)[0] for t in tasks)
    assert {o.status for o in outcomes.values()} == {"ok"}
    stats = sandbox.stats()
    assert stats["status_requests"] == 40
    assert stats["bulk_requests"] <= 40 // 5 + 4  # batches fill up (a few part-filled)
    assert stats["max_in_flight"] <= 4


def test_status_calls_absorb_faults_like_results_calls(sandbox, tmp_path):
    sandbox.set_faults(retry_after="1")
    sandbox.script("api", "429", "503", "502", "500", "reset", "drop")
    tasks = ready_tasks(4000, 6)
    started = time.monotonic()
    answers, outcomes = resolve(settings_for(sandbox), tasks, workdir=tmp_path)
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After was honoured
    assert {a.status for a in answers.values()} == {"resolved"}
    assert {o.status for o in outcomes.values()} == {"ok"}
    assert sum(sandbox.stats()["faults_injected"].values()) == 6


def test_a_task_whose_status_fails_forever_fails_alone(sandbox, tmp_path):
    tasks = [*ready_tasks(5000, 4), task_id_for(5001, "broken")]
    settings = settings_for(sandbox, read_timeout_s=0.5)
    sandbox.script("api", "hang")  # a read timeout on some call, retried
    answers, outcomes = resolve(settings, tasks, workdir=tmp_path)
    broken = answers.pop(task_id_for(5001, "broken"))
    assert broken.status == "failed" and not broken.final
    assert "HTTP 500" in broken.reason
    assert {a.status for a in answers.values()} == {"resolved"} and len(outcomes) == 4


def test_status_calls_keep_the_api_rules(sandbox, tmp_path):
    tasks = ready_tasks(6000, 3)
    with pytest.raises(CambAuthError, match="CAMB_API_KEY"):
        resolve(settings_for(sandbox, api_key="wrong"), tasks, workdir=tmp_path)
    wrong_base = settings_for(sandbox, base_url=sandbox.origin + "/apis/apis")
    with pytest.raises(CambConfigError, match="CAMB_API_BASE_URL"):
        resolve(wrong_base, tasks, workdir=tmp_path)
    # Unknown tasks answer 404 too, but the endpoint exists: those tasks fail, the day goes on.
    answers, _ = resolve(settings_for(sandbox), ["nope-1", "nope-2", "nope-3"], workdir=tmp_path)
    assert {a.reason for a in answers.values()} == {f"{NO_SUCH_TASK} (HTTP 404)"}


def test_a_task_id_never_reaches_another_endpoint(sandbox, tmp_path):
    odd = [TRAVERSAL, "a/b", "?output_type=raw", "%2e%2e", "#frag", "tâche 1", ".", ".."]
    answers, outcomes = resolve(settings_for(sandbox), odd, workdir=tmp_path)
    assert not outcomes and {a.status for a in answers.values()} == {"failed"}
    stats = sandbox.stats()
    # Nothing but status calls, and the configuration probe (a bulk call naming no run).
    assert stats["single_requests"] == 0 and not any(stats["bulk_batch_sizes"])
    assert set(stats["status_polls"]) == set(odd) - {".", ".."}  # dot segments: never sent


def test_the_vendor_sdk_reads_task_statuses(sandbox):
    from camb.client import CambAI

    tta = CambAI(api_key=SANDBOX_KEY, base_url=sandbox.base_url, timeout=5).text_to_audio
    done = tta.get_text_to_audio_status(task_id_for(1234))
    assert (done.status, done.run_id) == ("SUCCESS", 1234)
    assert tta.get_text_to_audio_status(task_id_for(1234, "pending")).status == "PENDING"
    unpaid = tta.get_text_to_audio_status(task_id_for(1234, "payment"))
    assert (unpaid.status, unpaid.exception_reason) == ("PAYMENT_REQUIRED", "PAYMENT_REQUIRED")
