"""`soundharvest doctor | harvest | status`, and the `--help` of the demo and the sandbox.

The commands run in process (click's runner) against the sandbox over HTTP on loopback, local
roots under a temporary folder (one S3 root on moto), and a real SQLite Dagster instance; one
harvest of a day and a range is shared by the assertions that read its outcome.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result
from dagster import DagsterInstance

from pipelines.cli import cli
from pipelines.cli.output import EXIT_FAILED, EXIT_OPERATOR, EXIT_STOPPED
from sandbox.__main__ import _parser as sandbox_parser

from pipeline_kit import sandbox_env, write_manifest

PROJECT = Path(__file__).resolve().parent.parent
DAY, NEXT = "2026-11-01", "2026-11-02"
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
    "DAGSTER_HOME",
)


def setup_env(monkeypatch: pytest.MonkeyPatch, root: Path, base_url: str) -> None:
    """A working setup: the sandbox, its host allowed, roots and a fresh instance in `root`."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT / "pipelines" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    env = sandbox_env(base_url, root) | {"SOUNDHARVEST_STEP_RETRIES": "0"}
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
    ):
        assert expected in result.output
    assert "0 failed, 0 warnings" in lines[-1]
    # The write probes clean up after themselves.
    assert sorted(p.name for p in (setup / "catalog").iterdir()) == []


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
        yield {
            "root": root,
            "day": day,
            "days": days,
            "status": status,
            "status_json": status_json,
            "runs": runs,
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
        f"{ok['size_bytes'].sum() / 1e6:.1f}",
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
    ranges = [t for t in harvested["runs"] if "dagster/asset_partition_range_start" in t]
    assert [
        (t["dagster/asset_partition_range_start"], t["dagster/asset_partition_range_end"])
        for t in ranges
    ] == [(DAY, NEXT)]
    assert [t.get("dagster/partition") for t in harvested["runs"]].count(DAY) == 1


def test_status_says_what_the_catalog_says(harvested: dict) -> None:
    result = harvested["status"]
    assert result.exit_code == 0, result.output
    assert table_row(result.output, DAY)[:5] == [DAY, "13", "1", "1", "1"]
    assert table_row(result.output, NEXT)[:5] == [NEXT, "13", "1", "1", "1"]
    assert f"oldest pending day: {DAY}" in result.output
    report = json.loads(harvested["status_json"].output)
    assert report["days"] == [{"date": NEXT, "ok": 13, "pending": 1, "failed": 1, "rejected": 1}]
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


def test_harvest_failure_ends_with_the_reason_and_no_traceback(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMB_API_BASE_URL", os.environ["CAMB_API_BASE_URL"] + "/v2")
    result = soundharvest("harvest", DAY)
    assert result.exit_code == EXIT_OPERATOR
    # An operator's mistake is no day's own: said once, last, without a day (assets/ranges.py).
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


# -- --help -------------------------------------------------------------------------------------


def test_every_command_has_help_with_examples() -> None:
    for command in ("doctor", "harvest", "status"):
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
