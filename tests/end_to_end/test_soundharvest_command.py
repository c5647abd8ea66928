"""`soundharvest doctor | harvest | status`, and the `--help` of the demo and the sandbox.

The commands run in process (click's runner) against the sandbox over HTTP on loopback, local
roots under a temporary folder (one S3 root on moto), and a real SQLite Dagster instance; one
harvest of a day and a range is shared by the assertions that read its outcome.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from assets.partitions import RANGE_TAGS
from assets.steps.dead_runs import HOST_TAG, PID_TAG, this_host
from pipelines.cli import cli
from pipelines.cli.output import EXIT_FAILED, EXIT_OPERATOR, EXIT_STOPPED
from sandbox.__main__ import _parser as sandbox_parser

from support import PROJECT
from support.mounts import fill, tmpfs
from support.pipeline_kit import sandbox_env, write_manifest

DAY, NEXT = "2026-11-01", "2026-11-02"
RANGE_START = RANGE_TAGS[0]
# 1007 is pending, 1013 failed (sandbox/rules.py), `12abc` rejected, the rest ready.
RUN_IDS = list(range(1001, 1016))
CLEARED = (
    "CAMB_API_KEY",
    "CAMB_API_BASE_URL",
    "CAMB_DOWNLOAD_ALLOW_HOSTS",
    "SOUNDHARVEST_STORAGE_OPTIONS",
    "SOUNDHARVEST_MANIFEST_ROOT",
    "SOUNDHARVEST_AUDIO_ROOT",
    "SOUNDHARVEST_CATALOG_ROOT",
    "SOUNDHARVEST_DATASET_ROOT",
    "SOUNDHARVEST_FIRST_DAY",
    "DAGSTER_HOME",
)


def setup_env(monkeypatch: pytest.MonkeyPatch, root: Path, base_url: str) -> None:
    """A working setup: the sandbox, its host allowed, roots and a fresh instance in `root`."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT / "pipelines" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    env = sandbox_env(base_url, root) | {
        "SOUNDHARVEST_STEP_RETRIES": "0",
        "SOUNDHARVEST_FIRST_DAY": DAY,  # the first manifest's day, as doctor advises
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for day in (DAY, NEXT):
        write_manifest(root / "manifests", day, RUN_IDS, "12abc,bad id,sound,2.0,demo\n")


def soundharvest(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="soundharvest")


def last_line(result: Result) -> str:
    return result.output.strip().splitlines()[-1]


def table_row(output: str, day: str) -> list[str]:
    """The cells of `day`'s row in the table of days of `output`."""
    return next(cells for line in output.splitlines() if (cells := line.split())[:1] == [day])


def catalog(root: Path, day: str) -> pd.DataFrame:
    return pd.read_parquet(root / "catalog" / "sound_catalog" / f"date={day}" / "part-0.parquet")


# -- doctor -----------------------------------------------------------------------------------


@pytest.fixture
def setup(tmp_path: Path, sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    setup_env(monkeypatch, tmp_path, sandbox.base_url)
    return tmp_path


def test_doctor_all_green_against_the_sandbox(setup: Path) -> None:
    result = soundharvest("doctor", "--day", DAY)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines[:-1] if not line.startswith("✓")] == []
    for expected in (
        "✓ API key accepted",
        "✓ base URL path",
        "✓ download policy: downloads from http://127.0.0.1 are allowed",
        f"✓ manifests of {DAY}: 16 rows in 1 file(s), 1 rejected",
        "✓ camb_api pool: at most 2 days",
        f"✓ audio root: {setup / 'audio'} can be written",
        "✓ dead runs: no run in progress has lost its process",
        "✓ run monitoring: with the daemon, a run whose process is gone is marked failed within",
    ):
        assert expected in result.output
    assert "0 failed, 0 warnings" in lines[-1]
    # The write probes clean up after themselves.
    assert sorted(p.name for p in (setup / "catalog").iterdir()) == []


