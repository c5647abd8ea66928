"""The API calls of one day: retried, judged by the API's health, bisected when refused.

`ApiCalls.call_api` is every request to the API: through the request gate, retried by
`retry.async_retrying`, each final outcome reported to `api_health` (an outage raises
`CambOutageError`) and to `first_contact` (an API never reached is the operator's). On top:
`results` (the bulk endpoint, at most five runs; a refused batch is halved until the bad run
is alone), `result` (the single-result endpoint), and `ask` (a GET outside the results flow,
such as a task's status). A refusal that every call meets is checked once with `probe` before
it is called a configuration error (`CambConfigError`).
"""

import asyncio
import json
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import httpx

from resources.camb.api_health import CallHealth
from resources.camb.errors import CambAuthError, CambConfigError, CambOutageError, NoAnswer
from resources.camb.first_contact import ApiReach
from resources.camb.limits import RequestGate
from resources.camb.redact import redact_url
from resources.camb.results import Answer, Failed, Pending, RunResult, interpret_result
from resources.camb.retry import (
    RetryableStatus,
    async_retrying,
    describe_failure,
    error_detail,
    nothing_done,
    raise_for_retryable,
)
from resources.camb.settings import ClientSettings

log = logging.getLogger(__name__)

BULK_LIMIT = 5  # the bulk endpoint takes at most five run ids
_TOO_SHORT = ("too_short", "value_error.list.min_items")  # FastAPI on pydantic 2, on pydantic 1


class ApiPool(Protocol):
    """What the calls use of `CambClient`: its settings, request gate and API pool."""

    settings: ClientSettings
    gate: RequestGate
    api: httpx.AsyncClient
    # Learnt once (a 422 for a lone id) and kept for the client's life: lone ids go to the
    # single-result endpoint.
    lone_ids_to_single: bool


