"""Calling conditional and unconditional networks the same way.

A class-conditional network stores ``num_classes`` (a positive int) as an attribute and takes
labels as a second argument: ``generator(z, labels)`` and ``discriminator(images, labels)``.
Labels are either class indices, int64 ``(N,)``, or class weights, float ``(N, num_classes)``
(one-hot rows for one class, mixed rows to blend two classes). Unconditional networks have no
``num_classes`` attribute and take no labels. The functions here hide that difference.
"""

import torch
from torch import nn
from torch.nn import functional as F


def num_classes_of(network: nn.Module) -> int:
    """Return the classes a conditional network is conditioned on, or 0 for an unconditional one."""
    network = getattr(network, "_orig_mod", network)  # unwrap torch.compile
    return int(getattr(network, "num_classes", 0) or 0)


def label_weights(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return labels as class weights (N, num_classes): indices become one-hot rows, weights pass through."""
    if labels.is_floating_point():
        if labels.dim() != 2 or labels.shape[1] != num_classes:
            raise ValueError(
                f"Class weights must have shape (N, {num_classes}), got {tuple(labels.shape)}."
            )
        return labels.to(dtype)
    if labels.dim() != 1:
        raise ValueError(f"Class indices must have shape (N,), got {tuple(labels.shape)}.")
    return F.one_hot(labels.long(), num_classes).to(dtype)


def balanced_labels(num_samples: int, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Return 0, 1, ..., num_classes - 1, 0, 1, ...: int64 (num_samples,), each class equally often."""
    return torch.arange(num_samples, device=device) % num_classes


def generate(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``generator`` on noise ``z``, passing ``labels`` when it is conditional.

    A conditional generator without labels gets balanced labels (see ``balanced_labels``).
    """
    num_classes = num_classes_of(generator)
    if not num_classes:
        return generator(z)
    if labels is None:
        labels = balanced_labels(z.shape[0], num_classes, z.device)
    return generator(z, labels)


def discriminate(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Run ``discriminator`` on ``images``, passing ``labels`` when it is conditional."""
    if not num_classes_of(discriminator):
        return discriminator(images)
    if labels is None:
        raise ValueError("A conditional discriminator needs the labels of its images.")
    return discriminator(images, labels)