def test_doctor_marks_a_run_whose_process_is_gone_and_says_so(setup: Path) -> None:
    """A run left STARTED by a `soundharvest harvest` killed with kill -9 (its tags name a
    process of this host that is gone): doctor marks it failed, and warns with what it did."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    with DagsterInstance.get() as instance:
        tags = {"dagster/partition": DAY, HOST_TAG: this_host(), PID_TAG: str(gone.pid)}
        run = create_run_for_test(instance, tags=tags, status=DagsterRunStatus.STARTED)
    result = soundharvest("doctor", "--day", DAY)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [warned] = [n for n, line in enumerate(lines) if line.startswith("- dead runs")]
    assert lines[warned] == (
        f"- dead runs: marked failed: run {run.run_id[:8]} ({DAY}): process {gone.pid} on "
        f"{this_host()} is gone (killed?)"
    )
    assert lines[warned + 1].startswith("    fix: nothing more: the queued runs of those days")
    with DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE


def test_doctor_warns_when_the_daemon_cannot_mark_dead_runs(setup: Path) -> None:
    """An instance config without the project's run launcher: run monitoring sees no worker."""
    config = setup / "dagster_home" / "dagster.yaml"
    launcher = "run_launcher:\n  module: pipelines.run_launcher\n  class: HostRunLauncher\n"
    assert launcher in config.read_text()
    config.write_text(config.read_text().replace(launcher, ""))  # Dagster's default launcher
    result = soundharvest("doctor", "--day", DAY)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [warned] = [n for n, line in enumerate(lines) if line.startswith("- run monitoring")]
    assert "the daemon does not mark a run whose process is gone" in lines[warned]
    assert lines[warned + 1].startswith("    fix: copy the run_launcher and run_monitoring blocks")


@pytest.mark.parametrize(
    ("change", "line", "fix"),
    [
        ({"CAMB_API_KEY": ""}, "✗ API key: CAMB_API_KEY is not set", "export CAMB_API_KEY="),
        ({"CAMB_API_BASE_URL": "/v2"}, "✗ base URL path: POST", "set CAMB_API_BASE_URL"),
        (
            {"CAMB_DOWNLOAD_ALLOW_HOSTS": ""},
            "✗ download policy: download URL http://127.0.0.1:",
            "add it to CAMB_DOWNLOAD_ALLOW_HOSTS",
        ),
        (
            {"SOUNDHARVEST_AUDIO_ROOT": "file"},
            "✗ audio root: the audio root",
            "point SOUNDHARVEST_AUDIO_ROOT at a writable",
        ),
    ],
    ids=["no-key", "wrong-path", "policy", "unwritable-root"],
)
def test_doctor_names_what_is_wrong_and_the_fix(
    setup: Path, monkeypatch: pytest.MonkeyPatch, change: dict, line: str, fix: str
) -> None:
    for name, value in change.items():
        if name == "CAMB_API_BASE_URL":
            value = os.environ[name].removesuffix("/apis") + value
        if name == "SOUNDHARVEST_AUDIO_ROOT":  # a file where a folder should be
            (setup / "a-file").write_text("")
            value = str(setup / "a-file")
        monkeypatch.setenv(name, value)
    result = soundharvest("doctor", "--day", DAY)
    assert result.exit_code == EXIT_FAILED
    failed = [n for n, text in enumerate(result.output.splitlines()) if text.startswith("✗")]
    assert len(failed) == 1, result.output
    lines = result.output.splitlines()
    assert lines[failed[0]].startswith(line), result.output
    assert lines[failed[0] + 1].startswith("    fix: ") and fix in lines[failed[0] + 1]
    assert "1 failed" in lines[-1]


