"""A stamp of one day's inputs, so that a complete day whose inputs did not change is skipped.

A year's range rerun would otherwise re-read, re-parse and re-assemble every day. Each asset
stamps what its day's outcome depends on, from listings and file details only (name, size,
mtime or ETag), never from the bytes:

- `run_manifest`: the day's manifest files and its own manifest record;
- `sound_files`: the manifest record, the files ledger and the day's audio directory (one
  listing: a deleted or replaced WAV changes it);
- `sound_catalog`: the same, plus the catalog file.

Every stamp also holds the parameters given (storage roots, the sweep policy) and a digest of
the code that turns those inputs into outputs, so new code or settings never reuse an old
outcome. After a day's step it records the stamp of the inputs as its outputs left them, with
the day's summary; the next run skips the day only when the stamp is equal and the summary
says the day is complete (no pending or failed row: those are always tried again).

Records live at `{CATALOG_ROOT}/_state/fingerprint/<asset>/date=D.json`.
"""

import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from assets.harvest.day_summary import DaySummary
from assets.harvest.manifest_files import manifest_files, manifest_name
from resources.storage import Storage

# The modules that turn a day's inputs into its outputs: a change to any is a new outcome.
_CODE = (
    "assets/harvest/manifest_files.py",
    "assets/harvest/catalog_schema.py",
    "assets/harvest/catalog_rows.py",
    "assets/harvest/day_plan.py",
    "assets/harvest/day_harvest.py",
    "assets/harvest/files_step.py",
    "assets/harvest/sweep.py",
    "assets/harvest/task_map.py",
    "assets/harvest/day_summary.py",
    "assets/harvest/reasons.py",
    "assets/harvest/day_fingerprint.py",
    "assets/harvest/catalog_publish.py",
    "assets/harvest/records.py",
    "assets/generation/handover.py",  # a day's generations join its manifest rows
    "assets/generation/generation_plan.py",
)


@cache
def code_digest() -> str:
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()


def entry_stamp(entry: Mapping[str, Any]) -> list[Any]:
    """Size and version of a file from its fsspec details: mtime locally, ETag on S3."""
    version = next(
        (entry[k] for k in ("mtime", "ETag", "LastModified", "updated", "md5Hash") if k in entry),
        None,
    )
    return [int(entry.get("size") or 0), str(version)]


def file_stamp(storage: Storage, relpath: str) -> list[Any] | None:
    """The stamp of one file of `storage`, or None when it is not there."""
    try:
        return entry_stamp(storage.fs.info(storage.path(relpath)))
    except FileNotFoundError:
        return None


def listing_stamp(storage: Storage, relpath: str) -> list[list[Any]]:
    """Name and stamp of every visible file of a directory, from one listing."""
    try:
        entries = storage.find(relpath)
    except FileNotFoundError:
        entries = {}
    return sorted([name, *entry_stamp(entry)] for name, entry in entries.items())


def manifest_stamps(manifests: Storage, day: str) -> list[list[Any]]:
    """Name and stamp of each manifest file of the day (ManifestError: an unknown format)."""
    fs = manifests.fs
    paths = manifest_files(fs, manifests.root, day)
    return [[manifest_name(fs, path), *entry_stamp(fs.info(path))] for path in paths]


class Fingerprints:
    """The day records of one asset in the catalog storage's `_state/`."""

    def __init__(self, state: Storage, asset: str, **parameters: Any) -> None:
        self.state = state
        self.asset = asset
        self.parameters = {"code": code_digest(), **parameters}

    def stamp(self, *inputs: Any) -> str:
        text = json.dumps([self.parameters, *inputs], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def relpath(self, day: str) -> str:
        return f"_state/fingerprint/{self.asset}/date={day}.json"

    def unchanged(self, day: str, stamp: str) -> DaySummary | None:
        """The day's recorded summary when it is complete and its inputs stamp as `stamp`."""
        try:
            record = json.loads(self.state.read_bytes(self.relpath(day)))
            summary = DaySummary.from_json(record["summary"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None  # no record, or one this code cannot read: the day runs
        return summary if record.get("stamp") == stamp and summary.complete else None

    def record(self, day: str, stamp: str, summary: DaySummary) -> None:
        data = json.dumps({"stamp": stamp, "summary": summary.to_json()}, sort_keys=True)
        self.state.write_bytes(data.encode(), self.relpath(day), if_changed=True)
