"""A wheel is a complete install: built from this tree, installed into a fresh virtual environment
outside it, it encodes and decodes with the bundled model from any folder."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow  # a system test: make test-quick leaves it out

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_a_working_default_model(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
                   check=True, timeout=600)
    wheel, = wheels.glob("dacli-*.whl")
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("dacli/training/")]  # training runs from a checkout
    assert "dacli/weights/README.md" in names and "dacli/weights/dacli_44khz_7.75kbps.pth" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # dacli's dependencies (torch is a large download) come from this environment, dacli from the wheel
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    t = np.arange(44100) / 44100
    sf.write(work / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    env = {k: v for k, v in os.environ.items() if k not in ("DACLI_WEIGHTS_DIR", "PYTHONPATH")}
    dacli = str(venv / "bin" / "dacli")
    r = subprocess.run([dacli, "models"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("dacli-44khz"))
    assert purelib in line and line.endswith("dacli/weights/dacli_44khz_7.75kbps.pth"), r.stdout
    for args in (["encode", "a.wav", "-q"], ["decode", "a.dac", "-o", "b.wav", "-q"]):
        r = subprocess.run([dacli, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    y, sr = sf.read(work / "b.wav")
    assert sr == 44100 and len(y) == 44100
    r = subprocess.run([str(py), "-c", "import dacli, sys; print(dacli.__file__)"], cwd=work, env=env,
                       capture_output=True, text=True)
    assert r.stdout.startswith(purelib), r.stdout  # the wheel's copy, not this source tree
