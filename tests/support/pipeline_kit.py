"""What the pipeline-level tests share: manifests, resources, materializing, reading results.

The assets run in process with Dagster's `materialize` against the sandbox on loopback;
storage is local under the test's `tmp_path` (or S3 on moto), and the scratch space of
downloads is the test's own (`scratch` fixture), so leftovers can be counted.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from dagster import materialize

from assets.partitions import run_tags
from assets.run_manifest import run_manifest
from assets.sound_catalog import sound_catalog
from assets.sound_files import sound_files
from resources.camb_resource import CambResource
from resources.storage_resource import StorageResource

from support import PROJECT
from support.sandbox_api import SANDBOX_KEY

DAY = "2026-11-01"
ASSETS = [run_manifest, sound_files, sound_catalog]
HARVEST = "run_manifest,sound_files,sound_catalog"
# The venv's `dg`, as the README runs it; it must run from the project root (pyproject's [tool.dg]).
DG = str(Path(sys.executable).with_name("dg"))


def dg_launch(*partition: str, select: str = HARVEST) -> list[str]:
    """`dg launch --assets <select> --partition D` (or `--partition-range A...B`)."""
    return [DG, "launch", "--assets", select, *partition]


def launch_together(days: list[str], env: dict[str, str]) -> list[str]:
    """One `dg launch --partition D` per day, all started at once from the project root; each
    must succeed. Their outputs (stderr included), in the order of `days`."""
    return run_together([dg_launch("--partition", day) for day in days], env)


def run_together(commands: list[list[str]], env: dict[str, str]) -> list[str]:
    """The commands, all started at once from the project root; each must succeed. Their
    outputs (stderr included), in the order of `commands`."""
    processes = [
        subprocess.Popen(
            command,
            env=env,
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in commands
    ]
    outputs = [process.communicate(timeout=400)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    return outputs


def sandbox_env(base_url: str, root: Path) -> dict[str, str]:
    """Settings of a command run against the sandbox, every root and DAGSTER_HOME in `root`."""
    return {
        "CAMB_API_KEY": SANDBOX_KEY,
        "CAMB_API_BASE_URL": base_url,
        "CAMB_DOWNLOAD_ALLOW_HOSTS": "127.0.0.1",
        "SOUNDHARVEST_MANIFEST_ROOT": str(root / "manifests"),
        "SOUNDHARVEST_AUDIO_ROOT": str(root / "audio"),
        "SOUNDHARVEST_CATALOG_ROOT": str(root / "catalog"),
        "SOUNDHARVEST_DATASET_ROOT": str(root / "datasets"),
        "DAGSTER_HOME": str(root / "dagster_home"),
    }


def cli_env(sandbox, root: Path) -> dict[str, str]:
    """This process's environment with the settings of `sandbox_env`: a command's whole env."""
    return os.environ | sandbox_env(sandbox.base_url, root)


def write_manifest(root: Path, day: str, run_ids: list, extra_lines: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{day}.csv"
    lines = ["run_id,prompt,audio_type,duration,project"]
    lines += [f"{run_id},sound {run_id},sound,2.0,demo" for run_id in run_ids]
    path.write_text("\n".join(lines) + "\n" + extra_lines)
    return path


def resources(sandbox, storage: StorageResource, **camb: object) -> dict:
    settings = {
        "api_key": SANDBOX_KEY,
        "base_url": sandbox.base_url,
        "download_allow_hosts": "127.0.0.1",
        **camb,
    }
    return {"camb": CambResource(**settings), "storage": storage}


def local_storage(tmp_path: Path, audio_root: str | None = None) -> StorageResource:
    return StorageResource(
        manifest_root=str(tmp_path / "manifests"),
        audio_root=audio_root or str(tmp_path / "audio"),
        catalog_root=str(tmp_path / "catalog"),
    )


def run(sandbox, storage: StorageResource, day: str = DAY, *, camb: dict | None = None, **kwargs):
    """Materialize one day; `camb` overrides settings of the API client resource."""
    return materialize(
        ASSETS, partition_key=day, resources=resources(sandbox, storage, **(camb or {})), **kwargs
    )


def run_range(
    sandbox,
    storage: StorageResource,
    first: str,
    last: str,
    *,
    assets: list = ASSETS,
    camb: dict | None = None,
    **kwargs,
):
    """Materialize the days first..last in one run, as a single-run backfill does."""
    return materialize(
        assets,
        resources=resources(sandbox, storage, **(camb or {})),
        tags=run_tags(first, last),
        **kwargs,
    )


def catalog_path(storage: StorageResource, day: str = DAY) -> str:
    return storage.catalog().path(f"sound_catalog/date={day}/part-0.parquet")


def read_catalog(storage: StorageResource, day: str = DAY) -> pd.DataFrame:
    with storage.catalog().open(f"sound_catalog/date={day}/part-0.parquet") as file:
        return pd.read_parquet(file, dtype_backend="numpy_nullable")


def read_whole_catalog(root: Path) -> pd.DataFrame:
    """Every day of the catalog a command wrote under `root` (hive partitions: a `date` column)."""
    dataset = ds.dataset(root / "catalog" / "sound_catalog", partitioning="hive")
    return dataset.to_table().to_pandas()


def failure_messages(result) -> list[str]:
    """What the run's failed steps said: a `Failure`'s description, else the error message."""
    messages = []
    for event in step_events(result, "STEP_FAILURE"):
        data = event.step_failure_data
        user = data.user_failure_data
        messages.append(user.description if user and user.description else data.error.message)
    return messages


def markdown_rows(text: str, header: bool = False) -> list[list[str]]:
    """The cells of a Markdown table (metadata), its body's (the header row first if `header`)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    lines = lines[:1] + lines[2:] if header else lines[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def step_events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def assert_ok_rows_verify(catalog: pd.DataFrame) -> None:
    """Every ok row's local file exists with exactly its size and sha256."""
    for row in catalog[catalog.status == "ok"].itertuples():
        data = Path(row.uri).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (row.size_bytes, row.sha256)


def files_under(root: Path) -> list[str]:
    """Every file under `root`, as paths relative to it, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def leftovers(tmp_path: Path, scratch: Path) -> list[str]:
    """Temporaries in the storage roots and anything left in the scratch space."""
    in_roots = [name for name in files_under(tmp_path) if Path(name).name.startswith(".")]
    in_scratch = [str(p) for p in scratch.rglob("*")] if scratch.exists() else []
    return [name for name in in_roots if not name.startswith("scratch/")] + in_scratch


@pytest.fixture(name="scratch")
def scratch_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own temporary directory for downloads (`tempfile.gettempdir()`)."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path / "soundharvest"
