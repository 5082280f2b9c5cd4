"""The ``.dac`` container: header plus bit-packed, CRC-guarded code blocks (spec: docs/FORMAT.md).

Also reads the official tool's legacy ``.dac`` files (a NumPy-pickled dict) with a restricted
unpickler that admits nothing but NumPy array reconstruction.
"""

import io
import math
import pickle
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np
import zstandard

from .errors import DacliError
from .fileio import atomic_output

MAGIC = b"\x89DAC\r\n\x1a\n"
VERSION = 1
DEFAULT_BLOCK_FRAMES = 256
_FIXED = struct.Struct("<8sHHIIIHHBBHQQQff32sB")  # up to and including name_length
_BLOCK = struct.Struct("<BII")
RAW, ZSTD = 0, 1


@dataclass(frozen=True)
class Header:
    model_sample_rate: int
    hop_length: int
    original_sample_rate: int
    channels: int
    n_codebooks: int
    bits_per_code: int
    original_length: int
    model_length: int
    n_frames: int
    input_loudness: float
    gain_db: float
    model_hash: bytes
    model_name: str
    frames_per_block: int = DEFAULT_BLOCK_FRAMES

    @property
    def frame_rate(self):
        return self.model_sample_rate / self.hop_length

    @property
    def duration(self):
        return self.original_length / self.original_sample_rate

    @property
    def kbps(self):
        """Payload bitrate per channel."""
        return self.frame_rate * self.bits_per_code * self.n_codebooks / 1000

    def to_bytes(self):
        name = self.model_name.encode("utf-8")[:255]
        fixed = _FIXED.pack(MAGIC, VERSION, _FIXED.size + len(name) + 4, self.model_sample_rate, self.hop_length,
                            self.original_sample_rate, self.channels, self.n_codebooks, self.bits_per_code, 0,
                            self.frames_per_block, self.original_length, self.model_length, self.n_frames,
                            self.input_loudness, self.gain_db, self.model_hash, len(name))
        body = fixed + name
        return body + struct.pack("<I", zlib.crc32(body))


def pack(values, bits):
    """1-D integer array → bytes, each value as ``bits`` bits, MSB first, zero-padded to a byte."""
    v = np.asarray(values, dtype=np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((v[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)).tobytes()


def unpack(buf, count, bits):
    """Inverse of :func:`pack`: the first ``count`` values."""
    b = np.unpackbits(np.frombuffer(buf, np.uint8), count=count * bits).reshape(count, bits)
    return b.astype(np.int64) @ (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64))


def _blocks(header):
    f = header.frames_per_block
    return [(t, min(t + f, header.n_frames)) for t in range(0, header.n_frames, f)]


def encode_blocks(header, codes):
    """Codes (channels, n_codebooks, n_frames) → the bytes of all blocks."""
    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=19)
    for t0, t1 in _blocks(header):
        raw = pack(codes[:, :, t0:t1].transpose(1, 0, 2).reshape(-1), header.bits_per_code)
        z = cctx.compress(raw)
        coding, payload = (ZSTD, z) if len(z) < len(raw) else (RAW, raw)
        out.write(_BLOCK.pack(coding, len(payload), zlib.crc32(raw)))
        out.write(payload)
    return out.getvalue()


def write(path, header, codes):
    """Write a .dac file atomically (temp file + rename)."""
    codes = np.asarray(codes)
    if codes.shape != (header.channels, header.n_codebooks, header.n_frames):
        raise ValueError(f"codes shape {codes.shape} does not match the header")
    if codes.size and (codes.min() < 0 or codes.max() >= 2 ** header.bits_per_code):
        raise ValueError("code out of range for bits_per_code")
    data = header.to_bytes() + encode_blocks(header, codes)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def parse_header(buf, name="file"):
    """Header from the start of ``buf`` → (Header, header_size). Raises DacliError."""
    if buf[:len(MAGIC)] != MAGIC:
        raise DacliError(f"{name}: not a .dac file (unknown magic bytes)")
    if len(buf) < _FIXED.size + 4:
        raise DacliError(f"{name}: truncated .dac header")
    f = _FIXED.unpack_from(buf)
    (_, version, size, msr, hop, osr, ch, nq, bits, _flags, fpb, olen, mlen, nfr, loud, gain, mhash, nlen) = f
    if version != VERSION:
        raise DacliError(f"{name}: .dac format version {version} is not supported (this dacli reads version {VERSION})")
    if size < _FIXED.size + nlen + 4:
        raise DacliError(f"{name}: corrupt .dac header (bad header size)")
    if len(buf) < size:
        raise DacliError(f"{name}: truncated .dac header")
    crc, = struct.unpack_from("<I", buf, size - 4)
    if zlib.crc32(buf[:size - 4]) != crc:
        raise DacliError(f"{name}: corrupt .dac header (CRC mismatch)")
    if not (msr and hop and osr and ch and nq and 1 <= bits <= 24 and fpb):
        raise DacliError(f"{name}: corrupt .dac header (zero rate, channel or codebook count)")
    try:
        model_name = bytes(buf[_FIXED.size:_FIXED.size + nlen]).decode("utf-8")
    except UnicodeDecodeError:
        raise DacliError(f"{name}: corrupt .dac header (model name is not UTF-8)") from None
    h = Header(msr, hop, osr, ch, nq, bits, olen, mlen, nfr, loud, gain, bytes(mhash), model_name, fpb)
    return h, size


