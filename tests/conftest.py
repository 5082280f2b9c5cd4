import os
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# two OpenMP threads whatever the machine: the same numerics and timings on every machine the tests run on
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
