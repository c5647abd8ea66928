"""One run per day: the run queue of both instance configs, a fresh SQLite home made ready
once, and two CLI launches of one day at once against the sandbox."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.test_utils import create_run_for_test
from dagster._utils.tags import TagConcurrencyLimitsCounter

from pipelines.instance_home import prepare
from sandbox import run_state

from support import PROJECT
from support.pipeline_kit import (
    cli_env,
    launch_together,
    read_whole_catalog,
    run_together,
    write_manifest,
)

DAY = "2026-11-01"


def blocked(limits: list[dict], running: list[dict], queued: dict) -> bool:
    """Whether the queue holds back a run tagged `queued` while runs tagged `running` run."""
    with DagsterInstance.ephemeral() as instance:
        runs = [create_run_for_test(instance, tags=tags) for tags in running]
        counter = TagConcurrencyLimitsCounter(limits, runs)
        return counter.is_blocked(create_run_for_test(instance, tags=queued))


@pytest.mark.parametrize("config", ["pipelines/dagster.yaml", "deploy/dagster.yaml"])
def test_the_queue_runs_one_run_per_day(config):
    limits = yaml.safe_load((PROJECT / config).read_text())["concurrency"]["runs"]
    limits = limits["tag_concurrency_limits"]
    day = {"dagster/partition": DAY}
    assert blocked(limits, [day], day)
    assert not blocked(limits, [day], {"dagster/partition": "2026-11-02"})
    assert not blocked(limits, [], day)


def test_the_demo_instance_loads_its_queue_limits(tmp_path, monkeypatch):
    home = prepare(tmp_path / "home", PROJECT / "pipelines" / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.from_config(str(home)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {
        "key": "dagster/partition",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in [dict(limit) for limit in limits]


@pytest.mark.slow
def test_two_launches_of_one_day_fetch_each_run_once(sandbox, tmp_path):
    """Two `dg launch` of the same day at once, on a fresh SQLite home made ready first by
    two processes racing to prepare it: every run id is looked up and downloaded once, the
    second launch waits for the first one's lease, and the catalog is complete."""
    run_ids = [i for i in range(5000, 5200) if run_state(i) == "ready"][:60]
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    home = tmp_path / "dagster_home"
    prepare_code = (
        "import sys; from pathlib import Path; from pipelines.instance_home import prepare; "
        "prepare(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    config = str(PROJECT / "pipelines" / "dagster.yaml")
    racing = [
        subprocess.Popen([sys.executable, "-c", prepare_code, str(home), config], cwd=PROJECT)
        for _ in range(2)
    ]
    assert [process.wait(timeout=120) for process in racing] == [0, 0]
    # Slow enough downloads that the two runs' harvests overlap.
    sandbox.set_faults(download_latency_s=0.25)
    env = cli_env(sandbox, tmp_path) | {"CAMB_MAX_CONCURRENCY": "2"}

    outputs = launch_together([DAY, DAY], env)
    stats = sandbox.stats()
    assert stats["downloads_by_run"] == dict.fromkeys(run_ids, 1)
    assert stats["lookups_by_run"] == dict.fromkeys(run_ids, 1)
    waited = [output for output in outputs if f"{DAY}: waiting for run " in output]
    assert len(waited) == 1, "the second launch must have met the first one's lease"
    catalog = read_whole_catalog(tmp_path)
    assert sorted(catalog.run_id) == run_ids and set(catalog.status) == {"ok"}
    assert all(
        Path(uri).stat().st_size == size
        for uri, size in zip(catalog.uri, catalog.size_bytes, strict=True)
    )


@pytest.mark.slow
def test_two_harvests_of_one_day_at_once_count_only_their_own_files(sandbox, tmp_path):
    """Was: both `soundharvest harvest` tables said "new files 53" for 53 downloads in all: a
    file counted as new when it was stored after the run started, whichever run stored it.
    Pending runs keep the day incomplete, so the run that waited harvests it too."""
    ready = [i for i in range(5000, 5200) if run_state(i) == "ready"][:60]
    pending = [i for i in range(5000, 5200) if run_state(i) == "pending"][:3]
    write_manifest(tmp_path / "manifests", DAY, ready + pending)
    sandbox.set_faults(download_latency_s=0.25)  # slow enough that the two runs overlap
    env = cli_env(sandbox, tmp_path) | {"CAMB_MAX_CONCURRENCY": "2", "COLUMNS": "200"}
    harvest = [str(Path(sys.executable).with_name("soundharvest")), "harvest", DAY, "--verbose"]

    outputs = run_together([harvest, harvest], env)

    downloads = sum(sandbox.stats()["downloads_by_run"].values())
    assert downloads == len(ready)
    assert sum(f"{DAY}: waiting for run " in output for output in outputs) == 1
    rows = [
        [line.split() for line in out.splitlines() if line.split()[:1] == [DAY]] for out in outputs
    ]
    in_tables = [int(row[-1][5]) for row in rows]  # the day's row of the table: its new files
    assert sorted(in_tables) == [0, downloads]
    lines = [re.findall(rf"{DAY}: \d+ ok, .*; (\d+) new files", output) for output in outputs]
    assert sorted(int(n) for found in lines for n in found) == [0, downloads]