def test_doctor_warns_of_dagsters_own_sqlite_event_log(setup: Path) -> None:
    """An instance config with the pool but without the project's event log storage."""
    config = setup / "dagster_home" / "dagster.yaml"
    config.write_text(config.read_text().split("event_log_storage:")[0])
    result = soundharvest("doctor", "--day", DAY)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [warned] = [n for n, line in enumerate(lines) if line.startswith("- event log")]
    assert "can share a camb_api slot" in lines[warned]
    assert lines[warned + 1].startswith("    fix: copy the event_log_storage block of pipelines/")
    assert "✓ camb_api pool: at most 2 days" in result.output
    assert "0 failed, 1 warnings" in lines[-1]


@pytest.mark.parametrize(
    ("first_day", "warned"),
    [
        (None, "SOUNDHARVEST_FIRST_DAY=2024-01-01 starts 1035 days before the first manifest "
         f"({DAY}): the UI counts 1035 partitions that have no runs"),
        ("2026-09-01", f"SOUNDHARVEST_FIRST_DAY=2026-09-01 starts 61 days before the first "
         f"manifest ({DAY}): the UI counts 61 partitions that have no runs"),
        (NEXT, f"SOUNDHARVEST_FIRST_DAY={NEXT} starts after the first manifest ({DAY}): the "
         "days before it cannot be harvested"),
        ("2026-10-01", None),  # 31 days ahead: no word
    ],
    ids=["default", "two-months-early", "too-late", "a-month-early"],
)  # fmt: skip
def test_doctor_warns_when_the_first_day_is_far_from_the_first_manifest(
    setup: Path, monkeypatch: pytest.MonkeyPatch, first_day: str | None, warned: str | None
) -> None:
    """A new instance showed "1,070 partitions, 0 % filled" for every harvest asset."""
    if first_day is None:
        monkeypatch.delenv("SOUNDHARVEST_FIRST_DAY")
    else:
        monkeypatch.setenv("SOUNDHARVEST_FIRST_DAY", first_day)
    (setup / "manifests" / "README.txt").write_text("not a manifest: not a day either")

    result = soundharvest("doctor", "--day", DAY)

    assert result.exit_code == 0, result.output  # a warning, never a failure
    lines = result.output.splitlines()
    if warned is None:
        assert f"✓ first day: SOUNDHARVEST_FIRST_DAY={first_day}, first manifest {DAY}" in lines
        assert "0 failed, 0 warnings" in lines[-1]
        return
    [at] = [n for n, line in enumerate(lines) if line.startswith("- first day: ")]
    assert lines[at] == f"- first day: {warned}"
    assert lines[at + 1] == (
        f"    fix: export SOUNDHARVEST_FIRST_DAY={DAY} (the UI, the schedule and backfills read it)"
    )
    assert "0 failed, 1 warnings" in lines[-1]


def test_doctor_writes_and_reads_back_an_s3_root(setup: Path, s3_bucket, monkeypatch) -> None:
    options = {"s3": {"endpoint_url": s3_bucket.endpoint_url}}
    monkeypatch.setenv("SOUNDHARVEST_STORAGE_OPTIONS", json.dumps(options))
    monkeypatch.setenv("SOUNDHARVEST_CATALOG_ROOT", f"{s3_bucket.url}/catalog")
    monkeypatch.setenv("SOUNDHARVEST_DATASET_ROOT", "s3://no-such-bucket-soundharvest/datasets")
    result = soundharvest("doctor", "--day", DAY)
    assert f"✓ catalog root: {s3_bucket.url}/catalog can be written" in result.output
    assert "✗ datasets root: the datasets root s3://no-such-bucket-soundharvest/datasets " in (
        result.output
    )
    assert result.exit_code == EXIT_FAILED
    assert s3_bucket.keys() == []


