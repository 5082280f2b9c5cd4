"""Codec core: architecture keys, strict loading, numerical parity with the official implementation."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dacli
from dacli.errors import DacliError
from dacli.model import PRESETS, build, load_checkpoint
from dacli.model.receptive import convolutions

from conftest import FIXTURES, vectors

KEY_FILES = {"44khz-8kbps": "keys_44khz.txt", "44khz-16kbps": "keys_44khz_16kbps.txt",
             "24khz": "keys_24khz.txt", "16khz": "keys_16khz.txt"}


def read_keys(path):
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        out[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_keys_and_shapes_match_official(preset):
    ref = read_keys(FIXTURES / "keys" / KEY_FILES[preset])
    got = {k: tuple(v.shape) for k, v in build(preset).state_dict().items()}
    assert got.keys() == ref.keys()
    assert got == ref


@pytest.mark.parametrize("name", ["tiny44", "tiny24"])
def test_parity_with_official(name, request):
    model = request.getfixturevalue(name)
    v = vectors(name)
    codes = model.encode(v["audio"])
    assert codes.dtype == torch.int32 and codes.shape == (1, model.n_codebooks, v["codes"].shape[1])  # dacli.codes
    np.testing.assert_array_equal(codes[0].numpy(), v["codes"])
    np.testing.assert_array_equal(model.encode(v["audio"], n_codebooks=4)[0].numpy(), v["codes_nq4"])
    dec = model.decode(codes)
    assert dec.shape == (1, v["decoded"].shape[0])
    np.testing.assert_allclose(dec[0].numpy(), v["decoded"], atol=1e-4, rtol=0)
    dec4 = model.decode(v["codes_nq4"][None])
    np.testing.assert_allclose(dec4[0].numpy(), v["decoded_nq4"], atol=1e-4, rtol=0)
    z = model.quantizer.from_codes(torch.as_tensor(v["codes"])[None])
    np.testing.assert_allclose(z[0].numpy(), v["z_from_codes"], atol=1e-4, rtol=0)


def test_odd_stride_length(tiny24):
    codes = torch.zeros(1, 3, 10, dtype=torch.long)
    assert tiny24.decode(codes).shape[-1] == 320 * 10 - 8


def test_bitrate_arithmetic():
    m = build("44khz-8kbps")
    assert m.hop_length == 512 and m.bits_per_code == 10
    assert float(m.frame_rate) == pytest.approx(86.1328125)
    assert m.kbps(9) == pytest.approx(7.752, abs=1e-3)
    assert m.n_codebooks_for_kbps(8) == 9
    assert m.n_codebooks_for_kbps(7.75) == 8          # 9 codebooks are 7.752 kbps > 7.75
    assert m.n_codebooks_for_kbps(6.9) == 8 and m.n_codebooks_for_kbps(6.8) == 7
    assert m.n_codebooks_for_kbps(0.1) == 1
    assert m.n_codebooks_for_kbps(100) == 9
    m24 = build("24khz")
    assert m24.kbps() == pytest.approx(24.0) and m24.n_codebooks_for_kbps(24) == 32
    m16 = build("16khz")
    assert m16.kbps() == pytest.approx(6.0) and m16.n_codebooks_for_kbps(3) == 6


def test_accepts_parametrization_names(tmp_path, tiny44):
    ck = torch.load(FIXTURES / "tiny44.pth", weights_only=True)
    sd = {k.replace(".weight_g", ".parametrizations.weight.original0")
           .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in ck["state_dict"].items()}
    path = tmp_path / "new_style.pth"
    torch.save({"state_dict": sd, "metadata": ck["metadata"]}, path)
    m = load_checkpoint(path)
    assert m.weights_hash == tiny44.weights_hash
    v = vectors("tiny44")
    np.testing.assert_array_equal(m.encode(v["audio"])[0].numpy(), v["codes"])


def test_prepared_model_equals_the_plain_one():
    """The runtime's module tree (folded weights, channels-last convolutions, the C Snake kernel, the
    one-product quantizer) codes exactly as the plain modules do, and decodes to float32 rounding."""
    from dacli import runtime
    from dacli.model import WeightNormConv
    plain = load_checkpoint(FIXTURES / "tiny44.pth")
    fast = runtime.prepare(load_checkpoint(FIXTURES / "tiny44.pth"), "cpu", "fp32")
    assert any(isinstance(m, WeightNormConv) for m in plain.modules())
    assert not any(isinstance(m, WeightNormConv) for m in fast.modules())
    assert not any(k.endswith("weight_g") for k in fast.state_dict())
    v = vectors("tiny44")
    a, b = plain.encode(v["audio"]), fast.encode(v["audio"])
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(plain.decode(a).numpy(), fast.decode(a).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="already prepared"):
        runtime.prepare(fast, "cpu", "fp32")
    with pytest.raises(ValueError, match="prepared for inference"):
        fast.checkpoint()


def test_mixed_precision_keeps_the_decoders_last_and_the_encoders_narrow_first_layers_in_float32(monkeypatch):
    """"mixed": bfloat16 in the middle, float32 at the full-rate ends: the encoder's first layers up to
    FLOAT32_ENCODER_MAX_CHANNELS wide (where oneDNN's bf16 set-up costs more than it saves; none in the
    official models, whose encoders start at 64 channels), the decoder's last
    FLOAT32_DECODER_BLOCKS blocks and output layers (where bfloat16 added a noise floor); it decodes
    closer to fp32 than all-bf16 does; auto picks it exactly where bfloat16 is native."""
    from dacli import runtime
    from dacli.model.dac import DecoderBlock
    from dacli.runtime import engine, hardware
    from dacli.runtime.snake import FastSnake1d

    def dtypes(module):
        return {b.dtype for b in module.buffers()} | {m.dtype for m in module.modules() if isinstance(m, FastSnake1d)}
    models = {p: runtime.prepare(load_checkpoint(FIXTURES / "tiny44.pth"), "cpu", p) for p in hardware.PRECISIONS}
    mixed = models["mixed"]
    assert mixed.precision == "mixed"
    decoder_blocks = [i for i, layer in enumerate(mixed.decoder.inner.model) if isinstance(layer, DecoderBlock)]
    plain = load_checkpoint(FIXTURES / "tiny44.pth")
    widths = [convolutions(layer)[0].weight_v.shape[0] if convolutions(layer) else None for layer in plain.encoder.block]
    assert widths[:5] == [8, 8, 16, 32, 64] and engine.FLOAT32_ENCODER_MAX_CHANNELS == 32  # tiny44: encoder_dim 8
    assert engine.encoder_split(plain.encoder) == 4
    assert engine.encoder_split(build("44khz-8kbps").encoder) == 0
    for inner, split, dtype in ((mixed.encoder.inner.block, 4, torch.float32),  # first bf16 layer
                                (mixed.decoder.inner.model, decoder_blocks[-engine.FLOAT32_DECODER_BLOCKS],
                                 torch.bfloat16)):  # first float32 layer
        layers = list(inner)
        assert 0 < split < len(layers) - 1
        other = torch.bfloat16 if dtype == torch.float32 else torch.float32
        for i, layer in enumerate(layers):
            assert dtypes(layer) <= {dtype if i < split else other}, (dtype, i)
        assert other in dtypes(layers[split]) and dtype in dtypes(layers[split - 1])
    assert dtypes(models["bf16"].encoder) == {torch.bfloat16} and dtypes(models["fp32"].encoder) == {torch.float32}
    v = vectors("tiny44")
    codes = models["fp32"].encode(v["audio"])
    y = {p: m.decode(codes).numpy() for p, m in models.items()}
    err = {p: np.abs(y[p] - y["fp32"]).mean() for p in ("mixed", "bf16")}
    assert 0 < err["mixed"] < err["bf16"], err
    assert {codes.shape} == {m.encode(v["audio"]).shape for m in models.values()}
    for native, chosen in ((True, "mixed"), (False, "fp32")):
        monkeypatch.setattr(hardware, "native_bf16", lambda device, native=native: native)
        assert hardware.resolve_precision("auto", "cpu") == chosen
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"


def _edited(tmp_path, edit):
    ck = torch.load(FIXTURES / "tiny44.pth", weights_only=True)
    edit(ck)
    path = tmp_path / "edited.pth"
    torch.save(ck, path)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda ck: ck["state_dict"].pop("encoder.block.0.bias"), "missing 1 keys: encoder.block.0.bias"),
    (lambda ck: ck["state_dict"].__setitem__("extra.weight", torch.zeros(1)), "unexpected 1 keys: extra.weight"),
    (lambda ck: ck["state_dict"].__setitem__("encoder.block.0.bias", torch.zeros(3)), "wrong shape"),
    (lambda ck: ck.pop("metadata"), "metadata"),
    (lambda ck: ck["metadata"]["kwargs"].__setitem__("n_codebooks", 5), "unexpected 28 keys"),
])
def test_refuses_bad_checkpoints(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(DacliError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_refuses_non_torch_and_non_dict(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DacliError, match="not a readable torch checkpoint"):
        load_checkpoint(junk)
    lst = tmp_path / "list.pth"
    torch.save([1, 2, 3], lst)
    with pytest.raises(DacliError, match="not a DAC checkpoint"):
        load_checkpoint(lst)
    with pytest.raises(DacliError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pth")


def test_refuses_pickled_objects(tmp_path):
    """weights_only loading: a checkpoint holding an arbitrary Python object is refused, not run."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "metadata": {"kwargs": {}}, "x": Exception("boom")}, path)
    with pytest.raises(DacliError, match="not a readable torch checkpoint"):
        load_checkpoint(path)


