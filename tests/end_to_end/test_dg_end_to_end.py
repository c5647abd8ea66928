"""End to end through `dg`, as a user runs it from the README: only the environment is set.

The sandbox API runs on loopback with faults switched on; one test kills the CLI with
SIGKILL in the middle of a partition and checks the crash invariant before rerunning.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance

from resources.audio import inspect_audio
from sandbox import run_state

from support import PROJECT
from support.pipeline_kit import DG, cli_env, dg_launch, read_whole_catalog
from support.sandbox_api import SANDBOX_KEY

pytestmark = pytest.mark.slow

DAYS = ("2026-11-01", "2026-11-03")


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The demo manifests in a private tree, and an empty Dagster home."""
    shutil.copytree(PROJECT / "data" / "manifests", tmp_path / "manifests")
    (tmp_path / "dagster_home").mkdir()
    return tmp_path


def assert_crash_invariant(root: Path, catalog: pd.DataFrame | None) -> None:
    """Every ok row's file exists with its size and hash; no partial file under a final name."""
    for wav in (root / "audio").rglob("*.wav"):
        if not wav.name.startswith("."):
            inspect_audio(wav)  # raises when header sizes and bytes disagree
    if catalog is not None:
        for row in catalog[catalog.status == "ok"].itertuples():
            data = Path(row.uri).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (row.size_bytes, row.sha256)


def test_a_range_through_the_cli_with_faults(sandbox, project_copy):
    sandbox.set_faults(
        throttle_rate=0.05, retry_after="0", server_error_rate=0.05, drop_rate=0.02,
        truncate_rate=0.05, expire_rate=0.05, seed=7,
    )  # fmt: skip
    env = cli_env(sandbox, project_copy)
    command = dg_launch("--partition-range", f"{DAYS[0]}...{DAYS[1]}")

    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert SANDBOX_KEY not in output and "X-Amz-Signature" not in output
    assert "SupersessionWarning" not in done.stderr  # as `dagster asset materialize` gave
    injected = sandbox.stats()["faults_injected"]
    assert sum(injected.values()) > 10, injected
    catalog = read_whole_catalog(project_copy)
    assert sorted(catalog.date.astype(str).unique()) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    live = catalog[catalog.status != "rejected"]
    assert (live[live.run_id.isna()].status != "ok").all()  # tasks that never resolved
    live = live[live.run_id.notna()]
    ready = live.run_id.astype(int).map(run_state) == "ready"
    assert (live[ready].status == "ok").all()  # every fault was retried away
    assert (live[~ready].status != "ok").all()
    assert_crash_invariant(project_copy, catalog)

    sandbox.reset()
    sandbox.set_faults(
        throttle_rate=0, server_error_rate=0, drop_rate=0, truncate_rate=0, expire_rate=0
    )
    again = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sandbox.stats()["downloads"] == 0


def test_a_crash_mid_partition_leaves_no_partial_file_and_the_rerun_adopts(sandbox, project_copy):
    sandbox.set_faults(latency_s=0.3)  # with two requests in flight: seconds per partition
    env = cli_env(sandbox, project_copy) | {"CAMB_MAX_CONCURRENCY": "2"}
    command = dg_launch("--partition", DAYS[0])
    audio_day = project_copy / "audio" / DAYS[0]

    process = subprocess.Popen(
        command, env=env, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(audio_day.glob("*.wav"))) < 20 and process.poll() is None:
        assert time.monotonic() < deadline, "the CLI published no files in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    published = {p.name for p in audio_day.glob("*.wav")}
    assert published, "the kill came before any file was published"
    assert not (project_copy / "catalog" / "sound_catalog").exists()
    assert_crash_invariant(project_copy, None)

    sandbox.set_faults(latency_s=0)
    sandbox.reset()
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr[-3000:]
    catalog = read_whole_catalog(project_copy)
    ok = catalog[catalog.status == "ok"]
    assert published <= {Path(uri).name for uri in ok.uri}
    assert sandbox.stats()["downloads"] == len(ok) - len(published)  # adopted, not fetched
    assert_crash_invariant(project_copy, catalog)