# -- harvest and status -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harvested(sandbox_server, tmp_path_factory) -> dict:
    """One day, then a range over it and the next day, from a fresh DAGSTER_HOME."""
    root = tmp_path_factory.mktemp("harvested")
    with pytest.MonkeyPatch.context() as monkeypatch:
        setup_env(monkeypatch, root, sandbox_server.base_url)
        # A folder made with mkdir: harvest gives it the project's instance config itself.
        (root / "dagster_home" / "dagster.yaml").unlink()
        day = soundharvest("harvest", DAY)
        days = soundharvest("harvest", f"{DAY}...{NEXT}")
        status = soundharvest("status")
        status_json = soundharvest("status", "--day", NEXT, "--json")
        with DagsterInstance.get() as instance:
            runs = [run.tags for run in instance.get_runs()]
            [range_run] = [r.run_id for r in instance.get_runs() if RANGE_START in r.tags]
        yield {
            "root": root,
            "day": day,
            "days": days,
            "status": status,
            "status_json": status_json,
            "runs": runs,
            "range_run": range_run,
        }


def test_harvest_of_a_day_ends_with_the_catalogs_counts(harvested: dict) -> None:
    result, root = harvested["day"], harvested["root"]
    assert result.exit_code == 0, result.output
    rows = catalog(root, DAY)
    counts = rows["status"].value_counts()
    ok = rows[rows["status"] == "ok"]
    assert table_row(result.output, DAY) == [
        DAY,
        *(str(counts.get(s, 0)) for s in ("ok", "pending", "failed", "rejected")),
        str(len(ok)),  # a first harvest: every ok file is new
        f"{ok['size_bytes'].sum() / 2**20:.1f}",
    ]
    assert (counts["ok"], counts["pending"], counts["failed"], counts["rejected"]) == (13, 1, 1, 1)
    assert "Audio generation failed for run N" in result.output  # the top reasons
    assert last_line(result).startswith(f"harvested {DAY} (run ")
    assert (root / "dagster_home" / "dagster.yaml").exists()
    assert "No dagster instance configuration file" not in result.output


def test_harvest_of_a_range_is_one_run_with_the_range_tags(harvested: dict) -> None:
    result = harvested["days"]
    assert result.exit_code == 0, result.output
    assert table_row(result.output, DAY)[5] == "0"  # nothing new: the day was done
    assert table_row(result.output, NEXT)[1] == "13"
    assert f"{NEXT}: 15 runs to fetch" in result.output  # plain progress lines (not a tty)
    ranges = [t for t in harvested["runs"] if RANGE_START in t]
    assert [(t[RANGE_START], t["dagster/asset_partition_range_end"]) for t in ranges] == [
        (DAY, NEXT)
    ]
    assert [t.get("dagster/partition") for t in harvested["runs"]].count(DAY) == 1


def test_status_says_what_the_catalog_says(harvested: dict) -> None:
    result = harvested["status"]
    assert result.exit_code == 0, result.output
    assert table_row(result.output, DAY) == [DAY, "13", "1", "1", "1", "ok"]  # its latest run
    assert table_row(result.output, NEXT) == [NEXT, "13", "1", "1", "1", "ok"]
    assert f"oldest pending day: {DAY}" in result.output
    report = json.loads(harvested["status_json"].output)
    run = {"state": "ok", "run_id": harvested["range_run"], "reason": None}
    assert report["days"] == [
        {
            "date": NEXT,
            "ok": 13,
            "pending": 1,
            "failed": 1,
            "rejected": 1,
            "catalog": True,
            "run": run,
        }
    ]
    assert {"status": "failed", "reason": "Audio generation failed for run N", "count": 1} in (
        report["reasons"]
    )
    assert report["oldest_pending"] == NEXT


