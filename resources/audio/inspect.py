"""What did the download deliver? Inspect audio files, and normalise them to PCM WAV.

The API promises WAV but some deliveries are FLAC or MP3, so the container is read from
the bytes, never from the URL. WAV headers are cross-checked against the file size with a
small RIFF chunk walker (sizes are all a truncated or lying file gets wrong); everything
else (sample rate, channels, frames, subtype, decoding) comes from libsndfile.

Only WAV gets a structural check here: a FLAC or MP3 header can look fine on a truncated
file, and the proof that it is whole is decoding it to the end, which `transcode_to_wav`
does (a decode error raises `AudioFileError`).

Known libsndfile limit (libsndfile issue #1001): for an MP3 with no Xing/Info tag, the frame
count is an estimate from the file size and the first frames' bitrate, and decoding stops
there. For a constant-bitrate MP3 the estimate is within about a frame of the truth (and
the decoded audio starts with the encoder's delay); a variable-bitrate one without the tag
can come out much shorter than it is, and nothing here can tell.
"""

import hashlib
import io
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

WAV_CONTAINER = "WAV"

# libsndfile's major format names that each sniffed container may legitimately come out as.
_SNDFILE_FORMATS = {
    "WAV": {"WAV", "WAVEX", "RF64"},
    "FLAC": {"FLAC"},
    "MP3": {"MP3"},
    "OGG": {"OGG"},
}

# Integer PCM keeps its width and is read as the matching integer type, so the copy is
# sample-exact by construction, with no float scaling convention in between. Everything
# else is read as float, the one type every decoder scales (libsndfile does not scale float
# data read as int: 0.5 would come out as 0), then written with clipping (soundfile turns it
# on), so a lossy decoder's overshoot past full scale saturates instead of wrapping around.
_PCM_TARGETS: dict[str, tuple[str, str]] = {
    "PCM_S8": ("PCM_16", "int16"),
    "PCM_U8": ("PCM_16", "int16"),
    "PCM_16": ("PCM_16", "int16"),
    "PCM_24": ("PCM_24", "int32"),
    "PCM_32": ("PCM_32", "int32"),
    "FLOAT": ("PCM_24", "float32"),
    "DOUBLE": ("PCM_24", "float64"),
}
_LOSSY_TARGET = ("PCM_16", "float32")

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


@dataclass(frozen=True)
class Transcoded:
    """A WAV written by `transcode_to_wav`: its info, size and sha256 (hashed as written)."""

    audio: AudioInfo
    size_bytes: int
    sha256: str


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
        raise AudioFileError(f"libsndfile cannot read this {container}: {_reason(err)}") from err
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


def _reason(err: sf.SoundFileError) -> str:
    """libsndfile's own words, without soundfile's "Error opening '<path>'" prefix."""
    return getattr(err, "error_string", None) or str(err)


def transcode_to_wav(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, block_frames: int = 65536
) -> Transcoded:
    """Decode `src` block by block and write it to `dst` as PCM WAV; returns `dst`'s info,
    size and sha256.

    Sample rate and channels are kept; integer PCM keeps its width (PCM_16 / PCM_24 from
    FLAC are copied sample-exactly), lossy sources become PCM_16. `dst` appears only when
    complete and inspected: the WAV is written to a hidden temporary file beside it and
    renamed. On error nothing new is left behind (an existing `dst` is left untouched).
    The sha256 is computed as the WAV is written (`_HashingWav`), so the file is read back
    only when libsndfile's final header was not the one foreseen.
    """
    if block_frames < 1:
        raise ValueError(f"block_frames must be at least 1, not {block_frames}")
    source = inspect_audio(src)
    subtype, dtype = _PCM_TARGETS.get(source.subtype, _LOSSY_TARGET)
    dst = Path(dst)
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        frame_bytes = source.channels * _PCM_WIDTH[subtype]
        with open(fd, "w+b") as raw:
            hashing = _HashingWav(raw, source.frames * frame_bytes)
            with sf.SoundFile(
                hashing,
                "w",
                samplerate=source.sample_rate,
                channels=source.channels,
                subtype=subtype,
                format="WAV",
            ) as out:
                buf = np.empty((block_frames, source.channels), dtype=dtype)
                for block in _decoded_blocks(src, source, buf):
                    out.write(block)
            size = raw.seek(0, os.SEEK_END)
            sha256 = hashing.hexdigest(size)
        info = inspect_audio(tmp)
        if sha256 is None:  # the header was not the one foreseen: hash the file itself
            with tmp.open("rb") as f:
                sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        os.replace(tmp, dst)
        return Transcoded(info, size, sha256)
    finally:
        tmp.unlink(missing_ok=True)


_PCM_WIDTH = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4}


class _HashingWav(io.RawIOBase):
    """The file libsndfile writes a WAV through, hashed on the way with no read-back.

    libsndfile writes the header with zero sizes (once or twice), then the data in order
    (and a pad byte after an odd-sized data chunk), then the header again with the sizes
    filled in. The hash starts with the final header as foreseen from the expected data size
    and takes the data as it is written; `hexdigest` gives it only if every write after the
    header was an append and the header libsndfile wrote last is exactly the one foreseen
    (an MP3's frame count is an estimate, so it can differ), else None.
    """

    def __init__(self, raw: io.BufferedRandom, data_bytes: int) -> None:
        self._raw = raw
        self._data_bytes = data_bytes
        self._digest = hashlib.sha256()
        self._header: bytes | None = None  # the final header as foreseen
        self._hashed = 0  # bytes hashed: the file's prefix [0, _hashed) as it will be
        self._final = False  # has libsndfile written the final header?
        self._valid = True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        data = bytes(data)
        position = self._raw.tell()
        if not self._valid:
            pass
        elif self._header is None:  # the first write: the header, sizes still zero
            self._header = self._foresee(data) if position == 0 else None
            self._valid = self._header is not None
            self._digest.update(self._header or b"")
            self._hashed = len(data)
        elif position == self._hashed:  # data, in order
            self._digest.update(data)
            self._hashed += len(data)
        elif position == 0 and len(data) == len(self._header):  # the header again
            self._final = data == self._header  # with its sizes, as foreseen
            self._valid = self._final or self._foresee(data) == self._header
        else:
            self._valid = False
        return self._raw.write(data)

    def _foresee(self, header: bytes) -> bytes | None:
        """The header with its sizes filled in for `_data_bytes` of data, if it ends with the
        `data` chunk's header as libsndfile writes it; None when it does not."""
        if len(header) < 20 or header[:4] != b"RIFF" or header[-8:-4] != b"data":
            return None
        total = len(header) + self._data_bytes + (self._data_bytes & 1)
        return (
            header[:4]
            + struct.pack("<I", total - 8)
            + header[8:-4]
            + struct.pack("<I", self._data_bytes)
        )

    def hexdigest(self, size: int) -> str | None:
        """The sha256 of the finished file of `size` bytes, or None if it was not foreseen."""
        if not (self._valid and self._final and self._hashed == size):
            return None
        return self._digest.hexdigest()


def _decoded_blocks(
    src: str | os.PathLike[str], source: AudioInfo, buf: np.ndarray
) -> Iterator[np.ndarray]:
    """Blocks of decoded frames, reusing `buf`. Read until libsndfile has no more: its frame
    count is an estimate for MP3. Decode errors become `AudioFileError`; write errors on
    the other side are not the source's fault and pass through as they are."""
    try:
        with sf.SoundFile(src) as decoder:
            while len(block := decoder.read(out=buf)):
                yield block
    except sf.SoundFileError as err:
        raise AudioFileError(f"cannot decode this {source.container}: {_reason(err)}") from err
