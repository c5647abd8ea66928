"""Deterministic synthetic audio for the sandbox's runs, cheap enough for benchmarks."""

import asyncio
import functools
import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from sandbox.rules import (
    PARAMS_PERIOD,
    AudioFormat,
    AudioParams,
    AudioSizes,
    audio_params,
    delivered_format,
)


@dataclass(frozen=True)
class FormatInfo:
    extension: str
    content_type: str


FORMATS: dict[AudioFormat, FormatInfo] = {
    "WAV": FormatInfo("wav", "audio/wav"),
    "FLAC": FormatInfo("flac", "audio/flac"),
    "MP3": FormatInfo("mp3", "audio/mpeg"),
}

# Bounded: a WAV can reach ~1.3 MB (48 kHz, stereo, float, 3.5 s), so this caps the cache
# near 100 MB in the worst case while keeping repeated fetches of a run free.
_CACHE_SIZE = 96
_NOISE_SPAN = 1 << 20
_MAX_SAMPLES = 48000 * 4 * 2  # more than the longest run (3.5 s, 48 kHz, stereo)


@functools.cache
def _noise() -> np.ndarray:
    # One shared table: slicing it per run costs nothing, drawing fresh noise costs ~1 ms.
    rng = np.random.default_rng(0)
    return rng.standard_normal(_NOISE_SPAN + _MAX_SAMPLES, dtype=np.float32)


