"""MNISTDataModule and its loaders on tiny IDX files, through torchvision's MNIST class."""

import os
import urllib.request
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch.callbacks import Callback
from torchvision.transforms import ToTensor

from conftest import NUM_TEST, NUM_TRAIN, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, draw_digits, write_idx
from gan_lightning import GAN, Discriminator, Generator, MNISTDataModule
from gan_lightning.idx import IMAGES_MAGIC, LABELS_MAGIC, DatasetError
from gan_lightning.loader import EpochShuffle


def make_datamodule(data_dir: Path, **options: Any) -> MNISTDataModule:
    datamodule = MNISTDataModule(data_dir=str(data_dir), **{"batch_size": 32, "download": False, **options})
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def epoch_batches(loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate one epoch of (images, labels) batches."""
    batches = list(loader)
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def as_multiset(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, bytes]]:
    """Turn a batch of images in [0, 1] and labels into a sorted list, for order-free comparison."""
    pixels = images.mul(255).round().to(torch.uint8).numpy()
    return sorted((int(label), image.tobytes()) for image, label in zip(pixels, labels))


def raw_dir(data_dir: Path) -> Path:
    return data_dir / "MNIST" / "raw"


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Return {relative path: (size, mtime in ns)} of every file and folder under ``folder``."""
    state = {}
    for path in [folder, *folder.rglob("*")]:
        stat = path.stat()
        state[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return state


def test_train_batch_shape(mnist_dir: Path) -> None:
    loader = make_datamodule(mnist_dir).train_dataloader()
    images, labels = next(iter(loader))

    assert images.shape == (32, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (32,)
    assert labels.dtype == torch.int64


def test_train_batch_range(mnist_dir: Path) -> None:
    images, _ = epoch_batches(make_datamodule(mnist_dir).train_dataloader())
    assert images.min().item() == 0
    assert images.max().item() <= 1
    assert images.max().item() > 0.5


def test_image_shape_after_setup(mnist_dir: Path) -> None:
    assert make_datamodule(mnist_dir).image_shape == (1, 28, 28)


def test_train_batches_match_to_tensor(mnist_dir: Path) -> None:
    loader = make_datamodule(mnist_dir).train_dataloader()
    reference = torchvision.datasets.MNIST(str(mnist_dir), train=True, transform=ToTensor(), download=False)
    order = loader.sampler.indices()

    images, labels = epoch_batches(loader)

    expected_images = torch.stack([reference[int(index)][0] for index in order])
    expected_labels = torch.tensor([reference[int(index)][1] for index in order])
    assert torch.equal(images, expected_images)
    assert torch.equal(labels, expected_labels)


def test_val_batches_in_file_order(mnist_dir: Path) -> None:
    loader = make_datamodule(mnist_dir, batch_size=48).val_dataloader()
    reference = torchvision.datasets.MNIST(str(mnist_dir), train=False, transform=ToTensor(), download=False)

    batches = list(loader)
    images, labels = epoch_batches(loader)

    # The validation split keeps its last, smaller batch.
    assert [len(batch_labels) for _, batch_labels in batches] == [48, NUM_TEST - 48]
    assert torch.equal(images, torch.stack([reference[index][0] for index in range(NUM_TEST)]))
    assert torch.equal(labels, torch.tensor([reference[index][1] for index in range(NUM_TEST)]))


def test_train_batches_whole(mnist_dir: Path) -> None:
    loader = make_datamodule(mnist_dir, batch_size=48).train_dataloader()
    sizes = [len(labels) for _, labels in loader]
    # 256 images make five whole batches of 48. The rest is dropped, so BatchNorm never gets a batch of one image.
    assert sizes == [48] * 5
    assert len(loader) == 5


@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_epoch_covers_training_set(mnist_dir: Path, loader: str) -> None:
    datamodule = make_datamodule(mnist_dir, loader=loader)
    images, labels = epoch_batches(datamodule.train_dataloader())
    stored = datamodule.train_set

    assert as_multiset(images, labels) == as_multiset(stored.images.float() / 255, stored.labels)


def test_loaders_serve_same_images(mnist_dir: Path) -> None:
    device_images, device_labels = epoch_batches(make_datamodule(mnist_dir, loader="device").train_dataloader())
    torchvision_images, torchvision_labels = epoch_batches(make_datamodule(mnist_dir, loader="torchvision").train_dataloader())

    assert as_multiset(device_images, device_labels) == as_multiset(torchvision_images, torchvision_labels)


def epoch_labels(data_dir: Path, seed: int, epoch: int) -> torch.Tensor:
    loader = make_datamodule(data_dir, seed=seed).train_dataloader()
    loader.sampler.set_epoch(epoch)
    return epoch_batches(loader)[1]


def test_device_order_reproducible(mnist_dir: Path) -> None:
    assert torch.equal(epoch_labels(mnist_dir, seed=3, epoch=2), epoch_labels(mnist_dir, seed=3, epoch=2))


def test_device_order_changes_between_epochs(mnist_dir: Path) -> None:
    assert not torch.equal(epoch_labels(mnist_dir, seed=3, epoch=0), epoch_labels(mnist_dir, seed=3, epoch=1))


def test_device_order_depends_on_seed(mnist_dir: Path) -> None:
    assert not torch.equal(epoch_labels(mnist_dir, seed=3, epoch=0), epoch_labels(mnist_dir, seed=4, epoch=0))


class LabelRecorder(Callback):
    def __init__(self) -> None:
        self.labels: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.labels.setdefault(trainer.current_epoch, []).append(batch[1].clone())


def test_trainer_sets_loader_epoch(tmp_path: Path, mnist_dir: Path) -> None:
    recorder = LabelRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        default_root_dir=str(tmp_path),
    )
    model = GAN(Generator(z_dim=4, hidden_dim=8), Discriminator(hidden_dim=8), display_step=100, num_eval_samples=200)

    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(mnist_dir), batch_size=64, seed=7, download=False))

    # Lightning calls set_epoch on the loader's sampler, so each epoch has its own order.
    for epoch in (0, 1):
        assert torch.equal(torch.cat(recorder.labels[epoch]), epoch_labels(mnist_dir, seed=7, epoch=epoch)), epoch


