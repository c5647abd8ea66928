"""`soundharvest generate D | A...B`: submit the days' prompt sheets, or show what that would do."""

import click
from rich.markup import escape

from pipelines.cli.harvest import parse_days
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

COMMAND = "generate"
ASSET = "sound_generations"


@click.command(
    short_help="Submit the prompt sheets of a day or a range of days.",
    epilog="Exit status: 0 the days' sheets were submitted (rows over the budget wait, "
    "deferred); 1 a run failed, or the API is out of credits (the last line says what to do); "
    "2 bad arguments; 3 an operator's mistake (a refused key, a wrong base URL, a sheet that "
    "cannot be parsed: the last line names it); 130 stopped by Ctrl-C or SIGTERM.",
)
@click.argument("days", metavar="D | A...B", callback=lambda _c, _p, v: parse_days(v))
@click.option(
    "--dry-run", is_flag=True, help="Show what would be sent and what it would cost; send nothing."
)
@click.option(
    "--regenerate",
    is_flag=True,
    help="Ask for a new generation of every row, even of those already created (a new "
    "round of each key).",
)
@click.option(
    "--resubmit-in-doubt",
    is_flag=True,
    help="Send again the creates whose answer was lost (they may have been created and "
    "charged already).",
)
@click.option(
    "--verbose", "-v", is_flag=True, help="Dagster's own log on the console, and tracebacks."
)
def generate(
    days: list[str], dry_run: bool, regenerate: bool, resubmit_in_doubt: bool, verbose: bool
) -> None:
    """Submit the prompt sheets of day D (or of the days A...B) to the text-to-sound API:
    materializes sound_generations through pipelines.definitions and the Dagster instance at
    DAGSTER_HOME, so the run shows in the UI as any other. Each generation (prompt, duration,
    audio type, take) is sent at most once, on any day, by any run; bad rows are rejected
    with their reason, rows over the budget wait, deferred. `soundharvest harvest D` then
    fetches what they made (the daily job does both).

    \b
      soundharvest generate 2026-11-04 --dry-run
      soundharvest generate 2026-11-04
      soundharvest generate 2026-11-04 --resubmit-in-doubt
    """
    from assets.generation.generation_plan import Options

    options = Options(regenerate=regenerate, resubmit_in_doubt=resubmit_in_doubt)
    check_storage_options()
    if dry_run:
        _dry_run(days, options)
        return
    check_api_key()
    _submit(days, options, verbose)


def _dry_run(days: list[str], options) -> None:
    """Plan each day as the step would, from the sheets, the ledger and the budget."""
    from assets.generation.generation_plan import plan_day
    from assets.generation.limits import GenerationLimits
    from assets.generation.prompt_sheets import PromptSheetError
    from pipelines.cli.generation_report import budget_line, plan_table
    from resources.error_kinds import OperatorError
    from resources.storage import Storage
    from resources.storage.roots import ROOTS, root_url

    try:
        limits = GenerationLimits.from_env()
        state = Storage(root_url("catalog"), setting=ROOTS["catalog"][0])
        prompts = Storage(root_url("prompts"), setting=ROOTS["prompts"][0])
        plans = [plan_day(state, prompts, day, limits, options) for day in days]
    except PromptSheetError as exc:
        stop(f"prompt sheet cannot be read: {exc}: {exc.fix}", EXIT_OPERATOR)
    except OperatorError as exc:
        stop(str(exc), EXIT_OPERATOR)
    console.print(plan_table(plans))
    for plan in plans:
        for row in plan.plans:
            if row.status == "rejected":
                console.print(f"  rejected {row.row.where}: {row.reason}", soft_wrap=True)
    console.print(budget_line(plans[-1]), soft_wrap=True)
    sends = sum(len(plan.to_send()) for plan in plans)
    console.print(
        f"dry run: nothing was sent; `soundharvest generate {span(days)}` sends {sends} "
        f"generation{'s' * (sends != 1)}",
        soft_wrap=True,
    )


def _submit(days: list[str], options, verbose: bool) -> None:
    from pipelines.cli.day_runs import mark_dead
    from pipelines.cli.launch import harvest_job, launch

    instance = instance_at_home()
    mark_dead(instance, f"soundharvest {COMMAND}")
    try:
        job = harvest_job()
    except Exception as exc:  # a structural setting (executor, backfill size, first day)
        print_traceback(verbose)
        stop(f"the definitions do not load: {exc}: fix the setting named", EXIT_OPERATOR)
    config = {"regenerate": options.regenerate, "resubmit_in_doubt": options.resubmit_in_doubt}
    try:
        launched = launch(
            job,
            instance,
            days,
            [ASSET],
            on_event=_Lines(verbose).event,
            quiet=not verbose,
            ops={ASSET: {"config": config}},
        )
    except KeyboardInterrupt:
        stopped(days, COMMAND)
    except Exception as exc:
        print_traceback(verbose)
        stop(f"the run could not be launched: {type(exc).__name__}: {exc}", EXIT_FAILED)
    out_of_credits = _summary(days)
    if not launched.success:
        if verbose:
            for failed in launched.failures:
                err_console.print(failed.traceback, markup=False)
        fail_run(days, launched, COMMAND)
    if out_of_credits:
        stop(out_of_credits, EXIT_FAILED)
    console.print(
        f"[green]generated {span(days)}[/] (run {launched.run_id}); "
        f"`soundharvest harvest {span(days)}` fetches what they made",
        soft_wrap=True,
    )


def _summary(days: list[str]) -> str | None:
    """The table per day and the reasons, from the generation records; the line to end with
    when a day ran out of credits."""
    from pipelines.cli.generation_report import (
        days_table,
        read_generations,
        reasons_table,
        summarize,
        top_reasons,
    )
    from resources.storage import Storage
    from resources.storage.roots import root_url

    try:
        storage = Storage(root_url("catalog"))
        rows = read_generations(storage, days)
        counted = summarize(storage, rows)
    except Exception as exc:  # the failure (last line) says more than this
        err_console.print(f"(the generation records could not be read for the summary: {exc})")
        return None
    if counted:
        console.print(days_table(counted))
    if reasons := top_reasons(rows):
        console.print(reasons_table(reasons))
    for day, day_rows in rows.items():
        reasons = day_rows.loc[day_rows["status"] == "deferred", "reason"].dropna()
        if reasons.str.contains("out of credits").any():
            return (
                f"{day}: the API is out of credits (HTTP 402): top up the account's credits, "
                f"then run `soundharvest generate {span(days)}` again"
            )
    return None


class _Lines:
    """The generation step's own lines (its plan, what it sent, its warnings), as it says them."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def event(self, entry) -> None:
        if entry.dagster_event is not None or self.verbose:
            return
        text = entry.user_message or ""
        if entry.step_key == ASSET and text[:4].isdigit():
            mark = "[yellow]![/] " if entry.level >= 30 else ""
            console.print(f"{mark}{escape(text)}", soft_wrap=True)
