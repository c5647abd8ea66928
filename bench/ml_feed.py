"""ML feed at scale: a year's catalog into a reference snapshot; features and export rates.

    python -m bench.ml_feed [--days 365] [--runs 10000] [--clips 48] [--clip-seconds 10]

1. Snapshot: a synthetic catalog of `--days` x `--runs` rows (about 90 % `ok`, the rest
   pending / failed / rejected; 200,000 distinct prompts drawn so that many repeat, 10 % of
   rows a near-copy of one; 1 % of clips the same sound as another) with a features file
   per day, audio fingerprints included, is generated (untimed); then a child process builds
   a reference-mode snapshot (HF Parquet + NeMo + card) from it with `build_snapshot`, once
   split by a prompt hash (`group_by: prompt`, the rule before similarity groups) and once by
   similarity groups (the default): wall time and peak RSS are what the issues bound (60 s,
   4 GB; similarity at most 60 s more). The URIs point at no file: reference mode reads none.
2. Features: `--clips` stereo 44.1 kHz PCM_16 WAVs of `--clip-seconds` measured by
   `measure_all` with 1 and 2 worker processes (the pool's one-time start-up is printed
   apart), and the CPU per MB of 1 worker with and without the audio fingerprint.
3. Exports: the same clips as an embedded HF snapshot and as WebDataset shards.

Rates are MB (10^6 bytes) of stored WAV per second. Nothing is asserted:
`tests/benchmarks/test_ml_feed_bench.py` runs it at a tiny size so it keeps working.
"""

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from assets.harvest.catalog_rows import parquet_bytes, table_bytes
from assets.ml import clip_features as features
from assets.ml.audio_fingerprint import BANDS, FLOOR_DB, FRAMES, HOP_S
from assets.ml.clip_features import (
    FeatureParams,
    Item,
    feature_workers,
    features_relpath,
    features_table,
    measure_all,
)
from assets.ml.dataset.exports import SnapshotFiles, write_hf, write_webdataset
from assets.ml.dataset.selection import read_rows, select
from assets.ml.dataset.snapshot import build_snapshot
from assets.ml.dataset.spec import DatasetSpec
from resources.storage import Storage

FIRST_DAY = pd.Timestamp("2025-01-01")
PROMPTS = 200_000  # distinct prompts, drawn again and again across days
TAKE_SHARE = 0.1  # rows whose prompt is a near-copy (take number, order, a stray word)
COPY_SHARE = 0.01  # runs whose clip is the same sound as an earlier run's of the day
STATUSES = ["ok", "pending", "failed", "rejected"]


