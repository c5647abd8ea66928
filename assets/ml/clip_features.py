"""What a stored clip sounds like: level, loudness, clipping and silence, streamed in blocks.

One pass over the decoded samples (blocks of ``BLOCK_FRAMES``, so memory does not grow with
the file's length) gives:

- ``peak_dbfs``: the largest absolute sample, ``rms_dbfs``: the root mean square of every
  sample of every channel (full-scale square wave = 0 dBFS, full-scale sine = -3.01 dBFS);
  digital silence gives ``-inf``;
- ``lufs``: integrated loudness per ITU-R BS.1770-4. The K-weighting filter is pyloudnorm's
  own (its coefficients for the file's rate), run with filter state carried from block to
  block; the 400 ms gating blocks with 75 % overlap are built from 100 ms sums of the
  weighted signal, then gated at -70 LUFS and at -10 LU relative, as the standard says.
  ``-inf`` when no block passes the gates, null for clips shorter than one 400 ms block or
  with more than five channels (BS.1770 gives no channel weights there);
- ``clipped_fraction``: share of samples at or above ``clip_threshold_dbfs``;
- ``silence_fraction``, ``leading_silence_s``, ``trailing_silence_s``: the clip is cut into
  windows of ``silence_window_ms``; a window is silent when its RMS (over all channels) is
  below ``silence_threshold_dbfs``; ``is_silent`` when every window is;
- ``audio_profile``, ``audio_fingerprint``: what the clip sounds like, for finding copies of
  it (``assets/ml/audio_fingerprint.py``; its first 2.475 s only).

Only the 100 ms sums are kept for the gating (a float per channel per 100 ms: 36,000 per
channel for an hour), the rest is a handful of running totals.
"""

import contextlib
import functools
import json
import math
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import soundfile as sf

from assets.harvest.catalog_rows import table_bytes
from assets.harvest.catalog_schema import with_nullable_ints
from assets.harvest.settings import SettingsError
from assets.ml.audio_fingerprint import FINGERPRINT_VERSION, Fingerprinter
from resources.storage import Storage
from resources.storage.uris import local_path, open_stored

BLOCK_FRAMES = 65536
FILTER_FRAMES = 4096  # the K-weighting filter runs on pieces this long (its output is new)
GATE_STEP_S = 0.1  # BS.1770: 400 ms blocks, 75 % overlap, so a new block every 100 ms
GATE_STEPS_PER_BLOCK = 4
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs

METRICS = (
    "peak_dbfs",
    "rms_dbfs",
    "lufs",
    "clipped_fraction",
    "silence_fraction",
    "leading_silence_s",
    "trailing_silence_s",
    "is_silent",
)
FEATURES_SCHEMA = with_nullable_ints(
    pa.schema(
        [
            ("run_id", pa.int64()),
            ("sha256", pa.string()),
            ("error", pa.string()),
            ("peak_dbfs", pa.float64()),
            ("rms_dbfs", pa.float64()),
            ("lufs", pa.float64()),
            ("clipped_fraction", pa.float64()),
            ("silence_fraction", pa.float64()),
            ("leading_silence_s", pa.float64()),
            ("trailing_silence_s", pa.float64()),
            ("is_silent", pa.bool_()),
            ("audio_profile", pa.binary()),  # assets/ml/audio_fingerprint.py
            ("audio_fingerprint", pa.binary()),
            ("params", pa.string()),  # the thresholds the row was computed with, as JSON
            ("computed_by", pa.string()),  # "harvest" or "sound_features"
            ("computed_at", pa.timestamp("us", tz="UTC")),
        ]
    )
)
FEATURE_COLUMNS = tuple(FEATURES_SCHEMA.names)
# The `error` of a row whose file was not there when measured; any other error: unreadable.
FILE_MISSING = "stored file is missing"


def features_relpath(day: str) -> str:
    """The day's features file under the catalog root (hive-partitioned like the catalog)."""
    return f"sound_features/date={day}/part-0.parquet"


