"""The channels-last training layout: the encoder and decoder run on (B, C, 1, L) channels-last
tensors, their convolutions as 2-D ones, while parameters, state-dict keys and values stay those of the
plain model. Under bfloat16 autocast oneDNN reorders every (B, C, L) convolution input, and every
incoming gradient, to channels-last and back; in this layout there is nothing to reorder. One
layer's forward and backward in bfloat16 (2 cores, Xeon family 6 model 207, measured a layer at a
time): 1.6x faster for 24 channels at the full rate, 2.1x for 96, even for 384; a whole training step
1.08-1.19x (``benchmarks/train_step.py``). In float32 it was slower, so the trainer uses it only
under bf16. Inference has its own channels-last modules (:mod:`dacli.runtime.convs`).

:func:`channels_last_training` switches a model's encoder and decoder in place; :func:`to_channels_last`
and :func:`from_channels_last` convert activations at their edges. A 3-D input still runs as before
(validation, export), so the model stays trainable, savable and comparable either way.
"""

import torch
import torch.nn.functional as F

from ..model.layers import WNConv1d, WNConvTranspose1d


class ChannelsLastConv1d(WNConv1d):
    """WNConv1d; on a (B, C, 1, L) channels-last input, a 2-D convolution in that layout."""

    def forward(self, x):
        if x.dim() == 3:
            return super().forward(x)
        w = self.weight()[:, :, None].contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, w, self.bias, (1, self.stride), (0, self.padding), (1, self.dilation))
        # a one-channel input (the encoder's first) is channels-first too, and so oneDNN makes the output
        return y.contiguous(memory_format=torch.channels_last)


class ChannelsLastConvTranspose1d(WNConvTranspose1d):
    """WNConvTranspose1d; on a (B, C, 1, L) channels-last input, a 2-D transposed convolution."""

    def forward(self, x):
        if x.dim() == 3:
            return super().forward(x)
        w = self.weight()[:, :, None].contiguous(memory_format=torch.channels_last)
        return F.conv_transpose2d(x, w, self.bias, (1, self.stride), (0, self.padding), 0, 1, (1, self.dilation))


SWAPS = {WNConv1d: ChannelsLastConv1d, WNConvTranspose1d: ChannelsLastConvTranspose1d}


def channels_last_training(model):
    """Switch the convolutions of ``model.encoder`` and ``model.decoder`` (a DAC) to the channels-last
    forms, in place (the modules keep their parameters; only their class changes). The quantizer's
    projections stay as they are: it runs on (B, D, T). Snake takes the layout through
    :func:`dacli.runtime.snake.snake_trainable`. Returns ``model``."""
    for part in (model.encoder, model.decoder):
        for m in part.modules():
            if type(m) in SWAPS:
                m.__class__ = SWAPS[type(m)]
    return model


def to_channels_last(x):
    """(B, C, L) → (B, C, 1, L) channels-last."""
    return x[:, :, None].contiguous(memory_format=torch.channels_last)


def from_channels_last(y):
    """(B, C, 1, L) → (B, C, L), contiguous."""
    return y[:, :, 0].contiguous()
