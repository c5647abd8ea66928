"""S3 served by moto in server mode on loopback: real HTTP, real s3fs and botocore.

Use from a test module (pytest puts ``tests/`` on ``sys.path``)::

    from moto_s3 import moto_s3_server, s3_bucket  # noqa: F401  (fixtures)

    def test_something(s3_bucket):
        storage = Storage(s3_bucket.url, s3_bucket.storage_options)

One server per session on a free port; every test gets a fresh, empty bucket and dummy AWS
credentials in the environment (restored afterwards), so botocore never looks for real ones.
"""

import logging
import os
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
