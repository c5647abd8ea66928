"""Write the demo manifests under data/manifests/ (or the directory given).

Deterministic and idempotent: every run writes the same files with the same content.
Three days mix both layouts and all three formats:

    2026-11-01.csv                                   one file for the day
    2026-11-02/batch-a.jsonl, 2026-11-02/batch-b.csv  a day folder of two batches
    2026-11-03/part-0.parquet + 2026-11-03.jsonl     a folder and a day file together

Run ids are drawn from 1000..4999. The sandbox API decides a run's outcome from its id
(id % 100 == 99: another run type, id % 50 == 13: failed, id % 10 == 7: pending, else ready),
so every day holds some of each. Each day also has a few bad rows (not an integer, not
positive, missing, duplicate) that the pipeline must reject.

2026-11-02 names its runs by task id only, the way a team that submits generations in bulk
holds them: `task-<run id>` is a task the sandbox resolves to that run (`sandbox.rules
.task_fate`); a few tasks are still pending, failed, timed out, unpaid, succeeded without a
run id, unknown (404), or a second task of a run already listed; a few ids are absurd (empty,
300 characters, a control character) or a path (`../text-to-sound-result/2013`), which must
never reach another endpoint. Days 1 and 3 give both ids, which agree, but for one row of
day 3 whose task belongs to another run.

Usage: python data/make_demo_manifests.py [OUT_DIR]
"""

import csv
import io
import json
import os
import random
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20261101
COLUMNS = ("run_id", "prompt", "audio_type", "duration", "task_id", "project")
TASK_COLUMNS = COLUMNS[1:]
SOUNDS = (
    "rain on a tin roof",
    "footsteps on gravel",
    "a door creaking open slowly",
    "distant thunder rolling over hills",
    "crackling campfire at night",
    "seagulls over a busy harbour",
    "keyboard typing in a quiet office",
    "glass shattering on a tile floor",
    "wind howling through pine trees",
    "a cat purring close to the microphone",
    "subway train arriving at a platform",
    "coffee machine hissing and dripping",
    "waves breaking on a pebble beach",
    "a bouncing basketball in an empty gym",
    "birdsong at dawn in a forest",
)
MUSIC = (
    "lo-fi hip hop loop with vinyl crackle",
    "calm solo piano in a minor key",
    "upbeat synthwave intro",
    "ambient drone for a sci-fi corridor",
    "acoustic guitar strumming, warm and slow",
    "short orchestral sting for a game victory",
)
# (modulus, remainder) of the ids the sandbox answers as: another run type, failed, pending.
OUTCOMES = ((100, 99), (50, 13), (10, 7))
PROJECTS = ("foley-library", "game-sfx", "ambient-beds", "podcast-stings")


def main(argv: list[str]) -> None:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "manifests"
    for path in write_demo_manifests(out):
        print(path)


def write_demo_manifests(out: Path) -> list[Path]:
    """Write every demo manifest under ``out``; return the paths written."""
    rng = random.Random(SEED)
    day1 = _good_rows(rng, 1000, 2000, 120)
    day2a = _good_rows(rng, 2000, 3000, 60)
    day2b = _good_rows(rng, 3000, 3500, 50)
    day3p = _good_rows(rng, 3500, 4300, 70)
    day3j = _good_rows(rng, 4300, 5000, 60)

    # Bad rows sit among good ones, as they would in a hand-edited file: not an integer,
    # not positive, missing, and duplicates within a file and across the files of a day.
    _insert(rng, day1, _row(rng, "12a"), _row(rng, "-5"), _row(rng, ""), _row(rng, "1.5"))
    _insert(rng, day1, dict(day1[10], prompt="the same run listed twice"))
    _tasks_only(rng, day2a, day2b)
    _insert(rng, day3p, _row(rng, -3), _row(rng, 0), _row(rng, None), dict(day3p[5]))
    _insert(rng, day3j, _row(rng, "abc"), dict(day3p[20]))
    # Odd but valid spellings of an id, outside the sampled ranges so they are no duplicates.
    _insert(rng, day3j, _row(rng, 5000.0))
    _insert(rng, day3j, dict(_row(rng, 4998), task_id=_task(4999)))  # both ids, disagreeing

    files = {
        "2026-11-01.csv": _csv(day1),
        "2026-11-02/batch-a.jsonl": _jsonl(day2a),
        "2026-11-02/batch-b.csv": _csv(day2b, TASK_COLUMNS),
        "2026-11-03/part-0.parquet": _parquet(day3p),
        "2026-11-03.jsonl": _jsonl(day3j),
    }
    written = []
    for name, content in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")  # readers skip dot files
        temporary.write_bytes(content)
        os.replace(temporary, path)
        written.append(path)
    return written


def _good_rows(rng: random.Random, low: int, high: int, count: int) -> list[dict[str, Any]]:
    ids = sorted(rng.sample(range(low, high), count))
    # Every file shows each sandbox outcome; swap a "ready" id for one that is missing.
    for modulus, remainder in OUTCOMES:
        if not any(i % modulus == remainder for i in ids):
            ready = next(k for k, i in enumerate(ids) if _ready(i))
            ids[ready] = next(i for i in range(low, high) if i % modulus == remainder)
            ids.sort()
    return [_row(rng, run_id) for run_id in ids]


def _task(run_id: int, fate: str = "") -> str:
    """A task id the sandbox resolves to `run_id`, or gives the fate named."""
    return f"task-{run_id}-{fate}" if fate else f"task-{run_id}"


def _tasks_only(rng: random.Random, *files: list[dict[str, Any]]) -> None:
    """Turn the rows of `files` into task-id rows, with every task outcome and bad ids."""
    for rows in files:
        for row in rows:
            row["task_id"] = _task(row.pop("run_id"))
    first, second = files
    other_fates = ("pending", "error", "timeout", "payment", "norun")
    _insert(rng, first, *(_task_row(rng, _task(2000 + i, f)) for i, f in enumerate(other_fates)))
    _insert(rng, first, _task_row(rng, str(uuid.UUID(int=rng.getrandbits(128), version=4))))
    _insert(rng, first, _task_row(rng, second[4]["task_id"] + "-success"))  # second task, one run
    _insert(rng, first, _task_row(rng, ""), _task_row(rng, "x" * 300), dict(first[3]))
    _insert(rng, second, _task_row(rng, "tab\tinside"), _task_row(rng, "../text-to-sound-result/2013"))


def _task_row(rng: random.Random, task_id: str) -> dict[str, Any]:
    row = _row(rng, None)
    del row["run_id"]
    return dict(row, task_id=task_id)


def _ready(run_id: int) -> bool:
    return not any(run_id % modulus == remainder for modulus, remainder in OUTCOMES)


def _row(rng: random.Random, run_id: Any) -> dict[str, Any]:
    music = rng.random() < 0.25
    return {
        "run_id": run_id,
        "prompt": rng.choice(MUSIC if music else SOUNDS),
        "audio_type": "music" if music else "sound",
        "duration": rng.choice((2.0, 3.0, 4.5, 5.0, 6.0, 8.0, 10.0)),
        "task_id": _task(run_id)
        if isinstance(run_id, int) and not isinstance(run_id, bool) and run_id > 0
        else None,
        "project": rng.choice(PROJECTS),
    }


def _insert(rng: random.Random, rows: list[dict[str, Any]], *extra: dict[str, Any]) -> None:
    for row in extra:
        rows.insert(rng.randrange(1, len(rows)), row)


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    types = {"run_id": pa.int64(), "duration": pa.float64()}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


if __name__ == "__main__":
    main(sys.argv)
