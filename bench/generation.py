"""Generating from prompts: a sheet of 10,000 prompts submitted, and the ledger of a year checked.

    make bench-generation            # = .venv/bin/python -m bench.generation
    .venv/bin/python -m bench.generation --prompts 2000 --year-days 30   # a quicker look

1. **Submission.** A sheet of N prompts (one day) through `soundharvest generate D`, as a user
   runs it, against the sandbox in its own process answering every API call after `--latency`
   (150 ms, as `bench.end_to_end` models an API call): each create waits that long, so C at a
   time cannot beat the bound N * latency / C. At 50 ms the bound asks for 320 creates a
   second, and the client's own CPU per create (httpx on one event loop) becomes the bound on
   2 shared cores instead of the latency: bench/README.md gives both.
   The step's own line ("N creates sent in S s") gives the submission, from the first intent
   written to the last outcome recorded; the command's wall time (Dagster's start, reading the
   sheet, the ledger check, compaction) is printed beside. Checked outside the timing: the
   sandbox created every prompt exactly once, and the ledger holds N created keys.
2. **The ledger of a year.** `--year-days` days of `--per-day` generations written as the
   step leaves them (one compacted file a day), then a new sheet of `--per-day` prompts (1 %
   of them sent before) checked against every day, in a child process so its peak RSS is its
   own: `ledger.history` (what `plan_day` asks), and the budget's scan of a month
   (`ledger.spent_since`). Checked: the check finds exactly the keys sent before.
"""

import argparse
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import (
    BenchError,
    format_rows,
    load_average,
    machine,
    positive_int,
    run,
    sandbox_process,
    seconds,
)

PROJECT = Path(__file__).resolve().parents[1]
DAY = "2026-11-05"
SENT = re.compile(r": (\d+) creates sent in ([\d.]+) s")
TARGET_RATIO = 1.3
YEAR_LIMIT_S, YEAR_LIMIT_MB = 5.0, 500.0


