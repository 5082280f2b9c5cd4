"""The streamed form of a prepared encoder or decoder (:class:`Steps`): each layer run on the inputs
it has not used yet, so that a push computes exactly the outputs its new inputs make final and every
layer keeps a fixed number of inputs, for any number of stream slots at once. What streaming knows of
the runtime's layers is here, in one place (:func:`_ops` says which streamed form each layer takes);
:mod:`dacli.stream` builds on it.

Encoder and decoder are chains of layers along time: convolutions (zero padding ``p = (k − 1)·d / 2``
on each side, stride 1 or s), transposed convolutions (kernel 2s, stride s), Snake and tanh
(pointwise), residual units (a convolution pair plus the skip path, whose inputs the dilated
convolution holds: it keeps the unit's inputs and takes Snake of them each push). A slot starts with each
convolution holding zeros, as many as it keeps from push to push: ``(k − 1)·d`` (stride 1), or the s
or more that put a strided one's outputs on whole positions of the one pass's output; a push runs it
'valid' on what it holds and the new inputs, and the last push appends the zeros of its right padding.
So every slot holds the same lengths from its first push on; the outputs that lie before its signal
are set to zero, as the one pass's padding is, and dropped at the end of the chain (:meth:`Steps.push`).
An encoder takes whole frames of samples a push (its strides' product), a decoder any number of frames.

**Slots.** Each streamed layer keeps what it holds per stream slot (:class:`_State`). The slots of a
push run together, their rows stacked, one call per layer, whatever each pushes: the shorter inputs
are followed by zeros whose outputs are dropped (slots that end in a push run apart: their layers
append their right padding). What the slots that ran together hold stays one stacked tensor until
other slots come, so pushes of the same streams cost no copies. The outputs equal a one-pass run's
bit for bit, alone or stacked, once the model is :func:`dacli.runtime.streamable`
(docs/PERFORMANCE.md, Exactness).
"""

import math
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..model.dac import DecoderBlock, EncoderBlock
from ..model.receptive import convolutions
from .engine import ChannelsLast, SkipInsideResidualUnit, check_prepared

Slots = Tuple[Hashable, ...]


class _Group:
    """The slots run together in one call: their keys, the rows (channels) each has, in order, the
    units (a decoder's frames, an encoder's frames of samples) each pushed before (``starts``) and the
    units of zeros after each slot's input where they pushed fewer than the longest (``short``; their
    outputs there are dropped), counted at the current layer's rate (``rate``: samples per unit)."""

    def __init__(self, slots: Slots, rows: Tuple[int, ...], short: Tuple[int, ...], starts: Tuple[int, ...],
                 rate: int) -> None:
        self.slots, self.rows, self.short, self.starts, self.rate = slots, rows, short, starts, rate
        self.first = min(starts, default=0)  # the least of them

    def zero_start(self, y: torch.Tensor, delay: int) -> torch.Tensor:
        """``y`` (a layer's new outputs, ``delay`` samples behind the input) with the outputs that lie
        before each slot's signal set to zero: where a one-pass run has its zero padding."""
        if self.first * self.rate >= delay:
            return y
        row = 0
        for r, start in zip(self.rows, self.starts):
            if start * self.rate < delay:
                y[row:row + r, ..., :delay - start * self.rate] = 0
            row += r
        return y

    def ending(self, t: torch.Tensor, end: int, width: int) -> torch.Tensor:
        """Each slot's ``width`` samples of ``t`` up to where its own input ends (the longest's at
        ``end``), stacked: slots of the same length in one slice."""
        if not any(self.short):
            return t[..., end - width:end]
        parts, start, i = [], 0, 0
        while i < len(self.slots):
            j, rows = i, 0
            while j < len(self.slots) and self.short[j] == self.short[i]:
                rows, j = rows + self.rows[j], j + 1
            e = end - self.short[i] * self.rate
            parts.append(t[start:start + rows, ..., e - width:e])
            start, i = start + rows, j
        return torch.cat(parts) if len(parts) > 1 else parts[0]


