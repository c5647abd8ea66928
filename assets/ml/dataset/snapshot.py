"""A versioned dataset snapshot on any fsspec storage, and the ``LATEST`` pointer to it.

```
{DATASET_ROOT}/LATEST                       the newest complete version
{DATASET_ROOT}/v=<version>/README.md        dataset card (+ plots/*.png)
{DATASET_ROOT}/v=<version>/hf/<split>-0000i-of-0000N.parquet
{DATASET_ROOT}/v=<version>/nemo/<split>.jsonl
{DATASET_ROOT}/v=<version>/webdataset/<split>-00000i.tar
{DATASET_ROOT}/v=<version>/manifest.json    every file with size and sha256, config, counts
{DATASET_ROOT}/_state/assignments/draw=<draw>.parquet   run_id -> split and group_id, kept
                                            from snapshot to snapshot (group_by: similarity)
```

Every file is published whole (``Storage``), ``manifest.json`` last; then every file listed
is checked in place, and only then does ``LATEST`` move. A crash anywhere before leaves
``LATEST`` on the previous version; a directory without ``manifest.json`` is an unfinished
attempt, rewritten by the next build of the same version. A version whose files are all in
place is not written again.
"""

import io
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from assets.ml.dataset.card import PLOTS, card, plots, split_summary, summary_frame
from assets.ml.dataset.exports import (
    SnapshotError,
    SnapshotFiles,
    write_hf,
    write_nemo,
    write_webdataset,
)
from assets.ml.dataset.selection import (
    Selection,
    by_split,
    read_fingerprints,
    read_rows,
    select,
    snapshot_version,
)
from assets.ml.dataset.spec import SPLITS, DatasetSpec
from assets.ml.dataset.split_shares import SplitShares, split_shares
from resources.storage import Storage

LATEST = "LATEST"
MANIFEST = "manifest.json"
ASSIGNMENTS = "_state/assignments"  # sticky splits, one file per draw (seed and ratios)


@dataclass(frozen=True)
class Snapshot:
    selection: Selection
    version: str | None  # None: nothing selected, nothing written
    uri: str | None = None  # of the version directory
    written: bool = False  # False: the version was already complete
    manifest: dict[str, Any] | None = None
    plots: dict[str, bytes] | None = None
    shares: SplitShares | None = None  # of the selection (also when already written)


def version_dir(version: str) -> str:
    return f"v={version}"


def read_latest(storage: Storage) -> str | None:
    try:
        return storage.read_bytes(LATEST).decode().strip() or None
    except FileNotFoundError:
        return None


def build_snapshot(
    catalog: Storage, out: Storage, spec: DatasetSpec, *, log: logging.Logger | Any = None
) -> Snapshot:
    """Select, version and (unless already complete) write a snapshot; then move LATEST."""
    log = log or logging.getLogger(__name__)
    spec.check()
    sticky = spec.group_by == "similarity"
    previous = read_assignments(out, spec) if sticky else None
    fingerprints = read_fingerprints(catalog) if sticky else None
    selection = select(read_rows(catalog), spec, previous, fingerprints)
    if not selection.rows.num_rows:
        return Snapshot(selection, None)
    version = snapshot_version(selection.rows, spec)
    shares = split_shares(selection.rows, spec)
    if shares.problems():
        log.warning(shares.warning())
    prefix = version_dir(version)
    manifest = complete_manifest(out, prefix)
    written = manifest is None
    if written:
        log.info(f"writing snapshot {version}: {selection.rows.num_rows} clips")
        manifest = write_snapshot(out, prefix, selection, spec, version, shares)
        missing = misplaced(out, prefix, manifest)
        if missing:
            raise SnapshotError(f"snapshot {version}: files not in place after writing: {missing}")
    else:
        log.info(f"snapshot {version} is already complete: nothing to write")
    if sticky:  # before LATEST moves: a crash between leaves splits no snapshot has shown
        write_assignments(out, spec, previous, selection)
    if read_latest(out) != version:
        out.write_bytes(f"{version}\n".encode(), LATEST)
    pngs = {name: out.read_bytes(f"{prefix}/{name}") for name in PLOTS.values()}
    return Snapshot(selection, version, out.uri(prefix), written, manifest, pngs, shares)


