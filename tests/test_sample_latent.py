"""Latent-space paths (``gan_lightning.interpolation``) and chosen digits and interpolations in ``sample``."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from torch import nn

from gan_lightning import sample
from gan_lightning.checkpoint import NETWORKS_KEY, network_spec
from gan_lightning.conditional import ConditionalDCGANGenerator
from gan_lightning.images import as_images, to_uint8
from gan_lightning.interpolation import (
    class_batch,
    class_weight_path,
    interpolation_times,
    lerp,
    noise_batch,
    noise_path,
    slerp,
)
from gan_lightning.labels import label_weights
from gan_lightning.networks import Generator

Z_DIM = 5
SIDE = 28
CELL = SIDE + sample.GRID_PADDING  # distance between the corners of neighboring grid cells


class TinyConditionalGenerator(nn.Module):
    """Conditional generator small enough for tests: one Linear on z plus one pixel bias per class."""

    def __init__(self, z_dim: int = Z_DIM, num_classes: int = 3):
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.pixels = nn.Linear(z_dim, SIDE * SIDE)
        self.class_pixels = nn.Linear(num_classes, SIDE * SIDE, bias=False)
        nn.init.normal_(self.class_pixels.weight)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = label_weights(labels, self.num_classes)
        return torch.sigmoid(self.pixels(z) + self.class_pixels(weights))


def save_generator_checkpoint(generator: nn.Module, path: Path) -> Path:
    """Save ``generator`` as the checkpoints of training store it: a spec and "generator."-prefixed weights."""
    state_dict = {f"generator.{key}": value for key, value in generator.state_dict().items()}
    torch.save({"state_dict": state_dict, NETWORKS_KEY: {"generator": network_spec(generator)}}, path)
    return path


@pytest.fixture
def mlp_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=Z_DIM, hidden_dim=8).eval()


@pytest.fixture
def mlp_checkpoint(mlp_generator: Generator, tmp_path: Path) -> Path:
    return save_generator_checkpoint(mlp_generator, tmp_path / "mlp.ckpt")


@pytest.fixture
def tiny_conditional() -> TinyConditionalGenerator:
    torch.manual_seed(0)
    return TinyConditionalGenerator().eval()


@pytest.fixture
def tiny_conditional_checkpoint(tiny_conditional: TinyConditionalGenerator, tmp_path: Path) -> Path:
    return save_generator_checkpoint(tiny_conditional, tmp_path / "tiny_conditional.ckpt")


@pytest.fixture
def dcgan_conditional() -> ConditionalDCGANGenerator:
    torch.manual_seed(0)
    return ConditionalDCGANGenerator(z_dim=6, num_classes=10, embed_dim=4, width=4).eval()


@pytest.fixture
def dcgan_conditional_checkpoint(dcgan_conditional: ConditionalDCGANGenerator, tmp_path: Path) -> Path:
    return save_generator_checkpoint(dcgan_conditional, tmp_path / "dcgan_conditional.ckpt")


def run_sample(checkpoint: Path, output: Path, *options: str) -> Path:
    sample.main(["--ckpt_path", str(checkpoint), "--output", str(output), *options])
    return output


def read_npz(path: Path) -> np.ndarray:
    with np.load(path) as archive:
        return archive["images"]


def read_grid(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def grid_cell(grid: np.ndarray, row: int, column: int) -> np.ndarray:
    """Cut the image in ``row`` and ``column`` out of a grid with GRID_PADDING pixels around each image."""
    top = sample.GRID_PADDING + row * CELL
    left = sample.GRID_PADDING + column * CELL
    return grid[top : top + SIDE, left : left + SIDE]


def expected_pixels(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None) -> np.ndarray:
    """Run the generator directly and quantize as the sampler does: uint8 (N, 28, 28)."""
    with torch.no_grad():
        output = generator(z) if labels is None else generator(z, labels)
    return to_uint8(as_images(output)[:, 0]).numpy()


def end_points(rows: int, z_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = torch.randn(rows, 2, z_dim, generator=torch.Generator().manual_seed(seed))
    return pairs[:, 0], pairs[:, 1]


def rejection(capsys: pytest.CaptureFixture, checkpoint: Path, output: Path, *options: str) -> str:
    """Run the sampler, check that it exits with status 2 and writes nothing, and return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        run_sample(checkpoint, output, *options)

    assert exit_info.value.code == 2
    assert not output.exists()
    return capsys.readouterr().err