class _State:
    """One layer's tensor per slot (rows × channels × 1 × length): one stacked tensor for the slots
    last run together, single views for the others."""

    def __init__(self) -> None:
        self.alone: Dict[Hashable, torch.Tensor] = {}
        self.together: Optional[Tuple[_Group, torch.Tensor]] = None

    def _split(self) -> None:
        if self.together is not None:
            g, t = self.together
            self.together, start = None, 0
            for s, r in zip(g.slots, g.rows):
                self.alone[s], start = t[start:start + r], start + r

    def get(self, g: _Group, fresh: Any) -> torch.Tensor:
        """The stacked tensor of the group's slots, those not started holding what ``fresh`` (rows →
        a tensor) gives."""
        if self.together is not None and self.together[0].slots == g.slots:
            return self.together[1]
        self._split()
        parts = [self.alone[s] if s in self.alone else fresh(r) for s, r in zip(g.slots, g.rows)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def set(self, g: _Group, t: torch.Tensor) -> None:
        if self.together is not None and self.together[0].slots != g.slots:
            self._split()
        for s in g.slots:
            self.alone.pop(s, None)
        self.together = (g, t)

    def of(self, slot: Hashable) -> Optional[torch.Tensor]:
        self._split()
        return self.alone.get(slot)

    def drop(self, slot: Hashable) -> None:
        self._split()
        self.alone.pop(slot, None)

    def copy(self, src: Hashable, dst: Hashable) -> None:
        """``dst`` holds what ``src`` holds (shared: no layer changes a tensor in place)."""
        self._split()
        if src in self.alone:
            self.alone[dst] = self.alone[src]


def _cat(parts):
    parts = [p for p in parts if p.shape[-1]] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts, -1).contiguous(memory_format=torch.channels_last)


def _kept(x):
    """What a layer keeps for the next push: its own copy where it is a small part of a larger tensor,
    which would otherwise stay alive with it between pushes."""
    if x.shape[-1] and x.untyped_storage().nbytes() > 2 * x.numel() * x.element_size():
        return x.clone(memory_format=torch.channels_last)
    return x


def _zeros(x, n, channels=None):
    """n zero samples shaped like ``x`` (``channels`` of them), channels-last."""
    shape = (x.shape[0], x.shape[1] if channels is None else channels, 1, n)
    return x.new_zeros(shape).contiguous(memory_format=torch.channels_last)


def _fresh(x, n):
    """rows → what a slot not yet started holds: ``n`` zeros, shaped like ``x``'s samples."""
    return lambda rows: x.new_zeros((rows, x.shape[1], 1, n)).contiguous(memory_format=torch.channels_last)


def _out_channels(layer) -> int:
    """A runtime.convs.FastConv's output channels ((out, in, 1, k); transposed: stride × out phases)."""
    return layer.weight.shape[0] // (int(layer.stride) if layer.transposed else 1)


class _Pointwise:
    """Snake, tanh: no state."""

    states: List[_State] = []

    def __init__(self, layer):
        self.layer = layer

    def run(self, x, g: _Group, last: bool):
        if not x.shape[-1]:
            return x.to(getattr(self.layer, "dtype", x.dtype))  # the cast of a Snake where precision changes
        return self.layer(x)


