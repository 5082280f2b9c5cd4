"""The torch modules that :mod:`dacli.export` writes as ONNX graphs, over a plain DAC whose weight norm
is folded (:func:`fold_weight_norm`): the encoder with its quantizer and the decoder with the
quantizer's lookup, each as a step graph (:class:`EncoderStep`, :class:`DecoderStep`) whose state is
explicit inputs and outputs.

**Step graphs.** A push in (audio or codes), what it makes final out, every layer's state of a fixed
shape, so that onnxruntime (:mod:`dacli.onnx_model`) and the page (``web/``) run the same push loop as
torch (:func:`dacli.windows.decode_windows`), many streams to a call. Each convolution of kernel k and
dilation d keeps the last (k − 1)·d of its inputs (zeros at first); a strided one (kernel 2s, stride
s) keeps s or more, as many as put its outputs on whole positions; a transposed one keeps its last
input frame; a residual unit, the inputs still waiting for its block's output. Every layer so gives
one output per input (per s inputs, strided; s per input, transposed), each later than the input it is
centred on: the outputs of a push are those of positions ``position · scale − delay`` on (``delay``
in outputs). Where a one-pass run sees zero padding — before the signal and after its ``frames``
frames — each layer's output is set to zero by its position, so every convolution sees what a one-pass
run shows it; frames pushed after the last (any input: the graph zeroes it) carry the last outputs out.
"""

import copy
from typing import Any, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .model import DAC
from .model.dac import DecoderBlock, EncoderBlock
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


class _Layer:
    """One layer of a chain run push by push: what it is (``kind``: "pointwise", "conv", "strided",
    "transposed", "residual"), the lengths of the states it keeps, and where its output stands:
    ``scale`` samples per frame, ``delay`` samples behind the push's position, a stream of F frames
    ``length[0] · F + length[1]`` samples long."""

    def __init__(self, kind: str, op: Any, before: Any) -> None:
        self.kind, self.op = kind, op
        self.states: List[int] = []
        scale, delay, (a, b) = before.scale, before.delay, before.length
        if kind == "conv":
            self.states = [_reach(op)]
            delay += op.padding[0]
        elif kind == "strided":  # kernel 2s: keeps s or more inputs, so that its outputs fall on whole positions
            s, p = op.stride[0], op.padding[0]
            keep = s + (p - delay - s) % s
            self.states = [keep]
            scale, delay, a, b = scale // s, (delay + keep - p) // s, a // s, (b + 2 * p - op.kernel_size[0]) // s + 1
        elif kind == "transposed":
            s, p = op.stride[0], op.padding[0]
            self.states = [1]
            scale, delay, a, b = scale * s, delay * s + p, a * s, (b - 1) * s - 2 * p + op.kernel_size[0]
        elif kind == "residual":
            self.states = [_reach(op.block[1]), op.block[1].padding[0]]
            delay += op.block[1].padding[0]
        conv = op.block[1] if kind == "residual" else op
        self.channels = [conv.in_channels] * len(self.states) if self.states else []
        self.scale, self.delay, self.length = scale, delay, (a, b)


class _Start:
    def __init__(self, scale: int) -> None:
        self.scale, self.delay, self.length = scale, 0, (scale, 0)


def _reach(conv: Any) -> int:
    return (conv.kernel_size[0] - 1) * conv.dilation[0]


def _kind(op: nn.Module) -> str:
    if isinstance(op, ResidualUnit):
        return "residual"
    if isinstance(op, nn.ConvTranspose1d):
        return "transposed"
    if isinstance(op, nn.Conv1d):
        return "strided" if op.stride[0] > 1 else "conv"
    return "pointwise"


