"""Sample quality during training: the val/* metrics, real statistics kept per run, lean checkpoints, best.ckpt."""

import copy
import csv
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from gan_lightning import GAN, Discriminator, Generator, MNISTDataModule
from gan_lightning.classifier import load_classifier
from gan_lightning.cli import main as train_main
from gan_lightning.metrics import SampleQuality
from gan_lightning.quality import VAL_METRICS, eval_noise, generate_images, score_generator, shard_bounds
from gan_lightning.sample import generate

Z_DIM = 4
HIDDEN_DIM = 8
# 256 training images in batches of 32: 8 batches per epoch. The 64 test images make 2 validation batches.
BATCH_SIZE = 32
BATCHES_PER_EPOCH = 8
NUM_EVAL_SAMPLES = 200
VAL_KEYS = tuple(f"val/{name}" for name in VAL_METRICS)


def make_gan(**hparams: Any) -> GAN:
    generator = Generator(z_dim=Z_DIM, im_dim=784, hidden_dim=HIDDEN_DIM)
    discriminator = Discriminator(im_dim=784, hidden_dim=HIDDEN_DIM)
    hparams = {"display_step": 100, "num_eval_samples": NUM_EVAL_SAMPLES, **hparams}
    return GAN(generator, discriminator, **hparams)


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


def make_datamodule(data_dir: Path) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_dir), batch_size=BATCH_SIZE, download=False)


class ValidationRecorder(Callback):
    """Record the global step and the val/* values after every validation pass outside the sanity check."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.steps.append(trainer.global_step)
        self.values.append({key: trainer.callback_metrics[key].item() for key in VAL_KEYS if key in trainer.callback_metrics})


class TanhGenerator(nn.Module):
    """Generator whose pixels are in [-1, 1], which the metrics reject."""

    def __init__(self, z_dim: int = Z_DIM) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, 784), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ImageRecorder:
    """Stand-in for SampleQuality that keeps every batch of fakes that score_generator() adds."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def reset_fake(self) -> None:
        pass

    def update_fake(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self.batches.append(images)

    def compute(self) -> dict[str, float]:
        return {}


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory: pytest.TempPathFactory, shared_mnist_dir: Path) -> dict[str, Any]:
    """Train two epochs with validation after each, counting the calls of SampleQuality.update_real."""
    root = tmp_path_factory.mktemp("quality_run")
    recorder = ValidationRecorder()
    best = ModelCheckpoint(dirpath=root / "checkpoints", filename="best", monitor="val/fid", mode="min", save_top_k=1)
    trainer = make_trainer(root, max_steps=2 * BATCHES_PER_EPOCH, callbacks=[recorder, best], enable_checkpointing=True)
    model = make_gan(eval_seed=3)

    real_updates = []
    original_update_real = SampleQuality.update_real

    def counting_update_real(self: SampleQuality, images: torch.Tensor) -> None:
        real_updates.append(len(images))
        original_update_real(self, images)

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(SampleQuality, "update_real", counting_update_real)
        torch.manual_seed(0)
        trainer.fit(model, datamodule=make_datamodule(shared_mnist_dir))

    saved = root / "saved.ckpt"
    trainer.save_checkpoint(saved)
    return {"model": model, "recorder": recorder, "best": best, "real_updates": real_updates, "saved": saved, "root": root}


def test_validation_logs_val_keys(two_epoch_run: dict[str, Any]) -> None:
    values = two_epoch_run["recorder"].values

    assert len(values) == 2
    for logged in values:
        assert set(logged) == set(VAL_KEYS)
        assert all(math.isfinite(value) for value in logged.values())
        assert logged["val/classes"] in range(0, 11)


def test_validation_after_each_epoch(two_epoch_run: dict[str, Any]) -> None:
    assert two_epoch_run["recorder"].steps == [BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH]


def test_real_images_added_once(two_epoch_run: dict[str, Any]) -> None:
    # One pass over the 64 test images in two batches, though two validation passes and a sanity check ran.
    assert two_epoch_run["real_updates"] == [BATCH_SIZE, BATCH_SIZE]


def test_real_statistics_survive_teardown(two_epoch_run: dict[str, Any]) -> None:
    model = two_epoch_run["model"]
    model.cpu()

    assert model.validation_quality.real_complete
    assert model.validation_quality.metrics.num_real == 64


def test_checkpoint_has_no_metric_state(two_epoch_run: dict[str, Any]) -> None:
    checkpoint = torch.load(two_epoch_run["saved"], map_location="cpu", weights_only=True)
    keys = set(checkpoint["state_dict"])

    assert keys == set(make_gan().state_dict())
    assert all(key.startswith(("generator.", "discriminator.")) or key == "fixed_z" for key in keys)
    for word in ("classifier", "quality", "fid", "kid"):
        assert not any(word in key for key in keys), word


