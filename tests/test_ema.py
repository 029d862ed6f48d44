"""BatchNorm statistics of the generator's moving average."""

import torch
from torch import nn

from gan_lightning.conditional import ConditionalGenerator
from gan_lightning.ema import GeneratorEMA

Z_DIM = 4


class LinearBatchNormGenerator(nn.Module):
    """Noise -> Linear -> BatchNorm -> image. With standard normal noise the BatchNorm input of unit i
    has mean bias[i] and variance sum_j weight[i, j] ** 2, so measured statistics can be checked exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.linear = nn.Linear(Z_DIM, 6)
        self.norm = nn.BatchNorm1d(6)
        self.out = nn.Linear(6, 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.norm(self.linear(z))))


def _train_statistics(generator: nn.Module, seed: int) -> None:
    """Give generator new random weights and the running statistics that training would give them."""
    torch.manual_seed(seed)
    for layer in (generator.linear, generator.out):
        layer.reset_parameters()
    generator.train()
    with torch.no_grad():
        for _ in range(100):
            generator(torch.randn(256, Z_DIM))


def _average_of_two(decay: float = 0.5) -> tuple[GeneratorEMA, LinearBatchNormGenerator]:
    """Return an average of two unrelated weight sets, and the generator holding the second one.

    Twenty updates alternate between the two sets. Past the ramp each update has decay 0.5, so the
    average ends near one third of the first set plus two thirds of the second.
    """
    generator = LinearBatchNormGenerator()
    states = []
    for seed in (1, 2):
        _train_statistics(generator, seed)
        states.append({key: value.clone() for key, value in generator.state_dict().items()})
    ema = GeneratorEMA(generator, decay)
    for update in range(20):
        generator.load_state_dict(states[update % 2])
        ema.update(generator)
    return ema, generator


def test_statistics_fit_averaged_weights() -> None:
    ema, _ = _average_of_two()
    averaged_variance = ema.module.norm.running_var.clone()

    module = ema.averaged()

    expected_mean = module.linear.bias
    expected_variance = (module.linear.weight**2).sum(dim=1)
    assert torch.allclose(module.norm.running_mean, expected_mean, atol=0.05)
    assert torch.allclose(module.norm.running_var, expected_variance, rtol=0.1)
    # Averaging two unrelated weight sets shrinks the activations, which the averaged variances
    # miss: they are well above what the averaged weights produce.
    assert averaged_variance.sum() > 1.5 * expected_variance.sum()


def test_state_dict_saves_measured_statistics() -> None:
    ema, _ = _average_of_two()

    state = ema.state_dict()

    expected_variance = (ema.module.linear.weight**2).sum(dim=1)
    assert torch.allclose(state["module.norm.running_var"], expected_variance, rtol=0.1)
    reloaded = GeneratorEMA(LinearBatchNormGenerator(), 0.5)
    reloaded.load_state_dict(state)
    assert torch.equal(reloaded.module.norm.running_var, state["module.norm.running_var"])


def test_measurement_cached_until_update() -> None:
    ema, generator = _average_of_two()
    calls = []
    ema.module.norm.register_forward_hook(lambda *args: calls.append(1))

    ema.averaged()
    first = len(calls)
    ema.averaged()
    ema.state_dict()
    repeated = len(calls)
    ema.update(generator)
    ema.averaged()

    assert first > 0
    assert repeated == first
    assert len(calls) == 2 * first


def test_measurement_keeps_random_state_and_mode() -> None:
    ema, _ = _average_of_two()
    random_state = torch.get_rng_state()

    ema.module.eval()
    ema.averaged()

    assert torch.equal(torch.get_rng_state(), random_state)
    assert not ema.module.training
    assert ema.module.norm.momentum == 0.1

    ema.measure_batch_norm()
    ema.module.train()
    ema.measure_batch_norm()
    assert ema.module.training


def test_measurement_repeats_exactly() -> None:
    first, _ = _average_of_two()
    second, _ = _average_of_two()

    assert torch.equal(first.averaged().norm.running_var, second.averaged().norm.running_var)


def test_conditional_statistics_measured() -> None:
    torch.manual_seed(0)
    generator = ConditionalGenerator(z_dim=Z_DIM, num_classes=3, embed_dim=2, hidden_dim=8)
    ema = GeneratorEMA(generator, 0.9)

    norms = [layer for layer in ema.averaged().modules() if isinstance(layer, nn.BatchNorm1d)]

    assert norms
    for layer in norms:
        # Fresh layers hold mean 0 and variance 1; measured ones hold the statistics of the noise.
        assert not torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))
        assert not torch.equal(layer.running_var, torch.ones_like(layer.running_var))


def test_no_batch_norm_left_alone() -> None:
    ema = GeneratorEMA(nn.Linear(3, 2), 0.5)
    before = {key: value.clone() for key, value in ema.module.state_dict().items()}

    module = ema.averaged()

    assert all(torch.equal(module.state_dict()[key], value) for key, value in before.items())
