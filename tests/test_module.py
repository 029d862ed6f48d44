"""The GAN LightningModule trained through a real Trainer with tiny networks on tiny data."""

import copy
import logging
import re
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch import nn

from gan_lightning import GAN, Discriminator, Generator, MNISTDataModule
from gan_lightning.callbacks import ImageGrids
from gan_lightning.checkpoint import NETWORKS_KEY, CheckpointError
from gan_lightning.idx import DatasetError

Z_DIM = 4
HIDDEN_DIM = 8
# 256 training images in batches of 64: four batches per epoch, so runs of more than four
# steps cross an epoch boundary.
BATCH_SIZE = 64
HPARAMS = {"g_lr": 1e-3, "d_lr": 3e-3, "g_betas": (0.5, 0.99), "d_betas": (0.3, 0.9)}
STEP_METRICS = ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake")
WINDOW_MESSAGE = re.compile(
    r"step (?P<step>\d+): mean d_loss (?P<d_mean>[\d.]+), mean g_loss (?P<g_mean>[\d.]+) over the last 3 batches"
)


def make_gan(hidden_dim: int = HIDDEN_DIM, im_dim: int = 784, **hparams: Any) -> GAN:
    generator = Generator(z_dim=Z_DIM, im_dim=im_dim, hidden_dim=hidden_dim)
    discriminator = Discriminator(im_dim=im_dim, hidden_dim=hidden_dim)
    # A small validation sample keeps each epoch end fast; the metrics have their own tests.
    return GAN(generator, discriminator, **{"num_eval_samples": 200, **hparams})


def make_datamodule(data_dir: Path) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_dir), batch_size=BATCH_SIZE, download=False)


def make_trainer(root_dir: Path, max_steps: int, callbacks: list[Callback] | None = None, **options: Any) -> L.Trainer:
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": max_steps,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": callbacks or [],
        "default_root_dir": str(root_dir),
    }
    settings.update(options)
    return L.Trainer(**settings)


class MemoryLogger(Logger):
    """Logger that keeps every ``log_metrics`` call as a (step, metrics) pair."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.history.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def values(self, key: str) -> dict[int, float]:
        """Return {batch: value} of every logged value of ``key``, with batches counted from 1.

        Lightning logs the metrics of the k-th training batch at logger step k - 1.
        """
        return {step + 1: metrics[key] for step, metrics in self.history if key in metrics}


class BatchRecorder(Callback):
    """Record every training batch's images and epoch, and the global step after each batch."""

    def __init__(self) -> None:
        self.reals: list[torch.Tensor] = []
        self.epochs: list[int] = []
        self.global_steps: list[int] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.reals.append(batch[0].clone())
        self.epochs.append(trainer.current_epoch)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.global_steps.append(trainer.global_step)


class GeneratorCallCounter(Callback):
    """Count the generator's forward calls inside each training batch."""

    def __init__(self) -> None:
        self.calls = 0
        self.calls_per_batch: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.generator.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.calls += 1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.calls = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.calls_per_batch.append(self.calls)


