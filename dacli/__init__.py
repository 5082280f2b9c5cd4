"""dacli — neural audio compression with the Descript Audio Codec (DAC).

Python API::

    import dacli
    model = dacli.load_model()            # bundled model; or "44khz-8kbps", or a .pth path
    codes = model.encode(audio)           # (channels, samples) at model.sample_rate → (channels, n, frames)
    audio = model.decode(codes)           # → (channels, samples)
    codes, header = dacli.read_codes("x.dac")   # (channels, codebooks, frames); no model, no torch
    for row in dacli.read_dataset("tokens/"):  # Parquet shards of `dacli encode --format parquet`
        row["path"], row["codes"], row["header"]
    dacli.tune_process()                  # optional, first: the process settings the command line uses
    stream = dacli.StreamDecoder(model)   # codes in as they come: stream.push(codes) → final samples

Codes are int32 (channels, codebooks, frames) everywhere (:mod:`dacli.codes`).
"""

from .errors import DacliError

__version__ = "0.1.0"
__all__ = ["DAC", "DacliError", "PRESETS", "StreamDecoder", "StreamEncoder", "load_model", "read_codes",
           "read_dataset", "tune_process", "__version__"]


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
    if name == "read_dataset":
        from .dataset import read_dataset
        return read_dataset
    if name in ("StreamDecoder", "StreamEncoder"):
        from . import stream
        return getattr(stream, name)
    if name == "tune_process":
        from .runtime.process import tune_process
        return tune_process
    raise AttributeError(f"module 'dacli' has no attribute {name!r}")
