"""Class-conditional generators and discriminators in the MLP and DCGAN layouts.

Each network wraps the matching unconditional network as ``body`` and gives it the label as
extra input. Generators join a label embedding to z, and discriminators join one to the image.
Labels are class indices, int64 ``(N,)``, or class weights, float ``(N, num_classes)``, as
described in ``gan_lightning.labels``.

A label embedding is a bias-free ``Linear(num_classes, features)``. A one-hot row selects one
column of its weight, as an embedding table would, and a mixed row blends the columns of its
classes, which lets a generator interpolate between two classes.

``spectral_norm`` in the discriminators wraps the layers of ``body`` only. The label embedding
is an input of ``body``, so it does not change how fast the logit can change with the image,
and normalizing it would cap the embedding of every class at unit norm.
"""

import torch
from torch import nn

from gan_lightning.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lightning.labels import label_weights
from gan_lightning.networks import Discriminator, Generator, check_sizes

IMAGE_SIDE = 28  # the DCGAN networks are sized for 28x28 images


def _label_embedding(num_classes: int, features: int) -> nn.Linear:
    embedding = nn.Linear(num_classes, features, bias=False)
    # Standard normal entries, the default initialization of nn.Embedding, give label features
    # unit scale, like z.
    nn.init.normal_(embedding.weight)
    return embedding


def _check_values(labels: torch.Tensor) -> bool:
    """Return whether label values can be checked without a device sync or a graph break."""
    tracing = torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    return labels.device.type == "cpu" and not tracing


def _check_label_values(labels: torch.Tensor, num_classes: int) -> None:
    """Raise ValueError naming the first non-finite class weight or class index outside [0, num_classes)."""
    if labels.is_floating_point():
        non_finite = ~torch.isfinite(labels)
        if non_finite.any():
            raise ValueError(
                f"Class weights must be finite, got {labels[non_finite][0].item()}. "
                "Pass one-hot or mixed rows of finite weights."
            )
        return
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        raise ValueError(
            f"Class index {labels[outside][0].item()} is outside [0, {num_classes}). "
            f"Pass class indices from 0 to {num_classes - 1}."
        )


def _noise_and_label(z: torch.Tensor, labels: torch.Tensor, num_classes: int, embedding: nn.Linear) -> torch.Tensor:
    """Join noise (N, z_dim) and the label embedding (N, embed_dim) to a generator input (N, z_dim + embed_dim)."""
    weights = _class_weights(labels, num_classes, z.shape[0], embedding)
    return torch.cat([z, embedding(weights)], dim=1)


def _class_weights(labels: torch.Tensor, num_classes: int, batch_size: int, embedding: nn.Linear) -> torch.Tensor:
    """Validate the labels of ``batch_size`` samples and convert them to class weights (N, num_classes).

    The weights have the dtype and device of ``embedding``'s weight. Raises ValueError naming
    the invalid value when a class index is outside [0, num_classes), a class weight is not
    finite, or the dtype, the shape or the number of labels is wrong, and TypeError when
    ``labels`` is not a tensor.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"labels must be a torch.Tensor of class indices (N,) or class weights (N, {num_classes}), "
            f"got {type(labels).__name__}."
        )
    if labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(
            f"labels must be int64 class indices (N,) or float class weights (N, {num_classes}), "
            f"got dtype {labels.dtype}."
        )
    labels = labels.to(embedding.weight.device)

    # Checking values reads one bool back from the device, so it runs on CPU tensors in eager mode
    # only. A GPU training step then does not wait for the labels, and compiled or exported graphs
    # do not break. The data sets' labels are checked when they are loaded.
    if _check_values(labels):
        _check_label_values(labels, num_classes)

    weights = label_weights(labels, num_classes, dtype=embedding.weight.dtype)
    if weights.shape[0] != batch_size:
        raise ValueError(f"Got {weights.shape[0]} labels for a batch of {batch_size}. Pass one label per sample.")
    return weights


class ConditionalGenerator(nn.Module):
    """MLP generator conditioned on a class: ``Generator`` fed with z and a label embedding.

    z (N, z_dim) and the embedding (N, embed_dim) are joined to (N, z_dim + embed_dim), which
    passes h -> 2h -> 4h -> 8h -> im_dim with a Sigmoid on the pixels. ``body`` is that
    ``Generator``, so ``body.z_dim`` is z_dim + embed_dim.
    """

    def __init__(
        self, z_dim: int = 64, num_classes: int = 10, embed_dim: int = 16, im_dim: int = 784, hidden_dim: int = 128
    ):
        super().__init__()
        check_sizes(z_dim=z_dim, num_classes=num_classes, embed_dim=embed_dim, im_dim=im_dim, hidden_dim=hidden_dim)
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.im_dim = im_dim
        self.hidden_dim = hidden_dim
        self.label_embedding = _label_embedding(num_classes, embed_dim)
        self.body = Generator(z_dim + embed_dim, im_dim, hidden_dim)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Map noise (N, z_dim) and labels to flat images (N, im_dim) in [0, 1].

        Labels are (N,) class indices or (N, num_classes) class weights.
        """
        return self.body(_noise_and_label(z, labels, self.num_classes, self.label_embedding))


