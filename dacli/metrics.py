"""Distances between a reference and a reconstruction, as DAC's paper defines them.

All take torch tensors (..., samples) and are differentiable, so the training loss uses the same
mel distance that evaluation reports. STFTs are ``torch.stft(n_fft=w, hop=w//4, hann, center=True)``
magnitudes; mel filters are Slaney-style (librosa's defaults).
"""

import functools
import math

import numpy as np
import torch

MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)
STFT_WINDOWS = (2048, 512)
EPS = 1e-5


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@functools.lru_cache(maxsize=64)
def mel_filters(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):
    """Slaney-normalised triangular mel filterbank, (n_mels, n_fft//2 + 1) float32 (as librosa)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return torch.from_numpy(w.astype(np.float32))


def stft_magnitude(x, window):
    """|STFT| of (..., samples) → (..., window//2+1, frames)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    win = torch.hann_window(window, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft=window, hop_length=window // 4, window=win, center=True,
                      pad_mode="reflect", return_complex=True).abs()
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def mel_distance(x, y, sample_rate, per_item=False):
    """7-scale log-mel L1 distance: Σ over scales of mean |log10 M_x − log10 M_y| (clamped at 1e-5).
    ``per_item``: one value per leading index instead of a mean over the batch."""
    total = 0
    for window, n_mels in zip(MEL_WINDOWS, MEL_BANDS):
        fb = mel_filters(sample_rate, window, n_mels).to(x.device, x.dtype)
        mx = (fb @ stft_magnitude(x, window)).clamp(min=EPS).log10()
        my = (fb @ stft_magnitude(y, window)).clamp(min=EPS).log10()
        d = (mx - my).abs()
        total = total + (d.flatten(-2).mean(-1) if per_item else d.mean())
    return total


def stft_distance(x, y, per_item=False):
    """2-scale STFT distance: mean |log10 |X|² − log10 |Y|²| + mean ||X| − |Y||, summed over windows."""
    total = 0
    for window in STFT_WINDOWS:
        sx, sy = stft_magnitude(x, window), stft_magnitude(y, window)
        log_d = (sx.clamp(min=EPS).pow(2).log10() - sy.clamp(min=EPS).pow(2).log10()).abs()
        mag_d = (sx - sy).abs()
        d = log_d + mag_d  # same shape, so the sum of the two means is the mean of the sum
        total = total + (d.flatten(-2).mean(-1) if per_item else d.mean())
    return total


def si_sdr(reference, estimate, eps=1e-8):
    """Scale-invariant SDR in dB over the last axis (higher is better)."""
    s = reference - reference.mean(-1, keepdim=True)
    e = estimate - estimate.mean(-1, keepdim=True)
    alpha = (e * s).sum(-1, keepdim=True) / (s.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * s
    return 10 * torch.log10(target.pow(2).sum(-1) / ((e - target).pow(2).sum(-1) + eps) + eps)
