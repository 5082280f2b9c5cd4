"""The trainer: the generator (:class:`dacli.model.DAC`), the discriminators, their optimisers and
schedules, the moving average of the generator's weights, and one optimisation step of the recipe
(AdamW, betas 0.8/0.99, exponential learning-rate decay per step; losses: mel distance, least-squares
GAN, feature matching, codebook and commitment). Saving, resuming and exporting: :mod:`.state`."""

import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DacliError
from ..metrics import mel_distance
from ..model import DAC
from ..runtime.engine import mixed_split
from ..runtime.hardware import PRECISIONS, native_bf16
from ..runtime.snake import FusedSnake1d, fuse_snakes, kernel_available
from ..runtime.training import channels_last_training, from_channels_last, to_channels_last
from .config import CLIP_DISC, CLIP_GEN
from .discriminators import Discriminator
from .losses import discriminator_loss, generator_losses


def resolve_training_precision(precision: str) -> str:
    """"bf16" (autocast on the CPU) where the CPU computes bfloat16 natively, else "fp32"."""
    if precision == "auto":
        return "bf16" if native_bf16("cpu") else "fp32"
    if precision not in PRECISIONS:
        raise DacliError(f"precision must be auto, {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


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
        than two over B (the discriminator step: 0.69 → 0.64 s, 2-core Xeon)."""
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


@torch.no_grad()
def validate(gen, batch):
    """Mean mel distance of full-rate reconstructions of a fixed batch (eval mode)."""
    gen.eval()
    batch = batch.to(gen.device)
    y = gen(batch)["audio"]
    return float(mel_distance(y[:, 0], batch[:, 0], gen.sample_rate))
