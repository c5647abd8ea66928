"""The files of a dataset snapshot: Hugging Face Parquet, NeMo JSONL, WebDataset tar shards.

Each file is built in a local work directory and published under its final name on the
dataset storage only once complete and verified (``Storage.publish_file``). Exported audio is
the stored original byte for byte, checked against the catalog's sha256 on the way; with
``target_sample_rate`` / ``mono`` (embedded mode) a clip that needs it is resampled (soxr,
streamed) and mixed down into a local WAV first. The stored originals are never touched.
"""

import hashlib
import io
import json
import math
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import soxr

from assets.core.dataset import DatasetSpec
from assets.core.features import METRICS
from assets.core.stored import open_stored
from resources.storage import Storage, sha256_file

HF_AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HF_SCHEMA = pa.schema(
    [
        ("audio", HF_AUDIO),
        ("text", pa.string()),
        ("run_id", pa.int64()),
        ("date", pa.string()),
        ("duration", pa.float64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("audio_type", pa.string()),
        ("sha256", pa.string()),  # of the stored original
        *((name, pa.bool_() if name == "is_silent" else pa.float64()) for name in METRICS),
    ]
)
_HF_VALUE = {pa.string(): "string", pa.int64(): "int64", pa.int32(): "int32"}
_HF_VALUE |= {pa.float64(): "float64", pa.bool_(): "bool"}
_SUBTYPE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4}
_SUBTYPE_BYTES |= {"DOUBLE": 8}
_WAV_HEADER_BOUND = 256  # RIFF/fmt/fact/PEAK chunks libsndfile writes before the data
_BLOCK_FRAMES = 65536
_COPY_CHUNK = 1 << 20
_ROW_GROUP_BYTES = 64 << 20
_ROW_GROUP_ROWS = 100_000


class SnapshotError(RuntimeError):
    """A snapshot cannot be written as selected (a stored file no longer matches)."""


def hf_features_metadata(schema: pa.Schema = HF_SCHEMA) -> bytes:
    """The ``huggingface`` schema-metadata value: ``datasets`` reads the column types from it,
    and types ``audio`` as ``Audio`` only when its Arrow type is exactly HF_AUDIO."""
    features: dict[str, Any] = {}
    for field in schema:
        if field.type == HF_AUDIO:
            features[field.name] = {"_type": "Audio"}
        else:
            features[field.name] = {"dtype": _HF_VALUE[field.type], "_type": "Value"}
    return json.dumps({"info": {"features": features}}).encode()


@dataclass(frozen=True)
class Written:
    path: str  # relative to the snapshot directory
    size: int
    sha256: str


class SnapshotFiles:
    """Publishes the files of one snapshot, ``{prefix}/...`` on the dataset storage."""

    def __init__(self, storage: Storage, prefix: str, workdir: Path) -> None:
        self.storage, self.prefix, self.workdir = storage, prefix, workdir
        self.written: list[Written] = []
        self._serial = 0

    def scratch(self, suffix: str) -> Path:
        self._serial += 1
        return self.workdir / f".scratch-{self._serial}{suffix}"

    def publish(self, local: Path, path: str) -> Written:
        size, digest = local.stat().st_size, sha256_file(local)
        self.storage.publish_file(
            str(local), f"{self.prefix}/{path}", size=size, sha256=digest, move=True
        )
        return self._record(Written(path, size, digest))

    def put(self, data: bytes, path: str) -> Written:
        self.storage.write_bytes(data, f"{self.prefix}/{path}")
        return self._record(Written(path, len(data), hashlib.sha256(data).hexdigest()))

    def _record(self, written: Written) -> Written:
        self.written.append(written)
        return written


# -- audio --------------------------------------------------------------------------------


def needs_conversion(row: Any, spec: DatasetSpec) -> bool:
    resample = spec.target_sample_rate is not None and spec.target_sample_rate != row.sample_rate
    return resample or (spec.mono and row.channels > 1)


def exported_format(row: Any, spec: DatasetSpec) -> tuple[int, int]:
    """(sample rate, channels) of the exported clip."""
    if not needs_conversion(row, spec):
        return int(row.sample_rate), int(row.channels)
    return spec.target_sample_rate or int(row.sample_rate), 1 if spec.mono else int(row.channels)


def exported_size_bound(row: Any, spec: DatasetSpec) -> int:
    """At least the byte size of the exported clip (exact when it is the original)."""
    if not needs_conversion(row, spec):
        return int(row.size_bytes)
    rate, channels = exported_format(row, spec)
    frames = math.ceil(row.frames * rate / row.sample_rate) + 16  # soxr's length, plus slack
    width = _SUBTYPE_BYTES.get(row.subtype, 2)
    return _WAV_HEADER_BOUND + frames * channels * width


