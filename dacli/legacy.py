"""Files written by the official descript-audio-codec tool (its "legacy" ``.dac``): a NumPy ``.npy``
file holding one pickled dict, ``{"codes": int array (channels, n_codebooks, frames), "metadata": {...}}``.

Pickle can run any code and NumPy trusts the array states it is handed (a dtype changed to ``object``
makes NumPy read raw bytes as pointers), so neither sees the file as it is. The unpickler admits only
the four globals such a file names, and each of them is replaced by a stand-in that records what the
file asks for: no NumPy array or dtype is built from the pickle. Afterwards the stand-ins are checked
(numeric dtypes only, sizes that match the bytes, the expected keys and types, values within the
container's limits) and only then turned into arrays with ``np.frombuffer``. The format has no
checksum: a changed code value cannot be detected, only codes outside the model's codebook.

Decoding follows the official ``decompress`` (chunks decoded with 'valid' convolutions, per-channel
loudness restored); everything dacli does with such files lives here.
"""

import io
import math
import os
import pickle
import pickletools
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np

from . import audio, container
from .codes import as_array as as_codes, check as check_codes
from .errors import DacliError

if TYPE_CHECKING:
    from .model import DAC

MAGIC = b"\x93NUMPY"
DAC_VERSION = "1.0.0"
# dtypes an array in such a file may have (NumPy's pickled type strings); "O8" only for the outer
# 0-d object array that wraps the dict
_NUMERIC = {"b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8"}
_OBJECT = "O8"
_MAX_NDIM = 8
MAX_LOUDNESS_DB = 200.0  # the stored input loudness (LUFS) is restored as a gain: keep it a sane number


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something a legacy file never holds."""


class _ArrayType:
    """Stands in for ``numpy.ndarray`` in the pickle."""


class _DType:
    """Stands in for ``numpy.dtype(spec, align, copy)`` followed by ``__setstate__``."""

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str) or spec not in _NUMERIC | {_OBJECT}:
            raise _Refused(f"dtype {spec!r} is not allowed")
        self.spec, self.byteorder = spec, "|"

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
                and state[5:7] == (-1, -1) and (len(state) == 8 or state[8] is None)):
            raise _Refused("dtype state is not a plain numeric or object type")
        self.byteorder = state[1]

    def numpy(self):
        return np.dtype(("" if self.byteorder == "|" else self.byteorder) + self.spec)


class _Array:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` + ``__setstate__``."""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _Refused("array state is not (1, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and len(shape) <= _MAX_NDIM
                and all(type(d) is int and 0 <= d <= container.MAX_LENGTH for d in shape)):
            raise _Refused(f"array shape {shape!r} is not allowed")
        if not isinstance(dtype, _DType) or not isinstance(fortran, bool):
            raise _Refused("array dtype or order is not allowed")
        n = math.prod(shape)
        if dtype.spec == _OBJECT:
            if shape != () or not isinstance(data, list) or len(data) != 1:
                raise _Refused("only a 0-d object array may hold Python objects")
        elif not isinstance(data, bytes) or len(data) != n * dtype.numpy().itemsize:
            raise _Refused(f"array data does not match shape {shape} and dtype {dtype.spec}")
        self.state = (shape, dtype, fortran, data)

    def value(self):
        if self.state is None:
            raise _Refused("array without state")
        shape, dtype, fortran, data = self.state
        if dtype.spec == _OBJECT:
            return data[0]
        return np.frombuffer(data, dtype.numpy()).reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls, shape, typecode):
    if cls is not _ArrayType:
        raise _Refused("_reconstruct of something other than ndarray")
    return _Array()


_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): _ArrayType, ("numpy", "dtype"): _DType}


# The opcodes that NumPy's pickles of plain data use (protocols 2-5). Others (object construction,
# extensions, persistent ids, out-of-band buffers) are refused before unpickling starts.
_OPCODES = {"PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "GLOBAL", "STACK_GLOBAL", "REDUCE",
            "BUILD", "MEMOIZE", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET", "NONE", "NEWTRUE", "NEWFALSE",
            "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
            "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
            "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS"}
_MAX_MEMO = 1 << 16  # a legacy file uses ~50 memo slots; CPython's unpickler sizes its memo by the index


def _check_opcodes(buf, start):
    """Walk the pickle without running it (pickletools): only allowed opcodes, memo indices below
    _MAX_MEMO, every length backed by bytes that are there, and nothing after STOP."""
    end = start
    for op, arg, pos in pickletools.genops(io.BytesIO(buf[start:])):
        if op.name not in _OPCODES:
            raise _Refused(f"opcode {op.name} is not allowed")
        if op.name in ("BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET") and not (isinstance(arg, int)
                                                                              and 0 <= arg < _MAX_MEMO):
            raise _Refused(f"memo index {arg} is out of range")
        end = start + pos + 1
    if end != len(buf):
        raise DacliError(f"{len(buf) - end} unexpected bytes after the legacy file's data")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"global {module}.{name} is not allowed") from None


