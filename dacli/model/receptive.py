"""Receptive fields: how far the output of a stack of convolutions depends on its input. Windowed
inference (:mod:`dacli.codec`) carries this much context around each window so that every kept
frame or sample equals a one-pass result, and the decoder drops context it no longer needs layer by
layer (:meth:`dacli.model.Decoder.cropped`).

A convolution here is any module with ``kernel_size``, ``stride``, ``dilation`` and ``transposed``:
the model's weight-normalised convolutions and the runtime's replacements alike."""

import math
from fractions import Fraction


def convolutions(module):
    """The convolutions of ``module``, in the order they run."""
    return [m for m in module.modules()
            if all(hasattr(m, a) for a in ("kernel_size", "stride", "dilation", "transposed"))]


def reach(convs) -> Fraction:
    """How far, on either side, the output of ``convs`` (run in this order) depends on their input, in
    positions of that input. A convolution reaches (k − 1)·d / 2 of its input positions; a transposed
    one of kernel k and stride s, ceil(k / s) / 2; and each layer's positions are its stride times
    sparser (denser, transposed) than those of the layer before."""
    total, per_input = Fraction(0), Fraction(1)  # per_input: the current layer's input positions per
    # position of the first's (exact: strides of 5 make float fractions round)
    for c in convs:
        if c.transposed:
            total += Fraction(math.ceil(c.kernel_size / c.stride), 2) / per_input
            per_input *= c.stride
        else:
            total += Fraction((c.kernel_size - 1) * c.dilation, 2) / per_input
            per_input /= c.stride
    return total


def encoder_context(model) -> int:
    """Frames of context needed on each side of a window so that the encoder's centre frames equal a
    one-pass encode."""
    return math.ceil(reach(convolutions(model.encoder)) / model.hop_length) + 1


def decoder_context(model) -> int:
    """Frames of context needed on each side of a window so that its centre samples equal a one-pass
    decode."""
    return math.ceil(reach(convolutions(model.decoder))) + 1


def margins(layers) -> list:
    """For each layer of a sequence: samples (at its output rate) that the layers after it reach on
    either side, plus one."""
    return [math.ceil(reach([c for later in layers[i + 1:] for c in convolutions(later)])) + 1
            for i in range(len(layers))]
