"""Which catalog rows make a training set, in which split, under which version.

The plain logic behind `ml_dataset` (docs/ml.md has the user's view):

1. every `ok` row of every catalog day, with its quality features when `sound_features`
   has them (joined on day, run id and sha256, so features of another file never attach),
   or the reason it has none: its file was missing or unreadable when measured, or it was
   not measured yet;
2. one row per run id: the earliest day wins;
3. the filters of the spec, each counted in ``dropped``;
4. optionally one row per audio sha256 (exact duplicates): the earliest (day, run id) wins;
   with `dedupe_near_audio`, one row per cluster of the same sound too;
5. a split and a group id per row (`splits.py`): by default (`group_by: similarity`) runs
   whose prompts are near-copies or whose clips are the same sound share a group
   (`groups.py`), a group never spans two splits, a run keeps the split and group id it had
   in the previous snapshot, and new groups are placed knowing their sizes; with
   `group_by: prompt` or `run_id`, a stable hash of the normalised prompt (or the run id),
   so a prompt never lands in two splits and a run keeps its split whatever other days or
   filters do;
6. a version derived from the selected rows and the spec.

No `from __future__ import annotations` here: `DatasetSpec` is the base of a Dagster Config.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc
import pyarrow.parquet as pq

from assets.harvest.catalog_schema import CATALOG_COLUMNS
from assets.ml.clip_features import FEATURES_SCHEMA, FILE_MISSING, METRICS, features_relpath
from assets.ml.dataset.groups import GroupStats, assign, audio_pairs, near_audio_keep
from assets.ml.dataset.spec import SPLITS, DatasetSpec
from assets.ml.dataset.splits import hash_assignments, hash_splits, normalised_prompts
from resources.storage import Storage

# Bumped when the snapshot's layout or the meaning of a column changes: a new version then.
LAYOUT_VERSION = 2  # 2: group_id in every row and export

# The columns of a selected row, in this order (they feed the version).
ROW_COLUMNS = (
    "run_id", "date", "split", "group_id", "sha256", "size_bytes", "uri", "text", "audio_type",
    "duration_s", "frames", "sample_rate", "channels", "subtype", "task_id", *METRICS,
)  # fmt: skip
# The catalog columns a snapshot reads, in the catalog's order: those a row exports, and the
# prompt its text comes from.
CATALOG_READ = tuple(name for name in CATALOG_COLUMNS if name in ROW_COLUMNS or name == "prompt")
ROW_SCHEMA = pa.schema(
    [
        ("run_id", pa.int64()),
        ("date", pa.string_view()),
        ("split", pa.string_view()),
        ("group_id", pa.int64()),  # runs of one group share it (splits.py, groups.py)
        ("sha256", pa.string_view()),
        ("size_bytes", pa.int64()),
        ("uri", pa.string_view()),
        ("text", pa.string_view()),
        ("audio_type", pa.string_view()),
        ("duration_s", pa.float64()),
        ("frames", pa.int64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("subtype", pa.string_view()),
        ("task_id", pa.string_view()),  # the task the run came from, when the manifest said
        *((name, pa.bool_() if name == "is_silent" else pa.float64()) for name in METRICS),
    ]
)
assert tuple(ROW_SCHEMA.names) == ROW_COLUMNS
_HIVE_DATE = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
AUDIO_COLUMNS = ("audio_profile",)  # read for grouping, not exported
FEATURES_ERROR = "features_error"  # why measuring the same file failed; read, not exported
# Why a clip has no features, in the order the quality filters drop them: each reason is a
# filter, so the card and the metadata count each apart.
NO_FEATURES = {
    "missing": "file missing when measured (rerun its day's harvest)",
    "unreadable": "file unreadable when measured",
    "unmeasured": "not measured yet (materialize sound_features)",
}


# -- reading ------------------------------------------------------------------------------


def read_rows(catalog: Storage) -> pl.LazyFrame:
    """Every `ok` catalog row of every day (column `date` from the hive path), with the
    features of the same file, or nulls where there are none (or only an error); lazy, so
    only the columns and rows needed are ever read."""
    rows = _scan(catalog, "sound_catalog")
    if rows is None:
        empty = pl.from_arrow(_empty(["date", *CATALOG_READ, *METRICS, FEATURES_ERROR]))
        return empty.lazy().with_columns(_no_audio())  # type: ignore[union-attr]
    # ok rows always have a run id: a task that never resolved is never selected.
    ok = (pl.col("status") == "ok") & pl.col("run_id").is_not_null()
    rows = rows.filter(ok).select("date", *CATALOG_READ)
    features = _scan(catalog, "sound_features", FEATURES_SCHEMA)
    if features is None:
        return rows.with_columns(
            *(
                pl.lit(None, pl.Boolean if name == "is_silent" else pl.Float64).alias(name)
                for name in METRICS
            ),
            pl.lit(None, pl.String).alias(FEATURES_ERROR),
        ).with_columns(_no_audio())
    # One features row per day and run id; its figures count only if it measured this very
    # file (same sha256). Joining on the integers and comparing 64-bit hashes of the sha256
    # after (polars' hash: stable within the process) is far cheaper in time and memory
    # than carrying and joining the 64-character strings.
    keys = ["date", "run_id"]
    measured = (*METRICS, *AUDIO_COLUMNS, FEATURES_ERROR)
    features = features.rename({"error": FEATURES_ERROR}).select(
        *keys, pl.col("sha256").hash().alias("measured"), *measured
    )
    same_file = pl.col("measured") == pl.col("sha256").hash()
    return (
        rows.join(features, on=keys, how="left")
        .with_columns(pl.when(same_file).then(pl.col(name)).alias(name) for name in measured)
        .drop("measured")
    )


def _no_audio() -> list[pl.Expr]:
    return [pl.lit(None, pl.Binary).alias(name) for name in AUDIO_COLUMNS]


def read_fingerprints(catalog: Storage) -> Callable[[pl.DataFrame], list[bytes]]:
    """A reader of the fingerprints of given files (date, run_id, sha256), in their order:
    it opens only their days' features files, one at a time, and copies out the few wanted
    (a query over the whole tree held the whole column: 2.5 GB at a year)."""

    def fetch(wanted: pl.DataFrame) -> list[bytes]:
        at = wanted.select("date", "run_id", "sha256").with_row_index("_at")
        keys = ["run_id", "sha256"]
        parts = []
        for (day,), some in at.group_by("date"):
            try:
                with catalog.open(features_relpath(str(day))) as file:
                    table = pq.read_table(file, columns=_FINGERPRINT_COLUMNS)
            except FileNotFoundError:
                continue
            found = pl.from_arrow(table).filter(pl.col("error").is_null())  # type: ignore[union-attr]
            parts.append(_copied(found.unique(keys).join(some, on=keys, how="inner")))
        return _in_order(parts, wanted.height)

    return fetch


_FINGERPRINT_COLUMNS = ["run_id", "sha256", "error", "audio_fingerprint"]


def _copied(found: pl.DataFrame) -> pl.DataFrame:
    """(_at, audio_fingerprint) with the bytes copied out: a gathered binary view column
    keeps its whole source buffer alive (a day's fingerprints for each few wanted)."""
    return pl.DataFrame(
        {"_at": found["_at"], "audio_fingerprint": found["audio_fingerprint"].to_list()},
        schema={"_at": found.schema["_at"], "audio_fingerprint": pl.Binary},
    )


def _in_order(parts: list[pl.DataFrame], wanted: int) -> list[bytes]:
    found = pl.concat(parts).sort("_at") if parts else pl.DataFrame()
    if found.height != wanted:
        raise ValueError(f"fingerprints: {wanted} wanted, {found.height} found")
    return found["audio_fingerprint"].to_list()


def _scan(storage: Storage, name: str, schema: pa.Schema | None = None) -> pl.LazyFrame | None:
    """A hive-partitioned tree (`name/date=D/*.parquet`) as a lazy frame, None if empty.

    Local trees are scanned by polars itself (streamed, a fraction of the memory); other
    storage through pyarrow's dataset on the fsspec filesystem (same rows, slower). With a
    ``schema``, files written before a column existed read it as nulls."""
    files = storage.fs.glob(f"{storage.path(name)}/date=*/*.parquet")
    if not files:
        return None
    if storage.is_local():
        return pl.scan_parquet(
            files,
            schema=None
            if schema is None
            else pl.Schema(pl.from_arrow(schema.empty_table()).schema),
            hive_partitioning=True,
            hive_schema={"date": pl.String},
            missing_columns="insert",
        )
    dataset = ds.dataset(
        files,
        filesystem=storage.fs,
        format="parquet",
        partitioning=_HIVE_DATE,
        schema=(None if schema is None else pa.unify_schemas([schema, _HIVE_DATE.schema])),
    )
    return pl.scan_pyarrow_dataset(dataset)


def _empty(names: tuple[str, ...] | list[str]) -> pa.Table:
    schema = {**{f.name: f.type for f in ROW_SCHEMA}, **_CATALOG_ONLY}
    return pa.schema([(name, schema[name]) for name in names]).empty_table()


_CATALOG_ONLY = {"prompt": pa.string_view(), FEATURES_ERROR: pa.string_view()}


# -- selection ----------------------------------------------------------------------------


@dataclass
class Selection:
    rows: pa.Table  # ROW_SCHEMA, ordered by split then run id
    considered: int  # distinct ok run ids
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    # Selected rows without features, by reason (NO_FEATURES): without a quality filter they stay
    without_features: dict[str, int] = field(default_factory=dict)
    groups: GroupStats | None = None  # group_by similarity: what the card says of its groups
    assignments: pl.DataFrame | None = None  # group_by similarity: run_id, split, group_id

    def why_empty(self) -> str:
        if not self.considered:
            return "the catalog has no ok rows (materialize sound_catalog first)"
        reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n)
        return f"every one of {self.considered} ok runs was filtered out: {reasons}"


