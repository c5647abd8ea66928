"""Which runs must share a split (``group_by: similarity``), and what the card says of them.

Runs are linked when their prompts are near-copies (``prompt_similarity``) or their clips
the same sound (``audio_fingerprint``); linked runs form a group (connected components,
scipy), and a group never spans two splits. `assign` gives the groups their splits the sticky
way `splits.py` says (``sticky_splits``): a run keeps the split it had in the previous
snapshot (``previous``: run id -> split and group id, kept in the dataset root per draw, see
``snapshot.py``), a new run joins the split of the earlier runs of its group, groups without
earlier runs are placed knowing their sizes. A group whose earlier runs already sit in two
splits (a new run bridged them, or the thresholds changed) keeps them where they are, and its
new runs go where they leak least. These runs are counted (``bridged``), and so are the links
still crossing splits.

Every run gets a group id (`stable_group_ids`) that stays with it from snapshot to snapshot:
the runs of a group in one split share the id most of its earlier runs carried, and a group
without earlier runs takes its lowest run id. So a new run joining a group takes the group's
id; a new run bridging two groups of one split merges them under the id of the larger (the
smaller's runs take it: one id per linked group is what makes grouped folds leak-free); groups
it bridges across two splits keep their own ids, one per split.

The counts for the card compare with the rule before this one (a hash of the normalised
prompt): how many of the links found it would have put in two splits.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from assets.ml.audio_fingerprint import audio_links, profile_matrix
from assets.ml.dataset.spec import SPLITS, DatasetSpec
from assets.ml.dataset.splits import previous_assignments, sticky_splits
from assets.ml.prompt_similarity import prompt_links, reduce_prompt

# bit masks of splits: which splits the runs of one prompt sit in
_CROSSES = np.array([[bin(a | b).count("1") > 1 for b in range(8)] for a in range(8)], dtype=int)


@dataclass(frozen=True)
class GroupStats:
    """What the card says about the groups (every count over the selected runs)."""

    groups: int = 0
    largest_group: int = 0
    prompt_links: int = 0  # pairs of distinct normalised prompts that are near-copies
    audio_links: int = 0  # pairs of clips that are the same sound
    prompt_links_split_before: int = 0  # of those, split apart by the prompt-hash rule
    audio_links_split_before: int = 0
    links_split_now: int = 0  # crossing splits in this snapshot (bridging leaves some)
    kept: int = 0  # runs that kept their split from the previous snapshot
    bridged: int = 0  # new runs of groups already in two splits
    near_audio_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def audio_pairs(
    frame: pl.DataFrame,
    fingerprints: Callable[[np.ndarray], list[bytes]],
    spec: DatasetSpec,
) -> np.ndarray:
    """Row pairs of ``frame`` whose clips are the same sound."""
    return audio_links(
        profile_matrix(frame["audio_profile"].to_arrow()),
        frame["duration_s"].fill_null(0.0).to_numpy(),
        fingerprints,
        spec.audio_similarity,
    )


def near_audio_keep(frame: pl.DataFrame, pairs: np.ndarray) -> np.ndarray:
    """A mask of the rows to keep: one per cluster of the same sound, the earliest (day, then
    run id)."""
    labels = linked_groups(len(frame), pairs)
    order = np.lexsort((frame["run_id"].to_numpy(), frame["date"].to_numpy().astype(str)))
    keep = np.zeros(len(frame), dtype=bool)
    _, first = np.unique(labels[order], return_index=True)
    keep[order[first]] = True
    return keep


def assign(
    frame: pl.DataFrame,
    audio: np.ndarray,
    spec: DatasetSpec,
    previous: pl.DataFrame | None,
    old_splits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, GroupStats]:
    """The split of every row of ``frame`` (run_id, prompt, ...) as indexes into SPLITS,
    its group id, and the counts for the card. ``audio``: row pairs of the same sound;
    ``old_splits``: each row's split under the prompt-hash rule (for the comparison)."""
    n = len(frame)
    if not n:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), GroupStats()
    # Distinct normalised prompts ("" for runs without one) in polars: no Python string per
    # row. A dense rank numbers them in the order of the sorted distinct values.
    keys = frame["_prompt_key"].unique().sort().to_numpy().astype(str)
    prompt_of_row = (frame["_prompt_key"].rank("dense") - 1).to_numpy().astype(np.int64)
    reduced = np.array([reduce_prompt(key, spec.take_numbers) for key in keys], dtype=str)
    texts, reduced_of_key = np.unique(reduced, return_inverse=True)
    prompt_of_row, reduced_of_key = prompt_of_row.ravel(), reduced_of_key.ravel()
    real = np.array([bool(t) for t in texts])  # "" (no prompt, or no words): no link
    text_links = prompt_links(list(texts), spec.prompt_similarity)
    text_links = text_links[real[text_links].all(axis=1)] if len(text_links) else text_links

    # Nodes: rows 0..n-1, then one per reduced prompt text; rows meet through their text.
    with_text = real[reduced_of_key[prompt_of_row]]
    rows_to_text = np.stack(
        [np.flatnonzero(with_text), n + reduced_of_key[prompt_of_row][with_text]], axis=1
    )
    edges = np.vstack([rows_to_text, n + text_links, audio]).astype(np.int64)
    labels = linked_groups(n + len(texts), edges)[:n]
    _, labels, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    labels = labels.ravel()

    before, group_before = previous_assignments(frame, previous)
    run_ids = frame["run_id"].to_numpy()
    split, kept, bridged = sticky_splits(run_ids, labels, before, spec)
    group_ids = stable_group_ids(run_ids, labels, split, group_before)

    # The counts: prompt links between distinct normalised prompts, audio links between runs.
    key_real = real[reduced_of_key] & (keys != "")
    old_mask = _masks(prompt_of_row, old_splits, len(keys))
    new_mask = _masks(prompt_of_row, split, len(keys))
    links, split_before = _prompt_crossings(old_mask, reduced_of_key, key_real, text_links)
    _, split_now = _prompt_crossings(new_mask, reduced_of_key, key_real, text_links)
    a, b = audio[:, 0], audio[:, 1]
    stats = GroupStats(
        groups=len(sizes),
        largest_group=int(sizes.max(initial=0)),
        prompt_links=links,
        audio_links=len(audio),
        prompt_links_split_before=split_before,
        audio_links_split_before=int((old_splits[a] != old_splits[b]).sum()),
        links_split_now=split_now + int((split[a] != split[b]).sum()),
        kept=kept,
        bridged=bridged,
    )
    return split, group_ids, stats