def read_header(path):
    """Header only (reads the first few hundred bytes)."""
    with _open(path) as f:
        buf = f.read(1024)
    return parse_header(buf, path)[0]


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DacliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DacliError(f"{path}: is a directory") from None
    except OSError as e:
        raise DacliError(f"{path}: cannot open ({e.strerror})") from None


def read(path):
    """Read a .dac file → (Header, codes int32 (channels, n_codebooks, n_frames)). Raises DacliError
    for anything wrong with it: magic, version, truncation, CRC, trailing bytes."""
    with _open(path) as f:
        buf = f.read()
    header, pos = parse_header(buf, path)
    codes = np.empty((header.channels, header.n_codebooks, header.n_frames), dtype=np.int32)  # ≤ 24 bits
    dctx = zstandard.ZstdDecompressor()
    for i, (t0, t1) in enumerate(_blocks(header)):
        if len(buf) < pos + _BLOCK.size:
            raise DacliError(f"{path}: truncated (block {i} of {len(_blocks(header))} is missing)")
        coding, size, crc = _BLOCK.unpack_from(buf, pos)
        pos += _BLOCK.size
        payload = buf[pos:pos + size]
        if len(payload) < size:
            raise DacliError(f"{path}: truncated (block {i} is cut short)")
        pos += size
        count = header.n_codebooks * header.channels * (t1 - t0)
        need = math.ceil(count * header.bits_per_code / 8)
        try:
            raw = payload if coding == RAW else dctx.decompress(payload, max_output_size=need) if coding == ZSTD else None
        except zstandard.ZstdError:
            raw = None
        if raw is None or len(raw) != need or zlib.crc32(raw) != crc:
            raise DacliError(f"{path}: corrupt data in block {i} (CRC mismatch)")
        codes[:, :, t0:t1] = unpack(raw, count, header.bits_per_code).reshape(
            header.n_codebooks, header.channels, t1 - t0).transpose(1, 0, 2)
    if pos != len(buf):
        raise DacliError(f"{path}: {len(buf) - pos} unexpected bytes after the last block")
    return header, codes


def truncate_codebooks(header, codes, n_codebooks):
    """A lower-bitrate copy: the first ``n_codebooks`` codebooks, no re-encoding."""
    if not 1 <= n_codebooks <= header.n_codebooks:
        raise DacliError(f"cannot keep {n_codebooks} codebooks of a file that has {header.n_codebooks}")
    return replace(header, n_codebooks=n_codebooks), codes[:, :n_codebooks]


# --------------------------------------------------------------------------------------------------
# Legacy files of the official tool

LEGACY_MAGIC = b"\x93NUMPY"
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


@dataclass(frozen=True)
class LegacyFile:
    codes: np.ndarray          # (channels, n_codebooks, frames) int64
    input_db: float
    original_length: int
    sample_rate: int
    chunk_length: int
    channels: int
    padding: bool


def is_legacy(path):
    with _open(path) as f:
        return f.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC


def read_legacy(path):
    """Read an official-tool .dac (npy-pickled dict) without running arbitrary pickle code."""
    with _open(path) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        except Exception as e:
            raise DacliError(f"{path}: not a readable legacy .dac file ({e})") from None
        if dtype != np.dtype(object) or shape != ():
            raise DacliError(f"{path}: not a legacy .dac file (npy holds {dtype} {shape}, not a pickled dict)")
        try:
            obj = _RestrictedUnpickler(f).load()
        except pickle.UnpicklingError as e:
            raise DacliError(f"{path}: refused: the legacy file's pickle is not plain NumPy data ({e})") from None
        except Exception as e:
            raise DacliError(f"{path}: corrupt legacy .dac file ({type(e).__name__}: {e})") from None
    try:
        if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
            obj = obj.item()
        meta = obj["metadata"]
        codes = np.asarray(obj["codes"]).astype(np.int64)
        if meta.get("dac_version") != "1.0.0":
            raise DacliError(f"{path}: legacy .dac version {meta.get('dac_version')!r} is not supported")
        channels = int(meta["channels"])
        codes = codes.reshape(-1, *codes.shape[-2:]) if codes.ndim >= 2 else codes[None, None]
        return LegacyFile(codes=codes, input_db=float(np.asarray(meta["input_db"]).reshape(-1)[0]),
                          original_length=int(meta["original_length"]), sample_rate=int(meta["sample_rate"]),
                          chunk_length=int(meta["chunk_length"]), channels=channels, padding=bool(meta["padding"]))
    except DacliError:
        raise
    except Exception as e:
        raise DacliError(f"{path}: legacy .dac file lacks the expected codes/metadata ({e})") from None
