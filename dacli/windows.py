"""The window engine: every encode and decode of dacli runs the model through here, window by window
(encoding) or push by push (decoding).

**Overlap-save windows (encoding).** A signal of ``frames`` code frames is cut into windows of ``W``
kept frames (:func:`plan`); each is run with up to ``C`` frames of real context on both sides (``C``
covers the receptive field: :func:`dacli.model.receptive.context_frames`) and only its centre is kept.
Every kept frame therefore sees what a one-pass run shows it.

**Encoding: rows of one shape.** The :class:`Packer` takes any number of audio streams at once (one
per file, fed block by block, so an hour-long file needs only a window of memory) and lays each
window, channel by channel, into rows of ``W + 2C`` frames, ``rows`` of them per model call, so that
every call has the same shape. Windows start on a frame boundary, :func:`gap_frames` apart, and after
every convolution the activations outside them are set to zero (:func:`masked`): at every layer a
window sees zeros beyond its edges, exactly what the convolutions' own zero padding shows it alone.
In float32 a file's codes are those of a one-pass encode, bit for bit, whatever shares its rows (and
whatever ``W``). bfloat16 kernels round differently at different places of a row, so in the other
precisions a row holds one window (still one shape): a file's codes never depend on its neighbours.

**Decoding: one push loop.** :func:`decode_windows` pushes the codes, a window's worth of frames at a
time, through the decoder run as a stream runs it (:class:`dacli.runtime.stepping.Steps`): nothing is
decoded twice and each layer keeps only the inputs its next outputs need.

torch is imported inside the functions that run the model, so the command line reads this module's
defaults without starting it.
"""

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Hashable, Iterator, List, Optional, Tuple

import numpy as np

from . import codes as codes_type
from .errors import DacliError
from .model.receptive import context_frames, convolutions
from .runtime.process import release_memory

if TYPE_CHECKING:
    from .model import DAC

# Window lengths (seconds; in fp32 results do not depend on them). The encoder carries its context to
# the end: encode 13.2 / 12.5 / 12.5 s; stereo 0.22 s per audio second at 1.5, 2 and 3 s, peak RSS 0.99 /
# 1.03 / 1.34 GB (60 s mono, fp32, 2 CPU cores). The decoder pushes MIN_PUSH frames (0.19 s) at least.
ENCODE_WINDOW_SECONDS = 2.0
DECODE_WINDOW_SECONDS = 1.0
MIN_PUSH = 16  # frames: the fewest a decode pushes at a time (see pushes): the dilated layers, all after the first
# upsampling, then compute rows of 128 outputs or more, which oneDNN computes alike (docs/PERFORMANCE.md,
# "Exactness"); the undilated ones widen their rows (dacli.runtime.convs.FastConv.conv)
SPARE_ROWS = 8  # rows kept open beyond a call's worth, so that a window finds room in one of them (326 real
# clips of 1-20 s: rows 93.5 % full with 3, 94.7 % with 8, 95.1 % with 16)

Done = List[Tuple[Hashable, np.ndarray]]  # streams completed: (key, their codes)


def window_frames(model: "DAC", seconds: Optional[float], default: float) -> int:
    """Frames per window for a window of ``seconds`` (None: ``default``)."""
    if seconds is None:
        seconds = default
    if not seconds or seconds <= 0:
        raise DacliError("--window-seconds must be positive")
    return max(1, int(round(seconds * model.sample_rate / model.hop_length)))


def plan(frames: int, width: int, context: int, start: int = 0) -> Iterator[Tuple[int, int, int, int]]:
    """The overlap-save windows of a signal of ``frames`` frames, from frame ``start`` on: (first kept
    frame s, frames kept w, first frame computed a, end b), ``width`` frames kept per window and up to
    ``context`` frames on each side."""
    for s in range(start, frames, width):
        w = min(width, frames - s)
        yield s, w, max(0, s - context), min(frames, s + w + context)


def default_rows(device: Any) -> int:
    """Rows (channel windows) per model call: one on CPU, where more rows do not speed convolutions up
    but multiply activation memory (full-size 44.1 kHz model, stereo: 2 rows peak at 3.2 GB against
    1.4 GB); 16 on CUDA, where one larger call keeps the GPU busy."""
    return 16 if str(device).startswith("cuda") else 1


