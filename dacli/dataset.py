"""Token datasets: a tokenized corpus as Parquet shards (spec: docs/FORMAT.md, "Token datasets"), the
form training code loads as it is (HF ``datasets``, pyarrow, polars, Ray Data). One row per input:
its path relative to the corpus root, its codes as nested int16 lists (channels × codebooks ×
frames) and every field of its ``.dac`` header.

:class:`ShardWriter` writes shards whole (temporary name, then rename; a shard exists only once
complete); :func:`prepare` lists which inputs the complete shards of a folder hold, which is what makes
a run resumable; :func:`read_dataset` iterates rows back without torch or a model; :func:`describe`
summarises a folder of shards for ``dacli info``. pyarrow is imported only here.
"""

import contextlib
import hashlib
import os
import re
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import container
from .container import Header
from .errors import DacliError
from .fileio import alive, atomic_output, os_reason
from .outcome import INPUT_ERRORS, Outcome, reason
from .rates import Bitrate

SCHEMA_VERSION = "1"
SCHEMA_KEY = b"dacli.schema"     # the shard's key-value metadata: the schema version
PREFIX, SUFFIX = "part-", ".parquet"
ROWS_PER_SHARD = 1000            # or CODE_BYTES_PER_SHARD, whichever comes first
CODE_BYTES_PER_SHARD = 256 << 20  # int16 codes before compression
ROW_GROUP_ROWS = 100             # rows per row group: a reader holds one group of long rows at a time
MAX_CODE_BITS = 15               # int16 holds codes of codebooks up to 2^15 entries
INSTALL_HINT = "Parquet datasets need pyarrow: pip install 'dacli[parquet]'"
PathLike = Union[str, Path]
_TEMPORARY = re.compile(r"\.part-.+\.parquet\.(\d+)\.[0-9a-f]{8}\.part")  # fileio.atomic_output's name for a shard

# the header's fields as columns; frames_per_block is the container's block layout, not the audio's
HEADER_COLUMNS = [f.name for f in fields(Header) if f.name != "frames_per_block"]
_TYPES = {"model_sample_rate": "int32", "hop_length": "int32", "original_sample_rate": "int32", "channels": "int32",
          "n_codebooks": "int32", "bits_per_code": "int32", "original_length": "int64", "model_length": "int64",
          "n_frames": "int64", "input_loudness": "float32", "gain_db": "float32", "model_hash": "string",
          "model_name": "string", "bandwidth_hz": "int32"}


class ShardError(DacliError):
    """A shard that cannot be read at all (truncated, foreign, unreadable), as against one bad row."""


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DacliError(INSTALL_HINT) from None
    return pa, pq


def schema():
    """The Arrow schema of a shard (version :data:`SCHEMA_VERSION`)."""
    pa, _ = _pa()
    cols = [pa.field("path", pa.string(), nullable=False),
            pa.field("codes", pa.list_(pa.list_(pa.list_(pa.int16()))), nullable=False)]
    cols += [pa.field(c, getattr(pa, _TYPES[c])(), nullable=False) for c in HEADER_COLUMNS]
    return pa.schema(cols, metadata={SCHEMA_KEY: SCHEMA_VERSION.encode()})


def table(rows: Sequence[Tuple[str, Header, np.ndarray]]):
    """(relative path, header, codes) rows → an Arrow table of :func:`schema`."""
    pa, _ = _pa()
    flat: List[np.ndarray] = []
    frames, books, chans = [0], [0], [0]  # list lengths at each level, as offsets once summed
    for _, h, codes in rows:
        if h.bits_per_code > MAX_CODE_BITS:
            raise DacliError(f"codebooks of 2^{h.bits_per_code} entries do not fit the dataset's int16 codes")
        flat.append(np.asarray(codes, np.int16).reshape(-1))
        chans.append(h.channels)
        books += [h.n_codebooks] * h.channels
        frames += [h.n_frames] * (h.channels * h.n_codebooks)
    values = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.int16), pa.int16())
    inner = pa.ListArray.from_arrays(pa.array(np.cumsum(frames), pa.int32()), values)
    middle = pa.ListArray.from_arrays(pa.array(np.cumsum(books), pa.int32()), inner)
    codes = pa.ListArray.from_arrays(pa.array(np.cumsum(chans), pa.int32()), middle)
    cols: Dict[str, Any] = {"path": pa.array([r[0] for r in rows], pa.string()), "codes": codes}
    for c in HEADER_COLUMNS:
        vals = [getattr(h, c).hex() if c == "model_hash" else getattr(h, c) for _, h, _ in rows]
        cols[c] = pa.array(vals, getattr(pa, _TYPES[c])())
    return pa.Table.from_pydict(cols, schema=schema())


