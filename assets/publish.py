"""One day's catalog partition, published from the pipeline's records, and its checks.

`sound_catalog` publishes each day of its step this way. When a range run stops early,
`sound_files` publishes the days it completed the same way, since `sound_catalog` does not
run after a failed upstream step and those days' catalogs would otherwise wait for a rerun.
"""

from dataclasses import dataclass

import pandas as pd

from assets.core.catalog import assemble, parquet_bytes, validate_invariants
from assets.core.harvest import stored_sizes
from assets.ranges import DayProblem
from assets.state import read_state
from resources.storage import Storage

CHECKS = {
    "one_row_per_manifest_row": "Every manifest row has exactly one catalog row.",
    "catalog_contract": "Run ids unique per day among rows that are not rejected; ok rows have "
    "uri, size and sha256; every other row has an error, which shows no URL query or key.",
    "ok_files_exist": "Every ok row's file exists with its recorded size.",
}


def catalog_relpath(day: str) -> str:
    return f"sound_catalog/date={day}/part-0.parquet"


@dataclass(frozen=True)
class DayCatalog:
    rows: pd.DataFrame
    findings: dict[str, str]  # check name -> problem found, "" where the check holds


def publish_day(day: str, catalog_store: Storage, audio: Storage) -> DayCatalog:
    """Assemble the day's catalog from its manifest and files ledger and replace its file."""
    manifest = read_state(catalog_store, "run_manifest", day)
    files = read_state(catalog_store, "sound_files", day)
    if manifest is None or files is None:
        raise DayProblem("materialize run_manifest and sound_files first")
    catalog = assemble(manifest, files)
    catalog_store.write_bytes(parquet_bytes(catalog), catalog_relpath(day))
    return DayCatalog(catalog, check_day(day, manifest, catalog, audio))


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
