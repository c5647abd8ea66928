"""Audio files as delivered: what they hold, and their PCM WAV copies."""

from resources.audio.inspect import (
    WAV_CONTAINER,
    AudioFileError,
    AudioInfo,
    Transcoded,
    inspect_audio,
    sniff_container,
    transcode_to_wav,
)

__all__ = [
    "WAV_CONTAINER",
    "AudioFileError",
    "AudioInfo",
    "Transcoded",
    "inspect_audio",
    "sniff_container",
    "transcode_to_wav",
]
