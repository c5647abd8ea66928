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
from resources.storage_probe import probe_writable


class StorageResource(ConfigurableResource):
    """Where manifests are read from and where audio and the catalog are written."""

    manifest_root: str | None = Field(default=None, description="$SOUNDHARVEST_MANIFEST_ROOT")
    audio_root: str | None = Field(default=None, description="$SOUNDHARVEST_AUDIO_ROOT")
    catalog_root: str | None = Field(default=None, description="$SOUNDHARVEST_CATALOG_ROOT")
    dataset_root: str | None = Field(default=None, description="$SOUNDHARVEST_DATASET_ROOT")

    def _open(self, root: str) -> Storage:
        field, variable, default = _ROOTS[root]
        # Storage applies $SOUNDHARVEST_STORAGE_OPTIONS for the URL's protocol itself.
        return Storage(getattr(self, field) or os.environ.get(variable, "").strip() or default)

    def manifests(self) -> Storage:
        return self._open("manifests")

    def audio(self) -> Storage:
        return self._open("audio")

    def catalog(self) -> Storage:
        return self._open("catalog")

    def datasets(self) -> Storage:
        return self._open("datasets")

    def probe_writable(self, *roots: str) -> None:
        """Write and remove a probe file in each named root ("audio", "catalog", "datasets");
        `StorageUnwritable` names the first that cannot be written and where it is set."""
        for root in roots:
            # The variable is named even when a field set the root: it is where people look.
            probe_writable(lambda root=root: self._open(root), root, _ROOTS[root][1])


# root -> (field of the resource, environment variable, default)
_ROOTS = {
    "manifests": ("manifest_root", "SOUNDHARVEST_MANIFEST_ROOT", "data/manifests"),
    "audio": ("audio_root", "SOUNDHARVEST_AUDIO_ROOT", "data/audio"),
    "catalog": ("catalog_root", "SOUNDHARVEST_CATALOG_ROOT", "data/catalog"),
    "datasets": ("dataset_root", "SOUNDHARVEST_DATASET_ROOT", "data/datasets"),
}
