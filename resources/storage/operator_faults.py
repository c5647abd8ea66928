"""Which storage errors are the operator's, each said in one line: the root, its setting, the fix.

`faults.py` tells the causes apart (`StorageError.cause`); here they get their answer, the
one docs/reliability.md promises for an operator's mistake:

- a setting that cannot be used (`SOUNDHARVEST_STORAGE_OPTIONS` that is not JSON, a URL
  scheme nobody serves): the operator's, always;
- a full disk or a spent quota (ENOSPC, EDQUOT): the operator's, always, since no wait frees
  space; the line says how much is free and, where the caller knows it, what the day needs;
- a lasting cause (a file in the path, read-only, forbidden, a bucket that does not exist,
  credentials refused or missing) and an endpoint that cannot be reached (connection refused,
  unknown name, TLS refused): the operator's when met on first contact, before the root took
  any write: the write probe each step starts with (`probe.py`), on the step's first
  attempt (the step's `preflight`: a retry follows an attempt whose probes passed).
  An endpoint lost after the root took writes is a blip, retried like any trouble that may
  pass; a lasting cause met then stops the step without a retry, as before;
- anything else may pass (a timeout, a 5xx, throttling): retried.
"""

import os
import re
import shutil

from resources.error_kinds import OperatorError, SettingError
from resources.storage.faults import FULL, LASTING, UNREACHABLE, StorageError, StorageSettingError
from resources.storage.options import ENV_STORAGE_OPTIONS
from resources.storage.roots import ROOTS

SCRATCH_SETTING = "TMPDIR"  # where tempfile, and so the scratch space, puts its files
_URL_PATH = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s\"']+)/[^\s\"']*")  # a URL's path


class StorageUnwritable(OperatorError):
    """A storage root that cannot be written (or read), and will not be until someone fixes
    it."""


class StorageUnreachable(OperatorError):
    """A storage root whose endpoint never answered: wrong endpoint, or none there."""


class StorageFull(OperatorError):
    """A disk (or quota) with no room left: the audio, catalog or dataset root, or scratch."""


def operator_error(
    exc: StorageError, *, first_contact: bool, need: str = "", verb: str = "written"
) -> OperatorError | None:
    """The operator's mistake `exc` shows, or None when it may pass (then retry it).

    `first_contact`: the root has taken no write in this step yet (see the module doc).
    `need`: what the day still needs, said after the free space of a full disk. `verb`:
    what the step does with the root, "written" or "read".
    """
    if isinstance(exc, StorageSettingError):
        return SettingError(exc.problem, fix=exc.fix, setting=exc.setting)
    where, setting = _where(exc), exc.setting or "the root's variable"
    if exc.cause == FULL:
        return full(where, setting, exc.root, exc.errno, need)
    if not first_contact:
        return None
    reason = _reason(exc)
    if exc.cause == LASTING:
        writable = "a writable" if verb == "written" else "a readable"
        return StorageUnwritable(
            f"{where} cannot be {verb} ({reason})",
            fix=f"point {setting} at {writable} directory or bucket, or fix its permissions "
            f"or credentials ({ENV_STORAGE_OPTIONS})",
            setting=exc.setting,
        )
    if exc.cause == UNREACHABLE:
        reason = _URL_PATH.sub(r"\1", reason)  # the endpoint, not the probe file's key
        return StorageUnreachable(
            f"{where} cannot be reached ({reason})",
            fix=f"check {setting} and the endpoint_url in {ENV_STORAGE_OPTIONS} (scheme, "
            "host, port), and that this machine can reach it",
            setting=exc.setting,
        )
    return None


def full(
    where: str, setting: str, path: str | None, code: int | None, need: str = ""
) -> StorageFull:
    """`where` has no room left: the free space at `path` (a local one), and `need`."""
    said = os.strerror(code) if code else "no space left"
    free = free_bytes(path)
    room = "free space unknown" if free is None else f"{size_text(free)} free"
    return StorageFull(
        f"{where} is full ({said}): {room}" + (f"; {need}" if need else ""),
        fix=f"free space there, or point {setting} at a disk with room",
        setting=setting,
    )


def free_bytes(path: str | None) -> int | None:
    """Bytes free to this user on the local disk of `path` (its nearest existing folder);
    None for an object store (no such figure) or no path."""
    if not path or not os.path.isabs(path):
        return None
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def size_text(n: float) -> str:
    """`0 B`, `212 KiB`, `24.1 MiB`, `1.2 GiB`."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 100 * scale else f"{n / scale:.0f} {unit}"
    return f"{int(n)} B"


def _where(exc: StorageError) -> str:
    name = next((name for name, (var, _) in ROOTS.items() if var == exc.setting), None)
    label = f"the {name} root" if name else "the storage root"
    return f"{label} {exc.root}" if exc.root else label


def _reason(exc: StorageError) -> str:
    """The backend's words, without the `cannot write <uri>: ` the storage put first."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("cannot ") and ": " in text else text
