"""Are these the bytes expected? The size and sha256 checks every publish makes.

A file is checked against the size (and the sha256, unless its writer hashed it as it wrote
it) before it gets its final name; a mismatch is a `VerificationError` and publishes nothing.
"""

import hashlib
import os
from typing import IO

from resources.storage.faults import VerificationError

CHUNK = 1 << 20  # bytes read at a time from a local file


def sha256_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    """Hex sha256 of a local file, read in chunks."""
    with open(path, "rb") as f:
        return hash_stream(f, chunk)[0]


def hash_stream(f: IO[bytes], chunk: int) -> tuple[str, int]:
    """(hex sha256, bytes read) of what is left in `f`."""
    digest, nbytes = hashlib.sha256(), 0
    while block := f.read(chunk):
        digest.update(block)
        nbytes += len(block)
    return digest.hexdigest(), nbytes


def check_received(
    uri: str, size: int, sha256: str | None, nbytes: int, digest: str | None
) -> None:
    """Raise `VerificationError` unless `nbytes` is `size` and (when `sha256` is given)
    `digest` is `sha256`; `uri` is where the bytes were going."""
    if nbytes != size:
        raise VerificationError(f"{uri}: got {nbytes} bytes, expected {size}; not published")
    if sha256 is not None and digest != sha256:
        raise VerificationError(
            f"{uri}: sha256 {digest} does not match the expected {sha256}; not published"
        )
