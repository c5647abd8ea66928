"""Deterministic per-run-id rules of the sandbox.

Pure functions of the run id, so any test can predict what the sandbox will answer for a
run without asking it.
"""

from dataclasses import dataclass
from typing import Literal

RunState = Literal["ready", "pending", "failed", "wrong_type"]
AudioFormat = Literal["WAV", "FLAC", "MP3"]
BulkShape = Literal["output_url", "missing", "null", "status"]

_SAMPLE_RATES = (16000, 22050, 24000, 44100, 48000)
_WAV_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
_FLAC_SUBTYPES = ("PCM_16", "PCM_24")


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


def audio_params(run_id: int) -> AudioParams:
    fmt = delivered_format(run_id)
    if fmt == "WAV":
        subtype = _WAV_SUBTYPES[run_id % 3]
    elif fmt == "FLAC":
        subtype = _FLAC_SUBTYPES[run_id % 2]
    else:
        subtype = "MPEG_LAYER_III"
    return AudioParams(
        sample_rate=_SAMPLE_RATES[run_id % 5],
        channels=1 + (run_id // 5) % 2,
        duration_s=0.5 + (run_id % 7) * 0.5,
        subtype=subtype,
    )


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
