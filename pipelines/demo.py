"""`make demo`: the daily harvest of the bundled manifests and prompt sheet against a local
sandbox API.

Starts the sandbox on a free loopback port (no API key needed), materializes the demo days
(their prompt sheet's `sound_generations`, and their `sound_features`) through `dg launch`
exactly as a user would, stops the sandbox, builds an `ml_dataset` snapshot, and prints where
the WAV files, the catalog and the snapshot are. The last day starts from a prompt sheet
(data/prompts/): its prompts are submitted, harvested and end in the snapshot. A second run
submits and downloads nothing new and writes no new snapshot.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.dataset as ds

from pipelines.instance_home import prepare

PROJECT = Path(__file__).resolve().parent.parent
FIRST_DAY, LAST_DAY = "2026-11-01", "2026-11-04"
PROMPT_DAY = LAST_DAY  # data/prompts/2026-11-04.csv: takes, a bad row, a duplicate
SELECTION = "sound_generations,run_manifest,sound_files,sound_catalog,sound_features"
DATASET_ROOT = PROJECT / "data" / "datasets"
# The demo's snapshot writes all three exports (WebDataset copies every clip, so it is not
# a default). Splits are drawn per group of similar runs and the demo has only 21 prompts,
# so it asks for wider validation and test shares than the default 0.8/0.1/0.1 (docs/ml.md).
DATASET_CONFIG = {
    "ops": {
        "ml_dataset": {
            "config": {
                "formats": ["hf", "nemo", "webdataset"],
                "train_ratio": 0.7,
                "validation_ratio": 0.15,
                "test_ratio": 0.15,
            }
        }
    }
}
DEMO_KEY = "sandbox-demo-key"
LOG = PROJECT / "data" / "demo-dagster.log"
README = '"From a prompt sheet"'


@contextmanager
def sandbox() -> Iterator[str]:
    """A sandbox API in a subprocess; yields its base URL and stops it afterwards."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--api-key",
            DEMO_KEY,
            # A generation is ready at once, so that the prompt day is harvested in the same
            # run (a real one stays PENDING a while: the pending sweep comes back for it).
            "--generation-time",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("SANDBOX_URL="):
            raise SystemExit(f"the sandbox did not start (it said {line!r})")
        yield line.removeprefix("SANDBOX_URL=")
    finally:
        process.terminate()
        process.wait(timeout=10)


def dagster_home() -> Path:
    """A persistent, git-ignored instance with the concurrency pool of `pipelines/dagster.yaml`,
    its storages created before any command uses it (pipelines/instance_home.py)."""
    return prepare(PROJECT / ".dagster_home", PROJECT / "pipelines" / "dagster.yaml")


