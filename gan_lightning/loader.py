"""A batch loader that keeps a whole uint8 data set on the training device.

MNIST is 47 MB as uint8, so it fits on any device. Batches are gathered by index and converted
to float on the device, which removes the per-image PIL conversion and the worker processes of a
torchvision ``DataLoader``.
"""

from collections.abc import Iterator

import torch


class EpochShuffle:
    """Per-epoch order of indices for one rank, like ``torch.utils.data.DistributedSampler``.

    The order of epoch ``e`` depends only on ``seed + e``. Each rank takes every
    ``world_size``-th index of that permutation, so the ranks together see each example at most
    once per epoch. Lightning calls ``set_epoch`` on a loader's ``sampler`` before every epoch,
    which keeps the order reproducible after a resume.
    """

    def __init__(self, num_items: int, shuffle: bool, seed: int, rank: int, world_size: int):
        self.num_items = num_items
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items // self.world_size

    def indices(self) -> torch.Tensor:
        """Return this rank's indices for the current epoch, int64 of length ``len(self)``."""
        used = len(self) * self.world_size
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator)[:used]
        else:
            order = torch.arange(used)
        return order[self.rank :: self.world_size]


class DeviceBatchLoader:
    """Serve batches of ``(images, labels)`` from uint8 tensors held on one device.

    ``images`` are uint8 (N, H, W) and are served as float (B, 1, H, W) in [0, 1], the same values
    as torchvision's ``ToTensor()``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        sampler: EpochShuffle,
        drop_last: bool = True,
    ):
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.sampler = sampler
        self.drop_last = drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # One host-to-device copy of the epoch's order, then every gather runs on the device.
        order = self.sampler.indices().to(self.images.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            # (B, H, W) uint8 -> (B, 1, H, W) float in [0, 1]
            images = self.images[index].unsqueeze(1).float().div_(255)
            yield images, self.labels[index]
