"""resources.audio on real files written by libsndfile, then cut, patched and garbled."""

import dataclasses
import hashlib
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from resources.audio import (
    WAV_CONTAINER,
    AudioFileError,
    AudioInfo,
    inspect_audio,
    sniff_container,
    transcode_to_wav,
)

# An MP3's frame count is exact only when the encoder left a LAME/Xing "Info" tag (libsndfile,
# through mpg123, then trims the encoder delay and padding: gapless). Without the tag (a
# streaming encoder cannot go back and write it) the count is estimated from the file size,
# and the decoded audio carries LAME's 576 + 529 = 1105 frames of delay at the start plus
# up to one MPEG frame (1152 frames) of padding at the end; allow one more frame of slack
# for the estimate.
MP3_SLACK = 1105 + 2 * 1152
MPEG1_LAYER3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def _noise(frames: int, channels: int, dtype: str = "int16", seed: int = 0) -> np.ndarray:
    """Random full-range samples, with both extremes present so clipping or an off-by-one
    scale in a conversion cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        data = rng.uniform(-1.0, 1.0, (frames, channels)).astype(np.float32)
        data[0], data[1] = 1.0, -1.0
        return data
    bits = 16 if dtype == "int16" else 24
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    data = rng.integers(low, high, (frames, channels), endpoint=True)
    data[0], data[1] = high, low
    # soundfile writes int32 to PCM_24 as the top 24 bits: shift the values there.
    return data.astype(np.int16) if bits == 16 else (data << 8).astype(np.int32)


def _tone(frames: int, channels: int, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(frames) / rate
    wave = amplitude * np.sin(2 * np.pi * 440 * t)
    return np.stack([wave * (1 - c / 4) for c in range(channels)], axis=1).astype(np.float32)


def _write(path: Path, data: np.ndarray, rate: int, **kwargs) -> Path:
    sf.write(path, data, rate, **kwargs)
    return path


def _decoded(path: Path, dtype: str) -> np.ndarray:
    return sf.read(path, dtype=dtype, always_2d=True)[0]


def _pcm16_wav(tmp_path: Path, frames: int = 1000, channels: int = 2) -> Path:
    return _write(tmp_path / "a.wav", _noise(frames, channels), 16000, subtype="PCM_16")


def _patch_u32(path: Path, offset: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, offset, value)
    path.write_bytes(bytes(data))


def _data_size_offset(path: Path) -> int:
    return path.read_bytes().index(b"data", 12) + 4


def _riff_size(path: Path) -> int:
    return struct.unpack_from("<I", path.read_bytes(), 4)[0]


def _strip_info_frame(mp3: bytes) -> bytes:
    """Drop the first MPEG frame, where LAME keeps its Info/Xing tag."""
    assert mp3[:2] == b"\xff\xfb", "expected an MPEG-1 Layer III frame without CRC"
    kbps = MPEG1_LAYER3_KBPS[mp3[2] >> 4]
    rate = (44100, 48000, 32000)[(mp3[2] >> 2) & 3]
    length = 144_000 * kbps // rate + ((mp3[2] >> 1) & 1)
    assert b"Info" in mp3[:length] or b"Xing" in mp3[:length]
    return mp3[length:]


# --- sniffing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"format": "WAV", "subtype": "PCM_16"}, "WAV"),
        ({"format": "WAV", "subtype": "FLOAT"}, "WAV"),
        ({"format": "RF64", "subtype": "PCM_16"}, "WAV"),
        ({"format": "FLAC", "subtype": "PCM_24"}, "FLAC"),
        ({"format": "MP3"}, "MP3"),
        ({"format": "OGG", "subtype": "VORBIS"}, "OGG"),
    ],
)
def test_sniff_recognises_files_libsndfile_writes(tmp_path, kwargs, expected):
    path = _write(tmp_path / "x.bin", _tone(4410, 2, 44100), 44100, **kwargs)
    assert sniff_container(path.read_bytes()[:16]) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x00\x21", "MP3"),  # ID3v2 tag in front of the frames
        (b"\xff\xfb\x90\x64", "MP3"),  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz
        (b"\xff\xf3\x88\xc4", "MP3"),  # MPEG-2 Layer III (22.05 kHz and below)
        (b"BW64\xff\xff\xff\xffWAVEds64", "WAV"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", None),  # ADTS AAC: the sync bits, but layer 0
        (b"\xff\xfb\xf0\x64", None),  # bitrate index 15 is invalid
        (b"\xff\xfb\x9c\x64", None),  # sample rate index 3 is reserved
        (b"\xff\xfb", None),  # too short to be a frame header
        (b"RIFF\x24\x00\x00\x00AVI LIST", None),  # RIFF, but not WAVE
        (b"RIFF\x24\x00", None),
        (b"<!DOCTYPE html><html>", None),
        (b'{"detail":"Not Found"}', None),
        (b"\xef\xbb\xbfRIFF", None),
        (b"", None),
    ],
)
def test_sniff_container_heads(head, expected):
    assert sniff_container(head) == expected


# --- inspecting good files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtype", "channels", "rate", "frames"),
    [
        ("PCM_16", 1, 8000, 8001),
        ("PCM_16", 2, 44100, 44101),
        ("PCM_24", 1, 16000, 1001),  # odd data size: the data chunk needs a pad byte
        ("PCM_24", 2, 48000, 4800),
        ("FLOAT", 2, 22050, 2205),
        ("FLOAT", 1, 96000, 961),
    ],
)
def test_inspect_wav_reports_what_was_written(tmp_path, subtype, channels, rate, frames):
    path = _write(tmp_path / "a.wav", _tone(frames, channels, rate), rate, subtype=subtype)
    assert inspect_audio(path) == AudioInfo(
        container=WAV_CONTAINER,
        sample_rate=rate,
        channels=channels,
        frames=frames,
        duration_s=frames / rate,
        subtype=subtype,
    )


@pytest.mark.parametrize(("fmt", "channels"), [("RF64", 2), ("WAVEX", 6)])
def test_inspect_wav_variants_are_wav(tmp_path, fmt, channels):
    path = _write(tmp_path / "a.wav", _noise(777, channels), 32000, format=fmt, subtype="PCM_16")
    info = inspect_audio(path)
    assert (info.container, info.channels, info.frames, info.sample_rate) == (
        "WAV",
        channels,
        777,
        32000,
    )


@pytest.mark.parametrize(("subtype", "dtype"), [("PCM_16", "int16"), ("PCM_24", "int32")])
def test_inspect_flac_frames_are_exact(tmp_path, subtype, dtype):
    path = _write(tmp_path / "a.flac", _noise(12345, 2, dtype), 48000, subtype=subtype)
    assert inspect_audio(path) == AudioInfo("FLAC", 48000, 2, 12345, 12345 / 48000, subtype)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (22050, 1)])
def test_inspect_mp3_with_info_tag(tmp_path, rate, channels):
    frames = rate // 2
    path = _write(tmp_path / "a.mp3", _tone(frames, channels, rate), rate, format="MP3")
    info = inspect_audio(path)
    assert (info.container, info.subtype) == ("MP3", "MPEG_LAYER_III")
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert abs(info.frames - frames) <= MP3_SLACK
    assert info.duration_s == pytest.approx(info.frames / rate)


def test_inspect_mp3_without_info_tag_counts_delay_and_padding(tmp_path):
    frames = 30000
    tagged = _write(
        tmp_path / "tagged.mp3",
        _tone(frames, 2, 44100),
        44100,
        format="MP3",
        bitrate_mode="CONSTANT",
        compression_level=0.5,
    )
    bare = tmp_path / "bare.mp3"
    bare.write_bytes(_strip_info_frame(tagged.read_bytes()))
    info = inspect_audio(bare)
    assert (info.container, info.sample_rate, info.channels) == ("MP3", 44100, 2)
    assert frames < info.frames <= frames + MP3_SLACK  # the delay is there now


def test_inspect_ogg(tmp_path):
    path = _write(tmp_path / "a.ogg", _tone(8000, 1, 16000), 16000, format="OGG")
    info = inspect_audio(path)
    assert (info.container, info.sample_rate, info.channels, info.subtype) == (
        "OGG",
        16000,
        1,
        "VORBIS",
    )
    assert info.frames == 8000


def test_inspect_tolerates_missing_final_pad_byte(tmp_path):
    path = _write(tmp_path / "a.wav", _noise(1001, 1, "int32"), 16000, subtype="PCM_24")
    assert path.stat().st_size % 2 == 0  # 1001 * 3 data bytes + the pad byte
    path.write_bytes(path.read_bytes()[:-1])
    _patch_u32(path, 4, _riff_size(path) - 1)
    assert inspect_audio(path).frames == 1001


# --- rejecting bad files -----------------------------------------------------------------


@pytest.mark.parametrize("keep", [-1, -1001, 2000, 44, 30, 12])
def test_truncated_wav_is_rejected(tmp_path, keep):
    path = _pcm16_wav(tmp_path)
    whole = path.stat().st_size
    path.write_bytes(path.read_bytes()[:keep])
    size = path.stat().st_size
    with pytest.raises(AudioFileError, match="truncated WAV") as caught:
        inspect_audio(path)
    assert f"declares {whole} bytes, file has {size}" in str(caught.value)


@pytest.mark.parametrize(
    ("delta", "message"),
    [(+1000, "truncated WAV: header declares"), (-1000, "bytes after the RIFF chunk")],
)
def test_wav_with_wrong_riff_size_is_rejected(tmp_path, delta, message):
    path = _pcm16_wav(tmp_path)
    _patch_u32(path, 4, _riff_size(path) + delta)
    with pytest.raises(AudioFileError, match=message):
        inspect_audio(path)


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_wav_with_streaming_placeholder_size_is_rejected(tmp_path, placeholder):
    path = _pcm16_wav(tmp_path)
    _patch_u32(path, 4, placeholder)
    with pytest.raises(AudioFileError, match="placeholder RIFF size"):
        inspect_audio(path)


def test_data_chunk_past_end_of_file_is_rejected(tmp_path):
    path = _pcm16_wav(tmp_path, frames=1000, channels=2)
    _patch_u32(path, _data_size_offset(path), 4000 + 100)  # RIFF size still matches the file
    with pytest.raises(AudioFileError, match="'data' chunk declares 4100 bytes: it runs 100"):
        inspect_audio(path)


def test_partial_frame_is_rejected(tmp_path):
    path = _pcm16_wav(tmp_path, frames=1000, channels=2)  # 4-byte frames
    path.write_bytes(path.read_bytes()[:-2])  # every size consistent, but half a frame
    _patch_u32(path, 4, _riff_size(path) - 2)
    _patch_u32(path, _data_size_offset(path), 4000 - 2)
    with pytest.raises(AudioFileError, match="3998 bytes, not a whole number of 4-byte frames"):
        inspect_audio(path)


def test_stray_bytes_after_last_chunk_are_rejected(tmp_path):
    path = _pcm16_wav(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0\0\0\0")
    _patch_u32(path, 4, _riff_size(path) + 4)
    with pytest.raises(AudioFileError, match="4 stray bytes"):
        inspect_audio(path)


def test_wav_without_data_chunk_is_rejected(tmp_path):
    path = _pcm16_wav(tmp_path)
    path.write_bytes(path.read_bytes()[: _data_size_offset(path) - 4])  # RIFF header + fmt
    _patch_u32(path, 4, path.stat().st_size - 8)
    with pytest.raises(AudioFileError, match="no 'data' chunk"):
        inspect_audio(path)


def test_wav_without_frames_is_rejected(tmp_path):
    path = _write(tmp_path / "a.wav", np.zeros((0, 2), np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioFileError, match="no audio frames"):
        inspect_audio(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "not a recognised"),
        (b'{"detail": "run not found"}', "not a recognised"),
        (bytes(range(256)) * 8, "not a recognised"),
    ],
)
def test_non_audio_is_rejected(tmp_path, content, message):
    path = tmp_path / "download.wav"  # the name promises WAV; only the bytes count
    path.write_bytes(content)
    with pytest.raises(AudioFileError, match=message):
        inspect_audio(path)


@pytest.mark.parametrize(
    ("magic", "container"), [(b"fLaC", "FLAC"), (b"OggS", "OGG"), (b"ID3\x04", "MP3")]
)
def test_right_magic_but_garbage_is_rejected_without_the_path(tmp_path, magic, container):
    path = tmp_path / "secret-looking-name.bin"
    path.write_bytes(magic + np.random.default_rng(3).bytes(4000))
    with pytest.raises(AudioFileError, match=f"libsndfile cannot read this {container}") as err:
        inspect_audio(path)
    assert path.name not in str(err.value)


def test_container_is_read_from_bytes_not_name(tmp_path):
    path = _write(tmp_path / "a.flac", _noise(500, 1), 8000, format="FLAC")
    renamed = path.rename(tmp_path / "a.wav")
    assert inspect_audio(renamed).container == "FLAC"


# --- transcoding -------------------------------------------------------------------------


@pytest.mark.parametrize(("subtype", "dtype"), [("PCM_16", "int16"), ("PCM_24", "int32")])
def test_flac_to_wav_is_sample_exact(tmp_path, subtype, dtype):
    samples = _noise(10007, 2, dtype, seed=7)  # not a multiple of the block size
    src = _write(tmp_path / "in.flac", samples, 44100, subtype=subtype)
    info = transcode_to_wav(src, tmp_path / "out.wav", block_frames=1000).audio
    assert info == AudioInfo("WAV", 44100, 2, 10007, 10007 / 44100, subtype)
    np.testing.assert_array_equal(_decoded(tmp_path / "out.wav", dtype), samples)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (22050, 1), (48000, 2)])
def test_mp3_to_wav_is_pcm16_with_same_rate_and_channels(tmp_path, rate, channels):
    frames = rate // 2
    tone = _tone(frames, channels, rate)
    src = _write(tmp_path / "in.mp3", tone, rate, format="MP3")
    info = transcode_to_wav(src, tmp_path / "out.wav").audio
    assert (info.container, info.subtype) == ("WAV", "PCM_16")
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert abs(info.frames - frames) <= MP3_SLACK
    out = _decoded(tmp_path / "out.wav", "float32")
    n = min(len(out), frames)
    assert np.corrcoef(out[:n, 0], tone[:n, 0])[0, 1] > 0.99  # the audio, not silence


def test_hot_mp3_saturates_instead_of_wrapping(tmp_path):
    square = np.sign(_tone(44100, 1, 44100)) * 0.99  # MP3 rings past full scale on edges
    src = _write(tmp_path / "in.mp3", square, 44100, format="MP3")
    decoded = _decoded(src, "float32")
    assert np.abs(decoded).max() > 1.0  # otherwise this test would prove nothing
    transcode_to_wav(src, tmp_path / "out.wav")
    out = _decoded(tmp_path / "out.wav", "int16").astype(np.int32)
    np.testing.assert_allclose(out, np.clip(decoded, -1, 1) * 32767, atol=2)


def test_ogg_to_wav(tmp_path):
    tone = _tone(16000, 2, 32000)
    src = _write(tmp_path / "in.ogg", tone, 32000, format="OGG")
    info = transcode_to_wav(src, tmp_path / "out.wav", block_frames=4096).audio
    assert (info.subtype, info.sample_rate, info.channels, info.frames) == (
        "PCM_16",
        32000,
        2,
        16000,
    )
    assert np.corrcoef(_decoded(tmp_path / "out.wav", "float32")[:, 1], tone[:, 1])[0, 1] > 0.99


def test_float_wav_to_pcm24(tmp_path):
    samples = _noise(3000, 2, "float32") * np.float32(0.9)
    src = _write(tmp_path / "in.wav", samples, 24000, subtype="FLOAT")
    assert transcode_to_wav(src, tmp_path / "out.wav").audio.subtype == "PCM_24"
    np.testing.assert_allclose(_decoded(tmp_path / "out.wav", "float64"), samples, atol=2**-22)


def test_transcode_streams_in_blocks(tmp_path):
    samples = _noise(48000 * 5, 2, seed=5)
    src = _write(tmp_path / "in.flac", samples, 48000, subtype="PCM_16")
    tracemalloc.start()
    try:
        transcode_to_wav(src, tmp_path / "out.wav", block_frames=4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < samples.nbytes / 8  # numpy reports its buffers to tracemalloc
    np.testing.assert_array_equal(_decoded(tmp_path / "out.wav", "int16"), samples)


@pytest.mark.parametrize(
    ("name", "channels", "kwargs"),
    [
        ("mono.flac", 1, {"subtype": "PCM_16"}),
        ("odd.flac", 1, {"subtype": "PCM_24"}),  # 3-byte frames, odd data size: a pad byte
        ("three.flac", 3, {"subtype": "PCM_16"}),
        ("tone.mp3", 2, {"format": "MP3"}),
        ("tone.ogg", 2, {"format": "OGG"}),
        ("float.wav", 1, {"subtype": "FLOAT"}),
    ],
)
def test_transcode_hashes_the_wav_it_writes(tmp_path, monkeypatch, name, channels, kwargs):
    src = _write(tmp_path / name, _tone(10007, channels, 44100), 44100, **kwargs)
    read_back = []
    file_digest = hashlib.file_digest
    monkeypatch.setattr(
        hashlib, "file_digest", lambda *a, **k: read_back.append(1) or file_digest(*a, **k)
    )
    out = transcode_to_wav(src, tmp_path / "out.wav", block_frames=1000)
    data = (tmp_path / "out.wav").read_bytes()
    assert (out.size_bytes, out.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert read_back == []  # hashed as written: the header came out as foreseen
    assert out.audio == inspect_audio(tmp_path / "out.wav")


def test_transcode_hash_survives_an_unforeseen_header(tmp_path, monkeypatch):
    """If the frames decoded are not the frames announced, the file is hashed again."""
    src = _write(tmp_path / "in.flac", _noise(5000, 2), 44100, subtype="PCM_16")
    real_inspect = inspect_audio

    def announced_wrong(path):
        info = real_inspect(path)
        return info if path != src else dataclasses.replace(info, frames=4000)

    monkeypatch.setattr("resources.audio.transcode.inspect_audio", announced_wrong)
    out = transcode_to_wav(src, tmp_path / "out.wav", block_frames=1000)
    data = (tmp_path / "out.wav").read_bytes()
    assert (out.size_bytes, out.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert out.audio.frames == 5000


def _leftovers(directory: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p not in keep)


def test_failed_transcode_of_garbage_leaves_nothing(tmp_path):
    src = tmp_path / "in.mp3"
    src.write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(AudioFileError, match="not a recognised"):
        transcode_to_wav(src, tmp_path / "out.wav")
    assert _leftovers(tmp_path, src) == []


def test_failed_decode_midway_leaves_nothing(tmp_path):
    src = _write(tmp_path / "in.flac", _noise(50000, 2), 44100, subtype="PCM_16")
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert inspect_audio(src).frames == 50000  # the FLAC header cannot tell it is cut...
    with pytest.raises(AudioFileError, match="cannot decode this FLAC"):
        transcode_to_wav(src, tmp_path / "out.wav", block_frames=1024)  # ...decoding can
    assert _leftovers(tmp_path, src) == []


def test_truncated_wav_is_not_transcoded(tmp_path):
    src = _pcm16_wav(tmp_path)
    src.write_bytes(src.read_bytes()[:-10])
    with pytest.raises(AudioFileError, match="truncated WAV"):
        transcode_to_wav(src, tmp_path / "out.wav")
    assert _leftovers(tmp_path, src) == []


def test_failed_transcode_keeps_an_existing_dst(tmp_path):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"previous content")
    src = tmp_path / "in.flac"
    src.write_bytes(b"fLaC" + bytes(100))
    with pytest.raises(AudioFileError):
        transcode_to_wav(src, dst)
    assert dst.read_bytes() == b"previous content"
    assert _leftovers(tmp_path, src, dst) == []


def test_block_frames_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="block_frames"):
        transcode_to_wav(_pcm16_wav(tmp_path), tmp_path / "out.wav", block_frames=0)
