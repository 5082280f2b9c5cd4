"""Frame rates and bitrates of RVQ codes, exactly: shared by the model (which codes) and the
container (which stores), so that neither imports the other; and :class:`Bitrate`, what ``--kbps``
or ``--n-codebooks`` asks of a file, as a codebook count for each channel count.

A bitrate is a file's **total** over all its channels, as Opus, MP3 and AAC rates are: ``--kbps 8`` on
stereo keeps the codebooks whose exact rate, summed over both channels, fits 8 kbps.
"""

import math
from fractions import Fraction
from typing import Callable, Dict, Optional

from .codes import codebook_count
from .errors import DacliError


def frame_rate(sample_rate: int, hop_length: int) -> Fraction:
    """Code frames per second, exactly (44100 / 512 is not a finite binary fraction)."""
    return Fraction(sample_rate, hop_length)


def kbps(rate: Fraction, bits_per_code: float, n_codebooks: int) -> float:
    """The bitrate of ``n_codebooks`` codes of ``bits_per_code`` bits at ``rate`` frames per second
    (one channel)."""
    return float(rate * Fraction(bits_per_code) * n_codebooks / 1000)


def codebooks_fitting(kbps: float, kbps_per_codebook: float, channels: int = 1) -> int:
    """How many codebooks per channel a total of ``kbps`` holds for ``channels`` channels, uncapped
    (0 when not even one fits)."""
    return int(math.floor(kbps / (kbps_per_codebook * channels) + 1e-9))


def codebooks_for_kbps(kbps: float, kbps_per_codebook: float, n_max: int, channels: int = 1) -> int:
    """The largest codebook count (1 … n_max) whose exact total bitrate over ``channels`` channels
    does not exceed ``kbps``."""
    return max(1, min(n_max, codebooks_fitting(kbps, kbps_per_codebook, channels)))


def channels_word(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


class Bitrate:
    """What ``--kbps K`` (a file's total rate) or ``--n-codebooks N`` asks of a model whose codebooks
    are ``kbps_per_codebook`` each, ``n_max`` of them: :meth:`codebooks` gives the count for a file of
    some channel count. A K below one codebook for that channel count is refused (naming the lowest
    rate); a K above the model's highest is served with all codebooks, and ``notice`` is told once per
    channel count. Neither given: all codebooks."""

    def __init__(self, kbps_per_codebook: float, n_max: int, kbps: Optional[float] = None,
                 n_codebooks: Optional[int] = None, notice: Optional[Callable[[str], None]] = None) -> None:
        if kbps is not None and n_codebooks is not None:
            raise DacliError("give --kbps or --n-codebooks, not both")
        if n_codebooks is not None:
            codebook_count(n_codebooks, n_max)  # refused outside 1 … n_max
        if kbps is not None and not (math.isfinite(kbps) and kbps > 0):
            raise DacliError(f"--kbps must be a number above zero, not {kbps}")
        self.per_codebook, self.n_max, self.kbps, self.n_codebooks = kbps_per_codebook, n_max, kbps, n_codebooks
        self.notice = notice
        self._noticed: Dict[int, bool] = {}

    @property
    def most(self) -> int:
        """The most codebooks any file gets (mono's count): what an encoder computes before cutting."""
        return self.codebooks(1, quiet=True) if self.kbps is None or self.fits(1) else self.n_max

    def fits(self, channels: int) -> bool:
        """Whether at least one codebook fits the rate for ``channels`` channels."""
        return self.kbps is None or codebooks_fitting(self.kbps, self.per_codebook, channels) >= 1

    def lowest(self, channels: int) -> str:
        """Why a rate is too low for ``channels`` channels, naming the lowest rate."""
        return (f"--kbps {self.kbps:g} is below the lowest rate for {channels_word(channels)}, "
                f"{self.per_codebook * channels:.3f} kbps (one codebook per channel)")

    def codebooks(self, channels: int, quiet: bool = False) -> int:
        """The codebook count for a file of ``channels`` channels."""
        if self.kbps is None:
            return self.n_codebooks or self.n_max
        n = codebooks_fitting(self.kbps, self.per_codebook, channels)
        if n < 1:
            raise DacliError(self.lowest(channels))
        if n > self.n_max and not quiet and self.notice is not None and not self._noticed.get(channels):
            self._noticed[channels] = True
            self.notice(f"--kbps {self.kbps:g} is above the model's highest rate for {channels_word(channels)}: "
                        f"using {self.total(channels, self.n_max):.3f} kbps ({self.n_max} codebooks)")
        return min(n, self.n_max)

    def mismatch(self, channels: int, n: int) -> Optional[str]:
        """How ``n`` codebooks on ``channels`` channels (a file made earlier) differ from what this rate
        gives them ("with 9 codebooks, asked 3"), or None when they are the same."""
        if not self.fits(channels):
            return f"with {n} codebooks; {self.lowest(channels)}"
        want = self.codebooks(channels, quiet=True)
        return f"with {n} codebooks, asked {want}" if n != want else None

    def total(self, channels: int, n: int) -> float:
        """The exact total rate of ``n`` codebooks on ``channels`` channels, in kbps."""
        return self.per_codebook * n * channels

    def describe(self, channels: int) -> str:
        """``4 of 9 codebooks = 6.891 kbps for stereo (3.445 kbps per channel)``, or why none fit."""
        if not self.fits(channels):
            return f"nothing for {channels_word(channels)} ({self.lowest(channels)})"
        n = self.codebooks(channels, quiet=True)
        per = f" ({self.total(1, n):.3f} kbps per channel)" if channels > 1 else ""
        return f"{n} of {self.n_max} codebooks = {self.total(channels, n):.3f} kbps for {channels_word(channels)}{per}"
