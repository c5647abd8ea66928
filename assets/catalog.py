"""`sound_catalog`: one Parquet file per day describing every manifest row, and its checks."""

from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.audio import sound_files
from assets.core.catalog import assemble, parquet_bytes, validate_invariants
from assets.core.harvest import stored_sizes
from assets.core.sweep import SweepPolicy, mark_given_up
from assets.metadata import outcome_metadata
from assets.partitions import daily_partitions
from assets.state import read_state
from resources.storage import Storage
from resources.storage_resource import StorageResource

CHECKS = {
    "one_row_per_manifest_row": "Every manifest row has exactly one catalog row.",
    "catalog_contract": "Run ids unique per day among rows that are not rejected; ok rows have "
    "uri, size and sha256; every other row has an error, which shows no URL query or key.",
    "ok_files_exist": "Every ok row's file exists with its recorded size.",
}
# A warning, not an error: runs not ready yet are normal; the pending sweep comes back for them.
PENDING_CHECK = "no_pending_runs"
PENDING_DESCRIPTION = "Days whose catalog still has pending rows (WARN), with their counts."


@asset(
    deps=[sound_files],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="harvest",
    kinds={"parquet"},
    check_specs=[
        AssetCheckSpec(name, asset="sound_catalog", description=d)
        for name, d in {**CHECKS, PENDING_CHECK: PENDING_DESCRIPTION}.items()
    ],
)
def sound_catalog(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    """`{CATALOG_ROOT}/sound_catalog/date=D/part-0.parquet`, each day replaced atomically.

    Read the whole tree with pyarrow.dataset, pandas, DuckDB or Polars: hive partitioning
    gives the `date` column.
    """
    audio, catalog_store = storage.audio(), storage.catalog()
    problems: dict[str, list[str]] = {name: [] for name in CHECKS}
    pending: dict[str, int] = {}
    policy, now = SweepPolicy.from_env(), datetime.now(UTC)
    days = []
    for day in context.partition_keys:
        manifest = read_state(catalog_store, "run_manifest", day)
        files = read_state(catalog_store, "sound_files", day)
        if manifest is None or files is None:
            raise Failure(description=f"{day}: materialize run_manifest and sound_files first")
        catalog = mark_given_up(assemble(manifest, files), day, now, policy)
        catalog_store.write_bytes(
            parquet_bytes(catalog), f"sound_catalog/date={day}/part-0.parquet"
        )
        for name, problem in check_day(day, manifest, catalog, audio).items():
            if problem:
                problems[name].append(problem)
        if n := int((catalog["status"] == "pending").sum()):
            pending[day] = n
        days.append(catalog)
    return MaterializeResult(
        metadata=outcome_metadata(pd.concat(days, ignore_index=True)),
        check_results=[
            AssetCheckResult(
                check_name=name,
                passed=not found,
                severity=AssetCheckSeverity.ERROR,
                metadata={"problems": "; ".join(found) or "none"},
            )
            for name, found in problems.items()
        ]
        + [
            AssetCheckResult(
                check_name=PENDING_CHECK,
                passed=not pending,
                severity=AssetCheckSeverity.WARN,
                metadata={"pending_by_day": MetadataValue.json(pending)},
            )
        ],
    )


def check_day(
    day: str, manifest: pd.DataFrame, catalog: pd.DataFrame, audio: Storage
) -> dict[str, str]:
    """The checks' findings for one day: an empty string where a check holds."""
    ok = catalog[catalog["status"] == "ok"]
    sizes = stored_sizes(audio, day) if len(ok) else {}
    missing = [int(r.run_id) for r in ok.itertuples() if sizes.get(int(r.run_id)) != r.size_bytes]
    return {
        "one_row_per_manifest_row": ""
        if len(catalog) == len(manifest) and _row_keys(catalog) == _row_keys(manifest)
        else f"{day}: {len(manifest)} manifest rows but {len(catalog)} catalog rows",
        "catalog_contract": "; ".join(
            f"{day}: {problem}" for problem in validate_invariants(catalog)
        ),
        "ok_files_exist": ""
        if not missing
        else f"{day}: {len(missing)} ok rows without their file, e.g. {missing[:5]}",
    }


def _row_keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(manifest file, run id) of every row, sorted: equal lists mean one row per row."""
    return sorted(zip(frame["manifest"], map(str, frame["run_id"]), strict=True))
