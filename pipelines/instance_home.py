"""A `DAGSTER_HOME` made ready before the project's commands use it.

Two Dagster commands started at once on a fresh SQLite home both create its storages, and
the second can crash (`UNIQUE constraint failed: alembic_version.version_num`). The
project's own commands (the demo, the `soundharvest` CLI) call `prepare` first: under an
exclusive lock of the home, it copies the instance config and creates the storages once, as
`dagster instance migrate` does in a deployment. Later calls find them and change nothing.
"""

import fcntl
import filecmp
import os
import shutil
from pathlib import Path


def prepare(home: Path, config: Path | None = None) -> Path:
    """`home` with `config` as its dagster.yaml (when given) and its storages created."""
    from dagster import DagsterInstance  # on use: the CLI's --help must not pay for it

    home.mkdir(parents=True, exist_ok=True)
    with (home / ".soundharvest-prepare.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        target = home / "dagster.yaml"
        if config is not None and not (target.exists() and filecmp.cmp(config, target, False)):
            shutil.copyfile(config, target)
        # The instance config may read DAGSTER_HOME (pipelines/dagster.yaml's event log does):
        # while the storages are made, it names this home.
        before = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(home)
        try:
            DagsterInstance.from_config(str(home)).dispose()
        finally:
            if before is None:
                del os.environ["DAGSTER_HOME"]
            else:
                os.environ["DAGSTER_HOME"] = before
    return home