def dagster(env: dict[str, str], *arguments: str) -> None:
    """One `dg launch` as a user would type it from the project root; its output goes to LOG."""
    command = [str(Path(sys.executable).with_name("dg")), "launch", *arguments]
    print(f"  $ dg {' '.join(command[1:])}")
    with LOG.open("a") as log:
        done = subprocess.run(command, env=env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = LOG.read_text().splitlines()[-30:]
        raise SystemExit("the materialization failed; end of its log:\n" + "\n".join(tail))


def demo_env() -> dict[str, str]:
    return os.environ | {
        "DAGSTER_HOME": str(dagster_home()),
        "SOUNDHARVEST_DATASET_ROOT": str(DATASET_ROOT),
        # The partitions start where the demo's data starts, so the UI shows them filled.
        "SOUNDHARVEST_FIRST_DAY": FIRST_DAY,
    }


def materialize(base_url: str) -> None:
    print(f"materializing {FIRST_DAY}...{LAST_DAY} against the sandbox at {base_url}")
    LOG.parent.mkdir(exist_ok=True)
    LOG.write_text("")
    api = {
        "CAMB_API_KEY": DEMO_KEY,
        "CAMB_API_BASE_URL": base_url,
        "CAMB_DOWNLOAD_ALLOW_HOSTS": "127.0.0.1",
    }
    dagster(
        demo_env() | api,
        *("--assets", SELECTION),
        *("--partition-range", f"{FIRST_DAY}...{LAST_DAY}"),
    )


def build_dataset() -> None:
    print("building an ml_dataset snapshot of every day")
    dagster(
        demo_env(),
        *("--assets", "ml_dataset"),
        *("--config-json", json.dumps(DATASET_CONFIG)),
    )


def summarize() -> None:
    catalog_root = PROJECT / "data" / "catalog" / "sound_catalog"
    table = ds.dataset(catalog_root, partitioning="hive").to_table().to_pandas()
    ok = table[table.status == "ok"]
    print(f"\nWAV files: {PROJECT / 'data' / 'audio'}/<day>/<run_id>.wav")
    print(
        f"catalog:   {catalog_root}/date=<day>/part-0.parquet  (log: {LOG.relative_to(PROJECT)})\n"
    )
    counts = table.pivot_table(index="date", columns="status", values="run_id", aggfunc="size")
    print(counts.fillna(0).astype(int).to_string())
    print(
        f"\n{len(ok)} files, {ok.size_bytes.sum() / 1e6:.1f} MB, "
        f"{ok.duration_s.sum() / 60:.1f} minutes of audio; delivered as "
        + ", ".join(f"{n} {fmt}" for fmt, n in ok.source_format.value_counts().items())
    )
    print("read it: pandas.read_parquet('data/catalog/sound_catalog')")
    features = ds.dataset(PROJECT / "data" / "catalog" / "sound_features", partitioning="hive")
    measured = features.to_table().to_pandas()
    print(
        f"features:  data/catalog/sound_features/date=<day>/part-0.parquet, {len(measured)} "
        f"clips, median loudness {measured.lufs.median():.1f} LUFS, "
        f"{int(measured.is_silent.sum())} silent, {int(measured.error.notna().sum())} undecodable"
    )


def summarize_dataset() -> None:
    version = (DATASET_ROOT / "LATEST").read_text().strip()
    snapshot = DATASET_ROOT / f"v={version}"
    manifest = json.loads((snapshot / "manifest.json").read_text())
    counts = ", ".join(f"{split} {n}" for split, n in manifest["counts"].items())
    print(f"\nml_dataset: {snapshot}  (LATEST = {version})")
    print(f"  splits: {counts}; {sum(manifest['hours'].values()) * 60:.1f} minutes of audio")
    shares = manifest["split_shares"]
    print(
        "  shares: "
        + ", ".join(
            f"{s} {got:.1%} (asked {shares['asked'][s]:.0%})" for s, got in shares["got"].items()
        )
    )
    if shares["problems"]:
        print(f"  WARNING: {'; '.join(shares['problems'])}: the card's Splits section says why")
    groups = manifest["groups"]
    print(
        f"  {groups['groups']} similarity groups; {groups['prompt_links']} prompt and "
        f"{groups['audio_links']} audio links, of which a prompt hash would have split "
        f"{groups['prompt_links_split_before'] + groups['audio_links_split_before']}, "
        f"{groups['links_split_now']} split now"
    )
    dropped = ", ".join(f"{n} {why}" for why, n in manifest["dropped"].items() if n)
    print(f"  left out: {dropped or 'none'}")
    print(f"  card: {snapshot / 'README.md'}; exports: hf/, nemo/, webdataset/")
    print(
        f"  load it: datasets.load_dataset('parquet', data_files='{snapshot}/hf/train-*.parquet')"
    )


def summarize_prompt_day() -> None:
    """What became of the prompt sheet's rows: submitted, harvested, in the snapshot."""
    from assets.generation.generation_plan import read_rows
    from resources.storage import Storage

    generated = read_rows(Storage(str(PROJECT / "data" / "catalog")), PROMPT_DAY)
    assert generated is not None, "the prompt day was not generated"
    catalog = ds.dataset(PROJECT / "data" / "catalog" / "sound_catalog", partitioning="hive")
    day = catalog.to_table(filter=ds.field("date") == PROMPT_DAY).to_pandas()
    version = (DATASET_ROOT / "LATEST").read_text().strip()
    hf = DATASET_ROOT / f"v={version}" / "hf"
    rows = ds.dataset(sorted(map(str, hf.glob("*.parquet")))).to_table(
        columns=["date", "run_id", "text"]
    )
    snapshot = sorted(
        (r["run_id"], r["text"]) for r in rows.to_pylist() if str(r["date"]) == PROMPT_DAY
    )
    print(
        f"\nprompt sheet data/prompts/{PROMPT_DAY}.csv, {len(generated)} rows (one per take): "
        f"{counted(generated.status)}; catalog: {counted(day.status)}; "
        f"{len(snapshot)} in the snapshot (the rest: left out above):"
    )
    print("\n".join(f"  {run_id}  {text}" for run_id, text in snapshot))
    print(f"  try: .venv/bin/soundharvest generate {PROMPT_DAY} --dry-run  (README: {README})")


def counted(statuses) -> str:
    return ", ".join(f"{n} {status}" for status, n in statuses.value_counts().items())


def stored_files() -> int:
    return sum(1 for _ in (PROJECT / "data" / "audio").glob("*/*.wav"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo takes no options; `--help` says what it does instead of doing it."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.fill(
            f"Days {FIRST_DAY}...{LAST_DAY} from data/manifests/ and data/prompts/; WAVs to "
            "data/audio/, the catalog to data/catalog/, snapshots to data/datasets/, the Dagster "
            f"instance in .dagster_home/, Dagster's log to {LOG.relative_to(PROJECT)}. No API key "
            "needed: the sandbox's own is used. `make demo` installs first, then runs this.",
            width=88,
        ),
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    parse_args(argv)
    started, before = time.monotonic(), stored_files()
    with sandbox() as base_url:
        materialize(base_url)
    build_dataset()
    summarize()
    summarize_dataset()
    summarize_prompt_day()
    print(
        f"{stored_files() - before} new files this run; done in {time.monotonic() - started:.1f} s"
    )
    print(
        f"see it in the UI: DAGSTER_HOME=$PWD/.dagster_home SOUNDHARVEST_FIRST_DAY={FIRST_DAY} "
        ".venv/bin/dg dev\n(its daemon harvests by itself once it can reach an API: README, "
        '"Try it against the sandbox")'
    )


if __name__ == "__main__":
    main()
