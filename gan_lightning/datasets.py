"""Finding, downloading and loading MNIST-like data sets as uint8 tensors.

Every data set here uses torchvision's layout: ``DATA_DIR/<Name>/raw/`` holding the four
uncompressed IDX files. Loading goes through torchvision's own classes after the files have
been checked, so a truncated or corrupt file is reported by name.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets as tv_datasets

from gan_lightning.idx import DatasetError, check_idx_pair

DATASETS: dict[str, type[tv_datasets.MNIST]] = {
    "mnist": tv_datasets.MNIST,
    "fashion_mnist": tv_datasets.FashionMNIST,
    "kmnist": tv_datasets.KMNIST,
}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageSet:
    """One split of a data set: uint8 images (N, H, W) with 0 as black, int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


def _dataset_class(name: str) -> type[tv_datasets.MNIST]:
    if name not in DATASETS:
        raise DatasetError(
            f"Unknown data set {name!r}. Pass --data.dataset with one of: {', '.join(DATASETS)}."
        )
    return DATASETS[name]


def raw_folder(data_dir: str | Path, name: str) -> Path:
    """Return the folder where torchvision keeps the IDX files of data set ``name``."""
    return Path(data_dir).expanduser() / _dataset_class(name).__name__ / "raw"


def _missing_files(folder: Path) -> list[str]:
    names = [file for pair in SPLIT_FILES.values() for file in pair]
    return [name for name in names if not (folder / name).is_file()]


def ensure_dataset(data_dir: str | Path, name: str, download: bool = True) -> Path:
    """Make sure the IDX files of ``name`` are under ``data_dir``, downloading them if allowed.

    Returns the raw folder. Raises ``DatasetError`` naming the folder and the option to pass when
    the files are missing and cannot be downloaded, or when a file is truncated or corrupt.
    """
    cls = _dataset_class(name)
    folder = raw_folder(data_dir, name)
    missing = _missing_files(folder)
    if missing and download:
        try:
            cls(root=str(Path(data_dir).expanduser()), train=True, download=True)
        except (OSError, RuntimeError) as error:
            raise DatasetError(
                f"{name} files not found in {folder} (missing: {', '.join(missing)}) and the "
                f"download failed: {error}. Put the IDX files in that folder, or pass "
                "--data.data_dir DIR where DIR contains "
                f"{cls.__name__}/raw/ with the files."
            ) from error
        missing = _missing_files(folder)
    if missing:
        raise DatasetError(
            f"{name} files not found in {folder} (missing: {', '.join(missing)}). Put the IDX "
            f"files there, or pass --data.data_dir DIR where DIR contains {cls.__name__}/raw/, "
            "or allow the download on a machine with network access."
        )

    for images_file, labels_file in SPLIT_FILES.values():
        check_idx_pair(folder / images_file, folder / labels_file)
    return folder


def load_split(data_dir: str | Path, name: str, split: str) -> ImageSet:
    """Load one split ("train" or "test") of a checked data set as uint8 tensors."""
    folder = raw_folder(data_dir, name)
    images_file, labels_file = SPLIT_FILES[split]
    check_idx_pair(folder / images_file, folder / labels_file)

    dataset = _dataset_class(name)(
        root=str(Path(data_dir).expanduser()), train=split == "train", download=False
    )
    return ImageSet(images=dataset.data, labels=dataset.targets.long())
