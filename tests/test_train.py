"""Training smoke test on the tiny config: finite losses, exact resume, official-layout export."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from dacli import audio
from dacli.errors import DacliError
from dacli.training import __main__ as train_cli, release, state
from dacli.training.config import CONFIGS
from dacli.training.data import TrainingAudio
from dacli.training.discriminators import Discriminator
from dacli.training.losses import discriminator_loss
from dacli.training.trainer import Trainer, resolve_training_precision, validate
from dacli.metrics import mel_distance
from dacli.model import Snake1d, load_checkpoint
from dacli.runtime.snake import FusedSnake1d, kernel_available


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(3):
        t = np.arange(44100) / 44100
        x = 0.3 * np.sin(2 * np.pi * 200 * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(d / f"c{i}.wav", x, 44100 if i else 22050)
    return d


def _run(corpus, steps, trainer=None):
    torch.manual_seed(0)
    trainer = trainer or Trainer(CONFIGS["tiny"], seed=1)
    data = TrainingAudio(corpus, trainer.gen.sample_rate)
    logs = [trainer.train_step(data.batch(trainer.rng, trainer.cfg["batch"], trainer.n)) for _ in range(steps)]
    return trainer, logs


def test_losses_finite_and_resume_exact(corpus, tmp_path):
    straight, logs = _run(corpus, 4)
    assert all(math.isfinite(v) for ln in logs for k, v in ln.items() if isinstance(v, float))
    assert {"mel", "gen", "feat", "disc", "codebook", "commitment", "latent"} <= logs[0].keys()

    first, _ = _run(corpus, 2)
    state.save(first, tmp_path / "state.pt")
    resumed = Trainer(CONFIGS["tiny"], seed=99)  # a different seed: everything comes from the state
    state.load_full_state(resumed, torch.load(tmp_path / "state.pt", weights_only=False))
    assert resumed.step == 2
    data = TrainingAudio(corpus, resumed.gen.sample_rate)
    for _ in range(2):
        resumed.train_step(data.batch(resumed.rng, resumed.cfg["batch"], resumed.n))
    for (k, a), b in zip(straight.gen.state_dict().items(), resumed.gen.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(straight.disc.state_dict().values(), resumed.disc.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.sched_g.get_last_lr() == resumed.sched_g.get_last_lr()

    state.export(straight, tmp_path / "w.pth")
    ck = torch.load(tmp_path / "w.pth", weights_only=True)
    assert set(ck) == {"state_dict", "metadata"} and "kwargs" in ck["metadata"]
    assert any(k.endswith(".weight_g") for k in ck["state_dict"])
    assert not any("opt" in k or "disc" in k for k in ck["metadata"])  # no training state in the weights
    model = load_checkpoint(tmp_path / "w.pth")
    assert model.n_codebooks == 3


def test_main_runs_and_resumes(corpus, tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(corpus), "--run", str(run), "--config", "tiny", "--save-every", "2",
            "--export-every", "2", "--log-every", "1", "--threads", "1"]
    assert train_cli.main(args + ["--steps", "2"]) == 0
    assert train_cli.main(args + ["--steps", "3"]) == 0
    st = torch.load(run / "state.pt", weights_only=False)
    assert st["step"] == 3
    assert (run / "weights_latest.pth").exists()
    lines = (run / "log.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"loss"' in ln]) == 3


def test_fused_snake_trains_like_autograd(corpus):
    """fuse_snakes swaps every generator Snake for the C kernel's, keeping the parameters and their
    names; two steps with it match two steps with autograd's Snake to float32 rounding."""
    fused = Trainer(CONFIGS["tiny"], seed=1)
    plain = Trainer(CONFIGS["tiny"], seed=1, fused_snake=False)
    n_fused = sum(isinstance(m, FusedSnake1d) for m in fused.gen.modules())
    assert n_fused == sum(isinstance(m, Snake1d) for m in plain.gen.modules()) > 10
    assert not any(isinstance(m, FusedSnake1d) for m in plain.gen.modules())
    assert list(fused.gen.state_dict()) == list(plain.gen.state_dict())
    assert {id(p) for p in fused.gen.parameters()} == {id(p) for g in fused.opt_g.param_groups for p in g["params"]}
    x = TrainingAudio(corpus, fused.gen.sample_rate).batch(np.random.default_rng(0), 2, fused.n)
    grads = []
    for t in (fused, plain):  # the generator's gradients of one loss, the same quantizer dropout draw
        torch.manual_seed(0)
        y, vq = t._generate(x)
        (mel_distance(y[:, 0], x[:, 0], 44100) + vq["commitment"] + vq["codebook"]).backward()
        grads.append({k: p.grad for k, p in t.gen.named_parameters()})
        t.gen.zero_grad(set_to_none=True)
    scale = max(g.abs().max().item() for g in grads[1].values())  # exactly cancelling sums round anyhow
    for k, a in grads[0].items():
        assert torch.allclose(a, grads[1][k], rtol=1e-3, atol=1e-5 * scale), k
    _, logs_f = _run(corpus, 2, fused)
    _, logs_p = _run(corpus, 2, plain)
    for a, b in zip(logs_f, logs_p):
        for k in ("mel", "loss", "grad_g", "disc"):
            assert a[k] == pytest.approx(b[k], rel=1e-3), k


