"""Streaming: code frames in as they come (an audio LM's output, a live link), the audio that is final
out at once (:class:`StreamDecoder`); live audio in, the codes that are final out (:class:`StreamEncoder`).
Everything returned equals the streamable model's one-pass ``decode`` / ``encode``, bit for bit in
float32, however the input was split. One object carries any number of streams (``streams=N``): each
is pushed, ended and restarted on its own, and gives what it would give alone.

**Per-layer state.** :class:`dacli.runtime.stepping.Steps` runs an encoder or decoder a push at a time
for all the streams of one object, each layer keeping per stream only the inputs its next outputs need:
a push costs the same whatever came before, the state has a fixed size, and the streams of a push
run through each layer in one call, from their first push, whatever each pushes (an encoder takes
whole frames of samples: the rest of a frame waits for its next push).

**Exactness.** Why the outputs are the one pass's bit for bit, alone or beside other streams, and
where they are not (``mixed``, ``bf16``): docs/PERFORMANCE.md, "Exactness".

**Latency.** A decoded sample is final once every convolution on its path has its right-hand inputs:
the decoder's right reach, :func:`latency_frames` (10 frames, 116 ms, for the 44.1 kHz
architectures, whose decoders reach 9.9 frames ahead). A shorter
``lookahead`` trades exactness for delay (:class:`StreamDecoder`).
"""

from typing import Any, Dict, Optional

import numpy as np

from . import codes as codes_type
from .errors import DacliError
from .model.receptive import context_frames


def latency_frames(model) -> int:
    """Frames a streamed decode holds back: a frame's samples are all final once this many frames have
    come after it (:func:`dacli.model.receptive.context_frames` of the decoder)."""
    return context_frames(model, "decoder")


def _stacked(items: Dict[Any, Any], run, cat) -> Dict[Any, Any]:
    """``run`` once on the items (arrays or tensors, rows first) of each shape but the rows, stacked
    along the rows by ``cat`` → {key: its rows of the result}."""
    alike: Dict[tuple, list] = {}
    for k, v in items.items():
        alike.setdefault(tuple(v.shape[1:]), []).append(k)
    out = {}
    for ks in alike.values():
        y, start = run(cat([items[k] for k in ks]) if len(ks) > 1 else items[ks[0]]), 0
        for k in ks:
            out[k], start = y[start:start + items[k].shape[0]], start + items[k].shape[0]
    return out


