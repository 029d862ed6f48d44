"""Score generated digits against the test split of MNIST.

    python -m gan_lightning.evaluate --ckpt_path RUN/checkpoints/best.ckpt --data_dir DATA_DIR
    python -m gan_lightning.evaluate --ckpt_path RUN/checkpoints/last.ckpt --num_samples 10000 --seed 0 --data_dir DATA_DIR --json
    python -m gan_lightning.evaluate --samples samples.npz --data_dir DATA_DIR

A checkpoint's generator draws --num_samples fakes from the noise of --seed, and gan_lightning.quality scores them
with the same function that logs val/fid, val/kid, val/is, val/kl_uniform and val/classes during training. The same
checkpoint, sample count (model option num_eval_samples), seed (eval_seed) and device therefore give the numbers that
training logged. An .npz file from gan_lightning.sample contains uint8 images (N, 28, 28) with 0 as black.

The reals are the test split of --dataset under --data_dir, which is never downloaded. --inception adds the standard
Inception-v3 FID, which needs torch-fidelity and its weights.
"""

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_lightning.checkpoint import CheckpointError, has_ema, load_checkpoint, load_network
from gan_lightning.datasets import DATASETS, ensure_dataset, load_split
from gan_lightning.idx import DatasetError
from gan_lightning.metrics import InceptionFID, SampleQuality, inception_fid
from gan_lightning.quality import EVAL_BATCH_SIZE, add_real_images, images_from_uint8, score_generator, score_images

DEFAULT_NUM_SAMPLES = 10000
DEFAULT_SEED = 0

# Rows of the table: report key, number format, meaning (formatted with the report's values).
TABLE_ROWS = (
    ("fid", ".3f", "Fréchet distance of classifier features to the reals (lower is better)"),
    ("kid", ".5f", "kernel distance of the same features, ± {kid_std:.5f} over subsets (lower is better)"),
    ("is", ".3f", "Inception-score analogue from the classifier, at most 10 (higher is better)"),
    ("kl_uniform", ".4f", "KL divergence of the predicted-class histogram from uniform (0 is even)"),
    ("classes", "d", "classes predicted for at least {coverage_threshold:.0%} of the fakes, of 10"),
    ("label_accuracy", ".4f", "share of conditional fakes classified as the digit they were drawn for"),
    ("inception_fid", ".3f", "standard Inception-v3 FID (lower is better)"),
)


class SamplesFileError(ValueError):
    """An .npz samples file that is missing, unreadable or not in the format of gan_lightning.sample."""