def test_training_precision():
    assert resolve_training_precision("fp32") == "fp32"
    assert resolve_training_precision("bf16") == "bf16"
    from dacli.runtime.hardware import native_bf16
    assert resolve_training_precision("mixed") == "mixed"
    assert resolve_training_precision("auto") == ("bf16" if native_bf16("cpu") else "fp32")
    with pytest.raises(DacliError, match="precision"):
        resolve_training_precision("fp16")


def test_bf16_step_runs_and_keeps_losses_in_float32(corpus):
    trainer, logs = _run(corpus, 1, Trainer(CONFIGS["tiny"], seed=1, precision="bf16"))
    assert all(math.isfinite(v) for k, v in logs[0].items() if isinstance(v, float))
    assert all(p.dtype == torch.float32 for p in trainer.gen.parameters())
    y, vq = trainer._generate(torch.zeros(1, 1, trainer.n))
    assert y.dtype == torch.float32 and all(v.dtype == torch.float32 for v in vq.values())


def test_mixed_step_keeps_the_decoders_last_blocks_in_float32(corpus):
    """--precision mixed: the decoder's layers before mixed_split run under bf16 autocast (their
    inputs after the first are bfloat16), the last blocks and output layers in float32, as inference's
    "mixed" runs them."""
    from dacli.runtime.engine import mixed_split
    trainer = Trainer(CONFIGS["tiny"], seed=1, precision="mixed")
    layers = trainer.gen.decoder.model
    split = mixed_split(trainer.gen.decoder)
    assert 1 < split < len(layers) - 1
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (args[0].dtype, out.dtype)))
             for i, layer in enumerate(layers)]
    y, _ = trainer._generate(torch.zeros(1, 1, trainer.n))
    for h in hooks:
        h.remove()
    assert y.dtype == torch.float32
    assert all(seen[i][1] == torch.bfloat16 for i in range(split))
    assert all(seen[i] == (torch.float32, torch.float32) for i in range(split, len(layers)))
    _, logs = _run(corpus, 1, trainer)
    assert all(math.isfinite(v) for k, v in logs[0].items() if isinstance(v, float))


def test_codebooks_have_their_own_learning_rate(corpus):
    """The generator optimiser has two groups (the codebooks at codebook_lr_scale × lr)."""
    trainer, _ = _run(corpus, 2)
    cfg = trainer.cfg
    rest, books = trainer.opt_g.param_groups
    assert books["lr"] == pytest.approx(rest["lr"] * cfg["codebook_lr_scale"]) and cfg["codebook_lr_scale"] > 1
    names = {id(p): n for n, p in trainer.gen.named_parameters()}
    assert {names[id(p)].rsplit(".", 2)[-2] for p in books["params"]} == {"codebook"}
    assert trainer.sched_g.get_last_lr() == pytest.approx([rest["lr"], books["lr"]])


