"""resources.storage: files appear under their final names only complete and verified.

Backends: local directories, ``memory://`` and S3 served by moto on loopback. Crashes are
real: a child process killed mid-copy or mid-upload, and writes cut short by the kernel's
file-size limit (RLIMIT_FSIZE).
"""

import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resources.storage import (
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
    sha256_file,
    storage_options_from_env,
)

from support.moto_s3 import (  # its fixtures (s3_bucket, ...) come through conftest.py
    S3Bucket,
    proxy_to,
)
from support.mounts import fill, tmpfs

MiB = 1 << 20


def _payload(n: int) -> bytes:
    return os.urandom(n)


def _source(tmp_path: Path, data: bytes, name: str = "download.part") -> tuple[str, int, str]:
    """A finished local file as a downloader leaves it: path, size, sha256."""
    path = tmp_path / "staging" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path), len(data), hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Backend:
    kind: str
    storage: Storage
    bucket: S3Bucket | None = None

    def names(self) -> list[str]:
        """Every file under the root, temporaries included, as paths relative to it."""
        if self.kind == "local":
            root = Path(self.storage.root)
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        if self.bucket is not None:  # ask S3 itself, not the code under test
            return self.bucket.keys()
        fs, root = self.storage.fs, self.storage.root
        return sorted(p[len(root) :].lstrip("/") for p in fs.find(root))

    def content(self, relpath: str) -> bytes:
        if self.bucket is not None:
            obj = self.bucket.client().get_object(Bucket=self.bucket.name, Key=relpath)
            return obj["Body"].read()
        return self.storage.fs.cat_file(self.storage.path(relpath))


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield Backend("local", Storage(str(tmp_path / "store")))
    elif request.param == "memory":
        storage = Storage(f"memory://test-{uuid.uuid4().hex}")
        yield Backend("memory", storage)
        if storage.fs.exists(storage.root):
            storage.fs.rm(storage.root, recursive=True)
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        yield Backend("s3", Storage(bucket.url, bucket.storage_options), bucket)


# -- publish ------------------------------------------------------------------------------


def test_publish_stores_verified_file_at_its_uri(backend: Backend, tmp_path: Path) -> None:
    data = _payload(300_000)
    src, size, digest = _source(tmp_path, data)

    uri = backend.storage.publish_file(src, "2024-05-01/17.wav", size=size, sha256=digest)

    assert backend.names() == ["2024-05-01/17.wav"]
    assert backend.content("2024-05-01/17.wav") == data
    assert backend.storage.verify("2024-05-01/17.wav", size=size, sha256=digest)
    assert uri == backend.storage.uri("2024-05-01/17.wav")
    assert Path(src).read_bytes() == data  # move=False leaves the source alone
    if backend.kind == "s3":
        assert uri == f"s3://{backend.bucket.name}/2024-05-01/17.wav"
    if backend.kind == "local":
        assert uri == str(tmp_path / "store" / "2024-05-01" / "17.wav")


@pytest.mark.parametrize("move", [False, True])
@pytest.mark.parametrize("wrong", ["size", "sha256"])
def test_mismatch_publishes_nothing(
    backend: Backend, tmp_path: Path, wrong: str, move: bool
) -> None:
    src, size, digest = _source(tmp_path, _payload(50_000))
    backend.storage.write_bytes(b"previous version", "d/1.wav")
    bad = (
        {"size": size + 1, "sha256": digest}
        if wrong == "size"
        else {
            "size": size,
            "sha256": hashlib.sha256(b"other").hexdigest(),
        }
    )

    with pytest.raises(VerificationError) as info:
        backend.storage.publish_file(src, "d/1.wav", move=move, **bad)

    assert backend.storage.uri("d/1.wav") in str(info.value)
    assert isinstance(info.value, StorageError)
    assert backend.names() == ["d/1.wav"]  # no temporary left behind
    assert backend.content("d/1.wav") == b"previous version"
    assert os.path.getsize(src) == size  # the caller still has its file
    if backend.bucket is not None:
        assert backend.bucket.pending_uploads() == []


