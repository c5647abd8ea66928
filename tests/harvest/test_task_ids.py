"""Manifests of task ids (docs/task-ids.md): resolved through the status endpoint, then harvested.

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
- kill -9 in the middle of a task-id day, then a run that completes without asking again
  what was checkpointed: `test_after_kill_9_nothing_checkpointed_is_asked_again`
"""

import asyncio
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from assets.harvest.catalog_rows import validate_invariants
from assets.harvest.manifest_files import load_day
from assets.harvest.records import read_state, state_relpath
from assets.harvest.task_map import TASK_STATE
from resources.camb import (
    DAY_BUDGET_SPENT,
    Answer,
    CambAuthError,
    CambClient,
    CambConfigError,
)
from resources.camb.task_resolver import NO_SUCH_TASK, TaskAnswer, TaskResolver, interpret_status
from sandbox import run_state
from sandbox.rules import task_fate, task_id_for

from support.client_helpers import settings_for
from support.pipeline_kit import (
    DAY,
    assert_ok_rows_verify,
    local_storage,
    read_catalog,
    run,
    scratch_fixture,  # noqa: F401  (the `scratch` fixture)
)
from support.sandbox_api import SANDBOX_KEY


def resolve(settings, task_ids, run_ids=(), workdir: Path | None = None, **options):
    """(answers by task id, outcomes by run id) of one harvest with a task resolver."""
    answers: dict[str, TaskAnswer] = {}

    def record(answer: TaskAnswer) -> None:
        assert answer.task_id not in answers, "a task was asked twice"
        answers[answer.task_id] = answer
        MOMENTS.append(("answer", time.monotonic()))

    async def go() -> dict:
        async with CambClient(settings) as client:
            resolver = TaskResolver(task_ids, record, concurrency=settings.max_concurrency)
            harvest = client.harvest(run_ids, workdir, resolve=resolver, **options)
            outcomes = {}
            async for outcome in harvest:
                outcomes[outcome.run_id] = outcome
                MOMENTS.append(("outcome", time.monotonic()))
            return outcomes

    outcomes = asyncio.run(go())
    for outcome in outcomes.values():
        getattr(outcome, "path", Path("/nonexistent")).unlink(missing_ok=True)
    return answers, outcomes


MOMENTS: list[tuple[str, float]] = []  # what `resolve` saw happen, and when


def ready_tasks(start: int, count: int) -> list[str]:
    ids = [i for i in range(start, start + 3 * count) if run_state(i) == "ready"][:count]
    return [task_id_for(i) for i in ids]


# -- the mapping, row by row ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"status": "SUCCESS", "run_id": 42}, ("resolved", 42, None, True)),
        (200, {"status": "SUCCESS", "run_id": "42"}, ("resolved", 42, None, True)),
        (200, {"status": "SUCCESS", "run_id": None}, ("failed", None, "without a run id", False)),
        (200, {"status": "SUCCESS", "run_id": True}, ("failed", None, "without a run id", False)),
        (200, {"status": "PENDING", "run_id": None}, ("pending", None, "PENDING", False)),
        (200, {"status": "RUNNING"}, ("pending", None, "task status RUNNING", False)),
        (200, {}, ("pending", None, "no status", False)),
        (
            200,
            {"status": "ERROR", "exception_reason": "INTERNAL_ERROR", "message": "boom"},
            ("failed", None, "task status ERROR: INTERNAL_ERROR: boom", True),
        ),
        (200, {"status": "TIMEOUT"}, ("failed", None, "task status TIMEOUT", True)),
        (
            200,
            {"status": "payment_required", "exception_reason": "PAYMENT_REQUIRED"},
            ("failed", None, "PAYMENT_REQUIRED: PAYMENT_REQUIRED", True),
        ),
        (
            200,
            {"status": "ERROR", "message": "see https://h/x?X-Amz-Signature=s3cr3t"},
            ("failed", None, "https://h/x", True),
        ),
        (404, None, ("failed", None, NO_SUCH_TASK, True)),
        (422, None, ("failed", None, "HTTP 422", False)),
        (None, None, ("failed", None, "no answer", False)),
    ],
)
def test_each_status_answer_maps_to_its_outcome(status, body, expected):
    problem = None if body is not None else ("no answer" if status is None else f"HTTP {status}")
    answer = interpret_status("t-1", Answer(status, body, problem))
    assert (answer.status, answer.run_id, answer.final) == (expected[0], expected[1], expected[3])
    if expected[2]:
        assert expected[2] in answer.reason
    assert "s3cr3t" not in (answer.reason or "")


