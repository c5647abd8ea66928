"""`StorageResource`, the Dagster resource naming the storage roots (`resources/storage/`).

One of the two Dagster resources of the project, with `camb_resource.CambResource`; every
other module under `resources/` is plain Python the resources and assets call.

Each root is any fsspec URL (a local folder, `s3://bucket/prefix`, `gs://...`):

| variable                      | default          |
|-------------------------------|------------------|
| `SOUNDHARVEST_MANIFEST_ROOT`  | `data/manifests` |
| `SOUNDHARVEST_AUDIO_ROOT`     | `data/audio`     |
| `SOUNDHARVEST_CATALOG_ROOT`   | `data/catalog`   |
| `SOUNDHARVEST_DATASET_ROOT`   | `data/datasets` (where `ml_dataset` writes snapshots) |
| `SOUNDHARVEST_PROMPT_ROOT`    | `data/prompts` (prompt sheets, read by `sound_generations`) |
| `SOUNDHARVEST_STORAGE_OPTIONS`| JSON keyed by protocol, e.g. `{"s3": {"endpoint_url": "..."}}` |

Relative local roots are taken from the working directory and stored as absolute URIs.
"""

from dagster import ConfigurableResource
from pydantic import Field

from resources.storage import Storage
from resources.storage.probe import probe_readable, probe_writable
from resources.storage.roots import ROOTS, root_url


class StorageResource(ConfigurableResource):
    """Where manifests are read from and where audio and the catalog are written."""

    manifest_root: str | None = Field(default=None, description="$SOUNDHARVEST_MANIFEST_ROOT")
    audio_root: str | None = Field(default=None, description="$SOUNDHARVEST_AUDIO_ROOT")
    catalog_root: str | None = Field(default=None, description="$SOUNDHARVEST_CATALOG_ROOT")
    dataset_root: str | None = Field(default=None, description="$SOUNDHARVEST_DATASET_ROOT")
    prompt_root: str | None = Field(default=None, description="$SOUNDHARVEST_PROMPT_ROOT")

    # Storage applies $SOUNDHARVEST_STORAGE_OPTIONS for the URL's protocol itself; each root
    # names its variable, which its errors then name (even when a field set the root: the
    # variable is where people look).
    def manifests(self) -> Storage:
        return self._open("manifests", self.manifest_root)

    def audio(self) -> Storage:
        return self._open("audio", self.audio_root)

    def catalog(self) -> Storage:
        return self._open("catalog", self.catalog_root)

    def datasets(self) -> Storage:
        return self._open("datasets", self.dataset_root)

    def prompts(self) -> Storage:
        return self._open("prompts", self.prompt_root)

    def probe_writable(self, *roots: str) -> None:
        """Write and remove a probe file in each named root ("audio", "catalog", "datasets");
        the first that cannot be written raises the operator's mistake naming it and its
        variable (`storage/probe.py`)."""
        for root in roots:
            probe_writable(getattr(self, root))

    def probe_readable(self, root: str) -> None:
        """Ask the root ("manifests", "prompts") whether it exists: an endpoint that cannot be
        reached, or credentials refused, raise the operator's mistake naming it and its
        variable."""
        probe_readable(getattr(self, root))

    @staticmethod
    def _open(name: str, configured: str | None) -> Storage:
        return Storage(root_url(name, configured), setting=ROOTS[name][0])
