"""End to end: `dg launch` of a day against what a user would pick instead.

    make bench                                       # = python -m bench.end_to_end
    python -m bench.end_to_end --runs 400 --rss-files 20 --year-days 30   # a quicker look

One sandbox API in its own process (latency per API call and before each download's first
byte, runs of 0.5-1.5 MB), and in the same run:

- A: the official camb-sdk, sequential raw-bytes results as its docs show (a sample, scaled);
- B: a competent async script: SDK async bulk lookups of 5 ids, httpx streamed downloads, as
  many requests in flight as P, no validation;
- P: `dg launch` of the day through the CLI, process start included, fresh
  DAGSTER_HOME; S: the same for a day of one not-ready run (the fixed start cost);
- the rerun of P's complete day; peak RSS of P fetching files of 50 MB (its own sandbox);
- P_task: the same day named by task ids only (one status call per task before its run joins
  a bulk call), and its rerun, which must ask the status of no task
  (`--tasks-only`: S, P_task and its rerun alone);
- the year: a range rerun of 365 complete days (set up by an adopting first run).

Every figure's bytes are checked: the peers' files and P's stored WAVs against the sandbox's
own rendering (computed here), P's catalog against its files. Nothing is asserted on time:
the speed targets (bench/README.md) are printed beside the figures as PASS/FAIL.
"""

import argparse
import asyncio
import contextlib
import csv
import hashlib
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.dataset as ds
from camb.client import AsyncCambAI, CambAI

from bench.common import (
    Api,
    BenchError,
    format_rows,
    load_average,
    machine,
    positive_int,
    ready_run_ids,
    run,
    sandbox_process,
    seconds,
    sha256_file,
)
from resources.audio import inspect_audio
from sandbox import AudioSizes, audio_params, delivered_format, render_audio, run_state
from sandbox.rules import task_id_for

PROJECT = Path(__file__).resolve().parents[1]
SELECT = "run_manifest,sound_files,sound_catalog"
BULK = 5  # ids per bulk lookup, the API's limit
DAY = "2026-11-05"
YEAR_START = date(2025, 1, 1)
# The year's files are small: its rerun reads none of them, and its setup writes them all.
YEAR_AUDIO = AudioSizes(2_000, 8_000)
TIMEOUT_S = 120.0
POLL_S = 0.05
REFERENCE_SAMPLE = 4  # big files checked against the sandbox's rendering (all against the catalog)


@dataclass(frozen=True)
class Settings:
    runs: int = 2000
    concurrency: int = 16
    api_latency_s: float = 0.150
    download_latency_s: float = 0.050
    audio: AudioSizes = field(default_factory=lambda: AudioSizes(500_000, 1_500_000))
    wav_only: bool = True
    sdk_sample: int = 100
    rss_files: int = 100
    rss_mb: float = 50.0
    year_days: int = 365
    year_runs: int = 100
    profile_dir: Path | None = None  # P and the year's rerun under py-spy (times then skewed)
    year_only: bool = False  # the year's figures alone, without the peers
    tasks_only: bool = False  # S and the task-id day alone, without the peers
    project: Path = PROJECT  # the checkout whose .venv/bin/dg runs P and S

    def latency_flags(self) -> list[str]:
        latency, download = str(self.api_latency_s), str(self.download_latency_s)
        return ["--latency", latency, "--download-latency", download]

    @property
    def bound_s(self) -> float:
        """T*: every API call's and every download's latency, spread over the concurrency."""
        calls = math.ceil(self.runs / BULK) * self.api_latency_s
        return (calls + self.runs * self.download_latency_s) / self.concurrency

    @property
    def task_bound_s(self) -> float:
        """T*task: T* plus one status call per task, spread over the concurrency."""
        return self.bound_s + self.runs * self.api_latency_s / self.concurrency


@dataclass(frozen=True)
class Timed:
    """One measured thing, with what was going on around it."""

    seconds: float
    load: str  # 1-minute load average as it started
    sandbox_cpu_s: float  # CPU the sandbox process used meanwhile
    stats: dict[str, Any]  # the sandbox's counters for it
    cpu_s: float | None = None  # CPU of the measured process tree (the CLI's), user + sys
    peak_rss: int | None = None  # bytes, the CLI's whole process tree, polled
    note: str = ""


