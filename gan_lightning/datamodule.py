"""The LightningDataModule that serves MNIST and its relatives."""

from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from gan_lightning.datasets import DATASETS, SPECS, ImageSet, ensure_dataset, load_split
from gan_lightning.idx import DatasetError
from gan_lightning.loader import DeviceBatchLoader, EpochShuffle


class ImageSetDataset(Dataset):
    """A map-style dataset over an ``ImageSet`` that converts one image per item.

    Items are float (1, H, W) images in [0, 1], the values of torchvision's ``ToTensor()``, and
    int labels.
    """

    def __init__(self, image_set: ImageSet):
        self.image_set = image_set

    def __len__(self) -> int:
        return len(self.image_set.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image_set.images[index].unsqueeze(0).to(torch.float32).div(255)
        return image, int(self.image_set.labels[index])


class MNISTDataModule(L.LightningDataModule):
    """MNIST or one of its relatives: the training split for training and the test split
    (10,000 images for MNIST, Fashion-MNIST and KMNIST; 40,000 for EMNIST digits) for validation.

    Args:
        data_dir: folder containing ``<Name>/raw/`` in torchvision's layout, with each IDX file
            uncompressed or as ``.gz``. Missing files are downloaded there when the network
            allows. Fashion-MNIST is also found in the folder of the Debian package
            ``dataset-fashion-mnist``.
        dataset: one of ``mnist``, ``fashion_mnist``, ``kmnist``, ``emnist_digits`` (EMNIST's
            digits split, 240,000 training images, served upright like MNIST).
        batch_size: images per batch on each process.
        num_workers: worker processes of the ``torchvision`` loader (unused by ``device``).
        loader: ``device`` keeps the whole data set as one uint8 tensor on the training device
            and serves batches by index; ``torchvision`` uses a ``DataLoader`` that converts each
            image on its own in CPU memory, for data sets too large for device memory.
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
    def num_classes(self) -> int:
        """Number of classes of the data set's labels, which conditional networks must cover."""
        return SPECS[self.hparams.dataset].num_classes

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

    def _torchvision_loader(self, split: ImageSet, train: bool, drop_last: bool) -> DataLoader:
        workers = self.hparams.num_workers
        # Lightning swaps in a DistributedSampler when several processes train.
        return DataLoader(
            ImageSetDataset(split),
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
        return self._torchvision_loader(self.train_set, train=True, drop_last=True)

    def val_dataloader(self) -> DeviceBatchLoader | DataLoader:
        if self.hparams.loader == "device":
            return self._device_loader(self.val_set, shuffle=False, drop_last=False)
        return self._torchvision_loader(self.val_set, train=False, drop_last=False)
