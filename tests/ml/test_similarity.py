"""Similarity groups: near-copies of prompts and of sounds share a split, sticky across days.

The labelled data is made in code (tests/support/similar_clips.py); docs/ml.md reports the same
precision and recall that these tests hold to.
"""

import re
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from assets.ml.audio_fingerprint import (
    BANDS,
    DEFAULT_THRESHOLD,
    FRAMES,
    NEIGHBOURS,
    PROFILE_TOLERANCE_DB,
    TABLES,
    Fingerprinter,
    audio_candidates,
    audio_links,
    correlations,
    decode,
    gate_steps,
    noise_floors,
    print_matrix,
    profile_distance,
    profile_matrix,
    relative_profiles,
)
from assets.ml.dataset.groups import linked_groups
from assets.ml.dataset.snapshot import ASSIGNMENTS, build_snapshot
from assets.ml.dataset.spec import DatasetSpec
from assets.ml.dataset.splits import normalise_prompt, place_groups, split_of
from assets.ml.prompt_similarity import (
    NUM_PERM,
    minhash_signatures,
    prompt_links,
    reduce_prompt,
    shingles,
)
from resources.storage import Storage

from support.ml_clips import Clip, storage, write_catalog_day, write_features_day
from support.similar_clips import RATE, prompt_pairs, resample, sound, variants
from support.sound_families import KINDS, TRANSFORMS, families

COPIED = 40  # sounds copied in every way a delivery can copy them
DISTINCT = 300  # distinct sounds in all (the copied ones among them)


def test_prompts_reduce_to_the_words_that_count():
    assert reduce_prompt("Take 3: Door-creak (LOUD)!") == "creak door loud"
    assert reduce_prompt("loud door creak, take 4") == "creak door loud"
    assert reduce_prompt("２ dogs") == "dogs #2"  # NFKC: a full-width digit is a digit
    assert reduce_prompt("12 #3") == "#12"  # a prompt of one number; #3 is a take
    assert reduce_prompt(None) == reduce_prompt("take 3!") == ""


def test_near_duplicate_prompts_are_linked_and_distinct_ones_never():
    positives, negatives = prompt_pairs(seed=0)
    texts = sorted({reduce_prompt(p) for pair in positives + negatives for p in pair})
    at = {text: i for i, text in enumerate(texts)}
    links = {tuple(pair) for pair in prompt_links(texts).tolist()}

    def linked(a: str, b: str) -> bool:
        i, j = sorted((at[reduce_prompt(a)], at[reduce_prompt(b)]))
        return i == j or (i, j) in links

    assert len(positives) == 200 and len(negatives) == 400
    assert [pair for pair in positives if not linked(*pair)] == []  # recall 1.0
    assert [pair for pair in negatives if linked(*pair)] == []  # no false link


def test_signatures_are_datasketchs_own_minhash():
    sets = [shingles(reduce_prompt(p)) for p in ("rain on a tin roof", "door creak", "é bé")]
    for found, row in zip(sets, minhash_signatures(sets), strict=True):
        own = MinHash(num_perm=NUM_PERM)
        own.update_batch(list(found))
        assert (own.hashvalues == row).all()


def fingerprint(samples: np.ndarray, rate: int) -> tuple[bytes, bytes]:
    """Fed in uneven blocks, as a decoder would."""
    samples = samples if samples.ndim == 2 else samples[:, None]
    printer = Fingerprinter(rate, samples.shape[1])
    for start in range(0, len(samples), 7919):
        printer.add(samples[start : start + 7919])
    profile, printed = printer.result()
    assert profile is not None and printed is not None
    return profile, printed


@pytest.fixture(scope="module")
def clips():
    """(profiles, fingerprints, durations, family of each clip, [(original, copy, how)])."""
    profiles, prints, durations, family, copies = [], [], [], [], []

    def add(samples: np.ndarray, rate: int, seed: int) -> int:
        profile, printed = fingerprint(samples, rate)
        profiles.append(profile)
        prints.append(printed)
        durations.append(len(samples) / rate)
        family.append(seed)
        return len(family) - 1

    for seed in range(DISTINCT):
        original = sound(seed)
        at = add(original, RATE, seed)
        if seed < COPIED:
            for how, (copy, rate) in variants(original, seed).items():
                copies.append((at, add(copy, rate, seed), how))
    return profiles, prints, np.array(durations), np.array(family), copies


