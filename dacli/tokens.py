"""Codes that come without a .dac file, back to audio: the rows of token datasets (Parquet shards,
:mod:`dacli.dataset`) and arrays of codes an audio LM produced (``.npy``). :class:`Sources` turns the
inputs of ``dacli decode`` into (source, output) pairs for :func:`dacli.batch.run` and decodes each
pair with the model its codes need, through :func:`dacli.codec.decode_codes` as a .dac file is
decoded. A row's source is named ``SHARD/PATH``, so that what fails says which shard and which row.
"""

import math
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import batch, codec, container, dataset, registry
from .errors import DacliError
from .fileio import find_inputs

ARRAY_EXTS = {".npy"}


def array_codes(path: container.PathLike) -> np.ndarray:
    """An array of codes saved with ``numpy.save``: ``(codebooks, frames)`` (one channel) or
    ``(channels, codebooks, frames)`` of integers ≥ 0 → int32 (channels, codebooks, frames)."""
    try:
        a = np.load(container.open_input(path), allow_pickle=False)
    except DacliError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise DacliError(f"{path}: not a NumPy array file ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.ndim not in (2, 3):
        raise DacliError(f"{path}: an array of {getattr(a, 'dtype', '?')} {getattr(a, 'shape', '')}; codes are "
                         "integers of shape (codebooks, frames) or (channels, codebooks, frames)")
    a = a[None] if a.ndim == 2 else a
    if 0 in a.shape:
        raise DacliError(f"{path}: an empty array of codes {a.shape}")
    if a.min() < 0 or a.max() > np.iinfo(np.int32).max:
        raise DacliError(f"{path}: codes outside 0 .. 2^31")
    return a.astype(np.int32)


def synthetic_header(model: Any, codes: np.ndarray) -> container.Header:
    """The header for codes that come without one (an LM's output): the model's rate and length of
    the frames, no gain, no low-pass, so decoding gives the model-rate audio as it is."""
    c, k, t = codes.shape
    return container.Header(
        model_sample_rate=model.sample_rate, hop_length=model.hop_length, original_sample_rate=model.sample_rate,
        channels=c, n_codebooks=k, bits_per_code=int(round(math.log2(model.codebook_size))),
        original_length=max(1, t * model.hop_length), model_length=max(1, t * model.hop_length), n_frames=t,
        input_loudness=0.0, gain_db=0.0, model_hash=bytes.fromhex(model.weights_hash), model_name=model.name or "")


def check_codes(model: Any, header: container.Header, codes: np.ndarray, where: Any) -> None:
    """Refuse codes that this model cannot decode with this header (:func:`dacli.codec.check_model`)
    or that exceed its codebooks."""
    codec.check_model(model, header, where)
    if header.channels > container.MAX_CHANNELS:
        raise DacliError(f"{where}: {header.channels} channels (at most {container.MAX_CHANNELS})")
    if codes.max() >= model.codebook_size:
        raise DacliError(f"{where}: code {codes.max()} exceeds the codebook size {model.codebook_size}")


class Sources:
    """The inputs of ``dacli decode`` that are not .dac files: token datasets (folders of shards,
    ``.parquet`` files) and ``.npy`` arrays. ``pairs`` names the output of each row and array (as
    :func:`dacli.batch.sharded` names a .dac file's), ``broken`` the one-line reason of each shard that
    cannot be read; :meth:`decode` decodes a pair when :func:`dacli.batch.run` comes to it, reading
    each shard once, row group by row group, in order."""

    def __init__(self, inputs: Sequence[Path], output: Optional[Path], fmt: str, spec: Optional[str]) -> None:
        self.rows: Dict[Path, Tuple[Path, int]] = {}   # source → (shard, row)
        self.broken: List[str] = []
        self._cursor: Dict[Path, Tuple[Iterator[Dict[str, Any]], List[int]]] = {}
        self._dead: Dict[Path, DacliError] = {}
        self._seconds: Dict[Path, float] = {}
        items = []
        for item in inputs:
            if Path(item).suffix.lower() in ARRAY_EXTS:
                items += find_inputs([item], ARRAY_EXTS)
                continue
            for s in dataset.shards(item) if Path(item).is_dir() else [Path(item)]:
                try:
                    names = dataset.row_names(s)
                except DacliError as e:
                    self.broken.append(str(e))
                    continue
                for i, (rel, seconds) in enumerate(names):
                    self.rows[s / rel], self._seconds[s / rel] = (s, i), seconds
                    items.append((s / rel, Path(rel)))
        self.pairs = batch.sharded(items, spec, output, "." + fmt, {".wav", ".flac"}) if items else []

    def duration(self, src: Path) -> float:
        """Seconds of audio of a row, as its header records them (0 when it has none), for progress."""
        return self._seconds.get(src, 0.0)

    @staticmethod
    def claims(path: Path) -> bool:
        """Whether ``dacli decode`` reads ``path`` through this class."""
        return path.suffix.lower() in ARRAY_EXTS | {dataset.SUFFIX} or dataset.is_dataset(path)

    def _row(self, src: Path) -> Dict[str, Any]:
        shard, index = self.rows[src]
        if shard in self._dead:
            raise self._dead[shard]
        if shard not in self._cursor:
            self._cursor[shard] = (dataset.rows(shard), [0])
        it, at = self._cursor[shard]
        try:
            while True:
                row = next(it)
                at[0] += 1
                if at[0] - 1 == index:
                    return row
        except dataset.ShardError as e:  # the shard, not one row: its other rows fail with it
            self._dead[shard] = e
            raise
        except StopIteration:
            raise DacliError(f"{src}: the shard changed while it was being read") from None

    def decode(self, src: Path, dst: Union[Path, BinaryIO], load: Callable[[str], Any], override: Optional[str],
               fmt: str, window_seconds: Optional[float], progress: codec.Progress = None) -> None:
        """Decode one pair; ``load(name)`` gives a loaded model."""
        if src in self.rows:
            row = self._row(src)
            codes, header = row["codes"], row["header"]
            if header is None and override is None:
                raise DacliError(f"{src}: a table of codes alone records no model; pass --model")
            name = registry.model_for_name(header.model_name, src, override) if header else override
        else:
            if override is None:
                raise DacliError(f"{src}: an array of codes records no model; pass --model")
            codes, header, name = array_codes(src), None, override
        model = load(name)  # type: ignore[arg-type]
        if header is None:
            if codes.shape[1] > model.n_codebooks:
                raise DacliError(f"{src}: {codes.shape[1]} codebooks for a model of {model.n_codebooks}")
            header = synthetic_header(model, codes)
        check_codes(model, header, codes, src)
        codec.decode_codes(model, header, codes, dst, fmt, window_seconds, progress)

