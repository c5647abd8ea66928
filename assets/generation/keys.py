"""A generation's key: which rows are one generation, and so are paid for once.

A key is made of the normalized prompt, the duration, the audio type, the take number, and
the round (`--regenerate` asks for round 2, 3, ...). The prompt is normalized as a sheet
tends to vary it without meaning to: Unicode NFC (an accent typed as one character or as a
letter and a combining mark), every run of whitespace (newlines and tabs too) one space, none
at either end. Case is kept: the model reads "DOOR SLAM" and "door slam" as different
requests, and the request sent is exactly what was keyed. The duration is rounded to 0.1 s
(what a sheet would mean by 2 and 2.04), and an empty one is the API's default; an empty
audio type is `sound`.

`base` leaves the round out: every round of a row shares it, so the ledger can be asked
about a row before its round is known. Both are 16 bytes of SHA-256 (128 bits: a year of
10,000 generations a day has a chance of one collision below 10^-24), stored as binary and
shown as hex.
"""

import hashlib
import re
import unicodedata
from dataclasses import dataclass

_WHITESPACE = re.compile(r"\s+")
_VERSION = b"soundharvest generation key v1\x00"
KEY_BYTES = 16


def normalize_prompt(prompt: str) -> str:
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", prompt)).strip()


def normalize_duration(duration: float | None) -> float | None:
    return None if duration is None else round(duration, 1)


@dataclass(frozen=True)
class Request:
    """What is sent for one generation (already normalized), and which take it is."""

    prompt: str
    duration: float | None  # None: the API's default
    audio_type: str
    take: int

    @property
    def base(self) -> bytes:
        duration = "default" if self.duration is None else f"{self.duration:.1f}"
        fields = [self.prompt, duration, self.audio_type, str(self.take)]
        return hashlib.sha256(_VERSION + "\x00".join(fields).encode()).digest()[:KEY_BYTES]

    def key(self, round_: int) -> bytes:
        return round_key(self.base, round_)


def round_key(base: bytes, round_: int) -> bytes:
    return hashlib.sha256(base + round_.to_bytes(4, "big")).digest()[:KEY_BYTES]


def short(key: bytes) -> str:
    """The first 12 hex digits: enough for a person to find a create in the studio."""
    return key.hex()[:12]