def test_fingerprints_are_compact(clips):
    profiles, prints, *_ = clips
    assert {len(p) for p in profiles} == {BANDS}
    assert max(len(p) for p in prints) == FRAMES * BANDS  # 1.5 KiB, whatever the length


def test_copies_of_a_sound_are_linked_and_distinct_sounds_never(clips):
    profiles, prints, durations, family, copies = clips
    links = audio_links(
        profile_matrix(profiles), durations, lambda index: [prints[i] for i in index]
    )
    group = linked_groups(len(prints), links)

    missed = [(how, family[a]) for a, b, how in copies if group[a] != group[b]]
    false = [(family[a], family[b]) for a, b in links if family[a] != family[b]]
    assert len(copies) == COPIED * 9 and missed == []  # recall 1.0 over every kind of copy
    assert false == []  # none among 300 distinct sounds (44,850 pairs)


# -- the sound families: noise beds, MP3, sparse and decaying sounds -----------------------

# The one copy the search does not always find: under a pink bed at -30 dBFS a sparse or
# quiet sound's weak bands rise, its profile moves, and the blocking keys (or the profile
# gate) no longer bring it to its original (docs/ml.md: recall 0.767 over 60 sounds).
BLOCKING_GAP = "pink -30 dBFS"


@pytest.fixture(scope="module")
def family_prints():
    """One sound of each kind, its 15 copies and its 2 twins: (clips, profiles, prints)."""
    clips = list(families(1))
    prints = [fingerprint(clip.samples, clip.rate) for clip in clips]
    return clips, profile_matrix([profile for profile, _ in prints]), [p for _, p in prints]


@pytest.fixture(scope="module")
def family_links(family_prints):
    """The same, searched at the defaults: (clips, links (pairs, 2))."""
    clips, profiles, prints = family_prints
    links = audio_links(
        profiles,
        np.array([len(clip.samples) / clip.rate for clip in clips]),
        lambda index: [prints[i] for i in index],
    )
    return clips, links


def test_distinct_sounds_of_one_kind_timbre_and_length_are_never_linked(family_links):
    clips, links = family_links
    false = [(clips[a].kind, clips[a].role, clips[b].role) for a, b in links
             if clips[a].family != clips[b].family]  # fmt: skip
    assert len(clips) == len(KINDS) * (len(TRANSFORMS) + 3)
    assert false == []  # precision 1.0: twins, clean and under a -30 dBFS bed, included


def test_copies_under_noise_beds_mp3_trims_and_all_at_once_are_found(family_links):
    clips, links = family_links
    group = linked_groups(len(clips), links)
    original = {c.family: i for i, c in enumerate(clips) if c.role == "original"}
    missed = [c.role for i, c in enumerate(clips)
              if c.role in TRANSFORMS and group[original[c.family]] != group[i]]  # fmt: skip
    assert [role for role in missed if role != BLOCKING_GAP] == []  # recall 1.0 on each
    assert missed.count(BLOCKING_GAP) <= 3  # of 10 (docs/ml.md names the gap)


def test_copies_and_distinct_sounds_score_on_either_side_of_the_threshold(family_prints):
    """The rule itself, over every pair whose profiles agree (no blocking): every copy
    scores at the default or more, every distinct pair under it."""
    clips, profiles, prints = family_prints
    pairs = np.stack(np.triu_indices(len(clips), k=1), axis=1)
    spectra = relative_profiles(profiles)
    pairs = pairs[profile_distance(spectra, pairs) <= PROFILE_TOLERANCE_DB]
    scores = correlations(prints, pairs)
    same = np.array([clips[a].family == clips[b].family for a, b in pairs])
    copy = same & np.array([clips[a].role == "original" for a, _ in pairs])
    assert copy.sum() >= len(KINDS) * (len(TRANSFORMS) - 1)  # the gate turns few away
    assert scores[copy].min() >= DEFAULT_THRESHOLD > scores[~same].max()


