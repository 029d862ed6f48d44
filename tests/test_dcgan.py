"""Tests of the convolutional generator and discriminator."""

import pytest
import torch
from torch import nn

from gan_lightning.checkpoint import build_network, network_spec
from gan_lightning.dcgan import DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("width", [4, 32])
def test_generator_image_shape(width: int) -> None:
    generator = DCGANGenerator(z_dim=10, width=width)
    images = generator(torch.randn(6, 10))
    assert images.shape == (6, 1, 28, 28)


def test_generator_output_range() -> None:
    torch.manual_seed(0)
    images = DCGANGenerator(z_dim=8, width=4)(torch.randn(64, 8) * 10)
    assert images.min() >= 0
    assert images.max() <= 1


def test_generator_layer_types() -> None:
    layers = [type(layer) for layer in DCGANGenerator(z_dim=8, width=4).upsample]
    assert layers == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.ConvTranspose2d, nn.Sigmoid]


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 784)])
def test_discriminator_logit_shape(shape: tuple[int, ...]) -> None:
    logits = DCGANDiscriminator(width=4)(torch.rand(shape))
    assert logits.shape == (5, 1)


def test_discriminator_returns_logits() -> None:
    layers = list(DCGANDiscriminator(width=4).modules())
    assert not any(isinstance(layer, nn.Sigmoid) for layer in layers)


def test_discriminator_leaky_slope() -> None:
    slopes = {layer.negative_slope for layer in DCGANDiscriminator(width=4).modules() if isinstance(layer, nn.LeakyReLU)}
    assert slopes == {0.2}


def test_discriminator_without_batch_norm() -> None:
    discriminator = DCGANDiscriminator(width=4, batch_norm=False)
    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in discriminator.modules())


def test_discriminator_logits_independent_without_batch_norm() -> None:
    discriminator = DCGANDiscriminator(width=4, batch_norm=False).train()
    images = torch.rand(4, 1, 28, 28)
    together = discriminator(images)
    alone = discriminator(images[:1])
    assert torch.allclose(together[:1], alone, atol=1e-6)


@pytest.mark.parametrize("network", [DCGANGenerator(z_dim=6, width=4), DCGANDiscriminator(width=4, batch_norm=False)])
def test_spec_rebuilds_same_architecture(network: nn.Module) -> None:
    rebuilt = build_network(network_spec(network))
    assert network_spec(rebuilt) == network_spec(network)
    rebuilt.load_state_dict(network.state_dict())


@pytest.mark.parametrize("field", ["z_dim", "width"])
def test_generator_rejects_nonpositive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DCGANGenerator(**{field: 0})
