"""The plain modules behind `sound_files`: ledger checkpoints, scratch space, settings, ranges."""

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from assets.harvest.day_harvest import Ledger
from assets.harvest.scratch import LOCK, PARENT, remove_abandoned, scratch_dir
from assets.harvest.settings import PipelineSettings, SettingsError
from assets.steps.days import DayProblem, day_ranges, run_days
from resources.camb import CambAuthError, CambOutageError
from resources.camb.retry import step_retry_wait_s
from resources.error_kinds import OperatorError
from resources.storage import FULL, LASTING, UNREACHABLE, StorageError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def row(run_id: int, status: str = "ok") -> dict:
    return {"run_id": run_id, "status": status, "attempts": 1}


def test_the_ledger_is_saved_at_most_every_interval_and_only_when_changed():
    saved: list[pd.DataFrame] = []
    clock = Clock()
    ledger = Ledger([row(3, "failed")], saved.append, interval_s=60, clock=clock)

    ledger.record(row(1))
    ledger.checkpoint()  # changed, but the interval has not passed
    clock.now = 59.9
    ledger.checkpoint()
    assert saved == []
    clock.now = 60
    ledger.checkpoint()
    assert [list(frame.run_id) for frame in saved] == [[1, 3]]  # sorted, earlier rows kept

    clock.now = 500
    ledger.checkpoint()  # nothing new since the last save
    assert len(saved) == 1
    ledger.record(row(3))  # a run decided again replaces its earlier row
    ledger.checkpoint()
    assert list(saved[-1].status) == ["ok", "ok"]
    ledger.save()  # the final save happens whatever the interval
    assert len(saved) == 3


def test_settings_come_from_the_environment_with_clear_errors():
    assert PipelineSettings.from_env({}) == PipelineSettings()
    settings = PipelineSettings.from_env(
        {"SOUNDHARVEST_DAY_BUDGET_S": "90", "SOUNDHARVEST_STEP_RETRIES": " 0 "}
    )
    assert (settings.day_budget_s, settings.step_retries) == (90.0, 0)
    for name, value in [
        ("SOUNDHARVEST_DAY_BUDGET_S", "ten"),
        ("SOUNDHARVEST_DAY_BUDGET_S", "0"),
        ("SOUNDHARVEST_CHECKPOINT_S", "-1"),
        ("SOUNDHARVEST_STEP_RETRIES", "1.5"),
        ("SOUNDHARVEST_STEP_RETRY_DELAY_S", "inf"),
    ]:
        with pytest.raises(SettingsError, match=name):
            PipelineSettings.from_env({name: value})


def test_day_ranges_fold_consecutive_days_as_the_cli_writes_them():
    days = ["2026-11-03", "2026-11-01", "2026-11-02", "2026-11-05", "2026-12-31", "2027-01-01"]
    assert day_ranges(days) == "2026-11-01...2026-11-03, 2026-11-05, 2026-12-31...2027-01-01"
    assert day_ranges([]) == ""


DAYS = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


@pytest.mark.parametrize(
    ("error", "stops", "retriable", "operators"),
    [
        (DayProblem("no manifest"), False, False, False),
        (DayProblem("manifest cannot be read", fix="fix line 3"), False, False, True),
        (CambAuthError("key refused"), True, False, True),
        (CambOutageError("API down"), True, True, False),
        (StorageError("a timeout"), True, True, False),
        (StorageError("refused, after writes", cause=UNREACHABLE), True, True, False),
        (StorageError("read-only", cause=LASTING), True, False, False),
    ],
    ids=["day-problem", "bad-manifest", "auth", "outage", "storage", "lost-mid-day", "lasting"],
)
def test_which_failures_stop_a_range(error, stops, retriable, operators):
    def work(day: str) -> str:
        if day == DAYS[1]:
            raise error
        return day.upper()

    days = run_days(DAYS, work)

    assert days.failed == {DAYS[1]: str(error)}
    assert list(days.done) == ([DAYS[0]] if stops else [DAYS[0], *DAYS[2:]])
    assert days.not_tried == (DAYS[2:] if stops else [])
    assert days.retriable is retriable
    assert days.operators() is operators  # never retried, exit 3: fix it, then run again
    expected = f"{DAYS[1]}: {error}\ncompleted: " + (
        f"{DAYS[0]}\nnot tried: {DAYS[2]}...{DAYS[3]}"
        if stops
        else f"{DAYS[0]}, {DAYS[2]}...{DAYS[3]}"
    )
    if isinstance(error, OperatorError):  # no day's own: said once, last, what to fix
        expected = f"completed: {DAYS[0]}\nnot tried: {DAYS[1]}...{DAYS[3]}\n{error}"
    assert days.report() == expected