def test_a_crowded_key_costs_each_clip_a_comparison_per_table_and_keeps_copies():
    """20,000 clips whose profiles differ only in their few strong bands (a handful of keys
    in every table), a copy among them under a bed (its weak bands raised): the search
    compares each clip with its next in a key only, so the candidates stay under TABLES per
    clip, and the copy, whose strong bands are its original's, is among them."""
    rng = np.random.default_rng(7)
    clips = 20_000
    profiles = np.full((clips, BANDS), 2 * 50 - 4, dtype=np.uint8)  # 2 dB under the top
    profiles[:, :4] = 100 - rng.integers(0, 12, (clips, 4), dtype=np.uint8)  # strong: 0-6 dB
    profiles[:, 4:] -= rng.integers(30, 60, (clips, BANDS - 4), dtype=np.uint8)  # weak: 15-30 dB
    copy = profiles[0].copy()
    copy[8:] = np.maximum(copy[8:], 50)  # a bed lifts the weakest bands to 25 dB under the top
    profiles = np.vstack([profiles, copy])
    durations = np.full(len(profiles), 2.0)
    candidates = audio_candidates(relative_profiles(profiles), durations, gate_steps(profiles))
    assert len(candidates) <= TABLES * NEIGHBOURS * len(profiles)
    assert [0, clips] in candidates.tolist()


def test_the_noise_floors_are_numpys_percentile_over_each_clips_own_frames():
    rng = np.random.default_rng(3)
    prints = [rng.integers(0, 100, n * BANDS, dtype=np.uint8).tobytes() for n in (96, 40, 1, 0, 7)]
    steps, lengths = print_matrix(prints)
    floors = noise_floors(steps, lengths)
    for at, printed in enumerate(prints):
        expected = np.percentile(decode(printed), 20, axis=0) if printed else np.zeros(BANDS)
        assert np.allclose(floors[at], expected)
        assert (steps[at, lengths[at] :] == 0).all()


# -- end to end: files, features, snapshots ---------------------------------------------

SPEC = {"train_ratio": 0.5, "validation_ratio": 0.25, "test_ratio": 0.25}
PLACES = ["in a cave", "far away", "close up", "underwater", "in a stadium", "inside a car"]
OTHERS = ["owl hooting", "coins dropping", "kettle whistling", "zipper closing", "applause",
          "paper tearing", "clock ticking", "phone ringing", "baby crying", "cat meowing",
          "horse galloping", "church bells ringing"]  # fmt: skip


def at_22k(samples: np.ndarray) -> np.ndarray:
    samples = samples if samples.ndim == 2 else samples[:, None]
    return resample(samples, RATE, 22050)


def clip(run_id: int, prompt: str, samples: np.ndarray) -> Clip:
    return Clip(run_id, rate=22050, channels=samples.shape[1], prompt=prompt, samples=samples)


