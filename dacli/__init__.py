"""dacli — neural audio compression with the Descript Audio Codec (DAC).

Python API::

    import dacli
    model = dacli.load_model()            # bundled model; or "44khz-8kbps", or a .pth path
    codes = model.encode(audio)           # (channels, samples) at model.sample_rate → (channels, n, frames)
    audio = model.decode(codes)           # → (channels, samples)
    codes, header = dacli.read_codes("x.dac")   # int16 (channels, codebooks, frames); no model, no torch
"""

import os
import sys

# torch's OpenMP threads spin for ~300,000 rounds after each parallel region (libgomp's default),
# which on a small CPU takes the cores from the C Snake kernel's threads that run between two
# convolutions: measured on 2 cores, it halved Snake's speed. A short spin takes 7-19 % off an
# encode or decode (with torch's own Snake it changed nothing). Training uses torch ops only and ran
# 8 % slower with it, so `python -m dacli.train` keeps the default. Effective only if torch is not
# yet imported; a value set by the user wins.
if "dacli.train" not in getattr(sys, "orig_argv", [])[:4]:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from .errors import DacliError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["DAC", "DacliError", "PRESETS", "load_model", "read_codes", "__version__"]


def __getattr__(name):
    """The model API on first use, so that importing dacli (and starting the command line) does not
    load torch."""
    if name in ("DAC", "PRESETS"):
        from . import model
        return getattr(model, name)
    if name == "load_model":
        from .registry import load_model
        return load_model
    if name == "read_codes":
        from .container import read_codes
        return read_codes
    raise AttributeError(f"module 'dacli' has no attribute {name!r}")
