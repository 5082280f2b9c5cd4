"""The options that several ``dacli`` commands share, declared once, the checks of their values, and
the JSON that their ``--json`` prints."""

import json
import math
from typing import Any

import click

from . import registry, windows
from .runtime.hardware import PRECISIONS


def positive(name, integer=False):
    """A click callback: the value, if given, must be a finite number above zero."""
    def check(ctx, param, value):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise click.BadParameter(f"must be a {'whole ' if integer else ''}number above zero, not {value}")
        return value
    return check


def strict_json(value: Any) -> str:
    """``value`` as strict JSON for ``--json``: a figure that could not be measured (NaN, infinite) is
    ``null``, never the ``NaN`` that JSON parsers refuse."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), indent=2, allow_nan=False)


def _options(*decorators):
    """Several click options as one decorator."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


# Options shared by several commands, declared once.
DEVICE = click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                      help="Where to run the model ('auto' picks CUDA when present).")
PRECISION = click.option(
    "--precision", default="auto", show_default=True, type=click.Choice(["auto", *PRECISIONS]),
    help="fp32: codes and audio do not depend on the window size, official files decode to the official "
         "output. mixed: bfloat16 except the decoder's last blocks and narrow (<= 32-channel) first encoder "
         "layers; fp32's quality on our measurements, faster where bfloat16 is native, but codes move with "
         "the window size (docs/PERFORMANCE.md). bf16: fastest, noisier. auto: mixed where the CPU/GPU "
         "computes bfloat16 natively, fp32 elsewhere.")
MODEL = click.option("--model", "model_name", metavar="NAME|PATH", default=None,
                     help=f"Model: a checkpoint file, '{registry.DEFAULT_MODEL}' (bundled, the default) or an "
                          f"official name ({', '.join(registry.OFFICIAL)}) downloaded with 'dacli download'.")
WINDOW = click.option("--window-seconds", "--chunk-seconds", "window_seconds", type=float, default=None,
                      callback=positive("--window-seconds"),
                      help=f"Window length for inference (default {windows.ENCODE_WINDOW_SECONDS:g} s to encode, "
                           f"{windows.DECODE_WINDOW_SECONDS:g} s to decode, pushed that much at a time): memory "
                           "depends on it; in fp32 the "
                           "results do not (docs/PERFORMANCE.md for the other precisions). --chunk-seconds is "
                           "the same option.")
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries.")
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them; an "
                                                           "encoded one made with another model or codebook count "
                                                           "fails, left as it is).")
SHARD = click.option("--shard", metavar="K/N", help="Process only the K-th of N deterministic shares of the "
                                                    "files (for job arrays).")
KBPS = click.option("--kbps", type=float, callback=positive("--kbps"),
                    help="The file's total bitrate over all its channels, as an Opus or MP3 rate is: the most "
                         "codebooks whose exact total fits (8 on stereo: 4 codebooks, 6.89 kbps, with the bundled "
                         "model). Below one codebook is refused; above the model's highest, the highest is used "
                         "with a notice.")
N_CODEBOOKS = click.option("--n-codebooks", type=int, callback=positive("--n-codebooks", True),
                           help="Codebooks to keep, per channel (default: all).")
MODEL_RUN = _options(MODEL, DEVICE, PRECISION)
BATCH = _options(WINDOW, OVERWRITE, SHARD, QUIET)
