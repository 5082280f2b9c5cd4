"""Streaming: code frames in as they come (an audio LM's output, a live link), the audio that is final
out at once (:class:`StreamDecoder`); live audio in, the codes that are final out (:class:`StreamEncoder`).
Everything returned equals the model's one-pass ``decode`` / ``encode``, bit for bit in float32, however
the input was split.

**Per-layer state.** Encoder and decoder are chains of layers along time: convolutions (zero padding
``p = (k − 1)·d / 2`` on each side, stride 1 or s), transposed convolutions (kernel 2s, stride s), Snake
and tanh (pointwise), residual units (a convolution pair plus the skip path). Each layer is streamed
on its own (:class:`_Conv`, :class:`_ConvTranspose`, :class:`_Residual`, :class:`_Pointwise`): a
convolution's left padding is a stretch of zeros at the start of its input, its right padding zeros
appended at the end, and a push runs it 'valid' on the inputs it has not yet used plus the
``(k − 1)·d`` before them, so it computes exactly the outputs that the new inputs make final and keeps
a fixed number of inputs. A push costs the same whatever came before and the state has a fixed size.

**Exactness.** Each output is the same sum of the same products as in a one-pass run once the model is
:func:`dacli.runtime.streamable` (each stream makes it so while it runs): oneDNN computes an undilated
convolution the same way whatever stretch of input it is given as long as each row has a number of
outputs that it computes as it computes long rows (on AVX-512 some numbers below 76 are not; found per
layer shape and row count, :meth:`dacli.runtime.convs.FastConv.stable_width`) and it is given its zero
padding as samples, and a 1x1 one for any length, so streamable models pad in place and compute rows of
such lengths, run their dilated convolutions undilated on the folded signal and their transposed ones
as one 1x1 product, and take latents from a table (``tests/test_stream.py`` checks it for every split
tried, every architecture, on the CPU the tests run on).

**Latency.** A decoded sample is final once every convolution on its path has its right-hand inputs:
the decoder's right reach, :func:`latency_frames` (10 frames, 116 ms, for the 44.1 kHz
architectures, whose decoders reach 9.9 frames ahead). A shorter
``lookahead`` trades exactness for delay (:class:`StreamDecoder`).
"""

from typing import Any, List, Optional

import numpy as np

from . import codes as codes_type
from .errors import DacliError
from .model.receptive import convolutions, reach


def _cat(parts):
    import torch
    parts = [p for p in parts if p.shape[-1]] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts, -1).contiguous(memory_format=torch.channels_last)


def _zeros(x, n, channels=None):
    """n zero samples shaped like ``x`` (``channels`` of them), channels-last."""
    import torch
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
    import torch
    return torch.channels_last


def _ops(layers) -> list:
    """The streamed form of each of a prepared encoder's or decoder's layers, blocks unrolled, in the
    order they run."""
    from torch import nn

    from .model.dac import DecoderBlock, EncoderBlock
    from .runtime.engine import SkipInsideResidualUnit
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