def filters(spec: DatasetSpec) -> list[tuple[pl.Expr, str]]:
    """(what a kept row satisfies, why others go), in the order they apply."""
    col = pl.col
    found: list[tuple[pl.Expr | None, str]] = [
        (None if spec.min_duration_s is None else col("duration_s") >= spec.min_duration_s,
         f"shorter than {spec.min_duration_s} s"),
        (None if spec.max_duration_s is None else col("duration_s") <= spec.max_duration_s,
         f"longer than {spec.max_duration_s} s"),
        (None if spec.audio_types is None else col("audio_type").is_in(spec.audio_types),
         "another audio type"),
        (None if spec.sample_rates is None else col("sample_rate").is_in(spec.sample_rates),
         "another sample rate"),
        (None if spec.channels is None else col("channels").is_in(spec.channels),
         "another channel count"),
        *(_features_filters() if spec.quality_filters() else []),
        (col("is_silent").not_() if spec.drop_silent else None, "silent"),
        (None if spec.max_clipped_fraction is None
         else col("clipped_fraction") <= spec.max_clipped_fraction, "clipped"),
        (None if spec.min_lufs is None else col("lufs") >= spec.min_lufs,
         f"quieter than {spec.min_lufs} LUFS"),
        (None if spec.max_lufs is None else col("lufs") <= spec.max_lufs,
         f"louder than {spec.max_lufs} LUFS"),
    ]  # fmt: skip
    return [(expr, why) for expr, why in found if expr is not None]


