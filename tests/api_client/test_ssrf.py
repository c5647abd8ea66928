"""Downloads connect only where the policy allows (OWASP API7/API10), proven on loopback.

A decoy server that counts accepted connections stands where an attacker would point a
presigned URL or a redirect: on 127.0.0.2, and on another port of 127.0.0.1 reached by the
name `localhost`. The sandbox hands it out, over http and https, directly and through a
redirect; the decoy must see zero connections. No test traffic leaves loopback: the unit
tests of the resolver give public-looking answers to a connector whose sockets refuse to
connect.
"""

import asyncio
import errno
import ipaddress
import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver

from resources.camb import Failed, Fetched
from resources.camb.first_contact import DownloadPolicyError
from resources.camb.netguard import DownloadPolicy, GuardedResolver, UnsafeDownload, unsafe_kind
from sandbox import Decoy

from support.client_helpers import harvest, ready_ids, settings_for

SANDBOX_HOST = frozenset({"127.0.0.1"})  # the sandbox itself stays allowed, by name


@pytest.fixture(params=["127.0.0.2", "localhost"])
def decoy(request):
    """A decoy on 127.0.0.2, or on 127.0.0.1 (another port) named `localhost` in its URLs."""
    bind = "127.0.0.2" if request.param == "127.0.0.2" else "127.0.0.1"
    with Decoy(bind) as server:
        server.url_host = request.param
        yield server


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("route", ["direct", "redirect"])
def test_the_decoy_never_sees_a_connection(sandbox, tmp_path, decoy, scheme, route):
    origin = decoy.origin(scheme, decoy.url_host)
    fault = "download_base_url" if route == "direct" else "redirect_downloads_to"
    sandbox.set_faults(**{fault: origin})
    run_ids = ready_ids(20_000, 3)
    settings = settings_for(sandbox, download_allow_hosts=SANDBOX_HOST)
    if route == "redirect":  # the first hop was allowed: each refusal is its run's own
        outcomes = harvest(settings, run_ids, tmp_path)
        reasons = [outcome.reason for outcome in outcomes.values()]
        assert all(isinstance(outcome, Failed) for outcome in outcomes.values())
        assert all("download refused" in reason for reason in reasons)
        assert sandbox.stats()["download_redirects"] == len(run_ids)  # the hop was offered
    else:  # every download refused, none allowed: the operator's mistake, one message
        with pytest.raises(DownloadPolicyError) as refused:
            harvest(settings, run_ids, tmp_path)
        reasons = [str(refused.value)]
    assert decoy.accepted == 0
    assert all(decoy.url_host in reason and "?" not in reason for reason in reasons)
    assert list(tmp_path.iterdir()) == []


def test_a_name_is_refused_for_the_address_it_resolves_to(sandbox, tmp_path):
    # https passes the URL check; only the backend's look at the address refuses it.
    with Decoy("127.0.0.1") as decoy:
        sandbox.set_faults(download_base_url=decoy.origin("https", "localhost"))
        [run_id] = ready_ids(20_100, 1)
        with pytest.raises(DownloadPolicyError) as refused:  # the only download, refused
            harvest(settings_for(sandbox), [run_id], tmp_path)

    message = str(refused.value)
    assert "download host localhost (" in message and "loopback" in message
    assert decoy.accepted == 0


def test_the_decoy_does_see_connections_when_its_host_is_allowed(sandbox, tmp_path):
    """The control: the same setup, host allowed, reaches the decoy (so the zeros mean it)."""
    with Decoy("127.0.0.2") as decoy:
        sandbox.set_faults(download_base_url=decoy.origin("http"))
        allowed = SANDBOX_HOST | {"127.0.0.2"}
        settings = settings_for(sandbox, download_allow_hosts=allowed, read_timeout_s=0.2)
        [run_id] = ready_ids(20_200, 1)
        outcome = harvest(settings, [run_id], tmp_path)[run_id]

    assert isinstance(outcome, Failed) and "ReadTimeout" in outcome.reason
    assert decoy.accepted > 0


