"""The one partitioning of the pipeline: a UTC day, `YYYY-MM-DD`.

It lives beside the assets (not in `pipelines/`) because assets are declared with it and
dependencies point one way, pipelines -> assets -> resources. Today's partition exists
only once the day has ended, so a scheduled run always harvests a complete day.
"""

import os

from dagster import DailyPartitionsDefinition

# The first day manifests may exist for; a structural setting read when definitions load.
FIRST_DAY = os.environ.get("SOUNDHARVEST_FIRST_DAY", "2024-01-01")

daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
