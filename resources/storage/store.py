"""Atomic, verified writes to one fsspec root: local disk, ``s3://``, ``gs://``, ``memory://``.

Every write of the pipeline goes through :class:`Storage`, so that a file appears under its
final name only when it is complete and verified, and a catalog row never points at a partial
file. ``fs.open(path, "wb")`` is never used for that: fsspec closes, and so publishes, the file
even when the ``with`` body raised, leaving a truncated file or object under the final name.

What is the same everywhere is here: naming, reads, listings, verification, and turning a
backend's error into a `StorageError` that names no credential. What differs is in one object
chosen by the root's filesystem: `local.LocalDisk` (a locked temporary, fsync, rename) or
`remote.ObjectStore` (one verified PUT). A file whose sha256 its writer computed as it wrote
it (``publish_file(hashed=True)``: the download, the transcoder) is not hashed again: one hash
pass per stored byte, and a local move reads nothing back; its size is still checked.
"""

import contextlib
import os
import posixpath
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import IO, Any, NoReturn, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem

from resources.storage.faults import StorageError, StorageSettingError, cause_of
from resources.storage.local import STALE_AFTER_S, TEMP_PREFIX, LocalDisk
from resources.storage.options import fs_options, redactor
from resources.storage.remote import READ_BLOCK, ObjectStore
from resources.storage.verify import hash_stream


class Backend(Protocol):
    """What differs between a local disk (`LocalDisk`) and an object store (`ObjectStore`);
    paths are the filesystem's (`Storage.path`), checked bytes are `size` and `sha256`."""

    is_local: bool

    def uri(self, path: str) -> str: ...

    def publish(
        self, src: str, target: str, uri: str, size: int, sha256: str | None, *, move: bool
    ) -> bool:
        """Place the checked bytes of `src` at `target`; True if that consumed `src`."""
        ...

    def write(self, data: bytes, target: str, uri: str) -> None: ...

    def holds(self, target: str, data: bytes) -> bool: ...

    def open_read(self, target: str) -> IO[bytes]: ...

    def remove_stale_temporaries(self, directory: str, cutoff: float) -> int: ...


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
        aliases = _aliases(protocol, setting)
        options = fs_options(protocol, aliases, storage_options)
        self._redact = redactor(options)
        try:
            fs, root = fsspec.url_to_fs(url, skip_instance_cache=True, **options)
        except Exception as exc:
            self._raise(f"cannot open storage {self._redact(url)}", exc)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/") or root
        self._backend: Backend = (
            LocalDisk() if isinstance(fs, LocalFileSystem) else ObjectStore(fs, s3="s3" in aliases)
        )

    def __repr__(self) -> str:
        return f"Storage({self.uri('')!r})"

    # -- naming ---------------------------------------------------------------------------

    def is_local(self) -> bool:
        return self._backend.is_local

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
        return self._backend.uri(self.path(relpath))

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
            consumed = self._backend.publish(local_src, target, uri, size, expected, move=move)
            if move and not consumed:
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
            self._backend.write(data, target, uri)
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
        directory, cutoff = self.path(relpath_dir), time.time() - older_than_s
        try:
            return self._backend.remove_stale_temporaries(directory, cutoff)
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
            with self._backend.open_read(target) as f:
                digest, nbytes = hash_stream(f, READ_BLOCK)
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
            return self._backend.open_read(target)

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

    def _holds(self, target: str, data: bytes) -> bool:
        """True if ``target`` is a file whose bytes are ``data`` (its size is looked at first)."""
        try:
            return self._backend.holds(target, data)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False

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

    @contextlib.contextmanager
    def _reading(self, relpath: str) -> Iterator[None]:
        """Turn backend errors into StorageError; a missing file stays FileNotFoundError."""
        try:
            yield
        except (FileNotFoundError, StorageError):
            raise
        except Exception as exc:
            self._raise(f"cannot read {self.uri(relpath)}", exc)

    def _raise(self, what: str, exc: BaseException) -> NoReturn:
        """Raise a StorageError for ``exc``, chained only if no credential shows in it."""
        err = StorageError(
            f"{what}: {type(exc).__name__}: {self._redact(str(exc))}",
            cause=cause_of(exc),
            root=self.uri("") if hasattr(self, "_backend") else None,  # None while opening
            setting=self.setting,
            errno=exc.errno if isinstance(exc, OSError) else None,
        )
        chain = "".join(traceback.format_exception(exc))
        raise err from (exc if self._redact(chain) == chain else None)


def _aliases(protocol: str, setting: str | None) -> tuple[str, ...]:
    """Every name of the filesystem `protocol` opens (s3 is also s3a); a protocol no installed
    package serves is the operator's mistake, naming `setting`."""
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as exc:
        raise StorageSettingError(
            f"unsupported storage URL scheme {protocol!r}: {exc}",
            fix=f"point {setting or 'the root'} at a local folder, s3://, gs:// or another "
            "fsspec URL whose package is installed",
            setting=setting,
        ) from None
    return tuple(cls.protocol) if isinstance(cls.protocol, tuple | list) else (cls.protocol,)