def test_downloads_from_the_allowed_sandbox_still_work_and_carry_no_key(sandbox, tmp_path):
    outcomes = harvest(settings_for(sandbox), ready_ids(20_300, 3), tmp_path)

    assert all(isinstance(o, Fetched) for o in outcomes.values())
    assert sandbox.stats()["downloads_with_api_key"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://storage.example.com/a.wav",  # plain http from a host not allowed
        "ftp://storage.example.com/a.wav",
        "https://127.0.0.2/a.wav",
        "https://[::1]/a.wav",
        "https://[::ffff:127.0.0.1]/a.wav",  # IPv4-mapped loopback
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata, link-local
        "https://10.0.0.8/a.wav",
        "https://100.64.0.1/a.wav",  # shared address space: not globally routable
        "https://224.0.0.1/a.wav",
        "https://0.0.0.0/a.wav",
        "https://[fe80::1]/a.wav",
    ],
)
def test_unsafe_urls_are_refused_before_any_request(url):
    with pytest.raises(UnsafeDownload) as refused:
        DownloadPolicy(frozenset({"127.0.0.1"})).check_url(url + "?X-Amz-Signature=secret")
    assert "secret" not in str(refused.value)


def test_allowed_hosts_and_public_https_pass_the_url_check():
    policy = DownloadPolicy(frozenset({"MinIO.lan.", "127.0.0.1"}))
    for url in ("http://minio.lan/a.wav", "http://127.0.0.1:9000/a.wav", "https://s3.example/a"):
        policy.check_url(url)
    assert unsafe_kind(ipaddress.ip_address("2001:4860:4860::8888")) is None


class _Answers(AbstractResolver):
    """A DNS that gives fixed answers (public-looking ones never reach the network)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.asked.append(host)
        return [
            {"hostname": host, "host": address, "port": port, "proto": 0,
             "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
             "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
            for address in self.answers
        ]  # fmt: skip

    async def close(self) -> None:
        pass


def _get(url: str, answers: list[str], allow: frozenset[str] = frozenset()):
    """GET `url` through the download pool's resolver over `answers`: (error, the addresses a
    socket was opened for, the names resolved). No socket connects: each is refused."""
    connected: list[str] = []

    def recorder(addr_info):
        connected.append(addr_info[4][0])
        raise OSError(errno.ECONNREFUSED, "recorder: no real connection in this test")

    async def get():
        dns = _Answers(answers)
        resolver = GuardedResolver(DownloadPolicy(allow), inner=dns)
        connector = aiohttp.TCPConnector(resolver=resolver, socket_factory=recorder)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                await session.get(url, allow_redirects=False)
            except Exception as exc:
                return exc, connected, dns.asked
        raise AssertionError("a connection was made")

    return asyncio.run(get())


@pytest.mark.parametrize(
    "answers", [["127.0.0.2"], ["93.184.215.14", "127.0.0.1"], ["::ffff:10.1.2.3"], ["fe80::1%lo"]]
)
def test_a_name_with_any_unsafe_address_is_refused_without_connecting(answers):
    error, connected, _ = _get("https://storage.rebind.test/a.wav", answers)
    assert isinstance(error, UnsafeDownload)
    assert connected == []


def test_the_pool_connects_to_the_vetted_addresses_never_to_the_name():
    """What defeats DNS rebinding: no second lookup between the check and the connection."""
    vetted = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    error, connected, asked = _get("https://storage.rebind.test/a.wav", vetted)
    assert isinstance(error, aiohttp.ClientConnectorError)
    assert sorted(connected) == sorted(vetted) and asked == ["storage.rebind.test"]


def test_an_allowed_host_is_connected_without_vetting():
    error, connected, _ = _get(
        "http://minio.lan:9000/a.wav", ["127.0.0.1"], frozenset({"minio.lan"})
    )
    assert isinstance(error, aiohttp.ClientConnectorError)
    assert connected == ["127.0.0.1"]