@dataclass(frozen=True)
class FeatureParams:
    """The thresholds; the defaults are the documented ones (docs/ml.md)."""

    silence_threshold_dbfs: float = -60.0
    silence_window_ms: float = 10.0
    clip_threshold_dbfs: float = -0.001  # about 4 LSB of 16-bit below full scale
    fingerprint: int = FINGERPRINT_VERSION  # rows of an older fingerprint are measured again

    def __post_init__(self) -> None:
        if not -200 < self.silence_threshold_dbfs <= 0:
            raise ValueError(
                f"silence_threshold_dbfs must be in (-200, 0], not {self.silence_threshold_dbfs}"
            )
        if not 0 < self.silence_window_ms <= 10_000:
            raise ValueError(
                f"silence_window_ms must be in (0, 10000], not {self.silence_window_ms}"
            )
        if not -200 < self.clip_threshold_dbfs <= 0:
            raise ValueError(
                f"clip_threshold_dbfs must be in (-200, 0], not {self.clip_threshold_dbfs}"
            )

    def key(self) -> str:
        """Canonical JSON: rows computed with other thresholds are computed again."""
        return json.dumps(asdict(self), sort_keys=True)


class _Windows:
    """Sums of a per-frame quantity over consecutive windows of ``size`` frames, fed in
    blocks of any length: the part of a window left at the end of a block is carried."""

    def __init__(self, size: int, width: int) -> None:
        self.size = size
        self.carry = np.zeros(width)
        self.filled = 0

    def feed(self, values: np.ndarray) -> np.ndarray:
        """The sums (one row per window) of the windows that ``values`` completes."""
        need = self.size - self.filled
        if len(values) < need:
            self.carry += values.sum(axis=0)
            self.filled += len(values)
            return np.empty((0, self.carry.shape[0]))
        first = self.carry + values[:need].sum(axis=0)
        rest = values[need:]
        whole = len(rest) // self.size
        sums = rest[: whole * self.size].reshape(whole, self.size, values.shape[1]).sum(axis=1)
        tail = rest[whole * self.size :]
        self.carry, self.filled = tail.sum(axis=0), len(tail)
        return np.vstack([first[None, :], sums])