def test_publish_replaces_an_existing_file(backend: Backend, tmp_path: Path) -> None:
    backend.storage.write_bytes(b"stale", "d/2.wav")
    src, size, digest = _source(tmp_path, b"fresh bytes")
    backend.storage.publish_file(src, "d/2.wav", size=size, sha256=digest)
    assert backend.content("d/2.wav") == b"fresh bytes"
    assert backend.names() == ["d/2.wav"]


def test_publish_move_on_same_filesystem_renames(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "store"))
    fd, src = tempfile.mkstemp(dir=tmp_path, prefix=".", suffix=".tmp")  # mode 0600
    data = _payload(200_000)
    os.write(fd, data)
    os.close(fd)
    inode = os.stat(src).st_ino

    uri = storage.publish_file(
        src, "d/3.wav", size=len(data), sha256=hashlib.sha256(data).hexdigest(), move=True
    )

    assert not os.path.exists(src)
    stat = os.stat(uri)
    assert stat.st_ino == inode  # the same file took the name: no second copy of the bytes
    umask = os.umask(0)
    os.umask(umask)
    assert stat.st_mode & 0o777 == 0o666 & ~umask  # readable like any other published file
    assert Path(uri).read_bytes() == data


def test_publish_hashed_move_reads_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hashed=True: the writer's sha256 is trusted, only the size is checked."""
    storage = Storage(str(tmp_path / "store"))
    src, size, digest = _source(tmp_path, _payload(300_000), name=".run.0.tmp")
    monkeypatch.setattr(
        "resources.storage.local.hash_stream", lambda *a: pytest.fail("the file was hashed again")
    )

    with pytest.raises(VerificationError, match="expected"):
        storage.publish_file(src, "d/5.wav", size=size + 1, sha256=digest, move=True, hashed=True)
    assert os.path.getsize(src) == size and storage.listdir("d") == []

    uri = storage.publish_file(src, "d/5.wav", size=size, sha256=digest, move=True, hashed=True)

    assert not os.path.exists(src)
    assert hashlib.sha256(Path(uri).read_bytes()).hexdigest() == digest


def test_publish_move_across_filesystems_copies(tmp_path: Path) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem at /dev/shm")
    storage = Storage(str(tmp_path / "store"))
    data = _payload(100_000)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        src, size, digest = _source(Path(other), data)
        uri = storage.publish_file(src, "d/4.wav", size=size, sha256=digest, move=True)
        assert not os.path.exists(src)
    assert Path(uri).read_bytes() == data
    assert os.listdir(tmp_path / "store" / "d") == ["4.wav"]


@pytest.mark.parametrize("size", [3 * MiB, 20 * MiB], ids=["single-put", "multipart"])
def test_publish_s3_large_and_small(s3_bucket: S3Bucket, tmp_path: Path, size: int) -> None:
    storage = Storage(s3_bucket.url + "/audio", s3_bucket.storage_options)
    src, size, digest = _source(tmp_path, _payload(size))

    uri = storage.publish_file(src, "2024-05-01/9.wav", size=size, sha256=digest, move=True)

    assert uri == f"s3://{s3_bucket.name}/audio/2024-05-01/9.wav"
    assert s3_bucket.keys() == ["audio/2024-05-01/9.wav"]
    assert s3_bucket.pending_uploads() == []
    assert storage.verify("2024-05-01/9.wav", size=size, sha256=digest)
    assert not os.path.exists(src)