def _features_filters() -> list[tuple[pl.Expr, str]]:
    """A clip without features, dropped under the reason it has none (NO_FEATURES)."""
    error = pl.col(FEATURES_ERROR)
    return [
        ((error != FILE_MISSING).fill_null(True), NO_FEATURES["missing"]),
        (error.is_null(), NO_FEATURES["unreadable"]),
        (pl.col("peak_dbfs").is_not_null(), NO_FEATURES["unmeasured"]),
    ]


def without_features(rows: pl.DataFrame) -> dict[str, int]:
    """Rows without features, counted by the reason they have none (NO_FEATURES), zeros left
    out."""
    error = pl.col(FEATURES_ERROR)
    kind = (
        pl.when(error == FILE_MISSING)
        .then(pl.lit(NO_FEATURES["missing"]))
        .when(error.is_not_null())
        .then(pl.lit(NO_FEATURES["unreadable"]))
        .otherwise(pl.lit(NO_FEATURES["unmeasured"]))
    )
    missing = rows.filter(pl.col("peak_dbfs").is_null()).select(kind.alias("why"))
    counts = dict(missing["why"].value_counts().iter_rows())
    return {why: counts[why] for why in NO_FEATURES.values() if counts.get(why)}


def select(
    rows: pl.LazyFrame | pl.DataFrame,
    spec: DatasetSpec,
    previous: pl.DataFrame | None = None,
    fingerprints: Callable[[pl.DataFrame], list[bytes]] | None = None,
) -> Selection:
    """The rows of a snapshot, with their split (see the module docstring for the order).

    The catalog is read by one streamed polars query that keeps each run's earliest day
    with a semi join on a narrow aggregate (no sort of the wide rows); the earliest run of
    each sha256 is found the same way. ``previous``: (run_id, split) of the previous
    snapshot, which `group_by: similarity` keeps (splits.py); ``fingerprints``:
    `read_fingerprints`, or (when None) the `audio_fingerprint` column of ``rows``."""
    rows = rows.lazy()
    present = rows.collect_schema().names()
    if fingerprints is None and "audio_fingerprint" in present:
        fingerprints = _fingerprints_in(rows)
    read_only = [*_no_audio(), pl.lit(None, pl.String).alias(FEATURES_ERROR)]
    rows = rows.with_columns(e for e in read_only if e.meta.output_name() not in present)
    earliest = rows.group_by("run_id").agg(pl.col("date").min())
    rows = rows.join(earliest, on=["run_id", "date"], how="semi")
    steps = filters(spec)
    failed = pl.lit(None, pl.Int32)  # the index of the first filter a row fails
    for index, (expr, _) in reversed(list(enumerate(steps))):
        failed = (
            pl.when(expr.fill_null(False).not_()).then(pl.lit(index, pl.Int32)).otherwise(failed)
        )
    # Fingerprints are read later, for the few clips that need comparing (audio_links).
    frame = (
        rows.drop("audio_fingerprint", strict=False)
        .with_columns(failed.alias("failed"))
        .collect(engine="streaming")
    )
    counts = dict(frame["failed"].value_counts().iter_rows())
    selection = Selection(_empty(ROW_COLUMNS), considered=frame.height)
    selection.dropped = {why: counts.get(index, 0) for index, (_, why) in enumerate(steps)}
    frame = frame.filter(pl.col("failed").is_null()).drop("failed")
    if spec.dedupe_audio:
        first = frame.group_by("sha256").agg(pl.col("run_id").sort_by("date", "run_id").first())
        kept = frame.join(first, on="run_id", how="semi", maintain_order="left")
        selection.dropped["same audio as an earlier run"] = frame.height - kept.height
        frame = kept

    if spec.group_by == "similarity":
        frame, split, group = _similarity_splits(frame, fingerprints, spec, previous, selection)
    else:
        drawn = hash_assignments(frame, spec, spec.group_by)
        split, group = drawn["split"], drawn["group_id"]
    frame = frame.with_columns(text=pl.col("prompt").fill_null(""), split=split, group_id=group)
    selection.without_features = without_features(frame)
    order = pl.col("split").replace_strict(SPLITS, list(range(len(SPLITS))))
    selection.rows = rows_table(frame.sort(order, "run_id"))
    if spec.group_by == "similarity":
        selection.assignments = frame.select("run_id", "split", "group_id")
    return selection


