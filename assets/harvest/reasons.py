"""Reasons counted together: the variants of one failure reason share one form.

A plain module (no Dagster), so the step metadata and `soundharvest status` group alike.
"""

import re

# Numbers (run ids, attempts, days, lines) and quoted values vary between runs failing for
# one reason; HTTP status codes say which reason it is, so they stay.
_VARYING = re.compile(r"(?<!HTTP )(?<!status )\b\d+(?:\.\d+)?\b|'[^']*'")


def reason_group(error: str) -> str:
    """The form shared by one reason's variants: "run 2001 after 8 attempts" -> "run N after N
    attempts"."""
    return _VARYING.sub(lambda m: "'…'" if m.group().startswith("'") else "N", error)
