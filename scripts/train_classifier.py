"""Train the MNIST classifier behind the sample-quality metrics and write its weights file.

Run from the repository root with the package installed (`pip install -e .`):

    python scripts/train_classifier.py --data_dir DATA_DIR --output gan_lightning/weights/mnist_classifier.pt

DATA_DIR contains MNIST in torchvision's layout (DATA_DIR/MNIST/raw/*-ubyte). Nothing is downloaded.
The script prints the test accuracy of the weights as saved and the file's SHA-256, which goes into
CLASSIFIER_SHA256 in gan_lightning/classifier.py.
"""

import argparse
import io
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from gan_lightning.classifier import WEIGHTS_PATH, MNISTClassifier, file_sha256

BATCH_SIZE = 128
MAX_LR = 3e-3
WEIGHT_DECAY = 1e-4
# Random translations of up to this many pixels make the classifier less sensitive to off-centre digits.
MAX_SHIFT = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir", type=Path, required=True, help="folder that contains MNIST/raw/ in torchvision's layout"
    )
    parser.add_argument("--epochs", type=int, default=3, help="passes over the 60,000 training images")
    parser.add_argument("--output", type=Path, default=WEIGHTS_PATH, help="path of the weights file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialization, shuffling and augmentation")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="CPU threads for torch. The packaged weights used 2, and another count may change float rounding.",
    )
    args = parser.parse_args()

    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def load_mnist(data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one MNIST split as images (N, 1, 28, 28) float in [0, 1] and targets (N,) int64."""
    try:
        dataset = torchvision.datasets.MNIST(root=str(data_dir), train=train, download=False)
    except RuntimeError as error:
        raise FileNotFoundError(
            f"MNIST not found under --data_dir {data_dir}: expected the uncompressed IDX files in "
            f"{data_dir / 'MNIST' / 'raw'} ({error}). Pass the folder that contains MNIST/."
        ) from error
    images = dataset.data.unsqueeze(1).float() / 255
    return images, dataset.targets


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by a random whole number of pixels in [-max_shift, max_shift], filling with black.

    images: (N, 1, H, W) -> (N, 1, H, W).
    """
    n, _, height, width = images.shape
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)

    rows = offsets[:, 0, None] + torch.arange(height)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(width)  # (N, W)
    batch_index = torch.arange(n)[:, None, None]
    shifted = padded[batch_index, 0, rows[:, :, None], cols[:, None, :]]  # (N, H, W)
    return shifted.unsqueeze(1)


def train(model: MNISTClassifier, images: torch.Tensor, targets: torch.Tensor, epochs: int, seed: int) -> None:
    """Train with AdamW and a one-cycle learning-rate schedule, printing the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(images) // BATCH_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=epochs * steps_per_epoch)

    model.train()
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(images), generator=generator)
        total_loss = 0.0
        for start in range(0, len(images), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            x = random_shift(images[index], MAX_SHIFT, generator)
            loss = F.cross_entropy(model(x), targets[index])

            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()

        seconds = time.perf_counter() - started
        print(f"epoch {epoch + 1}/{epochs}: mean loss {total_loss / steps_per_epoch:.4f}, {seconds:.0f} s", flush=True)


@torch.no_grad()
def accuracy(model: MNISTClassifier, images: torch.Tensor, targets: torch.Tensor) -> float:
    """Return the fraction of images whose predicted class equals the target."""
    model.eval()
    correct = 0
    for start in range(0, len(images), 1000):
        logits = model(images[start : start + 1000])
        correct += (logits.argmax(dim=1) == targets[start : start + 1000]).sum().item()
    return correct / len(images)


def save_half_precision(model: MNISTClassifier, output: Path) -> None:
    """Write the state dict with floating-point tensors in float16, halving the file size.

    The archive is built in memory because torch.save names the records inside it after the file name,
    which would make the checksum depend on the output path.
    """
    state_dict = {
        key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())


def main() -> None:
    args = parse_args()
    started = time.perf_counter()

    # Fixed seed and deterministic kernels, so the same software on the same hardware writes the same bytes.
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)

    train_images, train_targets = load_mnist(args.data_dir, train=True)
    test_images, test_targets = load_mnist(args.data_dir, train=False)
    print(
        f"training on {len(train_images)} images for {args.epochs} epochs, seed {args.seed}, {args.threads} threads",
        flush=True,
    )

    model = MNISTClassifier()
    train(model, train_images, train_targets, args.epochs, args.seed)
    save_half_precision(model, args.output)

    # Score the weights as saved, after the float16 rounding, not the float32 model in memory.
    saved = MNISTClassifier()
    saved.load_state_dict(torch.load(args.output, map_location="cpu", weights_only=True))
    test_accuracy = accuracy(saved, test_images, test_targets)

    print(f"test accuracy: {test_accuracy:.4f} on {len(test_images)} images")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    print(f"sha256: {file_sha256(args.output)}")
    print(f"wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