class ConditionalDiscriminator(nn.Module):
    """MLP discriminator conditioned on a class: ``Discriminator`` fed with image and label embedding.

    The flat image (N, im_dim) and a label embedding of E = max(hidden_dim, num_classes)
    features are joined to (N, im_dim + E), which passes 4h -> 2h -> h -> 1 logit (no Sigmoid).
    The first Linear mixes the embedding anyway, so every size from num_classes up lets D learn
    the same label features, and hidden_dim keeps the size in step with the network.
    ``spectral_norm`` wraps the Linear layers of ``body`` in spectral normalization (see
    ``gan_lightning.networks.apply_spectral_norm``).
    """

    def __init__(self, num_classes: int = 10, im_dim: int = 784, hidden_dim: int = 128, spectral_norm: bool = False):
        super().__init__()
        check_sizes(num_classes=num_classes, im_dim=im_dim, hidden_dim=hidden_dim)
        self.num_classes = num_classes
        self.im_dim = im_dim
        self.hidden_dim = hidden_dim
        self.spectral_norm = spectral_norm
        label_features = max(hidden_dim, num_classes)
        self.label_embedding = _label_embedding(num_classes, label_features)
        self.body = Discriminator(im_dim + label_features, hidden_dim, spectral_norm)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Map images (N, im_dim) or (N, C, H, W) and labels to logits (N, 1).

        Labels are (N,) class indices or (N, num_classes) class weights.
        """
        flat = images.flatten(1)
        weights = _class_weights(labels, self.num_classes, flat.shape[0], self.label_embedding)
        return self.body(torch.cat([flat, self.label_embedding(weights)], dim=1))


class ConditionalDCGANGenerator(nn.Module):
    """Convolutional generator conditioned on a class: ``DCGANGenerator`` fed with z and label embedding.

    z (N, z_dim) and the embedding (N, embed_dim) are joined to (N, z_dim + embed_dim) -> Linear
    -> (N, 2w, 7, 7) -> (N, w, 14, 14) -> (N, channels, 28, 28) in [0, 1]. ``body`` is that
    ``DCGANGenerator``, so ``body.z_dim`` is z_dim + embed_dim.
    """

    def __init__(
        self, z_dim: int = 64, num_classes: int = 10, embed_dim: int = 16, width: int = 32, channels: int = 1
    ):
        super().__init__()
        check_sizes(z_dim=z_dim, num_classes=num_classes, embed_dim=embed_dim, width=width, channels=channels)
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.width = width
        self.channels = channels
        self.label_embedding = _label_embedding(num_classes, embed_dim)
        self.body = DCGANGenerator(z_dim + embed_dim, width, channels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Map noise (N, z_dim) and labels to images (N, channels, 28, 28) in [0, 1].

        Labels are (N,) class indices or (N, num_classes) class weights.
        """
        return self.body(_noise_and_label(z, labels, self.num_classes, self.label_embedding))


class ConditionalDCGANDiscriminator(nn.Module):
    """Convolutional discriminator conditioned on a class: the label becomes one more input plane.

    A label embedding of 28 * 28 features, shaped (N, 1, 28, 28), is joined to the image channels,
    and ``body``, a ``DCGANDiscriminator`` with channels + 1 input channels, maps the result
    (N, channels + 1, 28, 28) -> (N, w, 14, 14) -> (N, 2w, 7, 7) -> one logit (N, 1).
    ``batch_norm`` and ``spectral_norm`` are passed to ``body``, so spectral normalization wraps
    its convolutions and its final Linear.
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 32,
        channels: int = 1,
        batch_norm: bool = True,
        spectral_norm: bool = False,
    ):
        super().__init__()
        check_sizes(num_classes=num_classes, width=width, channels=channels)
        self.num_classes = num_classes
        self.width = width
        self.channels = channels
        self.batch_norm = batch_norm
        self.spectral_norm = spectral_norm
        self.label_embedding = _label_embedding(num_classes, IMAGE_SIDE * IMAGE_SIDE)
        self.body = DCGANDiscriminator(width, channels + 1, batch_norm, spectral_norm)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Map images (N, channels, 28, 28) or flat (N, channels*784), and labels, to logits (N, 1).

        Labels are (N,) class indices or (N, num_classes) class weights.
        """
        images = images.reshape(-1, self.channels, IMAGE_SIDE, IMAGE_SIDE)
        weights = _class_weights(labels, self.num_classes, images.shape[0], self.label_embedding)
        label_plane = self.label_embedding(weights).view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
        return self.body(torch.cat([images, label_plane], dim=1))
