"""`soundharvest status`: what the catalog says, and how each day's latest run went, on one
screen."""

import json
from dataclasses import asdict

import click

from pipelines.cli.output import EXIT_OPERATOR, console, day_option, err_console, stop

SHOWN_DAYS = 31  # without --since or --day: the latest days, so it fits one screen


@click.command(
    epilog="Exit status: 0 shown, 3 the catalog root cannot be read, or neither it nor the "
    "Dagster instance knows of any day."
)
@day_option("--since", "Days from DAY on (default: the latest 31 days).")
@day_option("--day", "One day only.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
def status(since: str | None, day: str | None, as_json: bool) -> None:
    """Per-day counts by status (ok, pending, failed, rejected), the oldest day still
    pending and the most frequent failure reasons, read from the catalog under
    SOUNDHARVEST_CATALOG_ROOT (any fsspec URL); with a Dagster instance at DAGSTER_HOME, also
    each day's latest run (ok, failed and why, killed, running, queued), after marking
    failed the runs whose process is gone. A day with no catalog partition is shown when its
    latest run failed, was killed or has not ended.

    \b
      soundharvest status
      soundharvest status --since 2026-11-01
      soundharvest status --day 2026-11-02 --json | jq .days
    """
    from pipelines.cli.generation_report import generation_days, read_generations, summarize
    from pipelines.cli.report import empty_catalog, read_catalog, report, with_runs
    from resources.storage import Storage, StorageError
    from resources.storage.roots import ROOTS, root_url

    if since and day:
        raise click.UsageError("give --since or --day, not both")
    variable = ROOTS["catalog"][0]
    try:
        storage = Storage(root_url("catalog"))
        rows = read_catalog(storage, days=[day] if day else None, since=since)
        generating = [date for date in generation_days(storage) if _asked(date, since, day)]
    except (StorageError, OSError) as exc:
        stop(f"cannot read the catalog: {exc}: check {variable}", EXIT_OPERATOR)
    catalog = storage.uri("sound_catalog")
    runs = {date: run for date, run in _day_runs().items() if _asked(date, since, day)}
    if rows is None and not runs and not generating:
        stop(
            f"no catalog at {catalog}: nothing harvested yet (soundharvest harvest DAY), "
            f"or {variable} points elsewhere",
            EXIT_OPERATOR,
        )
    rows = empty_catalog() if rows is None else rows
    troubled = {date for date, run in runs.items() if run.state != "ok"}
    dates = sorted(set(rows["date"].unique()) | troubled | set(generating))
    hidden = len(dates) - SHOWN_DAYS if not since and not day else 0
    if hidden > 0:
        rows = rows[rows["date"] >= dates[hidden]]
    kept = set(dates[max(hidden, 0) :])
    shown = with_runs(report(catalog, rows), runs, lambda date: date in kept)
    generated = summarize(storage, read_generations(storage, sorted(kept & set(generating))))
    if as_json:
        data = shown.as_json(new=False)
        data["generations"] = [asdict(counts) for counts in generated]
        click.echo(json.dumps(data, indent=2))
        return
    _print(shown, generated, hidden)


def _print(shown, generated: list, hidden: int) -> None:
    """The catalog's tables, then the generations' (when any day has prompt sheets)."""
    from pipelines.cli.generation_report import days_table
    from pipelines.cli.report import tables

    for table in tables(shown, new=False):
        console.print(table)
    if generated:
        console.print(days_table(generated))
    if hidden > 0:
        console.print(f"({hidden} earlier days not shown: --since DAY shows them)")
    if shown.oldest_pending:
        console.print(f"oldest pending day: {shown.oldest_pending}")
    elif not shown.days:
        console.print("no catalog rows for these days")


def _asked(date: str, since: str | None, day: str | None) -> bool:
    if day:
        return date == day
    return since is None or date >= since


def _day_runs() -> dict:
    """Each day's latest run from the instance at DAGSTER_HOME, dead runs marked first; none
    without an instance (the catalog alone is shown)."""
    from pipelines.cli.day_runs import existing_instance, latest_runs, mark_dead

    try:
        instance = existing_instance()
        if instance is None:
            return {}
        with instance:
            mark_dead(instance, "soundharvest status")
            return latest_runs(instance)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        err_console.print(
            f"(the Dagster instance at DAGSTER_HOME cannot be read, so runs are not shown: "
            f"{first})",
            soft_wrap=True,
        )
        return {}
