"""What each precision promises (README "Precision", docs/PERFORMANCE.md), on the CPU the tests run on:
how far codes and decoded audio move with the window size, how far official-tool files decode from the
official decoder's output, and the quality rule that lets ``auto`` pick ``mixed`` where bfloat16 is
native. The bounds depend on whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX): the
test reads the CPU and asserts the bound of its class; none is skipped."""

import numpy as np
import pytest
import soundfile as sf

import dacli
from dacli import codec, container, evaluate, legacy, windows
from dacli.bounds import FP32_AUDIO_MOVED, FP32_CODES_MOVED, MIXED_QUALITY, WINDOW_BOUNDS
from dacli.runtime.hardware import cpu_info, native_bf16

from conftest import FIXTURES

NATIVE = native_bf16("cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    path = tmp_path_factory.mktemp("clip") / "clip.flac"
    sf.write(path, x[:10 * sr], sr)
    return path


def window_dependence(model, src, tmp):
    out = {}
    for w in (1.0, 7.0):
        codec.encode_file(model, src, tmp / f"{w}.dac", window_seconds=w)
        codec.decode_file(model, tmp / f"{w}.dac", tmp / f"{w}.wav")
        out[w] = (container.read(tmp / f"{w}.dac")[1], sf.read(tmp / f"{w}.wav", dtype="int16")[0])
    (ca, ya), (cb, yb) = out[1.0], out[7.0]
    return float((ca != cb).mean()), float(np.abs(ya.astype(np.int64) - yb).max()) / 32768


def official_distance(precision):
    worst = 0.0
    for name in ("tiny44", "tiny24"):
        model = dacli.load_model(FIXTURES / f"{name}.pth", "cpu", precision)
        for f in sorted(FIXTURES.glob(f"{name}_*.dac")):
            y = legacy.decode(model, legacy.read(f))
            worst = max(worst, float(np.abs(y.T - np.load(f.with_name(f.stem + "_decompressed.npy"))).max()))
    return worst


SLOW = pytest.mark.slow  # the bundled model in emulated bfloat16: make test-quick leaves these out


@pytest.mark.parametrize("precision", ["fp32", pytest.param("mixed", marks=SLOW), pytest.param("bf16", marks=SLOW)])
def test_each_precision_keeps_its_bounds(precision, clip, tmp_path):
    codes, audio, official = WINDOW_BOUNDS[precision, NATIVE]
    model = dacli.load_model(device="cpu", precision=precision)
    moved, largest = window_dependence(model, clip, tmp_path)
    where = f"{cpu_info().get('model name')} (family {cpu_info().get('cpu family')}, model {cpu_info().get('model')})"
    assert moved <= codes and largest <= audio, (precision, NATIVE, moved, largest, where)
    assert official_distance(precision) <= official, (precision, NATIVE, where)


def test_fp32_codes_do_not_depend_on_the_window(clip, tmp_path):
    """The promise tokenizers rely on: in fp32 the codes are the same whatever the window size."""
    model = dacli.load_model(device="cpu", precision="fp32")
    assert window_dependence(model, clip, tmp_path) == (FP32_CODES_MOVED, FP32_AUDIO_MOVED) == (0.0, 0.0)


def test_auto_picks_by_the_cpu():
    assert dacli.load_model(FIXTURES / "tiny44.pth", "cpu", "auto").precision == ("mixed" if NATIVE else "fp32")


@SLOW
def test_mixed_meets_the_quality_rule():
    """The rule that makes ``mixed`` the default where bfloat16 is native: the same codes decoded in
    mixed precision score within 0.01 of fp32 in mel distance, 0.1 dB in SI-SDR and 0.02 in ViSQOL
    (held-out set, Xeon with AMX: +0.003, -0.017 dB, +0.001). The clip has a pause of room noise at
    -55 dBFS between two passages of music: quiet passages are where bfloat16 rounding would show."""
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    noise = 10 ** (-55 / 20) * np.random.default_rng(0).standard_normal(3 * sr).astype(np.float32)
    x = np.concatenate([x[:4 * sr], noise, x[4 * sr:7 * sr]])
    fp32 = dacli.load_model(device="cpu", precision="fp32")
    codes = windows.encode_array(fp32, x[None])
    scores = {}
    for precision, model in (("fp32", fp32), ("mixed", dacli.load_model(device="cpu", precision="mixed"))):
        scores[precision] = evaluate.compare(x, windows.decode_array(model, codes)[0, :len(x)], sr)
    ref, mixed = scores["fp32"], scores["mixed"]
    assert MIXED_QUALITY == {"mel": 0.01, "sisdr": 0.1, "visqol": 0.02}  # what the README quotes
    for metric, bound in MIXED_QUALITY.items():
        assert abs(mixed[metric] - ref[metric]) <= bound, scores
