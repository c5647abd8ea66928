"""The ML feed benchmark at a tiny size, so it cannot rot. No timing is asserted."""

import pytest

from support import PROJECT


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(PROJECT))  # bench/ is not an installed package
    import bench.ml_feed as module

    return module


def test_every_figure_comes_out_of_a_real_run(bench, capsys):
    result = bench.main(["--days", "2", "--runs", "60", "--clips", "2", "--clip-seconds", "0.5"])

    for snap in (result["snapshot"], result["snapshot_prompt_rule"]):
        assert snap["rows"] == 120 and 0 < snap["clips"] <= snap["ok_rows"] < 120
        assert sum(snap["counts"].values()) == snap["clips"]
        assert snap["seconds"] > 0 and snap["peak_rss_mb"] > 0 and snap["files"] >= 4
    assert result["snapshot"]["groups"]["groups"] <= result["snapshot"]["clips"]
    assert result["snapshot_prompt_rule"]["groups"] is None
    assert result["fingerprint_share"] > -1
    assert list(result["rates"]) == [
        "sound_features, 1 worker",
        "sound_features, 2 workers",
        "embedded HF Parquet",
        "WebDataset tar",
    ]
    assert all(rate > 0 for rate in result["rates"].values()) and result["pool_startup_s"] > 0
    out = capsys.readouterr().out
    assert "reference snapshot (HF Parquet + NeMo + card) of 2 days x 60 runs" in out
    assert "the fingerprint adds" in out and "similarity costs" in out
    for name in result["rates"]:
        assert name in out


def test_bad_sizes_are_refused_clearly(bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--days", "0"])
    assert exit_.value.code == 2
    assert "--days: must be at least 1" in capsys.readouterr().err
