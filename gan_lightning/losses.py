"""GAN losses on discriminator logits, and the classic loss functions as public API.

The discriminator returns logits and every loss uses the with-logits form of binary cross
entropy, which is numerically stable and safe under autocast.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from gan_lightning.networks import get_noise

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Return the mean of BCE(d_real, ones) and BCE(d_fake, zeros) for logits of any shape."""
    ones = torch.ones_like(d_real)
    zeros = torch.zeros_like(d_fake)
    real_loss = F.binary_cross_entropy_with_logits(d_real, ones)
    fake_loss = F.binary_cross_entropy_with_logits(d_fake, zeros)
    return (real_loss + fake_loss) / 2


def bce_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Return the non-saturating generator loss BCE(d_fake, ones) for logits of any shape."""
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


def get_disc_loss(
    gen: nn.Module,
    disc: nn.Module,
    criterion: Criterion,
    real: torch.Tensor,
    num_images: int,
    z_dim: int,
    device: str | torch.device,
) -> torch.Tensor:
    """Compute the discriminator loss on ``real`` and on ``num_images`` detached fakes.

    The loss is the mean of ``criterion`` on fake logits against zeros and on real logits
    against ones; ``criterion`` is expected to be ``nn.BCEWithLogitsLoss()``.
    """
    noise = get_noise(num_images, z_dim, device=device)
    fake = gen(noise).detach()
    d_fake = disc(fake)
    d_real = disc(real)
    fake_loss = criterion(d_fake, torch.zeros_like(d_fake))
    real_loss = criterion(d_real, torch.ones_like(d_real))
    return (fake_loss + real_loss) / 2


def get_gen_loss(
    gen: nn.Module,
    disc: nn.Module,
    criterion: Criterion,
    num_images: int,
    z_dim: int,
    device: str | torch.device,
) -> torch.Tensor:
    """Compute the generator loss: ``criterion`` on the logits of fresh fakes against ones."""
    noise = get_noise(num_images, z_dim, device=device)
    d_fake = disc(gen(noise))
    return criterion(d_fake, torch.ones_like(d_fake))


# Names accepted by GAN(loss=...), as used on the command line: --model.loss hinge.
LOSSES = ("bce", "hinge", "lsgan", "wgan_gp")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}. Pass --model.loss with one of: {', '.join(LOSSES)}.")


def discriminator_loss(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Return the discriminator loss ``loss`` for D's outputs on reals and on fakes.

    - ``bce``: binary cross entropy with logits, reals against ones and fakes against zeros
      (Goodfellow et al., 2014), averaged over the two halves.
    - ``hinge``: mean(relu(1 - d_real)) + mean(relu(1 + d_fake)) (Lim and Ye, 2017; Miyato et al., 2018).
    - ``lsgan``: least squares with targets 1 for reals and 0 for fakes, halved (Mao et al., 2017).
    - ``wgan_gp``: the critic's Wasserstein estimate mean(d_fake) - mean(d_real) (Gulrajani et al.,
      2017); the gradient penalty is added separately, see ``gradient_penalty``.
    """
    _check_loss(loss)
    if loss == "bce":
        return bce_discriminator_loss(d_real, d_fake)
    if loss == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if loss == "lsgan":
        return ((d_real - 1).square().mean() + d_fake.square().mean()) / 2
    return d_fake.mean() - d_real.mean()


def generator_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    """Return the generator loss ``loss`` for D's outputs on fakes.

    ``bce`` is the non-saturating loss BCE(d_fake, ones); ``hinge`` and ``wgan_gp`` use
    -mean(d_fake); ``lsgan`` uses mean((d_fake - 1)^2) / 2.
    """
    _check_loss(loss)
    if loss == "bce":
        return bce_generator_loss(d_fake)
    if loss == "lsgan":
        return (d_fake - 1).square().mean() / 2
    return -d_fake.mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """Return mean((||grad critic(x)||_2 - 1)^2) over points x between reals and fakes.

    Each x = e * real + (1 - e) * fake with e drawn uniformly from [0, 1] per image, as in
    Gulrajani et al. (2017). The graph of the gradient is kept, so the penalty trains the critic.
    ``fake`` should be detached from the generator.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}.")
    mix = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    points = (mix * real + (1 - mix) * fake).requires_grad_(True)
    scores = critic(points)
    (gradients,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return (gradients.flatten(1).norm(2, dim=1) - 1).square().mean()
