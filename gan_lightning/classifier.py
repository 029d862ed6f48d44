"""Small CNN that classifies MNIST digits and supplies features for the sample-quality metrics."""

import hashlib
from pathlib import Path

import torch
from torch import nn

# Pixel mean and standard deviation of the 60,000 MNIST training images scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# Length of MNISTClassifier.features(x), the vectors that the Fréchet and kernel distances compare.
FEATURE_DIM = 128

WEIGHTS_PATH = Path(__file__).parent / "weights" / "mnist_classifier.pt"

# SHA-256 of WEIGHTS_PATH as written by scripts/train_classifier.py with its default options, using torch 2.14.1
# on an x86-64 CPU. Other torch versions or CPUs may round differently and write other bytes.
CLASSIFIER_SHA256 = "3d7423d51406abbb9c90ea76eaaab9b7a2bf2def00b601f5f079f64f0cdbfebf"

REGENERATE_COMMAND = (
    "python scripts/train_classifier.py --data_dir DATA_DIR --output gan_lightning/weights/mnist_classifier.pt"
)


def _conv_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Build a 3x3 convolution, BatchNorm, ReLU and 2x2 max-pool that halves the image side (rounding down)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class MNISTClassifier(nn.Module):
    """CNN for 28x28 grey digits: three conv stages, a hidden layer of FEATURE_DIM units and 10 logits.

    Callers pass float images in [0, 1], and the network standardizes them with MNIST_MEAN and MNIST_STD itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_stage(1, 32),  # (N, 32, 14, 14)
            _conv_stage(32, 64),  # (N, 64, 7, 7)
            _conv_stage(64, 128),  # (N, 128, 3, 3)
            nn.Flatten(),
            nn.Linear(128 * 3 * 3, FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Compute penultimate features. x: (N, 1, 28, 28) or (N, 784) in [0, 1] -> (N, FEATURE_DIM)."""
        x = as_image_batch(x)
        return self.body((x - MNIST_MEAN) / MNIST_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify digits. x: (N, 1, 28, 28) or (N, 784) in [0, 1] -> logits (N, 10)."""
        return self.head(self.features(x))


def as_image_batch(x: torch.Tensor) -> torch.Tensor:
    """Reshape x: (N, 784) to (N, 1, 28, 28), pass (N, 1, 28, 28) through, and raise ValueError for other shapes."""
    if x.dim() == 2 and x.shape[1] == 28 * 28:
        return x.reshape(-1, 1, 28, 28)
    if x.dim() == 4 and tuple(x.shape[1:]) == (1, 28, 28):
        return x
    raise ValueError(
        f"Expected MNIST images of shape (N, 1, 28, 28) or (N, 784), got {tuple(x.shape)}. "
        "Reshape the batch to one of these shapes."
    )


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights_file(path: Path) -> None:
    """Raise FileNotFoundError if path is missing, or RuntimeError if its SHA-256 differs from CLASSIFIER_SHA256."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Classifier weights not found at {path}. Regenerate them with `{REGENERATE_COMMAND}` "
            "and set CLASSIFIER_SHA256 in gan_lightning/classifier.py to the checksum it prints."
        )

    actual = file_sha256(path)
    if actual != CLASSIFIER_SHA256:
        raise RuntimeError(
            f"Classifier weights {path} failed the SHA-256 check: expected {CLASSIFIER_SHA256}, got {actual}. "
            f"Restore the file from git, or regenerate it with `{REGENERATE_COMMAND}` "
            "and set CLASSIFIER_SHA256 in gan_lightning/classifier.py to the checksum it prints."
        )


def load_classifier(device: str | torch.device = "cpu", weights_path: str | Path | None = None) -> MNISTClassifier:
    """Load the checksum-verified classifier weights (packaged ones by default) as a frozen model in eval mode."""
    path = Path(weights_path) if weights_path is not None else WEIGHTS_PATH
    verify_weights_file(path)

    # The file stores float16 values to stay small, and load_state_dict copies them into float32 parameters.
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model = MNISTClassifier()
    model.load_state_dict(state_dict)

    model.requires_grad_(False)
    return model.to(device).eval()
