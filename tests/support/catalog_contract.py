"""The catalog's columns written out by hand, as README.md's "What you get" table states them:
the on-disk contract the code's one statement of them (assets/harvest/catalog_schema.py) must
keep. Tests compare against this, never against the code's own list."""

import pyarrow as pa

UTC = pa.timestamp("us", tz="UTC")
CONTRACT = [
    ("run_id", pa.int64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("uri", pa.string()),
    ("size_bytes", pa.int64()),
    ("sha256", pa.string()),
    ("sample_rate", pa.int32()),
    ("channels", pa.int32()),
    ("frames", pa.int64()),
    ("duration_s", pa.float64()),
    ("subtype", pa.string()),
    ("source_format", pa.string()),
    ("prompt", pa.string()),
    ("audio_type", pa.string()),
    ("requested_duration_s", pa.float64()),
    ("task_id", pa.string()),
    ("extra", pa.string()),
    ("manifest", pa.string()),
    ("attempts", pa.int32()),
    ("first_seen_at", UTC),
    ("fetched_at", UTC),
]
