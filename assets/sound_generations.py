"""`sound_generations`: each day's prompt sheets submitted under a budget, each generation once."""

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    asset,
)
from pydantic import Field

from assets.generation.generation_plan import Options
from assets.generation.generation_step import IN_DOUBT_CHECK, GenerationStep
from assets.partitions import daily_partitions
from resources.camb_resource import CambResource
from resources.storage_resource import StorageResource


class GenerationConfig(Config):
    regenerate: bool = Field(
        default=False,
        description="Ask for a new generation of every row (a new round of its key), even "
        "of rows already created.",
    )
    resubmit_in_doubt: bool = Field(
        default=False,
        description="Send again the day's creates whose answer was lost (maybe created and "
        "charged already).",
    )


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool="camb_api",  # creates share the API's limit with the harvest
    group_name="generation",
    kinds={"parquet"},
    check_specs=[
        AssetCheckSpec(
            IN_DOUBT_CHECK,
            asset="sound_generations",
            description="Generations sent whose answer was lost, so that they may have been "
            "created and charged (WARN): never sent again unless asked "
            "(`soundharvest generate D --resubmit-in-doubt`); names the days and counts.",
        )
    ],
)
def sound_generations(
    context: AssetExecutionContext,
    config: GenerationConfig,
    camb: CambResource,
    storage: StorageResource,
) -> MaterializeResult:
    """Each day's prompt sheets (`SOUNDHARVEST_PROMPT_ROOT`: CSV, JSONL, Parquet) submitted to
    `POST /text-to-sound`, every generation at most once, on any day, by any run.

    A bad row is rejected with its reason and never sent; rows over the budget
    (`SOUNDHARVEST_GENERATE_*`) wait, deferred, for a later run; a 402 stops the day's
    submissions at once. Each create's intent is written before it is sent: a create whose
    answer is lost is in doubt, never sent again unless asked. Created tasks go on to
    `run_manifest` and the harvest (docs/generation.md).
    """
    options = Options(config.regenerate, config.resubmit_in_doubt)
    return GenerationStep.start(context, camb, storage, options).run()
