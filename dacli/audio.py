"""Audio in and out: reading files in blocks, resampling, loudness (ITU-R BS.1770), writing.

Loudness follows the official DAC tool (audiotools' Meter): K-weighting biquads designed for the
actual rate, 400 ms blocks every 100 ms with the last partial block zero-padded, an absolute gate at
−70 LUFS and a relative gate 10 LU below, channel weights 1, 1, 1, 1.41, 1.41, signals shorter than
0.5 s padded to 0.5 s, and the result clamped at −70 LUFS. The meter is streaming: feed it blocks.

Files libsndfile cannot read (MP4/AAC, WebM, Matroska...) are decoded by :mod:`dacli.media`.
"""

import io
import math
import os
import struct

from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import soundfile as sf
import soxr

from . import media
from .errors import DacliError, first_line
from .fileio import atomic_output, os_reason

PathLike = Union[str, Path]
MIN_LOUDNESS = -70.0
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


def _biquad(kind, gain_db, q, fc, rate):
    a = 10 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * fc / rate
    alpha = math.sin(w0) / (2.0 * q)
    cw = math.cos(w0)
    if kind == "high_shelf":
        sa = 2 * math.sqrt(a) * alpha
        b = [a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - sa)]
        den = [(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - sa]
    else:  # high_pass
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        den = [1 + alpha, -2 * cw, 1 - alpha]
    return np.array(b + den) / den[0]


def k_weighting(rate: int) -> np.ndarray:
    """Second-order sections of the BS.1770 K-weighting filter for ``rate`` Hz."""
    return np.stack([_biquad("high_shelf", 4.0, 1 / math.sqrt(2), 1500.0, rate),
                     _biquad("high_pass", 0.0, 0.5, 38.0, rate)])


class LoudnessMeter:
    """Integrated loudness of a signal fed in blocks of shape (samples, channels)."""

    def __init__(self, rate, channels):
        self.rate, self.channels = rate, channels
        self.sos = k_weighting(rate)
        self.zi = np.zeros((self.sos.shape[0], 2, channels))
        self.block = int(0.4 * rate)
        self.step = int(0.4 * rate * 0.25)
        self.buf = np.zeros((0, channels))
        self.energies = []   # per full block: mean square per channel
        self.length = 0

    @staticmethod
    def load() -> Any:
        """scipy.signal, imported on first use: the command line's light commands never measure
        loudness. An encoder calls this before its first file."""
        import scipy.signal
        return scipy.signal

    def feed(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.channels)
        if not len(x):
            return
        y, self.zi = self.load().sosfilt(self.sos, x, axis=0, zi=self.zi)
        self.length += len(x)
        self.buf = np.concatenate([self.buf, y])
        n = (len(self.buf) - self.block) // self.step + 1 if len(self.buf) >= self.block else 0
        if n > 0:
            self._add_block_energies(self.buf, n)
            self.buf = self.buf[n * self.step:]

    def _add_block_energies(self, y, n):
        sq = np.concatenate([np.zeros((1, self.channels)), np.cumsum(y ** 2, axis=0)])
        starts = np.arange(n) * self.step
        self.energies.append((sq[starts + self.block] - sq[starts]) / self.block)

    def result(self) -> float:
        """Integrated loudness in LUFS (≥ −70)."""
        tail, length = self.buf, self.length
        if length < int(0.5 * self.rate):  # short signals are measured padded to 0.5 s
            tail = np.concatenate([tail, np.zeros((int(0.5 * self.rate) - length, self.channels))])
            length = int(0.5 * self.rate)
        # the last (partial) block is zero-padded, as julius' unfold does
        done = sum(len(e) for e in self.energies)
        total = math.ceil((max(length, self.block) - self.block) / self.step) + 1
        if total > done:
            pad = (total - done - 1) * self.step + self.block - len(tail)
            self._add_block_energies(np.concatenate([tail, np.zeros((max(pad, 0), self.channels))]), total - done)
        z = np.concatenate(self.energies) if self.energies else np.zeros((0, self.channels))
        g = np.array([CHANNEL_WEIGHTS[c] if c < len(CHANNEL_WEIGHTS) else 1.0 for c in range(self.channels)])
        with np.errstate(divide="ignore", invalid="ignore"):
            lb = -0.691 + 10 * np.log10((z * g).sum(1))
            above = lb > -70.0
            if not above.any():
                return MIN_LOUDNESS
            rel = -0.691 + 10 * np.log10((z[above].mean(0) * g).sum()) - 10.0
            gated = above & (lb > rel)
            if not gated.any():
                return MIN_LOUDNESS
            out = -0.691 + 10 * np.log10((z[gated].mean(0) * g).sum())
        return float(max(out, MIN_LOUDNESS))


def loudness(x: np.ndarray, rate: int) -> float:
    """Integrated loudness (LUFS) of a (samples,) or (samples, channels) array."""
    x = np.asarray(x)
    meter = LoudnessMeter(rate, 1 if x.ndim == 1 else x.shape[1])
    meter.feed(x)
    return meter.result()


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """High-quality (soxr VHQ) resampling of a (samples,) or (samples, channels) float array."""
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(np.asarray(x, dtype=np.float32), rate_in, rate_out, quality="VHQ")


def read(path: PathLike, dtype: str = "float32") -> Tuple[np.ndarray, int]:
    """Read a whole audio file → ((samples, channels) array, sample rate). Raises DacliError."""
    try:
        x, rate = sf.read(str(path), dtype=dtype, always_2d=True)
    except Exception as e:
        _media_or_refuse(path, e)
        blocks = list(_finite(path, media.read_blocks(path)))  # libsndfile has refused it: straight to PyAV
        x = np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
        return x.astype(dtype), media.info(path).samplerate
    return x, rate


def info(path: PathLike) -> Any:
    """soundfile's description of an audio file (rate, channels, frames). Raises DacliError."""
    try:
        return sf.info(str(path))
    except Exception as e:
        _media_or_refuse(path, e)
        return media.info(path)


def _media_or_refuse(path: PathLike, e: Exception) -> None:
    """After libsndfile refused ``path`` with ``e``: returns where :mod:`dacli.media` should read it (a
    file FFmpeg opens); else raises the one-line error, libsndfile's reason."""
    if isinstance(e, OSError) and not isinstance(e, sf.LibsndfileError):
        raise DacliError(f"{path}: cannot read audio ({os_reason(e)})") from None
    if not (Path(path).suffix.lower() in media.EXTENSIONS or media.opens(path)):
        raise DacliError(f"{path}: cannot read audio ({sf_reason(e)})") from None


def sf_reason(e: Exception) -> str:
    """libsndfile's complaint in a few words, for a one-line error."""
    msg = first_line(e)
    return msg.replace("Error opening ", "").strip()[:200]


WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # a RIFF size that says "until the stream ends" (what ffmpeg writes to pipes)


def wav_header(rate: int, channels: int, frames: Optional[int]) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file of ``frames`` samples per channel, as libsndfile
    writes it: sent ahead of the samples when the audio goes to a stream that cannot seek. Lengths a
    RIFF size cannot hold (4 GiB) and ``frames=None`` (a stream whose length is not known) get the
    size field's "until the end" value."""
    data = WAV_UNKNOWN_SIZE if frames is None else frames * channels * 2
    riff = 36 + data
    if riff > 0xFFFFFFFF:
        riff = data = WAV_UNKNOWN_SIZE
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16, 1, channels, rate,
                       rate * channels * 2, channels * 2, 16, b"data", data)


