"""The client's rows of the fault matrix (docs/reliability.md), each against the sandbox.

One run's trouble ends as that run's outcome and the day goes on; only an outage, a refused
key or a wrong configuration raises. Nothing is left in the workdir but `Fetched` files.
Time bounds here are generous ceilings against hangs, never performance claims.
"""

import hashlib
import logging
import re
import threading
import time

import pytest

from resources.camb import (
    DAY_BUDGET_SPENT,
    CambAuthError,
    CambConfigError,
    CambOutageError,
    Failed,
    Fetched,
    Pending,
)
from resources.camb.retry import RetryPolicy
from sandbox import Decoy, SandboxServer, delivered_format, full_backlog, render_audio

from support.client_helpers import harvest, leftovers, ready_ids, settings_for

HANG_GUARD_S = 60  # generous: only says "bounded", never "fast"


def wav_ids(start: int, count: int) -> list[int]:
    return [i for i in ready_ids(start, 4 * count) if delivered_format(i) == "WAV"][:count]


# -- throttling and bursts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "at_least_s"),
    [("0", 0.0), ("2", 2.0), ("date:3", 2.0), ("3600", 0.5)],  # an HTTP date has whole seconds
    ids=["zero", "seconds", "http-date", "absurd"],
)
def test_429_waits_at_least_retry_after_and_at_most_the_cap(
    sandbox, tmp_path, retry_after, at_least_s
):
    sandbox.set_faults(retry_after=retry_after)
    sandbox.script("api", "429")
    cap = 0.5 if retry_after == "3600" else 5.0
    policy = RetryPolicy(max_attempts=3, budget_s=30, max_retry_after_s=cap)
    started = time.monotonic()
    outcomes = harvest(settings_for(sandbox, api_retry=policy), ready_ids(10_000, 5), tmp_path)

    elapsed = time.monotonic() - started
    assert all(isinstance(o, Fetched) for o in outcomes.values())
    assert sandbox.stats()["faults_injected"] == {"429": 1}
    assert at_least_s <= elapsed < HANG_GUARD_S  # the absurd one waited the 0.5 s cap


def test_a_5xx_burst_shorter_than_the_retry_budget_is_absorbed(sandbox, tmp_path):
    sandbox.set_faults(server_error_rate=1.0)
    calm = threading.Timer(1.0, lambda: sandbox.set_faults(server_error_rate=0.0))
    calm.start()
    patient = RetryPolicy(max_attempts=100, budget_s=30, initial_backoff_s=0.05, max_backoff_s=0.2)
    try:
        outcomes = harvest(
            settings_for(sandbox, api_retry=patient), ready_ids(10_100, 15), tmp_path
        )
    finally:
        calm.cancel()

    assert all(isinstance(o, Fetched) for o in outcomes.values())
    assert sum(sandbox.stats()["faults_injected"].values()) > 3  # the burst was real


def test_5xx_longer_than_the_retry_budget_is_an_outage(sandbox, tmp_path):
    sandbox.set_faults(server_error_rate=1.0)
    started = time.monotonic()
    with pytest.raises(CambOutageError) as raised:
        harvest(settings_for(sandbox), ready_ids(10_200, 40), tmp_path)

    assert time.monotonic() - started < HANG_GUARD_S
    message = str(raised.value)
    assert message.startswith(f"an outage of the API at {sandbox.base_url}")
    assert "of its last 20 calls" in message
    assert re.search(r"HTTP 50[023]", message)
    assert list(tmp_path.iterdir()) == []


def test_a_storage_host_failing_most_downloads_is_an_outage(sandbox, tmp_path):
    sandbox.script("download", *["drop"] * 400)  # downloads only: the API answers normally
    settings = settings_for(sandbox, url_refreshes=0)
    with pytest.raises(CambOutageError) as raised:
        harvest(settings, ready_ids(10_250, 30), tmp_path)

    assert "storage host" in str(raised.value) and "of the last 20 runs" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


# -- one run's trouble stays that run's -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"), [(500, "Audio file could not be fetched"), (404, "HTTP 404")]
)
def test_a_run_whose_result_call_fails_forever_fails_alone(sandbox, tmp_path, status, reason):
    # The run as it was met: its downloads expire, so a fresh URL is asked for alone; the API
    # refuses lone bulk ids here, so that question reaches its broken single-result call.
    run_ids = ready_ids(10_300, 12)
    broken = run_ids[5]
    sandbox.set_faults(bulk_min_ids=2, expired_runs=(broken,), result_errors={broken: status})
    started = time.monotonic()
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    assert time.monotonic() - started < HANG_GUARD_S
    assert isinstance(outcomes[broken], Failed)
    assert reason in outcomes[broken].reason and str(broken) in outcomes[broken].reason
    assert all(isinstance(outcomes[i], Fetched) for i in run_ids if i != broken)
    assert sandbox.stats()["single_requests"] >= 1  # the broken call was really reached
    assert leftovers(tmp_path, outcomes) == set()


