"""What a catalog row holds: the catalog's columns, stated once, and the records derived from them.

A catalog row (`sound_catalog/date=D/part-0.parquet`, README's table says what each column
means) is, in this order:

- its key and outcome: `run_id`, `status`, `error`;
- the stored file: `uri`, size, sha256, what its header says, the container delivered;
- what the manifest row carried: prompt, audio type, requested duration, task id, `extra`,
  and the manifest file it came from;
- the harvest's bookkeeping: attempts and timestamps.

The pipeline's own records under `_state/` are cut from the same columns:

- a validated manifest row (`MANIFEST_SCHEMA`): key and outcome, what the manifest carried,
  and its line;
- a files-ledger row (`LEDGER_COLUMNS`, what `sound_files` records per run): key and
  outcome, the stored file, the bookkeeping, and the Dagster run that stored the file; its
  file (`LEDGER_SCHEMA`) has every catalog column besides, null.

A new column goes into one group here; every record that holds the group gets it.
"""

import json

import pyarrow as pa

STATUSES = ("ok", "pending", "failed", "rejected")

_UTC = pa.timestamp("us", tz="UTC")
_PANDAS_INTS = {pa.int8(): "Int8", pa.int16(): "Int16", pa.int32(): "Int32", pa.int64(): "Int64"}

KEY_FIELDS = [
    pa.field("run_id", pa.int64()),
    pa.field("status", pa.string()),  # one of STATUSES (a manifest row: accepted or rejected)
    pa.field("error", pa.string()),
]
FILE_FIELDS = [
    pa.field("uri", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("sha256", pa.string()),
    pa.field("sample_rate", pa.int32()),
    pa.field("channels", pa.int32()),
    pa.field("frames", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("subtype", pa.string()),
    pa.field("source_format", pa.string()),
]
CARRIED_FIELDS = [
    pa.field("prompt", pa.string()),
    pa.field("audio_type", pa.string()),
    pa.field("requested_duration_s", pa.float64()),
    pa.field("task_id", pa.string()),
    pa.field("extra", pa.string()),
    pa.field("manifest", pa.string()),
]
BOOKKEEPING_FIELDS = [
    pa.field("attempts", pa.int32()),
    pa.field("first_seen_at", _UTC),
    pa.field("fetched_at", _UTC),
]
LINE_FIELD = pa.field("line", pa.int64())  # where a manifest row came from in its file
# The Dagster run that stored or adopted an ok row's file, so a run counts the files it
# published, and only those.
DAGSTER_RUN_FIELD = pa.field("dagster_run_id", pa.string())


def with_nullable_ints(schema: pa.Schema) -> pa.Schema:
    """``schema`` with pandas metadata naming its integer columns' nullable dtypes.

    Without it ``pandas.read_parquet`` turns an integer column holding a null into float64
    (run_id 12.0, NaN); with it pandas builds Int64 / Int32, so nobody joins on floats. Only
    the integer columns are described: pandas picks its defaults for the rest, and other
    readers (pyarrow, DuckDB, Polars) ignore the key.
    """
    columns = [
        {
            "name": field.name,
            "field_name": field.name,
            "pandas_type": str(field.type),
            "numpy_type": _PANDAS_INTS[field.type],
            "metadata": None,
        }
        for field in schema
        if field.type in _PANDAS_INTS
    ]
    pandas = {"index_columns": [], "column_indexes": [], "columns": columns}
    return schema.with_metadata({**(schema.metadata or {}), b"pandas": json.dumps(pandas)})


CATALOG_SCHEMA = with_nullable_ints(
    pa.schema([*KEY_FIELDS, *FILE_FIELDS, *CARRIED_FIELDS, *BOOKKEEPING_FIELDS])
)
CATALOG_COLUMNS = tuple(CATALOG_SCHEMA.names)
CARRIED_COLUMNS = tuple(field.name for field in CARRIED_FIELDS)
REQUIRED_COLUMNS = ("run_id", "status")

MANIFEST_SCHEMA = pa.schema([*KEY_FIELDS, *CARRIED_FIELDS, LINE_FIELD])
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)

LEDGER_SCHEMA = with_nullable_ints(CATALOG_SCHEMA.append(DAGSTER_RUN_FIELD))
LEDGER_COLUMNS = tuple(
    field.name for field in [*KEY_FIELDS, *FILE_FIELDS, *BOOKKEEPING_FIELDS, DAGSTER_RUN_FIELD]
)