class ApiCalls:
    """One day's calls to the API, and what they taught about its health."""

    def __init__(self, client: ApiPool) -> None:
        self.client = client
        self.settings = client.settings
        self.target = f"the API at {redact_url(self.settings.base_url)}"
        self.api_health = CallHealth(self.settings.health)
        self.reach = ApiReach(self.target)  # never reached at all: a wrong base URL
        self.config_probe: asyncio.Task[str | None] | None = None

    async def close(self) -> None:
        if self.config_probe is not None:
            self.config_probe.cancel()
            await asyncio.gather(self.config_probe, return_exceptions=True)

    async def call_api(
        self,
        method: str,
        path: str,
        *,
        what: str,
        idempotent: bool = True,
        sending: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One API call with retries: the answer, `NoAnswer`, or a run-wide error.

        A call that must not be done twice (`idempotent=False`, a create) is tried again only
        after failures that did nothing (`retry.nothing_done`); `sending` is told each time
        the request is about to leave (past the request gate)."""
        client, attempts = self.client, 0
        try:
            async for attempt in async_retrying(self.settings.api_retry, idempotent=idempotent):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    async with client.gate.request(api=True):
                        if sending is not None:
                            sending()
                        try:
                            response = await client.api.request(method, path, **kwargs)
                        except httpx.ConnectError as exc:
                            self.reach.connect_failed(exc, attempts)  # raises once it is clear
                            raise
                    self.reach.answer()
                    raise_for_retryable(response, what, read=True)
        except (RetryableStatus, httpx.TransportError) as exc:
            last, maybe_done = describe_failure(exc), not nothing_done(exc)
            if self.api_health.failed():
                health = self.api_health
                raise CambOutageError(
                    f"an outage of {self.target}, not a problem of single runs: "
                    f"{health.failures} of its last {health.calls} calls got no answer after "
                    f"retries (last: {last}); try again later",
                    maybe_done=maybe_done,
                ) from None
            raise NoAnswer(
                f"after {attempts} attempts (last: {last})", maybe_done=maybe_done
            ) from None
        self.api_health.answered()
        if response.status_code in (401, 403):
            raise CambAuthError(f"{what}: the API rejected the API key ({error_detail(response)})")
        return response

    async def ask(self, path: str, *, what: str, key: Hashable) -> Answer:
        """A GET under the day's rules: run-wide trouble raises, the rest is the `Answer`."""
        try:
            response = await self.call_api("GET", path, what=what)
        except NoAnswer as exc:
            return Answer(None, None, f"the API gave no answer {exc}")
        body = _json_object(response)
        if body is not None:
            self.api_health.succeeded()
            return Answer(200, body, None)
        answer = _refusal(response)
        await self.refused([key], answer)
        return Answer(response.status_code, None, answer)

    async def results(self, run_ids: Sequence[int]) -> list[RunResult]:
        """At most five runs in one bulk call; trouble is bisected so one bad id sinks no other.

        A lone id goes to the bulk endpoint too. The text-to-sound bulk docs describe "the
        results of one to five runs", and the SDK's own example for this call is
        `get_text_to_sound_results(run_ids=[1])`; the "2 to 5 ids" rule is documented for
        the translation and subtitle bulk endpoints only. One endpoint for every question
        also means a run gets the same kind of answer whether it is asked alone (a rerun, a
        fresh URL) or with others: the single-result endpoint was seen answering 500 for a
        run that the bulk endpoint reported as failed. Should the API refuse a lone id with
        422 after all, lone ids go to the single-result endpoint from then on.
        """
        if not 1 <= len(run_ids) <= BULK_LIMIT:
            raise ValueError(f"between 1 and {BULK_LIMIT} run ids per call, not {len(run_ids)}")
        if len(run_ids) == 1 and self.client.lone_ids_to_single:
            return [await self.result(run_ids[0])]
        try:
            response = await self.call_api(
                "POST",
                "text-to-sound-results",
                what=f"bulk results of runs {list(run_ids)}",
                json={"run_ids": list(run_ids)},
            )
        except NoAnswer as exc:
            failure = str(exc)  # `exc` is gone once the except block ends
            return await self._isolate(
                run_ids, lambda i: f"the API gave no answer about run {i} {failure}"
            )
        body = _json_object(response)
        if body is not None:
            self.api_health.succeeded()
            # Ids nobody asked for are ignored; ids left out are not ready (yet).
            return [
                interpret_result(run_id, body[str(run_id)])
                if str(run_id) in body
                else Pending(run_id, "left out of the API's answer")
                for run_id in run_ids
            ]
        if len(run_ids) == 1 and _refuses_lone_ids(response):
            if not self.client.lone_ids_to_single:
                log.warning("the bulk endpoint refuses lone ids: asking for them one by one")
            self.client.lone_ids_to_single = True
            return [await self.result(run_ids[0])]
        answer = _refusal(response)
        await self.refused(run_ids, answer)
        return await self._isolate(run_ids, lambda i: f"API refused run {i}: {answer}")

    async def _isolate(
        self, run_ids: Sequence[int], reason: Callable[[int], str]
    ) -> list[RunResult]:
        """Halve a batch the API would not answer; a lone run gets the blame."""
        if len(run_ids) == 1:
            return [Failed(run_ids[0], reason(run_ids[0]))]
        middle = len(run_ids) // 2
        halves = await asyncio.gather(
            self.results(run_ids[:middle]), self.results(run_ids[middle:])
        )
        return [*halves[0], *halves[1]]

    async def result(self, run_id: int) -> RunResult:
        """One run through the single-result endpoint, as a fresh presigned URL when ready."""
        try:
            response = await self.call_api(
                "GET",
                f"text-to-sound-result/{run_id}",
                what=f"result of run {run_id}",
                params={"output_type": "file_url"},
            )
        except NoAnswer as exc:
            return Failed(run_id, f"the API gave no answer about run {run_id} {exc}")
        body = _json_object(response)
        if body is not None:
            self.api_health.succeeded()
            return interpret_result(run_id, body)
        answer = _refusal(response)
        await self.refused([run_id], answer)
        return Failed(run_id, f"API refused run {run_id}: {answer}")

    async def refused(
        self, keys: Sequence[Hashable], answer: str, *, at_once: bool = False
    ) -> None:
        """Raise CambConfigError if every call so far (each about `keys`: run ids, task ids,
        creates) was refused like this (see api_health). `at_once`: do not wait for a second
        call to be refused alike before asking the probe (a create's refusal is final)."""
        holds = self.api_health.refused(keys, answer)
        if not holds and not (at_once and self.api_health.undecided):
            return
        if self.config_probe is None:  # one probe per day, shared by concurrent callers
            self.config_probe = asyncio.ensure_future(self._probe())
        if await asyncio.shield(self.config_probe) == answer:
            raise CambConfigError(
                f"every call to {self.target} was refused the same way ({answer}) and "
                "none succeeded, not even a question that names no run"
            )
        self.api_health.rule_out_config()

    async def _probe(self) -> str | None:
        """How the bulk endpoint answers an empty list: an endpoint that exists says 200 or
        422 (the list is too short); a wrong base URL refuses it like everything else."""
        try:
            response = await self.call_api(
                "POST", "text-to-sound-results", what="probe", json={"run_ids": []}
            )
        except NoAnswer:
            return None
        if response.status_code == 422 or _json_object(response) is not None:
            return None
        return _refusal(response)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body of a 200 answer as a JSON object, or None when it is anything else."""
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _refusal(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "HTTP 200 with a body that is not a JSON object"
    return error_detail(response)


def _refuses_lone_ids(response: httpx.Response) -> bool:
    """A 422 about the length of `run_ids` itself (not one of its items)."""
    if response.status_code != 422:
        return False
    try:
        errors = response.json()["detail"]
        return any(e["loc"] == ["body", "run_ids"] and e["type"] in _TOO_SHORT for e in errors)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return False
