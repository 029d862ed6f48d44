"""``python -m gan_lightning.sample``: samples from a trained checkpoint, and rejected files."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import train_tiny_mlp_checkpoint
from gan_lightning import sample
from gan_lightning.checkpoint import NETWORKS_KEY

Z_DIM = 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train two steps through the CLI and return the run's last.ckpt."""
    return train_tiny_mlp_checkpoint(tmp_path_factory.mktemp("sample_run"), Z_DIM)


def draw_samples(checkpoint: Path, output: Path, *options: str) -> np.ndarray:
    sample.main(["--ckpt_path", str(checkpoint), "--output", str(output), *options])
    with np.load(output) as archive:
        return archive["images"]


def test_npz_images(checkpoint: Path, tmp_path: Path) -> None:
    images = draw_samples(checkpoint, tmp_path / "samples.npz", "--num_samples", "7")

    assert images.dtype == np.uint8
    assert images.shape == (7, 28, 28)
    # A fresh generator draws grey noise, so the pixels are spread around the middle level.
    assert images.std() > 0


def test_npz_only_images(checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "samples.npz"
    draw_samples(checkpoint, output, "--num_samples", "3")
    with np.load(output) as archive:
        assert archive.files == ["images"]


def test_npz_matches_generator(checkpoint: Path, tmp_path: Path) -> None:
    images = draw_samples(checkpoint, tmp_path / "samples.npz", "--num_samples", "4", "--seed", "3")

    generator = sample.load_generator(checkpoint)
    with torch.no_grad():
        z = torch.randn(4, Z_DIM, generator=torch.Generator().manual_seed(3))
        expected = generator(z).reshape(4, 28, 28).mul(255).round().to(torch.uint8).numpy()
    assert np.array_equal(images, expected)


def test_png_grid(checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "grid.png"
    sample.main(["--ckpt_path", str(checkpoint), "--output", str(output), "--num_samples", "9"])

    with Image.open(output) as grid:
        assert grid.format == "PNG"
        # Three rows and columns of 28-pixel images with a 2-pixel border around each.
        assert grid.size == (3 * 28 + 4 * 2, 3 * 28 + 4 * 2)


def test_same_seed_same_images(checkpoint: Path, tmp_path: Path) -> None:
    first = draw_samples(checkpoint, tmp_path / "first.npz", "--num_samples", "6", "--seed", "4")
    second = draw_samples(checkpoint, tmp_path / "second.npz", "--num_samples", "6", "--seed", "4")
    assert np.array_equal(first, second)


def test_other_seed_other_images(checkpoint: Path, tmp_path: Path) -> None:
    first = draw_samples(checkpoint, tmp_path / "first.npz", "--num_samples", "6", "--seed", "4")
    second = draw_samples(checkpoint, tmp_path / "second.npz", "--num_samples", "6", "--seed", "5")
    assert not np.array_equal(first, second)


def test_batch_size_same_images(checkpoint: Path, tmp_path: Path) -> None:
    whole = draw_samples(checkpoint, tmp_path / "whole.npz", "--num_samples", "7", "--seed", "4")
    batched = draw_samples(checkpoint, tmp_path / "batched.npz", "--num_samples", "7", "--seed", "4", "--batch_size", "3")
    assert np.array_equal(whole, batched)


@pytest.mark.parametrize(
    "options",
    [["--num_samples", "0"], ["--batch_size", "0"], ["--output", "samples.txt"]],
    ids=["num_samples", "batch_size", "output"],
)
def test_invalid_options_rejected(checkpoint: Path, tmp_path: Path, options: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--ckpt_path", str(checkpoint), "--output", str(tmp_path / "samples.npz"), *options])

    assert exit_info.value.code == 2
    assert options[0] in capsys.readouterr().err


def reject_message(path: Path, tmp_path: Path) -> str:
    """Run the sampler on ``path``, check that it exits with an error, and return the message."""
    output = tmp_path / "samples.npz"
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--ckpt_path", str(path), "--output", str(output), "--num_samples", "2"])

    assert not output.exists()
    return str(exit_info.value.code)


def test_missing_checkpoint_rejected(tmp_path: Path) -> None:
    path = tmp_path / "missing.ckpt"
    message = reject_message(path, tmp_path)
    assert str(path) in message
    assert "not found" in message


def test_text_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint\n")

    message = reject_message(path, tmp_path)

    assert message.startswith("error:")
    assert str(path) in message


def test_foreign_checkpoint_rejected(tmp_path: Path) -> None:
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, path)

    message = reject_message(path, tmp_path)

    assert message.startswith("error:")
    assert "not a gan_lightning checkpoint" in message


class CreateMarker:
    """Pickled object whose unpickling creates the file ``marker``, standing in for any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_payload_runs_when_unpickled(tmp_path: Path) -> None:
    # Plain unpickling runs the payload, so the tests below check a live one.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(CreateMarker(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch_save", "pickle_dump"])
def test_malicious_pickle_rejected(checkpoint: Path, tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    # A real checkpoint's content with the payload added, so only the payload can make loading fail.
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content[NETWORKS_KEY]["payload"] = CreateMarker(marker)
    path = tmp_path / "malicious.ckpt"
    if writer == "torch_save":
        torch.save(content, path)
    else:
        with path.open("wb") as file:
            pickle.dump(content, file)

    message = reject_message(path, tmp_path)

    assert not marker.exists()
    assert message.startswith("error:")
    assert str(path) in message


@pytest.fixture(scope="module")
def ema_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train three steps with a moving average of G and return the run's last.ckpt."""
    work_dir = tmp_path_factory.mktemp("sample_ema_run")
    return train_tiny_mlp_checkpoint(work_dir, Z_DIM, "--max_steps", "3", "--model.ema_decay", "0.5")


@pytest.mark.parametrize("ema", [True, False])
def test_weights_choice_matches_generator(ema_checkpoint: Path, tmp_path: Path, ema: bool) -> None:
    options = [] if ema else ["--raw_weights"]
    images = draw_samples(ema_checkpoint, tmp_path / "samples.npz", "--num_samples", "4", "--seed", "3", *options)

    with torch.no_grad():
        z = torch.randn(4, Z_DIM, generator=torch.Generator().manual_seed(3))
        chosen = sample.load_generator(ema_checkpoint, ema=ema)(z)
        other = sample.load_generator(ema_checkpoint, ema=not ema)(z)
    assert np.array_equal(images, as_uint8(chosen))
    assert not np.array_equal(images, as_uint8(other))


def as_uint8(output: torch.Tensor) -> np.ndarray:
    """Convert generator output (N, 784) in [0, 1] to the uint8 images (N, 28, 28) that sample writes."""
    return output.reshape(-1, 28, 28).mul(255).round().to(torch.uint8).numpy()
