"""What the handlers share with the thread that controls the sandbox, and the presigned URLs.

`State` is reached from a handler as `request.app[STATE]`: the API key, the faults in force
(`faults.FaultPlan`), the counters (`stats.Counters`), the tasks created here
(`tasks.Tasks`), and the server's own origin once it is bound. Each part guards itself with a
lock of its own; the controlling thread changes faults and reads counters while the handlers
run on the server's event loop.

Presigned download URLs are signed like S3's (`X-Amz-Date`, `X-Amz-Expires`,
`X-Amz-Signature`: an HMAC with a secret of this server), so they really expire and a URL
that was tampered with is refused.
"""

import calendar
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sandbox.audio import FORMATS
from sandbox.faults import FaultPlan, Faults
from sandbox.rules import delivered_format
from sandbox.stats import Counters
from sandbox.tasks import Tasks

_AMZ_DATE = "%Y%m%dT%H%M%SZ"


class Presigner:
    """Download URLs that name their run's file and expire `url_ttl_s` after issue."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def presign(self, run_id: int, origin: str, faults: Faults) -> str:
        path = f"/files/{run_id}.{FORMATS[delivered_format(run_id)].extension}"
        now = time.time()
        issued = int(now)
        # X-Amz-Date has whole seconds only; the fraction goes into X-Amz-Expires so that a
        # short TTL (tests use 0.2 s) expires exactly `url_ttl_s` after issue.
        expires = f"{faults.url_ttl_s + (now - issued):.3f}"
        if faults.whole_second_urls:
            expires = f"{faults.url_ttl_s:g}"
        date = time.strftime(_AMZ_DATE, time.gmtime(issued))
        query = urlencode(
            {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Date": date,
                "X-Amz-Expires": expires,
                "X-Amz-Signature": self._sign(path, date, expires),
            }
        )
        return f"{origin}{path}?{query}"

    def check(self, path: str, query: Mapping[str, str]) -> str | None:
        """None when the URL is valid, else the S3 error code."""
        date, expires = query.get("X-Amz-Date", ""), query.get("X-Amz-Expires", "")
        signature = query.get("X-Amz-Signature", "")
        if not same(signature, self._sign(path, date, expires)):
            return "SignatureDoesNotMatch"
        issued = calendar.timegm(time.strptime(date, _AMZ_DATE))
        return "AccessDenied" if time.time() > issued + float(expires) else None

    def _sign(self, path: str, date: str, expires: str) -> str:
        message = f"{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


class State:
    """Everything the handlers share with the controlling thread."""

    def __init__(self, api_key: str | None, faults: Faults) -> None:
        self.api_key = api_key
        self.plan = FaultPlan(faults)
        self.counters = Counters()
        self.tasks = Tasks(self.counters, lambda: self.plan.faults)
        self.urls = Presigner()
        self.origin: str | None = None  # our own http://host:port, once bound

    @property
    def faults(self) -> Faults:
        """The faults in force (replaced as a whole, never mutated: read without a lock)."""
        return self.plan.faults

    def set_faults(self, changes: Mapping[str, Any]) -> Faults:
        """Change some fault settings (`FaultPlan.set`); new credits count from now on."""
        faults = self.plan.set(changes)
        if "credits" in changes:
            self.tasks.reset_credits()
        return faults

    def reset(self, *, scripts: bool = False) -> None:
        """Reset the counters; with `scripts`, forget the scripted faults not served yet."""
        self.counters.reset()
        if scripts:
            self.plan.forget_scripts()


STATE = web.AppKey("state", State)


def same(given: str, expected: str) -> bool:
    """Constant-time comparison that also copes with non-ASCII (even undecodable) input."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
