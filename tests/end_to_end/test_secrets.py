"""Secrets never leak: the API key, presigned URL signatures and storage credentials.

The pipeline runs through the Dagster CLI with a persistent DAGSTER_HOME, through a scenario
heavy with faults: prompt sheets submitted (answers lost among them: in doubt), throttling,
5xx, dropped connections, truncated and expiring downloads, redirects, a URL that keeps
expiring, then a refused key and an unreachable bucket. The HTTP
libraries log at DEBUG into Dagster's event log. Afterwards every byte the pipeline left or
printed is searched: all files under DAGSTER_HOME (run storage, event logs, compute logs; the
SQLite databases also row by row), the CLI's stdout and stderr, `_state/` and the catalog.

The signatures are learnt by a proxy in front of the sandbox API that reads every answer.
"""

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import threading
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import ClientError, ClientSession, web

from sandbox import Faults, SandboxServer, run_state

from support import PROJECT
from support.generation_kit import prompts, write_sheet
from support.moto_s3 import S3Bucket
from support.pipeline_kit import HARVEST, dg_launch, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAYS = ("2026-11-01", "2026-11-02")
SIGNATURE = re.compile(rb"X-Amz-Signature=([0-9a-f]{16,})", re.IGNORECASE)
DEBUG_LOGS = """
python_logs:
  python_log_level: DEBUG
  managed_python_loggers: [httpx, httpcore, s3fs, resources, assets]
"""


