"""Tests of the class-conditional networks and of spectral normalization in the discriminators."""

import inspect
import io
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan_lightning.checkpoint import build_network, network_spec
from gan_lightning.conditional import (
    ConditionalDCGANDiscriminator,
    ConditionalDCGANGenerator,
    ConditionalDiscriminator,
    ConditionalGenerator,
)
from gan_lightning.dcgan import DCGANDiscriminator
from gan_lightning.labels import discriminate, generate
from gan_lightning.networks import Discriminator

NUM_CLASSES = 10
Z_DIM = 8

GENERATORS = [
    pytest.param(ConditionalGenerator, {"z_dim": Z_DIM, "embed_dim": 4, "hidden_dim": 8}, id="mlp"),
    pytest.param(ConditionalDCGANGenerator, {"z_dim": Z_DIM, "embed_dim": 4, "width": 4}, id="dcgan"),
]
DISCRIMINATORS = [
    pytest.param(ConditionalDiscriminator, {"hidden_dim": 8}, id="mlp"),
    pytest.param(ConditionalDCGANDiscriminator, {"width": 4}, id="dcgan"),
]
# Every discriminator that takes spectral_norm, conditional or not.
SPECTRAL_NORM_DISCRIMINATORS = [
    pytest.param(Discriminator, {"hidden_dim": 8}, id="mlp"),
    pytest.param(DCGANDiscriminator, {"width": 4}, id="dcgan"),
    pytest.param(DCGANDiscriminator, {"width": 4, "batch_norm": False}, id="dcgan_no_batch_norm"),
    pytest.param(ConditionalDiscriminator, {"hidden_dim": 8}, id="conditional_mlp"),
    pytest.param(ConditionalDCGANDiscriminator, {"width": 4}, id="conditional_dcgan"),
]


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def run(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Call a generator on noise or a discriminator on images, with labels when it is conditional."""
    if hasattr(network, "z_dim"):
        return generate(network, inputs, labels)
    return discriminate(network, inputs, labels)


def inputs_for(network: nn.Module, num_samples: int) -> torch.Tensor:
    """Return noise for a generator or images in [0, 1] for a discriminator."""
    if hasattr(network, "z_dim"):
        return torch.randn(num_samples, network.z_dim)
    channels = getattr(network, "channels", 1)
    return torch.rand(num_samples, channels, 28, 28)


def all_conditional_networks() -> list[Any]:
    return [*GENERATORS, *DISCRIMINATORS]


def largest_singular_value(weight: torch.Tensor) -> float:
    # Spectral normalization treats a convolution kernel (out, in, kh, kw) as the matrix (out, in*kh*kw).
    return torch.linalg.matrix_norm(weight.detach().flatten(1), ord=2).item()


# Shapes and ranges


@pytest.mark.parametrize(("cls", "kwargs"), GENERATORS)
def test_generator_output_shape_and_range(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    generator = cls(**kwargs)
    images = generator(torch.randn(12, Z_DIM) * 10, torch.arange(12) % NUM_CLASSES)

    expected = (12, 784) if cls is ConditionalGenerator else (12, 1, 28, 28)
    assert images.shape == expected
    assert images.min().item() >= 0
    assert images.max().item() <= 1


def test_mlp_generator_other_sizes() -> None:
    generator = ConditionalGenerator(z_dim=3, num_classes=4, embed_dim=2, im_dim=10, hidden_dim=5)
    images = generator(torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 3, 0]))
    assert images.shape == (6, 10)


def test_dcgan_generator_three_channels() -> None:
    generator = ConditionalDCGANGenerator(z_dim=Z_DIM, num_classes=3, width=4, channels=3)
    images = generator(torch.randn(5, Z_DIM), torch.tensor([0, 1, 2, 0, 1]))
    assert images.shape == (5, 3, 28, 28)


@pytest.mark.parametrize(("cls", "kwargs"), DISCRIMINATORS)
@pytest.mark.parametrize("shape", [(7, 1, 28, 28), (7, 784)])
def test_discriminator_logit_shape(cls: type[nn.Module], kwargs: dict[str, Any], shape: tuple[int, ...]) -> None:
    logits = cls(**kwargs)(torch.rand(shape), torch.arange(7))
    assert logits.shape == (7, 1)


@pytest.mark.parametrize(("cls", "kwargs"), DISCRIMINATORS)
def test_discriminator_has_no_sigmoid(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    discriminator = cls(**kwargs)
    assert not any(isinstance(layer, nn.Sigmoid) for layer in discriminator.modules())


def test_dcgan_discriminator_three_channels() -> None:
    discriminator = ConditionalDCGANDiscriminator(num_classes=3, width=4, channels=3)
    images = torch.rand(5, 3, 28, 28)
    labels = torch.tensor([0, 1, 2, 0, 1])

    logits = discriminator(images, labels)

    assert logits.shape == (5, 1)
    assert discriminator.body.features[0].in_channels == 4
    assert torch.equal(discriminator.eval()(images, labels), discriminator(images.flatten(1), labels))


def test_mlp_discriminator_other_sizes() -> None:
    discriminator = ConditionalDiscriminator(num_classes=4, im_dim=10, hidden_dim=5)
    logits = discriminator(torch.rand(6, 10), torch.tensor([0, 1, 2, 3, 3, 0]))
    assert logits.shape == (6, 1)


@pytest.mark.parametrize(("hidden_dim", "label_features"), [(16, 16), (8, 10)])
def test_mlp_discriminator_embedding_size(hidden_dim: int, label_features: int) -> None:
    # max(hidden_dim, num_classes) features, so no two classes are forced to share a direction.
    discriminator = ConditionalDiscriminator(num_classes=10, im_dim=784, hidden_dim=hidden_dim)
    assert tuple(discriminator.label_embedding.weight.shape) == (label_features, 10)
    assert discriminator.body.im_dim == 784 + label_features


def test_dcgan_discriminator_label_plane_size() -> None:
    discriminator = ConditionalDCGANDiscriminator(num_classes=10, width=4)
    assert tuple(discriminator.label_embedding.weight.shape) == (784, 10)


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
def test_label_embedding_has_no_bias(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    embedding = cls(**kwargs).label_embedding
    assert isinstance(embedding, nn.Linear)
    assert embedding.bias is None
    assert embedding.in_features == NUM_CLASSES


# Conditioning


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
def test_label_changes_output(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    network = cls(**kwargs).eval()
    # One input repeated for every class, so only the label differs between rows.
    single = inputs_for(network, 1)
    inputs = single.expand(NUM_CLASSES, *single.shape[1:])
    labels = torch.arange(NUM_CLASSES)

    with torch.no_grad():
        outputs = run(network, inputs, labels).flatten(1)
        again = run(network, inputs, labels).flatten(1)

    distances = torch.cdist(outputs, outputs)
    off_diagonal = distances[~torch.eye(NUM_CLASSES, dtype=torch.bool)]
    assert off_diagonal.min().item() > 0, "two classes gave the same output for the same input"
    assert torch.equal(outputs, again)


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
def test_index_labels_match_one_hot(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    network = cls(**kwargs)
    inputs = inputs_for(network, 12)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    one_hot = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()

    # Training mode: BatchNorm uses the statistics of the batch, which are the same for both calls.
    assert torch.equal(run(network, inputs, labels), run(network, inputs, one_hot))


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
def test_int32_indices_accepted(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    network = cls(**kwargs).eval()
    inputs = inputs_for(network, 4)
    labels = torch.tensor([0, 9, 2, 7])
    assert torch.equal(run(network, inputs, labels), run(network, inputs, labels.int()))


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
def test_mixed_weights_blend_classes(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    network = cls(**kwargs).eval()
    single = inputs_for(network, 1)
    inputs = single.expand(3, *single.shape[1:])
    first, second = torch.eye(NUM_CLASSES)[2], torch.eye(NUM_CLASSES)[7]
    weights = torch.stack([0.99 * first + 0.01 * second, 0.5 * first + 0.5 * second, second])

    with torch.no_grad():
        blended = run(network, inputs, weights).flatten(1)
        pure = run(network, inputs, torch.tensor([2, 2, 7])).flatten(1)

    # The embedding is linear in the weights, so a mixed row embeds to the mix of the two columns.
    embedded = network.label_embedding(weights[1:2])
    expected = 0.5 * network.label_embedding.weight[:, 2] + 0.5 * network.label_embedding.weight[:, 7]
    assert torch.allclose(embedded[0], expected, atol=1e-6)

    assert torch.isfinite(blended).all()
    assert torch.equal(blended[2], pure[2])
    # A row that is almost all class 2 stays closer to class 2 than the half-and-half row does.
    assert (blended[0] - pure[0]).norm() < (blended[1] - pure[0]).norm()
    assert not torch.equal(blended[1], pure[0])
    assert not torch.equal(blended[1], pure[2])


@pytest.mark.parametrize(("cls", "kwargs"), GENERATORS)
def test_mixed_weights_output_range(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    generator = cls(**kwargs)
    weights = torch.rand(6, NUM_CLASSES).softmax(dim=1)
    images = generator(torch.randn(6, Z_DIM), weights)
    assert images.min().item() >= 0
    assert images.max().item() <= 1


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
def test_label_embedding_receives_gradients(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    network = cls(**kwargs)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])  # classes 5 to 9 unused

    run(network, inputs_for(network, 8), labels).square().sum().backward()

    gradient = network.label_embedding.weight.grad  # (features, num_classes): one column per class
    assert gradient is not None
    assert (gradient[:, :5].abs().sum(dim=0) > 0).all(), "a used class got no gradient"
    assert torch.equal(gradient[:, 5:], torch.zeros_like(gradient[:, 5:]))


def test_generate_and_discriminate_pass_labels() -> None:
    generator = ConditionalGenerator(z_dim=Z_DIM, embed_dim=4, hidden_dim=8).eval()
    discriminator = ConditionalDiscriminator(hidden_dim=8).eval()
    z = torch.randn(NUM_CLASSES, Z_DIM)

    fake = generate(generator, z)
    logits = discriminate(discriminator, fake, torch.arange(NUM_CLASSES))

    # Without labels, generate draws the balanced labels 0, 1, ..., 9.
    assert torch.equal(fake, generator(z, torch.arange(NUM_CLASSES)))
    assert logits.shape == (NUM_CLASSES, 1)


# Invalid input

INVALID_LABELS = [
    pytest.param(torch.tensor([0, 1, 10, 3]), "Class index 10 is outside \\[0, 10\\)", id="index_too_large"),
    pytest.param(torch.tensor([0, -2, 1, 3]), "Class index -2 is outside \\[0, 10\\)", id="negative_index"),
    pytest.param(torch.tensor([0, 1, 2]), "Got 3 labels for a batch of 4", id="too_few_labels"),
    pytest.param(torch.zeros(5, NUM_CLASSES), "Got 5 labels for a batch of 4", id="too_many_weights"),
    pytest.param(torch.zeros(4, 1, dtype=torch.long), "shape \\(N,\\), got \\(4, 1\\)", id="indices_2d"),
    pytest.param(torch.zeros(4, 3), "shape \\(N, 10\\), got \\(4, 3\\)", id="weights_wrong_width"),
    pytest.param(torch.full((4, NUM_CLASSES), float("nan")), "must be finite, got nan", id="nan_weights"),
    pytest.param(torch.ones(4, dtype=torch.bool), "got dtype torch.bool", id="bool_labels"),
]


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
@pytest.mark.parametrize(("labels", "message"), INVALID_LABELS)
def test_invalid_labels_rejected(cls: type[nn.Module], kwargs: dict[str, Any], labels: torch.Tensor, message: str) -> None:
    network = cls(**kwargs)
    with pytest.raises(ValueError, match=message):
        run(network, inputs_for(network, 4), labels)


@pytest.mark.parametrize(("cls", "kwargs"), all_conditional_networks())
def test_label_list_rejected(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    network = cls(**kwargs)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor.*got list"):
        run(network, inputs_for(network, 4), [0, 1, 2, 3])


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (ConditionalGenerator, "num_classes"),
        (ConditionalGenerator, "embed_dim"),
        (ConditionalGenerator, "hidden_dim"),
        (ConditionalDiscriminator, "num_classes"),
        (ConditionalDiscriminator, "im_dim"),
        (ConditionalDCGANGenerator, "z_dim"),
        (ConditionalDCGANGenerator, "embed_dim"),
        (ConditionalDCGANDiscriminator, "num_classes"),
        (ConditionalDCGANDiscriminator, "width"),
    ],
)
def test_nonpositive_size_rejected(cls: type[nn.Module], field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be a positive integer, got 0"):
        cls(**{field: 0})


# Spectral normalization


def wrapped_layers(network: nn.Module) -> list[nn.Module]:
    return [module for module in network.modules() if parametrize.is_parametrized(module, "weight")]


def spectral_norm_layers(network: nn.Module) -> list[nn.Module]:
    """Return the Linear and Conv2d layers that spectral normalization should wrap."""
    body = getattr(network, "body", network)
    return [module for module in body.modules() if isinstance(module, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize(("cls", "kwargs"), SPECTRAL_NORM_DISCRIMINATORS)
def test_spectral_norm_unit_singular_values(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    discriminator = cls(**kwargs, spectral_norm=True).train()
    images = torch.rand(8, 1, 28, 28)
    labels = torch.arange(8)

    # Each forward pass in training mode refines the estimate of each largest singular value.
    for _ in range(5):
        run(discriminator, images, labels)
    discriminator.eval()  # reading a wrapped weight in training mode would run one more iteration

    wrapped = wrapped_layers(discriminator)
    assert len(wrapped) == len(spectral_norm_layers(discriminator))
    for layer in wrapped:
        # The estimate u^T W v with unit u and v never exceeds the largest singular value of W,
        # so the normalized weight has a largest singular value of at least 1.
        assert 0.999 < largest_singular_value(layer.weight) < 1.05


@pytest.mark.parametrize(("cls", "kwargs"), SPECTRAL_NORM_DISCRIMINATORS)
def test_spectral_norm_wraps_every_layer(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    discriminator = cls(**kwargs, spectral_norm=True)
    expected = spectral_norm_layers(discriminator)

    assert len(expected) >= 3
    assert all(parametrize.is_parametrized(layer, "weight") for layer in expected)


@pytest.mark.parametrize(("cls", "kwargs"), DISCRIMINATORS)
def test_spectral_norm_leaves_label_embedding(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    discriminator = cls(**kwargs, spectral_norm=True)
    assert not parametrize.is_parametrized(discriminator.label_embedding)


@pytest.mark.parametrize(("cls", "kwargs"), SPECTRAL_NORM_DISCRIMINATORS)
def test_spectral_norm_weights_train(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    discriminator = cls(**kwargs, spectral_norm=True).train()
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-2)
    first = wrapped_layers(discriminator)[0]
    before = first.parametrizations.weight.original.detach().clone()

    logits = run(discriminator, torch.rand(8, 1, 28, 28), torch.arange(8))
    logits.mean().backward()
    optimizer.step()

    assert torch.isfinite(logits).all()
    assert first.parametrizations.weight.original.grad.abs().sum() > 0
    assert not torch.equal(first.parametrizations.weight.original, before)


def test_spectral_norm_off_keeps_mlp_keys() -> None:
    keys = list(Discriminator(hidden_dim=8).state_dict())
    assert keys == [
        "disc.0.0.weight",
        "disc.0.0.bias",
        "disc.1.0.weight",
        "disc.1.0.bias",
        "disc.2.0.weight",
        "disc.2.0.bias",
        "disc.3.weight",
        "disc.3.bias",
    ]


def test_spectral_norm_off_keeps_dcgan_keys() -> None:
    keys = list(DCGANDiscriminator(width=4).state_dict())
    assert keys == [
        "features.0.weight",
        "features.0.bias",
        "features.2.weight",
        "features.3.weight",
        "features.3.bias",
        "features.3.running_mean",
        "features.3.running_var",
        "features.3.num_batches_tracked",
        "classify.weight",
        "classify.bias",
    ]


@pytest.mark.parametrize(("cls", "kwargs"), SPECTRAL_NORM_DISCRIMINATORS)
def test_spectral_norm_off_wraps_nothing(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    discriminator = cls(**kwargs)
    assert discriminator.spectral_norm is False
    assert wrapped_layers(discriminator) == []
    assert not any("parametrizations" in key for key in discriminator.state_dict())


def test_conditional_body_keys_match_unconditional() -> None:
    conditional = ConditionalDCGANDiscriminator(width=4)
    unconditional = DCGANDiscriminator(width=4, channels=2)
    expected = ["label_embedding.weight"] + [f"body.{key}" for key in unconditional.state_dict()]
    assert list(conditional.state_dict()) == expected


@pytest.mark.parametrize(("cls", "kwargs"), SPECTRAL_NORM_DISCRIMINATORS)
def test_spectral_norm_adds_power_iteration_keys(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    keys = set(cls(**kwargs, spectral_norm=True).state_dict())
    for suffix in ("parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v"):
        assert any(key.endswith(suffix) for key in keys), suffix


# Checkpoints

ROUND_TRIP_NETWORKS = [
    pytest.param(ConditionalGenerator, {"z_dim": Z_DIM, "num_classes": 4, "embed_dim": 3, "hidden_dim": 8}, id="mlp_g"),
    pytest.param(ConditionalDCGANGenerator, {"z_dim": Z_DIM, "num_classes": 4, "embed_dim": 3, "width": 4}, id="dcgan_g"),
    pytest.param(ConditionalDiscriminator, {"num_classes": 4, "im_dim": 784, "hidden_dim": 8}, id="mlp_d"),
    pytest.param(ConditionalDCGANDiscriminator, {"num_classes": 4, "width": 4}, id="dcgan_d"),
    pytest.param(ConditionalDiscriminator, {"num_classes": 4, "hidden_dim": 8, "spectral_norm": True}, id="mlp_d_sn"),
    pytest.param(
        ConditionalDCGANDiscriminator,
        {"num_classes": 4, "width": 4, "batch_norm": False, "spectral_norm": True},
        id="dcgan_d_sn",
    ),
    pytest.param(Discriminator, {"hidden_dim": 8, "spectral_norm": True}, id="unconditional_mlp_d_sn"),
    pytest.param(DCGANDiscriminator, {"width": 4, "spectral_norm": True}, id="unconditional_dcgan_d_sn"),
]


@pytest.mark.parametrize(("cls", "kwargs"), ROUND_TRIP_NETWORKS)
def test_checkpoint_round_trip(cls: type[nn.Module], kwargs: dict[str, Any]) -> None:
    network = cls(**kwargs)
    labels = torch.tensor([0, 3, 1, 2])
    inputs = inputs_for(network, 4)
    # Training passes move the BatchNorm statistics and the power-iteration vectors from their start.
    for _ in range(2):
        run(network, inputs, labels)

    spec = network_spec(network)
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    buffer.seek(0)
    rebuilt = build_network(spec)
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))

    assert spec["class_path"] == f"{cls.__module__}.{cls.__name__}"
    assert set(spec["init_args"]) == set(inspect.signature(cls).parameters)
    for name, value in kwargs.items():
        assert spec["init_args"][name] == value
    assert network_spec(rebuilt) == spec
    network.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(run(rebuilt, inputs, labels), run(network, inputs, labels))
