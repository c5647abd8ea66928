"""Prompts that are near-copies of each other: "rain on a tin roof, take 3" and "take 4",
"door creak (loud)" and "loud door creak".

A prompt is reduced to its words (NFKC, case-folded; punctuation and the take markers below
go) and its numbers, and compared as a set of shingles: its words and the character trigrams
of each word, so word order does not count and a plural or a small typo costs little. Two
prompts are similar when they ask for the same numbers and the Jaccard similarity of their
shingle sets is at least the threshold (docs/ml.md says how the default was chosen).

What a number means (``take_numbers``, docs/ml.md has the evidence): a *take number* tells
takes of one prompt apart and is left out: after a take marker ("take 3", "v2", "version 2",
"seed 7") or "#" ("#3"), in parentheses ("(2)"), and, by default, a bare number ending the
prompt ("explosion 3", "explosion_02"). Any other number is part of what the prompt asks for
("prompt group 7: thunder", "1980s radio", "808 kick", "3 gunshots"): prompts asking for
other numbers are other prompts, however many words they share, so a templated sheet is not
one group. ``take_numbers="all"`` leaves every number out (the rule before).

Finding the pairs is a MinHash LSH search (datasketch) over the distinct reduced prompts, run
at a lower threshold than asked so that it misses almost nothing, and only among prompts of
the same numbers; each candidate pair is then checked with its exact Jaccard similarity: the
result does not depend on the hashing's luck beyond that recall.
"""

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from assets.ml.pairs import same_key_pairs

DEFAULT_THRESHOLD = (
    0.68  # between the farthest near-copy and the closest distinct pair (docs/ml.md)
)
NUM_PERM = 64
_BLOCK_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: spreads block numbers over the band keys
SEARCH_MARGIN = 0.15  # the LSH looks this far below the threshold; exact Jaccard decides
TAKE_MARKERS = frozenset({"take", "takes", "version", "variant", "alt", "v", "seed", "var"})
# Which numbers are take numbers (left out): "trailing" (marked ones and a bare number ending
# the prompt), "marked" (only those after a marker, "#" or in parentheses), "all" (every one).
TAKE_NUMBERS = ("trailing", "marked", "all")
DEFAULT_TAKE_NUMBERS = "trailing"
NUMBER = "#"  # starts each number of a reduced prompt; words are letters only
_NUMBER_BYTE = NUMBER.encode()
_WORDS = re.compile(r"[^\W\d_]+")
_DIGIT = re.compile(r"\d")
# "(2)", "#", or a run of letters and digits ("v2", "1980s", "808", "gunshots")
_TOKENS = re.compile(r"\(\s*\d+\s*\)|#|[^\W_]+")
_MARKED = re.compile(rf"(?:{'|'.join(sorted(TAKE_MARKERS))})\d+")  # "v2", "take3"


def reduce_prompt(prompt: str | None, take_numbers: str = DEFAULT_TAKE_NUMBERS) -> str:
    """The words that count, sorted and space-joined, then the numbers that count in their
    order, each after NUMBER ("" when none): "Take 3: Door-creak!" -> "creak door";
    "3 gunshots, take 2" -> "gunshots #3"; "prompt group 7: thunder" -> "group prompt
    thunder #7"."""
    text = unicodedata.normalize("NFKC", prompt or "").casefold()
    if take_numbers == "all" or not _DIGIT.search(text):  # most prompts: words only
        return " ".join(sorted({w for w in _WORDS.findall(text) if w not in TAKE_MARKERS}))
    tokens = _TOKENS.findall(text)
    words, numbers, marked = set(), [], False
    for index, token in enumerate(tokens):
        if token in TAKE_MARKERS or token == NUMBER:
            marked = True  # the number after it, if any, is a take's
            continue
        if token[0] == "(" or _MARKED.fullmatch(token):
            marked = False
            continue
        if token.isalpha():
            words.add(token)
        elif not (token.isdigit() and (marked or _trailing(index, tokens, take_numbers))):
            numbers.append((token.lstrip("0") or "0") if token.isdigit() else token)
        marked = False
    return " ".join([*sorted(words), *(NUMBER + n for n in numbers)])


