"""Read and validate a day's manifests (CSV, JSON Lines, Parquet) on any fsspec storage.

For day D the manifests are every file under ``{root}/D/`` (names starting with ``.`` or ``_``
are skipped, as temporary files) plus ``{root}/D.csv``, ``{root}/D.jsonl``, ``{root}/D.ndjson``
and ``{root}/D.parquet``. A file that cannot be parsed raises ``ManifestError`` naming the file
and line; a bad row is kept, marked ``rejected`` with a reason, and never sent to the API.

A row names its run by ``run_id``, by ``task_id`` (resolved later through the API's status
endpoint), or both. A task id is untrusted text: one that is empty, longer than
``MAX_TASK_ID_CHARS``, holds a control or invisible character, or is a dot segment is
rejected here, and so is a task id given on an earlier row of the day.
"""

import codecs
import csv
import datetime as dt
import json
import math
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from assets.harvest.catalog_schema import MANIFEST_COLUMNS, MANIFEST_SCHEMA

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")

# Manifest columns with a column of their own (duration becomes requested_duration_s);
# any other column of a manifest goes into the JSON object ``extra``.
KNOWN_COLUMNS = ("run_id", "prompt", "audio_type", "duration", "task_id")

# Names read_manifest uses for where a row came from, so a manifest cannot use them itself.
_POSITION_COLUMNS = ("manifest", "line")
_INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?", re.ASCII)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_PARQUET_BATCH_ROWS = 8192
MAX_TASK_ID_CHARS = 200  # the API's are UUIDs (36); anything far longer is not an id
ID_COLUMNS = ("run_id", "task_id")


class ManifestError(ValueError):
    """A manifest file that cannot be parsed; ``line`` is None when no single line is at fault."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        super().__init__(path, line, reason)  # keeps the error picklable across processes
        self.path = path
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}, line {self.line}"
        return f"{where}: {self.reason}"

    redo = "harvest the day again"  # what to run once the file is fixed

    @property
    def fix(self) -> str:
        """What to do: only fixing the file helps, so no retry ever will."""
        what = "that file" if self.line is None else f"line {self.line} of that file"
        return f"fix {what} (or remove it), then {self.redo}"


def check_day(day: str) -> str:
    """Return ``day`` if it is a real ``YYYY-MM-DD`` date, else raise ValueError."""
    try:
        if not _DAY.fullmatch(day):
            raise ValueError
        dt.date.fromisoformat(day)
    except (TypeError, ValueError):
        raise ValueError(f"day {day!r} is not a YYYY-MM-DD date") from None
    return day


def manifest_files(fs: fsspec.AbstractFileSystem, root: str, day: str) -> list[str]:
    """Paths (as ``fs`` names them) of the manifest files of ``day``, sorted.

    Raises ManifestError for a file in the day folder whose format is unknown, before any
    file is read.
    """
    check_day(day)
    base = fs._strip_protocol(root).rstrip("/")
    folder = f"{base}/{day}"
    found = []
    if fs.isdir(folder):
        for path in fs.find(folder):
            relative = path[len(folder) + 1 :] if path.startswith(folder + "/") else path
            if any(part.startswith((".", "_")) for part in relative.split("/")):
                continue
            _format(fs, path)  # fail fast on an unknown extension
            found.append(path)
    for suffix in MANIFEST_SUFFIXES:
        path = f"{base}/{day}{suffix}"
        if fs.isfile(path):
            found.append(path)
    return sorted(found)


def manifest_day(relpath: str) -> str | None:
    """The day whose manifests include ``relpath`` (relative to the manifest root, as
    manifest_files finds them: ``D/...`` or ``D.csv`` ...), or None for any other path."""
    first, _, rest = relpath.partition("/")
    if rest:
        hidden = any(part.startswith((".", "_")) for part in rest.split("/"))
        day = None if hidden else first
    else:
        day = next((first.removesuffix(s) for s in MANIFEST_SUFFIXES if first.endswith(s)), None)
    return _day_or_none(day) if day else None


def first_manifest_day(names: Iterable[str]) -> str | None:
    """The earliest day among the names at the top of a manifest root (`D` folders, `D.csv`,
    ...), or None when none names a day."""
    days = {manifest_day(name) or _day_or_none(name) for name in names} - {None}
    return min(days, default=None)


def _day_or_none(name: str) -> str | None:
    try:
        return check_day(name)
    except ValueError:
        return None


def read_manifest(fs: fsspec.AbstractFileSystem, path: str) -> pd.DataFrame:
    """One manifest file as raw rows: ``manifest``, ``line``, then the file's own columns with
    values as read (strings from CSV, JSON values from JSON Lines, Python values from Parquet).
    """
    name = manifest_name(fs, path)
    records = list(_records(fs, path, name))
    columns = {"run_id": None}  # an ordered set; JSON Lines has no header, so collect keys
    for _, record in records:
        columns.update(dict.fromkeys(record))
    data = {
        "manifest": [name] * len(records),
        "line": [line for line, _ in records],
        **{column: [record.get(column) for _, record in records] for column in columns},
    }
    # object dtype keeps values exactly as read (no 1 -> 1.0 when a null sits in the column).
    frame = pd.DataFrame({key: pd.Series(values, dtype=object) for key, values in data.items()})
    frame["line"] = frame["line"].astype("int64")
    return frame


def load_day(fs: fsspec.AbstractFileSystem, root: str, day: str) -> pd.DataFrame:
    """All manifest rows of ``day``, validated: columns exactly ``MANIFEST_COLUMNS``."""
    out: dict[str, list[Any]] = {name: [] for name in MANIFEST_COLUMNS}
    claimed: dict[int | str, str] = {}  # accepted run/task id -> "file:line" of its row
    for path in manifest_files(fs, root, day):
        name = manifest_name(fs, path)
        for line, record in _records(fs, path, name):
            row = _validate(record, claimed)
            if row["status"] == "accepted":
                for key in (row["run_id"], row["task_id"]):
                    if key is not None:
                        claimed.setdefault(key, f"{name}:{line}")
            row["manifest"] = name
            row["line"] = line
            for key, values in out.items():
                values.append(row[key])
    frame = frame_from_arrow(pa.Table.from_pydict(out, schema=MANIFEST_SCHEMA))
    frame["line"] = frame["line"].astype("int64")  # never null, unlike run_id
    return frame


def frame_from_arrow(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas keeping integer columns integral when they hold nulls (Int64/Int32)."""
    mapping = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
    return table.to_pandas(types_mapper=mapping.get)


