"""Training a DAC model with the paper's recipe, scaled to what a small CPU can train.

Generator: :class:`dacli.model.DAC` with quantizer dropout. Discriminators: multi-period (waveform
reshaped by periods 2, 3, 5, 7, 11) and multi-band multi-scale complex STFT (FFT 2048, 1024, 512;
five frequency bands), both with configurable widths. Losses: least-squares GAN, feature matching,
7-scale mel distance, codebook and commitment; weights 1, 2, 15, 1, 0.25 (and, outside the paper, an
optional ``latent`` weight on the distance between the quantized and the encoder's latent). AdamW
(β = 0.8, 0.99) with an exponential learning-rate decay per step.

Usage::

    python -m dacli.train --data CORPUS_DIR --run ~/.cache/dacli/runs/bundled [--config bundled]
                          [--steps N] [--init weights/x.pth] [--export-every 500]
    python -m dacli.train --promote RUN/weights_latest.pth    # the next bundled version

The run folder holds ``state.pt`` (everything needed to resume exactly: models, optimisers,
schedulers, step, random states), ``log.jsonl`` and exported generator weights in the official
checkpoint layout (``weights_latest.pth``). Run it again with the same ``--run`` to resume.
"""

import argparse
import json
import math
import random
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from . import audio
from .fileio import AUDIO_EXTS, atomic_output, find_inputs
from .metrics import mel_distance
from .model import DAC, load_checkpoint, weights_hash
from .runtime.engine import mixed_split
from .runtime.hardware import PRECISIONS, native_bf16
from .runtime.snake import FusedSnake1d, fuse_snakes, kernel_available
from .runtime.training import channels_last_training, from_channels_last, to_channels_last

CONFIGS = {
    # The bundled default model: 44.1 kHz, hop 512, 9 codebooks × 10 bits (7.75 kbps), narrow channels.
    "bundled": dict(
        model=dict(encoder_dim=16, encoder_rates=[2, 4, 8, 8], latent_dim=256, decoder_dim=384,
                   decoder_rates=[8, 8, 4, 2], n_codebooks=9, codebook_size=1024, codebook_dim=8,
                   quantizer_dropout=0.5, sample_rate=44100),
        disc=dict(periods=[2, 3, 5, 7, 11], mpd_channels=[16, 32, 64, 128], fft_sizes=[2048, 1024, 512],
                  mrd_channels=16),
        batch=8, excerpt=0.38, lr=1e-4, betas=(0.8, 0.99), gamma=0.999996, disc_start=0,
        lambdas={"mel": 15.0, "feat": 2.0, "gen": 1.0, "codebook": 1.0, "commitment": 0.25},
        # The codebooks learn 10x faster than the rest (from step 8421; the paper uses one rate). At
        # lr 1e-4 they had hardly left their N(0, 1) start after 8,300 steps (rms 0.9-1.1, moving
        # ~0.01 rms per 900 steps) while the projected latents they quantise have rms 0.8-2.8, so each
        # level passed on its error instead of coding it: benchmarks/rvq_diagnostics.py.
        codebook_lr_scale=10.0,
        # From step 11655: a tenth of the excerpts at their file's own level, pauses and silence
        # included (TrainingAudio). Held-out speech had decoded with a noise floor in its pauses, a
        # median 11 dB (up to 47 dB) above the original's, a kind of input that excerpts redrawn until
        # loud never show (benchmarks/pause_floor.py; 850 steps later the median excess was 2.5 dB).
        quiet_share=0.1,
        # From step 13674: an exponential moving average of the generator's weights (decay per step;
        # ~1,000 steps), exported beside the raw weights. Held-out quality swung between exports 500
        # steps apart by more than those steps gained (mel 1.765 at 12500, 1.880 at 13000).
        ema=0.999,
    ),
    # A tiny configuration for the CI smoke test.
    "tiny": dict(
        model=dict(encoder_dim=4, encoder_rates=[2, 4, 8, 8], latent_dim=16, decoder_dim=16,
                   decoder_rates=[8, 8, 4, 2], n_codebooks=3, codebook_size=64, codebook_dim=4,
                   quantizer_dropout=0.5, sample_rate=44100),
        disc=dict(periods=[2, 3], mpd_channels=[4, 8, 8, 8], fft_sizes=[512], mrd_channels=4),
        batch=2, excerpt=0.1, lr=1e-4, betas=(0.8, 0.99), gamma=0.999996, disc_start=0,
        lambdas={"mel": 15.0, "feat": 2.0, "gen": 1.0, "codebook": 1.0, "commitment": 0.25},
        codebook_lr_scale=10.0, ema=0.9,
    ),
}

