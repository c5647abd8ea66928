"""Which split each run of a snapshot gets: the one draw, and the rules that use it.

The draw (`split_of`): a key's place in [0, 1), a BLAKE2b hash of `split_seed` and the key,
against the ratios: train below `train_ratio`, then validation, then test. The same key draws
the same split in every process; a new seed or new ratios draw afresh.

Which key draws, by `group_by`:

- `similarity` (the default): a group of linked runs (`groups.py`: near-copy prompts, the
  same sound) shares one split, and assignment is sticky (`sticky_splits`): a run keeps the
  split it had in the previous snapshot (`previous_assignments`), a new run joins the split
  of its group's earlier runs (the one holding most of them, ties to train, then
  validation), and groups without earlier runs are placed knowing their sizes
  (`place_groups`): largest first, each where it brings the shares nearest the ratios, and
  where several splits have room for it, drawn among them with `run:<its lowest run id>`;
- `prompt`: `prompt:<normalised prompt>` (`group_keys`; runs without one by run id), so a
  prompt never lands in two splits (`hash_assignments`);
- `run_id`: `run:<run id>`.

No `from __future__ import annotations` here: `DatasetSpec` is the base of a Dagster Config.
"""

import hashlib
import math
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


def group_id_of(key: str) -> int:
    """The group id of a hash-drawn group: the run id of `run:<run id>`, else 63 bits of the
    key's BLAKE2b hash (unsalted: the same prompt has the same id under every seed)."""
    if key.startswith("run:"):
        return int(key[4:])
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def hash_splits(rows: pl.DataFrame, spec: DatasetSpec, group_by: str) -> pl.Series:
    """Each row's split under `group_by: prompt` or `run_id`: its group key's draw."""
    return hash_assignments(rows, spec, group_by, ids=False)["split"]


def hash_assignments(
    rows: pl.DataFrame, spec: DatasetSpec, group_by: str, ids: bool = True
) -> pl.DataFrame:
    """Each row's split (and with ``ids`` its group id, `group_id_of`) under `group_by:
    prompt` or `run_id`: the keys built once, one hash per distinct key, joined back."""
    keys = group_keys(rows, group_by)
    distinct = keys.unique().to_list()
    table = {"group": distinct, "split": [split_of(key, spec) for key in distinct]}
    schema = {"group": pl.String, "split": pl.String}
    if ids:
        table["group_id"], schema["group_id"] = [group_id_of(key) for key in distinct], pl.Int64
    drawn = pl.DataFrame(table, schema=schema)
    joined = keys.to_frame("group").join(drawn, on="group", how="left", maintain_order="left")
    return joined.drop("group")


def previous_assignments(
    frame: pl.DataFrame, previous: pl.DataFrame | None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's split in the previous snapshot (index into SPLITS) and its group id there,
    -1 where it had none (a state file written before group ids has splits only)."""
    if previous is None or previous.is_empty():
        return np.full(len(frame), -1), np.full(len(frame), -1)
    index = {name: i for i, name in enumerate(SPLITS)}
    group = pl.col("group_id") if "group_id" in previous.columns else pl.lit(None)
    earlier = previous.select(
        pl.col("run_id").cast(pl.Int64),
        pl.col("split").replace_strict(index, default=-1, return_dtype=pl.Int64).alias("was"),
        group.cast(pl.Int64).alias("group_was"),
    )
    joined = frame.select(pl.col("run_id").cast(pl.Int64)).join(
        earlier, on="run_id", how="left", maintain_order="left"
    )
    return joined["was"].fill_null(-1).to_numpy(), joined["group_was"].fill_null(-1).to_numpy()


def sticky_splits(
    run_ids: np.ndarray, labels: np.ndarray, before: np.ndarray, spec: DatasetSpec
) -> tuple[np.ndarray, int, int]:
    """(split per row, rows kept where they were, new rows of groups in two splits)."""
    groups = labels.max(initial=-1) + 1
    held = before >= 0
    counts = np.zeros((groups, len(SPLITS)), dtype=np.int64)
    np.add.at(counts, (labels[held], before[held]), 1)
    choice = counts.argmax(axis=1)  # most earlier runs; ties: the first of SPLITS
    is_fresh = counts.sum(axis=1) == 0
    fresh = np.flatnonzero(is_fresh)
    lowest = np.full(groups, np.iinfo(np.int64).max)
    np.minimum.at(lowest, labels, run_ids)
    sizes = np.bincount(labels, minlength=groups)
    joining = ~held & ~is_fresh[labels]  # new runs of groups with earlier runs
    placed = np.bincount(before[held], minlength=len(SPLITS))
    placed += np.bincount(choice[labels[joining]], minlength=len(SPLITS))
    choice[fresh] = place_groups(sizes[fresh], lowest[fresh], placed, spec)
    split = np.where(held, before, choice[labels])
    spanning = (counts > 0).sum(axis=1) > 1
    return split, int(held.sum()), int((~held & spanning[labels]).sum())


def place_groups(
    sizes: np.ndarray, firsts: np.ndarray, placed: np.ndarray, spec: DatasetSpec
) -> np.ndarray:
    """The split (index into SPLITS) of each new group, whose rows number ``sizes`` and
    whose lowest run ids are ``firsts``, when ``placed`` rows already sit in each split:
    largest first (groups of one size oldest first), each where the shares end nearest
    the ratios (the sum of the splits' distances to their targets, in rows). Where several
    splits have room for the whole group, they are equally near, and the group's point
    (`split_point` of `run:<first>`) draws among them, [0, 1) cut in proportion to the room
    each has left: a draw still, which keeps filling the splits evenly; with room everywhere
    at the start, it draws as `split_of` does. A group larger than the whole target of
    validation or test goes to train.

    On a first snapshot every split ends within the largest group's size of its target (a
    split short by more than that had room for every group, so no group went over elsewhere;
    a split over took a group that had room nowhere), hence within 5 points when no group
    holds 5 % of the rows. Later snapshots place new groups toward the targets from where
    the earlier runs sit."""
    ratios = [spec.train_ratio, spec.validation_ratio, spec.test_ratio]
    total = int(placed.sum() + sizes.sum())
    room = [ratio * total - n for ratio, n in zip(ratios, placed.tolist(), strict=True)]
    limits = [math.inf, *(ratio * total for ratio in ratios[1:])]
    points = [split_point(f"run:{first}", spec.split_seed) for first in firsts.tolist()]
    choice = np.empty(len(sizes), dtype=np.int64)
    # Not ordered by the point: the first groups of a size would all draw the first split.
    for group in np.lexsort((firsts, -sizes)).tolist():
        size = int(sizes[group])
        costs = [
            math.inf if size > limit else -size if left >= size else abs(left - size) - abs(left)
            for left, limit in zip(room, limits, strict=True)
        ]
        best = min(costs)
        tied = [s for s, cost in enumerate(costs) if cost <= best + 1e-9]
        pick = _drawn(tied, room, points[group])
        room[pick] -= size
        choice[group] = pick
    return choice


def _drawn(tied: list[int], room: list[float], point: float) -> int:
    """The split of ``tied`` that ``point`` falls in when [0, 1) is cut in proportion to the
    room they have left (the first when none has any)."""
    weights = [max(room[s], 0.0) for s in tied]
    total = sum(weights)
    if len(tied) == 1 or total <= 0:
        return tied[0]
    edge = 0.0
    for split, weight in zip(tied, weights, strict=True):
        edge += weight / total
        if point < edge:
            return split
    return tied[-1]