def test_a_full_disk_met_mid_day_is_the_operators_naming_free_space(tmp_path):
    full = StorageError(
        f"cannot publish {tmp_path}/audio/{DAYS[1]}/7.wav: OSError: [Errno 28] No space left",
        cause=FULL,
        root=str(tmp_path / "audio"),
        setting="SOUNDHARVEST_AUDIO_ROOT",
        errno=errno.ENOSPC,
    )

    days = run_days(DAYS, lambda day: (_ for _ in ()).throw(full) if day == DAYS[1] else day)

    assert days.operators() and not days.retriable and days.not_tried == DAYS[2:]
    said = days.report().splitlines()[-1]
    assert said.startswith(f"the audio root {tmp_path}/audio is full (No space left on device): ")
    # The free space of the disk the root is on (it does not exist: its nearest folder's).
    assert re.search(r"\): [\d.]+ (B|KiB|MiB|GiB) free: ", said), said
    assert said.endswith("point SOUNDHARVEST_AUDIO_ROOT at a disk with room")


def test_step_retries_wait_seconds_first_then_longer_never_past_the_cap():
    first = PipelineSettings().step_retry_delay_s
    assert first <= 10  # seconds, not the 300 s it used to be
    for retry in range(1, 8):
        base = min(first * 2 ** (retry - 1), 300)
        waits = [step_retry_wait_s(retry, first, 300) for _ in range(200)]
        assert all(base <= wait <= min(base + first / 2, 300) for wait in waits), (retry, waits)
        if base + first / 2 <= 300:
            assert len(set(waits)) > 1  # jittered: steps failed together come back apart
    assert step_retry_wait_s(1, 0, 300) == 0  # a delay of 0 (the tests') waits nothing


def test_a_single_day_report_is_just_its_error():
    days = run_days(DAYS[:1], lambda day: (_ for _ in ()).throw(StorageError("disk full")))
    assert days.report() == f"{DAYS[0]}: disk full"


def test_other_errors_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        run_days(DAYS, lambda day: 1 / 0)


_HOLD_SCRATCH = """
import sys, time
from assets.harvest.scratch import scratch_dir
with scratch_dir(sys.argv[1]) as path:
    (path / "part.download").write_bytes(b"half a file")
    print(path, flush=True)
    time.sleep(600)
"""


def test_scratch_of_a_killed_process_is_removed_and_a_live_one_kept(tmp_path):
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", _HOLD_SCRATCH, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    dead, live = (Path(p.stdout.readline().strip()) for p in holders)
    try:
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait()
        never_locked = tmp_path / PARENT / "day-never-locked"
        never_locked.mkdir()

        assert remove_abandoned(tmp_path / PARENT, grace_s=60) == 1  # at once, however young
        assert not dead.exists() and live.exists() and (live / LOCK).exists()
        assert never_locked.exists()  # young and unlocked: its owner may be about to lock it
        old = time.time() - 3600
        os.utime(never_locked, (old, old))
        os.utime(live, (old, old))
        assert remove_abandoned(tmp_path / PARENT, grace_s=60) == 1
        assert not never_locked.exists() and live.exists()
    finally:
        holders[1].kill()
        holders[1].wait()

    with scratch_dir(tmp_path) as path:  # a new scratch dir sweeps after the dead holder
        assert path.parent == tmp_path / PARENT and path.is_dir()
        assert sorted(p.name for p in path.iterdir()) == [LOCK]
    assert not path.exists() and not live.exists()
