"""prepare(): a plain DAC made fast for inference, by replacing its modules in place.

=====================  ===========================================================================
plain module           replaced by
=====================  ===========================================================================
WNConv1d               FastConv1d: folded weight, 2-D channels-last convolution (oneDNN on CPUs)
WNConvTranspose1d      FastConvTranspose1d: the same, as an ordinary convolution of output phases
Snake1d                FastSnake1d: the C kernel (CPU) or the formula updated in place; where the
                       precision changes (the "mixed" decoder) it casts its input to its own
ResidualUnit           SkipInsideResidualUnit: the skip path added inside the last convolution
Tanh                   Float64Tanh: computed in float64 and rounded, the same in every process
encoder, decoder       ChannelsLast: (B, C, L) in and out, (B, C, 1, L) channels-last inside, in
                       the working precision
quantizer              ProductQuantizer: projections folded, float32; codes to latents in one product
=====================  ===========================================================================

The replaced model computes what the plain one does (tests/test_model.py compares the two trees);
it cannot be trained or saved.
"""

from typing import Any, List

import torch
from torch import nn

from ..model import receptive
from ..model.dac import DAC, DecoderBlock
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
        return conv1(y, add=skip(x, y).to(y.dtype))  # x is float32 where the precision changes here


class Float64Tanh(nn.Module):
    """The decoder's output tanh, computed in float64 and rounded to the input's dtype. torch's float32
    tanh on CPUs gives one of two results, differing in the last bit, in about one process of
    twenty, half the samples at a time (torch 2.13 with two threads, AVX-512; its exp, sin and
    sigmoid do not): the same codes then decode to 16-bit samples one step apart, depending on the
    process. In float64 the result is the same in every process (checked in 100); at one channel
    of output samples the cost is nil."""

    def forward(self, x):
        return torch.tanh(x.double()).to(x.dtype)


class ChannelsLast(nn.Module):
    """Runs an encoder or decoder on (B, C, 1, L) channels-last tensors in ``dtype``; takes and gives
    (B, C, L), the output in float32."""

    def __init__(self, inner: Any, dtype):
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def _in(self, x):
        return x[:, :, None].to(self.dtype).contiguous(memory_format=torch.channels_last)

    def forward(self, x):
        return self.inner(self._in(x))[:, :, 0].float()


class ProductQuantizer(ResidualVectorQuantize):
    """The quantizer with folded projections. From codes, the K codebook vectors of a frame side by
    side times the K output projections side by side make the latent in one matrix product (K 1x1
    convolutions of a transposed view took torch's slow path)."""

    def __init__(self, rvq: ResidualVectorQuantize):
        nn.Module.__init__(self)
        self.n_codebooks, self.quantizer_dropout = rvq.n_codebooks, rvq.quantizer_dropout
        self.quantizers = rvq.quantizers
        stages: List[Any] = list(self.quantizers)
        for q in stages:
            q.in_proj, q.out_proj = FoldedConv1d(q.in_proj), FoldedConv1d(q.out_proj)
        self.table: Any = None  # see tabulate

    def tabulate(self):
        """Keep, for each stage, the latent of every code (its codebook row through its output
        projection, bias included: K x size x latent float32, 38 MB for the 44.1 kHz models); from then
        on the latent of a frame is the sum of its K table rows, in stage order, whatever the number of
        frames (a matrix product's rounding depends on its shape). :func:`streamable` calls it."""
        stages: List[Any] = list(self.quantizers)
        self.table = torch.stack([torch.addmm(q.out_proj.bias, q.codebook.weight, q.out_proj.weight[:, :, 0].t())
                                  for q in stages])

    def from_codes(self, codes):
        stages: List[Any] = list(self.quantizers[:codes.shape[1]])
        if self.table is not None:
            z = self.table[0][codes[:, 0]]                               # (B, T, latent)
            for i in range(1, len(stages)):
                z += self.table[i][codes[:, i]]
            return z.transpose(1, 2)
        vectors = torch.cat([nn.functional.embedding(codes[:, i], q.codebook.weight)
                             for i, q in enumerate(stages)], -1)
        weight = torch.cat([q.out_proj.weight[:, :, 0] for q in stages], 1)
        bias = torch.stack([q.out_proj.bias for q in stages]).sum(0)
        return torch.addmm(bias, vectors.flatten(0, 1), weight.t()).view(*vectors.shape[:2], -1).transpose(1, 2)


