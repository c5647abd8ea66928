"""The one partitioning of the pipeline: a UTC day, `YYYY-MM-DD`.

It lives beside the assets (not in `pipelines/`) because assets are declared with it and
dependencies point one way, pipelines -> assets -> resources. Today's partition exists
only once the day has ended, so a scheduled run always harvests a complete day.
"""

from dagster import DailyPartitionsDefinition

from assets.core.settings import first_day

# The first day manifests may exist for; a structural setting read when definitions load.
FIRST_DAY = first_day().isoformat()

daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")


def run_tags(first: str, last: str | None = None) -> dict[str, str]:
    """Tags of one run over the day `first`, or the days first..last as a single-run backfill
    (and `dagster asset materialize --partition-range`) gives them."""
    if last is None:
        return {"dagster/partition": first}
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
