"""Pairs of items that share a key: the step both similarity searches block with."""

from collections.abc import Iterator

import numpy as np


def same_key_pairs(keys: np.ndarray) -> np.ndarray:
    """Every pair (i, j), i < j, of positions holding equal keys: int64 (pairs, 2).

    Quadratic in the size of each key's bucket, linear in the rest: the keys are meant to
    put only a few items together."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    two = starts[sizes == 2]  # the common case, at once
    pairs = [np.sort(np.stack([order[two], order[two + 1]], axis=1), axis=1).astype(np.int64)]
    for start, size in zip(starts[sizes > 2], sizes[sizes > 2], strict=True):
        members = np.sort(order[start : start + size])
        first, second = np.triu_indices(size, k=1)
        pairs.append(np.stack([members[first], members[second]], axis=1).astype(np.int64))
    return np.vstack(pairs)


def nearby_key_pairs(keys: np.ndarray, position: np.ndarray, window: int) -> Iterator[np.ndarray]:
    """Pairs (i, j), i < j, of positions holding equal keys and at most ``window`` apart when
    each key's items are ordered by ``position``: int64 (pairs, 2), one array per distance
    (each at most as long as ``keys``, so a caller can filter them as they come).

    A key of up to ``window + 1`` items gives all its pairs, as ``same_key_pairs`` does; a
    crowded key gives each item its ``window`` nearest by position (the sorted neighbourhood
    of record linkage), so the pairs grow with the items, never with their square."""
    order = np.lexsort((position, keys))
    ordered = keys[order]
    for step in range(1, min(window, len(keys) - 1) + 1):
        same = np.flatnonzero(ordered[step:] == ordered[:-step])
        first, second = order[same], order[same + step]
        yield np.stack([np.minimum(first, second), np.maximum(first, second)], axis=1).astype(
            np.int64
        )
