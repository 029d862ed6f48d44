"""Scoring a generator's samples, shared by validation during training and ``python -m gan_lightning.evaluate``.

score_generator() draws a fixed number of fakes from seeded noise and scores them with a SampleQuality that already
contains the real statistics. Training and evaluate both call it, so the same weights, sample count, seed and device
give the same numbers in both places.
"""

from collections.abc import Iterable

import torch
from torch import nn

from gan_lightning.images import as_images
from gan_lightning.labels import balanced_labels, generate, num_classes_of
from gan_lightning.metrics import InceptionFID, SampleQuality

# Metrics that validation logs as val/<name>, in this order.
VAL_METRICS = ("fid", "kid", "is", "kl_uniform", "classes")

# Images per generator forward pass and per SampleQuality update. The noise is drawn before it is split, so the
# images do not depend on this number. Batches of 100 keep the classifier's activations near 10 MB: scoring 10,000
# images took 2.8 s in batches of 100 and 6.6 s in batches of 1000 (one thread of a shared 2-core x86-64 CPU,
# torch 2.14.1).
EVAL_BATCH_SIZE = 100


class ValidationQuality:
    """The SampleQuality of a training run and whether it contains the complete real statistics.

    A plain object rather than an nn.Module, so assigning it to a LightningModule registers nothing: the classifier
    weights and metric states stay out of state_dict() and the checkpoints, and Lightning's .to() and .cpu() calls
    leave the real statistics alone. The module moves it with to().
    """

    def __init__(self, quality: SampleQuality | None = None) -> None:
        if quality is None:
            # Building the classifier draws random initial weights before the stored ones are loaded. The fork keeps
            # the caller's CPU random stream, so a run draws the same training noise with the metrics on or off.
            with torch.random.fork_rng(devices=[]):
                quality = SampleQuality()
        self.metrics = quality
        # Set after the first full validation pass, whose real images stay in the metrics for the rest of the run.
        self.real_complete = False

    def to(self, device: torch.device | str) -> "ValidationQuality":
        self.metrics.to(device)
        return self


def images_from_uint8(images: torch.Tensor) -> torch.Tensor:
    """Convert uint8 images (N, H, W) with 0 as black to float32 (N, 1, H, W) in [0, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"Expected uint8 images with 0 as black, got {images.dtype}.")
    return images.unsqueeze(1).float().div(255)


def add_real_images(quality: SampleQuality, images: torch.Tensor) -> None:
    """Add real images, float (N, 1, 28, 28) or (N, 784) in [0, 1], to quality in batches of EVAL_BATCH_SIZE."""
    for batch in images.split(EVAL_BATCH_SIZE):
        quality.update_real(batch)


def shard_bounds(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """Return the slice [start, stop) of num_samples that process rank scores.

    The slices are contiguous and in rank order, and their sizes differ by at most one, so the processes together
    score the same images in the same order as a single process.
    """
    base, extra = divmod(num_samples, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + int(rank < extra)


def eval_noise(num_samples: int, z_dim: int, seed: int) -> torch.Tensor:
    """Draw the noise (num_samples, z_dim) behind the scored fakes on the CPU, as gan_lightning.sample does."""
    return torch.randn(num_samples, z_dim, generator=torch.Generator().manual_seed(seed))


def eval_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """Return the classes (num_samples,) behind the scored fakes of a conditional generator: 0, 1, ..., 9, 0, ..."""
    return balanced_labels(num_samples, num_classes)


@torch.no_grad()
def generate_images(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Generate images for scoring. z: (N, z_dim) -> float32 (N, 1, 28, 28) on z's device.

    A conditional generator draws the classes ``labels`` (N,), balanced ones when None.

    Runs the generator in eval mode and restores its previous mode afterwards. Autocast is off, so the images do not
    depend on the trainer's mixed-precision setting. This is the only place where generator output becomes the
    images that the metrics score.
    """
    # A generator converted to bf16 or fp16 ("-true" precision) takes noise of its own dtype.
    dtype = next((p.dtype for p in generator.parameters() if p.is_floating_point()), z.dtype)
    was_training = generator.training
    generator.eval()
    try:
        with torch.autocast(device_type=z.device.type, enabled=False):
            output = generate(generator, z.to(dtype), None if labels is None else labels.to(z.device))
    finally:
        generator.train(was_training)
    return as_images(output.float())


def score_images(
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    quality: SampleQuality,
    inception: InceptionFID | None = None,
) -> dict[str, float | list[float]]:
    """Score batches of fakes, float (N, 1, 28, 28) or (N, 784) in [0, 1], against the reals in quality.

    A batch may be a pair (images, labels) for a conditional generator; the result then has label_accuracy.

    Returns SampleQuality.compute()'s dictionary, plus inception_fid when inception is given. Fakes added before
    are discarded, and the fake statistics are cleared again afterwards, so only the real ones stay.
    """
    metrics = [quality] if inception is None else [quality, inception]
    for metric in metrics:
        metric.reset_fake()
    try:
        for batch in batches:
            images, labels = batch if isinstance(batch, tuple) else (batch, None)
            quality.update_fake(images, labels)
            if inception is not None:
                inception.update_fake(images)
        result = quality.compute()
        if inception is not None:
            result["inception_fid"] = inception.compute()
    finally:
        for metric in metrics:
            metric.reset_fake()
    return result


def score_generator(
    generator: nn.Module,
    quality: SampleQuality,
    num_samples: int,
    seed: int,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    inception: InceptionFID | None = None,
) -> dict[str, float | list[float]]:
    """Generate num_samples fakes from the noise of seed and score them against the reals in quality.

    With world_size processes, each generates its shard_bounds() slice of the same noise, and torchmetrics gathers
    the statistics of all processes in compute(), which every process must call. generator needs a z_dim attribute.
    A conditional generator draws eval_labels() classes, and the result has label_accuracy.
    """
    start, stop = shard_bounds(num_samples, rank, world_size)
    z = eval_noise(num_samples, generator.z_dim, seed)[start:stop]
    num_classes = num_classes_of(generator)
    if not num_classes:
        batches = (generate_images(generator, z_batch.to(device)) for z_batch in z.split(EVAL_BATCH_SIZE))
        return score_images(batches, quality, inception)
    labels = eval_labels(num_samples, num_classes)[start:stop]
    pairs = (
        (generate_images(generator, z_batch.to(device), label_batch), label_batch)
        for z_batch, label_batch in zip(z.split(EVAL_BATCH_SIZE), labels.split(EVAL_BATCH_SIZE))
    )
    return score_images(pairs, quality, inception)
