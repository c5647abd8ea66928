"""What the client runs with: the key, the base URL, limits, timeouts, retry policies, health.

`CambResource` builds `ClientSettings` from its fields and the environment. A missing key or a
base URL that is not http(s) is the operator's mistake (`SettingError`), said before any request
is made; a number out of range is a programming error (`ValueError`).
"""

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from resources.camb.api_health import HealthRule
from resources.camb.redact import redact_url
from resources.camb.retry import RetryPolicy
from resources.error_kinds import SettingError

DEFAULT_BASE_URL = "https://client.camb.ai/apis"


@dataclass(frozen=True)
class ClientSettings:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = 8  # HTTP requests in flight at once, API calls and downloads together
    requests_per_second: float | None = None  # client-side limit on API calls
    # Download hosts exempt from the policy (plain http, private or loopback addresses).
    download_allow_hosts: frozenset[str] = frozenset()
    max_download_bytes: int = 1 << 30  # decoded bytes: a compressed body counts as it unpacks
    url_refreshes: int = 3  # fresh URLs asked for one run after expiry or a bad body
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    api_retry: RetryPolicy = field(default_factory=RetryPolicy)
    download_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=4, budget_s=60.0)
    )
    health: HealthRule = field(default_factory=HealthRule)

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_key.strip():
            raise SettingError(
                "CAMB_API_KEY is not set (or empty)",
                fix="set it to your CAMB.AI API key: export CAMB_API_KEY=...",
                setting="CAMB_API_KEY",
            )
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {self.max_concurrency}")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(
                f"requests_per_second must be positive, not {self.requests_per_second}"
            )
        if urlsplit(self.base_url).scheme not in ("http", "https"):
            raise SettingError(
                f"the API base URL {redact_url(self.base_url)} is not an http(s) URL",
                fix=f"set CAMB_API_BASE_URL, e.g. {DEFAULT_BASE_URL}",
                setting="CAMB_API_BASE_URL",
            )
        if min(self.connect_timeout_s, self.read_timeout_s) <= 0:
            raise ValueError("connect and read timeouts must be positive")
