"""The operator's mistakes, issue 13: each row of its "What was seen" table as the new outcome.

An operator's mistake (a missing key, a base URL that never answers, an allow list missing
the storage host, a storage root that cannot be written) fails the step at once: a Dagster
`Failure` tagged `ERROR_KIND_KEY: OPERATOR`, one line naming the setting, no step retry (no
`STEP_UP_FOR_RETRY` event, with retries allowed and their delay zero, so a retry would show),
nothing written. The assets run in process against the sandbox on loopback; storage is local
under `tmp_path` (a read-only tmpfs for the read-only root) or S3 on moto's server mode.
"""

import json
import os
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from client_helpers import harvest, ready_ids, settings_for
from dagster import AssetCheckSeverity, materialize

from resources.camb_resource import CambResource
from resources.errors import ERROR_KIND_KEY, OPERATOR
from resources.first_contact import FIRST_CONTACT_TRIES, ApiReach, CambUnreachableError
from resources.retry import RetryPolicy
from resources.storage_resource import StorageResource

from moto_s3 import S3Bucket
from pipeline_kit import (
    ASSETS,
    DAY,
    catalog_path,
    files_under,
    leftovers,
    local_storage,
    read_catalog,
    run,
    run_range,
    scratch_fixture,  # noqa: F401  (fixture)
    step_events,
    write_manifest,
)


@pytest.fixture(autouse=True)
def retries_would_show(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step retries allowed and immediate: a retried step would show as STEP_UP_FOR_RETRY."""
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "2")
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0")
    monkeypatch.delenv("CAMB_API_KEY", raising=False)
    monkeypatch.delenv("CAMB_DOWNLOAD_ALLOW_HOSTS", raising=False)


def operator_failure(result) -> tuple[str, dict]:
    """The run's one step failure: its message and metadata; it must be the operator's."""
    assert not result.success
    assert not step_events(result, "STEP_UP_FOR_RETRY"), "an operator's mistake was retried"
    [event] = step_events(result, "STEP_FAILURE")
    failure = event.step_failure_data.user_failure_data
    assert failure is not None, event.step_failure_data.error
    metadata = {key: value.value for key, value in failure.metadata.items()}
    assert metadata[ERROR_KIND_KEY] == OPERATOR
    return failure.description, metadata


def a_day(tmp_path: Path, start: int, count: int = 4) -> list[int]:
    run_ids = ready_ids(start, count)
    write_manifest(tmp_path / "manifests", DAY, run_ids)
    return run_ids


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the API never reached --------------------------------------------------------------


@pytest.mark.parametrize("runs", [4, 120])
def test_an_api_at_a_closed_port_is_the_operators_mistake(sandbox, tmp_path, scratch, runs):
    """Was: exit 0 after 3 min 15 s, every row failed (4 runs); an outage, then 300 s step
    retries (120 runs). Now one line naming the base URL; the default retry policy (8 tries,
    backoff up to 30 s) is in force, so only the first-contact rule can end this quickly."""
    a_day(tmp_path, 30_000, runs)
    storage = local_storage(tmp_path)
    base_url = f"http://127.0.0.1:{closed_port()}/apis"

    result = run(sandbox, storage, camb={"base_url": base_url}, raise_on_error=False)

    message, metadata = operator_failure(result)
    assert "\n" not in message and message.startswith(f"cannot reach the API at {base_url}")
    assert "connection was refused" in message and "check CAMB_API_BASE_URL" in message
    assert metadata["setting"] == "CAMB_API_BASE_URL"
    assert not Path(catalog_path(storage)).exists()
    assert not (tmp_path / "audio" / DAY).exists() or not files_under(tmp_path / "audio" / DAY)
    assert not leftovers(tmp_path, scratch)


def https_to_plain_http(sandbox) -> str:
    return sandbox.base_url.replace("http://", "https://")


@pytest.mark.parametrize(
    ("base_url", "said"),
    [
        (lambda sandbox: f"http://127.0.0.1:{closed_port()}/apis", "connection was refused"),
        (lambda sandbox: "http://soundharvest-no-such-host.invalid/apis", "host name was not"),
        (https_to_plain_http, "TLS handshake failed"),
    ],
    ids=["refused", "no-such-name", "tls"],
)
def test_an_api_never_reached_fails_after_the_first_calls_tries(sandbox, tmp_path, base_url, said):
    url = base_url(sandbox)
    slow = RetryPolicy()  # 8 tries, 300 s: spent in full, this test would take minutes
    settings = settings_for(sandbox, base_url=url, api_retry=slow, max_concurrency=1)

    with pytest.raises(CambUnreachableError) as raised:
        harvest(settings, ready_ids(31_000, 3), tmp_path)

    message = str(raised.value)
    assert url in message and said in message and "CAMB_API_BASE_URL" in message
    assert f"on {FIRST_CONTACT_TRIES} tries" in message
    assert sandbox.stats()["api_requests"] == 0  # the TLS case: no request got through
    assert list(tmp_path.iterdir()) == []


def test_an_api_lost_after_it_answered_stays_an_outage():
    reach = ApiReach("the API at http://127.0.0.1:1/apis")
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    reach.connect_failed(refused, FIRST_CONTACT_TRIES - 1)  # not yet
    reach.connect_failed(httpx.ConnectTimeout("slow"), 8)  # a timeout may be a slow API
    with pytest.raises(CambUnreachableError):
        reach.connect_failed(refused, FIRST_CONTACT_TRIES)

    reach.answer()
    for tries in range(1, 9):  # answered once: retried, and then api_health's outage rule
        reach.connect_failed(refused, tries)


# -- the download policy ----------------------------------------------------------------


def test_every_download_refused_by_the_policy_names_the_allow_list(sandbox, tmp_path, scratch):
    """Was: exit 0 in 3.5 s, every row failed "download refused"."""
    a_day(tmp_path, 32_000, 6)
    storage = local_storage(tmp_path)

    result = run(sandbox, storage, camb={"download_allow_hosts": ""}, raise_on_error=False)

    message, metadata = operator_failure(result)
    assert "\n" not in message and "CAMB_DOWNLOAD_ALLOW_HOSTS" in message
    assert "if you trust 127.0.0.1, add it" in message and "?" not in message
    assert metadata["setting"] == "CAMB_DOWNLOAD_ALLOW_HOSTS"
    assert sandbox.stats()["downloads"] == 0
    assert not Path(catalog_path(storage)).exists()
    assert not leftovers(tmp_path, scratch)


# -- the key ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "  "], ids=["unset", "empty", "blank"])
def test_a_missing_key_is_one_line_naming_the_variable(
    sandbox, tmp_path, scratch, monkeypatch, key
):
    """Was: a 92-line traceback ending in Dagster's "You have attempted to fetch..."."""
    if key is not None:
        monkeypatch.setenv("CAMB_API_KEY", key)
    a_day(tmp_path, 33_000)
    storage = local_storage(tmp_path)
    # As pipelines/definitions.py has it: the key from the environment, when the step starts.
    camb = CambResource(base_url=sandbox.base_url, download_allow_hosts="127.0.0.1")

    result = materialize(
        ASSETS, partition_key=DAY, resources={"camb": camb, "storage": storage},
        raise_on_error=False,
    )  # fmt: skip

    message, metadata = operator_failure(result)
    assert message.startswith("CAMB_API_KEY is not set") and "\n" not in message
    assert metadata["setting"] == "CAMB_API_KEY"
    assert sandbox.stats()["api_requests"] == 0
    assert not leftovers(tmp_path, scratch)


# -- storage that cannot be written -------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A directory no one may write: a read-only tmpfs (tests run as root, whom chmod does
    not stop), or a chmod 0555 directory for anyone else."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def moto_auth(s3_bucket: S3Bucket):
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


