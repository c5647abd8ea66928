"""What goes wrong in the sandbox, how often, and which fault the next request gets.

`Faults` are the settings (`SandboxServer(faults=...)`, `set_faults`, the command's flags,
POST /_sandbox/faults); `FaultPlan` holds the ones in force and draws each request's fault.

Scripted faults (`SandboxServer.script(target, *kinds)`, or POST /_sandbox/script) hit the
next requests of their target, one kind per request, in order:

| target   | kind      | what the client sees                                                |
|----------|-----------|---------------------------------------------------------------------|
| api      | 429       | 429 with `Retry-After` from `Faults.retry_after` (seconds or a date) |
| api      | 500, 503  | the app's JSON error                                                 |
| api      | 502       | a gateway's HTML page                                                |
| api      | lost      | the request served (a create creates its task), then the connection  |
|          |           | closed with no answer: the client cannot know what happened          |
| both     | drop      | the connection closed with no answer (FIN)                          |
| both     | reset     | the connection reset (RST)                                          |
| both     | hang      | the request read, then nothing until the client hangs up            |
| download | expire    | 403 `AccessDenied` "Request has expired", S3 style                  |
| download | truncate  | the full Content-Length announced, about half sent, then FIN        |
| download | stall     | headers and about half the body, then nothing until the client hangs up |
| download | short     | half the audio with a matching Content-Length: only the header can tell |
| download | corrupt   | the whole body, but its first bytes (the container magic) garbled   |
| download | gzip      | the audio, sent `Content-Encoding: gzip` (not a fault: must decode) |
| download | gzip_bomb | `Content-Encoding: gzip` that decodes to 64 MiB of zeros             |
| download | endless   | a chunked body that never ends (until the client hangs up)          |

Random faults (`*_rate`) draw 429/5xx/drop/lost for API calls and drop/expire/truncate for
downloads: 429, 5xx and drop answer before the request is served (a create creates nothing),
lost after it. Per-run faults make one run misbehave forever while every other run is served
normally: `result_errors` (its single-result call answers a status), `bulk_errors` (every
bulk call that includes it answers a status), `expired_runs` (its downloads always answer
403 expired), `bulk_omit` (left out of bulk answers), `bulk_strangers` (added to every bulk
answer though nobody asked), and `bulk_min_ids` (2 makes the bulk endpoint refuse a lone id
with 422, as the docs of the translation and subtitle bulk endpoints say they do).
"""

import dataclasses
import random
import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.rules import MAX_BATCH

Target = Literal["api", "download"]
API_FAULT_KINDS = frozenset({"429", "500", "502", "503", "drop", "reset", "hang", "lost"})
SERVED_THEN_LOST = "lost"  # the one API fault met after the request is served
DOWNLOAD_FAULT_KINDS = frozenset(
    {"drop", "reset", "hang", "stall", "truncate", "expire", "short", "corrupt", "gzip",
     "gzip_bomb", "endless"}
)  # fmt: skip

_RATE_FIELDS = (
    "throttle_rate", "server_error_rate", "drop_rate", "lost_rate", "truncate_rate", "expire_rate",
)  # fmt: skip
OUT_OF_CREDITS = ("402", "task")  # how a create past the credits is refused
_RETRY_AFTER = re.compile(r"(date:)?\d+")
_ORIGIN = re.compile(r"https?://[^/?#]+/?")


