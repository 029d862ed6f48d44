"""Draw samples and latent-space interpolations from a trained generator.

    python -m gan_lightning.sample --ckpt_path RUN/checkpoints/last.ckpt --num_samples 10000 --output samples.npz
    python -m gan_lightning.sample --ckpt_path RUN/checkpoints/last.ckpt --num_samples 64 --output grid.png
    python -m gan_lightning.sample --ckpt_path RUN/checkpoints/last.ckpt --digit 7 --num_samples 64 --output sevens.png
    python -m gan_lightning.sample --ckpt_path RUN/checkpoints/last.ckpt --interpolate --output strip.png
    python -m gan_lightning.sample --ckpt_path RUN/checkpoints/last.ckpt --interpolate --digit 3 --to_digit 8 --output morph.gif

An ``.npz`` file contains ``images``, uint8 (N, 28, 28) with 0 as black; a ``.png`` file is a grid.
A conditional generator draws the class given by ``--digit``, or every class equally often.

With ``--interpolate``, each of the ``--num_samples`` rows (default 8) is a path sampled at
``--steps`` points (default 10). Without ``--to_digit``, the noise of row r moves from the first
to the second vector of the r-th pair drawn from ``--seed``, along a great circle
(``--path slerp``, the default) or a straight line (``--path linear``), and the class stays
``--digit`` (or row r gets class r mod num_classes). With ``--to_digit``, the noise of each row
stays the first vector of its pair and the class weights blend linearly from ``--digit`` to
``--to_digit``. A ``.png`` is a strip with one row per path and one column per step. A ``.gif``
has one frame per step, and each frame is a grid of all rows, laid out as the sample grid is. An
``.npz`` contains ``images``, uint8 (rows, steps, 28, 28).

The checkpoint is read without executing pickled code.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid, save_image

from gan_lightning import labels as labels_lib
from gan_lightning.checkpoint import CheckpointError, load_generator
from gan_lightning.images import as_images, to_uint8
from gan_lightning.interpolation import PATHS, class_batch, noise_batch

DEFAULT_NUM_SAMPLES = 10000
DEFAULT_ROWS = 8  # interpolation paths drawn when --num_samples is not given
DEFAULT_STEPS = 10
GIF_FRAME_MS = 100  # display time of one GIF frame, in milliseconds
GRID_PADDING = 2  # pixels of black border around each image in .png and .gif grids


@torch.no_grad()
def generate_from_noise(
    generator: nn.Module,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 1000,
    device: str = "cpu",
) -> torch.Tensor:
    """Generate images (N, C, H, W) in [0, 1] on the CPU from noise z (N, z_dim) in batches.

    labels: None, or class indices (N,) or class weights (N, num_classes) for a conditional
    generator. A conditional generator without labels gets balanced labels over all of z (see
    ``labels.balanced_labels``), so the images do not depend on batch_size.
    """
    generator = generator.to(device).eval()
    num_classes = labels_lib.num_classes_of(generator)
    if labels is not None and not num_classes:
        raise ValueError("Labels were given, but the generator is unconditional. Pass labels=None.")
    if num_classes and labels is None:
        labels = labels_lib.balanced_labels(len(z), num_classes)
    if labels is not None and len(labels) != len(z):
        raise ValueError(f"Need one label per noise vector: {len(z)} noise vectors, got {len(labels)} labels.")

    batches = []
    for start in range(0, len(z), batch_size):
        z_batch = z[start : start + batch_size].to(device)
        label_batch = None if labels is None else labels[start : start + batch_size].to(device)
        images = labels_lib.generate(generator, z_batch, label_batch)
        batches.append(as_images(images.float()).cpu())
    return torch.cat(batches)


def generate(
    generator: nn.Module,
    num_samples: int,
    seed: int = 0,
    batch_size: int = 1000,
    device: str = "cpu",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw ``num_samples`` images (N, C, H, W) in [0, 1] on the CPU from seeded noise.

    labels: as in ``generate_from_noise``, one per sample. The same seed and labels give the same images.
    """
    # All noise is drawn at once, so the images do not depend on batch_size.
    z = torch.randn(num_samples, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    return generate_from_noise(generator, z, labels, batch_size=batch_size, device=device)


def endpoint_noise(rows: int, z_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the end points of ``rows`` paths: start and end noise, each (rows, z_dim).

    Row r uses the r-th pair of vectors that the seed draws, in the same order as
    ``torch.randn(rows, 2, z_dim)``.
    """
    pairs = torch.randn(rows, 2, z_dim, generator=torch.Generator().manual_seed(seed))
    return pairs[:, 0], pairs[:, 1]


def interpolate(
    generator: nn.Module,
    rows: int,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    path: str = "slerp",
    digit: int | None = None,
    to_digit: int | None = None,
    batch_size: int = 1000,
    device: str = "cpu",
) -> torch.Tensor:
    """Generate ``rows`` interpolation paths of ``steps`` images: (rows, steps, C, H, W) in [0, 1].

    Without ``to_digit`` the noise moves along ``path`` and the class is ``digit`` (for a
    conditional generator without ``digit``, row r gets class r mod num_classes). With
    ``to_digit`` the noise of each row stays the start vector and the class weights blend
    linearly from ``digit`` to ``to_digit``.
    """
    num_classes = labels_lib.num_classes_of(generator)
    start, end = endpoint_noise(rows, generator.z_dim, seed)

    if to_digit is not None:
        if digit is None or not num_classes:
            raise ValueError("to_digit needs digit and a conditional generator.")
        start_weights = labels_lib.label_weights(torch.full((rows,), digit), num_classes)
        end_weights = labels_lib.label_weights(torch.full((rows,), to_digit), num_classes)
        z, row_labels = class_batch(start, start_weights, end_weights, steps)
    else:
        if digit is not None:
            row_labels = torch.full((rows,), digit)
        elif num_classes:
            row_labels = labels_lib.balanced_labels(rows, num_classes)
        else:
            row_labels = None
        z, row_labels = noise_batch(start, end, steps, path, row_labels)

    images = generate_from_noise(generator, z, row_labels, batch_size=batch_size, device=device)
    return images.reshape(rows, steps, *images.shape[1:])


def write_samples(images: torch.Tensor, output: Path) -> None:
    """Write images (N, C, H, W) in [0, 1] as an ``.npz`` of uint8 (N, H, W) or a ``.png`` grid."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npz":
        np.savez_compressed(output, images=to_uint8(images[:, 0]).numpy())
    else:
        save_image(images, output, nrow=max(1, math.isqrt(len(images))), padding=GRID_PADDING)


def grid_image(images: torch.Tensor, images_per_row: int) -> Image.Image:
    """Lay out images (N, C, H, W) in [0, 1] as one Pillow image, grey ("L") for one channel."""
    grid = to_uint8(make_grid(images, nrow=images_per_row, padding=GRID_PADDING))  # (3, H, W)
    if images.shape[1] == 1:
        # make_grid copies one channel into three, and any one of them is the grey image.
        return Image.fromarray(grid[0].numpy())  # uint8 (H, W) becomes mode "L"
    return Image.fromarray(grid.permute(1, 2, 0).numpy())  # uint8 (H, W, 3) becomes mode "RGB"


def write_interpolation(images: torch.Tensor, output: Path) -> None:
    """Write interpolation images (rows, steps, C, H, W) in [0, 1] as ``.png``, ``.gif`` or ``.npz``.

    A ``.png`` is a strip with one row per path. A ``.gif`` has one frame per step, and each frame
    is a grid of the rows. An ``.npz`` contains ``images``, uint8 (rows, steps, H, W) of the first
    channel.
    """
    rows, steps = images.shape[:2]
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npz":
        np.savez_compressed(output, images=to_uint8(images[:, :, 0]).numpy())
    elif output.suffix == ".gif":
        frames = [grid_image(images[:, step], max(1, math.isqrt(rows))) for step in range(steps)]
        # NOTE: Pillow merges a frame that equals the one before it into one longer frame, so
        # when the grids of two consecutive steps are identical the file has fewer than ``steps`` frames.
        frames[0].save(output, save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
    else:
        grid_image(images.flatten(0, 1), steps).save(output)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gan_lightning.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="Checkpoint written by training (.ckpt).")
    parser.add_argument(
        "--num_samples",
        type=int,
        help=f"Number of images to draw (default: {DEFAULT_NUM_SAMPLES}), or of paths with --interpolate "
        f"(default: {DEFAULT_ROWS}).",
    )
    parser.add_argument(
        "--output",
        default="samples.npz",
        help="Output file: .npz for arrays, .png for a grid or strip, .gif for an animation (--interpolate only).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the noise; the same seed gives the same images.")
    parser.add_argument("--batch_size", type=int, default=1000, help="Images generated per forward pass.")
    parser.add_argument("--device", default="cpu", help="Device to generate on, for example cpu or cuda.")
    parser.add_argument(
        "--digit", type=int, help="Class to draw from a conditional generator (default: every class equally often)."
    )
    parser.add_argument(
        "--interpolate",
        action="store_true",
        help="Draw interpolation paths through the latent space instead of samples.",
    )
    parser.add_argument(
        "--steps", type=int, help=f"Images per interpolation path, at least 2 (default: {DEFAULT_STEPS})."
    )
    parser.add_argument("--path", choices=PATHS, help="Path between the noise end points (default: slerp).")
    parser.add_argument(
        "--to_digit", type=int, help="With --interpolate and --digit: blend the class from --digit to this class."
    )
    parser.add_argument(
        "--raw_weights",
        action="store_true",
        help="Draw from the generator's trained weights even when the checkpoint keeps their moving average (ema_decay).",
    )
    return parser


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject option values and combinations that need no checkpoint to be judged."""
    if args.num_samples is None:
        args.num_samples = DEFAULT_ROWS if args.interpolate else DEFAULT_NUM_SAMPLES
    if args.num_samples <= 0:
        parser.error(f"--num_samples must be positive, got {args.num_samples}.")
    if args.batch_size <= 0:
        parser.error(f"--batch_size must be positive, got {args.batch_size}.")

    suffix = Path(args.output).suffix
    if suffix == ".gif" and not args.interpolate:
        parser.error(
            f"--output {args.output!r}: a .gif is written only with --interpolate. Add --interpolate or write .png."
        )
    if suffix not in (".npz", ".png", ".gif"):
        parser.error(f"--output must end in .npz, .png or .gif, got {args.output!r}.")

    if not args.interpolate:
        for option in ("steps", "path", "to_digit"):
            if getattr(args, option) is not None:
                parser.error(f"--{option} applies only with --interpolate. Add --interpolate or remove --{option}.")
    if args.steps is not None and args.steps < 2:
        parser.error(f"--steps must be at least 2, got {args.steps}.")
    if args.to_digit is not None and args.digit is None:
        parser.error(f"--to_digit {args.to_digit} needs --digit, the class to start from.")


def _check_digits(parser: argparse.ArgumentParser, args: argparse.Namespace, num_classes: int) -> None:
    """Reject --digit and --to_digit values that the loaded generator cannot draw."""
    for option in ("digit", "to_digit"):
        value = getattr(args, option)
        if value is None:
            continue
        if not num_classes:
            parser.error(
                f"--{option} {value}: the generator in {args.ckpt_path} is unconditional, so it cannot draw a "
                f"chosen class. Remove --{option}, or pass a checkpoint of a conditional generator."
            )
        if not 0 <= value < num_classes:
            parser.error(
                f"--{option} must be a class in [0, {num_classes}) for this generator, got {value}. "
                f"Pass a class from 0 to {num_classes - 1}."
            )
    if args.to_digit is not None and args.to_digit == args.digit:
        parser.error(f"--to_digit must differ from --digit, got {args.to_digit} for both.")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, draw the samples or interpolations and write them."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _check_options(parser, args)
    try:
        generator = load_generator(args.ckpt_path, ema=not args.raw_weights)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    _check_digits(parser, args, labels_lib.num_classes_of(generator))
    output = Path(args.output)

    if args.interpolate:
        steps = DEFAULT_STEPS if args.steps is None else args.steps
        images = interpolate(
            generator,
            args.num_samples,
            steps,
            seed=args.seed,
            path=args.path or "slerp",
            digit=args.digit,
            to_digit=args.to_digit,
            batch_size=args.batch_size,
            device=args.device,
        )
        write_interpolation(images, output)
        print(f"Wrote {args.num_samples} interpolation paths of {steps} steps to {output}")
        return

    labels = None if args.digit is None else torch.full((args.num_samples,), args.digit)
    images = generate(
        generator, args.num_samples, seed=args.seed, batch_size=args.batch_size, device=args.device, labels=labels
    )
    write_samples(images, output)
    print(f"Wrote {len(images)} samples to {output}")


if __name__ == "__main__":
    main()
