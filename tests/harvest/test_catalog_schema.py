"""The catalog's columns are stated once (assets/harvest/catalog_schema.py); the records cut from
them (manifest record, files ledger, the columns a snapshot reads) are exactly what they were
when each was written out by hand, so no file on disk changes shape."""

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from assets.harvest.catalog_rows import parquet_bytes
from assets.harvest.catalog_schema import (
    CARRIED_COLUMNS,
    CATALOG_SCHEMA,
    LEDGER_COLUMNS,
    LEDGER_SCHEMA,
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    with_nullable_ints,
)
from assets.harvest.records import write_files, write_manifest
from assets.ml.dataset.selection import CATALOG_READ
from resources.storage import Storage

from support.catalog_contract import CONTRACT

# The schemas as they were written out before the columns were stated once (the on-disk
# contract of every catalog, manifest record and files ledger written so far).
CATALOG_BEFORE = with_nullable_ints(pa.schema(CONTRACT))
MANIFEST_BEFORE = pa.schema(
    [
        ("run_id", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("prompt", pa.string()),
        ("audio_type", pa.string()),
        ("requested_duration_s", pa.float64()),
        ("task_id", pa.string()),
        ("extra", pa.string()),
        ("manifest", pa.string()),
        ("line", pa.int64()),
    ]
)
LEDGER_BEFORE = with_nullable_ints(CATALOG_BEFORE.append(pa.field("dagster_run_id", pa.string())))
LEDGER_COLUMNS_BEFORE = (
    "run_id", "status", "error", "uri", "size_bytes", "sha256", "sample_rate", "channels",
    "frames", "duration_s", "subtype", "source_format", "attempts", "first_seen_at", "fetched_at",
    "dagster_run_id",
)  # fmt: skip
CARRIED_BEFORE = ("prompt", "audio_type", "requested_duration_s", "task_id", "extra", "manifest")
SNAPSHOT_READS_BEFORE = (
    "run_id", "uri", "size_bytes", "sha256", "sample_rate", "channels", "frames", "duration_s",
    "subtype", "prompt", "audio_type", "task_id",
)  # fmt: skip


def fields(schema: pa.Schema) -> list[tuple[str, pa.DataType, bool]]:
    return [(field.name, field.type, field.nullable) for field in schema]


def test_each_derived_schema_is_the_one_written_out_before_field_by_field():
    for derived, before in [
        (CATALOG_SCHEMA, CATALOG_BEFORE),
        (MANIFEST_SCHEMA, MANIFEST_BEFORE),
        (LEDGER_SCHEMA, LEDGER_BEFORE),
    ]:
        assert fields(derived) == fields(before)
        # The pandas metadata too (nullable integer dtypes), byte for byte, or its absence.
        assert derived.metadata == before.metadata
        assert derived.equals(before, check_metadata=True)


def test_the_column_lists_are_the_ones_written_out_before():
    assert LEDGER_COLUMNS == LEDGER_COLUMNS_BEFORE
    assert CARRIED_COLUMNS == CARRIED_BEFORE
    assert tuple(MANIFEST_BEFORE.names) == MANIFEST_COLUMNS
    assert CATALOG_READ == SNAPSHOT_READS_BEFORE


def test_a_column_the_records_share_with_the_catalog_has_the_catalog_type():
    catalog = set(CATALOG_SCHEMA.names)
    assert set(LEDGER_COLUMNS) - catalog == {"dagster_run_id"}
    assert set(MANIFEST_COLUMNS) - catalog == {"line"}
    for record, columns in [(LEDGER_SCHEMA, LEDGER_COLUMNS), (MANIFEST_SCHEMA, MANIFEST_COLUMNS)]:
        for name in set(columns) & catalog:
            assert record.field(name).type == CATALOG_SCHEMA.field(name).type, name


def test_the_records_written_to_disk_have_the_schemas_of_before(tmp_path):
    state = Storage(str(tmp_path))
    now = pd.Timestamp("2026-11-01T12:00:00Z")
    ledger = pd.DataFrame(
        [{"run_id": 1, "status": "ok", "uri": "file:///a.wav", "size_bytes": 10, "sha256": "0" * 64,
          "attempts": 1, "first_seen_at": now, "fetched_at": now, "dagster_run_id": "abc"}],
        columns=list(LEDGER_COLUMNS),
    )  # fmt: skip
    manifest = pd.DataFrame(
        [{"run_id": 1, "status": "accepted", "manifest": "2026-11-01.csv", "line": 2}],
        columns=list(MANIFEST_COLUMNS),
    )
    written = {
        "ledger": pq.read_schema(write_files(state, "2026-11-01", ledger)),
        "manifest": pq.read_schema(write_manifest(state, "2026-11-01", manifest)),
        "catalog": pq.read_schema(io.BytesIO(parquet_bytes(ledger.drop(columns="dagster_run_id")))),
    }
    assert fields(written["ledger"]) == fields(LEDGER_BEFORE)
    assert fields(written["manifest"]) == fields(MANIFEST_BEFORE)
    assert fields(written["catalog"]) == fields(CATALOG_BEFORE)
    assert written["ledger"].metadata[b"pandas"] == LEDGER_BEFORE.metadata[b"pandas"]
