"""Raw token streams through pipes: code frames read as they arrive and decoded by
:class:`dacli.stream.StreamDecoder` into audio written as it becomes final, and live audio encoded by
:class:`dacli.stream.StreamEncoder` into code frames written as they become final. The raw token
format is in docs/FORMAT.md ("Raw codes"): each frame is channels × codebooks little-endian uint16,
channel-major, nothing else."""

import contextlib
import itertools
import struct
import sys
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Sequence, Union

import numpy as np

from . import audio
from .errors import DacliError
from .fileio import atomic_output, os_reason
from .rates import Bitrate

READ = 1 << 16  # bytes asked of the input per read (a read returns what has arrived, up to this)


@contextlib.contextmanager
def streams(inputs: Sequence[Path], output: Optional[Path]) -> Iterator[tuple]:
    """(source, destination) binary streams of a raw stream command: stdin/stdout ('-') or files (the
    output written under a temporary name, renamed when complete)."""
    if len(inputs) != 1 or output is None:
        raise DacliError("--raw-codes takes one input (a file or '-') and -o FILE or -o -")
    with contextlib.ExitStack() as stack:
        if str(inputs[0]) == "-":
            src = sys.stdin.buffer
        else:
            try:
                src = stack.enter_context(open(inputs[0], "rb"))
            except OSError as e:
                raise DacliError(f"{inputs[0]}: cannot read ({os_reason(e)})") from None
        if str(output) == "-":
            yield src, sys.stdout.buffer
        else:
            with atomic_output(output) as tmp, open(tmp, "wb") as dst:
                yield src, dst


def frame_bytes(channels: int, n_codebooks: int) -> int:
    return 2 * channels * n_codebooks


def to_raw(codes: np.ndarray) -> bytes:
    """(channels, codebooks, frames) codes as raw frames."""
    return np.ascontiguousarray(codes.transpose(2, 0, 1)).astype("<u2").tobytes()


def from_raw(data: bytes, channels: int, n_codebooks: int) -> np.ndarray:
    """Whole raw frames as (channels, codebooks, frames) int32 codes."""
    frames = np.frombuffer(data, "<u2").reshape(-1, channels, n_codebooks)
    return frames.transpose(1, 2, 0).astype(np.int32)


def chunks(src: BinaryIO) -> Iterator[bytes]:
    """What arrives on ``src``, as it arrives, until it ends."""
    read = getattr(src, "read1", src.read)
    while True:
        data = read(READ)
        if not data:
            return
        yield data


def read_frames(src: BinaryIO, channels: int, n_codebooks: int) -> Iterator[np.ndarray]:
    """The whole frames of a raw token stream as they arrive; a stream that ends inside a frame is
    refused once the whole frames before it are out."""
    size, pending = frame_bytes(channels, n_codebooks), b""
    for data in chunks(src):
        pending += data
        whole = len(pending) - len(pending) % size
        if whole:
            yield from_raw(pending[:whole], channels, n_codebooks)
            pending = pending[whole:]
    if pending:
        raise DacliError(f"the raw codes end inside a frame ({len(pending)} of its {size} bytes: "
                         f"{channels} channels x {n_codebooks} codebooks x 2): the audio stops at the last whole frame")


def decode(model, src: BinaryIO, dst: BinaryIO, channels: int, n_codebooks: int, fmt: str = "wav",
           lookahead: Optional[int] = None) -> int:
    """Decode the raw token stream ``src`` to ``dst`` as 16-bit PCM at the model rate, WAV (its header
    says "until the stream ends") or raw, written as it becomes final. Returns the samples written per
    channel. On an error, what was written is valid audio up to the last frame decoded."""
    from .stream import StreamDecoder
    stream = StreamDecoder(model, n_codebooks, lookahead)
    if fmt == "wav":
        dst.write(audio.wav_header(model.sample_rate, channels, None))
    written = 0

    def out(y):
        nonlocal written
        if y.shape[-1]:
            dst.write(audio.pcm16(y.T, model.sample_rate))
            dst.flush()
            written += y.shape[-1]

    try:
        for codes in read_frames(src, channels, n_codebooks):
            out(stream.push(codes))
    finally:
        if not stream.ended:
            out(stream.flush())  # the audio of every whole frame, whatever stopped the input
        if fmt == "wav" and _seekable(dst):  # a file: its header can say its length
            dst.seek(0)
            dst.write(audio.wav_header(model.sample_rate, channels, written))
            dst.seek(0, 2)
    return written


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def wav_format(head: bytes) -> Optional[tuple]:
    """(channels, rate, sample dtype, bytes of header, bytes of data or None for "until the end") of a
    WAV stream's start, or None when it is not WAV; refuses a WAV that is not 16-bit PCM or 32-bit
    float or whose header is cut."""
    if head[:4] != b"RIFF":
        return None
    if len(head) < 12 or head[8:12] != b"WAVE":
        raise DacliError("stdin: a RIFF stream that is not WAV")
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            if pos + 24 > len(head):
                break
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", head[pos + 8:pos + 24])
            kinds = {(1, 16): "<i2", (3, 32): "<f4", (0xFFFE, 16): "<i2", (0xFFFE, 32): "<f4"}
            if (tag, bits) not in kinds or channels < 1:
                raise DacliError(f"stdin: WAV of format {tag} with {bits}-bit samples: give 16-bit PCM or 32-bit float")
            fmt = (channels, rate, kinds[(tag, bits)])
        elif cid == b"data":
            if fmt is None:
                raise DacliError("stdin: WAV data before its format")
            return (*fmt, pos + 8, None if size in (0, audio.WAV_UNKNOWN_SIZE) else size)
        pos += 8 + size + (size & 1)
    raise DacliError("stdin: the WAV header is cut short")


