"""What a number in a prompt means (`take_numbers`), on the labelled pairs docs/ml.md reports
(tests/support/numbered_prompts.py)."""

import numpy as np
import pytest

from assets.ml.dataset.spec import DatasetSpec
from assets.ml.prompt_similarity import (
    DEFAULT_TAKE_NUMBERS,
    TAKE_NUMBERS,
    near_copies,
    prompt_links,
    reduce_prompt,
)

from support.numbered_prompts import KINDS, PAIRS, SAME


def test_takes_lose_their_numbers_and_other_numbers_stay():
    assert reduce_prompt("explosion, take 3") == reduce_prompt("Explosion take 4") == "explosion"
    assert reduce_prompt("door slam v2") == reduce_prompt("door slam #3") == "door slam"
    assert reduce_prompt("door slam (2)") == reduce_prompt("door slam version 9") == "door slam"
    assert reduce_prompt("glass break 02") == "break glass"  # a bare number ending it
    assert reduce_prompt("glass break 02", "marked") == "break glass #2"
    assert reduce_prompt("prompt group 7: thunder") == "group prompt thunder #7"
    assert reduce_prompt("1980s radio") == "radio #1980s"
    assert reduce_prompt("808 kick, take 2") == "kick #808"
    assert reduce_prompt("3 gunshots then 2 explosions") == "explosions gunshots then #3 #2"
    assert reduce_prompt("prompt group 7: thunder", "all") == "group prompt thunder"


def verdicts(rule: str) -> dict[str, list[bool]]:
    """Per kind, whether each pair is judged as labelled under ``rule``."""
    return {
        kind: [near_copies(a, b, take_numbers=rule) == SAME.get(kind, False) for a, b in pairs]
        for kind, pairs in PAIRS.items()
    }


def test_the_default_keeps_templates_and_numbered_prompts_apart_and_takes_together():
    got = verdicts(DEFAULT_TAKE_NUMBERS)
    for kind in ("templated", "takes", "numbered", "same numbers"):
        assert all(got[kind]), kind
    # A number ending the prompt is taken for a take's: those pairs share a group (a larger
    # group, never a leak); `marked` tells them apart, at the price of bare-numbered takes.
    assert not any(got["number at the end"])


def test_marked_tells_numbers_at_the_end_apart_but_splits_bare_numbered_takes():
    got = verdicts("marked")
    assert all(got["number at the end"]) and all(got["templated"]) and all(got["numbered"])
    bare = [b for (a, b), right in zip(PAIRS["takes"], got["takes"], strict=True) if not right]
    assert bare == ["glass break 03", "car passing by 4", "explosion_02",
                    "crowd cheering in a stadium 2"]  # fmt: skip


def test_all_is_the_rule_before_one_group_per_template():
    got = verdicts("all")
    assert not any(got["templated"]) and not any(got["numbered"])
    assert all(got["takes"]) and all(got["same numbers"])


def test_the_config_knows_every_rule_and_the_default():
    assert DatasetSpec().take_numbers == DEFAULT_TAKE_NUMBERS
    assert set(DatasetSpec.model_fields["take_numbers"].annotation.__args__) == set(TAKE_NUMBERS)
    assert set(KINDS) == set(PAIRS)


def test_a_sheet_of_a_thousand_numbered_prompts_is_no_pair_at_all():
    """Prompts of the same words and other numbers are never compared: no candidate, no
    link (a million pairs to check and drop otherwise)."""
    texts = [reduce_prompt(f"scene {i}: a dog barks in a park") for i in range(1000)]
    texts += [reduce_prompt("scene 5: a dog barks in a park, take 2")]  # = scene 5
    assert len(set(texts)) == 1000
    assert prompt_links(sorted(set(texts))).size == 0
    near = [reduce_prompt(f"scene {i}: a dog barks in the park") for i in range(3)]
    links = prompt_links(sorted(set(texts[:3]) | set(near)))
    assert len(links) == 3  # scene i links to scene i only


@pytest.mark.parametrize("rule", TAKE_NUMBERS)
def test_prompts_without_numbers_reduce_as_before(rule):
    for prompt in ["Take 3: Door-creak (LOUD)!", "rain on a tin roof", "ＦＵＬＬ width"]:
        assert reduce_prompt(prompt, rule) == reduce_prompt(prompt, "all")
    assert np.array_equal(prompt_links(["creak door", "creak door loud"]), [[0, 1]])