def load_samples(path: str | Path) -> torch.Tensor:
    """Read the images of an .npz file from gan_lightning.sample as float32 (N, 1, 28, 28) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise SamplesFileError(f"Samples file {path} not found. Write one with python -m gan_lightning.sample.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise SamplesFileError(f"{path} is not a readable .npz file: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SamplesFileError(f"{path} is a single .npy array, expected an .npz archive with an 'images' array.")

    with archive:
        if "images" not in archive.files:
            raise SamplesFileError(
                f"{path} has no 'images' array (arrays: {', '.join(archive.files) or 'none'}). "
                "Write samples with python -m gan_lightning.sample."
            )
        try:
            images = archive["images"]
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise SamplesFileError(f"The 'images' array of {path} cannot be read: {error}") from error

    if images.dtype != np.uint8:
        raise SamplesFileError(
            f"{path} contains images of dtype {images.dtype}, expected uint8 with 0 as black. "
            "Convert images x in [0, 1] with np.round(x * 255).astype(np.uint8)."
        )
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] < 2:
        raise SamplesFileError(
            f"{path} contains images of shape {images.shape}, expected (N, 28, 28) with N of at least 2."
        )
    return images_from_uint8(torch.from_numpy(images))


def load_reference(data_dir: str | Path, dataset: str) -> torch.Tensor:
    """Load the test split of dataset as float32 (N, 1, 28, 28) in [0, 1], without downloading."""
    # Raises DatasetError naming the folders it looked in and the option to pass.
    ensure_dataset(data_dir, dataset, download=False, option="--data_dir")
    return images_from_uint8(load_split(data_dir, dataset, "test").images)


def evaluate(args: argparse.Namespace, inception: InceptionFID | None) -> dict[str, Any]:
    """Score the checkpoint or samples file named in args against the reference set and return a report."""
    report: dict[str, Any] = {}
    if args.ckpt_path is not None:
        checkpoint = load_checkpoint(args.ckpt_path)
        ema = has_ema(checkpoint) and not args.raw_weights
        generator = load_network(checkpoint, "generator", ema=ema).to(args.device)
        report.update(ckpt_path=str(args.ckpt_path), global_step=checkpoint.get("global_step"))
        report.update(weights="moving average" if ema else "trained")
        report.update(num_fake=args.num_samples, seed=args.seed)
    else:
        fakes = load_samples(args.samples)
        report.update(samples=str(args.samples), num_fake=len(fakes))

    reals = load_reference(args.data_dir, args.dataset)
    report.update(dataset=args.dataset, num_real=len(reals))
    quality = SampleQuality().to(args.device)
    add_real_images(quality, reals)
    if inception is not None:
        inception.to(args.device)
        inception.update_real(reals)

    if args.ckpt_path is not None:
        scores = score_generator(generator, quality, args.num_samples, args.seed, device=args.device, inception=inception)
    else:
        scores = score_images(fakes.split(EVAL_BATCH_SIZE), quality, inception)
    report.update(scores)
    report["coverage_threshold"] = quality.fake_classes.coverage_threshold
    return report


def format_table(report: dict[str, Any]) -> str:
    """Format a report of evaluate() as a table for people."""
    if "ckpt_path" in report:
        step = report["global_step"]
        lines = [
            f"Sample quality of {report['ckpt_path']}" + (f" (step {step})" if step is not None else ""),
            f"  fakes: {report['num_fake']} from seed {report['seed']}, {report['weights']} generator weights",
        ]
    else:
        lines = [f"Sample quality of {report['samples']}", f"  fakes: {report['num_fake']} from the file"]
    lines += [f"  reals: {report['num_real']} test images of {report['dataset']}", ""]

    lines.append(f"  {'metric':<14} {'value':>10}  meaning")
    for key, number_format, meaning in TABLE_ROWS:
        if key not in report:
            continue
        value = format(report[key], number_format)
        lines.append(f"  {key:<14} {value:>10}  {meaning.format(**report)}")

    shares = "  ".join(f"{digit}: {share:.1%}" for digit, share in enumerate(report["class_share"]))
    lines += ["", f"  predicted classes of the fakes: {shares}"]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gan_lightning.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="Checkpoint written by training (.ckpt), whose generator draws the fakes.")
    source.add_argument("--samples", help=".npz file from gan_lightning.sample with uint8 images (N, 28, 28).")
    parser.add_argument(
        "--data_dir", required=True, help="Folder that contains <Name>/raw/ with the IDX files; its test split is the reference."
    )
    parser.add_argument("--dataset", default="mnist", choices=list(DATASETS), help="Data set under --data_dir (default mnist).")
    parser.add_argument(
        "--num_samples", type=int, default=None,
        help=f"Fakes to draw from --ckpt_path (default {DEFAULT_NUM_SAMPLES}, as the model option num_eval_samples).",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=None,
        help=f"Seed of the noise for --ckpt_path (default {DEFAULT_SEED}, as the model option eval_seed).",
    )  # fmt: skip
    parser.add_argument(
        "--raw_weights", action="store_true", default=None,
        help="Score the generator's trained weights even when the checkpoint keeps their moving average (ema_decay).",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="Device to generate and score on, for example cpu or cuda.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    parser.add_argument(
        "--inception", action="store_true",
        help="Also compute the standard Inception-v3 FID. Needs torch-fidelity and its weights, and is slow on a CPU.",
    )  # fmt: skip
    parser.add_argument(
        "--inception_weights", default=None,
        help="Local copy of weights-inception-2015-12-05-6726825d.pth for --inception. "
        "Without it the weights come from torch.hub's cache or are downloaded there.",
    )  # fmt: skip
    args = parser.parse_args(argv)

    if args.samples is not None:
        for name in ("num_samples", "seed", "raw_weights"):
            if getattr(args, name) is not None:
                parser.error(f"--{name} applies to --ckpt_path only; an .npz file holds fixed samples.")
    else:
        args.num_samples = DEFAULT_NUM_SAMPLES if args.num_samples is None else args.num_samples
        args.seed = DEFAULT_SEED if args.seed is None else args.seed
        if args.num_samples < 2:
            parser.error(f"--num_samples must be at least 2, because FID needs two samples, got {args.num_samples}.")
    if args.inception_weights is not None and not args.inception:
        parser.error("--inception_weights needs --inception.")
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, score the fakes and print a table or JSON."""
    args = _parse_args(argv)
    inception = None
    if args.inception:
        # Built first, so that missing weights or a failed download stop the program before any slow work.
        try:
            inception = inception_fid(weights_path=args.inception_weights)
        except (ModuleNotFoundError, FileNotFoundError, RuntimeError) as error:
            raise SystemExit(f"error: {error}") from None
    try:
        report = evaluate(args, inception)
    except (CheckpointError, DatasetError, SamplesFileError) as error:
        raise SystemExit(f"error: {error}") from None

    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(format_table(report))


if __name__ == "__main__":
    main()
