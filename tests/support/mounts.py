"""Small tmpfs mounts for the tests: a disk that fills up, a read-only one.

Mounting needs root (the CI container runs as root). Where it cannot be done the test is
skipped saying why, except in CI (`CI=true`), where that is a failure: the disk-full and
read-only rows of the fault matrix must run there.
"""

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `path` (made if missing) with `options` (`size=2m`, `ro,size=1m`),
    lazily unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode:
        why = done.stderr.decode().strip() or f"mount exited with {done.returncode}"
        message = f"cannot mount a tmpfs at {path} ({why}): this test needs root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run it: {message}", pytrace=False)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the filesystem of `disk` with a file, leaving about `leave` bytes free; the file.

    Written until the kernel says ENOSPC, after a reserve of `leave` bytes was put aside and
    before it is given back, so the figure holds whatever the block size.
    """
    reserve, filler = disk / "reserve", disk / "filler"
    reserve.write_bytes(b"\0" * leave)
    with open(filler, "wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * (64 << 10))
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)  # the last pages
    reserve.unlink()
    return filler
