"""S3 served by moto in server mode on loopback: real HTTP, real s3fs and botocore.

Its fixtures reach every test module through conftest.py::

    def test_something(s3_bucket):
        storage = Storage(s3_bucket.url, s3_bucket.storage_options)

One server per session on a free port; every test gets a fresh, empty bucket and dummy AWS
credentials in the environment (restored afterwards), so botocore never looks for real ones.
"""

import contextlib
import logging
import os
import socket
import struct
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

ACCESS_KEY = "AKIAMOTOTESTINGKEY00"
SECRET_KEY = "moto-testing-secret-key-do-not-use"
REGION = "us-east-1"
LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST instead of FIN

# Anything that could point botocore at real accounts, endpoints or credentials.
_AWS_ENV_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass(frozen=True)
class MotoS3:
    """A running moto server: where it listens and how to reach it."""

    endpoint_url: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options for this server (explicit, so they never depend on the env)."""
        return {"endpoint_url": self.endpoint_url, "key": ACCESS_KEY, "secret": SECRET_KEY}

    def client(self) -> Any:
        """A plain boto3 S3 client, to inspect the server independently of the code under test."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the session's moto server."""

    server: MotoS3
    name: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}"

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.server.storage_options

    def client(self) -> Any:
        return self.server.client()

    def keys(self) -> list[str]:
        """Every object key in the bucket, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def pending_uploads(self) -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted."""
        uploads = self.client().list_multipart_uploads(Bucket=self.name).get("Uploads", [])
        return sorted(u["Key"] for u in uploads)


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[MotoS3]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoS3(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    for name in _AWS_ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bucket = S3Bucket(server=moto_s3_server, name=f"test-{uuid.uuid4().hex[:16]}")
    client = bucket.client()
    client.create_bucket(Bucket=bucket.name)
    yield bucket
    # Leave the shared server empty: abort unfinished uploads, then delete everything.
    for upload in client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", []):
        client.abort_multipart_upload(
            Bucket=bucket.name, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    for key in bucket.keys():  # noqa: SIM118 - S3Bucket.keys() lists objects, not a dict
        client.delete_object(Bucket=bucket.name, Key=key)
    client.delete_bucket(Bucket=bucket.name)


@pytest.fixture
def moto_auth(s3_bucket: S3Bucket) -> Iterator[None]:
    """moto checking credentials (off by default): turned on and back off by its control API."""

    def switch(count: str) -> None:
        url = f"{s3_bucket.endpoint_url}/moto-api/reset-auth"
        headers = {"content-type": "text/plain"}  # not a form: moto reads the raw body
        urllib.request.urlopen(urllib.request.Request(url, count.encode(), headers, method="POST"))

    switch("0")  # from the first request on, only keys moto's IAM knows are accepted
    try:
        yield
    finally:
        switch("inf")


class StallingProxy:
    """A loopback TCP proxy that forwards the first ``limit`` request bytes, then stalls.

    Stands between an uploader and moto, so that the uploader can be killed while the
    server holds a request whose body it has only partly received. With ``reset=True`` it
    drops the uploader's connection instead (a TCP reset), and every later one, as a
    network that goes away mid-upload.
    """

    def __init__(self, upstream: tuple[str, int], limit: int, *, reset: bool = False) -> None:
        self.upstream, self.limit, self.forwarded, self.reset = upstream, limit, 0, reset
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._responses: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            self._pairs.append((client, server))
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            answers = threading.Thread(target=self._answers, args=(server, client), daemon=True)
            self._responses.append(answers)
            answers.start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                with self._lock:
                    allowed = min(self.limit - self.forwarded, 1 << 16)
                if allowed <= 0:
                    self.stalled.set()
                    if self.reset:
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                        client.close()
                        server.shutdown(socket.SHUT_WR)
                    return  # read no more: the uploader blocks until it is killed
                data = client.recv(allowed)
                if not data:
                    server.shutdown(socket.SHUT_WR)  # pass the client's end on
                    return
                with self._lock:
                    self.forwarded += len(data)
                server.sendall(data)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        """Relay the server's answers; keep reading after the client died, until it closes."""
        with contextlib.suppress(OSError):
            while data := server.recv(1 << 16):
                with contextlib.suppress(OSError):
                    client.sendall(data)

    def cut(self, timeout: float = 10.0) -> bool:
        """End every request where it stands, as a dead machine would; True once the
        server has answered and closed every connection."""
        self._listener.close()
        for client, server in self._pairs:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)  # the body ends short of its Content-Length
        deadline = time.monotonic() + timeout
        for thread in self._responses:
            thread.join(max(0.0, deadline - time.monotonic()))
        done = not any(thread.is_alive() for thread in self._responses)
        for pair in self._pairs:
            for sock in pair:
                sock.close()
        return done


def proxy_to(bucket: S3Bucket, limit: int = 1 << 40, *, reset: bool = False) -> StallingProxy:
    """A proxy in front of the bucket's server; with the default limit it forwards everything
    until `cut()`, after which nothing listens there (connections refused)."""
    host, port = bucket.endpoint_url.removeprefix("http://").rsplit(":", 1)
    return StallingProxy((host, int(port)), limit=limit, reset=reset)
