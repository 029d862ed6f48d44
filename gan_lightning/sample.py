"""Draw samples from a trained generator.

    python -m gan_lightning.sample --ckpt_path RUN/checkpoints/last.ckpt --num_samples 10000 --output samples.npz
    python -m gan_lightning.sample --ckpt_path RUN/checkpoints/last.ckpt --num_samples 64 --output grid.png

An ``.npz`` file contains ``images``, uint8 (N, 28, 28) with 0 as black; a ``.png`` file is a grid.
The checkpoint is read without executing pickled code.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import save_image

from gan_lightning.checkpoint import CheckpointError, load_generator
from gan_lightning.images import as_images, to_uint8


@torch.no_grad()
def generate(generator: nn.Module, num_samples: int, seed: int = 0, batch_size: int = 1000, device: str = "cpu") -> torch.Tensor:
    """Draw ``num_samples`` images (N, C, H, W) in [0, 1] on the CPU from seeded noise."""
    generator = generator.to(device).eval()
    # All noise is drawn at once, so the images do not depend on batch_size.
    z_all = torch.randn(num_samples, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    batches = [as_images(generator(z.to(device)).float()).cpu() for z in z_all.split(batch_size)]
    return torch.cat(batches)


def write_samples(images: torch.Tensor, output: Path) -> None:
    """Write images (N, C, H, W) in [0, 1] as an ``.npz`` of uint8 (N, H, W) or a ``.png`` grid."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npz":
        np.savez_compressed(output, images=to_uint8(images[:, 0]).numpy())
    else:
        save_image(images, output, nrow=max(1, math.isqrt(len(images))), padding=2)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gan_lightning.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="Checkpoint written by training (.ckpt).")
    parser.add_argument("--num_samples", type=int, default=10000, help="Number of images to draw.")
    parser.add_argument("--output", default="samples.npz", help="Output file: .npz for arrays, .png for a grid.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the noise; the same seed gives the same images.")
    parser.add_argument("--batch_size", type=int, default=1000, help="Images generated per forward pass.")
    parser.add_argument("--device", default="cpu", help="Device to generate on, for example cpu or cuda.")
    args = parser.parse_args(argv)
    if args.num_samples <= 0:
        parser.error(f"--num_samples must be positive, got {args.num_samples}.")
    if args.batch_size <= 0:
        parser.error(f"--batch_size must be positive, got {args.batch_size}.")
    if Path(args.output).suffix not in (".npz", ".png"):
        parser.error(f"--output must end in .npz or .png, got {args.output!r}.")
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, draw the samples and write them."""
    args = _parse_args(argv)
    try:
        generator = load_generator(args.ckpt_path)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    images = generate(generator, args.num_samples, seed=args.seed, batch_size=args.batch_size, device=args.device)
    write_samples(images, Path(args.output))
    print(f"Wrote {len(images)} samples to {args.output}")


if __name__ == "__main__":
    main()
