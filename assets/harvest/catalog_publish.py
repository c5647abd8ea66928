"""One day's catalog partition, published from the pipeline's records, and its checks.

`sound_catalog` publishes each day of its step this way. When a range run stops early,
`sound_files` publishes the days it completed the same way, since `sound_catalog` does not
run after a failed upstream step and those days' catalogs would otherwise wait for a rerun.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from assets.harvest.catalog_rows import assemble, parquet_bytes, row_keys, validate_invariants
from assets.harvest.day_fingerprint import Fingerprints, file_stamp, listing_stamp
from assets.harvest.day_plan import stored_sizes
from assets.harvest.day_summary import DaySummary
from assets.harvest.records import read_state, state_relpath
from assets.harvest.sweep import SweepPolicy, final_sweep_key, given_up_rows, mark_given_up
from assets.harvest.task_map import TASK_STATE, has_tasks
from assets.steps.days import DayProblem, day_ranges
from assets.steps.failures import operator_failure
from assets.steps.metadata import check_result
from resources.storage import Storage

CHECKS = {
    "one_row_per_manifest_row": "Every manifest row has exactly one catalog row.",
    "catalog_contract": "Keys (the run id, else the task id of a task that never resolved) "
    "unique per day among rows that are not rejected; ok rows have uri, size and sha256; every "
    "other row has an error, which shows no URL query or key.",
    "ok_files_exist": "Every ok row's file exists with its recorded size.",
}
# A warning, not an error: runs not ready yet are normal; the pending sweep comes back for them.
PENDING_CHECK = "no_pending_runs"
PENDING_DESCRIPTION = "Days whose catalog still has pending rows (WARN), with their counts."
_PENDING_SCHEMA = TableSchema(
    columns=[TableColumn("day", "string"), TableColumn("pending rows", "int")]
)
SHOWN_DAYS = 10  # a failing check names at most this many days one by one, then day ranges
RUN_KEY_TAG = "dagster/run_key"  # the run key a sensor gave the run (Dagster's own tag)
CHECK_SPECS = [
    AssetCheckSpec(name, asset="sound_catalog", description=description)
    for name, description in {**CHECKS, PENDING_CHECK: PENDING_DESCRIPTION}.items()
]


def catalog_relpath(day: str) -> str:
    return f"sound_catalog/date={day}/part-0.parquet"


@dataclass(frozen=True)
class DayCatalog:
    summary: DaySummary
    findings: dict[str, str]  # check name -> problem found, "" where the check holds

    @property
    def pending(self) -> int:
        return self.summary.count("pending")


def final_sweep(context: AssetExecutionContext, day: str) -> bool:
    """Whether this run is the pending sweep's last run of `day`, the one that gives up."""
    return context.run.tags.get(RUN_KEY_TAG) == final_sweep_key(day)


def sweep_policy() -> SweepPolicy:
    """The pending sweep's policy of this step; a bad setting fails it naming the variable."""
    try:
        return SweepPolicy.from_env()
    except ValueError as exc:
        raise operator_failure(str(exc)) from None


def catalog_fingerprints(
    catalog_store: Storage, audio: Storage, sweep: SweepPolicy
) -> Fingerprints:
    return Fingerprints(catalog_store, "sound_catalog", audio=audio.uri(""), sweep=repr(sweep))


def publish_day(
    day: str,
    catalog_store: Storage,
    audio: Storage,
    sweep: SweepPolicy,
    prints: Fingerprints | None = None,
    *,
    final_sweep: bool = False,
) -> DayCatalog:
    """Assemble the day's catalog from its manifest and files ledger and replace its file.

    In the sweep's final run of the day (`final_sweep`), its pending rows say that soundharvest
    gave up waiting; rows that said so before keep saying it while they stay pending
    (`assets/harvest/sweep.py`). With `prints`, a complete day whose inputs and catalog did not
    change since its last publish is not assembled again (`assets/harvest/day_fingerprint.py`).
    """

    def inputs() -> str:
        assert prints is not None
        paths = [state_relpath(a, day) for a in ("run_manifest", "sound_files", TASK_STATE)]
        stamps = [file_stamp(catalog_store, p) for p in [*paths, catalog_relpath(day)]]
        return prints.stamp(stamps, listing_stamp(audio, day))

    if prints is not None and (summary := prints.unchanged(day, inputs())) is not None:
        return DayCatalog(summary, dict.fromkeys(CHECKS, ""))
    manifest = read_state(catalog_store, "run_manifest", day)
    files = read_state(catalog_store, "sound_files", day)
    if manifest is None or files is None:
        raise DayProblem("materialize run_manifest and sound_files first")
    tasks = read_state(catalog_store, TASK_STATE, day) if has_tasks(manifest) else None
    catalog, now = assemble(manifest, files, tasks), datetime.now(UTC)
    if sweep.gave_up(day, now):  # only past the horizon can a row have been given up on
        given_up = set() if final_sweep else given_up_rows(catalog_store, day)
        catalog = mark_given_up(
            catalog, day, now, sweep, final_sweep=final_sweep, given_up=given_up
        )
    # A rerun that changed nothing finds the same bytes there and writes nothing.
    catalog_store.write_bytes(parquet_bytes(catalog), catalog_relpath(day), if_changed=True)
    published = DayCatalog(DaySummary.of(catalog), check_day(day, manifest, catalog, audio))
    if prints is not None and not any(published.findings.values()):
        prints.record(day, inputs(), published.summary)
    return published


def check_results(days: Mapping[str, DayCatalog]) -> list[AssetCheckResult]:
    """The checks of `sound_catalog` over the days published: ERROR ones, then the WARN. A
    failing check names its days in its description, which the UI shows without a click."""
    problems: dict[str, dict[str, str]] = {name: {} for name in CHECKS}  # name -> day -> problem
    for day, published in days.items():
        for name, problem in published.findings.items():
            if problem:
                problems[name][day] = problem
    results = [
        check_result(
            name,
            AssetCheckSeverity.ERROR,
            _listed(found, "; "),
            {"problems": MetadataValue.md("\n".join(f"- {p}" for p in found.values()))},
        )
        for name, found in problems.items()
    ]
    pending = {day: published.pending for day, published in days.items() if published.pending}
    by_day = [TableRecord({"day": day, "pending rows": n}) for day, n in pending.items()]
    listed = _listed({day: f"{day} ({n})" for day, n in pending.items()}, ", ")
    plural = "s" * (len(pending) != 1)
    waiting = f"{sum(pending.values()):,} pending rows on {len(pending)} day{plural}: {listed}"
    results.append(
        check_result(
            PENDING_CHECK,
            AssetCheckSeverity.WARN,
            waiting if pending else "",
            {"pending rows by day": MetadataValue.table(by_day, schema=_PENDING_SCHEMA)},
        )
    )
    return results


def _listed(by_day: Mapping[str, str], separator: str) -> str:
    """What is said of each day (each names its day), the first SHOWN_DAYS in full, the others
    as day ranges."""
    days = sorted(by_day)
    text = separator.join(by_day[day] for day in days[:SHOWN_DAYS])
    if rest := days[SHOWN_DAYS:]:
        text += f"{separator}and {len(rest)} more days: {day_ranges(rest)}"
    return text


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
    """(manifest file, task id, else run id) of every row, sorted: equal lists mean one row
    per row (a task id is carried unchanged, while its run id is learnt on the way)."""
    task_ids = frame.get("task_id", pd.Series(pd.NA, index=frame.index)).astype("string")
    ids = task_ids.fillna(row_keys(frame)).fillna("")
    return sorted(zip(frame["manifest"], ids, strict=True))
