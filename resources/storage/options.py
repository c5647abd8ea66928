"""The fsspec options a root is opened with, and the credentials they hold kept out of messages.

Options come per protocol from `SOUNDHARVEST_STORAGE_OPTIONS`, a JSON object keyed by
protocol (`{"s3": {"endpoint_url": "...", "key": "...", "secret": "..."}}`), overridden by
the options a caller passes. Errors never echo the variable's value: it usually carries
credentials, and `redactor` blanks out every credential-like option in a message.

An S3 endpoint that accepts connections and never answers ends in a `StorageError`, not a
hang: S3 clients get connect and read timeouts and a bounded retry count by default
(`S3_CONFIG`, overridable per key through `config_kwargs` in the storage options), and never
send `Expect: 100-continue`, whose wait for the interim answer no timeout covered (aiohttp).
The longest an operation waits is then about 5 (s3fs's own tries) x `max_attempts` x
`read_timeout`.
"""

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from resources.storage.faults import StorageSettingError

ENV_STORAGE_OPTIONS = "SOUNDHARVEST_STORAGE_OPTIONS"
# botocore's defaults are a 60 s read timeout and 5 "legacy" attempts, which s3fs repeats up to
# five times on timeouts: half an hour before an unresponsive endpoint is reported.
S3_CONFIG: dict[str, Any] = {
    "connect_timeout": 10,
    "read_timeout": 30,
    "retries": {"max_attempts": 2, "mode": "standard"},
}
# Option names whose values must never reach a message (s3fs: key/secret/token, gcsfs:
# token, adlfs: account_key/sas_token/client_secret, sftp/ftp: password, ...).
_SECRET_NAME = re.compile(r"key|secret|token|password|passwd|credential|signature", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s\"']+@")
_OPTIONS_FIX = 'write it as a JSON object keyed by protocol, e.g. {"s3": {"endpoint_url": "..."}}'


def storage_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Per-protocol fsspec options from ``SOUNDHARVEST_STORAGE_OPTIONS``.

    The variable holds JSON keyed by protocol, e.g.
    ``{"s3": {"endpoint_url": "http://127.0.0.1:5000", "key": "...", "secret": "..."}}``.
    Errors never echo the value: it usually carries credentials.
    """
    raw = (os.environ if environ is None else environ).get(ENV_STORAGE_OPTIONS, "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        # `from None`: the decode error keeps the whole document (and its secrets) in `.doc`;
        # its `msg` and position name no part of it.
        raise StorageSettingError(
            f"{ENV_STORAGE_OPTIONS} is not valid JSON ({exc.msg}: line {exc.lineno} column "
            f"{exc.colno}; its value is not shown, it may hold credentials)",
            fix=_OPTIONS_FIX,
            setting=ENV_STORAGE_OPTIONS,
        ) from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise StorageSettingError(
            f"{ENV_STORAGE_OPTIONS} must be a JSON object of objects keyed by protocol",
            fix=_OPTIONS_FIX,
            setting=ENV_STORAGE_OPTIONS,
        )
    return parsed


def fs_options(
    protocol: str, aliases: Sequence[str], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The options of a filesystem opened as `protocol` and known by `aliases`: the
    environment's for each of those names, then `given`; S3 gets `S3_CONFIG` underneath."""
    from_env = storage_options_from_env()
    options: dict[str, Any] = {}
    for name in dict.fromkeys((protocol, *aliases)):
        options.update(from_env.get(name, {}))
    options.update(given or {})
    return _with_s3_defaults(options) if "s3" in aliases else options


def redactor(options: Mapping[str, Any]) -> Callable[[str], str]:
    """A function that blanks out of a text the credentials among `options` and the user
    info of any URL."""
    secrets = sorted(_secret_values(options), key=len, reverse=True)

    def redact(text: str) -> str:
        text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
        for value in secrets:
            text = text.replace(value, "***")
        return text

    return redact


def _secret_values(options: Mapping[str, Any]) -> Iterator[str]:
    """String values of credential-like options, nested dicts included."""
    for name, value in options.items():
        if isinstance(value, Mapping):
            yield from _secret_values(value)
        elif isinstance(value, str) and len(value) >= 4 and _SECRET_NAME.search(str(name)):
            yield value


def _with_s3_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    """s3fs options with S3_CONFIG under the caller's ``config_kwargs``, and a session whose
    clients never send ``Expect: 100-continue`` (unless the caller brings a session)."""
    out = dict(options)
    out["config_kwargs"] = {**S3_CONFIG, **out.get("config_kwargs", {})}
    if "session" not in out:
        # Imported here: only S3 storage needs it. s3fs gives a "profile" to its own session.
        from aiobotocore.session import AioSession

        session = AioSession(profile=out.pop("profile", None))
        # botocore adds the header to every upload with a body; aiohttp then waits for the
        # "100 Continue" with no timeout, forever against an endpoint that never answers.
        session.register("before-call.s3", _drop_expect_header)
        out["session"] = session
    return out


def _drop_expect_header(params: dict[str, Any], **_: Any) -> None:
    params.get("headers", {}).pop("Expect", None)
