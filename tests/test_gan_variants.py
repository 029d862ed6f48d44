"""Losses beyond BCE, several D steps per G step, the moving average of the generator, class-conditional training."""

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from gan_lightning import GAN, Discriminator, Generator, MNISTDataModule
from gan_lightning.callbacks import ImageGrids, LossPlot
from gan_lightning.checkpoint import EMA_PREFIX, load_generator
from gan_lightning.conditional import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
from gan_lightning.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lightning.ema import GeneratorEMA
from gan_lightning.idx import DatasetError
from gan_lightning.losses import LOSSES, discriminator_loss, generator_loss, gradient_penalty

Z_DIM = 4
HIDDEN_DIM = 8
BATCH_SIZE = 64


def make_gan(**hparams: Any) -> GAN:
    generator = Generator(z_dim=Z_DIM, hidden_dim=HIDDEN_DIM)
    discriminator = Discriminator(hidden_dim=HIDDEN_DIM)
    return GAN(generator, discriminator, **{"eval_metrics": False, "display_step": 100, **hparams})


def fit(
    model: GAN, mnist_dir: Path, tmp_path: Path, max_steps: int, callbacks: list[Callback] | None = None, ckpt_path: Path | None = None
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks or [],
        default_root_dir=str(tmp_path),
    )
    datamodule = MNISTDataModule(data_dir=str(mnist_dir), batch_size=BATCH_SIZE, download=False)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