@dataclass
class Report:
    settings: Settings
    figures: dict[str, Timed] = field(default_factory=dict)

    def ratio(self, top: str, bottom: str) -> float:
        return self.figures[top].seconds / self.figures[bottom].seconds

    def lines(self) -> list[str]:
        s = self.settings
        rows = []
        for name, label in LABELS.items():
            if (t := self.figures.get(name)) is None:
                continue
            rows.append(
                (
                    label,
                    f"{t.seconds:.2f}",
                    "" if t.cpu_s is None else f"{t.cpu_s:.1f}",
                    f"{t.sandbox_cpu_s:.1f}",
                    "" if t.peak_rss is None else f"{t.peak_rss / 1e6:.0f}",
                    str(t.stats.get("api_requests", "")),
                    str(t.stats.get("downloads", "")),
                    str(t.stats.get("max_in_flight", "")),
                    t.load,
                    t.note,
                )
            )
        header = ("figure", "seconds", "CPU s", "sandbox CPU s", "peak RSS MB")
        header += ("API calls", "downloads", "max in flight", "load", "note")
        rows.append(("T*: latency bound", f"{s.bound_s:.2f}", *[""] * 8))
        if "P_task" in self.figures:
            rows.append(("T*task: latency bound", f"{s.task_bound_s:.2f}", *[""] * 8))
        return format_rows(header, rows)

    def targets(self) -> list[tuple[str, str, bool]]:
        """(what, figure, met) for every speed target that this run measured."""
        f, s, out = self.figures, self.settings, []
        if {"P", "B"} <= f.keys():
            out.append(("P / B <= 1.0", f"{self.ratio('P', 'B'):.2f}", self.ratio("P", "B") <= 1))
        if {"A", "P"} <= f.keys():
            out.append(("A / P >= 20", f"{self.ratio('A', 'P'):.1f}", self.ratio("A", "P") >= 20))
        if "S" in f:
            out.append(("S <= 3 s", f"{f['S'].seconds:.2f} s", f["S"].seconds <= 3))
        if {"P", "S"} <= f.keys():
            work = f["P"].seconds - f["S"].seconds
            figure = f"{work:.2f} s vs T* {s.bound_s:.2f} s"
            out.append(("P - S <= 1.3 T*", figure, work <= 1.3 * s.bound_s))
        if {"P_task", "S"} <= f.keys():
            work = f["P_task"].seconds - f["S"].seconds
            figure = f"{work:.2f} s vs T*task {s.task_bound_s:.2f} s"
            out.append(("P_task - S <= 1.3 T*task", figure, work <= 1.3 * s.task_bound_s))
        if "rerun_task" in f:
            calls = f["rerun_task"].stats["status_requests"]
            downloads = f["rerun_task"].stats["downloads"]
            figure = f"{calls} status calls, {downloads} downloads"
            out.append(("task rerun: 0 status calls", figure, not calls and not downloads))
        for name in ("B", "P", "P_task", "rss"):
            if name in f:
                peak = f[name].stats["max_in_flight"]
                what = f"in flight ({name}) <= {s.concurrency}"
                out.append((what, str(peak), peak <= s.concurrency))
        if "rss" in f and f["rss"].peak_rss is not None:
            mb = f["rss"].peak_rss / 1e6
            what = f"peak RSS, {s.rss_files} files of {s.rss_mb:g} MB < 300 MB"
            out.append((what, f"{mb:.0f} MB", mb < 300))
        if {"rerun", "P", "S"} <= f.keys():
            # Work is CPU: on a shared machine the wall-clock difference is mostly noise.
            rerun, start, first = f["rerun"].cpu_s or 0, f["S"].cpu_s or 0, f["P"].cpu_s or 0
            share = (rerun - start) / max(first - start, 1e-9)
            wall = f["rerun"].seconds - f["S"].seconds
            downloads = f["rerun"].stats["downloads"]
            figure = (
                f"{downloads} downloads, CPU {rerun - start:+.2f} s beyond S = {share:.1%} "
                f"of P's (wall {wall:+.2f} s)"
            )
            out.append(
                ("rerun: 0 downloads, work beyond S < 10%", figure, not downloads and share < 0.1)
            )
        if "year" in f:
            y = f["year"]
            figure = f"{y.seconds:.1f} s, {y.stats['downloads']} downloads"
            out.append(
                (
                    "year rerun < 30 s, 0 downloads",
                    figure,
                    y.seconds < 30 and not y.stats["downloads"],
                )
            )
        return out

    def render(self) -> str:
        s = self.settings
        lines = [
            machine(),
            f"N = {s.runs} ready runs ({'WAV' if s.wav_only else 'WAV/FLAC/MP3 mix'}, "
            f"{s.audio.min_bytes / 1e6:g}-{s.audio.max_bytes / 1e6:g} MB decoded), concurrency "
            f"{s.concurrency}; sandbox in its own process: {s.api_latency_s * 1000:g} ms per "
            f"API call, {s.download_latency_s * 1000:g} ms before each download's first byte",
            "",
            *self.lines(),
            "",
        ]
        lines += format_rows(
            ("speed target", "figure", "met"),
            [(what, figure, "PASS" if met else "FAIL") for what, figure, met in self.targets()],
        )
        return "\n".join(lines)


