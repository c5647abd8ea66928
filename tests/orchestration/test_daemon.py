"""The ML feed under a real `dagster-daemon`: nobody launches features or a snapshot, and a new
prompt sheet flows on by itself to the catalog, the features and a snapshot.

A temporary instance (SQLite, with the project's `pipelines/dagster.yaml`), the sandbox API on
loopback and the daemon as a subprocess loading `workspace.yaml` (its code server listens on a
Unix socket). `dg launch` harvests one day; `ml_feed_automation` (every 5 s here, the snapshot
cron every minute) materializes that day's features, then an `ml_dataset` snapshot. Run it
alone with `pytest tests/orchestration/test_daemon.py -s` to see the timeline.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRun

from support import PROJECT
from support.pipeline_kit import dg_launch, sandbox_env, write_manifest

pytestmark = pytest.mark.slow

DAY = "2026-11-01"
BIN = Path(sys.executable).parent
AUTOMATION_TAG = "dagster/from_automation_condition"
# The ML feed evaluated every 5 s and a snapshot due every minute: the tests wait for it.
FAST_FEED = {"SOUNDHARVEST_DATASET_CRON": "* * * * *", "SOUNDHARVEST_AUTOMATION_INTERVAL_S": "5"}


def materialized(instance: DagsterInstance, asset: str, partition: str | None = None) -> bool:
    key = AssetKey(asset)
    if partition is None:
        return instance.get_latest_materialization_event(key) is not None
    return partition in instance.get_materialized_partitions(key)


def timeline(instance: DagsterInstance, since: float) -> list[str]:
    """One line per run: what it materialized, who asked, when it was created, started, ended."""
    lines = []
    for record in reversed(instance.get_run_records()):
        run: DagsterRun = record.dagster_run
        assets = ",".join(sorted(key.to_user_string() for key in run.asset_selection or ()))
        who = (
            "automation"
            if run.tags.get(AUTOMATION_TAG)
            else run.tags.get("dagster/sensor_name", "dg launch")
        )
        stamps = [record.create_timestamp.timestamp(), record.start_time, record.end_time]
        at = " ".join(f"{t - since:6.1f}" if t else "     -" for t in stamps)
        lines.append(f"{at}  {run.status.value:<9} {who:<24} {assets or run.job_name}")
    return lines


def instance_home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh SQLite instance with the project's `pipelines/dagster.yaml`, created once."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the project's event log is kept there
    shutil.copyfile(PROJECT / "pipelines" / "dagster.yaml", home / "dagster.yaml")
    DagsterInstance.from_config(str(home)).dispose()
    return home


@contextmanager
def running_daemon(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` on the project's workspace, in its own session, stopped after."""
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT / "workspace.yaml")],
            env=env, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield daemon
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)


def wait_for_snapshot(
    instance: DagsterInstance, daemon: subprocess.Popen, log: Path, since: float, timeout: float
) -> None:
    """Until `ml_dataset` is materialized; the timeline and the daemon's log if it never is."""
    deadline = time.monotonic() + timeout
    while not materialized(instance, "ml_dataset"):
        assert daemon.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "\n".join(
            [*timeline(instance, since), log.read_text()[-3000:]]
        )
        time.sleep(1)


def test_the_daemon_measures_a_harvested_day_and_snapshots_it_unasked(
    sandbox, tmp_path, monkeypatch
):
    home = instance_home(tmp_path, monkeypatch)
    write_manifest(tmp_path / "manifests", DAY, list(range(1001, 1041)))
    env = os.environ | sandbox_env(sandbox.base_url, tmp_path) | FAST_FEED
    log = tmp_path / "daemon.log"
    started = time.time()
    with running_daemon(env, log) as daemon:
        harvest = subprocess.run(
            dg_launch("--partition", DAY), env=env, cwd=PROJECT, capture_output=True, text=True
        )
        assert harvest.returncode == 0, harvest.stderr[-3000:]
        harvested = time.time()
        with DagsterInstance.from_config(str(home)) as instance:
            wait_for_snapshot(instance, daemon, log, started, timeout=150)
            done = time.time()
            lines = timeline(instance, started)
            runs = [record.dagster_run for record in instance.get_run_records()]
            features = instance.get_latest_materialization_event(AssetKey("sound_features"))
            snapshot = instance.get_latest_materialization_event(AssetKey("ml_dataset"))
            assert materialized(instance, "sound_features", DAY)

    print(f"\nharvest done at {harvested - started:.1f} s, snapshot at {done - started:.1f} s")
    print("created started  ended  status   by                       assets\n" + "\n".join(lines))
    fed = [run for run in runs if run.tags.get(AUTOMATION_TAG)]
    assert {key.to_user_string() for run in fed for key in run.asset_selection or ()} == {
        "sound_features",
        "ml_dataset",
    }
    assert features.run_id in {run.run_id for run in fed}
    assert snapshot.run_id in {run.run_id for run in fed}
    assert snapshot.timestamp > features.timestamp  # the snapshot waited for the features
    assert (
        tmp_path / "datasets" / "LATEST"
    ).read_text().strip() == snapshot.asset_materialization.metadata["version"].value


def test_a_new_prompt_sheet_flows_on_by_itself_to_the_catalog_features_and_a_snapshot(
    sandbox, tmp_path, monkeypatch
):
    """No `dg launch` at all: `prompt_sensor` sees the sheet and asks for the day's
    daily_harvest run (sound_generations, then the harvest); the ML feed measures the day and
    snapshots it."""
    sandbox.set_faults(generation_s=0.0)
    home = instance_home(tmp_path, monkeypatch)
    prompts = [f"a quiet sound number {n}" for n in range(6)]
    sheet = tmp_path / "prompts" / f"{DAY}.csv"
    sheet.parent.mkdir()
    sheet.write_text("prompt,duration\n" + "".join(f"{p},2\n" for p in prompts))
    env = (
        os.environ
        | sandbox_env(sandbox.base_url, tmp_path)
        | FAST_FEED
        | {"SOUNDHARVEST_PROMPT_ROOT": str(tmp_path / "prompts")}
    )
    log = tmp_path / "daemon.log"
    started = time.time()
    with running_daemon(env, log) as daemon, DagsterInstance.from_config(str(home)) as instance:
        wait_for_snapshot(instance, daemon, log, started, timeout=240)
        lines = timeline(instance, started)
        runs = [record.dagster_run for record in instance.get_run_records()]
        assert materialized(instance, "sound_features", DAY)

    print("created started  ended  status   by                       assets\n" + "\n".join(lines))
    by_sensor = [run for run in runs if run.tags.get("dagster/sensor_name") == "prompt_sensor"]
    assert len(by_sensor) == 1 and by_sensor[0].tags["dagster/partition"] == DAY
    assert sandbox.stats()["creates_by_prompt"] == dict.fromkeys(prompts, 1)
    catalog = pd.read_parquet(tmp_path / "catalog" / "sound_catalog" / f"date={DAY}")
    assert sorted(catalog["prompt"]) == prompts and set(catalog["status"]) == {"ok"}