@pytest.mark.parametrize(
    "where",
    ["file-as-root", "read-only", "catalog-under-a-file", "missing-bucket", "bad-credentials"],
)
def test_storage_that_cannot_be_written_fails_before_any_api_call(
    sandbox, tmp_path, scratch, monkeypatch, request, where
):
    """Was: NotADirectoryError then 300 s step retries (a file as root); 605 s and two retry
    waits before "[Errno 30] Read-only file system" (a read-only directory)."""
    a_day(tmp_path, 34_000)
    audio_root, catalog_root, variable = None, None, "SOUNDHARVEST_AUDIO_ROOT"
    if where == "file-as-root":
        (tmp_path / "a-file").write_text("not a folder")
        audio_root = str(tmp_path / "a-file")
    elif where == "read-only":
        audio_root = str(request.getfixturevalue("read_only_dir") / "audio")
    elif where == "catalog-under-a-file":
        (tmp_path / "a-file").write_text("not a folder")
        catalog_root, variable = str(tmp_path / "a-file" / "catalog"), "SOUNDHARVEST_CATALOG_ROOT"
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv(
            "SOUNDHARVEST_STORAGE_OPTIONS", json.dumps({"s3": bucket.storage_options})
        )
        name = f"missing-{uuid.uuid4().hex[:12]}" if where == "missing-bucket" else bucket.name
        audio_root = f"s3://{name}/audio"
        if where == "bad-credentials":
            request.getfixturevalue("moto_auth")
    storage = StorageResource(
        manifest_root=str(tmp_path / "manifests"),
        audio_root=audio_root or str(tmp_path / "audio"),
        catalog_root=catalog_root or str(tmp_path / "catalog"),
    )

    result = run(sandbox, storage, raise_on_error=False)

    message, metadata = operator_failure(result)
    assert "\n" not in message and (audio_root or catalog_root) in message
    assert variable in message and metadata["setting"] == variable
    assert sandbox.stats()["api_requests"] == 0  # found before any API call
    assert not (tmp_path / "catalog" / "sound_catalog").exists()
    assert not leftovers(tmp_path, scratch)
    assert "_soundharvest-write-probe" not in " ".join(files_under(tmp_path))


# -- days with nothing to do ------------------------------------------------------------


def test_the_readmes_range_of_days_without_manifests_completes(sandbox, tmp_path):
    """Was: exit 1, "materialize run_manifest and sound_files first" once per day. Now each
    day materializes an empty catalog partition, and the WARN check names where it looked."""
    storage = local_storage(tmp_path)

    result = run_range(sandbox, storage, "2026-10-01", "2026-10-31")

    assert result.success
    days = [f"2026-10-{d:02d}" for d in range(1, 32)]
    for day in days:
        assert read_catalog(storage, day).empty
    [check] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "manifest_present"
    ]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.metadata["days_without_manifest"].value == days
    looked = check.metadata["looked_in"].value["2026-10-05"]
    assert str(tmp_path / "manifests" / "2026-10-05") in looked and ".csv" in looked
    assert sandbox.stats()["api_requests"] == 0


def test_a_day_whose_rows_are_all_rejected_gets_its_partition(sandbox, tmp_path):
    """Was: exit 1 with "materialize run_manifest and sound_files first", no partition."""
    write_manifest(tmp_path / "manifests", DAY, ["12abc", "0"])
    storage = local_storage(tmp_path)

    result = run(sandbox, storage)

    assert result.success
    catalog = read_catalog(storage)
    assert list(catalog.status) == ["rejected", "rejected"]
    assert catalog.error.str.contains("line ").all()
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["manifest_present"] and checks["one_row_per_manifest_row"]
    assert sandbox.stats()["api_requests"] == 0