def test_discriminator_shapes():
    d = Discriminator(**CONFIGS["bundled"]["disc"])
    x = torch.randn(2, 1, 16896)
    outs = d(x)
    assert len(outs) == 5 + 3
    assert all(torch.isfinite(o[-1]).all() for o in outs)


def test_discriminators_see_two_signals_in_one_batch_as_apart():
    """The discriminator step passes the decoded and the real audio through the discriminators as one
    batch: each signal's features (hence the loss and the weights' gradients) are those it gets alone."""
    trainer = Trainer(CONFIGS["tiny"], seed=1)
    torch.manual_seed(2)
    y, x = 0.1 * torch.randn(2, 1, trainer.n), 0.1 * torch.randn(2, 1, trainer.n)
    with torch.no_grad():
        fake, real = trainer._discriminate(y, x)
        alone = [[f.float() for f in fmap] for fmap in trainer.disc(y)], \
            [[f.float() for f in fmap] for fmap in trainer.disc(x)]
    for together, apart in zip((fake, real), alone):
        for a, b in zip(together, apart):
            assert len(a) == len(b)
            for fa, fb in zip(a, b):
                assert fa.shape == fb.shape
                assert torch.allclose(fa, fb, rtol=1e-5, atol=1e-6 * float(fb.abs().max()))
    assert discriminator_loss(fake, real).item() == pytest.approx(
        discriminator_loss(*alone).item(), rel=1e-5)


def test_compact_state_continues_the_run(corpus, tmp_path):
    """export() writes the weights and, beside them, the committable training state; a new trainer
    started from the weights file continues from it (step, learning rate, discriminators, moments)."""
    trained, _ = _run(corpus, 3)
    state.export(trained, tmp_path / "w.pth")
    companion = state.resume_path(tmp_path / "w.pth")
    assert companion.name == "w.train.pt" and companion.exists()
    st = torch.load(companion, weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in st["disc"].values())
    assert all("exp_avg" not in s for s in st["opt_g"]["state"].values())  # first moments left out

    fresh = Trainer(CONFIGS["tiny"], seed=5)
    assert "resumed at step 3" in state.init_generator(fresh, tmp_path / "w.pth")
    assert fresh.step == 3 and fresh.sched_g.get_last_lr() == trained.sched_g.get_last_lr()
    for k, v in trained.disc.state_dict().items():
        assert torch.equal(fresh.disc.state_dict()[k], v.to(torch.bfloat16).float()), k
    g_old, g_new = trained.opt_g.state_dict()["state"], fresh.opt_g.state_dict()["state"]
    assert g_old.keys() == g_new.keys()
    for i in g_old:
        assert torch.allclose(g_new[i]["exp_avg_sq"], g_old[i]["exp_avg_sq"], rtol=1e-2, atol=0)
        assert not g_new[i]["exp_avg"].any()
        assert float(g_new[i]["step"]) == float(g_old[i]["step"]) == 3
    for (k, a), b in zip(trained.gen.state_dict().items(), fresh.gen.state_dict().values()):
        assert torch.equal(a, b), k
    data = TrainingAudio(corpus, fresh.gen.sample_rate)
    logs = fresh.train_step(data.batch(fresh.rng, fresh.cfg["batch"], fresh.n))
    assert logs["step"] == 4 and all(math.isfinite(v) for v in logs.values() if isinstance(v, float))

    # A state that belongs to other weights is refused; weights alone restart D and the optimisers
    # but keep the step and learning rate recorded in the checkpoint.
    other, _ = _run(corpus, 1)
    state.export(other, tmp_path / "o.pth")
    companion.replace(state.resume_path(tmp_path / "x.pth"))
    (tmp_path / "o.pth").replace(tmp_path / "x.pth")
    with pytest.raises(DacliError, match="other generator weights"):
        state.init_generator(Trainer(CONFIGS["tiny"]), tmp_path / "x.pth")
    state.resume_path(tmp_path / "x.pth").unlink()
    t = Trainer(CONFIGS["tiny"])
    assert "start fresh" in state.init_generator(t, tmp_path / "x.pth") and t.step == 1
    assert t.sched_g.get_last_lr() == other.sched_g.get_last_lr()


