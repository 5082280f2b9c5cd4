"""From audio files to codes and back, window by window, in bounded memory.

Encoding: a first streaming pass measures loudness (BS.1770) and peak; a second pass resamples to the
model rate, applies the gain, and encodes **overlap-save windows**: each window of ``W`` frames is
encoded with ``C`` frames of real context on both sides (C covers the encoder's receptive field,
computed from the model's layers) and only its centre frames are kept. Every frame therefore sees the
same input a one-pass encode would show it, and the file holds exactly ceil(L / hop) frames. The
codes depend on the window size only through float rounding (convolutions of other lengths sum in
another order, which can tip a near-tie between two codebook entries): in fp32, not at all on the CPUs
measured; in bfloat16 ("mixed") a few % of codes (docs/PERFORMANCE.md; tests/test_precision.py holds
each precision's bound). Decoding works the same way on code frames. Many files at once:
:mod:`dacli.packing` encodes the windows of short files together, with these codes.

torch and the model's classes are imported inside the functions that run the model, so that the
command line can read this module's defaults without starting torch.
"""

import math
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Optional, Tuple, Union

import numpy as np

from . import audio, container, legacy
from .bandwidth import BandwidthMeter, LowPass
from .errors import DacliError
from .model.receptive import decoder_context, encoder_context
from .registry import bundled_version, describe_weights
from .runtime.process import release_memory

if TYPE_CHECKING:
    from .model import DAC

Progress = Optional[Callable[[float], None]]  # called with the seconds of audio just done

TARGET_LOUDNESS = -16.0
# Window lengths (seconds; results do not depend on them, see default_batch for the measurements).
# The decoder drops its context early (Decoder.cropped), so short windows cost it nothing: 60 s mono,
# fp32, 2 CPU cores: decode 22.8 / 22.7 / 23.1 s at 1 / 1.5 / 2 s windows, peak RSS 1204 / 1356 /
# 1464 MiB. The encoder carries its context to the end: encode 13.2 / 12.5 / 12.5 s.
ENCODE_CHUNK_SECONDS = 2.0
DECODE_CHUNK_SECONDS = 1.0


# --------------------------------------------------------------------------------------------------
# Receptive fields and windows


def window_frames(model: "DAC", chunk_seconds: Optional[float], default: float) -> int:
    """Frames per window for ``chunk_seconds`` (None: ``default``)."""
    if chunk_seconds is None:
        chunk_seconds = default
    if not chunk_seconds or chunk_seconds <= 0:
        raise DacliError("--chunk-seconds must be positive")
    return max(1, int(round(chunk_seconds * model.sample_rate / model.hop_length)))


def windows(frames: int, width: int, context: int, start: int = 0) -> Iterator[Tuple[int, int, int, int]]:
    """The overlap-save windows of a signal of ``frames`` frames, from frame ``start`` on: (first kept
    frame s, frames kept w, first frame computed a, end b), ``width`` frames kept per window and up to
    ``context`` frames on each side."""
    for s in range(start, frames, width):
        w = min(width, frames - s)
        yield s, w, max(0, s - context), min(frames, s + w + context)


def default_batch(device) -> int:
    """Rows (channel windows) per forward pass: one on CPU, where batching does not speed convolutions
    up but multiplies activation memory (measured, full-size 44.1 kHz model, stereo: batch 2 peaks at
    3.2 GB against 1.4 GB); several on CUDA, where one larger call keeps the GPU busy (not measured
    here: no GPU). Window lengths: see ENCODE_CHUNK_SECONDS (encode: 0.22 s per audio second at 1.5,
    2 and 3 s windows, stereo, peak RSS 0.99 / 1.03 / 1.34 GB)."""
    import torch
    return 16 if torch.device(device).type == "cuda" else 1


def _batched(fn, windows, batch, keys=None):
    """Apply ``fn`` to the rows of every (rows, ...) tensor of ``windows``, stacking up to ``batch``
    rows of equal shape (and equal ``keys[i]``, passed to ``fn``) per call; rows of consecutive
    windows may share a call → one output per window."""
    import torch
    keys = keys or [None] * len(windows)
    rows = [(i, r) for i, w in enumerate(windows) for r in range(w.shape[0])]
    outs: list = [[None] * w.shape[0] for w in windows]
    k = 0
    while k < len(rows):
        kind = (windows[rows[k][0]].shape[1:], keys[rows[k][0]])
        j = k + 1
        while j < len(rows) and j - k < batch and (windows[rows[j][0]].shape[1:], keys[rows[j][0]]) == kind:
            j += 1
        with torch.inference_mode():
            y = fn(torch.stack([windows[i][r] for i, r in rows[k:j]]), kind[1])
        for (i, r), yy in zip(rows[k:j], y):
            outs[i][r] = yy
        k = j
        release_memory()
    return [torch.stack(o) for o in outs]


