"""How near a snapshot's splits came to the shares asked, and the groups that decide it.

A group never spans two splits, so a group holding most rows decides the shares whatever the
placement does (`splits.place_groups` gives such a group to train). `split_shares` measures
the shares, the distribution of group sizes and the largest groups with their prompts; the
`split_shares` check of `ml_dataset` warns with `warning()`, and the card shows the same.

No `from __future__ import annotations` here: `DatasetSpec` is the base of a Dagster Config.
"""

from dataclasses import asdict, dataclass, field

import pandas as pd
import polars as pl
import pyarrow as pa

from assets.ml.dataset.spec import SPLITS, DatasetSpec

TOLERANCE = 0.05  # a split's share may be this far (5 points) from its ratio
LARGEST = 5  # groups named in the card and in a warning
PROMPTS_SHOWN = 3  # prompts named per group
_PROMPT_CHARS = 60


@dataclass(frozen=True)
class LargeGroup:
    group_id: int
    runs: int
    split: str
    prompts: list[tuple[str, int]]  # its most common prompts ("" for none), with their runs
    distinct_prompts: int

    def described(self, total: int) -> str:
        """ "group 1001: 189 runs (100.0 %) in train, prompts 'a' (5), 'b' (5) and 38 more"."""
        shown = ", ".join(f"{_quoted(text)} ({n})" for text, n in self.prompts)
        more = self.distinct_prompts - len(self.prompts)
        return (
            f"group {self.group_id}: {self.runs:,} run{'s' * (self.runs != 1)} "
            f"({self.runs / total:.1%}) in "
            f"{self.split}, prompts {shown}{f' and {more:,} more' if more > 0 else ''}"
        )


@dataclass(frozen=True)
class SplitShares:
    asked: dict[str, float]  # the ratios
    clips: dict[str, int]
    size_buckets: list[tuple[str, int, int]]  # (group sizes, groups, runs), smallest first
    largest: list[LargeGroup] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.clips.values())

    @property
    def got(self) -> dict[str, float]:
        return {split: n / self.total if self.total else 0.0 for split, n in self.clips.items()}

    def problems(self) -> list[str]:
        """Each split empty though asked for, or further than TOLERANCE from its ratio."""
        found = []
        for split in SPLITS:
            asked, got = self.asked[split], self.got[split]
            if asked > 0 and not self.clips[split]:
                found.append(f"{split} is empty (asked {asked:.0%})")
            elif abs(got - asked) > TOLERANCE + 1e-9:
                found.append(f"{split} holds {got:.1%} (asked {asked:.0%})")
        return found

    def warning(self) -> str:
        """What the check says when the shares are off ("" when they are not): the shares got
        against those asked, the largest groups with their prompts, and what to do."""
        problems = self.problems()
        if not problems:
            return ""
        large = [g for g in self.largest if g.runs > TOLERANCE * self.total][:3]
        why = (
            "A group never spans two splits, and the largest decide the shares: "
            + "; ".join(group.described(self.total) for group in large)
            + ". If those runs should not be one group, see why they are linked "
            "(prompt_similarity, take_numbers, audio_similarity)"
            if large
            else f"No group holds {TOLERANCE:.0%} of the clips: the splits runs kept from "
            "earlier snapshots decide the shares (or, with group_by prompt, the hash draw)"
        )
        return (
            f"Split shares more than {TOLERANCE * 100:.0f} points off: {', '.join(problems)}. "
            f"Got {self._shares()} of {self.total:,} clips. {why}. Runs keep their split from "
            "snapshot to snapshot: a new split_seed places every group afresh."
        )

    def _shares(self) -> str:
        return ", ".join(
            f"{split} {self.clips[split]:,} ({self.got[split]:.1%}, asked {self.asked[split]:.0%})"
            for split in SPLITS
        )

    def table(self) -> pd.DataFrame:
        """Clips per split, their share and the share asked."""
        return pd.DataFrame(
            {
                "split": list(SPLITS),
                "clips": [self.clips[s] for s in SPLITS],
                "share": [f"{self.got[s]:.1%}" for s in SPLITS],
                "asked": [f"{self.asked[s]:.0%}" for s in SPLITS],
            }
        )

    def largest_table(self) -> pd.DataFrame:
        """The largest groups, one row each, their prompts as Markdown table cells."""
        return pd.DataFrame(
            [
                (
                    g.group_id,
                    g.runs,
                    f"{g.runs / self.total:.1%}",
                    g.split,
                    g.distinct_prompts,
                    "; ".join(f"{markdown_cell(text)} ({n})" for text, n in g.prompts),
                )
                for g in self.largest
            ],
            columns=["group_id", "runs", "of clips", "split", "prompts", "most common prompts"],
        )

    def sizes_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.size_buckets, columns=["runs per group", "groups", "runs"])

    def as_dict(self) -> dict:
        return {
            "asked": self.asked,
            "got": {split: round(share, 6) for split, share in self.got.items()},
            "problems": self.problems(),
            "group_sizes": [
                {"runs per group": label, "groups": groups, "runs": runs}
                for label, groups, runs in self.size_buckets
            ],
            "largest_groups": [asdict(group) for group in self.largest],
        }