def stable_group_ids(
    run_ids: np.ndarray, labels: np.ndarray, split: np.ndarray, before: np.ndarray
) -> np.ndarray:
    """Each row's group id: per group and split, the id most of its earlier runs carried
    (``before``, -1 for none; ties to the lowest id), else its lowest run id, which no other
    group's id can be (that run would carry its id from then on)."""
    part = labels.astype(np.int64) * len(SPLITS) + split
    parts, part = np.unique(part, return_inverse=True)
    part = part.ravel()
    ids = np.full(len(parts), np.iinfo(np.int64).max)
    np.minimum.at(ids, part, run_ids)
    carried = before >= 0
    if carried.any():
        pairs, votes = np.unique(
            np.stack([part[carried], before[carried]], axis=1), axis=0, return_counts=True
        )
        # per part, the most votes, then the lowest id: the first after this sort
        order = np.lexsort((pairs[:, 1], -votes, pairs[:, 0]))
        first = np.unique(pairs[order, 0], return_index=True)[1]
        ids[pairs[order[first], 0]] = pairs[order[first], 1]
    return ids[part]


def linked_groups(nodes: int, edges: np.ndarray) -> np.ndarray:
    """Each node's group: the connected components of the links ``edges`` (pairs, 2)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(nodes, nodes)
    )
    return connected_components(graph, directed=False)[1]


def _masks(prompt_of_row: np.ndarray, split: np.ndarray, keys: int) -> np.ndarray:
    """Per normalised prompt, the bit mask of the splits its runs sit in."""
    masks = np.zeros(keys, dtype=np.int64)
    np.bitwise_or.at(masks, prompt_of_row, 1 << split.astype(np.int64))
    return masks


def _prompt_crossings(
    masks: np.ndarray, reduced_of_key: np.ndarray, real: np.ndarray, text_links: np.ndarray
) -> tuple[int, int]:
    """(pairs of distinct normalised prompts linked, of which in two splits): prompts of one
    reduced text are linked to each other, and to every prompt of a linked text."""
    counts = np.zeros((reduced_of_key.max(initial=-1) + 1, 8), dtype=np.int64)
    np.add.at(counts, (reduced_of_key[real], masks[real]), 1)
    per_text = counts.sum(axis=1)
    links = int((per_text * (per_text - 1) // 2).sum())
    within = np.einsum("rm,mk,rk->r", counts, _CROSSES, counts)
    crossing = int(((within - counts @ np.diag(_CROSSES)) // 2).sum())
    if len(text_links):
        a, b = text_links[:, 0], text_links[:, 1]
        links += int((per_text[a] * per_text[b]).sum())
        crossing += int(np.einsum("lm,mk,lk->", counts[a], _CROSSES, counts[b]))
    return links, crossing
