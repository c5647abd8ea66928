"""Precision and recall of the prompt and audio similarity rules against their thresholds.

    python -m bench.similarity_quality [--copied 40] [--distinct 300] [--instances 6]

The labelled data is the tests' (tests/support/similar_clips.py, made from seeds): 200 prompts with
a near-copy each (take numbers, word order, punctuation, case, a stray adjective) and 400
pairs of distinct prompts, many sharing most of their words; `--distinct` distinct sounds,
`--copied` of them copied 9 ways (gain ±6 dB, 44.1 and 22.05 kHz, stereo, trims of up to
100 ms, noise at -40 dB, all at once). A pair of one sound counts as found when the search
puts both in one group (linked, directly or through other copies): the audio figures include
what the blocking keys miss.

The sound families (tests/support/sound_families.py): `--instances` sounds of each of ten
kinds, each copied 15 ways (gain, sample rate, channels, trims, white and pink noise beds at
-50/-40/-30 dBFS, an MP3 round trip, all at once) beside two negative controls (a twin of the
same kind, timbre, length and loudness, clean and under a -30 dBFS bed): recall of each copy
(in its original's group) and the false links, per transform and per kind of sound, at the
default threshold and blocking. docs/ml.md quotes the output.
"""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.ml import audio_fingerprint as audio
from assets.ml import prompt_similarity as prompts
from assets.ml.dataset.groups import linked_groups

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.similar_clips import RATE, prompt_pairs, sound, variants
from support.sound_families import KINDS, TRANSFORMS, families

PROMPT_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.68, 0.7, 0.75, 0.8, 0.85)
AUDIO_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.85, 0.9)
FAMILY_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9)


def prompt_table() -> list[tuple[float, float, float, int]]:
    positives, negatives = prompt_pairs(seed=0)
    labelled = [(a, b, True) for a, b in positives] + [(a, b, False) for a, b in negatives]
    texts = sorted({prompts.reduce_prompt(p) for a, b, _ in labelled for p in (a, b)})
    at = {text: i for i, text in enumerate(texts)}

    def jaccard(a: str, b: str) -> float:
        sets = [prompts.shingles(prompts.reduce_prompt(p)) for p in (a, b)]
        return prompts.jaccard(*sets)

    print(
        f"prompts: the farthest near-copy {min(jaccard(a, b) for a, b in positives):.3f}, "
        f"the closest distinct pair {max(jaccard(a, b) for a, b in negatives):.3f} (Jaccard)"
    )
    table = []
    for threshold in PROMPT_THRESHOLDS:
        links = {tuple(pair) for pair in prompts.prompt_links(texts, threshold).tolist()}
        found = []
        for a, b, same in labelled:
            i, j = sorted((at[prompts.reduce_prompt(a)], at[prompts.reduce_prompt(b)]))
            found.append((i == j or (i, j) in links, same))
        table.append((threshold, *_scores(found, len(positives))))
    return table


