"""How a step fails: at once for an operator's mistake, else retried while it may pass.

The step's retry policy (`fail`): only trouble that may pass (an API outage, a storage error,
a storage endpoint lost mid-day) is retried, `SOUNDHARVEST_STEP_RETRIES` times, after a wait
that starts at `SOUNDHARVEST_STEP_RETRY_DELAY_S` and doubles (`step_retry_wait_s`, with its
jitter and its maximum). An operator's mistake (a bad setting, a refused key, a root that
cannot be written, a full disk) fails at once with `ERROR_KIND_KEY: OPERATOR` in the failure's
metadata and its one line (what is wrong, what to fix) last in the message; so does a step
whose failed days are all the operator's to fix (`Days.operators`).

Before any day, `preflight` runs the step's checks (storage probes, the API key), and
`settings` reads the step's settings: a bad one fails the step naming the variable.
"""

import time
from collections.abc import Callable
from typing import Any, NoReturn

from dagster import AssetExecutionContext, Failure, RetryRequested

from assets.harvest.settings import PipelineSettings, SettingsError
from assets.steps.days import Days
from resources.camb.retry import step_retry_wait_s
from resources.error_kinds import ERROR_KIND_KEY, OPERATOR, OperatorError
from resources.storage import StorageError
from resources.storage.operator_faults import StorageUnreachable


def operator_failure(message: str, setting: str | None = None) -> Failure:
    """The step's failure for an operator's mistake: never retried, tagged as such."""
    metadata = {ERROR_KIND_KEY: OPERATOR}
    if setting:
        metadata["setting"] = setting
    return Failure(description=message, allow_retries=False, metadata=metadata)


def settings() -> PipelineSettings:
    """The settings of this step; a bad one fails it with a message naming the variable."""
    try:
        return PipelineSettings.from_env()
    except SettingsError as exc:
        raise operator_failure(str(exc)) from None


def preflight(
    context: AssetExecutionContext, config: PipelineSettings, *checks: Callable[[], object]
) -> None:
    """The step's checks before any day and any API call (storage probes, the key).

    An operator's mistake fails the step at once; storage trouble that may pass fails it as
    a day would (retried), before any day was tried. A storage endpoint that cannot be
    reached is the operator's on the step's first attempt only: a retry follows an attempt
    whose probes passed (or met trouble that may pass), so the endpoint was lost since.
    """
    try:
        for check in checks:
            check()
    except OperatorError as exc:
        if not (isinstance(exc, StorageUnreachable) and context.retry_number > 0):
            raise operator_failure(str(exc), exc.setting) from None
        _failed_before_any_day(context, config, str(exc), retriable=True)
    except StorageError as exc:
        _failed_before_any_day(context, config, str(exc), retriable=not exc.lasting)


def _failed_before_any_day(
    context: AssetExecutionContext, config: PipelineSettings, why: str, *, retriable: bool
) -> NoReturn:
    keys = list(context.partition_keys)
    days: Days[Any] = Days(keys, failed={keys[0]: why}, not_tried=keys[1:], retriable=retriable)
    fail(context, days, config)


def fail(context: AssetExecutionContext, days: Days[Any], settings: PipelineSettings) -> NoReturn:
    """Raise the step's failure: a retry request while retries are left and worth it."""
    message = days.report()
    if days.operators():
        raise operator_failure(message, days.operator.setting if days.operator else None)
    attempt = context.retry_number
    # RetryRequested rather than a RetryPolicy on the asset: the policy is fixed when the
    # definitions load, while delay and count are settings read when the step runs.
    if days.retriable and attempt < settings.step_retries:
        wait = step_retry_wait_s(
            attempt + 1, settings.step_retry_delay_s, settings.step_retry_max_delay_s
        )
        context.log.warning(
            f"{message}\nretrying in {wait:.3g} s (retry {attempt + 1} of {settings.step_retries})"
        )
        # The delay is waited here, in the step, not by Dagster (`seconds_to_wait`): told to
        # stop, a step raises at once, while the in-process executor's own wait for a retry
        # cannot be interrupted (SIGTERM used to wait out all 300 s).
        time.sleep(wait)
        raise RetryRequested(max_retries=settings.step_retries) from Failure(description=message)
    raise Failure(description=message, allow_retries=False)
