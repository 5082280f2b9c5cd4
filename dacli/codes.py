"""Codes: the one dtype and layout RVQ codes have wherever dacli hands them out or takes them in.

**Codes are int32, laid out (channels, codebooks, frames)**: ``codes[c, k, t]`` is codebook ``k``'s
entry for frame ``t`` of channel ``c``. Functions on files and arrays (:mod:`dacli.codec`,
:mod:`dacli.windows`, :func:`dacli.read_codes`, :func:`dacli.container.read`, :mod:`dacli.legacy`)
return NumPy arrays; the model's own methods (:meth:`dacli.DAC.encode`) return torch tensors on the
CPU. Whatever takes codes accepts either, of any integer dtype, and (codebooks, frames) for one
channel. int32 holds every codebook size a ``.dac`` file allows (up to 2^16 entries) and indexes
torch embeddings directly; files store codes bit-packed (docs/FORMAT.md). Every conversion is here.
"""

from typing import Any, Optional

import numpy as np

from .errors import DacliError

DTYPE = np.int32


def codebook_count(n_codebooks: Optional[int], total: int) -> int:
    """The codebook count to code with, of a model's ``total``: all when None; refused outside
    1..total."""
    if n_codebooks is None:
        return total
    if not 1 <= int(n_codebooks) <= total:
        raise DacliError(f"n_codebooks must be 1..{total}, got {n_codebooks}")
    return int(n_codebooks)


def as_array(codes: Any, name: str = "codes") -> np.ndarray:
    """``codes`` (array or tensor, any integer dtype, (channels, codebooks, frames) or (codebooks,
    frames)) as a (channels, codebooks, frames) int32 NumPy array; refuses anything else."""
    if hasattr(codes, "detach"):  # a torch tensor, without importing torch
        codes = codes.detach().cpu().numpy()
    a = np.asarray(codes)
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "b" and a.size == 0):
        raise DacliError(f"{name}: codes must be integers, not {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise DacliError(f"{name}: codes must be (channels, codebooks, frames) or (codebooks, frames), "
                         f"not {a.ndim}-dimensional")
    if a.size and (a.min() < 0 or a.max() > np.iinfo(DTYPE).max):
        raise DacliError(f"{name}: codes out of range ({a.min()} .. {a.max()})")
    return a.astype(DTYPE, copy=False)


def as_tensor(codes: Any, name: str = "codes") -> Any:
    """:func:`as_array` as a torch tensor (int32, on the CPU)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(as_array(codes, name)))


def check(codes: np.ndarray, n_codebooks: int, codebook_size: int, name: str = "codes",
          channels: Optional[int] = None) -> None:
    """Refuse codes that a model of ``n_codebooks`` codebooks of ``codebook_size`` entries cannot
    decode (and, given ``channels``, codes of another channel count)."""
    if codes.shape[1] > n_codebooks or codes.shape[1] < 1:
        raise DacliError(f"{name} has {codes.shape[1]} codebooks, the model {n_codebooks}")
    if codes.size and codes.max() >= codebook_size:
        raise DacliError(f"{name} holds codes up to {codes.max()}, beyond the model's {codebook_size} codebook "
                         "entries")
    if channels is not None and codes.shape[0] != channels:
        raise DacliError(f"{name} has codes of {codes.shape[0]} channels, expected {channels}")
