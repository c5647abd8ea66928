"""The dataset card (``README.md`` with Hugging Face YAML front matter) and its PNG plots."""

import io
import json
import math

import pandas as pd
import pyarrow as pa

from assets.ml.dataset.spec import SPLITS, DatasetSpec
from assets.ml.dataset.split_shares import SplitShares

PLOTS = {"duration": "plots/duration.png", "loudness": "plots/loudness.png"}
_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
]
GROUP_LABELS = {
    "groups": "groups",
    "largest_group": "runs in the largest group",
    "prompt_links": "near-duplicate prompt links (pairs of distinct prompts)",
    "audio_links": "same-sound audio links (pairs of clips)",
    "prompt_links_split_before": "prompt links the prompt hash split (leakage avoided)",
    "audio_links_split_before": "audio links the prompt hash split (leakage avoided)",
    "links_split_now": "links crossing splits in this snapshot",
    "kept": "runs that kept their split from the previous snapshot",
    "bridged": "new runs joining a group already in two splits",
    "near_audio_dropped": "clips dropped as the same sound as an earlier one",
}


def size_category(rows: int) -> str:
    return next((name for limit, name in _SIZE_CATEGORIES if rows < limit), "100M<n<1B")


def summary_frame(rows: pa.Table) -> pd.DataFrame:
    """The few columns the card summarises, as pandas."""
    names = ["split", "duration_s", "sample_rate", "channels", "audio_type", "lufs"]
    names += ["peak_dbfs", "clipped_fraction", "silence_fraction", "is_silent"]
    return rows.select(names).to_pandas()


def plots(rows: pd.DataFrame) -> dict[str, bytes]:
    """PNG histograms of clip durations and of loudness (LUFS, measured clips only)."""
    import matplotlib  # imported on use: it is slow to import

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    loudness = pd.to_numeric(rows["lufs"], errors="coerce").astype(float)
    series = {
        "duration": (rows["duration_s"].astype(float), "clip duration (s)"),
        "loudness": (loudness[loudness.map(math.isfinite)], "integrated loudness (LUFS)"),
    }
    pngs = {}
    for name, (values, label) in series.items():
        figure = Figure(figsize=(6, 3.2), dpi=100)
        axes = figure.subplots()
        if len(values):
            axes.hist(values, bins=40, color="#4c72b0")
        else:
            axes.text(0.5, 0.5, "no measured clips", ha="center", va="center")
        axes.set_xlabel(label)
        axes.set_ylabel("clips")
        axes.yaxis.get_major_locator().set_params(integer=True)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})
        pngs[PLOTS[name]] = buffer.getvalue()
    return pngs


