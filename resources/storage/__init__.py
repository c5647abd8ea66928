"""Atomic, verified writes to one fsspec root; the names the rest of the project uses."""

from resources.storage.store import (
    ENV_STORAGE_OPTIONS,
    FULL,
    LASTING,
    PASSING,
    S3_CONFIG,
    UNREACHABLE,
    Storage,
    StorageError,
    StorageSettingError,
    VerificationError,
    cause_of,
    sha256_file,
    storage_options_from_env,
)

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
