"""What publishing means on an object store (``s3://``, ``gs://``, ``memory://``): one PUT.

An object appears whole or not at all, so there is no temporary: the finished local file is
checked first (size, and sha256 unless its writer hashed it), uploaded with ``fs.put_file``
(a single PUT, or on S3 a multipart upload that becomes visible only on completion), and the
stored size is then read back with ``fs.info``; an object of the wrong size is removed.
Listings are cached by fsspec: every read of a size first drops the cached entry.
"""

import contextlib
import os
from typing import IO, Any

import fsspec

from resources.storage.faults import VerificationError
from resources.storage.verify import CHUNK, check_received, hash_stream

# s3fs reads a single-PUT body whole into memory (files under two parts): 8 MiB parts bound
# that to 16 MiB per upload, and larger files stream as a multipart upload.
S3_PART = 8 << 20
READ_BLOCK = 8 << 20  # bytes fetched per remote read


class ObjectStore:
    """`Storage`'s writes and reads on an object store."""

    is_local = False

    def __init__(self, fs: fsspec.AbstractFileSystem, *, s3: bool) -> None:
        self.fs = fs
        self._put_kwargs: dict[str, Any] = {"chunksize": S3_PART} if s3 else {}

    def uri(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def publish(
        self, src: str, target: str, uri: str, size: int, sha256: str | None, *, move: bool
    ) -> bool:
        """Upload `src` after checking its size (and its sha256 unless None); False: `src` is
        still there (the caller removes it when moving)."""
        if sha256 is None:
            check_received(uri, size, None, os.stat(src).st_size, None)
        else:
            with open(src, "rb") as f:
                digest, nbytes = hash_stream(f, CHUNK)
            check_received(uri, size, sha256, nbytes, digest)
        self.fs.put_file(src, target, **self._put_kwargs)
        self._check_size(target, uri, size)
        return False

    def write(self, data: bytes, target: str, uri: str) -> None:
        self.fs.pipe_file(target, data)  # one PUT: the object appears whole or not
        self._check_size(target, uri, len(data))

    def holds(self, target: str, data: bytes) -> bool:
        self.fs.invalidate_cache(target)
        return self.fs.size(target) == len(data) and self.fs.cat_file(target) == data

    def open_read(self, target: str) -> IO[bytes]:
        return self.fs.open(target, "rb", block_size=READ_BLOCK)

    def remove_stale_temporaries(self, directory: str, cutoff: float) -> int:
        return 0  # object stores have no temporaries

    def _check_size(self, target: str, uri: str, size: int) -> None:
        self.fs.invalidate_cache(target)
        stored = self.fs.info(target).get("size")
        if stored != size:
            with contextlib.suppress(Exception):
                self.fs.rm_file(target)
            raise VerificationError(
                f"{uri}: stored object has {stored} bytes, expected {size}; it was removed"
            )