def prompt_book(seed: int = 11) -> list[str]:
    """PROMPTS distinct prompts of 3-6 words from 5,000 made-up words: unrelated to each
    other as real distinct prompts are (few share more than a word or two)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(5000)]
    sizes = rng.integers(3, 7, PROMPTS)
    picks = rng.integers(0, len(words), sizes.sum())
    ends = np.cumsum(sizes)
    spans = zip(ends - sizes, ends, strict=True)
    return [" ".join(words[i] for i in picks[start:end]) for start, end in spans]


def near_copy(prompt: str, rng: np.random.Generator) -> str:
    words = prompt.split()
    edit = rng.integers(0, 3)
    if edit == 0:
        return f"{prompt}, take {rng.integers(2, 10)}"
    if edit == 1:
        return " ".join(words[1:] + words[:1])
    return f"{prompt} loud"


def synthetic_fingerprints(
    rng: np.random.Generator, frames: np.ndarray, rates: np.ndarray, copies: np.ndarray
) -> tuple[list[bytes], list[bytes]]:
    """Profiles and fingerprints of the size the real ones have (FRAMES x BANDS bytes for
    clips of 1.7 s and more), random: distinct sounds; ``copies`` maps a row to the earlier
    row whose sound it repeats (-1: none)."""
    seconds = frames / rates
    lengths = np.clip(((seconds - 0.1) / HOP_S).astype(int) + 1, 1, FRAMES)
    levels = rng.integers(0, 2 * FLOOR_DB, (len(frames), FRAMES * BANDS), dtype=np.uint8)
    profiles = rng.integers(0, 2 * FLOOR_DB, (len(frames), BANDS), dtype=np.uint8)
    copy = np.flatnonzero(copies >= 0)
    levels[copy], profiles[copy] = levels[copies[copy]], profiles[copies[copy]]
    prints = [row[: n * BANDS].tobytes() for row, n in zip(levels, lengths, strict=True)]
    return [row.tobytes() for row in profiles], prints


def synthetic_catalog(catalog: Storage, days: int, runs: int, seed: int = 7) -> int:
    """Writes `days` catalog and features partitions of `runs` rows; returns the ok rows."""
    rng = np.random.default_rng(seed)
    book = prompt_book()
    ok_total = 0
    for index in range(days):
        day = (FIRST_DAY + pd.Timedelta(days=index)).strftime("%Y-%m-%d")
        run_ids = np.arange(runs, dtype="int64") + (index + 1) * 10 * runs
        status = rng.choice(STATUSES, runs, p=[0.9, 0.04, 0.03, 0.03])
        ok = status == "ok"
        rates = rng.choice([16000, 22050, 44100, 48000], runs)
        frames = rng.integers(rates // 2, rates * 30)
        channels = rng.choice([1, 2], runs)
        # COPY_SHARE of the runs deliver the same sound as an earlier run of the day
        copies = np.where(rng.random(runs) < COPY_SHARE, rng.integers(0, runs, runs), -1)
        copies = np.where(copies < np.arange(runs), copies, -1)
        copied = np.flatnonzero(copies >= 0)
        frames[copied], rates[copied] = frames[copies[copied]], rates[copies[copied]]
        prompt_ids = rng.integers(0, PROMPTS, runs)  # repeats across days: shared groups
        takes = rng.random(runs) < TAKE_SHARE
        rows = pd.DataFrame(
            {
                "run_id": run_ids,
                "status": status,
                "error": np.where(ok, None, "synthetic"),
                "uri": [f"/data/audio/{day}/{r}.wav" for r in run_ids],
                "size_bytes": np.where(ok, frames * channels * 2 + 44, None),
                "sha256": [hashlib.sha256(int(r).to_bytes(8, "big")).hexdigest() for r in run_ids],
                "sample_rate": rates,
                "channels": channels,
                "frames": frames,
                "duration_s": frames / rates,
                "subtype": "PCM_16",
                "prompt": [
                    None if p % 50 == 0 else near_copy(book[p], rng) if take else book[p]
                    for p, take in zip(prompt_ids, takes, strict=True)
                ],
                "audio_type": np.where(rng.random(runs) < 0.8, "sound", "music"),
                "attempts": 1,
            }
        )
        for column in ("uri", "sha256", "sample_rate", "channels", "frames", "duration_s"):
            rows[column] = rows[column].where(ok, None)
        catalog.write_bytes(parquet_bytes(rows), f"sound_catalog/date={day}/part-0.parquet")
        good = rows[ok]
        profiles, prints = synthetic_fingerprints(rng, frames, rates, copies)
        profiles = [profiles[i] for i in np.flatnonzero(ok)]
        prints = [prints[i] for i in np.flatnonzero(ok)]
        features = pd.DataFrame(
            {
                "run_id": good["run_id"],
                "sha256": good["sha256"],
                "peak_dbfs": rng.uniform(-20, 0, len(good)),
                "rms_dbfs": rng.uniform(-40, -10, len(good)),
                "lufs": rng.normal(-20, 6, len(good)),
                "clipped_fraction": rng.exponential(0.001, len(good)),
                "silence_fraction": rng.uniform(0, 0.5, len(good)),
                "leading_silence_s": rng.uniform(0, 1, len(good)),
                "trailing_silence_s": rng.uniform(0, 1, len(good)),
                "is_silent": rng.random(len(good)) < 0.01,
                "audio_profile": profiles,
                "audio_fingerprint": prints,
                "params": FeatureParams().key(),
                "computed_by": "sound_features",
            }
        )
        catalog.write_bytes(table_bytes(features_table(features)), features_relpath(day))
        ok_total += len(good)
    return ok_total


def snapshot_child(catalog_root: str, out_root: str, group_by: str) -> None:
    """Runs in a child process: one reference snapshot; prints its figures as JSON."""
    started = time.perf_counter()
    spec = DatasetSpec(formats=["hf", "nemo"], group_by=group_by)
    built = build_snapshot(Storage(catalog_root), Storage(out_root), spec)
    seconds = time.perf_counter() - started
    assert built.manifest is not None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,  # all threads
                "peak_rss_mb": usage.ru_maxrss / 1024,
                "clips": len(built.selection.rows),
                "counts": built.manifest["counts"],
                "files": len(built.manifest["files"]),
                "bytes": sum(f["size"] for f in built.manifest["files"]),
                "groups": built.manifest["groups"],
            }
        )
    )


def bench_snapshot(work: Path, days: int, runs: int) -> dict[str, dict]:
    """The snapshot of the same catalog split by a prompt hash (the rule before similarity
    groups) and by similarity groups (the default), each in a child process of its own."""
    catalog = Storage(str(work / "catalog"))
    started = time.perf_counter()
    ok = synthetic_catalog(catalog, days, runs)
    generated = time.perf_counter() - started
    figures = {}
    for group_by in ("prompt", "similarity"):
        child = subprocess.run(
            [sys.executable, "-m", "bench.ml_feed", "--snapshot-child", catalog.root,
             str(work / f"ds-{group_by}"), group_by],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip
        result = json.loads(child.stdout.strip().splitlines()[-1])
        figures[group_by] = {**result, "ok_rows": ok, "rows": days * runs, "generate_s": generated}
    return figures


def write_clips(folder: Path, clips: int, seconds: float) -> pd.DataFrame:
    """Stereo 44.1 kHz PCM_16 noise-and-tone clips with their catalog rows."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rate, rng, rows = 44100, np.random.default_rng(3), []
    t = np.arange(round(seconds * rate)) / rate
    for run_id in range(1, clips + 1):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 10 * run_id) * t)
        signal = np.stack([tone, tone], axis=1) + 0.05 * rng.standard_normal((len(t), 2))
        path = folder / f"{run_id}.wav"
        sf.write(path, signal, rate, subtype="PCM_16")
        data = path.read_bytes()
        rows.append(
            {
                "run_id": run_id,
                "status": "ok",
                "uri": str(path),
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "sample_rate": rate,
                "channels": 2,
                "frames": len(t),
                "duration_s": seconds,
                "subtype": "PCM_16",
                "prompt": f"tone {run_id}",
                "audio_type": "sound",
            }
        )
    return pd.DataFrame(rows)


