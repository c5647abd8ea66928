"""`soundharvest`: the command for people: `doctor`, `generate`, `harvest`, `status`.

One small click module per command; the work lives in plain modules beside them
(`checks`, `launch`, `report`), and errors become one readable line here, at the edge.
Dagster, pandas and pyarrow are imported inside the commands, so `--help` starts quickly.
"""

import click

from pipelines.cli.doctor import doctor
from pipelines.cli.generate import generate
from pipelines.cli.harvest import harvest
from pipelines.cli.output import EXIT_CODES
from pipelines.cli.status import status


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES,
)
def cli() -> None:
    """Harvest CAMB.AI text-to-sound runs into WAV files and a Parquet catalog.

    \b
      soundharvest doctor --day 2026-11-01     is the setup right? (seconds)
      soundharvest generate 2026-11-04         submit a day's prompt sheets
      soundharvest harvest 2026-11-01          harvest one day
      soundharvest harvest 2026-11-01...2026-11-03 --features
      soundharvest status --since 2026-11-01   what the catalog says

    Settings come from the environment (CAMB_API_KEY, CAMB_API_BASE_URL,
    SOUNDHARVEST_*_ROOT, DAGSTER_HOME, ...): see the README.
    """


cli.add_command(doctor)
cli.add_command(generate)
cli.add_command(harvest)
cli.add_command(status)


def main() -> None:
    cli(prog_name="soundharvest")