def test_a_cli_range_needs_single_run_backfills(sandbox, project_copy):
    """Dagster 1.13 refuses `--partition-range` unless every asset is single_run: days per run
    (multi_run, for daemon backfills) rule the CLI range out, whatever N."""
    env = cli_env(sandbox, project_copy) | {"SOUNDHARVEST_BACKFILL_DAYS_PER_RUN": "2"}
    command = dg_launch("--partition-range", f"{DAYS[0]}...{DAYS[1]}")

    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True)

    assert done.returncode != 0
    assert "BackfillPolicy.single_run()" in done.stdout + done.stderr
    assert sandbox.stats()["api_requests"] == 0 and not (project_copy / "catalog").exists()


@pytest.mark.parametrize("partition", ["--partition", "--partition-range"])
def test_a_day_before_the_first_day_is_refused_without_a_run(sandbox, project_copy, partition):
    """`soundharvest harvest` says so as a usage error
    (tests/end_to_end/test_soundharvest_command.py); `dg launch` is Dagster's own command: it
    refuses the partition before creating a run, in Dagster's words (which do not name the
    variable), never with an `Invariant failed`."""
    env = cli_env(sandbox, project_copy) | {"SOUNDHARVEST_FIRST_DAY": DAYS[1]}
    days = DAYS[0] if partition == "--partition" else f"{DAYS[0]}...{DAYS[1]}"

    done = subprocess.run(
        dg_launch(partition, days), env=env, cwd=PROJECT, capture_output=True, text=True
    )

    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"partition key `{DAYS[0]}`" in said and "Invariant failed" not in said
    assert sandbox.stats()["api_requests"] == 0 and not (project_copy / "catalog").exists()
    with DagsterInstance.from_config(str(project_copy / "dagster_home")) as instance:
        assert instance.get_runs() == []


def test_a_crash_keeps_the_checkpointed_ledger_and_the_rerun_does_not_rehash(sandbox, project_copy):
    sandbox.set_faults(latency_s=0.2)
    env = cli_env(sandbox, project_copy) | {
        "CAMB_MAX_CONCURRENCY": "2",
        "SOUNDHARVEST_CHECKPOINT_S": "0.5",
    }
    command = dg_launch("--partition", DAYS[0])
    ledger = project_copy / "catalog" / "_state" / "sound_files" / f"date={DAYS[0]}"
    audio_day = project_copy / "audio" / DAYS[0]

    def checkpointed_ok() -> pd.DataFrame:
        try:
            rows = pd.read_parquet(ledger / "part-0.parquet")
        except (FileNotFoundError, OSError):
            return pd.DataFrame(columns=["run_id", "status"])
        return rows[rows.status == "ok"]

    process = subprocess.Popen(
        command, env=env, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(checkpointed_ok()) < 10 and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint of ten files in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    kept = checkpointed_ok().set_index("run_id")
    published = {int(p.stem) for p in audio_day.glob("*.wav")}
    assert len(kept) >= 10 and set(kept.index) <= published
    sandbox.set_faults(latency_s=0)
    sandbox.reset()
    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr[-3000:]
    adopted = len(published - set(kept.index))
    assert f"{len(kept)} already stored, {adopted} to adopt" in done.stderr
    catalog = read_whole_catalog(project_copy)
    live = catalog[catalog.status != "rejected"].set_index("run_id")
    for column in ("fetched_at", "attempts", "sha256"):  # the checkpointed rows, as they were
        pd.testing.assert_series_equal(
            live.loc[kept.index, column], kept[column], check_dtype=False, check_index_type=False
        )
    ok = catalog[catalog.status == "ok"]
    assert sandbox.stats()["downloads"] == len(ok) - len(published)
    assert_crash_invariant(project_copy, catalog)


def test_dg_checks_and_lists_the_definitions_from_the_project_root(tmp_path):
    """The README's `dg check defs` and `dg list defs` (here as JSON), warning-free."""
    env = os.environ | {"DAGSTER_HOME": str(tmp_path)}

    def dg(*arguments: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [DG, *arguments], env=env, cwd=PROJECT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "SupersessionWarning" not in done.stderr
        return done

    assert "All definitions loaded successfully." in dg("check", "defs").stdout
    listed = json.loads(dg("list", "defs", "--json").stdout)
    assets = {asset["asset_key"] for asset in listed["assets"]}
    assert assets == {
        "sound_generations",
        "run_manifest",
        "sound_files",
        "sound_catalog",
        "sound_features",
        "ml_dataset",
    }
    sensors = {sensor["name"] for sensor in listed["sensors"]}
    assert sensors == {
        "manifest_sensor", "prompt_sensor", "pending_sweep", "ml_feed_automation",
        "freshness_checks_sensor",
    }  # fmt: skip
