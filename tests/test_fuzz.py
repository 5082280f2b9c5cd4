"""A short, fixed budget of the fuzz harness (tests/fuzz_readers.py) in every test run: no crash,
hang, memory blow-up or silent corruption within it. The long run is documented in the harness."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fresh

pytestmark = pytest.mark.slow  # a system test: make test-quick leaves it out

HARNESS = Path(__file__).resolve().parent / "fuzz_readers.py"


def test_coverage_guided_fuzzing_finds_nothing(tmp_path):
    # in a fresh process: libFuzzer's RSS limit looks at the process's own peak, not pytest's (conftest.fresh)
    r = subprocess.run(fresh([sys.executable, HARNESS, "-runs=20000", "-seed=1", f"-artifact_prefix={tmp_path}/"]),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done 20000 runs" in r.stderr
    rss = int(re.search(r"stat::peak_rss_mb:\s+(\d+)", r.stderr).group(1))
    assert rss < 2048
    assert not list(tmp_path.iterdir())  # no crash, timeout or out-of-memory artifact


def test_mutations_never_corrupt_silently():
    r = subprocess.run(fresh([sys.executable, HARNESS, "--mutate", "20000"]), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "'silent_corruptions': 0" in r.stdout and "'inputs': 20000" in r.stdout