def test_sigterm_saves_and_exports(corpus, tmp_path):
    """make train-stop (SIGTERM) finishes the step, then saves the state and exports weights and the
    compact training state, so stopping loses nothing."""
    import subprocess
    import sys
    import time
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "dacli.training", "--data", str(corpus), "--run", str(run), "--config",
                          "tiny", "--log-every", "1", "--save-every", "1000", "--export-every", "1000",
                          "--threads", "1"], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    for line in p.stdout:
        if line.startswith("grad_d") and "step=3 " in line:
            break
        assert time.time() < deadline
    p.terminate()
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 0
    step = torch.load(run / "state.pt", weights_only=False)["step"]
    assert step >= 3 and f"stopped at step {step}" in out
    assert torch.load(run / "weights_latest.train.pt", weights_only=True)["step"] == step


def test_promote_names_the_next_version(corpus, tmp_path):
    import json
    trainer, _ = _run(corpus, 1)
    state.export(trainer, tmp_path / "w.pth")
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "VERSIONS.json").write_text(json.dumps({"file": "m.pth", "versions": [
        {"version": "dacli-44khz-v1", "step": 1, "sha256": "0" * 64, "commit": None}]}))
    assert release.promote(tmp_path / "w.pth", wdir, "c" * 40) == "dacli-44khz-v2"
    table = json.loads((wdir / "VERSIONS.json").read_text())
    assert table["versions"][0]["commit"] == "c" * 40  # the commit that still carries v1
    new = table["versions"][1]
    assert (new["version"], new["step"], new["commit"]) == ("dacli-44khz-v2", 1, None)
    assert new["sha256"] == load_checkpoint(wdir / "m.pth").weights_hash
    ck = torch.load(wdir / "m.pth", weights_only=True)
    assert ck["metadata"]["dacli"] == {"step": 1, "version": "dacli-44khz-v2"}
    assert not state.resume_path(wdir / "m.pth").exists()  # the training state stays out of weights/
    with pytest.raises(DacliError, match="already are dacli-44khz-v2"):
        release.promote(tmp_path / "w.pth", wdir, "d" * 40)


def test_quiet_share_keeps_pauses_quiet(tmp_path):
    """Excerpts are normalised alone and redrawn until loud, except a quiet_share of them, which keep
    their file's own level (the gain that brings the whole file to the target): a pause stays a pause."""
    rng = np.random.default_rng(0)
    t = np.arange(44100) / 44100
    x = np.concatenate([0.3 * np.sin(2 * np.pi * 440 * t), 1e-4 * rng.standard_normal(44100)])  # tone, pause
    sf.write(tmp_path / "talk.wav", x, 44100)
    data = TrainingAudio(tmp_path, 44100)
    n = 8192
    loud = [audio.loudness(data.excerpt(rng, n), 44100) for _ in range(40)]
    assert min(loud) == pytest.approx(-16, abs=0.5)  # every excerpt redrawn until loud, then normalised
    gain = data.file_gain(0)
    assert audio.loudness(data.clips[0] * gain, 44100) == pytest.approx(-16, abs=0.1)
    kept = [data.excerpt(rng, n, quiet_share=1.0) for _ in range(40)]
    assert sum(audio.loudness(e, 44100) < -60 for e in kept) >= 5  # pauses kept, not lifted to -16
    for seed in range(5):  # each one a piece of the file times the file's gain, drawn as the others are
        e = data.excerpt(np.random.default_rng(seed), n, quiet_share=1.0)
        draw = np.random.default_rng(seed)
        draw.random(), draw.choice(1, p=data.weights)
        start = draw.integers(0, len(x) - n)
        assert np.allclose(e, data.clips[0][start:start + n] * gain, rtol=1e-6, atol=1e-9)