class DiscriminatorStepSpy(Callback):
    """Copy the discriminator's weights and gradients right after each of its optimizer steps."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.discriminator = pl_module.discriminator
        first_parameter = next(self.discriminator.parameters())
        for optimizer in trainer.optimizers:
            if any(p is first_parameter for group in optimizer.param_groups for p in group["params"]):
                optimizer.register_step_post_hook(self._copy)

    def _copy(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        named = dict(self.discriminator.named_parameters())
        self.weights = {name: p.detach().clone() for name, p in named.items()}
        self.grads = {name: p.grad.clone() for name, p in named.items()}


def train_reference(
    generator: nn.Module,
    discriminator: nn.Module,
    reals: list[torch.Tensor],
    seed: int,
    reuse_fakes: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train the networks in place with a plain loop and return the last step's gradients.

    The loop draws noise in the order of ``GAN.training_step`` (D's noise, then G's), so with
    the same seed it draws the same noise. Returns (D's gradients of d_loss, G's gradients of g_loss).
    """
    opt_g = torch.optim.Adam(generator.parameters(), lr=HPARAMS["g_lr"], betas=HPARAMS["g_betas"], fused=True)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=HPARAMS["d_lr"], betas=HPARAMS["d_betas"], fused=True)
    criterion = nn.BCEWithLogitsLoss()
    torch.manual_seed(seed)

    for real in reals:
        ones = torch.ones(len(real), 1)
        zeros = torch.zeros(len(real), 1)

        # D update: reals against ones, detached fakes against zeros, mean of the two losses.
        z = torch.randn(len(real), Z_DIM)
        if reuse_fakes:
            fake = generator(z)
        else:
            with torch.no_grad():
                fake = generator(z)
        d_loss = (criterion(discriminator(real), ones) + criterion(discriminator(fake.detach()), zeros)) / 2
        opt_d.zero_grad()
        d_loss.backward()
        d_grads = {name: p.grad.clone() for name, p in discriminator.named_parameters()}
        opt_d.step()

        # G update: fakes through the updated D against ones, with D frozen.
        if not reuse_fakes:
            fake = generator(torch.randn(len(real), Z_DIM))
        discriminator.requires_grad_(False)
        g_loss = criterion(discriminator(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        g_grads = {name: p.grad.clone() for name, p in generator.named_parameters()}
        opt_g.step()
        discriminator.requires_grad_(True)

    return d_grads, g_grads


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=1e-6, msg=lambda text, name=name: f"{name}: {text}")


@pytest.mark.parametrize("reuse_fakes", [False, True])
def test_training_matches_reference_loop(tmp_path: Path, mnist_dir: Path, reuse_fakes: bool) -> None:
    model = make_gan(**HPARAMS, reuse_fakes=reuse_fakes, display_step=100)
    generator = copy.deepcopy(model.generator)
    discriminator = copy.deepcopy(model.discriminator)
    recorder = BatchRecorder()
    trainer = make_trainer(tmp_path, max_steps=6, callbacks=[recorder])

    torch.manual_seed(1234)
    trainer.fit(model, datamodule=make_datamodule(mnist_dir))
    train_reference(generator, discriminator, recorder.reals, seed=1234, reuse_fakes=reuse_fakes)

    assert len(recorder.reals) == 6
    # The state dicts include BatchNorm's running statistics, which count generator forwards.
    assert_same_tensors(model.generator.state_dict(), generator.state_dict())
    assert_same_tensors(model.discriminator.state_dict(), discriminator.state_dict())


def test_step_keeps_losses_apart(tmp_path: Path, mnist_dir: Path) -> None:
    model = make_gan(**HPARAMS, display_step=100)
    generator = copy.deepcopy(model.generator)
    discriminator = copy.deepcopy(model.discriminator)
    recorder = BatchRecorder()
    spy = DiscriminatorStepSpy()
    trainer = make_trainer(tmp_path, max_steps=2, callbacks=[recorder, spy])

    torch.manual_seed(99)
    trainer.fit(model, datamodule=make_datamodule(mnist_dir))
    d_grads, g_grads = train_reference(generator, discriminator, recorder.reals, seed=99)

    # D's gradients are those of d_loss alone, so G's backward pass added nothing to them.
    final_d_grads = {name: p.grad for name, p in model.discriminator.named_parameters()}
    assert_same_tensors(final_d_grads, d_grads)
    assert_same_tensors(final_d_grads, spy.grads)
    # The G update left D as D's own step made it.
    assert_same_tensors(dict(model.discriminator.named_parameters()), spy.weights)
    # G's gradients are those of g_loss alone, because d_loss used detached fakes.
    final_g_grads = {name: p.grad for name, p in model.generator.named_parameters()}
    assert_same_tensors(final_g_grads, g_grads)


def test_optimizers_hold_own_networks() -> None:
    model = make_gan(**HPARAMS)
    opt_g, opt_d = model.configure_optimizers()

    assert [p for group in opt_g.param_groups for p in group["params"]] == list(model.generator.parameters())
    assert [p for group in opt_d.param_groups for p in group["params"]] == list(model.discriminator.parameters())
    assert isinstance(opt_g, torch.optim.Adam)
    assert isinstance(opt_d, torch.optim.Adam)
    # The fused kernel, one call per update instead of a Python loop over the tensors.
    assert opt_g.defaults["fused"] and opt_d.defaults["fused"]
    assert opt_g.defaults["lr"] == HPARAMS["g_lr"]
    assert opt_d.defaults["lr"] == HPARAMS["d_lr"]
    assert tuple(opt_g.defaults["betas"]) == HPARAMS["g_betas"]
    assert tuple(opt_d.defaults["betas"]) == HPARAMS["d_betas"]


@pytest.fixture
def seven_step_run(tmp_path: Path, mnist_dir: Path, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """Train 7 steps with display_step 3, periodic checkpoints every 2 steps and a memory logger."""
    recorder = BatchRecorder()
    logger = MemoryLogger()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=2, save_top_k=-1)
    trainer = make_trainer(
        tmp_path / "run",
        max_steps=7,
        callbacks=[recorder, ImageGrids(), checkpoints],
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=True,
    )
    with caplog.at_level(logging.INFO):
        trainer.fit(make_gan(display_step=3), datamodule=make_datamodule(mnist_dir))

    window_messages = []
    for record in caplog.records:
        match = WINDOW_MESSAGE.fullmatch(record.getMessage())
        if match:
            window_messages.append((int(match["step"]), float(match["d_mean"]), float(match["g_mean"])))
    return {
        "trainer": trainer,
        "recorder": recorder,
        "logger": logger,
        "window_messages": window_messages,
        "ckpt_dir": tmp_path / "ckpt",
        "run_dir": tmp_path / "run",
    }


def test_max_steps_counts_batches(seven_step_run: dict[str, Any]) -> None:
    recorder = seven_step_run["recorder"]
    trainer = seven_step_run["trainer"]

    assert len(recorder.reals) == 7
    assert recorder.global_steps == [1, 2, 3, 4, 5, 6, 7]
    assert trainer.global_step == 7
    # Four batches per epoch: global_step keeps counting across the epoch boundary.
    assert recorder.epochs == [0, 0, 0, 0, 1, 1, 1]


def test_display_window_printed(seven_step_run: dict[str, Any]) -> None:
    logger = seven_step_run["logger"]
    d_losses = logger.values("train/d_loss")
    g_losses = logger.values("train/g_loss")
    printed = seven_step_run["window_messages"]

    assert [step for step, _, _ in printed] == [3, 6]
    for step, d_mean, g_mean in printed:
        window = range(step - 2, step + 1)
        # The message rounds to 4 decimals.
        assert d_mean == pytest.approx(sum(d_losses[batch] for batch in window) / 3, abs=1e-4)
        assert g_mean == pytest.approx(sum(g_losses[batch] for batch in window) / 3, abs=1e-4)


def test_display_window_logged_steps(seven_step_run: dict[str, Any]) -> None:
    logger = seven_step_run["logger"]
    assert sorted(logger.values("train/d_loss_window")) == [3, 6]


@pytest.mark.parametrize("name", ["d_loss", "g_loss"])
def test_display_window_means(seven_step_run: dict[str, Any], name: str) -> None:
    logger = seven_step_run["logger"]
    per_step = logger.values(f"train/{name}")
    window = logger.values(f"train/{name}_window")

    # Each window is the mean over its own display_step batches, because the mean is reset after each display.
    assert window[3] == pytest.approx(sum(per_step[step] for step in (1, 2, 3)) / 3, rel=1e-5)
    assert window[6] == pytest.approx(sum(per_step[step] for step in (4, 5, 6)) / 3, rel=1e-5)


def test_display_grids_written(seven_step_run: dict[str, Any]) -> None:
    images = seven_step_run["run_dir"] / "images"
    expected = {"fake_step0000003.png", "real_step0000003.png", "fake_step0000006.png", "real_step0000006.png"}
    assert {path.name for path in images.iterdir()} == expected


def test_periodic_checkpoint_steps(seven_step_run: dict[str, Any]) -> None:
    ckpt_dir = seven_step_run["ckpt_dir"]
    assert {path.name for path in ckpt_dir.iterdir()} == {"step=2.ckpt", "step=4.ckpt", "step=6.ckpt"}
    for step in (2, 4, 6):
        checkpoint = torch.load(ckpt_dir / f"step={step}.ckpt", map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == step


def test_step_metrics_logged(seven_step_run: dict[str, Any]) -> None:
    logger = seven_step_run["logger"]
    for key in STEP_METRICS:
        assert sorted(logger.values(key)) == [1, 2, 3, 4, 5, 6, 7], key
        assert key in seven_step_run["trainer"].logged_metrics


@pytest.mark.parametrize("key", ["train/d_real", "train/d_fake"])
def test_probability_metrics_range(seven_step_run: dict[str, Any], key: str) -> None:
    values = seven_step_run["logger"].values(key).values()
    assert min(values) >= 0
    assert max(values) <= 1


@pytest.mark.parametrize("key", ["train/d_loss", "train/g_loss"])
def test_loss_metrics_positive(seven_step_run: dict[str, Any], key: str) -> None:
    values = seven_step_run["logger"].values(key).values()
    # BCE of a fresh GAN is near log(2) = 0.69.
    assert min(values) > 0
    assert max(values) < 5


def test_resume_continues_step_count(seven_step_run: dict[str, Any], tmp_path: Path, mnist_dir: Path) -> None:
    recorder = BatchRecorder()
    trainer = make_trainer(tmp_path / "resumed", max_steps=7, callbacks=[recorder])

    checkpoint = seven_step_run["ckpt_dir"] / "step=4.ckpt"
    trainer.fit(make_gan(display_step=3), datamodule=make_datamodule(mnist_dir), ckpt_path=checkpoint)

    assert recorder.global_steps == [5, 6, 7]
    assert trainer.global_step == 7


def test_window_means_logged_off_interval(tmp_path: Path, mnist_dir: Path) -> None:
    logger = MemoryLogger()
    trainer = make_trainer(tmp_path, max_steps=6, logger=logger, log_every_n_steps=2)

    trainer.fit(make_gan(display_step=3), datamodule=make_datamodule(mnist_dir))

    assert sorted(logger.values("train/d_loss_window")) == [3, 6]


@pytest.mark.parametrize(("reuse_fakes", "calls"), [(False, 2), (True, 1)])
def test_generator_forwards_per_step(tmp_path: Path, mnist_dir: Path, reuse_fakes: bool, calls: int) -> None:
    model = make_gan(reuse_fakes=reuse_fakes, display_step=100)
    initial_generator = copy.deepcopy(model.generator.state_dict())
    counter = GeneratorCallCounter()
    trainer = make_trainer(tmp_path, max_steps=3, callbacks=[counter])

    trainer.fit(model, datamodule=make_datamodule(mnist_dir))

    assert counter.calls_per_batch == [calls, calls, calls]
    assert not torch.equal(model.generator.state_dict()["gen.4.weight"], initial_generator["gen.4.weight"])


def test_checkpoint_keeps_fixed_noise(tmp_path: Path, mnist_dir: Path) -> None:
    model = make_gan(display_step=100, fixed_noise_seed=5)
    expected = torch.randn(25, Z_DIM, generator=torch.Generator().manual_seed(5))
    trainer = make_trainer(tmp_path, max_steps=2)
    trainer.fit(model, datamodule=make_datamodule(mnist_dir))
    path = tmp_path / "saved.ckpt"
    trainer.save_checkpoint(path)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)

    assert torch.equal(model.fixed_z, expected)
    assert torch.equal(checkpoint["state_dict"]["fixed_z"], expected)
    assert checkpoint[NETWORKS_KEY]["generator"] == {
        "class_path": "gan_lightning.networks.Generator",
        "init_args": {"z_dim": Z_DIM, "im_dim": 784, "hidden_dim": HIDDEN_DIM},
    }
    assert checkpoint[NETWORKS_KEY]["discriminator"] == {
        "class_path": "gan_lightning.networks.Discriminator",
        "init_args": {"im_dim": 784, "hidden_dim": HIDDEN_DIM, "spectral_norm": False},
    }


def test_resume_restores_fixed_noise(tmp_path: Path, mnist_dir: Path) -> None:
    first = make_gan(display_step=100, fixed_noise_seed=5)
    trainer = make_trainer(tmp_path / "first", max_steps=2)
    trainer.fit(first, datamodule=make_datamodule(mnist_dir))
    path = tmp_path / "saved.ckpt"
    trainer.save_checkpoint(path)

    resumed = make_gan(display_step=100, fixed_noise_seed=6)
    assert not torch.equal(resumed.fixed_z, first.fixed_z)
    make_trainer(tmp_path / "second", max_steps=3).fit(resumed, datamodule=make_datamodule(mnist_dir), ckpt_path=path)

    assert torch.equal(resumed.fixed_z, first.fixed_z)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("g_lr", 0.0),
        ("g_lr", float("nan")),
        ("d_lr", -1.0),
        ("g_betas", (1.0, 0.999)),
        ("d_betas", (0.5, -0.1)),
        ("g_betas", (0.5,)),
        ("display_step", 0),
        ("num_display", 0),
    ],
)
def test_invalid_hparams_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValueError) as error:
        make_gan(**{field: value})

    message = str(error.value)
    assert field in message
    assert f"--model.{field}" in message
    assert str(value) in message


