"""kill -9 chaos: SIGKILL the whole `dg launch` at random moments.

For each seed and storage (local disk, or S3 on moto's server mode) the CLI harvests a range
of two days against the sandbox with its random faults on (throttling, 5xx, dropped
connections, truncated and expiring downloads) and is killed, process group and all, again
and again: after a random time, or a random number of newly published files later. A few
new run ids arrive in the manifests before each run, so every run has work to be cut short.
After every kill the crash invariant must hold:

- the catalog reads, every partition file and every `_state/` file too;
- no run id twice among a day's rows that are not rejected;
- every `ok` row's file exists with exactly its size and sha256;
- no partial file under a final name (every stored WAV's header agrees with its size).

Then one run to completion (faults still on): every ready run `ok`, every other not, and no
temporary file left, in storage or in the scratch space. Figures are printed.

`make test` runs one seed, three kills, local storage, 2 x 25 ids. `make chaos` runs the full
matrix: CHAOS_SEEDS=1,2,3 CHAOS_KILLS=10 CHAOS_STORAGE=local,s3 CHAOS_IDS_PER_DAY=75.
"""

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import s3fs

from resources.audio import AudioFileError, inspect_audio
from sandbox import run_state

from support import PROJECT
from support.moto_s3 import S3Bucket
from support.pipeline_kit import dg_launch, write_manifest
from support.sandbox_api import SANDBOX_KEY

SEEDS = [int(s) for s in os.environ.get("CHAOS_SEEDS", "1").split(",")]
KILLS = int(os.environ.get("CHAOS_KILLS", "3"))
STORAGES = os.environ.get("CHAOS_STORAGE", "local").split(",")

DAYS = ("2026-11-01", "2026-11-02")
IDS_PER_DAY = int(os.environ.get("CHAOS_IDS_PER_DAY", "25"))
NEW_PER_KILL = 8  # run ids that arrive before each kill, so every run has work to be cut
# Slow API answers and two requests at a time keep a run busy for a while after start-up,
# so that kills land in the middle of the work.
FAULTS = dict(
    throttle_rate=0.03, retry_after="0", server_error_rate=0.03, drop_rate=0.02,
    truncate_rate=0.04, expire_rate=0.04, latency_s=0.3,
)  # fmt: skip

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(3600)]


@dataclass
class Tree:
    """The storage roots of one chaos run, read independently of the code under test."""

    root: str  # local directory or s3://bucket
    bucket: S3Bucket | None = None

    def files(self, prefix: str) -> dict[str, int]:
        """Relative path -> size of every file under `prefix` (temporaries included)."""
        if self.bucket is None:
            base = Path(self.root) / prefix
            return {
                str(p.relative_to(self.root)): p.stat().st_size
                for p in base.rglob("*")
                if p.is_file()
            }
        client = self.bucket.client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket.name, Prefix=prefix
        )
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def read(self, relpath: str) -> bytes:
        if self.bucket is None:
            return (Path(self.root) / relpath).read_bytes()
        obj = self.bucket.client().get_object(Bucket=self.bucket.name, Key=relpath)
        return obj["Body"].read()

    def relpath(self, uri: str) -> str:
        return uri.removeprefix(self.root).lstrip("/")

    def inspect(self, relpath: str, spare: Path) -> None:
        """`inspect_audio` of a stored file (S3 objects are copied to `spare` first)."""
        if self.bucket is None:
            inspect_audio(Path(self.root) / relpath)
        else:
            spare.write_bytes(self.read(relpath))
            inspect_audio(spare)


@dataclass
class Figures:
    kills: int = 0
    mid_run: int = 0  # kills that landed while the CLI was still running
    mid_work: int = 0  # ... after it had begun to talk to the API
    checks: int = 0
    violations: list[str] = field(default_factory=list)


def check_invariant(tree: Tree, checked: dict[str, int], spare: Path) -> list[str]:
    """The crash invariant; `checked` remembers the WAVs (and sizes) already inspected."""
    problems = []
    for relpath in tree.files("catalog"):
        if relpath.endswith(".parquet") and not Path(relpath).name.startswith("."):
            try:
                pq.read_table(io.BytesIO(tree.read(relpath)))
            except Exception as exc:
                problems.append(f"{relpath} does not read: {exc}")
    catalog = read_catalog(tree)
    if catalog is not None:
        for day, rows in catalog.groupby("date"):
            live = rows[rows.status != "rejected"]
            twice = live.run_id[live.run_id.duplicated()].tolist()
            if twice:
                problems.append(f"{day}: run ids on two rows: {twice[:5]}")
        for row in catalog[catalog.status == "ok"].itertuples():
            try:
                data = tree.read(tree.relpath(row.uri))
            except Exception as exc:  # missing, whatever the backend calls it
                problems.append(f"ok row {row.run_id}: file missing ({type(exc).__name__})")
                continue
            if (len(data), hashlib.sha256(data).hexdigest()) != (row.size_bytes, row.sha256):
                problems.append(f"ok row {row.run_id}: file differs from its row")
    for relpath, size in tree.files("audio").items():
        name = Path(relpath).name
        if name.startswith(".") or checked.get(relpath) == size:
            continue
        try:
            tree.inspect(relpath, spare)
            checked[relpath] = size
        except AudioFileError as exc:
            problems.append(f"partial file under a final name: {relpath} ({exc})")
    return problems