LABELS = {
    "A": "A: camb-sdk sequential (scaled)",
    "B": "B: async script (SDK + httpx)",
    "P": "P: dg launch",
    "S": "S: same, one not-ready run",
    "rerun": "rerun of P's day",
    "P_task": "P_task: dg launch, task ids",
    "rerun_task": "rerun of P_task's day",
    "rss": "P on big files (RSS)",
    "year_setup": "year: first run (adopts)",
    "year": "year: rerun",
}


# -- the peers A and B: each fetches `run_ids` into `workdir` -----------------------------


def vendor_sdk_sequential(api: Api, run_ids: Sequence[int], workdir: Path) -> dict[int, Path]:
    """The camb-sdk docs' way: `get_text_to_audio_result(run_id)` streams the raw bytes."""
    files = {}
    with httpx.Client(timeout=TIMEOUT_S) as http:
        tta = CambAI(api_key=api.api_key, base_url=api.base_url, httpx_client=http).text_to_audio
        for run_id in run_ids:
            files[run_id] = workdir / f"{run_id}.audio"
            with files[run_id].open("wb") as out:
                for chunk in tta.get_text_to_audio_result(run_id):
                    out.write(chunk)
    return files


def async_script(
    api: Api, run_ids: Sequence[int], workdir: Path, *, concurrency: int
) -> dict[int, Path]:
    """What a competent user writes by hand: SDK async bulk lookups, httpx streamed downloads,
    at most `concurrency` requests in flight; no validation, hashing or atomic publish."""
    return asyncio.run(_async_script(api, run_ids, workdir, concurrency))


async def _async_script(
    api: Api, run_ids: Sequence[int], workdir: Path, concurrency: int
) -> dict[int, Path]:
    files: dict[int, Path] = {}
    slots = asyncio.Semaphore(concurrency)
    batches = iter([run_ids[i : i + BULK] for i in range(0, len(run_ids), BULK)])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as api_http,
        httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as http,
    ):
        tta = AsyncCambAI(
            api_key=api.api_key, base_url=api.base_url, httpx_client=api_http
        ).text_to_audio

        async def download(run_id: int, url: str) -> None:
            dest = workdir / f"{run_id}.audio"
            async with slots, http.stream("GET", url) as response:
                response.raise_for_status()
                with dest.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
            files[run_id] = dest

        async def worker() -> None:
            for batch in batches:  # the workers share one iterator
                async with slots:
                    results = await tta.get_text_to_sound_results(run_ids=batch)
                await asyncio.gather(*(download(i, results[str(i)].output_url) for i in batch))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return files


# -- P, S and the rest: the Dagster CLI as a user runs it ---------------------------------


@dataclass(frozen=True)
class CliRun:
    seconds: float
    cpu_s: float
    peak_rss: int


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
    return total


