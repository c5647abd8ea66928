"""Splits that know group sizes: shares near the ratios, giant groups in train, sticky splits
and group ids across snapshots, no group in two splits or two folds (in memory, `select`)."""

import numpy as np
import pandas as pd
import polars as pl
import pytest

from assets.ml.dataset.groups import stable_group_ids
from assets.ml.dataset.selection import select
from assets.ml.dataset.spec import SPLITS, DatasetSpec
from assets.ml.dataset.split_shares import TOLERANCE, split_shares
from assets.ml.dataset.splits import place_groups, split_of
from assets.ml.prompt_similarity import prompt_links, reduce_prompt

from support.ml_clips import feature_rows
from support.similar_clips import prompt_pairs

DEMO = DatasetSpec(train_ratio=0.7, validation_ratio=0.15, test_ratio=0.15)  # make demo's
# The demo's similarity groups (make demo, 309 clips of 21 prompts: two linked by audio)
DEMO_GROUPS = [31, 24, 20, 19, 19, 17, 17, 17, 16, 15, 15, 14, 14, 13, 12, 11, 10, 9, 9, 7]


def placed(sizes, spec: DatasetSpec, seed: str = "soundharvest") -> np.ndarray:
    """The splits of new groups of these sizes, group i's lowest run id i."""
    spec = spec.model_copy(update={"split_seed": seed})
    firsts = np.arange(len(sizes))
    return place_groups(np.asarray(sizes), firsts, np.zeros(3, dtype=np.int64), spec)


def shares_of(sizes, spec: DatasetSpec, seed: str = "soundharvest") -> np.ndarray:
    return np.bincount(placed(sizes, spec, seed), weights=sizes, minlength=3) / sum(sizes)


def ratios(spec: DatasetSpec) -> np.ndarray:
    return np.array([spec.train_ratio, spec.validation_ratio, spec.test_ratio])


def test_the_demos_groups_land_within_5_points_under_any_seed():
    """Its largest group holds 10 % of the clips, yet every split lands near its ratio: the
    issue saw 52/8/39 % for 70/15/15."""
    for seed in ("soundharvest", "a", "b", "c", "d"):
        got = shares_of(DEMO_GROUPS, DEMO, seed)
        assert np.abs(got - ratios(DEMO)).max() <= TOLERANCE, (seed, got)


@pytest.mark.parametrize("asked", [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), None])
@pytest.mark.parametrize("draw", range(20))
def test_shares_land_within_the_largest_group_when_none_holds_5_percent(draw, asked):
    """Seeded sets of random group sizes (a few runs to 5 % of all) at 80/10/10, 70/15/15
    and random ratios: each split within the largest group's share of its ratio, so within
    5 points."""
    rng = np.random.default_rng(draw)
    total = int(rng.integers(100, 20_000))
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(min(rng.pareto(1.2) + 1, 0.05 * total)))
    spec_ratios = np.array(asked) if asked else rng.dirichlet([3, 1, 1])
    spec_ratios = np.round(spec_ratios / spec_ratios.sum(), 3)
    spec_ratios[0] = 1 - spec_ratios[1:].sum()
    spec = DatasetSpec(
        train_ratio=float(spec_ratios[0]),
        validation_ratio=float(spec_ratios[1]),
        test_ratio=float(spec_ratios[2]),
    )
    got = shares_of(sizes, spec, seed=str(draw))
    assert np.abs(got - ratios(spec)).max() <= max(sizes) / sum(sizes) <= TOLERANCE


def test_a_group_too_large_for_validation_or_test_goes_to_train():
    spec = DatasetSpec(train_ratio=0.4, validation_ratio=0.3, test_ratio=0.3)
    for seed in map(str, range(20)):  # whatever the draw
        got = shares_of([600, *[1] * 400], spec, seed)
        assert got[0] >= 0.6  # train holds the 60 % group, though asked for 40 %
        assert abs(got[1] - got[2]) <= TOLERANCE  # the rest shared out


def test_where_every_split_has_room_a_group_draws_as_the_hash_says():
    """Many small groups: the first placed (the largest) has room everywhere, so its split is
    the plain draw of its key; other seeds draw other splits."""
    sizes = [5, *[1] * 999]
    firsts = []
    for seed in map(str, range(30)):
        choice = placed(sizes, DEMO, seed)
        assert choice[0] == SPLITS.index(
            split_of("run:0", DEMO.model_copy(update={"split_seed": seed}))
        )
        firsts.append(int(choice[0]))
    assert set(firsts) == {0, 1, 2}


# -- the templated sheet, through `select` ------------------------------------------------

SHEET = 189  # clips of forty numbered prompts, as the user harvested them


def templated_sheet(first_run: int = 1, clips: int = SHEET) -> pd.DataFrame:
    """Forty prompts that differ only in a number, each generated four or five times, the
    repeats written as takes."""
    runs = range(first_run, first_run + clips)
    prompts = [
        f"prompt group {1 + i % 40}: thunder over a lake"
        + (f", take {1 + (i // 40)}" if i >= 40 else "")
        for i in range(clips)
    ]
    return feature_rows("2026-11-01", runs, prompts)


def selected(frame: pd.DataFrame, spec: DatasetSpec, previous=None):
    selection = select(pl.from_pandas(frame), spec, previous)
    return selection, selection.rows.to_pandas().set_index("run_id")