def _similarity_splits(
    frame: pl.DataFrame,
    fingerprints: Callable[[pl.DataFrame], list[bytes]] | None,
    spec: DatasetSpec,
    previous: pl.DataFrame | None,
    selection: Selection,
) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
    """(the rows left, their splits, their group ids) under `group_by: similarity`
    (assets/ml/dataset/groups.py);
    the counts go to ``selection.groups``, near-duplicate audio dropped to its drops."""

    def read(index: np.ndarray) -> list[bytes]:
        if fingerprints is None:
            raise ValueError(f"fingerprints: {len(index)} wanted, none stored")
        return fingerprints(frame[index])

    pairs = audio_pairs(frame, read, spec)
    if spec.dedupe_near_audio:
        keep = near_audio_keep(frame, pairs)
        selection.dropped["near-identical audio to an earlier run"] = int((~keep).sum())
        renumber = np.cumsum(keep) - 1
        pairs = renumber[pairs[keep[pairs].all(axis=1)]].reshape(-1, 2)
        frame = frame.filter(pl.Series(keep))
    index = {name: i for i, name in enumerate(SPLITS)}
    old_splits = hash_splits(frame, spec, "prompt").replace_strict(index)
    frame = frame.with_columns(_prompt_key=normalised_prompts(frame))
    split, group, stats = assign(frame, pairs, spec, previous, old_splits.to_numpy())
    selection.groups = GroupStats(
        **{
            **stats.as_dict(),
            "near_audio_dropped": selection.dropped.get(
                "near-identical audio to an earlier run", 0
            ),
        }
    )
    return (
        frame.drop("_prompt_key"),
        pl.Series("split", np.array(SPLITS)[split], pl.String),
        pl.Series("group_id", group, pl.Int64),
    )


