"""Compressed IDX files, Fashion-MNIST from its Debian package, KMNIST and EMNIST digits.

Every fixture is a tiny data set written to tmp_path, except one test that reads the real
Fashion-MNIST files of the Debian package when they are installed.
"""

import gzip
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision

from conftest import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, draw_digits, write_idx
from gan_lightning import MNISTDataModule
from gan_lightning import datasets
from gan_lightning.datasets import EMNIST_DIGITS_FILES, ensure_dataset, load_split, raw_folder
from gan_lightning.idx import IMAGES_MAGIC, LABELS_MAGIC, DatasetError

NUM_TRAIN = 64
NUM_TEST = 16
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
EMNIST_FILES = (*EMNIST_DIGITS_FILES["train"], *EMNIST_DIGITS_FILES["test"])


def gzip_file(path: Path) -> Path:
    """Replace ``path`` with its gzip-compressed copy ``path.gz`` and return the new path."""
    compressed = path.with_name(path.name + ".gz")
    compressed.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return compressed


def write_split_files(
    raw: Path, file_names: tuple[str, ...], seed: int, compress: bool = False, transpose: bool = False
) -> dict[str, np.ndarray]:
    """Write a tiny data set's four IDX files into ``raw`` and return the arrays as they should load.

    ``file_names`` are (train images, train labels, test images, test labels). With ``transpose``
    the files store every image transposed, as EMNIST does, and the returned images are upright.
    """
    train_labels = (np.arange(NUM_TRAIN) + seed) % 10
    test_labels = (np.arange(NUM_TEST) + seed) % 10
    arrays = {
        "train_images": draw_digits(train_labels, seed=seed),
        "train_labels": train_labels,
        "test_images": draw_digits(test_labels, seed=seed + 100),
        "test_labels": test_labels,
    }
    for file_name, (key, array) in zip(file_names, arrays.items()):
        stored = array.transpose(0, 2, 1) if transpose and key.endswith("images") else array
        path = write_idx(raw / file_name, stored)
        if compress:
            gzip_file(path)
    return arrays


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Return {relative path: (size, mtime in ns)} of every file and folder under ``folder``."""
    state = {}
    for path in [folder, *folder.rglob("*")]:
        stat = path.stat()
        state[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return state


def assert_split_equal(data_dir: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    for split in ("train", "test"):
        loaded = load_split(data_dir, name, split)
        assert loaded.images.dtype == torch.uint8
        assert loaded.labels.dtype == torch.int64
        assert np.array_equal(loaded.images.numpy(), arrays[f"{split}_images"]), split
        assert np.array_equal(loaded.labels.numpy(), arrays[f"{split}_labels"]), split


@pytest.fixture
def debian_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty stand-in for the Debian Fashion-MNIST folder, used in place of the real one."""
    folder = tmp_path / "usr_share" / "fashion-mnist"
    folder.mkdir(parents=True)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", folder)
    return folder


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every torchvision download fail without the network; return the classes that tried."""
    attempts = []

    def fail_download(self: torchvision.datasets.MNIST) -> None:
        attempts.append(type(self).__name__)
        raise RuntimeError(f"Error downloading {type(self).__name__}")

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the test tried to reach the network")

    for cls in (torchvision.datasets.MNIST, torchvision.datasets.EMNIST):
        monkeypatch.setattr(cls, "download", fail_download)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return attempts


# Compressed files


def test_gz_files_load(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    arrays = write_split_files(data_dir / "MNIST" / "raw", MNIST_FILES, seed=1, compress=True)

    assert ensure_dataset(data_dir, "mnist", download=False) == data_dir / "MNIST" / "raw"
    assert_split_equal(data_dir, "mnist", arrays)


def test_mixed_plain_and_gz_files_load(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    arrays = write_split_files(raw, MNIST_FILES, seed=2)
    gzip_file(raw / TRAIN_LABELS)
    gzip_file(raw / TEST_IMAGES)

    ensure_dataset(data_dir, "mnist", download=False)
    assert_split_equal(data_dir, "mnist", arrays)


def test_plain_file_preferred_over_gz(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    arrays = write_split_files(raw, MNIST_FILES, seed=3)
    # A corrupt .gz next to a good plain file is never opened.
    (raw / f"{TRAIN_IMAGES}.gz").write_bytes(b"not gzip")

    ensure_dataset(data_dir, "mnist", download=False)
    assert_split_equal(data_dir, "mnist", arrays)


def test_missing_file_message_mentions_gz(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=4, compress=True)
    (raw / f"{TEST_LABELS}.gz").unlink()

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "mnist", download=False)

    message = str(error.value)
    assert str(raw) in message
    assert f"missing: {TEST_LABELS})" in message
    assert ".gz" in message


def truncate(path: Path, num_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:num_bytes])


@pytest.mark.parametrize("file_name", MNIST_FILES)
def test_truncated_gz_rejected(tmp_path: Path, file_name: str) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=5, compress=True)
    path = raw / f"{file_name}.gz"
    truncate(path, path.stat().st_size // 2)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "mnist", download=False)
    assert str(path) in str(error.value)
    assert "truncated" in str(error.value)

    split = "train" if file_name.startswith("train") else "test"
    with pytest.raises(DatasetError) as error:
        load_split(data_dir, "mnist", split)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("file_name", "magic"),
    [(TRAIN_IMAGES, LABELS_MAGIC), (TEST_IMAGES, 0x00000D03), (TRAIN_LABELS, IMAGES_MAGIC), (TEST_LABELS, 0x12345678)],
)
def test_wrong_magic_in_gz_rejected(tmp_path: Path, file_name: str, magic: int) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=6)
    content = bytearray((raw / file_name).read_bytes())
    content[:4] = magic.to_bytes(4, "big")
    (raw / file_name).write_bytes(bytes(content))
    path = gzip_file(raw / file_name)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "mnist", download=False)
    assert str(path) in str(error.value)
    assert "magic number" in str(error.value)

    split = "train" if file_name.startswith("train") else "test"
    with pytest.raises(DatasetError) as error:
        load_split(data_dir, "mnist", split)
    assert str(path) in str(error.value)
    assert "magic number" in str(error.value)


def test_short_content_in_gz_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=7)
    # A complete gzip file whose content ends before the images its header promises.
    truncate(raw / TRAIN_IMAGES, 16 + 28 * 28 * 10)
    path = gzip_file(raw / TRAIN_IMAGES)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "mnist", download=False)
    message = str(error.value)
    assert str(path) in message
    assert "after decompression" in message
    assert "truncated" in message


def test_gz_shorter_than_header_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=8)
    truncate(raw / TEST_LABELS, 6)
    path = gzip_file(raw / TEST_LABELS)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "mnist", download=False)
    assert str(path) in str(error.value)
    assert "header" in str(error.value)


def test_plain_bytes_named_gz_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=9)
    path = raw / f"{TRAIN_LABELS}.gz"
    (raw / TRAIN_LABELS).rename(path)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "mnist", download=False)
    assert str(path) in str(error.value)
    assert "gzip" in str(error.value)


def test_out_of_range_label_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=10)
    labels = np.arange(NUM_TEST) % 10
    labels[3] = 10
    path = gzip_file(write_idx(raw / TEST_LABELS, labels))

    with pytest.raises(DatasetError) as error:
        load_split(data_dir, "mnist", "test")
    message = str(error.value)
    assert str(path) in message
    assert "label 10" in message


def test_unknown_split_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_split_files(data_dir / "MNIST" / "raw", MNIST_FILES, seed=11)

    with pytest.raises(ValueError) as error:
        load_split(data_dir, "mnist", "validation")
    assert "'validation'" in str(error.value)


@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_gz_data_folder_not_written(tmp_path: Path, loader: str) -> None:
    data_dir = tmp_path / "data"
    write_split_files(data_dir / "FashionMNIST" / "raw", MNIST_FILES, seed=12, compress=True)
    before = folder_state(data_dir)

    datamodule = MNISTDataModule(data_dir=str(data_dir), dataset="fashion_mnist", loader=loader, batch_size=16)
    datamodule.prepare_data()
    datamodule.setup("fit")
    list(datamodule.train_dataloader())
    list(datamodule.val_dataloader())

    assert folder_state(data_dir) == before


# Fashion-MNIST from the Debian package


def test_debian_folder_used_when_data_folder_empty(
    tmp_path: Path, debian_dir: Path, no_download: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    arrays = write_split_files(debian_dir, MNIST_FILES, seed=20, compress=True)
    data_dir = tmp_path / "data"

    assert ensure_dataset(data_dir, "fashion_mnist", download=True) == debian_dir
    assert_split_equal(data_dir, "fashion_mnist", arrays)
    assert no_download == []
    assert not data_dir.exists()
    assert f"read from {debian_dir}" in caplog.text


def test_debian_folder_replaces_incomplete_data_folder(tmp_path: Path, debian_dir: Path, no_download: list[str]) -> None:
    arrays = write_split_files(debian_dir, MNIST_FILES, seed=21, compress=True)
    data_dir = tmp_path / "data"
    raw = data_dir / "FashionMNIST" / "raw"
    write_split_files(raw, MNIST_FILES, seed=22)
    (raw / TEST_IMAGES).unlink()

    assert ensure_dataset(data_dir, "fashion_mnist", download=True) == debian_dir
    # All four files come from the Debian folder, none from the incomplete data folder.
    assert_split_equal(data_dir, "fashion_mnist", arrays)
    assert no_download == []


def test_data_folder_preferred_over_debian(tmp_path: Path, debian_dir: Path) -> None:
    write_split_files(debian_dir, MNIST_FILES, seed=23, compress=True)
    data_dir = tmp_path / "data"
    arrays = write_split_files(data_dir / "FashionMNIST" / "raw", MNIST_FILES, seed=24)

    assert ensure_dataset(data_dir, "fashion_mnist", download=False) == data_dir / "FashionMNIST" / "raw"
    assert_split_equal(data_dir, "fashion_mnist", arrays)


def test_debian_folder_only_for_fashion_mnist(tmp_path: Path, debian_dir: Path) -> None:
    write_split_files(debian_dir, MNIST_FILES, seed=25, compress=True)

    for name in ("mnist", "kmnist"):
        with pytest.raises(DatasetError) as error:
            ensure_dataset(tmp_path / "data", name, download=False)
        assert str(raw_folder(tmp_path / "data", name)) in str(error.value)


def test_incomplete_debian_folder_rejected(tmp_path: Path, debian_dir: Path, no_download: list[str]) -> None:
    write_split_files(debian_dir, MNIST_FILES, seed=26, compress=True)
    (debian_dir / f"{TRAIN_LABELS}.gz").unlink()
    data_dir = tmp_path / "data"

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "fashion_mnist", download=True)

    message = str(error.value)
    assert no_download == ["FashionMNIST"]
    assert str(data_dir / "FashionMNIST" / "raw") in message
    assert str(debian_dir) in message
    assert "dataset-fashion-mnist" in message
    assert "Error downloading FashionMNIST" in message


def test_corrupt_debian_file_rejected(tmp_path: Path, debian_dir: Path) -> None:
    write_split_files(debian_dir, MNIST_FILES, seed=27, compress=True)
    path = debian_dir / f"{TRAIN_IMAGES}.gz"
    truncate(path, 100)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(tmp_path / "data", "fashion_mnist", download=False)

    message = str(error.value)
    assert str(path) in message
    assert "apt-get install --reinstall dataset-fashion-mnist" in message


def test_debian_folder_not_written(tmp_path: Path, debian_dir: Path) -> None:
    write_split_files(debian_dir, MNIST_FILES, seed=28, compress=True)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    before = folder_state(debian_dir)

    datamodule = MNISTDataModule(data_dir=str(data_dir), dataset="fashion_mnist", batch_size=16, download=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    list(datamodule.train_dataloader())

    assert folder_state(debian_dir) == before
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_datamodule_serves_fashion_mnist(tmp_path: Path, loader: str) -> None:
    data_dir = tmp_path / "data"
    arrays = write_split_files(data_dir / "FashionMNIST" / "raw", MNIST_FILES, seed=29, compress=True)
    datamodule = MNISTDataModule(data_dir=str(data_dir), dataset="fashion_mnist", loader=loader, batch_size=16, download=False)
    datamodule.prepare_data()
    datamodule.setup("fit")

    images, labels = next(iter(datamodule.val_dataloader()))

    assert datamodule.image_shape == (1, 28, 28)
    assert images.shape == (16, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    # The validation split is served in file order.
    expected = torch.from_numpy(arrays["test_images"]).unsqueeze(1).float() / 255
    assert torch.equal(images, expected)
    assert torch.equal(labels, torch.from_numpy(arrays["test_labels"]).long())


def test_real_debian_fashion_mnist(tmp_path: Path) -> None:
    folder = datasets.DEBIAN_FASHION_MNIST_DIR
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: install the Debian package dataset-fashion-mnist to run this test")
    data_dir = tmp_path / "empty"

    assert ensure_dataset(data_dir, "fashion_mnist", download=False) == folder
    train = load_split(data_dir, "fashion_mnist", "train")
    test = load_split(data_dir, "fashion_mnist", "test")

    assert train.images.shape == (60000, 28, 28)
    assert test.images.shape == (10000, 28, 28)
    assert train.labels.shape == (60000,)
    assert test.labels.shape == (10000,)
    assert train.labels.unique().tolist() == list(range(10))
    assert test.labels.unique().tolist() == list(range(10))
    # Fashion-MNIST's test split has 1,000 images of each class.
    assert test.labels.bincount().tolist() == [1000] * 10


# KMNIST


def test_kmnist_layout(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # MNIST files in the same data folder must not be read for KMNIST.
    write_split_files(data_dir / "MNIST" / "raw", MNIST_FILES, seed=30)
    arrays = write_split_files(data_dir / "KMNIST" / "raw", MNIST_FILES, seed=31, compress=True)

    assert raw_folder(data_dir, "kmnist") == data_dir / "KMNIST" / "raw"
    assert ensure_dataset(data_dir, "kmnist", download=False) == data_dir / "KMNIST" / "raw"
    assert_split_equal(data_dir, "kmnist", arrays)


def test_kmnist_missing_names_folder(tmp_path: Path, no_download: list[str]) -> None:
    data_dir = tmp_path / "data"
    write_split_files(data_dir / "MNIST" / "raw", MNIST_FILES, seed=32)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "kmnist", download=True)

    message = str(error.value)
    assert no_download == ["KMNIST"]
    assert str(data_dir / "KMNIST" / "raw") in message
    assert TRAIN_IMAGES in message


# EMNIST digits


@pytest.mark.parametrize("compress", [False, True])
def test_emnist_digits_upright(tmp_path: Path, compress: bool) -> None:
    data_dir = tmp_path / "data"
    raw = data_dir / "EMNIST" / "raw"
    arrays = write_split_files(raw, EMNIST_FILES, seed=40, compress=compress, transpose=True)

    assert ensure_dataset(data_dir, "emnist_digits", download=False) == raw
    assert_split_equal(data_dir, "emnist_digits", arrays)
    # The fixture's digits are asymmetric, so the stored files differ from the upright images.
    assert not np.array_equal(arrays["train_images"], arrays["train_images"].transpose(0, 2, 1))


def test_emnist_digits_batch_upright(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    arrays = write_split_files(data_dir / "EMNIST" / "raw", EMNIST_FILES, seed=41, compress=True, transpose=True)
    datamodule = MNISTDataModule(data_dir=str(data_dir), dataset="emnist_digits", batch_size=NUM_TEST, download=False)
    datamodule.prepare_data()
    datamodule.setup("fit")

    images, labels = next(iter(datamodule.val_dataloader()))

    assert torch.equal(images, torch.from_numpy(arrays["test_images"]).unsqueeze(1).float() / 255)
    assert torch.equal(labels, torch.from_numpy(arrays["test_labels"]).long())


def test_emnist_digits_ignores_mnist_names(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_split_files(data_dir / "EMNIST" / "raw", MNIST_FILES, seed=42)

    with pytest.raises(DatasetError) as error:
        ensure_dataset(data_dir, "emnist_digits", download=False)

    message = str(error.value)
    assert str(data_dir / "EMNIST" / "raw") in message
    for file_name in EMNIST_FILES:
        assert file_name in message


def test_emnist_digits_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits = []

    def fail_download(self: torchvision.datasets.EMNIST) -> None:
        splits.append(self.split)
        raise RuntimeError("Error downloading gzip.zip")

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setattr(torchvision.datasets.EMNIST, "download", fail_download)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data_dir = tmp_path / "data"

    with pytest.raises(DatasetError) as error:
        MNISTDataModule(data_dir=str(data_dir), dataset="emnist_digits", download=True).prepare_data()

    message = str(error.value)
    assert splits == ["digits"]
    assert str(data_dir / "EMNIST" / "raw") in message
    for file_name in EMNIST_FILES:
        assert file_name in message
    assert "Error downloading gzip.zip" in message
    assert "--data.data_dir" in message


def test_unknown_dataset_lists_emnist_digits() -> None:
    with pytest.raises(DatasetError) as error:
        MNISTDataModule(dataset="emnist_letters")

    message = str(error.value)
    assert "'emnist_letters'" in message
    assert "emnist_digits" in message
