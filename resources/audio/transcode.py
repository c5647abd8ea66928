"""Audio delivered as FLAC, MP3 or another WAV made into the PCM WAV the dataset stores.

`transcode_to_wav` decodes block by block and writes PCM WAV with the source's sample rate
and channels: integer PCM keeps its width (copied sample-exactly), float and lossy sources
become PCM_24 or PCM_16, clipped rather than wrapped. The WAV appears under its name only
complete and inspected, and its sha256 is computed as it is written (`_HashingWav`), so the
file is not read back to be hashed.
"""

import hashlib
import io
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from resources.audio.inspect import AudioFileError, AudioInfo, inspect_audio, sndfile_reason

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


@dataclass(frozen=True)
class Transcoded:
    """A WAV written by `transcode_to_wav`: its info, size and sha256 (hashed as written)."""

    audio: AudioInfo
    size_bytes: int
    sha256: str


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
        raise AudioFileError(
            f"cannot decode this {source.container}: {sndfile_reason(err)}"
        ) from err
