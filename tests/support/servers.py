"""PostgreSQL and Redis as real servers for the tests, on free loopback ports in temporary dirs.

Their fixtures reach every test module through conftest.py::

    def test_something(postgres_server, redis_server):
        url = postgres_server.create_database("mine")

One server of each per session, stopped (and its directory removed) at the end. PostgreSQL
refuses to run as root, so as root it runs as `nobody`. A missing server skips the test with
the command that installs it, except in CI (`CI=true`), where it is a failure.
"""

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import NoReturn

import pytest

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_server(what: str, install: str) -> NoReturn:
    message = f"{what} is not installed: `{install}` installs it (.ci/run does so in CI)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have every server: {message}", pytrace=False)
    pytest.skip(message)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not get ready in {START_TIMEOUT_S} s")
        time.sleep(0.1)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- PostgreSQL -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str = field(repr=False)

    def url(self, db_name: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{db_name}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its name."""
        import psycopg2

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        connection = psycopg2.connect(self.url())
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return name

    def env(self, db_name: str) -> dict[str, str]:
        """The variables `deploy/dagster.yaml` reads its connection from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": db_name,
        }


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server's bin directory (Debian keeps it out of PATH)."""
    candidates = sorted(glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    on_path = shutil.which("initdb")
    dirs = [Path(p) for p in candidates] + ([Path(on_path).parent] if on_path else [])
    usable = [d for d in dirs if (d / "initdb").exists() and (d / "postgres").exists()]
    return usable[-1] if usable else None


def _unprivileged() -> dict:
    """Popen arguments that drop root (PostgreSQL refuses it) to `nobody`; none otherwise."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing_server("the PostgreSQL server", "apt-get install -y postgresql")
    drop = _unprivileged()
    # Not under pytest's tmp_path: that is private to root, and the server runs as nobody.
    base = Path(tempfile.mkdtemp(prefix="soundharvest-pg-"))
    if drop:
        os.chown(base, drop["user"], drop["group"])
    password = secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(password)
    if drop:
        os.chown(pwfile, drop["user"], drop["group"])
    process = None
    try:
        subprocess.run(
            [
                str(bin_dir / "initdb"), "-D", str(base / "data"), "-U", "dagster",
                f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--no-sync",
            ],
            check=True, capture_output=True, cwd=base, **drop,
        )  # fmt: skip
        port = free_port()
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"), "-D", str(base / "data"), "-h", "127.0.0.1",
                "-p", str(port), "-k", str(base), "-c", "fsync=off",
                "-c", "max_connections=200",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base, **drop,
        )  # fmt: skip
        server = Postgres("127.0.0.1", port, "dagster", password)
        wait_until(lambda: _accepts(server), process, "PostgreSQL")
        yield server
    finally:
        if process is not None:
            stop(process, signal.SIGINT)  # "fast" shutdown
        shutil.rmtree(base, ignore_errors=True)


def _accepts(server: Postgres) -> bool:
    import psycopg2

    try:
        psycopg2.connect(server.url(), connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


# -- Redis ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redis:
    host: str
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


@contextlib.contextmanager
def running_redis() -> Iterator[Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing_server("the Redis server", "apt-get install -y redis-server")
    base = Path(tempfile.mkdtemp(prefix="soundharvest-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(base),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base,
    )  # fmt: skip
    try:
        server = Redis("127.0.0.1", port)
        wait_until(lambda: _pongs(server), process, "Redis")
        yield server
    finally:
        stop(process)
        shutil.rmtree(base, ignore_errors=True)


def _pongs(server: Redis) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(server.url(), socket_timeout=2).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    with running_redis() as server:
        yield server
