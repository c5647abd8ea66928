"""A local stand-in for the CAMB.AI text-to-sound API: the demo's default peer and the tests'."""

from sandbox.audio import render_audio
from sandbox.decoy import Decoy, full_backlog
from sandbox.rules import (
    AudioParams,
    AudioSizes,
    audio_params,
    bulk_shape,
    delivered_format,
    run_state,
)
from sandbox.server import GZIP_BOMB_BYTES, RESULT_ERROR_DETAIL, Faults, SandboxServer

__all__ = [
    "GZIP_BOMB_BYTES",
    "RESULT_ERROR_DETAIL",
    "AudioParams",
    "AudioSizes",
    "Decoy",
    "Faults",
    "SandboxServer",
    "audio_params",
    "bulk_shape",
    "delivered_format",
    "full_backlog",
    "render_audio",
    "run_state",
]
