"""`ml_dataset`: a versioned, leak-free training snapshot of the whole catalog."""

import base64
from typing import TYPE_CHECKING

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetObservation,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.harvest.day_summary import markdown_table
from assets.ml.dataset.card import PLOTS, groups_table
from assets.ml.dataset.spec import DatasetConfigError, DatasetSpec
from assets.sound_catalog import sound_catalog
from assets.sound_features import sound_features
from assets.steps.metadata import mib
from resources.storage_resource import StorageResource

if TYPE_CHECKING:  # the snapshot's machinery loads on use (polars)
    from assets.ml.dataset.split_shares import SplitShares


class DatasetConfig(Config, DatasetSpec):
    """Selection, splits and exports; every field is documented in docs/ml.md."""


SHARES_CHECK = "split_shares"


@asset(
    deps=[sound_catalog, sound_features],
    group_name="ml",
    kinds={"parquet", "json"},
    output_required=False,
    check_specs=[
        AssetCheckSpec(
            SHARES_CHECK,
            asset="ml_dataset",
            description="Each split's share of the clips within 5 points of its ratio, and no "
            "split asked for left empty (WARN): when a group too large to move decides the "
            "shares, the snapshot is still written and this names the largest groups with "
            "their prompts.",
        )
    ],
)
def ml_dataset(context: AssetExecutionContext, config: DatasetConfig, storage: StorageResource):
    """`{DATASET_ROOT}/v=<version>/`: HF Parquet, NeMo JSONL, WebDataset shards, a card and a
    manifest, with `{DATASET_ROOT}/LATEST` moved only once the snapshot is complete.

    Unchanged input gives the same version and writes nothing. A selection left empty
    writes nothing, leaves LATEST alone, and says why (an observation, no materialization).
    """
    # The snapshot's machinery (polars and the exporters) loads here, on use, not with the
    # definitions that every CLI start, code server and daemon loads.
    from assets.ml.dataset.exports import SnapshotError
    from assets.ml.dataset.snapshot import build_snapshot, split_frame, total_bytes

    try:
        spec = DatasetSpec(**config.model_dump()).check()
    except DatasetConfigError as exc:
        raise Failure(description=f"ml_dataset config: {exc}") from None
    out = storage.datasets()
    try:
        snapshot = build_snapshot(storage.catalog(), out, spec, log=context.log)
    except SnapshotError as exc:
        raise Failure(description=str(exc)) from None
    if snapshot.version is None:
        why = snapshot.selection.why_empty()
        context.log.warning(f"no snapshot written, LATEST left alone: {why}")
        yield AssetObservation(asset_key="ml_dataset", metadata={"no_snapshot": why})
        yield _shares_check(None, f"no snapshot written: {why}")
        return
    assert snapshot.manifest is not None and snapshot.plots is not None
    assert snapshot.shares is not None
    splits = split_frame(snapshot.manifest)
    png = base64.b64encode(snapshot.plots[PLOTS["duration"]]).decode()
    groups = snapshot.manifest.get("groups")
    yield MaterializeResult(
        metadata={
            "version": snapshot.version,
            "path": MetadataValue.path(snapshot.uri or ""),
            "card": (MetadataValue.path if out.is_local() else MetadataValue.url)(
                f"{(snapshot.uri or '').rstrip('/')}/README.md"
            ),
            "written": snapshot.written,
            **{f"{split} clips": MetadataValue.int(int(n)) for split, n in splits["clips"].items()},
            "audio (h)": MetadataValue.float(round(float(splits["hours"].sum()), 4)),
            "size (MiB)": MetadataValue.float(mib(total_bytes(snapshot.manifest))),
            "splits": MetadataValue.md(_splits_table(splits)),
            "runs dropped": MetadataValue.md(_dropped_table(snapshot.selection.dropped)),
            **({"similarity groups": MetadataValue.md(groups_table(groups))} if groups else {}),
            "durations": MetadataValue.md(f"![clip durations](data:image/png;base64,{png})"),
        }
    )
    yield _shares_check(snapshot.shares, snapshot.shares.warning())


def _shares_check(shares: "SplitShares | None", failure: str) -> AssetCheckResult:
    """Passed when the shares are near the ratios; else a warning that says why (the UI shows
    the description without a click), with the shares and the largest groups as tables."""
    metadata = {}
    if shares is not None:
        metadata = {
            "shares": MetadataValue.md(markdown_table(shares.table())),
            "largest groups": MetadataValue.md(markdown_table(shares.largest_table())),
        }
    return AssetCheckResult(
        check_name=SHARES_CHECK,
        passed=not failure,
        severity=AssetCheckSeverity.WARN,
        description=failure or None,
        metadata=metadata,
    )


def _splits_table(splits: pd.DataFrame) -> str:
    """Clips (integers) and audio hours per split, and the total."""
    table = splits.rename(columns={"hours": "audio (h)"}).rename_axis("split").reset_index()
    table.loc[len(table)] = ["total", int(splits["clips"].sum()), splits["hours"].sum()]
    return markdown_table(table, floatfmt=".4f")


def _dropped_table(dropped: dict[str, int]) -> str:
    """Runs left out of the snapshot, by reason (as the card says them)."""
    counted = {why: n for why, n in dropped.items() if n}
    if not counted:
        return "none"
    return markdown_table(pd.DataFrame({"reason": list(counted), "runs": list(counted.values())}))
