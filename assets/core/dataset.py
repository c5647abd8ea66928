"""Which catalog rows make a training set, in which split, under which version.

The plain logic behind `ml_dataset` (docs/ml.md has the user's view):

1. every `ok` row of every catalog day, with its quality features when `sound_features`
   has them (joined on day, run id and sha256, so features of another file never attach);
2. one row per run id: the earliest day wins;
3. the filters of the spec, each counted in ``dropped``;
4. optionally one row per audio sha256 (exact duplicates): the earliest (day, run id) wins;
5. a split per row from a stable hash of its group key (the normalised prompt by default,
   the run id for runs without one), so a prompt never lands in two splits and a run keeps
   its split whatever other days or filters do;
6. a version derived from the selected rows and the spec.

No `from __future__ import annotations` here: `DatasetSpec` is the base of a Dagster Config.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import IO, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc
from pydantic import BaseModel, ConfigDict, Field

from assets.core.features import METRICS
from resources.storage import Storage

SPLITS = ("train", "validation", "test")
AUDIO_TYPES = ("sound", "music")  # what the text-to-sound API accepts
FORMATS = ("hf", "nemo", "webdataset")
# Bumped when the snapshot's layout or the meaning of a column changes: a new version then.
LAYOUT_VERSION = 1

CATALOG_COLUMNS = (
    "run_id", "uri", "size_bytes", "sha256", "sample_rate", "channels", "frames", "duration_s",
    "subtype", "prompt", "audio_type",
)  # fmt: skip
# The columns of a selected row, in this order (they feed the version).
ROW_COLUMNS = (
    "run_id", "date", "split", "group", "sha256", "size_bytes", "uri", "text", "audio_type",
    "duration_s", "frames", "sample_rate", "channels", "subtype", *METRICS,
)  # fmt: skip
ROW_SCHEMA = pa.schema(
    [
        ("run_id", pa.int64()),
        ("date", pa.string()),
        ("split", pa.string()),
        ("group", pa.string()),
        ("sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("uri", pa.string()),
        ("text", pa.string()),
        ("audio_type", pa.string()),
        ("duration_s", pa.float64()),
        ("frames", pa.int64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("subtype", pa.string()),
        *((name, pa.bool_() if name == "is_silent" else pa.float64()) for name in METRICS),
    ]
)
assert tuple(ROW_SCHEMA.names) == ROW_COLUMNS
_HIVE_DATE = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


class DatasetConfigError(ValueError):
    """A spec that cannot be built; the message starts with the field at fault."""


class DatasetSpec(BaseModel):
    """What goes into a snapshot, how it is split and how it is exported."""

    model_config = ConfigDict(frozen=True)

    # -- selection
    dedupe_audio: bool = Field(
        True, description="Keep one row per audio sha256 (the earliest day, then run id)."
    )
    min_duration_s: float | None = Field(None, description="Shortest clip kept, in seconds.")
    max_duration_s: float | None = Field(None, description="Longest clip kept, in seconds.")
    audio_types: list[str] | None = Field(
        None, description="Keep only these audio types (null: all, rows without a type too)."
    )
    sample_rates: list[int] | None = Field(None, description="Keep only these sample rates.")
    channels: list[int] | None = Field(None, description="Keep only these channel counts.")
    drop_silent: bool = Field(True, description="Drop clips whose features say is_silent.")
    max_clipped_fraction: float | None = Field(
        None, description="Drop clips with a larger share of samples at full scale."
    )
    min_lufs: float | None = Field(None, description="Drop clips quieter than this (LUFS).")
    max_lufs: float | None = Field(None, description="Drop clips louder than this (LUFS).")
    # -- splits
    train_ratio: float = Field(0.8, description="Share of groups in train.")
    validation_ratio: float = Field(0.1, description="Share of groups in validation.")
    test_ratio: float = Field(0.1, description="Share of groups in test.")
    group_by: Literal["prompt", "run_id"] = Field(
        "prompt",
        description="Rows of one group share a split: the normalised prompt (runs without "
        "one by run id), or the run id alone.",
    )
    split_seed: str = Field(
        "soundharvest", description="Salt of the split hash: change it to draw new splits."
    )
    # -- exports
    formats: list[str] = Field(
        ["hf", "nemo"],
        description="Exports to write: hf (Parquet), nemo (JSONL), webdataset (tar shards, a "
        "copy of every clip).",
    )
    mode: Literal["reference", "embedded"] = Field(
        "reference",
        description="HF Parquet audio: reference (path = the stored file's URI, no bytes) or "
        "embedded (the WAV bytes inside).",
    )
    target_sample_rate: int | None = Field(
        None, description="Resample exported audio to this rate (embedded mode only)."
    )
    mono: bool = Field(False, description="Mix exported audio down to mono (embedded mode only).")
    shard_max_bytes: int = Field(
        500_000_000, description="Most audio bytes in one embedded Parquet or tar shard."
    )
    shard_max_rows: int = Field(1_000_000, description="Most rows in one shard.")

    def check(self) -> "DatasetSpec":
        """Cross-field rules, all at once; DatasetConfigError names the first field at fault."""
        ratios = (self.train_ratio, self.validation_ratio, self.test_ratio)
        problems = [
            *(
                f"{name}_ratio: must be between 0 and 1, not {value}"
                for name, value in zip(SPLITS, ratios, strict=True)
                if not 0 <= value <= 1
            ),
            _unless(
                abs(sum(ratios) - 1) < 1e-9,
                f"train_ratio, validation_ratio, test_ratio: must sum to 1, not {sum(ratios):g}",
            ),
            _unless(self.train_ratio > 0, "train_ratio: must be above 0"),
            _unless(
                _ordered(self.min_duration_s, self.max_duration_s),
                f"min_duration_s: {self.min_duration_s} is above max_duration_s "
                f"{self.max_duration_s}",
            ),
            _unless(
                self.min_duration_s is None or self.min_duration_s >= 0,
                "min_duration_s: must not be negative",
            ),
            _unless(
                _ordered(self.min_lufs, self.max_lufs),
                f"min_lufs: {self.min_lufs} is above max_lufs {self.max_lufs}",
            ),
            _unless(
                self.max_clipped_fraction is None or 0 <= self.max_clipped_fraction <= 1,
                "max_clipped_fraction: must be between 0 and 1",
            ),
            _unless(all(v > 0 for v in self.sample_rates or ()), "sample_rates: must be positive"),
            _unless(all(v > 0 for v in self.channels or ()), "channels: must be positive"),
            _unless(bool(self.formats), "formats: name at least one of hf, nemo, webdataset"),
            _known("formats", self.formats, FORMATS),
            _known("audio_types", self.audio_types or [], AUDIO_TYPES),
            _unless(
                len(set(self.formats)) == len(self.formats), "formats: a format is named twice"
            ),
            _unless(
                self.target_sample_rate is None or 1000 <= self.target_sample_rate <= 384_000,
                "target_sample_rate: must be between 1000 and 384000 Hz",
            ),
            _unless(
                self.mode == "embedded" or (self.target_sample_rate is None and not self.mono),
                "target_sample_rate/mono: reference mode points at the stored originals and "
                "cannot resample or mix down; set mode to embedded",
            ),
            _unless(self.shard_max_bytes > 0, "shard_max_bytes: must be above 0"),
            _unless(self.shard_max_rows > 0, "shard_max_rows: must be above 0"),
        ]
        problems = [problem for problem in problems if problem]
        if problems:
            raise DatasetConfigError("; ".join(problems))
        return self

    def quality_filters(self) -> bool:
        return (
            self.drop_silent
            or self.max_clipped_fraction is not None
            or self.min_lufs is not None
            or self.max_lufs is not None
        )

    def resamples(self) -> bool:
        return self.target_sample_rate is not None or self.mono

    def canonical(self) -> dict:
        return self.model_dump(mode="json")


def _unless(holds: bool, problem: str) -> str:
    return "" if holds else problem


def _known(name: str, values: list[str], known: tuple[str, ...]) -> str:
    unknown = [value for value in values if value not in known]
    if not unknown:
        return ""
    return f"{name}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)})"


def _ordered(low: float | None, high: float | None) -> bool:
    return low is None or high is None or low <= high


# -- reading ------------------------------------------------------------------------------


def read_rows(catalog: Storage) -> pd.DataFrame:
    """Every `ok` catalog row of every day (column `date` from the hive path), with the
    features of the same file, or nulls where there are none (or only an error)."""
    rows = _read_hive(catalog, "sound_catalog", CATALOG_COLUMNS, pc.field("status") == "ok")
    features = _read_hive(catalog, "sound_features", ("run_id", "sha256", "error", *METRICS))
    if rows is None:
        return pd.DataFrame(columns=["date", *CATALOG_COLUMNS, *METRICS])
    if features is None:
        return rows.assign(**dict.fromkeys(METRICS))
    features = features[features["error"].isna()].drop(columns="error")
    features = features.drop_duplicates(["date", "run_id", "sha256"])
    return rows.merge(features, on=["date", "run_id", "sha256"], how="left", validate="m:1")


def _read_hive(
    storage: Storage, name: str, columns: tuple[str, ...], where: pc.Expression | None = None
) -> pd.DataFrame | None:
    path = storage.path(name)
    if not storage.exists(name):
        return None
    dataset = ds.dataset(path, filesystem=storage.fs, format="parquet", partitioning=_HIVE_DATE)
    table = dataset.to_table(columns=["date", *columns], filter=where)
    return table.to_pandas(types_mapper=_NULLABLE.get)


_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
_NULLABLE[pa.bool_()] = pd.BooleanDtype()


# -- selection ----------------------------------------------------------------------------


@dataclass
class Selection:
    rows: pd.DataFrame  # ROW_COLUMNS, ordered by split then run id
    considered: int  # distinct ok run ids
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows

    def why_empty(self) -> str:
        if not self.considered:
            return "the catalog has no ok rows (materialize sound_catalog first)"
        reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n)
        return f"every one of {self.considered} ok runs was filtered out: {reasons}"


def select(rows: pd.DataFrame, spec: DatasetSpec) -> Selection:
    """The rows of a snapshot, with their split (see the module docstring for the order)."""
    rows = rows.sort_values(["date", "run_id"], kind="stable")
    earliest = ~rows["run_id"].duplicated()
    selection = Selection(rows.iloc[:0], considered=int(earliest.sum()))
    rows = rows[earliest]

    def keep(mask: pd.Series, why: str) -> None:
        nonlocal rows
        mask = mask.fillna(False).astype(bool)
        selection.dropped[why] = selection.dropped.get(why, 0) + int((~mask).sum())
        rows = rows[mask]

    if spec.min_duration_s is not None:
        keep(rows["duration_s"] >= spec.min_duration_s, f"shorter than {spec.min_duration_s} s")
    if spec.max_duration_s is not None:
        keep(rows["duration_s"] <= spec.max_duration_s, f"longer than {spec.max_duration_s} s")
    if spec.audio_types is not None:
        keep(rows["audio_type"].isin(spec.audio_types), "another audio type")
    if spec.sample_rates is not None:
        keep(rows["sample_rate"].isin(spec.sample_rates), "another sample rate")
    if spec.channels is not None:
        keep(rows["channels"].isin(spec.channels), "another channel count")
    if spec.quality_filters():
        keep(rows["peak_dbfs"].notna(), "without features (materialize sound_features)")
    if spec.drop_silent:
        keep(~rows["is_silent"].astype("boolean"), "silent")
    if spec.max_clipped_fraction is not None:
        keep(rows["clipped_fraction"] <= spec.max_clipped_fraction, "clipped")
    if spec.min_lufs is not None:
        keep(rows["lufs"] >= spec.min_lufs, f"quieter than {spec.min_lufs} LUFS")
    if spec.max_lufs is not None:
        keep(rows["lufs"] <= spec.max_lufs, f"louder than {spec.max_lufs} LUFS")
    if spec.dedupe_audio:
        keep(~rows["sha256"].duplicated(), "same audio as an earlier run")

    text = rows["prompt"].astype("string").fillna("")
    groups = group_keys(rows["run_id"], text, spec.group_by)
    selection.rows = (
        rows.assign(text=text, group=groups, split=assign_splits(groups, spec))
        .sort_values(["split", "run_id"], key=_split_order, kind="stable")
        .reindex(columns=list(ROW_COLUMNS))
        .reset_index(drop=True)
    )
    return selection


def _split_order(column: pd.Series) -> pd.Series:
    return column.map(SPLITS.index) if column.name == "split" else column


def normalise_prompt(text: pd.Series) -> pd.Series:
    """Unicode NFKC, case-folded, whitespace collapsed: "A  Dog barks " == "a dog barks"."""
    return (
        text.astype("string")
        .fillna("")
        .str.normalize("NFKC")
        .str.casefold()
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )


def group_keys(run_ids: pd.Series, prompts: pd.Series, group_by: str) -> pd.Series:
    by_run = "run:" + run_ids.astype("Int64").astype(str)
    if group_by == "run_id":
        return by_run.astype("string")
    normalised = normalise_prompt(prompts)
    return ("prompt:" + normalised).where(normalised != "", by_run).astype("string")


def split_point(key: str, seed: str) -> float:
    """Where ``key`` falls in [0, 1): the first 8 bytes of a BLAKE2b hash, the same in every
    process and Python version (unlike ``hash()``)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_splits(groups: pd.Series, spec: DatasetSpec) -> pd.Series:
    bounds = (spec.train_ratio, spec.train_ratio + spec.validation_ratio)
    unique = groups.drop_duplicates()
    points = {key: split_point(key, spec.split_seed) for key in unique}

    def split(key: str) -> str:
        point = points[key]
        return "train" if point < bounds[0] else "validation" if point < bounds[1] else "test"

    return groups.map({key: split(key) for key in unique}).astype("string")


# -- version ------------------------------------------------------------------------------


def rows_table(rows: pd.DataFrame) -> pa.Table:
    """The selected rows as exactly ROW_SCHEMA, without pandas metadata (it names versions)."""
    table = pa.Table.from_pandas(rows, schema=ROW_SCHEMA, preserve_index=False)
    return table.replace_schema_metadata(None)


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
    (every exported value, in order), streamed through Arrow IPC: same input, same version."""
    sink = _HashSink()
    header = {"layout": LAYOUT_VERSION, "spec": spec.canonical()}
    sink.write(json.dumps(header, sort_keys=True).encode())
    table = rows.cast(ROW_SCHEMA).combine_chunks()
    writer_sink: IO[bytes] = sink  # type: ignore[assignment]
    with pyarrow.ipc.new_stream(writer_sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65536)
    return sink.digest.hexdigest()[:16]
