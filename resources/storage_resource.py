"""The Dagster resource naming the storage roots.

Each root is any fsspec URL (a local folder, `s3://bucket/prefix`, `gs://...`):

| variable                      | default          |
|-------------------------------|------------------|
| `SOUNDHARVEST_MANIFEST_ROOT`  | `data/manifests` |
| `SOUNDHARVEST_AUDIO_ROOT`     | `data/audio`     |
| `SOUNDHARVEST_CATALOG_ROOT`   | `data/catalog`   |
| `SOUNDHARVEST_DATASET_ROOT`   | `data/datasets` (where `ml_dataset` writes snapshots) |
| `SOUNDHARVEST_STORAGE_OPTIONS`| JSON keyed by protocol, e.g. `{"s3": {"endpoint_url": "..."}}` |

Relative local roots are taken from the working directory and stored as absolute URIs.
"""

import os

from dagster import ConfigurableResource
from pydantic import Field

from resources.storage import Storage


class StorageResource(ConfigurableResource):
    """Where manifests are read from and where audio and the catalog are written."""

    manifest_root: str | None = Field(default=None, description="$SOUNDHARVEST_MANIFEST_ROOT")
    audio_root: str | None = Field(default=None, description="$SOUNDHARVEST_AUDIO_ROOT")
    catalog_root: str | None = Field(default=None, description="$SOUNDHARVEST_CATALOG_ROOT")
    dataset_root: str | None = Field(default=None, description="$SOUNDHARVEST_DATASET_ROOT")

    def _open(self, configured: str | None, variable: str, default: str) -> Storage:
        # Storage applies $SOUNDHARVEST_STORAGE_OPTIONS for the URL's protocol itself.
        return Storage(configured or os.environ.get(variable, "").strip() or default)

    def manifests(self) -> Storage:
        return self._open(self.manifest_root, "SOUNDHARVEST_MANIFEST_ROOT", "data/manifests")

    def audio(self) -> Storage:
        return self._open(self.audio_root, "SOUNDHARVEST_AUDIO_ROOT", "data/audio")

    def catalog(self) -> Storage:
        return self._open(self.catalog_root, "SOUNDHARVEST_CATALOG_ROOT", "data/catalog")

    def datasets(self) -> Storage:
        return self._open(self.dataset_root, "SOUNDHARVEST_DATASET_ROOT", "data/datasets")
