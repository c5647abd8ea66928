"""What an `ml_dataset` snapshot is made of: the spec its config is built on, and its rules.

Apart from `assets.ml.dataset.selection` (which needs polars) so that loading the definitions, which
declares the asset's config, does not import the query engine.

No `from __future__ import annotations` here: `DatasetSpec` is the base of a Dagster Config.
"""

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from assets.ml.audio_fingerprint import DEFAULT_THRESHOLD as AUDIO_THRESHOLD
from assets.ml.prompt_similarity import DEFAULT_TAKE_NUMBERS
from assets.ml.prompt_similarity import DEFAULT_THRESHOLD as PROMPT_THRESHOLD

SPLITS = ("train", "validation", "test")
AUDIO_TYPES = ("sound", "music")  # what the text-to-sound API accepts
FORMATS = ("hf", "nemo", "webdataset")


class DatasetConfigError(ValueError):
    """A spec that cannot be built; the message starts with the field at fault."""


class DatasetSpec(BaseModel):
    """What goes into a snapshot, how it is split and how it is exported."""

    model_config = ConfigDict(frozen=True)

    # -- selection
    dedupe_audio: bool = Field(
        True, description="Keep one row per audio sha256 (the earliest day, then run id)."
    )
    dedupe_near_audio: bool = Field(
        False,
        description="Keep one row per cluster of the same sound (fingerprints, not bytes): "
        "the earliest day, then run id.",
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
    train_ratio: float = Field(
        0.8, description="Share of the clips in train (as near as whole groups allow)."
    )
    validation_ratio: float = Field(0.1, description="Share of the clips in validation.")
    test_ratio: float = Field(0.1, description="Share of the clips in test.")
    group_by: Literal["similarity", "prompt", "run_id"] = Field(
        "similarity",
        description="Rows of one group share a split. similarity: runs whose prompts are "
        "near-copies or whose clips are the same sound, each run keeping its earlier split; "
        "prompt: the normalised prompt (runs without one by run id); run_id: the run alone.",
    )
    prompt_similarity: float = Field(
        PROMPT_THRESHOLD,
        description="Jaccard similarity of two prompts' words and word trigrams (punctuation, "
        "take markers and take numbers left out) from which they share a group, when they ask "
        "for the same numbers (take_numbers).",
    )
    take_numbers: Literal["trailing", "marked", "all"] = Field(
        DEFAULT_TAKE_NUMBERS,
        description="Which numbers in a prompt tell takes apart and are left out when prompts "
        "are compared: trailing (after take, v, version, seed, # or in parentheses: 'take 3', "
        "'v2', '#3', '(2)'; and a bare number ending the prompt: 'explosion 3'), marked (those "
        "but a bare number ending the prompt), all (every number: the rule before). Any other "
        "number is what the prompt asks for: 'group 7', '1980s', '808', '3 gunshots' make "
        "other prompts than 'group 8', '1990s', '909', '4 gunshots'.",
    )
    audio_similarity: float = Field(
        AUDIO_THRESHOLD,
        description="Correlation of two clips' fingerprints from which they are the same "
        "sound (share a group; dedupe_near_audio keeps one).",
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
            _unless(0 < self.prompt_similarity <= 1, "prompt_similarity: must be in (0, 1]"),
            _unless(0 < self.audio_similarity <= 1, "audio_similarity: must be in (0, 1]"),
            _unless(
                not self.dedupe_near_audio or self.group_by == "similarity",
                "dedupe_near_audio: needs group_by similarity (its fingerprints)",
            ),
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

    def draw(self) -> str:
        """Which draw of splits this is: the seed and the ratios. Sticky splits are kept per
        draw, so a new seed (or new ratios) draws afresh, and going back finds the old."""
        key = json.dumps([self.split_seed, self.train_ratio, self.validation_ratio])
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _unless(holds: bool, problem: str) -> str:
    return "" if holds else problem


def _known(name: str, values: list[str], known: tuple[str, ...]) -> str:
    unknown = [value for value in values if value not in known]
    if not unknown:
        return ""
    return f"{name}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)})"


def _ordered(low: float | None, high: float | None) -> bool:
    return low is None or high is None or low <= high
