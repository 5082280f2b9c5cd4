"""A DAC exported by ``dacli export`` (:mod:`dacli.export`), run by onnxruntime: the model the window
engine and the decoder of files need, without torch (``dacli decode --runtime onnx --model DIR``).

It has what :mod:`dacli.windows` and :mod:`dacli.codec` ask of a model — rates, codebooks, the weights'
hash and :meth:`OnnxDAC.steps`, the step graphs run push by push (:class:`OnnxSteps`) — so a file
decodes through the same push loop, loudness restore, low-pass and resampling as with torch. It
computes in float32 on the CPU; it encodes only arrays (:meth:`OnnxDAC.encode`), not files.
"""

import hashlib
import json
import math
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np

from . import codes as codes_type
from .errors import DacliError, first_line

EXPORT_INFO = "dacli-onnx.json"  # what marks a folder of `dacli export` (dacli.export)
VERSION = 2  # of dacli-onnx.json that this reads
UNKNOWN_LENGTH = 1 << 40  # a step graph's ``frames`` while a stream's length is not known (times samples per
# frame, it stays within int64)
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
        if not isinstance(info, dict) or info.get("format") != "dacli-onnx":
            raise DacliError(f"{info_path}: not a dacli-onnx description")
        if info.get("version") != VERSION:
            raise DacliError(f"{info_path}: version {info.get('version')!r} of dacli-onnx, this dacli reads "
                             f"version {VERSION}: run dacli export again")
        for key, kind in _FIELDS.items():
            if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
                raise DacliError(f"{info_path}: field {key!r} missing or not {kind.__name__}")
        for coder in ("encoder", "decoder"):
            step = info.get(f"{coder}_step")
            if not (isinstance(step, dict) and isinstance(step.get("delay"), int) and _ints(step.get("length"), 2)
                    and step["length"][0] > 0 and isinstance(step.get("states"), list)
                    and all(_ints(t, 2) for t in step["states"])):
                raise DacliError(f"{info_path}: field '{coder}_step' missing or malformed")
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

    def steps(self, rows: int, coder: str = "decoder") -> "OnnxSteps":
        """A decode (an encode) of ``rows`` rows (channels) of one stream, push by push."""
        return OnnxSteps(self, coder, rows)

    def decode(self, codes: Any) -> np.ndarray:
        """Codes (channels, K, frames) or (K, frames) → float32 audio (channels, samples) at the model
        rate, in one pass."""
        c = codes_type.as_array(codes)
        codes_type.check(c, self.n_codebooks, self.codebook_size)
        steps = self.steps(c.shape[0])
        return np.concatenate([steps.push(c), steps.push(c[:, :, :0], last=True)], 1)

    def encode(self, audio: Any, n_codebooks: Optional[int] = None) -> np.ndarray:
        """Audio at the model rate, (channels, samples) or (samples,) → int32 codes (channels,
        n_codebooks, ceil(samples / hop)), in one pass."""
        n = self.check_n_codebooks(n_codebooks)
        x = np.asarray(audio, np.float32)
        x = x.reshape(-1, x.shape[-1])
        x = np.pad(x, ((0, 0), (0, -x.shape[-1] % self.hop_length)))
        steps = self.steps(x.shape[0], "encoder")
        return np.concatenate([steps.push(x), steps.push(x[:, :0], last=True)], -1)[:, :n]


def _ints(x: Any, n: int) -> bool:
    return isinstance(x, list) and len(x) == n and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


class OnnxSteps:
    """A step graph of an export (docs/FORMAT.md, "ONNX graphs") run push by push for one stream of
    ``rows`` rows, as :class:`dacli.runtime.stepping.Steps` runs torch's: :meth:`push` takes the next
    frames — (rows, K, n) codes for the decoder, (rows, n · hop) samples for the encoder — and returns
    what they make final — (rows, m) float32 samples, (rows, n_codebooks, m) codes; the last push
    (``last``, any number of frames) ends the stream with the frames of zeros that carry its last
    outputs out."""

    def __init__(self, model: OnnxDAC, coder: str, rows: int) -> None:
        self.model, self.coder, self.rows = model, coder, rows
        step = model.info[f"{coder}_step"]
        self.delay, self.length = step["delay"], step["length"]  # in outputs
        self.per_frame = 1 if coder == "decoder" else model.hop_length  # inputs per frame
        self.states: List[np.ndarray] = [np.zeros((rows, c, n), np.float32) for c, n in step["states"]]
        self.position = 0  # frames pushed
        self.emitted = 0   # outputs given out (those of positions below 0 included)

    def _run(self, x: np.ndarray, frames: int) -> np.ndarray:
        feeds = {"codes" if self.coder == "decoder" else "audio": x, "frames": np.full(self.rows, frames, np.int64),
                 "position": np.full(self.rows, self.position, np.int64)}
        feeds.update((f"state{i}", s) for i, s in enumerate(self.states))
        y, *self.states = self.model._session(f"{self.coder}_step").run(None, feeds)
        self.position += x.shape[-1] // self.per_frame
        return y

    def push(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(x, np.int64) if self.coder == "decoder" else np.asarray(x, np.float32)[:, None]
        frames = self.position + x.shape[-1] // self.per_frame if last else UNKNOWN_LENGTH
        if last:  # the frames that carry the last outputs out: the graph zeroes their inputs
            n = self.length[0] * frames + self.length[1]
            tail = max(0, math.ceil((n + self.delay) / self.length[0]) - frames)
            x = np.concatenate([x, np.zeros((*x.shape[:2], tail * self.per_frame), x.dtype)], -1)
        if x.shape[-1]:
            y = self._run(np.ascontiguousarray(x), frames)
        else:
            y = np.zeros((self.rows, 1 if self.coder == "decoder" else self.model.n_codebooks, 0), np.float32)
        start = self.emitted - self.delay  # the position of y's first output
        self.emitted += y.shape[-1]
        y = y[..., max(0, -start):]
        if last:
            y = y[..., :max(0, n - max(0, start))]
        return np.ascontiguousarray(y[:, 0], np.float32) if self.coder == "decoder" else y.astype(np.int32)
