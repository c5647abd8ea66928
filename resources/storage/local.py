"""What publishing means on a local disk: a locked temporary, fsync, then the final name.

A file is written (or copied) to a temporary in the target directory, fsync'd, checked for
its size (and sha256), then `os.replace`d onto the final name, and the directory is fsync'd
so the rename survives a power cut. A finished private file on the same filesystem
(`publish_file(move=True)`) is renamed instead of copied: nothing is read back.

Temporaries are dot-files ending in ``.tmp`` (``.{name}.{random}.tmp``): hidden from
``listdir`` and from pyarrow / DuckDB / Polars dataset discovery, and the only files
`Storage.remove_stale_temporaries` removes. A writer holds an exclusive ``flock`` on its
temporary until the rename, and the kernel drops it when the writer dies however it dies
(SIGKILL included): an unlocked temporary is a crashed write's, removed by the next write of
the same file or by the sweep of its directory. Callers that stage their own local files for
``publish_file(move=True)`` should name them the same way.
"""

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import secrets
import time
from collections.abc import Iterable
from typing import IO

from resources.storage.verify import CHUNK, check_received, hash_stream

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
# A temporary is locked a moment after it is created: younger unlocked ones are left alone.
STALE_AFTER_S = 5.0


class LocalDisk:
    """`Storage`'s writes and reads on a local filesystem (fsspec's `LocalFileSystem`)."""

    is_local = True

    def uri(self, path: str) -> str:
        # A plain absolute path, not ``file://``: ``open``, soundfile and DuckDB take only it.
        return path

    def publish(
        self, src: str, target: str, uri: str, size: int, sha256: str | None, *, move: bool
    ) -> bool:
        """Place the checked bytes of `src` at `target`; True if `src` was renamed there (it
        is then gone), False if it was copied."""
        if move and self._move(src, target, uri, size, sha256):
            return True
        with open(src, "rb") as f:
            self.write_chunks(iter(lambda: f.read(CHUNK), b""), target, uri, size, sha256)
        return False

    def write(self, data: bytes, target: str, uri: str) -> None:
        """Replace `target` with `data`, first removing temporaries its crashed writers left."""
        parent, name = os.path.split(target)
        remove_dead_temporaries(parent, f"{TEMP_PREFIX}{name}.", time.time() - STALE_AFTER_S)
        self.write_chunks([data], target, uri, len(data), None)

    def holds(self, target: str, data: bytes) -> bool:
        with open(target, "rb") as f:
            return os.fstat(f.fileno()).st_size == len(data) and f.read() == data

    def open_read(self, target: str) -> IO[bytes]:
        return open(target, "rb")  # returned to the caller, who closes it

    def remove_stale_temporaries(self, directory: str, cutoff: float) -> int:
        return remove_dead_temporaries(directory, TEMP_PREFIX, cutoff)

    def write_chunks(
        self, chunks: Iterable[bytes], target: str, uri: str, size: int, sha256: str | None
    ) -> None:
        """Write ``chunks`` to a temporary beside ``target``, verify, fsync, rename."""
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(
            parent, f"{TEMP_PREFIX}{os.path.basename(target)}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        )
        try:
            digest, nbytes = hashlib.sha256(), 0
            with open(tmp, "xb") as out:  # mode follows the umask, like any new file
                fcntl.flock(out.fileno(), fcntl.LOCK_EX)  # held until renamed (module doc)
                for chunk in chunks:
                    if sha256 is not None:
                        digest.update(chunk)
                    nbytes += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                stored = os.fstat(out.fileno()).st_size
                check_received(uri, size, sha256, nbytes, digest.hexdigest() if sha256 else None)
                check_received(uri, size, None, stored, None)
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(parent)

    def _move(self, src: str, target: str, uri: str, size: int, sha256: str | None) -> bool:
        """Verify ``src`` (its size, and its sha256 unless None) and rename it onto
        ``target``; False if they are on different filesystems (the caller then copies)."""
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        if os.stat(src).st_dev != os.stat(parent).st_dev:
            return False
        with open(src, "rb") as f:
            if sha256 is None:
                check_received(uri, size, None, os.fstat(f.fileno()).st_size, None)
            else:
                digest, nbytes = hash_stream(f, CHUNK)
                check_received(uri, size, sha256, nbytes, digest)
            # Private temp files (mkstemp) are 0600: give the published file the usual mode.
            os.fchmod(f.fileno(), _default_file_mode())
            os.fsync(f.fileno())  # data on disk before the name points at it
        try:
            os.replace(src, target)
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # same st_dev but another mount (bind mounts)
                return False
            raise
        _fsync_dir(parent)
        return True


def remove_dead_temporaries(directory: str, prefix: str, cutoff: float) -> int:
    """Unlink the temporaries in ``directory`` named ``prefix...`` that no live writer holds
    locked, last touched before ``cutoff``; return how many."""
    removed = 0
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return 0  # nothing there, so no temporaries either
    with entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(prefix) and _is_temp_name(name)):
                continue
            # Another process may finish or clean the same file meanwhile.
            with contextlib.suppress(FileNotFoundError):
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime > cutoff or _locked(entry.path):
                    continue
                os.unlink(entry.path)
                removed += 1
    return removed


def _is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and len(name) > 5


def _locked(path: str) -> bool:
    """True while a writer holds its lock on ``path`` (see the module doc)."""
    with open(path, "rb") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories can't be opened)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@functools.cache
def _default_file_mode() -> int:
    """0o666 less the process umask, read without changing it (Linux), else by a swap."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
