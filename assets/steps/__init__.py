"""What every day-partitioned step does in Dagster: its days, its failures, its metadata, and
the dead runs it clears first (plain helpers of the assets)."""
