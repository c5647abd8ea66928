"""Audio files as delivered: `inspect` says what a file holds (container, layout, format),
`transcode` makes the PCM WAV the dataset stores. The names others use are re-exported here."""

from resources.audio.inspect import (
    WAV_CONTAINER,
    AudioFileError,
    AudioInfo,
    inspect_audio,
    sniff_container,
)
from resources.audio.transcode import Transcoded, transcode_to_wav

__all__ = [
    "WAV_CONTAINER",
    "AudioFileError",
    "AudioInfo",
    "Transcoded",
    "inspect_audio",
    "sniff_container",
    "transcode_to_wav",
]
