"""Precision and recall of the prompt and audio similarity rules against their thresholds.

    python -m bench.similarity_quality [--copied 40] [--distinct 300]

The labelled data is the tests' (tests/support/similar_clips.py, made from seeds): 200 prompts with
a near-copy each (take numbers, word order, punctuation, case, a stray adjective) and 400
pairs of distinct prompts, many sharing most of their words; `--distinct` distinct sounds,
`--copied` of them copied 9 ways (gain ±6 dB, 44.1 and 22.05 kHz, stereo, trims of up to
100 ms, noise at -40 dB, all at once). A pair counts as found when the search finds it:
the audio figures include what the blocking keys miss. docs/ml.md quotes the output.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from assets.ml import audio_fingerprint as audio
from assets.ml import prompt_similarity as prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.similar_clips import RATE, prompt_pairs, sound, variants

PROMPT_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.68, 0.7, 0.75, 0.8, 0.85)
AUDIO_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.85, 0.9)


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
    spectra = np.array([np.frombuffer(p, np.uint8) for p in profiles]) * audio.STEP_DB
    centred = spectra - spectra.mean(axis=1, keepdims=True)
    apart = np.sqrt(np.mean(np.square(centred[every[:, 0]] - centred[every[:, 1]]), axis=1))
    every = every[apart <= audio.PROFILE_TOLERANCE_DB]
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
        found = [(True, bool(family_of[a] == family_of[b])) for a, b in links]
        table.append((threshold, *_scores(found, positives)))
    return table


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
    return results


if __name__ == "__main__":
    main()
