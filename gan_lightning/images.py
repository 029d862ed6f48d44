"""Conversions between generator outputs, image tensors and stored samples."""

import math

import torch


def as_images(batch: torch.Tensor, image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Reshape flat images (N, C*H*W) to (N, C, H, W); square one-channel when no shape is given."""
    if batch.dim() == 4:
        return batch
    if image_shape is None:
        side = math.isqrt(batch.shape[1])
        if side * side != batch.shape[1]:
            raise ValueError(f"Cannot infer an image shape for {batch.shape[1]} pixels; pass image_shape.")
        image_shape = (1, side, side)
    return batch.reshape(batch.shape[0], *image_shape)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Convert images in [0, 1] to uint8 in [0, 255] (0 is black), rounding to the nearest level."""
    return images.float().clamp(0, 1).mul(255).round().to(torch.uint8)
