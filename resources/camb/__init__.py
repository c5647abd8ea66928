"""The CAMB.AI text-to-sound results client, one concern per module.

- `client`: `CambClient`, its two connection pools and `harvest()`;
- `settings`: `ClientSettings`; `results`: what the API says about a run, and the outcomes;
- `errors`: the run-wide errors; `feed`: one day's batches and workers;
- `calls`: the API calls (bulk and single results, bisection, health); `downloads`: one run's
  download, streamed, hashed and inspected;
- `retry`, `api_health`, `first_contact`, `limits`, `netguard`, `redact`, `task_resolver`: the
  policies the calls and downloads follow (when to retry, when the API or the configuration is
  to blame, the shared request limit, where downloads may connect, what never reaches a log,
  task ids into run ids).

The names the rest of the project uses are re-exported here.
"""

from resources.camb.calls import BULK_LIMIT
from resources.camb.client import USER_AGENT, CambClient
from resources.camb.errors import CambApiError, CambAuthError, CambConfigError, CambOutageError
from resources.camb.results import (
    DAY_BUDGET_SPENT,
    Answer,
    Failed,
    Fetched,
    Pending,
    Ready,
    RunOutcome,
    interpret_result,
)
from resources.camb.settings import DEFAULT_BASE_URL, ClientSettings

__all__ = [
    "BULK_LIMIT",
    "DAY_BUDGET_SPENT",
    "DEFAULT_BASE_URL",
    "USER_AGENT",
    "Answer",
    "CambApiError",
    "CambAuthError",
    "CambClient",
    "CambConfigError",
    "CambOutageError",
    "ClientSettings",
    "Failed",
    "Fetched",
    "Pending",
    "Ready",
    "RunOutcome",
    "interpret_result",
]
