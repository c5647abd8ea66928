"""Can a storage root be written (or read)? One cheap probe when a step starts, before any API
call.

The probe writes a small file at the root, the way every write of the pipeline goes
(`Storage.write_bytes`: a temporary, then the final name; one PUT on object stores), and
removes it. Its name starts with `_`, so readers of the catalog tree skip it even if a
crash leaves it behind. It is the step's first contact with the root: a root that cannot be
written for a reason no wait cures (a file in its path, read-only or forbidden, a bucket that
does not exist, credentials refused or missing, a full disk), or whose endpoint cannot be
reached at all, is the operator's mistake (`operator_faults.operator_error`), naming the root
and its variable; trouble that may pass (a timeout, a 5xx, throttling) is raised as the
`StorageError` it is, and the step is retried as for any storage trouble.
"""

import secrets
from collections.abc import Callable

from resources.storage.faults import StorageError
from resources.storage.operator_faults import operator_error
from resources.storage.store import Storage

PROBE_PREFIX = "_soundharvest-write-probe-"
_PROBE = b"soundharvest checks that this root can be written; this file is removed at once\n"


def probe_writable(open_root: Callable[[], Storage]) -> Storage:
    """The opened root, once a probe file was written and removed there.

    `open_root` builds the root's `Storage` with its `setting`, which errors then name.
    """
    relpath = PROBE_PREFIX + secrets.token_hex(6)

    def write(storage: Storage) -> None:
        storage.write_bytes(_PROBE, relpath)
        storage.remove(relpath)

    return _first_contact(open_root, write, "written")


def probe_readable(open_root: Callable[[], Storage]) -> Storage:
    """The opened root, once it answered whether it exists (a root that does not exist yet is
    fine: a manifest root without manifests is a root of days without runs)."""
    return _first_contact(open_root, lambda storage: storage.exists(""), "read")


def _first_contact(
    open_root: Callable[[], Storage], touch: Callable[[Storage], object], verb: str
) -> Storage:
    try:
        storage = open_root()
        touch(storage)
    except StorageError as exc:
        if (mistake := operator_error(exc, first_contact=True, verb=verb)) is None:
            raise
        raise mistake from None
    return storage
