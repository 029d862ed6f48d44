"""Shared fixtures: an isolated environment for every test and tiny MNIST-like IDX data sets.

The data sets use torchvision's layout (``ROOT/MNIST/raw/`` with the four uncompressed IDX
files), so tests load them through the package's real loading code and torchvision's ``MNIST``.
No test reads real MNIST or needs the network.
"""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_lightning.cli import RUN_DIR_ENV
from gan_lightning.idx import IMAGES_MAGIC, LABELS_MAGIC

IMAGE_SIDE = 28
NUM_TRAIN = 256
NUM_TEST = 64

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

# Segments of a seven-segment display as (row0, col0, row1, col1) on a 16x10 box, and the
# segments lit for each digit, so that every label gets its own stroke pattern.
SEGMENTS = {
    "top": (0, 0, 0, 9),
    "upper_left": (0, 0, 7, 0),
    "upper_right": (0, 9, 7, 9),
    "middle": (7, 0, 7, 9),
    "lower_left": (7, 0, 15, 0),
    "lower_right": (7, 9, 15, 9),
    "bottom": (15, 0, 15, 9),
}
DIGIT_SEGMENTS = {
    0: ("top", "upper_left", "upper_right", "lower_left", "lower_right", "bottom"),
    1: ("upper_right", "lower_right"),
    2: ("top", "upper_right", "middle", "lower_left", "bottom"),
    3: ("top", "upper_right", "middle", "lower_right", "bottom"),
    4: ("upper_left", "upper_right", "middle", "lower_right"),
    5: ("top", "upper_left", "middle", "lower_right", "bottom"),
    6: ("top", "upper_left", "middle", "lower_left", "lower_right", "bottom"),
    7: ("top", "upper_right", "lower_right"),
    8: tuple(SEGMENTS),
    9: ("top", "upper_left", "upper_right", "middle", "lower_right", "bottom"),
}


def pytest_configure(config: pytest.Config) -> None:
    # The tests train tiny networks, which gain nothing from several threads. On a 2-core CPU
    # shared with other jobs, thread synchronization made one tiny training step about 40 times
    # slower than with a single thread.
    torch.set_num_threads(1)


def _unset_during_test(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # setenv records the original state, so teardown also removes a value that the code
    # under test writes to os.environ itself.
    monkeypatch.setenv(name, "")
    monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test in its own tmp_path with W&B offline and no state left by other tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    # The CLI stores the run folder in the environment for the DDP processes it launches, and
    # seed_everything stores the seed there. Neither may leak into the next test.
    for name in (RUN_DIR_ENV, "PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        _unset_during_test(monkeypatch, name)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, count: int | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file: a big-endian header, then the raw bytes.

    ``magic`` defaults to the right one for the array's rank and ``count`` to its length, so
    tests can write a wrong magic number or a header that promises more items than follow.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    dims = list(array.shape)
    if count is not None:
        dims[0] = count
    header = struct.pack(f">{1 + len(dims)}I", magic, *dims)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.tobytes())
    return path


def draw_digits(labels: np.ndarray, seed: int) -> np.ndarray:
    """Draw uint8 images (N, 28, 28) of seven-segment digits with random shifts and brightness."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(labels), IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    for image, label in zip(images, labels):
        top = 6 + rng.integers(-3, 4)
        left = 9 + rng.integers(-3, 4)
        brightness = rng.integers(128, 256)
        for name in DIGIT_SEGMENTS[int(label)]:
            row0, col0, row1, col1 = SEGMENTS[name]
            # Strokes are two pixels thick, like pen strokes in MNIST.
            image[top + row0 : top + row1 + 2, left + col0 : left + col1 + 2] = brightness
        # Faint noise makes almost every image distinct, so comparisons of image sets can fail.
        image += rng.integers(0, 8, size=image.shape, dtype=np.uint8) * (image == 0)
    return images


def make_tiny_mnist(root: Path, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST) -> Path:
    """Write a tiny MNIST-like data set under ``root/MNIST/raw`` and return ``root``."""
    raw = root / "MNIST" / "raw"
    train_labels = np.arange(num_train) % 10
    test_labels = np.arange(num_test) % 10
    write_idx(raw / TRAIN_IMAGES, draw_digits(train_labels, seed=1))
    write_idx(raw / TRAIN_LABELS, train_labels)
    write_idx(raw / TEST_IMAGES, draw_digits(test_labels, seed=2))
    write_idx(raw / TEST_LABELS, test_labels)
    return root


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """Data folder of a tiny MNIST (256 training and 64 test images), private to one test."""
    return make_tiny_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data folder of a tiny MNIST for tests that only read it."""
    return make_tiny_mnist(tmp_path_factory.mktemp("shared_data"))


def train_tiny_run(work_dir: Path, data_dir: Path, *options: str) -> Path:
    """Train through the CLI from ``work_dir`` with tiny settings and ``options``, and return the run folder.

    The run writes no W&B files and shows no progress bar. The CLI's run-folder variable is left unset
    afterwards, so later runs in the same process make their own folders.
    """
    from gan_lightning.cli import main as train_main

    runs_dir = work_dir / "runs"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(work_dir)
        # The CLI writes the run folder to this variable, and setenv makes the context remove it.
        monkeypatch.setenv(RUN_DIR_ENV, "")
        monkeypatch.delenv(RUN_DIR_ENV)
        train_main(
            [
                "--data.data_dir", str(data_dir),
                "--runs_dir", str(runs_dir),
                "--wandb", "off",
                "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false",
                *options,
            ]  # fmt: skip
        )
    (run_dir,) = runs_dir.iterdir()
    return run_dir


def train_tiny_mlp_checkpoint(work_dir: Path, z_dim: int, *options: str, conditional: bool = False) -> Path:
    """Train the MLP pair with hidden_dim 8 for two steps and return last.ckpt; ``options`` override these settings.

    ``conditional`` trains the class-conditional MLP pair instead. The run scores 200 fakes per validation.
    """
    prefix = "gan_lightning.conditional.Conditional" if conditional else "gan_lightning.networks."
    run_dir = train_tiny_run(
        work_dir,
        make_tiny_mnist(work_dir / "data"),
        "--max_steps", "2",
        "--model.generator", f"{prefix}Generator",
        "--model.generator.init_args.z_dim", str(z_dim),
        "--model.generator.init_args.hidden_dim", "8",
        "--model.discriminator", f"{prefix}Discriminator",
        "--model.discriminator.init_args.hidden_dim", "8",
        "--model.num_eval_samples", "200",
        *options,
    )  # fmt: skip
    return run_dir / "checkpoints" / "last.ckpt"
