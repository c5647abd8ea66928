"""The catalog's rows: one Parquet file per day, ``sound_catalog/date=D/part-0.parquet``.

A day's rows are assembled from its records (`assemble`: one row per manifest row), checked
against the catalog's invariants (`validate_invariants`), conformed to exactly the schema of
`catalog_schema.py` (`to_table`) and written as one Parquet file (`parquet_bytes`), or read
back (`read_partition`).

The day lives only in the hive path, so pyarrow, pandas, DuckDB and Polars read the root
with a ``date`` column; writers publish a whole partition file at once (temporary names start
with ``.`` or ``_`` so readers skip them).
"""

import re

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.harvest.catalog_schema import (
    CARRIED_COLUMNS,
    CATALOG_COLUMNS,
    CATALOG_SCHEMA,
    REQUIRED_COLUMNS,
    STATUSES,
)
from assets.harvest.manifest_files import check_day, frame_from_arrow
from assets.harvest.task_map import resolve_rows

# A URL with a query string (presigned URLs carry their signature there) or an API key header.
_SECRET = re.compile(r"\b(?:https?|s3)://[^\s?#]*\?|x-api-key|x-amz-signature", re.IGNORECASE)
_EXAMPLES = 5


def partition_path(catalog_root: str, day: str) -> str:
    """Where the catalog file of ``day`` lives under ``catalog_root`` (any fsspec URL)."""
    return f"{catalog_root.rstrip('/')}/sound_catalog/date={check_day(day)}/part-0.parquet"


def to_table(df: pd.DataFrame, schema: pa.Schema = CATALOG_SCHEMA) -> pa.Table:
    """``df`` as an Arrow table of exactly ``schema`` (the catalog's, or the files ledger's);
    ValueError saying what is wrong.

    Absent optional columns become nulls; unknown columns, a missing run_id/status column, a
    status outside STATUSES, values that do not fit their type, and timestamps without a time
    zone are refused.
    """
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"catalog rows cannot be converted to Arrow: {exc}") from None
    return _conform(table, schema)


def parquet_bytes(df: pd.DataFrame, schema: pa.Schema = CATALOG_SCHEMA) -> bytes:
    """The whole partition file for ``df``; the caller publishes it with one atomic write."""
    return table_bytes(to_table(df, schema))


def table_bytes(table: pa.Table) -> bytes:
    """A Parquet file (zstd) of ``table``, built in memory: partition files are small."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def read_partition(
    fs: fsspec.AbstractFileSystem, catalog_root: str, day: str
) -> pd.DataFrame | None:
    """The catalog rows of ``day`` (conformed to CATALOG_SCHEMA), or None if never written."""
    try:
        with fs.open(partition_path(catalog_root, day), "rb") as file:
            table = pq.read_table(file)
    except FileNotFoundError:
        return None
    return frame_from_arrow(_conform(table))


def row_keys(df: pd.DataFrame) -> pd.Series:
    """Each row's key: its run id, or its task id where the run id is not known."""
    task_id = "task_id " + _column(df, "task_id").astype("string")
    return ("run_id " + df["run_id"].astype("string")).fillna(task_id)


def validate_invariants(df: pd.DataFrame) -> list[str]:
    """Broken catalog invariants, one message per kind of problem (empty when all hold).

    Messages name run ids (task ids where there is no run id), never the offending error
    text (it may hold the secret).
    """
    status, run_id, key = df["status"], df["run_id"], row_keys(df)
    ok = status == "ok"
    # A rejected duplicate keeps its run id, so only rows that are not rejected must be unique.
    live = status != "rejected"
    live_keys = key[live & key.notna()]
    # Only a task that never resolved leaves its row without a run id: pending or failed.
    unresolved = status.isin(["pending", "failed"]) & _column(df, "task_id").notna()
    text = _column(df, "error").astype("string").fillna("")
    problems = [
        _problem("status outside " + "/".join(STATUSES), key[~status.isin(STATUSES)]),
        _problem(
            "run id (task id if none) on more than one row that is not rejected",
            live_keys[live_keys.duplicated(keep=False)],
        ),
        _problem("not rejected but no run_id", key[live & run_id.isna() & ~unresolved]),
        *(
            _problem(f"ok without {name}", key[ok & _column(df, name).isna()])
            for name in ("uri", "size_bytes", "sha256")
        ),
        _problem("not ok but no error", key[~ok & (text.str.strip() == "")]),
        _problem("error holds a URL query or an API key", key[text.str.contains(_SECRET)]),
    ]
    return [problem for problem in problems if problem]


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(None, index=df.index, dtype="object")


def _problem(what: str, keys: pd.Series) -> str:
    if keys.empty:
        return ""
    shown = ["run_id <none>" if pd.isna(v) else v for v in keys.drop_duplicates()[:_EXAMPLES]]
    more = ", ..." if keys.nunique(dropna=False) > _EXAMPLES else ""
    rows = f"{len(keys)} row" + ("s" if len(keys) > 1 else "")
    return f"{what}: {', '.join(shown)}{more} ({rows})"


def _conform(table: pa.Table, schema: pa.Schema = CATALOG_SCHEMA) -> pa.Table:
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"catalog rows need the columns: {', '.join(missing)}")
    unknown = [name for name in table.column_names if name not in schema.names]
    if unknown:
        raise ValueError(f"unknown catalog columns: {', '.join(unknown)}")
    columns = [
        _cast(table[field.name], field)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in schema
    ]
    out = pa.Table.from_arrays(columns, schema=schema)
    bad = set(pc.unique(out["status"]).to_pylist()) - set(STATUSES)
    if bad:
        shown = ", ".join(sorted(map(repr, bad)))
        raise ValueError(f"catalog status must be one of {', '.join(STATUSES)}; got {shown}")
    return out


def _cast(column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    source = column.type
    if pa.types.is_timestamp(field.type) and not pa.types.is_null(source):
        if not pa.types.is_timestamp(source) or source.tz is None:
            raise ValueError(f"catalog column {field.name}: need time-zone-aware timestamps")
        # Same instant in UTC; sub-microsecond digits are dropped, which "safe" would refuse.
        return column.cast(field.type, safe=False)
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ValueError(
            f"catalog column {field.name}: cannot store {source} as {field.type} ({exc})"
        ) from None


def assemble(
    manifest: pd.DataFrame, files: pd.DataFrame, tasks: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One catalog row per manifest row: rejected rows as they are, accepted ones with the
    outcome the day's files ledger records for their run (pending when it has none yet).

    Task-id rows first take the run their task resolved to (`task_map.resolve_rows`, from the
    day's task answers); those whose task never resolved keep no run id and the task's answer.
    """
    carried = list(CARRIED_COLUMNS)
    manifest = resolve_rows(manifest, tasks)
    unresolved = manifest[manifest["status"].isin(["pending", "failed"])]
    rejected = manifest[manifest["status"] == "rejected"]
    rejected = rejected.assign(
        error="line " + rejected["line"].astype(str) + ": " + rejected["error"]
    )
    accepted = manifest.loc[manifest["status"] == "accepted", ["run_id", *carried]]
    outcomes = files.drop(columns=[c for c in carried if c in files.columns])
    rows = accepted.merge(outcomes, on="run_id", how="left", validate="one_to_one")
    unfetched = rows["status"].isna()
    rows.loc[unfetched, ["status", "error"]] = ["pending", "not fetched yet"]
    own = ["run_id", "status", "error", *carried]
    frame = pd.concat([rows, unresolved[own], rejected[own]], ignore_index=True)
    return frame.reindex(columns=list(CATALOG_COLUMNS))
