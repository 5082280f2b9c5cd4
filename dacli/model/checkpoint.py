"""Checkpoints in the official layout, and the constructor arguments of the released models.

A checkpoint is a ``torch.save`` of a plain dict::

    {"state_dict": {name: tensor}, "metadata": {"kwargs": {constructor arguments}}}

with old-style weight-norm names (``weight_g``, ``weight_v``); files saved with torch's newer
parametrizations are read too.
"""

import hashlib
from typing import Tuple

import torch

from ..errors import DacliError, first_line
from .dac import DAC

# Constructor kwargs of the four released models (as their checkpoints' metadata['kwargs'] record them);
# the checkpoint's own kwargs win.
PRESETS = {
    "44khz-8kbps": dict(encoder_dim=64, encoder_rates=[2, 4, 8, 8], latent_dim=1024, decoder_dim=1536,
                        decoder_rates=[8, 8, 4, 2], n_codebooks=9, codebook_size=1024, codebook_dim=8,
                        sample_rate=44100),
    "44khz-16kbps": dict(encoder_dim=64, encoder_rates=[2, 4, 8, 8], latent_dim=128, decoder_dim=1536,
                         decoder_rates=[8, 8, 4, 2], n_codebooks=18, codebook_size=1024, codebook_dim=8,
                         sample_rate=44100),
    "24khz": dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], latent_dim=1024, decoder_dim=1536,
                  decoder_rates=[8, 5, 4, 2], n_codebooks=32, codebook_size=1024, codebook_dim=8,
                  sample_rate=24000),
    "16khz": dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], latent_dim=1024, decoder_dim=1536,
                  decoder_rates=[8, 5, 4, 2], n_codebooks=12, codebook_size=1024, codebook_dim=8,
                  sample_rate=16000),
}

KWARGS = ("encoder_dim", "encoder_rates", "latent_dim", "decoder_dim", "decoder_rates", "n_codebooks",
          "codebook_size", "codebook_dim", "quantizer_dropout", "sample_rate")


def build(preset_or_kwargs) -> DAC:
    """A freshly initialised DAC from a preset name or a kwargs dict."""
    if isinstance(preset_or_kwargs, str):
        if preset_or_kwargs not in PRESETS:
            raise DacliError(f"unknown preset {preset_or_kwargs!r}; known: {', '.join(PRESETS)}")
        model = DAC(**PRESETS[preset_or_kwargs])
        model.name = preset_or_kwargs
        return model
    return DAC(**preset_or_kwargs)


def _canonical_key(key):
    """Map new-style parametrization names to the old weight-norm names of the official files."""
    key = key.replace(".parametrizations.weight.original0", ".weight_g")
    return key.replace(".parametrizations.weight.original1", ".weight_v")


def weights_hash(state_dict) -> str:
    """sha256 over the (canonical) names, shapes and float32 bytes of a state dict, sorted by name."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous().float()
        h.update(f"{k}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _describe(keys, n=4):
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" … (+{len(keys) - n} more)" if len(keys) > n else "")


def read_checkpoint(path) -> Tuple[dict, dict]:
    """Load and validate a checkpoint file → (kwargs, canonical state dict). Raises DacliError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DacliError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise DacliError(f"{path}: is a directory, not a checkpoint file") from None
    except Exception as e:  # torch raises many types for non-torch or unsafe files
        msg = first_line(e)
        raise DacliError(f"{path}: not a readable torch checkpoint ({msg[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt["state_dict"], dict):
        raise DacliError(f"{path}: not a DAC checkpoint (expected a dict with 'state_dict' and 'metadata')")
    meta = ckpt.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("kwargs"), dict):
        raise DacliError(f"{path}: checkpoint has no metadata['kwargs'] with the model's constructor arguments")
    kwargs = {k: v for k, v in meta["kwargs"].items() if k in KWARGS}
    sd = {}
    for k, v in ckpt["state_dict"].items():
        if not torch.is_tensor(v):
            raise DacliError(f"{path}: state_dict entry {k!r} is not a tensor")
        sd[_canonical_key(k)] = v
    return kwargs, sd


def load_checkpoint(path) -> DAC:
    """Build a DAC from a checkpoint file in the official layout, strictly: missing, unexpected or
    wrongly shaped tensors are refused (the official loader silently ignores them). The model is the
    plain one, in eval mode, without gradients; :func:`dacli.load_model` also prepares it for fast
    inference (:func:`dacli.runtime.prepare`)."""
    kwargs, sd = read_checkpoint(path)
    try:
        with torch.device("meta"):  # no memory for initial weights: the file's tensors are used as they are
            model = DAC(**kwargs)
    except Exception as e:
        raise DacliError(f"{path}: cannot build a model from its kwargs {kwargs} ({e})") from None
    expected = model.state_dict()
    missing, unexpected = expected.keys() - sd.keys(), sd.keys() - expected.keys()
    if missing or unexpected:
        parts = ([f"missing {len(missing)} keys: {_describe(missing)}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} keys: {_describe(unexpected)}"] if unexpected else [])
        raise DacliError(f"{path}: state_dict does not match the model its kwargs describe; " + "; ".join(parts))
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(sd[k].shape)]
    if bad:
        k = bad[0]
        raise DacliError(f"{path}: {len(bad)} tensors have the wrong shape, e.g. {k}: "
                         f"{tuple(sd[k].shape)} in the file, {tuple(expected[k].shape)} expected")
    model.weights_hash = weights_hash(sd)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    del sd
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
