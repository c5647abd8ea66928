"""Harvest throughput: soundharvest's client against what a user would write by hand.

    python -m bench.client_throughput [--runs 600] [--latency 0.05]

Every peer fetches the same N ready runs from the sandbox API into its own temporary
directory. The sandbox runs in a subprocess (client and server must not share one GIL) and
adds `--latency` seconds to every API answer, to model a remote API; downloads get none.
After each peer, untimed, the files on disk are hashed again: every peer must deliver every
run with the bytes the others delivered (and the sandbox's own rendering, for a sample),
so a fast but wrong peer cannot win. Prints the machine context and one row per peer; the
ratio is the peer's runs/s over soundharvest's at its default concurrency.
"""

import argparse
import asyncio
import hashlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from camb.client import CambAI

from bench.common import (
    Api,
    BenchError,
    format_rows,
    machine,
    positive_int,
    ready_run_ids,
    run,
    sandbox_process,
    seconds,
    sha256_file,
)
from resources.camb import BULK_LIMIT, CambClient, ClientSettings, Fetched
from sandbox import delivered_format, render_audio

DEFAULT_RUNS = 600
DEFAULT_LATENCY_S = 0.05
SPOT_CHECKS = 8  # runs whose bytes are also checked against the sandbox's own rendering
TIMEOUT_S = 60.0
_CHUNK = 64 * 1024

# run id -> (file the peer wrote, sha256 the peer computed while writing it)
Files = dict[int, tuple[Path, str]]


@dataclass(frozen=True)
class Row:
    peer: str
    runs: int
    seconds: float
    size_bytes: int
    api_calls: int
    ratio: float  # runs/s over the first peer's (soundharvest at its default concurrency)

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.size_bytes / 1e6 / self.seconds


# -- the peers: each fetches `run_ids` into `workdir` -------------------------------------


def soundharvest(api: Api, run_ids: Sequence[int], workdir: Path, *, concurrency: int) -> Files:
    """The project's client: batched bulk calls and downloads overlapped, `concurrency` wide."""
    settings = ClientSettings(
        api_key=api.api_key,
        base_url=api.base_url,
        max_concurrency=concurrency,
        download_allow_hosts=frozenset({"127.0.0.1"}),
    )

    async def collect() -> Files:
        files: Files = {}
        async with CambClient(settings) as client:
            async for outcome in client.harvest(run_ids, workdir):
                if not isinstance(outcome, Fetched):
                    raise BenchError(f"run {outcome.run_id} came back {outcome.status}")
                files[outcome.run_id] = (outcome.path, outcome.sha256)
        return files

    return asyncio.run(collect())


def _stream_to_file(response: httpx.Response, dest: Path) -> str:
    response.raise_for_status()
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for chunk in response.iter_bytes(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def vendor_sdk(api: Api, run_ids: Sequence[int], workdir: Path) -> Files:
    """The official camb-sdk, one bulk call of five ids at a time, then each URL in turn."""
    files: Files = {}
    with httpx.Client(timeout=TIMEOUT_S) as api_http, httpx.Client(timeout=TIMEOUT_S) as http:
        tta = CambAI(api_key=api.api_key, base_url=api.base_url, httpx_client=api_http)
        for start in range(0, len(run_ids), BULK_LIMIT):
            batch = run_ids[start : start + BULK_LIMIT]
            results = tta.text_to_audio.get_text_to_sound_results(run_ids=batch)
            for run_id in batch:
                dest = workdir / f"{run_id}.audio"
                with http.stream("GET", results[str(run_id)].output_url) as response:
                    files[run_id] = (dest, _stream_to_file(response, dest))
    return files


def naive_httpx(api: Api, run_ids: Sequence[int], workdir: Path) -> Files:
    """The raw-bytes endpoint, one run id at a time over one keep-alive connection."""
    files: Files = {}
    headers = {"x-api-key": api.api_key}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=TIMEOUT_S) as http:
        for run_id in run_ids:
            dest = workdir / f"{run_id}.audio"
            url = f"/text-to-sound-result/{run_id}"
            with http.stream("GET", url, params={"output_type": "raw_bytes"}) as response:
                files[run_id] = (dest, _stream_to_file(response, dest))
    return files


Peer = Callable[[Api, Sequence[int], Path], Files]

BASELINE = "soundharvest (concurrency 8)"
PEERS: dict[str, Peer] = {  # the first is the baseline of the ratios
    BASELINE: partial(soundharvest, concurrency=8),
    "soundharvest (concurrency 16)": partial(soundharvest, concurrency=16),
    "vendor SDK, sequential": vendor_sdk,
    "naive httpx, one id at a time": naive_httpx,
}


# -- measuring and checking ---------------------------------------------------------------


def _sandbox_api_calls(control: httpx.Client) -> int:
    """API requests since the last reset, and a reset for the next peer."""
    calls = control.get("/_sandbox/stats").raise_for_status().json()["api_requests"]
    control.post("/_sandbox/reset").raise_for_status()
    return calls


