"""The torch modules that :mod:`dacli.export` writes as ONNX graphs, over a plain DAC whose weight norm
is folded (:func:`fold_weight_norm`): the encoder with its quantizer (:class:`EncoderGraph`), and the
decoder as a step graph (:class:`DecoderStep`) whose state is explicit inputs and outputs.

**The decoder's step graph.** A push of codes in, the samples they make final out, every layer's
state of a fixed shape, so that onnxruntime (:mod:`dacli.onnx_model`) and the page (``web/``) decode
by the same push loop as torch (:func:`dacli.windows.decode_windows`), many streams to a call. Each
convolution of kernel k and dilation d keeps the last (k − 1)·d of its inputs (zeros at first), a
transposed convolution its last input frame, a residual unit the inputs still waiting for its
block's output: every layer gives as many outputs as it takes, each later by the layer's padding than
the input it is centred on. A push's first sample is therefore that of position ``position · hop −
delay`` (``delay``: the decoder's reach, in samples). Where a one-pass decode sees zero padding —
before the signal and after its ``frames`` frames — each layer's output is set to zero by its
position, so every convolution sees what a one-pass run shows it; frames pushed after the last (any
codes: their latents are zeroed) carry the last samples out.
"""

import copy
from typing import Any, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .model import DAC
from .model.dac import DecoderBlock
from .model.layers import ResidualUnit, WeightNormConv


def fold_weight_norm(model: DAC) -> DAC:
    """A copy of a plain DAC whose weight-normalised convolutions are ordinary ``nn.Conv1d`` /
    ``nn.ConvTranspose1d`` holding the weight each computes."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, WeightNormConv):
                continue
            w = child.weight().detach().float()
            cls = nn.ConvTranspose1d if child.transposed else nn.Conv1d
            out_ch = w.shape[1] if child.transposed else w.shape[0]
            in_ch = w.shape[0] if child.transposed else w.shape[1]
            conv: Any = cls(in_ch, out_ch, child.kernel_size, stride=child.stride, padding=child.padding,
                            dilation=child.dilation)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(child.bias.detach().float())
            setattr(parent, name, conv)
    return model


class EncoderGraph(nn.Module):
    """audio (B, 1, L) → codes (B, n_codebooks, L / hop): the encoder and every quantizer stage, as
    :meth:`dacli.model.DAC.encode_batch` runs them."""

    def __init__(self, model: DAC) -> None:
        super().__init__()
        self.encoder, self.quantizer = model.encoder, model.quantizer

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(audio))[1]


class Latents(nn.Module):
    """codes (B, K, T), K ≤ n_codebooks → the quantized latents (B, D, T): every stage's codebook and
    1×1 output projection stacked (zero-padded to the widest), the first K taken by the codes' shape."""

    def __init__(self, model: DAC) -> None:
        super().__init__()
        stages: Any = model.quantizer.quantizers
        width = max(q.codebook.weight.shape[1] for q in stages)
        latent = stages[0].out_proj.weight.shape[0]
        self.size = model.codebook_size
        books = torch.zeros(len(stages) * self.size, width)
        proj = torch.zeros(len(stages), latent, width)
        bias = torch.zeros(len(stages), latent)
        for i, q in enumerate(stages):
            d = q.codebook.weight.shape[1]
            books[i * self.size:(i + 1) * self.size, :d] = q.codebook.weight.detach()
            proj[i, :, :d] = q.out_proj.weight.detach()[:, :, 0]
            bias[i] = q.out_proj.bias.detach()
        self.register_buffer("books", books)
        self.register_buffer("proj", proj)
        self.register_buffer("bias", bias)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        k = codes.shape[1]
        stage = torch.arange(k, device=codes.device).reshape(1, -1, 1)
        books: Any = self.books
        proj: Any = self.proj
        bias: Any = self.bias
        emb = F.embedding(codes + stage * self.size, books)  # (B, K, T, width)
        return (torch.einsum("bktd,kod->bkot", emb, proj[:k]) + bias[:k].reshape(1, k, -1, 1)).sum(1)


