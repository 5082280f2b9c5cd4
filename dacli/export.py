"""A DAC as ONNX graphs, for decoding where torch is not (``dacli export MODEL -o DIR``); the folder is
read by :mod:`dacli.onnx_model` and by the browser player in ``web/``. docs/FORMAT.md ("ONNX graphs")
names the graphs' inputs and outputs:

- ``encoder_step.onnx``: a push of ``audio`` (batch, 1, samples) float32 at the model rate, samples a
  multiple of the hop, each row's ``position`` and stream length ``frames`` and the encoder's state →
  the ``codes`` (batch, n_codebooks, samples / hop) int64 the push makes final, every codebook (a file
  keeps the first K), and the next state (:class:`dacli.graphs.EncoderStep`);
- ``decoder_step.onnx``: a push of ``codes`` (batch, K, frames) int64, 1 ≤ K ≤ n_codebooks, ``position``,
  ``frames`` and the decoder's state → the ``audio`` samples the push makes final and the next state
  (:class:`dacli.graphs.DecoderStep`);
- ``dacli-onnx.json`` (:data:`dacli.onnx_model.EXPORT_INFO`): rates, codebooks, the weights' hash, the
  receptive-field contexts and the convolutions they come from, each step graph's delay, output
  length and state shapes, the graphs' sha256.

Weight norm is folded first (:func:`dacli.graphs.fold_weight_norm`), so the graphs hold ordinary Conv
and ConvTranspose nodes. Exported with torch's TorchScript exporter (``dynamo=False``), dynamic in
batch and length (and codebooks, decoding).
"""

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

from . import registry
from .errors import DacliError
from .fileio import os_reason
from .graphs import DecoderStep, EncoderStep, fold_weight_norm
from .model import DAC
from .model.receptive import context_frames, convolutions
from .onnx_model import VERSION

OPSET = 17


def _convs(module: nn.Module) -> list:
    return [[int(c.kernel_size if isinstance(c.kernel_size, int) else c.kernel_size[0]),
             int(c.stride if isinstance(c.stride, int) else c.stride[0]),
             int(c.dilation if isinstance(c.dilation, int) else c.dilation[0]), bool(c.transposed)]
            for c in convolutions(module)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _export_step(step: Any, first: torch.Tensor, name: str, folder: Path) -> None:
    """Trace a step graph (:class:`dacli.graphs.DecoderStep`, :class:`dacli.graphs.EncoderStep`) on a
    push of ``first`` (two rows) into ``folder/{name}.onnx``."""
    rows, n = first.shape[0], len(step.states)
    position, frames = torch.zeros(rows, dtype=torch.long), torch.full((rows,), 100, dtype=torch.long)
    states, nexts = [f"state{i}" for i in range(n)], [f"next{i}" for i in range(n)]
    given, made = ("codes", "audio") if name == "decoder_step" else ("audio", "codes")
    axes = {"batch": {0: "batch"}, "codes": {0: "batch", 1: "codebooks", 2: "frames"}, "audio": {0: "batch", 2: "samples"}}
    torch.onnx.export(step, (first, position, frames, *step.initial(rows)), str(folder / f"{name}.onnx"), dynamo=False,
                      opset_version=OPSET, input_names=[given, "position", "frames", *states], output_names=[made, *nexts],
                      dynamic_axes={given: axes[given], made: axes[made], "position": axes["batch"],
                                    "frames": axes["batch"], **{s: axes["batch"] for s in states + nexts}})


def export_graphs(model: DAC, folder: Path) -> Dict[str, Any]:
    """Write ``encoder_step.onnx``, ``decoder_step.onnx`` and ``dacli-onnx.json`` of a plain DAC into
    ``folder`` (existing, empty) → the JSON's content."""
    plain = fold_weight_norm(model).eval()
    steps = {"encoder": EncoderStep(plain), "decoder": DecoderStep(plain)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as constants
        _export_step(steps["encoder"], torch.zeros(2, 1, 12 * plain.hop_length), "encoder_step", folder)
        _export_step(steps["decoder"], torch.zeros(2, plain.n_codebooks, 12, dtype=torch.long), "decoder_step", folder)
    info = {
        "format": "dacli-onnx", "version": VERSION, "name": model.name or "",
        "weights_hash": model.weights_hash, "sample_rate": model.sample_rate, "hop_length": plain.hop_length,
        "n_codebooks": model.n_codebooks, "codebook_size": model.codebook_size,
        "bits_per_code": int(round(model.bits_per_code)),
        "encoder_context": context_frames(model, "encoder"), "decoder_context": context_frames(model, "decoder"),
        "convolutions": {"encoder": _convs(model.encoder), "decoder": _convs(model.decoder)},
        **{f"{c}_step": {"delay": s.delay, "length": list(s.length), "states": [list(t) for t in s.states]}
           for c, s in steps.items()},
        "graphs": {g: {"file": f"{g}.onnx", "sha256": _sha256(folder / f"{g}.onnx"), "opset": OPSET}
                   for g in ("encoder_step", "decoder_step")},
    }
    (folder / registry.EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def export(name_or_path: Union[str, Path, None], out: Union[str, Path], overwrite: bool = False) -> Dict[str, Any]:
    """``dacli export``: the model (a name or checkpoint path, as :func:`dacli.load_model` takes it) as
    ONNX graphs in the folder ``out``, written whole: into a temporary folder beside it, renamed at the
    end (an existing ``out`` is replaced only with ``overwrite``). → the JSON's content."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DacliError(f"{out}: exists; give --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise DacliError(f"{out}: exists and is not a folder")
    model = registry.load_plain(name_or_path)
    parent = out.absolute().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=parent))
    except OSError as e:
        raise DacliError(f"{out}: cannot write here ({os_reason(e)})") from None
    try:
        try:
            info = export_graphs(model, tmp)
        except OSError as e:
            raise DacliError(f"{out}: cannot write the graphs ({os_reason(e)})") from None
        os.chmod(tmp, 0o755)
        if out.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
