"""The end-to-end benchmark at a tiny size, so it cannot rot: every figure measured and checked.

Nothing here asserts a time: on a shared 2-core machine any figure may come out either way.
What is asserted is what makes the figures honest: each peer's bytes were verified (the
harness raises otherwise), the catalog rows are there, the rerun and the year made no
download, and the report prints every figure with its target.
"""

import re
from pathlib import Path

import pytest

from support import PROJECT

pytestmark = pytest.mark.slow  # seven Dagster CLI runs

TINY = [
    "--runs", "12", "--sdk-sample", "3", "--concurrency", "4", "--api-latency", "0.01",
    "--download-latency", "0.01", "--audio-mb", "0.01-0.03", "--rss-files", "3",
    "--rss-mb", "0.5", "--year-days", "2", "--year-runs", "3",
]  # fmt: skip


@pytest.fixture
def bench(monkeypatch):
    # `make bench` runs `python -m bench.end_to_end` from the repo root; bench/ is not an
    # installed package, so the test puts the root on the path the same way.
    monkeypatch.syspath_prepend(str(PROJECT))
    import bench.end_to_end as module

    return module


def test_every_figure_is_measured_on_verified_bytes_and_printed_with_its_target(
    bench, capsys
) -> None:
    report = bench.main(TINY)

    figures = report.figures
    assert set(figures) == {
        "A", "B", "P", "S", "rerun", "P_task", "rerun_task", "rss", "year_setup", "year"
    }  # fmt: skip
    assert all(f.seconds > 0 for f in figures.values())
    # A fetched its 3-run sample, one raw-bytes call each, and was scaled to the 12 runs.
    assert (figures["A"].stats["single_requests"], figures["A"].note) == (3, "3 runs x 4")
    # B and P: 12 downloads behind 3 bulk lookups, never more than 4 requests at once.
    for name in ("B", "P"):
        stats = figures[name].stats
        assert (stats["bulk_requests"], stats["downloads"]) == (3, 12), name
        assert 1 <= stats["max_in_flight"] <= 4, name
    assert figures["S"].stats["api_requests"] == 1  # its one run, not ready
    assert figures["rerun"].stats["downloads"] == figures["rerun"].stats["api_requests"] == 0
    # P_task: one status call per task, the same bulk lookups; its rerun asks nothing.
    stats = figures["P_task"].stats
    assert (stats["status_requests"], stats["downloads"]) == (12, 12)
    assert 1 <= stats["max_in_flight"] <= 4
    assert figures["rerun_task"].stats["api_requests"] == 0
    assert figures["rss"].stats["downloads"] == 3
    assert figures["rss"].peak_rss > 10 * 2**20  # a Python process tree, polled
    assert figures["year_setup"].stats["downloads"] == 0  # adopted from disk
    assert figures["year"].stats["downloads"] == figures["year"].stats["api_requests"] == 0
    assert all(f.cpu_s > 0 for f in figures.values())

    out = capsys.readouterr().out
    assert re.search(r"\b\d+ cores\b", out.splitlines()[0])
    for label in bench.LABELS.values():
        assert label in out
    targets = [line for line in out.splitlines() if line.rstrip().endswith(("PASS", "FAIL"))]
    assert len(targets) == len(report.targets()) == 13
    assert "T*" in out


def test_a_peer_with_wrong_bytes_is_caught(bench, tmp_path: Path) -> None:
    sizes = bench.AudioSizes.parse_mb("0.01")
    ref = bench.Reference(sizes)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_bytes(bench.render_audio(1, sizes))
    bad.write_bytes(bench.render_audio(2, sizes))
    assert bench.verify_files("peer", [1], {1: good}, ref) == good.stat().st_size
    with pytest.raises(bench.BenchError, match=r"1 run\(s\) differ from the sandbox's, e.g. \[1\]"):
        bench.verify_files("peer", [1], {1: bad}, ref)
    with pytest.raises(bench.BenchError, match=r"no file for 1 run\(s\), e.g. \[2\]"):
        bench.verify_files("peer", [1, 2], {1: good}, ref)


def test_bad_sizes_are_refused_clearly(bench, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--runs", "0"])
    assert exit_info.value.code == 2
    assert "--runs: must be at least 1, not 0" in capsys.readouterr().err


def test_a_catalog_that_does_not_match_its_files_is_caught(bench, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes = bench.AudioSizes.parse_mb("0.01")
    wav = tmp_path / "1.wav"
    wav.write_bytes(bench.render_audio(1, sizes))
    part = tmp_path / "catalog" / "sound_catalog" / "date=2026-11-05" / "part-0.parquet"
    part.parent.mkdir(parents=True)

    def catalog(sha256: str) -> None:
        row = {"run_id": 1, "status": "ok", "uri": str(wav), "size_bytes": wav.stat().st_size}
        pq.write_table(pa.Table.from_pylist([row | {"sha256": sha256}]), part)

    catalog(bench.sha256_file(wav))
    bench.verify_catalog("P", tmp_path, {"2026-11-05": [1]}, "ok", bench.Reference(sizes))
    with pytest.raises(bench.BenchError, match="P: 1 catalog rows for 2 runs"):
        bench.verify_catalog("P", tmp_path, {"2026-11-05": [1, 2]}, "ok")
    with pytest.raises(bench.BenchError, match="1 run\\(s\\) not pending"):
        bench.verify_catalog("S", tmp_path, {"2026-11-05": [1]}, "pending")
    catalog("0" * 64)
    with pytest.raises(bench.BenchError, match="run 1's file is not what the catalog says"):
        bench.verify_catalog("P", tmp_path, {"2026-11-05": [1]}, "ok")
    wav.write_bytes(bench.render_audio(3, sizes))  # another run's audio, catalogued as run 1
    catalog(bench.sha256_file(wav))
    with pytest.raises(bench.BenchError, match="run 1's WAV differs from the sandbox's"):
        bench.verify_catalog("P", tmp_path, {"2026-11-05": [1]}, "ok", bench.Reference(sizes))
