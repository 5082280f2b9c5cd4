"""Audio that libsndfile cannot read — MP4/M4A (AAC, ALAC), WebM and Matroska, ADTS AAC, and any
other container FFmpeg knows — decoded through PyAV (FFmpeg's libraries, shipped inside its wheel),
frame by frame, so memory stays bounded however long the file. :mod:`dacli.audio` falls back to this
module when libsndfile refuses a file; PyAV is imported only then."""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from .errors import DacliError, first_line

# extensions of files that only this module reads (libsndfile reads WAV, FLAC, Ogg, Opus, MP3, AIFF...)
EXTENSIONS = {".m4a", ".mp4", ".m4b", ".aac", ".adts", ".webm", ".mkv", ".mka", ".mov", ".3gp", ".wma", ".ac3"}
# scale of each integer sample format (PyAV's names, packed and planar alike)
_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


@dataclass(frozen=True)
class Info:
    samplerate: int
    channels: int
    frames: int       # from the container's duration: an estimate until the file is decoded


def _open(path: Union[str, Path]):
    """The container and its first audio stream. Raises DacliError with one line."""
    try:
        import av
    except ImportError:  # pragma: no cover - a dependency of dacli
        raise DacliError(f"{path}: format not recognised (install PyAV to read it)") from None
    try:
        container = av.open(str(path))
    except Exception as e:
        raise DacliError(f"{path}: cannot read audio ({_reason(e)})") from None
    streams = container.streams.audio
    if not streams:
        container.close()
        raise DacliError(f"{path}: no audio track")
    stream = streams[0]
    if stream.codec_context is None or not stream.codec_context.sample_rate:
        container.close()
        raise DacliError(f"{path}: the audio track's codec is unknown or unsupported")
    return container, stream


def _reason(e: Exception) -> str:
    """FFmpeg's complaint in a few words ("Invalid data found when processing input")."""
    msg = getattr(e, "strerror", None) or first_line(e)
    return str(msg).split(": '", 1)[0][:200]


def opens(path: Union[str, Path]) -> bool:
    """Whether FFmpeg opens ``path`` and finds an audio track in it."""
    try:
        container, _ = _open(path)
    except DacliError:
        return False
    container.close()
    return True


def info(path: Union[str, Path]) -> Info:
    container, stream = _open(path)
    with container:
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        seconds = float(stream.duration * stream.time_base) if stream.duration else \
            (container.duration / 1e6 if container.duration else 0.0)
    return Info(rate, channels, int(round(seconds * rate)))


def _samples(frame) -> np.ndarray:
    """A decoded frame as (samples, channels) float32 in [-1, 1]."""
    x = frame.to_ndarray()
    channels = len(frame.layout.channels)
    x = x.reshape(channels, -1) if frame.format.is_planar else x.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name in _SCALE:
        x = (x.astype(np.float64) - (128.0 if name == "u8" else 0.0)) / _SCALE[name]
    return np.ascontiguousarray(x.T, dtype=np.float32)


def read_blocks(path: Union[str, Path]) -> Iterator[np.ndarray]:
    """(samples, channels) float32 blocks of the first audio track, one per decoded frame."""
    container, stream = _open(path)
    channels = stream.codec_context.channels
    rate = stream.codec_context.sample_rate
    with container:
        try:
            for frame in container.decode(stream):
                if frame.sample_rate != rate or len(frame.layout.channels) != channels:
                    raise DacliError(f"{path}: the audio track changes its rate or channels midway")
                x = _samples(frame)
                if len(x):
                    yield x
        except DacliError:
            raise
        except Exception as e:
            raise DacliError(f"{path}: corrupt audio ({_reason(e)})") from None
