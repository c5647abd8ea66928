"""Where each storage root comes from: configuration first, then the environment, the default.

Kept apart from `StorageResource` so that readers without Dagster (`soundharvest status`)
resolve the roots the same way the pipeline does.
"""

import os

# name -> (environment variable, default)
ROOTS: dict[str, tuple[str, str]] = {
    "manifests": ("SOUNDHARVEST_MANIFEST_ROOT", "data/manifests"),
    "audio": ("SOUNDHARVEST_AUDIO_ROOT", "data/audio"),
    "catalog": ("SOUNDHARVEST_CATALOG_ROOT", "data/catalog"),
    "datasets": ("SOUNDHARVEST_DATASET_ROOT", "data/datasets"),
    "prompts": ("SOUNDHARVEST_PROMPT_ROOT", "data/prompts"),  # read only, like manifests
}


def root_url(name: str, configured: str | None = None) -> str:
    """The URL of root `name` (`manifests`, `audio`, `catalog`, `datasets`, `prompts`)."""
    variable, default = ROOTS[name]
    return configured or os.environ.get(variable, "").strip() or default