def rain_and_glass_in_two_splits(spec: DatasetSpec) -> tuple[list[int], int]:
    """Run ids for three "rain" runs and one "glass" run whose new groups are placed in
    different splits. Day 1's groups (the fixture below): rain 3 runs, dog 2, thunder 2, and
    glass and the OTHERS alone, each drawing by its lowest run id (splits.place_groups)."""
    rain = [101, 102, 103]
    firsts = [101, 110, 120, 0, *range(500, 500 + len(OTHERS))]
    sizes = np.array([3, 2, 2, 1, *[1] * len(OTHERS)])

    def placed(glass: int) -> np.ndarray:
        firsts[3] = glass
        return place_groups(sizes, np.array(firsts), np.zeros(3, dtype=np.int64), spec)

    glass = next(r for r in range(200, 400) if len(set(placed(r)[[0, 3]])) == 2)
    return rain, glass


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Day 1: near-copies of prompts and of a sound among distinct runs; day 2: a run that
    bridges two groups in two splits, and a new one."""
    tmp = tmp_path_factory.mktemp("similar")
    resource = storage(tmp)
    spec = DatasetSpec(**SPEC)
    rain, glass = rain_and_glass_in_two_splits(spec)
    thunder = at_22k(sound(1001, seconds=1.5, kind="bursts"))
    copy, _ = variants(sound(1001, seconds=1.5, kind="bursts"), 5)["all at once"]
    glass_sound = at_22k(sound(1002, seconds=1.2, kind="chirp"))
    glass_copy = glass_sound * 0.7  # quieter: other bytes, the same sound
    day1 = [
        *(clip(r, f"Rain on a tin roof, take {i}", at_22k(sound(r))) for i, r in enumerate(rain)),
        clip(glass, "glass shattering in a cave", glass_sound),
        clip(110, "dog barking far away", at_22k(sound(110))),
        clip(111, "Far away: dog barking!", at_22k(sound(111))),
        clip(120, "thunder rumbling", thunder),
        clip(121, "a door slams", copy),  # another prompt, the same sound
        *(
            clip(500 + i, f"{s} {PLACES[i % 6]}", at_22k(sound(500 + i)))
            for i, s in enumerate(OTHERS)
        ),
    ]
    day2 = [
        clip(601, "rain on a tin roof take 4", glass_copy),  # prompt of one, sound of other
        clip(602, "helicopter flying over", at_22k(sound(602))),
    ]
    out = Storage(str(tmp / "datasets"))
    write_features_day(resource, "2026-11-01", write_catalog_day(resource, "2026-11-01", day1))
    first = build_snapshot(resource.catalog(), out, spec)
    write_features_day(resource, "2026-11-02", write_catalog_day(resource, "2026-11-02", day2))
    second = build_snapshot(resource.catalog(), out, spec)
    return resource, out, first, second, {"rain": rain, "glass": glass, "day1": day1}


def splits(snapshot) -> dict[int, str]:
    rows = snapshot.selection.rows
    return dict(zip(rows["run_id"].to_pylist(), rows["split"].to_pylist(), strict=True))


def card_count(snapshot, label: str) -> int:
    text = (Path(snapshot.uri) / "README.md").read_text()
    return int(re.search(rf"\| {re.escape(label)}\s+\|\s+(\d+) \|", text).group(1))


def test_the_card_counts_the_links_the_test_made(days):
    _, _, first, _, runs = days
    prompts = {c.run_id: c.prompt for c in runs["day1"]}
    linked_prompts = [(r, s) for i, r in enumerate(runs["rain"]) for s in runs["rain"][i + 1 :]]
    linked_prompts.append((110, 111))
    spec = DatasetSpec(**SPEC)
    old = {r: split_of(f"prompt:{normalise_prompt(p)}", spec) for r, p in prompts.items()}
    expected = {
        "groups": len(prompts) - 4,  # three rain runs in one, two dog runs, two thunder runs
        "largest_group": 3,
        "prompt_links": 4,
        "audio_links": 1,
        "prompt_links_split_before": sum(old[a] != old[b] for a, b in linked_prompts),
        "audio_links_split_before": int(old[120] != old[121]),
        "links_split_now": 0,
        "kept": 0,
        "bridged": 0,
        "near_audio_dropped": 0,
    }
    assert first.manifest["groups"] == expected
    assert card_count(first, "groups") == expected["groups"]
    assert card_count(first, "same-sound audio links (pairs of clips)") == 1
    assert card_count(first, "near-duplicate prompt links (pairs of distinct prompts)") == 4
    got = splits(first)
    for a, b in [*linked_prompts, (120, 121)]:
        assert got[a] == got[b]
    assert len(set(got.values())) == 3


def test_no_earlier_run_moves_and_a_bridging_run_goes_where_it_leaks_least(days):
    _, _, first, second, runs = days
    before, after = splits(first), splits(second)
    assert {run: after[run] for run in before} == before  # stickiness, bridging included
    rain_split, glass_split = before[runs["rain"][0]], before[runs["glass"]]
    assert rain_split != glass_split  # the two groups the new run links
    assert after[601] == rain_split  # three earlier runs against one
    groups = second.manifest["groups"]
    assert (groups["kept"], groups["bridged"], groups["links_split_now"]) == (len(before), 1, 1)
    assert card_count(second, "new runs joining a group already in two splits") == 1


def test_a_new_seed_draws_afresh_and_near_audio_dedupe_keeps_the_earliest(days, tmp_path):
    resource, out, _, second, _ = days
    other = build_snapshot(resource.catalog(), out, DatasetSpec(**SPEC, split_seed="other"))
    assert len(list(Path(out.path(ASSIGNMENTS)).glob("draw=*.parquet"))) == 2
    assert splits(other) != splits(second)

    fresh = Storage(str(tmp_path / "elsewhere"))
    deduped = build_snapshot(resource.catalog(), fresh, DatasetSpec(**SPEC, dedupe_near_audio=True))
    kept = set(splits(deduped))
    assert {120, 602} <= kept and not {121, 601} & kept  # 121 = 120's sound, 601 = glass's
    assert deduped.manifest["dropped"]["near-identical audio to an earlier run"] == 2
    assert deduped.manifest["groups"]["near_audio_dropped"] == 2
