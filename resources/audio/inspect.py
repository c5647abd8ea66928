"""What did the download deliver? The container, its layout, and what libsndfile reads.

The API promises WAV but some deliveries are FLAC or MP3, so the container is read from
the bytes, never from the URL. WAV headers are cross-checked against the file size with a
small RIFF chunk walker (sizes are all a truncated or lying file gets wrong); everything
else (sample rate, channels, frames, subtype) comes from libsndfile.

Only WAV gets a structural check here: a FLAC or MP3 header can look fine on a truncated
file, and the proof that it is whole is decoding it to the end, which
`transcode.transcode_to_wav` does (a decode error raises `AudioFileError`).

Known libsndfile limit (https://github.com/libsndfile/libsndfile/issues/1001): for an MP3
with no Xing/Info tag, the frame count is an estimate from the file size and the first
frames' bitrate, and decoding stops there. For a constant-bitrate MP3 the estimate is within
about a frame of the truth (and the decoded audio starts with the encoder's delay); a
variable-bitrate one without the tag can come out much shorter than it is, and nothing here
can tell.
"""

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import soundfile as sf

WAV_CONTAINER = "WAV"

# libsndfile's major format names that each sniffed container may legitimately come out as.
_SNDFILE_FORMATS = {
    "WAV": {"WAV", "WAVEX", "RF64"},
    "FLAC": {"FLAC"},
    "MP3": {"MP3"},
    "OGG": {"OGG"},
}

_RIFF_HEADER = struct.Struct("<4sI4s")
_CHUNK_HEADER = struct.Struct("<4sI")
_DS64_SIZES = struct.Struct("<QQ")  # riffSize, dataSize: the start of an RF64 ds64 chunk
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class AudioInfo:
    container: str  # "WAV", "FLAC", "MP3", "OGG": as detected from the bytes
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    subtype: str  # libsndfile subtype name, e.g. "PCM_16", "PCM_24", "FLOAT", "MPEG_LAYER_III"


class AudioFileError(ValueError):
    """The file is not usable audio; the message says why (no paths of temp files needed,
    but no secrets either)."""


def sniff_container(head: bytes) -> str | None:
    """The container the first bytes of a file announce ("WAV", "FLAC", "MP3", "OGG"), or None."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return WAV_CONTAINER
    if head.startswith(b"fLaC"):
        return "FLAC"
    if head.startswith(b"OggS"):
        return "OGG"
    if head.startswith(b"ID3") or _is_mpeg_audio_frame(head):
        return "MP3"
    return None


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, then no reserved version, layer, bitrate or
    sample rate (which keeps out ADTS AAC, layer 0, and most random bytes)."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate != 15 and rate != 3


def inspect_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """What the file holds, from its bytes; `AudioFileError` if it is not usable audio.

    WAV files must be internally consistent: a RIFF size equal to the file size - 8, every
    chunk (`data` included) inside the file, and whole frames of data. The streaming
    placeholder sizes 0 and 0xFFFFFFFF are rejected: with them a truncated file cannot be
    told from a complete one, and the servers that write them are the ones that stream
    without a Content-Length, so nothing else would notice a cut either.
    """
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        if file_size == 0:
            raise AudioFileError("empty file (0 bytes)")
        head = f.read(16)
        container = sniff_container(head)
        if container is None:
            raise AudioFileError(f"not a recognised audio container (starts with {head[:8]!r})")
        if container == WAV_CONTAINER:
            _check_wav_layout(f, file_size)

    try:
        info = sf.info(os.fspath(path))
    except sf.SoundFileError as err:
        raise AudioFileError(
            f"libsndfile cannot read this {container}: {sndfile_reason(err)}"
        ) from err
    if info.format not in _SNDFILE_FORMATS[container]:
        raise AudioFileError(f"bytes start like {container} but libsndfile reads {info.format}")
    if info.frames <= 0:
        raise AudioFileError(f"{container} holds no audio frames")
    return AudioInfo(
        container=container,
        sample_rate=info.samplerate,
        channels=info.channels,
        frames=info.frames,
        duration_s=info.frames / info.samplerate,
        subtype=info.subtype,
    )


def _check_wav_layout(f: BinaryIO, file_size: int) -> None:
    """Walk the RIFF chunks (headers only; `data` is skipped by seeking) and check that the
    sizes they declare agree with the bytes on disk."""
    ds64_data_size = _check_riff_size(f, file_size)
    block_align, data_size = _walk_chunks(f, file_size, ds64_data_size)
    _check_whole_frames(block_align, data_size)


def _check_riff_size(f: BinaryIO, file_size: int) -> int | None:
    """The size the RIFF header declares must be the file's; returns the data size an RF64
    file's ds64 chunk holds (None for plain RIFF)."""
    f.seek(0)
    magic, riff_size, _ = _RIFF_HEADER.unpack(f.read(_RIFF_HEADER.size))
    ds64_data_size = None
    if magic != b"RIFF":  # RF64 / BW64: 32-bit sizes are -1, the real ones sit in ds64
        riff_size, ds64_data_size = _read_ds64(f)
    elif riff_size in _UNKNOWN_SIZES:
        raise AudioFileError(
            f"WAV header has the streaming placeholder RIFF size {riff_size:#x}: "
            "a complete file cannot be told from a truncated one"
        )
    if riff_size != file_size - 8:
        if riff_size > file_size - 8:
            raise AudioFileError(
                f"truncated WAV: header declares {riff_size + 8} bytes, file has {file_size}"
            )
        raise AudioFileError(
            f"WAV header declares {riff_size + 8} bytes, file has {file_size} "
            f"({file_size - 8 - riff_size} bytes after the RIFF chunk)"
        )
    return ds64_data_size