def test_status_reads_a_catalog_on_s3(harvested: dict, s3_bucket, monkeypatch) -> None:
    local = harvested["root"] / "catalog" / "sound_catalog"
    client = s3_bucket.client()
    for part in local.glob("date=*/part-0.parquet"):
        key = f"catalog/sound_catalog/{part.parent.name}/part-0.parquet"
        client.put_object(Bucket=s3_bucket.name, Key=key, Body=part.read_bytes())
    options = {"s3": {"endpoint_url": s3_bucket.endpoint_url}}
    monkeypatch.setenv("SOUNDHARVEST_STORAGE_OPTIONS", json.dumps(options))
    monkeypatch.setenv("SOUNDHARVEST_CATALOG_ROOT", f"{s3_bucket.url}/catalog")
    result = soundharvest("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["catalog"] == f"{s3_bucket.url}/catalog/sound_catalog"
    assert json.loads(harvested["status_json"].output)["days"][0] in report["days"]


# -- failures and exit codes --------------------------------------------------------------------


def test_status_without_an_instance_shows_the_catalog_alone(harvested: dict, monkeypatch) -> None:
    monkeypatch.setenv("SOUNDHARVEST_CATALOG_ROOT", str(harvested["root"] / "catalog"))
    home = harvested["root"] / "no-instance-here"
    for where in (None, home):  # DAGSTER_HOME unset, or naming a folder with no instance
        if where is None:
            monkeypatch.delenv("DAGSTER_HOME", raising=False)
        else:
            monkeypatch.setenv("DAGSTER_HOME", str(where))
        result = soundharvest("status", "--json")
        assert result.exit_code == 0, result.output
        assert [day["run"] for day in json.loads(result.output)["days"]] == [None, None]
        table = soundharvest("status").output.splitlines()
        header = next(line.split() for line in table if line.split()[:1] == ["day"])
        assert header == ["day", "ok", "pending", "failed", "rejected"]  # no run column
    assert not home.exists()  # a reader never creates an instance


def test_harvest_failure_ends_with_the_reason_and_no_traceback(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMB_API_BASE_URL", os.environ["CAMB_API_BASE_URL"] + "/v2")
    result = soundharvest("harvest", DAY)
    assert result.exit_code == EXIT_OPERATOR
    # An operator's mistake is no day's own: said once, last, without a day (assets/steps/days.py).
    assert last_line(result).startswith("soundharvest: sound_files: every call")
    assert "CAMB_API_BASE_URL" in last_line(result)
    assert 'File "' not in result.output  # no stack frame
    verbose = soundharvest("harvest", DAY, "--verbose")
    assert 'File "' in verbose.output
    assert last_line(verbose) == last_line(result)


@pytest.mark.parametrize(
    ("args", "change", "code", "says"),
    [
        (["harvest", DAY], {"CAMB_API_KEY": ""}, EXIT_OPERATOR, "CAMB_API_KEY is not set"),
        (["harvest", DAY], {"DAGSTER_HOME": ""}, EXIT_OPERATOR, "DAGSTER_HOME is not set"),
        (["harvest", "2026-11-31"], {}, 2, "expected a day D or a range A...B"),
        (["harvest", f"{NEXT}...{DAY}"], {}, 2, "the range ends before it starts"),
        (["harvest", "2999-01-01"], {}, 2, "once it has ended"),
        (["status"], {}, EXIT_OPERATOR, "no catalog at"),
    ],
    ids=["no-key", "no-dagster-home", "bad-day", "backwards", "future", "no-catalog"],
)
def test_exit_codes(setup: Path, monkeypatch, args: list, change: dict, code: int, says: str):
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    result = soundharvest(*args)
    assert result.exit_code == code, result.output
    assert says in result.output.strip().splitlines()[-1]


def test_the_console_script_stops_when_told(setup: Path, sandbox) -> None:
    sandbox.set_faults(latency_s=3.0)  # seconds in sound_files, to be interrupted in
    script = Path(sys.executable).with_name("soundharvest")
    process = subprocess.Popen(
        [str(script), "harvest", DAY],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=PROJECT,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # plain lines: its output is not a terminal
        lines.append(line)
        if "runs to fetch" in line:
            process.send_signal(signal.SIGINT)
            break
    rest, _ = process.communicate(timeout=60)
    lines += rest.splitlines()
    assert process.returncode == EXIT_STOPPED, "".join(lines)
    assert lines[-1].startswith(f"soundharvest: stopped as told; run `soundharvest harvest {DAY}`")


# -- storage faults and settings mistakes: the operator's, before any retry or any run ---------


def no_runs() -> bool:
    """The instance at DAGSTER_HOME holds no run."""
    with DagsterInstance.get() as instance:
        return instance.get_runs() == []


def down_endpoint(kind: str) -> str:
    """An S3 endpoint down from the start: a closed port, or a name that is not found."""
    if kind == "unknown-host":
        return "http://soundharvest-no-such-host.invalid:9000"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("closed-port", "cannot be reached (EndpointConnectionError: "),
        ("unknown-host", "cannot be reached (EndpointConnectionError: "),
        ("missing-bucket", "cannot be written (FileNotFoundError: "),
        ("bad-credentials", "cannot be written (PermissionError: "),
    ],
)
def test_an_s3_audio_root_that_cannot_be_used_is_exit_3_and_a_doctor_failure(
    setup: Path, s3_bucket, request, monkeypatch: pytest.MonkeyPatch, fault: str, said: str
) -> None:
    """Was: `retrying in 300 s (retry 1 of 2)`, then exit 1 after 617 s (a closed port)."""
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "2")  # a retry would say so: none may
    monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0")
    options = dict(s3_bucket.storage_options)
    if fault in ("closed-port", "unknown-host"):
        options["endpoint_url"] = down_endpoint(fault)
    monkeypatch.setenv("SOUNDHARVEST_STORAGE_OPTIONS", json.dumps({"s3": options}))
    bucket = f"missing-{os.urandom(6).hex()}" if fault == "missing-bucket" else s3_bucket.name
    root = f"s3://{bucket}/audio"
    monkeypatch.setenv("SOUNDHARVEST_AUDIO_ROOT", root)
    if fault == "bad-credentials":
        request.getfixturevalue("moto_auth")

    harvested = soundharvest("harvest", DAY)
    doctor = soundharvest("doctor", "--day", DAY)

    assert harvested.exit_code == EXIT_OPERATOR, harvested.output
    assert last_line(harvested).startswith(f"soundharvest: sound_files: the audio root {root} ")
    assert said in last_line(harvested) and "SOUNDHARVEST_AUDIO_ROOT" in last_line(harvested)
    assert "retrying in" not in harvested.output
    lines = doctor.output.splitlines()
    [failed] = [n for n, line in enumerate(lines) if line.startswith("✗")]
    assert lines[failed].startswith(f"✗ audio root: the audio root {root} {said}")
    assert "SOUNDHARVEST_AUDIO_ROOT" in lines[failed + 1]
    assert "passing trouble" not in doctor.output and doctor.exit_code == EXIT_FAILED