def test_absurd_task_ids_are_rejected_with_a_reason(tmp_path):
    import fsspec

    rows = ["", "   ", "x" * 201, "bell\x07", "zero\u200bwidth", "..", "ok-1", "ok-1", "ok 2"]
    lines = "".join(json.dumps({"task_id": r}) + "\n" for r in rows)
    (tmp_path / "2026-11-01.jsonl").write_text(lines)
    frame = load_day(fsspec.filesystem("file"), str(tmp_path), "2026-11-01")
    assert frame["status"].tolist() == ["rejected"] * 6 + ["accepted", "rejected", "accepted"]
    assert frame["error"].tolist()[:6] == [
        "task_id is empty",
        "task_id is empty",
        "task_id of 201 characters (at most 200)",
        "task_id holds a control or invisible character ('\\x07')",
        "task_id holds a control or invisible character ('\\u200b')",
        "task_id '..' is not an id",
    ]
    assert frame["error"][7].startswith("duplicate of task_id 'ok-1' at")
    assert frame["run_id"].isna().all()


def test_the_catalog_contract_allows_no_run_id_only_to_unresolved_tasks():
    rows = pd.DataFrame(
        {
            "run_id": pd.array([None, None, None, 5], "Int64"),
            "status": ["pending", "failed", "ok", "failed"],
            "error": ["task status PENDING", "no such task", None, "x"],
            "uri": [None, None, "/a.wav", None],
            "size_bytes": pd.array([None, None, 1, None], "Int64"),
            "sha256": [None, None, "0" * 64, None],
            "task_id": ["t-1", "t-2", "t-3", None],
        }
    )
    assert validate_invariants(rows) == ["not rejected but no run_id: task_id t-3 (1 row)"]
    rows.loc[2, "task_id"] = "t-1"
    rows.loc[2, ["status", "error"]] = ["pending", "again"]
    assert validate_invariants(rows) == [
        "run id (task id if none) on more than one row that is not rejected: task_id t-1 (2 rows)"
    ]


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
    """One task-id day materialized twice: (storage, catalog after run 1, stats of run 1, of run
    2, catalog after run 2, result of run 2)."""
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
    second = run(sandbox_server, storage)
    assert second.success
    yield storage, catalog, first, sandbox_server.stats(), read_catalog(storage), second
    sandbox_server.reset()


def test_every_task_outcome_reaches_the_catalog_and_a_rerun_asks_less(task_day):
    _, catalog, first, second, again, _ = task_day
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
    # The same outcomes and answers: a rerun by hand never says soundharvest gave up, though
    # the day is past the horizon (only the sweep's final run does: assets/harvest/sweep.py).
    assert again["status"].equals(catalog["status"])
    assert again["error"].equals(catalog["error"])


def test_files_and_catalog_count_the_same_rows_and_distinct_runs(task_day):
    """A task that never resolved is a run to come, named by its task id: sound_files counted
    it out (its rows only had run ids), sound_catalog in."""
    *_, catalog, result = task_day
    live = catalog[catalog["status"] != "rejected"]
    keys = live["run_id"].astype("string").fillna(live["task_id"])
    for asset in ("sound_files", "sound_catalog"):
        [event] = result.asset_materializations_for_node(asset)
        figures = (event.metadata["rows"].value, event.metadata["distinct runs"].value)
        assert figures == (len(catalog), keys.nunique()), asset
    assert keys.nunique() < len(catalog)  # rejected copies: rows and runs differ


