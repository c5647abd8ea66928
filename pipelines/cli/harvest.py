"""`soundharvest harvest D | A...B`: harvest days, watch them, end with what the catalog says."""

import datetime as dt
import re
import time

import click
from rich.markup import escape

from pipelines.cli.output import EXIT_FAILED, EXIT_OPERATOR, console, err_console, stop
from pipelines.cli.runs import (
    check_api_key,
    check_storage_options,
    fail_run,
    instance_at_home,
    print_traceback,
    span,
    stopped,
)

ASSETS = ["run_manifest", "sound_files", "sound_catalog"]
FEATURES = "sound_features"
COMMAND = "harvest"
# The harvest's own progress lines (assets/harvest/day_harvest.py): the plan, then done/total.
_PLAN = re.compile(r"^(\d{4}-\d\d-\d\d): \d+ runs: .* (\d+) to adopt, (\d+) to fetch")
_DONE = re.compile(r"^(\d{4}-\d\d-\d\d): (\d+)/(\d+) runs")
_DAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d: ")
PLAIN_EVERY_S = 10.0


def parse_days(text: str) -> list[str]:
    """`D` or `A...B` (inclusive) as a list of days; a usage error when it is not one."""
    first, sep, last = text.partition("...")
    try:
        start = dt.date.fromisoformat(first)
        end = dt.date.fromisoformat(last) if sep else start
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected a day D or a range A...B (YYYY-MM-DD)"
        ) from None
    today = dt.datetime.now(dt.UTC).date()
    if end < start:
        raise click.BadParameter(f"{text!r}: the range ends before it starts")
    if end >= today:
        raise click.BadParameter(f"{text!r}: a day can be harvested once it has ended (UTC)")
    _check_first_day(text, start)
    return [(start + dt.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _check_first_day(text: str, start: dt.date) -> None:
    """A day before the first daily partition is a usage error here, before any run (Dagster
    would fail the run on an invariant)."""
    from assets.harvest.settings import FIRST_DAY_VARIABLE, SettingsError, first_day

    try:
        first = first_day()
    except SettingsError:
        return  # not a day at all: the definitions do not load, said as a setting to fix
    if start < first:
        raise click.BadParameter(
            f"{text!r}: {start} is before {FIRST_DAY_VARIABLE}={first}, the first day of the "
            f"daily partitions: harvest from {first} on, or export {FIRST_DAY_VARIABLE}={start}"
        )


@click.command(
    short_help="Harvest a day or a range of days.",
    epilog="Exit status: 0 every day materialized; 1 a run failed (an API outage, a day that "
    "failed: run it again later); 2 bad arguments (a day before SOUNDHARVEST_FIRST_DAY too); "
    "3 an operator's mistake (the last line names the setting or file to fix); 130 stopped by "
    "Ctrl-C or SIGTERM.",
)
@click.argument("days", metavar="D | A...B", callback=lambda _c, _p, v: parse_days(v))
@click.option("--features", is_flag=True, help="Also measure sound_features for the days.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Dagster's own log on the console, and tracebacks."
)
def harvest(days: list[str], features: bool, verbose: bool) -> None:
    """Materialize run_manifest, sound_files and sound_catalog (and sound_features with
    --features) for day D or the days A...B in one run, through pipelines.definitions and
    the Dagster instance at DAGSTER_HOME, so the run shows in the UI as any other.

    Shows progress per day, then a table per day read from the catalog (ok, pending,
    failed, rejected, new files) and the most frequent failure reasons. On failure the last
    line says why and what to do.

    \b
      soundharvest harvest 2026-11-01
      soundharvest harvest 2026-10-01...2026-10-31 --features
    """
    check_api_key()
    check_storage_options()
    assets = [*ASSETS, FEATURES] if features else ASSETS
    instance = instance_at_home()
    from pipelines.cli.day_runs import mark_dead
    from pipelines.cli.launch import harvest_job, launch

    mark_dead(instance, "soundharvest harvest")  # a killed run's day is free again

    try:
        job = harvest_job()
    except Exception as exc:  # a structural setting (executor, backfill size, first day)
        print_traceback(verbose)
        stop(f"the definitions do not load: {exc}: fix the setting named", EXIT_OPERATOR)
    with _Progress(days, assets, verbose) as progress:
        try:
            launched = launch(
                job, instance, days, assets, on_event=progress.event, quiet=not verbose
            )
        except KeyboardInterrupt:
            stopped(days, COMMAND)
        except Exception as exc:
            print_traceback(verbose)
            stop(f"the run could not be launched: {type(exc).__name__}: {exc}", EXIT_FAILED)
    _summary(days, launched.run_id, complete=launched.success)
    if launched.success:
        console.print(f"[green]harvested {span(days)}[/] (run {launched.run_id})")
        return
    if verbose:
        for failed in launched.failures:
            err_console.print(failed.traceback, markup=False)
    fail_run(days, launched, COMMAND)


def _summary(days: list[str], run_id: str, *, complete: bool) -> None:
    """The table per day and the top reasons, read back from the catalog, with the files run
    `run_id` stored. After a complete run a day without rows had no manifest (a row of zeros);
    otherwise it may be undone."""
    from pipelines.cli.report import read_catalog, report, stored_by, tables
    from resources.storage import Storage
    from resources.storage.roots import root_url

    try:
        storage = Storage(root_url("catalog"))
        rows = read_catalog(storage, days=days)
        new = stored_by(storage, days, run_id)
    except Exception as exc:  # the failure (last line) says more than this
        err_console.print(f"(the catalog could not be read for the summary: {exc})")
        return
    if rows is None or (rows.empty and not complete):
        console.print("no catalog rows for these days yet")
        return
    shown = days if complete else ()
    summary = report(storage.uri("sound_catalog"), rows, new=new, days=shown)
    for table in tables(summary, new=True):
        console.print(table)


class _Progress:
    """A bar per day on a terminal; plain lines (at most every 10 s per day) otherwise."""

    def __init__(self, days: list[str], assets: list[str], verbose: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.assets, self.verbose = assets, verbose
        self.live = console.is_terminal and not verbose
        self.done: dict[str, set[str]] = {day: set() for day in days}
        self.fetch: dict[str, tuple[int, int]] = {}
        self.said: dict[str, float] = {}
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stage]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.live,
        )
        self.tasks = {
            day: self.bars.add_task(day, total=len(assets), stage="waiting") for day in days
        }

    def __enter__(self) -> "_Progress":
        self.bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bars.stop()

    def event(self, entry) -> None:
        from dagster import DagsterEventType

        event = entry.dagster_event
        if event is None:
            self._message(entry)
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            day, asset = materialization.partition, materialization.asset_key.to_user_string()
            if day in self.done and asset in self.assets:
                self.done[day].add(asset)
                self._show(day, f"{asset} done", force=True)
        elif event.event_type == DagsterEventType.STEP_START and self._plain(event.step_key):
            console.print(f"{event.step_key}: started", soft_wrap=True)

    def _plain(self, step: str | None) -> bool:
        """A plain line for this step's start: not on a terminal, one of ours (not a check's)."""
        return not self.live and step in self.assets

    def _message(self, entry) -> None:
        text = entry.user_message or ""
        if match := _PLAN.match(text):
            day, adopt, fetch = match[1], int(match[2]), int(match[3])
            self.fetch[day] = (0, adopt + fetch)
            self._show(day, f"{adopt + fetch} runs to fetch", force=True)
        elif match := _DONE.match(text):
            day = match[1]
            self.fetch[day] = (int(match[2]), int(match[3]))
            self._show(day, f"{match[2]}/{match[3]} runs")
        elif entry.level >= 30 and _DAY_LINE.match(text) and not self.verbose:
            for line in text.splitlines():  # a day's warnings, as the steps said them
                console.print(f"[yellow]![/] {escape(line)}", soft_wrap=True)

    def _show(self, day: str, stage: str, *, force: bool = False) -> None:
        if day not in self.tasks:
            return
        done, total = self.fetch.get(day, (0, 0))
        in_fetch = "sound_files" not in self.done[day] and total
        completed = len(self.done[day]) + (done / total if in_fetch else 0)
        self.bars.update(self.tasks[day], completed=completed, stage=stage)
        now = time.monotonic()
        if not self.live and (force or now - self.said.get(day, 0) >= PLAIN_EVERY_S):
            self.said[day] = now
            console.print(f"{day}: {stage}", soft_wrap=True)