class _Streams:
    """What both stream objects share: N stream slots, each started by its first push and freed by
    ``end``; a push of several streams is checked whole before any of them moves (a bad one leaves
    every stream as it was); the model streamable from the start until ``flush()``."""

    def __init__(self, model, streams: int, coder: str) -> None:
        if isinstance(streams, bool) or not isinstance(streams, (int, np.integer)) or streams < 1:
            raise DacliError(f"streams must be a whole number from 1, got {streams!r}")
        from .runtime import streaming
        from .runtime.stepping import Steps
        self.model, self.streams, self.ended = model, int(streams), False
        self._slots: Dict[int, Any] = {}
        try:
            self.steps = Steps(getattr(model, coder))  # one for all streams: a push runs them together
            self._scope = streaming(model)  # last in a constructor: nothing after it may fail
        except ValueError as e:
            raise DacliError(str(e)) from None

    def _key(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.streams:
            raise DacliError(f"stream {k!r}: streams are numbered 0 … {self.streams - 1}")
        return int(k)

    def _push_all(self, items: Dict[Any, Any]) -> Dict[int, np.ndarray]:
        if self.ended:
            raise DacliError("push after flush: the stream has ended")
        checked = {}
        for k, item in items.items():  # every stream checked before any moves
            k = self._key(k)
            try:
                checked[k] = self._check(self._slots.get(k), item)
            except DacliError as e:
                raise DacliError(f"stream {k}: {e}" if self.streams > 1 else str(e)) from None
        for k, a in checked.items():
            if k not in self._slots:
                self._slots[k] = self._start(a)
        return self._step(checked)

    def end(self, stream: int) -> np.ndarray:
        """That stream's rest; its slot is free, and its next push starts a new stream."""
        if self.ended:
            raise DacliError("end after flush: the streams have ended")
        k = self._key(stream)
        if k not in self._slots:
            raise DacliError(f"end({k}): stream {k} has not started")
        return self._finish({k: self._slots.pop(k)})[k]

    def held(self, stream: int = 0) -> int:
        """Elements of the tensors a started stream keeps between pushes (the same after any number of
        pushes)."""
        k = self._key(stream)
        if k not in self._slots:
            raise DacliError(f"stream {k} has not started")
        return self.steps.held(k)

    def flush(self):
        """Ends every stream → the rest of each (``streams=1``: that stream's rest, as an array; more:
        ``{stream: rest}`` of those started); the model is then exactly as it was before."""
        if self.ended:
            raise DacliError("flush: the stream has already ended")
        self.ended = True
        try:
            slots, self._slots = self._slots, {}
            rests = self._finish(dict(sorted(slots.items()))) if slots else {}
            if self.streams == 1:
                return rests[0] if slots else self._nothing()
            return rests
        finally:
            self._scope.close()

    # what each kind of stream does: check an input against its slot (None: not started), start a slot,
    # push into started slots ({stream: input} → {stream: output}), end slots ({stream: slot} → {stream:
    # rest}), and what flush() gives when nothing was pushed
    def _check(self, slot: Any, item: Any) -> np.ndarray:
        raise NotImplementedError

    def _start(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    def _step(self, items: Dict[int, np.ndarray]) -> Dict[int, np.ndarray]:
        raise NotImplementedError

    def _finish(self, slots: Dict[int, Any]) -> Dict[int, np.ndarray]:
        raise NotImplementedError

    def _nothing(self) -> np.ndarray:
        raise NotImplementedError

    def _one_or_many(self, items) -> Any:
        if isinstance(items, dict):
            return {k: v for k, v in self._push_all(items).items() if v.shape[-1]}
        if self.streams > 1:
            raise DacliError(f"push {{stream: input}} to a stream object of {self.streams} streams")
        return self._push_all({0: items})[0]


class _DecodeSlot:
    def __init__(self, channels: int, n_codebooks: int) -> None:
        self.channels, self.n_codebooks = channels, n_codebooks
        self.frames = 0    # frames pushed
        self.final = 0     # samples final (computed by the real stream)
        self.returned = 0  # samples returned (ahead of final where lookahead < latency)


class StreamDecoder(_Streams):
    """Decode codes as they come. ``push(codes)`` takes n ≥ 0 new frames, (channels, codebooks, n) (any
    integer array or tensor; (codebooks, n) for one channel), and returns the float32 samples
    (channels, m) that are ready; ``flush()``, once, at the end, the rest. ``n_codebooks``: the codebook
    count of every push (default: that of a stream's first). While it runs the model is
    :func:`dacli.runtime.streamable` (a scope that ``flush()`` ends: the model is then exactly as it
    was, its one-pass results and speed included).

    ``streams=N``: ``push({stream: codes, …})`` takes new frames for any of streams 0 … N − 1 and returns
    ``{stream: samples}`` for those that gave samples; ``end(stream)`` returns that stream's rest and frees
    its slot; ``flush()`` ends them all. Each stream gives what it would give alone, mono and stereo
    mixed (each checked against its own channels and codebooks).

    ``lookahead``: frames a stream waits for before it plays a frame. None (the default) or
    :func:`latency_frames` and more: only final samples are returned, and everything returned, in
    order, equals the streamable model's ``decode`` of all the codes bit for bit in float32 (the plain
    model's within float32 rounding), however they were split.
    Fewer (0 … latency − 1): after N frames the samples up to frame N − lookahead are returned, the
    ones not yet final as the decoder would end them if the stream ended there (its zero padding in
    place of the frames to come): less delay, audio that deviates from the offline decode near every
    push (docs/PERFORMANCE.md, Streaming, tables by how much)."""

    def __init__(self, model, n_codebooks: Optional[int] = None, lookahead: Optional[int] = None,
                 streams: int = 1):
        self.n_codebooks = None if n_codebooks is None else model.check_n_codebooks(n_codebooks)
        self.latency = latency_frames(model)
        if lookahead is not None and (isinstance(lookahead, bool) or not isinstance(lookahead, (int, np.integer))
                                      or not 0 <= lookahead):
            raise DacliError(f"lookahead must be a whole number of frames, 0 … {self.latency}, got {lookahead!r}")
        if lookahead is not None and lookahead > self.latency:
            raise DacliError(f"lookahead must be 0 … {self.latency} frames (the exact one), got {lookahead}")
        self.lookahead = self.latency if lookahead is None else int(lookahead)
        super().__init__(model, streams, "decoder")

    def _check(self, slot: Optional[_DecodeSlot], codes) -> np.ndarray:
        c = codes_type.as_array(codes)
        n = slot.n_codebooks if slot else self.n_codebooks or self.model.check_n_codebooks(c.shape[1])
        if c.shape[1] != n:
            raise DacliError(f"codes: this push has {c.shape[1]} codebooks, the stream {n}")
        codes_type.check(c, self.model.n_codebooks, self.model.codebook_size, channels=slot.channels if slot else None)
        return c

    def _start(self, c: np.ndarray) -> _DecodeSlot:
        return _DecodeSlot(c.shape[0], c.shape[1])

    def _decode(self, codes: Dict[int, np.ndarray], last: bool) -> Dict[int, np.ndarray]:
        """The samples the codes of each slot make final, all slots in one push of the layers (the
        codes of slots alike turned to latents in one call)."""
        import torch

        from .windows import latents
        with torch.inference_mode():
            z = _stacked(codes, lambda c: latents(self.model, c, self.steps.in_channels), np.concatenate)
            out = self.steps.push(z, last=list(z) if last else ())
            return {k: y[:, 0].cpu().numpy() for k, y in out.items()}

    def _emit(self, ys: Dict[int, np.ndarray], slots: Dict[int, _DecodeSlot], last: bool) -> Dict[int, np.ndarray]:
        """Of each slot's next final samples, those not yet returned; with a short lookahead, then the
        samples up to its point as ending a copy of the stream gives them (the copies of all slots
        that need one ended in one push)."""
        out, ahead = {}, {}
        for k, y in ys.items():
            s = slots[k]
            first, s.final = s.final, s.final + y.shape[-1]
            out[k] = [y[:, max(0, s.returned - first):]]
            s.returned = max(s.returned, s.final)
            end = (s.frames - self.lookahead) * self.model.hop_length
            if not last and end > s.returned:
                ahead[k] = end
        if ahead:
            for k in ahead:
                self.steps.copy(k, -1 - k)  # slots below 0: copies of stream k
            tails = self._decode({-1 - k: self._empty(slots[k]) for k in ahead}, last=True)
            for k, end in ahead.items():
                self.steps.end(-1 - k)
                s = slots[k]
                out[k].append(tails[-1 - k][:, s.returned - s.final:end - s.final])
                s.returned += out[k][-1].shape[-1]
        return {k: np.concatenate(parts, -1) if len(parts) > 1 else parts[0] for k, parts in out.items()}

    def _empty(self, s: _DecodeSlot) -> np.ndarray:
        return np.zeros((s.channels, s.n_codebooks, 0), np.int32)

    def _step(self, items: Dict[int, np.ndarray]) -> Dict[int, np.ndarray]:
        live = {k: c for k, c in items.items() if c.shape[-1]}
        for k, c in live.items():
            self._slots[k].frames += c.shape[-1]
        out = self._emit(self._decode(live, last=False), self._slots, last=False) if live else {}
        return {k: out.get(k, np.zeros((c.shape[0], 0), np.float32)) for k, c in items.items()}

    def _finish(self, slots: Dict[int, _DecodeSlot]) -> Dict[int, np.ndarray]:
        try:
            return self._emit(self._decode({k: self._empty(s) for k, s in slots.items()}, last=True), slots, last=True)
        finally:
            for k in slots:
                self.steps.end(k)

    def _nothing(self) -> np.ndarray:
        return np.zeros((0, 0), np.float32)

    def push(self, codes):
        """New frames in, the samples (channels, m) they make ready out (``{stream: codes}`` in,
        ``{stream: samples}`` out, for several streams)."""
        return self._one_or_many(codes)


class _EncodeSlot:
    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.waiting = np.zeros((channels, 0), np.float32)  # the samples of a frame not yet whole


class StreamEncoder(_Streams):
    """Encode live audio. ``push(samples)`` takes n ≥ 0 new samples at the model rate, (channels, n) or
    (n,) for one channel, any float array or tensor, and returns the int32 codes (channels,
    n_codebooks, m) that are final now; ``flush()``, once, at the end, the rest (the last frame padded
    with zeros, as ``model.encode`` pads). Everything returned, in order, equals the streamable model's
    ``encode`` of all the samples times the gain, exactly in float32, however they were split. A live
    stream cannot be loudness-normalised before it ends: ``gain_db`` is fixed (0: as they come).
    ``streams=N``, ``end`` and the model's scope as for :class:`StreamDecoder`."""

    def __init__(self, model, n_codebooks: Optional[int] = None, gain_db: float = 0.0, streams: int = 1):
        from .audio import db_to_gain
        self.n_codebooks = model.check_n_codebooks(n_codebooks)
        if not np.isfinite(gain_db):
            raise DacliError(f"gain_db must be a finite number of dB, got {gain_db}")
        self.gain = np.float32(db_to_gain(gain_db))
        super().__init__(model, streams, "encoder")

    def _check(self, slot: Optional[_EncodeSlot], samples) -> np.ndarray:
        if hasattr(samples, "detach"):
            samples = samples.detach().cpu().numpy()
        a = np.asarray(samples)
        if a.dtype.kind not in "fiu":
            raise DacliError(f"samples must be numbers, not {a.dtype}")
        a = a.reshape(1, -1) if a.ndim == 1 else a
        if a.ndim != 2:
            raise DacliError(f"samples must be (channels, n) or (n,), got shape {a.shape}")
        if slot is not None and a.shape[0] != slot.channels:
            raise DacliError(f"samples: this push has {a.shape[0]} channels, the stream {slot.channels}")
        if not np.isfinite(a).all():
            raise DacliError("samples: not finite (NaN or infinity)")
        return a.astype(np.float32) * self.gain

    def _start(self, a: np.ndarray) -> _EncodeSlot:
        return _EncodeSlot(a.shape[0])

    def _encode(self, samples: Dict[int, np.ndarray], last: bool) -> Dict[int, np.ndarray]:
        """The codes the samples of each slot make final, all slots in one push of the layers (the
        latents of the same length quantized in one call)."""
        import torch
        m = self.model
        with torch.inference_mode():
            z = self.steps.push({k: torch.from_numpy(np.ascontiguousarray(a))[:, None].to(m.device)
                                 for k, a in samples.items()}, last=list(samples) if last else ())

            def codes(latent):
                if not latent.shape[-1]:
                    return np.zeros((latent.shape[0], self.n_codebooks, 0), np.int32)
                return m.quantizer(latent, self.n_codebooks)[1].to(torch.int32).cpu().numpy()
            return _stacked(z, codes, torch.cat)

    def _step(self, items: Dict[int, np.ndarray]) -> Dict[int, np.ndarray]:
        """The encoder takes whole frames of samples (its layers then hold the same lengths in every
        slot, and all slots share each call): a frame's samples wait until it is whole."""
        hop, live = self.model.hop_length, {}
        for k, a in items.items():
            s = self._slots[k]
            a = np.concatenate([s.waiting, a], -1) if s.waiting.shape[-1] else a
            whole = a.shape[-1] - a.shape[-1] % hop
            live[k], s.waiting = a[:, :whole], a[:, whole:].copy()  # not a view that keeps the push alive
        out = self._encode({k: a for k, a in live.items() if a.shape[-1]}, last=False)
        return {k: out.get(k, np.zeros((a.shape[0], self.n_codebooks, 0), np.int32)) for k, a in items.items()}

    def _finish(self, slots: Dict[int, _EncodeSlot]) -> Dict[int, np.ndarray]:
        rest = {k: np.concatenate([s.waiting, np.zeros((s.channels, -s.waiting.shape[-1] % self.model.hop_length),
                                                       np.float32)], -1)
                for k, s in slots.items()}  # the last frame padded, as encode pads
        try:
            return self._encode(rest, last=True)
        finally:
            for k in slots:
                self.steps.end(k)

    def _nothing(self) -> np.ndarray:
        return np.zeros((0, self.n_codebooks, 0), np.int32)

    def push(self, samples):
        """New samples in, the codes (channels, n_codebooks, m) they make final out (``{stream:
        samples}`` in, ``{stream: codes}`` out, for several streams)."""
        return self._one_or_many(samples)
