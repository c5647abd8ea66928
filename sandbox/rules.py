"""Deterministic per-run-id rules of the sandbox, and the API's own limits it plays by.

Pure functions of the run id, so any test can predict what the sandbox will answer for a
run without asking it.
"""

import math
import re
from dataclasses import dataclass
from typing import Literal

MAX_BATCH = 5  # run ids in one bulk results call, at most (the API's documented limit)

RunState = Literal["ready", "pending", "failed", "wrong_type"]
AudioFormat = Literal["WAV", "FLAC", "MP3"]
BulkShape = Literal["output_url", "missing", "null", "status"]

_SAMPLE_RATES = (16000, 22050, 24000, 44100, 48000)
_WAV_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
_FLAC_SUBTYPES = ("PCM_16", "PCM_24")
# Bytes per sample of the PCM a run decodes to (an MP3 decodes to 16-bit PCM).
_SAMPLE_WIDTHS = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4, "MPEG_LAYER_III": 2}

# audio_params and delivered_format only look at run_id modulo these numbers, so two runs
# this far apart get the same parameters (and, with AudioSizes, the same size).
PARAMS_PERIOD = math.lcm(5, 10, 7, 3, 9, 2)
_SIZE_STEP = 263  # coprime with PARAMS_PERIOD: consecutive runs spread over the size range


@dataclass(frozen=True)
class AudioParams:
    """What the delivered audio of a run decodes to."""

    sample_rate: int
    channels: int
    duration_s: float
    subtype: str

    @property
    def frames(self) -> int:
        return round(self.sample_rate * self.duration_s)


@dataclass(frozen=True)
class AudioSizes:
    """Audio sizes on request (`python -m sandbox --audio-mb 0.5-1.5`), for benchmarks.

    Each run's duration is chosen so that its decoded PCM (the WAV soundharvest stores)
    takes between `min_bytes` and `max_bytes`, spread evenly by run id; its state, container,
    sample rate, channels and subtype follow the rules as always.
    """

    min_bytes: int
    max_bytes: int

    def __post_init__(self) -> None:
        if not 0 < self.min_bytes <= self.max_bytes:
            raise ValueError(
                f"audio sizes need 0 < min <= max bytes, got {self.min_bytes}..{self.max_bytes}"
            )

    @classmethod
    def parse_mb(cls, text: str) -> "AudioSizes":
        """`"0.5-1.5"` (a range) or `"50"` (one size), in MB of 10^6 bytes."""
        match = re.fullmatch(r"\s*([0-9.]+)\s*(?:-\s*([0-9.]+)\s*)?", text)
        try:
            low = float(match[1]) if match else math.nan
            high = float(match[2]) if match and match[2] else low
        except ValueError:
            low = high = math.nan
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"audio size must be MB like '50' or '0.5-1.5', not {text!r}")
        return cls(round(low * 1e6), round(high * 1e6))

    def target_bytes(self, run_id: int) -> int:
        step = (run_id * _SIZE_STEP) % PARAMS_PERIOD
        return self.min_bytes + (self.max_bytes - self.min_bytes) * step // (PARAMS_PERIOD - 1)


def run_state(run_id: int) -> RunState:
    """Where the run stands: ready to fetch, still pending, failed, or not a text-to-sound run."""
    if run_id % 100 == 99:
        return "wrong_type"
    if run_id % 50 == 13:
        return "failed"
    if run_id % 10 == 7:
        return "pending"
    return "ready"


def delivered_format(run_id: int) -> AudioFormat:
    """The container the sandbox delivers (the real API's container is undocumented)."""
    if run_id % 9 == 4:
        return "FLAC"
    if run_id % 9 == 5:
        return "MP3"
    return "WAV"


def audio_params(run_id: int, sizes: AudioSizes | None = None) -> AudioParams:
    """What `run_id` decodes to: with `sizes`, a duration that gives the run its size."""
    fmt = delivered_format(run_id)
    if fmt == "WAV":
        subtype = _WAV_SUBTYPES[run_id % 3]
    elif fmt == "FLAC":
        subtype = _FLAC_SUBTYPES[run_id % 2]
    else:
        subtype = "MPEG_LAYER_III"
    sample_rate, channels = _SAMPLE_RATES[run_id % 5], 1 + (run_id // 5) % 2
    duration_s = 0.5 + (run_id % 7) * 0.5
    if sizes is not None:
        frame_bytes = channels * _SAMPLE_WIDTHS[subtype]
        duration_s = max(1, sizes.target_bytes(run_id) // frame_bytes) / sample_rate
    return AudioParams(sample_rate, channels, duration_s, subtype)


def bulk_shape(run_id: int) -> BulkShape:
    """How the bulk results endpoint reports a (non wrong-type) run.

    ready -> `{"output_url": ...}`; failed -> a status object; pending -> key missing
    (`% 20 == 7`), `null` value (`% 20 == 17`), or a status object otherwise. A wrong-type
    run has no shape: it makes the whole batch fail with 400.
    """
    state = run_state(run_id)
    if state == "wrong_type":
        raise ValueError(f"run {run_id} is not a text-to-sound run: its batch fails as a whole")
    if state == "ready":
        return "output_url"
    if state == "pending" and run_id % 20 == 7:
        return "missing"
    if state == "pending" and run_id % 20 == 17:
        return "null"
    return "status"


# Task ids the sandbox did not create name their run and their fate, so a manifest of task ids
# can be written (and its outcome predicted) without creating anything first:
# `task-<run id>` succeeds with that run; a suffix picks another fate.
TaskFate = Literal["success", "pending", "error", "timeout", "payment", "norun", "broken"]
TASK_FATES: tuple[TaskFate, ...] = (
    "success", "pending", "error", "timeout", "payment", "norun", "broken",
)  # fmt: skip
_TASK_ID = re.compile(r"task-([1-9]\d{0,17})(?:-(" + "|".join(TASK_FATES) + "))?")


def task_fate(task_id: str) -> tuple[int, TaskFate] | None:
    """(run id, fate) named by `task_id`, or None for an id the sandbox does not know (404).

    success (`task-123`, or `task-123-success`: two tasks of one run): `SUCCESS` with the
    run id; pending: `PENDING` forever; error / timeout / payment: `ERROR` / `TIMEOUT` /
    `PAYMENT_REQUIRED` with an `exception_reason`; norun: `SUCCESS` without a run id;
    broken: every status call answers 500.
    """
    match = _TASK_ID.fullmatch(task_id)
    if match is None:
        return None
    return int(match[1]), match[2] or "success"  # type: ignore[return-value]


def task_id_for(run_id: int, fate: TaskFate = "success") -> str:
    """The task id that `task_fate` reads back as (run_id, fate)."""
    return f"task-{run_id}" if fate == "success" else f"task-{run_id}-{fate}"
