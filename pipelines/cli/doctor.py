"""`soundharvest doctor`: is the setup right? One line per check, the fix under each failure."""

import click

from pipelines.cli.output import EXIT_FAILED, console, day_option, mark


@click.command(
    epilog="Exit status: 0 when no check failed (warnings allowed), 1 when any check failed."
)
@day_option(
    "--day",
    "The day whose manifests to read and whose runs give a real download URL "
    "(default: yesterday, UTC, the day the schedule harvests next).",
)
def doctor(day: str | None) -> None:
    """Check the setup in seconds, before any data moves: the API key; that the API answers,
    at the right base URL path, and accepts the key; that the download policy admits the
    storage host of a real result URL; that every storage root can be written, read back
    and cleaned (local or s3://); that the day's manifests parse; the Dagster instance at
    DAGSTER_HOME and its camb_api pool. Costs no generation: only results are asked for.

    \b
      soundharvest doctor
      soundharvest doctor --day 2026-11-01
    """
    from pipelines.cli import checks

    day = day or checks.yesterday()
    results = [checks.api_key(), checks.settings()]
    if (first_day := checks.first_day()) is not None:
        results.append(first_day)
    manifest, run_ids, task_ids = checks.manifests(day)
    results += checks.connection(run_ids, task_ids)
    results += checks.storage_roots()
    results.append(manifest)
    results += checks.dagster_instance()
    for check in results:
        console.print(f"{mark(check.ok)} {check.name}: {check.detail}", soft_wrap=True)
        if check.ok is not True and check.fix:  # a warning says what to do too
            console.print(f"    fix: {check.fix}", soft_wrap=True)
    failed = sum(check.ok is False for check in results)
    warned = sum(check.ok is None for check in results)
    summary = f"{len(results)} checks: {failed} failed, {warned} warnings or not checked"
    if failed:
        console.print(f"[red]{summary}[/]")
        raise SystemExit(EXIT_FAILED)
    console.print(f"[green]{summary}[/]")