def shard_names(tag: str) -> Callable[[int], str]:
    """The shard names of one writer: ``part-TAG-00000.parquet``, ``part-TAG-00001.parquet``, ..."""
    return lambda seq: f"{PREFIX}{tag}-{seq:05d}{SUFFIX}"


def run_tag(shard: Optional[str] = None) -> str:
    """A run's part of its shard names: the job array's shard (``3of8``), the time and the process, so
    that no two runs or jobs write the same name."""
    job = shard.replace("/", "of") + "-" if shard else ""
    return f"{job}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def batch_name(tag: str, sources: Sequence[str]) -> str:
    """The one shard of a batch of inputs: the same name for the same batch, so that a batch run again
    (a worker lost after writing it) replaces its shard instead of adding a second."""
    digest = hashlib.sha1("\n".join(sorted(sources)).encode()).hexdigest()[:16]
    return f"{PREFIX}{tag}-{digest}{SUFFIX}"


class ShardWriter:
    """Collects encoded inputs and writes them as shards into ``out``: one once ``rows`` rows or
    :data:`CODE_BYTES_PER_SHARD` of codes are waiting, and the rest at :meth:`close`. ``put`` and
    ``close`` return the :class:`~dacli.outcome.Outcome` of each input of the shards written meanwhile
    (``dst``: the shard). A shard that cannot be written (a full disk) is removed and fails each of its
    inputs. The sink of a :class:`dacli.codec.Tokenizer`."""

    def __init__(self, out: PathLike, names: Callable[[int], str], rows: int = ROWS_PER_SHARD,
                 code_bytes: float = CODE_BYTES_PER_SHARD) -> None:
        _pa()
        self.out, self.names, self.rows, self.code_bytes = Path(out), names, rows, code_bytes
        self.pending: List[Tuple[Any, str, Header, np.ndarray]] = []
        self.seq = self.bytes = 0

    def put(self, src: Any, dst: Any, header: Header, codes: np.ndarray) -> List[Outcome]:
        """One input (``dst``: its path relative to the corpus root) → the outcomes of a shard, if this
        one completed it."""
        self.pending.append((src, Path(dst).as_posix(), header, codes))
        self.bytes += 2 * codes.size
        return self.close() if len(self.pending) >= self.rows or self.bytes >= self.code_bytes else []

    def close(self) -> List[Outcome]:
        """Write what is waiting as one shard → its inputs' outcomes."""
        if not self.pending:
            return []
        pending, self.pending, self.bytes = self.pending, [], 0
        path, self.seq = self.out / self.names(self.seq), self.seq + 1
        try:
            write(path, [(rel, h, c) for _, rel, h, c in pending])
        except INPUT_ERRORS as e:
            why = reason(path, e)
            return [Outcome.failed(src, path, DacliError(f"{src}: not stored: {why}")) for src, *_ in pending]
        return [Outcome.done(src, path, h) for src, _, h, _ in pending]