@pytest.mark.parametrize("spec", [DatasetSpec(), DEMO], ids=["80-10-10", "70-15-15"])
def test_a_templated_sheet_is_forty_groups_with_shares_near_the_ratios(spec):
    selection, rows = selected(templated_sheet(), spec)

    number = rows["text"].str.extract(r"group (\d+):")[0]
    assert rows.groupby(number)["group_id"].nunique().eq(1).all()  # takes of one prompt
    assert rows.groupby("group_id").ngroups == 40 == selection.groups.groups
    shares = split_shares(selection.rows, spec)
    assert shares.problems() == []
    assert np.abs(np.array(list(shares.got.values())) - ratios(spec)).max() <= TOLERANCE


def test_with_every_number_left_out_the_sheet_is_one_group_that_train_holds_with_a_warning():
    """The rule before (`take_numbers: all`): what the issue's user saw, but train now holds
    the group and the warning names it."""
    spec = DatasetSpec(take_numbers="all")
    selection, rows = selected(templated_sheet(), spec)

    assert rows["group_id"].nunique() == 1 and set(rows["split"]) == {"train"}
    shares = split_shares(selection.rows, spec)
    assert shares.problems() == [
        "train holds 100.0% (asked 80%)",
        "validation is empty (asked 10%)",
        "test is empty (asked 10%)",
    ]
    warning = shares.warning()
    assert f"group {rows['group_id'].iloc[0]}: 189 runs (100.0%) in train" in warning
    assert "prompts 'prompt group 10: thunder over a lake' (1), " in warning
    assert "and 186 more" in warning


def test_splits_and_group_ids_stick_as_new_runs_arrive():
    """Snapshot 2 adds takes of day 1's prompts (they join their group's split and id) and
    forty new prompts (placed so that the shares stay near the ratios)."""
    spec = DEMO
    day1 = templated_sheet(1, 120)
    first, before = selected(day1, spec)
    day2 = templated_sheet(1001, 40).assign(date="2026-11-02")
    day2["prompt"] = day2["prompt"] + ", take 9"  # takes of day 1's forty prompts
    fresh = templated_sheet(2001, 160).assign(date="2026-11-02")
    fresh["prompt"] = fresh["prompt"].str.replace("thunder over a lake", "rain on a tin roof")

    second, after = selected(pd.concat([day1, day2, fresh]), spec, first.assignments)

    earlier = after.loc[before.index]
    assert (earlier["split"] == before["split"]).all()
    assert (earlier["group_id"] == before["group_id"]).all()
    assert second.groups.kept == len(before)
    by_prompt = after.assign(key=after["text"].map(reduce_prompt)).groupby("key")
    assert by_prompt["group_id"].nunique().eq(1).all() and by_prompt["split"].nunique().eq(1).all()
    joined = after.loc[day2["run_id"]]
    assert joined["group_id"].isin(before["group_id"]).all()
    assert not after.loc[fresh["run_id"], "group_id"].isin(before["group_id"]).any()
    assert split_shares(second.rows, spec).problems() == []


def test_group_ids_stay_with_their_runs_and_merge_only_within_a_split():
    """Rows 0-2: group A, earlier runs in train with id 10; rows 3-4: group B, in train, id
    20; rows 5-6: group C in test, id 30. A new run (7) bridges A and B (same split), another
    (8) bridges A and C (two splits); 9 is new and alone."""
    run_ids = np.array([10, 11, 12, 20, 21, 30, 31, 40, 50, 60])
    before = np.array([10, 10, 10, 20, 20, 30, 30, -1, -1, -1])
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])  # one component: 7 and 8 link them all
    split = np.array([0, 0, 0, 0, 0, 2, 2, 0, 0, 1])
    ids = stable_group_ids(run_ids, labels, split, before)
    # train: A's id, held by most earlier runs, for B's runs and the new ones too
    assert ids[:5].tolist() == [10] * 5 and ids[7:9].tolist() == [10, 10]
    assert ids[5:7].tolist() == [30, 30]  # across splits: C keeps its own
    assert ids[9] == 60  # a new group: its lowest run id
    # a tie of votes goes to the lower id
    tie = stable_group_ids(
        run_ids[:4], np.zeros(4, int), np.zeros(4, int), np.array([10, 10, 20, 20])
    )
    assert tie.tolist() == [10] * 4


def test_group_ids_keep_every_group_in_one_split_and_one_grouped_fold():
    """GroupKFold's promise, checked without scikit-learn: folds drawn from group_id inside
    train never separate two runs whose prompts are near-copies, and no group id is in two
    splits."""
    positives, negatives = prompt_pairs(seed=0)
    prompts = [p for pair in positives + negatives for p in pair]
    prompts += [f"prompt group {i % 40}: thunder over a lake, take {i}" for i in range(200)]
    frame = feature_rows("2026-11-01", range(1, len(prompts) + 1), prompts)
    _, rows = selected(frame, DatasetSpec())

    assert rows.groupby("group_id")["split"].nunique().eq(1).all()
    train = rows[rows["split"] == "train"]
    fold = {g: i % 5 for i, g in enumerate(sorted(train["group_id"].unique()))}  # as GroupKFold
    reduced = train["text"].map(reduce_prompt)
    texts = sorted(set(reduced) - {""})
    linked = {(texts[a], texts[b]) for a, b in prompt_links(texts).tolist()}
    linked |= {(text, text) for text in texts}
    folds_of = train.assign(fold=train["group_id"].map(fold), key=reduced)
    by_key = folds_of.groupby("key")["fold"].agg(set)
    crossing = [(a, b) for a, b in linked if len(by_key[a] | by_key[b]) > 1]
    assert crossing == [] and len(linked) > len(texts)  # near-copies were there to separate
    assert len(set(fold.values())) == 5