def pcm16(y: np.ndarray, rate: int) -> bytes:
    """(samples, channels) float audio as little-endian 16-bit PCM bytes, converted (rounding,
    clipping) by libsndfile itself, so that a stream carries the same samples a written file holds."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=y.shape[1], subtype="PCM_16", format="RAW",
                      endian="LITTLE") as f:
        f.write(y)
    return buf.getvalue()


# Files in blocks

READ_BLOCK = 1 << 16          # samples per read from disk


def read_blocks(path: PathLike, block: int = READ_BLOCK) -> Iterator[np.ndarray]:
    """(samples, channels) float32 blocks of an audio file; refuses NaN and Inf."""
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:
        _media_or_refuse(path, e)
        f = None
    if f is None:
        yield from _finite(path, _reblocked(media.read_blocks(path), block))
        return
    with f:
        yield from _finite(path, _sf_blocks(path, f, block))


def _sf_blocks(path: PathLike, f: sf.SoundFile, block: int) -> Iterator[np.ndarray]:
    while True:
        try:
            x = f.read(block, dtype="float32", always_2d=True)
        except Exception as e:
            raise DacliError(f"{path}: corrupt audio ({sf_reason(e)})") from None
        if not len(x):
            return
        yield x


def _reblocked(frames: Iterable[np.ndarray], block: int) -> Iterator[np.ndarray]:
    """Decoded frames regrouped into blocks of ``block`` samples (the last shorter), as libsndfile's
    reads come: what follows (loudness, resampling) then sees the same cuts, whatever the decoder."""
    pending: List[np.ndarray] = []
    have = 0
    for x in frames:
        pending.append(x)
        have += len(x)
        while have >= block:
            joined = np.concatenate(pending)
            yield joined[:block]
            pending, have = [joined[block:]], have - block
    if have:
        yield np.concatenate(pending)


def _finite(path: PathLike, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for x in blocks:
        if not np.isfinite(x).all():
            raise DacliError(f"{path}: audio contains NaN or infinite samples")
        yield x


def counted(blocks: Iterable[np.ndarray], count: List[int]) -> Iterator[np.ndarray]:
    """Pass blocks through, adding their lengths to ``count[0]``."""
    for x in blocks:
        count[0] += len(x)
        yield x


def resampled(blocks: Iterable[np.ndarray], rate_in: int, rate_out: int, channels: int) -> Iterator[np.ndarray]:
    """Stream-resample (samples, channels) blocks (soxr VHQ; identical to one-shot resampling)."""
    if rate_in == rate_out:
        yield from blocks
        return
    rs = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="VHQ")
    for x in blocks:
        y = rs.resample_chunk(x, last=False)
        if len(y):
            yield y
    y = rs.resample_chunk(np.zeros((0, channels), np.float32), last=True)
    if len(y):
        yield y


def _exactly(blocks, length, channels):
    """(samples, channels) blocks clipped to [-1, 1], cut or padded with silence to ``length`` samples."""
    written = 0
    for y in blocks:
        y = y[:length - written]
        if len(y):
            written += len(y)
            yield np.clip(y, -1.0, 1.0)
    if written < length:
        yield np.zeros((length - written, channels), np.float32)


def write_audio(dst: Union[PathLike, BinaryIO], blocks: Iterable[np.ndarray], rate: int, channels: int, length: int,
                fmt: str, progress: Optional[Callable[[float], None]] = None) -> None:
    """Write (samples, channels) blocks to ``dst``, exactly ``length`` samples: to a file atomically,
    or, where ``dst`` is a binary stream (stdout), as a WAV stream, each block as soon as it is made."""
    if not isinstance(dst, (str, Path)):  # a binary stream
        if fmt.lower() != "wav":
            raise ValueError("only WAV can be written to a stream (its length goes first)")
        dst.write(wav_header(rate, channels, length))
        for y in _exactly(blocks, length, channels):
            dst.write(pcm16(y, rate))
            if progress:
                progress(len(y) / rate)
        dst.flush()
        return
    with atomic_output(dst) as tmp:
        try:
            with sf.SoundFile(tmp, "w", samplerate=rate, channels=channels, subtype="PCM_16",
                              format=fmt.upper()) as f:
                for y in _exactly(blocks, length, channels):
                    f.write(y)
                    if progress:
                        progress(len(y) / rate)
        except sf.LibsndfileError as e:  # libsndfile says only "System error": find out which
            raise DacliError(f"{dst}: cannot write ({_write_failure(tmp) or e})") from None


def _write_failure(path):
    """Why writing to ``path`` fails ('no space left on device', 'file too large', ...), found by
    trying to append to it with Python's own I/O, which keeps the system's error; None if it works.
    A 64 KiB probe: more than a full disk's last partial block can take."""
    try:
        with open(path, "ab") as f:
            f.write(bytes(64 * 1024))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return os_reason(e)
    return None
