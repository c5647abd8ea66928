"""What the benchmarks share: the sandbox in its own process, run ids, hashing, the machine."""

import argparse
import datetime
import hashlib
import os
import platform
import secrets
import select
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path

from sandbox import delivered_format, run_state

STARTUP_TIMEOUT_S = 30.0


class BenchError(Exception):
    """The benchmark cannot produce honest numbers (a peer failed or delivered wrong bytes)."""


@dataclass(frozen=True)
class Api:
    base_url: str  # http://HOST:PORT/apis
    api_key: str
    pid: int  # the sandbox process, for its CPU time

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/apis")


@contextmanager
def sandbox_process(*flags: str) -> Iterator[Api]:
    """`python -m sandbox [flags]` on a free loopback port, stopped (by its own pid) on exit.

    Its own process, so that client and server never share one GIL.
    """
    api_key = secrets.token_hex(16)
    command = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", "0"]
    command += ["--api-key", api_key, *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        # It prints one line, once it listens; a sandbox that hangs must not hang us.
        started, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT_S)
        line = process.stdout.readline().strip() if started else ""
        if not line.startswith("SANDBOX_URL="):
            raise BenchError(f"the sandbox did not start within {STARTUP_TIMEOUT_S:g} s")
        yield Api(line.removeprefix("SANDBOX_URL="), api_key, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ready_run_ids(n: int, *, wav_only: bool = False, start: int = 1) -> list[int]:
    """The first `n` run ids from `start` that the sandbox serves as ready (WAV/FLAC/MP3 mix,
    or only those it delivers as WAV)."""
    ids = (i for i in count(start) if run_state(i) == "ready")
    if wav_only:
        ids = (i for i in ids if delivered_format(i) == "WAV")
    return list(islice(ids, n))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"date {datetime.date.today().isoformat()}; {cores} cores ({cpu_model()}); "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}"
    )


def load_average() -> str:
    """The 1-minute load average, for the record beside each measurement."""
    return f"{os.getloadavg()[0]:.2f}"


def format_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, the others right."""
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [render(header), "  ".join("-" * w for w in widths), *map(render, rows)]


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def seconds(text: str) -> float:
    """argparse type: a latency between 0 and 5 seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 5:
        raise argparse.ArgumentTypeError(f"must be between 0 and 5 seconds, not {value}")
    return value


def run(main: Callable[[], object]) -> None:
    """A benchmark's entry point: a BenchError is one line on stderr and exit status 1."""
    try:
        main()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
