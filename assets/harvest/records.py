"""The pipeline's own per-day records, kept under `{CATALOG_ROOT}/_state/`.

`run_manifest` stores the validated manifest rows and `sound_files` its files ledger and its
task answers (`task_runs`) there, each one Parquet file per day (`state_relpath`); the
leading `_` keeps them out of every reader of the catalog tree.
"""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from assets.harvest.catalog_rows import parquet_bytes, table_bytes
from assets.harvest.catalog_schema import LEDGER_SCHEMA, MANIFEST_SCHEMA
from assets.harvest.manifest_files import frame_from_arrow
from assets.harvest.task_map import TASK_SCHEMA, TASK_STATE
from resources.storage import Storage


def state_relpath(asset: str, day: str) -> str:
    return f"_state/{asset}/date={day}/part-0.parquet"


def write_manifest(storage: Storage, day: str, rows: pd.DataFrame) -> str:
    """The validated manifest rows; an unchanged day's file is left as it is."""
    table = pa.Table.from_pandas(rows, schema=MANIFEST_SCHEMA, preserve_index=False)
    relpath = state_relpath("run_manifest", day)
    return storage.write_bytes(table_bytes(table), relpath, if_changed=True)


def write_files(storage: Storage, day: str, rows: pd.DataFrame) -> str:
    """The files ledger: catalog-shaped rows (without manifest columns) for accepted runs, and
    the Dagster run that stored each file."""
    relpath = state_relpath("sound_files", day)
    return storage.write_bytes(parquet_bytes(rows, LEDGER_SCHEMA), relpath, if_changed=True)


def write_tasks(storage: Storage, day: str, rows: pd.DataFrame) -> str:
    """The day's task answers (`assets.harvest.task_map`); an unchanged file is left as it is."""
    table = pa.Table.from_pandas(rows, schema=TASK_SCHEMA, preserve_index=False)
    return storage.write_bytes(table_bytes(table), state_relpath(TASK_STATE, day), if_changed=True)


def read_state(storage: Storage, asset: str, day: str) -> pd.DataFrame | None:
    """The day's record of `asset`, or None when there is none (one open, no `exists`)."""
    try:
        with storage.open(state_relpath(asset, day)) as file:
            return frame_from_arrow(pq.read_table(file))
    except FileNotFoundError:
        return None
