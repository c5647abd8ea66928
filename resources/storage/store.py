"""Atomic, verified writes to one fsspec root: local disk, ``s3://``, ``gs://``, ``memory://``.

Every write of the pipeline goes through :class:`Storage`, so that a file appears under its
final name only when it is complete and verified (DESIGN.md §2). ``fs.open(path, "wb")`` is
never used for that: fsspec closes, and so publishes, the file even when the ``with`` body
raised, leaving a truncated file or object under the final name.

- Local: write (or copy) to a temporary in the target directory, fsync, check the size (and
  sha256), then ``os.replace`` it onto the final name and fsync the directory.
- Object stores: hash the finished local file first, upload it with ``fs.put_file`` (a
  single PUT, or a multipart upload that becomes visible only on completion), then check the
  stored size with ``fs.info``.
- A file whose sha256 its writer computed as it wrote it (``publish_file(hashed=True)``: the
  download, the transcoder) is not hashed again: one hash pass per stored byte, and a local
  move reads nothing back; its size is still checked.

An S3 endpoint that accepts connections and never answers ends in a ``StorageError``, not a
hang: S3 clients get connect and read timeouts and a bounded retry count by default
(``S3_CONFIG``, overridable per key through ``config_kwargs`` in the storage options), and never
send ``Expect: 100-continue``, whose wait for the interim answer no timeout covered (aiohttp).
The longest an operation waits is then about 5 (s3fs's own tries) x ``max_attempts`` x
``read_timeout``.

Temporaries are dot-files ending in ``.tmp`` (``.{name}.{random}.tmp``): hidden from
``listdir`` and from pyarrow / DuckDB / Polars dataset discovery, and the only files
:meth:`Storage.remove_stale_temporaries` removes. A writer holds an exclusive ``flock`` on its
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
import json
import os
import posixpath
import re
import secrets
import socket
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, NoReturn

import fsspec
from fsspec.implementations.local import LocalFileSystem

ENV_STORAGE_OPTIONS = "SOUNDHARVEST_STORAGE_OPTIONS"
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
# A temporary is locked a moment after it is created: younger unlocked ones are left alone.
STALE_AFTER_S = 5.0

_CHUNK = 1 << 20
# s3fs reads a single-PUT body whole into memory (files under two parts): 8 MiB parts bound
# that to 16 MiB per upload, and larger files stream as a multipart upload.
_S3_PART = 8 << 20
_REMOTE_READ_BLOCK = 8 << 20
# botocore's defaults are a 60 s read timeout and 5 "legacy" attempts, which s3fs repeats up to
# five times on timeouts: half an hour before an unresponsive endpoint is reported.
S3_CONFIG: dict[str, Any] = {
    "connect_timeout": 10,
    "read_timeout": 30,
    "retries": {"max_attempts": 2, "mode": "standard"},
}
# Option names whose values must never reach a message (s3fs: key/secret/token, gcsfs:
# token, adlfs: account_key/sas_token/client_secret, sftp/ftp: password, ...).
_SECRET_NAME = re.compile(r"key|secret|token|password|passwd|credential|signature", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s\"']+@")


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


class StorageSettingError(StorageError):
    """A setting of the storage that cannot be used (`SOUNDHARVEST_STORAGE_OPTIONS`, a root's
    URL scheme): the operator's to fix; `problem` and `fix` as in `OperatorError`."""

    def __init__(self, problem: str, *, fix: str, setting: str | None) -> None:
        super().__init__(f"{problem}: {fix}", cause=LASTING, setting=setting)
        self.problem = problem
        self.fix = fix


_OPTIONS_FIX = 'write it as a JSON object keyed by protocol, e.g. {"s3": {"endpoint_url": "..."}}'


class VerificationError(StorageError):
    """The bytes did not match the expected size or sha256; nothing was published."""


def sha256_file(path: str | os.PathLike[str], chunk: int = _CHUNK) -> str:
    """Hex sha256 of a local file, read in chunks."""
    with open(path, "rb") as f:
        return _hash_stream(f, chunk)[0]


