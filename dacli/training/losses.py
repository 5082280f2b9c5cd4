"""The adversarial losses of the recipe: least-squares GAN and feature matching. The mel distance
(weight 15) is :func:`dacli.metrics.mel_distance`; the codebook and commitment losses come from the
quantizer; the weights are the configuration's ``lambdas``."""

import torch.nn.functional as F


def discriminator_loss(d_fake, d_real):
    """Least-squares loss of the discriminators: fakes towards 0, reals towards 1."""
    return sum(f[-1].pow(2).mean() + (1 - r[-1]).pow(2).mean() for f, r in zip(d_fake, d_real))


def generator_losses(d_fake, d_real):
    """(least-squares adversarial loss, feature-matching L1 loss)."""
    adv = sum((1 - f[-1]).pow(2).mean() for f in d_fake)
    feat = sum(F.l1_loss(a, b.detach()) for f, r in zip(d_fake, d_real) for a, b in zip(f[:-1], r[:-1]))
    return adv, feat