def write_sheet(path: Path, n: int, prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["prompt,duration"] + [f"{prefix} number {i},2" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def submission(n: int, concurrency: int, latency: float) -> list[str]:
    """Figure 1: the submission of a sheet of `n` prompts, and its checks."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp,
        sandbox_process("--latency", str(latency), "--generation-time", "0") as api,
    ):
        root = Path(tmp)
        write_sheet(root / "prompts" / f"{DAY}.csv", n, "a sound")
        env = os.environ | {
            "CAMB_API_KEY": api.api_key,
            "CAMB_API_BASE_URL": api.base_url,
            "CAMB_MAX_CONCURRENCY": str(concurrency),
            "DAGSTER_HOME": str(root / "dagster_home"),
            "SOUNDHARVEST_PROMPT_ROOT": str(root / "prompts"),
            "SOUNDHARVEST_CATALOG_ROOT": str(root / "catalog"),
            "SOUNDHARVEST_FIRST_DAY": DAY,
        }
        load = load_average()
        started = time.monotonic()
        done = subprocess.run(
            [str(Path(sys.executable).with_name("soundharvest")), "generate", DAY],
            env=env, cwd=PROJECT, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.monotonic() - started
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise BenchError(f"soundharvest generate failed: {done.stderr[-2000:]}")
        match = SENT.search(done.stdout)
        if match is None or int(match[1]) != n:
            raise BenchError(f"the step did not say it sent {n} creates: {done.stdout[-1000:]}")
        check_created_once(api, n, root)
    took = float(match[2])
    bound = n * latency / concurrency
    return [
        f"submission of N = {n} prompts at concurrency C = {concurrency}, {latency * 1000:g} ms "
        f"per create (load {load})",
        *format_rows(
            ["figure", "seconds", "ratio to the bound", "target"],
            [
                ["bound N * latency / C", f"{bound:.2f}", "1.00", ""],
                [
                    "submission (the step's line)",
                    f"{took:.2f}",
                    f"{took / bound:.2f}",
                    f"<= {TARGET_RATIO}",
                ],
                ["`soundharvest generate D`, wall", f"{wall:.2f}", f"{wall / bound:.2f}", ""],
            ],
        ),
        f"CPU s of the command and its children: {cpu.ru_utime + cpu.ru_stime:.1f}",
        f"verdict: {'met' if took <= TARGET_RATIO * bound else 'MISSED'}",
    ]


def check_created_once(api, n: int, root: Path) -> None:
    import httpx

    from assets.generation.ledger import Ledger
    from resources.storage import Storage

    stats = httpx.get(f"{api.origin}/_sandbox/stats", timeout=10).json()
    counts = stats["creates_by_prompt"]
    if len(counts) != n or set(counts.values()) != {1}:
        raise BenchError(f"{len(counts)} prompts created, counts {set(counts.values())}")
    ledger = Ledger(Storage(str(root / "catalog")), DAY, "").latest()
    if len(ledger) != n or set(ledger["state"]) != {"created"}:
        raise BenchError(f"the ledger holds {len(ledger)} keys: {set(ledger['state'])}")


# -- the ledger of a year ------------------------------------------------------------------


def write_year(root: Path, days: int, per_day: int, seed: int) -> list[bytes]:
    """`days` compacted ledger files of `per_day` generations; returns the base keys."""
    import pyarrow as pa

    from assets.generation.keys import round_key
    from assets.generation.ledger import SCHEMA, day_dir
    from assets.harvest.catalog_rows import table_bytes
    from resources.storage import Storage

    rng = random.Random(seed)
    state = Storage(str(root))
    first = datetime(2026, 11, 30, tzinfo=UTC) - timedelta(days=days)
    bases: list[bytes] = []
    for offset in range(days):
        day = (first + timedelta(days=offset)).date().isoformat()
        base = [rng.randbytes(16) for _ in range(per_day)]
        bases += base
        sent = first + timedelta(days=offset, hours=1)
        table = pa.table(
            {
                "key": pa.array([round_key(b, 1) for b in base], pa.binary(16)),
                "base": pa.array(base, pa.binary(16)),
                "round": pa.array([1] * per_day, pa.int32()),
                "seq": pa.array([2] * per_day, pa.int64()),
                "state": ["created"] * per_day,
                "task_id": [f"{rng.getrandbits(128):032x}" for _ in range(per_day)],
                "reason": pa.nulls(per_day, pa.string()),
                "sheet": [f"/data/prompts/{day}.csv"] * per_day,
                "line": pa.array(range(2, per_day + 2), pa.int64()),
                "take": pa.array([1] * per_day, pa.int32()),
                "prompt": [f"a sound of day {day} number {i}" for i in range(per_day)],
                "duration": pa.array([2.0] * per_day),
                "audio_type": ["sound"] * per_day,
                "intended_at": pa.array([sent] * per_day, pa.timestamp("us", tz="UTC")),
                "answered_at": pa.array([sent] * per_day, pa.timestamp("us", tz="UTC")),
                "dagster_run_id": ["bench"] * per_day,
            },
            schema=SCHEMA,
        )
        state.write_bytes(table_bytes(table), f"{day_dir(day)}/part-00000002.parquet")
    return bases


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that over `exec`
    from the parent, whose year of keys would then be counted here."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError("no VmHWM in /proc/self/status")


def check_year(root: str, sheet: str, expect: int) -> None:
    """In a child process: the checks a new sheet's run makes, timed, with its peak RSS."""
    from assets.generation.ledger import history, spent_since
    from resources.storage import Storage

    baseline = peak_rss_mb()
    bases = Path(sheet).read_bytes()
    bases = [bases[i : i + 16] for i in range(0, len(bases), 16)]
    state = Storage(root)
    started = time.monotonic()
    found = history(state, bases, besides=DAY)
    took = time.monotonic() - started
    started = time.monotonic()
    month = spent_since(state, datetime(2026, 11, 1, tzinfo=UTC))
    month_s = time.monotonic() - started
    peak = peak_rss_mb()
    if len(found) != expect:
        raise SystemExit(f"the check found {len(found)} keys sent before, not {expect}")
    print(f"{took:.3f} {month_s:.3f} {len(month)} {baseline:.0f} {peak:.0f}")


def year(days: int, per_day: int) -> list[str]:
    """Figure 2: the ledger of a year, checked for a new sheet."""
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        root = Path(tmp) / "catalog"
        started = time.monotonic()
        bases = write_year(root, days, per_day, seed=7)
        written = time.monotonic() - started
        rng = random.Random(11)
        again = rng.sample(bases, per_day // 100)  # 1 % of the new sheet was sent before
        sheet = again + [rng.randbytes(16) for _ in range(per_day - len(again))]
        (Path(tmp) / "sheet.bin").write_bytes(b"".join(sheet))
        size = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        load = load_average()
        child = subprocess.run(
            [sys.executable, "-m", "bench.generation", "--check-year", str(root),
             str(Path(tmp) / "sheet.bin"), str(len(again))],
            cwd=PROJECT, capture_output=True, text=True,
        )  # fmt: skip
        if child.returncode != 0:
            raise BenchError(f"the year's check failed: {child.stdout}{child.stderr[-2000:]}")
        took, month_s, month_n, baseline, peak = child.stdout.split()
    keys = days * per_day
    return [
        f"ledger of {days} days x {per_day} = {keys:,} keys ({size / 1e6:.0f} MB of Parquet, "
        f"written in {written:.0f} s), a new sheet of {per_day} prompts (load {load})",
        *format_rows(
            ["figure", "value", "limit"],
            [
                ["history(): keys sent before, found", f"{len(again)}", ""],
                ["history(): seconds", took, f"{YEAR_LIMIT_S:g}"],
                ["spent_since(month): seconds", month_s, ""],
                ["spent_since(month): generations counted", month_n, ""],
                ["peak RSS of the checking process, MB", peak, f"{YEAR_LIMIT_MB:g}"],
                ["... of which imports (pyarrow, pandas), MB", baseline, ""],
            ],
        ),
        "verdict: "
        + ("met" if float(took) < YEAR_LIMIT_S and float(peak) < YEAR_LIMIT_MB else "MISSED"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompts", type=positive_int, default=10_000)
    parser.add_argument("--concurrency", type=positive_int, default=16)
    parser.add_argument("--latency", type=seconds, default=0.15)
    parser.add_argument("--year-days", type=positive_int, default=365)
    parser.add_argument("--per-day", type=positive_int, default=10_000)
    parser.add_argument("--skip-submission", action="store_true")
    parser.add_argument("--skip-year", action="store_true")
    parser.add_argument("--check-year", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check_year:
        root, sheet, expect = args.check_year
        check_year(root, sheet, int(expect))
        return
    print(machine())
    if not args.skip_submission:
        print("\n".join(submission(args.prompts, args.concurrency, args.latency)), flush=True)
    if not args.skip_year:
        print()
        print("\n".join(year(args.year_days, args.per_day)))


if __name__ == "__main__":
    run(main)
