"""The DAC model (Kumar et al. 2023): encoder, residual vector quantizer, decoder.

Weight-compatible with the official descript-audio-codec checkpoints: module names, parameter
names (old-style weight norm ``weight_g``/``weight_v``) and numerics follow the official 1.0.0
release, so its ``.pth`` files load here and our files load there.

Layout of a checkpoint (``torch.save`` of a plain dict)::

    {"state_dict": {name: tensor}, "metadata": {"kwargs": {constructor arguments}}}

For inference the weight norm is folded into plain conv weights at load (``fold_weight_norm``);
for training it stays as ``g · v / ‖v‖`` so that the training code optimises g and v as the paper
does.
"""

import hashlib
import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .container import codebooks_for_kbps
from .errors import DacliError

# Constructor kwargs of the four released models (as their checkpoints' metadata['kwargs'] record them);
# the checkpoint's own kwargs win.
PRESETS = {
    "44khz-8kbps": dict(encoder_dim=64, encoder_rates=[2, 4, 8, 8], latent_dim=1024, decoder_dim=1536,
                        decoder_rates=[8, 8, 4, 2], n_codebooks=9, codebook_size=1024, codebook_dim=8,
                        sample_rate=44100),
    "44khz-16kbps": dict(encoder_dim=64, encoder_rates=[2, 4, 8, 8], latent_dim=128, decoder_dim=1536,
                         decoder_rates=[8, 8, 4, 2], n_codebooks=18, codebook_size=1024, codebook_dim=8,
                         sample_rate=44100),
    "24khz": dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], latent_dim=1024, decoder_dim=1536,
                  decoder_rates=[8, 5, 4, 2], n_codebooks=32, codebook_size=1024, codebook_dim=8,
                  sample_rate=24000),
    "16khz": dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], latent_dim=1024, decoder_dim=1536,
                  decoder_rates=[8, 5, 4, 2], n_codebooks=12, codebook_size=1024, codebook_dim=8,
                  sample_rate=16000),
}

KWARGS = ("encoder_dim", "encoder_rates", "latent_dim", "decoder_dim", "decoder_rates", "n_codebooks",
          "codebook_size", "codebook_dim", "quantizer_dropout", "sample_rate")


# --------------------------------------------------------------------------------------------------
# Building blocks


