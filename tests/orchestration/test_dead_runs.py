"""No dead run blocks a day: a run whose process is gone is marked failed with the reason, and a
live one never is.

First the rules on runs made in an instance (a real process of this host, a real lease on local
disk); then, end to end against the sandbox, a `soundharvest harvest` killed with kill -9: the
next command marks its run failed and `soundharvest status` shows the day's run running, then
killed; and under a real `dagster-daemon` on the project's instance config (run queue, run
monitoring), the daily_harvest run of that day queued behind the dead run starts and succeeds.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
)
from dagster._core.events import EngineEventData
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from assets.harvest.lease import DayLease
from assets.steps.dead_runs import (
    GONE,
    HOST_TAG,
    LAUNCHED_ON,
    PID_TAG,
    mark_dead_runs,
    this_host,
)
from pipelines.cli import cli
from pipelines.instance_home import prepare
from resources.storage import Storage

from support.pipeline_kit import PROJECT, local_storage, run, sandbox_env, write_manifest

DAY = "2026-11-01"
BIN = Path(sys.executable).parent
LOG = logging.getLogger("run_monitoring")


@pytest.fixture(name="instance")
def instance_fixture():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def started_run(instance: DagsterInstance, tags: dict, parent_run_id: str | None = None) -> str:
    """A run of `DAY` that has started (its start time is now), as a process would leave it."""
    run = create_run_for_test(
        instance,
        tags={"dagster/partition": DAY, **tags},
        parent_run_id=parent_run_id,
        root_run_id=parent_run_id,
    )
    start = DagsterEvent(DagsterEventType.PIPELINE_START.value, job_name=run.job_name)
    instance.report_dagster_event(start, run.run_id)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    return run.run_id


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def failure_event(instance: DagsterInstance, run_id: str):
    [record] = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.PIPELINE_FAILURE
    ).records
    return record.event_log_entry.dagster_event


def test_a_run_is_marked_once_its_process_is_gone_never_while_it_lives(instance):
    process = subprocess.Popen(["sleep", "60"])  # the run's process: another one of this host
    try:
        run_id = started_run(instance, {HOST_TAG: this_host(), PID_TAG: str(process.pid)})
        assert mark_dead_runs(instance, None, by="the test") == []
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
        process.kill()  # not reaped yet: a zombie runs nothing
        [gone] = mark_dead_runs(instance, None, by="the test")
    finally:
        process.kill()
        process.wait()
    reason = f"process {process.pid} on {this_host()} is gone (killed?)"
    assert (gone.run_id, gone.days, gone.reason) == (run_id, [DAY], reason)
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    event = failure_event(instance, run_id)
    assert event.message == f"{reason}: marked failed by the test"
    assert event.event_specific_data.error.cls_name == GONE  # how status tells it was killed
    assert mark_dead_runs(instance, None, by="the test") == []  # once


def test_a_younger_process_that_took_the_pid_over_is_not_the_run(instance):
    run_id = started_run(instance, {HOST_TAG: this_host()})
    time.sleep(1.5)  # a process started after the run began cannot be the run's
    younger = subprocess.Popen(["sleep", "60"])
    try:
        instance.add_run_tags(run_id, {PID_TAG: str(younger.pid)})
        [gone] = mark_dead_runs(instance, None, by="the test")
    finally:
        younger.kill()
        younger.wait()
    assert gone.reason == f"process {younger.pid} on {this_host()} is gone (killed?)"


def test_what_a_run_does_not_own_is_not_believed(instance):
    here = {HOST_TAG: this_host(), PID_TAG: str(dead_pid())}
    # A re-executed run carries its parent's tags: they name the parent's process.
    parent = started_run(instance, here)
    child = started_run(instance, here, parent_run_id=parent)
    # A run whose own log records another pid than its tag names: the log is the run's.
    recorded = started_run(instance, here)
    pid = EngineEventData.in_process(os.getpid())
    instance.report_engine_event("Executing steps in process", run_id=recorded, job_name="x",
                                 engine_event_data=pid)  # fmt: skip
    # A run that says nothing of where it runs (`dg launch`, no lease): nothing can be told.
    silent = started_run(instance, {})
    gone = mark_dead_runs(instance, None, by="the test")
    assert [g.run_id for g in gone] == [parent]
    for run_id in (child, recorded, silent):
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED


def test_a_launched_run_is_judged_by_its_launchers_record_and_its_workers_pid(instance):
    """What the run launcher records before the worker starts, and the worker's pid as Dagster
    records it, win over tags copied from the run it re-executes (which name a live process)."""
    parent = started_run(instance, {})
    copied = {HOST_TAG: this_host(), PID_TAG: str(os.getpid())}
    run_id = started_run(instance, copied, parent_run_id=parent)
    here = EngineEventData(metadata={LAUNCHED_ON: this_host()})
    instance.report_engine_event("Starting the run worker", run_id=run_id, job_name="x",
                                 engine_event_data=here)  # fmt: skip
    assert mark_dead_runs(instance, None, by="the test") == []  # its worker has not started
    worker = dead_pid()
    instance.report_engine_event("Started process for run", run_id=run_id, job_name="x",
                                 engine_event_data=EngineEventData.in_process(worker))  # fmt: skip
    [gone] = mark_dead_runs(instance, None, by="the test")
    assert (gone.run_id, gone.reason) == (
        run_id,
        f"process {worker} on {this_host()} is gone (killed?)",
    )


def test_a_run_elsewhere_is_marked_only_once_its_lease_has_expired(instance, tmp_path, monkeypatch):
    catalog = Storage(str(tmp_path / "catalog"))
    run_id = started_run(instance, {HOST_TAG: "elsewhere", PID_TAG: "4242"})
    now = [time.time()]
    with monkeypatch.context() as patched:  # the holder runs on another machine
        patched.setattr(socket, "gethostname", lambda: "elsewhere")
        lease = DayLease(catalog, DAY, run_id, ttl_s=300, clock=lambda: now[0])
    assert lease.try_acquire() is None
    assert mark_dead_runs(instance, catalog, by="the test") == []  # renewed: alive
    now[0] -= 600
    lease.renew()  # its last renewal, 10 minutes ago: expired 5 minutes ago
    [gone] = mark_dead_runs(instance, catalog, by="the test")
    assert gone.reason.startswith(
        f"its lease of {DAY} (process {os.getpid()} on elsewhere) expired at "
    )
    assert gone.reason.endswith(
        "without renewal (SOUNDHARVEST_LEASE_TTL_S): its process is gone or stuck"
    )


def test_run_monitoring_marks_a_dead_run_through_the_projects_launcher(tmp_path, monkeypatch):
    """Dagster's monitoring of a started run, as its daemon runs it, on the instance config of
    `pipelines/dagster.yaml`: Dagster's default launcher could not answer it at all."""
    home = prepare(tmp_path / "home", PROJECT / "pipelines" / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled
        live = started_run(instance, {HOST_TAG: this_host(), PID_TAG: str(os.getpid())})
        dead = started_run(instance, {HOST_TAG: this_host(), PID_TAG: str(dead_pid())})
        for run_id in (live, dead):
            monitor_started_run(instance, None, instance.get_run_record_by_id(run_id), LOG)
        assert instance.get_run_by_id(live).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(dead).status == DagsterRunStatus.FAILURE
        assert failure_event(instance, dead).message.endswith(
            "is gone (killed?): marked failed by the daemon's run monitoring"
        )


def test_the_harvest_of_a_day_marks_a_dead_run_before_it_takes_the_days_lease(
    sandbox, tmp_path, instance
):
    write_manifest(tmp_path / "manifests", DAY, [1001, 1002])
    dead = started_run(instance, {HOST_TAG: this_host(), PID_TAG: str(dead_pid())})
    result = run(sandbox, local_storage(tmp_path), instance=instance)
    assert result.success
    assert instance.get_run_by_id(dead).status == DagsterRunStatus.FAILURE
    assert failure_event(instance, dead).message.endswith(
        f"marked failed by run {result.run_id[:8]}"
    )


# -- end to end ---------------------------------------------------------------------------------


def cli_env(sandbox, tmp_path: Path) -> dict[str, str]:
    write_manifest(tmp_path / "manifests", DAY, list(range(1001, 1081)))
    # Slow downloads, one at a time: the harvest is mid-run for about 40 s.
    sandbox.set_faults(download_latency_s=0.5)
    # No schedule or sensor of the daemon's: the runs of the day are the test's.
    settings = {"CAMB_MAX_CONCURRENCY": "1", "SOUNDHARVEST_AUTOMATION": "off"}
    return sandbox_env(sandbox.base_url, tmp_path) | settings


def start_harvest(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`soundharvest harvest DAY` in its own process, and its run once it is fetching."""
    harvest = subprocess.Popen(
        [str(BIN / "soundharvest"), "harvest", DAY], env=os.environ | env, cwd=PROJECT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return harvest, wait_for_lease(Path(env["SOUNDHARVEST_CATALOG_ROOT"]), harvest)


def wait_for_lease(catalog: Path, process=None, holder: str | None = None) -> str:
    """The run holding DAY's lease (`holder`, if given), once it does: it is fetching the day."""
    lease = catalog / "_state" / "lease" / f"date={DAY}.json"
    deadline = time.monotonic() + 120
    while True:
        held = json.loads(lease.read_text() or "{}") if lease.exists() else {}
        if held.get("run_id") and holder in (None, held["run_id"]):
            return held["run_id"]
        assert process is None or process.poll() is None, "the harvest ended before fetching"
        assert time.monotonic() < deadline, f"no run took the day's lease: {held}"
        time.sleep(0.2)


def soundharvest(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="soundharvest")


@pytest.mark.slow
def test_the_next_command_marks_a_killed_harvest_failed_and_status_shows_it(
    sandbox, tmp_path, monkeypatch
):
    env = cli_env(sandbox, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    harvest, run_id = start_harvest(env)
    try:
        alive = soundharvest("status", "--day", DAY, "--json")  # while it runs: never marked
        assert alive.exit_code == 0, alive.output
        [day] = json.loads(alive.output)["days"]
        assert day["run"] == {"state": "running", "run_id": run_id, "reason": None}
        assert not day["catalog"]  # its first harvest: no catalog partition yet
    finally:
        harvest.send_signal(signal.SIGKILL)
        harvest.wait()

    status = soundharvest("status")
    assert status.exit_code == 0, status.output
    reason = f"process {harvest.pid} on {this_host()} is gone (killed?)"
    assert f"marked failed: run {run_id[:8]} ({DAY}): {reason}" in status.output
    row = next(line for line in status.output.splitlines() if line.strip().startswith(DAY))
    assert row.split()[1:5] == ["-"] * 4  # no catalog partition yet
    assert "killed, marked" in row
    with DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
        message = failure_event(instance, run_id).message
    assert message == f"{reason}: marked failed by soundharvest status"
    [day] = json.loads(soundharvest("status", "--json").output)["days"]
    assert day["run"] == {"state": "killed", "run_id": run_id, "reason": reason}

    sandbox.set_faults(download_latency_s=0.0)
    again = soundharvest("harvest", DAY)  # the day is free: the rerun adopts what was fetched
    assert again.exit_code == 0, again.output
    assert "marked failed" not in again.output


def launch_queued(env: dict[str, str]) -> str:
    """A daily_harvest run of DAY submitted to the run queue, as the UI's launch does."""
    launched = subprocess.run(
        [
            str(BIN / "dagster"), "job", "launch", "-j", "daily_harvest",
            "-w", str(PROJECT / "workspace.yaml"), "--tags", json.dumps({"dagster/partition": DAY}),
        ],
        env=os.environ | env, cwd=PROJECT, capture_output=True, text=True,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    with DagsterInstance.get() as instance:
        return instance.get_runs(limit=1)[0].run_id


def wait_for(instance: DagsterInstance, run_id: str, done, log: Path, seconds: float = 180):
    deadline = time.monotonic() + seconds
    while not done(run := instance.get_run_by_id(run_id)):
        assert time.monotonic() < deadline, f"run {run_id}: {run.status}\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    return run


@pytest.mark.slow
@pytest.mark.timeout(600)  # a daemon, a run worker and two harvests on 2 busy cores
def test_the_daemon_frees_a_dead_runs_day_for_the_run_queued_behind_it(
    sandbox, tmp_path, monkeypatch
):
    env = cli_env(sandbox, tmp_path)
    home = Path(env["DAGSTER_HOME"])
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    prepare(home, PROJECT / "pipelines" / "dagster.yaml")  # queue, monitoring, the launcher
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT / "workspace.yaml")],
            env=os.environ | env, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    harvest = None
    try:
        harvest, killed = start_harvest(env)
        queued = launch_queued(env)
        with DagsterInstance.get() as instance:
            time.sleep(5)  # the queue holds it while the harvest of its day lives
            assert harvest.poll() is None, "the harvest ended too soon for this test"
            assert instance.get_run_by_id(queued).status == DagsterRunStatus.QUEUED
            assert instance.get_run_by_id(killed).status == DagsterRunStatus.STARTED
            harvest.send_signal(signal.SIGKILL)
            harvest.wait()
            died = time.monotonic()
            # No command runs meanwhile: the daemon's run monitoring marks the dead run.
            wait_for(instance, queued, lambda run: run.status != DagsterRunStatus.QUEUED, log)
            print(f"\nthe queued run left the queue {time.monotonic() - died:.1f} s after the kill")
            ended = wait_for(instance, queued, lambda run: run.is_finished, log, seconds=300)
            assert ended.status == DagsterRunStatus.SUCCESS
            assert instance.get_run_by_id(killed).status == DagsterRunStatus.FAILURE
            assert failure_event(instance, killed).message == (
                f"process {harvest.pid} on {this_host()} is gone (killed?): "
                "marked failed by the daemon's run monitoring"
            )
            # The launcher said where the queued run's worker ran, for a day it would die.
            launched = instance.all_logs(queued, of_type=DagsterEventType.ENGINE_EVENT)
            said = f"[HostRunLauncher] Starting the run worker on {this_host()}"
            assert said in [entry.message for entry in launched]
    finally:
        if harvest is not None and harvest.poll() is None:
            harvest.kill()
            harvest.wait()
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
    assert (tmp_path / "catalog" / "sound_catalog" / f"date={DAY}" / "part-0.parquet").exists()
    with monkeypatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        [day] = json.loads(soundharvest("status", "--json").output)["days"]
    assert day["run"] == {"state": "ok", "run_id": queued, "reason": None}
