"""`soundharvest status`: what the catalog says, on one screen."""

import json

import click

from pipelines.cli.output import EXIT_OPERATOR, console, day_option, stop

SHOWN_DAYS = 31  # without --since or --day: the latest days, so it fits one screen


@click.command(
    epilog="Exit status: 0 shown, 3 the catalog root cannot be read or holds no catalog."
)
@day_option("--since", "Days from DAY on (default: the latest 31 days in the catalog).")
@day_option("--day", "One day only.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
def status(since: str | None, day: str | None, as_json: bool) -> None:
    """Per-day counts by status (ok, pending, failed, rejected), the oldest day still
    pending and the most frequent failure reasons, read from the catalog under
    SOUNDHARVEST_CATALOG_ROOT (any fsspec URL; no Dagster instance needed).

    \b
      soundharvest status
      soundharvest status --since 2026-11-01
      soundharvest status --day 2026-11-02 --json | jq .days
    """
    from pipelines.cli.report import read_catalog, report, tables
    from resources.roots import ROOTS, root_url
    from resources.storage import Storage, StorageError

    if since and day:
        raise click.UsageError("give --since or --day, not both")
    variable = ROOTS["catalog"][0]
    try:
        storage = Storage(root_url("catalog"))
        rows = read_catalog(storage, days=[day] if day else None, since=since)
    except (StorageError, OSError) as exc:
        stop(f"cannot read the catalog: {exc}: check {variable}", EXIT_OPERATOR)
    catalog = storage.uri("sound_catalog")
    if rows is None:
        stop(
            f"no catalog at {catalog}: nothing harvested yet (soundharvest harvest DAY), "
            f"or {variable} points elsewhere",
            EXIT_OPERATOR,
        )
    dates = sorted(rows["date"].unique())
    hidden = len(dates) - SHOWN_DAYS if not since and not day else 0
    if hidden > 0:
        rows = rows[rows["date"] >= dates[hidden]]
    shown = report(catalog, rows)
    if as_json:
        click.echo(json.dumps(shown.as_json(new=False), indent=2))
        return
    for table in tables(shown, new=False):
        console.print(table)
    if hidden > 0:
        console.print(f"({hidden} earlier days not shown: --since DAY shows them)")
    if shown.oldest_pending:
        console.print(f"oldest pending day: {shown.oldest_pending}")
    elif not shown.days:
        console.print("no catalog rows for these days")
