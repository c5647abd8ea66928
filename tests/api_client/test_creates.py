"""Creates (`POST /text-to-sound`) against the sandbox over real HTTP: each classified where
its outcome is known, retried only when nothing was done, never sent before its intent was
written, and never twice (the sandbox counts the tasks it created per prompt)."""

import asyncio
import socket
import time
from dataclasses import dataclass, field

import pytest

from resources.camb import CambAuthError, CambClient, CambConfigError
from resources.camb.creates import CreateOutcome, Creation
from resources.camb.first_contact import CambUnreachableError
from resources.camb.retry import RetryPolicy
from resources.camb.submissions import Submission

from support.client_helpers import FAST_RETRY, settings_for

HANG_GUARD_S = 30  # a ceiling against hangs, never a performance claim


def creations(n: int, prefix: str = "prompt", **fields) -> list[Creation]:
    return [
        Creation(f"k{i}", f"{prefix} {i}", 2.0, "sound", "soundharvest test", f"k{i}", **fields)
        for i in range(n)
    ]


@dataclass
class Ledger:
    """What the submission handed over, in order; checks intents came before their creates."""

    sandbox: object
    intended: list[list[str]] = field(default_factory=list)
    outcomes: list[CreateOutcome] = field(default_factory=list)
    created_before_intent: list[str] = field(default_factory=list)
    most_open: int = 0  # intents without an outcome yet, at most

    async def intend(self, window) -> None:
        made = self.sandbox.stats()["creates_by_prompt"]
        self.created_before_intent += [c.prompt for c in window if c.prompt in made]
        self.intended.append([c.key for c in window])
        open_now = sum(map(len, self.intended)) - len(self.outcomes)
        self.most_open = max(self.most_open, open_now)

    async def record(self, outcomes) -> None:
        self.outcomes += outcomes

    def by_key(self) -> dict[str, CreateOutcome]:
        keys = [o.key for o in self.outcomes]
        assert len(keys) == len(set(keys)), "a create was recorded twice"
        return {o.key: o for o in self.outcomes}

    def states(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for outcome in self.outcomes:
            counted[outcome.state] = counted.get(outcome.state, 0) + 1
        return counted


def submit(sandbox, items, *, ledger=None, **settings) -> tuple[Ledger, BaseException | None]:
    ledger = ledger or Ledger(sandbox)

    async def go() -> BaseException | None:
        async with CambClient(settings_for(sandbox, **settings)) as client:
            submission = Submission(
                client,
                concurrency=client.settings.max_concurrency,
                intend=ledger.intend,
                record=ledger.record,
                flush_s=0.05,
            )
            try:
                await submission.run(items)
            except Exception as exc:
                return exc
        return None

    started = time.monotonic()
    error = asyncio.run(go())
    assert time.monotonic() - started < HANG_GUARD_S
    return ledger, error


def test_every_create_is_intended_before_it_is_sent_and_made_once(sandbox) -> None:
    items = creations(40)
    ledger, error = submit(sandbox, items, max_concurrency=4)
    assert error is None
    assert ledger.created_before_intent == []
    outcomes = ledger.by_key()
    assert {o.state for o in outcomes.values()} == {"created"}
    assert len({o.task_id for o in outcomes.values()}) == 40
    assert set(sandbox.stats()["creates_by_prompt"].values()) == {1}
    assert all(len(window) <= 4 for window in ledger.intended)
    assert ledger.most_open <= 2 * 4  # a crash leaves at most two windows without an outcome
    assert sandbox.stats()["max_in_flight_api"] <= 4


def test_creates_carry_the_tags_a_person_finds_in_the_studio(sandbox) -> None:
    tagged = Creation("k", "glass breaks", None, "music", "soundharvest 2026-11-05 s.csv", "k")
    assert tagged.body() == {
        "prompt": "glass breaks",
        "audio_type": "music",
        "project_name": "soundharvest 2026-11-05 s.csv",
        "project_description": "k",
    }  # no duration: the API's default
    ledger, error = submit(sandbox, [tagged])
    assert error is None and ledger.states() == {"created": 1}


@pytest.mark.parametrize("kinds", [["429"], ["500", "502", "503"]])
def test_429_and_5xx_are_retried_and_create_once(sandbox, kinds) -> None:
    sandbox.set_faults(retry_after="0")
    sandbox.script("api", *kinds)
    ledger, error = submit(sandbox, creations(3), max_concurrency=1)
    assert error is None
    assert ledger.states() == {"created": 3}
    assert sandbox.stats()["creates_by_prompt"] == {f"prompt {i}": 1 for i in range(3)}
    assert sum(sandbox.stats()["faults_injected"].values()) == len(kinds)


def test_429_5xx_outlasting_the_retries_leave_it_not_sent_never_in_doubt(sandbox) -> None:
    sandbox.set_faults(server_error_rate=1.0)
    policy = RetryPolicy(max_attempts=2, budget_s=5, initial_backoff_s=0.01, max_backoff_s=0.02)
    ledger, error = submit(sandbox, creations(3), max_concurrency=3, api_retry=policy)
    assert error is None  # three calls: too few to call it an outage
    assert ledger.states() == {"not sent": 3}
    assert "after 2 attempts" in ledger.outcomes[0].reason
    assert sandbox.stats()["creates_by_prompt"] == {}


def test_an_answer_lost_after_the_create_is_in_doubt_and_never_retried(sandbox) -> None:
    sandbox.script("api", "lost")
    ledger, error = submit(sandbox, creations(3), max_concurrency=1)
    assert error is None
    outcomes = ledger.by_key()
    assert outcomes["k0"].state == "in doubt"
    assert "RemoteProtocolError" in outcomes["k0"].reason
    assert [outcomes[k].state for k in ("k1", "k2")] == ["created", "created"]
    assert sandbox.stats()["creates_by_prompt"] == {f"prompt {i}": 1 for i in range(3)}


def test_a_read_timeout_after_sending_is_in_doubt(sandbox) -> None:
    sandbox.set_faults(latency_s=0.6)
    ledger, error = submit(sandbox, creations(1), read_timeout_s=0.2)
    assert error is None
    [outcome] = ledger.outcomes
    assert (outcome.state, "ReadTimeout" in outcome.reason) == ("in doubt", True)
    deadline = time.monotonic() + 5
    while not sandbox.stats()["creates_by_prompt"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.stats()["creates_by_prompt"] == {"prompt 0": 1}  # it was made, once


def test_402_stops_the_submission_at_once(sandbox) -> None:
    sandbox.set_faults(credits=5)
    ledger, error = submit(sandbox, creations(30), max_concurrency=2)
    assert error is None  # out of credits is no error of the run: the rows wait
    states = ledger.states()
    assert states["created"] == 5 and states["out of credits"] >= 1
    assert set(states) <= {"created", "out of credits", "not sent"}
    # Nothing was intended beyond the window after the one that met the 402.
    assert sum(map(len, ledger.intended)) <= 5 + 2 * 2 + 2
    assert sandbox.stats()["create_requests"] <= 5 + 2  # the 402s in flight at once
    not_sent = [o for o in ledger.outcomes if o.state == "not sent"]
    assert all("out of credits" in o.reason for o in not_sent)


def test_a_refused_request_is_refused_with_the_apis_words_and_the_rest_go_on(sandbox) -> None:
    bad = Creation("bad", "a word", 2.0, "speech")  # not an audio type the API knows
    ledger, error = submit(sandbox, [bad, *creations(3)], max_concurrency=1)
    assert error is None
    outcomes = ledger.by_key()
    assert outcomes["bad"].state == "refused"
    assert "HTTP 422" in outcomes["bad"].reason and "sound" in outcomes["bad"].reason
    assert [outcomes[f"k{i}"].state for i in range(3)] == ["created"] * 3


def test_a_wrong_key_fails_at_once_unretried_with_nothing_created(sandbox) -> None:
    started = time.monotonic()
    ledger, error = submit(sandbox, creations(20), max_concurrency=4, api_key="wrong")
    assert isinstance(error, CambAuthError) and "CAMB_API_KEY" in str(error)
    assert time.monotonic() - started < 5
    assert set(ledger.states()) == {"not sent"}
    assert sum(map(len, ledger.intended)) <= 8  # stopped within the first windows
    stats = sandbox.stats()
    assert stats["api_requests"] <= 4 and stats["tasks_created"] == 0  # one try each, no retry
    assert "wrong" not in str(error)


def test_a_wrong_base_url_is_the_configuration_not_the_creates(sandbox) -> None:
    ledger, error = submit(sandbox, creations(6), base_url=sandbox.base_url + "/v1")
    assert isinstance(error, CambConfigError)
    assert set(ledger.states()) == {"not sent"}
    assert sandbox.stats()["tasks_created"] == 0


def test_an_api_never_reached_is_the_operators_mistake(sandbox) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    policy = RetryPolicy(max_attempts=5, budget_s=10, initial_backoff_s=0.01, max_backoff_s=0.02)
    ledger, error = submit(
        sandbox, creations(2), base_url=f"http://127.0.0.1:{port}/apis", api_retry=policy
    )
    assert isinstance(error, CambUnreachableError)
    assert set(ledger.states()) == {"not sent"}


def test_told_to_stop_the_creates_in_flight_stay_intended_the_rest_not_sent(sandbox) -> None:
    sandbox.set_faults(latency_s=0.5)
    ledger = Ledger(sandbox)

    async def go() -> tuple[list[CreateOutcome], Submission]:
        async with CambClient(settings_for(sandbox, max_concurrency=2)) as client:
            submission = Submission(
                client, concurrency=2, intend=ledger.intend, record=ledger.record
            )
            task = asyncio.ensure_future(submission.run(creations(10)))
            while sum(map(len, ledger.intended)) < 4:  # window 1 in flight, window 2 waiting
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return submission.leftovers(), submission

    leftovers, submission = asyncio.run(go())
    intended = [key for window in ledger.intended for key in window]
    sent = [key for key in intended if submission.attempts[key].sent]
    assert len(sent) == 2  # window 1, abandoned in flight: no outcome, so in doubt
    assert {o.key for o in leftovers} == set(intended) - set(sent)
    assert {o.state for o in leftovers} == {"not sent"}
    assert ledger.outcomes == []


@pytest.mark.parametrize("kind", ["reset", "drop"])
def test_a_connection_lost_after_sending_is_never_retried(sandbox, kind) -> None:
    """A reset or a closed connection once the request was read: the server may have acted on
    it (the sandbox's `drop` did not, its `lost` did: on the wire they look the same), so the
    create is in doubt rather than sent again."""
    sandbox.script("api", kind)
    ledger, error = submit(sandbox, creations(1), api_retry=FAST_RETRY)
    assert error is None
    assert ledger.states() == {"in doubt": 1}
    assert sandbox.stats()["api_requests"] == 1