@dataclass(frozen=True)
class LegacyFile:
    codes: np.ndarray          # (channels, n_codebooks, frames) int32, as everywhere (dacli.codes)
    input_db: float
    original_length: int
    sample_rate: int
    chunk_length: int
    channels: int
    padding: bool


def is_legacy(path: container.PathLike) -> bool:
    with container.open_input(path) as f:
        return f.read(len(MAGIC)) == MAGIC


def read(path: container.PathLike) -> LegacyFile:
    """Read an official-tool .dac file without running pickle code or trusting its array states."""
    with container.open_input(path) as f:
        buf = f.read()
    return parse(buf, path)


def _resolve(v):
    return v.value() if isinstance(v, _Array) else v


def _int(meta, key, lo, hi):
    v = _resolve(meta[key])
    if isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "iu":
        v = int(v.reshape(-1)[0])
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"metadata {key} = {v!r} is not an integer in {lo}-{hi}")
    return v


def parse(buf: bytes, name: object = "file") -> LegacyFile:
    """:func:`read` on bytes already in memory. Raises DacliError."""
    f = io.BytesIO(buf)
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    except Exception as e:
        raise DacliError(f"{name}: not a readable legacy .dac file ({type(e).__name__}: {e})"[:300]) from None
    if dtype != np.dtype(object) or shape != ():
        raise DacliError(f"{name}: not a legacy .dac file (npy holds {dtype} {shape}, not a pickled dict)")
    try:
        _check_opcodes(buf, f.tell())
        obj = _Unpickler(f).load()
    except DacliError as e:
        raise DacliError(f"{name}: {e}") from None
    except _Refused as e:
        raise DacliError(f"{name}: refused: the legacy file's pickle is not plain NumPy data ({e})") from None
    except Exception as e:  # truncated or malformed pickle streams raise many types
        raise DacliError(f"{name}: corrupt legacy .dac file ({type(e).__name__}: {e})"[:300]) from None
    if f.tell() != len(buf):
        raise DacliError(f"{name}: {len(buf) - f.tell()} unexpected bytes after the legacy file's data")
    try:
        top = _resolve(obj)
        if not isinstance(top, dict) or not isinstance(top.get("metadata"), dict):
            raise ValueError("not a dict with codes and metadata")
        meta = top["metadata"]
        if meta.get("dac_version") != DAC_VERSION:
            raise DacliError(f"{name}: legacy .dac version {meta.get('dac_version')!r} is not supported")
        codes = _resolve(top["codes"])
        if not (isinstance(codes, np.ndarray) and codes.dtype.kind in "iu" and codes.ndim == 3
                and codes.size and codes.shape[1] <= container.MAX_CODEBOOKS):
            raise ValueError(f"codes are not a non-empty integer array (channels, codebooks, frames) "
                             f"with at most {container.MAX_CODEBOOKS} codebooks")
        if codes.min() < 0 or codes.max() >= 1 << container.MAX_BITS_PER_CODE:
            raise ValueError("codes out of range")
        channels = _int(meta, "channels", 1, container.MAX_CHANNELS)
        if codes.shape[0] != channels:
            raise ValueError(f"{codes.shape[0]} rows of codes for {channels} channels")
        input_db = _resolve(meta["input_db"])
        if type(input_db) in (int, float):
            input_db = np.array([input_db], np.float64)
        if not (isinstance(input_db, np.ndarray) and input_db.size == 1 and input_db.dtype.kind in "fiu"
                and abs(float(input_db.reshape(-1)[0])) <= MAX_LOUDNESS_DB):
            raise ValueError(f"input_db is not a number within ±{MAX_LOUDNESS_DB}")
        padding = meta["padding"]
        if not isinstance(padding, bool):
            raise ValueError("padding is not a boolean")
        return LegacyFile(codes=as_codes(codes, str(name)), input_db=float(input_db.reshape(-1)[0]),
                          original_length=_int(meta, "original_length", 1, container.MAX_LENGTH),
                          sample_rate=_int(meta, "sample_rate", container.MIN_SAMPLE_RATE,
                                           container.MAX_SAMPLE_RATE),
                          chunk_length=_int(meta, "chunk_length", 1, container.MAX_LENGTH),
                          channels=channels, padding=padding)
    except DacliError:
        raise
    except Exception as e:
        raise DacliError(f"{name}: legacy .dac file lacks the expected codes/metadata ({e})"[:300]) from None


def check_model(legacy: LegacyFile, model: "DAC", name: object = "file") -> None:
    """Refuse codes the model cannot decode (more codebooks, or codes beyond its codebook)."""
    check_codes(legacy.codes, model.n_codebooks, model.codebook_size, f"{name}: the legacy file")


