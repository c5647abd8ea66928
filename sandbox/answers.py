"""Answers in the API's own shapes, and the request parsing that leads to them.

The real API is FastAPI: an error is `{"detail": "..."}` with its status, and a request that
does not validate is a 422 whose `detail` lists `{"loc", "msg", "type"}` per problem, in
pydantic 2's words. The handlers raise `Invalid` with those triples; the API middleware
turns it into the 422.
"""

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

STREAM_CHUNK = 64 * 1024  # bytes per write of a streamed body

Problem = tuple[list[str | int], str, str]  # (loc, msg, type), as FastAPI lists them


class Invalid(Exception):
    """A request that FastAPI would reject with 422; carries (loc, msg, type) triples."""

    def __init__(self, *errors: Problem) -> None:
        super().__init__(errors)
        self.errors = errors


def detail(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": text}, status=status, headers=headers)


def unprocessable(errors: Iterable[Problem]) -> web.Response:
    listed = [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in errors]
    return web.json_response({"detail": listed}, status=422)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object; `Invalid` when it is missing or anything else."""
    raw = await request.read()
    if not raw.strip():
        raise Invalid((["body"], "Field required", "missing"))
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise Invalid(
            (["body", getattr(exc, "pos", 0)], "JSON decode error", "json_invalid")
        ) from None
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise Invalid((["body"], msg, "model_attributes_type"))
    return body


def run_id_errors(value: Any, loc: list[str | int]) -> list[Problem]:
    """What FastAPI says of `value` as a run id (a positive integer): nothing when it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return [(loc, "Input should be a valid integer", "int_type")]
    if value <= 0:
        return [(loc, "Input should be greater than 0", "greater_than")]
    return []


def path_run_id(request: web.Request) -> int:
    """The `{run_id}` of the request's path, validated as FastAPI would."""
    text = request.match_info["run_id"]
    loc: list[str | int] = ["path", "run_id"]
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise Invalid((loc, msg, "int_parsing"))
    errors = run_id_errors(int(text), loc)
    if errors:
        raise Invalid(*errors)
    return int(text)
