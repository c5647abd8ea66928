"""Where downloads may connect: the SSRF guard of the download pool (OWASP API7, API10).

Presigned URLs come from the API's answers, redirects from the storage host's: neither is
ours to trust. A download may use https only, and connect only to hosts whose every
address is public (globally routable and not multicast: no loopback, private, link-local,
shared, reserved, unspecified or multicast address, IPv4-mapped ones included). A host
named in `CAMB_DOWNLOAD_ALLOW_HOSTS` (compared by name, e.g. the sandbox's `127.0.0.1` or a
private MinIO) is exempt from both rules.

The address rule is enforced where the connection is made, not on the URL: the download
pool's network backend resolves the name once, vets every address, and connects to a vetted
address only. A name that resolves to a public address when checked and to 127.0.0.1 when
connected (DNS rebinding) therefore gets nowhere; TLS still verifies the certificate against
the name. The download client ignores proxy variables (`trust_env=False`): a proxy would
connect on our behalf, past this guard.
"""

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from resources.redact import redact_url

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeDownload(Exception):
    """The download policy refuses this URL or address; never worth a retry."""


def _normal(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def unsafe_kind(address: IPAddress) -> str | None:
    """Why a download must not connect to this address, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "not globally routable"


@dataclass(frozen=True)
class DownloadPolicy:
    allow_hosts: frozenset[str] = frozenset()  # exempt from https-only and public-address rules

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_hosts", frozenset(map(_normal, self.allow_hosts)))

    def allows(self, host: str) -> bool:
        return _normal(host) in self.allow_hosts

    def check_url(self, url: str) -> None:
        """Scheme and (for an IP literal) address, before any request is made."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise UnsafeDownload(f"download URL {redact_url(url)} is not an http(s) URL")
        if self.allows(host):
            return
        if parts.scheme != "https":
            raise UnsafeDownload(
                f"download URL {redact_url(url)} is not allowed: only https, or a host in "
                "CAMB_DOWNLOAD_ALLOW_HOSTS"
            )
        try:
            literal = ipaddress.ip_address(_normal(host))
        except ValueError:
            return  # a name: its addresses are vetted when connecting
        self.check_address(host, literal)

    def check_address(self, host: str, address: IPAddress) -> None:
        kind = unsafe_kind(address)
        if kind is not None:
            shown = host if _normal(host) == str(address) else f"{host} ({address})"
            raise UnsafeDownload(
                f"download host {shown} is a {kind} address: refused unless the host is in "
                "CAMB_DOWNLOAD_ALLOW_HOSTS"
            )


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # unique, in order


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(
        self,
        policy: DownloadPolicy,
        *,
        resolve: Resolver = _getaddrinfo,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        def connect(address: str) -> Awaitable[httpcore.AsyncNetworkStream]:
            return self._inner.connect_tcp(
                address, port, timeout=timeout, local_address=local_address,
                socket_options=socket_options,
            )  # fmt: skip

        if self._policy.allows(host):
            return await connect(host)
        try:
            with anyio.fail_after(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:  # one bad address refuses the name: no mixed answers
            self._policy.check_address(host, ipaddress.ip_address(address.split("%")[0]))
        last: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await connect(address)  # the vetted address, never the name again
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeDownload("downloads never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose connections go through `GuardedBackend`."""

    def __init__(
        self, policy: DownloadPolicy, *, limits: httpx.Limits, resolve: Resolver = _getaddrinfo
    ) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx takes no network backend, but its pool does (httpcore's extension point for
        # how connections are made); the pool built above was never opened.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolve=resolve),
        )
