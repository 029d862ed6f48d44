"""The LightningDataModule that serves MNIST and its relatives."""

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

from gan_lightning.datasets import DATASETS, ImageSet, ensure_dataset, load_split
from gan_lightning.idx import DatasetError
from gan_lightning.loader import DeviceBatchLoader, EpochShuffle


class MNISTDataModule(L.LightningDataModule):
    """MNIST, Fashion-MNIST or KMNIST: the 60,000 training images for training and the 10,000
    test images as the validation split.

    Args:
        data_dir: folder holding ``<Name>/raw/`` in torchvision's layout; the data set is
            downloaded there when its files are missing and the network allows.
        dataset: one of ``mnist``, ``fashion_mnist``, ``kmnist``.
        batch_size: images per batch on each process.
        num_workers: worker processes of the ``torchvision`` loader (unused by ``device``).
        loader: ``device`` keeps the whole data set as one uint8 tensor on the training device
            and serves batches by index; ``torchvision`` uses a ``DataLoader`` that converts each
            image on its own, for data sets too large for device memory.
        seed: seed of the shuffling order; epoch ``e`` uses ``seed + e``.
        download: try to download missing files in ``prepare_data``.
    """

    def __init__(
        self,
        data_dir: str = "data",
        dataset: str = "mnist",
        batch_size: int = 128,
        num_workers: int = 0,
        loader: Literal["device", "torchvision"] = "device",
        seed: int = 0,
        download: bool = True,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise DatasetError(
                f"Unknown data set {dataset!r}. Pass --data.dataset with one of: "
                f"{', '.join(DATASETS)}."
            )
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}. Pass --data.batch_size 128.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}.")
        self.save_hyperparameters(logger=False)
        self.train_set: ImageSet | None = None
        self.val_set: ImageSet | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image; known after ``setup``."""
        if self.train_set is None:
            raise RuntimeError("image_shape is known only after setup().")
        return (1, *self.train_set.images.shape[1:])

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node, so only that process downloads.
        ensure_dataset(self.hparams.data_dir, self.hparams.dataset, download=self.hparams.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        ensure_dataset(self.hparams.data_dir, self.hparams.dataset, download=False)
        self.train_set = load_split(self.hparams.data_dir, self.hparams.dataset, "train")
        self.val_set = load_split(self.hparams.data_dir, self.hparams.dataset, "test")

    def _process_grid(self) -> tuple[int, int, torch.device]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1, torch.device("cpu")
        return trainer.global_rank, trainer.world_size, trainer.strategy.root_device

    def _device_loader(self, split: ImageSet, shuffle: bool, drop_last: bool) -> DeviceBatchLoader:
        rank, world_size, device = self._process_grid()
        sampler = EpochShuffle(len(split.images), shuffle, self.hparams.seed, rank, world_size)
        return DeviceBatchLoader(
            split.images.to(device),
            split.labels.to(device),
            self.hparams.batch_size,
            sampler,
            drop_last=drop_last,
        )

    def _torchvision_loader(self, train: bool, drop_last: bool) -> DataLoader:
        dataset_class = DATASETS[self.hparams.dataset]
        dataset = dataset_class(
            root=str(Path(self.hparams.data_dir).expanduser()), train=train, transform=ToTensor(), download=False
        )
        workers = self.hparams.num_workers
        # Lightning swaps in a DistributedSampler when several processes train.
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=train,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DeviceBatchLoader | DataLoader:
        # Whole batches only, so BatchNorm never gets a batch of one image.
        if self.hparams.loader == "device":
            return self._device_loader(self.train_set, shuffle=True, drop_last=True)
        return self._torchvision_loader(train=True, drop_last=True)

    def val_dataloader(self) -> DeviceBatchLoader | DataLoader:
        if self.hparams.loader == "device":
            return self._device_loader(self.val_set, shuffle=False, drop_last=False)
        return self._torchvision_loader(train=False, drop_last=False)
