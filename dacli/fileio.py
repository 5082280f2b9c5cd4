"""Files: atomic output, and finding the inputs of a batch run (folders walked, tree mirrored,
deterministic sharding across jobs)."""

import contextlib
import hashlib
import os
import re
import secrets
import stat
import zlib
from pathlib import Path

import soundfile as sf

from . import media
from .errors import DacliError

AUDIO_EXTS = {"." + e.lower() for e in sf.available_formats()} | {".wav", ".flac", ".ogg", ".oga", ".opus",
                                                                    ".mp3", ".aiff", ".aif", ".aifc"} | media.EXTENSIONS
AUDIO_IN = AUDIO_EXTS - {".raw"}  # what a folder of inputs is searched for (headerless raw needs its format given)


PART_SUFFIX = ".part"
_PART_TAG = re.compile(r"(\d+)\.[0-9a-f]{8}")


def _part_prefix(path):
    """``.NAME.`` for the temporary files of ``path``, with NAME shortened (keeping a hash of the whole)
    where the full temporary name would exceed the folder's name limit."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    room = limit - len(".." + PART_SUFFIX) - 7 - 8 - 2  # pid (≤ 7 digits), random tag, separators
    name = path.name
    if len(name.encode()) > room:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = name.encode()[:room - 13].decode(errors="ignore") + "~" + digest
    return f".{name}."


def remove_stale_parts(path):
    """Remove the temporary files that runs killed on this machine (SIGKILL, power loss) left for
    ``path``. A temporary name carries its writer's process id, and files of a live process stay."""
    path = Path(path)
    prefix = _part_prefix(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for n in names:
        if not (n.startswith(prefix) and n.endswith(PART_SUFFIX)):
            continue
        m = _PART_TAG.fullmatch(n[len(prefix):-len(PART_SUFFIX)])  # exactly "PID.TAG": not another name's
        if m and not alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(path.parent / n)


def alive(pid):
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on any error,
    Ctrl-C, SIGTERM or SIGHUP it is removed, so no partial output is ever left under the final name.
    The file is created with the umask's mode, like any other tool's output."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DacliError(f"{path.parent}: exists and is not a folder") from None
    except OSError as e:
        raise DacliError(f"{path.parent}: cannot create the folder ({os_reason(e)})") from None
    remove_stale_parts(path)
    prefix = _part_prefix(path)
    tmp = None
    try:  # from before the temporary file exists: a signal at any point removes it
        for _ in range(100):
            tmp = path.parent / f"{prefix}{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}"
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                break
            except FileExistsError:
                tmp = None  # another writer's
        yield str(tmp)
        os.replace(tmp, path)  # type: ignore[arg-type]
    except OSError as e:
        raise DacliError(f"{path}: cannot write ({os_reason(e)})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def os_reason(e):
    """'no space left on device', 'permission denied', ...: an OSError in words."""
    return (e.strerror or str(e)).lower() if isinstance(e, OSError) else str(e)


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
            if not stat.S_ISREG(p.stat().st_mode):
                raise DacliError(f"{p}: not a regular file or folder")
            found.append((p, Path(p.name)))
        else:
            raise DacliError(f"{p}: no such file or folder")
    return found


def shard(items, spec, key=lambda item: item[1]):
    """Keep a deterministic 1/N of ``items`` for ``spec`` = "K/N" (K in 1..N): a file belongs to the
    shard given by the CRC32 of its relative path, so every job agrees without coordination."""
    if not spec:
        return items
    try:
        k, n = (int(v) for v in spec.split("/"))
        assert 1 <= k <= n
    except (ValueError, AssertionError):
        raise DacliError(f"--shard must be K/N with 1 <= K <= N, got {spec!r}") from None
    return [it for it in items if zlib.crc32(str(key(it)).encode()) % n == k - 1]