def _fast(module, dtype, onednn, use_kernel):
    """The inference form of ``module`` in ``dtype`` (its children replaced first), or None for a
    container whose children were replaced in place."""
    if isinstance(module, ResidualUnit):
        _replace(module, dtype, onednn, use_kernel)
        return SkipInsideResidualUnit(module)
    if isinstance(module, WNConv1d):
        return FastConv1d(module, dtype, onednn)
    if isinstance(module, WNConvTranspose1d):
        return FastConvTranspose1d(module, dtype, onednn)
    if isinstance(module, Snake1d):
        return FastSnake1d(module, use_kernel, dtype)
    if isinstance(module, nn.Tanh):
        return Float64Tanh()
    _replace(module, dtype, onednn, use_kernel)
    return None


def _replace(module, dtype, onednn, use_kernel):
    """Replace every child of ``module`` by its inference form in ``dtype``, in place."""
    for name, child in list(module.named_children()):
        new = _fast(child, dtype, onednn, use_kernel)
        if new is not None:
            setattr(module, name, new)


# "mixed" precision: bfloat16 wherever it costs no measurable quality and saves time, float32 elsewhere.
# Decoder, for quality: measured with the bundled model on the held-out set (docs/PERFORMANCE.md,
# Precision), the decoder in bf16 adds a noise floor (1.985 → 2.136) that comes from its last,
# full-rate blocks: with the last two decoder blocks and the output layers in float32, 1.9853 again
# (last one only: 2.015). The encoder in bf16 changes a few % of the codes but not the decoded audio's
# quality (1.9853 → 1.9850).
# Encoder, for speed: its first layers run at the full and half sample rate. Where they are narrow (the
# bundled model's 16 and 32 channels), oneDNN's AMX convolutions take 60-100 ms to set up for each new
# input length (three or four per file: first, steady and last windows) and save little once set up,
# so a short file encoded 2x slower in bfloat16 than in float32; from 64 channels on (the official
# models' first layers) bfloat16 pays (docs/PERFORMANCE.md, Precision). CPU only.
FLOAT32_DECODER_BLOCKS = 2
FLOAT32_ENCODER_MAX_CHANNELS = 32


def mixed_split(decoder) -> int:
    """Index of the first of the decoder's top-level layers (``decoder.model``) that "mixed" precision
    keeps in float32: the last FLOAT32_DECODER_BLOCKS blocks and the output layers."""
    blocks = [i for i, layer in enumerate(decoder.model) if isinstance(layer, DecoderBlock)]
    return blocks[-FLOAT32_DECODER_BLOCKS] if len(blocks) >= FLOAT32_DECODER_BLOCKS else 0


def encoder_split(encoder) -> int:
    """Index of the first of the encoder's top-level layers (``encoder.block``) that "mixed" precision
    runs in bfloat16: the first whose first convolution has more than FLOAT32_ENCODER_MAX_CHANNELS
    output channels (the layers before it stay in float32)."""
    for i, layer in enumerate(encoder.block):
        convs = receptive.convolutions(layer)
        if convs and convs[0].weight_v.shape[0] > FLOAT32_ENCODER_MAX_CHANNELS:
            return i
    return len(encoder.block)


def _encoder_dtypes(encoder, precision, device):
    """The working dtype of each of the encoder's top-level layers in ``precision`` on ``device`` (the
    encoder's split is oneDNN's matter: on a GPU "mixed" runs the whole encoder in bfloat16)."""
    n = len(encoder.block)
    mixed = encoder_split(encoder) if device.type == "cpu" else 0
    first_bf16 = {"fp32": n, "mixed": mixed, "bf16": 0}[precision]
    return [torch.float32 if i < first_bf16 else torch.bfloat16 for i in range(n)]


def _decoder_dtypes(decoder, precision):
    """The working dtype of each of the decoder's top-level layers in ``precision``."""
    n = len(decoder.model)
    first_fp32 = {"fp32": 0, "mixed": mixed_split(decoder), "bf16": n}[precision]
    return [torch.bfloat16 if i < first_fp32 else torch.float32 for i in range(n)]


def _replace_layers(layers: nn.Sequential, dtypes, onednn, use_kernel):
    """Replace each of ``layers`` by its inference form in its own dtype, in place."""
    for i, dt in enumerate(dtypes):
        new = _fast(layers[i], dt, onednn[dt], use_kernel)
        if new is not None:
            layers[i] = new