def assignments_relpath(spec: DatasetSpec) -> str:
    return f"{ASSIGNMENTS}/draw={spec.draw()}.parquet"


def read_assignments(out: Storage, spec: DatasetSpec) -> pl.DataFrame | None:
    """(run_id, split, group_id) of every run a snapshot of this draw has placed, None before
    the first (files written before group ids have no group_id)."""
    try:
        return pl.read_parquet(io.BytesIO(out.read_bytes(assignments_relpath(spec))))
    except FileNotFoundError:
        return None


def write_assignments(
    out: Storage, spec: DatasetSpec, previous: pl.DataFrame | None, selection: Selection
) -> None:
    """The splits and group ids of this snapshot's runs, and of earlier runs it left out (a
    filter may bring them back: they come back to their split and group)."""
    assert selection.assignments is not None
    columns = [pl.col("run_id").cast(pl.Int64), "split", pl.col("group_id").cast(pl.Int64)]
    current = selection.assignments.select(columns)
    if previous is not None:
        if "group_id" not in previous.columns:
            previous = previous.with_columns(group_id=pl.lit(None, pl.Int64))
        earlier = previous.select(columns)
        current = pl.concat([earlier.join(current, on="run_id", how="anti"), current])
    buffer = io.BytesIO()
    current.sort("run_id").write_parquet(buffer, compression="zstd")
    out.write_bytes(buffer.getvalue(), assignments_relpath(spec), if_changed=True)


def write_snapshot(
    out: Storage,
    prefix: str,
    selection: Selection,
    spec: DatasetSpec,
    version: str,
    shares: SplitShares,
) -> dict[str, Any]:
    rows = selection.rows
    with tempfile.TemporaryDirectory(prefix="soundharvest-dataset-") as workdir:
        files = SnapshotFiles(out, prefix, Path(workdir))
        hf_globs = {}
        for split, part in by_split(rows).items():
            if not part.num_rows:
                continue
            if "hf" in spec.formats:
                write_hf(files, split, part, spec)
                hf_globs[split] = f"hf/{split}-*.parquet"
            if "nemo" in spec.formats:
                write_nemo(files, split, part)
            if "webdataset" in spec.formats:
                write_webdataset(files, split, part, spec)
        summary_rows = summary_frame(rows)
        for name, png in plots(summary_rows).items():
            files.put(png, name)
        groups = None if selection.groups is None else selection.groups.as_dict()
        readme = card(
            summary_rows,
            spec,
            version,
            selection.dropped,
            hf_globs,
            groups,
            selection.without_features,
            shares,
        )
        files.put(readme.encode(), "README.md")
        summary = split_summary(summary_rows)
        manifest = {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": spec.canonical(),
            "counts": {split: int(summary.loc[split, "clips"]) for split in SPLITS},
            "hours": {split: round(float(summary.loc[split, "hours"]), 6) for split in SPLITS},
            "considered": selection.considered,
            "dropped": selection.dropped,
            "groups": groups,
            "split_shares": shares.as_dict(),
            "files": [w.__dict__ for w in sorted(files.written, key=lambda w: w.path)],
        }
        # Written last: its presence marks the directory complete.
        out.write_bytes(json.dumps(manifest, indent=2).encode(), f"{prefix}/{MANIFEST}")
    return manifest


def complete_manifest(out: Storage, prefix: str) -> dict[str, Any] | None:
    """The manifest of a finished snapshot whose files are all in place, else None."""
    try:
        manifest = json.loads(out.read_bytes(f"{prefix}/{MANIFEST}"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None if misplaced(out, prefix, manifest) else manifest


def misplaced(out: Storage, prefix: str, manifest: dict[str, Any]) -> list[str]:
    """Files of ``manifest`` missing or of another size (their sha256 was checked when
    each was published)."""
    sizes: dict[str, dict[str, int]] = {}
    bad = []
    for entry in manifest["files"]:
        folder, _, name = f"{prefix}/{entry['path']}".rpartition("/")
        if folder not in sizes:
            sizes[folder] = out.sizes(folder)
        if sizes[folder].get(name) != entry["size"]:
            bad.append(entry["path"])
    return bad


def total_bytes(manifest: dict[str, Any]) -> int:
    return sum(int(entry["size"]) for entry in manifest["files"])


def split_frame(manifest: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"clips": manifest["counts"], "hours": manifest["hours"]})
