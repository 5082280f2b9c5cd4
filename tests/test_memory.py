"""Memory does not grow with the length of the file: encoding and decoding ten minutes of stereo audio
peaks where one minute does (each run a fresh ``dacli`` process, its peak RSS from the kernel). Ten
minutes of stereo 44.1 kHz audio is 212 MB as float32: holding the file whole would show."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES

pytestmark = pytest.mark.slow  # a system test: make test-quick leaves it out

TINY = str(FIXTURES / "tiny44.pth")
SLACK = 60 << 20  # bytes: glibc's heap layout varies from run to run


def peak_rss(*args):
    """Run ``python -m dacli ARGS`` → its peak resident set size in bytes."""
    p = subprocess.Popen([sys.executable, "-m", "dacli", *map(str, args), "-q"], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, p.stderr.read().decode()
    return usage.ru_maxrss * 1024


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
        enc = peak_rss("encode", src, "-o", tmp_path / f"{minutes}.dac", "--model", TINY)
        dec = peak_rss("decode", tmp_path / f"{minutes}.dac", "-o", tmp_path / f"{minutes}_out.wav", "--model", TINY)
        peaks[minutes] = enc, dec
        assert sf.info(tmp_path / f"{minutes}_out.wav").frames == sf.info(src).frames
    (e1, d1), (e10, d10) = peaks[1], peaks[10]
    assert e10 <= e1 + SLACK and d10 <= d1 + SLACK, {k: [v >> 20 for v in p] for k, p in peaks.items()}
