"""What each `take_numbers` rule makes of numbered prompts: the evidence in docs/ml.md.

    python -m bench.prompt_numbers

The labelled pairs are the tests' (tests/support/numbered_prompts.py): templated sheets,
takes, numbered variants, the same numbers, a number ending the prompt that names what is
asked for. For each kind and rule: how many pairs the rule judges as labelled (one group, or
two), then every pair the default rule gets wrong. The tests' near-copies of prompts
(tests/support/similar_clips.py, 200 near-copies and 400 distinct pairs) are judged too.
"""

import sys
from collections.abc import Sequence
from pathlib import Path

from assets.ml.prompt_similarity import DEFAULT_TAKE_NUMBERS, TAKE_NUMBERS, near_copies

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.numbered_prompts import KINDS, labelled
from support.similar_clips import prompt_pairs


def verdicts() -> dict[str, dict[str, tuple[int, int]]]:
    """kind -> rule -> (pairs judged as labelled, pairs)."""
    table = {}
    pairs = labelled()
    positives, negatives = prompt_pairs(seed=0)
    pairs += [("near-copies (similar_clips)", a, b, True) for a, b in positives]
    pairs += [("distinct (similar_clips)", a, b, False) for a, b in negatives]
    for kind in dict.fromkeys(kind for kind, *_ in pairs):
        of_kind = [(a, b, same) for k, a, b, same in pairs if k == kind]
        table[kind] = {
            rule: (
                sum(near_copies(a, b, take_numbers=rule) == same for a, b, same in of_kind),
                len(of_kind),
            )
            for rule in TAKE_NUMBERS
        }
    return table


def main(argv: Sequence[str] | None = None) -> dict:
    table = verdicts()
    print("| pairs | " + " | ".join(f"`{rule}`" for rule in TAKE_NUMBERS) + " |")
    print("|---|" + "---|" * len(TAKE_NUMBERS))
    for kind, by_rule in table.items():
        cells = " | ".join(f"{right}/{n}" for right, n in by_rule.values())
        print(f"| {kind} | {cells} |")
    wrong = [
        (kind, a, b, same)
        for kind, a, b, same in labelled()
        if near_copies(a, b, take_numbers=DEFAULT_TAKE_NUMBERS) != same
    ]
    print(f"\nwrong under `{DEFAULT_TAKE_NUMBERS}` (the default):")
    for kind, a, b, same in wrong:
        print(f"  {kind}: {a!r} / {b!r} judged {'two groups' if same else 'one group'}")
    assert tuple(k for k in table if k in KINDS) == KINDS
    return {"table": table, "wrong": wrong}


if __name__ == "__main__":
    main()