def tensor_bytes(value: Any) -> int:
    """Return the bytes of all tensors in a nested structure of dicts, lists and tuples."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(item) for item in value)
    return 0


def test_checkpoint_stays_small(two_epoch_run: dict[str, Any]) -> None:
    path = two_epoch_run["saved"]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    classifier_bytes = tensor_bytes(load_classifier().state_dict())
    overhead = 64 * 1024

    # The networks, Adam's moments and the callbacks' tensors, plus a little for the pickle and zip records.
    assert path.stat().st_size < tensor_bytes(checkpoint) + overhead
    # The classifier alone would break that bound.
    assert classifier_bytes > overhead


def test_best_checkpoint_tracks_fid(two_epoch_run: dict[str, Any]) -> None:
    recorder = two_epoch_run["recorder"]
    best = two_epoch_run["best"]
    fids = [logged["val/fid"] for logged in recorder.values]
    best_step = recorder.steps[fids.index(min(fids))]

    assert Path(best.best_model_path) == two_epoch_run["root"] / "checkpoints" / "best.ckpt"
    assert best.best_model_score.item() == pytest.approx(min(fids))
    checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == best_step


def test_resume_recomputes_real_statistics(two_epoch_run: dict[str, Any], tmp_path: Path, mnist_dir: Path) -> None:
    model = make_gan(eval_seed=3)
    recorder = ValidationRecorder()
    trainer = make_trainer(tmp_path, max_steps=3 * BATCHES_PER_EPOCH, callbacks=[recorder])

    trainer.fit(model, datamodule=make_datamodule(mnist_dir), ckpt_path=two_epoch_run["saved"])

    assert recorder.steps == [3 * BATCHES_PER_EPOCH]
    assert model.validation_quality.metrics.num_real == 64


def test_checkpoint_loads_with_metrics_off(two_epoch_run: dict[str, Any]) -> None:
    checkpoint = torch.load(two_epoch_run["saved"], map_location="cpu", weights_only=True)
    model = make_gan(eval_metrics=False)

    model.load_state_dict(checkpoint["state_dict"])  # strict: the same keys with the metrics on or off

    assert torch.equal(model.generator.gen[-2].weight, checkpoint["state_dict"]["generator.gen.4.weight"])


def test_validation_every_second_epoch(tmp_path: Path, mnist_dir: Path) -> None:
    recorder = ValidationRecorder()
    best = ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="best", monitor="val/fid", mode="min", save_top_k=1)
    trainer = make_trainer(
        tmp_path, max_steps=2 * BATCHES_PER_EPOCH, callbacks=[recorder, best], enable_checkpointing=True, check_val_every_n_epoch=2
    )

    trainer.fit(make_gan(), datamodule=make_datamodule(mnist_dir))

    assert recorder.steps == [2 * BATCHES_PER_EPOCH]
    assert set(recorder.values[0]) == set(VAL_KEYS)
    checkpoint = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2 * BATCHES_PER_EPOCH


def test_validate_alone_logs_val_keys(two_epoch_run: dict[str, Any], tmp_path: Path, mnist_dir: Path) -> None:
    model = make_gan(eval_seed=3)
    trainer = make_trainer(tmp_path, max_steps=1)

    (logged,) = trainer.validate(model, datamodule=make_datamodule(mnist_dir), ckpt_path=two_epoch_run["saved"], verbose=False)

    assert set(logged) == set(VAL_KEYS)
    # The weights of the last validation in training, the same seed and the same reals.
    last_training_values = two_epoch_run["recorder"].values[-1]
    for key in VAL_KEYS:
        assert logged[key] == pytest.approx(last_training_values[key], rel=1e-4), key


def test_metrics_off_logs_nothing(tmp_path: Path, mnist_dir: Path) -> None:
    model = make_gan(eval_metrics=False)
    recorder = ValidationRecorder()
    trainer = make_trainer(tmp_path, max_steps=BATCHES_PER_EPOCH, callbacks=[recorder])

    trainer.fit(model, datamodule=make_datamodule(mnist_dir))

    assert recorder.steps == [BATCHES_PER_EPOCH]
    assert recorder.values == [{}]
    assert model.validation_quality is None


def test_metrics_leave_training_unchanged(tmp_path: Path, mnist_dir: Path) -> None:
    weights = {}
    for eval_metrics in (False, True):
        torch.manual_seed(7)
        model = make_gan(eval_metrics=eval_metrics)
        trainer = make_trainer(tmp_path / str(eval_metrics), max_steps=BATCHES_PER_EPOCH + 2)
        trainer.fit(model, datamodule=make_datamodule(mnist_dir))
        weights[eval_metrics] = copy.deepcopy(model.generator.state_dict())

    # A validation pass ran after batch 8 with the metrics on; the noise of batches 9 and 10 is the same.
    assert weights[True].keys() == weights[False].keys()
    for name, value in weights[False].items():
        assert torch.equal(weights[True][name], value), name


def test_tanh_generator_rejected_before_training(tmp_path: Path, mnist_dir: Path) -> None:
    model = GAN(TanhGenerator(), Discriminator(im_dim=784, hidden_dim=HIDDEN_DIM), num_eval_samples=NUM_EVAL_SAMPLES)
    trainer = make_trainer(tmp_path, max_steps=2)

    with pytest.raises(ValueError) as error:
        trainer.fit(model, datamodule=make_datamodule(mnist_dir))

    message = str(error.value)
    assert "(x + 1) / 2" in message
    assert "--model.eval_metrics false" in message
    assert trainer.global_step == 0


@pytest.mark.parametrize("value", [1, 0, -5])
def test_num_eval_samples_rejected(value: int) -> None:
    with pytest.raises(ValueError) as error:
        make_gan(num_eval_samples=value)

    assert "--model.num_eval_samples" in str(error.value)
    assert str(value) in str(error.value)


@pytest.mark.parametrize(("num_samples", "world_size"), [(10, 1), (10, 3), (10000, 8), (5, 5)])
def test_shard_bounds_cover_samples(num_samples: int, world_size: int) -> None:
    bounds = [shard_bounds(num_samples, rank, world_size) for rank in range(world_size)]
    sizes = [stop - start for start, stop in bounds]

    assert bounds[0][0] == 0
    assert bounds[-1][1] == num_samples
    assert all(bounds[rank][1] == bounds[rank + 1][0] for rank in range(world_size - 1))
    assert max(sizes) - min(sizes) <= 1


def test_shards_join_to_single_process() -> None:
    generator = Generator(z_dim=Z_DIM, im_dim=784, hidden_dim=HIDDEN_DIM)
    single = ImageRecorder()
    score_generator(generator, single, num_samples=250, seed=5)

    shards = []
    for rank in range(3):
        recorder = ImageRecorder()
        score_generator(generator, recorder, num_samples=250, seed=5, rank=rank, world_size=3)
        shards.append(torch.cat(recorder.batches))

    assert [len(shard) for shard in shards] == [84, 83, 83]
    # The same noise in other batch sizes: equal up to float rounding in the matrix products.
    torch.testing.assert_close(torch.cat(shards), torch.cat(single.batches), rtol=0, atol=1e-6)


def test_generated_images_match_sample() -> None:
    generator = Generator(z_dim=Z_DIM, im_dim=784, hidden_dim=HIDDEN_DIM)
    recorder = ImageRecorder()

    score_generator(generator, recorder, num_samples=7, seed=4)

    # gan_lightning.sample draws the same noise for the same seed, so an .npz of it contains the same images.
    assert torch.equal(torch.cat(recorder.batches), generate(generator, 7, seed=4))
    assert recorder.batches[0].shape == (7, 1, 28, 28)
    assert recorder.batches[0].dtype == torch.float32


def test_generation_restores_train_mode() -> None:
    generator = Generator(z_dim=Z_DIM, im_dim=784, hidden_dim=HIDDEN_DIM).train()
    before = copy.deepcopy(generator.state_dict())

    generate_images(generator, eval_noise(8, Z_DIM, seed=0))

    assert generator.training
    # Eval mode: BatchNorm's running statistics are left as they were.
    for name, value in before.items():
        assert torch.equal(generator.state_dict()[name], value), name


def cli_args(data_dir: Path, runs_dir: Path, *options: str) -> list[str]:
    return [
        "--data.data_dir", str(data_dir),
        "--runs_dir", str(runs_dir),
        "--max_steps", "4",
        "--wandb", "off",
        "--model.generator", "gan_lightning.networks.Generator",
        "--model.generator.init_args.hidden_dim", "8",
        "--model.discriminator", "gan_lightning.networks.Discriminator",
        "--model.discriminator.init_args.hidden_dim", "8",
        "--model.num_eval_samples", str(NUM_EVAL_SAMPLES),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        *options,
    ]  # fmt: skip


def validation_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return [row for row in csv.DictReader(file) if row.get("val/fid")]


def test_cli_writes_best_checkpoint(tmp_path: Path, mnist_dir: Path) -> None:
    runs_dir = tmp_path / "runs"
    train_main(cli_args(mnist_dir, runs_dir))

    (run_dir,) = runs_dir.iterdir()
    checkpoints = run_dir / "checkpoints"
    assert {path.name for path in checkpoints.iterdir()} == {"best.ckpt", "last.ckpt"}

    # 256 images in batches of 128: validation after steps 2 and 4.
    rows = validation_rows(run_dir)
    assert len(rows) == 2
    fids = [float(row["val/fid"]) for row in rows]
    best_step = (2, 4)[fids.index(min(fids))]
    assert torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=True)["global_step"] == best_step


def test_cli_metrics_off_no_best(tmp_path: Path, mnist_dir: Path) -> None:
    runs_dir = tmp_path / "runs"
    train_main(cli_args(mnist_dir, runs_dir, "--model.eval_metrics", "false", "--trainer.log_every_n_steps", "1"))

    (run_dir,) = runs_dir.iterdir()
    assert {path.name for path in (run_dir / "checkpoints").iterdir()} == {"last.ckpt"}
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/" not in header