COMPACT_STATE_FORMAT = "dacli-train-state-1"

# Gradient-norm clips, as the official training recipe sets them: the discriminators' gradients are
# clipped at 10; the generator's at 1,000, which only catches blow-ups (its norm runs 150-750 here).
CLIP_DISC = 10.0
CLIP_GEN = 1e3

BANDS = [(0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]


# --------------------------------------------------------------------------------------------------
# Discriminators


class PeriodDiscriminator(nn.Module):
    """Looks at the waveform folded into rows of ``period`` samples (2-D convs along time)."""

    def __init__(self, period, channels):
        super().__init__()
        self.period = period
        dims = [1] + list(channels)
        self.convs = nn.ModuleList(
            [weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in zip(dims, dims[1:])]
            + [weight_norm(nn.Conv2d(dims[-1], dims[-1], (5, 1), 1, padding=(2, 0)))])
        self.post = weight_norm(nn.Conv2d(dims[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x):
        x = F.pad(x, (0, self.period - x.shape[-1] % self.period), mode="reflect")
        x = x.reshape(x.shape[0], 1, -1, self.period)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            fmap.append(x)
        fmap.append(self.post(x))
        return fmap


class BandSTFTDiscriminator(nn.Module):
    """Looks at the complex STFT (real and imaginary parts), split into frequency bands."""

    def __init__(self, n_fft, channels, bands=BANDS):
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        self.bands = [(int(a * bins), int(b * bins)) for a, b in bands]
        ch = channels

        def stack():
            return nn.ModuleList([
                weight_norm(nn.Conv2d(2, ch, (3, 9), (1, 1), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 3), (1, 1), padding=(1, 1)))])
        self.stacks = nn.ModuleList(stack() for _ in self.bands)
        self.post = weight_norm(nn.Conv2d(ch, 1, (3, 3), (1, 1), padding=(1, 1)))

    def forward(self, x):
        win = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x[:, 0], self.n_fft, self.n_fft // 4, window=win, return_complex=True)
        spec = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, frames, bins)
        fmap, outs = [], []
        for (lo, hi), stack in zip(self.bands, self.stacks):
            h = spec[..., lo:hi]
            for conv in stack:
                h = F.leaky_relu(conv(h), 0.1)
                fmap.append(h)
            outs.append(h)
        fmap.append(self.post(torch.cat(outs, -1)))
        return fmap


class Discriminator(nn.Module):
    """All discriminators; ``forward`` returns one feature list per discriminator (last = logits)."""

    def __init__(self, periods, mpd_channels, fft_sizes, mrd_channels):
        super().__init__()
        self.discs = nn.ModuleList([PeriodDiscriminator(p, mpd_channels) for p in periods]
                                   + [BandSTFTDiscriminator(n, mrd_channels) for n in fft_sizes])

    def forward(self, x):
        return [d(x) for d in self.discs]


def discriminator_loss(d_fake, d_real):
    return sum(f[-1].pow(2).mean() + (1 - r[-1]).pow(2).mean() for f, r in zip(d_fake, d_real))


def generator_losses(d_fake, d_real):
    """(least-squares adversarial loss, feature-matching L1 loss)."""
    adv = sum((1 - f[-1]).pow(2).mean() for f in d_fake)
    feat = sum(F.l1_loss(a, b.detach()) for f, r in zip(d_fake, d_real) for a, b in zip(f[:-1], r[:-1]))
    return adv, feat


# --------------------------------------------------------------------------------------------------
# Data

class TrainingAudio:
    """All audio of a folder, mono at the model rate, in memory; draws loudness-normalised excerpts.

    Most excerpts are redrawn until louder than ``min_loudness`` and then normalised alone to
    ``target``. A ``quiet_share`` of them is taken wherever it falls and given the gain that normalises
    its whole file to ``target``, as ``dacli encode`` does, so that pauses, fades and silence reach the
    model at the level they have in use (without them it never learns to keep a pause silent)."""

    def __init__(self, folder, sample_rate, min_loudness=-40.0, target=-16.0, quiet_share=0.0):
        files = [f for f, _ in find_inputs([folder], AUDIO_EXTS - {".raw"})]
        if not files:
            raise SystemExit(f"no audio files under {folder}")
        self.clips = []
        for p in files:
            x, sr = audio.read(p)
            self.clips.append(audio.resample(x.mean(1), sr, sample_rate).astype(np.float32))
        self.weights = np.array([len(c) for c in self.clips], dtype=np.float64)
        self.weights /= self.weights.sum()
        self.rate, self.min_loudness, self.target = sample_rate, min_loudness, target
        self.quiet_share = quiet_share
        self.seconds = sum(len(c) for c in self.clips) / sample_rate
        self._file_gain = {}

    def _cut(self, rng, n):
        i = rng.choice(len(self.clips), p=self.weights)
        c = self.clips[i]
        start = rng.integers(0, max(1, len(c) - n))
        x = c[start:start + n]
        return i, np.pad(x, (0, n - len(x)))

    def file_gain(self, i):
        """The gain that brings file ``i`` to the target loudness (computed once)."""
        if i not in self._file_gain:
            self._file_gain[i] = audio.db_to_gain(self.target - audio.loudness(self.clips[i], self.rate))
        return self._file_gain[i]

    def excerpt(self, rng, n, quiet_share=None):
        share = self.quiet_share if quiet_share is None else quiet_share
        if share and rng.random() < share:
            i, x = self._cut(rng, n)
            x = x * self.file_gain(i)
        else:
            for _ in range(20):
                _, x = self._cut(rng, n)
                db = audio.loudness(x, self.rate)
                if db > self.min_loudness:
                    break
            x = x * audio.db_to_gain(self.target - db)
        peak = np.abs(x).max()
        return (x / peak if peak > 1 else x).astype(np.float32)

    def batch(self, rng, size, n, quiet_share=None):
        return torch.from_numpy(np.stack([self.excerpt(rng, n, quiet_share) for _ in range(size)]))[:, None]


# --------------------------------------------------------------------------------------------------
# Speed switches, applied to the plain model from outside


def resolve_training_precision(precision):
    """"bf16" (autocast on the CPU) where the CPU computes bfloat16 natively, else "fp32"."""
    if precision == "auto":
        return "bf16" if native_bf16("cpu") else "fp32"
    if precision not in PRECISIONS:
        raise SystemExit(f"precision must be auto, {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


# --------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """``precision``: "fp32", or "bf16" to run the generator's encoder and decoder and the
    discriminators under bf16 autocast on the trainer's device (the quantizer, losses and optimisers
    stay in float32); "auto" decides by the CPU, where the Trainer is built (:meth:`to` moves it).
    ``fused_snake``: train Snake with the C kernel (:func:`fuse_snakes`) where it was compiled.
    ``channels_last``: run the encoder and decoder in the channels-last layout
    (:func:`channels_last_training`); None: where Snake is fused and the precision is not fp32."""

    def __init__(self, cfg, seed=0, precision="fp32", fused_snake=True, channels_last=None):
        self.cfg = cfg
        torch.manual_seed(seed)
        self.gen = DAC(**cfg["model"])
        if fused_snake:
            fuse_snakes(self.gen)
        self.precision = resolve_training_precision(precision)
        if channels_last is None:
            channels_last = fused_snake and kernel_available() and self.precision != "fp32"
        self.channels_last = bool(channels_last)
        if self.channels_last:
            channels_last_training(self.gen)
        self.disc = Discriminator(**cfg["disc"])
        # two groups: the codebooks (their own learning rate) and everything else
        books = [p for n, p in self.gen.named_parameters() if n.endswith("codebook.weight")]
        rest = [p for n, p in self.gen.named_parameters() if not n.endswith("codebook.weight")]
        self.opt_g = torch.optim.AdamW(
            [{"params": rest}, {"params": books, "lr": cfg["lr"] * cfg.get("codebook_lr_scale", 1.0)}],
            lr=cfg["lr"], betas=cfg["betas"])
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg["lr"], betas=cfg["betas"])
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, cfg["gamma"])
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, cfg["gamma"])
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.ema_decay = cfg.get("ema", 0.0)
        self.reset_ema()
        hop = self.gen.hop_length
        self.n = int(math.ceil(cfg["excerpt"] * self.gen.sample_rate / hop)) * hop

    def init_generator(self, path):
        """Start the generator from exported weights. If the training state exported beside them
        (:func:`resume_path`) exists and belongs to these weights, the discriminators, optimiser moments,
        step and learning rates continue from it; otherwise they start fresh."""
        src = load_checkpoint(path)
        if src.kwargs | {"quantizer_dropout": 0} != self.gen.kwargs | {"quantizer_dropout": 0}:
            raise SystemExit(f"{path}: kwargs {src.kwargs} differ from the config's {self.gen.kwargs}")
        self.gen.load_state_dict(src.state_dict())
        self.reset_ema()
        companion = resume_path(path)
        if not companion.exists():
            self.step = _step_of(path)
            for sched in (self.sched_g, self.sched_d):
                _schedule_to(sched, self.step)  # where the exported run was
            self.rng = np.random.default_rng(self.step)
            return (f"generator initialised from {path} at step {self.step}; "
                    "discriminators and optimisers start fresh")
        st = torch.load(companion, map_location="cpu", weights_only=True)
        if st["generator_sha256"] != src.weights_hash:
            raise SystemExit(f"{companion} belongs to other generator weights than {path}")
        self.load_compact_state(st)
        return f"resumed at step {self.step} from {path} and {companion}"

    def compact_state(self, generator_state=None):
        """The committable part of the training state: everything but the generator (which is the
        exported weights file) and the random states, in bf16. Kept: discriminator weights and both
        optimisers' second moments (AdamW β2 = 0.99 remembers ~100 steps, and they set each
        parameter's step size), the discriminators' first moments (small), step and learning rates.
        Left out: the generator's first moments (β1 = 0.8 remembers ~5 steps; resumed as zeros, which
        only shrinks the first few updates) — that halves the file. ``generator_state``: the
        generator's checkpoint state dict when the caller has already made it (its hash is stored)."""
        def moments(opt, keep):
            sd = opt.state_dict()
            return {"state": {i: {k: (v.to(torch.bfloat16) if k.startswith("exp_avg") else v)
                                  for k, v in s.items() if k == "step" or k in keep}
                              for i, s in sd["state"].items()},
                    "param_groups": sd["param_groups"]}
        if generator_state is None:
            generator_state = self.gen.checkpoint()["state_dict"]
        ema = {} if self.ema is None else {
            "ema_delta": {n: (e - p.detach()).to(torch.bfloat16)
                          for (n, p), e in zip(self.gen.named_parameters(), self.ema)}}
        return {"format": COMPACT_STATE_FORMAT, "step": self.step,
                "generator_sha256": weights_hash(generator_state), **ema,
                "disc": {k: v.to(torch.bfloat16) for k, v in self.disc.state_dict().items()},
                "opt_g": moments(self.opt_g, {"exp_avg_sq"}),
                "opt_d": moments(self.opt_d, {"exp_avg", "exp_avg_sq"}),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict()}

    def load_compact_state(self, st):
        if st.get("format") != COMPACT_STATE_FORMAT:
            raise SystemExit(f"training state format {st.get('format')!r} is not {COMPACT_STATE_FORMAT!r}")
        self.step = st["step"]
        self.disc.load_state_dict({k: v.float() for k, v in st["disc"].items()})

        def moments(opt, saved):
            params = [p for g in opt.param_groups for p in g["params"]]
            state = {}
            for i, s in saved["state"].items():
                ref = params[int(i)]
                state[i] = {"step": s["step"],
                            **{k: s[k].float() if k in s else torch.zeros_like(ref)
                               for k in ("exp_avg", "exp_avg_sq")}}
            opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        moments(self.opt_g, self._regroup_opt_g(st["opt_g"]))
        moments(self.opt_d, st["opt_d"])
        self._load_sched_g(st["sched_g"])
        self.sched_d.load_state_dict(st["sched_d"])
        self.reset_ema(st.get("ema_delta"))
        self.rng = np.random.default_rng(self.step)  # a fresh draw of excerpts, seeded by the step

    def reset_ema(self, delta=None):
        """Start the moving average at the generator's weights (plus ``delta``, the stored difference
        ``average − weights`` of a compact state, by parameter name)."""
        if not self.ema_decay:
            self.ema = None
            return
        self.ema = [p.detach().clone() + (delta[n].to(p.device, torch.float32) if delta and n in delta else 0)
                    for n, p in self.gen.named_parameters()]

    @torch.no_grad()
    def _update_ema(self):
        for e, p in zip(self.ema, self.gen.parameters()):
            e.lerp_(p, 1.0 - self.ema_decay)

    @contextmanager
    def averaged(self):
        """The generator with its averaged weights in place (its own restored afterwards)."""
        if self.ema is None:
            raise ValueError("this configuration keeps no average of the weights")
        params = list(self.gen.parameters())
        own = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, self.ema):
                p.copy_(e)
        try:
            yield self.gen
        finally:
            with torch.no_grad():
                for p, o in zip(params, own):
                    p.copy_(o)

    @property
    def device(self) -> torch.device:
        return next(self.gen.parameters()).device

    def to(self, device):
        """Move the whole training state (generator, discriminators, average, optimiser moments) to
        ``device``, e.g. to continue a run on a GPU and bring it back to export. The model and its
        recipe are unchanged; only the CPU's fused Snake kernel cannot follow (build without it)."""
        device = torch.device(device)
        if device.type != "cpu" and any(isinstance(m, FusedSnake1d) for m in self.gen.modules()):
            raise ValueError("the fused Snake kernel runs on the CPU only: make the Trainer with fused_snake=False")
        self.gen.to(device)
        self.disc.to(device)
        if self.ema is not None:
            self.ema = [e.to(device) for e in self.ema]
        for opt in (self.opt_g, self.opt_d):
            for st in opt.state.values():
                for k, v in st.items():
                    if torch.is_tensor(v) and k != "step":
                        st[k] = v.to(device)
        return self

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision != "fp32")

    def _generate(self, x):
        """The generator's training forward (as ``DAC.forward``), with the encoder and decoder under
        autocast and the quantizer in float32 (its nearest-code search needs the precision); "mixed"
        keeps the decoder's last blocks in float32, as inference does (:func:`mixed_split`). In the
        channels-last layout the encoder and decoder take and give (B, C, 1, L) tensors."""
        def same(t):
            return t
        inward, outward = (to_channels_last, from_channels_last) if self.channels_last else (same, same)
        with self._autocast():
            z = self.gen.encoder(inward(x))
        z = outward(z).float()
        z_q, _, _, commitment, codebook = self.gen.quantizer(z)
        layers = self.gen.decoder.model
        split = mixed_split(self.gen.decoder) if self.precision == "mixed" else len(layers)
        with self._autocast():
            h = layers[:split](inward(z_q))
        y = outward(layers[split:](h.float()))
        # how far the quantized latent is from the encoder's: the residual every level leaves behind
        latent = F.mse_loss(z_q, z.detach())
        return y.float(), {"codebook": codebook, "commitment": commitment, "latent": latent}

    def _discriminate(self, *signals):
        """The discriminators' features of each signal (one list per discriminator each), computed in
        one batch: the discriminators treat batch items apart, and one pass over 2B items costs less
        than two over B (the discriminator step: 0.69 → 0.64 s, measured in sitting 9)."""
        with self._autocast():
            feats = self.disc(torch.cat(signals))
        n = signals[0].shape[0]
        return [[[f[i * n:(i + 1) * n].float() for f in fmap] for fmap in feats] for i in range(len(signals))]

    def train_step(self, x):
        cfg, lam = self.cfg, self.cfg["lambdas"]
        self.gen.train()
        self.disc.train()
        x = x.to(self.device)
        y, vq = self._generate(x)
        logs = {}
        use_d = self.step >= cfg["disc_start"]
        if use_d:
            d_loss = discriminator_loss(*self._discriminate(y.detach(), x))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            logs["grad_d"] = float(nn.utils.clip_grad_norm_(self.disc.parameters(), CLIP_DISC))
            self.opt_d.step()
            logs["disc"] = d_loss.item()
        mel = mel_distance(y[:, 0], x[:, 0], self.gen.sample_rate)
        loss = lam["mel"] * mel + sum(lam[k] * v for k, v in vq.items() if lam.get(k))
        if use_d:
            # The generator's losses need the gradient through the discriminators, not of their
            # weights (those are cleared before their next step): freezing them skips that backward.
            self.disc.requires_grad_(False)
            try:
                # apart: in one batch the backward would also compute the gradient for x's half
                (d_fake,), (d_real,) = self._discriminate(y), self._discriminate(x)
                adv, feat = generator_losses(d_fake, d_real)
            finally:
                self.disc.requires_grad_(True)
            loss = loss + lam["gen"] * adv + lam["feat"] * feat
            logs.update(gen=adv.item(), feat=feat.item())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        logs["grad_g"] = float(nn.utils.clip_grad_norm_(self.gen.parameters(), CLIP_GEN))
        self.opt_g.step()
        if self.ema is not None:
            self._update_ema()
        self.sched_g.step()
        if use_d:
            self.sched_d.step()
        self.step += 1
        logs.update(step=self.step, loss=loss.item(), mel=mel.item(), **{k: v.item() for k, v in vq.items()})
        return logs

    def state(self):
        return {"step": self.step, "cfg": self.cfg, "gen": self.gen.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "py_rng": random.getstate(), "ema": self.ema}

    def load_state(self, st):
        self.step = st["step"]
        self.gen.load_state_dict(st["gen"])
        self.disc.load_state_dict(st["disc"])
        self.opt_g.load_state_dict(self._regroup_opt_g(st["opt_g"]))
        self.opt_d.load_state_dict(st["opt_d"])
        self._load_sched_g(st["sched_g"])
        self.sched_d.load_state_dict(st["sched_d"])
        if st.get("ema") is not None and self.ema is not None:
            self.ema = [e.clone() for e in st["ema"]]
        else:  # a state saved before the average was kept: it starts here
            self.reset_ema()
        self.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])

    def _regroup_opt_g(self, sd):
        """A generator optimiser state saved before the codebooks had their own group (one group, the
        generator's parameters in ``named_parameters`` order) → the current two groups, each parameter's
        moments kept; a current state is returned as it is."""
        if len(sd["param_groups"]) == len(self.opt_g.param_groups):
            return sd
        if len(sd["param_groups"]) != 1:
            raise SystemExit(f"generator optimiser state has {len(sd['param_groups'])} parameter groups")
        position = {id(p): i for i, p in enumerate(p for g in self.opt_g.param_groups for p in g["params"])}
        old_order = list(self.gen.parameters())
        old = sd["param_groups"][0]
        groups = []
        for g in self.opt_g.state_dict()["param_groups"]:
            scale = g["initial_lr"] / self.cfg["lr"]
            groups.append(old | {"params": g["params"], "lr": old["lr"] * scale,
                                 "initial_lr": old["initial_lr"] * scale})
        return {"state": {position[id(old_order[int(i)])]: s for i, s in sd["state"].items()},
                "param_groups": groups}

    def _load_sched_g(self, sd):
        if len(sd["base_lrs"]) == len(self.opt_g.param_groups):
            self.sched_g.load_state_dict(sd)
        else:  # regrouped: the learning rates follow from the step
            _schedule_to(self.sched_g, sd["last_epoch"])

    def save(self, path):
        with atomic_output(path) as tmp:
            torch.save(self.state(), tmp)

    def export(self, path):
        """The generator in the official checkpoint layout (no optimiser state), and beside it the
        compact training state (:meth:`compact_state`) that lets a fresh clone continue the run, and
        the averaged weights (:func:`ema_path`) where the configuration keeps an average."""
        ck = self.gen.checkpoint()
        ck["metadata"]["dacli"] = {"step": self.step}
        files = [(ck, Path(path)), (self.compact_state(ck["state_dict"]), resume_path(path))]
        if self.ema is not None:
            with self.averaged() as gen:
                avg = gen.checkpoint()
            avg["metadata"]["dacli"] = {"step": self.step, "ema": self.ema_decay}
            files.append((avg, ema_path(path)))
        for obj, dst in files:
            with atomic_output(dst) as tmp:
                torch.save(obj, tmp)