def test_python_api(tmp_path):
    model = dacli.load_model(FIXTURES / "tiny44.pth", device="cpu")
    assert model.name == "tiny44.pth" and not model.training
    assert all(not p.requires_grad for p in model.parameters())
    stereo = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 5000)).astype(np.float32)
    codes = model.encode(stereo, n_codebooks=3)
    assert codes.shape == (2, 3, 10)  # ceil(5000 / 512)
    out = model.decode(codes)
    assert out.shape == (2, 5120) and not out.requires_grad
    with pytest.raises(DacliError):
        model.encode(stereo, n_codebooks=10)
    with pytest.raises(DacliError, match="unknown model"):
        dacli.load_model("no-such-model")
    with pytest.raises(DacliError, match="not on this machine"):
        import os
        os.environ["DACLI_CACHE"] = str(tmp_path)
        try:
            dacli.load_model("24khz")
        finally:
            del os.environ["DACLI_CACHE"]


def test_fused_convolution_path_equals_plain_conv2d(tiny44):
    """The oneDNN conv-with-add path and the plain conv2d path give the same decode."""
    from dacli import runtime
    from dacli.runtime.convs import FastConv, onednn_op
    g = torch.Generator().manual_seed(5)
    codes = torch.randint(0, tiny44.codebook_size, (1, tiny44.n_codebooks, 12), generator=g)
    assert onednn_op(torch.float32) is not None  # the CPU build of torch pinned in setup.cfg has it
    convs = [m for m in tiny44.modules() if isinstance(m, FastConv)]
    assert convs and all(m.onednn is not None for m in convs)
    fused = tiny44.decode(codes)
    plain = runtime.prepare(load_checkpoint(FIXTURES / "tiny44.pth"), "cpu", "fp32")
    for m in plain.modules():
        if isinstance(m, FastConv):
            m.onednn = None
    assert (fused - plain.decode(codes)).abs().max() < 1e-5


