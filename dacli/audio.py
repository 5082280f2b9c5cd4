"""Audio in and out: reading files in blocks, resampling, and loudness (ITU-R BS.1770).

Loudness follows the official DAC tool (audiotools' Meter): K-weighting biquads designed for the
actual rate, 400 ms blocks every 100 ms with the last partial block zero-padded, an absolute gate at
−70 LUFS and a relative gate 10 LU below, channel weights 1, 1, 1, 1.41, 1.41, signals shorter than
0.5 s padded to 0.5 s, and the result clamped at −70 LUFS. The meter is streaming: feed it blocks.
"""

import io
import math
import struct

import numpy as np
import soundfile as sf
import soxr

from .errors import DacliError

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


def k_weighting(rate):
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

    def feed(self, x):
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.channels)
        if not len(x):
            return
        import scipy.signal  # on use: the command line's light commands never measure loudness
        y, self.zi = scipy.signal.sosfilt(self.sos, x, axis=0, zi=self.zi)
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

    def result(self):
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


def loudness(x, rate):
    """Integrated loudness (LUFS) of a (samples,) or (samples, channels) array."""
    x = np.asarray(x)
    meter = LoudnessMeter(rate, 1 if x.ndim == 1 else x.shape[1])
    meter.feed(x)
    return meter.result()


def db_to_gain(db):
    return 10.0 ** (db / 20.0)


def resample(x, rate_in, rate_out):
    """High-quality (soxr VHQ) resampling of a (samples,) or (samples, channels) float array."""
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(np.asarray(x, dtype=np.float32), rate_in, rate_out, quality="VHQ")


def read(path, dtype="float32"):
    """Read a whole audio file → ((samples, channels) array, sample rate). Raises DacliError."""
    try:
        x, rate = sf.read(str(path), dtype=dtype, always_2d=True)
    except Exception as e:
        raise DacliError(f"{path}: cannot read audio ({_sf_reason(e)})") from None
    return x, rate


def _sf_reason(e):
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg.replace("Error opening ", "").strip()[:200]


SINC_MAX_TAPS = 1 << 22  # 16 MB of filter bank


def resample_sinc(x, rate_in, rate_out, zeros=24, rolloff=0.945):
    """Windowed-sinc resampling exactly as the official tool does it (julius' ``resample_frac``:
    Hann-squared window, 24 zero crossings, roll-off 0.945, replicate padding, output length
    floor(L · out / in)). Used to reproduce legacy decodes; :func:`resample` is better otherwise.
    ``x``: (channels, samples) array.

    Its filter bank has one kernel per output phase, ``rate_out / gcd`` kernels of about
    ``rate_in / gcd`` taps: a few thousand values for real rate pairs (48 kHz → 44.1 kHz: 160 × 199),
    but gigabytes for rates with a small common divisor (44,101 Hz). Beyond SINC_MAX_TAPS values the
    soxr resampler (:func:`resample`, length floor(L · out / in)) stands in for it."""
    import torch
    import torch.nn.functional as F
    g = math.gcd(rate_in, rate_out)
    old, new = rate_in // g, rate_out // g
    if old == new:
        return np.asarray(x, np.float32)
    sr = min(old, new) * rolloff
    width = math.ceil(zeros * old / sr)
    if new * (2 * width + old) > SINC_MAX_TAPS:
        x = np.asarray(x, np.float32)
        y = np.stack([resample(c, rate_in, rate_out) for c in x]) if len(x) else x
        n = x.shape[-1] * rate_out // rate_in
        return np.pad(y, ((0, 0), (0, max(0, n - y.shape[-1]))))[:, :n].astype(np.float32)
    x = torch.as_tensor(np.asarray(x, np.float32))
    idx = torch.arange(-width, width + old).float()
    kernels = []
    for i in range(new):
        t = ((-i / new + idx / old) * sr).clamp(-zeros, zeros) * math.pi
        k = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * torch.cos(t / zeros / 2) ** 2
        kernels.append(k / k.sum())
    kernel = torch.stack(kernels)[:, None]
    length = x.shape[-1]
    y = F.conv1d(F.pad(x.reshape(-1, 1, length), (width, width + old), mode="replicate"), kernel, stride=old)
    y = y.transpose(1, 2).reshape(*x.shape[:-1], -1)
    return y[..., :int(new * length / old)].numpy()


WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # a RIFF size that says "until the stream ends" (what ffmpeg writes to pipes)


def wav_header(rate: int, channels: int, frames: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file of ``frames`` samples per channel, as libsndfile
    writes it: sent ahead of the samples when the audio goes to a stream that cannot seek. Lengths a
    RIFF size cannot hold (4 GiB) get the size field's "until the end" value."""
    data = frames * channels * 2
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
