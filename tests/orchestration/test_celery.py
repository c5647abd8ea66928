"""A backfill whose steps run on a Celery worker: Redis as broker and result backend,
PostgreSQL as the instance, the sandbox as the API, a local folder as the shared storage.

Everything starts on loopback as a deployment runs it: `dagster-celery worker start` with
`deploy/celery.yaml`, then `dg launch --partition-range` of the harvest and the features
with SOUNDHARVEST_EXECUTOR=celery. Run it alone with
`pytest tests/orchestration/test_celery.py -s` (prints the backfill's time).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from celery import Celery
from dagster import DagsterEventType, DagsterInstance

from sandbox import run_state

from support import PROJECT
from support.pipeline_kit import HARVEST, dg_launch, read_whole_catalog
from support.sandbox_api import SANDBOX_KEY

pytestmark = pytest.mark.slow

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")
TOTAL = 8  # requests in flight across runs; deploy/dagster.yaml gives camb_api 4 slots
BIN = Path(sys.executable).parent


def deployment_env(tmp_path: Path, postgres_server, redis_server, sandbox) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return (
        os.environ
        | postgres_server.env(postgres_server.create_database("celery"))
        | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `celery` itself
            "DAGSTER_HOME": str(home),
            "SOUNDHARVEST_EXECUTOR": "celery",
            "CELERY_BROKER_URL": redis_server.url(0),
            "CELERY_RESULT_BACKEND": redis_server.url(1),
            "CAMB_API_KEY": SANDBOX_KEY,
            "CAMB_API_BASE_URL": sandbox.base_url,
            "CAMB_DOWNLOAD_ALLOW_HOSTS": "127.0.0.1",
            "CAMB_TOTAL_CONCURRENCY": str(TOTAL),
            "SOUNDHARVEST_MANIFEST_ROOT": str(tmp_path / "manifests"),
            "SOUNDHARVEST_AUDIO_ROOT": str(tmp_path / "audio"),
            "SOUNDHARVEST_CATALOG_ROOT": str(tmp_path / "catalog"),
        }
    )


def wait_for_worker(name: str, broker: str, worker: subprocess.Popen, log: Path) -> None:
    app = Celery(broker=broker)
    deadline = time.monotonic() + 120
    while not any(key.startswith(f"{name}@") for r in app.control.ping(timeout=1.0) for key in r):
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the Celery worker did not come up; its log:\n{log.read_text()[-3000:]}")


def test_a_backfill_runs_its_steps_on_a_celery_worker(
    postgres_server, redis_server, sandbox, tmp_path, monkeypatch
):
    shutil.copytree(PROJECT / "data" / "manifests", tmp_path / "manifests")
    env = deployment_env(tmp_path, postgres_server, redis_server, sandbox)
    name = f"soundharvest-test-{uuid.uuid4().hex[:8]}"  # dagster-celery appends @host
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [
                str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                "-y", str(PROJECT / "deploy" / "celery.yaml"), "-n", name, "-l", "WARNING",
                "-i", "pipelines.definitions",  # imported once, before the pool forks
            ],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        t0 = time.monotonic()
        wait_for_worker(name, env["CELERY_BROKER_URL"], worker, log)
        print(f"\nworker up in {time.monotonic() - t0:.1f} s")
        started = time.monotonic()
        days = f"{DAYS[0]}...{DAYS[-1]}"
        done = subprocess.run(
            dg_launch("--partition-range", days, select=f"{HARVEST},sound_features"),
            env=env, cwd=PROJECT, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:] + log.read_text()[-2000:]
    print(f"\nCelery backfill of {len(DAYS)} days: {elapsed:.1f} s")
    catalog = read_whole_catalog(tmp_path)
    assert sorted(catalog.date.astype(str).unique()) == list(DAYS)
    live = catalog[(catalog.status != "rejected") & catalog.run_id.notna()]  # tasks resolved
    assert (live[live.run_id.map(run_state) == "ready"].status == "ok").all()
    # Features too, though a prefork child may not start the features' process pool.
    features = ds.dataset(tmp_path / "catalog" / "sound_features", partitioning="hive")
    measured = features.to_table().to_pandas()
    ok = catalog[catalog.status == "ok"]
    assert sorted(zip(measured.date.astype(str), measured.run_id, strict=True)) == sorted(
        zip(ok.date.astype(str), ok.run_id, strict=True)
    )
    assert measured.error.isna().all() and measured.lufs.notna().all()
    assert set(measured.computed_by) == {"sound_features"}
    # One sound_files step at a time here, holding its share of the total: the worker read
    # the pool's limit from PostgreSQL.
    assert 1 <= sandbox.stats()["max_in_flight"] <= TOTAL // 4

    for variable in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB"):
        monkeypatch.setenv(variable, env[variable])
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", env["DAGSTER_PG_PASSWORD"])
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [run] = instance.get_runs()
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
    on_worker = {
        event.step_key: event.event_specific_data.metadata["Celery worker"].value
        for event in events
        if event.event_type == DagsterEventType.ENGINE_EVENT
        and "in celery worker" in (event.message or "")
    }
    assets = {step for step in on_worker if not step.startswith("freshness_check")}
    assert assets == {"run_manifest", "sound_files", "sound_catalog", "sound_features"}
    assert len(on_worker) == len(assets) + 1  # sound_catalog's freshness check came along
    assert {worker.split("@")[0] for worker in on_worker.values()} == {name}
    succeeded = {e.step_key for e in events if e.event_type == DagsterEventType.STEP_SUCCESS}
    assert succeeded == set(on_worker)
