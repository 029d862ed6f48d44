"""Convolutional generator and discriminator sized for 28x28 images (DCGAN style).

The layout follows Radford et al. (2015): transposed convolutions with BatchNorm and ReLU in the
generator, strided convolutions with LeakyReLU(0.2) in the discriminator, which returns logits.
Widths are narrow so that a 2-core CPU trains them at about the speed of the classic MLP.
"""

import torch
from torch import nn

from gan_lightning.networks import apply_spectral_norm, check_sizes


class DCGANGenerator(nn.Module):
    """z (N, z_dim) -> Linear -> (N, 2w, 7, 7) -> (N, w, 14, 14) -> (N, 1, 28, 28) in [0, 1]."""

    def __init__(self, z_dim: int = 64, width: int = 32, channels: int = 1):
        super().__init__()
        check_sizes(z_dim=z_dim, width=width, channels=channels)
        self.z_dim = z_dim
        self.width = width
        self.channels = channels
        self.project = nn.Sequential(
            nn.Linear(z_dim, 2 * width * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * width * 7 * 7),
            nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, kernel_size=4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map noise (N, z_dim) to images (N, channels, 28, 28) in [0, 1]."""
        features = self.project(z).view(-1, 2 * self.width, 7, 7)
        return self.upsample(features)


class DCGANDiscriminator(nn.Module):
    """(N, 1, 28, 28) -> (N, w, 14, 14) -> (N, 2w, 7, 7) -> one logit (N, 1), with no Sigmoid.

    ``batch_norm`` adds BatchNorm after the second convolution, as DCGAN does. Turn it off for
    losses with a gradient penalty, because they assume each logit depends on its own image only.
    ``spectral_norm`` wraps both convolutions and the final Linear in spectral normalization (see
    ``gan_lightning.networks.apply_spectral_norm``).
    """

    def __init__(self, width: int = 32, channels: int = 1, batch_norm: bool = True, spectral_norm: bool = False):
        super().__init__()
        check_sizes(width=width, channels=channels)
        self.width = width
        self.channels = channels
        self.batch_norm = batch_norm
        self.spectral_norm = spectral_norm
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, kernel_size=4, stride=2, padding=1, bias=not batch_norm),
            nn.BatchNorm2d(2 * width) if batch_norm else nn.Identity(),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.classify = nn.Linear(2 * width * 7 * 7, 1)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Map images (N, channels, 28, 28), or flat (N, channels*784), to logits (N, 1)."""
        image = image.view(-1, self.channels, 28, 28)
        return self.classify(self.features(image).flatten(1))
