"""Prompts that are near-copies of each other: "rain on a tin roof, take 3" and "take 4",
"door creak (loud)" and "loud door creak".

A prompt is reduced to its words (NFKC, case-folded, letters only: numbers and punctuation go,
and so do the take markers below), and compared as a set of shingles: its words and the
character trigrams of each word, so word order does not count and a plural or a small typo
costs little. Two prompts are similar when the Jaccard similarity of their shingle sets is
at least the threshold (docs/ml.md says how the default was chosen).

Finding the pairs is a MinHash LSH search (datasketch) over the distinct reduced prompts, run
at a lower threshold than asked so that it misses almost nothing, each candidate pair then
checked with its exact Jaccard similarity: the result does not depend on the hashing's luck
beyond that recall.
"""

import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from assets.ml.pairs import same_key_pairs

DEFAULT_THRESHOLD = (
    0.68  # between the farthest near-copy and the closest distinct pair (docs/ml.md)
)
NUM_PERM = 64
SEARCH_MARGIN = 0.15  # the LSH looks this far below the threshold; exact Jaccard decides
TAKE_MARKERS = frozenset({"take", "takes", "version", "variant", "alt", "v", "seed", "var"})
_WORDS = re.compile(r"[^\W\d_]+")


def reduce_prompt(prompt: str | None) -> str:
    """The words that count, sorted and space-joined ("" when none): "Take 3: Door-creak!"
    -> "creak door"."""
    text = unicodedata.normalize("NFKC", prompt or "").casefold()
    return " ".join(sorted({w for w in _WORDS.findall(text) if w not in TAKE_MARKERS}))


def shingles(reduced: str) -> set[bytes]:
    """Words and the character trigrams of each word (its ends marked), as UTF-8 (a
    character outside ASCII makes trigrams of bytes: still the same set for the same word)."""
    found = set()
    for word in reduced.encode().split():
        found.add(word)
        marked = b"^" + word + b"$"
        found.update(marked[i : i + 3] for i in range(len(marked) - 2))
    return found


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def prompt_links(reduced: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Pairs (i, j), i < j, of distinct reduced prompts whose shingle sets have a Jaccard
    similarity of at least ``threshold``; an int64 array of shape (pairs, 2). Shingle sets
    are made again for the candidates only: holding every one costs a gigabyte at a year."""
    signatures = minhash_signatures(shingles(text) for text in reduced)
    candidates = candidate_pairs(signatures, max(0.1, threshold - SEARCH_MARGIN))
    sets: dict[int, set[bytes]] = {}
    for i in np.unique(candidates).tolist():
        sets[i] = shingles(reduced[i])
    keep = [
        bool(sets[a] and sets[b]) and jaccard(sets[a], sets[b]) >= threshold
        for a, b in candidates.tolist()
    ]
    return candidates[np.array(keep, dtype=bool)].reshape(-1, 2)


def minhash_signatures(sets: Iterable[set[bytes]], batch: int = 16384) -> np.ndarray:
    """datasketch MinHash values of each set (rows of NUM_PERM values; an empty set keeps
    the maximum everywhere), as ``MinHash(num_perm=NUM_PERM).update_batch`` computes them
    (its sha1 hash, finaliser and affine permutations, ``tests/ml/test_similarity.py`` holds
    them equal), but over every set at once: each distinct shingle is hashed and permuted
    once, and a set's values are the minimum over its shingles' rows (numpy), instead of a
    MinHash object per prompt (about 0.2 ms each: a minute at a year's prompts)."""
    from datasketch import MinHash  # on use: a snapshot needs it, a harvest does not
    from datasketch.hashfunc import sha1_hash32
    from datasketch.minhash import _fmix

    reference = MinHash(num_perm=NUM_PERM)
    dtype = reference.hashvalues.dtype
    a, b = (np.asarray(p, dtype=dtype) for p in reference.permutations)
    index: dict[bytes, int] = {}
    members = [[index.setdefault(item, len(index)) for item in found] for found in sets]
    hashed = np.array([sha1_hash32(item) for item in index], dtype=dtype)
    with np.errstate(over="ignore"):  # the permutations wrap around, as datasketch's do
        # permutations x shingles: a set's shingles are then columns, reduced along rows
        permuted = np.ascontiguousarray((_fmix(hashed, 8 * dtype.itemsize)[:, None] * a + b).T)
    values = np.full((len(members), NUM_PERM), reference.hashvalues.max(), dtype=dtype)
    for start in range(0, len(members), batch):
        chunk = members[start : start + batch]
        sizes = np.array([len(m) for m in chunk])
        filled = np.flatnonzero(sizes)
        if not len(filled):
            continue
        flat = np.fromiter((i for m in chunk for i in m), dtype=np.int64, count=sizes.sum())
        starts = np.r_[0, np.cumsum(sizes)[:-1]][filled]
        values[start + filled] = np.minimum.reduceat(permuted[:, flat], starts, axis=1).T
    return values


def candidate_pairs(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs (i, j), i < j, that share a whole band of their signatures: datasketch's
    MinHashLSH banding for ``threshold`` (its choice of bands and rows), done over the whole
    matrix at once with numpy instead of one dictionary insert per band per prompt."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    found = [np.empty((0, 2), dtype=np.int64)]
    mix = np.random.default_rng(64).integers(1, 2**63, lsh.r, dtype=np.uint64) | np.uint64(1)
    for band in range(lsh.b):
        rows = signatures[:, band * lsh.r : (band + 1) * lsh.r].astype(np.uint64)
        # the band's values folded into one 64-bit key: a rare false collision only adds
        # a candidate, which the exact check then drops
        with np.errstate(over="ignore"):
            keys = (rows * mix).sum(axis=1, dtype=np.uint64)
        found.append(same_key_pairs(keys))
    pairs = np.vstack(found)
    flat = np.unique(pairs[:, 0] * len(signatures) + pairs[:, 1])
    return np.stack([flat // len(signatures), flat % len(signatures)], axis=1)