def _signal(run_id: int, params: AudioParams, frames: int | None = None) -> np.ndarray:
    """(frames, channels) float32 samples: a tone whose pitch follows the run id, plus noise.

    `frames` defaults to the whole run; fewer give its opening (sized runs repeat it).
    """
    frames = params.frames if frames is None else frames
    t = np.arange(frames, dtype=np.float32) / np.float32(params.sample_rate)
    base_hz = 220.0 * 2.0 ** ((run_id % 24) / 12)  # a two-octave scale
    data = np.empty((frames, params.channels), dtype=np.float32)
    for ch in range(params.channels):
        data[:, ch] = np.sin(np.float32(2 * np.pi * base_hz * (1 + 0.5 * ch)) * t)
    data *= np.float32(0.4)
    # Each run reads its own stretch of the table (7919 is odd, so the start cycles through
    # the whole span): runs differ even where their pitch and parameters agree.
    start = (run_id * 7919) % _NOISE_SPAN
    data += np.float32(0.02) * _noise()[start : start + data.size].reshape(data.shape)
    # Short fades so lossy codecs and listeners get no click at the edges.
    fade = min(frames // 2, params.sample_rate // 100)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)[:, None]
    data[:fade] *= ramp
    data[len(data) - fade :] *= ramp[::-1]
    return data


def _encode(run_id: int, sizes: AudioSizes | None = None) -> bytes:
    params = audio_params(run_id, sizes)
    fmt = delivered_format(run_id)
    if sizes is None:
        data = _signal(run_id, params)
    else:
        # Sized runs can last minutes: their first second repeats, which costs a copy
        # instead of a sine per sample.
        second = _signal(run_id, params, min(params.frames, params.sample_rate))
        if fmt == "WAV":
            return _pcm_wav(second, params)
        data = np.resize(second, (params.frames, params.channels))
    buf = io.BytesIO()
    sf.write(buf, data, params.sample_rate, format=fmt, subtype=params.subtype)
    return _clear_peak_timestamp(buf.getvalue()) if fmt == "WAV" else buf.getvalue()


@functools.lru_cache(maxsize=PARAMS_PERIOD // 9 + 1)  # every MP3 template: ~1 MB in all
def _mp3_template(key: int, sizes: AudioSizes | None = None) -> bytes:
    return _encode(key, sizes)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _render_default(run_id: int) -> bytes:
    return _render(run_id, None)


def _render(run_id: int, sizes: AudioSizes | None) -> bytes:
    if delivered_format(run_id) != "MP3":
        return _encode(run_id, sizes)
    # An MP3 encode takes ~30 ms, ten times a WAV: MP3 runs share the samples of their run
    # id modulo PARAMS_PERIOD (same parameters), and a tag makes each run's bytes its own.
    return _id3_tag(run_id) + _mp3_template(run_id % PARAMS_PERIOD, sizes)


def render_audio(run_id: int, sizes: AudioSizes | None = None) -> bytes:
    """The bytes the sandbox delivers for `run_id`.

    Same run id, same bytes, in the container of `delivered_format(run_id)` with the
    parameters of `audio_params(run_id, sizes)`; different runs give different bytes.
    Sized audio is not cached: a sized WAV renders at ~2 ms per MB, and benchmarks fetch
    thousands of runs or files of many MB, which no cache of a sane size would hold.
    """
    return _render_default(run_id) if sizes is None else _render(run_id, sizes)


_served_sizes: AudioSizes | None = None


def serve_sizes(sizes: AudioSizes | None) -> None:
    """The sizes this process's sandbox serves (`--audio-mb`); None for the default rules."""
    global _served_sizes
    _served_sizes = sizes


def served_audio(run_id: int) -> bytes:
    """What the sandbox of this process delivers for `run_id` (see `serve_sizes`)."""
    return render_audio(run_id, _served_sizes)


async def served_audio_off_loop(run_id: int) -> bytes:
    """`served_audio` from the event loop's executor: rendering takes a millisecond or more
    (the first MP3 of a kind ~30 ms), and the loop serves every other connection meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, served_audio, run_id)


_PCM_TYPES = {"PCM_16": (1, "<i2"), "PCM_24": (1, "<i4"), "FLOAT": (3, "<f4")}


def _pcm_wav(opening: np.ndarray, params: AudioParams) -> bytes:
    """A plain RIFF WAV of `params.frames` frames that repeat `opening`, built with numpy:
    many times faster than libsndfile writing into a BytesIO, which matters when a
    benchmark's sandbox serves gigabytes."""
    tag, dtype = _PCM_TYPES[params.subtype]
    if tag == 3:
        samples = opening.astype(dtype)
    else:
        scale = float(2 ** (15 if params.subtype == "PCM_16" else 23) - 1)
        samples = np.clip(opening * scale, -scale, scale).astype(dtype)
    block = samples.tobytes()
    if params.subtype == "PCM_24":  # the low three bytes of each little-endian int32
        block = np.frombuffer(block, np.uint8).reshape(-1, 4)[:, :3].tobytes()
    channels, frame_bytes = params.channels, len(block) // len(opening)
    size = params.frames * frame_bytes
    fmt = struct.pack(
        "<HHIIHH", tag, channels, params.sample_rate, params.sample_rate * frame_bytes,
        frame_bytes, 8 * frame_bytes // channels,
    )  # fmt: skip
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if tag == 3:  # formats other than integer PCM carry a fact chunk with the frame count
        chunks += b"fact" + struct.pack("<II", 4, params.frames)
    header = b"RIFF" + struct.pack("<I", 4 + len(chunks) + 8 + size) + b"WAVE" + chunks
    data = bytearray(header + b"data" + struct.pack("<I", size))
    whole, rest = divmod(size, len(block))
    data += block * whole
    data += block[:rest]
    return bytes(data)


def _id3_tag(run_id: int) -> bytes:
    """An ID3v2.3 tag with one TXXX frame `run_id=N`; MP3 decoders skip it."""
    body = b"\x00run_id\x00" + str(run_id).encode()
    frame = b"TXXX" + len(body).to_bytes(4, "big") + b"\x00\x00" + body
    size = len(frame)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + frame


def _clear_peak_timestamp(wav: bytes) -> bytes:
    """Zero the write time libsndfile stamps into a float WAV's PEAK chunk.

    Without this the same run would give different bytes (and hashes) from one second to
    the next.
    """
    out = bytearray(wav)
    pos = 12  # after "RIFF", size, "WAVE"
    while pos + 8 <= len(out):
        chunk_id, size = out[pos : pos + 4], int.from_bytes(out[pos + 4 : pos + 8], "little")
        if chunk_id == b"PEAK":
            out[pos + 12 : pos + 16] = bytes(4)  # after the chunk header and the version
            break
        if chunk_id == b"data":
            break
        pos += 8 + size + size % 2  # chunks are padded to even sizes
    return bytes(out)
