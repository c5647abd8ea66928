"""The sandbox as a generator, over real loopback HTTP: creates that stay PENDING for their
generation time, credits that run out (402, or tasks ending PAYMENT_REQUIRED), a create served
and then lost, 429/5xx that create nothing, the per-prompt counters, and the vendor SDK's
`create_text_to_audio` driving all of it."""

import time
from collections.abc import Iterator

import httpx
import pytest

from sandbox import Faults, SandboxServer, render_audio, run_state

from support.sandbox_api import SANDBOX_KEY


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    headers = {"x-api-key": SANDBOX_KEY}
    with httpx.Client(base_url=sandbox.base_url + "/", headers=headers, timeout=5) as client:
        yield client


def create(api: httpx.Client, prompt: str, **fields: object) -> httpx.Response:
    return api.post("text-to-sound", json={"prompt": prompt, **fields})


def status(api: httpx.Client, task_id: str) -> dict:
    answer = api.get(f"text-to-sound/{task_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_task_stays_pending_for_its_generation_time_then_serves_its_audio(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    sandbox.set_faults(generation_s=0.4)
    task_id = create(api, "rain on a tin roof", duration=2.0, audio_type="sound").json()["task_id"]
    sandbox.set_faults(generation_s=0.0)  # read at creation: this task keeps its 0.4 s
    assert status(api, task_id) == {"status": "PENDING", "run_id": None}
    time.sleep(0.45)
    done = status(api, task_id)
    assert done["status"] == "SUCCESS" and run_state(done["run_id"]) == "ready"
    # Its run is served like any other ready run: results, then the presigned download.
    answer = api.post("text-to-sound-results", json={"run_ids": [done["run_id"]]}).json()
    url = answer[str(done["run_id"])]["output_url"]
    assert httpx.get(url).content == render_audio(done["run_id"])
    quick = create(api, "thunder").json()["task_id"]
    assert status(api, quick)["status"] == "SUCCESS"  # generation_s 0: done at once


def test_creates_are_counted_per_prompt(sandbox: SandboxServer, api: httpx.Client) -> None:
    for prompt in ("rain", "rain", "wind"):
        assert create(api, prompt).status_code == 200
    assert create(api, 3).status_code == 422  # never reaches the counters of tasks
    stats = sandbox.stats()
    assert stats["creates_by_prompt"] == {"rain": 2, "wind": 1}
    assert (stats["create_requests"], stats["tasks_created"]) == (3, 3)


def test_credits_run_out_as_402_and_count_from_when_they_are_set(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    create(api, "before the credits were set")
    sandbox.set_faults(credits=2)
    assert [create(api, f"p{n}").status_code for n in range(3)] == [200, 200, 402]
    assert create(api, "again").json() == {"detail": "Insufficient credits"}
    stats = sandbox.stats()
    assert (stats["create_requests"], stats["tasks_created"]) == (5, 3)
    assert "again" not in stats["creates_by_prompt"]
    sandbox.set_faults(credits=1)  # topped up
    assert create(api, "after top-up").status_code == 200


def test_credits_can_run_out_as_tasks_ending_payment_required(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    sandbox.set_faults(credits=1, out_of_credits="task", generation_s=0.0)
    paid, unpaid = (create(api, p).json()["task_id"] for p in ("paid", "unpaid"))
    assert status(api, paid)["status"] == "SUCCESS"
    assert status(api, unpaid) == {
        "status": "PAYMENT_REQUIRED",
        "exception_reason": "PAYMENT_REQUIRED",
        "message": "Insufficient credits",
    }


def test_a_lost_create_made_its_task_while_429_and_5xx_made_none(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    sandbox.script("api", "429", "500", "502", "503", "drop", "lost")
    assert [create(api, "refused").status_code for _ in range(4)] == [429, 500, 502, 503]
    with pytest.raises(httpx.RemoteProtocolError):  # dropped before it was served
        create(api, "refused")
    with pytest.raises(httpx.RemoteProtocolError):  # served, then dropped: in doubt
        create(api, "lost")
    assert create(api, "answered").status_code == 200
    stats = sandbox.stats()
    assert stats["creates_by_prompt"] == {"lost": 1, "answered": 1}
    kinds = ("429", "500", "502", "503", "drop", "lost")
    assert stats["faults_injected"] == dict.fromkeys(kinds, 1)


def test_a_slow_create_answers_after_the_client_gave_up_yet_creates_its_task(
    sandbox: SandboxServer,
) -> None:
    sandbox.set_faults(latency_s=0.6)
    headers = {"x-api-key": SANDBOX_KEY}
    timeout = httpx.Timeout(5, read=0.2)
    with httpx.Client(headers=headers, timeout=timeout) as client, pytest.raises(httpx.ReadTimeout):
        client.post(f"{sandbox.base_url}/text-to-sound", json={"prompt": "slow"})
    deadline = time.monotonic() + 5
    while not sandbox.stats()["creates_by_prompt"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.stats()["creates_by_prompt"] == {"slow": 1}


def test_random_lost_answers_follow_their_rate(sandbox: SandboxServer, api: httpx.Client) -> None:
    sandbox.set_faults(lost_rate=0.5, seed=5)
    lost = 0
    for n in range(40):
        try:
            create(api, f"p{n}")
        except httpx.RemoteProtocolError:
            lost += 1
    assert 10 <= lost <= 30
    assert sandbox.stats()["tasks_created"] == 40  # every one of them created its task


@pytest.mark.parametrize(
    "changes",
    [{"credits": -1}, {"credits": 1.5}, {"out_of_credits": "soon"}, {"generation_s": -1},
     {"lost_rate": 0.6, "drop_rate": 0.6}],
)  # fmt: skip
def test_invalid_generation_settings_are_refused(sandbox: SandboxServer, changes: dict) -> None:
    with pytest.raises(ValueError):
        sandbox.set_faults(**changes)
    assert sandbox.faults == Faults()


def test_generation_settings_arrive_through_the_control_plane(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    changes = {"credits": 1, "generation_s": 0.0}
    answer = httpx.post(f"{sandbox.origin}/_sandbox/faults", json=changes, timeout=5)
    assert answer.status_code == 200 and answer.json()["credits"] == 1
    assert [create(api, f"p{n}").status_code for n in range(2)] == [200, 402]
    stats = httpx.get(f"{sandbox.origin}/_sandbox/stats", timeout=5).json()
    assert stats["creates_by_prompt"] == {"p0": 1}


def test_the_vendor_sdk_creates_polls_and_fetches_against_the_sandbox(
    sandbox: SandboxServer,
) -> None:
    from camb.client import CambAI
    from camb.core.api_error import ApiError

    sandbox.set_faults(generation_s=0.3, credits=1)
    tta = CambAI(api_key=SANDBOX_KEY, base_url=sandbox.base_url, timeout=5).text_to_audio
    task = tta.create_text_to_audio(
        prompt="a door creaks open",
        duration=3.0,
        audio_type="sound",
        project_name="soundharvest 2026-11-05 sheet.csv",
        project_description="key 1a2b3c",
    )
    polls = []
    while not polls or polls[-1].status == "PENDING":
        polls.append(tta.get_text_to_audio_status(task.task_id))
        assert len(polls) < 50
        time.sleep(0.05)
    assert polls[0].status == "PENDING" and polls[-1].status == "SUCCESS"
    run_id = polls[-1].run_id
    assert b"".join(tta.get_text_to_audio_result(run_id)) == render_audio(run_id)
    with pytest.raises(ApiError) as refused:  # the credit is spent
        tta.create_text_to_audio(prompt="one too many")
    assert refused.value.status_code == 402
    assert sandbox.stats()["creates_by_prompt"] == {"a door creaks open": 1}