class _WeightNormConv(nn.Module):
    """A convolution whose weight is ``g · v / ‖v‖`` (norm over all dims but 0), or a plain
    ``weight`` once :meth:`fold` has been called. Parameter names match ``torch.nn.utils.weight_norm``."""

    transposed = False

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        shape = (in_ch, out_ch, kernel_size) if self.transposed else (out_ch, in_ch, kernel_size)
        v = torch.empty(shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # torch's default conv init, as the official model has
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.kernel_size, self.default_padding = kernel_size, padding

    @property
    def folded(self):
        return "weight" in self._parameters

    def weight_now(self):
        if self.folded:
            return self.weight
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    @torch.no_grad()
    def fold(self):
        """Replace g and v by the plain weight they define (for inference)."""
        if self.folded:
            return
        w = self.weight_now().detach().clone()
        if not self.transposed:  # store it so that the channels-last 4-D view is free (one copy in memory)
            w = w[:, :, None].contiguous(memory_format=torch.channels_last)[:, :, 0]
        del self.weight_g, self.weight_v
        self.weight = nn.Parameter(w, requires_grad=False)
        self._fast_cache = {}

    def fast_params(self, like):
        """(weight, bias) for the inference path on 4-D channels-last activations like ``like``,
        cached per dtype and device (the weight norm must be folded).
        On the CPU, oneDNN reorders a plain weight into its blocked layout on every call, and the
        layout depends on the input shape. In bfloat16, once two calls in a row have the same shape
        (the steady windows of a file), the weight is also kept packed for that shape: 3-5 % off a
        decode, 1-3 % off an encode (2 cores, measured). Other shapes (first and last windows) use the
        plain weight, since one packed for another shape may be reordered very slowly (90 ms for a
        768-channel layer). In float32 the gain was 1 % and the packed copy added 10-15 % to the peak
        memory, so it is not kept."""
        key = (like.dtype, like.device)
        if key not in self._fast_cache:
            w, b = self.fast_weight(self.weight.detach()), self.bias.detach()
            if self.transposed:
                b = b.repeat(self.stride)  # one bias per (phase, channel), see WNConvTranspose1d
            w = w.to(like.device, like.dtype).contiguous(memory_format=torch.channels_last)
            self._fast_cache[key] = {"plain": w, "bias": b.to(like.device, like.dtype), "last": None,
                                     "packed": None, "packed_for": None}
        entry = self._fast_cache[key]
        shape = tuple(like.shape)
        if entry["packed_for"] == shape:
            return entry["packed"], entry["bias"]
        if shape == entry["last"] and like.dtype == torch.bfloat16 and _MKLDNN_CONV is not None \
                and like.device.type == "cpu":
            entry["packed"] = None  # free the old copy first
            entry["packed"] = _packed(entry["plain"], self.conv_args(), shape)
            entry["packed_for"] = shape
            return entry["packed"], entry["bias"]
        entry["last"] = shape
        return entry["plain"], entry["bias"]

    def conv_args(self):
        """(stride, padding, dilation) of the 2-D convolution the inference path runs."""
        if self.transposed:
            return 1, 1, 1
        return self.stride, self.padding, self.dilation

    def extra_repr(self):
        w = self.weight if self.folded else self.weight_v
        return f"{tuple(w.shape)}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


# oneDNN's fused convolution (as torch's own compiler uses it): conv + a tensor added in the same pass
_MKLDNN_CONV = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None


def _packed(w, conv_args, input_shape):
    """A (out, in, 1, k) weight in oneDNN's blocked layout for a convolution with these (stride,
    padding, dilation) of inputs of this shape, or ``w`` itself where torch cannot pack it."""
    stride, padding, dilation = conv_args
    try:
        return torch._C._nn.mkldnn_reorder_conv2d_weight(w.contiguous().to_mkldnn(), [0, padding], [1, stride],
                                                         [1, dilation], 1, list(input_shape))
    except (AttributeError, RuntimeError, NotImplementedError):
        return w


def _conv4d(x, w, b, stride, padding, dilation, add=None):
    """2-D convolution of a (B, C, 1, L) channels-last tensor, plus ``add`` if given. On the CPU with
    oneDNN the addition happens inside the convolution (no extra tensor, no extra pass); where that
    internal op refuses (another build of torch), plain conv2d takes over for good. ``w`` may be
    packed by :func:`_packed`."""
    global _MKLDNN_CONV
    if _MKLDNN_CONV is not None and x.device.type == "cpu":
        args = ([0, padding], [1, stride], [1, dilation], 1)
        try:
            if add is None:
                return _MKLDNN_CONV(x, w, b, *args, "none", [], None)
            return _MKLDNN_CONV(x, add, w, b, *args, "add", 1.0, None, [], None)
        except (RuntimeError, NotImplementedError):
            _MKLDNN_CONV = None
    if w.is_mkldnn:
        w = w.to_dense()
    y = F.conv2d(x, w, b, (1, stride), (0, padding), (1, dilation))
    return y if add is None else y.add_(add)


class WNConv1d(_WeightNormConv):
    """Conv1d with weight norm. Inference with folded weights runs on (B, C, 1, L) channels-last
    tensors as a 2-D convolution: oneDNN is 15-40 % faster in that layout on CPUs."""

    @staticmethod
    def fast_weight(w):
        return w[:, :, None]

    def forward(self, x, add=None):
        if x.dim() == 4:
            w, b = self.fast_params(x)
            return _conv4d(x, w, b, *self.conv_args(), add)
        y = F.conv1d(x, self.weight_now(), self.bias, self.stride, self.padding, self.dilation)
        return y if add is None else y + add


class WNConvTranspose1d(_WeightNormConv):
    """ConvTranspose1d (kernel 2·stride) with weight norm. For inference it is computed as an ordinary
    convolution of kernel 2 whose ``stride × out`` output channels are the output's phases: output
    sample m·s + r − p is Σ_c x[c, m]·W[c, :, r] + x[c, m−1]·W[c, :, r+s]. In channels-last layout
    the phases interleave by a mere view, and the ordinary convolution is several times faster than
    oneDNN's transposed one."""

    transposed = True

    def fast_weight(self, w):
        s = self.stride
        cin, cout, k = w.shape
        assert k == 2 * s and self.dilation == 1
        taps = torch.stack([w[:, :, s:], w[:, :, :s]], -1)        # (in, out, r, tap): tap 0 = x[m-1]
        return taps.permute(2, 1, 0, 3).reshape(s * cout, cin, 1, 2)  # channel index r·out + o

    def forward(self, x):
        if x.dim() == 4:
            w, b = self.fast_params(x)
            s, n, length = self.stride, x.shape[0], x.shape[-1]
            y = _conv4d(x, w, b, *self.conv_args())                     # (N, s·out, 1, L+1), channels-last
            out = w.shape[0] // s
            y = y.permute(0, 2, 3, 1).reshape(n, 1, (length + 1) * s, out).permute(0, 3, 1, 2)
            return y[..., self.padding:(length + 1) * s - self.padding]
        return F.conv_transpose1d(x, self.weight_now(), self.bias, self.stride, self.padding, 0, 1,
                                  self.dilation)


def snake(x, alpha):
    """Snake activation: x + sin²(αx)/α, with the official 1e-9 guard."""
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


try:  # the fused kernel of _snake.c; absent where dacli was installed without a C compiler
    from . import _snake as _fused_snake
except ImportError:
    _fused_snake = None


def _kernel_alpha(alpha):
    """What the C kernel takes for α: its C values as float32 and 1/(α + 1e-9), the guard of
    :func:`snake`."""
    alpha = alpha.detach().reshape(-1).float().contiguous()
    return alpha, (alpha + 1e-9).reciprocal()


def snake_fused(x, alpha, out=None, threads=None):
    """Snake by the C kernel: ``x`` a float32 or bfloat16 (B, C, 1, L) channels-last CPU tensor,
    ``alpha`` its C values; the result goes into ``out`` (a new tensor by default; ``x`` itself for in
    place). The tensors whose bare addresses the kernel takes are held here until it returns."""
    out = torch.empty_like(x) if out is None else out
    if x.dtype not in (torch.float32, torch.bfloat16) or out.dtype != x.dtype or out.shape != x.shape or \
            not (x.is_contiguous(memory_format=torch.channels_last) and out.is_contiguous(memory_format=torch.channels_last)):
        raise TypeError("snake_fused: x and out must be channels-last float32 or bfloat16 tensors of one shape")
    alpha, inv = _kernel_alpha(alpha)
    channels = x.shape[1]
    if threads is None:
        threads = torch.get_num_threads() if x.numel() >= 1 << 16 else 1
    _fused_snake.snake(x.data_ptr(), out.data_ptr(), alpha.data_ptr(), inv.data_ptr(), x.numel() // channels,
                       channels, threads, x.dtype == torch.bfloat16)
    return out


class _TrainableSnake(torch.autograd.Function):
    """Snake's forward and backward by the C kernel (float32, (B, C, L) contiguous): two passes over
    memory instead of autograd's dozen, and only the input kept for the backward."""

    @staticmethod
    def forward(ctx, x, alpha):
        x = x.contiguous()
        alpha, inv = _kernel_alpha(alpha)
        y = torch.empty_like(x)
        batch, channels, length = x.shape
        _fused_snake.train_forward(x.data_ptr(), y.data_ptr(), alpha.data_ptr(), inv.data_ptr(), batch * channels,
                                   length, channels, torch.get_num_threads())
        ctx.save_for_backward(x, alpha, inv)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, alpha, inv = ctx.saved_tensors
        grad = grad.contiguous()
        batch, channels, length = x.shape
        grad_x = torch.empty_like(x)
        grad_rows = torch.empty(batch, channels, dtype=torch.float32)  # ∂L/∂α per (item, channel)
        _fused_snake.train_backward(x.data_ptr(), grad.data_ptr(), grad_x.data_ptr(), grad_rows.data_ptr(),
                                    alpha.data_ptr(), inv.data_ptr(), batch * channels, length, channels,
                                    torch.get_num_threads())
        return grad_x, grad_rows.sum(0).view(1, -1, 1)


def snake_trainable(x, alpha):
    """:func:`snake` with the C kernel's forward and backward where it applies (float32 (B, C, L) CPU
    tensors, ``alpha`` (1, C, 1)); the same values and gradients to float32 rounding. Elsewhere (no
    compiler at install, bf16 under autocast, CUDA) it is :func:`snake`."""
    if _fused_snake is None or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 3 or \
            alpha.dtype != torch.float32 or alpha.shape != (1, x.shape[1], 1):
        return snake(x, alpha)
    return _TrainableSnake.apply(x, alpha)


class Snake1d(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x):
        if torch.is_grad_enabled() and (x.requires_grad or self.alpha.requires_grad):
            return snake(x, self.alpha)
        if _fused_snake is not None and x.device.type == "cpu" and x.dim() == 4 and \
                x.dtype in (torch.float32, torch.bfloat16):
            # (B, C, 1, L) channels-last: B·L rows of C values in one pass. Alone ~4x faster than the
            # five passes below in float32 and ~2.5x in bfloat16; end to end 10-20 % off an encode or
            # decode (2 cores, measured, with GOMP_SPINCOUNT as dacli/__init__.py sets it).
            # The encoder's first convolution (one input channel) hands over channels-first.
            return snake_fused(x.contiguous(memory_format=torch.channels_last), self.alpha)
        # inference: the same formula in one new tensor, updated in place (3x less memory traffic)
        alpha = self.alpha.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        y = x * alpha
        y.sin_().square_().mul_((alpha + 1e-9).reciprocal())
        return y.add_(x)


class ResidualUnit(nn.Module):
    """Snake → dilated conv k7 → Snake → conv k1, plus the skip path."""

    def __init__(self, dim, dilation=1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim), WNConv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim), WNConv1d(dim, dim, 1))

    def forward(self, x):
        snake1, conv7, snake2, conv1 = self.block
        y = snake2(conv7(snake1(x)))
        crop = (x.shape[-1] - y.shape[-1]) // 2  # 'valid' convolutions (legacy files) shorten y
        if crop > 0:
            x = x[..., crop:-crop]
        return conv1(y, add=x)  # the skip path is added inside the last convolution


