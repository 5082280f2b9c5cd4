"""Frame rates and bitrates of RVQ codes, exactly: shared by the model (which codes) and the
container (which stores), so that neither imports the other."""

import math
from fractions import Fraction


def frame_rate(sample_rate: int, hop_length: int) -> Fraction:
    """Code frames per second, exactly (44100 / 512 is not a finite binary fraction)."""
    return Fraction(sample_rate, hop_length)


def kbps(rate: Fraction, bits_per_code: float, n_codebooks: int) -> float:
    """The bitrate of ``n_codebooks`` codes of ``bits_per_code`` bits at ``rate`` frames per second."""
    return float(rate * Fraction(bits_per_code) * n_codebooks / 1000)


def codebooks_for_kbps(kbps: float, kbps_per_codebook: float, n_max: int) -> int:
    """The largest codebook count (1 … n_max) whose exact bitrate does not exceed ``kbps``."""
    return max(1, min(n_max, int(math.floor(kbps / kbps_per_codebook + 1e-9))))