# -- failures mid-stream ------------------------------------------------------------------


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, what: str, child: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            raise AssertionError(f"child exited before {what}: {child.communicate()}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


_WRITE_PAST_FILE_SIZE_LIMIT = """
import json, resource, signal, sys
from resources.storage import Storage, StorageError
root, src, size, sha = sys.argv[1:]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
storage, out = Storage(root), {}
for name, write in [
    ("publish", lambda: storage.publish_file(src, "d/x.wav", size=int(size), sha256=sha)),
    ("write_bytes", lambda: storage.write_bytes(b"n" * (2 << 20), "d/part-0.parquet")),
]:
    try:
        out[name] = "returned " + write()
    except StorageError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_write_failing_mid_stream_leaves_old_state(tmp_path: Path) -> None:
    """The kernel refuses bytes past 1 MiB: both writes fail half-way through."""
    root = tmp_path / "store"
    (root / "d").mkdir(parents=True)
    (root / "d" / "part-0.parquet").write_bytes(b"old catalog")
    src, size, digest = _source(tmp_path, _payload(3 * MiB))

    child = _python(_WRITE_PAST_FILE_SIZE_LIMIT, str(root), src, str(size), digest)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    out = json.loads(stdout)

    assert out["publish"].startswith(f"cannot publish {root / 'd' / 'x.wav'}: ")
    assert "File too large" in out["publish"]
    assert out["write_bytes"].startswith(f"cannot write {root / 'd' / 'part-0.parquet'}: ")
    assert sorted(os.listdir(root / "d")) == ["part-0.parquet"]  # no x.wav, no temporaries
    assert (root / "d" / "part-0.parquet").read_bytes() == b"old catalog"


_PUBLISH_FROM = """
import sys
from resources.storage import Storage
root, src, size = sys.argv[1:]
Storage(root).publish_file(src, "d/x.wav", size=int(size), sha256="0" * 64)
"""


def test_crash_mid_copy_leaves_only_a_stale_temporary(tmp_path: Path) -> None:
    """A process killed while copying leaves no x.wav, only a temporary that cleanup removes."""
    root = tmp_path / "store"
    fifo = tmp_path / "download.fifo"  # the source trickles in, so the copy is surely mid-way
    os.mkfifo(fifo)
    child = _python(_PUBLISH_FROM, str(root), str(fifo), str(4 * MiB))
    writer = -1

    def reader_opened() -> bool:
        nonlocal writer
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False
        return True

    _wait_for(reader_opened, "the child to open its source", child)
    os.set_blocking(writer, True)
    os.write(writer, b"\1" * (MiB + 4096))  # one whole chunk, then a little: the copy waits
    temporaries = lambda: [n for n in os.listdir(root / "d") if n.startswith(".x.wav.")]  # noqa: E731
    _wait_for(
        lambda: (
            (root / "d").is_dir()
            and any(os.path.getsize(root / "d" / n) >= MiB for n in temporaries())
        ),
        "the first MiB in the temporary",
        child,
    )
    storage = Storage(str(root))
    old = time.time() - 7200
    [live] = temporaries()
    os.utime(root / "d" / live, (old, old))
    assert storage.remove_stale_temporaries("d", older_than_s=0) == 0  # its writer holds it
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)
    os.close(writer)

    leftover = temporaries()
    assert sorted(os.listdir(root / "d")) == leftover and len(leftover) == 1
    assert storage.listdir("d") == []  # readers never see it
    for name in ("keep.wav", ".hidden", "notes.tmp"):  # not temporaries: never removed
        (root / "d" / name).write_bytes(b"x")
    for name in os.listdir(root / "d"):
        os.utime(root / "d" / name, (old, old))
    assert storage.remove_stale_temporaries("d", older_than_s=3 * 3600) == 0  # not stale yet
    assert storage.remove_stale_temporaries("d") == 1  # unlocked now: its writer died
    assert sorted(os.listdir(root / "d")) == [".hidden", "keep.wav", "notes.tmp"]


_UPLOAD = """
import sys
from resources.storage import Storage
url, src, size, sha = sys.argv[1:]
Storage(url).publish_file(src, "d/x.wav", size=int(size), sha256=sha)
"""


@pytest.mark.parametrize(
    ("size", "cut_at"),
    [(4 * MiB, 2 * MiB), (20 * MiB, 12 * MiB)],
    ids=["single-put", "multipart-after-first-part"],
)
def test_upload_killed_mid_stream_leaves_no_object(
    s3_bucket: S3Bucket, tmp_path: Path, size: int, cut_at: int
) -> None:
    src, size, digest = _source(tmp_path, _payload(size))
    proxy = proxy_to(s3_bucket, limit=cut_at)
    # The child finds its endpoint the way a deployment would: in the environment.
    options = {
        "s3": {**s3_bucket.storage_options, "endpoint_url": f"http://127.0.0.1:{proxy.port}"}
    }
    env = {**os.environ, ENV_STORAGE_OPTIONS: json.dumps(options)}
    child = _python(_UPLOAD, s3_bucket.url, src, str(size), digest, env=env)
    try:
        _wait_for(proxy.stalled.is_set, f"{cut_at} bytes to reach the server", child)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        assert proxy.cut(), "the server never finished the cut-off request"

    assert cut_at <= proxy.forwarded < size  # the server got a part of the file, not all
    assert s3_bucket.keys() == []
    if size > 16 * MiB:  # the kill landed inside a multipart upload, which stays invisible
        assert s3_bucket.pending_uploads() == ["d/x.wav"]


@pytest.mark.parametrize(
    ("size", "cut_at"),
    [(4 * MiB, 2 * MiB), (20 * MiB, 12 * MiB)],
    ids=["single-put", "multipart-after-first-part"],
)
def test_network_lost_mid_upload_fails_cleanly(
    s3_bucket: S3Bucket, tmp_path: Path, size: int, cut_at: int
) -> None:
    src, size, digest = _source(tmp_path, _payload(size))
    proxy = proxy_to(s3_bucket, limit=cut_at, reset=True)
    options = {
        **s3_bucket.storage_options,
        "endpoint_url": f"http://127.0.0.1:{proxy.port}",
        "config_kwargs": {"retries": {"max_attempts": 1}},  # s3fs still retries on its own
    }
    storage = Storage(s3_bucket.url, options)
    try:
        with pytest.raises(StorageError, match=f"cannot publish s3://{s3_bucket.name}/d/x.wav"):
            storage.publish_file(src, "d/x.wav", size=size, sha256=digest)
    finally:
        assert proxy.cut()

    assert proxy.stalled.is_set()
    # No object; a multipart upload whose abort could not get through either stays
    # pending, invisible (a bucket lifecycle rule reclaims such parts).
    assert s3_bucket.keys() == []
    assert os.path.getsize(src) == size


class SilentServer:
    """Accepts connections, reads what is sent, and never answers: an S3 endpoint gone mute."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                self.connections += 1
                self._held.append(conn)
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(1 << 16):
                self.received += data

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


def test_s3_clients_get_timeouts_and_bounded_retries_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_STORAGE_OPTIONS, raising=False)
    assert Storage("s3://bucket/x").fs.config_kwargs == S3_CONFIG

    override = {"s3": {"config_kwargs": {"read_timeout": 5, "retries": {"max_attempts": 1}}}}
    monkeypatch.setenv(ENV_STORAGE_OPTIONS, json.dumps(override))
    config = Storage("s3://bucket/x").fs.config_kwargs
    assert config == {**S3_CONFIG, "read_timeout": 5, "retries": {"max_attempts": 1}}
    # Options given in code replace the environment's, option by option, as for any protocol.
    assert Storage("s3://bucket/x", {"config_kwargs": {}}).fs.config_kwargs == S3_CONFIG


