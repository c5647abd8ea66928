"""Families of a sound and its copies, for measuring the audio fingerprint (seeded, made in code).

Ten kinds of sound effect, each made from two seeds: a *timbre* seed (what the long-term
spectrum is: a bell's partials, a burst's band, a drum kit) and an *event* seed (when and how
things happen: strikes, knocks, zaps, drops, the pattern). A family is one sound (48 kHz mono,
1-4 s, peak-normalised) and its copies by every ``TRANSFORMS`` a delivery or a re-upload makes;
its negative controls are *twins*: the same kind, timbre, length and RMS, their own events
(for the sounds of a few events, the first at least 0.2 s from the original's), clean and
under the loudest noise bed. The copies are the issue's (gain, sample rate, channels, trims,
a combination, white and pink noise beds at absolute levels, an MP3 round trip at
128 kbps, which soundfile writes with libsndfile 1.2).

    for clip in family("bell", 3): clip.samples, clip.rate, clip.role
"""

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from support.similar_clips import RATE, resample

KINDS = (
    "bell",
    "knock",
    "noise burst",
    "pad",
    "formant sweep",
    "laser",
    "rain",
    "drum loop",
    "click train",
    "quiet ambience",
)
TRANSFORMS = (
    "gain -6 dB",
    "gain +6 dB",
    "44.1 kHz",
    "22.05 kHz",
    "stereo",
    "trim start",
    "trim end",
    "white -50 dBFS",
    "white -40 dBFS",
    "white -30 dBFS",
    "pink -50 dBFS",
    "pink -40 dBFS",
    "pink -30 dBFS",
    "mp3 128k",
    "all at once",
)
FEW_EVENTS = ("bell", "knock", "noise burst", "laser")
CONTROLS = ("twin", "twin, white -30 dBFS")  # distinct sounds: never linked to the family


@dataclass(frozen=True)
class FamilyClip:
    kind: str
    family: int  # one per (kind, instance); a twin gets its own
    role: str  # "original", a TRANSFORMS name, or a CONTROLS name
    samples: np.ndarray  # frames x channels, float
    rate: int


def family(kind: str, instance: int, transforms: tuple[str, ...] = TRANSFORMS) -> list[FamilyClip]:
    """The original, its copies by ``transforms`` and its two twins (negative controls)."""
    seed = 1000 * (KINDS.index(kind) + 1) + instance
    timbre = np.random.default_rng([seed, 0]).integers(2**32)
    seconds = float(np.random.default_rng([seed, 1]).uniform(1.0, 4.0))
    level_db = (
        float(np.random.default_rng([seed, 2]).uniform(-24, -20))
        if kind == "quiet ambience"
        else float(np.random.default_rng([seed, 2]).uniform(-12, -8))
    )
    original = _make(kind, timbre, [seed, 3], seconds)
    original *= 10 ** (level_db / 20) / np.max(np.abs(original))
    twin = _twin(kind, timbre, seed, seconds, original)
    twin *= _rms(original) / _rms(twin)  # the same loudness
    rng = np.random.default_rng([seed, 5])
    clips = [FamilyClip(kind, 2 * seed, "original", original[:, None], RATE)]
    for name in transforms:
        samples, rate = TRANSFORM[name](original, rng)
        clips.append(FamilyClip(kind, 2 * seed, name, samples, rate))
    clips.append(FamilyClip(kind, 2 * seed + 1, CONTROLS[0], twin[:, None], RATE))
    noisy, _ = TRANSFORM["white -30 dBFS"](twin, rng)
    clips.append(FamilyClip(kind, 2 * seed + 1, CONTROLS[1], noisy, RATE))
    return clips


def families(
    instances: int, kinds: tuple[str, ...] = KINDS, transforms: tuple[str, ...] = TRANSFORMS
) -> Iterator[FamilyClip]:
    for kind in kinds:
        for instance in range(instances):
            yield from family(kind, instance, transforms)


def _twin(kind: str, timbre: int, seed: int, seconds: float, original: np.ndarray) -> np.ndarray:
    """Another sound of the same timbre and length whose first event starts at least 0.2 s
    apart from the original's (for sounds made of a few events: two strikes of one bell at
    the same moment are one sound)."""
    for attempt in range(4, 40):
        twin = _make(kind, timbre, [seed, attempt], seconds)
        if kind not in FEW_EVENTS or abs(_onset(twin) - _onset(original)) > 0.2 * RATE:
            return twin
    raise AssertionError(f"no twin for {kind} {seed}")


