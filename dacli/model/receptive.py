"""Receptive fields: how far the output of a stack of convolutions depends on its input. The window
encoder (:mod:`dacli.windows`) carries this much context around each window so that every kept frame
equals a one-pass result; a stream (:mod:`dacli.stream`) holds back this much before a sample is final.

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


def context_frames(model, coder: str) -> int:
    """Frames on either side that a frame of ``coder``'s output depends on ("decoder": a frame's
    samples depend on the codes of this many frames before and after it; "encoder": a frame's code on
    the samples of this many frames): the reach of its convolutions, rounded up to whole frames. The
    one figure every caller uses: a stream's latency, a window's context, an export's description."""
    per_frame = 1 if coder == "decoder" else model.hop_length  # the coder's input positions per frame
    return math.ceil(reach(convolutions(getattr(model, coder))) / per_frame)