def test_a_run_fetched_for_a_row_rejected_later_leaves_no_file(task_day):
    """Run 1009 is fetched before its row's task names run 1011: the row is rejected, and
    neither a file nor a ledger row of 1009 stays behind."""
    storage, catalog, first, *_ = task_day
    assert first["downloads_by_run"].get(1009) == 1  # fetched at first, before its task said
    audio = Path(storage.audio_root) / DAY
    ok = catalog.loc[catalog["status"] == "ok", "run_id"].astype(int)
    assert sorted(int(p.stem) for p in audio.glob("*.wav")) == sorted(ok)
    ledger = read_state(storage.catalog(), "sound_files", DAY)
    assert 1009 not in set(ledger["run_id"]) and 1008 in set(ledger["run_id"])


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


def test_tasks_the_day_budget_left_unasked_are_pending_saying_so(
    sandbox, tmp_path, scratch, monkeypatch
):
    storage = local_storage(tmp_path)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / f"{DAY}.csv").write_text("task_id\ntask-1001\ntask-1002\n")
    monkeypatch.setenv("SOUNDHARVEST_DAY_BUDGET_S", "0.000001")  # spent before any call
    assert run(sandbox, storage).success
    catalog = read_catalog(storage)
    assert catalog["status"].tolist() == ["pending", "pending"]
    assert catalog["error"].str.contains(DAY_BUDGET_SPENT).all()
    assert sandbox.stats()["api_requests"] == 0


# -- the client -------------------------------------------------------------------------------


def test_resolved_runs_join_bulk_batches_while_tasks_are_still_asked(sandbox, tmp_path):
    sandbox.set_faults(latency_s=0.03)
    tasks = ready_tasks(3000, 40)
    settings = settings_for(sandbox, max_concurrency=4)
    MOMENTS.clear()
    answers, outcomes = resolve(settings, tasks, workdir=tmp_path)
    # Runs are fetched while other tasks are still being asked about.
    first_outcome = min(t for what, t in MOMENTS if what == "outcome")
    assert first_outcome < max(t for what, t in MOMENTS if what == "answer")
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


# -- kill -9 ----------------------------------------------------------------------------------


def _materialize_in_child(sandbox, storage, checkpoint_s: str) -> None:
    os.environ["SOUNDHARVEST_CHECKPOINT_S"] = checkpoint_s
    os._exit(0 if run(sandbox, storage, camb={"max_concurrency": 2}).success else 1)


def test_after_kill_9_nothing_checkpointed_is_asked_again(sandbox, tmp_path, scratch, monkeypatch):
    tasks = ready_tasks(7000, 40)
    storage = local_storage(tmp_path)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / f"{DAY}.csv").write_text("task_id\n" + "\n".join(tasks) + "\n")
    answers = tmp_path / "catalog" / state_relpath(TASK_STATE, DAY)
    sandbox.set_faults(latency_s=0.05)  # a few seconds of work at two calls at a time
    # A forked child (dagster already imported: no start-up to wait for), killed with
    # SIGKILL once its first checkpoint (every outcome: SOUNDHARVEST_CHECKPOINT_S=0) is saved.
    child = multiprocessing.get_context("fork").Process(
        target=_materialize_in_child, args=(sandbox, storage, "0")
    )
    child.start()
    try:
        deadline = time.monotonic() + 60
        while not answers.exists() and child.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.is_alive(), "the run ended before the kill"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    saved = pd.read_parquet(answers)
    checkpointed = set(saved.loc[saved["final"], "task_id"])
    assert 0 < len(checkpointed) < len(tasks)

    time.sleep(0.5)  # the sandbox finishes answering the dead child's calls (0.05 s latency)
    sandbox.reset()
    monkeypatch.setenv("SOUNDHARVEST_CHECKPOINT_S", "0")
    assert run(sandbox, storage, camb={"max_concurrency": 2}).success
    polls = sandbox.stats()["status_polls"]
    assert set(polls) == set(tasks) - checkpointed and set(polls.values()) == {1}
    catalog = read_catalog(storage)
    assert sorted(catalog["task_id"]) == sorted(tasks) and (catalog["status"] == "ok").all()
    assert_ok_rows_verify(catalog)
