"""GAN losses against values computed by hand with tiny networks whose logits are known."""

import math

import pytest
import torch
from torch import nn

from gan_lightning import get_disc_loss, get_gen_loss
from gan_lightning.losses import bce_discriminator_loss, bce_generator_loss

Z_DIM = 3

# The discriminator is the linear map x -> x0 - x1 + 1 on two-pixel images.
DISC_WEIGHT = [[1.0, -1.0]]
DISC_BIAS = [1.0]
# The constant generator always draws the image (0.2, 0.7), whose logit is 0.2 - 0.7 + 1 = 0.5.
FAKE_IMAGE = [0.2, 0.7]
FAKE_LOGIT = 0.5
REAL = [[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]
REAL_LOGITS = [2.0, 0.0, 3.0]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# BCE with logits: -log(sigmoid(x)) = softplus(-x) against ones, softplus(x) against zeros.
REAL_LOSS = sum(softplus(-logit) for logit in REAL_LOGITS) / len(REAL_LOGITS)
FAKE_LOSS = softplus(FAKE_LOGIT)
DISC_LOSS = (REAL_LOSS + FAKE_LOSS) / 2
GEN_LOSS = softplus(-FAKE_LOGIT)


def make_discriminator() -> nn.Linear:
    discriminator = nn.Linear(2, 1)
    with torch.no_grad():
        discriminator.weight.copy_(torch.tensor(DISC_WEIGHT))
        discriminator.bias.copy_(torch.tensor(DISC_BIAS))
    return discriminator


def make_constant_generator() -> nn.Linear:
    """Return a generator whose output ignores the noise: zero weights and the fake image as bias."""
    generator = nn.Linear(Z_DIM, 2)
    with torch.no_grad():
        generator.weight.zero_()
        generator.bias.copy_(torch.tensor(FAKE_IMAGE))
    return generator


def make_projection_generator() -> nn.Linear:
    """Return a generator that outputs the first two noise values: fake = z[:, :2]."""
    generator = nn.Linear(Z_DIM, 2)
    with torch.no_grad():
        generator.weight.copy_(torch.eye(2, Z_DIM))
        generator.bias.zero_()
    return generator


def test_disc_loss_hand_value() -> None:
    real = torch.tensor(REAL)
    loss = get_disc_loss(make_constant_generator(), make_discriminator(), nn.BCEWithLogitsLoss(), real, 5, Z_DIM, "cpu")
    assert loss.item() == pytest.approx(DISC_LOSS, abs=1e-6)


def test_disc_loss_fake_count_independent() -> None:
    # Each term is a mean over its own images, so the number of fakes does not weight the loss.
    real = torch.tensor(REAL)
    criterion = nn.BCEWithLogitsLoss()
    generator, discriminator = make_constant_generator(), make_discriminator()

    one_fake = get_disc_loss(generator, discriminator, criterion, real, 1, Z_DIM, "cpu")
    many_fakes = get_disc_loss(generator, discriminator, criterion, real, 40, Z_DIM, "cpu")

    assert one_fake.item() == pytest.approx(many_fakes.item(), abs=1e-6)


def test_disc_loss_seeded_noise() -> None:
    real = torch.tensor(REAL)
    num_images = 4
    # Built before seeding, because initializing the layers draws random numbers too.
    generator, discriminator = make_projection_generator(), make_discriminator()

    torch.manual_seed(11)
    loss = get_disc_loss(generator, discriminator, nn.BCEWithLogitsLoss(), real, num_images, Z_DIM, "cpu")

    torch.manual_seed(11)
    z = torch.randn(num_images, Z_DIM).tolist()
    fake_logits = [row[0] - row[1] + 1 for row in z]
    fake_loss = sum(softplus(logit) for logit in fake_logits) / num_images
    assert loss.item() == pytest.approx((REAL_LOSS + fake_loss) / 2, abs=1e-6)


def test_disc_loss_detaches_fakes() -> None:
    generator, discriminator = make_projection_generator(), make_discriminator()

    loss = get_disc_loss(generator, discriminator, nn.BCEWithLogitsLoss(), torch.tensor(REAL), 4, Z_DIM, "cpu")
    loss.backward()

    assert generator.weight.grad is None
    assert generator.bias.grad is None
    assert discriminator.weight.grad is not None
    assert discriminator.weight.grad.abs().sum().item() > 0


def test_disc_loss_gradient_hand_value() -> None:
    discriminator = make_discriminator()
    loss = get_disc_loss(make_constant_generator(), discriminator, nn.BCEWithLogitsLoss(), torch.tensor(REAL), 5, Z_DIM, "cpu")
    loss.backward()

    # The derivative is -sigmoid(-x) for each real logit x and sigmoid(x) for each fake one.
    # Each term is a mean, and the loss halves their sum.
    sigmoid = torch.sigmoid
    real_grad = -sigmoid(-torch.tensor(REAL_LOGITS)).mean()
    fake_grad = sigmoid(torch.tensor(FAKE_LOGIT))
    assert discriminator.bias.grad.item() == pytest.approx(((real_grad + fake_grad) / 2).item(), abs=1e-6)


def test_gen_loss_hand_value() -> None:
    loss = get_gen_loss(make_constant_generator(), make_discriminator(), nn.BCEWithLogitsLoss(), 6, Z_DIM, "cpu")
    assert loss.item() == pytest.approx(GEN_LOSS, abs=1e-6)


def test_gen_loss_seeded_noise() -> None:
    num_images = 5
    generator, discriminator = make_projection_generator(), make_discriminator()

    torch.manual_seed(3)
    loss = get_gen_loss(generator, discriminator, nn.BCEWithLogitsLoss(), num_images, Z_DIM, "cpu")

    torch.manual_seed(3)
    z = torch.randn(num_images, Z_DIM).tolist()
    expected = sum(softplus(-(row[0] - row[1] + 1)) for row in z) / num_images
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gen_loss_gradient_hand_value() -> None:
    generator = make_constant_generator()
    loss = get_gen_loss(generator, make_discriminator(), nn.BCEWithLogitsLoss(), 6, Z_DIM, "cpu")
    loss.backward()

    # dL/d(fake image) = -sigmoid(-logit) * (1, -1) for every fake, and the bias is the image.
    slope = -1 / (1 + math.exp(FAKE_LOGIT))
    assert generator.bias.grad.tolist() == pytest.approx([slope, -slope], abs=1e-6)


def test_gen_loss_fresh_noise() -> None:
    # The generator loss draws its own noise on every call.
    generator, discriminator = make_projection_generator(), make_discriminator()
    criterion = nn.BCEWithLogitsLoss()

    torch.manual_seed(0)
    first = get_gen_loss(generator, discriminator, criterion, 4, Z_DIM, "cpu")
    second = get_gen_loss(generator, discriminator, criterion, 4, Z_DIM, "cpu")

    assert first.item() != second.item()


def test_bce_discriminator_loss_hand_value() -> None:
    d_real = torch.tensor(REAL_LOGITS).unsqueeze(1)
    d_fake = torch.full((5, 1), FAKE_LOGIT)
    assert bce_discriminator_loss(d_real, d_fake).item() == pytest.approx(DISC_LOSS, abs=1e-6)


def test_bce_discriminator_loss_flat_logits() -> None:
    d_real = torch.tensor(REAL_LOGITS)
    d_fake = torch.full((5,), FAKE_LOGIT)
    assert bce_discriminator_loss(d_real, d_fake).item() == pytest.approx(DISC_LOSS, abs=1e-6)


def test_bce_generator_loss_hand_value() -> None:
    d_fake = torch.full((6, 1), FAKE_LOGIT)
    assert bce_generator_loss(d_fake).item() == pytest.approx(GEN_LOSS, abs=1e-6)


def test_bce_losses_match_classic_functions() -> None:
    generator, discriminator = make_projection_generator(), make_discriminator()
    criterion = nn.BCEWithLogitsLoss()
    real = torch.tensor(REAL)

    torch.manual_seed(21)
    classic_disc = get_disc_loss(generator, discriminator, criterion, real, 4, Z_DIM, "cpu")
    classic_gen = get_gen_loss(generator, discriminator, criterion, 4, Z_DIM, "cpu")

    torch.manual_seed(21)
    d_fake = discriminator(generator(torch.randn(4, Z_DIM)))
    d_fake_fresh = discriminator(generator(torch.randn(4, Z_DIM)))
    assert bce_discriminator_loss(discriminator(real), d_fake).item() == pytest.approx(classic_disc.item(), abs=1e-6)
    assert bce_generator_loss(d_fake_fresh).item() == pytest.approx(classic_gen.item(), abs=1e-6)


def test_bce_losses_stable_for_large_logits() -> None:
    # With a Sigmoid and plain BCELoss these losses would stop at 100, where BCELoss clamps the log.
    assert bce_generator_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)
    assert bce_discriminator_loss(torch.tensor([-300.0]), torch.tensor([300.0])).item() == pytest.approx(300.0)