def test_a_lone_rerun_of_that_run_never_reaches_its_broken_endpoint(sandbox, tmp_path):
    [run_id] = ready_ids(10_400, 1)
    sandbox.set_faults(result_errors={run_id: 500})  # bulk calls about it work
    outcomes = harvest(settings_for(sandbox), [run_id], tmp_path)

    assert isinstance(outcomes[run_id], Fetched)
    assert sandbox.stats()["single_requests"] == 0


def test_a_run_whose_batches_fail_forever_is_bisected_out(sandbox, tmp_path):
    run_ids = ready_ids(10_500, 10)
    broken = run_ids[3]
    sandbox.set_faults(bulk_errors={broken: 503})
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    assert isinstance(outcomes[broken], Failed)
    assert f"no answer about run {broken} after 4 attempts" in outcomes[broken].reason
    assert "HTTP 503: Audio file could not be fetched" in outcomes[broken].reason
    assert all(isinstance(outcomes[i], Fetched) for i in run_ids if i != broken)


def test_urls_that_always_expire_fail_their_run_only(sandbox, tmp_path):
    run_ids = ready_ids(10_600, 6)
    expiring = run_ids[0]
    sandbox.set_faults(expired_runs=(expiring,))
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    assert isinstance(outcomes[expiring], Failed)
    assert "download failed 4 times; last: storage answered HTTP 403" in outcomes[expiring].reason
    assert all(isinstance(outcomes[i], Fetched) for i in run_ids[1:])
    # Each refresh asked the API for a fresh URL and tried it once: no dead URL twice.
    assert sandbox.stats()["downloads"] == 4 + len(run_ids) - 1


# -- connections and bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "kind"),
    [("api", "reset"), ("api", "drop"), ("api", "hang"), ("download", "reset"),
     ("download", "drop"), ("download", "hang"), ("download", "stall"),
     ("download", "truncate")],
)  # fmt: skip
def test_broken_connections_are_retried_and_leave_no_temporary(sandbox, tmp_path, target, kind):
    sandbox.script(target, kind)
    run_ids = ready_ids(11_000, 5)
    started = time.monotonic()
    outcomes = harvest(settings_for(sandbox, read_timeout_s=0.5), run_ids, tmp_path)

    assert time.monotonic() - started < HANG_GUARD_S
    assert all(isinstance(o, Fetched) for o in outcomes.values())
    assert sandbox.stats()["faults_injected"] == {kind: 1}
    assert leftovers(tmp_path, outcomes) == set()


def test_a_connect_timeout_is_retried_then_blamed_on_the_run(sandbox, tmp_path):
    [run_id] = ready_ids(11_100, 1)
    with full_backlog() as port:
        sandbox.set_faults(download_base_url=f"http://127.0.0.1:{port}")
        started = time.monotonic()
        outcomes = harvest(settings_for(sandbox, connect_timeout_s=0.2), [run_id], tmp_path)

    assert time.monotonic() - started < HANG_GUARD_S
    assert isinstance(outcomes[run_id], Failed)
    assert "download failed 4 times; last: timeout (ConnectTimeout)" in outcomes[run_id].reason
    assert list(tmp_path.iterdir()) == []


def test_an_api_that_cannot_be_connected_to_blames_the_run_of_a_small_day(sandbox, tmp_path):
    [run_id] = ready_ids(11_200, 1)
    with full_backlog() as port:
        base = f"http://127.0.0.1:{port}/apis"
        settings = settings_for(sandbox, base_url=base, connect_timeout_s=0.2)
        outcomes = harvest(settings, [run_id], tmp_path)

    assert isinstance(outcomes[run_id], Failed)
    assert "after 4 attempts (last: timeout (ConnectTimeout))" in outcomes[run_id].reason