def encode(model, src: BinaryIO, dst: BinaryIO, n_codebooks: Union[int, Bitrate], channels: Optional[int] = None,
           gain_db: float = 0.0) -> int:
    """Encode audio at the model rate from ``src`` (WAV, 16-bit PCM or 32-bit float, or raw 16-bit
    little-endian PCM of ``channels`` channels) into raw code frames on ``dst``, written as they become
    final (``n_codebooks`` of them, or what a :class:`~dacli.rates.Bitrate` gives the stream's channel
    count). Returns the frames written."""
    from .stream import StreamEncoder
    data = chunks(src)
    head = b""
    for part in data:  # enough to tell WAV from raw, and to read a WAV header
        head += part
        if len(head) >= 4096 or head[:4] != b"RIFF"[:len(head)]:
            break
    wav = wav_format(head)
    limit = None
    if wav is not None:
        wav_channels, rate, dtype, start, limit = wav
        if rate != model.sample_rate:
            raise DacliError(f"stdin: WAV at {rate} Hz; a stream is encoded at the model rate, {model.sample_rate} Hz")
        if channels is not None and channels != wav_channels:
            raise DacliError(f"--channels {channels} contradicts the WAV's {wav_channels}")
        channels, head = wav_channels, head[start:]
    elif channels is None:
        raise DacliError("raw PCM on stdin needs --channels (or send WAV)")
    else:
        dtype = "<i2"
    n = n_codebooks.codebooks(channels) if isinstance(n_codebooks, Bitrate) else n_codebooks
    stream = StreamEncoder(model, n, gain_db)
    size = np.dtype(dtype).itemsize * channels
    scale = np.float32(1 / 32768) if dtype == "<i2" else np.float32(1)
    frames, pending, taken = 0, b"", 0

    def out(codes):
        nonlocal frames
        if codes.shape[-1]:
            dst.write(to_raw(codes))
            dst.flush()
            frames += codes.shape[-1]

    for part in itertools.chain([head], data):
        if limit is not None:  # a WAV of a known length: what follows its data is not audio
            part = part[:max(0, limit - taken)]
            taken += len(part)
        pending += part
        whole = len(pending) - len(pending) % size
        if whole:
            x = np.frombuffer(pending[:whole], dtype).reshape(-1, channels).T.astype(np.float32) * scale
            out(stream.push(x))
            pending = pending[whole:]
    if pending:
        raise DacliError(f"stdin ends inside a sample ({len(pending)} of {size} bytes)")
    out(stream.flush())
    return frames


def decode_files(inputs: Sequence[Path], output: Optional[Path], model, fmt: str, channels: int,
                 n_codebooks: Optional[int], lookahead: Optional[int]) -> None:
    """``dacli decode --raw-codes``: one raw token stream (a file or '-') to audio (a file or '-')."""
    n = model.check_n_codebooks(n_codebooks)
    with streams(inputs, output) as (src, dst):
        decode(model, src, dst, channels, n, fmt, lookahead)


def encode_files(inputs: Sequence[Path], output: Optional[Path], model, kbps: Optional[float],
                 n_codebooks: Optional[int], channels: Optional[int], gain_db: float) -> None:
    """``dacli encode --raw-codes``: audio (a file or '-') to one raw token stream (a file or '-')."""
    bitrate = model.bitrate(kbps, n_codebooks, notice=lambda m: print(f"dacli: {m}", file=sys.stderr, flush=True))
    if channels is not None and not bitrate.fits(channels):
        raise DacliError(bitrate.lowest(channels))
    with streams(inputs, output) as (src, dst):
        encode(model, src, dst, bitrate, channels, gain_db)