def convert(row: Any, spec: DatasetSpec, dest: Path) -> Path:
    """The stored clip resampled / mixed down into the local WAV ``dest``, block by block."""
    rate, channels = exported_format(row, spec)
    subtype = row.subtype if row.subtype in _SUBTYPE_BYTES else "PCM_16"
    with (
        open_stored(row.uri) as stored,
        sf.SoundFile(stored) as source,
        sf.SoundFile(dest, "w", rate, channels, subtype=subtype, format="WAV") as out,
    ):
        stream = (
            soxr.ResampleStream(source.samplerate, rate, channels, dtype="float32")
            if rate != source.samplerate
            else None
        )
        for block in source.blocks(_BLOCK_FRAMES, dtype="float32", always_2d=True):
            if channels != source.channels:
                block = block.mean(axis=1, keepdims=True, dtype="float32")
            out.write(stream.resample_chunk(block) if stream else block)
        if stream:
            out.write(stream.resample_chunk(np.zeros((0, channels), "float32"), last=True))
    return dest


class _Verified:
    """Reads a stored original while hashing it; ``check`` compares with the catalog."""

    def __init__(self, reader: IO[bytes], row: Any) -> None:
        self.reader, self.row = reader, row
        self.digest, self.size = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.reader.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def check(self) -> None:
        if (self.size, self.digest.hexdigest()) != (self.row.size_bytes, self.row.sha256):
            raise SnapshotError(
                f"run {self.row.run_id}: the stored file {self.row.uri} no longer matches its "
                f"catalog row ({self.size} bytes); rerun sound_files / sound_catalog for "
                f"{self.row.date}"
            )


def audio_bytes(row: Any, spec: DatasetSpec, files: SnapshotFiles) -> bytes:
    """The exported clip's bytes (the original, verified, or its conversion)."""
    if needs_conversion(row, spec):
        local = convert(row, spec, files.scratch(".wav"))
        try:
            return local.read_bytes()
        finally:
            local.unlink()
    with open_stored(row.uri) as stored:
        reader = _Verified(stored, row)
        data = reader.read()
    reader.check()
    return data


# -- shards -------------------------------------------------------------------------------


def shard_slices(sizes: list[int], max_bytes: int, max_rows: int) -> list[slice]:
    """Consecutive shards of at most ``max_rows`` rows and ``max_bytes`` bytes (a single row
    larger than that gets a shard of its own); at least one shard, possibly empty."""
    shards, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and (total + size > max_bytes or index - start >= max_rows):
            shards.append(slice(start, index))
            start, total = index, 0
        total += size
    shards.append(slice(start, len(sizes)))
    return shards


def shard_name(split: str, index: int, count: int, suffix: str) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{suffix}"


# -- Hugging Face -------------------------------------------------------------------------


def write_hf(files: SnapshotFiles, split: str, rows: pd.DataFrame, spec: DatasetSpec) -> None:
    """``hf/{split}-0000i-of-0000N.parquet``: reference mode keeps the stored file's URI as
    the audio path; embedded mode puts the WAV bytes in and names the path ``{run_id}.wav``."""
    embedded = spec.mode == "embedded"
    sizes = [exported_size_bound(r, spec) if embedded else 0 for r in rows.itertuples()]
    shards = shard_slices(sizes, spec.shard_max_bytes, spec.shard_max_rows)
    schema = HF_SCHEMA.with_metadata({b"huggingface": hf_features_metadata()})
    for index, shard in enumerate(shards):
        local = files.scratch(".parquet")
        with pq.ParquetWriter(local, schema, compression="zstd") as writer:
            for group in _row_groups(rows.iloc[shard], sizes[shard], embedded):
                writer.write_table(_hf_table(group, spec, files, schema), row_group_size=len(group))
        files.publish(local, f"hf/{shard_name(split, index, len(shards), '.parquet')}")


def _row_groups(rows: pd.DataFrame, sizes: list[int], embedded: bool) -> Iterator[pd.DataFrame]:
    """Row groups bounded in rows and (embedded) audio bytes: what is held in memory."""
    limit = _ROW_GROUP_BYTES if embedded else math.inf
    for group in shard_slices(sizes, limit, _ROW_GROUP_ROWS):  # type: ignore[arg-type]
        if group.stop > group.start:
            yield rows.iloc[group]


