"""The one partitioning of the pipeline: a UTC day, `YYYY-MM-DD`.

It lives beside the assets (not in `pipelines/`) because assets are declared with it and
dependencies point one way, pipelines -> assets -> resources. Today's partition exists
only once the day has ended, so a scheduled run always harvests a complete day.
"""

import datetime as dt
from collections.abc import Mapping

from dagster import DailyPartitionsDefinition

from assets.harvest.settings import first_day

PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

# The first day manifests may exist for; a structural setting read when definitions load.
FIRST_DAY = first_day().isoformat()

daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")


def run_tags(first: str, last: str | None = None) -> dict[str, str]:
    """Tags of one run over the day `first`, or the days first..last as a single-run backfill
    (and `dagster asset materialize --partition-range`) gives them."""
    if last is None:
        return {PARTITION_TAG: first}
    return {RANGE_TAGS[0]: first, RANGE_TAGS[1]: last}


def run_days(tags: Mapping[str, str]) -> list[str]:
    """The days a run covers, from the tags `run_tags` gives (none for an unpartitioned run)."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if not all(tag in tags for tag in RANGE_TAGS):
        return []
    first, last = (dt.date.fromisoformat(tags[tag]) for tag in RANGE_TAGS)
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
