"""Tell a wrong setting from passing trouble by what happened first in a harvest.

Two mistakes of the operator's look, call by call, like trouble of single runs or like an
outage, and would be retried for minutes; what gives them away is that nothing ever worked:

- **The API was never reached** (`ApiReach`): a connection that cannot even be made
  (refused, a name that does not resolve, a TLS handshake that fails) while no call of this
  harvest has ever got an answer. It is a wrong `CAMB_API_BASE_URL` (or a network that
  does not let us out), not an outage, once one call has failed this way `FIRST_CONTACT_TRIES`
  times in a row: about two seconds of the call's first backoffs, not its eight tries. A
  timeout is not such a failure (a slow or overloaded API), and an API that answered once
  in the harvest and is then lost is an outage, retried as before (`resources.camb.api_health`).
- **Every download was refused by the download policy** (`DownloadPolicyVerdict`): refusals
  for two runs, or every download of the harvest, while not one download got past the
  policy. The API hands out URLs on a host the policy does not admit (the sandbox's plain
  http on 127.0.0.1, a MinIO on the LAN): `CAMB_DOWNLOAD_ALLOW_HOSTS` is missing a host.
  A refusal among downloads that were allowed (one URL aimed at a private address) stays
  that run's `failed` row.
"""

import socket
import ssl

import httpx

from resources.camb.netguard import UnsafeDownload
from resources.error_kinds import OperatorError

FIRST_CONTACT_TRIES = 3  # tries of one call, all unable to connect, before the verdict
POLICY_REFUSALS = 2  # runs refused, with none allowed, before the verdict


class CambUnreachableError(OperatorError):
    """No call of the harvest ever reached the API: the base URL (or the network) is wrong."""


class DownloadPolicyError(OperatorError):
    """Every download was refused by the download policy and none was allowed."""


def connect_failure(exc: BaseException) -> str:
    """What failed, in words and without a URL: refused, name not found, TLS."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return f"the TLS handshake failed ({cause.reason or type(cause).__name__})"
        if isinstance(cause, socket.gaierror):
            return "the host name was not found"
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused"
        cause = cause.__cause__ or cause.__context__
    return f"the connection failed ({type(exc).__name__})"


class ApiReach:
    """Whether the API has answered once in this harvest; the verdict when it never has."""

    def __init__(self, target: str) -> None:
        self.target = target  # "the API at <redacted base URL>"
        self.answered = False

    def answer(self) -> None:
        """Any HTTP answer, even an error status: the API is there."""
        self.answered = True

    def connect_failed(self, exc: BaseException, tries: int) -> None:
        """Raise CambUnreachableError for a connection that could not be made, when the API
        never answered and this call has now tried `FIRST_CONTACT_TRIES` times."""
        if self.answered or tries < FIRST_CONTACT_TRIES:
            return
        if not isinstance(exc, httpx.ConnectError):  # a timeout may be a slow API: an outage
            return
        raise CambUnreachableError(
            f"cannot reach {self.target}: {connect_failure(exc)} on {tries} tries and it has "
            "not answered once in this run",
            fix="check CAMB_API_BASE_URL (scheme, host, port) and that this machine can reach it",
            setting="CAMB_API_BASE_URL",
        )


class DownloadPolicyVerdict:
    """Downloads the policy let through and refused in this harvest."""

    def __init__(self) -> None:
        self.allowed = 0
        self.refused = 0
        self.example: UnsafeDownload | None = None

    def allow(self) -> None:
        """A download got an answer from its storage host: the policy admitted it."""
        self.allowed += 1

    def refuse(self, exc: UnsafeDownload) -> None:
        """Record a refusal; raise DownloadPolicyError once `POLICY_REFUSALS` runs were
        refused and none allowed."""
        self.refused += 1
        self.example = self.example or exc
        if self.refused >= POLICY_REFUSALS:
            self.check()

    def check(self) -> None:
        """Raise DownloadPolicyError if downloads were refused and not one was allowed."""
        if self.allowed or not self.refused or self.example is None:
            return
        host = self.example.host or "the storage host"
        raise DownloadPolicyError(
            f"the download policy refused all {self.refused} downloads tried and allowed none "
            f"({self.example})",
            fix=f"if you trust {host}, add it to CAMB_DOWNLOAD_ALLOW_HOSTS (comma-separated)",
            setting="CAMB_DOWNLOAD_ALLOW_HOSTS",
        )
