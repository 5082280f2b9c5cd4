"""dacli — neural audio compression with the Descript Audio Codec (DAC).

Python API::

    import dacli
    model = dacli.load_model()            # bundled model; or "44khz-8kbps", or a .pth path
    codes = model.encode(audio)           # (channels, samples) at model.sample_rate → (channels, n, frames)
    audio = model.decode(codes)           # → (channels, samples)
"""

from .errors import DacliError
from .model import DAC, PRESETS
from .registry import load_model

__version__ = "0.1.0"
__all__ = ["DAC", "DacliError", "PRESETS", "load_model", "__version__"]