def test_an_s3_endpoint_that_never_answers_fails_clearly(s3_bucket: S3Bucket) -> None:
    """Bounded by the timeouts; botocore's `Expect: 100-continue` used to hang here for good.

    Every upload with a body carried the header (publish_file's single PUT and multipart
    parts too); the session hook that drops it applies to all of them.
    """
    server = SilentServer()
    quick = {"connect_timeout": 0.5, "read_timeout": 0.5, "retries": {"max_attempts": 1}}
    options = {**s3_bucket.storage_options, "endpoint_url": server.endpoint_url}
    storage = Storage(s3_bucket.url, {**options, "config_kwargs": quick})
    try:
        with pytest.raises(StorageError) as info:
            storage.write_bytes(b"catalog", "d/part-0.parquet")
    finally:
        server.close()

    assert str(info.value).startswith(f"cannot write {s3_bucket.url}/d/part-0.parquet: ")
    assert "ReadTimeoutError" in str(info.value)
    assert info.value.cause == PASSING  # it may only be slow: retried, never the operator's
    assert server.connections > 0 and b"PUT /" in server.received
    assert b"expect: 100-continue" not in bytes(server.received).lower()
    assert s3_bucket.keys() == []


# -- write_bytes, reads -------------------------------------------------------------------


def test_write_bytes_replaces_whole_content(backend: Backend) -> None:
    first = backend.storage.write_bytes(b"version one, longer", "cat/date=2024-05-01/part-0.pq")
    second = backend.storage.write_bytes(b"v2", "cat/date=2024-05-01/part-0.pq")
    assert first == second == backend.storage.uri("cat/date=2024-05-01/part-0.pq")
    assert backend.storage.read_bytes("cat/date=2024-05-01/part-0.pq") == b"v2"
    assert backend.names() == ["cat/date=2024-05-01/part-0.pq"]