@pytest.mark.parametrize("transposed", [False, True])
def test_bf16_weights_packed_for_steady_shapes_give_the_same_output(transposed):
    """In bfloat16, a weight is packed into oneDNN's layout once two calls share a shape; the packed
    weight gives exactly what the plain one gave, and other shapes still use the plain weight. On a
    CPU without AVX-512 (AVX2 only: oneDNN refuses the fused bf16 convolution) nothing is packed
    and plain conv2d gives the same results."""
    from dacli.model import WNConv1d, WNConvTranspose1d
    from dacli.runtime.convs import FastConv1d, FastConvTranspose1d, onednn_op
    from dacli.runtime.hardware import cpu_flags, native_bf16
    torch.manual_seed(4)
    plain = (WNConvTranspose1d(48, 40, 8, stride=4, padding=2) if transposed else
             WNConv1d(48, 40, 7, dilation=3, padding=9)).eval()
    onednn = onednn_op(torch.bfloat16)
    # oneDNN runs bf16 on any CPU with AVX-512 (F, BW, VL, DQ), natively with AVX-512 BF16 or AMX
    flags = cpu_flags()
    assert (onednn is not None) == ({"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags or native_bf16("cpu"))
    with torch.no_grad():
        conv = (FastConvTranspose1d if transposed else FastConv1d)(plain, torch.bfloat16, onednn)
        weight = plain.weight()
    xs = {n: torch.randn(1, 48, 1, n).bfloat16().contiguous(memory_format=torch.channels_last) for n in (300, 512, 97)}
    with torch.inference_mode():
        first = conv(xs[300])
        steady = [conv(xs[512]) for _ in range(3)]
        packs = list(conv._packs.values())  # per weight: [last key, packed weight, its key]
        if onednn is not None:
            assert len(packs) == 1 and packs[0][2][0] == (1, 48, 1, 512) and packs[0][1].is_mkldnn
        else:
            assert packs == []
        last = conv(xs[97])
        again = conv(xs[300])
        ref = {n: F.conv_transpose1d(x[:, :, 0].float(), weight, plain.bias, 4, 2) if transposed else
               F.conv1d(x[:, :, 0].float(), weight, plain.bias, 1, 9, 3) for n, x in xs.items()}
    assert torch.equal(steady[1], steady[0]) and torch.equal(steady[2], steady[0])
    assert torch.equal(again, first)
    for y, n in ((first, 300), (steady[0], 512), (last, 97)):
        assert y.dtype == torch.bfloat16
        err = (y[:, :, 0].float() - ref[n]).abs().max() / ref[n].abs().max()
        assert err < 2e-2, (n, err)


def test_fused_snake_equals_the_formula():
    """The C kernel (_snake.c) against torch's formula: out of place and in place, channel counts that
    are not a multiple of the vector width, one thread and several, and arguments far beyond 2π."""
    from dacli import model as M
    from dacli.runtime import snake as R
    assert R.kernel_available(), "dacli._snake is not built: run make install (needs a C compiler)"
    g = torch.Generator().manual_seed(11)
    for channels, length, scale in ((7, 1001, 3.0), (64, 5000, 30.0), (1536, 67, 1e4)):
        plain = M.Snake1d(channels).eval()
        with torch.no_grad():
            plain.alpha.copy_(torch.rand(1, channels, 1, generator=g) * 5 + 0.05)
        m = R.FastSnake1d(plain, use_kernel=True)
        x = (torch.randn(2, channels, 1, length, generator=g) * scale).contiguous(memory_format=torch.channels_last)
        ref = M.snake(x, m.alpha.detach().view(1, -1, 1, 1))
        with torch.inference_mode():
            got = m(x)
        err = ((got - ref).abs() / (ref.abs() + 1)).max().item()
        assert err < 1e-5 * max(1.0, scale / 1000), (channels, scale, err)
        for threads in (1, 3):
            assert torch.equal(R.snake_fused(x, m.alpha, threads=threads), got)
        R.snake_fused(x, m.alpha, out=x, threads=2)
        assert torch.equal(x, got)  # in place
        # bfloat16: computed in float32 and rounded once, so within half a bf16 step (2^-8 relative) of
        # the float32 formula on the same bf16 inputs; torch's bf16 ops, rounding five times, are not
        xb = x.bfloat16()
        ref = M.snake(xb.float(), m.alpha.detach().view(1, -1, 1, 1))
        with torch.inference_mode():
            got = R.FastSnake1d(plain, use_kernel=True, dtype=torch.bfloat16)(xb)
            assert m(xb).dtype == torch.float32  # a layer in float32 takes a bfloat16 input as float32
        assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
        half_step = torch.exp2(torch.floor(torch.log2(ref.abs().clamp_min(1e-30))) - 8)
        excess = (got.float() - ref).abs() - half_step - 1e-5 * max(1.0, scale / 1000) * (ref.abs() + 1)
        assert excess.max().item() <= 0, (channels, scale, excess.max().item())
        for threads in (1, 3):
            assert torch.equal(R.snake_fused(xb, m.alpha, threads=threads), got)
        R.snake_fused(xb, m.alpha, out=xb, threads=2)
        assert torch.equal(xb, got)


def test_trainable_snake_equals_autograd():
    """The training kernel's forward and backward (_snake.c) against autograd through torch's formula:
    values, the input gradient and the alpha gradient (summed over batch and time), for lengths that are
    not a multiple of the vector width or of the 1,024-sample partial sums, large arguments, empty input."""
    from dacli import model as M
    from dacli.runtime import snake as R
    assert R.kernel_available(), "dacli._snake is not built: run make install (needs a C compiler)"
    g = torch.Generator().manual_seed(5)
    cases = ((3, 5, 7, 3.0), (2, 24, 5000, 3.0), (1, 3, 2049, 300.0), (2, 4, 0, 1.0), (2, 700, 97, 3.0))
    for (batch, channels, length, scale), layout in itertools.product(cases, ("ncl", "channels-last")):
        x0 = torch.randn(batch, channels, length, generator=g) * scale
        alpha0 = torch.rand(1, channels, 1, generator=g) * 2 + 0.05
        grad = torch.randn(batch, channels, length, generator=g)
        if layout == "channels-last":  # (B, C, 1, L), the layout of runtime.training
            x0, grad = (t[:, :, None].contiguous(memory_format=torch.channels_last) for t in (x0, grad))
        results = []
        for f in (lambda x, a: M.snake(x, a.view(1, -1, *[1] * (x.dim() - 2))), R.snake_trainable):
            x, alpha = x0.clone().requires_grad_(), alpha0.clone().requires_grad_()
            y = f(x, alpha)
            y.backward(grad)
            results.append((y.detach(), x.grad, alpha.grad))
        (y1, gx1, ga1), (y2, gx2, ga2) = results
        tol = 1e-5 * max(1.0, scale / 30)

        def worst(a, b, floor):
            return ((a - b).abs() / (a.abs() + floor)).flatten().tolist() + [0.0]
        assert max(worst(y1, y2, 1)) < tol
        assert max(worst(gx1, gx2, 1)) < tol
        assert ga1.shape == ga2.shape == (1, channels, 1)
        assert max(worst(ga1, ga2, (batch * length) ** 0.5 + 1)) < 10 * tol, (layout, ga1, ga2)
        if layout == "channels-last":
            assert y2.is_contiguous(memory_format=torch.channels_last) and \
                gx2.is_contiguous(memory_format=torch.channels_last)
    # where the kernel does not apply (other shapes, other dtypes) it is the formula itself
    xd = torch.randn(2, 3, 10, dtype=torch.float64)
    assert torch.equal(R.snake_trainable(xd, torch.ones(1, 3, 1)), M.snake(xd, torch.ones(1, 3, 1)))


def test_trainable_snake_in_bfloat16():
    """Under bf16 autocast the training kernel takes and gives bfloat16 (x, y, the gradients of y and
    x) and float32 α and ∂L/∂α: y and ∂L/∂x are the float32 formula on the same bfloat16 inputs,
    rounded once (within one bfloat16 step), and ∂L/∂α its float32 sum."""
    from dacli import model as M
    from dacli.runtime import snake as R
    assert R.kernel_available(), "dacli._snake is not built: run make install (needs a C compiler)"
    g = torch.Generator().manual_seed(6)
    for batch, channels, length in ((3, 5, 7), (2, 24, 5000)):
        xb = (torch.randn(batch, channels, length, generator=g) * 3).bfloat16()
        alpha0 = torch.rand(1, channels, 1, generator=g) * 2 + 0.05
        gradb = torch.randn(batch, channels, length, generator=g).bfloat16()
        x, alpha = xb.clone().requires_grad_(), alpha0.clone().requires_grad_()
        y = R.snake_trainable(x, alpha)
        y.backward(gradb)
        assert y.dtype == x.grad.dtype == torch.bfloat16 and alpha.grad.dtype == torch.float32
        xf, af = xb.float().requires_grad_(), alpha0.clone().requires_grad_()
        yf = M.snake(xf, af)
        yf.backward(gradb.float())
        bf16_step = 2.0 ** -7  # relative spacing of bfloat16 values (8 significant bits)
        assert ((y.float() - yf).abs() <= bf16_step * yf.abs() + 1e-6).all()
        assert ((x.grad.float() - xf.grad).abs() <= bf16_step * xf.grad.abs() + 1e-6).all()
        assert ((alpha.grad - af.grad).abs() <= 1e-4 * (af.grad.abs() + length ** 0.5)).all(), (alpha.grad, af.grad)
        # and not merely close: y is the rounding of the float32 result in nearly every element
        assert (y == yf.bfloat16()).float().mean() > 0.99


def test_codebook_projections_as_one_product_equal_the_stagewise_sum(tiny44):
    """The prepared quantizer sums the K codebook projections as one matrix product; the plain one (and
    the official code) runs K 1x1 convolutions. Both give the same latent, for every codebook count."""
    plain = load_checkpoint(FIXTURES / "tiny44.pth")
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, tiny44.codebook_size, (2, tiny44.n_codebooks, 17), generator=g)
    for k in (1, tiny44.n_codebooks):
        with torch.inference_mode():
            fast = tiny44.quantizer.from_codes(codes[:, :k])
            slow = plain.quantizer.from_codes(codes[:, :k])
        assert fast.shape == slow.shape == (2, tiny44.quantizer.quantizers[0].out_proj.weight.shape[0], 17)
        assert (fast - slow).abs().max() < 1e-5 * slow.abs().max()


def test_process_settings_are_applied_only_on_purpose_and_leave_openmp_alone():
    """Importing dacli and loading a model change nothing in the process (the allocator);
    dacli.tune_process() sets glibc's thresholds and leaves libgomp's spin as it is (the Snake kernel
    runs in torch's OpenMP team, whose threads should spin: docs/PERFORMANCE.md), a value the user
    set included."""
    import os
    import subprocess
    import sys
    loaded = ("import dacli, os, sys\n"
              f"m = dacli.load_model({str(FIXTURES / 'tiny44.pth')!r}, 'cpu', 'fp32')\n"
              "from dacli.runtime import process\n"
              "print(os.environ.get('GOMP_SPINCOUNT'), process._libc)")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", loaded], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None"]  # the library left the process alone
    code = ("import dacli, os, sys\n"
            "from dacli.runtime import process\n"
            "dacli.tune_process()\n"
            "print(os.environ.get('GOMP_SPINCOUNT'), type(process._libc).__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "CDLL"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "50000"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["50000", "CDLL"]


def test_the_snake_kernel_runs_in_torchs_openmp_team():
    """Built with OpenMP (as make install builds it here), the kernel shares the one libgomp that torch
    loaded, so its threads are the ones torch's convolutions run in; its result does not depend on the
    number of threads."""
    import torch

    from dacli.runtime import snake as snake_module
    kernel = snake_module._kernel
    assert kernel is not None and kernel.OPENMP == 1
    with open("/proc/self/maps") as f:
        libgomps = {line.split()[-1] for line in f if "libgomp" in line}
    assert len(libgomps) == 1, libgomps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 96, 1, 3001, generator=g).contiguous(memory_format=torch.channels_last)
    alpha = torch.rand(96, generator=g) + 0.2
    outs = [snake_module.snake_fused(x, alpha, threads=n) for n in (1, 2, 3)]
    assert all(torch.equal(outs[0], y) for y in outs[1:])


def test_registry_names_every_preset():
    from dacli import registry
    assert registry.OFFICIAL.keys() == PRESETS.keys()