class Meter:
    """Running figures of one clip; ``add`` blocks of float samples (frames x channels)."""

    def __init__(self, rate: int, channels: int, params: FeatureParams) -> None:
        self.rate, self.channels = rate, channels
        self.frames = self.clipped = 0
        self.peak = self.sum_squares = 0.0
        self.clip_level = 10 ** (params.clip_threshold_dbfs / 20)
        # Imported on use: scipy (through pyloudnorm too) takes about a second of CPU to
        # import, which every load of the definitions and every harvest paid without them.
        import pyloudnorm
        import scipy.signal

        self._sosfilt = scipy.signal.sosfilt
        # pyloudnorm's K-weighting stages (high shelf, then high pass) as second-order
        # sections. `_filters` is not public API: the tests hold the result to the library's
        # own whole-array integrated_loudness, so a change there fails loudly.
        stages = list(pyloudnorm.Meter(rate)._filters.values())
        self.sos = np.array([[*stage.b, *stage.a] for stage in stages])
        self.gain = math.prod(stage.passband_gain for stage in stages)
        self.zi = np.zeros((len(stages), 2, channels))
        self.gate_steps = _Windows(round(GATE_STEP_S * rate), channels)
        self.step_sums: list[np.ndarray] = []
        self.silence = _Windows(max(1, round(params.silence_window_ms * rate / 1000)), 1)
        self.silence_power = 10 ** (params.silence_threshold_dbfs / 10)
        self.silent_frames = self.leading = self.trailing = 0
        self.heard = False  # a window above the threshold has been seen
        self.fingerprint = Fingerprinter(rate, channels)
        self._work: np.ndarray | None = None
        self._flags = self._power = np.empty(0)

    def add(self, block: np.ndarray) -> None:
        # Work arrays are reused from block to block: a fresh megabyte per step would be
        # mapped and zeroed by the kernel each time (glibc hands big blocks to mmap), which
        # doubled the CPU time in worker processes.
        frames = len(block)
        self.fingerprint.add(block)
        work, flags, power = self._buffers(frames)
        self.frames += frames
        magnitude = np.abs(block, out=work)
        self.peak = max(self.peak, float(magnitude.max(initial=0.0)))
        self.clipped += int(
            np.count_nonzero(np.greater_equal(magnitude, self.clip_level, out=flags))
        )
        squares = np.square(block, out=work)
        self.sum_squares += float(squares.sum())
        for power_sum in self.silence.feed(squares.mean(axis=1, keepdims=True, out=power))[:, 0]:
            self._window(power_sum / self.silence.size < self.silence_power, self.silence.size)
        for start in range(0, frames, FILTER_FRAMES):  # small pieces: small filter outputs
            weighted, self.zi = self._sosfilt(
                self.sos, block[start : start + FILTER_FRAMES], axis=0, zi=self.zi
            )
            weighted *= self.gain
            self.step_sums.append(self.gate_steps.feed(np.square(weighted, out=weighted)))

    def _buffers(self, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._work is None or len(self._work) < frames:
            self._work = np.empty((frames, self.channels))
            self._flags = np.empty((frames, self.channels), dtype=bool)
            self._power = np.empty((frames, 1))
        return self._work[:frames], self._flags[:frames], self._power[:frames]

    def _window(self, silent: bool, frames: int) -> None:
        if silent:
            self.silent_frames += frames
            self.trailing += frames
            if not self.heard:
                self.leading += frames
        else:
            self.heard, self.trailing = True, 0

    def result(self) -> dict[str, Any]:
        if self.frames == 0:
            raise ValueError("no audio frames")
        if self.silence.filled:  # the last, shorter window
            self._window(
                self.silence.carry[0] / self.silence.filled < self.silence_power,
                self.silence.filled,
            )
        samples = self.frames * self.channels
        profile, fingerprint = self.fingerprint.result()
        return {
            "peak_dbfs": _db(self.peak, 20),
            "rms_dbfs": _db(self.sum_squares / samples, 10),
            "lufs": self.integrated_loudness(),
            "clipped_fraction": self.clipped / samples,
            "silence_fraction": self.silent_frames / self.frames,
            "leading_silence_s": self.leading / self.rate,
            "trailing_silence_s": self.trailing / self.rate,
            "is_silent": self.silent_frames == self.frames,
            "audio_profile": profile,
            "audio_fingerprint": fingerprint,
        }

    def integrated_loudness(self) -> float | None:
        """BS.1770-4 gated loudness from the 100 ms sums of the K-weighted signal."""
        steps = np.vstack(self.step_sums)
        blocks = len(steps) - GATE_STEPS_PER_BLOCK + 1
        if blocks < 1 or self.channels > len(CHANNEL_WEIGHTS):
            return None
        cumulative = np.vstack([np.zeros((1, self.channels)), np.cumsum(steps, axis=0)])
        block_frames = GATE_STEPS_PER_BLOCK * self.gate_steps.size
        mean_square = (cumulative[GATE_STEPS_PER_BLOCK:] - cumulative[:blocks]) / block_frames
        weights = np.array(CHANNEL_WEIGHTS[: self.channels])
        with np.errstate(divide="ignore"):
            loudness = -0.691 + 10 * np.log10(mean_square @ weights)
        gated = loudness > ABSOLUTE_GATE_LUFS
        if not gated.any():
            return -math.inf
        relative = -0.691 + 10 * np.log10(mean_square[gated].mean(axis=0) @ weights)
        gated &= loudness > relative + RELATIVE_GATE_LU
        return float(-0.691 + 10 * np.log10(mean_square[gated].mean(axis=0) @ weights))


def _db(value: float, scale: int) -> float:
    return scale * math.log10(value) if value > 0 else -math.inf


def measure(
    source: str | IO[bytes], params: FeatureParams, block_frames: int = BLOCK_FRAMES
) -> dict[str, Any]:
    """The figures of one audio file (a path or a binary reader), read in blocks."""
    with sf.SoundFile(source) as audio:
        meter = Meter(audio.samplerate, audio.channels, params)
        buffer = np.empty((block_frames, audio.channels), dtype="float64")
        while len(block := audio.read(out=buffer)):
            meter.add(block)
    return meter.result()


@dataclass(frozen=True)
class Item:
    """One stored file to measure."""

    run_id: int
    sha256: str
    uri: str


def feature_row(item: Item, params: FeatureParams, computed_by: str) -> dict[str, Any]:
    """``item``'s features row; a file that cannot be decoded gets a row with its error.

    Other failures (storage unreachable, permissions) are not the file's fault and raise.
    """
    row: dict[str, Any] = dict.fromkeys(FEATURE_COLUMNS)
    row.update(run_id=item.run_id, sha256=item.sha256)
    path = local_path(item.uri)
    try:
        with open(path, "rb") if path else open_stored(item.uri) as reader:
            row.update(measure(reader, params))
    except FileNotFoundError:
        row["error"] = FILE_MISSING
    except (sf.SoundFileError, ValueError) as exc:
        # libsndfile's own words, without soundfile's "Error opening <file>:" prefix
        row["error"] = f"cannot decode: {getattr(exc, 'error_string', None) or exc}"
    row.update(params=params.key(), computed_by=computed_by, computed_at=datetime.now(UTC))
    return row


def measure_all(
    items: Sequence[Item], params: FeatureParams, *, computed_by: str, pool: Executor | None = None
) -> Iterator[dict[str, Any]]:
    """Feature rows of ``items`` in their order, measured by ``pool`` (``feature_workers``), or
    in this process without one."""
    measure_one = functools.partial(feature_row, params=params, computed_by=computed_by)
    if pool is None or len(items) <= 1:
        yield from map(measure_one, items)
        return
    yield from pool.map(measure_one, items, chunksize=4)


@contextlib.contextmanager
def feature_workers(workers: int) -> Iterator[Executor | None]:
    """``workers`` processes measuring files for the block, shut down when it ends, failed or
    not; None when ``workers`` is 1 (the caller measures). A step opens them once for all its
    days: workers that outlived their step held every run process at its exit, waiting for
    work that never came.

    Not fork: the caller (Dagster) runs threads, and forking a threaded process is unsafe.
    A fork server starts clean and imports this module once per process (it exits with the
    process); each worker is forked from it on the first file, then (like any non-fork start)
    imports the caller's main module.

    A daemonic process may not start processes at all, and a Celery prefork worker runs its
    steps in one: there the workers are threads (libsndfile and scipy's filter release the
    GIL for part of each block; docs/ml.md has the figures).
    """
    if workers <= 1:
        yield None
        return
    if multiprocessing.current_process().daemon:
        pool: Executor = ThreadPoolExecutor(workers, thread_name_prefix="features")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        yield pool
    finally:
        # Files being measured finish (seconds); files not started yet are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


def reusable(rows: pd.DataFrame | None, params: FeatureParams) -> dict[tuple[int, str], dict]:
    """Earlier rows worth keeping, by (run_id, sha256): same thresholds and no error (a
    failed file is tried again: it costs little and the cause may have gone)."""
    if rows is None or rows.empty:
        return {}
    keep = rows[(rows["params"] == params.key()) & rows["error"].isna()]
    records = keep.astype(object).where(keep.notna(), None).to_dict("records")
    return {(int(r["run_id"]), str(r["sha256"])): r for r in records}


@dataclass(frozen=True)
class DayFeatures:
    rows: pd.DataFrame  # one row per ok catalog row, FEATURE_COLUMNS
    kept: int  # from this asset's earlier file
    from_harvest: int  # computed by the harvest while the file was at hand
    computed: int
    errors: int
    computed_bytes: int  # audio read this time


def day_features(
    ok: pd.DataFrame,
    earlier: pd.DataFrame | None,
    harvested: pd.DataFrame | None,
    params: FeatureParams,
    *,
    pool: Executor | None = None,
) -> DayFeatures:
    """Features of a day's ``ok`` catalog rows (run_id, sha256, uri, size_bytes): an earlier
    row is kept, then a harvest-time row taken, if it has the same file and thresholds;
    everything else is measured, by ``pool`` when given (``feature_workers``)."""
    previous, at_harvest = reusable(earlier, params), reusable(harvested, params)
    rows: dict[int, dict[str, Any]] = {}
    todo: list[Item] = []
    kept = taken = computed_bytes = 0
    for record in ok.itertuples(index=False):
        key = (int(record.run_id), str(record.sha256))
        if key in previous:
            rows[key[0]], kept = previous[key], kept + 1
        elif key in at_harvest:
            rows[key[0]], taken = at_harvest[key], taken + 1
        else:
            todo.append(Item(*key, str(record.uri)))
            computed_bytes += int(record.size_bytes)
    for row in measure_all(todo, params, computed_by="sound_features", pool=pool):
        rows[row["run_id"]] = row
    frame = features_frame(rows[run_id] for run_id in sorted(rows))
    return DayFeatures(
        rows=frame,
        kept=kept,
        from_harvest=taken,
        computed=len(todo),
        errors=int(frame["error"].notna().sum()),
        computed_bytes=computed_bytes,
    )


def features_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(FEATURE_COLUMNS))


