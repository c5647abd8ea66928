"""A day's prompt sheets, read and checked: one row per generation asked for.

For day D the sheets are every file under `{PROMPT_ROOT}/D/` and `{PROMPT_ROOT}/D.csv`,
`.jsonl`, `.ndjson`, `.parquet`, found and parsed exactly as manifests are
(`assets/harvest/manifest_files.py`): a file that cannot be parsed raises `PromptSheetError`
naming the file and line, and fails the day.

Columns: `prompt` (required), `duration` (seconds; empty: the API's default), `audio_type`
(`sound` or `music`; empty: sound), `takes` (how many generations of the row; empty: 1); any
other column is carried into the catalog's `extra`. A row breaking a rule of `limits.py`
(an empty or overlong prompt, a control character, a duration out of bounds, an unknown audio
type, takes that are not a whole number within bounds) is `rejected` with its reason and
never sent. A row of takes T becomes T rows, takes 1..T, each its own generation.

Two rows of the day with the same key (`keys.py`) are one generation: the later one is a
`duplicate` naming the first's file and line.
"""

import unicodedata
from dataclasses import dataclass
from typing import Any

import fsspec

from assets.generation.keys import Request, normalize_duration, normalize_prompt
from assets.generation.limits import GenerationLimits, variable
from assets.harvest.manifest_files import (
    ManifestError,
    as_text,
    extra_json,
    is_null,
    manifest_files,
    parse_duration,
    read_records,
    shown,
)

SHEET_COLUMNS = ("prompt", "duration", "audio_type", "takes")
AUDIO_TYPES = ("sound", "music")
# Characters a prompt may not hold: controls (tabs and newlines are whitespace: collapsed),
# lone surrogates and unassigned code points.
_FORBIDDEN = {"Cc", "Cs", "Cn"}


class PromptSheetError(ManifestError):
    """A prompt sheet that cannot be parsed: fix it, then generate the day again."""

    redo = "generate the day again"


@dataclass(frozen=True)
class SheetRow:
    sheet: str  # the file, as manifests name theirs
    line: int
    request: Request | None  # None: rejected
    extra: str | None  # the sheet's other columns, JSON
    error: str | None = None  # why it was rejected
    duplicate_of: str | None = None  # "file:line" of the first row with its key
    text: str | None = None  # a rejected row's prompt as the sheet has it (the catalog shows it)

    @property
    def where(self) -> str:
        return f"{self.sheet}:{self.line}"


def sheet_files(fs: fsspec.AbstractFileSystem, root: str, day: str) -> list[str]:
    """The day's sheets (`PromptSheetError` for a file of an unknown format)."""
    try:
        return manifest_files(fs, root, day)
    except ManifestError as exc:
        raise PromptSheetError(exc.path, exc.line, exc.reason) from None


def load_sheets(
    fs: fsspec.AbstractFileSystem, root: str, day: str, limits: GenerationLimits
) -> list[SheetRow]:
    """Every row of the day's sheets, takes expanded, duplicates marked, in sheet order."""
    rows: list[SheetRow] = []
    first: dict[bytes, str] = {}  # base key -> "file:line" of the row that has it
    for path in sheet_files(fs, root, day):
        try:
            for name, line, record in read_records(fs, path, ("prompt",)):
                rows += _rows_of(name, line, record, limits, first)
        except ManifestError as exc:
            raise PromptSheetError(exc.path, exc.line, exc.reason) from None
    return rows


def _rows_of(
    name: str,
    line: int,
    record: dict[str, Any],
    limits: GenerationLimits,
    first: dict[bytes, str],
) -> list[SheetRow]:
    extra = extra_json(record, SHEET_COLUMNS)
    fields, error = check_row(record, limits)
    if error is not None:
        text = as_text(record.get("prompt"))
        return [SheetRow(name, line, None, extra, error=error, text=text)]
    prompt, duration, audio_type, takes = fields
    rows = []
    for take in range(1, takes + 1):
        request = Request(prompt, duration, audio_type, take)
        earlier = first.setdefault(request.base, f"{name}:{line}")
        twin = earlier if earlier != f"{name}:{line}" else None
        rows.append(SheetRow(name, line, request, extra, duplicate_of=twin))
    return rows


Checked = tuple[str, float | None, str, int]


def check_row(record: dict[str, Any], limits: GenerationLimits) -> tuple[Checked, str | None]:
    """((prompt, duration, audio type, takes), None), or the first rule the row breaks."""
    prompt, error = _prompt(record.get("prompt"), limits)
    duration, duration_error = _duration(record.get("duration"), limits)
    audio_type, type_error = _audio_type(record.get("audio_type"))
    takes, takes_error = _takes(record.get("takes"), limits)
    return (prompt, duration, audio_type, takes), (
        error or duration_error or type_error or takes_error
    )


def _prompt(value: Any, limits: GenerationLimits) -> tuple[str, str | None]:
    if not is_null(value) and not isinstance(value, str):
        return "", f"prompt {shown(value)} is not text"
    prompt = normalize_prompt(value or "")
    if not prompt:
        return "", "prompt is empty"
    odd = next((c for c in prompt if unicodedata.category(c) in _FORBIDDEN), None)
    if odd is not None:
        return prompt, f"prompt holds a control character ({odd!r})"
    if len(prompt) > limits.max_prompt_chars:
        return prompt, (
            f"prompt of {len(prompt)} characters (at most {limits.max_prompt_chars}: "
            f"{variable('max_prompt_chars')})"
        )
    return prompt, None


def _duration(value: Any, limits: GenerationLimits) -> tuple[float | None, str | None]:
    duration, error = parse_duration(value)
    if error or duration is None:
        return None, error
    if not limits.min_duration_s <= duration <= limits.max_duration_s:
        return None, (
            f"duration {duration:g} s is outside {limits.min_duration_s:g}.."
            f"{limits.max_duration_s:g} s ({variable('min_duration_s')}, "
            f"{variable('max_duration_s')})"
        )
    return normalize_duration(duration), None


def _audio_type(value: Any) -> tuple[str, str | None]:
    text = (as_text(value) or "").strip().lower()
    if not text:
        return "sound", None
    if text not in AUDIO_TYPES:
        return text, f"audio_type {shown(value)} is not sound or music"
    return text, None


def _takes(value: Any, limits: GenerationLimits) -> tuple[int, str | None]:
    if is_null(value) or (isinstance(value, str) and not value.strip()):
        return 1, None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip() if isinstance(value, str) else value)
        if not number.is_integer():
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        return 1, f"takes {shown(value)} is not a whole number"
    if not 1 <= number <= limits.max_takes:
        return (
            1,
            f"takes {int(number)} is not within 1..{limits.max_takes} ({variable('max_takes')})",
        )
    return int(number), None
