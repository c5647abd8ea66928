"""The results client against the sandbox over real loopback HTTP: no mocked transport."""

import asyncio
import hashlib
import logging
import time

import pytest
from dagster import build_init_resource_context

from resources.camb import (
    DAY_BUDGET_SPENT,
    CambAuthError,
    CambClient,
    ClientSettings,
    Failed,
    Fetched,
    Pending,
    Ready,
    interpret_result,
)
from resources.camb.first_contact import DownloadPolicyError
from resources.camb.redact import RedactingFilter, SecretUrl, install_http_log_redaction
from resources.camb.retry import parse_retry_after
from resources.camb_resource import CambResource
from sandbox import audio_params, delivered_format, run_state

from support.client_helpers import harvest, ready_ids, settings_for
from support.sandbox_api import SANDBOX_KEY

HTTP_LIBRARIES = ("httpx", "httpcore", "aiohttp")


def test_every_run_gets_the_outcome_the_api_implies(sandbox, tmp_path):
    run_ids = list(range(1000, 1101))  # ready, pending (3 shapes), failed, wrong type
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    assert sorted(outcomes) == run_ids
    for run_id, outcome in outcomes.items():
        state = run_state(run_id)
        if state == "ready":
            assert isinstance(outcome, Fetched), (run_id, outcome)
            assert outcome.path.parent == tmp_path
            data = outcome.path.read_bytes()
            assert outcome.size_bytes == len(data)
            assert outcome.sha256 == hashlib.sha256(data).hexdigest()
            expected = audio_params(run_id)
            assert outcome.audio.container == delivered_format(run_id)
            assert (outcome.audio.sample_rate, outcome.audio.channels) == (
                expected.sample_rate,
                expected.channels,
            )
            assert outcome.downloads == 1
        elif state == "pending":
            assert isinstance(outcome, Pending), (run_id, outcome)
        elif state == "failed":
            assert isinstance(outcome, Failed) and "generation failed" in outcome.reason
        else:  # wrong type: its batch answered 400, bisection isolated it
            assert isinstance(outcome, Failed) and "not a text-to-sound run" in outcome.reason

    stats = sandbox.stats()
    assert stats["bulk_batch_sizes"] and max(stats["bulk_batch_sizes"]) <= 5
    assert stats["downloads_with_api_key"] == 0


def test_a_bad_id_is_bisected_out_of_its_batch(sandbox, tmp_path):
    batch = [1095, 1096, 1098, 1099, 1100]  # 1099 makes the whole bulk call answer 400
    outcomes = harvest(settings_for(sandbox), batch, tmp_path)

    assert isinstance(outcomes[1099], Failed)
    assert "400" in outcomes[1099].reason
    assert all(isinstance(outcomes[i], Fetched) for i in (1095, 1096, 1098, 1100))
    stats = sandbox.stats()
    assert stats["bulk_requests"] >= 3  # the 5, then halves of it


def test_a_lone_id_goes_to_the_bulk_endpoint(sandbox, tmp_path):
    [run_id] = ready_ids(2000, 1)
    outcomes = harvest(settings_for(sandbox), [run_id], tmp_path)

    assert isinstance(outcomes[run_id], Fetched)
    stats = sandbox.stats()
    assert (stats["bulk_batch_sizes"], stats["single_requests"]) == ([1], 0)


def test_lone_ids_fall_back_to_the_single_result_endpoint_if_bulk_refuses_them(sandbox, tmp_path):
    sandbox.set_faults(bulk_min_ids=2)  # like the translation bulk endpoint: 2 to 5 ids
    first, second = ready_ids(2100, 2)
    settings = settings_for(sandbox)

    async def two_days():
        async with CambClient(settings) as client:
            return [
                [o async for o in client.harvest([run_id], tmp_path)] for run_id in (first, second)
            ]

    days = asyncio.run(two_days())

    assert [type(o) for day in days for o in day] == [Fetched, Fetched]
    stats = sandbox.stats()
    # The refusal is learnt once: the second lone id goes straight to the single endpoint.
    assert (stats["bulk_batch_sizes"], stats["single_requests"]) == ([1], 2)


