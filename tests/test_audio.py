"""Loudness (ITU-R BS.1770) against an independent meter, pyloudnorm: the integrated loudness that
dacli normalises to and records must be the standard's, at every rate and channel count it meets."""

import numpy as np
import pyloudnorm
import pytest

from dacli import audio


def signals(rate, channels, seconds=7.0):
    rng = np.random.default_rng(rate + channels)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    gated = np.concatenate([0.3 * np.sin(2 * np.pi * 1000 * t[:n // 2]), 0.001 * rng.standard_normal(n - n // 2)])
    return {"noise": 0.1 * rng.standard_normal((n, channels)),
            "tone then near-silence (the relative gate)": np.repeat(gated[:, None], channels, 1),
            "sweep": np.repeat((0.2 * np.sin(2 * np.pi * (50 + 5000 * t / seconds) * t))[:, None], channels, 1),
            "five channels (surround weights)": 0.05 * rng.standard_normal((n, 5)) * np.arange(1, 6)}


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_loudness_agrees_with_pyloudnorm(rate, channels):
    for name, x in signals(rate, channels).items():
        ours, theirs = audio.loudness(x, rate), pyloudnorm.Meter(rate).integrated_loudness(x)
        assert ours == pytest.approx(theirs, abs=0.01), (name, ours, theirs)


def test_streaming_meter_equals_one_shot():
    x = signals(44100, 2)["noise"]
    meter = audio.LoudnessMeter(44100, 2)
    for i in range(0, len(x), 12345):
        meter.feed(x[i:i + 12345])
    assert meter.result() == pytest.approx(audio.loudness(x, 44100), abs=1e-9)