class GeneratorWeights(Callback):
    """Keep a copy of the generator's weights and buffers after every batch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.states.append({key: value.detach().clone() for key, value in pl_module.generator.state_dict().items()})


# Losses


def test_losses_match_their_formulas() -> None:
    d_real = torch.tensor([[2.0], [-0.5]])
    d_fake = torch.tensor([[0.5], [-3.0]])

    assert discriminator_loss("hinge", d_real, d_fake).item() == pytest.approx((0 + 1.5) / 2 + (1.5 + 0) / 2)
    assert generator_loss("hinge", d_fake).item() == pytest.approx(1.25)
    assert discriminator_loss("lsgan", d_real, d_fake).item() == pytest.approx(((1 + 2.25) / 2 + (0.25 + 9) / 2) / 2)
    assert generator_loss("lsgan", d_fake).item() == pytest.approx((0.25 + 16) / 2 / 2)
    assert discriminator_loss("wgan_gp", d_real, d_fake).item() == pytest.approx(-1.25 - 0.75)
    assert generator_loss("wgan_gp", d_fake).item() == pytest.approx(1.25)
    bce = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(0.5)) + math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3.0))) / 4
    assert discriminator_loss("bce", d_real, d_fake).item() == pytest.approx(bce)


def test_unknown_loss_is_named() -> None:
    with pytest.raises(ValueError, match="'wasserstein'.*--model.loss"):
        discriminator_loss("wasserstein", torch.zeros(1, 1), torch.zeros(1, 1))


def test_gradient_penalty_of_a_linear_critic() -> None:
    # The gradient of x -> w . x is w everywhere, so the penalty is (|w| - 1)^2 wherever it is taken.
    weight = torch.tensor([3.0, 4.0], requires_grad=True)
    real, fake = torch.randn(8, 2), torch.randn(8, 2)

    penalty = gradient_penalty(lambda x: x @ weight, real, fake)
    penalty.backward()

    assert penalty.item() == pytest.approx(16.0)
    # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|: the penalty trains the critic.
    assert torch.allclose(weight.grad, 2 * 4 * weight.detach() / 5)


def test_gradient_penalty_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 784\)"):
        gradient_penalty(lambda x: x.sum(1), torch.zeros(2, 1, 28, 28), torch.zeros(2, 784))


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains(loss: str, mnist_dir: Path, tmp_path: Path) -> None:
    generator = DCGANGenerator(z_dim=Z_DIM, width=4)
    discriminator = DCGANDiscriminator(width=4, batch_norm=loss != "wgan_gp")
    model = GAN(generator, discriminator, loss=loss, eval_metrics=False, display_step=100)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    fit(model, mnist_dir, tmp_path, max_steps=3)

    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    # Hinge's gradient on D's last bias is zero while every score is inside the margin, so the
    # check looks at the weights.
    weights = {name for name in before if name.endswith("weight")}
    assert weights <= changed
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_wgan_gp_rejects_batch_norm() -> None:
    with pytest.raises(ValueError, match="batch_norm false"):
        GAN(DCGANGenerator(z_dim=Z_DIM, width=4), DCGANDiscriminator(width=4), loss="wgan_gp")


def test_wgan_gp_rejects_compile() -> None:
    with pytest.raises(ValueError, match="--model.compile false"):
        GAN(DCGANGenerator(z_dim=Z_DIM, width=4), DCGANDiscriminator(width=4, batch_norm=False), loss="wgan_gp", compile=True)


# Several D steps per G step


def test_n_critic_spaces_g_steps(mnist_dir: Path, tmp_path: Path) -> None:
    model = make_gan(n_critic=3)
    weights = GeneratorWeights()
    initial = {key: value.clone() for key, value in model.generator.state_dict().items()}

    trainer = fit(model, mnist_dir, tmp_path, max_steps=7, callbacks=[weights])

    opt_g, opt_d = (optimizer.optimizer for optimizer in model.optimizers())
    assert trainer.global_step == 7
    assert next(iter(opt_d.state.values()))["step"].item() == 7
    assert next(iter(opt_g.state.values()))["step"].item() == 2
    changed = [
        not torch.equal(state["gen.0.0.weight"], previous["gen.0.0.weight"])
        for previous, state in zip([initial, *weights.states], weights.states)
    ]
    assert changed == [False, False, True, False, False, True, False]


def test_loss_plot_skips_missing_g_loss(mnist_dir: Path, tmp_path: Path) -> None:
    plot = LossPlot(dirpath=str(tmp_path))
    fit(make_gan(n_critic=2), mnist_dir, tmp_path, max_steps=4, callbacks=[plot])

    history = torch.cat(plot.history)
    assert history[:, 0].tolist() == [1, 2, 3, 4]
    assert history[:, 1].isfinite().all()
    assert history[:, 2].isfinite().tolist() == [False, True, False, True]
    assert (tmp_path / "losses.png").stat().st_size > 0


@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_n_critic_rejects_invalid_values(value: float) -> None:
    with pytest.raises(ValueError, match=f"n_critic.*{value}"):
        make_gan(n_critic=value)


# Moving average of the generator


def test_ema_follows_the_formula(mnist_dir: Path, tmp_path: Path) -> None:
    decay = 0.8
    model = make_gan(ema_decay=decay)
    weights = GeneratorWeights()
    fit(model, mnist_dir, tmp_path, max_steps=5, callbacks=[weights])

    # The first G step copies the weights; each later one, n = 1, 2, ..., moves the average towards
    # them with decay min(0.8, (1 + n) / (10 + n)): 2/11, 3/12, 4/13, 5/14.
    expected = {key: value.float() for key, value in weights.states[0].items()}
    for n, state in enumerate(weights.states[1:], start=1):
        step_decay = min(decay, (1 + n) / (10 + n))
        expected = {key: step_decay * expected[key] + (1 - step_decay) * state[key].float() for key in expected}
    averaged = model.generator_ema.module.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.allclose(averaged[key].float(), value, atol=1e-6), key
    assert model.generator_ema.num_updates.item() == 5
    assert GeneratorEMA(nn.Linear(1, 1), 0.999).decay_at(10_000) == 0.999
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    assert not torch.equal(averaged["gen.0.0.weight"], model.generator.state_dict()["gen.0.0.weight"])


def test_ema_resumes_after_loading() -> None:
    generator = nn.Linear(3, 2)
    states = [{key: value + step for key, value in generator.state_dict().items()} for step in range(3)]
    straight = GeneratorEMA(generator, decay=0.5)
    for state in states:
        generator.load_state_dict(state)
        straight.update(generator)

    partial = GeneratorEMA(nn.Linear(3, 2), decay=0.5)
    for state in states[:2]:
        generator.load_state_dict(state)
        partial.update(generator)
    reloaded = GeneratorEMA(nn.Linear(3, 2), decay=0.5)
    reloaded.load_state_dict(partial.state_dict())
    generator.load_state_dict(states[2])
    reloaded.update(generator)

    assert reloaded.num_updates.item() == 3
    assert torch.equal(reloaded.module.weight, straight.module.weight)
    assert torch.equal(reloaded.module.bias, straight.module.bias)


def test_ema_checkpointed_and_sampled(mnist_dir: Path, tmp_path: Path) -> None:
    model = make_gan(ema_decay=0.9)
    trainer = fit(model, mnist_dir, tmp_path, max_steps=3)
    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)

    z = torch.randn(6, Z_DIM)
    with torch.no_grad():
        averaged = model.generator_ema.module.eval()(z)
        trained = model.generator.eval()(z)
        assert torch.allclose(load_generator(path)(z), averaged)
        assert torch.allclose(load_generator(path, ema=False)(z), trained)
        assert torch.allclose(model(z), averaged)
    assert any(key.startswith(EMA_PREFIX) for key in torch.load(path, weights_only=True)["state_dict"])


def test_grids_draw_the_moving_average(mnist_dir: Path, tmp_path: Path) -> None:
    model = make_gan(ema_decay=0.5)
    trainer = fit(model, mnist_dir, tmp_path, max_steps=2)

    grid = ImageGrids(dirpath=str(tmp_path)).fake_grid(trainer, model)

    with torch.no_grad():
        expected = ImageGrids(dirpath=str(tmp_path)).fake_grid(trainer, _with_generator(model, model.generator_ema.module))
        raw = ImageGrids(dirpath=str(tmp_path)).fake_grid(trainer, _with_generator(model, model.generator))
    assert torch.equal(grid, expected)
    assert not torch.equal(grid, raw)


def _with_generator(model: GAN, generator: nn.Module) -> Any:
    """A stand-in module whose grids come from ``generator`` alone."""

    class Stub:
        sampling_generator = generator
        fixed_z = model.fixed_z
        fixed_labels = None

    return Stub()


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5])
def test_ema_decay_rejects_invalid_values(value: float) -> None:
    with pytest.raises(ValueError, match=f"ema_decay must be in \\(0, 1\\), got {value}"):
        make_gan(ema_decay=value)


# Class-conditional training


def make_conditional_gan(**hparams: Any) -> GAN:
    generator = ConditionalDCGANGenerator(z_dim=Z_DIM, num_classes=10, embed_dim=4, width=4)
    discriminator = ConditionalDCGANDiscriminator(num_classes=10, width=4)
    return GAN(generator, discriminator, **{"eval_metrics": False, "display_step": 100, **hparams})


class LabelSpy(Callback):
    """Record the labels that G and D receive during training batches."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []
        self.batch_labels: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name in ("generator", "discriminator"):
            getattr(pl_module, name).register_forward_pre_hook(
                lambda module, args, name=name: self.calls.append((name, args[1].clone()))
            )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.calls.clear()
        self.batch_labels.append(batch[1].clone())


