"""Residual vector quantization with factorised, L2-normalised codes (the paper's section 3.2)."""

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from .layers import WNConv1d


class VectorQuantize(nn.Module):
    """One RVQ stage: project to a low-dimensional space, pick the codebook row of highest cosine
    similarity, project back."""

    def __init__(self, input_dim, codebook_size, codebook_dim):
        super().__init__()
        self.in_proj = WNConv1d(input_dim, codebook_dim, 1)
        self.out_proj = WNConv1d(codebook_dim, input_dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def lookup(self, z_e):
        """(B, D, T) projected latents → (B, T) indices of the nearest codebook rows."""
        b = z_e.shape[0]
        enc = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]))
        book = F.normalize(self.codebook.weight)
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ book.t() + book.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1)[1].reshape(b, -1)

    def embed(self, indices):
        """(B, T) indices → (B, D, T) raw (un-normalised) codebook vectors."""
        return F.embedding(indices, self.codebook.weight).transpose(1, 2)

    def forward(self, z):
        z_e = self.in_proj(z)
        indices = self.lookup(z_e)
        z_q = self.embed(indices)
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="none").mean([1, 2])
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean([1, 2])
        z_q = z_e + (z_q - z_e).detach()  # straight-through; kept in eval too, for exact parity
        return self.out_proj(z_q), commitment, codebook, indices, z_e


class ResidualVectorQuantize(nn.Module):
    """N VectorQuantize stages, each coding the residual of the ones before. In training, a
    ``quantizer_dropout`` fraction of the batch uses a random number of stages."""

    def __init__(self, input_dim, n_codebooks, codebook_size, codebook_dim, quantizer_dropout=0.0):
        super().__init__()
        dims = codebook_dim if isinstance(codebook_dim, (list, tuple)) else [codebook_dim] * n_codebooks
        self.n_codebooks = n_codebooks
        self.quantizer_dropout = float(quantizer_dropout)
        self.quantizers = nn.ModuleList(VectorQuantize(input_dim, codebook_size, d) for d in dims)

    def forward(self, z, n_quantizers=None):
        """Returns (z_q, codes (B, n, T), latents, commitment loss, codebook loss)."""
        b = z.shape[0]
        n_quantizers = n_quantizers or self.n_codebooks
        if self.training:
            n_q = torch.full((b,), self.n_codebooks + 1, device=z.device)
            n_drop = int(b * self.quantizer_dropout)
            n_q[:n_drop] = torch.randint(1, self.n_codebooks + 1, (n_drop,), device=z.device)
        z_q, residual = 0, z
        commitment = codebook = torch.zeros((), device=z.device)
        codes, latents = [], []
        for i, q in enumerate(self.quantizers):
            if not self.training and i >= n_quantizers:
                break
            z_q_i, commit_i, book_i, idx_i, z_e_i = q(residual)
            if self.training:
                mask = (i < n_q).to(z.dtype)
                z_q = z_q + z_q_i * mask[:, None, None]
                commitment = commitment + (commit_i * mask).mean()
                codebook = codebook + (book_i * mask).mean()
            else:
                z_q = z_q + z_q_i
            residual = residual - z_q_i
            codes.append(idx_i)
            latents.append(z_e_i)
        return z_q, torch.stack(codes, 1), torch.cat(latents, 1), commitment, codebook

    def from_codes(self, codes):
        """(B, K, T) codes, K ≤ n_codebooks → (B, latent, T) quantized latent."""
        z_q = None
        stages: List[VectorQuantize] = list(self.quantizers[:codes.shape[1]])  # type: ignore[arg-type]
        for i, q in enumerate(stages):
            y = q.out_proj(q.embed(codes[:, i]))
            z_q = y if z_q is None else z_q + y
        return z_q
