"""The per-day lease on local disk and on S3 (moto): take, hold, renew, expire, release."""

import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from assets.harvest.lease import DayLease, LeaseHeld, LeaseLost, holding
from resources.storage import Storage

DAY = "2026-11-01"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "catalog"))
    bucket = request.getfixturevalue("s3_bucket")
    return Storage(f"{bucket.url}/catalog", bucket.storage_options)


def leases(storage: Storage, clock: Clock, *runs: str) -> list[DayLease]:
    return [DayLease(storage, DAY, run, ttl_s=10, clock=clock) for run in runs]


def test_one_run_holds_the_day_until_it_releases(storage):
    clock = Clock()
    first, second = leases(storage, clock, "run-a", "run-b")

    assert first.try_acquire() is None
    holder = second.try_acquire()
    assert (holder.run_id, holder.host, holder.pid) == ("run-a", socket.gethostname(), os.getpid())
    assert first.try_acquire() is None  # the holder itself may take it again (a retried step)

    first.release()
    assert second.try_acquire() is None
    assert first.try_acquire().run_id == "run-b"


def test_a_lease_renewed_stays_and_an_expired_one_is_taken_over(storage):
    clock = Clock()
    first, second = leases(storage, clock, "run-a", "run-b")
    assert first.try_acquire() is None

    clock.now += 8
    first.renew()  # now held until +18
    clock.now += 8
    assert second.try_acquire().run_id == "run-a"

    clock.now += 11  # the holder crashed: no renewal for longer than the TTL
    assert second.try_acquire() is None
    with pytest.raises(LeaseLost, match="run-b"):
        first.renew()
    first.release()  # not its lease any more: left alone
    assert first.try_acquire().run_id == "run-b"


def test_a_second_run_waits_bounded_then_stops_naming_the_holder(storage):
    first, second = leases(storage, Clock(), "run-a", "run-b")
    assert first.try_acquire() is None
    told = []

    with pytest.raises(LeaseHeld) as stopped, holding(second, 0.3, 0.05, told.append):
        pytest.fail("the block must not run while another run holds the day")

    message = str(stopped.value)
    assert message.startswith(f"{DAY} is being harvested by run run-a on {socket.gethostname()}")
    assert f"(pid {os.getpid()})" in message and "SOUNDHARVEST_LEASE_WAIT_S" in message
    assert [holder.run_id for holder in told] == ["run-a"]
    first.release()
    with holding(second, 0.3, 0.05):
        assert first.try_acquire().run_id == "run-b"
    assert first.try_acquire() is None  # released at the end of the block


def test_a_holder_killed_on_this_host_frees_the_day_at_once(storage):
    clock = Clock()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed, second = leases(storage, clock, "run-a", "run-b")
    crashed.me = replace(crashed.me, pid=dead.pid)  # as if taken by that process, now gone
    assert crashed.try_acquire() is None
    assert second.try_acquire() is None  # well before the TTL
