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

    # Lightning 2.6 reads DataLoader.batch_sampler from every validation loader that has a
    # sampler (lightning.pytorch.utilities.data._is_dataloader_shuffled). This loader batches
    # by itself, so it has none.
    batch_sampler = None

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
        # Batches served so far in the current pass, stored in checkpoints with the epoch.
        self._batches_served = 0
        # (epoch, batches served) of a checkpoint, used by the next pass over that epoch.
        self._resume_position: tuple[int, int] | None = None

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator, so this body runs at the first next(), after Lightning has called set_epoch.
        first_batch = self._take_resume_position()
        # One host-to-device copy of the epoch's order, then every gather runs on the device.
        order = self.sampler.indices().to(self.images.device)
        self._batches_served = first_batch
        for batch in range(first_batch, len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            # (B, H, W) uint8 -> (B, 1, H, W) float in [0, 1]
            images = self.images[index].unsqueeze(1).float().div_(255)
            # Counted before the batch is handed out, so a checkpoint written while the batch
            # trains records it as served.
            self._batches_served = batch + 1
            yield images, self.labels[index]

    def state_dict(self) -> dict[str, int]:
        """Return the position in the current epoch: the epoch and the batches served in it.

        Lightning 2.6 stores the state of a stateful training loader in every checkpoint and
        passes it to ``load_state_dict`` on resume, so training continues mid-epoch with the
        batches that the interrupted run had not served yet.
        """
        return {"epoch": self.sampler.epoch, "batches_served": self._batches_served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Make the next pass over ``state_dict["epoch"]`` skip the batches already served."""
        self._resume_position = (int(state_dict["epoch"]), int(state_dict["batches_served"]))

    def _take_resume_position(self) -> int:
        """Return the batch at which this pass starts and forget the stored position.

        A position from another epoch is ignored: after a checkpoint written at the end of epoch
        e, Lightning resumes with epoch e + 1, which starts at its first batch.
        """
        position, self._resume_position = self._resume_position, None
        if position is None:
            return 0
        epoch, batches_served = position
        if epoch != self.sampler.epoch:
            return 0
        return min(batches_served, len(self))
