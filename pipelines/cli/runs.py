"""What the commands that launch a run share (`harvest`, `generate`): the checks before it, the
instance at DAGSTER_HOME, and the failure said as one last line, naming the command to run
again."""

import os
import traceback
from pathlib import Path

from pipelines.cli.output import EXIT_FAILED, EXIT_OPERATOR, EXIT_STOPPED, err_console, stop
from pipelines.instance_home import prepare

PROJECT = Path(__file__).resolve().parents[2]


def check_storage_options() -> None:
    """SOUNDHARVEST_STORAGE_OPTIONS that cannot be used stops here, before any run."""
    from resources.storage import StorageSettingError, storage_options_from_env

    try:
        storage_options_from_env()
    except StorageSettingError as exc:
        stop(str(exc), EXIT_OPERATOR)


def check_api_key() -> None:
    if not os.environ.get("CAMB_API_KEY", "").strip():
        stop("CAMB_API_KEY is not set: export CAMB_API_KEY=<your key>", EXIT_OPERATOR)


def span(days: list[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}...{days[-1]}"


def stopped(days: list[str], command: str) -> None:
    stop(f"stopped as told; run `soundharvest {command} {span(days)}` to go on", EXIT_STOPPED)


def print_traceback(verbose: bool) -> None:
    if verbose:
        err_console.print(traceback.format_exc(), markup=False)


def instance_at_home():
    """The instance at DAGSTER_HOME; a missing folder, or one without a dagster.yaml, gets
    pipelines/dagster.yaml (the pool, the project's event log storage), and its storage is set up
    here, once, before any run."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        stop(
            f"DAGSTER_HOME is not set: export DAGSTER_HOME={PROJECT / '.dagster_home'} "
            "(any folder; the UI reads the same)",
            EXIT_OPERATOR,
        )
    path = Path(home)
    if path.exists() and not path.is_dir():
        stop(f"DAGSTER_HOME={home} is not a directory: point it at a folder", EXIT_OPERATOR)
    from dagster import DagsterInstance

    try:
        # A new home gets the project's instance config; its storages are created once, under
        # a lock, so two commands started at once on it never race (pipelines/instance_home.py).
        config = path / "dagster.yaml"
        prepare(path, None if config.exists() else PROJECT / "pipelines" / "dagster.yaml")
        instance = DagsterInstance.get()
        instance.get_runs(limit=1)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        stop(
            f"the Dagster instance at {home} cannot be used: {first}: "
            "check its dagster.yaml (soundharvest doctor)",
            EXIT_OPERATOR,
        )
    return instance


def fail_run(days: list[str], launched, command: str) -> None:
    """Everything the failures said, then the last line: the reason and what to do."""
    again = f"soundharvest {command} {span(days)}"
    if not launched.failures:
        stop(f"run {launched.run_id} failed: {again} -v shows why", EXIT_FAILED)
    if any(f.interrupted for f in launched.failures):
        stopped(days, command)
    operator = next((f for f in launched.failures if f.operator), None)
    first = operator or launched.failures[0]
    lines = [line for f in launched.failures for line in f.message.splitlines() if line.strip()]
    reason = first.message.strip().splitlines()[0]
    for line in lines:
        if line != reason:
            err_console.print(f"  {line}", markup=False, soft_wrap=True)
    if operator:
        said = "a setting to fix: nothing was retried" if first.setting else "nothing was retried"
        stop(f"{first.step}: {reason} ({said})", EXIT_OPERATOR)
    stop(
        f"{first.step}: {reason} (run `{again}` again once it is fixed or has passed; done "
        "days are kept)",
        EXIT_FAILED,
    )