def test_a_full_audio_root_is_exit_3_naming_free_space_and_need(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: 300 s step retries of "[Errno 28] No space left on device", exit 1 after 614 s."""
    with tmpfs(setup / "tiny", "size=1m") as disk:
        monkeypatch.setenv("SOUNDHARVEST_AUDIO_ROOT", str(disk / "audio"))
        monkeypatch.setenv("SOUNDHARVEST_STEP_RETRIES", "2")
        monkeypatch.setenv("SOUNDHARVEST_STEP_RETRY_DELAY_S", "0")
        fill(disk, leave=64 << 10)  # less than one of the day's files

        result = soundharvest("harvest", DAY)

        assert result.exit_code == EXIT_OPERATOR, result.output
        said = last_line(result)
        assert said.startswith(
            f"soundharvest: sound_files: the audio root {disk / 'audio'} is full (No space left "
            "on device): "
        )
        assert re.search(rf" free; {DAY} still has \d+ runs to fetch, about [\d.]+ [KM]iB ", said)
        assert "point SOUNDHARVEST_AUDIO_ROOT at a disk with room" in said
        assert "retrying in" not in result.output
        assert not [p for p in disk.rglob(".*") if p.is_file()]  # no temporary left
    assert not (setup / "catalog" / "sound_catalog").exists()


def test_a_day_before_the_first_day_is_a_usage_error_without_a_run(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: a Dagster run failing with `CheckError: Invariant failed`, exit 1."""
    monkeypatch.setenv("SOUNDHARVEST_FIRST_DAY", NEXT)

    for days in (DAY, f"{DAY}...{NEXT}"):
        result = soundharvest("harvest", days)

        assert result.exit_code == 2, result.output
        assert last_line(result).endswith(
            f"{DAY} is before SOUNDHARVEST_FIRST_DAY={NEXT}, the first day of the daily "
            f"partitions: harvest from {NEXT} on, or export SOUNDHARVEST_FIRST_DAY={DAY}"
        )
    assert no_runs()
    assert soundharvest("harvest", NEXT).exit_code == 0  # the first day itself is fine


def test_storage_options_that_are_not_json_are_named_in_harvest_and_doctor(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: harvest said the catalog root cannot be written; doctor `✓ settings`, then five
    ✗ lines each ending "(it may be passing trouble: try again)"."""
    secret = "s3cr3t-" + os.urandom(4).hex()
    value = json.dumps({"s3": {"secret": secret}}).removesuffix("}}") + ", key: 1}}"
    monkeypatch.setenv("SOUNDHARVEST_STORAGE_OPTIONS", value)
    said = (
        "SOUNDHARVEST_STORAGE_OPTIONS is not valid JSON (Expecting property name enclosed in "
        f"double quotes: line 1 column {value.index('key: 1') + 1};"
    )

    harvested = soundharvest("harvest", DAY)
    doctor = soundharvest("doctor", "--day", DAY)

    assert harvested.exit_code == EXIT_OPERATOR
    assert last_line(harvested).startswith(f"soundharvest: {said}")
    assert no_runs()  # stopped before any run
    assert doctor.exit_code == EXIT_FAILED
    failed = [line for line in doctor.output.splitlines() if line.startswith("✗")]
    assert failed == [f"✗ settings: {said} its value is not shown, it may hold credentials)"]
    for root in ("manifests", "audio", "catalog", "datasets"):
        assert f"- {root} root: not checked: SOUNDHARVEST_STORAGE_OPTIONS cannot be used" in (
            doctor.output
        )
    assert "passing trouble" not in doctor.output
    assert secret not in harvested.output + doctor.output


def test_a_manifest_that_cannot_be_parsed_is_exit_3_and_the_other_days_go_on(
    setup: Path,
) -> None:
    """Was: exit 1, "run ... again once it is fixed or has passed" (a retry cannot fix it)."""
    bad = setup / "manifests" / f"{NEXT}.csv"
    bad.write_text('run_id,prompt\n1001,fine\n1002,"never closed\n')

    result = soundharvest("harvest", f"{DAY}...{NEXT}")

    assert result.exit_code == EXIT_OPERATOR, result.output
    assert last_line(result) == (
        f"soundharvest: run_manifest: {NEXT}: manifest cannot be read: {bad}, line 3: "
        "malformed CSV: unexpected end of data: fix line 3 of that file (or remove it), then "
        "harvest the day again (nothing was retried)"
    )
    assert f"completed: {DAY}" in result.output  # the other day of the range was read
    manifests = setup / "catalog" / "_state" / "run_manifest"
    assert [p.name for p in manifests.rglob("*.parquet")] and not list(manifests.rglob(f"*{NEXT}*"))


# -- --help -------------------------------------------------------------------------------------


def test_every_command_has_help_with_examples() -> None:
    for command in ("doctor", "generate", "harvest", "status"):
        result = soundharvest(command, "--help")
        assert result.exit_code == 0
        assert f"soundharvest {command}" in result.output  # an example
        assert "Exit status" in result.output


def test_demo_help_explains_and_does_not_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.demo", "--help"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m pipelines.demo")
    assert "sandbox" in done.stdout and "materializing" not in done.stdout


def test_sandbox_help_explains_every_flag() -> None:
    parser = sandbox_parser()
    silent = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert silent == []
    assert "--expired-run RUN" in parser.format_help()
