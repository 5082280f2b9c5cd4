"""ONNX graphs (dacli export) against dacli's own fp32 encode and decode, on real audio; decoding files
with --runtime onnx; and a virtual environment without torch that decodes, describes and reads files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import dacli
import dacli.windows
from conftest import FIXTURES
from dacli import registry
from dacli.export import export
from dacli.model import build
from dacli.onnx_model import OnnxDAC

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = ["44khz-8kbps", "44khz-16kbps", "24khz", "16khz"]
TORCH_FREE = ["numpy", "soundfile", "soxr", "zstandard", "click", "tqdm", "onnxruntime"]  # as README "Decode anywhere"


def music(rate, seconds, channels=1):
    """``seconds`` of tests/fixtures/music20s.flac from 5 s on, at ``rate``, (channels, samples) float32."""
    x, sr = sf.read(FIXTURES / "music20s.flac", dtype="float32", always_2d=True)
    x = x[5 * sr:5 * sr + int(seconds * sr)]
    while x.shape[1] < channels:  # a second channel: the first, 0.1 s later and softer
        x = np.concatenate([x, 0.8 * np.roll(x[:, :1], sr // 10, axis=0)], axis=1)
    x = x[:, :channels]
    return np.ascontiguousarray((soxr.resample(x, sr, rate) if rate != sr else x).T, np.float32)


def dacli_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dacli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def bundled_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "bundled"
    export(None, out)
    return out


def check_parity(onnx: OnnxDAC, model, x, codebooks):
    """The graphs against the torch model in fp32: codes of real audio equal, decoded audio within 1e-5
    (all codebooks and ``codebooks``), → the largest audio difference."""
    ref = model.encode(x).numpy()
    codes = onnx.encode(x)
    assert codes.shape == ref.shape and codes.dtype == np.int32
    assert np.array_equal(codes, ref), f"{(codes != ref).mean():.4%} of the codes differ"
    worst = 0.0
    for k in (model.n_codebooks, codebooks):
        y_ref = model.decode(ref[:, :k]).numpy()
        y = onnx.decode(ref[:, :k])
        assert y.shape == y_ref.shape
        worst = max(worst, float(np.abs(y - y_ref).max()))
    assert worst <= 1e-5, worst
    return worst


def test_bundled_graphs_encode_and_decode_as_dacli_does(bundled_export):
    info = json.loads((bundled_export / registry.EXPORT_INFO).read_text())
    model = dacli.load_model(None, "cpu", "fp32")
    assert info["weights_hash"] == model.weights_hash and info["name"] == model.name
    assert (info["sample_rate"], info["hop_length"], info["n_codebooks"], info["bits_per_code"]) == \
           (44100, 512, model.n_codebooks, 10)
    assert (info["decoder_context"], info["encoder_context"]) == (10, 8)  # model.receptive, from the layers
    onnx = OnnxDAC(bundled_export)
    check_parity(onnx, model, music(44100, 3.0, 2), 3)
    assert sorted(p.name for p in bundled_export.iterdir()) == ["dacli-onnx.json", "decoder_step.onnx",
                                                                "encoder_step.onnx"]
    assert info["decoder_step"]["delay"] == 4757 and info["decoder_step"]["length"] == [512, 0]  # 9.3 frames late
    assert info["encoder_step"]["delay"] == 8 and info["encoder_step"]["length"] == [1, 0]  # frames
    assert len(info["decoder_step"]["states"]) == len(info["encoder_step"]["states"]) == 30  # 2 per residual
    # unit, 1 per other convolution


@pytest.mark.parametrize("architecture", [None, FIXTURES / "tiny24.pth"])
def test_the_step_graph_decodes_alike_however_the_codes_are_split(tmp_path_factory, bundled_export, architecture):
    """The decoder's step graph pushed 1, 2, 3, … frames at a time, in one push, or in pushes of random
    sizes, rows at different positions in one call: every split within 1e-5 of the torch model's fp32
    one-pass decode (the bundled model, and tiny24, whose odd stride makes its audio shorter than the
    frames' hops)."""
    folder = bundled_export if architecture is None else tmp_path_factory.mktemp("tiny24") / "x"
    if architecture is not None:
        export(architecture, folder)
    onnx, model = OnnxDAC(folder), dacli.load_model(architecture, "cpu", "fp32")
    rng = np.random.default_rng(5)
    codes = rng.integers(0, model.codebook_size, (2, 3, 70)).astype(np.int32)
    ref = model.decode(codes).numpy()
    sizes = [[70], [1] * 70, list(range(1, 12)) + [4], list(rng.integers(1, 20, 12))]
    for split in sizes:
        steps, parts, t = onnx.steps(2), [], 0
        for n in split:
            parts.append(steps.push(codes[:, :, t:t + n]))
            t += n
        parts.append(steps.push(codes[:, :, t:], last=True))
        y = np.concatenate(parts, 1)
        assert y.shape == ref.shape, split
        assert float(np.abs(y - ref).max()) <= 1e-5, split
    for width in (0.05, 0.5, 3.0):  # the push loop of files, through decode_windows
        y = dacli.windows.decode_array(onnx, codes, width)
        assert y.shape == ref.shape and float(np.abs(y - ref).max()) <= 1e-5, width


def test_streams_at_different_positions_share_a_call_of_the_step_graph(bundled_export):
    """Two streams in one call per push, the second started 5 frames after the first, each row with its
    own position and state: each row's samples are those of its stream decoded alone."""
    onnx = OnnxDAC(bundled_export)
    session, info = onnx._session("decoder_step"), onnx.info["decoder_step"]
    codes = np.random.default_rng(2).integers(0, 1024, (2, 3, 40))
    start = [0, 5]

    def run(rows, positions, states):
        feeds = {"codes": rows, "position": np.array(positions, np.int64),
                 "frames": np.full(len(positions), 1 << 40, np.int64)}
        feeds.update((f"state{i}", st) for i, st in enumerate(states))
        y, *states = session.run(None, feeds)
        return y[:, 0], states

    zeros = [np.zeros((1, c, n), np.float32) for c, n in info["states"]]
    alone = [run(codes[i:i + 1, :, :35], [0], zeros)[0] for i in (0, 1)]
    together, states = [[], []], [np.zeros((2, c, n), np.float32) for c, n in info["states"]]
    for t in range(0, 35, 5):  # stream 1 pushes frames 0 … 4 at t = 5, and so on
        live = [i for i in (0, 1) if t >= start[i]]
        rows = np.concatenate([codes[i:i + 1, :, t - start[i]:t - start[i] + 5] for i in live])
        y, new = run(rows, [t - start[i] for i in live], [st[live] for st in states])
        for j, i in enumerate(live):
            together[i].append(y[j])
            for st, n in zip(states, new):
                st[i] = n[j]
    for i in (0, 1):
        y = np.concatenate(together[i])
        assert float(np.abs(y - alone[i][0, :y.shape[0]]).max()) <= 1e-5, i


def test_the_encoder_step_graph_gives_the_codes_of_a_one_pass_encode_however_the_audio_is_split(bundled_export):
    """Stereo music pushed a frame, a few frames or all at once, the two rows at different positions in
    each call (one stream started three frames later): codes equal to torch's fp32 one-pass encode."""
    onnx, model = OnnxDAC(bundled_export), dacli.load_model(None, "cpu", "fp32")
    x = music(44100, 1.2, 2)[:, :100 * 512]
    ref = model.encode(x).numpy()
    hop = 512
    for split in ([100], [1] * 100, [7, 1, 30, 2, 60]):
        steps, parts, t = onnx.steps(2, "encoder"), [], 0
        for n in split:
            parts.append(steps.push(x[:, t * hop:(t + n) * hop]))
            t += n
        parts.append(steps.push(x[:, :0], last=True))
        codes = np.concatenate(parts, -1)
        assert codes.shape == ref.shape and np.array_equal(codes, ref), split



def test_graphs_hold_the_folded_weights_not_weight_norm(bundled_export):
    """Weight norm is folded before export: the graphs hold plain convolutions whose weights are the
    model's g·v/‖v‖, with no normalisation of weights computed inside."""
    import onnx
    graph = onnx.load(str(bundled_export / "decoder_step.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "ConvTranspose" in ops and "Conv" in ops and not ops & {"ReduceL2", "LpNormalization"}
    model = dacli.model.load_checkpoint(registry.checkpoint_path(None)[0])
    first = model.decoder.model[0].weight().detach().numpy()
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer]
    assert any(w.shape == first.shape and np.array_equal(w, first) for w in weights)


def test_a_checkpoint_with_parametrized_weight_norm_exports_the_same_graphs(tmp_path, bundled_export):
    """A checkpoint saved with torch's newer weight-norm parametrisation (parametrizations.weight.original0
    and original1, 1-D convolutions) exports graphs that compute what the old layout's do."""
    ckpt = torch.load(registry.checkpoint_path(None)[0], map_location="cpu", weights_only=True)
    renamed = {}
    for k, v in ckpt["state_dict"].items():
        k = k.replace(".weight_g", ".parametrizations.weight.original0")
        renamed[k.replace(".weight_v", ".parametrizations.weight.original1")] = v
    assert any("original0" in k for k in renamed)
    torch.save({"state_dict": renamed, "metadata": ckpt["metadata"]}, tmp_path / "parametrized.pth")
    export(tmp_path / "parametrized.pth", tmp_path / "out")
    codes = np.random.default_rng(0).integers(0, 1024, (1, 9, 40))
    a, b = OnnxDAC(bundled_export), OnnxDAC(tmp_path / "out")
    assert a.weights_hash == b.weights_hash
    assert np.array_equal(a.decode(codes), b.decode(codes))


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFICIAL)
def test_every_official_architecture_exports_with_parity(tmp_path, name):
    torch.manual_seed(0)  # the official layout, random weights
    torch.save(build(name).checkpoint(), tmp_path / f"{name}.pth")
    export(tmp_path / f"{name}.pth", tmp_path / "out")
    model = dacli.load_model(tmp_path / f"{name}.pth", "cpu", "fp32")
    onnx = OnnxDAC(tmp_path / "out")
    check_parity(onnx, model, music(model.sample_rate, 1.0), 2)


def test_decode_with_the_onnx_runtime_gives_the_torch_file(tmp_path, bundled_export):
    """A 48 kHz stereo file: the same windows, loudness restore, low-pass and resampling; within one
    16-bit step of the torch decode."""
    sf.write(tmp_path / "in.wav", music(48000, 3.0, 2).T, 48000)
    r = dacli_cli("encode", tmp_path / "in.wav", "-o", tmp_path / "x.dac", "--bandwidth", "12000", "-q")
    assert r.returncode == 0, r.stderr
    r = dacli_cli("decode", tmp_path / "x.dac", "-o", tmp_path / "torch.wav", "--precision", "fp32", "-q")
    assert r.returncode == 0, r.stderr
    r = dacli_cli("decode", tmp_path / "x.dac", "-o", tmp_path / "onnx.wav", "--runtime", "onnx",
                  "--model", bundled_export, "-q", "--window-seconds", "0.5")
    assert r.returncode == 0, r.stderr
    a, sr_a = sf.read(tmp_path / "torch.wav", dtype="int16")
    b, sr_b = sf.read(tmp_path / "onnx.wav", dtype="int16")
    assert sr_a == sr_b == 48000 and a.shape == b.shape == (3 * 48000, 2)
    assert np.abs(a.astype(int) - b).max() <= 1


@pytest.mark.parametrize("args, message", [
    (["decode", "x.dac", "--runtime", "onnx"], "--runtime onnx needs --model DIR"),
    (["decode", "x.dac", "--runtime", "onnx", "--model", "dacli-44khz"], "--runtime onnx needs --model DIR"),
    (["decode", "x.dac", "--runtime", "onnx", "--model", "{export}", "--precision", "bf16"], "fp32 on the CPU"),
    (["decode", "x.dac", "--model", "{export}"], "an exported model (dacli export)"),
    (["export", "no-such-model", "-o", "out"], "unknown model 'no-such-model'"),
    (["export", "dacli-44khz", "-o", "{export}"], "exists; give --overwrite"),
    (["export", "dacli-44khz", "-o", "afile/out"], "cannot write here"),
])
def test_bad_export_and_onnx_use_is_one_line(tmp_path, bundled_export, args, message):
    (tmp_path / "afile").write_text("x")
    before = sorted(os.listdir(bundled_export))
    r = dacli_cli(*[a.replace("{export}", str(bundled_export)) for a in args], cwd=tmp_path)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 3 and "Traceback" not in r.stderr  # usage lines at most
    assert sorted(os.listdir(bundled_export)) == before and sorted(os.listdir(tmp_path)) == ["afile"]


def test_a_changed_graph_is_refused(tmp_path, bundled_export):
    import shutil
    shutil.copytree(bundled_export, tmp_path / "m")
    with open(tmp_path / "m" / "decoder_step.onnx", "r+b") as f:
        f.seek(-10, 2)
        f.write(b"0123456789")
    with pytest.raises(dacli.DacliError, match="does not match the sha256"):
        OnnxDAC(tmp_path / "m").decode(np.zeros((1, 9, 4), np.int32))


def test_an_export_of_an_older_dacli_is_refused_with_what_to_do(tmp_path, bundled_export):
    import shutil
    shutil.copytree(bundled_export, tmp_path / "m")
    info = json.loads((tmp_path / "m" / registry.EXPORT_INFO).read_text())
    (tmp_path / "m" / registry.EXPORT_INFO).write_text(json.dumps({**info, "version": 1}))
    with pytest.raises(dacli.DacliError, match="version 1 of dacli-onnx, this dacli reads version 2: run dacli export again"):
        OnnxDAC(tmp_path / "m")


@pytest.mark.slow
def test_a_venv_without_torch_decodes_describes_and_reads(tmp_path, bundled_export):
    """The wheel installed with --no-deps, then numpy, soundfile, soxr, zstandard, click, tqdm and
    onnxruntime: decode --runtime onnx gives the torch decode within one 16-bit step; info and
    read_codes work; torch is not importable."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
                   check=True, timeout=600)
    wheel, = wheels.glob("dacli-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, exe = venv / "bin" / "python", venv / "bin" / "dacli"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *TORCH_FREE],
                   check=True, timeout=900)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DACLI_WEIGHTS_DIR")}
    r = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    sf.write(tmp_path / "in.wav", music(44100, 2.0, 1).T, 44100)
    assert dacli_cli("encode", tmp_path / "in.wav", "-o", tmp_path / "x.dac", "-q").returncode == 0
    assert dacli_cli("decode", tmp_path / "x.dac", "-o", tmp_path / "torch.wav", "--precision", "fp32",
                     "-q").returncode == 0
    r = subprocess.run([str(exe), "decode", tmp_path / "x.dac", "-o", tmp_path / "onnx.wav", "--runtime", "onnx",
                        "--model", bundled_export, "-q"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = sf.read(tmp_path / "torch.wav", dtype="int16")[0], sf.read(tmp_path / "onnx.wav", dtype="int16")[0]
    assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
    r = subprocess.run([str(exe), "info", tmp_path / "x.dac", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["channels"] == 1, r.stderr
    probe = ("import sys, dacli; c, h = dacli.read_codes(sys.argv[1]); print(c.shape, h.n_codebooks); "
             "assert 'torch' not in sys.modules")
    r = subprocess.run([str(py), "-c", probe, str(tmp_path / "x.dac")], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    codes, header = dacli.read_codes(tmp_path / "x.dac")
    assert r.stdout.split() == ["(1,", f"{header.n_codebooks},", f"{codes.shape[2]})", str(header.n_codebooks)]
    r = subprocess.run([str(exe), "decode", tmp_path / "x.dac", "-o", tmp_path / "t.wav", "-q"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "torch" in r.stderr, r.stderr