def test_concurrency_stays_within_the_limit_and_is_used(sandbox, tmp_path):
    sandbox.set_faults(latency_s=0.1)
    run_ids = ready_ids(3000, 40)  # 8 bulk calls
    outcomes = harvest(settings_for(sandbox, max_concurrency=3), run_ids, tmp_path)

    assert all(isinstance(o, Fetched) for o in outcomes.values())
    assert 2 <= sandbox.stats()["max_in_flight_api"] <= 3


def test_requests_per_second_limits_api_calls(sandbox, tmp_path):
    run_ids = ready_ids(4000, 50)  # 10 bulk calls; downloads are not API calls
    started = time.monotonic()
    harvest(settings_for(sandbox, requests_per_second=5), run_ids, tmp_path)
    elapsed = time.monotonic() - started

    assert sandbox.stats()["bulk_requests"] == 10
    assert elapsed >= 0.9  # a burst of 5, then 5 more at 5 per second


@pytest.mark.parametrize("kinds", [("429", "429"), ("500", "503"), ("drop", "drop")])
def test_transient_api_failures_are_retried(sandbox, tmp_path, kinds):
    sandbox.script("api", *kinds)
    run_ids = ready_ids(1000, 5)
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    assert all(isinstance(o, Fetched) for o in outcomes.values())
    assert sum(sandbox.stats()["faults_injected"].values()) == len(kinds)


def test_too_few_calls_to_tell_an_outage_blame_the_runs_within_the_budget(sandbox, tmp_path):
    sandbox.set_faults(server_error_rate=1.0)
    run_ids = ready_ids(1000, 10)  # two batches: 18 calls with bisection, fewer than 20
    started = time.monotonic()
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    assert time.monotonic() - started < 60
    for run_id in run_ids:
        assert isinstance(outcomes[run_id], Failed)
        assert f"no answer about run {run_id} after 4 attempts (last: HTTP 50" in (
            outcomes[run_id].reason
        )
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_rejected_key_fails_at_once_without_showing_it(sandbox, tmp_path):
    secret = "sk-wrong-key-0123456789"
    with pytest.raises(CambAuthError) as raised:
        harvest(settings_for(sandbox, api_key=secret), ready_ids(1000, 10), tmp_path)

    message = str(raised.value)
    assert "401" in message and "CAMB_API_KEY" in message
    assert secret not in message
    assert sandbox.stats()["api_requests"] <= 8  # no retries: at most one call per worker


def test_an_expired_url_is_replaced_by_a_fresh_one(sandbox, tmp_path):
    [run_id] = ready_ids(5000, 1)
    sandbox.script("download", "expire")
    outcomes = harvest(settings_for(sandbox), [run_id], tmp_path)

    fetched = outcomes[run_id]
    assert isinstance(fetched, Fetched) and fetched.downloads == 2
    stats = sandbox.stats()
    assert stats["bulk_batch_sizes"] == [1, 1]  # the first URL, then a fresh one
    assert stats["downloads"] == 2  # the dead URL was not tried again


def test_urls_that_really_expire_end_as_failed_not_forever(sandbox, tmp_path):
    # Checked 10 ms after the request arrives, a URL living 1 ms is always expired (without
    # the wait, a download quicker than the sandbox's rounding of the lifetime got through).
    sandbox.set_faults(url_ttl_s=0.001, download_latency_s=0.01)
    run_ids = ready_ids(5000, 2)
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    for run_id in run_ids:
        assert isinstance(outcomes[run_id], Failed)
        assert "download failed 4 times" in outcomes[run_id].reason
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_body_is_downloaded_again(sandbox, tmp_path):
    run_ids = ready_ids(6000, 5)
    sandbox.script("download", "truncate", "drop")
    outcomes = harvest(settings_for(sandbox), run_ids, tmp_path)

    for outcome in outcomes.values():
        assert isinstance(outcome, Fetched)
        assert outcome.sha256 == hashlib.sha256(outcome.path.read_bytes()).hexdigest()
    assert len(list(tmp_path.iterdir())) == len(run_ids)  # no partial leftovers


