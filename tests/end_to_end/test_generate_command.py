"""`soundharvest generate` and the generations of `soundharvest status`, in process (click's
runner) against the sandbox over HTTP, local roots and a real SQLite Dagster instance."""

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipelines.cli import cli
from pipelines.cli.output import EXIT_FAILED, EXIT_OPERATOR

from support import PROJECT
from support.generation_kit import creates, write_sheet
from support.pipeline_kit import sandbox_env

DAY, NEXT = "2026-11-05", "2026-11-06"


@pytest.fixture
def setup(tmp_path: Path, sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sandbox, its host allowed, every root and a fresh instance under `tmp_path`, and a
    sheet of 6 rows for DAY: 4 to send (one of them 2 takes), a duplicate and a bad row."""
    for name in ("SOUNDHARVEST_STORAGE_OPTIONS", "SOUNDHARVEST_FIRST_DAY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "dagster_home").mkdir()
    shutil.copyfile(
        PROJECT / "pipelines" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml"
    )
    env = sandbox_env(sandbox.base_url, tmp_path) | {
        "SOUNDHARVEST_PROMPT_ROOT": str(tmp_path / "prompts"),
        "SOUNDHARVEST_STEP_RETRIES": "0",
        "SOUNDHARVEST_FIRST_DAY": DAY,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    write_sheet(
        tmp_path / "prompts",
        DAY,
        [
            {"prompt": "rain on a tin roof", "duration": 2, "takes": 2},
            {"prompt": "thunder", "duration": 3},
            {"prompt": "a door creaks", "duration": 2, "audio_type": "music"},
            {"prompt": "thunder", "duration": 3},
            {"prompt": "bell", "duration": 99},
        ],
    )
    return tmp_path


def soundharvest(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="soundharvest")


def last_line(result: Result) -> str:
    return result.output.strip().splitlines()[-1]


def row(output: str, first: str) -> list[str]:
    return next(cells for line in output.splitlines() if (cells := line.split())[:1] == [first])


def test_dry_run_says_what_would_be_sent_and_sends_nothing(setup: Path, sandbox) -> None:
    result = soundharvest("generate", DAY, "--dry-run")
    assert result.exit_code == 0, result.output
    # rows, to send, audio s, deferred, rejected, already (a duplicate)
    assert row(result.output, DAY) == [DAY, "6", "4", "9", "0", "1", "1"]
    assert f"rejected {setup / 'prompts' / DAY}.csv:6: duration 99 s is outside 0.5..30 s" in (
        result.output
    )
    assert "budget: no limit set (SOUNDHARVEST_GENERATE_*)" in result.output
    assert last_line(result) == (
        f"dry run: nothing was sent; `soundharvest generate {DAY}` sends 4 generations"
    )
    assert sandbox.stats()["api_requests"] == 0 and creates(sandbox) == {}
    assert not (setup / "catalog" / "_state").exists()  # no ledger, no record
    assert not (setup / "dagster_home" / "storage").exists()  # no run either


def test_dry_run_counts_against_the_budget_left(setup: Path, sandbox, monkeypatch) -> None:
    monkeypatch.setenv("SOUNDHARVEST_GENERATE_PER_DAY", "3")
    result = soundharvest("generate", DAY, "--dry-run")
    assert row(result.output, DAY)[2:5] == ["3", "7", "1"]  # 3 to send, 7 s, 1 deferred
    assert "budget: SOUNDHARVEST_GENERATE_PER_DAY: 0 left" in result.output
    assert creates(sandbox) == {}


def test_generate_sends_each_generation_once_and_says_so(setup: Path, sandbox) -> None:
    result = soundharvest("generate", DAY)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"{DAY}: 6 sheet rows (one per take): 4 to send, 1 duplicate, 1 rejected" in lines
    assert any(
        line.startswith(f"{DAY}: 4 creates sent in ")
        and line.endswith(" s; rows: 4 created, 1 rejected, 1 duplicate")
        for line in lines
    ), lines
    # submitted, resolved, deferred, rejected, in doubt
    assert row(result.output, DAY) == [DAY, "4", "0", "0", "1", "0"]
    assert last_line(result).startswith(f"generated {DAY} (run ")
    assert creates(sandbox) == {"rain on a tin roof": 2, "thunder": 1, "a door creaks": 1}
    again = soundharvest("generate", DAY)
    assert again.exit_code == 0 and f"{DAY}: 0 creates sent in " in again.output
    assert sum(creates(sandbox).values()) == 4


def test_status_shows_generations_per_day(setup: Path, sandbox) -> None:
    sandbox.set_faults(generation_s=0.0)
    sandbox.script("api", "lost")
    assert soundharvest("generate", DAY).exit_code == 0
    assert soundharvest("harvest", DAY).exit_code == 0
    result = soundharvest("status")
    assert result.exit_code == 0, result.output
    generations = result.output.split("\ngenerations")[1]  # the second table
    # 4 sent: one lost (in doubt), 3 created and resolved by the harvest
    assert row(generations, DAY) == [DAY, "3", "3", "0", "1", "1"]
    data = json.loads(soundharvest("status", "--json").output)
    [day] = data["generations"]
    assert (day["submitted"], day["resolved"], day["in_doubt"], day["duplicate"]) == (3, 3, 1, 1)


def test_402_ends_with_one_line_saying_what_to_do(setup: Path, sandbox) -> None:
    sandbox.set_faults(credits=2)
    result = soundharvest("generate", DAY)
    assert result.exit_code == EXIT_FAILED, result.output
    assert last_line(result) == (
        f"soundharvest: {DAY}: the API is out of credits (HTTP 402): top up the account's "
        f"credits, then run `soundharvest generate {DAY}` again"
    )
    assert sum(creates(sandbox).values()) == 2


def test_a_wrong_key_is_exit_3_in_seconds_with_nothing_sent(setup: Path, sandbox, monkeypatch):
    monkeypatch.setenv("CAMB_API_KEY", "not-the-key")
    started = time.monotonic()
    result = soundharvest("generate", DAY)
    assert result.exit_code == EXIT_OPERATOR, result.output
    assert "the API rejected the API key (HTTP 401: Invalid API key): check CAMB_API_KEY" in (
        last_line(result)
    )
    assert time.monotonic() - started < 30  # a run's start-up included; never a retry wait
    assert sandbox.stats()["tasks_created"] == 0
    assert "not-the-key" not in result.output


def test_a_sheet_that_cannot_be_parsed_is_exit_3_naming_file_and_line(setup: Path) -> None:
    (setup / "prompts" / f"{NEXT}.csv").write_text('prompt\n"rain\n')
    for args in ([NEXT, "--dry-run"], [NEXT]):
        result = soundharvest("generate", *args)
        assert result.exit_code == EXIT_OPERATOR, result.output
        assert f"{setup / 'prompts' / NEXT}.csv, line 2: malformed CSV" in last_line(result)
        assert "then generate the day again" in last_line(result)