def _hf_table(rows: pd.DataFrame, spec: DatasetSpec, files: SnapshotFiles, schema: pa.Schema):
    if spec.mode == "embedded":
        audio = [
            {"bytes": audio_bytes(r, spec, files), "path": f"{r.run_id}.wav"}
            for r in rows.itertuples()
        ]
        formats = [exported_format(r, spec) for r in rows.itertuples()]
        rates, channels = zip(*formats, strict=True) if formats else ((), ())
    else:
        audio = [{"bytes": None, "path": uri} for uri in rows["uri"]]
        rates, channels = rows["sample_rate"], rows["channels"]
    columns = {
        "audio": pa.array(audio, HF_AUDIO),
        "text": rows["text"],
        "run_id": rows["run_id"],
        "date": rows["date"],
        "duration": rows["duration_s"],
        "sample_rate": list(rates),
        "channels": list(channels),
        "audio_type": rows["audio_type"],
        "sha256": rows["sha256"],
        **{name: rows[name] for name in METRICS},
    }
    arrays = [pa.array(columns[f.name], f.type, from_pandas=True) for f in HF_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=schema)


# -- NeMo ---------------------------------------------------------------------------------


def write_nemo(files: SnapshotFiles, split: str, rows: pd.DataFrame) -> None:
    """``nemo/{split}.jsonl``: one line per clip, pointing at the stored original."""
    lines = pl.DataFrame(
        {
            "audio_filepath": rows["uri"].astype(str).tolist(),
            "duration": rows["duration_s"].astype(float).tolist(),
            "text": rows["text"].astype(str).tolist(),
            "run_id": rows["run_id"].astype("int64").tolist(),
            "audio_type": rows["audio_type"].astype(object).where(rows["audio_type"].notna(), None),
        },
        schema={
            "audio_filepath": pl.String,
            "duration": pl.Float64,
            "text": pl.String,
            "run_id": pl.Int64,
            "audio_type": pl.String,
        },
    )
    local = files.scratch(".jsonl")
    lines.write_ndjson(local)
    files.publish(local, f"nemo/{split}.jsonl")


# -- WebDataset ---------------------------------------------------------------------------


def sample_json(row: Any, spec: DatasetSpec) -> bytes:
    rate, channels = exported_format(row, spec)
    record = {
        "run_id": int(row.run_id),
        "text": row.text,
        "split": row.split,
        "date": row.date,
        "duration": float(row.duration_s),
        "sample_rate": rate,
        "channels": channels,
        "audio_type": None if pd.isna(row.audio_type) else row.audio_type,
        "sha256": row.sha256,
        **{name: _json_number(getattr(row, name)) for name in METRICS},
    }
    return json.dumps(record, ensure_ascii=False, allow_nan=False).encode()


def _json_number(value: Any) -> Any:
    """NaN, NA and infinities (a silent clip's dBFS) become null: JSON has no such numbers."""
    if value is None or pd.isna(value):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return float(value) if math.isfinite(value) else None


def write_webdataset(
    files: SnapshotFiles, split: str, rows: pd.DataFrame, spec: DatasetSpec
) -> None:
    """``webdataset/{split}-00000i.tar``: per clip ``{run_id}.wav`` and ``{run_id}.json``."""
    sizes = [exported_size_bound(r, spec) for r in rows.itertuples()]
    for index, shard in enumerate(shard_slices(sizes, spec.shard_max_bytes, spec.shard_max_rows)):
        local = files.scratch(".tar")
        with tarfile.open(local, "w", format=tarfile.PAX_FORMAT) as tar:
            for row in rows.iloc[shard].itertuples():
                _add_sample(tar, row, spec, files)
        files.publish(local, f"webdataset/{split}-{index:06d}.tar")


def _add_sample(tar: tarfile.TarFile, row: Any, spec: DatasetSpec, files: SnapshotFiles) -> None:
    if needs_conversion(row, spec):
        local = convert(row, spec, files.scratch(".wav"))
        try:
            with local.open("rb") as wav:
                tar.addfile(_member(f"{row.run_id}.wav", local.stat().st_size), wav)
        finally:
            local.unlink()
    else:
        with open_stored(row.uri) as stored:
            reader = _Verified(stored, row)
            try:
                tar.addfile(_member(f"{row.run_id}.wav", int(row.size_bytes)), reader)  # type: ignore[arg-type]
            finally:
                reader.check()  # a file shorter than its record ends the copy early
    meta = sample_json(row, spec)
    tar.addfile(_member(f"{row.run_id}.json", len(meta)), io.BytesIO(meta))


def _member(name: str, size: int) -> tarfile.TarInfo:
    """Fixed owner and time: the same clips make the same tar bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info