def storage_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Per-protocol fsspec options from ``SOUNDHARVEST_STORAGE_OPTIONS``.

    The variable holds JSON keyed by protocol, e.g.
    ``{"s3": {"endpoint_url": "http://127.0.0.1:5000", "key": "...", "secret": "..."}}``.
    Errors never echo the value: it usually carries credentials.
    """
    raw = (os.environ if environ is None else environ).get(ENV_STORAGE_OPTIONS, "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        # `from None`: the decode error keeps the whole document (and its secrets) in `.doc`;
        # its `msg` and position name no part of it.
        raise StorageSettingError(
            f"{ENV_STORAGE_OPTIONS} is not valid JSON ({exc.msg}: line {exc.lineno} column "
            f"{exc.colno}; its value is not shown, it may hold credentials)",
            fix=_OPTIONS_FIX,
            setting=ENV_STORAGE_OPTIONS,
        ) from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise StorageSettingError(
            f"{ENV_STORAGE_OPTIONS} must be a JSON object of objects keyed by protocol",
            fix=_OPTIONS_FIX,
            setting=ENV_STORAGE_OPTIONS,
        )
    return parsed


class Storage:
    """One fsspec root (local path, ``file://``, ``s3://``, ``gs://``, ``memory://``).

    Options come from ``SOUNDHARVEST_STORAGE_OPTIONS`` for the URL's protocol, overridden by
    ``storage_options``. The filesystem instance is private to this object
    (``skip_instance_cache``): a later ``Storage`` with other endpoints or environment never
    receives a stale client, and listings are never answered from another instance's cache.
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        setting: str | None = None,
    ) -> None:
        self.setting = setting  # the variable this root comes from, named by its errors
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as exc:
            raise StorageSettingError(
                f"unsupported storage URL scheme {protocol!r}: {exc}",
                fix=f"point {setting or 'the root'} at a local folder, s3://, gs:// or another "
                "fsspec URL whose package is installed",
                setting=setting,
            ) from None
        aliases = cls.protocol if isinstance(cls.protocol, tuple | list) else (cls.protocol,)
        from_env = storage_options_from_env()
        options: dict[str, Any] = {}
        for name in dict.fromkeys((protocol, *aliases)):
            options.update(from_env.get(name, {}))
        options.update(storage_options or {})
        if "s3" in aliases:
            options = _with_s3_defaults(options)
        self._secrets = sorted(_secret_values(options), key=len, reverse=True)
        try:
            fs, root = fsspec.url_to_fs(url, skip_instance_cache=True, **options)
        except Exception as exc:
            self._raise(f"cannot open storage {self._redact(url)}", exc)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/") or root
        self._put_kwargs: dict[str, Any] = {"chunksize": _S3_PART} if "s3" in aliases else {}

    def __repr__(self) -> str:
        return f"Storage({self.uri('')!r})"

    # -- naming ---------------------------------------------------------------------------

    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, relpath: str) -> str:
        """Path inside ``fs`` of ``relpath`` (POSIX, relative to the root, no ``..``)."""
        if relpath.startswith("/") or ".." in relpath.split("/"):
            raise ValueError(f"storage path must be relative without '..': {relpath!r}")
        rel = "/".join(p for p in relpath.split("/") if p not in ("", "."))
        return self.fs._strip_protocol(posixpath.join(self.root, rel) if rel else self.root)

    def uri(self, relpath: str) -> str:
        """Absolute URI of ``relpath``, usable from any working directory.

        Local files get a plain absolute path, not ``file://``: every reader we feed
        (``open``, soundfile, pandas, pyarrow, DuckDB, Polars, fsspec) accepts it, while
        ``file://`` URIs break ``open``, soundfile and DuckDB.
        """
        path = self.path(relpath)
        return path if self.is_local() else self.fs.unstrip_protocol(path)

    # -- writes ---------------------------------------------------------------------------

    def publish_file(
        self,
        local_src: str,
        relpath: str,
        *,
        size: int,
        sha256: str,
        move: bool = False,
        hashed: bool = False,
    ) -> str:
        """Place the finished local file ``local_src`` at ``relpath``; return its URI.

        The bytes are checked against ``size`` and ``sha256`` before they get the final
        name; on any failure nothing is left under that name, no temporary remains, and
        ``local_src`` is untouched. With ``move=True`` the source is consumed on success: a
        local target on the same filesystem takes it by rename (no second copy), otherwise
        it is copied (or uploaded) and then deleted.

        ``hashed=True`` says that ``sha256`` was computed over these very bytes as they were
        written to ``local_src``, a private file nothing else writes (a download, a
        transcoded WAV): the digest is then trusted and only the size is checked (``fstat``),
        so a move reads nothing back and a copy or upload is not hashed a second time.
        """
        target, uri = self.path(relpath), self.uri(relpath)
        expected = None if hashed else sha256  # the digest still to check, if any
        try:
            if not self.is_local():
                self._upload(local_src, target, uri, size, expected)
            elif move and self._move_local(local_src, target, uri, size, expected):
                return uri  # renamed: the source is already gone
            else:
                with open(local_src, "rb") as src:
                    chunks = iter(lambda: src.read(_CHUNK), b"")
                    self._write_local(chunks, target, uri, size, expected)
            if move:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(local_src)
        except StorageError:
            raise
        except Exception as exc:
            self._raise(f"cannot publish {uri}", exc)
        return uri

    def write_bytes(self, data: bytes, relpath: str, *, if_changed: bool = False) -> str:
        """Atomically replace ``relpath`` with a small in-memory payload; return its URI.

        ``if_changed=True`` leaves the file alone when it already holds exactly ``data``: a
        rerun that changed nothing reads a small file instead of writing and syncing it.
        """
        target, uri = self.path(relpath), self.uri(relpath)
        try:
            if if_changed and self._holds(target, data):
                return uri
            if self.is_local():
                parent, name = os.path.split(target)
                cutoff = time.time() - STALE_AFTER_S
                _remove_dead_temporaries(parent, f"{TEMP_PREFIX}{name}.", cutoff)
                self._write_local([data], target, uri, len(data), None)
            else:
                self.fs.pipe_file(target, data)  # one PUT: the object appears whole or not
                self._check_remote_size(target, uri, len(data))
        except StorageError:
            raise
        except Exception as exc:
            self._raise(f"cannot write {uri}", exc)
        return uri

    def remove(self, relpath: str) -> None:
        """Delete the file ``relpath``; a missing one is fine."""
        target = self.path(relpath)
        try:
            self.fs.rm_file(target)
        except FileNotFoundError:
            pass
        except Exception as exc:
            self._raise(f"cannot remove {self.uri(relpath)}", exc)

    def remove_stale_temporaries(
        self, relpath_dir: str, older_than_s: float = STALE_AFTER_S
    ) -> int:
        """Delete temporaries left in ``relpath_dir`` by crashed writes; return how many.

        Only dot-files ending in ``.tmp`` that no writer holds locked and that are untouched
        for ``older_than_s`` seconds go, so a write in progress keeps its file. Object stores
        have no temporaries: 0.
        """
        if not self.is_local():
            return 0
        try:
            return _remove_dead_temporaries(
                self.path(relpath_dir), TEMP_PREFIX, time.time() - older_than_s
            )
        except OSError as exc:
            self._raise(f"cannot clean {self.uri(relpath_dir)}", exc)

    # -- reads ----------------------------------------------------------------------------

    def verify(self, relpath: str, *, size: int, sha256: str | None = None) -> bool:
        """True if ``relpath`` is a file of ``size`` bytes (and ``sha256``, streamed)."""
        target, uri = self.path(relpath), self.uri(relpath)
        try:
            self.fs.invalidate_cache(target)
            info = self.fs.info(target)
            if info.get("type") != "file" or info.get("size") != size:
                return False
            if sha256 is None:
                return True
            with self._open_read(target) as f:
                digest, nbytes = _hash_stream(f, _REMOTE_READ_BLOCK)
            return nbytes == size and digest == sha256
        except FileNotFoundError:
            return False
        except Exception as exc:
            self._raise(f"cannot verify {uri}", exc)

    def exists(self, relpath: str) -> bool:
        target = self.path(relpath)
        with self._reading(relpath):
            self.fs.invalidate_cache(target)
            return self.fs.exists(target)

    def read_bytes(self, relpath: str) -> bytes:
        """Whole content of a small file; ``FileNotFoundError`` if it is missing."""
        with self._reading(relpath):
            return self.fs.cat_file(self.path(relpath))

    def open(self, relpath: str, mode: str = "rb") -> IO[bytes]:
        """A binary reader; writes go through ``publish_file`` / ``write_bytes`` only."""
        if mode != "rb":
            raise ValueError(f"Storage.open is read-only (mode 'rb'), got {mode!r}")
        target = self.path(relpath)
        with self._reading(relpath):
            self.fs.invalidate_cache(target)  # a listing cached earlier must not answer
            return self._open_read(target)

    def listdir(self, relpath: str = "") -> list[str]:
        """Sorted names in a directory, without dot-files; [] if it does not exist."""
        return sorted(self._visible_entries(relpath))

    def sizes(self, relpath: str = "") -> dict[str, int]:
        """Name -> size of the files in a directory (one listing, dot-files left out)."""
        return {
            name: int(entry["size"])
            for name, entry in self._visible_entries(relpath).items()
            if entry.get("type") == "file"
        }

    def find(self, relpath: str = "") -> dict[str, dict[str, Any]]:
        """Relative path -> fsspec details (size, mtime / ETag / ...) of every file below
        ``relpath``, from one recursive listing; paths through a dot-file are left out.

        A missing bucket raises FileNotFoundError; any other failure (unreachable, refused)
        raises StorageError: an empty answer always means "nothing there".
        """
        target = self.path(relpath)
        with self._reading(relpath):
            self.fs.invalidate_cache(target)
            found = self.fs.find(target, detail=True)
        prefix = target.rstrip("/") + "/"
        files = {}
        for path, entry in found.items():
            relative = path.removeprefix(prefix)
            if entry.get("type") == "file" and not any(
                part.startswith(TEMP_PREFIX) for part in relative.split("/")
            ):
                files[relative] = entry
        return files

    # -- internals ------------------------------------------------------------------------

    def _write_local(
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
                _check(uri, size, sha256, nbytes, digest.hexdigest() if sha256 else None)
                _check(uri, size, None, stored, None)
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(parent)

    def _move_local(self, src: str, target: str, uri: str, size: int, sha256: str | None) -> bool:
        """Verify ``src`` (its size, and its sha256 unless None) and rename it onto
        ``target``; False if they are on different filesystems (the caller then copies)."""
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        if os.stat(src).st_dev != os.stat(parent).st_dev:
            return False
        with open(src, "rb") as f:
            if sha256 is None:
                _check(uri, size, None, os.fstat(f.fileno()).st_size, None)
            else:
                digest, nbytes = _hash_stream(f, _CHUNK)
                _check(uri, size, sha256, nbytes, digest)
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

    def _upload(self, src: str, target: str, uri: str, size: int, sha256: str | None) -> None:
        """Upload ``src`` after checking its size (and its sha256 unless None)."""
        if sha256 is None:
            _check(uri, size, None, os.stat(src).st_size, None)
        else:
            with open(src, "rb") as f:
                digest, nbytes = _hash_stream(f, _CHUNK)
            _check(uri, size, sha256, nbytes, digest)
        self.fs.put_file(src, target, **self._put_kwargs)
        self._check_remote_size(target, uri, size)

    def _holds(self, target: str, data: bytes) -> bool:
        """True if ``target`` is a file whose bytes are ``data`` (its size is looked at first)."""
        try:
            if self.is_local():
                with open(target, "rb") as f:
                    return os.fstat(f.fileno()).st_size == len(data) and f.read() == data
            self.fs.invalidate_cache(target)
            return self.fs.size(target) == len(data) and self.fs.cat_file(target) == data
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False

    def _check_remote_size(self, target: str, uri: str, size: int) -> None:
        self.fs.invalidate_cache(target)
        stored = self.fs.info(target).get("size")
        if stored != size:
            with contextlib.suppress(Exception):
                self.fs.rm_file(target)
            raise VerificationError(
                f"{uri}: stored object has {stored} bytes, expected {size}; it was removed"
            )

    def _visible_entries(self, relpath: str) -> dict[str, dict[str, Any]]:
        """Name -> fsspec detail of a directory's entries, bar dot-files (temporaries)."""
        target = self.path(relpath)
        try:
            with self._reading(relpath):
                self.fs.invalidate_cache(target)
                entries = self.fs.ls(target, detail=True)
        except FileNotFoundError:
            return {}
        named = ((posixpath.basename(str(e["name"]).rstrip("/")), e) for e in entries)
        return {name: e for name, e in named if name and not name.startswith(TEMP_PREFIX)}

    def _open_read(self, target: str) -> IO[bytes]:
        if self.is_local():
            return open(target, "rb")  # returned to the caller, who closes it
        return self.fs.open(target, "rb", block_size=_REMOTE_READ_BLOCK)

    @contextlib.contextmanager
    def _reading(self, relpath: str) -> Iterator[None]:
        """Turn backend errors into StorageError; a missing file stays FileNotFoundError."""
        try:
            yield
        except (FileNotFoundError, StorageError):
            raise
        except Exception as exc:
            self._raise(f"cannot read {self.uri(relpath)}", exc)

    def _redact(self, text: str) -> str:
        text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    def _raise(self, what: str, exc: BaseException) -> NoReturn:
        """Raise a StorageError for ``exc``, chained only if no credential shows in it."""
        err = StorageError(
            f"{what}: {type(exc).__name__}: {self._redact(str(exc))}",
            cause=cause_of(exc),
            root=self.uri("") if hasattr(self, "root") else None,  # None while opening
            setting=self.setting,
            errno=exc.errno if isinstance(exc, OSError) else None,
        )
        chain = "".join(traceback.format_exception(exc))
        raise err from (exc if self._redact(chain) == chain else None)


def _hash_stream(f: IO[bytes], chunk: int) -> tuple[str, int]:
    digest, nbytes = hashlib.sha256(), 0
    while block := f.read(chunk):
        digest.update(block)
        nbytes += len(block)
    return digest.hexdigest(), nbytes


def _check(uri: str, size: int, sha256: str | None, nbytes: int, digest: str | None) -> None:
    if nbytes != size:
        raise VerificationError(f"{uri}: got {nbytes} bytes, expected {size}; not published")
    if sha256 is not None and digest != sha256:
        raise VerificationError(
            f"{uri}: sha256 {digest} does not match the expected {sha256}; not published"
        )


def _is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and len(name) > 5


def _remove_dead_temporaries(directory: str, prefix: str, cutoff: float) -> int:
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


def _secret_values(options: Mapping[str, Any]) -> Iterator[str]:
    """String values of credential-like options, nested dicts included."""
    for name, value in options.items():
        if isinstance(value, Mapping):
            yield from _secret_values(value)
        elif isinstance(value, str) and len(value) >= 4 and _SECRET_NAME.search(str(name)):
            yield value


def _with_s3_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    """s3fs options with S3_CONFIG under the caller's ``config_kwargs``, and a session whose
    clients never send ``Expect: 100-continue`` (unless the caller brings a session)."""
    out = dict(options)
    out["config_kwargs"] = {**S3_CONFIG, **out.get("config_kwargs", {})}
    if "session" not in out:
        # Imported here: only S3 storage needs it. s3fs gives a "profile" to its own session.
        from aiobotocore.session import AioSession

        session = AioSession(profile=out.pop("profile", None))
        # botocore adds the header to every upload with a body; aiohttp then waits for the
        # "100 Continue" with no timeout, forever against an endpoint that never answers.
        session.register("before-call.s3", _drop_expect_header)
        out["session"] = session
    return out


def _drop_expect_header(params: dict[str, Any], **_: Any) -> None:
    params.get("headers", {}).pop("Expect", None)
