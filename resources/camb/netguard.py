"""Where downloads may connect: the SSRF guard of the download pool (OWASP API7, API10).

Presigned URLs come from the API's answers, redirects from the storage host's: neither is
ours to trust. A download may use https only, and connect only to hosts whose every
address is public (globally routable and not multicast: no loopback, private, link-local,
shared, reserved, unspecified or multicast address, IPv4-mapped ones included). A host
named in `CAMB_DOWNLOAD_ALLOW_HOSTS` (compared by name, e.g. the sandbox's `127.0.0.1` or a
private MinIO) is exempt from both rules.

The address rule is enforced where the connection is made, not on the URL: the download
pool's resolver (`GuardedResolver`, aiohttp's extension point for how names become the
addresses its connector connects to) resolves the name once and vets every address, and
the connector connects to those vetted addresses only. A name that resolves to a public
address when checked and to 127.0.0.1 when connected (DNS rebinding) therefore gets
nowhere; TLS still verifies the certificate against the name. aiohttp never asks the
resolver about an IP literal: `DownloadPolicy.check_url` vets those before each request
and each redirect hop. The download session ignores proxy variables (`trust_env=False`): a
proxy would connect on our behalf, past this guard.
"""

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from resources.camb.redact import redact_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeDownload(Exception):
    """The download policy refuses this URL or address; never worth a retry."""

    def __init__(self, message: str, host: str = "") -> None:
        super().__init__(message)
        self.host = host  # the refused host, for the operator's message (no URL, no query)


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
            raise UnsafeDownload(f"download URL {redact_url(url)} is not an http(s) URL", host)
        if self.allows(host):
            return
        if parts.scheme != "https":
            raise UnsafeDownload(
                f"download URL {redact_url(url)} is not allowed: only https, or a host in "
                "CAMB_DOWNLOAD_ALLOW_HOSTS",
                host,
            )
        try:
            literal = ipaddress.ip_address(_normal(host))
        except ValueError:
            return  # a name: its addresses are vetted when connecting
        self.check_address(host, literal)

    def vet(self, host: str, addresses: Sequence[str]) -> None:
        """Refuse `host` unless it resolved to addresses that are all allowed."""
        if not addresses:
            raise UnsafeDownload(f"download host {host} resolves to no address", host)
        for address in addresses:
            self.check_address(host, ipaddress.ip_address(address.split("%")[0]))

    def check_address(self, host: str, address: IPAddress) -> None:
        kind = unsafe_kind(address)
        if kind is not None:
            shown = host if _normal(host) == str(address) else f"{host} ({address})"
            raise UnsafeDownload(
                f"download host {shown} is a {kind} address: refused unless the host is in "
                "CAMB_DOWNLOAD_ALLOW_HOSTS",
                host,
            )


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for the download pool: a host the policy does not exempt gets its
    addresses only if every one of them is allowed (one bad address refuses the name: no
    mixed answers); the connector then connects to exactly these addresses."""

    def __init__(self, policy: DownloadPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not self._policy.allows(host):
            self._policy.vet(host, [result["host"] for result in found])
        return found

    async def close(self) -> None:
        await self._inner.close()
