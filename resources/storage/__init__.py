"""Atomic, verified writes to any fsspec root, and what storage trouble means.

- `store`: `Storage`, what is the same on every root; `local` and `remote`: what differs on a
  local disk (a locked temporary, fsync, rename) and on an object store (one verified PUT);
- `verify`: the size and sha256 checks; `faults`: `StorageError` and its causes;
  `operator_faults`: which of them are the operator's, in one line;
- `options`: `SOUNDHARVEST_STORAGE_OPTIONS`, the S3 defaults, credentials kept out of messages;
- `roots`: where each root comes from; `probe`: can a root be written (or read)?;
  `uris`: opening a stored file by the URI the catalog gives it.

The names the rest of the project uses are re-exported here.
"""

from resources.storage.faults import (
    FULL,
    LASTING,
    PASSING,
    UNREACHABLE,
    StorageError,
    StorageSettingError,
    VerificationError,
    cause_of,
)
from resources.storage.options import ENV_STORAGE_OPTIONS, S3_CONFIG, storage_options_from_env
from resources.storage.store import Storage
from resources.storage.verify import sha256_file

__all__ = [
    "ENV_STORAGE_OPTIONS",
    "FULL",
    "LASTING",
    "PASSING",
    "S3_CONFIG",
    "UNREACHABLE",
    "Storage",
    "StorageError",
    "StorageSettingError",
    "VerificationError",
    "cause_of",
    "sha256_file",
    "storage_options_from_env",
]
