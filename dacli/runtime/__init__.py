"""The inference runtime: it turns a plain DAC (:mod:`dacli.model`) into the fast one from outside,
by replacing modules in place, and owns the settings that touch the whole process.

- :mod:`.engine`: :func:`prepare` — what is replaced by what, and the layout it runs in;
  :func:`streamable` — the same samples whatever the stretch they are computed in (streaming), for
  good, or for a scope (:func:`streaming`);
- :mod:`.stepping`: :class:`~.stepping.Steps` — an encoder or decoder run a push at a time (streaming);
- :mod:`.convs`: convolutions with folded weight norm on channels-last tensors (oneDNN);
- :mod:`.snake`: Snake by the C kernel (``dacli/_snake.c``), for inference and for training;
- :mod:`.hardware`: the device, the CPU's features, and which precision runs;
- :mod:`.process`: OpenMP spinning, the allocator, returning memory between windows.

Importing this package does not import torch (the command line reads settings from it first).
"""


def prepare(model, device="auto", precision="auto"):
    """Make a plain DAC (as :func:`dacli.model.load_checkpoint` returns it) fast for inference on
    ``device`` in ``precision`` ("auto", "fp32", "mixed", "bf16"); see :func:`dacli.runtime.engine.prepare`."""
    from .engine import prepare as prepare_model
    return prepare_model(model, device, precision)


def streamable(model):
    """Make a prepared model compute each sample alike however its input is split (streaming needs it);
    see :func:`dacli.runtime.engine.streamable`."""
    from .engine import streamable as make_streamable
    return make_streamable(model)


def streaming(model):
    """:func:`streamable` for a scope, after which the model is exactly as it was (``with
    dacli.runtime.streaming(model): ...``, or ``close()``); see :class:`dacli.runtime.engine.Streaming`."""
    from .engine import Streaming
    return Streaming(model)
