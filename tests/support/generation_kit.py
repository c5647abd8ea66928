"""What the generation tests share: prompt sheets, the storage with a prompt root, materializing
`sound_generations` (and the harvest after it) against the sandbox, reading what it left."""

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from dagster import materialize

from assets.generation.generation_plan import read_rows
from assets.generation.ledger import Ledger
from assets.run_manifest import run_manifest
from assets.sound_catalog import sound_catalog
from assets.sound_files import sound_files
from assets.sound_generations import sound_generations
from resources.storage_resource import StorageResource

from support.pipeline_kit import resources, sandbox_env

DAY, NEXT = "2026-11-05", "2026-11-06"
GENERATE = [sound_generations]
CHAIN = [sound_generations, run_manifest, sound_files, sound_catalog]
SHEET_HEADER = ("prompt", "duration", "audio_type", "takes")


def write_sheet(
    root: Path, day: str, rows: Iterable[Mapping[str, object] | str], *, name: str | None = None
) -> Path:
    """A CSV sheet: `{root}/{day}.csv`, or `{root}/{day}/{name}`; a row is a dict of columns or
    a prompt alone."""
    records = [row if isinstance(row, Mapping) else {"prompt": row} for row in rows]
    columns = list(dict.fromkeys([*SHEET_HEADER, *(k for r in records for k in r)]))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    path = root / day / name if name else root / f"{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())
    return path


def prompts(n: int, prefix: str = "a sound", **columns: object) -> list[dict[str, object]]:
    return [{"prompt": f"{prefix} {i}", "duration": 2, **columns} for i in range(n)]


def generation_env(base_url: str, root: Path) -> dict[str, str]:
    """The settings of a command that generates against the sandbox: `sandbox_env`'s (every
    root and a fresh DAGSTER_HOME in `root`), the prompt sheets in `root / "prompts"`, and
    the partitions starting at DAY."""
    (root / "dagster_home").mkdir(exist_ok=True)
    return sandbox_env(base_url, root) | {
        "SOUNDHARVEST_PROMPT_ROOT": str(root / "prompts"),
        "SOUNDHARVEST_FIRST_DAY": DAY,
    }


def storage_with_prompts(tmp_path: Path) -> StorageResource:
    return StorageResource(
        manifest_root=str(tmp_path / "manifests"),
        audio_root=str(tmp_path / "audio"),
        catalog_root=str(tmp_path / "catalog"),
        prompt_root=str(tmp_path / "prompts"),
    )


def generate(
    sandbox,
    storage: StorageResource,
    day: str = DAY,
    *,
    assets: list = GENERATE,
    camb: dict | None = None,
    config: Mapping[str, object] | None = None,
    **kwargs,
):
    """Materialize `assets` (sound_generations alone by default) for one day."""
    run_config = {"ops": {"sound_generations": {"config": dict(config)}}} if config else None
    return materialize(
        assets,
        partition_key=day,
        resources=resources(sandbox, storage, **(camb or {})),
        run_config=run_config,
        **kwargs,
    )


def rows_of(storage: StorageResource, day: str = DAY) -> pd.DataFrame:
    """The day's rows as the generation step decided them."""
    rows = read_rows(storage.catalog(), day)
    assert rows is not None, f"{day} has no generation record"
    return rows


def ledger_of(storage: StorageResource, day: str = DAY) -> pd.DataFrame:
    return Ledger(storage.catalog(), day, "").latest()


def statuses(rows: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in rows["status"].value_counts().items()}


def creates(sandbox) -> dict[str, int]:
    return dict(sandbox.stats()["creates_by_prompt"])