@pytest.mark.parametrize(("num_items", "world_size"), [(256, 4), (103, 4), (10, 3), (7, 1)])
def test_shards_disjoint_equal_length(num_items: int, world_size: int) -> None:
    shards = []
    for rank in range(world_size):
        sampler = EpochShuffle(num_items, shuffle=True, seed=5, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        shards.append(sampler.indices().tolist())

    per_rank = num_items // world_size
    assert [len(shard) for shard in shards] == [per_rank] * world_size
    covered = [index for shard in shards for index in shard]
    assert len(set(covered)) == len(covered)
    assert set(covered) <= set(range(num_items))
    # At most world_size - 1 items are left out, so every shard has the same length.
    assert len(covered) == per_rank * world_size


def test_shards_cover_divisible_data() -> None:
    covered = set()
    for rank in range(4):
        covered |= set(EpochShuffle(256, shuffle=True, seed=0, rank=rank, world_size=4).indices().tolist())
    assert covered == set(range(256))


def test_shards_share_epoch_permutation() -> None:
    samplers = [EpochShuffle(40, shuffle=True, seed=1, rank=rank, world_size=2) for rank in range(2)]
    for sampler in samplers:
        sampler.set_epoch(1)
    first, second = (sampler.indices() for sampler in samplers)

    interleaved = torch.stack([first, second], dim=1).flatten()
    permutation = torch.randperm(40, generator=torch.Generator().manual_seed(1 + 1))
    assert torch.equal(interleaved, permutation)


def test_shards_unshuffled_order() -> None:
    sampler = EpochShuffle(10, shuffle=False, seed=0, rank=1, world_size=3)
    sampler.set_epoch(5)
    assert sampler.indices().tolist() == [1, 4, 7]


@pytest.mark.parametrize("step", ["prepare_data", "setup"])
def test_missing_files_rejected(tmp_path: Path, step: str) -> None:
    data_dir = tmp_path / "empty"
    datamodule = MNISTDataModule(data_dir=str(data_dir), download=False)

    with pytest.raises(DatasetError) as error:
        getattr(datamodule, step)()

    message = str(error.value)
    assert str(raw_dir(data_dir)) in message
    assert "--data.data_dir" in message


def test_missing_labels_file_named(mnist_dir: Path) -> None:
    (raw_dir(mnist_dir) / TEST_LABELS).unlink()

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(mnist_dir), download=False).prepare_data()

    message = str(error.value)
    assert TEST_LABELS in message
    assert TRAIN_IMAGES not in message


