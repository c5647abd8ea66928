"""Labelled test data for the similarity rules, made in code (reproducible from seeds).

- ``sound(seed)``: one of several kinds of distinct synthetic sounds (noise bursts under a
  random envelope, band-passed noise, chirps, tremolo tones, steady noise), all 48 kHz mono at
  the same loudness, lengths drawn from 0.6-4 s; ``variants`` of a sound are the copies a
  delivery can make of it: gain ±6 dB, resampled to 44.1 and 22.05 kHz, stereo, trimmed by up
  to 100 ms, noise at -40 dB (under the clip's RMS), and mixes of those.
- ``prompt_pairs(seed)``: prompts and their near-duplicates (take numbers ending the prompt,
  word order, punctuation, case, a stray adjective) and, as negatives, distinct prompts,
  including ones that share most of their words but name another sound or place.
"""

import random

import numpy as np
import soxr

RATE = 48000
KINDS = ("bursts", "band", "chirp", "tremolo", "steady")


def sound(seed: int, seconds: float | None = None, kind: str | None = None) -> np.ndarray:
    """A distinct sound (mono, 48 kHz, RMS 0.1); the same seed gives the same samples."""
    rng = np.random.default_rng(seed)
    kind = kind or KINDS[seed % len(KINDS)]
    seconds = seconds or float(rng.uniform(0.6, 4.0))
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    noise = rng.standard_normal(n)
    # every kind but steady noise has a random envelope: its own time course, like a real
    # clip
    points = max(8, round(seconds * 10))  # it changes about every 100 ms
    envelope = np.interp(t, np.linspace(0, seconds, points), rng.uniform(0, 1, points) ** 3)
    if kind == "bursts":
        signal = noise * envelope
    elif kind == "band":
        spectrum = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        centre = rng.uniform(300, 5000)
        spectrum *= np.exp(-0.5 * ((freqs - centre) / (centre * 0.3)) ** 2)
        signal = np.fft.irfft(spectrum, n) * (0.2 + envelope)
    elif kind == "chirp":
        # a random glide: its frequency wanders between 200 Hz and 4 kHz
        freq = np.exp(np.interp(t, np.linspace(0, seconds, 8), rng.uniform(5.3, 8.3, 8)))
        phase = 2 * np.pi * np.cumsum(freq) / RATE
        signal = np.sin(phase) * (0.2 + envelope) + 0.05 * noise
    elif kind == "tremolo":
        signal = np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        signal *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 9) * t + rng.uniform(0, 6))
        signal *= 0.2 + envelope
        signal += 0.02 * noise
    else:  # steady white noise: only its fine time course tells two of them apart
        signal = noise
    return 0.1 * signal / np.sqrt(np.mean(np.square(signal)))


def resample(signal: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    return soxr.resample(signal, rate_in, rate_out, quality="HQ")


def variants(signal: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, int]]:
    """Copies of ``signal`` (48 kHz) as a delivery can make them: name -> (samples, rate);
    samples are frames x channels."""
    rng = np.random.default_rng(seed)
    mono = signal[:, None]
    rms = float(np.sqrt(np.mean(np.square(signal))))
    trim = round(rng.uniform(0.02, 0.1) * RATE)
    noisy = signal + rms * 10 ** (-40 / 20) * rng.standard_normal(len(signal))
    return {
        "gain +6 dB": (mono * 10 ** (6 / 20), RATE),
        "gain -6 dB": (mono * 10 ** (-6 / 20), RATE),
        "44.1 kHz": (resample(mono, RATE, 44100), 44100),
        "22.05 kHz": (resample(mono, RATE, 22050), 22050),
        "stereo": (np.hstack([mono, mono]), RATE),
        "trim start": (mono[trim:], RATE),
        "trim end": (mono[:-trim], RATE),
        "noise -40 dB": (noisy[:, None], RATE),
        "all at once": (
            resample(np.stack([noisy, noisy], axis=1)[trim:] * 10 ** (-5 / 20), RATE, 22050),
            22050,
        ),
    }


# -- prompts ------------------------------------------------------------------------------

SOUNDS = [
    "dog barking", "rain on a tin roof", "door creaking", "crowd cheering", "ocean waves",
    "wind howling", "glass shattering", "footsteps on gravel", "church bells ringing",
    "car engine starting", "thunder rumbling", "birds chirping", "fire crackling",
    "keyboard typing", "baby crying", "cat meowing", "helicopter flying over",
    "train passing by", "clock ticking", "water dripping", "applause", "horse galloping",
    "phone ringing", "paper tearing", "coins dropping", "chainsaw cutting wood",
    "owl hooting", "kettle whistling", "zipper closing", "sword unsheathing",
]  # fmt: skip
PLACES = [
    "in a large hall", "far away", "close up", "in a busy street", "underwater",
    "at night in the forest", "inside a car", "in a small kitchen", "on a windy beach",
    "in a cave", "in a stadium", "through a wall",
]  # fmt: skip
ADJECTIVES = ["loud", "soft", "distant", "heavy", "gentle", "sharp", "muffled", "faint"]


def prompt_pairs(seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(near-duplicate pairs, distinct pairs) of prompts."""
    rng = random.Random(seed)
    bases = [f"{s} {p}" for s in SOUNDS for p in PLACES]
    rng.shuffle(bases)

    def near(base: str) -> str:
        words = base.split()
        edit = rng.choice(["take", "order", "punct", "adjective", "case", "mixed"])
        take = []
        if edit in ("take", "mixed"):
            takes = [["take", str(rng.randint(1, 9))], [f"#{rng.randint(1, 20)}"]]
            takes += [[f"(v{rng.randint(2, 5)})"], [f"{rng.randint(1, 9)}"]]
            take = rng.choice(takes)
            words += take
        if edit in ("order", "mixed"):
            cut = rng.randint(1, len(words) - 1)
            words = words[cut:] + words[:cut]
        if edit in ("adjective", "mixed"):
            words.insert(rng.randint(0, len(words)), rng.choice(ADJECTIVES))
        # The take ends the prompt, as sheets number takes: a bare number inside a prompt
        # asks for something ("group 7", "3 gunshots"; docs/ml.md, take_numbers).
        text = " ".join([w for w in words if w not in take] + take)
        if edit in ("punct", "mixed"):
            text = text.replace(" ", rng.choice([", ", " - ", "; ", "  "]), 1) + rng.choice(
                ["!", ".", "...", ")", ""]
            )
        if edit == "case":
            text = text.upper() if rng.random() < 0.5 else text.title()
        return text

    positives = [(base, near(base)) for base in bases[:200]]
    negatives = []
    for _ in range(400):  # other sound, same place; same sound, other place; unrelated
        s1, s2 = rng.sample(SOUNDS, 2)
        p1, p2 = rng.sample(PLACES, 2)
        negatives.append(
            rng.choice(
                [
                    (f"{s1} {p1}", f"{s2} {p1}"),
                    (f"{s1} {p1}", f"{s1} {p2}"),
                    (f"{s1} {p1}", f"{s2} {p2}"),
                ]
            )
        )
    return positives, negatives
