"""The discriminators of the DAC recipe: multi-period (the waveform folded by periods 2, 3, 5, 7, 11)
and multi-band multi-scale complex STFT (five frequency bands per FFT size), with configurable widths."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

BANDS = [(0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]


class PeriodDiscriminator(nn.Module):
    """Looks at the waveform folded into rows of ``period`` samples (2-D convs along time)."""

    def __init__(self, period, channels):
        super().__init__()
        self.period = period
        dims = [1] + list(channels)
        self.convs = nn.ModuleList(
            [weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in zip(dims, dims[1:])]
            + [weight_norm(nn.Conv2d(dims[-1], dims[-1], (5, 1), 1, padding=(2, 0)))])
        self.post = weight_norm(nn.Conv2d(dims[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x):
        x = F.pad(x, (0, self.period - x.shape[-1] % self.period), mode="reflect")
        x = x.reshape(x.shape[0], 1, -1, self.period)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            fmap.append(x)
        fmap.append(self.post(x))
        return fmap


class BandSTFTDiscriminator(nn.Module):
    """Looks at the complex STFT (real and imaginary parts), split into frequency bands."""

    def __init__(self, n_fft, channels, bands=BANDS):
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        self.bands = [(int(a * bins), int(b * bins)) for a, b in bands]
        ch = channels

        def stack():
            return nn.ModuleList([
                weight_norm(nn.Conv2d(2, ch, (3, 9), (1, 1), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(ch, ch, (3, 3), (1, 1), padding=(1, 1)))])
        self.stacks = nn.ModuleList(stack() for _ in self.bands)
        self.post = weight_norm(nn.Conv2d(ch, 1, (3, 3), (1, 1), padding=(1, 1)))

    def forward(self, x):
        win = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x[:, 0], self.n_fft, self.n_fft // 4, window=win, return_complex=True)
        spec = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, frames, bins)
        fmap, outs = [], []
        for (lo, hi), stack in zip(self.bands, self.stacks):
            h = spec[..., lo:hi]
            for conv in stack:
                h = F.leaky_relu(conv(h), 0.1)
                fmap.append(h)
            outs.append(h)
        fmap.append(self.post(torch.cat(outs, -1)))
        return fmap


class Discriminator(nn.Module):
    """All discriminators; ``forward`` returns one feature list per discriminator (last = logits)."""

    def __init__(self, periods, mpd_channels, fft_sizes, mrd_channels):
        super().__init__()
        self.discs = nn.ModuleList([PeriodDiscriminator(p, mpd_channels) for p in periods]
                                   + [BandSTFTDiscriminator(n, mrd_channels) for n in fft_sizes])

    def forward(self, x):
        return [d(x) for d in self.discs]
