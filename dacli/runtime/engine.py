"""prepare(): a plain DAC made fast for inference, by replacing its modules in place.

=====================  ===========================================================================
plain module           replaced by
=====================  ===========================================================================
WNConv1d               FastConv1d: folded weight, 2-D channels-last convolution (oneDNN on CPUs)
WNConvTranspose1d      FastConvTranspose1d: the same, as an ordinary convolution of output phases
Snake1d                FastSnake1d: the C kernel (CPU) or the formula updated in place
ResidualUnit           SkipInsideResidualUnit: the skip path added inside the last convolution
encoder, decoder       ChannelsLast: (B, C, L) in and out, (B, C, 1, L) channels-last inside, in
                       the working precision
quantizer              ProductQuantizer: projections folded, float32; codes to latents in one product
=====================  ===========================================================================

The replaced model computes what the plain one does (tests/test_model.py compares the two trees);
it cannot be trained or saved.
"""

import torch
from torch import nn

from ..model.dac import DAC
from ..model.layers import ResidualUnit, Snake1d, WNConv1d, WNConvTranspose1d, skip
from ..model.quantizer import ResidualVectorQuantize
from . import process
from .convs import FastConv1d, FastConvTranspose1d, FoldedConv1d, onednn_op
from .hardware import resolve_device, resolve_precision
from .snake import FastSnake1d, kernel_available


class SkipInsideResidualUnit(nn.Module):
    """A ResidualUnit whose skip path is added inside its last (1x1) convolution."""

    def __init__(self, unit: ResidualUnit):
        super().__init__()
        self.block = unit.block

    def forward(self, x):
        snake1, conv7, snake2, conv1 = self.block
        y = snake2(conv7(snake1(x)))
        return conv1(y, add=skip(x, y))


class ChannelsLast(nn.Module):
    """Runs an encoder or decoder on (B, C, 1, L) channels-last tensors in ``dtype``; takes and gives
    (B, C, L), the output in float32."""

    def __init__(self, inner: nn.Module, dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def _in(self, x):
        return x[:, :, None].to(self.dtype).contiguous(memory_format=torch.channels_last)

    def forward(self, x):
        return self.inner(self._in(x))[:, :, 0].float()

    def cropped(self, x, keep):
        """:meth:`dacli.model.Decoder.cropped` in this layout."""
        y, start = self.inner.cropped(self._in(x), keep)
        return y[:, :, 0].float(), start


class ProductQuantizer(ResidualVectorQuantize):
    """The quantizer with folded projections. From codes, the K codebook vectors of a frame side by
    side times the K output projections side by side make the latent in one matrix product (K 1x1
    convolutions of a transposed view took torch's slow path)."""

    def __init__(self, rvq: ResidualVectorQuantize):
        nn.Module.__init__(self)
        self.n_codebooks, self.quantizer_dropout = rvq.n_codebooks, rvq.quantizer_dropout
        self.quantizers = rvq.quantizers
        for q in self.quantizers:
            q.in_proj, q.out_proj = FoldedConv1d(q.in_proj), FoldedConv1d(q.out_proj)

    def from_codes(self, codes):
        stages = self.quantizers[:codes.shape[1]]
        vectors = torch.cat([nn.functional.embedding(codes[:, i], q.codebook.weight)
                             for i, q in enumerate(stages)], -1)
        weight = torch.cat([q.out_proj.weight[:, :, 0] for q in stages], 1)
        bias = torch.stack([q.out_proj.bias for q in stages]).sum(0)
        return torch.addmm(bias, vectors.flatten(0, 1), weight.t()).view(*vectors.shape[:2], -1).transpose(1, 2)


def _replace(module, dtype, onednn, use_kernel):
    for name, child in list(module.named_children()):
        if isinstance(child, ResidualUnit):
            _replace(child, dtype, onednn, use_kernel)
            new = SkipInsideResidualUnit(child)
        elif isinstance(child, WNConv1d):
            new = FastConv1d(child, dtype, onednn)
        elif isinstance(child, WNConvTranspose1d):
            new = FastConvTranspose1d(child, dtype, onednn)
        elif isinstance(child, Snake1d):
            new = FastSnake1d(child, use_kernel)
        else:
            _replace(child, dtype, onednn, use_kernel)
            continue
        setattr(module, name, new)


def prepare(model: DAC, device="auto", precision="auto") -> DAC:
    """Make ``model`` (a plain DAC) fast for inference on ``device`` in ``precision`` ("auto", "fp32",
    "bf16"; the quantizer always runs in float32), in place; returns it. ``model.precision`` says which
    precision runs."""
    if isinstance(model.encoder, ChannelsLast):
        raise ValueError("this model is already prepared")
    process.inference_settings()
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    onednn = onednn_op(dtype) if device.type == "cpu" else None
    use_kernel = kernel_available() and device.type == "cpu"
    model = model.to(device).eval()
    with torch.no_grad():
        _replace(model.encoder, dtype, onednn, use_kernel)
        _replace(model.decoder, dtype, onednn, use_kernel)
        model.encoder = ChannelsLast(model.encoder, dtype)
        model.decoder = ChannelsLast(model.decoder, dtype)
        model.quantizer = ProductQuantizer(model.quantizer)
    model.eval()  # the new modules too
    for p in model.parameters():
        p.requires_grad_(False)
    model.precision = precision
    process.release_memory(force=True)  # what building and folding freed: a clean heap for the windows
    return model
