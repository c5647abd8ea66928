"""The throughput benchmark at a tiny size, so it cannot rot: every peer, verified bytes, ratios.

No timing is asserted: on a shared 2-core machine any peer may win at ten runs.
"""

import hashlib
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from support import PROJECT


@pytest.fixture
def bench(monkeypatch):
    # `make bench` runs `python -m bench.client_throughput` from the repo root; bench/ is not
    # an installed package, so the test puts the root on the path the same way.
    monkeypatch.syspath_prepend(str(PROJECT))
    import bench.client_throughput as module

    return module


def test_every_peer_fetches_the_same_bytes_and_gets_a_ratio(bench, capsys) -> None:
    rows = bench.main(["--runs", "10", "--latency", "0"])

    assert [row.peer for row in rows] == list(bench.PEERS)
    assert all(row.runs == 10 and row.seconds > 0 for row in rows)
    # Same runs, same bytes: the verified sizes agree, and the rates follow from them.
    assert len({row.size_bytes for row in rows}) == 1 and rows[0].size_bytes > 0
    baseline = rows[0].runs_per_s
    for row in rows:
        assert row.ratio == pytest.approx(row.runs_per_s / baseline)
        assert row.mb_per_s == pytest.approx(row.size_bytes / 1e6 / row.seconds)
    assert rows[0].ratio == 1.0
    # Ten ids: two bulk calls of five for the batching peers, one call per id for the naive one.
    calls = {row.peer: row.api_calls for row in rows}
    assert calls == {
        bench.BASELINE: 2,
        "soundharvest (concurrency 16)": 2,
        "vendor SDK, sequential": 2,
        "naive httpx, one id at a time": 10,
    }

    out = capsys.readouterr().out
    assert re.search(r"\b\d+ cores\b", out.splitlines()[0])
    assert "10 ready runs" in out and "API latency 0 ms" in out
    for row in rows:
        line = next(line for line in out.splitlines() if line.startswith(row.peer))
        assert line.rstrip().endswith(f"{row.ratio:.2f}x")


def _liar(api, run_ids: Sequence[int], workdir: Path) -> dict[int, tuple[Path, str]]:
    """Fast and wrong: writes its own bytes, and reports their hash honestly."""
    files = {}
    for run_id in run_ids:
        dest = workdir / f"{run_id}.audio"
        dest.write_bytes(b"RIFF" + bytes(40))
        files[run_id] = (dest, hashlib.sha256(dest.read_bytes()).hexdigest())
    return files


@pytest.mark.parametrize("liar_first", [False, True], ids=["after-reference", "as-reference"])
def test_a_peer_with_wrong_bytes_cannot_win(bench, liar_first: bool) -> None:
    honest = ("naive httpx", bench.naive_httpx)
    liar = ("liar", _liar)
    peers = dict([liar, honest] if liar_first else [honest, liar])
    # As the reference it fails the spot check against the sandbox's own audio; after the
    # reference it fails the run-by-run comparison.
    expected = "differ from the sandbox's audio" if liar_first else "differ from naive httpx"
    with pytest.raises(bench.BenchError, match=expected):
        bench.measure(bench.ready_run_ids(3), 0.0, peers)


def test_a_peer_whose_file_is_not_what_it_claims_is_caught(bench, tmp_path: Path) -> None:
    (tmp_path / "1.audio").write_bytes(b"abc")
    claimed = {1: (tmp_path / "1.audio", hashlib.sha256(b"abd").hexdigest())}
    with pytest.raises(bench.BenchError, match="run 1's file does not have the sha256"):
        bench.verify("peer", [1], claimed)
    with pytest.raises(bench.BenchError, match=r"no file for 1 run\(s\), e.g. \[2\]"):
        bench.verify("peer", [1, 2], claimed)


def test_make_bench_entry_point_rejects_bad_sizes_clearly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.client_throughput", "--runs", "0"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--runs: must be at least 1, not 0" in done.stderr
    assert "Traceback" not in done.stderr
