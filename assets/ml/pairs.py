"""Pairs of items that share a key: the step both similarity searches block with."""

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