def write(path: PathLike, rows: Sequence[Tuple[str, Header, np.ndarray]]) -> None:
    """Write one shard atomically (temporary name, then rename), zstd inside."""
    _, pq = _pa()
    t = table(rows)
    with atomic_output(path) as tmp:
        try:
            pq.write_table(t, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        except OSError as e:  # pyarrow's own wording, with the errno inside
            m = re.search(r"\[errno (\d+)\]", str(e), re.IGNORECASE)
            why = os.strerror(int(m.group(1))).lower() if m else os_reason(e)
            raise DacliError(f"{path}: cannot write ({why})") from None


def shards(folder: PathLike) -> List[Path]:
    """The complete shards of a folder (temporary files of writers under way are hidden names)."""
    return sorted(p for p in Path(folder).glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def is_dataset(path: PathLike) -> bool:
    """Whether ``path`` is a Parquet file, or a folder holding shards."""
    p = Path(path)
    return p.suffix.lower() == SUFFIX if not p.is_dir() else bool(shards(p))


def _open(path: Path):
    """A shard's ParquetFile, or a one-line DacliError naming it (truncated, foreign, unreadable)."""
    _, pq = _pa()
    try:
        handle = container.open_input(path)
    except DacliError as e:
        raise ShardError(str(e)) from None
    try:
        return pq.ParquetFile(handle)
    except Exception as e:  # pyarrow's errors for files that are not Parquet (ArrowInvalid, OSError)
        why = str(e).splitlines()[0][:200]
    # raised here, with the file closed and pyarrow's exception gone: nothing of pyarrow's outlives the
    # error into the interpreter's exit
    handle.close()
    raise ShardError(f"{path}: not a readable Parquet file ({why})")


def paths(path: PathLike) -> List[str]:
    """The ``path`` column of one shard (a DacliError names a shard that is not ours or unreadable)."""
    f = _open(Path(path))
    if "path" not in f.schema_arrow.names:
        raise ShardError(f"{path}: a Parquet file without dacli's 'path' column")
    try:
        return [str(p) for p in f.read(columns=["path"]).column("path").to_pylist()]
    except Exception as e:
        raise ShardError(f"{path}: cannot read ({str(e).splitlines()[0][:200]})") from None


def row_names(path: PathLike) -> List[Tuple[str, float]]:
    """Each row of one Parquet table: its name (its ``path``, or ``row-N`` for a table of codes alone)
    and its seconds of audio as its header columns record them (0 without them)."""
    f = _open(Path(path))
    cols = f.schema_arrow.names
    if "codes" not in cols:
        raise ShardError(f"{path}: a Parquet file without a 'codes' column")
    names = paths(path) if "path" in cols else [f"row-{i:06d}" for i in range(f.metadata.num_rows)]
    if not {"original_length", "original_sample_rate"} <= set(cols):
        return [(n, 0.0) for n in names]
    try:
        t = f.read(columns=["original_length", "original_sample_rate"]).to_pydict()
    except Exception as e:
        raise ShardError(f"{path}: cannot read ({str(e).splitlines()[0][:200]})") from None
    return [(n, k / r if r else 0.0) for n, k, r in zip(names, t["original_length"], t["original_sample_rate"])]


Made = List[Tuple[str, str, str, int, int]]  # (a row's path, model hash, model name, channels, codebooks)
_MADE = ["path", "model_hash", "model_name", "channels", "n_codebooks"]


def prepare(out: PathLike) -> Tuple[Dict[str, Path], Made]:
    """Before a run writes shards into ``out``, read before it loads its model: what its complete
    shards already hold (row path → shard: what makes a run resumable) and the settings their rows were made with
    (one row of each distinct model, channel count and codebook count, for :func:`made_otherwise`).
    Refuses an ``out`` that is a file, or that holds a shard it cannot read or that is not ours;
    removes the temporary shards of writers that died (SIGKILL, a lost node) on this machine, and
    moves the reports that earlier versions left among the shards beside the folder."""
    from .batch import next_to
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DacliError(f"-o {out}: a token dataset is a folder of shards; give a folder")
    if not out.is_dir():
        return {}, []
    remove_temporaries(out)
    for old in sorted(out.glob("dacli-report-*.tsv")):
        with contextlib.suppress(OSError):
            os.replace(old, next_to(out, old.name))
    holds: Dict[str, Path] = {}
    seen: Dict[Tuple[str, int, int], Tuple[str, str, str, int, int]] = {}
    for s in shards(out):
        f = _open(s)
        if "path" not in f.schema_arrow.names:
            raise ShardError(f"{s}: a Parquet file without dacli's 'path' column")
        if not set(_MADE) <= set(f.schema_arrow.names):
            raise ShardError(f"{s}: not a shard of dacli's token datasets")
        try:
            t = f.read(columns=_MADE).to_pydict()
        except Exception as e:
            raise ShardError(f"{s}: cannot read ({str(e).splitlines()[0][:200]})") from None
        for row in zip(*(t[c] for c in _MADE)):
            holds[str(row[0])] = s
            seen.setdefault((row[1], row[3], row[4]), row)
    return holds, list(seen.values())


def made_otherwise(out: PathLike, made: Made, model: Any, bitrate: Bitrate) -> None:
    """Refuse a run into the dataset folder ``out`` whose rows (``made``: :func:`prepare`) were made
    with other weights than ``model`` or another codebook count than ``bitrate`` gives them."""
    for path, h, name, channels, n in made:
        if h != model.weights_hash:
            why = f"made with model {name!r} ({h[:12]}), asked {model.name!r} ({model.weights_hash[:12]})"
        else:
            why = bitrate.mismatch(channels, n)  # type: ignore[assignment]
        if why:
            raise DacliError(f"{out}: holds {path} {why}; encode into another folder (a dataset holds one "
                             "model and one bitrate)")


def remove_temporaries(out: PathLike) -> None:
    """Remove the temporary shards that writers which died on this machine left in ``out``."""
    with contextlib.suppress(OSError):
        for n in os.listdir(out):
            m = _TEMPORARY.fullmatch(n)
            if m and not alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(Path(out) / n)


def row_paths(items: Sequence[Tuple[Path, Path]]) -> List[Tuple[Path, Path]]:
    """(input, path relative to its corpus root) → (input, the row's path, POSIX), refusing two inputs
    of one path (several roots holding the same relative path)."""
    seen: Dict[str, Path] = {}
    out = []
    for src, rel in items:
        key = rel.as_posix()
        if key in seen:
            raise DacliError(f"{src} and {seen[key]} would both be row {key!r}: encode them into separate datasets")
        seen[key] = src
        out.append((src, Path(key)))
    return out


def stored(shard: PathLike, srcs: Dict[str, str]) -> List[Outcome]:
    """The outcomes of the inputs that a complete shard holds (``srcs``: row path → input), for a batch
    found already written (by an earlier attempt of a retried task)."""
    f = _open(Path(shard))
    t = f.read(columns=["path", "original_length", "original_sample_rate"]).to_pydict()
    return [Outcome(srcs.get(p, p), str(shard), "ok", seconds=n / r)
            for p, n, r in zip(t["path"], t["original_length"], t["original_sample_rate"])]


def _row_codes(col, i: int, name: str) -> np.ndarray:
    """Row ``i`` of a ``codes`` column as int32 (channels, codebooks, frames); refuses ragged lists."""
    ch = col.slice(i, 1).flatten()
    cb = ch.flatten()
    values = cb.flatten().to_numpy(zero_copy_only=False)
    c, k = len(ch), len(cb) // max(1, len(ch))
    if not c or len(set(ch.value_lengths().to_pylist())) != 1 or len(set(cb.value_lengths().to_pylist())) > 1:
        raise DacliError(f"{name}: codes are not a channels × codebooks × frames array")
    if values.size and values.min() < 0:
        raise DacliError(f"{name}: negative codes")
    return values.astype(np.int32).reshape(c, k, -1)


def _header(row: Dict[str, Any], codes: np.ndarray, name: str) -> Optional[Header]:
    """The header a row records, checked as a .dac header is; None for a table of codes alone."""
    if not all(c in row for c in HEADER_COLUMNS):
        return None
    try:
        values: Dict[str, Any] = {c: bytes.fromhex(row[c]) if c == "model_hash" else row[c] for c in HEADER_COLUMNS}
        h = Header(**values)
        container.validate(h)
        if len(h.model_hash) != 32:
            raise ValueError("model_hash is not 64 hexadecimal digits")
    except (TypeError, ValueError) as e:
        raise DacliError(f"{name}: invalid header fields ({e})") from None
    if codes.shape != (h.channels, h.n_codebooks, h.n_frames):
        raise DacliError(f"{name}: codes of shape {codes.shape} for a header of {h.channels} channels, "
                         f"{h.n_codebooks} codebooks and {h.n_frames} frames")
    if codes.size and codes.max() >= 2 ** h.bits_per_code:
        raise DacliError(f"{name}: codes up to {codes.max()} for {h.bits_per_code}-bit codebooks")
    return h


def rows(path: PathLike) -> Iterator[Dict[str, Any]]:
    """The rows of one shard (or any Parquet table with a ``codes`` column), one row group in memory at
    a time: ``path`` (the row's relative path; ``row-N`` where the table has none), ``codes`` (int32
    (channels, codebooks, frames)), ``header`` (a :class:`~dacli.container.Header`, or None for a table
    of codes alone), ``shard``. A bad row raises a DacliError naming it; an unreadable shard, one
    naming the shard."""
    path = Path(path)
    f = _open(path)
    names = f.schema_arrow.names
    if "codes" not in names:
        raise ShardError(f"{path}: a Parquet file without a 'codes' column")
    n = 0
    for g in range(f.num_row_groups):
        try:
            t = f.read_row_group(g)
        except Exception as e:
            raise ShardError(f"{path}: cannot read ({str(e).splitlines()[0][:200]})") from None
        col = t.column("codes").combine_chunks()
        other = t.drop_columns(["codes"]).to_pylist()
        for i, row in enumerate(other):
            rel = str(row.get("path") or f"row-{n:06d}")
            name = f"{path}: {rel}"
            codes = _row_codes(col, i, name)
            yield {"path": rel, "codes": codes, "header": _header(row, codes, name), "shard": path}
            n += 1


def read_dataset(path: PathLike) -> Iterator[Dict[str, Any]]:
    """Every row of a dataset folder (its shards in name order) or of one Parquet file, as
    :func:`rows` gives them. Needs pyarrow and NumPy, neither torch nor a model."""
    p = Path(path)
    for s in shards(p) if p.is_dir() else [p]:
        yield from rows(s)


def describe(path: PathLike) -> Dict[str, Any]:
    """What ``dacli info`` shows of a dataset folder or shard: shards, rows, hours of audio, bytes, and
    rows per model, codebook count and channel count (a shard it cannot read raises, naming it)."""
    p = Path(path)
    files = shards(p) if p.is_dir() else [p]
    n, seconds, models, books, chans = 0, 0.0, {}, {}, {}  # type: ignore[var-annotated]
    for s in files:
        f = _open(s)
        cols = [c for c in ("model_name", "n_codebooks", "channels", "original_length", "original_sample_rate")
                if c in f.schema_arrow.names]
        t = f.read(columns=cols).to_pydict() if cols else {}
        n += f.metadata.num_rows
        for key, into in (("model_name", models), ("n_codebooks", books), ("channels", chans)):
            for v in t.get(key, []):
                into[v] = into.get(v, 0) + 1
        if "original_length" in t:
            seconds += sum(a / b for a, b in zip(t["original_length"], t["original_sample_rate"]))
    size = sum(s.stat().st_size for s in files)
    return {"dataset": str(p), "format": f"dacli token dataset v{SCHEMA_VERSION} (Parquet)", "shards": len(files),
            "rows": n, "hours": round(seconds / 3600, 4), "bytes": size,
            "bytes_per_hour": round(size / (seconds / 3600)) if seconds else None,
            "models": models, "codebooks": books, "channels": chans}