def _fingerprints_in(rows: pl.LazyFrame) -> Callable[[pl.DataFrame], list[bytes]]:
    """A reader of fingerprints from the `audio_fingerprint` column of ``rows`` (frames made
    in memory, as the tests make them)."""

    def fetch(wanted: pl.DataFrame) -> list[bytes]:
        keys = ["date", "run_id", "sha256"]
        at = wanted.select(keys).with_row_index("_at")
        found = rows.select(*keys, "audio_fingerprint").collect().unique(keys)
        return _in_order([_copied(found.join(at, on=keys, how="inner"))], wanted.height)

    return fetch


# -- version ------------------------------------------------------------------------------


def rows_table(rows: pl.DataFrame) -> pa.Table:
    """The selected rows as exactly ROW_SCHEMA: string views, handed over without a copy."""
    return rows.select(ROW_COLUMNS).to_arrow(compat_level=pl.CompatLevel.newest()).cast(ROW_SCHEMA)


def by_split(rows: pa.Table) -> dict[str, pa.Table]:
    """Each split's rows, as zero-copy slices (selected rows are ordered by split)."""
    counts = pc.value_counts(rows["split"].cast(pa.large_string()))
    values, n = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    sizes = dict(zip(values, n, strict=True))
    parts, offset = {}, 0
    for split in SPLITS:
        parts[split] = rows.slice(offset, sizes.get(split, 0))
        offset += sizes.get(split, 0)
    return parts


def canonical(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """String views as large strings: one byte layout per content (views are not), for
    hashing and for writers that want plain strings."""
    schema = pa.schema(
        [
            (f.name, pa.large_string() if f.type == pa.string_view() else f.type)
            for f in batch.schema
        ]
    )
    return batch.cast(schema)


class _HashSink:
    """A write-only file object that only hashes what it is given."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def snapshot_version(rows: pa.Table, spec: DatasetSpec) -> str:
    """16 hex digits of a sha256 over the layout version, the spec and the selected rows
    (every exported value, in order), streamed through Arrow IPC in canonical batches:
    same input, same version, whatever the chunking."""
    sink = _HashSink()
    header = {"layout": LAYOUT_VERSION, "spec": spec.canonical()}
    sink.write(json.dumps(header, sort_keys=True).encode())
    schema = canonical(rows.schema.empty_table()).schema
    writer_sink: IO[bytes] = sink  # type: ignore[assignment]
    with pyarrow.ipc.new_stream(writer_sink, schema) as writer:
        for start in range(0, rows.num_rows, _HASH_BATCH):
            batch = rows.slice(start, _HASH_BATCH).combine_chunks()
            writer.write_table(canonical(batch))
    return sink.digest.hexdigest()[:16]


_HASH_BATCH = 65536
