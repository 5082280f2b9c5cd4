"""Quality metrics (checked against the official implementation's losses and independent
computations) and `dacli eval`, including the Opus/MP3 baselines through ffmpeg."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from dacli import evaluate
from dacli.cli import cli
from dacli.metrics import mel_distance, si_sdr, stft_distance

from conftest import FIXTURES


@pytest.fixture(scope="module")
def signals():
    return {k: torch.from_numpy(v) for k, v in np.load(FIXTURES / "metric_inputs.npz").items()}


@pytest.mark.parametrize("name", ["noisy", "shifted"])
def test_mel_and_stft_match_official_losses(signals, name):
    """official_metrics.json: descript-audio-codec 1.0.0 MelSpectrogramLoss (final config) and
    MultiScaleSTFTLoss([2048, 512]) on the same signals."""
    ref = json.loads((FIXTURES / "official_metrics.json").read_text())[name]
    assert float(mel_distance(signals[name], signals["ref"], 44100)) == pytest.approx(ref["mel"], rel=1e-4)
    assert float(stft_distance(signals[name], signals["ref"])) == pytest.approx(ref["stft"], rel=1e-4)


def test_mel_distance_properties(signals):
    r, n = signals["ref"], signals["noisy"]
    assert float(mel_distance(r, r, 44100)) == 0.0
    assert float(mel_distance(n, r, 44100)) == pytest.approx(float(mel_distance(r, n, 44100)), rel=1e-6)
    assert float(mel_distance(n, r, 44100)) > 0.5
    assert float(stft_distance(r, r)) == 0.0


def test_si_sdr_independent():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(20000)
    noise = rng.standard_normal(20000)
    est = 0.3 * s + 0.05 * noise
    # independent: project the zero-mean estimate onto the zero-mean reference in float64
    s0, e0 = s - s.mean(), est - est.mean()
    target = (e0 @ s0) / (s0 @ s0) * s0
    expected = 10 * np.log10((target @ target) / ((e0 - target) @ (e0 - target)))
    got = float(si_sdr(torch.from_numpy(s).float(), torch.from_numpy(est).float()))
    assert got == pytest.approx(expected, abs=0.01)
    assert expected == pytest.approx(10 * np.log10(0.3 ** 2 / 0.05 ** 2), abs=0.3)  # ≈ 15.6 dB
    # scale invariance
    assert float(si_sdr(torch.from_numpy(s).float(), 4 * torch.from_numpy(est).float())) == pytest.approx(got, abs=1e-3)


def test_compare_matches_loudness_and_visqol(signals):
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    r3 = x[:3 * sr, None]
    same = evaluate.compare(r3, 0.5 * r3, 44100)  # loudness-matched first: a pure gain costs nothing
    assert same["mel"] < 1e-3 and same["sisdr"] > 60 and same["visqol"] > 4.5
    r = signals["ref"].numpy()[:, None]
    assert np.isnan(evaluate.compare(r, r, 44100)["visqol"])  # 0.74 s: too short for ViSQOL
    noisy = evaluate.compare(r, signals["noisy"].numpy()[:, None], 44100, with_visqol=False)
    assert noisy["mel"] > 0.5 and np.isnan(noisy["visqol"])


def test_bitrate_efficiency():
    rng = np.random.default_rng(0)
    uniform = [rng.integers(0, 1024, (1, 4, 50000))]
    assert evaluate.bitrate_efficiency(uniform, 10) == pytest.approx(1.0, abs=0.01)
    assert evaluate.bitrate_efficiency([np.zeros((2, 3, 100), np.int64)], 10) == 0.0
    half = [rng.integers(0, 32, (1, 1, 50000))]  # 5 of 10 bits
    assert evaluate.bitrate_efficiency(half, 10) == pytest.approx(0.5, abs=0.01)


def test_codec_specs():
    c = evaluate.Codec("dac:tests/x.pth@6")
    assert (c.family, c.model, c.kbps) == ("dac:tests/x.pth", "tests/x.pth", 6.0)
    assert evaluate.Codec("opus@14").family == "opus"
    with pytest.raises(Exception, match="unknown codec"):
        evaluate.Codec("aac@8")
    c = evaluate.Codec("dac@7.75/full/bf16")
    assert (c.family, c.model, c.kbps, c.precision, c.bandwidth) == ("dac/full/bf16", None, 7.75, "bf16", "full")
    assert evaluate.Codec("dac@7.75/mixed").bandwidth == "auto"
    for bad in ("opus@8/full", "dac@6/full/full", "dac@6/bf16/mixed", "dac@6/wide"):
        with pytest.raises(Exception, match="each at most once"):
            evaluate.Codec(bad)


def strict(name):
    raise AssertionError(f"{name} in --json output: not JSON")


def test_eval_ref_degraded_folders(tmp_path, signals):
    for d in ("ref", "deg"):
        (tmp_path / d / "sub").mkdir(parents=True)
    sf.write(tmp_path / "ref" / "sub" / "a.wav", signals["ref"].numpy(), 44100)
    sf.write(tmp_path / "deg" / "sub" / "a.flac", signals["noisy"].numpy(), 44100)
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "ref"), str(tmp_path / "deg"), "--json", "--no-visqol"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout, parse_constant=strict)  # JSON as JSON.parse and jq take it: no NaN
    assert out["files"][0]["visqol"] is None and out["summary"]["degraded"]["kbps"] is None  # not measured
    assert out["files"][0]["file"] == "sub/a.wav"
    expected = evaluate.compare_files(tmp_path / "ref" / "sub" / "a.wav", tmp_path / "deg" / "sub" / "a.flac",
                                      with_visqol=False)
    assert out["files"][0]["mel"] == pytest.approx(expected["mel"], rel=1e-6)


@pytest.mark.slow  # a system test: make test-quick leaves it out
def test_eval_codecs_end_to_end(tmp_path):
    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg is missing: run 'make eval-deps' (make test does)")
    src = tmp_path / "src"
    src.mkdir()
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32")
    sf.write(src / "m.wav", x[:sr * 3], sr)
    sf.write(src / "s.flac", np.stack([x[sr * 5:sr * 7], x[sr * 9:sr * 11]], 1), sr)
    tiny = str(FIXTURES / "tiny44.pth")
    res = CliRunner().invoke(cli, ["eval", "--codec", f"dac:{tiny}@6", "--codec", "opus@8", "--codec", "mp3@8",
                                   str(src), "--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "rd.png"),
                                   "--json", "-q"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout, parse_constant=strict)
    s = out["summary"]
    assert set(s) == {f"dac:{tiny}@6", "opus@8", "mp3@8"}
    # real bitrates from file sizes: opus near its target; ours at most 6 kbps per channel (+ header)
    assert 5 < s["opus@8"]["kbps"] < 12
    assert 0 < s[f"dac:{tiny}@6"]["kbps"] < 1.5 * 6 * 1.1
    assert 0 <= s[f"dac:{tiny}@6"]["bitrate_efficiency"] <= 1
    assert all(np.isfinite(s[c][m]) for c in s for m in ("mel", "stft", "sisdr", "visqol"))
    assert s["opus@8"]["visqol"] > s[f"dac:{tiny}@6"]["visqol"]  # a random-weights model is worse than Opus
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 6 and {"codec", "file", "kbps", "mel", "visqol"} <= rows[0].keys()
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
