"""What the assets use to reach the outside world.

The two Dagster resources sit at the top: `camb_resource.CambResource` (the API client, one
connection pool per run) and `storage_resource.StorageResource` (the storage roots). Beside
them, plain modules: `camb/` (the API client in parts), `storage/` (atomic, verified writes to
any fsspec root), `audio/` (what a delivered file holds, and its PCM WAV copy), and
`error_kinds.py` (the kinds of trouble a person has to tell apart).
"""