def promote(src, weights_dir, head_commit):
    """Make the exported weights ``src`` the next version of the bundled model: written (generator only,
    official layout, its version name in ``metadata["dacli"]["version"]``) over the bundled file in
    ``weights_dir``, and appended to ``weights_dir/VERSIONS.json``. ``head_commit``: the commit that
    carries the version being replaced (recorded for it when it has none yet). Returns the new version."""
    from .registry import DEFAULT_MODEL
    weights_dir = Path(weights_dir)
    table_path = weights_dir / "VERSIONS.json"
    table = json.loads(table_path.read_text())
    dst = weights_dir / table["file"]
    sha = load_checkpoint(src).weights_hash
    versions = table["versions"]
    if any(v["sha256"] == sha for v in versions):
        raise SystemExit(f"{src}: these weights already are {next(v['version'] for v in versions if v['sha256'] == sha)}")
    if versions and versions[-1]["commit"] is None:
        versions[-1]["commit"] = head_commit
    name = f"{DEFAULT_MODEL}-v{len(versions) + 1}"
    ck = torch.load(src, map_location="cpu", weights_only=True)
    ck["metadata"].setdefault("dacli", {})["version"] = name
    versions.append({"version": name, "step": int(ck["metadata"]["dacli"].get("step", 0)), "sha256": sha,
                     "commit": None})
    for obj, path, save in ((ck, dst, torch.save),
                            (table, table_path, lambda o, f: Path(f).write_text(json.dumps(o, indent=1) + "\n"))):
        with atomic_output(path) as tmp:
            save(obj, tmp)
    return name


