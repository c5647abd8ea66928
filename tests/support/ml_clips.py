"""Synthetic clips whose figures are known by construction, and catalogs made of them."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from assets.harvest.catalog_rows import parquet_bytes, table_bytes
from assets.ml.clip_features import FeatureParams, day_features, features_relpath, features_table
from resources.storage import Storage
from resources.storage_resource import StorageResource


def sine(seconds: float, rate: int, amplitude: float, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def square(seconds: float, rate: int, freq: float = 100.0) -> np.ndarray:
    """Full scale: every sample at +1 or -1."""
    return np.where(sine(seconds, rate, 1.0, freq) >= 0, 1.0, -1.0)


def noise(seconds: float, rate: int, level: float, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level * rng.standard_normal((round(seconds * rate), channels))


def write_wav(path: Path, signal: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal, rate, subtype=subtype, format="WAV")
    return path


@dataclass
class Clip:
    run_id: int
    seconds: float = 1.0
    rate: int = 16000
    channels: int = 1
    prompt: str | None = None
    audio_type: str | None = "sound"
    silent: bool = False
    seed: int | None = None  # same seed, same audio (an exact duplicate)
    samples: np.ndarray | None = None  # frames x channels at `rate`, instead of noise

    def signal(self) -> np.ndarray:
        if self.samples is not None:
            return self.samples
        if self.silent:
            return np.zeros((round(self.seconds * self.rate), self.channels))
        seed = self.run_id if self.seed is None else self.seed
        return noise(self.seconds, self.rate, 0.1, seed, self.channels)


def storage(tmp_path: Path) -> StorageResource:
    return StorageResource(
        manifest_root=str(tmp_path / "manifests"),
        audio_root=str(tmp_path / "audio"),
        catalog_root=str(tmp_path / "catalog"),
    )


def catalog_rows(audio_root: Path, day: str, clips: list[Clip]) -> pd.DataFrame:
    """Writes each clip's WAV under ``audio_root/day/`` and returns its `ok` catalog rows."""
    rows = []
    for clip in clips:
        path = write_wav(audio_root / day / f"{clip.run_id}.wav", clip.signal(), clip.rate)
        data = path.read_bytes()
        info = sf.info(str(path))
        rows.append(
            {
                "run_id": clip.run_id,
                "status": "ok",
                "uri": str(path),
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "sample_rate": info.samplerate,
                "channels": info.channels,
                "frames": info.frames,
                "duration_s": info.duration,
                "subtype": info.subtype,
                "prompt": clip.prompt,
                "audio_type": clip.audio_type,
                "attempts": 1,
            }
        )
    return pd.DataFrame(rows)


def write_catalog_day(
    resource: StorageResource, day: str, clips: list[Clip], extra: pd.DataFrame | None = None
) -> pd.DataFrame:
    """A catalog partition of ``clips`` (plus ``extra`` rows as they are), files included."""
    rows = catalog_rows(Path(resource.audio().root), day, clips)
    if extra is not None:
        rows = pd.concat([rows, extra], ignore_index=True)
    catalog: Storage = resource.catalog()
    catalog.write_bytes(parquet_bytes(rows), f"sound_catalog/date={day}/part-0.parquet")
    return rows


def write_features_day(resource: StorageResource, day: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The day's sound_features file, computed in this process as the asset would."""
    ok = rows[rows["status"] == "ok"]
    result = day_features(ok, None, None, FeatureParams())
    resource.catalog().write_bytes(table_bytes(features_table(result.rows)), features_relpath(day))
    return result.rows


def feature_rows(day: str, run_ids, prompts, **overrides) -> pd.DataFrame:
    """`ok` catalog rows with features of files that need not exist, as `read_rows` returns
    them (once in polars): for `select` in memory. Each run its own audio (sha256)."""
    run_ids = list(run_ids)
    frame = pd.DataFrame(
        {
            "date": day,
            "run_id": pd.array(run_ids, dtype="Int64"),
            "uri": [f"/audio/{day}/{i}.wav" for i in run_ids],
            "size_bytes": pd.array([32_044] * len(run_ids), dtype="Int64"),
            "sha256": [f"{i:064x}" for i in run_ids],
            "sample_rate": pd.array([16000] * len(run_ids), dtype="Int32"),
            "channels": pd.array([1] * len(run_ids), dtype="Int32"),
            "frames": pd.array([16000] * len(run_ids), dtype="Int64"),
            "duration_s": 1.0,
            "subtype": "PCM_16",
            "prompt": list(prompts),
            "audio_type": "sound",
            "task_id": pd.array([f"task-{i}" for i in run_ids], dtype="string"),
            "peak_dbfs": -6.0,
            "rms_dbfs": -20.0,
            "lufs": -20.0,
            "clipped_fraction": 0.0,
            "silence_fraction": 0.0,
            "leading_silence_s": 0.0,
            "trailing_silence_s": 0.0,
            "is_silent": pd.array([False] * len(run_ids), dtype="boolean"),
        }
    )
    for name, values in overrides.items():
        frame[name] = values
    return frame
