"""The options that several ``dacli`` commands share, declared once, and the checks of their values."""

import math

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
                           f"{windows.DECODE_WINDOW_SECONDS:g} s to decode): memory depends on it; in fp32 the "
                           "results do not (docs/PERFORMANCE.md for the other precisions). --chunk-seconds is "
                           "the same option.")
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries.")
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them).")
SHARD = click.option("--shard", metavar="K/N", help="Process only the K-th of N deterministic shares of the "
                                                    "files (for job arrays).")
KBPS = click.option("--kbps", type=float, callback=positive("--kbps"),
                    help="Target bitrate: the most codebooks whose exact bitrate fits.")
N_CODEBOOKS = click.option("--n-codebooks", type=int, callback=positive("--n-codebooks", True),
                           help="Number of codebooks to keep (default: all).")
MODEL_RUN = _options(MODEL, DEVICE, PRECISION)
BATCH = _options(WINDOW, OVERWRITE, SHARD, QUIET)