def _head_carrying(path):
    """The commit at HEAD, after checking that it carries ``path`` as it is on disk."""
    import subprocess
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True)
    if git("diff", "--quiet", "HEAD", "--", str(path)).returncode != 0:
        raise SystemExit(f"{path} differs from HEAD's: commit it (or check it out) before promoting")
    return git("rev-parse", "HEAD").stdout.strip()


def _schedule_to(sched, step):
    """Put an exponential schedule and its optimiser's learning rates where they are after ``step``
    steps from each group's initial rate."""
    lrs = [g["initial_lr"] * sched.gamma ** step for g in sched.optimizer.param_groups]
    for g, lr in zip(sched.optimizer.param_groups, lrs):
        g["lr"] = lr
    sched.load_state_dict(sched.state_dict() | {"last_epoch": step, "_last_lr": lrs,
                                                "base_lrs": [g["initial_lr"] for g in sched.optimizer.param_groups]})


def _step_of(weights_path):
    meta = torch.load(weights_path, map_location="cpu", weights_only=True)["metadata"]
    return int(meta.get("dacli", {}).get("step", 0))


def resume_path(weights_path):
    """Where the compact training state of a weights file lives: ``NAME.pth`` → ``NAME.train.pt``."""
    return Path(weights_path).with_suffix(".train.pt")