class Cli:
    """A fresh project: manifests, audio and catalog roots, and a fresh DAGSTER_HOME."""

    def __init__(self, api: Api, root: Path, s: Settings, profile: bool = True) -> None:
        self.root = root
        self.project = s.project
        home = root / "dagster_home"
        home.mkdir(parents=True)
        shutil.copyfile(PROJECT / "pipelines" / "dagster.yaml", home / "dagster.yaml")
        self.env = os.environ | {
            "CAMB_API_KEY": api.api_key,
            "CAMB_API_BASE_URL": api.base_url,
            "CAMB_DOWNLOAD_ALLOW_HOSTS": "127.0.0.1",
            "CAMB_MAX_CONCURRENCY": str(s.concurrency),
            "SOUNDHARVEST_MANIFEST_ROOT": str(root / "manifests"),
            "SOUNDHARVEST_AUDIO_ROOT": str(root / "audio"),
            "SOUNDHARVEST_CATALOG_ROOT": str(root / "catalog"),
            "DAGSTER_HOME": str(home),
        }
        self.profile_dir = s.profile_dir if profile else None
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
        self._runs = 0

    def write_manifest(self, day: str, run_ids: Sequence[int]) -> None:
        path = self.root / "manifests" / f"{day}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([["run_id"], *([i] for i in run_ids)])

    def write_task_manifest(self, day: str, run_ids: Sequence[int]) -> None:
        """The runs named by task ids only, ones the sandbox resolves to them."""
        path = self.root / "manifests" / f"{day}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([["task_id"], *([task_id_for(i)] for i in run_ids)])

    def materialize(self, *partition: str, profile: str | None = None) -> CliRun:
        """`dg launch` of the three assets, timed from process start to exit;
        the process tree's RSS is polled meanwhile."""
        dg = self.project / ".venv" / "bin" / "dg"
        command = [str(dg), "launch", "--assets", SELECT, *partition]
        if profile and self.profile_dir is not None:
            out = self.profile_dir / f"{profile}.speedscope.json"
            # py-spy wants the interpreter itself, not the console script.
            spy = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--rate",
                "100",
                "--idle",
            ]
            spy += ["--format", "speedscope", "--subprocesses", "-o", str(out), "--"]
            command = [*spy, str(dg.with_name("python")), str(dg), *command[1:]]
        self._runs += 1
        log = self.root / f"cli-{self._runs}.log"
        with log.open("w") as out_file:
            started = time.perf_counter()
            process = subprocess.Popen(
                command, env=self.env, cwd=self.project, stdout=out_file, stderr=subprocess.STDOUT
            )
            watched, peak = psutil.Process(process.pid), 0
            # wait4, not Popen.wait: its rusage gives the CPU the whole tree used.
            while not (done := os.wait4(process.pid, os.WNOHANG))[0]:
                peak = max(peak, _tree_rss(watched))
                time.sleep(POLL_S)
            seconds = time.perf_counter() - started
        _, status, usage = done
        process.returncode = os.waitstatus_to_exitcode(status)
        if self.profile_dir is not None:  # kept beside the profiles: step times, events
            shutil.copyfile(log, self.profile_dir / f"{self.root.name}-cli-{self._runs}.log")
        if process.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-25:])
            raise BenchError(f"{' '.join(command[1:6])} ... failed ({log}):\n{tail}")
        return CliRun(seconds, usage.ru_utime + usage.ru_stime, peak)


# -- checking what each one delivered -----------------------------------------------------


class Reference:
    """sha256 of what the sandbox serves for a run, rendered here independently."""

    def __init__(self, sizes: AudioSizes) -> None:
        self.sizes = sizes
        self._known: dict[int, str] = {}

    def __call__(self, run_id: int) -> str:
        if run_id not in self._known:
            self._known[run_id] = hashlib.sha256(render_audio(run_id, self.sizes)).hexdigest()
        return self._known[run_id]


def verify_files(peer: str, run_ids: Sequence[int], files: dict[int, Path], ref: Reference) -> int:
    """Every run's file holds the sandbox's bytes; returns the bytes in all."""
    if missing := sorted(set(run_ids) - files.keys()):
        raise BenchError(f"{peer}: no file for {len(missing)} run(s), e.g. {missing[:5]}")
    if wrong := [i for i in run_ids if sha256_file(files[i]) != ref(i)]:
        raise BenchError(f"{peer}: {len(wrong)} run(s) differ from the sandbox's, e.g. {wrong[:5]}")
    return sum(files[i].stat().st_size for i in run_ids)


def read_catalog(root: Path) -> Any:
    return ds.dataset(root / "catalog" / "sound_catalog", partitioning="hive").to_table()