def test_conditional_networks_get_real_labels(mnist_dir: Path, tmp_path: Path) -> None:
    spy = LabelSpy()
    fit(make_conditional_gan(), mnist_dir, tmp_path, max_steps=1, callbacks=[spy])

    # G for the D step, D on reals, D on fakes, G again for the G step, D on those fakes.
    assert [name for name, _ in spy.calls] == ["generator", "discriminator", "discriminator", "generator", "discriminator"]
    for _, labels in spy.calls:
        assert torch.equal(labels, spy.batch_labels[0])


def test_conditional_validation_logs_label_accuracy(mnist_dir: Path, tmp_path: Path) -> None:
    model = make_conditional_gan(eval_metrics=True, num_eval_samples=40)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, val_check_interval=2, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(mnist_dir), batch_size=BATCH_SIZE, download=False))

    accuracy = trainer.callback_metrics["val/label_accuracy"].item()
    assert 0.0 <= accuracy <= 1.0
    assert model.fixed_labels.tolist() == [i % 10 for i in range(25)]


def test_conditional_pair_mismatch_rejected() -> None:
    generator = ConditionalDCGANGenerator(z_dim=Z_DIM, num_classes=10, width=4)
    with pytest.raises(ValueError, match="conditioned on 10 classes but the discriminator on 0"):
        GAN(generator, DCGANDiscriminator(width=4))


def test_too_few_classes_rejected(mnist_dir: Path, tmp_path: Path) -> None:
    generator = ConditionalDCGANGenerator(z_dim=Z_DIM, num_classes=5, width=4)
    model = GAN(generator, ConditionalDCGANDiscriminator(num_classes=5, width=4), eval_metrics=False)
    before = [p.detach().clone() for p in model.parameters()]

    with pytest.raises(DatasetError, match="10 classes but the networks are conditioned on 5.*num_classes"):
        fit(model, mnist_dir, tmp_path, max_steps=1)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