def test_audio_whose_header_disagrees_with_its_bytes_is_downloaded_again(sandbox, tmp_path):
    [run_id] = [i for i in ready_ids(6100, 20) if delivered_format(i) == "WAV"][:1]
    sandbox.script("download", "short")  # complete over HTTP, but half the WAV is missing
    outcomes = harvest(settings_for(sandbox), [run_id], tmp_path)

    fetched = outcomes[run_id]
    assert isinstance(fetched, Fetched) and fetched.downloads == 2
    assert fetched.audio.frames == audio_params(run_id).frames
    assert sandbox.stats()["faults_injected"] == {"short": 1}


def test_plain_http_downloads_need_an_allowed_host(sandbox, tmp_path):
    run_ids = ready_ids(7000, 3)
    # Every download refused and none allowed: the allow list is missing a host (an
    # operator's mistake, tests/harvest/test_operator_errors.py), not three failed runs.
    with pytest.raises(DownloadPolicyError) as refused:
        harvest(settings_for(sandbox, download_allow_hosts=frozenset()), run_ids, tmp_path)

    message = str(refused.value)
    assert "not allowed" in message and "?" not in message
    assert sandbox.stats()["downloads"] == 0


def test_redirects_are_followed_only_within_the_host_policy(sandbox, tmp_path):
    port = sandbox.base_url.split(":")[2].split("/")[0]
    sandbox.set_faults(redirect_downloads_to=f"http://localhost:{port}")
    run_ids = ready_ids(7100, 3)

    refused = harvest(settings_for(sandbox), run_ids, tmp_path)
    assert all(isinstance(o, Failed) and "localhost" in o.reason for o in refused.values())

    allowed = frozenset({"127.0.0.1", "localhost"})
    followed = harvest(settings_for(sandbox, download_allow_hosts=allowed), run_ids, tmp_path)
    assert all(isinstance(o, Fetched) for o in followed.values())
    assert sandbox.stats()["downloads_with_api_key"] == 0


def test_downloads_over_the_size_cap_are_refused(sandbox, tmp_path):
    run_ids = ready_ids(8000, 2)
    outcomes = harvest(settings_for(sandbox, max_download_bytes=1000), run_ids, tmp_path)

    assert all(isinstance(o, Failed) and "cap" in o.reason for o in outcomes.values())
    assert list(tmp_path.iterdir()) == []


def test_no_secret_reaches_the_logs(sandbox, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox.script("download", "expire", "truncate")
    sandbox.script("api", "429")
    outcomes = harvest(settings_for(sandbox), list(range(1000, 1030)), tmp_path)

    assert any(isinstance(o, Fetched) for o in outcomes.values())
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/files/" in logged  # the downloads were logged...
    assert "X-Amz-Signature" not in logged  # ...without their credentials
    assert SANDBOX_KEY not in logged
    reasons = " ".join(getattr(o, "reason", "") for o in outcomes.values())
    assert "X-Amz" not in reasons


def test_every_logger_of_the_http_libraries_redacts():
    install_http_log_redaction()
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in HTTP_LIBRARIES]
    assert "httpcore.http11" in names
    for name in names:  # a new httpcore logger would log presigned redirects unredacted
        assert any(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters), name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"output_url": "https://s/a.wav?X-Amz-Signature=x"}, Ready),
        ({"file_url": "https://s/a.wav"}, Ready),
        ("https://s/a.wav", Ready),
        (None, Pending),
        ({"status": "PENDING", "message": "still going"}, Pending),
        ({"status": "SUCCESS"}, Pending),  # success without a URL: ask again later
        ({"status": "ERROR", "exception_reason": "boom"}, Failed),
        ({"status": "failed"}, Failed),
        ({"exception_reason": "boom"}, Failed),
        ([1, 2], Failed),
        ("not a url", Failed),
    ],
)
def test_interpret_result_accepts_every_known_shape(value, expected):
    result = interpret_result(7, value)
    assert isinstance(result, expected)
    assert result.run_id == 7


def test_failure_reasons_and_urls_never_show_a_query():
    failed = interpret_result(7, {"status": "ERROR", "message": "see https://x/y?token=abc"})
    assert isinstance(failed, Failed) and "token" not in failed.reason
    ready = interpret_result(7, {"output_url": "https://s/a.wav?X-Amz-Signature=abc"})
    assert "abc" not in repr(ready) and "abc" not in str(ready.url)
    assert isinstance(ready.url, SecretUrl) and ready.url.value.endswith("abc")


