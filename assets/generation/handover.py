"""The day's generations handed to the harvest: rows of the day's manifest record.

`run_manifest` adds them to the rows of the day's manifests, so the task-id harvest resolves
and fetches them like any task-id row (docs/task-ids.md), and the pending sweep comes back for
those still generating. Every created generation becomes an accepted row with its task id,
prompt, duration, audio type, the sheet as `manifest` and the sheet's other columns (and the
take) as `extra`; a rejected sheet row becomes a `rejected` row with its reason. Rows not sent
(deferred, in doubt), duplicates and rows another day already sent have no row of their own:
the generation they stand for has its row on its own day, or will once it is created.
"""

import pandas as pd

from assets.generation.generation_plan import carried_extra, read_rows
from assets.harvest.catalog_schema import MANIFEST_COLUMNS
from resources.storage import Storage


def generation_rows(state: Storage, day: str) -> pd.DataFrame | None:
    """The day's generations as manifest rows (MANIFEST_COLUMNS), or None when the day has
    no generation record."""
    rows = read_rows(state, day)
    if rows is None:
        return None
    created = rows[rows["status"] == "created"]
    rejected = rows[rows["status"] == "rejected"]
    accepted = pd.DataFrame(
        {
            "run_id": pd.NA,
            "status": "accepted",
            "error": None,
            "prompt": created["prompt"],
            "audio_type": created["audio_type"],
            "requested_duration_s": created["duration"],
            "task_id": created["task_id"],
            "extra": [
                carried_extra(extra, int(take))
                for extra, take in zip(created["extra"], created["take"], strict=True)
            ],
            "manifest": created["sheet"],
            "line": created["line"],
        }
    )
    refused = pd.DataFrame(
        {
            "run_id": pd.NA,
            "status": "rejected",
            "error": rejected["reason"],
            "prompt": rejected["prompt"],
            "audio_type": rejected["audio_type"],
            "requested_duration_s": rejected["duration"],
            "task_id": None,
            "extra": rejected["extra"],
            "manifest": rejected["sheet"],
            "line": rejected["line"],
        }
    )
    both = pd.concat([accepted, refused]).sort_values(["manifest", "line"], kind="stable")
    return both.reindex(columns=list(MANIFEST_COLUMNS)).reset_index(drop=True)
