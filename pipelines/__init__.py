"""The Dagster code location: definitions, jobs, schedules, sensors, deployment choices, the
`soundharvest` command (cli/), the demo, and the instance's event log and run launcher."""
