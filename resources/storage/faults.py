"""What went wrong in storage, and what waiting would do about it.

Every backend error leaves `Storage` as a `StorageError` whose `cause` says whether a retry
may cure it (`PASSING`), never will (`LASTING`, `FULL`), or depends on whether the root ever
answered (`UNREACHABLE`); `operator_faults` turns the causes into the operator's words.
`VerificationError` says the bytes were not the ones expected, and nothing was published.
"""

import errno
import socket

# What waiting would do about a storage error (`StorageError.cause`, from `cause_of`):
PASSING = "passing"  # may pass: a timeout, a 5xx, throttling, a connection dropped
LASTING = "lasting"  # stays until someone changes the root, its permissions or credentials
FULL = "full"  # no space left, or a quota spent: no wait cures it either
# The endpoint refused the connection, or its name is unknown: the operator's when met before
# the root ever took a write (a wrong endpoint, a server that is not there), a blip after.
UNREACHABLE = "unreachable"


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI, never a credential.

    `cause` says what waiting would do (PASSING, LASTING, FULL, UNREACHABLE); `root` and
    `setting` name the storage root it happened on and the variable that configures it, when
    known; `errno` is the backend's own, when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        cause: str = PASSING,
        root: str | None = None,
        setting: str | None = None,
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.root = root
        self.setting = setting
        self.errno = errno

    @property
    def lasting(self) -> bool:
        """No wait cures the cause (unreachable may still pass: it is not lasting)."""
        return self.cause in (LASTING, FULL)


class StorageSettingError(StorageError):
    """A setting of the storage that cannot be used (`SOUNDHARVEST_STORAGE_OPTIONS`, a root's
    URL scheme): the operator's to fix; `problem` and `fix` as in `OperatorError`."""

    def __init__(self, problem: str, *, fix: str, setting: str | None) -> None:
        super().__init__(f"{problem}: {fix}", cause=LASTING, setting=setting)
        self.problem = problem
        self.fix = fix


class VerificationError(StorageError):
    """The bytes did not match the expected size or sha256; nothing was published."""


# Causes that no retry cures: a path through a file, a read-only or forbidden place, a
# bucket that does not exist, credentials refused (s3fs turns AccessDenied,
# InvalidAccessKeyId, SignatureDoesNotMatch into PermissionError, NoSuchBucket into
# FileNotFoundError) or missing (botocore's own errors, named so botocore is not imported).
_LASTING_TYPES = (
    PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError, FileNotFoundError
)  # fmt: skip
_LASTING_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR})
_LASTING_NAMES = frozenset({"NoCredentialsError", "PartialCredentialsError"})
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# No connection at all: refused, name unknown, TLS refused. botocore says so with
# EndpointConnectionError (refused or unknown name) and SSLError, aiohttp (gcsfs, http) with
# ClientConnectorError; named, so neither is imported. A connect *timeout* is not one of them:
# the endpoint may only be slow, and a timeout stays passing.
_UNREACHABLE_TYPES = (ConnectionRefusedError, socket.gaierror)
_UNREACHABLE_NAMES = frozenset({"EndpointConnectionError", "SSLError", "ClientConnectorError"})


def cause_of(exc: BaseException) -> str:
    """What waiting would do about `exc`, a backend's error: PASSING, LASTING, FULL or
    UNREACHABLE (see their comments)."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code in _FULL_ERRNOS:
        return FULL
    if isinstance(exc, _LASTING_TYPES) or code in _LASTING_ERRNOS or _named(exc, _LASTING_NAMES):
        return LASTING
    if isinstance(exc, _UNREACHABLE_TYPES) or _named(exc, _UNREACHABLE_NAMES):
        return UNREACHABLE
    return PASSING


def _named(exc: BaseException, names: frozenset[str]) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)
