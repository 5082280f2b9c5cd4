"""Streaming on the command line: raw tokens through a pipe come out as audio before the input ends,
byte for byte the offline decode's; audio through a pipe comes out as the offline encode's raw codes;
a cut or bad stream is one line and a non-zero exit, the audio written up to it valid."""

import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

import dacli
from dacli import audio, pipe, runtime

from conftest import FIXTURES

CMD = [sys.executable, "-m", "dacli"]


@pytest.fixture(scope="module")
def bundled():
    return runtime.streamable(dacli.load_model(None, "cpu", "fp32"))


def read_ready(stream, timeout):
    """What ``stream`` (a pipe) has ready within ``timeout`` seconds, without waiting for its end."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return os.read(stream.fileno(), 1 << 20) if ready else b""


def test_tokens_through_a_pipe_play_before_the_input_ends_and_equal_the_offline_decode(bundled):
    m = bundled
    codes = np.random.default_rng(0).integers(0, m.codebook_size, (1, m.n_codebooks, 60)).astype(np.int32)
    proc = subprocess.Popen(CMD + ["decode", "--raw-codes", "-", "-o", "-", "--precision", "fp32"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        early = b""
        for t in range(0, 30, 3):  # a few frames at a time, with pauses
            proc.stdin.write(pipe.to_raw(codes[:, :, t:t + 3]))
            proc.stdin.flush()
            time.sleep(0.05)
        deadline = time.monotonic() + 120  # the model loads first
        while len(early) <= 44 and time.monotonic() < deadline:
            early += read_ready(proc.stdout, 1.0)
        assert len(early) > 44, "no audio came before the input ended"
        proc.stdin.write(pipe.to_raw(codes[:, :, 30:]))
        proc.stdin.close()
        rest = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    ref = audio.wav_header(m.sample_rate, 1, None) + audio.pcm16(m.decode(codes).numpy().T, m.sample_rate)
    assert early + rest == ref


def test_a_stream_cut_inside_a_frame_keeps_the_audio_of_the_whole_frames(bundled, tmp_path):
    m = bundled
    codes = np.random.default_rng(1).integers(0, m.codebook_size, (2, m.n_codebooks, 20)).astype(np.int32)
    data = pipe.to_raw(codes)[:-7]
    r = subprocess.run(CMD + ["decode", "--raw-codes", "-", "-o", "-", "--channels", "2", "--format", "raw",
                              "--precision", "fp32"], input=data, capture_output=True, timeout=120)
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and "inside a frame" in r.stderr.decode()
    assert r.stdout == audio.pcm16(m.decode(codes[:, :, :19]).numpy().T, m.sample_rate)
    bad = codes.copy()
    bad[0, 0, 5] = m.codebook_size
    out = tmp_path / "x.wav"
    r = subprocess.run(CMD + ["decode", "--raw-codes", "-", "-o", str(out), "--channels", "2"],
                       input=pipe.to_raw(bad), capture_output=True, timeout=120)
    assert r.returncode == 1 and "beyond the model's" in r.stderr.decode() and not out.exists()
    assert not list(tmp_path.iterdir())


def test_audio_through_a_pipe_gives_the_offline_codes(bundled, tmp_path):
    m = bundled
    music, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32", always_2d=True)
    wav = tmp_path / "in.wav"
    sf.write(wav, music[3 * sr:5 * sr, :1], sr, subtype="PCM_16")
    x, _ = sf.read(wav, dtype="float32", always_2d=True)
    r = subprocess.run(CMD + ["encode", "-", "-o", "-", "--raw-codes", "--precision", "fp32"],
                       input=wav.read_bytes(), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pipe.to_raw(m.encode(x.T).numpy())
    raw = (x[:, 0] * 32768).astype("<i2").tobytes()  # the same samples as raw PCM
    r = subprocess.run(CMD + ["encode", "-", "-o", "-", "--raw-codes", "--channels", "1", "--precision", "fp32"],
                       input=raw, capture_output=True, timeout=120)
    assert r.returncode == 0 and r.stdout == pipe.to_raw(m.encode(x.T).numpy())


@pytest.mark.parametrize("args, message", [
    (["decode", "x.dac", "--format", "raw"], "go with --raw-codes"),
    (["decode", "--raw-codes", "-", "-o", "-", "--format", "flac"], "not FLAC"),
    (["encode", "x.wav", "--gain-db", "3"], "go with --raw-codes"),
])
def test_raw_stream_usage_errors(args, message):
    r = subprocess.run(CMD + args, capture_output=True, timeout=60, input=b"")
    assert r.returncode == 2 and message in r.stderr.decode()