class RecordingProxy:
    """Forwards every request to the sandbox and remembers each signature in its answers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.signatures: set[bytes] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError("the recording proxy did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.origin = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._session = self._loop.run_until_complete(self._open_session())
        self._ready.set()
        self._loop.run_forever()

    @staticmethod
    async def _open_session() -> ClientSession:
        return ClientSession(auto_decompress=False)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers,
                data=await request.read(), allow_redirects=False,
            ) as answer:  # fmt: skip
                body = await answer.read()
        except ClientError:  # the sandbox dropped the connection: so do we
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        self.signatures.update(SIGNATURE.findall(body))
        passed = {k: v for k, v in answer.headers.items() if k.lower() in ("retry-after",)}
        return web.Response(
            status=answer.status, body=body, headers=passed, content_type=answer.content_type
        )

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def materialize(env: dict[str, str], *partition: str) -> subprocess.Popen:
    return subprocess.Popen(
        dg_launch(*partition, select=f"sound_generations,{HARVEST}"),
        env=env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def everything_left(root: Path, outputs: list[str]) -> dict[str, bytes]:
    """Name -> bytes of every place a secret could hide."""
    places = {f"output {i}": text.encode() for i, text in enumerate(outputs)}
    for path in (root / "dagster_home").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes()
            if path.suffix == ".db":  # row by row too: text may sit in overflow pages
                with sqlite3.connect(path) as db:
                    places[f"{path} (rows)"] = "\n".join(db.iterdump()).encode()
    for path in (root / "catalog").rglob("*.parquet"):  # _state/ and the catalog
        places[f"{path} (cells)"] = str(pq.read_table(path).to_pylist()).encode()
    return places


def test_no_secret_reaches_logs_dagster_home_state_or_catalog(tmp_path, s3_bucket: S3Bucket):
    api_key = f"sentinel-key-{uuid.uuid4().hex}"
    wrong_key = f"sentinel-wrong-{uuid.uuid4().hex}"
    storage_secret = f"sentinel-secret-{uuid.uuid4().hex}"
    for offset, day in enumerate(DAYS):  # ready, pending, failed and wrong-type runs
        write_manifest(
            tmp_path / "manifests", day, list(range(5090 + 25 * offset, 5115 + 25 * offset))
        )
        write_sheet(tmp_path / "prompts", day, [*prompts(12, f"sound of {day}"), {"prompt": ""}])
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (PROJECT / "pipelines" / "dagster.yaml").read_text() + DEBUG_LOGS
    )
    keeps_expiring = next(i for i in range(5095, 5115) if run_state(i) == "ready")
    faults = Faults(
        throttle_rate=0.08, retry_after="0", server_error_rate=0.08, drop_rate=0.04,
        truncate_rate=0.08, expire_rate=0.08, seed=11, expired_runs=(keeps_expiring,),
        lost_rate=0.05, generation_s=0.0,
    )  # fmt: skip
    with SandboxServer(api_key=api_key, faults=faults) as sandbox:
        # Downloads are redirected once (to the same server under another name).
        sandbox.set_faults(redirect_downloads_to=f"http://localhost:{sandbox.port}")
        proxy = RecordingProxy(sandbox.origin)
        try:
            outputs = run_scenario(
                tmp_path, home, proxy, api_key, wrong_key, storage_secret, s3_bucket
            )
        finally:
            proxy.close()
        injected = sandbox.stats()["faults_injected"]

    assert sum(injected.values()) > 15 and len(injected) >= 5, injected
    assert len(proxy.signatures) > 25  # the proxy saw the URLs the client got
    secrets = [api_key.encode(), wrong_key.encode(), storage_secret.encode(), *proxy.signatures]
    places = everything_left(tmp_path, outputs)
    assert any(name.endswith(".db") for name in places) and any("compute_logs" in n for n in places)
    for record in ("_state/sound_generations/", "_state/generation_rows/"):  # the ledger too
        assert any(record in name for name in places), record
    leaks = [
        (name, secret[:12]) for name, data in places.items() for secret in secrets if secret in data
    ] + [
        (name, b"X-Amz-Signature")
        for name, data in places.items()
        if b"x-amz-signature" in data.lower()
    ]
    scanned = sum(len(data) for data in places.values())
    print(
        f"\nsecrets grep: {len(secrets)} secrets ({len(proxy.signatures)} signatures) in "
        f"{len(places)} places, {scanned / 1e6:.1f} MB: {len(leaks)} leaks"
    )
    assert leaks == []


def run_scenario(
    tmp_path: Path, home: Path, proxy: RecordingProxy, api_key: str, wrong_key: str,
    storage_secret: str, s3_bucket: S3Bucket,
) -> list[str]:  # fmt: skip
    """A faulty range run, a refused key, a catalog bucket that does not exist (its
    credentials a sentinel); returns what the three printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMB_", "SOUNDHARVEST_"))}
    env |= {
        "CAMB_API_KEY": api_key,
        "CAMB_API_BASE_URL": f"{proxy.origin}/apis",
        "CAMB_DOWNLOAD_ALLOW_HOSTS": "127.0.0.1,localhost",
        "SOUNDHARVEST_MANIFEST_ROOT": str(tmp_path / "manifests"),
        "SOUNDHARVEST_PROMPT_ROOT": str(tmp_path / "prompts"),
        "SOUNDHARVEST_AUDIO_ROOT": str(tmp_path / "audio"),
        "SOUNDHARVEST_CATALOG_ROOT": str(tmp_path / "catalog"),
        "SOUNDHARVEST_STEP_RETRIES": "0",
        "DAGSTER_HOME": str(home),
    }
    code, *faulty = finish(materialize(env, "--partition-range", f"{DAYS[0]}...{DAYS[1]}"))
    assert code == 0, faulty[1][-3000:]
    # The two runs that fail are independent: they run side by side.
    options = {"s3": {**s3_bucket.storage_options, "secret": storage_secret}}
    refused = materialize(env | {"CAMB_API_KEY": wrong_key}, "--partition", DAYS[0])
    unreachable = materialize(
        env | {
            "SOUNDHARVEST_CATALOG_ROOT": f"s3://missing-{uuid.uuid4().hex[:12]}/catalog",
            "SOUNDHARVEST_STORAGE_OPTIONS": json.dumps(options),
        },
        "--partition", DAYS[0],
    )  # fmt: skip
    code, *refused_out = finish(refused)
    assert code != 0 and "CAMB_API_KEY" in refused_out[1]
    code, *unreachable_out = finish(unreachable)
    assert code != 0 and "bucket does not exist" in unreachable_out[1]
    return [*faulty, *refused_out, *unreachable_out]