class WindowEncoder:
    """Streaming overlap-save encoder: ``feed`` (channels, n) audio at the model rate, already gained;
    it returns the code frames completed so far as (channels, n_codebooks, frames) arrays."""

    def __init__(self, model, channels, total_samples, n_codebooks, chunk_seconds=None,
                 batch=None):
        self.model, self.n_codebooks, self.channels = model, n_codebooks, channels
        self.batch = batch or default_batch(model.device)
        self.hop = model.hop_length
        self.frames = math.ceil(total_samples / self.hop)
        self.padded = self.frames * self.hop  # the one-pass encode zero-pads to a hop multiple
        self.W, self.C = window_frames(model, chunk_seconds, ENCODE_CHUNK_SECONDS), encoder_context(model)
        self.buf = np.zeros((channels, 0), np.float32)
        self.buf_start = 0     # sample index of buf[:, 0]
        self.received = 0
        self.next = 0          # first frame of the next window

    def feed(self, x, last=False):
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)], axis=1)
        self.received += x.shape[1]
        if last:
            if self.received > self.padded:
                raise DacliError("the audio grew while it was being read")
            self.buf = np.pad(self.buf, ((0, 0), (0, self.padded - self.received)))
            self.received = self.padded
        import torch
        ready = []  # (first frame, frames kept, offset of the first kept frame, audio (channels, 1, n))
        nxt = self.next
        for s, w, a, b in windows(self.frames, self.W, self.C, self.next):
            if b * self.hop > self.received:
                break
            seg = self.buf[:, a * self.hop - self.buf_start:b * self.hop - self.buf_start]
            ready.append((s, w, s - a, torch.from_numpy(np.ascontiguousarray(seg))[:, None]))
            nxt = s + w
        if not ready or (not last and len(ready) * self.channels < self.batch and nxt < self.frames):
            return []  # wait for more windows to fill a batch
        dev = self.model.device
        codes = _batched(lambda x, _: self.model.encode_batch(x.to(dev), self.n_codebooks).cpu(),
                         [r[3] for r in ready], self.batch)
        self.next = nxt
        keep = max(0, self.next - self.C) * self.hop
        self.buf = self.buf[:, keep - self.buf_start:]
        self.buf_start = keep
        return [c[:, :, off:off + w].numpy().astype(np.int32) for (s, w, off, _), c in zip(ready, codes)]