def manifest_name(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """How rows name their file: the absolute path on local disk, a full URI elsewhere."""
    stripped = fs._strip_protocol(path)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return stripped if "file" in protocols else fs.unstrip_protocol(stripped)


# --- reading -------------------------------------------------------------------------------

Rows = Iterator[tuple[int, dict[str, Any]]]


def _format(fs: fsspec.AbstractFileSystem, path: str) -> str:
    suffix = posixpath.splitext(path)[1].lower()
    if suffix not in MANIFEST_SUFFIXES:
        expected = ", ".join(MANIFEST_SUFFIXES)
        raise ManifestError(
            manifest_name(fs, path), None, f"unknown manifest format (expected {expected})"
        )
    return "jsonl" if suffix == ".ndjson" else suffix[1:]


def _records(
    fs: fsspec.AbstractFileSystem, path: str, name: str, required: tuple[str, ...] = ID_COLUMNS
) -> Rows:
    """A lazy stream of (line, record) from one file; errors name the file as ``name``.
    A file with none of the ``required`` columns (any one suffices) is the wrong file."""
    reader = _READERS[_format(fs, path)]
    with fs.open(path, "rb") as file:
        yield from reader(file, name, required)


def read_records(
    fs: fsspec.AbstractFileSystem, path: str, required: tuple[str, ...]
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file name, line, record) of one day file (a manifest, a prompt sheet, ...) as read,
    with the same formats, line numbers and `ManifestError`s as manifests."""
    name = manifest_name(fs, path)
    for line, record in _records(fs, path, name, required):
        yield name, line, record


def _text_lines(file: BinaryIO, name: str) -> Iterator[str]:
    """Decoded lines, line endings kept; decoding line by line lets an error name its line."""
    for number, raw in enumerate(file, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not valid UTF-8 (byte {exc.start + 1} of the line)"
            raise ManifestError(name, number, reason) from None


def _csv_rows(file: BinaryIO, name: str, required: tuple[str, ...]) -> Rows:
    reader = csv.reader(_text_lines(file, name), strict=True)
    try:
        header = [column.strip() for column in next(reader, [])]
        _check_header(header, name, 1, required)
        start = reader.line_num + 1  # a quoted field may span lines: report its first one
        for fields in reader:
            if fields:  # csv yields [] for a blank line
                if len(fields) != len(header):
                    reason = f"expected {len(header)} fields, saw {len(fields)}"
                    raise ManifestError(name, start, reason)
                # An empty cell is the only way CSV can say "no value".
                yield start, {k: v or None for k, v in zip(header, fields, strict=True)}
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ManifestError(name, reader.line_num, f"malformed CSV: {exc}") from None


def _jsonl_rows(file: BinaryIO, name: str, required: tuple[str, ...]) -> Rows:
    records = with_id = 0
    for number, text in enumerate(_text_lines(file, name), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(name, number, f"invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise ManifestError(name, number, f"expected a JSON object, got {kind}")
        for key in record:
            _check_name(key, name, number, "key")
        records += 1
        with_id += any(key in record for key in required)
        yield number, record
    # There is no header to check: records none of which has a required key: the wrong file.
    if records and not with_id:
        raise ManifestError(name, None, f"no record has a {_either(required)} key")


def _parquet_rows(file: BinaryIO, name: str, required: tuple[str, ...]) -> Rows:
    try:
        parquet = pq.ParquetFile(file)
        _check_header(parquet.schema_arrow.names, name, None, required)
        number = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                number += 1
                yield number, record
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(name, None, f"not a readable Parquet file: {exc}") from None


_READERS = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}


def _check_header(
    columns: list[str], name: str, line: int | None, required: tuple[str, ...]
) -> None:
    if not any(column in columns for column in required):
        seen = ", ".join(map(repr, columns)) if columns else "none"
        raise ManifestError(name, line, f"no {_either(required)} column (columns: {seen})")
    for column in columns:
        _check_name(column, name, line, "column")
    twice = sorted({column for column in columns if columns.count(column) > 1})
    if twice:
        raise ManifestError(name, line, f"column {twice[0]!r} appears more than once")


def _either(columns: tuple[str, ...]) -> str:
    return " or ".join(columns)


def _check_name(column: str, name: str, line: int | None, what: str) -> None:
    if column == "":
        raise ManifestError(name, line, f"a {what} has no name")
    if column in _POSITION_COLUMNS:
        raise ManifestError(name, line, f"{what} {column!r} is reserved for the row's position")


# --- validation ----------------------------------------------------------------------------


def _validate(record: dict[str, Any], claimed: dict[int | str, str]) -> dict[str, Any]:
    """One raw record -> a MANIFEST_COLUMNS row (without manifest/line)."""
    run_id, error = _parse_run_id(record.get("run_id"))
    task_id, task_error = _parse_task_id(record.get("task_id"))
    duration, duration_error = parse_duration(record.get("duration"))
    if run_id is None and error == MISSING_RUN_ID and (task_id is not None or task_error):
        error = None  # a task-id row: its task says which run
    if error is None and run_id in claimed:
        error = f"duplicate of run_id {run_id} at {claimed[run_id]}"
    if error is None and task_error is None and task_id in claimed:
        error = f"duplicate of task_id {task_id!r} at {claimed[task_id]}"
    error = error or task_error or duration_error
    return {
        "run_id": run_id,
        "status": "rejected" if error else "accepted",
        "error": error,
        "prompt": as_text(record.get("prompt")),
        "audio_type": as_text(record.get("audio_type")),
        "requested_duration_s": duration,
        "task_id": task_id,
        "extra": extra_json(record, KNOWN_COLUMNS),
    }


def extra_json(record: dict[str, Any], known: tuple[str, ...]) -> str | None:
    """The record's other columns (not `known`, not empty), as the catalog's `extra` JSON."""
    extra = {key: value for key, value in record.items() if key not in known and not is_null(value)}
    return json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str) if extra else None


MISSING_RUN_ID = "missing run_id"


def _parse_run_id(value: Any) -> tuple[int | None, str | None]:
    """(run id to keep, error): the id is kept whenever it parsed, even if rejected."""
    if is_null(value) or (isinstance(value, str) and not value.strip()):
        return None, MISSING_RUN_ID
    number: int | None = None
    if isinstance(value, bool):
        pass  # JSON true is not an id, although Python counts it as the integer 1
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip().split(".")[0])
    if number is None:
        return None, f"run_id {shown(value)} is not an integer"
    if number > _INT64_MAX:
        return None, f"run_id {number} is too large (over 2**63 - 1)"
    if number <= 0:
        return (number if number >= -_INT64_MAX - 1 else None), f"run_id {number} is not positive"
    return number, None


def _parse_task_id(value: Any) -> tuple[str | None, str | None]:
    """(task id to carry, error); surrounding blanks are dropped, nothing else is changed."""
    if is_null(value):
        return None, None
    text = (as_text(value) or "").strip()
    if not text:
        return None, "task_id is empty"
    if len(text) > MAX_TASK_ID_CHARS:
        return text, f"task_id of {len(text)} characters (at most {MAX_TASK_ID_CHARS})"
    odd = next((c for c in text if unicodedata.category(c)[0] in "CZ" and c != " "), None)
    if odd is not None:
        return text, f"task_id holds a control or invisible character ({odd!r})"
    if text in (".", ".."):
        return text, f"task_id {text!r} is not an id"
    return text, None


def parse_duration(value: Any) -> tuple[float | None, str | None]:
    """(seconds, error): an empty cell is no duration; anything but a finite number is an error."""
    if is_null(value) or (isinstance(value, str) and not value.strip()):
        return None, None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        return None, f"duration {shown(value)} is not a number"
    return number, None


def is_null(value: Any) -> bool:
    """Nothing in the cell: None, or a float NaN (pandas, Parquet)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def as_text(value: Any) -> str | None:
    """A cell as text: strings as they are, JSON values as JSON, nothing as None."""
    if is_null(value) or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def shown(value: Any) -> str:
    """A cell as an error message quotes it."""
    return repr(value) if isinstance(value, str) else as_text(value) or repr(value)