# Interpolation maths.


def test_times_exact_ends() -> None:
    times = interpolation_times(7)

    assert times.shape == (7,)
    assert times[0].item() == 0.0
    assert times[-1].item() == 1.0
    torch.testing.assert_close(times.diff(), torch.full((6,), 1 / 6))


def test_times_need_two_steps() -> None:
    with pytest.raises(ValueError, match="at least 2 steps, got 1"):
        interpolation_times(1)


def test_lerp_exact_ends_and_midpoint() -> None:
    # Values of very different size, where start + t * (end - start) would not return end at t = 1.
    start = torch.tensor([1e8, 0.1, -3.0])
    end = torch.tensor([0.3, 7e-5, 1e7])

    assert torch.equal(lerp(start, end, 0.0), start)
    assert torch.equal(lerp(start, end, 1.0), end)
    torch.testing.assert_close(lerp(start, end, 0.5), (start + end) / 2)


def test_slerp_exact_ends() -> None:
    start, end = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(1))

    assert torch.equal(slerp(start, end, 0.0), start)
    assert torch.equal(slerp(start, end, 1.0), end)

    path = noise_path(start, end, steps=5)
    assert torch.equal(path[:, 0], start)
    assert torch.equal(path[:, -1], end)


def test_slerp_keeps_equal_norms() -> None:
    start, direction = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(2))
    end = direction / direction.norm(dim=1, keepdim=True) * start.norm(dim=1, keepdim=True)

    norms = noise_path(start, end, steps=9).norm(dim=2)

    torch.testing.assert_close(norms, start.norm(dim=1, keepdim=True).expand(6, 9))
    # The straight line cuts inside the sphere. Between two nearly orthogonal vectors, its midpoint has about
    # 1/sqrt(2) of their norm.
    linear_middle = noise_path(start, end, steps=9, path="linear")[:, 4].norm(dim=1)
    assert (linear_middle < 0.85 * start.norm(dim=1)).all()


def test_slerp_constant_angular_speed() -> None:
    start, direction = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(3))
    end = direction / direction.norm(dim=1, keepdim=True) * start.norm(dim=1, keepdim=True)

    path = noise_path(start, end, steps=6)

    def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # In float64, arccos near a cosine of 1 keeps enough digits for the tolerance below.
        cosine = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
        return torch.arccos(cosine.clamp(-1, 1)).float()

    total = angle(start, end)
    for step in range(6):
        torch.testing.assert_close(angle(start, path[:, step]), total * step / 5, atol=1e-5, rtol=1e-4)


def test_slerp_parallel_falls_back() -> None:
    start = torch.randn(4, 10, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])[:, None]

    for end in (2 * start, start + 1e-9 * start.flip(1), -start, -0.5 * start):
        result = slerp(start, end, t)
        assert torch.isfinite(result).all()
        torch.testing.assert_close(result, lerp(start, end, t))


def test_slerp_zero_vector_falls_back() -> None:
    end = torch.randn(3, 10, generator=torch.Generator().manual_seed(5))
    zero = torch.zeros_like(end)

    for start, stop in ((zero, end), (end, zero)):
        result = slerp(start, stop, 0.3)
        assert torch.isfinite(result).all()
        torch.testing.assert_close(result, lerp(start, stop, 0.3))


def test_slerp_batched_matches_single() -> None:
    start, end = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(6))

    batched = slerp(start, end, 0.4)

    for row in range(4):
        torch.testing.assert_close(batched[row], slerp(start[row], end[row], 0.4))


def test_noise_path_unknown_path_rejected() -> None:
    with pytest.raises(ValueError, match="'cubic'"):
        noise_path(torch.zeros(1, 3), torch.ones(1, 3), steps=3, path="cubic")


