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
from types import SimpleNamespace
from typing import IO, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import soxr

from assets.ml.clip_features import METRICS
from assets.ml.dataset.spec import DatasetSpec
from resources.storage import Storage, sha256_file
from resources.storage.uris import open_stored

HF_AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HF_SCHEMA = pa.schema(
    [
        ("audio", HF_AUDIO),
        ("text", pa.string()),
        ("run_id", pa.int64()),
        ("group_id", pa.int64()),  # runs of one group share it: GroupKFold's groups
        ("date", pa.string()),
        ("duration", pa.float64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("audio_type", pa.string()),
        ("sha256", pa.string()),  # of the stored original
        ("task_id", pa.string()),
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


def exported_size_bounds(rows: pa.Table, spec: DatasetSpec) -> list[int]:
    """Per row, at least the byte size of the exported clip (exact when it is the original)."""
    size = rows["size_bytes"].to_numpy()
    if not spec.resamples():
        return size.tolist()
    rate, channels = rows["sample_rate"].to_numpy(), rows["channels"].to_numpy()
    out_rate = np.full_like(rate, spec.target_sample_rate) if spec.target_sample_rate else rate
    out_channels = np.ones_like(channels) if spec.mono else channels
    width = np.array([_SUBTYPE_BYTES.get(s, 2) for s in rows["subtype"].to_pylist()])
    frames = np.ceil(rows["frames"].to_numpy() * out_rate / rate) + 16  # soxr's length + slack
    bound = _WAV_HEADER_BOUND + frames.astype("int64") * out_channels * width
    converted = (out_rate != rate) | (out_channels != channels)
    return np.where(converted, bound, size).tolist()


def records(rows: pa.Table) -> Iterator[Any]:
    """The rows one by one, with attribute access (row.uri), a batch at a time."""
    for batch in rows.to_batches(max_chunksize=1024):
        for record in batch.to_pylist():
            yield SimpleNamespace(**record)


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


def shard_slices(
    sizes: list[int] | None, rows: int, max_bytes: float, max_rows: int, offset: int = 0
) -> list[slice]:
    """Consecutive shards of at most ``max_rows`` rows and ``max_bytes`` bytes (``sizes``:
    bytes per row, None when only rows count); a single row larger than ``max_bytes`` gets
    a shard of its own. Slices are offset by ``offset``; at least one, possibly empty."""
    if sizes is None:
        starts = range(0, max(rows, 1), max_rows)
        return [slice(offset + i, offset + min(i + max_rows, rows)) for i in starts]
    shards, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and (total + size > max_bytes or index - start >= max_rows):
            shards.append(slice(offset + start, offset + index))
            start, total = index, 0
        total += size
    shards.append(slice(offset + start, offset + len(sizes)))
    return shards


def shard_name(split: str, index: int, count: int, suffix: str) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{suffix}"


# -- Hugging Face -------------------------------------------------------------------------


def write_hf(files: SnapshotFiles, split: str, rows: pa.Table, spec: DatasetSpec) -> None:
    """``hf/{split}-0000i-of-0000N.parquet``: reference mode keeps the stored file's URI as
    the audio path; embedded mode puts the WAV bytes in and names the path ``{run_id}.wav``."""
    embedded = spec.mode == "embedded"
    sizes = exported_size_bounds(rows, spec) if embedded else None
    shards = shard_slices(sizes, rows.num_rows, spec.shard_max_bytes, spec.shard_max_rows)
    schema = HF_SCHEMA.with_metadata({b"huggingface": hf_features_metadata()})
    for index, shard in enumerate(shards):
        local = files.scratch(".parquet")
        group_limit = _ROW_GROUP_BYTES if embedded else math.inf
        with pq.ParquetWriter(local, schema, compression="zstd") as writer:
            for group in shard_slices(
                sizes[shard] if sizes else None, shard.stop - shard.start, group_limit,
                _ROW_GROUP_ROWS, offset=shard.start,
            ):  # fmt: skip
                part = rows.slice(group.start, group.stop - group.start)
                table = _hf_embedded(part, spec, files) if embedded else _hf_reference(part)
                writer.write_table(table.cast(schema), row_group_size=part.num_rows)
        files.publish(local, f"hf/{shard_name(split, index, len(shards), '.parquet')}")


def _hf_reference(rows: pa.Table) -> pa.Table:
    uris = rows["uri"].combine_chunks().cast(pa.string())
    audio = pa.StructArray.from_arrays([pa.nulls(len(uris), pa.binary()), uris], fields=HF_AUDIO)
    return _hf_table(rows, audio, rows["sample_rate"], rows["channels"])


def _hf_embedded(rows: pa.Table, spec: DatasetSpec, files: SnapshotFiles) -> pa.Table:
    clips = list(records(rows))
    data = pa.array([audio_bytes(r, spec, files) for r in clips], pa.binary())
    paths = pa.array([f"{r.run_id}.wav" for r in clips], pa.string())
    audio = pa.StructArray.from_arrays([data, paths], fields=HF_AUDIO)
    rates, channels = zip(*(exported_format(r, spec) for r in clips), strict=True)
    return _hf_table(rows, audio, pa.array(rates, pa.int32()), pa.array(channels, pa.int32()))


def _hf_table(rows: pa.Table, audio: pa.Array, rates: Any, channels: Any) -> pa.Table:
    columns = {
        "audio": audio,
        "text": rows["text"],
        "run_id": rows["run_id"],
        "group_id": rows["group_id"],
        "date": rows["date"],
        "duration": rows["duration_s"],
        "sample_rate": rates,
        "channels": channels,
        "audio_type": rows["audio_type"],
        "sha256": rows["sha256"],
        "task_id": rows["task_id"],
        **{name: rows[name] for name in METRICS},
    }
    return pa.table([columns[name] for name in HF_SCHEMA.names], names=HF_SCHEMA.names)


# -- NeMo ---------------------------------------------------------------------------------


def write_nemo(files: SnapshotFiles, split: str, rows: pa.Table) -> None:
    """``nemo/{split}.jsonl``: one line per clip, pointing at the stored original."""
    columns = {"uri": "audio_filepath", "duration_s": "duration", "text": "text"}
    columns |= {"run_id": "run_id", "group_id": "group_id", "audio_type": "audio_type"}
    columns |= {"task_id": "task_id"}
    lines = pl.from_arrow(rows.select(list(columns))).rename(columns)
    local = files.scratch(".jsonl")
    lines.write_ndjson(local)  # type: ignore[union-attr]
    files.publish(local, f"nemo/{split}.jsonl")


# -- WebDataset ---------------------------------------------------------------------------


def sample_json(row: Any, spec: DatasetSpec) -> bytes:
    rate, channels = exported_format(row, spec)
    record = {
        "run_id": row.run_id,
        "text": row.text,
        "split": row.split,
        "group_id": row.group_id,
        "date": row.date,
        "duration": row.duration_s,
        "sample_rate": rate,
        "channels": channels,
        "audio_type": row.audio_type,
        "sha256": row.sha256,
        "task_id": row.task_id,
        **{name: _json_number(getattr(row, name)) for name in METRICS},
    }
    return json.dumps(record, ensure_ascii=False, allow_nan=False).encode()


def _json_number(value: Any) -> Any:
    """Infinities (a silent clip's dBFS) and NaN become null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_webdataset(files: SnapshotFiles, split: str, rows: pa.Table, spec: DatasetSpec) -> None:
    """``webdataset/{split}-00000i.tar``: per clip ``{run_id}.wav`` and ``{run_id}.json``."""
    sizes = exported_size_bounds(rows, spec)
    shards = shard_slices(sizes, rows.num_rows, spec.shard_max_bytes, spec.shard_max_rows)
    for index, shard in enumerate(shards):
        local = files.scratch(".tar")
        with tarfile.open(local, "w", format=tarfile.PAX_FORMAT) as tar:
            for row in records(rows.slice(shard.start, shard.stop - shard.start)):
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
                tar.addfile(_member(f"{row.run_id}.wav", row.size_bytes), reader)  # type: ignore[arg-type]
            finally:
                reader.check()  # a file shorter than its record ends the copy early
    meta = sample_json(row, spec)
    tar.addfile(_member(f"{row.run_id}.json", len(meta)), io.BytesIO(meta))


def _member(name: str, size: int) -> tarfile.TarInfo:
    """Fixed owner and time: the same clips make the same tar bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info