def verify_catalog(
    what: str,
    root: Path,
    days: dict[str, Sequence[int]],
    status: str,
    ref: Reference | None = None,
    reference_sample: int | None = None,
) -> None:
    """One row per run with `status`; `ok` rows' files match the catalog's size and sha256,
    and a WAV-delivered run's stored bytes are the sandbox's (non-WAV runs are transcoded: their
    header must give the rules' rate and channels). `reference_sample` limits the runs rendered
    for that comparison (big files), evenly spaced."""
    rows = read_catalog(root).to_pylist()
    got = {(str(r["date"]), r["run_id"]) for r in rows}
    want = {(day, i) for day, ids in days.items() for i in ids}
    if got != want or len(rows) != len(want):
        raise BenchError(f"{what}: {len(rows)} catalog rows for {len(want)} runs, or other runs")
    if bad := [r["run_id"] for r in rows if r["status"] != status]:
        raise BenchError(f"{what}: {len(bad)} run(s) not {status}, e.g. {bad[:5]}")
    if status != "ok":
        return
    step = max(1, len(rows) // reference_sample) if reference_sample else 1
    for n, row in enumerate(sorted(rows, key=lambda r: r["run_id"])):
        path, run_id = Path(row["uri"]), row["run_id"]
        if (path.stat().st_size, sha256_file(path)) != (row["size_bytes"], row["sha256"]):
            raise BenchError(f"{what}: run {run_id}'s file is not what the catalog says")
        if ref is None or n % step:
            continue
        if delivered_format(run_id) == "WAV":
            if row["sha256"] != ref(run_id):
                raise BenchError(f"{what}: run {run_id}'s WAV differs from the sandbox's")
        else:
            info, params = inspect_audio(path), audio_params(run_id, ref.sizes)
            if (info.sample_rate, info.channels) != (params.sample_rate, params.channels):
                raise BenchError(f"{what}: run {run_id}'s WAV does not have its rate/channels")


# -- measuring ----------------------------------------------------------------------------


class Sandbox:
    """The control plane of a sandbox process: its counters and its CPU time."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.process = psutil.Process(api.pid)
        self.control = httpx.Client(base_url=api.origin, timeout=30)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.control.close()

    @contextmanager
    def measuring(self) -> Iterator[dict[str, Any]]:
        """Yields a dict that holds, afterwards, `stats`, `sandbox_cpu_s` and `load`."""
        self.control.post("/_sandbox/reset").raise_for_status()
        out: dict[str, Any] = {"load": load_average()}
        before = sum(self.process.cpu_times()[:2])
        yield out
        out["sandbox_cpu_s"] = sum(self.process.cpu_times()[:2]) - before
        out["stats"] = self.control.get("/_sandbox/stats").raise_for_status().json()


def _timed_peer(
    sandbox: Sandbox, fetch: Callable[[Path], dict[int, Path]], check: Callable
) -> Timed:
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        with sandbox.measuring() as m:
            cpu, started = _own_cpu_s(), time.perf_counter()
            files = fetch(Path(tmp))
            elapsed, cpu = time.perf_counter() - started, _own_cpu_s() - cpu
        check(files)
    return Timed(elapsed, m["load"], m["sandbox_cpu_s"], m["stats"], cpu)


def _own_cpu_s() -> float:
    """CPU this process (the in-process peers A and B) has used, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_cli(sandbox: Sandbox, run: Callable[[], CliRun], note: str = "") -> Timed:
    with sandbox.measuring() as m:
        done = run()
    return Timed(
        done.seconds, m["load"], m["sandbox_cpu_s"], m["stats"], done.cpu_s, done.peak_rss, note
    )


def measure(s: Settings, work: Path, report: Report, log: Callable[[str], None]) -> Report:
    ids = ready_run_ids(s.runs, wav_only=s.wav_only)
    ref = Reference(s.audio)
    flags = ["--audio-mb", f"{s.audio.min_bytes / 1e6}-{s.audio.max_bytes / 1e6}"]
    if s.year_only:
        with sandbox_process(*flags, *s.latency_flags()) as api, Sandbox(api) as sandbox:
            log(f"year: {s.year_days} days of {s.year_runs} runs")
            measure_year(s, sandbox, work / "year", report)
        return report
    if s.tasks_only:
        with sandbox_process(*flags, *s.latency_flags()) as api, Sandbox(api) as sandbox:
            measure_start(s, sandbox, work, report, log)
            measure_tasks(s, sandbox, ids, work / "tasks", report, ref, log)
        return report
    with sandbox_process(*flags, *s.latency_flags()) as api, Sandbox(api) as sandbox:
        if not s.wav_only:  # the sandbox encodes each MP3 template once: not on a peer's clock
            mp3 = [i for i in ids if delivered_format(i) == "MP3"]
            with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
                async_script(api, mp3, Path(tmp), concurrency=s.concurrency)

        sample = ids[: s.sdk_sample]
        log(f"A: camb-sdk, {len(sample)} runs one after the other")
        a = _timed_peer(
            sandbox,
            lambda tmp: vendor_sdk_sequential(api, sample, tmp),
            lambda files: verify_files("A", sample, files, ref),
        )
        scale = len(ids) / len(sample)
        report.figures["A"] = replace(
            a,
            seconds=a.seconds * scale,
            cpu_s=a.cpu_s and a.cpu_s * scale,
            sandbox_cpu_s=a.sandbox_cpu_s * scale,
            note=f"{len(sample)} runs x {scale:g}",
        )

        log(f"B: async script, {len(ids)} runs")
        report.figures["B"] = _timed_peer(
            sandbox,
            lambda tmp: async_script(api, ids, tmp, concurrency=s.concurrency),
            lambda files: verify_files("B", ids, files, ref),
        )

        log(f"P: dg launch, {len(ids)} runs")
        p_cli = Cli(api, work / "p", s)
        p_cli.write_manifest(DAY, ids)
        report.figures["P"] = _timed_cli(
            sandbox, lambda: p_cli.materialize("--partition", DAY, profile="P")
        )
        verify_catalog("P", p_cli.root, {DAY: ids}, "ok", ref)

        measure_start(s, sandbox, work, report, log)

        log("rerun of P's day")
        report.figures["rerun"] = _timed_cli(sandbox, lambda: p_cli.materialize("--partition", DAY))
        verify_catalog("rerun", p_cli.root, {DAY: ids}, "ok")
        shutil.rmtree(p_cli.root)

        measure_tasks(s, sandbox, ids, work / "tasks", report, ref, log)

        log(f"year: {s.year_days} days of {s.year_runs} runs")
        measure_year(s, sandbox, work / "year", report)

    log(f"RSS: {s.rss_files} files of {s.rss_mb:g} MB")
    big = AudioSizes.parse_mb(f"{s.rss_mb:g}")
    rss_sandbox = sandbox_process("--audio-mb", f"{s.rss_mb:g}", *s.latency_flags())
    with rss_sandbox as api, Sandbox(api) as sandbox:
        big_ids = ready_run_ids(s.rss_files, wav_only=True)
        cli = Cli(api, work / "rss", s, profile=False)
        cli.write_manifest(DAY, big_ids)
        report.figures["rss"] = _timed_cli(sandbox, lambda: cli.materialize("--partition", DAY))
        verify_catalog("RSS", cli.root, {DAY: big_ids}, "ok", Reference(big), REFERENCE_SAMPLE)
        shutil.rmtree(cli.root)
    return report


def measure_start(
    s: Settings, sandbox: Sandbox, work: Path, report: Report, log: Callable[[str], None]
) -> None:
    """S: the fixed cost of a materialization, a day of one run that is not ready."""
    log("S: dg launch, one not-ready run")
    s_cli = Cli(sandbox.api, work / "s", s, profile=False)
    pending = next(i for i in range(1, 1000) if run_state(i) == "pending")
    s_cli.write_manifest(DAY, [pending])
    report.figures["S"] = _timed_cli(sandbox, lambda: s_cli.materialize("--partition", DAY))
    verify_catalog("S", s_cli.root, {DAY: [pending]}, "pending")


def measure_tasks(
    s: Settings,
    sandbox: Sandbox,
    ids: Sequence[int],
    root: Path,
    report: Report,
    ref: Reference,
    log: Callable[[str], None],
) -> None:
    """P_task: P's day named by task ids only; then its rerun, which asks about no task."""
    log(f"P_task: dg launch, {len(ids)} task ids")
    cli = Cli(sandbox.api, root, s)
    cli.write_task_manifest(DAY, ids)
    report.figures["P_task"] = _timed_cli(
        sandbox, lambda: cli.materialize("--partition", DAY, profile="P_task")
    )
    verify_catalog("P_task", root, {DAY: ids}, "ok", ref, REFERENCE_SAMPLE)
    log("rerun of P_task's day")
    report.figures["rerun_task"] = _timed_cli(sandbox, lambda: cli.materialize("--partition", DAY))
    verify_catalog("rerun_task", root, {DAY: ids}, "ok")
    shutil.rmtree(root)


def measure_year(s: Settings, sandbox: Sandbox, root: Path, report: Report) -> None:
    """Complete days, set up the way a crash recovery would find them: manifests and WAVs at
    their final paths, adopted (hashed, no download) by a first range run; then the rerun."""
    cli = Cli(sandbox.api, root, s)
    ids = iter(ready_run_ids(s.year_days * s.year_runs, wav_only=True))
    days = {}
    for n in range(s.year_days):
        day = (YEAR_START + timedelta(days=n)).isoformat()
        days[day] = [next(ids) for _ in range(s.year_runs)]
        cli.write_manifest(day, days[day])
        (root / "audio" / day).mkdir(parents=True)
        for run_id in days[day]:
            (root / "audio" / day / f"{run_id}.wav").write_bytes(render_audio(run_id, YEAR_AUDIO))
    span = ["--partition-range", f"{min(days)}...{max(days)}"]
    report.figures["year_setup"] = _timed_cli(sandbox, lambda: cli.materialize(*span))
    verify_catalog("year setup", root, days, "ok", Reference(YEAR_AUDIO), REFERENCE_SAMPLE)
    report.figures["year"] = _timed_cli(sandbox, lambda: cli.materialize(*span, profile="year"))
    verify_catalog("year", root, days, "ok")
    shutil.rmtree(root)


def _parser() -> argparse.ArgumentParser:
    d = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end",
        description="soundharvest's daily materialization against the peers a user would pick "
        "instead, with the speed targets (see bench/README.md).",
    )
    add = parser.add_argument
    add("--runs", type=positive_int, default=d.runs, help="N, ready runs in P's day")
    add("--concurrency", type=positive_int, default=d.concurrency, help="requests in flight")
    add("--api-latency", type=seconds, default=d.api_latency_s, help="seconds per API call")
    add(
        "--download-latency",
        type=seconds,
        default=d.download_latency_s,
        help="seconds before a download's first byte",
    )
    add(
        "--audio-mb",
        type=AudioSizes.parse_mb,
        default=d.audio,
        help="decoded size of each run, MB (a range)",
    )
    add(
        "--formats",
        choices=("wav", "mix"),
        default="wav",
        help="WAV runs only, or the sandbox's WAV/FLAC/MP3 mix",
    )
    add(
        "--sdk-sample", type=positive_int, default=d.sdk_sample, help="runs A fetches (scaled to N)"
    )
    add("--rss-files", type=positive_int, default=d.rss_files, help="big files for the RSS figure")
    add("--rss-mb", type=float, default=d.rss_mb, help="their size, MB")
    add("--year-days", type=positive_int, default=d.year_days, help="days of the year rerun")
    add("--year-runs", type=positive_int, default=d.year_runs, help="runs per day of the year")
    add("--year-only", action="store_true", help="measure the year's setup and rerun alone")
    add("--tasks-only", action="store_true", help="measure S and the task-id day alone")
    add(
        "--profile",
        type=Path,
        default=None,
        help="record P and the year rerun with py-spy here (and keep the CLI logs)",
    )
    add(
        "--project",
        type=Path,
        default=PROJECT,
        help="checkout whose .venv runs the CLI (e.g. main's, for before-figures)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> Report:
    args = _parser().parse_args(argv)
    settings = Settings(
        runs=args.runs,
        concurrency=args.concurrency,
        api_latency_s=args.api_latency,
        download_latency_s=args.download_latency,
        audio=args.audio_mb,
        wav_only=args.formats == "wav",
        sdk_sample=min(args.sdk_sample, args.runs),
        rss_files=args.rss_files,
        rss_mb=args.rss_mb,
        year_days=args.year_days,
        year_runs=args.year_runs,
        profile_dir=args.profile,
        year_only=args.year_only,
        tasks_only=args.tasks_only,
        project=args.project.resolve(),
    )
    report = Report(settings)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as work:
        measure(
            settings,
            Path(work),
            report,
            lambda text: print(f"... {text}", file=sys.stderr, flush=True),
        )
    print(report.render(), flush=True)
    return report


if __name__ == "__main__":
    run(main)