def test_class_weights_blend_linearly() -> None:
    start = label_weights(torch.tensor([0, 1]), 3)
    end = label_weights(torch.tensor([2, 0]), 3)

    weights = class_weight_path(start, end, steps=5)

    assert weights.shape == (2, 5, 3)
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(2, 5))
    assert torch.equal(weights[:, 0], start)
    assert torch.equal(weights[:, -1], end)
    torch.testing.assert_close(weights[0, 1], torch.tensor([0.75, 0.0, 0.25]))


def test_noise_batch_row_by_row() -> None:
    start, end = torch.randn(2, 3, Z_DIM, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([4, 0, 9])

    z, batch_labels = noise_batch(start, end, steps=4, labels=labels)
    path = noise_path(start, end, steps=4)

    assert z.shape == (12, Z_DIM)
    for row in range(3):
        for step in range(4):
            assert torch.equal(z[row * 4 + step], path[row, step])
    assert batch_labels.tolist() == [4] * 4 + [0] * 4 + [9] * 4


def test_noise_batch_without_labels() -> None:
    start, end = torch.randn(2, 3, Z_DIM, generator=torch.Generator().manual_seed(7))
    _, batch_labels = noise_batch(start, end, steps=4)
    assert batch_labels is None


def test_class_batch_fixed_noise() -> None:
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(8))
    start = label_weights(torch.tensor([1, 1]), 3)
    end = label_weights(torch.tensor([2, 2]), 3)

    batch_z, weights = class_batch(z, start, end, steps=3)

    assert torch.equal(batch_z, z.repeat_interleave(3, dim=0))
    torch.testing.assert_close(weights[1], torch.tensor([0.0, 0.5, 0.5]))
    assert torch.equal(weights[2], end[0])


# Samples of chosen digits.


