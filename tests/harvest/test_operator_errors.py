"""The operator's mistakes as docs/reliability.md lists them, each with the outcome it now has.

An operator's mistake (a missing key, a base URL that never answers, an allow list missing
the storage host, a storage root that cannot be written) fails the step at once: a Dagster
`Failure` tagged `ERROR_KIND_KEY: OPERATOR`, one line naming the setting, no step retry (no
`STEP_UP_FOR_RETRY` event, with retries allowed and their delay zero, so a retry would show),
nothing written. The assets run in process against the sandbox on loopback; storage is local
under `tmp_path` (a read-only tmpfs for the read-only root) or S3 on moto's server mode.
"""

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dagster import AssetCheckSeverity, materialize

from assets.harvest.sweep import GAVE_UP
from resources.camb import Fetched
from resources.camb.first_contact import FIRST_CONTACT_TRIES, ApiReach, CambUnreachableError
from resources.camb.retry import RetryPolicy
from resources.camb_resource import CambResource
from resources.error_kinds import ERROR_KIND_KEY, OPERATOR
from resources.storage_resource import StorageResource
from sandbox import SandboxServer

from support import PROJECT
from support.client_helpers import harvest, ready_ids, settings_for
from support.moto_s3 import S3Bucket
from support.mounts import fill, tmpfs
from support.pipeline_kit import (
    ASSETS,
    DAY,
    catalog_path,
    dg_launch,
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
from support.sandbox_api import SANDBOX_KEY


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
    with tmpfs(path, "ro,size=1m"):
        yield path


@pytest.fixture
def full_disk(tmp_path: Path):
    """A small tmpfs without one byte free."""
    with tmpfs(tmp_path / "full", "size=1m") as disk:
        fill(disk)
        yield disk


# An S3 endpoint down from the start: nothing listens, or its name is not found.
DOWN_ENDPOINTS = {
    "s3-closed-port": lambda: f"http://127.0.0.1:{closed_port()}",
    "s3-unknown-host": lambda: "http://soundharvest-no-such-host.invalid:9000",
}


@pytest.mark.parametrize(
    "where",
    [
        "file-as-root",
        "read-only",
        "catalog-under-a-file",
        "missing-bucket",
        "bad-credentials",
        "s3-closed-port",
        "s3-unknown-host",
        "full-disk",
    ],
)
def test_storage_that_cannot_be_written_fails_before_any_api_call(
    sandbox, tmp_path, scratch, monkeypatch, request, where
):
    """Was: NotADirectoryError then 300 s step retries (a file as root); 605 s and two retry
    waits before "[Errno 30] Read-only file system" (a read-only directory); 617 s and two
    300 s waits for an S3 endpoint down from the start; 300 s waits for a full disk."""
    a_day(tmp_path, 34_000)
    audio_root, catalog_root, variable = None, None, "SOUNDHARVEST_AUDIO_ROOT"
    said = "cannot be written"
    if where == "file-as-root":
        (tmp_path / "a-file").write_text("not a folder")
        audio_root = str(tmp_path / "a-file")
    elif where == "read-only":
        audio_root = str(request.getfixturevalue("read_only_dir") / "audio")
    elif where == "catalog-under-a-file":
        (tmp_path / "a-file").write_text("not a folder")
        catalog_root, variable = str(tmp_path / "a-file" / "catalog"), "SOUNDHARVEST_CATALOG_ROOT"
    elif where == "full-disk":  # not one byte left: the write probe fails
        disk = request.getfixturevalue("full_disk")
        audio_root, said = str(disk / "audio"), "is full (No space left on device): 0 B free"
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        options = bucket.storage_options
        if where.startswith("s3-"):  # the endpoint down from the start
            options = {**options, "endpoint_url": DOWN_ENDPOINTS[where]()}
            said = "cannot be reached (EndpointConnectionError: "
        monkeypatch.setenv("SOUNDHARVEST_STORAGE_OPTIONS", json.dumps({"s3": options}))
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
    assert said in message, message
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
    assert check.description == (
        "31 days with no manifest rows, days with no runs: 2026-10-01...2026-10-31"
    )
    assert check.metadata["days without manifest"].value == len(days)
    looked = check.metadata["looked in"].value
    assert str(tmp_path / "manifests" / "D") in looked and ".csv" in looked
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


# -- smaller things seen ------------------------------------------------------------------


def test_the_same_expired_url_again_is_asked_for_after_a_backoff(sandbox, tmp_path):
    """Was: 1-5 runs a day `failed` with "the API handed out an expired URL again": every
    refresh spent within the second in which a whole-second presigner re-signs the same URL."""
    sandbox.set_faults(whole_second_urls=True)
    run_ids = ready_ids(35_000, 3)
    sandbox.script("download", "expire", "expire", "expire")

    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    assert all(isinstance(outcome, Fetched) for outcome in outcomes.values()), outcomes
    stats = sandbox.stats()
    assert stats["downloads"] == 6  # each dead URL downloaded once, never again
    assert len(stats["bulk_batch_sizes"]) > 4  # the first batch, then asked again until fresh


def test_a_pending_run_met_for_the_first_time_is_pending_not_given_up(sandbox, tmp_path):
    """Was: the demo's first run said "soundharvest gave up waiting: still pending 29-31 days
    after the day ended" for its pending rows (its days are more than 7 days old)."""
    write_manifest(tmp_path / "manifests", DAY, [1001, 1007])  # ids ending in 7 stay pending
    storage = local_storage(tmp_path)

    first = read_catalog_after(run(sandbox, storage), storage)
    again = read_catalog_after(run(sandbox, storage), storage)

    assert first.loc[1007, "status"] == "pending" and first.loc[1007, "attempts"] == 1
    assert not first.loc[1007, "error"].startswith(GAVE_UP)
    # Tried again by hand, past the horizon: still no sweep gave up on it
    # (tests/orchestration/test_sensors.py)
    assert again.loc[1007, "attempts"] == 2 and not again.loc[1007, "error"].startswith(GAVE_UP)


def read_catalog_after(result, storage):
    assert result.success
    return read_catalog(storage).set_index("run_id")


# -- stop when told -----------------------------------------------------------------------

STOP_WITHIN_S = 10.0


@dataclass
class Waiting:
    """One CLI run against its own sandbox, told to stop once it waits on `what`."""

    what: str
    sandbox: SandboxServer
    root: Path
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_waiting(what: str, faults: dict, runs: int, env: dict, tmp_path: Path) -> Waiting:
    root = tmp_path / what
    sandbox = SandboxServer(host="127.0.0.1", port=0, api_key=SANDBOX_KEY).start()
    sandbox.set_faults(**faults)
    if what == "slow-download":
        sandbox.script("download", "hang")
    write_manifest(root / "manifests", DAY, ready_ids(36_000, runs))
    (root / "dagster_home").mkdir()
    (root / "scratch").mkdir()
    log = root / "output.log"
    env = (
        os.environ
        | env
        | {
            "CAMB_API_KEY": SANDBOX_KEY,
            "CAMB_API_BASE_URL": sandbox.base_url,
            "CAMB_DOWNLOAD_ALLOW_HOSTS": "127.0.0.1",
            "SOUNDHARVEST_MANIFEST_ROOT": str(root / "manifests"),
            "SOUNDHARVEST_AUDIO_ROOT": str(root / "audio"),
            "SOUNDHARVEST_CATALOG_ROOT": str(root / "catalog"),
            "DAGSTER_HOME": str(root / "dagster_home"),
            "TMPDIR": str(root / "scratch"),  # the downloads' scratch space, to look for leftovers
        }
    )
    with log.open("w") as out:
        process = subprocess.Popen(
            dg_launch("--partition", DAY), env=env, cwd=PROJECT, stdout=out, stderr=out,
            start_new_session=True,
        )  # fmt: skip
    return Waiting(what, sandbox, root, process, log)


def waiting_now(run: Waiting) -> bool:
    """Whether the run is in the wait it is meant to be stopped in."""
    stats = run.sandbox.stats()
    if run.what == "retry-after":
        return stats["faults_injected"].get("429", 0) > 0
    if run.what == "slow-download":
        return stats["faults_injected"].get("hang", 0) > 0
    return "retrying in 300 s" in run.output()  # the step-retry delay


@pytest.mark.slow
def test_a_run_told_to_stop_stops_whatever_it_waits_on(tmp_path):
    """Was: SIGTERM had no effect until a 300 s step-retry wait ended. Three CLI runs, each
    waiting on something long (a Retry-After of 100 s, the step-retry delay of 300 s, a
    download that never answers), get SIGTERM and must stop within 10 s, leaving no
    temporary, no catalog partition and no files ledger (there was none before)."""
    runs = [
        start_waiting("retry-after", {"throttle_rate": 1.0, "retry_after": "100"}, 3, {}, tmp_path),
        start_waiting(
            "step-retry",
            {"server_error_rate": 1.0},
            120,  # enough calls for the outage rule (20)
            {"CAMB_RETRY_ATTEMPTS": "1", "SOUNDHARVEST_STEP_RETRY_DELAY_S": "300"},
            tmp_path,
        ),
        start_waiting("slow-download", {}, 1, {}, tmp_path),
    ]
    try:
        for run in runs:
            deadline = time.monotonic() + 120
            while not waiting_now(run):
                assert run.process.poll() is None, f"{run.what}: ended early\n{run.output()}"
                assert time.monotonic() < deadline, f"{run.what}: never waited\n{run.output()}"
                time.sleep(0.1)
            time.sleep(0.5)  # well inside the wait
            os.killpg(run.process.pid, signal.SIGTERM)
            stop_by = time.monotonic() + STOP_WITHIN_S
            while run.process.poll() is None and time.monotonic() < stop_by:
                time.sleep(0.05)
            assert run.process.poll() is not None, f"{run.what}: still running 10 s after SIGTERM"
            assert run.process.returncode != 0
            state = run.root / "catalog" / "_state" / "sound_files"
            assert not (run.root / "catalog" / "sound_catalog").exists() and not state.exists()
            assert not [p for p in files_under(run.root) if Path(p).name.startswith(".")]
            assert not list((run.root / "scratch").rglob("day-*")), run.what
    finally:
        for run in runs:
            if run.process.poll() is None:
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
            run.sandbox.stop()