def test_failed_download_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def fail_download(self: torchvision.datasets.MNIST) -> None:
        attempts.append(self.root)
        # torchvision makes the raw folder before it downloads anything.
        os.makedirs(self.raw_folder, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fail_download)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data_dir = tmp_path / "empty"

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(data_dir), download=True).prepare_data()

    message = str(error.value)
    assert len(attempts) == 1
    assert str(raw_dir(data_dir)) in message
    assert "--data.data_dir" in message
    assert "Error downloading" in message
    # A data folder that a failed download made is removed again, so none is left behind.
    assert not data_dir.exists()


def test_truncated_images_rejected(mnist_dir: Path) -> None:
    images = draw_digits(np.arange(NUM_TRAIN) % 10, seed=1)
    path = write_idx(raw_dir(mnist_dir) / TRAIN_IMAGES, images[:200], count=NUM_TRAIN)

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(mnist_dir), download=False).prepare_data()

    message = str(error.value)
    assert str(path) in message
    assert "truncated" in message


def test_file_shorter_than_header_rejected(mnist_dir: Path) -> None:
    path = raw_dir(mnist_dir) / TEST_LABELS
    path.write_bytes(path.read_bytes()[:6])

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(mnist_dir), download=False).prepare_data()

    assert str(path) in str(error.value)


def test_trailing_bytes_rejected(mnist_dir: Path) -> None:
    path = raw_dir(mnist_dir) / TRAIN_LABELS
    path.write_bytes(path.read_bytes() + b"\x00\x01")

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(mnist_dir), download=False).prepare_data()

    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("name", "magic"),
    [(TRAIN_IMAGES, LABELS_MAGIC), (TEST_IMAGES, 0x00000D03), (TRAIN_LABELS, IMAGES_MAGIC), (TEST_LABELS, 0x12345678)],
)
def test_wrong_magic_rejected(mnist_dir: Path, name: str, magic: int) -> None:
    path = raw_dir(mnist_dir) / name
    content = bytearray(path.read_bytes())
    content[:4] = magic.to_bytes(4, "big")
    path.write_bytes(bytes(content))

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(mnist_dir), download=False).prepare_data()

    message = str(error.value)
    assert str(path) in message
    assert "magic number" in message


def test_count_mismatch_rejected(mnist_dir: Path) -> None:
    write_idx(raw_dir(mnist_dir) / TRAIN_LABELS, np.arange(NUM_TRAIN - 1) % 10)

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(mnist_dir), download=False).prepare_data()

    message = str(error.value)
    assert str(raw_dir(mnist_dir) / TRAIN_IMAGES) in message
    assert str(raw_dir(mnist_dir) / TRAIN_LABELS) in message


@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_data_folder_not_written(mnist_dir: Path, loader: str) -> None:
    before = folder_state(mnist_dir)

    datamodule = MNISTDataModule(data_dir=str(mnist_dir), loader=loader, batch_size=32, download=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    epoch_batches(datamodule.train_dataloader())
    epoch_batches(datamodule.val_dataloader())

    assert folder_state(mnist_dir) == before


def test_read_only_folder_loads(mnist_dir: Path) -> None:
    # Root ignores file modes, so under root this test only checks that loading works. The
    # check of file times above is the one that catches writes there.
    folders = [mnist_dir, mnist_dir / "MNIST", raw_dir(mnist_dir)]
    for path in raw_dir(mnist_dir).iterdir():
        path.chmod(0o444)
    for folder in folders:
        folder.chmod(0o555)
    try:
        images, _ = epoch_batches(make_datamodule(mnist_dir, download=True).train_dataloader())
    finally:
        for folder in folders:
            folder.chmod(0o755)

    assert len(images) == NUM_TRAIN


def test_unknown_dataset_rejected() -> None:
    with pytest.raises(DatasetError) as error:
        MNISTDataModule(dataset="cifar10")

    message = str(error.value)
    assert "cifar10" in message
    assert "--data.dataset" in message


@pytest.mark.parametrize(("option", "value"), [("batch_size", 0), ("num_workers", -1)])
def test_invalid_loader_options_rejected(option: str, value: int) -> None:
    with pytest.raises(ValueError) as error:
        MNISTDataModule(**{option: value})
    assert option in str(error.value)