def latency_frames(model) -> int:
    """Frames a streamed decode holds back: a frame's samples are all final once this many frames have
    come after it (the decoder's reach, rounded up)."""
    return int(-(-reach(convolutions(model.decoder)) // 1))


def _streaming(model):
    """The scope in which a stream runs the model streamable (:func:`dacli.runtime.streaming`)."""
    from .runtime import streaming
    try:
        return streaming(model)
    except ValueError as e:
        raise DacliError(str(e)) from None


class StreamDecoder:
    """Decode codes as they come. ``push(codes)`` takes n ≥ 0 new frames, (channels, codebooks, n) (any
    integer array or tensor; (codebooks, n) for one channel), and returns the float32 samples
    (channels, m) that are ready; ``flush()``, once, at the end, the rest. ``n_codebooks``: the codebook
    count of every push (default: that of the first). While the stream runs the model is
    :func:`dacli.runtime.streamable` (a scope that ``flush()`` ends: the model is then exactly as it
    was, its one-pass results and speed included).

    ``lookahead``: frames the stream waits for before it plays a frame. None (the default) or
    :func:`latency_frames` and more: only final samples are returned, and everything returned, in
    order, equals the streamable model's ``decode`` of all the codes bit for bit in float32 (the plain
    model's within float32 rounding), however they were split.
    Fewer (0 … latency − 1): after N frames the samples up to frame N − lookahead are returned, the
    ones not yet final as the decoder would end them if the stream ended there (its zero padding in
    place of the frames to come): less delay, audio that deviates from the offline decode near every
    push (docs/PERFORMANCE.md, Streaming, tables by how much)."""

    def __init__(self, model, n_codebooks: Optional[int] = None, lookahead: Optional[int] = None):
        self.model = model
        self.n_codebooks = None if n_codebooks is None else model.check_n_codebooks(n_codebooks)
        self.latency = latency_frames(model)
        if lookahead is not None and (isinstance(lookahead, bool) or not isinstance(lookahead, (int, np.integer))
                                      or not 0 <= lookahead):
            raise DacliError(f"lookahead must be a whole number of frames, 0 … {self.latency}, got {lookahead!r}")
        if lookahead is not None and lookahead > self.latency:
            raise DacliError(f"lookahead must be 0 … {self.latency} frames (the exact one), got {lookahead}")
        self.lookahead = self.latency if lookahead is None else int(lookahead)
        self._scope = _streaming(model)  # last: nothing above may fail with the model changed
        self._ops = _ops(model.decoder.inner.model)
        self.channels: Optional[int] = None
        self.frames = 0    # frames pushed
        self.final = 0     # samples final (computed by the real stream)
        self.returned = 0  # samples returned (ahead of final where lookahead < latency)
        self.ended = False

    def _codes(self, codes) -> np.ndarray:
        c = codes_type.as_array(codes)
        if self.n_codebooks is None:
            self.n_codebooks = self.model.check_n_codebooks(c.shape[1])
        if c.shape[1] != self.n_codebooks:
            raise DacliError(f"codes: this push has {c.shape[1]} codebooks, the stream {self.n_codebooks}")
        codes_type.check(c, self.model.n_codebooks, self.model.codebook_size, channels=self.channels)
        self.channels = c.shape[0]
        return c

    def _decode(self, ops, c: np.ndarray, last: bool) -> np.ndarray:
        import torch
        m = self.model
        with torch.inference_mode():
            if c.shape[-1]:
                z = m.quantizer.from_codes(torch.from_numpy(c).long().to(m.device))
            else:
                z = torch.zeros(c.shape[0], ops[0].layer.weight.shape[1], 0, device=m.device)
            y = _run(ops, m.decoder._in(z), last)
            return y[:, 0, 0].float().cpu().numpy()

    def _out(self, y: np.ndarray, last: bool) -> np.ndarray:
        """Of the next final samples ``y``, those not yet returned; with a short lookahead, then the
        samples up to its point as a flush of copies of the layers gives them."""
        first, self.final = self.final, self.final + y.shape[-1]
        parts = [y[:, max(0, self.returned - first):]]
        self.returned = max(self.returned, self.final)
        ahead = (self.frames - self.lookahead) * self.model.hop_length
        if not last and ahead > self.returned:
            empty = np.zeros((self.channels or 1, self.n_codebooks or 1, 0), np.int32)
            end = self._decode(_copy(self._ops), empty, last=True)  # samples from `final` on
            parts.append(end[:, self.returned - self.final:ahead - self.final])
            self.returned += parts[-1].shape[-1]
        return np.concatenate(parts, -1) if len(parts) > 1 else parts[0]

    def push(self, codes) -> np.ndarray:
        """New frames in, the samples (channels, m) they make ready out."""
        if self.ended:
            raise DacliError("push after flush: the stream has ended")
        c = self._codes(codes)
        if not c.shape[-1]:
            return np.zeros((c.shape[0], 0), np.float32)
        self.frames += c.shape[-1]
        return self._out(self._decode(self._ops, c, last=False), last=False)

    def flush(self) -> np.ndarray:
        """The samples still held back, at the end of the stream (the decoder's right padding)."""
        if self.ended:
            raise DacliError("flush: the stream has already ended")
        self.ended = True
        try:
            if self.channels is None:  # nothing was pushed
                return np.zeros((0, 0), np.float32)
            empty = np.zeros((self.channels, self.n_codebooks or 1, 0), np.int32)
            return self._out(self._decode(self._ops, empty, last=True), last=True)
        finally:
            self._scope.close()


class StreamEncoder:
    """Encode live audio. ``push(samples)`` takes n ≥ 0 new samples at the model rate, (channels, n) or
    (n,) for one channel, any float array or tensor, and returns the int32 codes (channels,
    n_codebooks, m) that are final now; ``flush()``, once, at the end, the rest (the last frame padded
    with zeros, as ``model.encode`` pads). Everything returned, in order, equals ``model.encode`` of all
    the samples times the gain, exactly in float32, however they were split. A live stream cannot be
    loudness-normalised before it ends: ``gain_db`` is fixed (0: as they come). While the stream runs
    the model is :func:`dacli.runtime.streamable` (a scope that ``flush()`` ends, as for
    :class:`StreamDecoder`); the codes are the streamable model's ``encode``."""

    def __init__(self, model, n_codebooks: Optional[int] = None, gain_db: float = 0.0):
        from .audio import db_to_gain
        self.model = model
        self.n_codebooks = model.check_n_codebooks(n_codebooks)
        if not np.isfinite(gain_db):
            raise DacliError(f"gain_db must be a finite number of dB, got {gain_db}")
        self.gain = np.float32(db_to_gain(gain_db))
        self._scope = _streaming(model)
        self._ops = _ops(model.encoder.inner.block)
        self.channels: Optional[int] = None
        self.received = 0
        self.ended = False

    def _samples(self, samples) -> np.ndarray:
        if hasattr(samples, "detach"):
            samples = samples.detach().cpu().numpy()
        a = np.asarray(samples)
        if a.dtype.kind not in "fiu":
            raise DacliError(f"samples must be numbers, not {a.dtype}")
        a = a.reshape(1, -1) if a.ndim == 1 else a
        if a.ndim != 2:
            raise DacliError(f"samples must be (channels, n) or (n,), got shape {a.shape}")
        if self.channels is not None and a.shape[0] != self.channels:
            raise DacliError(f"samples: this push has {a.shape[0]} channels, the stream {self.channels}")
        if not np.isfinite(a).all():
            raise DacliError("samples: not finite (NaN or infinity)")
        self.channels = a.shape[0]
        return a.astype(np.float32) * self.gain

    def _encode(self, a: np.ndarray, last: bool) -> np.ndarray:
        import torch
        m = self.model
        with torch.inference_mode():
            x = m.encoder._in(torch.from_numpy(np.ascontiguousarray(a))[:, None].to(m.device))
            z = _run(self._ops, x, last)[:, :, 0].float()
            if not z.shape[-1]:
                return np.zeros((a.shape[0], self.n_codebooks, 0), np.int32)
            return m.quantizer(z, self.n_codebooks)[1].to(torch.int32).cpu().numpy()

    def push(self, samples) -> np.ndarray:
        """New samples in, the codes (channels, n_codebooks, m) they make final out."""
        if self.ended:
            raise DacliError("push after flush: the stream has ended")
        a = self._samples(samples)
        self.received += a.shape[-1]
        if not a.shape[-1]:
            return np.zeros((a.shape[0], self.n_codebooks, 0), np.int32)
        return self._encode(a, last=False)

    def flush(self) -> np.ndarray:
        """The codes still held back, at the end of the stream."""
        if self.ended:
            raise DacliError("flush: the stream has already ended")
        self.ended = True
        try:
            if self.channels is None:
                return np.zeros((0, self.n_codebooks, 0), np.int32)
            pad = -self.received % self.model.hop_length  # model.encode's padding to whole frames
            return self._encode(np.zeros((self.channels, pad), np.float32), last=True)
        finally:
            self._scope.close()