class EncoderBlock(nn.Module):
    def __init__(self, dim, stride):
        super().__init__()
        self.block = nn.Sequential(
            ResidualUnit(dim // 2, 1), ResidualUnit(dim // 2, 3), ResidualUnit(dim // 2, 9),
            Snake1d(dim // 2),
            WNConv1d(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x):
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, d_model, strides, d_latent):
        super().__init__()
        layers = [WNConv1d(1, d_model, 7, padding=3)]
        for stride in strides:
            d_model *= 2
            layers.append(EncoderBlock(d_model, stride))
        layers += [Snake1d(d_model), WNConv1d(d_model, d_latent, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class DecoderBlock(nn.Module):
    def __init__(self, in_dim, out_dim, stride):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_dim),
            WNConvTranspose1d(in_dim, out_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
            ResidualUnit(out_dim, 1), ResidualUnit(out_dim, 3), ResidualUnit(out_dim, 9))

    def forward(self, x):
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, d_latent, channels, rates):
        super().__init__()
        layers = [WNConv1d(d_latent, channels, 7, padding=3)]
        for i, stride in enumerate(rates):
            layers.append(DecoderBlock(channels // 2 ** i, channels // 2 ** (i + 1), stride))
        out_dim = channels // 2 ** len(rates)
        layers += [Snake1d(out_dim), WNConv1d(out_dim, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)

    def cropped(self, x, keep):
        """Decode (B, latent, T) when only output samples [lo·hop, hi·hop) are wanted, ``keep = (lo, hi)``
        in frames. After each layer the activations are cropped to the wanted region plus the reach of
        the layers still to come, so a window's context is carried only as far as it matters (most of
        the decoder's reach is in its first, low-rate layers). Returns (audio, index of its first sample)."""
        lo, hi = keep
        start, rate = 0, 1  # index of x[..., 0], in samples at the current layer's rate; samples per frame
        for layer, margin in zip(self.model, self.margins()):
            x = layer(x)
            if isinstance(layer, DecoderBlock):
                up = layer.block[1].stride
                start, rate = start * up, rate * up
            a = max(start, lo * rate - margin)
            b = min(start + x.shape[-1], hi * rate + margin)
            if a > start or b < start + x.shape[-1]:
                x = x[..., a - start:b - start]
                start = a
        return x, start

    def margins(self):
        """For each top-level layer: samples (at its output rate) that the layers after it reach on
        either side — half their receptive field, rounded up, plus one."""
        if getattr(self, "_margins", None) is None:
            layers, out = list(self.model), []
            for i in range(len(layers)):
                span, scale = 0.0, 1
                for conv in (m for later in layers[i + 1:] for m in later.modules()
                             if isinstance(m, _WeightNormConv)):
                    if conv.transposed:
                        span += 1 / scale  # each output phase reads two neighbouring inputs
                        scale *= conv.stride
                    else:
                        span += (conv.kernel_size - 1) * conv.dilation / 2 / scale
                out.append(math.ceil(span) + 1)
            self._margins = out
        return self._margins


# --------------------------------------------------------------------------------------------------
# Quantizer


class VectorQuantize(nn.Module):
    """One RVQ stage: project to a low-dimensional space, pick the codebook row of highest cosine
    similarity, project back (factorised, L2-normalised codes, as in the paper)."""

    def __init__(self, input_dim, codebook_size, codebook_dim):
        super().__init__()
        self.in_proj = WNConv1d(input_dim, codebook_dim, 1)
        self.out_proj = WNConv1d(codebook_dim, input_dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def lookup(self, z_e):
        """(B, D, T) projected latents → (B, T) indices of the nearest codebook rows."""
        b = z_e.shape[0]
        enc = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]))
        book = F.normalize(self.codebook.weight)
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ book.t() + book.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1)[1].reshape(b, -1)

    def embed(self, indices):
        """(B, T) indices → (B, D, T) raw (un-normalised) codebook vectors."""
        return F.embedding(indices, self.codebook.weight).transpose(1, 2)

    def forward(self, z):
        z_e = self.in_proj(z)
        indices = self.lookup(z_e)
        z_q = self.embed(indices)
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="none").mean([1, 2])
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean([1, 2])
        z_q = z_e + (z_q - z_e).detach()  # straight-through; kept in eval too, for exact parity
        return self.out_proj(z_q), commitment, codebook, indices, z_e


class ResidualVectorQuantize(nn.Module):
    """N VectorQuantize stages, each coding the residual of the ones before. In training, a
    ``quantizer_dropout`` fraction of the batch uses a random number of stages."""

    def __init__(self, input_dim, n_codebooks, codebook_size, codebook_dim, quantizer_dropout=0.0):
        super().__init__()
        dims = codebook_dim if isinstance(codebook_dim, (list, tuple)) else [codebook_dim] * n_codebooks
        self.n_codebooks = n_codebooks
        self.quantizer_dropout = float(quantizer_dropout)
        self.quantizers = nn.ModuleList(VectorQuantize(input_dim, codebook_size, d) for d in dims)

    def forward(self, z, n_quantizers=None):
        """Returns (z_q, codes (B, n, T), latents, commitment loss, codebook loss)."""
        b = z.shape[0]
        n_quantizers = n_quantizers or self.n_codebooks
        if self.training:
            n_q = torch.full((b,), self.n_codebooks + 1, device=z.device)
            n_drop = int(b * self.quantizer_dropout)
            n_q[:n_drop] = torch.randint(1, self.n_codebooks + 1, (n_drop,), device=z.device)
        z_q, residual = 0, z
        commitment = codebook = torch.zeros((), device=z.device)
        codes, latents = [], []
        for i, q in enumerate(self.quantizers):
            if not self.training and i >= n_quantizers:
                break
            z_q_i, commit_i, book_i, idx_i, z_e_i = q(residual)
            if self.training:
                mask = (i < n_q).to(z.dtype)
                z_q = z_q + z_q_i * mask[:, None, None]
                commitment = commitment + (commit_i * mask).mean()
                codebook = codebook + (book_i * mask).mean()
            else:
                z_q = z_q + z_q_i
            residual = residual - z_q_i
            codes.append(idx_i)
            latents.append(z_e_i)
        return z_q, torch.stack(codes, 1), torch.cat(latents, 1), commitment, codebook

    def from_codes(self, codes):
        """(B, K, T) codes, K ≤ n_codebooks → (B, latent, T) quantized latent."""
        stages = self.quantizers[:codes.shape[1]]
        if not torch.is_grad_enabled() and all(q.out_proj.folded for q in stages):
            # inference: the K codebook vectors of a frame side by side, times the K projections side
            # by side, in one matrix product (K 1x1 convolutions of a transposed view took torch's slow path)
            vectors = torch.cat([F.embedding(codes[:, i], q.codebook.weight) for i, q in enumerate(stages)], -1)
            weight = torch.cat([q.out_proj.weight[:, :, 0] for q in stages], 1)
            bias = torch.stack([q.out_proj.bias for q in stages]).sum(0)
            return torch.addmm(bias, vectors.flatten(0, 1), weight.t()).view(*vectors.shape[:2], -1).transpose(1, 2)
        z_q = 0
        for i, q in enumerate(stages):
            z_q = z_q + q.out_proj(q.embed(codes[:, i]))
        return z_q


# --------------------------------------------------------------------------------------------------
# The codec


class DAC(nn.Module):
    """The Descript Audio Codec. Constructor arguments are those stored in official checkpoints."""

    def __init__(self, encoder_dim=64, encoder_rates=(2, 4, 8, 8), latent_dim=None, decoder_dim=1536,
                 decoder_rates=(8, 8, 4, 2), n_codebooks=9, codebook_size=1024, codebook_dim=8,
                 quantizer_dropout=False, sample_rate=44100):
        super().__init__()
        if latent_dim is None:
            latent_dim = encoder_dim * 2 ** len(encoder_rates)
        self.kwargs = dict(encoder_dim=encoder_dim, encoder_rates=list(encoder_rates), latent_dim=latent_dim,
                           decoder_dim=decoder_dim, decoder_rates=list(decoder_rates), n_codebooks=n_codebooks,
                           codebook_size=codebook_size, codebook_dim=codebook_dim,
                           quantizer_dropout=quantizer_dropout, sample_rate=sample_rate)
        self.sample_rate = sample_rate
        self.hop_length = int(np.prod(encoder_rates))
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.encoder = Encoder(encoder_dim, encoder_rates, latent_dim)
        self.quantizer = ResidualVectorQuantize(latent_dim, n_codebooks, codebook_size, codebook_dim,
                                                quantizer_dropout)
        self.decoder = Decoder(latent_dim, decoder_dim, decoder_rates)
        self.precision = "fp32"   # or "bf16": encoder and decoder run in bfloat16 (quantizer in float32)
        self.name = None          # preset name or file name, set by the loader
        self.weights_hash = None  # sha256 of the checkpoint weights, set by the loader

    # ---- rates ------------------------------------------------------------------------------------
    @property
    def frame_rate(self):
        """Code frames per second, as an exact fraction (sample_rate / hop)."""
        return Fraction(self.sample_rate, self.hop_length)

    @property
    def bits_per_code(self):
        return math.log2(self.codebook_size)

    def kbps(self, n_codebooks=None):
        """Exact bitrate in kbps for ``n_codebooks`` (all by default)."""
        return float(self.frame_rate) * self.bits_per_code * (n_codebooks or self.n_codebooks) / 1000

    def n_codebooks_for_kbps(self, kbps):
        """The largest codebook count whose exact bitrate does not exceed ``kbps`` (at least 1)."""
        return codebooks_for_kbps(kbps, self.kbps(1), self.n_codebooks)

    @property
    def device(self):
        return next(self.parameters()).device

    # ---- training-style forward -------------------------------------------------------------------
    def forward(self, audio, n_quantizers=None):
        """(B, 1, L) audio at the model rate, L a multiple of hop → dict of the reconstruction,
        codes and the VQ losses (used for training)."""
        z = self.encoder(audio)
        z_q, codes, latents, commitment, codebook = self.quantizer(z, n_quantizers)
        return {"audio": self.decoder(z_q), "codes": codes, "latents": latents,
                "vq/commitment_loss": commitment, "vq/codebook_loss": codebook}

    # ---- inference API ----------------------------------------------------------------------------
    def _check_n(self, n_codebooks):
        if n_codebooks is None:
            return self.n_codebooks
        if not 1 <= int(n_codebooks) <= self.n_codebooks:
            raise DacliError(f"n_codebooks must be 1..{self.n_codebooks}, got {n_codebooks}")
        return int(n_codebooks)

    @property
    def folded(self):
        return all(m.folded for m in self.modules() if isinstance(m, _WeightNormConv))

    def _fast(self, x):
        """(B, C, L) → the inference layout: (B, C, 1, L) channels-last in the working precision."""
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        return x[:, :, None].to(dtype).contiguous(memory_format=torch.channels_last)

    def encode_frames(self, x, n_codebooks=None):
        """(B, 1, L) tensor on the model's device, L a multiple of hop → (B, n, L/hop) codes.
        One pass with padded convolutions; the quantizer always runs in float32."""
        if self.folded and not torch.is_grad_enabled():
            z = self.encoder(self._fast(x))[:, :, 0].float()
        else:
            z = self.encoder(x)
        return self.quantizer(z, self._check_n(n_codebooks))[1]

    def decode_frames(self, codes, keep=None):
        """(B, n, T) codes on the model's device → (B, 1, L') float32 audio; with ``keep = (lo, hi)``
        only samples [lo·hop, hi·hop) of it (fewer at the end for odd-stride models), computed
        without carrying the unneeded context through the late layers."""
        z = self.quantizer.from_codes(codes)
        fast = self.folded and not torch.is_grad_enabled()
        if fast:
            z = self._fast(z)
        if keep is None:
            y, start = self.decoder(z), 0
        else:
            y, start = self.decoder.cropped(z, keep)
            y = y[..., keep[0] * self.hop_length - start:keep[1] * self.hop_length - start]
        return y[:, :, 0].float() if fast else y

    def encode(self, audio, n_codebooks=None):
        """Audio at the model rate, (channels, samples) or (samples,), array or tensor →
        int64 codes (channels, n_codebooks, ceil(samples/hop)) on the CPU.
        Channels are coded independently. The whole signal goes through in one pass: for long
        files use :mod:`dacli.codec`, which windows it."""
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio) else audio)
        x = x.float().reshape(-1, x.shape[-1])[:, None, :]
        pad = -x.shape[-1] % self.hop_length
        with torch.inference_mode():
            x = F.pad(x.to(self.device), (0, pad))
            return self.encode_frames(x, n_codebooks).cpu()

    def decode(self, codes):
        """Codes (channels, n, frames) → float32 audio (channels, samples) on the CPU, at the model
        rate. 44.1 kHz models give hop·frames samples; models with an odd stride a few fewer."""
        c = torch.as_tensor(np.asarray(codes) if not torch.is_tensor(codes) else codes).long()
        if c.ndim == 2:
            c = c[None]
        if c.shape[1] > self.n_codebooks or c.numel() and (c.min() < 0 or c.max() >= self.codebook_size):
            raise DacliError("codes do not fit this model (codebook count or index out of range)")
        with torch.inference_mode():
            return self.decode_frames(c.to(self.device))[:, 0].float().cpu()

    def set_padding(self, enabled):
        """Switch every conv between its normal zero padding (True) and 'valid' convolution (False),
        as the official tool does for its chunked legacy files."""
        for m in self.modules():
            if isinstance(m, _WeightNormConv):
                m.padding = m.default_padding if enabled else 0
        return self

    # ---- weights ----------------------------------------------------------------------------------
    def fold_weight_norm(self):
        """Fold every weight-normed conv into a plain weight (inference only; not reversible)."""
        for m in self.modules():
            if isinstance(m, _WeightNormConv):
                m.fold()
        return self

    def checkpoint(self):
        """This model in the official checkpoint layout (needs unfolded weight norm)."""
        if any(isinstance(m, _WeightNormConv) and m.folded for m in self.modules()):
            raise ValueError("cannot save a model whose weight norm is folded")
        sd = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        return {"state_dict": sd, "metadata": {"kwargs": dict(self.kwargs)}}


