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
from collections.abc import Sequence

import numpy as np

from assets.core.pairs import same_key_pairs

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
    similarity of at least ``threshold``; an int64 array of shape (pairs, 2)."""
    sets = [shingles(text) for text in reduced]
    signatures = minhash_signatures(sets)
    candidates = candidate_pairs(signatures, max(0.1, threshold - SEARCH_MARGIN))
    keep = [
        bool(sets[a] and sets[b]) and jaccard(sets[a], sets[b]) >= threshold
        for a, b in candidates.tolist()
    ]
    return candidates[np.array(keep, dtype=bool)].reshape(-1, 2)


def minhash_signatures(sets: Sequence[set[bytes]]) -> np.ndarray:
    """datasketch MinHash values of each set (rows of NUM_PERM uint64). Each distinct shingle
    is hashed once (prompts share most of their trigrams), then looked up."""
    from datasketch import MinHash  # on use: a snapshot needs it, a harvest does not
    from datasketch.hashfunc import sha1_hash32

    table = {item: sha1_hash32(item) for item in set().union(*sets)}
    sketches = MinHash.generator(sets, num_perm=NUM_PERM, hashfunc=table.__getitem__)
    return np.array([sketch.hashvalues for sketch in sketches], dtype=np.uint64).reshape(
        -1, NUM_PERM
    )


def candidate_pairs(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs (i, j), i < j, that share a whole band of their signatures: datasketch's
    MinHashLSH banding for ``threshold`` (its choice of bands and rows), done over the whole
    matrix at once with numpy instead of one dictionary insert per band per prompt."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    found = [np.empty((0, 2), dtype=np.int64)]
    for band in range(lsh.b):
        rows = signatures[:, band * lsh.r : (band + 1) * lsh.r]
        if len(rows) > 1:
            _, keys = np.unique(rows, axis=0, return_inverse=True)
            found.append(same_key_pairs(keys.ravel()))
    return np.unique(np.vstack(found), axis=0)
