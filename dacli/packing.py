"""Encoding the windows of many files together, in rows of one fixed shape.

A corpus of short files gives the encoder a new input length per file, and the convolutions are set
up again for each (and a GPU idles between small calls). The :class:`Packer` lays the windows of
several files side by side in rows of ``W + 2C`` frames (a full window with its context, see
:mod:`dacli.codec`), ``batch`` rows per call, so every call has the same shape. Each window starts on
a hop boundary, windows are kept :func:`gap_frames` apart, and after every convolution the
activations outside the windows are set to zero (:func:`masked`): at every layer a window sees zeros
beyond its edges, exactly what the convolutions' own zero padding shows it when it is encoded alone.
In float32 the codes are therefore those of encoding each file alone, bit for bit (the tests compare
them with :func:`dacli.codec.encode_file`). bfloat16 kernels round differently at different places
of a row, so in the other precisions a row holds one window (still one shape for every call): a
file's codes then never depend on the files that share its batch.

:class:`FilesEncoder` does this for audio files: short ones are read whole and packed, long ones
stream through their own windows (bounded memory), and each output is written atomically once all
its windows are done.
"""

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Hashable, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import codec, container
from .model.receptive import convolutions, encoder_context

if TYPE_CHECKING:
    from .model import DAC

SPARE_ROWS = 8  # rows kept open beyond a call's worth, so that a window finds room in one of them (326 real
# clips of 1-20 s: rows 93.5 % full with 3, 94.7 % with 8, 95.1 % with 16)


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


@dataclass
class _Pending:
    """A file being encoded: its codes so far and how many windows are still to come."""
    codes: np.ndarray
    left: int


@dataclass
class _Piece:
    """One channel of one window: ``audio`` (frames a..b of the file) goes into a row at frame
    ``start``; its frames from ``keep`` on, ``w`` of them, are the file's frames from ``s`` on."""
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
    """Encodes files given as whole arrays (``add``); returns each file's codes once all its windows
    have been through the model. ``flush`` encodes what is left. Rows run ``batch`` at a time, as
    soon as that many are full (or when more are open than a call and :data:`SPARE_ROWS` hold)."""

    def __init__(self, model: "DAC", n_codebooks: int, width: int, batch: int) -> None:
        self.model, self.n_codebooks, self.batch = model, n_codebooks, batch
        self.hop = model.hop_length
        self.width, self.context = width, encoder_context(model)
        self.row_frames = width + 2 * self.context
        self.gap = gap_frames(model)
        self.rows: List[_Row] = []
        self.pending: Dict[Hashable, _Pending] = {}
        self.calls = 0  # model calls so far
        self.share = model.precision == "fp32"

    def add(self, key: Hashable, x: np.ndarray) -> List[Tuple[Hashable, np.ndarray]]:
        """Queue the (channels, samples) float32 audio of a file at the model rate (gain applied) →
        the files completed meanwhile, as (key, (channels, n_codebooks, frames) int32 codes)."""
        channels, n = x.shape
        frames = math.ceil(n / self.hop)
        padded = np.zeros((channels, frames * self.hop), np.float32)  # a one-pass encode pads so too
        padded[:, :n] = x
        plan = list(codec.windows(frames, self.width, self.context))
        self.pending[key] = _Pending(np.zeros((channels, self.n_codebooks, frames), np.int32), len(plan) * channels)
        done = [(key, self.pending.pop(key).codes)] if not plan else []
        for s, w, a, b in plan:
            for ch in range(channels):
                done += self._place(_Piece(key, ch, s, w, s - a, padded[ch, a * self.hop:b * self.hop]))
        return done

    def flush(self) -> List[Tuple[Hashable, np.ndarray]]:
        """Encode every open row → the files completed."""
        done = []
        while self.rows:
            done += self._run(self._fullest())
        return done

    def _fullest(self) -> List[_Row]:
        return sorted(self.rows, key=lambda r: -r.used)[:self.batch]

    def _place(self, piece: _Piece) -> List[Tuple[Hashable, np.ndarray]]:
        size = len(piece.audio) // self.hop
        row = next((r for r in self.rows if self._start(r) + size <= self.row_frames), None)
        done = []
        if row is None:
            if len(self.rows) >= self.batch + SPARE_ROWS:
                done += self._run(self._fullest())
            row = _Row()
            self.rows.append(row)
        piece.start = self._start(row)
        row.pieces.append(piece)
        row.used = piece.start + size
        full = [r for r in self.rows if not self.share or r.used + self.gap >= self.row_frames]
        if len(full) >= self.batch:
            done += self._run(full[:self.batch])
        return done

    def _start(self, row: _Row) -> int:
        """Where the next piece would start in ``row`` (past the end when rows are not shared)."""
        if not row.pieces:
            return 0
        return row.used + self.gap if self.share else self.row_frames

    def _run(self, rows: List[_Row]) -> List[Tuple[Hashable, np.ndarray]]:
        """Encode ``rows`` (with empty ones up to ``batch``: one shape for every call) → the files
        completed."""
        import torch
        for r in rows:
            self.rows.remove(r)
        n = self.row_frames * self.hop
        x = torch.zeros(self.batch, 1, n)
        valid = torch.zeros(self.batch, n, dtype=torch.bool)
        for i, r in enumerate(rows):
            for p in r.pieces:
                lo, hi = p.start * self.hop, p.start * self.hop + len(p.audio)
                x[i, 0, lo:hi] = torch.from_numpy(p.audio)
                valid[i, lo:hi] = True
        mask = masked(self.model.encoder, valid) if not bool(valid.all()) else contextlib.nullcontext()
        with torch.inference_mode(), mask:
            codes = self.model.encode_batch(x.to(self.model.device), self.n_codebooks).cpu().numpy()
        self.calls += 1
        done = []
        for i, r in enumerate(rows):
            for p in r.pieces:
                f = self.pending[p.key]
                f.codes[p.channel, :, p.s:p.s + p.w] = codes[i, :, p.start + p.keep:p.start + p.keep + p.w]
                f.left -= 1
                if f.left == 0:
                    done.append((p.key, self.pending.pop(p.key).codes))
        return done