def bench_features(rows: pd.DataFrame, workers: int) -> float:
    items = [Item(r.run_id, r.sha256, r.uri) for r in rows.itertuples()]
    started = time.perf_counter()
    with feature_workers(workers) as pool:
        done = list(measure_all(items, FeatureParams(), computed_by="bench", pool=pool))
    seconds = time.perf_counter() - started
    if any(row["error"] for row in done):
        raise SystemExit(f"bench: a clip failed to measure: {done}")
    return seconds


class _NoFingerprint:
    """Stands in for the fingerprinter to time sound_features without it."""

    def __init__(self, rate: int, channels: int) -> None:
        pass

    def add(self, block: np.ndarray) -> None:
        pass

    def result(self) -> tuple[None, None]:
        return None, None


def fingerprint_cost(rows: pd.DataFrame, repeats: int = 3) -> tuple[float, float]:
    """CPU seconds of measuring the clips in this process with the audio fingerprint and
    without it (the best of ``repeats`` each, alternating, so the load hits both alike)."""
    items = [Item(r.run_id, r.sha256, r.uri) for r in rows.itertuples()]

    def cpu() -> float:
        started = time.process_time()
        list(measure_all(items, FeatureParams(), computed_by="bench"))
        return time.process_time() - started

    with_print, without_print = [], []
    for _ in range(repeats):
        with_print.append(cpu())
        original, features.Fingerprinter = features.Fingerprinter, _NoFingerprint
        try:
            without_print.append(cpu())
        finally:
            features.Fingerprinter = original
    return min(with_print), min(without_print)


