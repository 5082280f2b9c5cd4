"""Bandwidth: many recordings are band-limited (MP3 and Vorbis sources cut at 14-19 kHz, upsampled
material), and a small decoder cannot tell from the codes that the top band was empty, so it fills it
with hiss. The encoder measures where the input's spectrum ends (:class:`BandwidthMeter`), the
container records it, and the decoder low-passes there (:class:`LowPass`; docs/FORMAT.md, "Bandwidth").
"""

import math

import numpy as np

LOWPASS_HALF = 128         # the low-pass has 2 * 128 + 1 taps
LOWPASS_BETA = 8.0         # Kaiser window: about -80 dB from bandwidth + 1 kHz
LOWPASS_MARGIN_HZ = 500.0  # the filter's -6 dB point lies this far above the recorded bandwidth


def lowpass_taps(bandwidth_hz: float, rate: int) -> np.ndarray:
    """The decoder's linear-phase FIR low-pass for a recorded bandwidth (float64, 257 taps, sum 1):
    flat to within 0.01 dB up to ``bandwidth_hz``, below -75 dB from ``bandwidth_hz`` + 1 kHz (at model
    rates up to 48 kHz)."""
    f = (bandwidth_hz + LOWPASS_MARGIN_HZ) / rate
    k = np.arange(-LOWPASS_HALF, LOWPASS_HALF + 1)
    h = 2 * f * np.sinc(2 * f * k) * np.kaiser(2 * LOWPASS_HALF + 1, LOWPASS_BETA)
    return h / h.sum()


class LowPass:
    """:func:`lowpass_taps` applied to a stream of (samples, channels) blocks, centred (no delay):
    ``y[i] = Σ_k h[k] x[i + 128 − k]`` with ``x`` zero outside the signal, which is
    ``np.convolve(x, h, "same")`` per channel. FFT overlap-save over fixed segments of the whole
    stream, so the output does not depend on how the input is cut into blocks. Feed blocks, then
    ``feed(empty, last=True)``; the output has as many samples as the input."""

    FFT = 1 << 14

    def __init__(self, bandwidth_hz: float, rate: int, channels: int):
        h = lowpass_taps(bandwidth_hz, rate)
        self.taps = len(h)
        self.step = self.FFT - (self.taps - 1)
        self.spectrum = np.fft.rfft(h, self.FFT)[:, None]
        self.buf = np.zeros((LOWPASS_HALF, channels))  # the signal's left padding

    def _segments(self, until):
        out = []
        while len(self.buf) >= until:
            seg = self.buf[:self.FFT]
            if len(seg) < self.FFT:
                seg = np.concatenate([seg, np.zeros((self.FFT - len(seg), seg.shape[1]))])
            y = np.fft.irfft(np.fft.rfft(seg, axis=0) * self.spectrum, self.FFT, axis=0)
            out.append(y[self.taps - 1:])
            self.buf = self.buf[self.step:]
        return out

    def feed(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.asarray(x, np.float64)
        parts = [self.buf, x.reshape(len(x), self.buf.shape[1])]
        if last:
            parts.append(np.zeros((LOWPASS_HALF, self.buf.shape[1])))  # the signal's right padding
        self.buf = np.concatenate(parts)
        pending = len(self.buf) - (self.taps - 1)  # outputs whose inputs are all in the buffer
        out = self._segments(self.taps if last else self.FFT)  # at the end: what is left, zero-filled
        y = np.concatenate(out) if out else np.zeros((0, self.buf.shape[1]))
        return (y[:pending] if last else y).astype(np.float32)


class BandwidthMeter:
    """Where a signal's spectrum ends, from blocks of shape (samples, channels) at ``rate``.

    The long-term power spectrum (Hann frames of 2048 samples, back to back, power averaged over
    frames and channels) is compared with itself: the *body* is its 90th percentile between 200 Hz
    and a quarter of the rate, the *floor* its median over the top 5 % below Nyquist. A signal whose
    floor is more than 60 dB under its body is band-limited, and its bandwidth is the highest
    frequency where the spectrum, smoothed over ±100 Hz, stands above both floor + 10 dB and body − 60
    dB (rounded up to 100 Hz; the second keeps the Hann window's leakage past a steep edge out).
    :meth:`result` gives 0 (full band) for anything else: a floor that is not that low, or less than 8
    frames (0.37 s at 44.1 kHz) of audio."""

    FRAME = 2048
    MIN_FRAMES = 8
    BODY_PERCENTILE, FLOOR_BELOW_DB, EDGE_ABOVE_DB = 90.0, 60.0, 10.0

    def __init__(self, rate: int, channels: int):
        self.rate, self.channels = rate, channels
        self.window = np.hanning(self.FRAME)
        self.power = np.zeros(self.FRAME // 2 + 1)
        self.frames = 0
        self.buf = np.zeros((0, channels))

    def feed(self, x: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float64).reshape(-1, self.channels)])
        n = len(self.buf) // self.FRAME
        if n:
            frames = self.buf[:n * self.FRAME].reshape(n, self.FRAME, self.channels)
            spec = np.fft.rfft(frames * self.window[None, :, None], axis=1)
            self.power += (np.abs(spec) ** 2).mean(2).sum(0)
            self.frames += n
            self.buf = self.buf[n * self.FRAME:]

    def result(self) -> int:
        """The bandwidth in Hz, or 0 for full band."""
        if self.frames < self.MIN_FRAMES:
            return 0
        f = np.fft.rfftfreq(self.FRAME, 1 / self.rate)
        tiny = 1e-30  # digital silence: -300 dB everywhere, so no floor lies under its body
        db = 10 * np.log10(self.power / self.frames + tiny)
        body = np.percentile(db[(f >= 200) & (f <= self.rate / 4)], self.BODY_PERCENTILE)
        floor = np.median(db[f >= 0.95 * self.rate / 2])
        if floor > body - self.FLOOR_BELOW_DB:
            return 0
        k = np.ones(2 * int(100 / (self.rate / self.FRAME)) + 1)
        smooth = np.convolve(self.power, k, "same") / np.convolve(np.ones_like(self.power), k, "same")
        edge = max(floor + self.EDGE_ABOVE_DB, body - self.FLOOR_BELOW_DB)  # not the window's leakage
        above = np.nonzero(10 * np.log10(smooth / self.frames + tiny) > edge)[0]
        if not len(above):
            return 0
        return int(math.ceil(f[above[-1]] / 100) * 100)
