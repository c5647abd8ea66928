"""pandas reads the catalog's integer columns as nullable integers, not floats."""

import pandas as pd

from assets.harvest.catalog_rows import parquet_bytes, partition_path
from assets.harvest.catalog_schema import CATALOG_SCHEMA
from resources.storage import Storage


def test_pandas_reads_the_hive_root_with_nullable_integers(tmp_path):
    storage = Storage(str(tmp_path))
    days = {
        "2026-11-01": pd.DataFrame(
            {
                "run_id": [12, None],  # a rejected row without an id
                "status": ["ok", "rejected"],
                "error": [None, "line 3: run_id is missing"],
                "uri": ["/a/12.wav", None],
                "size_bytes": [44_144, None],
                "sha256": ["f" * 64, None],
                "sample_rate": [44100, None],
                "channels": [2, None],
                "frames": [11_025, None],
                "duration_s": [0.25, None],
                "attempts": [1, None],
            }
        ),
        "2026-11-02": pd.DataFrame({"run_id": [13], "status": ["pending"], "error": ["later"]}),
    }
    for day, rows in days.items():
        path = partition_path(str(tmp_path), day).removeprefix(f"{tmp_path}/")
        storage.write_bytes(parquet_bytes(rows), path)

    frame = pd.read_parquet(tmp_path / "sound_catalog").sort_values("run_id")

    integers = {f.name: f.type for f in CATALOG_SCHEMA if str(f.type).startswith("int")}
    assert set(integers) == {
        "run_id",
        "size_bytes",
        "sample_rate",
        "channels",
        "frames",
        "attempts",
    }
    for name, arrow_type in integers.items():
        assert str(frame[name].dtype) == ("Int64" if str(arrow_type) == "int64" else "Int32"), name
    assert frame["run_id"].tolist()[:2] == [12, 13]
    assert frame["run_id"].isna().sum() == 1
    assert frame["duration_s"].dtype == "float64"
    assert sorted(frame["date"].astype(str).unique()) == list(days)