def test_a_storage_host_that_accepts_and_never_answers_is_bounded(sandbox, tmp_path):
    [run_id] = ready_ids(11_300, 1)
    with Decoy("127.0.0.3") as silent:
        sandbox.set_faults(download_base_url=silent.origin())
        settings = settings_for(
            sandbox, download_allow_hosts=frozenset({"127.0.0.1", "127.0.0.3"}), read_timeout_s=0.2
        )
        started = time.monotonic()
        outcomes = harvest(settings, [run_id], tmp_path)
        accepted = silent.accepted

    assert time.monotonic() - started < HANG_GUARD_S
    assert isinstance(outcomes[run_id], Failed)
    assert "timeout (ReadTimeout)" in outcomes[run_id].reason
    assert accepted == 16  # 4 attempts for each of 4 URLs
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kind", "why"), [("corrupt", "not a recognised audio container"),
                                          ("short", "")])  # fmt: skip
def test_bytes_that_never_verify_fail_the_run_after_its_budget(sandbox, tmp_path, kind, why):
    [run_id] = wav_ids(11_400, 1)
    sandbox.script("download", *[kind] * 4)  # every attempt the run gets
    outcomes = harvest(settings_for(sandbox), [run_id], tmp_path)

    outcome = outcomes[run_id]
    assert isinstance(outcome, Failed) and "download failed 4 times" in outcome.reason
    assert why in outcome.reason
    assert sandbox.stats()["faults_injected"] == {kind: 4}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["gzip_bomb", "endless"])
def test_a_body_past_the_byte_cap_stops_there(sandbox, tmp_path, kind):
    [run_id] = ready_ids(11_500, 1)
    sandbox.script("download", kind)
    cap = 4 << 20  # every sandbox file is smaller; the bomb decodes to 64 MiB
    started = time.monotonic()
    outcomes = harvest(settings_for(sandbox, max_download_bytes=cap), [run_id], tmp_path)

    assert time.monotonic() - started < HANG_GUARD_S
    outcome = outcomes[run_id]
    assert isinstance(outcome, Failed) and f"more than the cap of {cap} bytes" in outcome.reason
    assert list(tmp_path.iterdir()) == []


def test_a_gzip_encoded_delivery_is_stored_as_the_bytes_it_decodes_to(sandbox, tmp_path):
    run_ids = ready_ids(11_600, 3)
    sandbox.script("download", "gzip", "gzip", "gzip")
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    for run_id, outcome in outcomes.items():
        assert isinstance(outcome, Fetched) and outcome.downloads == 1
        assert outcome.sha256 == hashlib.sha256(render_audio(run_id)).hexdigest()
    assert sandbox.stats()["faults_injected"] == {"gzip": 3}


# -- bulk answers ---------------------------------------------------------------------------


def test_ids_left_out_are_pending_and_strangers_are_ignored(sandbox, tmp_path):
    run_ids = ready_ids(12_000, 10)
    left_out = run_ids[1:3]
    # Strangers: a run of another batch of the same day, and one nobody asked about.
    strangers = (run_ids[7], ready_ids(12_500, 1)[0])
    sandbox.set_faults(bulk_omit=tuple(left_out), bulk_strangers=strangers)
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)  # one outcome per asked id

    for run_id in left_out:
        assert isinstance(outcomes[run_id], Pending)
        assert outcomes[run_id].reason == "left out of the API's answer"
    assert all(isinstance(outcomes[i], Fetched) for i in run_ids if i not in left_out)
    assert sandbox.stats()["downloads"] == len(run_ids) - len(left_out)  # no stranger fetched


# -- run-wide trouble -----------------------------------------------------------------------


def test_a_mistyped_base_url_is_a_configuration_error(sandbox, tmp_path):
    base = sandbox.base_url + "/apis"  # one /apis too many: every call answers 404
    started = time.monotonic()
    with pytest.raises(CambConfigError) as raised:
        harvest(settings_for(sandbox, base_url=base), ready_ids(12_100, 10), tmp_path)

    assert time.monotonic() - started < HANG_GUARD_S
    message = str(raised.value)
    assert base in message and "HTTP 404: Not Found" in message
    assert "CAMB_API_BASE_URL" in message
    assert sandbox.stats()["downloads"] == 0


def test_identical_refusals_by_an_endpoint_that_exists_belong_to_the_runs(sandbox, tmp_path):
    first, second = ready_ids(12_200, 2)
    # Both runs refused exactly like a missing route would be, and nothing else asked for.
    sandbox.set_faults(bulk_errors={first: 404, second: 404})
    outcomes = harvest(settings_for(sandbox), [first, second], tmp_path)

    for run_id in (first, second):
        assert isinstance(outcomes[run_id], Failed)
        assert outcomes[run_id].reason == f"API refused run {run_id}: HTTP 404: Not Found"


