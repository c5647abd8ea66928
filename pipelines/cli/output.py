"""What every command shares on the way out: exit codes, marks, the one-line error."""

import datetime as dt
import sys
from collections.abc import Callable
from typing import NoReturn

import click
from rich.console import Console

EXIT_OK = 0
EXIT_FAILED = 1  # a run failed (an outage, a day that failed), or a doctor check failed
EXIT_USAGE = 2  # click's own: a bad argument or option
EXIT_OPERATOR = 3  # a setting, key, URL, storage root or manifest is wrong: fix it, run again
EXIT_STOPPED = 130  # told to stop (Ctrl-C, SIGTERM): the shell's code for SIGINT

EXIT_CODES = """\b
Exit status:
  0  success
  1  a run failed (API outage, a day that failed) or a doctor check failed: see the last line
  2  bad arguments or options
  3  an operator's mistake (key, base URL, storage root, full disk, DAGSTER_HOME, a manifest
     that cannot be parsed): the last line names the setting or file and the fix
  130  stopped by Ctrl-C or SIGTERM (days that completed are kept)"""

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

OK_MARK, FAIL_MARK, SKIP_MARK = "[green]✓[/]", "[red]✗[/]", "[yellow]-[/]"


def mark(ok: bool | None) -> str:
    return OK_MARK if ok else SKIP_MARK if ok is None else FAIL_MARK


def stop(message: str, code: int) -> NoReturn:
    """End the command with `message` as the last line (stderr) and exit status `code`."""
    err_console.print(f"[red]soundharvest:[/] {message}", soft_wrap=True)
    sys.exit(code)


def day_option(flag: str, help: str) -> Callable:
    """An option holding one day, `YYYY-MM-DD`; anything else is a usage error (exit 2)."""

    def day(_context: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        try:
            return value and dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)") from None

    return click.option(flag, metavar="DAY", callback=day, help=help)