def gap_frames(model: "DAC") -> int:
    """Frames of zeros between two windows of a row: the farthest any single convolution of the
    encoder reads beyond the output position it computes, on either side, in frames."""
    farthest, rate = 0, 1  # rate: input samples per position of the current layer's input
    for c in convolutions(model.encoder):
        span = (c.kernel_size - 1) * c.dilation
        pad = c.default_padding
        farthest = max(farthest, max(pad, span - pad) * rate)
        rate *= c.stride
    return math.ceil(farthest / model.hop_length)


@contextlib.contextmanager
def masked(encoder: Any, valid: Any) -> Iterator[None]:
    """While inside, every convolution of ``encoder`` zeroes its output where ``valid`` ((rows,
    samples) bool tensor at the input rate) is False, at that layer's rate."""
    cache: Dict[Tuple, Any] = {}

    def hook(module, inputs, out):
        key = (out.shape[-1], out.ndim, out.dtype)
        if key not in cache:
            step = valid.shape[-1] // out.shape[-1]
            m = valid[:, ::step].to(device=out.device, dtype=out.dtype)
            cache[key] = m.view(m.shape[0], *[1] * (out.ndim - 2), m.shape[1])
        out.mul_(cache[key])

    handles = [c.register_forward_hook(hook) for c in convolutions(encoder)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------------
# Encoding


@dataclass
class _Stream:
    """A signal being encoded: what of it is buffered, which window comes next, its codes so far."""
    channels: int
    frames: int
    codes: np.ndarray
    buf: np.ndarray
    buf_start: int = 0   # sample index of buf[:, 0]
    received: int = 0    # samples fed so far
    next: int = 0        # first frame of the next window
    left: int = 0        # pieces in rows, not yet encoded
    ended: bool = False  # the last block has been fed


@dataclass
class _Piece:
    """One channel of one window: ``audio`` (frames a..b of its stream) goes into a row at frame
    ``start``; its frames from ``keep`` on, ``w`` of them, are the stream's frames from ``s`` on."""
    key: Hashable
    channel: int
    s: int
    w: int
    keep: int
    audio: np.ndarray
    start: int = 0


@dataclass
class _Row:
    pieces: List[_Piece] = field(default_factory=list)
    used: int = 0  # frames, the gap after the last piece not included


class Packer:
    """Encodes audio streams at the model rate (gain applied) into codes, their windows packed into
    rows of one shape. ``open`` a stream, ``feed`` it blocks (the last one with ``last=True``), and
    collect each stream's codes, (channels, n_codebooks, frames) int32, from the ``feed`` or
    ``flush`` call that completes it. Rows run ``rows`` at a time, as soon as that many are full (or
    when more are open than a call and :data:`SPARE_ROWS` hold); ``flush`` runs what is left."""

    def __init__(self, model: "DAC", n_codebooks: int, width: int, rows: int) -> None:
        self.model, self.n_codebooks, self.rows_per_call = model, n_codebooks, rows
        self.hop = model.hop_length
        self.width, self.context = width, context_frames(model, "encoder")
        self.row_frames = width + 2 * self.context
        self.gap = gap_frames(model)
        self.share = model.precision == "fp32"
        self.calls = 0  # model calls so far
        self._rows: List[_Row] = []
        self._streams: Dict[Hashable, _Stream] = {}

    def open(self, key: Hashable, channels: int, samples: int) -> None:
        """Start a stream of ``samples`` samples per channel (a one-pass encode pads it with zeros to a
        whole frame; so does this)."""
        frames = math.ceil(samples / self.hop)
        self._streams[key] = _Stream(channels, frames, np.zeros((channels, self.n_codebooks, frames), codes_type.DTYPE),
                                     np.zeros((channels, 0), np.float32))

    def feed(self, key: Hashable, x: np.ndarray, last: bool = False) -> Done:
        """The next (channels, n) block of stream ``key`` → the streams completed meanwhile."""
        st = self._streams[key]
        st.buf = np.concatenate([st.buf, np.asarray(x, np.float32)], axis=1)
        st.received += x.shape[1]
        padded = st.frames * self.hop
        if st.received > padded:
            raise DacliError("the audio grew while it was being read")
        if last:
            st.buf = np.pad(st.buf, ((0, 0), (0, padded - st.received)))
            st.received, st.ended = padded, True
        done: Done = []
        for s, w, a, b in plan(st.frames, self.width, self.context, st.next):
            if b * self.hop > st.received:
                break
            seg = st.buf[:, a * self.hop - st.buf_start:b * self.hop - st.buf_start]
            st.next = s + w
            st.left += st.channels  # before any is placed: placing one may run its row
            for ch in range(st.channels):
                done += self._place(_Piece(key, ch, s, w, s - a, seg[ch].copy()))
        keep = max(0, st.next - self.context) * self.hop
        st.buf, st.buf_start = st.buf[:, keep - st.buf_start:], keep
        return done + (self._completed(key) if key in self._streams and self._finished(st) else [])

    def add(self, key: Hashable, x: np.ndarray) -> Done:
        """A whole (channels, samples) signal as one stream → the streams completed meanwhile."""
        self.open(key, x.shape[0], x.shape[1])
        return self.feed(key, x, last=True)

    def drop(self, key: Hashable) -> None:
        """Forget stream ``key`` (its input failed): its windows already in rows are encoded with their
        neighbours, and their codes discarded."""
        self._streams.pop(key, None)

    def flush(self) -> Done:
        """Encode every open row → the streams completed. In fp32 these last calls are cut to the
        longest of their rows, so that a file encoded alone costs what its own length does (the codes
        are the same: beyond a row's end the convolutions' zero padding shows what the zeroed gap does).
        Rows that are not shared keep their one shape, so their codes never depend on the neighbours."""
        done: Done = []
        while self._rows:
            rows = self._fullest()
            done += self._run(rows, max(r.used for r in rows) if self.share else None)
        return done

    def _finished(self, st: _Stream) -> bool:
        return st.ended and st.next >= st.frames and st.left == 0

    def _completed(self, key: Hashable) -> Done:
        return [(key, self._streams.pop(key).codes)]

    def _fullest(self) -> List[_Row]:
        return sorted(self._rows, key=lambda r: -r.used)[:self.rows_per_call]

    def _place(self, piece: _Piece) -> Done:
        size = len(piece.audio) // self.hop
        row = next((r for r in self._rows if self._start(r) + size <= self.row_frames), None)
        done: Done = []
        if row is None:
            if len(self._rows) >= self.rows_per_call + SPARE_ROWS:
                done += self._run(self._fullest())
            row = _Row()
            self._rows.append(row)
        piece.start = self._start(row)
        row.pieces.append(piece)
        row.used = piece.start + size
        full = [r for r in self._rows if not self.share or r.used + self.gap >= self.row_frames]
        if len(full) >= self.rows_per_call:
            done += self._run(full[:self.rows_per_call])
        return done

    def _start(self, row: _Row) -> int:
        """Where the next piece would start in ``row`` (past the end when rows are not shared)."""
        if not row.pieces:
            return 0
        return row.used + self.gap if self.share else self.row_frames

    def _run(self, rows: List[_Row], frames: Optional[int] = None) -> Done:
        """Encode ``rows`` (with empty ones up to a call's worth: one shape for every call; ``frames``
        long, by default a full row) → the streams completed."""
        import torch
        for r in rows:
            self._rows.remove(r)
        n = (frames or self.row_frames) * self.hop
        x = torch.zeros(self.rows_per_call, 1, n)
        valid = torch.zeros(self.rows_per_call, n, dtype=torch.bool)
        for i, r in enumerate(rows):
            for p in r.pieces:
                lo, hi = p.start * self.hop, p.start * self.hop + len(p.audio)
                x[i, 0, lo:hi] = torch.from_numpy(p.audio)
                valid[i, lo:hi] = True
        mask = masked(self.model.encoder, valid) if not bool(valid.all()) else contextlib.nullcontext()
        with torch.inference_mode(), mask:
            out = self.model.encode_batch(x.to(self.model.device), self.n_codebooks).cpu().numpy()
        self.calls += 1
        release_memory()
        done: Done = []
        for i, r in enumerate(rows):
            for p in r.pieces:
                st = self._streams.get(p.key)
                if st is None:  # dropped
                    continue
                st.codes[p.channel, :, p.s:p.s + p.w] = out[i, :, p.start + p.keep:p.start + p.keep + p.w]
                st.left -= 1
                if self._finished(st):
                    done += self._completed(p.key)
        return done


def encode_array(model: "DAC", x: np.ndarray, n_codebooks: Optional[int] = None,
                 window_seconds: Optional[float] = None) -> np.ndarray:
    """Windowed encode of (channels, samples) or (samples,) audio at the model rate → int32 codes
    (channels, n_codebooks, frames)."""
    x = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
    packer = Packer(model, model.check_n_codebooks(n_codebooks),
                    window_frames(model, window_seconds, ENCODE_WINDOW_SECONDS), default_rows(model.device))
    done = dict(packer.add(0, x) + packer.flush())
    return done[0]


# --------------------------------------------------------------------------------------------------
# Decoding


def pushes(frames: int, width: int) -> List[Tuple[int, int]]:
    """The pushes of a decode of ``frames`` frames, (start, end) each: ``width`` frames, and never fewer
    than :data:`MIN_PUSH` unless the codes are shorter (the push before the last gives it what it
    lacks), so that each dilated layer computes rows of a length that oneDNN computes as it computes
    any longer one: the samples do not depend on the push size (docs/PERFORMANCE.md, "Exactness").
    No push is longer than ``width`` unless ``width`` is under twice MIN_PUSH."""
    width, out, t = max(width, MIN_PUSH), [], 0
    while t < frames:
        rest = frames - t
        if rest <= width or rest - width >= MIN_PUSH:
            n = min(rest, width)
        else:
            n = rest - MIN_PUSH if rest >= 2 * MIN_PUSH else rest
        out.append((t, t + n))
        t += n
    return out


def decode_windows(model: "DAC", codes: Any, window_seconds: Optional[float] = None) -> Iterator[np.ndarray]:
    """Decode (channels, codebooks, frames) codes push by push (:func:`pushes` of ``window_seconds`` of
    frames) → (channels, n) float32 audio blocks at the model rate, in order, each as soon as it is
    final. The decoder runs as a stream runs it (:class:`dacli.runtime.stepping.Steps`: each layer
    keeps only what its next outputs need, so memory stays flat in the file's length), on the model as
    it is; an exported model runs its step graph the same way (:class:`dacli.onnx_model.OnnxSteps`).
    The end is a push of no frames (the decoder's right padding alone)."""
    c = codes_type.as_array(codes)
    frames, width = c.shape[2], window_frames(model, window_seconds, DECODE_WINDOW_SECONDS)
    if frames == 0:
        return
    with contextlib.ExitStack() as scope:
        push = _pusher(model, c.shape[0], scope)
        for t, end in pushes(frames, width):
            yield push(c[:, :, t:end], False)
            release_memory()
        yield push(c[:, :, :0], True)


def _pusher(model: Any, rows: int, scope: contextlib.ExitStack) -> Any:
    """``push(codes, last) → samples`` of one stream of ``rows`` rows: the torch decoder's Steps after
    the quantizer's lookup, or an exported model's step graph (which holds the lookup)."""
    if not hasattr(model, "quantizer"):
        return model.steps(rows).push
    import torch

    from .runtime.stepping import Steps
    steps = Steps(model.decoder)
    scope.enter_context(torch.inference_mode())

    def push(c: np.ndarray, last: bool) -> np.ndarray:
        return steps.push({0: latents(model, c, steps.in_channels)}, last=[0] if last else ())[0][:, 0].cpu().numpy()
    return push


def latents(model: "DAC", codes: np.ndarray, channels: int) -> Any:
    """(rows, K, n) integer codes → the decoder's input, (rows, ``channels``, n) latents on the model's
    device (none when n is 0: the push that only ends a stream)."""
    import torch
    if not codes.shape[-1]:
        return torch.zeros(codes.shape[0], channels, 0, device=model.device)
    return model.quantizer.from_codes(torch.from_numpy(codes).long().to(model.device))


def decode_array(model: "DAC", codes: Any, window_seconds: Optional[float] = None) -> np.ndarray:
    """Windowed decode of (channels, codebooks, frames) codes → (channels, samples) float32 audio at
    the model rate."""
    parts = list(decode_windows(model, codes, window_seconds))
    return np.concatenate(parts, axis=1) if parts else np.zeros((np.shape(codes)[0], 0), np.float32)
