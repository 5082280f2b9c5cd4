"""The ``.dac`` container: header plus bit-packed, CRC-guarded code blocks (spec: docs/FORMAT.md):
writing, reading with every check, and describing a file. The official tool's files (pickled NumPy)
are read by :mod:`dacli.legacy`."""

import io
import math
import os
import stat
import struct
import zlib
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Optional, Tuple, Union

import numpy as np
import zstandard

from .codes import as_array as as_codes
from .errors import DacliError
from .fileio import atomic_output, os_reason
from .rates import Bitrate, frame_rate, kbps

PathLike = Union[str, Path]

MAGIC = b"\x89DAC\r\n\x1a\n"
VERSION = 1
DEFAULT_BLOCK_FRAMES = 256
ZSTD_LEVEL = 19  # codes are written once and read often: the slowest level costs ~2 ms per minute of audio

# Limits every reader enforces (docs/FORMAT.md, "Limits"): far beyond any real file, and small enough
# that nothing a header claims can make a reader allocate more than the file can hold.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000
MAX_CHANNELS = 1024            # libsndfile's limit
MAX_CODEBOOKS = 64
MAX_BITS_PER_CODE = 16         # codebooks of up to 65,536 entries
MAX_RAW_BLOCK = 1 << 24        # raw bytes per block (16 MiB; a default block of 9 codebooks is 2.9 KB per channel)
MAX_LENGTH = 1 << 40           # samples per channel (over 290 days at 44.1 kHz)
MAX_GAIN_DB = 1000.0
MIN_BANDWIDTH_GAP_HZ = 1000   # a recorded bandwidth lies at least this far below the model's Nyquist frequency
MAX_ZSTD_RATIO = 1 << 15       # no zstd frame expands more: each ≤128 KiB block costs ≥ 4 bytes
_FIXED = struct.Struct("<8sHHIIIHHBBHQQQff32sB")  # up to and including name_length
_BANDWIDTH = struct.Struct("<I")  # after the model name, from revision 1.1 on
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
    bandwidth_hz: int = 0  # the input's audio bandwidth at the model rate; 0 = full band (no low-pass)

    @property
    def frame_rate(self) -> Fraction:
        return frame_rate(self.model_sample_rate, self.hop_length)

    @property
    def duration(self) -> float:
        return self.original_length / self.original_sample_rate

    @property
    def kbps(self) -> float:
        """Payload bitrate per channel."""
        return kbps(self.frame_rate, self.bits_per_code, self.n_codebooks)

    def to_bytes(self) -> bytes:
        name = self.model_name.encode("utf-8")[:255]
        size = _FIXED.size + len(name) + _BANDWIDTH.size + 4
        fixed = _FIXED.pack(MAGIC, VERSION, size, self.model_sample_rate, self.hop_length,
                            self.original_sample_rate, self.channels, self.n_codebooks, self.bits_per_code, 0,
                            self.frames_per_block, self.original_length, self.model_length, self.n_frames,
                            self.input_loudness, self.gain_db, self.model_hash, len(name))
        body = fixed + name + _BANDWIDTH.pack(self.bandwidth_hz)
        return body + struct.pack("<I", zlib.crc32(body))