def ema_path(weights_path):
    """Where the averaged weights exported with a weights file live: ``NAME.pth`` → ``NAME.ema.pth``."""
    return Path(weights_path).with_suffix(".ema.pth")


@torch.no_grad()
def validate(gen, batch):
    """Mean mel distance of full-rate reconstructions of a fixed batch (eval mode)."""
    gen.eval()
    batch = batch.to(gen.device)
    y = gen(batch)["audio"]
    return float(mel_distance(y[:, 0], batch[:, 0], gen.sample_rate))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="folder of training audio")
    ap.add_argument("--run", help="run folder (state, log, exported weights)")
    ap.add_argument("--promote", metavar="WEIGHTS",
                    help="instead of training: make these exported weights the next bundled version")
    ap.add_argument("--config", default="bundled", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=10 ** 9, help="stop after this many total steps")
    ap.add_argument("--hours", type=float, default=None, help="stop after this much wall time")
    ap.add_argument("--init", help="start the generator from these weights (fresh optimisers)")
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--export-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                    help="bf16 autocast for the convolutions; auto: bf16 where the CPU computes it natively")
    args = ap.parse_args(argv)
    if args.promote:
        from .registry import WEIGHTS_DIR
        table = json.loads((WEIGHTS_DIR / "VERSIONS.json").read_text())
        name = promote(args.promote, WEIGHTS_DIR, _head_carrying(WEIGHTS_DIR / table["file"]))
        print(f"{WEIGHTS_DIR / table['file']} is now {name}; update the model card and commit both files")
        return 0
    if not (args.data and args.run):
        ap.error("--data and --run are required to train")
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(CONFIGS[args.config], precision=args.precision)
    state_path = run / "state.pt"
    if state_path.exists():
        trainer.load_state(torch.load(state_path, weights_only=False))
        print(f"resumed at step {trainer.step}", flush=True)
    elif args.init:
        init = args.init
        latest = run / "weights_latest.pth"  # this run's last export, if it got further than --init
        if latest.exists() and resume_path(latest).exists() and _step_of(latest) > _step_of(init):
            init = latest
        print(trainer.init_generator(init), flush=True)
    corpus = TrainingAudio(args.data, trainer.gen.sample_rate, quiet_share=trainer.cfg.get("quiet_share", 0.0))
    print(f"corpus: {len(corpus.clips)} files, {corpus.seconds / 60:.1f} min; "
          f"generator {sum(p.numel() for p in trainer.gen.parameters()) / 1e6:.2f} M params, "
          f"discriminator {sum(p.numel() for p in trainer.disc.parameters()) / 1e6:.2f} M; "
          f"{trainer.precision}, "
          f"Snake {'fused' if any(isinstance(m, FusedSnake1d) for m in trainer.gen.modules()) else 'autograd'}, "
          f"{'channels-last' if trainer.channels_last else 'channels-first'}"
          + (f", weights averaged (decay {trainer.ema_decay})" if trainer.ema is not None else ""),
          flush=True)
    val = corpus.batch(np.random.default_rng(12345), 16, trainer.n, quiet_share=0.0)
    t0, deadline = time.time(), time.time() + 3600 * args.hours if args.hours else None
    stop = []  # SIGTERM / SIGINT: finish the step, then save and export as at the end of a run
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _loop(args, trainer, corpus, val, run, state_path, t0, deadline, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    trainer.save(state_path)
    trainer.export(run / "weights_latest.pth")
    print(f"stopped at step {trainer.step}; state saved, weights exported", flush=True)
    return 0


def _loop(args, trainer, corpus, val, run, state_path, t0, deadline, stop):
    with open(run / "log.jsonl", "a") as log:
        while trainer.step < args.steps and (deadline is None or time.time() < deadline) and not stop:
            ts = time.time()
            logs = trainer.train_step(corpus.batch(trainer.rng, trainer.cfg["batch"], trainer.n))
            logs["sec"] = round(time.time() - ts, 3)
            if trainer.step % args.log_every == 0:
                log.write(json.dumps(logs) + "\n")
                log.flush()
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()),
                      flush=True)
            if trainer.step % args.save_every == 0:
                trainer.save(state_path)
            if trainer.step % args.export_every == 0:
                rec = {"step": trainer.step, "val_mel": validate(trainer.gen, val)}
                if trainer.ema is not None:
                    with trainer.averaged() as gen:
                        rec["val_mel_ema"] = validate(gen, val)
                log.write(json.dumps(rec | {"hours": (time.time() - t0) / 3600}) + "\n")
                trainer.export(run / "weights_latest.pth")
                print(f"step {trainer.step}: validation mel distance {rec['val_mel']:.4f}"
                      + (f", averaged weights {rec['val_mel_ema']:.4f}" if "val_mel_ema" in rec else ""), flush=True)


if __name__ == "__main__":
    sys.exit(main())
