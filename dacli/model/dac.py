"""The DAC codec (Kumar et al. 2023): a convolutional encoder, a residual vector quantizer and a
decoder that mirrors the encoder. Weight-compatible with the official descript-audio-codec 1.0.0:
module and parameter names and numerics follow it, so its ``.pth`` files load here and ours there."""

import math
from fractions import Fraction
from typing import Callable, List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import codes as codes_type, rates
from . import receptive
from .layers import ResidualUnit, Snake1d, WeightNormConv, WNConv1d, WNConvTranspose1d
from .quantizer import ResidualVectorQuantize


class EncoderBlock(nn.Module):
    def __init__(self, dim, stride):
        super().__init__()
        self.block = nn.Sequential(
            ResidualUnit(dim // 2, 1), ResidualUnit(dim // 2, 3), ResidualUnit(dim // 2, 9),
            Snake1d(dim // 2),
            WNConv1d(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x):
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, d_model, strides, d_latent):
        super().__init__()
        layers: List[nn.Module] = [WNConv1d(1, d_model, 7, padding=3)]
        for stride in strides:
            d_model *= 2
            layers.append(EncoderBlock(d_model, stride))
        layers += [Snake1d(d_model), WNConv1d(d_model, d_latent, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class DecoderBlock(nn.Module):
    def __init__(self, in_dim, out_dim, stride):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_dim),
            WNConvTranspose1d(in_dim, out_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
            ResidualUnit(out_dim, 1), ResidualUnit(out_dim, 3), ResidualUnit(out_dim, 9))

    def forward(self, x):
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, d_latent, channels, rates):
        super().__init__()
        layers: List[nn.Module] = [WNConv1d(d_latent, channels, 7, padding=3)]
        for i, stride in enumerate(rates):
            layers.append(DecoderBlock(channels // 2 ** i, channels // 2 ** (i + 1), stride))
        out_dim = channels // 2 ** len(rates)
        layers += [Snake1d(out_dim), WNConv1d(out_dim, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class DAC(nn.Module):
    """The Descript Audio Codec. Constructor arguments are those stored in official checkpoints."""

    def __init__(self, encoder_dim=64, encoder_rates=(2, 4, 8, 8), latent_dim=None, decoder_dim=1536,
                 decoder_rates=(8, 8, 4, 2), n_codebooks=9, codebook_size=1024, codebook_dim=8,
                 quantizer_dropout=False, sample_rate=44100):
        super().__init__()
        if latent_dim is None:
            latent_dim = encoder_dim * 2 ** len(encoder_rates)
        self.kwargs = dict(encoder_dim=encoder_dim, encoder_rates=list(encoder_rates), latent_dim=latent_dim,
                           decoder_dim=decoder_dim, decoder_rates=list(decoder_rates), n_codebooks=n_codebooks,
                           codebook_size=codebook_size, codebook_dim=codebook_dim,
                           quantizer_dropout=quantizer_dropout, sample_rate=sample_rate)
        self.sample_rate = sample_rate
        self.hop_length = int(np.prod(encoder_rates))
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.encoder = Encoder(encoder_dim, encoder_rates, latent_dim)
        self.quantizer = ResidualVectorQuantize(latent_dim, n_codebooks, codebook_size, codebook_dim,
                                                quantizer_dropout)
        self.decoder = Decoder(latent_dim, decoder_dim, decoder_rates)
        self.precision = "fp32"   # what the encoder and decoder compute in ("bf16": set by dacli.runtime.prepare)
        self.name = None          # preset name or file name, set by the loader
        self.weights_hash = None  # sha256 of the checkpoint weights, set by the loader

    # ---- rates ------------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> Fraction:
        """Code frames per second, exactly."""
        return rates.frame_rate(self.sample_rate, self.hop_length)

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    def kbps(self, n_codebooks: Optional[int] = None) -> float:
        """Exact bitrate in kbps for ``n_codebooks`` (all by default)."""
        return rates.kbps(self.frame_rate, self.bits_per_code, n_codebooks or self.n_codebooks)

    def n_codebooks_for_kbps(self, kbps: float, channels: int = 1) -> int:
        """The largest codebook count whose exact total bitrate over ``channels`` channels does not
        exceed ``kbps`` (at least 1)."""
        return rates.codebooks_for_kbps(kbps, self.kbps(1), self.n_codebooks, channels)

    def bitrate(self, kbps: Optional[float] = None, n_codebooks: Optional[int] = None,
                notice: Optional[Callable[[str], None]] = None) -> rates.Bitrate:
        """What ``--kbps`` (a file's total rate) or ``--n-codebooks`` asks of this model, per channel
        count (:class:`dacli.rates.Bitrate`)."""
        return rates.Bitrate(self.kbps(1), self.n_codebooks, kbps, n_codebooks, notice)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- training-style forward -------------------------------------------------------------------
    def forward(self, audio: torch.Tensor, n_quantizers: Optional[int] = None) -> dict:
        """(B, 1, L) audio at the model rate, L a multiple of hop → dict of the reconstruction,
        codes and the VQ losses (used for training)."""
        z = self.encoder(audio)
        z_q, codes, latents, commitment, codebook = self.quantizer(z, n_quantizers)
        return {"audio": self.decoder(z_q), "codes": codes, "latents": latents,
                "vq/commitment_loss": commitment, "vq/codebook_loss": codebook}

    # ---- inference API ----------------------------------------------------------------------------
    def check_n_codebooks(self, n_codebooks: Optional[int] = None) -> int:
        """The codebook count to code with: all when None; refused outside 1..n_codebooks."""
        return codes_type.codebook_count(n_codebooks, self.n_codebooks)

    def encode_batch(self, audio: torch.Tensor, n_codebooks: Optional[int] = None) -> torch.Tensor:
        """(B, 1, L) audio on the model's device, L a multiple of hop → (B, n, L/hop) int32 codes on that
        device, in one pass with padded convolutions."""
        z = self.encoder(audio)
        return self.quantizer(z, self.check_n_codebooks(n_codebooks))[1].to(torch.int32)

    def decode_batch(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, n, T) codes on the model's device → (B, 1, L) audio, in one pass."""
        return self.decoder(self.quantizer.from_codes(codes))

    def encode(self, audio: Union[np.ndarray, torch.Tensor], n_codebooks: Optional[int] = None) -> torch.Tensor:
        """Audio at the model rate, (channels, samples) or (samples,), array or tensor →
        int32 codes (channels, n_codebooks, ceil(samples/hop)) on the CPU (:mod:`dacli.codes`).
        Channels are coded independently. The whole signal goes through in one pass: for long
        signals use :mod:`dacli.windows` (bounded memory, the same codes in fp32), for files
        :mod:`dacli.codec`."""
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio) else audio)
        x = x.float().reshape(-1, x.shape[-1])[:, None, :]
        pad = -x.shape[-1] % self.hop_length
        with torch.inference_mode():
            x = F.pad(x.to(self.device), (0, pad))
            return codes_type.as_tensor(self.encode_batch(x, n_codebooks))

    def decode(self, codes: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """Codes (channels, n, frames) or (n, frames), any integer array or tensor → float32 audio
        (channels, samples) on the CPU, at the model rate. 44.1 kHz models give hop·frames samples;
        models with an odd stride a few fewer."""
        c = codes_type.as_array(codes)
        codes_type.check(c, self.n_codebooks, self.codebook_size)
        with torch.inference_mode():
            return self.decode_batch(torch.from_numpy(c).long().to(self.device))[:, 0].float().cpu()

    def set_padding(self, enabled: bool) -> "DAC":
        """Switch every convolution between its normal zero padding (True) and 'valid' convolution
        (False), as the official tool does for its chunked legacy files."""
        for m in receptive.convolutions(self):
            m.padding = m.default_padding if enabled else 0
        return self

    # ---- weights ----------------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        """This model in the official checkpoint layout (a plain model: not one the runtime prepared)."""
        if any(not isinstance(m, WeightNormConv) for m in receptive.convolutions(self)):
            raise ValueError("cannot save a model prepared for inference (dacli.runtime.prepare)")
        sd = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        return {"state_dict": sd, "metadata": {"kwargs": dict(self.kwargs)}}