def verify(peer: str, run_ids: Sequence[int], files: Files) -> dict[int, str]:
    """run id -> sha256 of the file on disk, after checking the peer's own claims."""
    if missing := sorted(set(run_ids) - files.keys()):
        raise BenchError(f"{peer}: no file for {len(missing)} run(s), e.g. {missing[:5]}")
    hashes = {}
    for run_id in run_ids:
        path, claimed = files[run_id]
        hashes[run_id] = sha256_file(path)
        if hashes[run_id] != claimed:
            raise BenchError(f"{peer}: run {run_id}'s file does not have the sha256 it reported")
    return hashes


def _spot_check(peer: str, hashes: dict[int, str]) -> None:
    """The sandbox's bytes, rendered here independently, for a few evenly spaced runs."""
    ids = sorted(hashes)
    for run_id in ids[:: max(1, len(ids) // SPOT_CHECKS)][:SPOT_CHECKS]:
        if hashlib.sha256(render_audio(run_id)).hexdigest() != hashes[run_id]:
            raise BenchError(f"{peer}: run {run_id}'s bytes differ from the sandbox's audio")


def _mismatches(reference: dict[int, str], hashes: dict[int, str]) -> list[int]:
    return sorted(run_id for run_id, sha in reference.items() if hashes.get(run_id) != sha)


def _warm_up(api: Api, run_ids: Sequence[int]) -> None:
    """Fetch the MP3 runs once, untimed: the sandbox encodes each MP3 template on first use
    (~30 ms each), a cost that would otherwise land on whichever peer runs first."""
    mp3_ids = [i for i in run_ids if delivered_format(i) == "MP3"]
    if mp3_ids:
        with tempfile.TemporaryDirectory(prefix="bench-warmup-") as workdir:
            soundharvest(api, mp3_ids, Path(workdir), concurrency=8)


def measure(
    run_ids: Sequence[int], latency_s: float, peers: Mapping[str, Peer] = PEERS
) -> list[Row]:
    """Run every peer once against one sandbox; each peer's files are verified, then deleted.

    The first peer is the reference: its bytes are spot-checked against the sandbox's own
    rendering, every later peer must match it run for run, and it is the ratios' baseline.
    """
    measured: list[tuple[str, float, int, int]] = []
    reference: tuple[str, dict[int, str]] | None = None  # the first peer and its hashes
    sandbox = sandbox_process("--latency", str(latency_s))
    with sandbox as api, httpx.Client(base_url=api.origin) as control:
        _warm_up(api, run_ids)
        _sandbox_api_calls(control)
        for peer, fetch in peers.items():
            with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
                started = time.perf_counter()
                files = fetch(api, run_ids, Path(workdir))
                seconds = time.perf_counter() - started
                hashes = verify(peer, run_ids, files)
                size = sum(path.stat().st_size for path, _ in files.values())
            if reference is None:
                _spot_check(peer, hashes)
                reference = (peer, hashes)
            elif wrong := _mismatches(reference[1], hashes):
                raise BenchError(
                    f"{peer}: {len(wrong)} run(s) differ from {reference[0]}, e.g. {wrong[:5]}"
                )
            measured.append((peer, seconds, size, _sandbox_api_calls(control)))
    baseline_rate = len(run_ids) / measured[0][1]
    return [
        Row(peer, len(run_ids), seconds, size, calls, len(run_ids) / seconds / baseline_rate)
        for peer, seconds, size, calls in measured
    ]


# -- reporting ----------------------------------------------------------------------------


def machine_context(runs: int, latency_s: float) -> str:
    return (
        f"{machine()}\n{runs} ready runs (WAV/FLAC/MP3 mix); sandbox in a subprocess on "
        f"loopback, API latency {latency_s * 1000:g} ms per call, downloads without latency"
    )


def format_table(rows: Sequence[Row]) -> str:
    header = ("peer", "runs", "seconds", "runs/s", "MB/s", "API calls", "ratio")
    lines = [
        (
            row.peer,
            str(row.runs),
            f"{row.seconds:.2f}",
            f"{row.runs_per_s:.1f}",
            f"{row.mb_per_s:.1f}",
            str(row.api_calls),
            f"{row.ratio:.2f}x",
        )
        for row in rows
    ]
    total_mb = rows[0].size_bytes / 1e6 if rows else 0.0
    baseline = rows[0].peer if rows else BASELINE
    footer = f"{total_mb:.1f} MB per peer (1 MB = 10^6 bytes); ratio = runs/s over {baseline}"
    return "\n".join([*format_rows(header, lines), footer])


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.client_throughput",
        description="Compare soundharvest's harvest throughput with the vendor SDK and "
        "naive httpx, against the sandbox API in a subprocess.",
    )
    parser.add_argument("--runs", type=positive_int, default=DEFAULT_RUNS, help="ready runs")
    parser.add_argument(
        "--latency", type=seconds, default=DEFAULT_LATENCY_S, help="seconds per API answer"
    )
    args = parser.parse_args(argv)
    print(machine_context(args.runs, args.latency), flush=True)
    rows = measure(ready_run_ids(args.runs), args.latency)
    print(format_table(rows), flush=True)
    return rows


if __name__ == "__main__":
    run(main)
