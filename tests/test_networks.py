"""Shapes, layer order, value ranges and output statistics of the classic MLP GAN networks."""

import pytest
import torch
from torch import nn

from gan_lightning import Discriminator, Generator, get_discriminator_block, get_generator_block, get_noise


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def linear_widths(network: nn.Module) -> list[tuple[int, int]]:
    """Return (in_features, out_features) of every Linear layer in forward order."""
    return [(layer.in_features, layer.out_features) for layer in network.modules() if isinstance(layer, nn.Linear)]


@pytest.mark.parametrize(("n_samples", "z_dim"), [(1, 1), (10, 64), (1000, 7)])
def test_get_noise_shape(n_samples: int, z_dim: int) -> None:
    noise = get_noise(n_samples, z_dim)
    assert noise.shape == (n_samples, z_dim)
    assert noise.dtype == torch.float32


def test_get_noise_standard_normal() -> None:
    noise = get_noise(1000, 100)

    # With 100,000 draws, the standard error of the mean is about 0.003.
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 1) < 0.02


def test_get_noise_device() -> None:
    assert get_noise(3, 2, device="cpu").device == torch.device("cpu")
    assert get_noise(3, 2, device=torch.device("cpu")).device == torch.device("cpu")


def test_get_noise_draws_fresh_values() -> None:
    first = get_noise(4, 8)
    second = get_noise(4, 8)
    assert not torch.equal(first, second)


def test_generator_block_layers() -> None:
    block = get_generator_block(25, 12)

    assert [type(layer) for layer in block] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert (block[0].in_features, block[0].out_features) == (25, 12)
    assert block[1].num_features == 12
    # The classic block uses the defaults. BatchNorm1d(n, 0.8) would set eps, not momentum.
    assert block[1].eps == pytest.approx(1e-5)
    assert block[1].momentum == pytest.approx(0.1)


def test_generator_block_output_shape() -> None:
    block = get_generator_block(25, 12)
    output = block(torch.randn(1000, 25))
    assert output.shape == (1000, 12)


def test_generator_block_output_statistics() -> None:
    block = get_generator_block(15, 28)
    output = block(torch.randn(5000, 15))

    # BatchNorm standardizes each unit in training mode, then ReLU keeps the positive half of a
    # standard normal: mean 1/sqrt(2 pi) = 0.40 and std sqrt(1/2 - 1/(2 pi)) = 0.58.
    assert output.min().item() == 0
    assert 0.5 < output.std().item() < 0.7
    assert 0.35 < output.mean().item() < 0.45


@pytest.mark.parametrize(("z_dim", "im_dim", "hidden_dim"), [(10, 784, 128), (5, 10, 20), (20, 8, 24), (1, 784, 4)])
def test_generator_output_shape_and_range(z_dim: int, im_dim: int, hidden_dim: int) -> None:
    generator = Generator(z_dim, im_dim, hidden_dim)
    output = generator(get_noise(500, z_dim))

    assert output.shape == (500, im_dim)
    assert output.min().item() >= 0
    assert output.max().item() <= 1


def test_generator_range_large_noise() -> None:
    generator = Generator(z_dim=5, im_dim=10, hidden_dim=20)
    output = generator(1000 * get_noise(100, 5))
    assert output.min().item() >= 0
    assert output.max().item() <= 1


def test_generator_default_sizes() -> None:
    generator = Generator()
    assert (generator.z_dim, generator.im_dim, generator.hidden_dim) == (10, 784, 128)


@pytest.mark.parametrize(("z_dim", "im_dim", "hidden_dim"), [(10, 784, 128), (5, 10, 20)])
def test_generator_layer_order(z_dim: int, im_dim: int, hidden_dim: int) -> None:
    layers = list(Generator(z_dim, im_dim, hidden_dim).gen)

    assert len(layers) == 6
    for block in layers[:4]:
        assert [type(layer) for layer in block] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert isinstance(layers[4], nn.Linear)
    assert isinstance(layers[5], nn.Sigmoid)


@pytest.mark.parametrize(("z_dim", "im_dim", "hidden_dim"), [(10, 784, 128), (5, 10, 20)])
def test_generator_widths(z_dim: int, im_dim: int, hidden_dim: int) -> None:
    generator = Generator(z_dim, im_dim, hidden_dim)
    h = hidden_dim
    assert linear_widths(generator) == [(z_dim, h), (h, 2 * h), (2 * h, 4 * h), (4 * h, 8 * h), (8 * h, im_dim)]