def bench_exports(work: Path, rows: pd.DataFrame) -> dict[str, float]:
    """Seconds to write the clips as embedded HF Parquet, and as WebDataset tar shards."""
    catalog = Storage(str(work / "clip-catalog"))
    catalog.write_bytes(parquet_bytes(rows), "sound_catalog/date=2025-01-01/part-0.parquet")
    spec = DatasetSpec(
        mode="embedded", drop_silent=False, train_ratio=1.0, validation_ratio=0.0, test_ratio=0.0
    )
    selected = select(read_rows(catalog), spec).rows
    out = Storage(str(work / "exports"))
    seconds = {}
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        for name, write in {
            "embedded HF Parquet": lambda files: write_hf(files, "train", selected, spec),
            "WebDataset tar": lambda files: write_webdataset(files, "train", selected, spec),
        }.items():
            started = time.perf_counter()
            write(SnapshotFiles(out, name.replace(" ", "-"), Path(scratch)))
            seconds[name] = time.perf_counter() - started
    return seconds


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.ml_feed", description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=10_000, help="catalog rows per day")
    parser.add_argument("--clips", type=int, default=48, help="WAVs for the audio rates")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--snapshot-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.snapshot_child:
        snapshot_child(*args.snapshot_child)
        return {}
    for name in ("days", "runs", "clips"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be at least 1")

    print(
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="soundharvest-bench-") as tmp:
        work = Path(tmp)
        snaps = bench_snapshot(work, args.days, args.runs)
        snap, before = snaps["similarity"], snaps["prompt"]
        print(
            f"\nreference snapshot (HF Parquet + NeMo + card) of {args.days} days x {args.runs} "
            f"runs = {snap['rows']:,} catalog rows, {snap['ok_rows']:,} ok, "
            f"{snap['clips']:,} selected (generated in {snap['generate_s']:.0f} s, untimed)"
        )
        for name, figures in (("group_by prompt", before), ("group_by similarity", snap)):
            print(
                f"  {name:<20} {figures['seconds']:6.1f} s ({figures['cpu_seconds']:.1f} s CPU), "
                f"peak RSS {figures['peak_rss_mb']:,.0f} MB, {figures['files']} files, "
                f"{figures['bytes'] / 1e6:.0f} MB; splits {figures['counts']}"
            )
        print(
            f"  similarity costs {snap['seconds'] - before['seconds']:+.1f} s "
            f"({snap['cpu_seconds'] - before['cpu_seconds']:+.1f} s CPU); groups {snap['groups']}"
        )
        rows = write_clips(work / "clips", args.clips, args.clip_seconds)
        audio_mb = rows["size_bytes"].sum() / 1e6
        # The first pool of a process starts its fork server (imports numpy, scipy, ...):
        # paid once per process, so timed apart from the throughput. Each later pool forks
        # its workers from it, as each sound_features step does (in the rates below).
        startup = bench_features(rows.iloc[:8], 2)  # enough chunks to start both workers
        rates = {
            f"sound_features, {n} worker{'s' if n > 1 else ''}": audio_mb / bench_features(rows, n)
            for n in (1, 2)
        }
        rates |= {name: audio_mb / s for name, s in bench_exports(work, rows).items()}
        with_print, without_print = fingerprint_cost(rows)
        print(
            f"\naudio: {args.clips} clips, stereo 44.1 kHz PCM_16, {audio_mb:.0f} MB; "
            f"fork server start-up (once per process, not in the rates) {startup:.1f} s"
        )
        print(f"{'step':<28}  MB/s")
        for name, rate in rates.items():
            print(f"{name:<28}  {rate:6.1f}")
        share = with_print / without_print - 1
        print(
            f"sound_features CPU per MB, 1 worker: {with_print / audio_mb * 1000:.1f} ms with "
            f"the audio fingerprint, {without_print / audio_mb * 1000:.1f} ms without "
            f"(the fingerprint adds {share:.0%})"
        )
    return {
        "snapshot": snap,
        "snapshot_prompt_rule": before,
        "rates": rates,
        "pool_startup_s": startup,
        "fingerprint_share": share,
    }


if __name__ == "__main__":
    main()