def test_latent_loss_enters_with_its_weight(corpus):
    """The "latent" term (quantized vs encoder latent) is logged always and added to the loss with its
    weight (0 in the paper's recipe; docs/TRAINING.md records a run that tried 1)."""
    cfg = CONFIGS["tiny"]
    with_latent = cfg | {"lambdas": cfg["lambdas"] | {"latent": 1.0}}
    logs = []
    for c in (cfg, with_latent):
        torch.manual_seed(0)
        _, ln = _run(corpus, 1, Trainer(c, seed=1))
        logs.append(ln[0])
    assert logs[0]["latent"] == pytest.approx(logs[1]["latent"], rel=1e-5) and logs[0]["latent"] > 0
    assert logs[1]["loss"] - logs[0]["loss"] == pytest.approx(logs[1]["latent"], rel=1e-3)


def test_moving_average_of_the_weights(corpus, tmp_path):
    """The average follows ema ← ema + (1 − decay)(θ − ema) after every step, swaps in and out without
    touching the trained weights, is exported beside them and survives both kinds of resume."""
    trainer = Trainer(CONFIGS["tiny"], seed=1)
    decay = trainer.ema_decay
    assert decay == CONFIGS["tiny"]["ema"] and 0 < decay < 1
    data = TrainingAudio(corpus, trainer.gen.sample_rate)
    expected = [p.detach().clone() for p in trainer.gen.parameters()]
    for _ in range(3):
        trainer.train_step(data.batch(trainer.rng, trainer.cfg["batch"], trainer.n))
        expected = [e + (1 - decay) * (p.detach() - e) for e, p in zip(expected, trainer.gen.parameters())]
    for e, a in zip(expected, trainer.ema):
        assert torch.allclose(e, a, atol=1e-6)
    assert any(not torch.equal(e, p) for e, p in zip(trainer.ema, trainer.gen.parameters()))

    own = {k: v.clone() for k, v in trainer.gen.state_dict().items()}
    with trainer.averaged() as gen:
        for e, p in zip(trainer.ema, gen.parameters()):
            assert torch.equal(e, p)
    for k, v in trainer.gen.state_dict().items():
        assert torch.equal(own[k], v), k

    state.export(trainer, tmp_path / "w.pth")
    avg = torch.load(state.ema_path(tmp_path / "w.pth"), weights_only=True)
    assert avg["metadata"]["dacli"] == {"step": 3, "ema": decay}
    named = dict(zip((n for n, _ in trainer.gen.named_parameters()), trainer.ema))
    for k, v in avg["state_dict"].items():
        if k in named:
            assert torch.equal(v, named[k]), k
    assert load_checkpoint(state.ema_path(tmp_path / "w.pth")).n_codebooks == 3

    fresh = Trainer(CONFIGS["tiny"], seed=5)  # from the committed files: the average is
    state.init_generator(fresh, tmp_path / "w.pth")                # stored as its bf16 difference to the weights
    for e, a, p in zip(trainer.ema, fresh.ema, trainer.gen.parameters()):
        assert ((a - e).abs() <= (e - p).abs() * 2 ** -8 + 1e-6).all()
    state.save(trainer, tmp_path / "state.pt")
    again = Trainer(CONFIGS["tiny"], seed=6)
    state.load_full_state(again, torch.load(tmp_path / "state.pt", weights_only=False))
    assert all(torch.equal(e, a) for e, a in zip(trainer.ema, again.ema))


