import os
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# two OpenMP threads whatever the machine: the same numerics and timings on every machine the tests run on
os.environ.setdefault("OMP_NUM_THREADS", "2")


# A process started by the test process reports the test process's peak resident size as its own:
# Linux keeps the peak of the memory image a process replaces at exec (a child of a fork starts as a
# copy of pytest, gigabytes after the model tests). Started by this small launcher instead, a process
# reports its own peak; the launcher writes it (KiB, ru_maxrss) to the file named first.
PEAK_LAUNCHER = [sys.executable, "-c", "import os, subprocess, sys\n"
                 "p = subprocess.Popen(sys.argv[2:])\n"
                 "_, status, usage = os.wait4(p.pid, 0)\n"
                 "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
                 "sys.exit(os.waitstatus_to_exitcode(status) % 256)\n"]


def fresh(cmd, peak_file=os.devnull):
    """``cmd`` run by :data:`PEAK_LAUNCHER`: its peak RSS is its own (and written to ``peak_file``)."""
    return PEAK_LAUNCHER + [str(peak_file)] + [str(c) for c in cmd]


@pytest.fixture(scope="session")
def fixtures():
    return FIXTURES


@pytest.fixture(scope="session")
def tiny44():
    """The tiny 44.1 kHz model of the reference data, prepared for inference as load_model does it."""
    from dacli import load_model
    return load_model(FIXTURES / "tiny44.pth", "cpu", "fp32")


@pytest.fixture(scope="session")
def tiny24():
    from dacli import load_model
    return load_model(FIXTURES / "tiny24.pth", "cpu", "fp32")


def vectors(name):
    return dict(np.load(FIXTURES / f"{name}_vectors.npz"))