@dataclass
class Faults:
    """What goes wrong, and how often. Shares are drawn from `random.Random(seed)`."""

    latency_s: float = 0.0  # delay before every API answer (not downloads)
    download_latency_s: float = 0.0  # delay before every download's first byte
    throttle_rate: float = 0.0  # share of API requests answered 429
    retry_after: str = "1"  # Retry-After on 429: seconds, or "date:N" for an HTTP date N s ahead
    server_error_rate: float = 0.0  # share of API requests answered 500/502/503
    drop_rate: float = 0.0  # share of requests (API and downloads) closed with no answer
    lost_rate: float = 0.0  # share of API requests served, then closed with no answer
    truncate_rate: float = 0.0  # share of downloads cut after ~half the announced body
    expire_rate: float = 0.0  # share of downloads answered 403 as expired
    url_ttl_s: float = 600.0
    # Sign with whole seconds only, as S3 presigners do: a URL re-signed within the same
    # second is the very same URL (and an expired one comes back as it was).
    whole_second_urls: bool = False
    download_base_url: str | None = None  # origin put into presigned URLs instead of our own
    redirect_downloads_to: str | None = None  # /files answers 307 to this origin
    seed: int = 0
    # Per-run faults: these runs misbehave on every request, all others are served normally.
    result_errors: dict[int, int] = field(default_factory=dict)  # run id -> status of its GET
    bulk_errors: dict[int, int] = field(default_factory=dict)  # run id -> status of its batch
    expired_runs: tuple[int, ...] = ()  # downloads always answer 403 expired
    bulk_omit: tuple[int, ...] = ()  # never in a bulk answer, even when asked for
    bulk_strangers: tuple[int, ...] = ()  # in every bulk answer, though nobody asked
    bulk_min_ids: int = 1  # fewer ids in a bulk call are refused with 422
    # Text-to-sound creates: how long a created task stays PENDING (read when it is created),
    # and the credits left: after that many more creates (counted from when `credits` was
    # set), a create answers 402, or with `out_of_credits="task"` creates a task that ends
    # PAYMENT_REQUIRED. None: no limit.
    generation_s: float = 1.0
    credits: int | None = None
    out_of_credits: str = "402"

    def __post_init__(self) -> None:
        self._check_run_faults()
        self._check_shares()
        self._check_times()
        self._check_credits()
        self._check_retry_after()
        self._check_origins()

    def _check_run_faults(self) -> None:
        # The control plane speaks JSON: object keys arrive as strings, tuples as lists.
        for name in ("result_errors", "bulk_errors"):
            statuses = dict(getattr(self, name))
            setattr(self, name, {_positive(k, name): _status(v, name) for k, v in statuses.items()})
        for name in ("expired_runs", "bulk_omit", "bulk_strangers"):
            setattr(self, name, tuple(_positive(i, name) for i in getattr(self, name)))
        if not 1 <= self.bulk_min_ids <= MAX_BATCH:
            raise ValueError(f"Faults.bulk_min_ids must be within 1..{MAX_BATCH}")

    def _check_shares(self) -> None:
        for name in _RATE_FIELDS:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"Faults.{name} must be within [0, 1], got {rate!r}")
        # One draw decides each request's fault, so the shares of one target must fit in 1.
        if self.drop_rate + self.throttle_rate + self.server_error_rate + self.lost_rate > 1.0:
            raise ValueError(
                "Faults: drop_rate + throttle_rate + server_error_rate + lost_rate exceeds 1"
            )
        if self.drop_rate + self.truncate_rate + self.expire_rate > 1.0:
            raise ValueError("Faults: drop_rate + truncate_rate + expire_rate exceeds 1")

    def _check_times(self) -> None:
        for name in ("latency_s", "download_latency_s", "generation_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"Faults.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.url_ttl_s <= 0:
            raise ValueError(f"Faults.url_ttl_s must be > 0, got {self.url_ttl_s!r}")

    def _check_credits(self) -> None:
        if self.credits is not None and (
            isinstance(self.credits, bool) or not isinstance(self.credits, int) or self.credits < 0
        ):
            raise ValueError(f"Faults.credits must be a whole number >= 0, got {self.credits!r}")
        if self.out_of_credits not in OUT_OF_CREDITS:
            allowed, given = OUT_OF_CREDITS, self.out_of_credits
            raise ValueError(f"Faults.out_of_credits must be one of {allowed}, got {given!r}")

    def _check_retry_after(self) -> None:
        if not isinstance(self.retry_after, str) or not _RETRY_AFTER.fullmatch(self.retry_after):
            raise ValueError(
                f"Faults.retry_after must be 'N' or 'date:N', got {self.retry_after!r}"
            )

    def _check_origins(self) -> None:
        for name in ("download_base_url", "redirect_downloads_to"):
            url = getattr(self, name)
            if url is not None and not _ORIGIN.fullmatch(url):
                raise ValueError(
                    f"Faults.{name} must be an origin like http://host:port, got {url!r}"
                )


def _positive(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0 or isinstance(value, bool | float):
        raise ValueError(f"Faults.{name}: run ids must be positive integers, got {value!r}")
    return number


def _status(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"Faults.{name}: statuses must be 400..599, got {value!r}")
    return value


class FaultPlan:
    """The faults in force, and the fault each request gets: the scripted ones of its target
    first, in order, then one random draw from the seeded shares."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults  # replaced as a whole, never mutated: handlers read it lock-free
        self._lock = threading.Lock()
        self._rng = random.Random(faults.seed)
        self._scripts: dict[Target, deque[str]] = {"api": deque(), "download": deque()}

    def set(self, changes: Mapping[str, Any]) -> Faults:
        """Change some settings (validated as a whole), effective from the next request."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(Faults)}
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            self.faults = dataclasses.replace(self.faults, **changes)
            if "seed" in changes:
                self._rng.seed(self.faults.seed)
            return self.faults

    def script(self, target: str, kinds: Iterable[str]) -> None:
        allowed = {"api": API_FAULT_KINDS, "download": DOWNLOAD_FAULT_KINDS}.get(target)
        if allowed is None:
            raise ValueError(f"script target must be 'api' or 'download', got {target!r}")
        kinds = list(kinds)
        bad = [k for k in kinds if k not in allowed]
        if bad:
            raise ValueError(f"{target} faults must be among {sorted(allowed)}, got {bad}")
        with self._lock:
            self._scripts[target].extend(kinds)  # type: ignore[index]

    def forget_scripts(self) -> None:
        """Drop the scripted faults not served yet."""
        with self._lock:
            for queue in self._scripts.values():
                queue.clear()

    def next(self, target: Target) -> str | None:
        """The fault for the next request: scripted ones first, then one random draw."""
        with self._lock:
            if self._scripts[target]:
                return self._scripts[target].popleft()
            draw = self._rng.random()
            for kind, share in _shares(self.faults, target):
                if draw < share:
                    return self._rng.choice(("500", "502", "503")) if kind == "5xx" else kind
                draw -= share
            return None


def _shares(f: Faults, target: Target) -> tuple[tuple[str, float], ...]:
    """Each random fault of `target` with its share of the requests."""
    if target == "api":
        return (
            ("drop", f.drop_rate),
            ("429", f.throttle_rate),
            ("5xx", f.server_error_rate),
            (SERVED_THEN_LOST, f.lost_rate),
        )
    return (("drop", f.drop_rate), ("expire", f.expire_rate), ("truncate", f.truncate_rate))