def test_write_bytes_if_changed_leaves_equal_bytes_alone(backend: Backend) -> None:
    relpath = "cat/date=2024-05-01/part-0.pq"
    backend.storage.write_bytes(b"the same bytes", relpath)
    backend.storage.write_bytes(b"the same bytes", relpath, if_changed=True)
    if backend.storage.is_local():
        inode = os.stat(backend.storage.path(relpath)).st_ino
        backend.storage.write_bytes(b"the same bytes", relpath, if_changed=True)
        assert os.stat(backend.storage.path(relpath)).st_ino == inode  # not replaced
    for data in (b"the same bytez", b"longer than the same bytes"):  # equal size, other size
        backend.storage.write_bytes(data, relpath, if_changed=True)
        assert backend.storage.read_bytes(relpath) == data
    backend.storage.write_bytes(b"new", "cat/other.pq", if_changed=True)  # nothing there yet
    assert backend.names() == ["cat/date=2024-05-01/part-0.pq", "cat/other.pq"]


def test_a_write_removes_what_a_killed_write_of_the_same_file_left(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes(b"v1", "d/part-0.parquet")
    dead = tmp_path / "d" / ".part-0.parquet.0123456789ab.tmp"  # unlocked: a crashed write
    other = tmp_path / "d" / ".other.parquet.0123456789ab.tmp"
    for path in (dead, other):
        path.write_bytes(b"half")
        old = time.time() - 60
        os.utime(path, (old, old))

    storage.write_bytes(b"v2", "d/part-0.parquet")

    assert sorted(os.listdir(tmp_path / "d")) == [other.name, "part-0.parquet"]
    assert storage.read_bytes("d/part-0.parquet") == b"v2"


def test_verify_reads_size_and_hash(backend: Backend) -> None:
    data = b"abc" * 1000
    digest = hashlib.sha256(data).hexdigest()
    backend.storage.write_bytes(data, "d/5.wav")
    assert backend.storage.verify("d/5.wav", size=len(data))
    assert backend.storage.verify("d/5.wav", size=len(data), sha256=digest)
    assert not backend.storage.verify("d/5.wav", size=len(data) - 1)
    assert not backend.storage.verify("d/5.wav", size=len(data), sha256="0" * 64)
    assert not backend.storage.verify("d/6.wav", size=len(data))
    assert not backend.storage.verify("d", size=0)  # a directory is not the file
    backend.storage.write_bytes(b"abd" * 1000, "d/5.wav")  # changed behind the catalog's back
    assert not backend.storage.verify("d/5.wav", size=len(data), sha256=digest)


def test_reads_and_listing(backend: Backend) -> None:
    storage = backend.storage
    storage.write_bytes(b"one", "d/1.wav")
    storage.write_bytes(b"two", "d/2.wav")
    assert storage.exists("d/1.wav") and not storage.exists("d/3.wav")
    assert storage.listdir("d") == ["1.wav", "2.wav"]
    assert storage.listdir("") == ["d"]
    assert storage.listdir("missing") == []
    assert storage.sizes("d") == {"1.wav": 3, "2.wav": 3}
    assert storage.sizes("") == {}  # directories are not files
    assert storage.sizes("missing") == {}
    with storage.open("d/2.wav") as f:
        assert f.read() == b"two"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("d/3.wav")
    with pytest.raises(ValueError, match="read-only"):
        storage.open("d/1.wav", "wb")
    assert storage.remove_stale_temporaries("d", older_than_s=0) == 0
    assert backend.names() == ["d/1.wav", "d/2.wav"]


def test_listings_hide_temporaries(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes(b"x", "d/1.wav")
    (tmp_path / "d" / ".1.wav.0123456789ab.tmp").write_bytes(b"partial")
    assert storage.listdir("d") == ["1.wav"]
    assert storage.sizes("d") == {"1.wav": 1}


def test_paths_stay_under_the_root(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    for bad in ("../escape.wav", "d/../../escape.wav", "/etc/passwd"):
        with pytest.raises(ValueError, match="relative"):
            storage.path(bad)
    assert storage.path("./d//1.wav") == str(tmp_path / "d" / "1.wav")
    assert storage.uri("") == str(tmp_path)


def test_relative_local_root_gives_absolute_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = Storage("data/audio")
    assert Storage("file://data/audio").uri("x") == storage.uri("x")
    src, size, digest = _source(tmp_path, b"RIFF....WAVE")

    uri = storage.publish_file(src, "2024-05-01/1.wav", size=size, sha256=digest)

    assert uri == str(tmp_path / "data" / "audio" / "2024-05-01" / "1.wav")
    assert storage.is_local() and repr(storage) == f"Storage({str(tmp_path / 'data/audio')!r})"
    monkeypatch.chdir("/")
    assert Path(uri).read_bytes() == b"RIFF....WAVE"  # still found from elsewhere


def test_sha256_file_streams_in_chunks(tmp_path: Path) -> None:
    data = _payload(3 * MiB + 7)
    src, _, digest = _source(tmp_path, data)
    assert sha256_file(src) == digest
    assert sha256_file(src, chunk=4096) == digest


# -- options and secrets ------------------------------------------------------------------


def test_storage_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_STORAGE_OPTIONS, raising=False)
    assert storage_options_from_env() == {}
    value = {"s3": {"endpoint_url": "http://127.0.0.1:9", "anon": True}, "gs": {"project": "p"}}
    assert storage_options_from_env({ENV_STORAGE_OPTIONS: json.dumps(value)}) == value
    for bad in ('{"s3": {"secret": "hunter22-x"', '["hunter22-x"]', '{"s3": "hunter22-x"}'):
        with pytest.raises(StorageSettingError, match=ENV_STORAGE_OPTIONS) as info:
            storage_options_from_env({ENV_STORAGE_OPTIONS: bad})
        assert "hunter22" not in "".join(traceback.format_exception(info.value))
        assert info.value.setting == ENV_STORAGE_OPTIONS and info.value.lasting
    with pytest.raises(StorageSettingError) as info:  # where the JSON goes wrong, and why
        storage_options_from_env({ENV_STORAGE_OPTIONS: '{"s3": {"key": "hunter22-x", x: 1}}'})
    assert info.value.problem.startswith(
        f"{ENV_STORAGE_OPTIONS} is not valid JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 30;"
    )
    assert "hunter22" not in str(info.value)


def test_env_options_apply_to_their_protocol_only(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"s3": s3_bucket.storage_options, "memory": {"marker": "memory-only"}}
    monkeypatch.setenv(ENV_STORAGE_OPTIONS, json.dumps(options))

    storage = Storage(s3_bucket.url)  # no options in code: the endpoint comes from the env
    storage.write_bytes(b"via env", "k")
    assert s3_bucket.keys() == ["k"]

    assert "endpoint_url" not in Storage(str(tmp_path)).fs.storage_options
    assert Storage("memory://x").fs.storage_options["marker"] == "memory-only"
    explicit = Storage("memory://x", {"marker": "explicit"})
    assert explicit.fs.storage_options["marker"] == "explicit"  # code overrides the env


def test_each_storage_gets_its_own_client(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same options, new endpoint in botocore's AWS_ENDPOINT_URL: the new Storage uses it.

    fsspec's instance cache keys on the options alone, so a cached client would still
    talk to the old endpoint.
    """
    credentials = {k: v for k, v in s3_bucket.storage_options.items() if k != "endpoint_url"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint_url)
    Storage(s3_bucket.url, credentials).write_bytes(b"1", "first")
    proxy = proxy_to(s3_bucket, limit=1 << 30)  # a second way in, that counts what passes
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    try:
        Storage(s3_bucket.url, credentials).write_bytes(b"2", "second")
    finally:
        assert proxy.cut()
    assert proxy.forwarded > 0
    assert s3_bucket.keys() == ["first", "second"]


def test_credentials_never_in_errors(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    secret = "sEcReT-" + uuid.uuid4().hex
    access_key = s3_bucket.storage_options["key"]
    options = {**s3_bucket.storage_options, "secret": secret}
    storage = Storage(f"s3://missing-{uuid.uuid4().hex[:12]}", options)
    src, size, digest = _source(tmp_path, b"data")

    with pytest.raises(StorageError) as info:
        storage.publish_file(src, "d/1.wav", size=size, sha256=digest)

    text = "".join(traceback.format_exception(info.value)) + repr(storage)
    assert "bucket does not exist" in str(info.value)
    assert storage.uri("d/1.wav") in str(info.value)
    assert secret not in text and access_key not in text


def test_secrets_are_scrubbed_from_underlying_errors(tmp_path: Path) -> None:
    """Wherever an option's secret value surfaces, it is masked and the chain dropped."""
    token = "tok-" + uuid.uuid4().hex
    storage = Storage(str(tmp_path), {"token": token})
    missing = tmp_path / f"{token}.part"  # the OSError text will carry the token

    with pytest.raises(StorageError) as info:
        storage.publish_file(str(missing), "d/1.wav", size=1, sha256="0" * 64)

    text = "".join(traceback.format_exception(info.value))
    assert "FileNotFoundError" in text and "***.part" in text
    assert token not in text and info.value.__cause__ is None


def test_credentials_in_a_url_are_masked() -> None:
    password = "pw-" + uuid.uuid4().hex
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StorageError, match=r"cannot open storage ftp://\*\*\*@127") as info:
        Storage(f"ftp://user:{password}@127.0.0.1:{port}/audio")
    assert password not in "".join(traceback.format_exception(info.value))


# -- what waiting would do ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["closed-port", "unknown-host"])
def test_an_endpoint_that_cannot_be_reached_is_told_from_one_that_is_slow(
    s3_bucket: S3Bucket, endpoint: str
) -> None:
    """Refused or unknown: UNREACHABLE (the operator's, before the root took any write);
    a server that accepts and never answers: a timeout, PASSING (it may only be slow)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    url = closed if endpoint == "closed-port" else "http://soundharvest-no-such-host.invalid:9000"
    options = {**s3_bucket.storage_options, "endpoint_url": url}
    storage = Storage(f"{s3_bucket.url}/audio", options, setting="SOUNDHARVEST_AUDIO_ROOT")

    with pytest.raises(StorageError) as info:
        storage.write_bytes(b"probe", "_probe")

    assert info.value.cause == UNREACHABLE and not info.value.lasting
    assert "EndpointConnectionError" in str(info.value)
    assert info.value.root == f"{s3_bucket.url}/audio"
    assert info.value.setting == "SOUNDHARVEST_AUDIO_ROOT"


def test_a_missing_bucket_and_refused_credentials_are_lasting(
    s3_bucket: S3Bucket, moto_auth
) -> None:
    missing = Storage(f"s3://missing-{uuid.uuid4().hex[:12]}", s3_bucket.storage_options)
    refused = Storage(s3_bucket.url, {**s3_bucket.storage_options, "key": "AKIANOTKNOWNBYMOTO0"})
    for storage in (missing, refused):
        with pytest.raises(StorageError) as info:
            storage.write_bytes(b"probe", "_probe")
        assert info.value.cause == LASTING, str(info.value)


def test_a_full_disk_is_full_whatever_writes(tmp_path: Path) -> None:
    """ENOSPC from a real full tmpfs, through both ways a local file is written."""
    with tmpfs(tmp_path / "tiny", "size=1m") as disk:
        fill(disk)
        storage = Storage(str(disk / "audio"), setting="SOUNDHARVEST_AUDIO_ROOT")
        src, size, digest = _source(tmp_path, _payload(64 << 10))
        for write in (
            lambda: storage.write_bytes(b"x" * 8192, "d/part-0.parquet"),
            lambda: storage.publish_file(src, "d/1.wav", size=size, sha256=digest),
        ):
            with pytest.raises(StorageError) as info:
                write()
            assert info.value.cause == FULL and info.value.lasting
            assert info.value.errno == errno.ENOSPC and info.value.root == str(disk / "audio")
        assert [p.name for p in (disk / "audio" / "d").iterdir()] == []  # no temporary left


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="unsupported storage URL scheme 'nosuchfs'"):
        Storage("nosuchfs://bucket/x")
