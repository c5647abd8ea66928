"""The generation benchmark at a tiny size, so it cannot rot: a sheet submitted through
`soundharvest generate` with every prompt created once, and a ledger checked for a new sheet.

No timing is asserted: the figures are printed, and judged in bench/README.md.
"""

import re
import subprocess
import sys

import pytest

from support import PROJECT

pytestmark = pytest.mark.slow


def bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.generation", *arguments],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_both_figures_come_out_of_checked_runs() -> None:
    done = bench("--prompts", "40", "--latency", "0.01", "--year-days", "3", "--per-day", "300")

    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"\b\d+ cores\b", out.splitlines()[0])
    assert "submission of N = 40 prompts at concurrency C = 16, 10 ms per create" in out
    bound = re.search(r"bound N \* latency / C\s+([\d.]+)\s+1\.00", out)
    assert bound and float(bound[1]) == pytest.approx(40 * 0.01 / 16, abs=0.01)
    assert re.search(r"submission \(the step's line\)\s+[\d.]+\s+[\d.]+\s+<= 1.3", out)
    assert "ledger of 3 days x 300 = 900 keys" in out
    # 1 % of the new sheet was sent before: the check finds exactly those 3 keys.
    assert re.search(r"history\(\): keys sent before, found\s+3\b", out)
    assert re.search(r"peak RSS of the checking process, MB\s+\d+\s+500", out)
    assert out.count("verdict: ") == 2


def test_a_check_that_finds_the_wrong_keys_fails_the_bench(tmp_path) -> None:
    """The child's count is checked, not trusted: an empty ledger cannot find 5 keys."""
    sheet = tmp_path / "sheet.bin"
    sheet.write_bytes(bytes(16 * 10))
    done = bench("--check-year", str(tmp_path / "catalog"), str(sheet), "5")

    assert done.returncode != 0
    assert "the check found 0 keys sent before, not 5" in done.stdout + done.stderr


def test_bad_sizes_are_refused_clearly() -> None:
    done = bench("--prompts", "0")

    assert done.returncode == 2
    assert "--prompts: must be at least 1, not 0" in done.stderr
    assert "Traceback" not in done.stderr