def _onset(signal: np.ndarray) -> int:
    """The first sample within 30 dB of the peak."""
    return int(np.argmax(np.abs(signal) >= np.max(np.abs(signal)) * 10 ** (-30 / 20)))


# -- the copies ---------------------------------------------------------------------------


def _rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(signal))))


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls 3 dB an octave (from 20 Hz), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    noise = np.fft.irfft(spectrum, n)
    return noise / _rms(noise)


def with_noise(colour: Callable, dbfs: float) -> Callable:
    """A stationary bed at ``dbfs`` RMS (absolute: the same under a loud and a quiet sound)."""

    def add(signal: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        noise = colour(len(signal), rng)
        return (signal + 10 ** (dbfs / 20) * noise / _rms(noise))[:, None], RATE

    return add


def mp3_round_trip(samples: np.ndarray, rate: int) -> np.ndarray:
    """Encoded at 128 kbps constant bit rate and decoded again (libsndfile's LAME, mpg123)."""
    # libsndfile maps compression 0..1 linearly onto LAME's bit rates: 320..32 kbps at
    # 32 kHz and up, 160..8 kbps at 16-24 kHz
    top, bottom = (320, 32) if rate >= 32000 else (160, 8)
    buffer = io.BytesIO()
    sf.write(
        buffer,
        samples,
        rate,
        format="MP3",
        bitrate_mode="CONSTANT",
        compression_level=(top - 128) / (top - bottom),
    )
    buffer.seek(0)
    decoded, _ = sf.read(buffer, always_2d=True)
    return decoded


def _trim(rng: np.random.Generator) -> int:
    return round(rng.uniform(0.05, 0.08) * RATE)


def _all_at_once(signal: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    noisy = signal + 10 ** (-40 / 20) * white(len(signal), rng)
    stereo = np.stack([noisy, 0.8 * noisy], axis=1)[_trim(rng) : -_trim(rng)] * 10 ** (-6 / 20)
    return mp3_round_trip(resample(stereo, RATE, 22050), 22050), 22050


TRANSFORM: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, int]]] = {
    "gain -6 dB": lambda s, rng: (s[:, None] * 10 ** (-6 / 20), RATE),
    "gain +6 dB": lambda s, rng: (s[:, None] * 10 ** (6 / 20), RATE),
    "44.1 kHz": lambda s, rng: (resample(s[:, None], RATE, 44100), 44100),
    "22.05 kHz": lambda s, rng: (resample(s[:, None], RATE, 22050), 22050),
    "stereo": lambda s, rng: (np.stack([s, 0.8 * s], axis=1), RATE),  # panned a little
    "trim start": lambda s, rng: (s[_trim(rng) :, None], RATE),
    "trim end": lambda s, rng: (s[: -_trim(rng), None], RATE),
    "white -50 dBFS": with_noise(white, -50),
    "white -40 dBFS": with_noise(white, -40),
    "white -30 dBFS": with_noise(white, -30),
    "pink -50 dBFS": with_noise(pink, -50),
    "pink -40 dBFS": with_noise(pink, -40),
    "pink -30 dBFS": with_noise(pink, -30),
    "mp3 128k": lambda s, rng: (mp3_round_trip(s[:, None], RATE), RATE),
    "all at once": _all_at_once,
}


# -- the kinds ----------------------------------------------------------------------------
# Each maker gets the timbre's generator (the same for a sound and its twin), the events'
# (their own), the time axis; it returns the samples before normalisation.


def _decaying(t: np.ndarray, start: float, freq: float, tau: float, phase: float) -> np.ndarray:
    after = np.maximum(t - start, 0.0)
    return np.where(t >= start, np.exp(-after / tau) * np.sin(2 * np.pi * freq * after + phase), 0)


def _bell(timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray) -> np.ndarray:
    root = timbre.uniform(250, 1200)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01, 4.17])
    amps = timbre.uniform(0.2, 1.0, len(ratios))
    out = np.zeros_like(t)
    for start in np.sort(events.uniform(0.05, 0.7 * t[-1], events.integers(2, 5))):
        force = events.uniform(0.4, 1.0)
        for ratio, amp in zip(ratios, amps, strict=True):
            tau = events.uniform(0.2, 1.2) / np.sqrt(ratio)
            amp *= events.uniform(0.2, 1.0)  # where it is struck: which partials ring
            out += force * amp * _decaying(t, start, root * ratio, tau, events.uniform(0, 6))
    return out


