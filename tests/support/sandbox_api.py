"""The sandbox API on loopback: one server per test session, reset between tests, and its key."""

import dataclasses

import pytest

from sandbox import Faults, SandboxServer

SANDBOX_KEY = "sandbox-test-key-5f3a9c"


@pytest.fixture(scope="session")
def sandbox_server():
    with SandboxServer(host="127.0.0.1", port=0, api_key=SANDBOX_KEY) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server):
    """The session's sandbox with no faults, no scripted faults and zeroed stats, once the
    requests an earlier test left running (a create its client stopped waiting for) are
    answered, so that they are not counted in this test's stats."""
    sandbox_server.set_faults(**dataclasses.asdict(Faults()))
    sandbox_server.wait_idle()
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.set_faults(**dataclasses.asdict(Faults()))
    sandbox_server.reset()
