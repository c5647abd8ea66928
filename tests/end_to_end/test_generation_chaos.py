"""kill -9 during submission: `soundharvest generate D` SIGKILLed, process group and all, at
random moments while it creates, then run again; the sandbox counts the tasks it created per
prompt, and no key is ever created twice.

After every kill: no prompt has more creates than its takes. After a run to completion: every
row is `created` (its prompt created exactly once, its task id the ledger's) or `in doubt`
(created once or never: the kill fell between its intent and its answer); nothing is left
intended or deferred. Then `--resubmit-in-doubt` sends those, and only those, again. Figures
(kills, creates per key, in doubt) are printed: `pytest -s` shows them.
"""

import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assets.generation.ledger import Ledger
from resources.storage import Storage

from support import PROJECT
from support.generation_kit import DAY, generation_env, prompts, write_sheet

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(900)]

SEEDS = [int(s) for s in os.environ.get("CHAOS_SEEDS", "1").split(",")]
KILLS = int(os.environ.get("CHAOS_KILLS", "4"))
PROMPTS = 60
TAKES = 3  # one more row asks for three takes of one prompt
SOUNDHARVEST = str(Path(sys.executable).with_name("soundharvest"))


def generate(env: dict[str, str], *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [SOUNDHARVEST, "generate", DAY, *flags],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_while_creating(env: dict[str, str], sandbox, rng: random.Random) -> bool:
    """Start a run and SIGKILL its process group once it has created a few more tasks (or
    after a random time); True if it was still running then."""
    before = sandbox.stats()["tasks_created"]
    process = generate(env)
    if rng.random() < 0.5:
        wanted = before + rng.randint(1, 15)
        ready = lambda: sandbox.stats()["tasks_created"] >= wanted  # noqa: E731
        jitter = rng.uniform(0.0, 0.3)
    else:
        moment = time.monotonic() + rng.uniform(2.0, 8.0)
        ready = lambda: time.monotonic() >= moment  # noqa: E731
        jitter = 0.0
    give_up = time.monotonic() + 120
    while process.poll() is None and not ready() and time.monotonic() < give_up:
        time.sleep(0.01)
    time.sleep(jitter)
    running = process.poll() is None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    return running


def most_creates(sandbox) -> dict[str, int]:
    return dict(sandbox.stats()["creates_by_prompt"])


def allowed(prompt: str) -> int:
    return TAKES if prompt == "many takes" else 1


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_9_during_submission_never_creates_a_key_twice(sandbox, tmp_path, seed) -> None:
    rng = random.Random(seed)
    sandbox.set_faults(latency_s=0.15, seed=seed)
    write_sheet(
        tmp_path / "prompts",
        DAY,
        [*prompts(PROMPTS, "a sound"), {"prompt": "many takes", "duration": 2, "takes": TAKES}],
    )
    env = os.environ | generation_env(sandbox.base_url, tmp_path) | {"CAMB_MAX_CONCURRENCY": "3"}
    kills = mid_run = 0
    for _ in range(KILLS):
        mid_run += kill_while_creating(env, sandbox, rng)
        kills += 1
        over = {p: n for p, n in most_creates(sandbox).items() if n > allowed(p)}
        assert over == {}, f"created more than once after kill {kills}: {over}"

    done = generate(env)
    output = done.communicate(timeout=300)[0]
    assert done.returncode == 0, output[-3000:]
    counts = most_creates(sandbox)
    ledger = Ledger(Storage(str(tmp_path / "catalog")), DAY, "").latest()
    states = collections.Counter(ledger["state"])
    assert set(states) <= {"created", "in doubt"}, states  # nothing intended, nothing deferred
    assert len(ledger) == PROMPTS + TAKES
    created = ledger[ledger["state"] == "created"]
    doubtful = ledger[ledger["state"] == "in doubt"]
    for prompt, rows in created.groupby("prompt"):
        assert counts.get(prompt, 0) >= len(rows), prompt
    for prompt, n in counts.items():
        assert n <= allowed(prompt), (prompt, n)
    made_in_doubt = [p for p in doubtful["prompt"] if counts.get(p, 0) == 1 and allowed(p) == 1]
    per_key = collections.Counter(counts.get(p, 0) for p in ledger["prompt"] if allowed(p) == 1)
    print(
        f"\ngeneration chaos seed={seed}: {kills} kills ({mid_run} mid-run); creates per key "
        f"{dict(sorted(per_key.items()))} (prompt -> tasks the sandbox created); "
        f"{len(created)} created, {len(doubtful)} in doubt ({len(made_in_doubt)} of them "
        f"really created), {sandbox.stats()['tasks_created']} tasks created in all"
    )

    # Only when asked: the in-doubt ones are sent again, each once more; nothing else is.
    before = dict(counts)
    resubmitted = generate(env, "--resubmit-in-doubt")
    output = resubmitted.communicate(timeout=300)[0]
    assert resubmitted.returncode == 0, output[-3000:]
    after = most_creates(sandbox)
    again = {p for p in after if after[p] != before.get(p, 0)}
    assert again == set(doubtful["prompt"])
    assert all(after[p] == before.get(p, 0) + 1 for p in again)
    final = Ledger(Storage(str(tmp_path / "catalog")), DAY, "").latest()
    assert set(final["state"]) == {"created"}