def pack(values: np.ndarray, bits: int) -> bytes:
    """1-D integer array → bytes, each value as ``bits`` bits, MSB first, zero-padded to a byte."""
    v = np.asarray(values, dtype=np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((v[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)).tobytes()


_UNPACK_SLICE = 1 << 16  # values per step of unpack: bounds its temporaries to a few MB


def unpack(buf: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``count`` values, as uint16 (``bits`` ≤ 16)."""
    bitstream = np.frombuffer(buf, np.uint8)
    weights = (np.uint32(1) << np.arange(bits - 1, -1, -1, dtype=np.uint32))
    out = np.empty(count, np.uint16)
    for i in range(0, count, _UNPACK_SLICE):
        n = min(_UNPACK_SLICE, count - i)
        first = i * bits  # bit offset; slices start on a byte boundary because _UNPACK_SLICE % 8 == 0
        b = np.unpackbits(bitstream[first // 8:(first + n * bits + 7) // 8], count=n * bits).reshape(n, bits)
        out[i:i + n] = b @ weights
    return out


def block_spans(header):
    """[(first frame, end frame)] of each block."""
    f = header.frames_per_block
    return [(t, min(t + f, header.n_frames)) for t in range(0, header.n_frames, f)]


def block_count(header):
    return -(-header.n_frames // header.frames_per_block)


def raw_block_size(header, frames):
    """Bytes of a block's raw (packed, uncompressed) payload."""
    return -(-header.n_codebooks * header.channels * frames * header.bits_per_code // 8)


def encode_blocks(header, codes):
    """Codes (channels, n_codebooks, n_frames) → the bytes of all blocks."""
    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)  # the content size goes into each frame (required)
    for t0, t1 in block_spans(header):
        raw = pack(codes[:, :, t0:t1].transpose(1, 0, 2).reshape(-1), header.bits_per_code)
        z = cctx.compress(raw)
        coding, payload = (ZSTD, z) if len(z) < len(raw) else (RAW, raw)
        out.write(_BLOCK.pack(coding, len(payload), zlib.crc32(raw)))
        out.write(payload)
    return out.getvalue()


def write(path: PathLike, header: Header, codes: np.ndarray) -> None:
    """Write a .dac file atomically (temp file + rename)."""
    codes = np.asarray(codes)
    validate(header)
    if codes.shape != (header.channels, header.n_codebooks, header.n_frames):
        raise ValueError(f"codes shape {codes.shape} does not match the header")
    if codes.size and (codes.min() < 0 or codes.max() >= 2 ** header.bits_per_code):
        raise ValueError("code out of range for bits_per_code")
    data = header.to_bytes() + encode_blocks(header, codes)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def parse_header(buf: bytes, name: PathLike = "file") -> Tuple[Header, int]:
    """Header from the start of ``buf`` → (Header, header_size). Checks magic, version, size and CRC,
    then every field (:func:`validate`). Raises DacliError."""
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
    try:
        model_name = bytes(buf[_FIXED.size:_FIXED.size + nlen]).decode("utf-8")
    except UnicodeDecodeError:
        raise DacliError(f"{name}: corrupt .dac header (model name is not UTF-8)") from None
    bandwidth = 0  # revision 1.0 headers end after the name; fields a later revision adds are skipped
    if size >= _FIXED.size + nlen + _BANDWIDTH.size + 4:
        bandwidth, = _BANDWIDTH.unpack_from(buf, _FIXED.size + nlen)
    h = Header(msr, hop, osr, ch, nq, bits, olen, mlen, nfr, loud, gain, bytes(mhash), model_name, fpb, bandwidth)
    try:
        validate(h)
    except ValueError as e:
        raise DacliError(f"{name}: invalid .dac header ({e})") from None
    return h, size


def max_bandwidth(model_sample_rate: int) -> int:
    """The highest bandwidth_hz a file of this model rate may record (docs/FORMAT.md, "Validation")."""
    return model_sample_rate // 2 - MIN_BANDWIDTH_GAP_HZ


def validate(h: Header) -> None:
    """Check every field against the limits of docs/FORMAT.md and against the others (ValueError)."""
    if not (MIN_SAMPLE_RATE <= h.model_sample_rate <= MAX_SAMPLE_RATE
            and MIN_SAMPLE_RATE <= h.original_sample_rate <= MAX_SAMPLE_RATE):
        raise ValueError(f"sample rates {h.model_sample_rate} / {h.original_sample_rate} Hz outside "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}")
    if not 1 <= h.hop_length <= h.model_sample_rate:
        raise ValueError(f"hop length {h.hop_length} outside 1-{h.model_sample_rate}")
    if not 1 <= h.channels <= MAX_CHANNELS:
        raise ValueError(f"{h.channels} channels, outside 1-{MAX_CHANNELS}")
    if not 1 <= h.n_codebooks <= MAX_CODEBOOKS:
        raise ValueError(f"{h.n_codebooks} codebooks, outside 1-{MAX_CODEBOOKS}")
    if not 1 <= h.bits_per_code <= MAX_BITS_PER_CODE:
        raise ValueError(f"{h.bits_per_code} bits per code, outside 1-{MAX_BITS_PER_CODE}")
    if h.frames_per_block < 1 or raw_block_size(h, h.frames_per_block) > MAX_RAW_BLOCK:
        raise ValueError(f"{h.frames_per_block} frames per block: a block must hold 1 frame to "
                         f"{MAX_RAW_BLOCK} raw bytes")
    if not 1 <= h.original_length <= MAX_LENGTH:
        raise ValueError(f"original length {h.original_length} outside 1-{MAX_LENGTH}")
    # model_length is the resampled original_length: within one sample of the exact ratio
    if abs(h.model_length * h.original_sample_rate - h.original_length * h.model_sample_rate) > h.original_sample_rate:
        raise ValueError(f"model length {h.model_length} does not match original length {h.original_length} "
                         f"at {h.original_sample_rate} → {h.model_sample_rate} Hz")
    if h.n_frames != -(-h.model_length // h.hop_length):
        raise ValueError(f"{h.n_frames} frames for {h.model_length} samples at hop {h.hop_length}")
    if not (math.isfinite(h.gain_db) and abs(h.gain_db) <= MAX_GAIN_DB):
        raise ValueError(f"gain {h.gain_db} dB is not a finite number within ±{MAX_GAIN_DB}")
    if not math.isfinite(h.input_loudness):
        raise ValueError(f"input loudness {h.input_loudness} is not a finite number")
    if h.bandwidth_hz and not 1 <= h.bandwidth_hz <= max_bandwidth(h.model_sample_rate):
        raise ValueError(f"bandwidth {h.bandwidth_hz} Hz is not 0 or within 1-{max_bandwidth(h.model_sample_rate)}")


def open_input(path: PathLike) -> BinaryIO:
    """Open an input file for reading; one-line errors for missing files, folders, FIFOs and devices
    (opened without blocking, so a FIFO with no writer is refused instead of waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DacliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DacliError(f"{path}: is a directory") from None
    except OSError as e:
        raise DacliError(f"{path}: cannot open ({os_reason(e)})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DacliError(f"{path}: " + ("is a directory" if stat.S_ISDIR(mode) else "not a regular file"))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_header(path: PathLike) -> Header:
    """Header only (the fixed part, then as many bytes as its header_size says), checked against the
    file's size too."""
    with open_input(path) as f:
        buf = f.read(_FIXED.size + 4)
        if buf[:len(MAGIC)] == MAGIC and len(buf) >= _FIXED.size:
            size, = struct.unpack_from("<H", buf, 10)
            buf += f.read(max(0, size - len(buf)))
        header, size = parse_header(buf, path)
        _check_room(header, os.fstat(f.fileno()).st_size - size, path)
    return header


def _check_room(header, available, name):
    """Every block costs at least its 9-byte head and one payload byte: refuse a header that claims
    more blocks than the rest of the file can hold, before allocating anything for them."""
    blocks = block_count(header)
    if blocks * (_BLOCK.size + 1) > available:
        raise DacliError(f"{name}: truncated (the header announces {blocks} blocks; the file is too short "
                         f"to hold them)")


def read(path: PathLike) -> Tuple[Header, np.ndarray]:
    """Read a .dac file → (Header, int32 codes (channels, n_codebooks, n_frames)). Raises DacliError
    for anything wrong with it: magic, version, fields, truncation, CRC, trailing bytes."""
    with open_input(path) as f:
        buf = f.read()
    return parse(buf, path)


def parse(buf: bytes, name: PathLike = "file") -> Tuple[Header, np.ndarray]:
    """:func:`read` on bytes already in memory."""
    header, pos = parse_header(buf, name)
    _check_room(header, len(buf) - pos, name)
    spans = block_spans(header)
    parts = []  # grown block by block: memory follows what the file really holds
    dctx = zstandard.ZstdDecompressor()
    for i, (t0, t1) in enumerate(spans):
        if len(buf) < pos + _BLOCK.size:
            raise DacliError(f"{name}: truncated (block {i} of {len(spans)} is missing)")
        coding, size, crc = _BLOCK.unpack_from(buf, pos)
        pos += _BLOCK.size
        need = raw_block_size(header, t1 - t0)
        if coding not in (RAW, ZSTD) or (coding == RAW and size != need) or \
                (coding == ZSTD and not need // MAX_ZSTD_RATIO <= size <= zstd_bound(need)):
            raise DacliError(f"{name}: corrupt block {i} (coding {coding}, {size} bytes for {need} raw)")
        payload = buf[pos:pos + size]
        if len(payload) < size:
            raise DacliError(f"{name}: truncated (block {i} is cut short)")
        pos += size
        raw = payload if coding == RAW else _decompress(dctx, payload, need)
        if raw is None or zlib.crc32(raw) != crc:
            raise DacliError(f"{name}: corrupt data in block {i} (CRC mismatch)")
        count = header.n_codebooks * header.channels * (t1 - t0)
        parts.append(unpack(raw, count, header.bits_per_code).reshape(
            header.n_codebooks, header.channels, t1 - t0).transpose(1, 0, 2))
    if pos != len(buf):
        raise DacliError(f"{name}: {len(buf) - pos} unexpected bytes after the last block")
    return header, as_codes(np.concatenate(parts, axis=2))


def zstd_bound(n):
    """Largest zstd frame for ``n`` input bytes (ZSTD_COMPRESSBOUND) plus the frame header."""
    return n + (n >> 8) + (((128 << 10) - n) >> 11 if n < (128 << 10) else 0) + 18


def _decompress(dctx, payload, need):
    """The raw bytes of a zstd payload that declares exactly ``need`` bytes of content, else None."""
    try:
        if zstandard.frame_content_size(payload) != need:
            return None
        raw = dctx.decompress(payload, max_output_size=need)
    except zstandard.ZstdError:
        return None
    return raw if len(raw) == need else None


def read_codes(path: PathLike) -> Tuple[np.ndarray, Header]:
    """The codes of a .dac file, int32 (channels, n_codebooks, frames) as everywhere
    (:mod:`dacli.codes`), and its header, with every check of :func:`read`. Needs neither a model nor
    torch: the way to feed a tokenized corpus to a language model."""
    header, codes = read(path)
    return codes, header


def codebooks_to_keep(header: Header, n_codebooks: Optional[int] = None, kbps: Optional[float] = None) -> int:
    """What ``dacli transcode`` keeps of a file: ``n_codebooks``, or the most whose total rate fits
    ``kbps`` (:func:`codebooks_within`); refuses more than the file has."""
    n = n_codebooks if n_codebooks is not None else codebooks_within(header, kbps)  # type: ignore[arg-type]
    check_truncation(header, n)
    return n


def codebooks_within(header: Header, kbps: float) -> int:
    """The most codebooks of this file whose exact total bitrate (over all its channels) does not
    exceed ``kbps``; refuses a rate below one codebook, and one that would need more codebooks than the
    file has (codes cannot be added without the audio)."""
    rate = Bitrate(header.kbps / header.n_codebooks, 1 << 16, kbps)
    if not rate.fits(header.channels):
        raise DacliError(rate.lowest(header.channels))
    n = rate.codebooks(header.channels, quiet=True)
    if n > header.n_codebooks:
        raise DacliError(f"--kbps {kbps:g} asks for {n} codebooks, the file has {header.n_codebooks} "
                         f"({header.kbps * header.channels:.3f} kbps): transcoding only removes codebooks")
    return n


def truncate_codebooks(header: Header, codes: np.ndarray, n_codebooks: int) -> Tuple[Header, np.ndarray]:
    """A lower-bitrate copy: the first ``n_codebooks`` codebooks, no re-encoding."""
    check_truncation(header, n_codebooks)
    return replace(header, n_codebooks=n_codebooks), codes[:, :n_codebooks]


def check_truncation(header: Header, n_codebooks: int) -> None:
    """Refuse keeping ``n_codebooks`` of a file's codebooks where it has fewer (or none is asked)."""
    if n_codebooks > header.n_codebooks:
        raise DacliError(f"{n_codebooks} codebooks asked, the file has {header.n_codebooks}: transcoding only "
                         "removes codebooks")
    if not 1 <= n_codebooks:
        raise DacliError(f"cannot keep {n_codebooks} codebooks of a file that has {header.n_codebooks}")


def describe(path: PathLike) -> dict:
    """What ``dacli info`` shows of a .dac file (read whole, so the CRCs are checked too)."""
    h, _ = read(path)
    size = os.path.getsize(path)
    pcm = h.original_length * h.channels * 2
    return {"file": str(path), "format": f"dacli .dac v{VERSION}", "model": h.model_name,
            "model_sha256": h.model_hash.hex(), "model_sample_rate": h.model_sample_rate,
            "frame_rate_hz": round(float(h.frame_rate), 4), "original_sample_rate": h.original_sample_rate,
            "channels": h.channels, "duration_s": round(h.duration, 3), "frames": h.n_frames,
            "n_codebooks": h.n_codebooks, "bits_per_code": h.bits_per_code,
            "kbps": round(h.kbps * h.channels, 3), "kbps_per_channel": round(h.kbps, 3),
            "file_kbps": round(size * 8 / h.duration / 1000, 3) if h.duration else None,
            "file_bytes": size, "compression_ratio_vs_pcm16": round(pcm / size, 1),
            "input_loudness_lufs": round(h.input_loudness, 2), "gain_db": round(h.gain_db, 2),
            "bandwidth_hz": h.bandwidth_hz or "full"}