def features_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as exactly FEATURES_SCHEMA (the Parquet file of a day); columns it lacks, or
    holds only nulls in, become typed nulls."""
    arrays = [
        pa.array(frame[f.name], f.type, from_pandas=True)
        if f.name in frame and frame[f.name].notna().any()
        else pa.nulls(len(frame), f.type)
        for f in FEATURES_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=FEATURES_SCHEMA)


# -- at harvest time ----------------------------------------------------------------------

HARVEST_STATE = "harvest_features"  # `_state/harvest_features/date=D/`: rows sound_features takes
ENV_HARVEST_FEATURES = "SOUNDHARVEST_HARVEST_FEATURES"  # auto (object stores only), always, never


class HarvestFeatures:
    """Features of files the harvest has just fetched, measured from the verified local copy
    before it goes to storage: on object stores this saves `sound_features` a second
    download (and its egress) of every new file."""

    def __init__(self, params: FeatureParams | None = None) -> None:
        self.params = params or FeatureParams()
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @staticmethod
    def setting() -> str:
        """`$SOUNDHARVEST_HARVEST_FEATURES`: auto (default), always or never."""
        choice = os.environ.get(ENV_HARVEST_FEATURES, "auto").strip().lower() or "auto"
        if choice not in ("auto", "always", "never"):
            raise SettingsError(
                f"{ENV_HARVEST_FEATURES} must be auto, always or never, not {choice!r}"
            )
        return choice

    @staticmethod
    def wanted(audio: Storage, choice: str) -> bool:
        """Whether the harvest measures its files: as the setting says, by default only when
        the audio storage is not local (reading a local file again is cheap)."""
        return choice == "always" or (choice == "auto" and not audio.is_local())

    def add(self, run_id: int, path: Path, sha256: str) -> None:
        """Measure one fetched file (publishing threads call this at once)."""
        row = feature_row(Item(run_id, sha256, str(path)), self.params, "harvest")
        with self._lock:
            self.rows.append(row)

    def save(self, storage: Storage, relpath: str) -> None:
        """Merge the rows into the day's file at `relpath` (newer rows win per run id).

        Called with every ledger checkpoint while publishing threads still add rows.
        """
        with self._lock:
            measured = list(self.rows)
        if not measured:
            return
        frames = [features_frame(measured)]
        if storage.exists(relpath):
            with storage.open(relpath) as file:
                frames.insert(0, pd.read_parquet(file))
        rows = pd.concat(frames, ignore_index=True).drop_duplicates("run_id", keep="last")
        storage.write_bytes(table_bytes(features_table(rows.sort_values("run_id"))), relpath)