class DecoderStep(nn.Module):
    """(codes (B, K, n), position (B,), frames (B,), *states) → (audio (B, 1, n · hop), *states): the
    decoder's step graph (module docstring). ``position``: frames each row pushed before; ``frames``:
    its stream's length in frames, or any larger number while that is not known."""

    def __init__(self, plain: DAC) -> None:
        super().__init__()
        self.latents = Latents(plain)
        self.decoder = plain.decoder
        self.ops: List[Tuple[str, Any]] = []
        for layer in plain.decoder.model:
            for op in (layer.block if isinstance(layer, DecoderBlock) else [layer]):
                kind = ("residual" if isinstance(op, ResidualUnit) else "transposed" if isinstance(op, nn.ConvTranspose1d)
                        else "conv" if isinstance(op, nn.Conv1d) else "pointwise")
                self.ops.append((kind, op))
        self.states: List[Tuple[int, int]] = []  # (channels, length) of each state, in order
        rate, self.delay, self.length = 1, 0, (1, 0)  # samples = length[0] · frames + length[1]
        for kind, op in self.ops:
            if kind == "conv":
                self.states.append((op.in_channels, self._reach(op)))
                self.delay += op.padding[0]
            elif kind == "transposed":
                s, p = op.stride[0], op.padding[0]
                self.states.append((op.in_channels, 1))
                self.delay = self.delay * s + p
                a, b = self.length
                self.length, rate = (a * s, (b - 1) * s - 2 * p + op.kernel_size[0]), rate * s
            elif kind == "residual":
                conv = op.block[1]
                self.states += [(conv.in_channels, self._reach(conv)), (conv.in_channels, conv.padding[0])]
                self.delay += conv.padding[0]
        self.hop = rate

    @staticmethod
    def _reach(conv: nn.Conv1d) -> int:
        return (conv.kernel_size[0] - 1) * conv.dilation[0]

    def forward(self, codes: torch.Tensor, position: torch.Tensor, frames: torch.Tensor, *states: torch.Tensor):
        x = self.latents(codes)
        state, out = iter(states), []
        rate, delay, (a, b) = 1, 0, (1, 0)

        def signal(x):  # zero outside the layer's signal: positions 0 … a · frames + b − 1
            at = (position * rate - delay).unsqueeze(1) + torch.cumsum(torch.ones_like(x[0, 0], dtype=torch.long), 0) - 1
            inside = (at >= 0) & (at < (frames * a + b).unsqueeze(1))
            return x * inside.unsqueeze(1).to(x.dtype)

        def conv(c, x):  # 'valid' on its kept inputs and the new ones; keeps the last (k − 1)·d
            buf = torch.cat([next(state), x], -1)
            out.append(buf[..., buf.shape[-1] - self._reach(c):])
            return F.conv1d(buf, c.weight, c.bias, 1, 0, c.dilation)

        x = signal(x)
        for kind, op in self.ops:
            if kind == "pointwise":
                x = op(x)
            elif kind == "conv":
                x = conv(op, x)
                delay += op.padding[0]
                x = signal(x)
            elif kind == "transposed":
                s, p = op.stride[0], op.padding[0]
                buf = torch.cat([next(state), x], -1)
                out.append(buf[..., buf.shape[-1] - 1:])
                x = F.conv_transpose1d(buf, op.weight, op.bias, s)[..., s:buf.shape[-1] * s]
                rate, delay, (a, b) = rate * s, delay * s + p, (a * s, (b - 1) * s - 2 * p + op.kernel_size[0])
                x = signal(x)
            else:
                snake1, conv7, snake2, conv1 = op.block
                y = conv1(snake2(conv(conv7, snake1(x))))
                pending = torch.cat([next(state), x], -1)
                out.append(pending[..., pending.shape[-1] - conv7.padding[0]:])
                delay += conv7.padding[0]
                x = signal(pending[..., :y.shape[-1]] + y)
        return (x, *out)

    def initial(self, rows: int) -> List[torch.Tensor]:
        """The states of ``rows`` streams not yet started: zeros."""
        return [torch.zeros(rows, c, n) for c, n in self.states]
