"""The kinds of trouble a person has to tell apart, named where they are raised (the promises
about each are in docs/reliability.md):

- one run's: a `pending` / `failed` row, never an exception that leaves its day;
- the API's, passing (an outage): `CambOutageError` and storage trouble that may pass, retried;
- the operator's: `OperatorError`, below: a setting, a key, a URL or a storage root that is
  wrong and stays wrong until someone fixes it. Never retried; its text is one line saying
  what is wrong and what to do.

A step that fails for an operator's mistake tags its Dagster `Failure` with
`ERROR_KIND_KEY: OPERATOR` in the failure metadata, so that a caller reading the run's events
(the `soundharvest` command, a sensor, a test) can tell it from a failed run without parsing
the message.
"""

ERROR_KIND_KEY = "soundharvest/error_kind"
OPERATOR = "operator"  # a configuration mistake: fix the setting named, then run again
OUTAGE = "outage"  # trouble that may pass: retried by Dagster, or run again later


class OperatorError(RuntimeError):
    """A mistake of the operator's: wrong or missing setting, key, base URL, storage root.

    `str()` is one line, `problem`, then what to fix; it never holds a key or a URL query.
    """

    def __init__(self, problem: str, *, fix: str, setting: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.setting = setting  # the environment variable (or config field) to look at
        super().__init__(f"{problem}: {fix}" if fix else problem)


class SettingError(OperatorError, ValueError):
    """A setting that is missing or holds a value that cannot be used (a `ValueError` too)."""