def test_digit_draws_that_class(tiny_conditional: nn.Module, tiny_conditional_checkpoint: Path, tmp_path: Path) -> None:
    output = run_sample(
        tiny_conditional_checkpoint, tmp_path / "twos.npz", "--digit", "2", "--num_samples", "5", "--seed", "3"
    )
    images = read_npz(output)

    z = torch.randn(5, Z_DIM, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(images, expected_pixels(tiny_conditional, z, torch.full((5,), 2)))
    assert not np.array_equal(images, expected_pixels(tiny_conditional, z, torch.full((5,), 1)))


def test_no_digit_balanced_classes(
    tiny_conditional: nn.Module, tiny_conditional_checkpoint: Path, tmp_path: Path
) -> None:
    output = run_sample(tiny_conditional_checkpoint, tmp_path / "all.npz", "--num_samples", "7", "--seed", "3")
    images = read_npz(output)

    z = torch.randn(7, Z_DIM, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(images, expected_pixels(tiny_conditional, z, torch.tensor([0, 1, 2, 0, 1, 2, 0])))


def test_balanced_classes_ignore_batch_size(tiny_conditional: nn.Module) -> None:
    whole = sample.generate(tiny_conditional, 7, seed=2)
    batched = sample.generate(tiny_conditional, 7, seed=2, batch_size=2)
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-6)


def test_generate_same_seed_same_images(tiny_conditional: nn.Module) -> None:
    labels = torch.tensor([2, 2, 0, 1])
    first = sample.generate(tiny_conditional, 4, seed=5, labels=labels)
    second = sample.generate(tiny_conditional, 4, seed=5, labels=labels)
    assert torch.equal(first, second)


def test_generate_labels_need_conditional(mlp_generator: nn.Module) -> None:
    with pytest.raises(ValueError, match="unconditional"):
        sample.generate(mlp_generator, 3, labels=torch.zeros(3, dtype=torch.long))


def test_generate_label_count_checked(tiny_conditional: nn.Module) -> None:
    with pytest.raises(ValueError, match="3 noise vectors, got 2 labels"):
        sample.generate(tiny_conditional, 3, labels=torch.zeros(2, dtype=torch.long))


def test_conditional_dcgan_digit_grid(
    dcgan_conditional: nn.Module, dcgan_conditional_checkpoint: Path, tmp_path: Path
) -> None:
    output = run_sample(
        dcgan_conditional_checkpoint, tmp_path / "sevens.png", "--digit", "7", "--num_samples", "4", "--seed", "1"
    )

    grid = read_grid(output)
    assert grid.shape[:2] == (2 * CELL + sample.GRID_PADDING, 2 * CELL + sample.GRID_PADDING)

    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    sevens = expected_pixels(dcgan_conditional, z, torch.full((4,), 7))
    threes = expected_pixels(dcgan_conditional, z, torch.full((4,), 3))
    cells = [grid_cell(grid[..., 0], index // 2, index % 2) for index in range(4)]
    # save_image rounds half up while to_uint8 rounds half to even, so levels may differ by one.
    for cell, seven, three in zip(cells, sevens, threes):
        assert np.abs(cell.astype(int) - seven).max() <= 1
        assert np.abs(cell.astype(int) - three).max() > 1


def test_conditional_dcgan_class_morph_gif(
    dcgan_conditional: nn.Module, dcgan_conditional_checkpoint: Path, tmp_path: Path
) -> None:
    output = run_sample(
        dcgan_conditional_checkpoint, tmp_path / "morph.gif",
        "--interpolate", "--digit", "3", "--to_digit", "8", "--num_samples", "4", "--steps", "5", "--seed", "2",
    )  # fmt: skip

    with Image.open(output) as gif:
        frames = [np.array(frame.convert("L")) for frame in ImageSequence.Iterator(gif)]
    assert len(frames) == 5

    start, _ = end_points(4, 6, seed=2)
    for index, (digit, frame) in enumerate(((3, frames[0]), (8, frames[-1]))):
        expected = expected_pixels(dcgan_conditional, start, torch.full((4,), digit))
        for row in range(4):
            assert np.array_equal(grid_cell(frame, row // 2, row % 2), expected[row]), (index, row)


@pytest.mark.parametrize("digit", ["3", "-1", "10"])
def test_digit_outside_classes_rejected(
    tiny_conditional_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, digit: str
) -> None:
    error = rejection(capsys, tiny_conditional_checkpoint, tmp_path / "samples.npz", "--digit", digit)

    assert "error:" in error
    assert f"--digit must be a class in [0, 3) for this generator, got {digit}." in error
    assert "Pass a class from 0 to 2." in error


def test_to_digit_outside_classes_rejected(
    tiny_conditional_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    error = rejection(
        capsys, tiny_conditional_checkpoint, tmp_path / "strip.png", "--interpolate", "--digit", "0", "--to_digit", "5"
    )
    assert "--to_digit must be a class in [0, 3) for this generator, got 5." in error


@pytest.mark.parametrize(
    ("options", "named_value"),
    [(["--digit", "7"], "--digit 7"), (["--interpolate", "--digit", "1", "--to_digit", "2"], "--digit 1")],
    ids=["digit", "to_digit"],
)
def test_digit_unconditional_rejected(
    mlp_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], named_value: str
) -> None:
    error = rejection(capsys, mlp_checkpoint, tmp_path / "samples.png", *options)

    assert "error:" in error
    assert named_value in error
    assert "unconditional" in error
    assert "conditional generator" in error


# Interpolation from the command line.


def test_strip_grid_size(mlp_checkpoint: Path, tmp_path: Path) -> None:
    output = run_sample(mlp_checkpoint, tmp_path / "strip.png", "--interpolate", "--num_samples", "3", "--steps", "4")

    with Image.open(output) as strip:
        assert strip.format == "PNG"
        assert strip.mode == "L"
        # Four columns and three rows of 28-pixel images with a 2-pixel border around each.
        assert strip.size == (4 * SIDE + 5 * 2, 3 * SIDE + 4 * 2)


def test_strip_default_steps(mlp_checkpoint: Path, tmp_path: Path) -> None:
    output = run_sample(mlp_checkpoint, tmp_path / "strip.png", "--interpolate", "--num_samples", "1")
    assert read_grid(output).shape == (CELL + 2, 10 * CELL + 2)


@pytest.mark.parametrize("path", ["slerp", "linear"])
def test_strip_ends_match_end_points(mlp_generator: nn.Module, mlp_checkpoint: Path, tmp_path: Path, path: str) -> None:
    output = run_sample(
        mlp_checkpoint, tmp_path / "strip.png",
        "--interpolate", "--num_samples", "3", "--steps", "5", "--seed", "9", "--path", path,
    )  # fmt: skip

    grid = read_grid(output)
    start, end = end_points(3, Z_DIM, seed=9)
    first = expected_pixels(mlp_generator, start)
    last = expected_pixels(mlp_generator, end)
    for row in range(3):
        assert np.array_equal(grid_cell(grid, row, 0), first[row])
        assert np.array_equal(grid_cell(grid, row, 4), last[row])
        # The images between the ends come from other noise.
        assert not np.array_equal(grid_cell(grid, row, 2), first[row])
        assert not np.array_equal(grid_cell(grid, row, 2), last[row])


def test_strip_middle_follows_path(mlp_generator: nn.Module, mlp_checkpoint: Path, tmp_path: Path) -> None:
    strips = {}
    for path in ("slerp", "linear"):
        output = tmp_path / f"{path}.npz"
        run_sample(mlp_checkpoint, output, "--interpolate", "--num_samples", "2", "--steps", "3", "--path", path)
        strips[path] = read_npz(output)

    start, end = end_points(2, Z_DIM, seed=0)
    for path, middle_z in (("slerp", slerp(start, end, 0.5)), ("linear", lerp(start, end, 0.5))):
        expected = expected_pixels(mlp_generator, middle_z)
        assert np.abs(strips[path][:, 1].astype(int) - expected).max() <= 1, path
    assert not np.array_equal(strips["slerp"][:, 1], strips["linear"][:, 1])


def test_strip_same_seed_same_bytes(mlp_checkpoint: Path, tmp_path: Path) -> None:
    options = ("--interpolate", "--num_samples", "2", "--steps", "4", "--seed", "6")
    first = run_sample(mlp_checkpoint, tmp_path / "first.png", *options).read_bytes()
    second = run_sample(mlp_checkpoint, tmp_path / "second.png", *options).read_bytes()
    other = run_sample(mlp_checkpoint, tmp_path / "other.png", *options[:-1], "7").read_bytes()

    assert first == second
    assert first != other


def test_npz_interpolation_matches_strip(mlp_checkpoint: Path, tmp_path: Path) -> None:
    options = ("--interpolate", "--num_samples", "3", "--steps", "4", "--seed", "2")
    images = read_npz(run_sample(mlp_checkpoint, tmp_path / "paths.npz", *options))
    grid = read_grid(run_sample(mlp_checkpoint, tmp_path / "paths.png", *options))

    assert images.dtype == np.uint8
    assert images.shape == (3, 4, SIDE, SIDE)
    for row in range(3):
        for step in range(4):
            assert np.array_equal(images[row, step], grid_cell(grid, row, step))


def test_gif_one_frame_per_step(mlp_checkpoint: Path, tmp_path: Path) -> None:
    options = ("--interpolate", "--num_samples", "4", "--steps", "6", "--seed", "3")
    output = run_sample(mlp_checkpoint, tmp_path / "paths.gif", *options)
    images = read_npz(run_sample(mlp_checkpoint, tmp_path / "paths.npz", *options))

    with Image.open(output) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 6
        frames = [np.array(frame.convert("L")) for frame in ImageSequence.Iterator(gif)]

    # Four rows form a 2x2 grid in every frame.
    side = 2 * CELL + sample.GRID_PADDING
    for step, frame in enumerate(frames):
        assert frame.shape == (side, side)
        for row in range(4):
            assert np.array_equal(grid_cell(frame, row // 2, row % 2), images[row, step]), (step, row)


def test_gif_same_seed_same_bytes(mlp_checkpoint: Path, tmp_path: Path) -> None:
    options = ("--interpolate", "--num_samples", "2", "--steps", "3", "--seed", "8")
    first = run_sample(mlp_checkpoint, tmp_path / "first.gif", *options).read_bytes()
    second = run_sample(mlp_checkpoint, tmp_path / "second.gif", *options).read_bytes()
    other = run_sample(mlp_checkpoint, tmp_path / "other.gif", *options[:-1], "9").read_bytes()

    assert first == second
    assert first != other


def test_class_morph_fixed_noise(
    tiny_conditional: nn.Module, tiny_conditional_checkpoint: Path, tmp_path: Path
) -> None:
    images = read_npz(
        run_sample(
            tiny_conditional_checkpoint, tmp_path / "morph.npz",
            "--interpolate", "--digit", "0", "--to_digit", "2", "--num_samples", "2", "--steps", "3", "--seed", "4",
        )  # fmt: skip
    )

    start, _ = end_points(2, Z_DIM, seed=4)
    assert np.array_equal(images[:, 0], expected_pixels(tiny_conditional, start, torch.zeros(2, dtype=torch.long)))
    assert np.array_equal(images[:, 2], expected_pixels(tiny_conditional, start, torch.full((2,), 2)))
    halfway = torch.tensor([[0.5, 0.0, 0.5]] * 2)
    assert np.abs(images[:, 1].astype(int) - expected_pixels(tiny_conditional, start, halfway)).max() <= 1


def test_digit_interpolation_keeps_class(
    tiny_conditional: nn.Module, tiny_conditional_checkpoint: Path, tmp_path: Path
) -> None:
    output = run_sample(
        tiny_conditional_checkpoint, tmp_path / "ones.npz",
        "--interpolate", "--digit", "1", "--num_samples", "2", "--steps", "3",
    )  # fmt: skip
    images = read_npz(output)

    start, end = end_points(2, Z_DIM, seed=0)
    ones = torch.ones(2, dtype=torch.long)
    assert np.array_equal(images[:, 0], expected_pixels(tiny_conditional, start, ones))
    assert np.array_equal(images[:, 2], expected_pixels(tiny_conditional, end, ones))


def test_interpolation_balanced_rows(
    tiny_conditional: nn.Module, tiny_conditional_checkpoint: Path, tmp_path: Path
) -> None:
    output = run_sample(
        tiny_conditional_checkpoint, tmp_path / "rows.npz", "--interpolate", "--num_samples", "4", "--steps", "2"
    )
    images = read_npz(output)

    start, _ = end_points(4, Z_DIM, seed=0)
    assert np.array_equal(images[:, 0], expected_pixels(tiny_conditional, start, torch.tensor([0, 1, 2, 0])))


@pytest.mark.parametrize(
    ("options", "output_name", "message"),
    [
        (["--interpolate", "--steps", "1"], "strip.png", "--steps must be at least 2, got 1."),
        (["--steps", "5"], "grid.png", "--steps applies only with --interpolate"),
        (["--path", "linear"], "grid.png", "--path applies only with --interpolate"),
        (["--to_digit", "2", "--digit", "1"], "grid.png", "--to_digit applies only with --interpolate"),
        (["--num_samples", "4"], "grid.gif", "a .gif is written only with --interpolate"),
        (["--interpolate", "--to_digit", "2"], "strip.png", "--to_digit 2 needs --digit"),
        (["--interpolate", "--digit", "1", "--to_digit", "1"], "strip.png", "--to_digit must differ from --digit"),
        (["--interpolate"], "strip.jpg", "--output must end in .npz, .png or .gif, got"),
    ],
    ids=[
        "steps_one", "steps_alone", "path_alone", "to_digit_alone",
        "gif_alone", "to_digit_without_digit", "same_digits", "jpg",
    ],  # fmt: skip
)
def test_invalid_interpolation_rejected(
    tiny_conditional_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    options: list[str],
    output_name: str,
    message: str,
) -> None:
    error = rejection(capsys, tiny_conditional_checkpoint, tmp_path / output_name, *options)

    assert "error:" in error
    assert message in error


def test_rows_default_to_eight(mlp_checkpoint: Path, tmp_path: Path) -> None:
    images = read_npz(run_sample(mlp_checkpoint, tmp_path / "paths.npz", "--interpolate", "--steps", "2"))
    assert images.shape == (8, 2, SIDE, SIDE)
