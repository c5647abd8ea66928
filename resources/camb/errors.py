"""The client's errors: run-wide ones that end the day, and the few it passes between its parts.

Only trouble of the whole API raises out of `harvest`, as a `CambApiError`: `CambAuthError`
(the key is refused), `CambConfigError` (every call refused the same way), `CambOutageError`
(most calls failing); `api_health` states the rule that tells them apart. The last three
classes never leave the package: they end as one run's `Pending` or `Failed`.
"""

from resources.error_kinds import OperatorError


class CambApiError(RuntimeError):
    """A run-wide problem: the materialization cannot go on. Never contains the key."""


class CambAuthError(CambApiError, OperatorError):
    """The API refused the key (401/403)."""

    def __init__(self, problem: str, *, fix: str = "check CAMB_API_KEY") -> None:
        super().__init__(problem, fix=fix, setting="CAMB_API_KEY")


class CambConfigError(CambApiError, OperatorError):
    """Every call was refused the same way and none succeeded: the configuration is wrong."""

    def __init__(self, problem: str, *, fix: str = "check CAMB_API_BASE_URL") -> None:
        super().__init__(problem, fix=fix, setting="CAMB_API_BASE_URL")


class CambOutageError(CambApiError):
    """The API (or its storage host) fails most calls, even after retries.

    `maybe_done`: the call that tipped the balance may have been acted on by the server (it
    was sent, and its answer lost): a create is then in doubt."""

    def __init__(self, problem: str, *, maybe_done: bool = False) -> None:
        super().__init__(problem)
        self.maybe_done = maybe_done


class NoAnswer(Exception):
    """One call outlasted its retries without a usable answer (the API's health decides).

    `maybe_done`: it was sent and its answer lost, so the server may have acted on it
    (`retry.nothing_done`); only a create cares."""

    def __init__(self, problem: str, *, maybe_done: bool = False) -> None:
        super().__init__(problem)
        self.maybe_done = maybe_done


class UrlExpired(Exception):
    """The storage host refused a presigned URL (403/404/410): ask the API for a fresh one."""


class DownloadRefused(Exception):
    """Downloading this run's URL can never work (size cap, odd answer)."""