def _walk_chunks(
    f: BinaryIO, file_size: int, ds64_data_size: int | None
) -> tuple[int | None, int | None]:
    """(bytes per frame from the 'fmt ' chunk, size of the first 'data' chunk), each None
    when missing; every chunk must end inside the file, and nothing may follow the last."""
    block_align = data_size = None
    offset = _RIFF_HEADER.size
    while offset + _CHUNK_HEADER.size <= file_size:
        f.seek(offset)
        chunk_id, size = _CHUNK_HEADER.unpack(f.read(_CHUNK_HEADER.size))
        if chunk_id == b"data" and size == 0xFFFFFFFF and ds64_data_size is not None:
            size = ds64_data_size
        end = offset + _CHUNK_HEADER.size + size
        if end > file_size:
            raise AudioFileError(
                f"WAV {_chunk_name(chunk_id)} chunk declares {size} bytes: "
                f"it runs {end - file_size} bytes past the end of the file"
            )
        if chunk_id == b"fmt " and size >= 16:
            # WAVEFORMAT: tag, channels, rate, bytes/s, then nBlockAlign = bytes per frame
            (block_align,) = struct.unpack_from("<H", f.read(16), 12)
        elif chunk_id == b"data" and data_size is None:
            data_size = size
        # Chunks are word aligned; a pad byte missing after the last one is tolerated
        # (offset then lands one past the end and the loop stops).
        offset = end + (size & 1)
    if offset < file_size:
        raise AudioFileError(f"WAV has {file_size - offset} stray bytes after its last chunk")
    return block_align, data_size


def _check_whole_frames(block_align: int | None, data_size: int | None) -> None:
    if not block_align:
        raise AudioFileError("WAV has no valid 'fmt ' chunk")
    if data_size is None:
        raise AudioFileError("WAV has no 'data' chunk")
    if data_size % block_align:
        raise AudioFileError(
            f"WAV data holds {data_size} bytes, not a whole number of "
            f"{block_align}-byte frames (truncated?)"
        )


def _read_ds64(f: BinaryIO) -> tuple[int, int]:
    """(riff size, data size) from the ds64 chunk that must open an RF64 / BW64 file."""
    chunk = f.read(_CHUNK_HEADER.size + _DS64_SIZES.size)
    if len(chunk) < _CHUNK_HEADER.size + _DS64_SIZES.size or chunk[:4] != b"ds64":
        raise AudioFileError("RF64 WAV without the ds64 chunk that holds its sizes")
    riff_size, data_size = _DS64_SIZES.unpack_from(chunk, _CHUNK_HEADER.size)
    return riff_size, data_size


def _chunk_name(chunk_id: bytes) -> str:
    text = chunk_id.decode("latin-1")
    return repr(text) if chunk_id.isascii() and text.isprintable() else f"0x{chunk_id.hex()}"


def sndfile_reason(err: sf.SoundFileError) -> str:
    """libsndfile's own words, without soundfile's "Error opening '<path>'" prefix."""
    return getattr(err, "error_string", None) or str(err)
