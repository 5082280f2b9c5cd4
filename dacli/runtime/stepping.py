"""The streamed form of a prepared encoder or decoder (:class:`Steps`): each layer run on the inputs
it has not used yet, so that a push computes exactly the outputs its new inputs make final and every
layer keeps a fixed number of inputs. What streaming knows of the runtime's layers is here, in one
place (:func:`_ops` says which streamed form each layer takes); :mod:`dacli.stream` builds on it.

Encoder and decoder are chains of layers along time: convolutions (zero padding ``p = (k − 1)·d / 2``
on each side, stride 1 or s), transposed convolutions (kernel 2s, stride s), Snake and tanh
(pointwise), residual units (a convolution pair plus the skip path). A convolution's left padding is a
stretch of zeros at the start of its input, its right padding zeros appended at the end, and a push
runs it 'valid' on the inputs it has not yet used plus the ``(k − 1)·d`` before them. The outputs equal
a one-pass run's bit for bit once the model is :func:`dacli.runtime.streamable`.
"""

from typing import Any, List

import torch
from torch import nn

from ..model.dac import DecoderBlock, EncoderBlock
from ..model.receptive import convolutions
from .engine import ChannelsLast, SkipInsideResidualUnit


def _cat(parts):
    parts = [p for p in parts if p.shape[-1]] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts, -1).contiguous(memory_format=torch.channels_last)


def _zeros(x, n, channels=None):
    """n zero samples shaped like ``x`` (``channels`` of them), channels-last."""
    shape = (x.shape[0], x.shape[1] if channels is None else channels, 1, n)
    return x.new_zeros(shape).contiguous(memory_format=torch.channels_last)


def _out_channels(layer) -> int:
    """A runtime.convs.FastConv's output channels ((out, in, 1, k); transposed: stride × out phases)."""
    return layer.weight.shape[0] // (int(layer.stride) if layer.transposed else 1)


class _Pointwise:
    """Snake, tanh: no state."""

    def __init__(self, layer):
        self.layer = layer

    def push(self, x):
        if not x.shape[-1]:
            return x.to(getattr(self.layer, "dtype", x.dtype))  # the cast of a Snake where precision changes
        return self.layer(x)

    flush = push


class _Conv:
    """A convolution of stride s, padding p, reach r = (k − 1)·d, run 'valid' on its input stream:
    p zeros, the signal, p zeros at the end; output t sees inputs t·s … t·s + r of that stream.
    ``held`` keeps the inputs from the next output's first on: fewer than r + s."""

    def __init__(self, layer):
        self.layer = layer
        if layer.transposed:  # its convolution of the input frames (runtime.convs.FastConvTranspose1d)
            self.s, self.p, self.r = 1, 1, 1
        else:
            self.s, self.p = int(layer.stride), int(layer.padding)
            self.r = (layer.kernel_size - 1) * layer.dilation
        self.held: Any = None

    def run(self, x, last: bool):
        parts = [_zeros(x, self.p) if self.held is None else self.held, x]
        buf = _cat(parts + [_zeros(x, self.p)] if last else parts)
        n = (buf.shape[-1] - self.r - 1) // self.s + 1 if buf.shape[-1] > self.r else 0  # outputs whose inputs are in
        self.held = buf[..., n * self.s:]
        if n == 0:
            return _zeros(x, 0, _out_channels(self.layer)).to(self.layer.bias.dtype)
        return self.layer.conv(buf[..., :(n - 1) * self.s + self.r + 1], padding=0)

    def push(self, x):
        return self.run(x, False)

    def flush(self, x):
        return self.run(x, True)


class _ConvTranspose:
    """A transposed convolution of kernel 2s, stride s, padding p, as runtime.convs.FastConvTranspose1d
    runs it: a kernel-2 convolution of the input frames (padding 1) whose output m (frames m − 1 and m)
    is samples m·s … m·s + s − 1, the first p and the last p of all of them dropped."""

    def __init__(self, layer):
        self.layer, self.p = layer, int(layer.padding)
        self.frames = _Conv(layer)
        self.drop = self.p  # samples still to drop at the start

    def run(self, x, last: bool):
        y = self.layer.phases(self.frames.run(x, last))
        if self.drop:
            y, self.drop = y[..., self.drop:], max(0, self.drop - y.shape[-1])
        return y[..., :y.shape[-1] - self.p] if last else y

    def push(self, x):
        return self.run(x, False)

    def flush(self, x):
        return self.run(x, True)