def test_a_rejected_key_stops_the_day_at_once(sandbox, tmp_path):
    secret = "sk-sentinel-rejected-7d1c"
    with pytest.raises(CambAuthError) as raised:
        harvest(settings_for(sandbox, api_key=secret), ready_ids(12_300, 20), tmp_path)

    assert "401" in str(raised.value) and secret not in str(raised.value)
    assert sandbox.stats()["api_requests"] <= 8  # never retried: one call per worker at most


# -- the day budget -------------------------------------------------------------------------


def test_a_spent_day_budget_starts_nothing(sandbox, tmp_path):
    run_ids = ready_ids(13_000, 7)
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path, deadline=time.monotonic() - 1)

    assert all(o == Pending(i, DAY_BUDGET_SPENT) for i, o in outcomes.items())
    assert sandbox.stats()["api_requests"] == 0


def test_the_day_budget_cuts_a_slow_day_short_and_cleans_up(sandbox, tmp_path):
    sandbox.set_faults(latency_s=0.3)
    run_ids = ready_ids(13_100, 60)
    sandbox.script("download", "stall")  # one download is in flight when time runs out
    settings = settings_for(sandbox, max_concurrency=2, read_timeout_s=30)
    started = time.monotonic()
    outcomes = harvest(settings, run_ids, tmp_path, deadline=started + 1.5)

    assert time.monotonic() - started < HANG_GUARD_S
    cut = [i for i, o in outcomes.items() if isinstance(o, Pending)]
    assert cut and all(outcomes[i].reason == DAY_BUDGET_SPENT for i in cut)
    assert any(isinstance(o, Fetched) for o in outcomes.values())
    assert leftovers(tmp_path, outcomes) == set()  # the stalled download's temporary too
    calls = sandbox.stats()["api_requests"]
    time.sleep(0.5)
    assert sandbox.stats()["api_requests"] == calls  # nothing goes on behind our back


def test_a_retry_after_wait_ends_at_the_day_deadline(sandbox, tmp_path):
    sandbox.set_faults(retry_after="3600", throttle_rate=1.0)
    policy = RetryPolicy(max_attempts=5, budget_s=7200, max_retry_after_s=3600)
    started = time.monotonic()
    outcomes = harvest(
        settings_for(sandbox, api_retry=policy), ready_ids(13_200, 5), tmp_path,
        deadline=started + 1.0,
    )  # fmt: skip

    assert time.monotonic() - started < HANG_GUARD_S  # not the hour the server asked for
    assert all(o.reason == DAY_BUDGET_SPENT for o in outcomes.values())
    assert sandbox.stats()["api_requests"] == 1


# -- secrets --------------------------------------------------------------------------------


SENTINEL_KEY = "sk-sentinel-0f9e8d7c6b5a"


def test_no_key_or_signature_in_errors_logs_or_reasons(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    texts: list[str] = []
    with SandboxServer(api_key=SENTINEL_KEY, access_log=True) as sb:
        settings = settings_for(sb, api_key=SENTINEL_KEY, read_timeout_s=0.5)
        sb.set_faults(retry_after="0", expired_runs=(ready_ids(14_000, 1)[0],))
        sb.script("api", "429", "500", "reset")
        sb.script("download", "expire", "truncate", "stall", "corrupt")
        sb.set_faults(redirect_downloads_to=f"http://localhost:{sb.port}")
        allowed = frozenset({"127.0.0.1", "localhost"})
        outcomes = harvest(
            settings_for(
                sb, api_key=SENTINEL_KEY, read_timeout_s=0.5, download_allow_hosts=allowed
            ),
            ready_ids(14_000, 12),
            tmp_path,
        )
        texts += [getattr(o, "reason", "") for o in outcomes.values()]
        for broken, error in (
            (
                settings_for(sb, api_key=SENTINEL_KEY, base_url=sb.base_url + "/apis"),
                CambConfigError,
            ),
            (settings_for(sb, api_key=SENTINEL_KEY + "-not-it"), CambAuthError),
        ):
            with pytest.raises(error) as raised:
                harvest(broken, ready_ids(14_100, 10), tmp_path)
            texts.append(str(raised.value))
        sb.set_faults(server_error_rate=1.0)
        with pytest.raises(CambOutageError) as raised:
            harvest(settings, ready_ids(14_200, 40), tmp_path)
        texts.append(str(raised.value))

    served = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    signatures = set(re.findall(r"X-Amz-Signature=([0-9a-f]{64})", "\n".join(served)))
    assert signatures, "the sandbox's access log shows the presigned URLs it served"
    client_side = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]
    assert any("/files/" in line for line in client_side)  # httpx did log the downloads
    everything = "\n".join(texts + client_side)
    for secret in (SENTINEL_KEY, "X-Amz-Signature", *signatures):
        assert secret not in everything
