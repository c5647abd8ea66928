"""The whole chain from a prompt sheet to a snapshot row carrying its prompt, through the
Dagster CLI as the README runs it: `dg launch --assets sound_generations,... --partition D`,
then `dg launch --assets ml_dataset`."""

import json
import os
import subprocess

import pyarrow.dataset as ds
import pytest

from support import PROJECT
from support.generation_kit import DAY, generation_env, write_sheet
from support.pipeline_kit import dg_launch

pytestmark = pytest.mark.slow

CHAIN = "sound_generations,run_manifest,sound_files,sound_catalog,sound_features"
PROMPTS = [
    "rain on a tin roof", "a door creaks open", "waves on pebbles", "a kettle boils",
    "footsteps on gravel", "wind through pines", "a bell tolls", "thunder far away",
]  # fmt: skip


def test_a_prompt_sheet_ends_as_snapshot_rows_carrying_its_prompts(sandbox, tmp_path) -> None:
    sandbox.set_faults(generation_s=0.0)
    write_sheet(tmp_path / "prompts", DAY, [{"prompt": p, "duration": 2} for p in PROMPTS])
    env = os.environ | generation_env(sandbox.base_url, tmp_path)

    def dg(*arguments: str) -> None:
        done = subprocess.run(
            [*arguments], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    dg(*dg_launch("--partition", DAY, select=CHAIN))
    config = {"ops": {"ml_dataset": {"config": {"train_ratio": 0.5, "validation_ratio": 0.25,
                                                 "test_ratio": 0.25}}}}  # fmt: skip
    dg(*dg_launch(select="ml_dataset"), "--config-json", json.dumps(config))

    assert sandbox.stats()["creates_by_prompt"] == dict.fromkeys(PROMPTS, 1)
    snapshot = tmp_path / "datasets" / f"v={(tmp_path / 'datasets' / 'LATEST').read_text().strip()}"
    rows = ds.dataset(sorted(map(str, (snapshot / "hf").glob("*.parquet")))).to_table()
    rows = rows.select(["text", "task_id", "date", "run_id"]).to_pylist()
    assert sorted(row["text"] for row in rows) == sorted(PROMPTS)
    assert all(row["task_id"] and row["date"] == DAY and row["run_id"] for row in rows)
    nemo = [json.loads(line) for f in (snapshot / "nemo").glob("*.jsonl") for line in f.open()]
    assert sorted(line["text"] for line in nemo) == sorted(PROMPTS)