# --------------------------------------------------------------------------------------------------
# Loading


def build(preset_or_kwargs):
    """A freshly initialised DAC from a preset name or a kwargs dict."""
    if isinstance(preset_or_kwargs, str):
        if preset_or_kwargs not in PRESETS:
            raise DacliError(f"unknown preset {preset_or_kwargs!r}; known: {', '.join(PRESETS)}")
        model = DAC(**PRESETS[preset_or_kwargs])
        model.name = preset_or_kwargs
        return model
    return DAC(**preset_or_kwargs)


def _canonical_key(key):
    """Map new-style parametrization names to the old weight-norm names of the official files."""
    key = key.replace(".parametrizations.weight.original0", ".weight_g")
    return key.replace(".parametrizations.weight.original1", ".weight_v")


def weights_hash(state_dict):
    """sha256 over the (canonical) names, shapes and float32 bytes of a state dict, sorted by name."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous().float()
        h.update(f"{k}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _describe(keys, n=4):
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" … (+{len(keys) - n} more)" if len(keys) > n else "")


def read_checkpoint(path):
    """Load and validate a checkpoint file → (kwargs, canonical state dict). Raises DacliError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DacliError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise DacliError(f"{path}: is a directory, not a checkpoint file") from None
    except Exception as e:  # torch raises many types for non-torch or unsafe files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DacliError(f"{path}: not a readable torch checkpoint ({msg[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt["state_dict"], dict):
        raise DacliError(f"{path}: not a DAC checkpoint (expected a dict with 'state_dict' and 'metadata')")
    meta = ckpt.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("kwargs"), dict):
        raise DacliError(f"{path}: checkpoint has no metadata['kwargs'] with the model's constructor arguments")
    kwargs = {k: v for k, v in meta["kwargs"].items() if k in KWARGS}
    sd = {}
    for k, v in ckpt["state_dict"].items():
        if not torch.is_tensor(v):
            raise DacliError(f"{path}: state_dict entry {k!r} is not a tensor")
        sd[_canonical_key(k)] = v
    return kwargs, sd