class _Residual:
    """A residual unit (Snake, dilated convolution, Snake, 1x1 convolution, plus its input): the input
    waits in ``pending`` until the block's output for it comes."""

    def __init__(self, unit):
        snake1, conv7, snake2, self.conv1 = unit.block
        self.head: List[Any] = [_Pointwise(snake1), _Conv(conv7), _Pointwise(snake2)]
        self.pending: Any = None

    def _out(self, x, y):
        pending = x if self.pending is None else _cat([self.pending, x])
        n = y.shape[-1]
        add, self.pending = pending[..., :n], pending[..., n:]
        if not n:
            return _zeros(y, 0, _out_channels(self.conv1)).to(y.dtype)
        return self.conv1(y, add=add.to(y.dtype).contiguous(memory_format=_channels_last()))

    def push(self, x):
        y = x
        for op in self.head:
            y = op.push(y)
        return self._out(x, y)

    def flush(self, x):
        y = x
        for op in self.head:
            y = op.flush(y)
        return self._out(x, y)


def _channels_last():
    return torch.channels_last


def _ops(layers) -> list:
    """The streamed form of each of a prepared encoder's or decoder's layers, blocks unrolled, in the
    order they run."""
    ops: list = []
    for layer in layers:
        if isinstance(layer, (DecoderBlock, EncoderBlock)):
            ops += _ops(layer.block)
        elif isinstance(layer, nn.Sequential):
            ops += _ops(layer)
        elif isinstance(layer, SkipInsideResidualUnit):
            ops.append(_Residual(layer))
        elif convolutions(layer) == [layer]:
            ops.append(_ConvTranspose(layer) if layer.transposed else _Conv(layer))
        elif not convolutions(layer):
            ops.append(_Pointwise(layer))
        else:
            raise ValueError(f"cannot stream the layer {type(layer).__name__}")
    return ops


def _copy(ops) -> list:
    """Copies of streamed layers that share what they hold (no layer changes a tensor in place)."""
    import copy
    out = []
    for op in ops:
        c = copy.copy(op)
        if isinstance(op, _Residual):
            c.head = _copy(op.head)
        elif isinstance(op, _ConvTranspose):
            c.frames = copy.copy(op.frames)
        out.append(c)
    return out


def _run(ops, x, last: bool):
    for op in ops:
        x = op.flush(x) if last else op.push(x)
    return x


class Steps:
    """A prepared encoder or decoder (``model.encoder``, ``model.decoder``) run a push at a time:
    :meth:`push` takes the next (B, C, n) float input and returns the (B, C', m) float32 outputs it makes
    final; ``last=True`` ends the input (the right padding). :meth:`copy` is a stream that shares
    what this one holds and goes on alone (to end it early without ending this one)."""

    def __init__(self, coder: ChannelsLast) -> None:
        self.coder = coder
        inner = coder.inner
        self.ops = _ops(inner.model if hasattr(inner, "model") else inner.block)
        self.in_channels = int(self.ops[0].layer.weight.shape[1])

    def push(self, x: torch.Tensor, last: bool = False) -> torch.Tensor:
        return _run(self.ops, self.coder._in(x), last)[:, :, 0].float()

    def held(self) -> int:
        """Elements of every tensor the layers keep for the pushes to come (a fixed number)."""
        total = 0
        for op in self.ops:
            for part in [op] + getattr(op, "head", []) + ([op.frames] if hasattr(op, "frames") else []):
                total += sum(v.numel() for v in vars(part).values() if isinstance(v, torch.Tensor))
        return total

    def copy(self) -> "Steps":
        c = Steps.__new__(Steps)
        c.coder, c.ops, c.in_channels = self.coder, _copy(self.ops), self.in_channels
        return c
