"""Open a stored file by the absolute URI the catalog gives it (local path, ``s3://...``).

Readers of the catalog (features, dataset exports) get URIs, not storage roots. One
:class:`Storage` per filesystem root (``/`` locally, the bucket on object stores) serves them
all, so a year of days shares one client, with ``SOUNDHARVEST_STORAGE_OPTIONS`` applied.
"""

import functools
import os
from typing import IO

import fsspec

from resources.storage.options import ENV_STORAGE_OPTIONS
from resources.storage.store import Storage


def split_uri(uri: str) -> tuple[str, str]:
    """(root, relpath) of an absolute URI: ``("/", "data/a.wav")``, ``("s3://b", "k/a.wav")``."""
    protocol, path = fsspec.core.split_protocol(uri)
    if protocol in (None, "file", "local"):
        if not path.startswith("/"):
            raise ValueError(f"stored file URI must be absolute: {uri!r}")
        return "/", path.lstrip("/")
    bucket, _, relpath = path.partition("/")
    return f"{protocol}://{bucket}", relpath


def storage_for(root: str) -> Storage:
    return _storage(root, os.environ.get(ENV_STORAGE_OPTIONS, ""))


@functools.lru_cache(maxsize=16)
def _storage(root: str, options: str) -> Storage:
    """One per root and options: a changed environment gets a fresh client."""
    return Storage(root)


def open_stored(uri: str) -> IO[bytes]:
    """A binary reader of the stored file at ``uri``."""
    root, relpath = split_uri(uri)
    return storage_for(root).open(relpath)


def local_path(uri: str) -> str | None:
    """The path to hand to libraries that read local files faster by name, else None."""
    root, relpath = split_uri(uri)
    storage = storage_for(root)
    return storage.path(relpath) if storage.is_local() else None
