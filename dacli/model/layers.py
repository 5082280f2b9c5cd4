"""The DAC's building blocks, as the paper describes them: weight-normalised convolutions, the Snake
activation and the residual unit. Plain PyTorch modules that train as they are; for inference,
:mod:`dacli.runtime` replaces them in place by faster equivalents."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormConv(nn.Module):
    """A convolution whose weight is ``g · v / ‖v‖`` (norm over all dims but 0). Parameter names
    (``weight_g``, ``weight_v``) match ``torch.nn.utils.weight_norm``, as the official checkpoints do."""

    transposed = False

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        shape = (in_ch, out_ch, kernel_size) if self.transposed else (out_ch, in_ch, kernel_size)
        v = torch.empty(shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # torch's default conv init, as the official model has
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.kernel_size, self.default_padding = kernel_size, padding

    def weight(self) -> torch.Tensor:
        """The convolution's weight, ``g · v / ‖v‖``."""
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def extra_repr(self):
        return f"{tuple(self.weight_v.shape)}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


class WNConv1d(WeightNormConv):
    def forward(self, x):
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(WeightNormConv):
    transposed = True

    def forward(self, x):
        return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding, 0, 1, self.dilation)


SNAKE_GUARD = 1e-9  # keeps 1/α finite for α = 0 (the official implementation's constant)


def snake(x, alpha):
    """Snake activation: x + sin²(αx)/α."""
    return x + (alpha + SNAKE_GUARD).reciprocal() * torch.sin(alpha * x).pow(2)


class Snake1d(nn.Module):
    """Snake with one learned α per channel."""

    def __init__(self, channels):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x):
        return snake(x, self.alpha)


class ResidualUnit(nn.Module):
    """Snake → dilated conv k7 → Snake → conv k1, plus the skip path."""

    def __init__(self, dim, dilation=1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim), WNConv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim), WNConv1d(dim, dim, 1))

    def forward(self, x):
        y = self.block(x)
        return skip(x, y) + y


def skip(x, y):
    """The skip path of a residual unit: ``x`` cut to the length of ``y`` ('valid' convolutions, as the
    official tool runs for its chunked files, shorten ``y`` by the same amount on both sides)."""
    crop = (x.shape[-1] - y.shape[-1]) // 2
    return x[..., crop:-crop] if crop > 0 else x
