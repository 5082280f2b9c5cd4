"""Bandwidth (docs/FORMAT.md, "Bandwidth"): the encoder measures where a band-limited input's spectrum
ends, the container records it, and decoding low-passes there with the specified FIR."""

import numpy as np
import pytest
import soundfile as sf

from dacli import audio, codec, container
from dacli.bandwidth import BandwidthMeter, LowPass, lowpass_taps
from dacli.errors import DacliError

RATE = 44100


def band_limited_noise(seconds=2.0, bandwidth=12000.0, floor_db=-90.0, channels=1, seed=0):
    """White noise with nothing above ``bandwidth`` but a floor ``floor_db`` under it (dither)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = rng.standard_normal((n, channels))
    spec = np.fft.rfft(x, axis=0)
    spec[np.fft.rfftfreq(n, 1 / RATE) > bandwidth] = 0
    x = np.fft.irfft(spec, n, axis=0)
    x = 0.1 * x / x.std() + 0.1 * audio.db_to_gain(floor_db) * rng.standard_normal((n, channels))
    return x.astype(np.float32)


def measured(x, block=5000):
    meter = BandwidthMeter(RATE, x.shape[1])
    for i in range(0, len(x), block):
        meter.feed(x[i:i + block])
    return meter.result()


def response_db(h, rate, n=1 << 16):
    return np.fft.rfftfreq(n, 1 / rate), 20 * np.log10(np.abs(np.fft.rfft(h, n)) + 1e-30)


@pytest.mark.parametrize("rate, bandwidth", [(44100, 12000), (44100, 21050), (24000, 8000), (16000, 5000)])
def test_lowpass_taps_meet_the_spec(rate, bandwidth):
    h = lowpass_taps(bandwidth, rate)
    assert len(h) == 257 and np.allclose(h, h[::-1]) and h.sum() == pytest.approx(1.0)
    f, db = response_db(h, rate)
    assert np.abs(db[f <= bandwidth]).max() < 0.01
    assert db[np.searchsorted(f, bandwidth + 500)] == pytest.approx(-6.0, abs=0.1)
    stop = f >= bandwidth + 1000
    assert not stop.any() or db[stop].max() < -75


def test_lowpass_stream_is_centred_convolution_however_cut():
    x = np.random.default_rng(1).standard_normal((50000, 2))
    h = lowpass_taps(9000, RATE)
    want = np.stack([np.convolve(x[:, c], h, "same") for c in range(2)], 1)
    outs = []
    for cuts in ([50000], [1, 4999, 16383, 16385, 12232], [16128] * 3 + [1616]):
        lp, parts, i = LowPass(9000, RATE, 2), [], 0
        for c in cuts:
            parts.append(lp.feed(x[i:i + c]))
            i += c
        parts.append(lp.feed(np.zeros((0, 2)), last=True))
        outs.append(np.concatenate(parts))
        assert outs[-1].shape == x.shape and outs[-1].dtype == np.float32
        np.testing.assert_allclose(outs[-1], want, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(outs[-1], outs[0])  # exactly: fixed segments, not the blocks
    short = LowPass(9000, RATE, 1)
    y = np.concatenate([short.feed(x[:10, :1]), short.feed(np.zeros((0, 1)), last=True)])
    np.testing.assert_allclose(y[:, 0], np.convolve(x[:10, 0], h, "full")[128:138], atol=1e-6)


@pytest.mark.parametrize("cut", [6000.0, 12000.0, 16000.0, 19500.0])
def test_meter_finds_the_edge(cut):
    got = measured(band_limited_noise(bandwidth=cut))
    assert cut <= got <= cut + 300  # the ±100 Hz smoothing and the rounding up lean above the edge


@pytest.mark.parametrize("x", [
    band_limited_noise(bandwidth=22050),                       # full band
    band_limited_noise(bandwidth=12000, floor_db=-50),         # a floor too high to call empty
    band_limited_noise(seconds=0.3, bandwidth=12000),          # too short to measure
    np.zeros((RATE, 2), np.float32),                           # digital silence
], ids=["full-band", "high-floor", "short", "silence"])
def test_meter_says_full_band(x):
    assert measured(x) == 0


def test_stereo_is_one_bandwidth():
    x = band_limited_noise(bandwidth=12000, channels=2)
    x[:, 1] = band_limited_noise(bandwidth=15000, seed=3)[:, 0]
    assert 15000 <= measured(x) <= 15300


def highest_band_db(path, lo, hi):
    """Power in [lo, hi) Hz relative to 1-3 kHz, in dB."""
    x, rate = sf.read(path, always_2d=True)
    p = np.abs(np.fft.rfft(x.mean(1))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return 10 * np.log10(p[(f >= lo) & (f < hi)].mean() / p[(f >= 1000) & (f < 3000)].mean())


def test_encode_records_and_decode_removes_the_top_band(tmp_path, tiny44):
    """The tiny random model decodes noise everywhere; with the bandwidth recorded the decoded audio
    above it is gone (the model's own output there is ~0 dB), without it it stays."""
    sf.write(tmp_path / "in.wav", band_limited_noise(bandwidth=12000), RATE, subtype="PCM_24")
    auto = codec.encode_file(tiny44, tmp_path / "in.wav", tmp_path / "auto.dac")
    full = codec.encode_file(tiny44, tmp_path / "in.wav", tmp_path / "full.dac", bandwidth="full")
    assert 12000 <= auto.bandwidth_hz <= 12300 and full.bandwidth_hz == 0
    assert container.read_header(tmp_path / "auto.dac").bandwidth_hz == auto.bandwidth_hz
    codec.decode_file(tiny44, tmp_path / "auto.dac", tmp_path / "auto.wav", window_seconds=0.7)
    codec.decode_file(tiny44, tmp_path / "auto.dac", tmp_path / "auto2.wav", window_seconds=1.5)
    codec.decode_file(tiny44, tmp_path / "full.dac", tmp_path / "full.wav")
    top = auto.bandwidth_hz + 1000
    kept, removed = (highest_band_db(tmp_path / n, top, RATE / 2) for n in ("full.wav", "auto.wav"))
    assert kept > -40 and removed < kept - 40  # down to the 16-bit output's own noise
    assert abs(highest_band_db(tmp_path / "auto.wav", 2000, 10000)
               - highest_band_db(tmp_path / "full.wav", 2000, 10000)) < 0.05  # the band below is kept
    a, b = sf.read(tmp_path / "auto.wav", dtype="int16")[0], sf.read(tmp_path / "auto2.wav", dtype="int16")[0]
    assert np.abs(a.astype(int) - b).max() <= 1  # the low-pass does not depend on the decode windows


def test_resampled_input_is_filtered_at_the_model_rate(tmp_path, tiny44):
    """A 32 kHz file reaches the model resampled, empty above 16 kHz: that is what gets recorded."""
    rng = np.random.default_rng(4)
    sf.write(tmp_path / "in.wav", (0.1 * rng.standard_normal((64000, 1))).astype(np.float32), 32000,
             subtype="FLOAT")
    h = codec.encode_file(tiny44, tmp_path / "in.wav", tmp_path / "x.dac")
    assert 15000 <= h.bandwidth_hz <= 16000
    codec.decode_file(tiny44, tmp_path / "x.dac", tmp_path / "x.wav")
    assert sf.info(tmp_path / "x.wav").samplerate == 32000 and sf.info(tmp_path / "x.wav").frames == 64000


@pytest.mark.parametrize("value", ["16000", 16000, "full", "auto"])
def test_given_bandwidths(tmp_path, tiny44, value):
    sf.write(tmp_path / "in.wav", band_limited_noise(seconds=0.5, bandwidth=12000), RATE)
    h = codec.encode_file(tiny44, tmp_path / "in.wav", tmp_path / "x.dac", bandwidth=value)
    if value == "auto":  # measured: where the noise's spectrum ends, rounded up to 100 Hz
        assert 12000 <= h.bandwidth_hz <= 12300, h.bandwidth_hz
    else:
        assert h.bandwidth_hz == {"full": 0}.get(value, 16000)


@pytest.mark.parametrize("value", [0, 21051, "16k", "1.5e4", -3, None])
def test_bad_bandwidths_are_refused(value):
    with pytest.raises(DacliError, match="bandwidth"):
        codec.check_bandwidth(value, RATE)