def decode(model: "DAC", lg: LegacyFile, name: object = "file") -> np.ndarray:
    """Decode an official-tool file exactly as the official ``decompress`` does (including its
    per-channel loudness restoration) → (samples, channels) at the original rate."""
    import torch
    check_model(lg, model, name)
    model.set_padding(lg.padding)
    try:
        chunks = []
        for i in range(0, lg.codes.shape[-1], lg.chunk_length):
            c = torch.from_numpy(lg.codes[:, :, i:i + lg.chunk_length]).to(model.device)
            with torch.inference_mode():
                try:
                    chunks.append(model.decode_batch(c)[:, 0].float().cpu().numpy())
                except RuntimeError:  # an unpadded chunk shorter than the decoder's kernels
                    raise DacliError(f"{name}: chunks of {c.shape[-1]} frames cannot be decoded without "
                                     "padding") from None
    finally:
        model.set_padding(True)
    y = np.concatenate(chunks, axis=1)
    for ch in range(y.shape[0]):  # the official tool normalises each channel to the stored loudness
        y[ch] *= audio.db_to_gain(lg.input_db - audio.loudness(y[ch], model.sample_rate))
    y = resample_sinc(y, model.sample_rate, lg.sample_rate).T
    if len(y) < lg.original_length:
        raise DacliError("legacy file decodes to fewer samples than its original length")
    return y[:lg.original_length]


SINC_MAX_TAPS = 1 << 22  # 16 MB of filter bank


def resample_sinc(x: np.ndarray, rate_in: int, rate_out: int, zeros: int = 24, rolloff: float = 0.945) -> np.ndarray:
    """Windowed-sinc resampling exactly as the official tool does it (julius' ``resample_frac``:
    Hann-squared window, 24 zero crossings, roll-off 0.945, replicate padding, output length
    floor(L · out / in)). Used to reproduce legacy decodes; :func:`dacli.audio.resample` is better otherwise.
    ``x``: (channels, samples) array.

    Its filter bank has one kernel per output phase, ``rate_out / gcd`` kernels of about
    ``rate_in / gcd`` taps: a few thousand values for real rate pairs (48 kHz → 44.1 kHz: 160 × 199),
    but gigabytes for rates with a small common divisor (44,101 Hz). Beyond SINC_MAX_TAPS values the
    soxr resampler (:func:`dacli.audio.resample`, length floor(L · out / in)) stands in for it."""
    import torch
    import torch.nn.functional as F
    g = math.gcd(rate_in, rate_out)
    old, new = rate_in // g, rate_out // g
    if old == new:
        return np.asarray(x, np.float32)
    sr = min(old, new) * rolloff
    width = math.ceil(zeros * old / sr)
    if new * (2 * width + old) > SINC_MAX_TAPS:
        a = np.asarray(x, np.float32)
        y = np.stack([audio.resample(c, rate_in, rate_out) for c in a]) if len(a) else a
        n = a.shape[-1] * rate_out // rate_in
        return np.pad(y, ((0, 0), (0, max(0, n - y.shape[-1]))))[:, :n].astype(np.float32)
    t_x = torch.as_tensor(np.asarray(x, np.float32))
    idx = torch.arange(-width, width + old).float()
    kernels = []
    for i in range(new):
        t = ((-i / new + idx / old) * sr).clamp(-zeros, zeros) * math.pi
        k = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * torch.cos(t / zeros / 2) ** 2
        kernels.append(k / k.sum())
    kernel = torch.stack(kernels)[:, None]
    length = t_x.shape[-1]
    t_y = F.conv1d(F.pad(t_x.reshape(-1, 1, length), (width, width + old), mode="replicate"), kernel, stride=old)
    t_y = t_y.transpose(1, 2).reshape(*t_x.shape[:-1], -1)
    return t_y[..., :int(new * length / old)].numpy()


def decode_file(model: "DAC", src: container.PathLike, dst: Union[container.PathLike, BinaryIO],
                fmt: str = "wav") -> LegacyFile:
    """Decode an official-tool file to an audio file (atomically) or a stream, as
    :func:`dacli.codec.decode_file` does for ours."""
    lg = read(src)
    y = decode(model, lg, src)
    audio.write_audio(dst, [y], lg.sample_rate, y.shape[1], len(y), fmt)
    return lg


def describe(path: container.PathLike) -> dict:
    """What ``dacli info`` shows of an official-tool file."""
    lg = read(path)
    size = os.path.getsize(path)
    dur = lg.original_length / lg.sample_rate
    return {"file": str(path), "format": "official descript-audio-codec 1.0.0 (legacy, pickled numpy)",
            "original_sample_rate": lg.sample_rate, "channels": lg.channels, "duration_s": round(dur, 3),
            "n_codebooks": int(lg.codes.shape[1]), "frames": int(lg.codes.shape[-1]),
            "chunk_length": lg.chunk_length, "input_loudness_lufs": round(lg.input_db, 2),
            "file_bytes": size, "file_kbps": round(size * 8 / dur / 1000, 3) if dur else None}