def decode_windows(model: "DAC", codes: np.ndarray, chunk_seconds: Optional[float] = None,
                   batch: Optional[int] = None) -> Iterator[np.ndarray]:
    """Overlap-save decoding: yields (channels, n) float32 audio at the model rate, in order. Each
    window of W frames is decoded with C frames of context on both sides; the decoder drops the
    context layer by layer once it no longer reaches the kept samples (``Decoder.cropped``)."""
    import torch
    all_codes = torch.as_tensor(np.asarray(codes, np.int32))  # widened to int64 one window at a time
    frames, channels = all_codes.shape[-1], all_codes.shape[0]
    W, C = window_frames(model, chunk_seconds, DECODE_CHUNK_SECONDS), decoder_context(model)
    batch = batch or default_batch(model.device)
    per_call = max(1, batch // max(1, channels))  # windows per forward pass
    plan = list(windows(frames, W, C))
    for g in range(0, len(plan), per_call):
        codes_in, keeps = [], []
        for s, w, a, b in plan[g:g + per_call]:
            codes_in.append(all_codes[:, :, a:b].long())
            keeps.append((s - a, s - a + w))
        ys = _batched(lambda c, keep: model.decode_batch(c.to(model.device), keep)[:, 0].float().cpu(),
                      codes_in, batch, keeps)
        yield from (y.numpy() for y in ys)


def encode_array(model: "DAC", x: np.ndarray, n_codebooks: Optional[int] = None,
                 chunk_seconds: Optional[float] = None) -> np.ndarray:
    """Windowed encode of (channels, samples) audio at the model rate → (channels, n, frames) int32."""
    x = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
    enc = WindowEncoder(model, x.shape[0], x.shape[1], model.check_n_codebooks(n_codebooks), chunk_seconds)
    parts = enc.feed(x, last=True)
    return np.concatenate(parts, axis=2) if parts else np.zeros((x.shape[0], enc.n_codebooks, 0), np.int32)


def decode_array(model: "DAC", codes: np.ndarray, chunk_seconds: Optional[float] = None) -> np.ndarray:
    """Windowed decode of (channels, n, frames) codes → (channels, samples) audio at the model rate."""
    parts = list(decode_windows(model, codes, chunk_seconds))
    return np.concatenate(parts, axis=1) if parts else np.zeros((np.shape(codes)[0], 0), np.float32)


# --------------------------------------------------------------------------------------------------
# Files


def measure(path: container.PathLike, model_rate: int) -> Tuple[int, int, int, int, float, float, int]:
    """First pass: (sample rate, channels, input length, model-rate length, loudness, model-rate peak,
    bandwidth at the model rate in Hz, 0 for full band)."""
    info = audio.info(path)
    if not container.MIN_SAMPLE_RATE <= info.samplerate <= container.MAX_SAMPLE_RATE:
        raise DacliError(f"{path}: sample rate {info.samplerate} Hz is outside what dacli resamples "
                         f"({container.MIN_SAMPLE_RATE}-{container.MAX_SAMPLE_RATE} Hz)")
    if not 1 <= info.channels <= container.MAX_CHANNELS:
        raise DacliError(f"{path}: {info.channels} channels (at most {container.MAX_CHANNELS})")
    meter = audio.LoudnessMeter(model_rate, info.channels)
    band = BandwidthMeter(model_rate, info.channels)
    n_in, n_model, peak = [0], 0, 0.0
    for y in audio.resampled(audio.counted(audio.read_blocks(path), n_in), info.samplerate, model_rate, info.channels):
        meter.feed(y)
        band.feed(y)
        n_model += len(y)
        peak = max(peak, float(np.abs(y).max()))
    if n_in[0] == 0:
        raise DacliError(f"{path}: the file holds no audio")
    return info.samplerate, info.channels, n_in[0], n_model, meter.result(), peak, band.result()


def check_bandwidth(bandwidth: Union[str, int], model_rate: int) -> Union[str, int]:
    """``bandwidth`` as :func:`encode_file` takes it: "auto", "full", or Hz up to
    :func:`container.max_bandwidth`."""
    if bandwidth in ("auto", "full"):
        return bandwidth
    try:
        hz = int(bandwidth)
    except (TypeError, ValueError):
        hz = 0
    if not 1 <= hz <= container.max_bandwidth(model_rate) or str(hz) != str(bandwidth).strip():
        raise DacliError(f"bandwidth {bandwidth!r}: give auto, full, or a whole number of Hz from 1 to "
                         f"{container.max_bandwidth(model_rate)} (the model codes at {model_rate} Hz)")
    return hz


def plan_file(model: "DAC", src: container.PathLike, n_codebooks: int,
              bandwidth: Union[str, int] = "auto") -> container.Header:
    """The first pass over an input: the header its .dac file will have (loudness, gain, bandwidth,
    lengths; ``n_codebooks`` and ``bandwidth`` checked by the caller)."""
    rate, channels, n_in, n_model, loud, peak, measured = measure(src, model.sample_rate)
    if bandwidth == "auto":
        bandwidth_hz = measured if measured <= container.max_bandwidth(model.sample_rate) else 0
    else:
        bandwidth_hz = 0 if bandwidth == "full" else int(bandwidth)
    gain_db = TARGET_LOUDNESS - loud
    if peak * audio.db_to_gain(gain_db) > 1.0:  # peak-limit: one gain for all channels, recorded
        gain_db = -20 * math.log10(peak)
    if not abs(gain_db) <= container.MAX_GAIN_DB:
        raise DacliError(f"{src}: the audio's level is out of range (peak {peak:.3g})")
    return container.Header(
        model_sample_rate=model.sample_rate, hop_length=model.hop_length, original_sample_rate=rate,
        channels=channels, n_codebooks=n_codebooks, bits_per_code=int(round(model.bits_per_code)),
        original_length=n_in, model_length=n_model, n_frames=math.ceil(n_model / model.hop_length),
        input_loudness=loud, gain_db=gain_db, model_hash=bytes.fromhex(model.weights_hash),
        model_name=model.name or "", bandwidth_hz=bandwidth_hz)


def model_input(src: container.PathLike, header: container.Header) -> Iterator[np.ndarray]:
    """The second pass: the input at the model rate with the header's gain applied, as (channels, n)
    float32 blocks; refuses a file that changed since :func:`plan_file` read it."""
    g = np.float32(audio.db_to_gain(header.gain_db))
    n_seen, n_model = [0], 0
    for y in audio.resampled(audio.counted(audio.read_blocks(src), n_seen), header.original_sample_rate,
                             header.model_sample_rate, header.channels):
        n_model += len(y)
        if n_model > header.model_length:
            raise DacliError(f"{src}: the file changed while it was being read")
        yield y.T * g
    if n_seen[0] != header.original_length or n_model != header.model_length:
        raise DacliError(f"{src}: the file changed while it was being read "
                         f"({header.original_length} then {n_seen[0]} samples)")


def encode_file(model: "DAC", src: container.PathLike, dst: container.PathLike, n_codebooks: Optional[int] = None,
                chunk_seconds: Optional[float] = None, progress: Progress = None,
                bandwidth: Union[str, int] = "auto") -> container.Header:
    """Encode an audio file into a .dac container (atomically), streaming it window by window.
    ``progress(seconds)`` is called as audio is encoded. ``bandwidth``: "auto" records where the
    input's spectrum ends, if it ends well below Nyquist, so that decoding low-passes there; "full"
    records none; a number of Hz records that. Returns the header written. Many files at once:
    :class:`dacli.packing.FilesEncoder`."""
    header = plan_file(model, src, model.check_n_codebooks(n_codebooks), check_bandwidth(bandwidth, model.sample_rate))
    return encode_planned(model, src, dst, header, chunk_seconds, progress)


def encode_planned(model: "DAC", src: container.PathLike, dst: container.PathLike, header: container.Header,
                   chunk_seconds: Optional[float] = None, progress: Progress = None) -> container.Header:
    """:func:`encode_file` once :func:`plan_file` has given the header."""
    enc = WindowEncoder(model, header.channels, header.model_length, header.n_codebooks, chunk_seconds)
    parts = []
    for y in model_input(src, header):
        parts += enc.feed(y)
        if progress:
            progress(y.shape[1] / model.sample_rate)
    parts += enc.feed(np.zeros((header.channels, 0), np.float32), last=True)
    container.write(dst, header, np.concatenate(parts, axis=2))
    return header


def describe_file(path: container.PathLike) -> dict:
    """What ``dacli info`` shows of a .dac file, ours or the official tool's."""
    return legacy.describe(path) if legacy.is_legacy(path) else container.describe(path)


def seconds(path: container.PathLike) -> float:
    """Seconds of audio in an audio file or one of our .dac files, for progress (0 when unknown)."""
    try:
        if str(path).lower().endswith(".dac") and not legacy.is_legacy(path):
            return container.read_header(path).duration
        i = audio.info(path)
        return i.frames / i.samplerate if i.samplerate else 0.0
    except DacliError:
        return 0.0


def check_model(model: "DAC", header: container.Header, path: container.PathLike) -> None:
    """Refuse a file that this model cannot decode: other weights, rates, codebook size or count."""
    if model.weights_hash != header.model_hash.hex():
        earlier = bundled_version(header.model_hash.hex())
        if earlier is not None:  # an earlier (or later) version of the bundled model
            raise DacliError(f"{path}: made with {describe_weights(earlier)}; "
                             f"this model is {model.name}")
        raise DacliError(f"{path}: encoded with model {header.model_name!r} (weights {header.model_hash.hex()[:12]}), "
                         f"not with {model.name!r} ({model.weights_hash[:12]}); decode with --model pointing at it")
    if model.sample_rate != header.model_sample_rate or model.hop_length != header.hop_length:
        raise DacliError(f"{path}: model rates do not match the file")
    if 2 ** header.bits_per_code != model.codebook_size or header.n_codebooks > model.n_codebooks:
        raise DacliError(f"{path}: {header.n_codebooks} codebooks of {2 ** header.bits_per_code} codes do not fit "
                         f"the model's {model.n_codebooks} of {model.codebook_size}")


def decode_file(model: "DAC", src: container.PathLike, dst: Union[container.PathLike, BinaryIO], fmt: str = "wav",
                chunk_seconds: Optional[float] = None, progress: Progress = None) -> Union[container.Header, "legacy.LegacyFile"]:
    """Decode a .dac container (ours or the official tool's) to an audio file, atomically, or to a
    binary stream such as stdout as WAV, streamed window by window (on an error the stream stops short).
    Low-passed at the bandwidth the file records, if any (docs/FORMAT.md, "Decoding")."""
    if legacy.is_legacy(src):
        return legacy.decode_file(model, src, dst, fmt)
    header, codes = container.read(src)
    check_model(model, header, src)
    g = np.float32(audio.db_to_gain(-header.gain_db))

    def model_rate():
        done = 0
        for y in decode_windows(model, codes, chunk_seconds):
            y = y[:, :header.model_length - done]
            done += y.shape[1]
            yield (y * g).T
        if done < header.model_length:  # odd-stride models give a few samples fewer
            yield np.zeros((header.model_length - done, header.channels), np.float32)

    def band_limited(blocks):
        lowpass = LowPass(header.bandwidth_hz, header.model_sample_rate, header.channels)
        for y in blocks:
            yield lowpass.feed(y)
        yield lowpass.feed(np.zeros((0, header.channels), np.float32), last=True)

    blocks = band_limited(model_rate()) if header.bandwidth_hz else model_rate()
    blocks = audio.resampled(blocks, header.model_sample_rate, header.original_sample_rate, header.channels)
    audio.write_audio(dst, blocks, header.original_sample_rate, header.channels, header.original_length, fmt,
                      progress)
    return header