class _Conv:
    """A convolution of stride s, padding p, reach r = (k − 1)·d, run 'valid' on its input stream:
    ``keep`` zeros (set by :meth:`Steps._place`), the signal, p zeros at the end. Each slot
    holds the ``keep`` inputs from its next output's first on; a push of n·s inputs gives n outputs,
    each ``delay`` samples behind (zeroed before the signal)."""

    def __init__(self, layer):
        self.layer = layer
        if layer.transposed:  # its convolution of the input frames (runtime.convs.FastConvTranspose1d)
            self.s, self.p, self.r = 1, 1, 1
        else:
            self.s, self.p = int(layer.stride), int(layer.padding)
            self.r = (layer.kernel_size - 1) * layer.dilation
        self.held = _State()
        self.states = [self.held]
        self.keep, self.delay = self.r, 0  # see Steps._place

    def take(self, x, g: _Group, last: bool):
        """(what the convolution runs on: the inputs held, ``x`` and at the end the right padding; its
        number of outputs), keeping the inputs the next push needs."""
        parts = [self.held.get(g, _fresh(x, self.keep)), x]
        buf = _cat(parts + [_zeros(x, self.p)] if last else parts)
        length = buf.shape[-1]
        n = max(0, (length - self.r - 1) // self.s + 1) if last else (length - self.keep) // self.s
        self.held.set(g, _kept(g.ending(buf, length, length - n * self.s)))
        return buf, n

    def run(self, x, g: _Group, last: bool):
        buf, n = self.take(x, g, last)
        del x  # freed (when it was copied into buf) before the convolution's output is made
        g.rate //= self.s
        if n == 0:
            return _zeros(buf, 0, _out_channels(self.layer)).to(self.layer.bias.dtype)
        return g.zero_start(self.layer.conv(buf[..., :(n - 1) * self.s + self.r + 1], padding=0), self.delay)


class _ConvTranspose:
    """A transposed convolution of kernel 2s, stride s, padding p, as runtime.convs.FastConvTranspose1d
    runs it: a kernel-2 convolution of the input frames (padding 1) whose output m (frames m − 1 and m)
    is samples m·s … m·s + s − 1; of all of them the first p lie before the signal (zeroed here,
    dropped at the end of the chain) and the last p are dropped."""

    def __init__(self, layer):
        self.layer, self.p = layer, int(layer.padding)
        self.frames = _Conv(layer)
        self.states = self.frames.states
        self.delay = 0  # its outputs' lag, zeroed before the signal (see Steps._place)

    def run(self, x, g: _Group, last: bool):
        y = self.layer.phases(self.frames.run(x, g, last))
        g.rate *= int(self.layer.stride)
        y = g.zero_start(y, self.delay)
        return y[..., :y.shape[-1] - self.p] if last else y


class _Residual:
    """A residual unit (Snake, dilated convolution, Snake, 1x1 convolution, plus its input): its
    dilated convolution holds the unit's own inputs, Snake taken of them each push (Snake of zeros is
    zero), so the skip path's inputs, p behind, lie in the same buffer."""

    def __init__(self, unit):
        self.snake1, conv7, self.snake2, self.conv1 = unit.block
        self.conv7 = _Conv(conv7)
        self.states = self.conv7.states
        self.delay = 0  # its outputs' lag, zeroed before the signal (see Steps._place)

    def run(self, x, g: _Group, last: bool):
        conv = self.conv7
        buf, n = conv.take(x, g, last)
        del x
        if not n:
            return _zeros(buf, 0, _out_channels(self.conv1)).to(self.conv1.bias.dtype)
        y = self.snake2(g.zero_start(conv.layer.conv(self.snake1(buf), padding=0), conv.delay))
        skip = buf[..., conv.p:conv.p + n].to(y.dtype).contiguous(memory_format=torch.channels_last)
        return g.zero_start(self.conv1(y, add=skip), self.delay)


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


class Steps:
    """A prepared encoder or decoder (``model.encoder``, ``model.decoder``) run a push at a time for
    any number of stream slots (any hashable keys): :meth:`push` takes each slot's next (rows, C, n)
    float input (an encoder: n a multiple of :attr:`unit`) and returns the (rows, C', m) float32
    outputs it makes final; a slot in ``last`` ends its input there (the right padding). A slot starts
    with its first push; :meth:`end` forgets it; :meth:`copy` starts a slot holding what another holds
    (to end it early without ending that one)."""

    def __init__(self, coder: ChannelsLast) -> None:
        check_prepared(coder)
        self.coder = coder
        inner = coder.inner
        self.ops = _ops(inner.model if hasattr(inner, "model") else inner.block)
        self.in_channels = int(self.ops[0].layer.weight.shape[1])
        self.states = [st for op in self.ops for st in op.states]
        self.unit = math.prod(op.s for op in self.ops if isinstance(op, _Conv))  # inputs a push takes whole
        self.delay = self._place()
        self.position: Dict[Hashable, int] = {}  # per started slot: units pushed
        self.dropping: Dict[Hashable, int] = {}  # per started slot: outputs still before its signal

    def _place(self) -> int:
        """Each layer's zeros at the start (``keep``) and lag (``delay``, in its output samples), from
        the first layer on; returns the chain's lag. A convolution of stride 1 keeps its reach and lags
        its padding more; a strided one (kernel 2s) keeps the s or more inputs that put its outputs on
        whole positions of the one pass's, its lag counted in its outputs; a transposed one multiplies
        the lag by its stride and adds its padding; a residual unit lags as its dilated convolution."""
        if self.unit > 1 and any(isinstance(op, _ConvTranspose) for op in self.ops):
            raise ValueError("cannot stream a chain with both strided and transposed convolutions")
        delay = 0
        for op in self.ops:
            conv = op if isinstance(op, _Conv) else op.conv7 if isinstance(op, _Residual) else None
            if conv is not None and conv.s > 1:
                conv.keep = conv.s + (conv.p - delay - conv.s) % conv.s
                delay = (delay + conv.keep - conv.p) // conv.s
            elif conv is not None:
                delay += conv.p
            elif isinstance(op, _ConvTranspose):
                delay = delay * int(op.layer.stride) + op.p
            if not isinstance(op, _Pointwise):
                op.delay = delay
        return delay

    def push(self, inputs: Dict[Any, torch.Tensor], last: Sequence[Any] = ()) -> Dict[Any, torch.Tensor]:
        """All slots run together whatever they push, the shorter inputs followed by zeros whose
        outputs are dropped (those that end here apart: their layers append their right padding)."""
        groups: Dict[bool, List[Hashable]] = {}
        for s, x in inputs.items():
            if x.shape[-1] % self.unit:
                raise ValueError(f"an encoder streams whole frames: {x.shape[-1]} samples, not a multiple of {self.unit}")
            groups.setdefault(s in last, []).append(s)
        out: Dict[Any, torch.Tensor] = {}
        for end, members in groups.items():
            units = {s: inputs[s].shape[-1] // self.unit for s in members}
            most = max(units.values())
            slots = tuple(sorted(members, key=lambda s: (most - units[s], _order(s))))
            g = _Group(slots, tuple(inputs[s].shape[0] for s in slots), tuple(most - units[s] for s in slots),
                       tuple(self.position.get(s, 0) for s in slots), self.unit)
            x = torch.cat([F.pad(inputs[s], (0, (most - units[s]) * self.unit)) for s in slots]) if len(slots) > 1 \
                else inputs[slots[0]]
            box = [self.coder._in(x)]  # the only reference to a layer's input: it is freed once used
            del x
            for op in self.ops:
                box.append(op.run(box.pop(), g, end))
            y, start = box.pop()[:, :, 0].float(), 0
            for s, r, short in zip(slots, g.rows, g.short):
                out[s], start = y[start:start + r, :, :y.shape[-1] - short * g.rate], start + r
                self.position[s] = self.position.get(s, 0) + units[s]
                drop = self.dropping.get(s, self.delay)  # the outputs before the slot's signal go
                self.dropping[s] = max(0, drop - out[s].shape[-1])
                out[s] = out[s][..., drop:]
        return out

    def end(self, slot: Hashable) -> None:
        self.position.pop(slot, None)
        self.dropping.pop(slot, None)
        for st in self.states:
            st.drop(slot)

    def copy(self, src: Hashable, dst: Hashable) -> None:
        for table in (self.position, self.dropping):
            if src in table:
                table[dst] = table[src]
        for st in self.states:
            st.copy(src, dst)

    def held(self, slot: Hashable) -> int:
        """Elements of every tensor the layers keep for a slot's pushes to come (a fixed number)."""
        return sum(t.numel() for t in (st.of(slot) for st in self.states) if t is not None)


def _order(slot: Hashable) -> Any:
    return (str(type(slot)), slot)