# --------------------------------------------------------------------------------------------------
# Files

PACK_SECONDS = 60.0  # inputs up to this long are read whole and packed; longer ones stream on their own
Outcome = Tuple[Hashable, Optional[container.Header], Optional[Exception]]  # (key, header written, or error)


class FilesEncoder:
    """Encodes many audio files into .dac files (each written atomically once all its windows are
    done), packing the windows of short files into shared rows. ``submit`` and ``finish`` return
    the outcomes of the files completed meanwhile, in no particular order: (key, header, None), or
    (key, None, the exception) for a file that failed; the other files go on."""

    def __init__(self, model: "DAC", n_codebooks: Optional[int] = None, chunk_seconds: Optional[float] = None,
                 bandwidth: Union[str, int] = "auto", batch: Optional[int] = None) -> None:
        self.model, self.chunk_seconds = model, chunk_seconds
        self.n_codebooks = model.check_n_codebooks(n_codebooks)
        self.bandwidth = codec.check_bandwidth(bandwidth, model.sample_rate)
        width = codec.window_frames(model, chunk_seconds, codec.ENCODE_CHUNK_SECONDS)
        self.packer = Packer(model, self.n_codebooks, width, batch or codec.default_batch(model.device))
        self.waiting: Dict[Hashable, Tuple[container.PathLike, container.Header]] = {}

    def submit(self, key: Hashable, src: container.PathLike, dst: container.PathLike,
               progress: codec.Progress = None) -> List[Outcome]:
        """Start on ``src`` → the outcomes of the files completed meanwhile (``src``'s own, if it
        failed or was long enough to be encoded on its own: ``progress`` follows those)."""
        try:
            header = codec.plan_file(self.model, src, self.n_codebooks, self.bandwidth)
            if header.model_length > PACK_SECONDS * self.model.sample_rate:
                return [(key, codec.encode_planned(self.model, src, dst, header, self.chunk_seconds, progress), None)]
            x = np.concatenate(list(codec.model_input(src, header)), axis=1)
        except Exception as e:
            return [(key, None, e)]
        self.waiting[key] = (dst, header)
        return self._completed(lambda: self.packer.add(key, x))

    def finish(self) -> List[Outcome]:
        """Encode what is still queued → the outcomes of those files."""
        return self._completed(self.packer.flush)

    def _completed(self, step) -> List[Outcome]:
        try:
            done = step()
        except Exception as e:  # the model failed (memory...): every queued file fails, the next go on
            self.packer.rows.clear()
            self.packer.pending.clear()
            failed, self.waiting = list(self.waiting), {}
            return [(key, None, e) for key in failed]
        out: List[Outcome] = []
        for key, codes in done:
            dst, header = self.waiting.pop(key)
            try:
                container.write(dst, header, codes)
                out.append((key, header, None))
            except Exception as e:
                out.append((key, None, e))
        return out