def _trailing(index: int, tokens: list[str], take_numbers: str) -> bool:
    return take_numbers == "trailing" and index == len(tokens) - 1


def numbers_of(reduced: str) -> str:
    """The numbers part of a reduced prompt ("" when none): prompts are near-copies only
    when theirs are equal."""
    at = reduced.find(NUMBER)
    return "" if at < 0 else reduced[at:]


def shingles(reduced: str) -> set[bytes]:
    """Words and the character trigrams of each word (its ends marked), as UTF-8 (a
    character outside ASCII makes trigrams of bytes: still the same set for the same word).
    Numbers are not shingles: they must be equal (`numbers_of`), not similar."""
    found = set()
    for word in reduced.encode().split():
        if word.startswith(_NUMBER_BYTE):
            continue
        found.add(word)
        marked = b"^" + word + b"$"
        found.update(marked[i : i + 3] for i in range(len(marked) - 2))
    return found


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def prompt_links(reduced: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Pairs (i, j), i < j, of distinct reduced prompts of the same numbers whose shingle
    sets have a Jaccard similarity of at least ``threshold``; an int64 array of shape
    (pairs, 2). Shingle sets are made again for the candidates only: holding every one costs
    a gigabyte at a year."""
    signatures = minhash_signatures(shingles(text) for text in reduced)
    # Only prompts of the same numbers are candidates: a templated sheet of a thousand
    # numbered prompts of the same words is not a million pairs to check and drop.
    numbers = np.unique([numbers_of(text) for text in reduced], return_inverse=True)[1]
    candidates = candidate_pairs(signatures, max(0.1, threshold - SEARCH_MARGIN), numbers)
    sets: dict[int, set[bytes]] = {}
    for i in np.unique(candidates).tolist():
        sets[i] = shingles(reduced[i])
    keep = [
        bool(sets[a] and sets[b])
        and numbers[a] == numbers[b]
        and jaccard(sets[a], sets[b]) >= threshold
        for a, b in candidates.tolist()
    ]
    return candidates[np.array(keep, dtype=bool)].reshape(-1, 2)


def near_copies(
    a: str,
    b: str,
    threshold: float = DEFAULT_THRESHOLD,
    take_numbers: str = DEFAULT_TAKE_NUMBERS,
) -> bool:
    """Whether two prompts share a group by their words and numbers, as a snapshot decides."""
    first, second = reduce_prompt(a, take_numbers), reduce_prompt(b, take_numbers)
    if not (first and second):
        return False
    return first == second or len(prompt_links([first, second], threshold)) > 0


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


@functools.cache
def lsh_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH chooses for ``threshold`` (it
    integrates to choose them: cached, for callers comparing few prompts many times)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    return lsh.b, lsh.r


def candidate_pairs(
    signatures: np.ndarray, threshold: float, blocks: np.ndarray | None = None
) -> np.ndarray:
    """Pairs (i, j), i < j, that share a whole band of their signatures (and their block,
    when ``blocks`` numbers them): datasketch's MinHashLSH banding for ``threshold`` (its
    choice of bands and rows), done over the whole matrix at once with numpy instead of one
    dictionary insert per band per prompt."""
    bands, width = lsh_bands(threshold)
    found = [np.empty((0, 2), dtype=np.int64)]
    mix = np.random.default_rng(64).integers(1, 2**63, width, dtype=np.uint64) | np.uint64(1)
    for band in range(bands):
        rows = signatures[:, band * width : (band + 1) * width].astype(np.uint64)
        # the band's values folded into one 64-bit key: a rare false collision only adds
        # a candidate, which the exact check then drops
        with np.errstate(over="ignore"):
            keys = (rows * mix).sum(axis=1, dtype=np.uint64)
            if blocks is not None:
                keys += blocks.astype(np.uint64) * _BLOCK_MIX
        found.append(same_key_pairs(keys))
    pairs = np.vstack(found)
    flat = np.unique(pairs[:, 0] * len(signatures) + pairs[:, 1])
    return np.stack([flat // len(signatures), flat % len(signatures)], axis=1)