def test_generator_step_leaves_the_discriminators_gradients_alone(corpus):
    """The generator's backward goes through the discriminators without computing their weights'
    gradients (a third of its cost); they keep the gradients of their own step and stay trainable."""
    trainer = Trainer(CONFIGS["tiny"], seed=1)
    data = TrainingAudio(corpus, trainer.gen.sample_rate)
    seen = []
    trainer.opt_d.register_step_pre_hook(
        lambda *_: seen.append([p.grad.clone() for p in trainer.disc.parameters()]))
    trainer.train_step(data.batch(trainer.rng, trainer.cfg["batch"], trainer.n))
    assert seen and all(torch.equal(a, p.grad) for a, p in zip(seen[0], trainer.disc.parameters()))
    assert all(p.requires_grad for p in trainer.disc.parameters())
    assert all(p.grad is not None and p.grad.any() for p in trainer.gen.parameters() if p.requires_grad)


def test_channels_last_layout_trains_like_channels_first(corpus):
    """The channels-last training layout (runtime.training) computes the same step: same losses and
    updated weights as the plain layout to float32 rounding, the same state-dict keys, and a model that
    still runs on (B, C, L) (validation, export). Both Snake kernels' backward (per row, per channel)
    give the same α gradients."""
    data = TrainingAudio(corpus, 44100)
    x = data.batch(np.random.default_rng(3), 2, Trainer(CONFIGS["tiny"]).n)
    runs = {}
    for cl in (False, True):
        t = Trainer(CONFIGS["tiny"], seed=1, channels_last=cl)
        assert t.channels_last is cl
        runs[cl] = (t, t.train_step(x))
    (plain, logs_p), (cl, logs_c) = runs[False], runs[True]
    for k in ("mel", "disc", "gen", "feat", "codebook"):
        assert logs_p[k] == pytest.approx(logs_c[k], rel=1e-4, abs=1e-6), k
    # the generator's gradients of the step (AdamW's first step turns any sign into ±lr, so compare these)
    grads = [torch.cat([p.grad.flatten() for p in t.gen.parameters()]) for t in (plain, cl)]
    assert torch.allclose(*grads, rtol=0, atol=1e-3 * float(grads[0].abs().max()))
    for (k, a), b in zip(plain.gen.named_parameters(), cl.gen.parameters()):
        if k.endswith("alpha"):  # Snake's α: summed per row (plain) or per channel and thread (cl)
            assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-3 * float(a.grad.abs().max())), k
    sd_p, sd_c = plain.gen.state_dict(), cl.gen.state_dict()
    assert sd_p.keys() == sd_c.keys()
    assert cl.gen.checkpoint()["state_dict"].keys() == sd_p.keys()
    assert math.isfinite(validate(cl.gen, x))
    # the layout is on by default exactly where it was measured faster: bf16 with the fused Snake
    assert Trainer(CONFIGS["tiny"], precision="fp32").channels_last is False


def test_trainer_moves_its_whole_state_to_another_device(corpus):
    """Trainer.to moves generator, discriminators, average and optimiser moments (not the optimisers'
    step counters, which AdamW keeps on the CPU); the "meta" device shows anything left behind.
    The fused Snake kernel cannot leave the CPU: asked to, it says so."""
    trainer, _ = _run(corpus, 1, Trainer(CONFIGS["tiny"], seed=1, fused_snake=False))
    assert trainer.to("meta") is trainer and trainer.device.type == "meta"
    tensors = [*trainer.gen.parameters(), *trainer.disc.parameters(), *trainer.ema]
    tensors += [v for opt in (trainer.opt_g, trainer.opt_d) for st in opt.state.values()
                for k, v in st.items() if k != "step"]
    assert len(tensors) > 3 * len(list(trainer.gen.parameters())) and all(t.is_meta for t in tensors)
    assert all(not st["step"].is_meta for opt in (trainer.opt_g, trainer.opt_d) for st in opt.state.values())
    if kernel_available():
        with pytest.raises(ValueError, match="CPU only"):
            Trainer(CONFIGS["tiny"], seed=1).to("meta")