def split_shares(rows: pa.Table, spec: DatasetSpec) -> SplitShares:
    """The shares of the selected ``rows`` (split, group_id, text) against ``spec``'s ratios."""
    frame = pl.from_arrow(rows.select(["split", "group_id", "text"]))
    assert isinstance(frame, pl.DataFrame)
    clips = dict(frame["split"].cast(pl.String).value_counts().iter_rows())
    sizes = frame.group_by("group_id").agg(
        pl.len().alias("runs"), pl.col("split").first().cast(pl.String)
    )
    asked = dict(
        zip(SPLITS, (spec.train_ratio, spec.validation_ratio, spec.test_ratio), strict=True)
    )
    return SplitShares(
        asked=asked,
        clips={split: int(clips.get(split, 0)) for split in SPLITS},
        size_buckets=_buckets(sizes["runs"]),
        largest=_largest(frame, sizes),
    )


def _buckets(runs: pl.Series) -> list[tuple[str, int, int]]:
    """Groups and their runs by group size: 1, 2-9, 10-99, 100-999, ..."""
    size = pl.col("runs")
    bucket = pl.when(size == 1).then(0).otherwise(size.log10().floor().cast(pl.Int64) + 1)
    table = (
        runs.to_frame("runs")
        .with_columns(bucket=bucket)
        .group_by("bucket")
        .agg(pl.len().alias("groups"), pl.col("runs").sum())
        .sort("bucket")
    )
    return [(_label(b), int(groups), int(total)) for b, groups, total in table.iter_rows()]


def _label(bucket: int) -> str:
    if bucket == 0:
        return "1"
    low = 2 if bucket == 1 else 10 ** (bucket - 1)
    return f"{low:,}-{10**bucket - 1:,}"


def _largest(frame: pl.DataFrame, sizes: pl.DataFrame) -> list[LargeGroup]:
    top = sizes.sort(["runs", "group_id"], descending=[True, False]).head(LARGEST)
    found = []
    for group_id, runs, split in top.iter_rows():
        texts = frame.filter(pl.col("group_id") == group_id)["text"].cast(pl.String)
        counts = texts.value_counts(sort=True, name="n")
        counts = counts.sort(["n", "text"], descending=[True, False])
        shown = [(text, int(n)) for text, n in counts.head(PROMPTS_SHOWN).iter_rows()]
        found.append(LargeGroup(int(group_id), int(runs), split, shown, counts.height))
    return found


def markdown_cell(text: str) -> str:
    """A prompt as one Markdown table cell: one line, no bare pipe, at most 80 characters."""
    text = " ".join(text.split()) or "(no prompt)"
    text = text if len(text) <= 80 else text[:79] + "…"
    return text.replace("|", "\\|")


def _quoted(text: str) -> str:
    if not text:
        return "(no prompt)"
    return repr(text if len(text) <= _PROMPT_CHARS else text[: _PROMPT_CHARS - 1] + "…")
