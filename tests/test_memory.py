"""Memory does not grow with the length of the file: encoding and decoding ten minutes of stereo audio
peaks where one minute does (each run a fresh ``dacli`` process, its peak RSS from the kernel). Ten
minutes of stereo 44.1 kHz audio is 212 MB as float32: holding the file whole would show."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES, fresh

pytestmark = pytest.mark.slow  # a system test: make test-quick leaves it out

TINY = str(FIXTURES / "tiny44.pth")
SLACK = 60 << 20  # bytes: glibc's heap layout varies from run to run


def peak_rss(*args, peak_file):
    """Run ``python -m dacli ARGS`` in a fresh process → its peak resident set size in bytes."""
    r = subprocess.run(fresh([sys.executable, "-m", "dacli", *args, "-q"], peak_file), stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr.decode()
    return int(Path(peak_file).read_text()) * 1024


def write_stereo(path, minutes):
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    reps = int(minutes * 60 * sr) // len(x) + 1
    with sf.SoundFile(path, "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        for _ in range(reps):  # written in pieces: the test itself stays small
            f.write(np.stack([x, x[::-1]], 1))


def test_memory_is_flat_in_file_length(tmp_path):
    peaks = {}
    for minutes in (1, 10):
        src = tmp_path / f"{minutes}.wav"
        write_stereo(src, minutes)
        enc = peak_rss("encode", src, "-o", tmp_path / f"{minutes}.dac", "--model", TINY, peak_file=tmp_path / "peak")
        dec = peak_rss("decode", tmp_path / f"{minutes}.dac", "-o", tmp_path / f"{minutes}_out.wav", "--model", TINY,
                       peak_file=tmp_path / "peak")
        peaks[minutes] = enc, dec
        assert sf.info(tmp_path / f"{minutes}_out.wav").frames == sf.info(src).frames
    (e1, d1), (e10, d10) = peaks[1], peaks[10]
    assert e10 <= e1 + SLACK and d10 <= d1 + SLACK, {k: [v >> 20 for v in p] for k, p in peaks.items()}


def test_a_process_started_fresh_reports_its_own_peak(tmp_path):
    """What makes the peaks above measurable: a child of this process reports this process's peak
    (600 MiB and more here) as its own, one started by conftest.fresh its own few MiB."""
    hog = np.ones(600 << 20, np.uint8)
    noop = [sys.executable, "-c", "pass"]
    direct = os.wait4(subprocess.Popen(noop).pid, 0)[2].ru_maxrss << 10
    subprocess.run(fresh(noop, tmp_path / "peak"), check=True)
    own = int((tmp_path / "peak").read_text()) << 10
    del hog
    assert direct >= 600 << 20 and own < 100 << 20, (direct >> 20, own >> 20)
