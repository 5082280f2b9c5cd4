"""Files: atomic output, and finding the inputs of a batch run (folders walked, tree mirrored,
deterministic sharding across jobs)."""

import contextlib
import os
import tempfile
import zlib
from pathlib import Path

import soundfile as sf

from .errors import DacliError

AUDIO_EXTS = {"." + e.lower() for e in sf.available_formats()} | {".wav", ".flac", ".ogg", ".oga", ".opus",
                                                                    ".mp3", ".aiff", ".aif", ".aifc"}


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on any error
    (or Ctrl-C) it is removed, so no partial output is ever left under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def find_inputs(inputs, exts):
    """[(input file, path relative to its root for mirroring)] for files and folders given.
    Folders are walked recursively, matching extensions case-insensitively; the list is sorted."""
    found = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts
                           and not f.name.startswith("."))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.exists():
            found.append((p, Path(p.name)))
        else:
            raise DacliError(f"{p}: no such file or folder")
    return found


def shard(items, spec):
    """Keep a deterministic 1/N of ``items`` for ``spec`` = "K/N" (K in 1..N): a file belongs to the
    shard given by the CRC32 of its relative path, so every job agrees without coordination."""
    if not spec:
        return items
    try:
        k, n = (int(v) for v in spec.split("/"))
        assert 1 <= k <= n
    except (ValueError, AssertionError):
        raise DacliError(f"--shard must be K/N with 1 <= K <= N, got {spec!r}") from None
    return [it for it in items if zlib.crc32(str(it[1]).encode()) % n == k - 1]