def split_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Clips and hours per split (every split, empty ones too), and the total."""
    grouped = rows.groupby("split", observed=True)["duration_s"]
    table = pd.DataFrame({"clips": grouped.size(), "hours": grouped.sum() / 3600}).reindex(
        list(SPLITS), fill_value=0
    )
    table.loc["total"] = [len(rows), rows["duration_s"].sum() / 3600]
    return table.astype({"clips": int})


def card(
    rows: pd.DataFrame,
    spec: DatasetSpec,
    version: str,
    dropped: dict[str, int],
    hf_files: dict[str, str],
    groups: dict[str, int] | None = None,
    without_features: dict[str, int] | None = None,
    shares: SplitShares | None = None,
) -> str:
    """The card's Markdown; ``hf_files`` maps each split with rows to its ``hf/`` glob;
    ``groups``: the counts of similarity groups (``GroupStats``), when splits follow them;
    ``without_features``: clips of the snapshot without features, by why they have none;
    ``shares``: the shares against the ratios and the group sizes."""
    front = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, pattern in hf_files.items():
        front += [f"  - split: {split}", f"    path: {pattern}"]
    front += [
        "task_categories:",
        "- text-to-audio",
        "size_categories:",
        f"- {size_category(len(rows))}",
        f"pretty_name: soundharvest {version}",
        "---",
    ]
    if not hf_files:
        front[1:4] = []  # no hf export: nothing for `configs` to point at
    summary = split_summary(rows)
    quality = _quality(rows, without_features or {})
    lines = [
        *front,
        "",
        f"# soundharvest text-to-sound clips, version `{version}`",
        "",
        "Clips generated with the CAMB.AI text-to-sound API and harvested by soundharvest; "
        "`text` is the prompt. Built by the `ml_dataset` asset from the catalog; "
        "`manifest.json` lists every file with its size and sha256.",
        "",
        "## Splits",
        "",
        *_shares_warning(shares),
        _splits_table(summary, shares),
        "",
        *_splits_rule(spec, groups),
        "",
        *_group_sizes(shares),
        "## Audio",
        "",
        _counts("sample rate (Hz)", rows["sample_rate"]),
        "",
        _counts("channels", rows["channels"]),
        "",
        _counts("audio type", rows["audio_type"].fillna("(none)")),
        "",
        f"![durations]({PLOTS['duration']})",
        "",
        "## Quality",
        "",
        quality,
        "",
        f"![loudness]({PLOTS['loudness']})",
        "",
        "## How it was selected",
        "",
        "Runs dropped, by reason: "
        + (", ".join(f"{why}: {n}" for why, n in dropped.items() if n) or "none")
        + ".",
        "",
        "```json",
        json.dumps(spec.canonical(), indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def _splits_rule(spec: DatasetSpec, groups: dict[str, int] | None) -> list[str]:
    if groups is None:
        return [
            "Splits come from a stable hash of the group key "
            f"(`{spec.group_by}`, seed `{spec.split_seed}`): one prompt never spans two splits."
        ]
    return [
        "Runs whose prompts are near-copies (take numbers, word order, punctuation, a stray "
        f"word: Jaccard similarity at least {spec.prompt_similarity}) or whose clips are the "
        f"same sound (fingerprint correlation at least {spec.audio_similarity}) form one "
        "group, and a group never spans two splits. Numbers that tell takes apart are left "
        f"out of the prompts (`take_numbers: {spec.take_numbers}`); prompts asking for other "
        "numbers are other prompts. A run keeps the split it had in the previous snapshot; "
        "new groups are placed largest first where they bring the shares nearest the ratios "
        "(a group too large for validation or test goes to train), drawn by a stable hash "
        f"(seed `{spec.split_seed}`) where several splits have room. A new run that links "
        "groups already in two splits goes to the split holding most of its group's earlier "
        "runs (ties to train): the links it makes across splits are counted below.",
        "",
        groups_table(groups),
    ]


def _splits_table(summary: pd.DataFrame, shares: SplitShares | None) -> str:
    """Clips and hours per split and in total; with ``shares``, each split's share of the
    clips against the ratio asked."""
    table = summary.astype(object)  # object: ints stay ints
    if shares is not None:
        table["share"] = [f"{shares.got[s]:.1%}" for s in SPLITS] + ["100%"]
        table["asked"] = [f"{shares.asked[s]:.0%}" for s in SPLITS] + ["100%"]
    return table.to_markdown(floatfmt=".3f")


def _shares_warning(shares: SplitShares | None) -> list[str]:
    warning = shares.warning() if shares is not None else ""
    return [f"> **Warning:** {warning}", ""] if warning else []


def _group_sizes(shares: SplitShares | None) -> list[str]:
    """How many groups of each size, and the largest with their prompts."""
    if shares is None or not shares.size_buckets:
        return []
    return [
        "### Group sizes",
        "",
        "Runs of one group share its `group_id` (in every export) and its split. Grouped "
        "cross-validation inside a split (scikit-learn's `GroupKFold` with "
        "`groups=group_id`) keeps each group in one fold.",
        "",
        shares.sizes_table().to_markdown(index=False),
        "",
        "The largest groups:",
        "",
        shares.largest_table().to_markdown(index=False),
        "",
    ]


def groups_table(groups: dict[str, int]) -> str:
    """The counts of the similarity groups (``GroupStats``) as a Markdown table."""
    table = pd.DataFrame(
        {
            "similarity groups": list(GROUP_LABELS.values()),
            "count": [int(groups[key]) for key in GROUP_LABELS],
        }
    )
    return table.to_markdown(index=False)


def _counts(label: str, values: pd.Series) -> str:
    counts = values.astype(str).value_counts().sort_index()
    return pd.DataFrame({label: counts.index, "clips": counts.to_numpy()}).to_markdown(index=False)


def _quality(rows: pd.DataFrame, without_features: dict[str, int]) -> str:
    """Quantiles of the measured clips' figures; why the others have none."""
    measured = rows[rows["peak_dbfs"].notna()]
    why = ", ".join(f"{n} {reason}" for reason, n in without_features.items() if n)
    if measured.empty:
        return f"No clip has quality features: {why or 'none measured yet'}."
    figures = measured[["lufs", "peak_dbfs", "clipped_fraction", "silence_fraction"]]
    finite = figures.astype(float).replace([math.inf, -math.inf], math.nan)
    table = finite.quantile([0.05, 0.5, 0.95]).rename(index=lambda q: f"p{round(q * 100)}")
    silent = int(measured["is_silent"].astype(bool).sum())
    unmeasured = f" Without features: {why}." if why else ""
    return (
        f"{len(measured)} of {len(rows)} clips measured, {silent} silent.{unmeasured}\n\n"
        + table.to_markdown(floatfmt=".3f")
    )
