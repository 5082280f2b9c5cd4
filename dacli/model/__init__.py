"""The DAC model as plain PyTorch modules, read top to bottom like the paper:

- :mod:`.layers`: weight-normalised convolutions, Snake, the residual unit;
- :mod:`.quantizer`: residual vector quantization;
- :mod:`.dac`: encoder, decoder and the codec (`DAC`);
- :mod:`.receptive`: receptive fields, for windowed inference;
- :mod:`.checkpoint`: the official checkpoint layout, presets, loading.

These modules train as they are. Inference speed is applied from outside by :mod:`dacli.runtime`.
Importing this package does not import torch (the command line reads :mod:`.receptive` without it);
its names are loaded from their modules on first use.
"""

_HOME = {
    "checkpoint": ["KWARGS", "PRESETS", "build", "load_checkpoint", "read_checkpoint", "weights_hash"],
    "dac": ["DAC", "Decoder", "DecoderBlock", "Encoder", "EncoderBlock"],
    "layers": ["ResidualUnit", "Snake1d", "WeightNormConv", "WNConv1d", "WNConvTranspose1d", "snake"],
    "quantizer": ["ResidualVectorQuantize", "VectorQuantize"],
}
__all__ = sorted(name for names in _HOME.values() for name in names)


def __getattr__(name):
    import importlib
    for module, names in _HOME.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
