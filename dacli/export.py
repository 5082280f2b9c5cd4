"""A DAC as ONNX graphs, for decoding where torch is not (``dacli export MODEL -o DIR``); the folder is
read by :mod:`dacli.onnx_model` and by the browser player in ``web/``. docs/FORMAT.md ("ONNX graphs")
names the graphs' inputs and outputs:

- ``encoder.onnx``: ``audio`` (batch, 1, samples) float32 at the model rate, samples a multiple of the
  hop → ``codes`` (batch, n_codebooks, samples / hop) int64, every codebook (a file keeps the first K);
- ``decoder.onnx``: ``codes`` (batch, K, frames) int64, 1 ≤ K ≤ n_codebooks → ``audio`` (batch, 1,
  samples) float32: the quantizer's lookup and projections are inside the graph;
- ``dacli-onnx.json`` (:data:`dacli.onnx_model.EXPORT_INFO`): rates, codebooks, the weights' hash, the
  receptive-field contexts and the convolutions they come from, the graphs' sha256.

Weight norm is folded first: each ``g · v / ‖v‖`` convolution becomes a plain one holding the weight
the model computes (``torch._weight_norm``, float32), so the graphs hold ordinary Conv and
ConvTranspose nodes. The quantizer's stages are stacked (codebooks and output projections zero-padded
to the widest stage) so that one decoder graph takes any number of codebooks. Exported with torch's
TorchScript exporter (``dynamo=False``), dynamic in batch and length (and codebooks, decoding).
"""

import copy
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .errors import DacliError
from .fileio import os_reason
from .model import DAC
from .model.layers import WeightNormConv
from .model.receptive import context_frames, convolutions

OPSET = 17
FORMAT_VERSION = 1  # of dacli-onnx.json


def fold_weight_norm(model: DAC) -> DAC:
    """A copy of a plain DAC whose weight-normalised convolutions are ordinary ``nn.Conv1d`` /
    ``nn.ConvTranspose1d`` holding the weight each computes."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, WeightNormConv):
                continue
            w = child.weight().detach().float()
            cls = nn.ConvTranspose1d if child.transposed else nn.Conv1d
            out_ch = w.shape[1] if child.transposed else w.shape[0]
            in_ch = w.shape[0] if child.transposed else w.shape[1]
            conv: Any = cls(in_ch, out_ch, child.kernel_size, stride=child.stride, padding=child.padding,
                       dilation=child.dilation)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(child.bias.detach().float())
            setattr(parent, name, conv)
    return model


class EncoderGraph(nn.Module):
    """audio (B, 1, L) → codes (B, n_codebooks, L / hop): the encoder and every quantizer stage, as
    :meth:`dacli.model.DAC.encode_batch` runs them."""

    def __init__(self, model: DAC) -> None:
        super().__init__()
        self.encoder, self.quantizer = model.encoder, model.quantizer

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(audio))[1]


class DecoderGraph(nn.Module):
    """codes (B, K, T), K ≤ n_codebooks → audio (B, 1, L): every stage's codebook and 1×1 output
    projection stacked, the first K taken by the codes' shape, then the decoder."""

    def __init__(self, model: DAC) -> None:
        super().__init__()
        stages: Any = model.quantizer.quantizers
        width = max(q.codebook.weight.shape[1] for q in stages)
        latent = stages[0].out_proj.weight.shape[0]
        self.size = model.codebook_size
        books = torch.zeros(len(stages) * self.size, width)
        proj = torch.zeros(len(stages), latent, width)
        bias = torch.zeros(len(stages), latent)
        for i, q in enumerate(stages):
            d = q.codebook.weight.shape[1]
            books[i * self.size:(i + 1) * self.size, :d] = q.codebook.weight.detach()
            proj[i, :, :d] = q.out_proj.weight.detach()[:, :, 0]
            bias[i] = q.out_proj.bias.detach()
        self.register_buffer("books", books)
        self.register_buffer("proj", proj)
        self.register_buffer("bias", bias)
        self.decoder = model.decoder

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        k = codes.shape[1]
        stage = torch.arange(k, device=codes.device).reshape(1, -1, 1)
        books: Any = self.books
        proj: Any = self.proj
        bias: Any = self.bias
        emb = F.embedding(codes + stage * self.size, books)  # (B, K, T, width)
        per_stage = torch.einsum("bktd,kod->bkot", emb, proj[:k]) + bias[:k].reshape(1, k, -1, 1)
        return self.decoder(per_stage.sum(1))


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


def export_graphs(model: DAC, folder: Path) -> Dict[str, Any]:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``dacli-onnx.json`` of a plain DAC into ``folder``
    (existing, empty) → the JSON's content."""
    plain = fold_weight_norm(model).eval()
    hop = plain.hop_length
    audio = torch.zeros(1, 1, 12 * hop)
    codes = torch.zeros(1, plain.n_codebooks, 12, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as constants
        torch.onnx.export(EncoderGraph(plain), (audio,), str(folder / "encoder.onnx"), dynamo=False,
                          opset_version=OPSET, input_names=["audio"], output_names=["codes"],
                          dynamic_axes={"audio": {0: "batch", 2: "samples"}, "codes": {0: "batch", 2: "frames"}})
        torch.onnx.export(DecoderGraph(plain), (codes,), str(folder / "decoder.onnx"), dynamo=False,
                          opset_version=OPSET, input_names=["codes"], output_names=["audio"],
                          dynamic_axes={"codes": {0: "batch", 1: "codebooks", 2: "frames"},
                                        "audio": {0: "batch", 2: "samples"}})
    info = {
        "format": "dacli-onnx", "version": FORMAT_VERSION, "name": model.name or "",
        "weights_hash": model.weights_hash, "sample_rate": model.sample_rate, "hop_length": hop,
        "n_codebooks": model.n_codebooks, "codebook_size": model.codebook_size,
        "bits_per_code": int(round(model.bits_per_code)),
        "encoder_context": context_frames(model, "encoder"), "decoder_context": context_frames(model, "decoder"),
        "convolutions": {"encoder": _convs(model.encoder), "decoder": _convs(model.decoder)},
        "graphs": {g: {"file": f"{g}.onnx", "sha256": _sha256(folder / f"{g}.onnx"), "opset": OPSET}
                   for g in ("encoder", "decoder")},
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
