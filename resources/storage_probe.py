"""Can a storage root be written? One cheap probe when a step starts, before any API call.

The probe writes a small file at the root, the way every write of the pipeline goes
(`Storage.write_bytes`: a temporary, then the final name; one PUT on object stores), and
removes it. Its name starts with `_`, so readers of the catalog tree skip it even if a
crash leaves it behind. A root that cannot be written for a reason no wait cures (a file
in its path, a read-only or forbidden place, a bucket that does not exist, credentials
refused or missing: `StorageError.lasting`) is the operator's mistake, `StorageUnwritable`,
naming the root and its variable; trouble that may pass (a timeout, a 5xx, throttling) is
raised as the `StorageError` it is, and the step is retried as for any storage trouble.
"""

import secrets
from collections.abc import Callable

from resources.errors import OperatorError
from resources.storage import Storage, StorageError

PROBE_PREFIX = "_soundharvest-write-probe-"
_PROBE = b"soundharvest checks that this root can be written; this file is removed at once\n"


class StorageUnwritable(OperatorError):
    """A storage root that cannot be written, and will not be until someone fixes it."""


def probe_writable(open_root: Callable[[], Storage], label: str, setting: str) -> Storage:
    """The opened root, once a probe file was written and removed there.

    `label` says which root ("audio", "catalog"), `setting` where it is configured.
    """
    relpath = PROBE_PREFIX + secrets.token_hex(6)
    storage: Storage | None = None
    try:
        storage = open_root()
        storage.write_bytes(_PROBE, relpath)
        storage.remove(relpath)
    except StorageError as exc:
        if not exc.lasting:
            raise
        reason, root = str(exc), f"the {label} root"
        if storage is not None:  # name the root, not the probe file
            reason = reason.removeprefix(f"cannot write {storage.uri(relpath)}: ")
            root = f"{root} {storage.uri('')}"
        raise StorageUnwritable(
            f"{root} cannot be written ({reason})",
            fix=f"point {setting} at a writable directory or bucket, or fix its permissions "
            "or credentials (SOUNDHARVEST_STORAGE_OPTIONS)",
            setting=setting,
        ) from None
    return storage