def test_retry_after_parses_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0.0  # in the past
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="CAMB_API_KEY"):
        ClientSettings(api_key="")
    with pytest.raises(ValueError, match="max_concurrency"):
        ClientSettings(api_key="k", max_concurrency=0)
    with pytest.raises(ValueError, match="http"):
        ClientSettings(api_key="k", base_url="ftp://example.com")


def test_the_resource_reads_its_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("CAMB_API_BASE_URL", "http://127.0.0.1:9/apis")
    monkeypatch.setenv("CAMB_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("CAMB_REQUESTS_PER_SECOND", "2.5")
    monkeypatch.setenv("CAMB_DOWNLOAD_ALLOW_HOSTS", "127.0.0.1, localhost")
    settings = CambResource(api_key="sk-unique-secret-42").settings()

    assert settings.base_url == "http://127.0.0.1:9/apis"
    assert (settings.max_concurrency, settings.requests_per_second) == (3, 2.5)
    assert settings.download_allow_hosts == {"127.0.0.1", "localhost"}
    assert CambResource(api_key="k", max_concurrency=5).settings().max_concurrency == 5
    assert "sk-unique-secret-42" not in repr(settings)

    monkeypatch.setenv("CAMB_MAX_CONCURRENCY", "many")
    with pytest.raises(ValueError, match="CAMB_MAX_CONCURRENCY='many'"):
        CambResource(api_key="k").settings()


def test_the_resource_reads_retry_policy_and_timeouts_from_the_environment(monkeypatch):
    defaults = CambResource(api_key="k").settings()
    monkeypatch.setenv("CAMB_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("CAMB_RETRY_BUDGET_S", "1.5")
    monkeypatch.setenv("CAMB_MAX_RETRY_AFTER_S", "0.5")
    monkeypatch.setenv("CAMB_CONNECT_TIMEOUT_S", "0.3")
    monkeypatch.setenv("CAMB_READ_TIMEOUT_S", "0.4")
    settings = CambResource(api_key="k").settings()

    for policy, default in ((settings.api_retry, defaults.api_retry),
                            (settings.download_retry, defaults.download_retry)):  # fmt: skip
        assert (policy.max_attempts, policy.budget_s, policy.max_retry_after_s) == (2, 1.5, 0.5)
        assert policy.initial_backoff_s == default.initial_backoff_s
    assert (settings.connect_timeout_s, settings.read_timeout_s) == (0.3, 0.4)
    monkeypatch.setenv("CAMB_RETRY_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="at least 1 attempt"):
        CambResource(api_key="k").settings()
    monkeypatch.setenv("CAMB_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("CAMB_READ_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="CAMB_READ_TIMEOUT_S='soon'"):
        CambResource(api_key="k").settings()


def test_the_resource_harvests_within_its_lifecycle(sandbox, tmp_path):
    resource = CambResource(
        api_key=SANDBOX_KEY, base_url=sandbox.base_url, download_allow_hosts="127.0.0.1"
    )
    run_ids = ready_ids(9000, 6)
    with resource.yield_for_execution(build_init_resource_context()) as camb:
        outcomes = list(camb.harvest(run_ids, tmp_path))

    assert sorted(o.run_id for o in outcomes) == run_ids
    assert all(isinstance(o, Fetched) for o in outcomes)
    with pytest.raises(RuntimeError, match="inside a Dagster execution"):
        next(resource.harvest(run_ids, tmp_path))


def test_the_resource_passes_the_day_deadline_on(sandbox, tmp_path):
    resource = CambResource(
        api_key=SANDBOX_KEY, base_url=sandbox.base_url, download_allow_hosts="127.0.0.1"
    )
    run_ids = ready_ids(9100, 6)
    with resource.yield_for_execution(build_init_resource_context()) as camb:
        outcomes = list(camb.harvest(run_ids, tmp_path, deadline=time.monotonic()))

    assert outcomes == [Pending(i, DAY_BUDGET_SPENT) for i in run_ids]
    assert sandbox.stats()["api_requests"] == 0
