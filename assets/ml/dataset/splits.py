"""Which split each run of a snapshot gets: the one draw, and the rules that use it.

The draw (`split_of`): a key's place in [0, 1), a BLAKE2b hash of `split_seed` and the key,
against the ratios: train below `train_ratio`, then validation, then test. The same key draws
the same split in every process; a new seed or new ratios draw afresh.

Which key draws, by `group_by`:

- `similarity` (the default): a group of linked runs (`groups.py`: near-copy prompts, the
  same sound) shares one split, and assignment is sticky (`sticky_splits`): a run keeps the
  split it had in the previous snapshot (`previous_splits`), a new run joins the split of
  its group's earlier runs (the one holding most of them, ties to train, then validation), and
  a group without earlier runs draws with `run:<its lowest run id>`;
- `prompt`: `prompt:<normalised prompt>` (`group_keys`; runs without one by run id), so a
  prompt never lands in two splits (`hash_splits`);
- `run_id`: `run:<run id>`.

No `from __future__ import annotations` here: `DatasetSpec` is the base of a Dagster Config.
"""

import hashlib
import unicodedata

import numpy as np
import polars as pl

from assets.ml.dataset.spec import SPLITS, DatasetSpec


def normalise_prompt(prompt: str | None) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: "A  Dog barks " == "a dog barks"."""
    return " ".join(unicodedata.normalize("NFKC", prompt or "").casefold().split())


def normalised_prompts(rows: pl.DataFrame) -> pl.Series:
    """Each row's prompt normalised ("" for none). In Python, once per distinct prompt, so
    the rule is exactly `normalise_prompt` (str.casefold and all), whatever the row count."""
    distinct = rows["prompt"].drop_nulls().unique()
    return rows["prompt"].replace_strict(
        distinct, [normalise_prompt(p) for p in distinct], default="", return_dtype=pl.String
    )


def group_keys(rows: pl.DataFrame, group_by: str) -> pl.Series:
    """`prompt:<normalised prompt>`, or `run:<run id>` (for runs without a prompt too)."""
    by_run = pl.lit("run:") + pl.col("run_id").cast(pl.String)
    if group_by == "run_id":
        return rows.select(by_run.alias("group"))["group"]
    normalised = normalised_prompts(rows)
    group = pl.when(normalised != "").then(pl.lit("prompt:") + normalised).otherwise(by_run)
    return rows.select(group.alias("group"))["group"]


def split_point(key: str, seed: str) -> float:
    """Where ``key`` falls in [0, 1): the first 8 bytes of a BLAKE2b hash, the same in every
    process and Python version (unlike ``hash()``)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(key: str, spec: DatasetSpec) -> str:
    """The split ``key`` draws: train below the train ratio, then validation, then test."""
    point = split_point(key, spec.split_seed)
    if point < spec.train_ratio:
        return "train"
    return "validation" if point < spec.train_ratio + spec.validation_ratio else "test"


def split_table(groups: pl.Series, spec: DatasetSpec) -> pl.DataFrame:
    """(group, split) for every distinct group: one hash per group, not per row."""
    distinct = groups.unique()
    return pl.DataFrame(
        {"group": distinct, "split": [split_of(key, spec) for key in distinct]},
        schema={"group": pl.String, "split": pl.String},
    )


def hash_splits(rows: pl.DataFrame, spec: DatasetSpec, group_by: str) -> pl.Series:
    """Each row's split under `group_by: prompt` or `run_id`: its group key's draw."""
    groups = group_keys(rows, group_by)
    table = split_table(groups, spec)
    return groups.replace_strict(table["group"], table["split"])


def previous_splits(frame: pl.DataFrame, previous: pl.DataFrame | None) -> np.ndarray:
    """Each row's split in the previous snapshot (index into SPLITS), -1 where it had none."""
    if previous is None or previous.is_empty():
        return np.full(len(frame), -1)
    index = {name: i for i, name in enumerate(SPLITS)}
    earlier = previous.select(
        pl.col("run_id").cast(pl.Int64),
        pl.col("split").replace_strict(index, default=-1, return_dtype=pl.Int64).alias("was"),
    )
    joined = frame.select(pl.col("run_id").cast(pl.Int64)).join(
        earlier, on="run_id", how="left", maintain_order="left"
    )
    return joined["was"].fill_null(-1).to_numpy()


def sticky_splits(
    run_ids: np.ndarray, labels: np.ndarray, before: np.ndarray, spec: DatasetSpec
) -> tuple[np.ndarray, int, int]:
    """(split per row, rows kept where they were, new rows of groups in two splits)."""
    groups = labels.max(initial=-1) + 1
    held = before >= 0
    counts = np.zeros((groups, len(SPLITS)), dtype=np.int64)
    np.add.at(counts, (labels[held], before[held]), 1)
    choice = counts.argmax(axis=1)  # most earlier runs; ties: the first of SPLITS
    fresh = np.flatnonzero(counts.sum(axis=1) == 0)
    lowest = np.full(groups, np.iinfo(np.int64).max)
    np.minimum.at(lowest, labels, run_ids)
    order = {name: i for i, name in enumerate(SPLITS)}
    choice[fresh] = [order[split_of(f"run:{lowest[g]}", spec)] for g in fresh]
    split = np.where(held, before, choice[labels])
    spanning = (counts > 0).sum(axis=1) > 1
    return split, int(held.sum()), int((~held & spanning[labels]).sum())
