"""The classic MLP GAN: noise, generator and discriminator.

These names and signatures are public API. Networks are plain ``nn.Module``s that know nothing
of Lightning, so any pair with the same contract can be plugged into ``GAN``:

- a generator maps noise ``z: (N, z_dim)`` to images, flat ``(N, im_dim)`` or ``(N, C, H, W)``,
  with pixels in [0, 1], and stores ``z_dim`` as an attribute;
- a discriminator maps images of either layout to one logit per image, ``(N, 1)``.

Every constructor argument is stored as an attribute of the same name, which is how a checkpoint
records the architecture (see ``gan_lightning.checkpoint``).
"""

import torch
from torch import nn
from torch.nn.utils import parametrizations


def check_sizes(**sizes: int) -> None:
    """Raise ValueError naming the first size that is not a positive integer."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def apply_spectral_norm(network: nn.Module) -> nn.Module:
    """Wrap the weight of every Linear and Conv2d layer of ``network`` in spectral normalization.

    Each wrapped weight is divided by a power-iteration estimate of its largest singular value
    (Miyato et al., 2018), refined by one iteration per forward pass in training mode. The
    weights move to ``parametrizations.weight.original`` in the state dict, beside the
    iteration vectors ``_u`` and ``_v``. Returns ``network``, changed in place.
    """
    # Collect the layers first, because registering a parametrization adds submodules.
    layers = [module for module in network.modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    for layer in layers:
        parametrizations.spectral_norm(layer)
    return network


def get_noise(n_samples: int, z_dim: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Draw standard normal noise of shape (n_samples, z_dim) on ``device``."""
    return torch.randn(n_samples, z_dim, device=device)


def get_generator_block(input_dim: int, output_dim: int) -> nn.Sequential:
    """Build one generator layer: Linear, BatchNorm1d, ReLU."""
    return nn.Sequential(
        nn.Linear(input_dim, output_dim),
        nn.BatchNorm1d(output_dim),
        nn.ReLU(inplace=True),
    )


class Generator(nn.Module):
    """MLP generator: z_dim -> h -> 2h -> 4h -> 8h -> im_dim, with a Sigmoid on the pixels."""

    def __init__(self, z_dim: int = 10, im_dim: int = 784, hidden_dim: int = 128):
        super().__init__()
        check_sizes(z_dim=z_dim, im_dim=im_dim, hidden_dim=hidden_dim)
        self.z_dim = z_dim
        self.im_dim = im_dim
        self.hidden_dim = hidden_dim
        self.gen = nn.Sequential(
            get_generator_block(z_dim, hidden_dim),
            get_generator_block(hidden_dim, hidden_dim * 2),
            get_generator_block(hidden_dim * 2, hidden_dim * 4),
            get_generator_block(hidden_dim * 4, hidden_dim * 8),
            nn.Linear(hidden_dim * 8, im_dim),
            nn.Sigmoid(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """Map noise (N, z_dim) to flat images (N, im_dim) in [0, 1]."""
        return self.gen(noise)


def get_discriminator_block(input_dim: int, output_dim: int) -> nn.Sequential:
    """Build one discriminator layer: Linear, LeakyReLU with negative slope 0.2."""
    return nn.Sequential(
        nn.Linear(input_dim, output_dim),
        nn.LeakyReLU(0.2, inplace=True),
    )


class Discriminator(nn.Module):
    """MLP discriminator: im_dim -> 4h -> 2h -> h -> 1 logit (no Sigmoid: losses take logits).

    ``spectral_norm`` wraps every Linear layer in spectral normalization (see
    ``apply_spectral_norm``), which limits how fast the logit can change with the image.
    """

    def __init__(self, im_dim: int = 784, hidden_dim: int = 128, spectral_norm: bool = False):
        super().__init__()
        check_sizes(im_dim=im_dim, hidden_dim=hidden_dim)
        self.im_dim = im_dim
        self.hidden_dim = hidden_dim
        self.spectral_norm = spectral_norm
        self.disc = nn.Sequential(
            get_discriminator_block(im_dim, hidden_dim * 4),
            get_discriminator_block(hidden_dim * 4, hidden_dim * 2),
            get_discriminator_block(hidden_dim * 2, hidden_dim),
            nn.Linear(hidden_dim, 1),
        )
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Map images (N, im_dim) or (N, C, H, W) to logits (N, 1)."""
        return self.disc(image.flatten(1))