class _Chain(nn.Module):
    """The layers of an encoder or decoder (blocks unrolled) run push by push (module docstring)."""

    def __init__(self, layers: Any, scale: int) -> None:
        super().__init__()
        self.layers_module = layers
        self.layers: List[_Layer] = []
        self.start = _Start(scale)
        before: Any = self.start
        for layer in layers:
            for op in (layer.block if isinstance(layer, (DecoderBlock, EncoderBlock)) else [layer]):
                before = _Layer(_kind(op), op, before)
                self.layers.append(before)
        self.states = [(c, n) for layer in self.layers for c, n in zip(layer.channels, layer.states)]
        self.delay, self.length = before.delay, before.length  # of the output

    def forward(self, x: torch.Tensor, position: torch.Tensor, frames: torch.Tensor, states) -> Tuple[Any, list]:
        state, out = iter(states), []

        def signal(x, at):  # zero outside the layer's signal
            first = (position * at.scale - at.delay).unsqueeze(1)
            pos = first + torch.arange(x.shape[-1], device=x.device)
            inside = (pos >= 0) & (pos < (frames * at.length[0] + at.length[1]).unsqueeze(1))
            return x * inside.unsqueeze(1).to(x.dtype)

        def kept(x, n):  # a state's inputs and the new ones; keeps the last n
            buf = torch.cat([next(state), x], -1)
            out.append(buf[..., buf.shape[-1] - n:])
            return buf

        x = signal(x, self.start)
        for at in self.layers:
            op: Any = at.op
            if at.kind == "pointwise":
                x = op(x)
                continue
            if at.kind == "conv":
                x = F.conv1d(kept(x, at.states[0]), op.weight, op.bias, 1, 0, op.dilation)
            elif at.kind == "strided":
                s = op.stride[0]
                buf = kept(x, at.states[0])
                x = F.conv1d(buf[..., :buf.shape[-1] - at.states[0] + op.kernel_size[0] - s], op.weight, op.bias, s)
            elif at.kind == "transposed":
                s = op.stride[0]
                buf = kept(x, 1)
                x = F.conv_transpose1d(buf, op.weight, op.bias, s)[..., s:buf.shape[-1] * s]
            else:
                snake1, conv7, snake2, conv1 = op.block
                y = conv1(snake2(F.conv1d(kept(snake1(x), at.states[0]), conv7.weight, conv7.bias, 1, 0, conv7.dilation)))
                x = kept(x, at.states[1])[..., :y.shape[-1]] + y
            x = signal(x, at)
        return x, out


class DecoderStep(nn.Module):
    """(codes (B, K, n), position (B,), frames (B,), *states) → (audio (B, 1, n · hop), *states): the
    decoder's step graph (module docstring). ``position``: frames each row pushed before; ``frames``:
    its stream's length in frames, or any larger number while that is not known."""

    def __init__(self, plain: DAC) -> None:
        super().__init__()
        self.latents = Latents(plain)
        self.chain = _Chain(plain.decoder.model, 1)
        self.states, self.delay, self.length = self.chain.states, self.chain.delay, self.chain.length

    def forward(self, codes: torch.Tensor, position: torch.Tensor, frames: torch.Tensor, *states: torch.Tensor):
        x, out = self.chain(self.latents(codes), position, frames, states)
        return (x, *out)

    def initial(self, rows: int) -> List[torch.Tensor]:
        """The states of ``rows`` streams not yet started: zeros."""
        return [torch.zeros(rows, c, n) for c, n in self.states]


class EncoderStep(DecoderStep):
    """(audio (B, 1, n · hop), position (B,), frames (B,), *states) → (codes (B, n_codebooks, n),
    *states): the encoder and quantizer as a step graph, as :class:`DecoderStep` is the decoder's; the
    codes of a push are those of frames ``position − delay`` on (``delay`` in frames)."""

    def __init__(self, plain: DAC) -> None:
        nn.Module.__init__(self)
        self.quantizer = plain.quantizer
        self.chain = _Chain(plain.encoder.block, plain.hop_length)
        self.states, self.delay, self.length = self.chain.states, self.chain.delay, self.chain.length

    def forward(self, audio: torch.Tensor, position: torch.Tensor, frames: torch.Tensor, *states: torch.Tensor):
        z, out = self.chain(audio, position, frames, states)
        return (self.quantizer(z)[1], *out)