def test_generator_output_not_collapsed() -> None:
    generator = Generator(z_dim=10, im_dim=784, hidden_dim=32)
    output = generator(get_noise(1000, 10))

    # A fresh generator gives grey noise: pixels near 0.5 that still vary between images.
    assert abs(output.mean().item() - 0.5) < 0.1
    assert output.std().item() > 0.02
    assert output.std(dim=0).mean().item() > 0.01


def test_discriminator_block_layers() -> None:
    block = get_discriminator_block(25, 12)

    assert [type(layer) for layer in block] == [nn.Linear, nn.LeakyReLU]
    assert (block[0].in_features, block[0].out_features) == (25, 12)
    assert block[1].negative_slope == pytest.approx(0.2)


def test_discriminator_block_output() -> None:
    block = get_discriminator_block(25, 12)
    x = torch.randn(1000, 25)
    output = block(x)
    pre_activation = block[0](x)

    assert output.shape == (1000, 12)
    assert torch.allclose(output, torch.where(pre_activation > 0, pre_activation, 0.2 * pre_activation))


def test_discriminator_block_output_statistics() -> None:
    block = get_discriminator_block(5000, 12)
    output = block(torch.randn(1000, 5000))

    # Linear's default initialization on unit-variance inputs gives pre-activations with std
    # about 1/sqrt(3), and LeakyReLU(0.2) keeps some of the negative half.
    assert 0.3 < output.std().item() < 0.6
    assert output.min().item() < 0


@pytest.mark.parametrize(("im_dim", "hidden_dim"), [(784, 128), (10, 20), (6, 4)])
def test_discriminator_widths(im_dim: int, hidden_dim: int) -> None:
    discriminator = Discriminator(im_dim, hidden_dim)
    layers = list(discriminator.disc)
    h = hidden_dim

    assert linear_widths(discriminator) == [(im_dim, 4 * h), (4 * h, 2 * h), (2 * h, h), (h, 1)]
    for block in layers[:3]:
        assert [type(layer) for layer in block] == [nn.Linear, nn.LeakyReLU]
    assert isinstance(layers[3], nn.Linear)


def test_discriminator_has_no_sigmoid() -> None:
    discriminator = Discriminator()
    assert not any(isinstance(layer, nn.Sigmoid) for layer in discriminator.modules())


def test_discriminator_default_sizes() -> None:
    discriminator = Discriminator()
    assert (discriminator.im_dim, discriminator.hidden_dim) == (784, 128)


def test_discriminator_flat_input_shape() -> None:
    logits = Discriminator()(torch.rand(7, 784))
    assert logits.shape == (7, 1)


def test_discriminator_image_input_shape() -> None:
    discriminator = Discriminator()
    images = torch.rand(7, 1, 28, 28)

    logits = discriminator(images)

    assert logits.shape == (7, 1)
    assert torch.equal(logits, discriminator(images.reshape(7, 784)))


def test_discriminator_small_dimensions() -> None:
    logits = Discriminator(im_dim=10, hidden_dim=20)(torch.rand(3, 10))
    assert logits.shape == (3, 1)


def test_discriminator_logits_small_at_init() -> None:
    discriminator = Discriminator()
    logits = discriminator(torch.rand(1000, 784))

    # A fresh discriminator has no opinion yet, so D(x) = sigmoid(logit) stays near 0.5.
    assert logits.abs().max().item() < 1
    assert logits.std().item() < 0.5


def test_networks_chain() -> None:
    generator = Generator(z_dim=10, im_dim=784, hidden_dim=16)
    discriminator = Discriminator(im_dim=784, hidden_dim=16)
    logits = discriminator(generator(get_noise(9, 10)))
    assert logits.shape == (9, 1)


@pytest.mark.parametrize(
    ("network", "field", "value"),
    [
        ("generator", "z_dim", 0),
        ("generator", "hidden_dim", -8),
        ("generator", "im_dim", 0),
        ("discriminator", "hidden_dim", 0),
        ("discriminator", "im_dim", -1),
    ],
)
def test_nonpositive_size_rejected(network: str, field: str, value: int) -> None:
    cls = Generator if network == "generator" else Discriminator
    with pytest.raises(ValueError, match=f"{field} must be a positive integer, got {value}"):
        cls(**{field: value})
