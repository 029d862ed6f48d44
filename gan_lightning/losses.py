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
