import os
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# keep tests reproducible and quick on 2 cores
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def fixtures():
    return FIXTURES


@pytest.fixture(scope="session")
def tiny44():
    from dacli.model import load_checkpoint
    return load_checkpoint(FIXTURES / "tiny44.pth")


@pytest.fixture(scope="session")
def tiny24():
    from dacli.model import load_checkpoint
    return load_checkpoint(FIXTURES / "tiny24.pth")


def vectors(name):
    return dict(np.load(FIXTURES / f"{name}_vectors.npz"))