def read_catalog(tree: Tree):
    if not [p for p in tree.files("catalog/sound_catalog") if p.endswith("part-0.parquet")]:
        return None
    if tree.bucket is None:
        dataset = ds.dataset(Path(tree.root) / "catalog" / "sound_catalog", partitioning="hive")
        return dataset.to_table().to_pandas()
    fs = s3fs.S3FileSystem(**tree.bucket.storage_options, skip_instance_cache=True)
    path = f"{tree.bucket.name}/catalog/sound_catalog"
    for attempt in range(3):
        try:
            return ds.dataset(path, filesystem=fs, partitioning="hive").to_table().to_pandas()
        except OSError:
            # A PUT whose bytes all arrived before the kill may still land on the server a
            # moment later (S3 replaces the object whole): read the new state again.
            if attempt == 2:
                raise
            time.sleep(1)
            fs.invalidate_cache()
    return None


def new_files(tree: Tree, before: set[str]) -> int:
    return sum(
        1
        for p in tree.files("audio")
        if p not in before and p.endswith(".wav") and not Path(p).name.startswith(".")
    )


def kill_at_random(command: list[str], env: dict[str, str], rng: random.Random, tree: Tree) -> bool:
    """Start the CLI and SIGKILL its process group at a random moment; True if it was still
    running then (False: it finished first)."""
    before = set(tree.files("audio"))
    process = subprocess.Popen(
        command, env=env, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    ready: Callable[[], bool]
    jitter = 0.0
    if rng.random() < 0.5:  # after a random time: start-up, planning, fetching, cataloguing
        moment = time.monotonic() + rng.uniform(1.0, 20.0)
        ready = lambda: time.monotonic() >= moment  # noqa: E731
    else:  # a few files into the work, then a little more, to land between writes
        wanted, jitter = rng.randint(1, 8), rng.uniform(0.0, 0.5)
        ready = lambda: new_files(tree, before) >= wanted  # noqa: E731
    give_up = time.monotonic() + 300
    while process.poll() is None and not ready() and time.monotonic() < give_up:
        time.sleep(0.02)
    if process.poll() is None:
        time.sleep(jitter)
    running = process.poll() is None
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return running


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("seed", SEEDS)
def test_kill_9_at_random_moments_keeps_the_crash_invariant(
    sandbox, tmp_path, request, storage, seed
):
    started = time.monotonic()
    rng = random.Random(seed)
    sandbox.set_faults(**FAULTS, seed=seed)
    run_ids = {}
    for offset, day in enumerate(DAYS):
        first = 6000 + 1000 * seed + 200 * offset
        run_ids[day] = list(range(first, first + IDS_PER_DAY))
        write_manifest(tmp_path / "manifests", day, run_ids[day], "0,bad,sound,1,demo\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # The bucket fixture puts moto's credentials into the environment the CLI inherits.
    bucket: S3Bucket | None = request.getfixturevalue("s3_bucket") if storage == "s3" else None
    env = os.environ | {
        "CAMB_API_KEY": SANDBOX_KEY,
        "CAMB_API_BASE_URL": sandbox.base_url,
        "CAMB_DOWNLOAD_ALLOW_HOSTS": "127.0.0.1",
        "CAMB_MAX_CONCURRENCY": "2",
        "SOUNDHARVEST_MANIFEST_ROOT": str(tmp_path / "manifests"),
        "SOUNDHARVEST_CHECKPOINT_S": "1",
        "SOUNDHARVEST_STEP_RETRY_DELAY_S": "1",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "TMPDIR": str(scratch),
    }
    if bucket is not None:
        tree = Tree(bucket.url, bucket)
        options = {"s3": {"endpoint_url": bucket.endpoint_url}}
        env |= {"SOUNDHARVEST_STORAGE_OPTIONS": json.dumps(options)}
    else:
        tree = Tree(str(tmp_path / "store"))
    env |= {
        "SOUNDHARVEST_AUDIO_ROOT": f"{tree.root}/audio",
        "SOUNDHARVEST_CATALOG_ROOT": f"{tree.root}/catalog",
    }
    (tmp_path / "dagster_home").mkdir()
    command = dg_launch("--partition-range", f"{DAYS[0]}...{DAYS[1]}")
    figures, checked, spare = Figures(), {}, tmp_path / "inspected.wav"

    for kill in range(KILLS):
        day = DAYS[kill % 2]
        run_ids[day] += range(run_ids[day][-1] + 1, run_ids[day][-1] + 1 + NEW_PER_KILL)
        write_manifest(tmp_path / "manifests", day, run_ids[day], "0,bad,sound,1,demo\n")
        requests = sandbox.stats()["api_requests"]
        running = kill_at_random(command, env, rng, tree)
        figures.mid_run += running
        figures.mid_work += running and sandbox.stats()["api_requests"] > requests
        figures.kills += 1
        figures.violations += check_invariant(tree, checked, spare)
        figures.checks += 1

    done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True)
    figures.violations += check_invariant(tree, checked, spare)
    catalog = read_catalog(tree)
    print(
        f"\nchaos seed={seed} storage={storage}: {figures.kills} kills "
        f"({figures.mid_run} mid-run, {figures.mid_work} after the API was called), "
        f"{figures.checks + 1} invariant checks, "
        f"{len(figures.violations)} violations, "
        f"faults injected {sum(sandbox.stats()['faults_injected'].values())}, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert figures.violations == []
    assert done.returncode == 0, done.stderr[-3000:]
    live = catalog[catalog.status != "rejected"]
    assert sorted(live.run_id) == sorted(run_ids[DAYS[0]] + run_ids[DAYS[1]])
    ready = live.run_id.map(run_state) == "ready"
    assert (live[ready].status == "ok").all(), live[ready & (live.status != "ok")].error.tolist()
    assert (live[~ready].status != "ok").all()
    temporaries = [p for p in tree.files("") if Path(p).name.startswith(".")]
    assert temporaries == []
    assert [str(p) for p in scratch.rglob("*") if p.name != "soundharvest"] == []
