"""`ml_dataset`: a versioned, leak-free training snapshot of the whole catalog."""

import base64

import pandas as pd
from dagster import (
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


class DatasetConfig(Config, DatasetSpec):
    """Selection, splits and exports; every field is documented in docs/ml.md."""


@asset(
    deps=[sound_catalog, sound_features],
    group_name="ml",
    kinds={"parquet", "json"},
    output_required=False,
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
        return
    assert snapshot.manifest is not None and snapshot.plots is not None
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