def _knock(timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray) -> np.ndarray:
    modes = timbre.uniform(120, 1500, 4)
    out = np.zeros_like(t)
    for start in events.uniform(0.05, t[-1] - 0.2, events.integers(3, 7)):
        force = events.uniform(0.3, 1.0)
        for mode in modes:
            out += force * _decaying(t, start, mode * events.uniform(0.97, 1.03), 0.04, 0)
        click = (t >= start) & (t < start + 0.003)
        out[click] += force * 0.5 * events.standard_normal(int(click.sum()))
    return out


def _band_noise(rng: np.random.Generator, n: int, centre: float, width: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum *= np.exp(-0.5 * (np.log(np.maximum(freqs, 1.0) / centre) / width) ** 2)
    return np.fft.irfft(spectrum, n)


def _noise_burst(
    timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray
) -> np.ndarray:
    noise = _band_noise(events, len(t), timbre.uniform(400, 5000), timbre.uniform(0.3, 0.9))
    envelope = np.zeros_like(t)
    for start in events.uniform(0.05, 0.8 * t[-1], events.integers(2, 5)):
        length = events.uniform(0.05, 0.3)
        after = t - start
        envelope += np.where(after >= 0, np.exp(-after / (length / 3)), 0) * (after < length * 2)
    return noise * envelope


def _pad(timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray) -> np.ndarray:
    root = timbre.uniform(110, 330)
    notes = root * 2 ** (np.array([0, *np.sort(timbre.choice([3, 4, 7, 10, 12, 14], 2))]) / 12)
    out = np.zeros_like(t)
    for note in notes:
        entry = events.uniform(0, 0.4 * t[-1])
        swell = np.clip((t - entry) / events.uniform(0.2, 0.8), 0, 1)
        for harmonic in range(1, 9):
            # a slow filter sweep: each harmonic's level moves on its own course
            sweep = 0.5 + 0.5 * np.sin(
                2 * np.pi * events.uniform(0.3, 1.5) * t + events.uniform(0, 6)
            )
            out += swell * sweep * np.sin(2 * np.pi * note * harmonic * t) / harmonic
    return out * np.clip((t[-1] - t) / 0.3, 0, 1)  # released at the end


def _formant_sweep(
    timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray
) -> np.ndarray:
    """A voice-like buzz: pulses at an intonation, through two moving formants, in syllables."""
    pitch = timbre.uniform(100, 220) * np.exp(
        np.interp(t, np.linspace(0, t[-1], 6), events.uniform(-0.2, 0.2, 6))
    )
    buzz = np.sign(np.sin(2 * np.pi * np.cumsum(pitch) / RATE)) + 0.05 * events.standard_normal(
        len(t)
    )
    points = max(4, round(t[-1] * 4))
    spectrum_frames = []
    step = RATE // 50
    f1 = np.interp(t[::step], np.linspace(0, t[-1], points), events.uniform(300, 900, points))
    f2 = np.interp(t[::step], np.linspace(0, t[-1], points), events.uniform(900, 2500, points))
    freqs = np.fft.rfftfreq(2 * step, 1 / RATE)
    window = np.hanning(2 * step)
    out = np.zeros(len(t) + 2 * step)
    for at, (a, b) in enumerate(zip(f1, f2, strict=True)):
        frame = buzz[at * step : at * step + 2 * step]
        if len(frame) < 2 * step:
            break
        shape = np.exp(-0.5 * ((freqs - a) / 80) ** 2) + 0.6 * np.exp(
            -0.5 * ((freqs - b) / 120) ** 2
        )
        spectrum_frames.append(np.fft.irfft(np.fft.rfft(frame * window) * shape, 2 * step))
        out[at * step : at * step + 2 * step] += spectrum_frames[-1]
    syllables = np.clip(np.sin(2 * np.pi * events.uniform(3, 5) * t + events.uniform(0, 6)), 0, 1)
    return out[: len(t)] * syllables


def _laser(timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray) -> np.ndarray:
    high, low = timbre.uniform(2000, 5000), timbre.uniform(200, 600)
    out = np.zeros_like(t)
    for start in events.uniform(0.05, 0.8 * t[-1], events.integers(2, 6)):
        length = events.uniform(0.08, 0.3)
        inside = (t >= start) & (t < start + length)
        u = (t[inside] - start) / length
        top, bottom = high * events.uniform(0.8, 1.25), low * events.uniform(0.8, 1.25)
        freq = top * (bottom / top) ** (u ** events.uniform(0.5, 2))
        out[inside] += np.sin(2 * np.pi * np.cumsum(freq) / RATE) * (1 - u)
    return out


def _rain(timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray) -> np.ndarray:
    centre = timbre.uniform(1000, 5000)
    out = _band_noise(events, len(t), centre / 2, 1.0)
    out /= _rms(out) * 20  # a soft hiss under the drops
    drops = events.poisson(timbre.uniform(40, 150) * t[-1])
    for start in events.uniform(0, t[-1], drops):
        at = int(start * RATE)
        length = min(int(0.03 * RATE), len(t) - at)
        u = np.arange(length) / RATE
        out[at : at + length] += (
            events.uniform(0.1, 1)
            * np.exp(-u / 0.006)
            * np.sin(2 * np.pi * centre * events.uniform(0.7, 1.4) * u)
        )
    return out


def _drum_loop(
    timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray
) -> np.ndarray:
    step = 60 / timbre.uniform(90, 140) / 4  # sixteenths
    kick_pitch, snare_pitch = timbre.uniform(45, 70), timbre.uniform(160, 260)
    hat_band = timbre.uniform(6000, 9000)
    pattern = events.random((3, 16)) < np.array([[0.35], [0.25], [0.6]])
    pattern[0, 0] = True  # a kick on the one
    out = np.zeros_like(t)
    hats = _band_noise(events, len(t), hat_band, 0.3)
    hats /= _rms(hats)
    snares = events.standard_normal(len(t))
    for index in range(int(t[-1] / step)):
        start, which = index * step, pattern[:, index % 16]
        after = np.maximum(t - start, 0)
        on = (t >= start) & (after < 0.4)
        if which[0]:
            glide = kick_pitch * (1 + 3 * np.exp(-after[on] / 0.03))
            out[on] += np.exp(-after[on] / 0.12) * np.sin(2 * np.pi * np.cumsum(glide) / RATE)
        if which[1]:
            out[on] += np.exp(-after[on] / 0.06) * (
                0.6 * snares[on] + 0.5 * np.sin(2 * np.pi * snare_pitch * after[on])
            )
        if which[2]:
            out[on] += 0.3 * np.exp(-after[on] / 0.015) * hats[on]
    return out


def _click_train(
    timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray
) -> np.ndarray:
    """A ratchet: clicks at a rate that speeds up and slows down, in bursts."""
    tone = timbre.uniform(1500, 6000)
    rate = np.interp(t, np.linspace(0, t[-1], 6), events.uniform(8, 40, 6))
    phase = np.cumsum(rate) / RATE
    ticks = np.flatnonzero(np.diff(np.floor(phase)) > 0)
    gate = np.interp(t, np.linspace(0, t[-1], 8), events.uniform(0, 1, 8) > 0.3)
    out = np.zeros_like(t)
    length = int(0.004 * RATE)
    u = np.arange(length) / RATE
    click = np.exp(-u / 0.001) * np.sin(2 * np.pi * tone * u)
    for at in ticks[ticks < len(t) - length]:
        out[at : at + length] += gate[at] * events.uniform(0.5, 1) * click
    return out


def _quiet_ambience(
    timbre: np.random.Generator, events: np.random.Generator, t: np.ndarray
) -> np.ndarray:
    """A room at night: a low rumble that breathes, and a few faint chirps."""
    rumble = _band_noise(events, len(t), timbre.uniform(150, 400), 0.8)
    rumble /= _rms(rumble)
    breathing = np.interp(t, np.linspace(0, t[-1], 6), events.uniform(0.3, 1, 6))
    out = rumble * breathing
    chirp = timbre.uniform(2000, 4000)
    for start in events.uniform(0, t[-1] - 0.15, events.integers(2, 5)):
        inside = (t >= start) & (t < start + 0.12)
        u = t[inside] - start
        out[inside] += 3 * np.sin(2 * np.pi * chirp * (1 + 2 * u) * u) * np.sin(np.pi * u / 0.12)
    return out


MAKERS = dict(
    zip(
        KINDS,
        (
            _bell,
            _knock,
            _noise_burst,
            _pad,
            _formant_sweep,
            _laser,
            _rain,
            _drum_loop,
            _click_train,
            _quiet_ambience,
        ),
        strict=True,
    )
)


def _make(kind: str, timbre: int, events: list[int], seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    samples = MAKERS[kind](np.random.default_rng(timbre), np.random.default_rng(events), t)
    return samples - samples.mean()