def test_image_size_mismatch_before_first_step(tmp_path: Path, mnist_dir: Path) -> None:
    recorder = BatchRecorder()
    trainer = make_trainer(tmp_path, max_steps=2, callbacks=[recorder])

    with pytest.raises(DatasetError) as error:
        trainer.fit(make_gan(im_dim=100), datamodule=make_datamodule(mnist_dir))

    message = str(error.value)
    assert "784" in message
    assert "100" in message
    assert "--model.generator.init_args.im_dim" in message
    assert recorder.reals == []


def test_discriminator_size_mismatch_before_first_step(tmp_path: Path, mnist_dir: Path) -> None:
    generator = Generator(z_dim=Z_DIM, im_dim=784, hidden_dim=HIDDEN_DIM)
    discriminator = Discriminator(im_dim=100, hidden_dim=HIDDEN_DIM)
    recorder = BatchRecorder()
    trainer = make_trainer(tmp_path, max_steps=2, callbacks=[recorder])

    with pytest.raises(DatasetError):
        trainer.fit(GAN(generator, discriminator), datamodule=make_datamodule(mnist_dir))

    assert recorder.reals == []


def test_resume_with_other_networks_rejected(tmp_path: Path, mnist_dir: Path) -> None:
    trainer = make_trainer(tmp_path / "first", max_steps=1)
    trainer.fit(make_gan(hidden_dim=HIDDEN_DIM), datamodule=make_datamodule(mnist_dir))
    path = tmp_path / "saved.ckpt"
    trainer.save_checkpoint(path)

    recorder = BatchRecorder()
    resumed = make_trainer(tmp_path / "second", max_steps=2, callbacks=[recorder])
    with pytest.raises(CheckpointError) as error:
        resumed.fit(make_gan(hidden_dim=2 * HIDDEN_DIM), datamodule=make_datamodule(mnist_dir), ckpt_path=path)

    assert "--ckpt_path" in str(error.value)
    assert recorder.reals == []


def test_last_checkpoint_holds_final_step(mnist_dir: Path, tmp_path: Path) -> None:
    from gan_lightning.callbacks import RunCheckpoint

    checkpoint = RunCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=3, save_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(make_gan(eval_metrics=False), datamodule=make_datamodule(mnist_dir))

    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 5