def audio_table(copied: int, distinct: int) -> list[tuple[float, float, float, int]]:
    profiles, prints, durations, family = [], [], [], []
    for seed in range(distinct):
        original = sound(seed)
        copies = variants(original, seed).values() if seed < copied else []
        for samples, rate in [(original, RATE), *copies]:
            samples = samples if samples.ndim == 2 else samples[:, None]
            printer = audio.Fingerprinter(rate, samples.shape[1])
            printer.add(samples)
            profile, printed = printer.result()
            profiles.append(profile)
            prints.append(printed)
            durations.append(len(samples) / rate)
            family.append(seed)
    family_of = np.array(family)
    sizes = np.bincount(family_of)
    positives = int((sizes * (sizes - 1) // 2).sum())  # every pair within a family
    # every pair, not only those the blocking keys propose: the rule's own margins
    every = np.stack(np.triu_indices(len(prints), k=1), axis=1)
    spectra = audio.relative_profiles(audio.profile_matrix(profiles))
    every = every[audio.profile_distance(spectra, every) <= audio.PROFILE_TOLERANCE_DB]
    scores = audio.correlations(prints, every)
    same = family_of[every[:, 0]] == family_of[every[:, 1]]
    print(
        f"audio: the farthest copy {scores[same].min():.3f}, the closest distinct pair "
        f"{scores[~same].max():.3f} (correlation, over all {len(every)} pairs whose profiles "
        "agree)"
    )
    table = []
    for threshold in AUDIO_THRESHOLDS:
        links = audio.audio_links(
            audio.profile_matrix(profiles),
            np.array(durations),
            lambda index: [prints[i] for i in index],
            threshold,
        )
        group = linked_groups(len(prints), links)
        together = int(sum(n * (n - 1) // 2 for n in np.unique(
            np.stack([family_of, group], axis=1), axis=0, return_counts=True)[1]))  # fmt: skip
        false_links = int((family_of[links[:, 0]] != family_of[links[:, 1]]).sum())
        precision = 1 - false_links / len(links) if len(links) else 1.0
        table.append((threshold, precision, together / positives, false_links))
    return table


@dataclass
class FamilyResult:
    """The families' clips, fingerprinted, and what the search linked at one threshold."""

    kind: np.ndarray
    role: np.ndarray
    family: np.ndarray
    links: set[tuple[int, int]]
    original: dict[int, int]  # family -> its original's index
    group: np.ndarray  # each clip's group (connected components of the links)

    def recall(self, select: np.ndarray) -> tuple[int, int]:
        """(copies in their original's group, copies) among the clips ``select``."""
        copies = np.flatnonzero(select & np.isin(self.role, TRANSFORMS))
        found = sum(self.group[self.original[self.family[i]]] == self.group[i] for i in copies)
        return int(found), len(copies)

    def false_links(self, select: np.ndarray) -> int:
        return sum(
            self.family[a] != self.family[b] and (select[a] or select[b]) for a, b in self.links
        )

    def precision(self, select: np.ndarray) -> float:
        touching = [(a, b) for a, b in self.links if select[a] or select[b]]
        true = sum(self.family[a] == self.family[b] for a, b in touching)
        return true / len(touching) if touching else 1.0


def family_prints(instances: int, kinds: Sequence[str] = KINDS) -> tuple[list, list, dict]:
    """Profiles, fingerprints and labels (kind, role, family, duration) of the families."""
    profiles, prints = [], []
    labels: dict[str, list] = {"kind": [], "role": [], "family": [], "duration": []}
    for clip in families(instances, tuple(kinds)):
        printer = audio.Fingerprinter(clip.rate, clip.samples.shape[1])
        for start in range(0, len(clip.samples), 65536):  # in blocks, as a file is read
            printer.add(clip.samples[start : start + 65536])
        profile, printed = printer.result()
        profiles.append(profile)
        prints.append(printed)
        for name, value in zip(
            labels, (clip.kind, clip.role, clip.family, len(clip.samples) / clip.rate), strict=True
        ):
            labels[name].append(value)
    return profiles, prints, {name: np.array(values) for name, values in labels.items()}


def family_links(profiles: list, prints: list, labels: dict, threshold: float) -> FamilyResult:
    links = audio.audio_links(
        audio.profile_matrix(profiles),
        labels["duration"],
        lambda index: [prints[i] for i in index],
        threshold,
    )
    original = {f: i for i, (f, r) in enumerate(zip(labels["family"], labels["role"], strict=True))
                if r == "original"}  # fmt: skip
    return FamilyResult(
        labels["kind"],
        labels["role"],
        labels["family"],
        {tuple(p) for p in links.tolist()},
        original,
        linked_groups(len(prints), links),
    )


def family_margins(profiles: list, prints: list, labels: dict) -> tuple[float, float, int]:
    """(the lowest score of a copy against its original, the highest of two distinct sounds,
    copies whose profile the gate turns away), over every pair whose profiles agree."""
    family, role = labels["family"], labels["role"]
    every = np.stack(np.triu_indices(len(prints), k=1), axis=1)
    spectra = audio.relative_profiles(audio.profile_matrix(profiles))
    agree = audio.profile_distance(spectra, every) <= audio.PROFILE_TOLERANCE_DB
    same = family[every[:, 0]] == family[every[:, 1]]
    copy = same & (role[every[:, 0]] == "original")
    scores = np.zeros(len(every))
    scores[agree] = audio.correlations(prints, every[agree])
    return (
        float(scores[copy & agree].min()),
        float(scores[~same & agree].max()),
        int((copy & ~agree).sum()),
    )


def family_tables(instances: int) -> dict[str, list[tuple]]:
    profiles, prints, labels = family_prints(instances)
    lowest, highest, turned_away = family_margins(profiles, prints, labels)
    print(
        f"\nsound families: {len(KINDS)} kinds x {instances} sounds x {len(TRANSFORMS)} copies "
        f"and 2 controls = {len(prints)} clips; the lowest copy {lowest:.3f}, the highest "
        f"distinct pair {highest:.3f} (over every pair whose profiles agree); copies whose "
        f"profile is more than {audio.PROFILE_TOLERANCE_DB} dB off: {turned_away}"
    )
    result = family_links(profiles, prints, labels, audio.DEFAULT_THRESHOLD)
    every = np.ones(len(prints), dtype=bool)
    by_transform = []
    for name in TRANSFORMS:
        found, copies = result.recall(result.role == name)
        by_transform.append((name, found / copies, found, copies))
    by_kind = []
    for kind in KINDS:
        select = result.kind == kind
        found, copies = result.recall(select)
        by_kind.append((kind, result.precision(select), found / copies, result.false_links(select)))
    sweep = []
    for threshold in FAMILY_THRESHOLDS:
        at = family_links(profiles, prints, labels, threshold)
        found, copies = at.recall(every)
        sweep.append((threshold, at.precision(every), found / copies, at.false_links(every)))
    return {"by transform": by_transform, "by kind": by_kind, "thresholds": sweep}


def _scores(found: list[tuple[bool, bool]], positives: int) -> tuple[float, float, int]:
    """(precision, recall, false links) of (linked, truly the same) pairs."""
    true_links = sum(1 for linked, same in found if linked and same)
    false_links = sum(1 for linked, same in found if linked and not same)
    linked = true_links + false_links
    return (true_links / linked if linked else 1.0), true_links / positives, false_links


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.similarity_quality", description=__doc__)
    parser.add_argument("--copied", type=int, default=40)
    parser.add_argument("--distinct", type=int, default=300)
    parser.add_argument("--instances", type=int, default=6, help="sounds of each kind")
    args = parser.parse_args(argv)
    results = {
        f"prompts (default {prompts.DEFAULT_THRESHOLD}, Jaccard)": prompt_table(),
        f"audio (default {audio.DEFAULT_THRESHOLD}, correlation)": audio_table(
            args.copied, args.distinct
        ),
    }
    for name, table in results.items():
        print(f"\n{name}\n| threshold | precision | recall | false links |\n|---|---|---|---|")
        for threshold, precision, recall, false_links in table:
            print(f"| {threshold} | {precision:.3f} | {recall:.3f} | {false_links} |")
    tables = family_tables(args.instances)
    heads = {
        "by transform": "| transform | recall | copies linked |\n|---|---|---|",
        "by kind": "| kind | precision | recall | false links |\n|---|---|---|---|",
        "thresholds": "| threshold | precision | recall | false links |\n|---|---|---|---|",
    }
    for name, rows in tables.items():
        print(f"\nsound families {name} (default {audio.DEFAULT_THRESHOLD})\n{heads[name]}")
        for row in rows:
            if name == "by transform":
                print(f"| {row[0]} | {row[1]:.3f} | {row[2]} / {row[3]} |")
            else:
                print(f"| {row[0]} | {row[1]:.3f} | {row[2]:.3f} | {row[3]} |")
    return results | {f"families {name}": rows for name, rows in tables.items()}


if __name__ == "__main__":
    main()
