"""The Dagster assets, one file each, over their plain modules: steps/, harvest/, ml/."""

import warnings

from dagster import BetaWarning

# BackfillPolicy is marked beta in Dagster 1.13, yet it is the documented way to run a
# partition range in one run; one warning per asset on every load helps nobody.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")