def load_checkpoint(path, fold=True):
    """Build a DAC from a checkpoint file in the official layout, strictly: missing, unexpected or
    wrongly shaped tensors are refused (the official loader silently ignores them)."""
    kwargs, sd = read_checkpoint(path)
    try:
        with torch.device("meta"):  # no memory for initial weights: the file's tensors are used as they are
            model = DAC(**kwargs)
    except Exception as e:
        raise DacliError(f"{path}: cannot build a model from its kwargs {kwargs} ({e})") from None
    expected = model.state_dict()
    missing, unexpected = expected.keys() - sd.keys(), sd.keys() - expected.keys()
    if missing or unexpected:
        parts = ([f"missing {len(missing)} keys: {_describe(missing)}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} keys: {_describe(unexpected)}"] if unexpected else [])
        raise DacliError(f"{path}: state_dict does not match the model its kwargs describe; " + "; ".join(parts))
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(sd[k].shape)]
    if bad:
        k = bad[0]
        raise DacliError(f"{path}: {len(bad)} tensors have the wrong shape, e.g. {k}: "
                         f"{tuple(sd[k].shape)} in the file, {tuple(expected[k].shape)} expected")
    model.weights_hash = weights_hash(sd)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    del sd
    model.eval()
    if fold:
        model.fold_weight_norm()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
