"""Keep secrets out of logs, exceptions, metadata and the catalog.

Presigned URLs carry their credential in the query string (`X-Amz-Signature`,
`X-Goog-Signature`, `Signature`, ...): the only safe form of such a URL to show anyone is
`scheme://host/path`. The API key travels in a header and must never be echoed at all.
"""

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_URL = re.compile(r"\b(?:https?|s3|gs|gcs|az|abfs)://[^\s'\"<>]+", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`scheme://host[:port]/path` of a URL: no user info, no query, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable url>"
    if not parts.scheme:
        return parts.path.split("?")[0]
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redact_text(text: str, *secrets: str) -> str:
    """Strip the query from every URL in `text` and blank out each secret."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class SecretUrl:
    """A presigned URL that cannot be printed by accident: str() and repr() redact it."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return redact_url(self.value)

    def __repr__(self) -> str:
        return f"SecretUrl({redact_url(self.value)!r})"


class RedactingFilter(logging.Filter):
    """httpx logs every request URL at INFO, presigned query included; redact it at the source."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = redact_text(str(record.msg))
        return True


# A logger's filters see only records logged to that very logger, not those its children
# pass up, so each logger the libraries log to is named (httpcore logs response headers,
# a redirect's presigned Location included, to `httpcore.http11` at DEBUG).
HTTP_LOGGERS = (
    "httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2",
    "httpcore.proxy", "httpcore.socks",
    "aiohttp", "aiohttp.client", "aiohttp.internal", "aiohttp.access", "aiohttp.server",
    "aiohttp.web", "aiohttp.websocket",
)  # fmt: skip


def install_http_log_redaction() -> None:
    """Attach the redacting filter to the HTTP libraries' loggers (idempotent)."""
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
