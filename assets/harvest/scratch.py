"""Private local scratch directories for one day's downloads, and their cleanup after a crash.

Each directory lives under ``{tempdir}/soundharvest/`` and holds an exclusive ``flock`` on
its ``.lock`` file while in use. The kernel releases that lock when its process dies, however
it dies (SIGKILL included), so a directory whose lock can be taken belongs to nobody and is
removed by the next run instead of filling the disk with half-downloaded files. The lock is
taken on a temporary name and then renamed to ``.lock``, so a ``.lock`` is never unlocked
while its owner lives; a directory without one is left alone until it is old.
"""

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PARENT = "soundharvest"
PREFIX = "day-"
LOCK = ".lock"
# A directory this young may be one whose owner has not taken its lock yet.
_GRACE_S = 60.0


def scratch_root(base: str | os.PathLike[str] | None = None) -> Path:
    """Where scratch directories live: ``{base or tempfile.gettempdir()}/soundharvest``."""
    return Path(base or tempfile.gettempdir()) / PARENT


@contextlib.contextmanager
def scratch_dir(base: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A new private directory, locked while the ``with`` block runs, then removed."""
    parent = scratch_root(base)
    parent.mkdir(exist_ok=True)
    remove_abandoned(parent)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    try:
        with open(path / f"{LOCK}.new", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(path / f"{LOCK}.new", path / LOCK)  # the open file keeps its lock
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_abandoned(parent: Path, grace_s: float = _GRACE_S) -> int:
    """Remove scratch directories whose owner is gone; return how many."""
    removed = 0
    cutoff = time.time() - grace_s
    for path in parent.glob(f"{PREFIX}*"):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if _in_use(path, cutoff):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _in_use(path: Path, cutoff: float) -> bool:
    try:
        lock = open(path / LOCK)  # noqa: SIM115 - opened to try its lock, closed just below
    except FileNotFoundError:
        # Not locked yet (its owner is starting), or its owner died before locking it.
        return path.stat().st_mtime > cutoff
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # the lock is released when the file closes
