"""A DAC exported by ``dacli export`` (:mod:`dacli.export`), run by onnxruntime: the model the window
engine and the decoder of files need, without torch (``dacli decode --runtime onnx --model DIR``).

It has what :mod:`dacli.windows` and :mod:`dacli.codec` ask of a model — rates, codebooks, the weights'
hash and :meth:`OnnxDAC.decode_pushes` — so a file decodes through the same loudness restore, low-pass
and resampling as with torch. It computes in float32 on the CPU; it encodes only whole arrays
(:meth:`OnnxDAC.encode`), not files.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple, Union

import numpy as np

from . import codes as codes_type
from .errors import DacliError, first_line

EXPORT_INFO = "dacli-onnx.json"  # what marks a folder of `dacli export` (dacli.export)
_FIELDS = {"name": str, "weights_hash": str, "sample_rate": int, "hop_length": int, "n_codebooks": int,
           "codebook_size": int, "bits_per_code": int, "encoder_context": int, "decoder_context": int}


class OnnxDAC:
    """The graphs of an export folder. ``precision`` is "fp32", ``device`` "cpu"."""

    precision = "fp32"
    device = "cpu"

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder)
        info_path = self.folder / EXPORT_INFO
        try:
            info = json.loads(info_path.read_text())
        except FileNotFoundError:
            raise DacliError(f"{folder}: not a folder of 'dacli export' (no {EXPORT_INFO})") from None
        except (OSError, ValueError) as e:
            raise DacliError(f"{info_path}: unreadable ({first_line(e)})") from None
        if not isinstance(info, dict) or info.get("format") != "dacli-onnx" or info.get("version") != 1:
            raise DacliError(f"{info_path}: not a dacli-onnx description of version 1")
        for key, kind in _FIELDS.items():
            if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
                raise DacliError(f"{info_path}: field {key!r} missing or not {kind.__name__}")
        self.info = info
        self.name: str = info["name"]
        self.weights_hash: str = info["weights_hash"]
        self.sample_rate: int = info["sample_rate"]
        self.hop_length: int = info["hop_length"]
        self.n_codebooks: int = info["n_codebooks"]
        self.codebook_size: int = info["codebook_size"]
        self.bits_per_code: float = float(info["bits_per_code"])
        self._sessions: dict = {}

    def _session(self, graph: str) -> Any:
        if graph not in self._sessions:
            try:
                import onnxruntime
            except ImportError:
                raise DacliError("--runtime onnx needs onnxruntime: pip install onnxruntime") from None
            path = self.folder / f"{graph}.onnx"
            want = self.info.get("graphs", {}).get(graph, {}).get("sha256")
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DacliError(f"{path}: unreadable ({first_line(e)})") from None
            if want != hashlib.sha256(data).hexdigest():
                raise DacliError(f"{path}: does not match the sha256 in {EXPORT_INFO}")
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            try:
                self._sessions[graph] = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types
                raise DacliError(f"{path}: onnxruntime cannot load it ({first_line(e)[:200]})") from None
        return self._sessions[graph]

    def check_n_codebooks(self, n_codebooks: Optional[int] = None) -> int:
        """The codebook count to code with: all when None; refused outside 1..n_codebooks."""
        return codes_type.codebook_count(n_codebooks, self.n_codebooks)

    def decode_rows(self, codes: np.ndarray, keep: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """(B, K, T) integer codes → (B, L) float32 audio; with ``keep = (lo, hi)`` samples
        [lo·hop, hi·hop) of it, as :meth:`dacli.model.DAC.decode_batch` gives them."""
        y = self._session("decoder").run(["audio"], {"codes": np.ascontiguousarray(codes, np.int64)})[0][:, 0]
        if keep is not None:
            y = y[:, keep[0] * self.hop_length:keep[1] * self.hop_length]
        return np.ascontiguousarray(y, np.float32)

    def decode_pushes(self, codes: np.ndarray, width: int) -> Iterator[np.ndarray]:
        """(channels, K, frames) codes → (channels, n) audio blocks of ``width`` frames each, in order,
        for :func:`dacli.windows.decode_windows`: the graph decodes whole stretches, so each block is
        decoded with the decoder's context on both sides and only its own samples kept."""
        from .windows import plan
        for s, w, a, b in plan(codes.shape[2], width, self.info["decoder_context"]):
            yield self.decode_rows(codes[:, :, a:b], (s - a, s - a + w))

    def decode(self, codes: Any) -> np.ndarray:
        """Codes (channels, K, frames) or (K, frames) → float32 audio (channels, samples) at the model
        rate, in one pass."""
        c = codes_type.as_array(codes)
        codes_type.check(c, self.n_codebooks, self.codebook_size)
        return self.decode_rows(c)

    def encode(self, audio: Any, n_codebooks: Optional[int] = None) -> np.ndarray:
        """Audio at the model rate, (channels, samples) or (samples,) → int32 codes (channels,
        n_codebooks, ceil(samples / hop)), in one pass."""
        n = self.check_n_codebooks(n_codebooks)
        x = np.asarray(audio, np.float32)
        x = x.reshape(-1, x.shape[-1])
        x = np.pad(x, ((0, 0), (0, -x.shape[-1] % self.hop_length)))[:, None, :]
        codes = self._session("encoder").run(["codes"], {"audio": np.ascontiguousarray(x)})[0]
        return codes[:, :n].astype(np.int32)
