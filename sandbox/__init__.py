"""A local stand-in for the CAMB.AI text-to-sound API: the demo's default peer and the tests'.

`SandboxServer` serves it over real HTTP (`server.py`); `python -m sandbox` runs it alone. The
names tests and benchmarks use are re-exported here.
"""

from sandbox.api import RESULT_ERROR_DETAIL
from sandbox.audio import render_audio
from sandbox.decoy import Decoy, full_backlog
from sandbox.downloads import GZIP_BOMB_BYTES
from sandbox.faults import Faults
from sandbox.rules import (
    AudioParams,
    AudioSizes,
    audio_params,
    bulk_shape,
    delivered_format,
    run_state,
)
from sandbox.server import SandboxServer

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