def prepare(model: DAC, device="auto", precision="auto") -> DAC:
    """Make ``model`` (a plain DAC) fast for inference on ``device`` in ``precision`` ("auto", "fp32",
    "mixed", "bf16"; see :mod:`dacli.runtime.hardware`; the quantizer always runs in float32), in
    place; returns it. ``model.precision`` says which precision runs."""
    if isinstance(model.encoder, ChannelsLast):
        raise ValueError("this model is already prepared")
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    encoder_dtypes = _encoder_dtypes(model.encoder, precision, device)
    decoder_dtypes = _decoder_dtypes(model.decoder, precision)
    onednn = {dt: onednn_op(dt) if device.type == "cpu" else None for dt in {*encoder_dtypes, *decoder_dtypes}}
    use_kernel = kernel_available() and device.type == "cpu"
    model = model.to(device).eval()
    with torch.no_grad():
        _replace_layers(model.encoder.block, encoder_dtypes, onednn, use_kernel)
        _replace_layers(model.decoder.model, decoder_dtypes, onednn, use_kernel)
        model.encoder = ChannelsLast(model.encoder, encoder_dtypes[0])  # type: ignore[assignment]
        model.decoder = ChannelsLast(model.decoder, decoder_dtypes[0])  # type: ignore[assignment]
        model.quantizer = ProductQuantizer(model.quantizer)
    model.eval()  # the new modules too
    for p in model.parameters():
        p.requires_grad_(False)
    model.precision = precision
    process.release_memory(force=True)  # what building and folding freed: a clean heap for the windows
    return model


def streamable(model: DAC) -> DAC:
    """Make a prepared model compute every sample the same way whatever the length of the stretch it is
    computed in, in place (idempotent); returns it. Its convolutions take their padding as zeros in place
    and compute rows of a width that oneDNN computes alike (:meth:`dacli.runtime.convs.FastConv.conv`),
    its transposed ones as one 1x1 product of two frames
    (:meth:`dacli.runtime.convs.FastConvTranspose1d.conv`), and its latents come from a table
    (:meth:`ProductQuantizer.tabulate`). Streaming (:mod:`dacli.stream`) needs it: then the streamed
    audio and codes equal this model's own one-pass ``decode`` and ``encode`` bit for bit in float32.
    Its results move from the model as loaded by float32 rounding only (decoded audio by 3.4e-7 at most,
    codes not at all, measured on 2 s of music with the bundled and full-size models); its one pass
    runs about as fast as the model as loaded (docs/PERFORMANCE.md, Streaming)."""
    check_prepared(model.decoder)
    model._streaming_saved = None  # type: ignore[assignment]  # asked for for good: no open scope undoes it
    if not getattr(model, "streamable", False):
        for m in model.modules():
            if isinstance(m, (FastConv1d, FastConvTranspose1d)):
                m.stable = True
                m.pack = m.onednn is not None  # pushes repeat their shapes: no weight reorder per call
        model.quantizer.tabulate()  # type: ignore[operator]
        model.streamable = True  # type: ignore[assignment]
    return model


def check_prepared(coder: Any) -> None:
    """Refuses an encoder or decoder that :func:`prepare` has not made (streaming needs its layers)."""
    if not isinstance(coder, ChannelsLast):
        raise ValueError("only a prepared model (dacli.load_model, dacli.runtime.prepare) can stream")


class Streaming:
    """A model made :func:`streamable` for as long as this scope is open, then exactly as it was: its
    convolutions' settings, their packed weights and the quantizer's table put back, so its one-pass
    results and speed are those it had before (a model made streamable for good stays so). Scopes of
    one model nest: the last one closed restores it. ``close()`` (or leaving a ``with`` block) ends it;
    a :class:`dacli.StreamDecoder` opens one when it starts and closes it at ``flush()``."""

    def __init__(self, model: DAC) -> None:
        check_prepared(model.decoder)
        self.model, self.open = model, True
        scopes = getattr(model, "_streaming_scopes", 0)
        if scopes == 0 and not getattr(model, "streamable", False):
            convs = [m for m in model.modules() if isinstance(m, (FastConv1d, FastConvTranspose1d))]
            saved = ([(c, c.stable, c.pack, {k: list(v) for k, v in c._packs.items()}) for c in convs],
                     model.quantizer.table)
            streamable(model)
            model._streaming_saved = saved  # type: ignore[assignment]
        model._streaming_scopes = scopes + 1  # type: ignore[assignment]

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        model = self.model
        scopes = getattr(model, "_streaming_scopes") - 1
        model._streaming_scopes = scopes  # type: ignore[assignment]
        saved = getattr(model, "_streaming_saved", None)
        if scopes == 0 and saved is not None:
            convs, table = saved
            for c, stable, pack, packs in convs:
                c.stable, c.pack, c._packs = stable, pack, packs
            model.quantizer.table = table
            model.streamable = False  # type: ignore[assignment]
            model._streaming_saved = None  # type: ignore[assignment]

    def __enter__(self) -> "Streaming":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
