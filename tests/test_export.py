"""``gan_lightning.export``: ONNX and TorchScript models that draw the generator's images.

Each exported model runs at batch sizes other than the one it was traced with, and its images
are compared with the generator's own output on the same noise and labels.
"""

import sys
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import pytest
import torch
from torch import nn

from conftest import train_tiny_mlp_checkpoint
from gan_lightning import export
from gan_lightning.checkpoint import load_generator
from gan_lightning.conditional import ConditionalDCGANGenerator, ConditionalGenerator
from gan_lightning.dcgan import DCGANGenerator
from gan_lightning.labels import num_classes_of
from gan_lightning.networks import Generator

Z_DIM = 5
NUM_CLASSES = 10
# The models are traced with EXAMPLE_BATCH_SIZE rows, so these sizes test a free batch dimension.
BATCH_SIZES = (1, 7)
assert export.EXAMPLE_BATCH_SIZE not in BATCH_SIZES

# ONNX Runtime folds BatchNorm into the weights of the preceding Gemm or ConvTranspose and sums
# in another order than PyTorch, so float32 images differ in the last bits. The largest
# difference measured on these generators at their default sizes was 1.5e-7. 1e-5 leaves room
# for other CPUs and is still about 400 times smaller than one uint8 grey level (1 / 255), while
# a wrong BatchNorm mode or reshape changes pixels by far more. TorchScript runs the same ATen
# kernels as the generator, so its images are compared for exact equality.
ONNX_ATOL = 1e-5
ATOL = {".onnx": ONNX_ATOL, ".pt": 0.0}

GENERATORS: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: Generator(z_dim=Z_DIM, hidden_dim=8),
    "dcgan": lambda: DCGANGenerator(z_dim=Z_DIM, width=4),
    "conditional_mlp": lambda: ConditionalGenerator(z_dim=Z_DIM, num_classes=NUM_CLASSES, embed_dim=3, hidden_dim=8),
    "conditional_dcgan": lambda: ConditionalDCGANGenerator(z_dim=Z_DIM, num_classes=NUM_CLASSES, embed_dim=3, width=4),
}
CONDITIONAL = {"conditional_mlp", "conditional_dcgan"}


def build_generator(name: str) -> nn.Module:
    """Build generator ``name`` in eval mode, with BatchNorm statistics unlike a fresh network's.

    A fresh BatchNorm has running mean 0 and variance 1, which hides an export that ignores
    the running statistics. Random values make that show in the images.
    """
    torch.manual_seed(0)
    generator = GENERATORS[name]()
    for layer in generator.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.normal_(0, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(layer.weight, 0.5, 1.5)
            nn.init.normal_(layer.bias, 0, 0.2)
    return generator.eval()


def draw_inputs(batch_size: int, conditional: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return seeded noise (N, Z_DIM) and, for a conditional generator, random class indices (N,)."""
    rng = torch.Generator().manual_seed(batch_size)
    z = torch.randn(batch_size, Z_DIM, generator=rng)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=rng) if conditional else None
    return z, labels


@torch.no_grad()
def generator_images(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    images = generator(z) if labels is None else generator(z, labels)
    return images.reshape(len(z), 1, 28, 28)


def run_onnx(path: Path, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"z": z.numpy()}
    if labels is not None:
        feeds["labels"] = labels.numpy()
    (images,) = session.run(["images"], feeds)
    return torch.from_numpy(images)


@torch.no_grad()
def run_torchscript(path: Path, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    model = torch.jit.load(str(path))
    return model(z) if labels is None else model(z, labels)


RUNNERS = {".onnx": run_onnx, ".pt": run_torchscript}
EXPORTERS = {".onnx": export.export_onnx, ".pt": export.export_torchscript}


@pytest.fixture(scope="module", params=list(GENERATORS))
def exported_onnx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Export each test generator to ONNX once, and return its name and the file."""
    path = tmp_path_factory.mktemp(request.param) / "generator.onnx"
    export.export_onnx(build_generator(request.param), path)
    return request.param, path


@pytest.fixture(scope="module", params=list(GENERATORS))
def exported_torchscript(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Export each test generator to TorchScript once, and return its name and the file."""
    path = tmp_path_factory.mktemp(request.param) / "generator.pt"
    export.export_torchscript(build_generator(request.param), path)
    return request.param, path


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_onnx_matches_generator(exported_onnx: tuple[str, Path], batch_size: int) -> None:
    name, path = exported_onnx
    z, labels = draw_inputs(batch_size, name in CONDITIONAL)

    images = run_onnx(path, z, labels)

    assert images.dtype == torch.float32
    assert images.shape == (batch_size, 1, 28, 28)
    torch.testing.assert_close(images, generator_images(build_generator(name), z, labels), atol=ONNX_ATOL, rtol=0)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_torchscript_matches_generator(exported_torchscript: tuple[str, Path], batch_size: int) -> None:
    name, path = exported_torchscript
    z, labels = draw_inputs(batch_size, name in CONDITIONAL)

    images = run_torchscript(path, z, labels)

    assert images.dtype == torch.float32
    assert images.shape == (batch_size, 1, 28, 28)
    assert torch.equal(images, generator_images(build_generator(name), z, labels))


@pytest.mark.parametrize("label", [-1, NUM_CLASSES])
def test_torchscript_bad_label_rejected(label: int, tmp_path: Path) -> None:
    path = tmp_path / "generator.pt"
    export.export_torchscript(build_generator("conditional_mlp"), path)
    z, _ = draw_inputs(2, conditional=False)

    with pytest.raises(RuntimeError, match="Class values must be"):
        run_torchscript(path, z, torch.tensor([0, label]))


def test_onnx_inputs_and_output(exported_onnx: tuple[str, Path]) -> None:
    name, path = exported_onnx
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {tensor.name: tensor for tensor in session.get_inputs()}
    (output,) = session.get_outputs()

    expected_names = ["z", "labels"] if name in CONDITIONAL else ["z"]
    assert list(inputs) == expected_names
    assert inputs["z"].type == "tensor(float)"
    assert output.name == "images"
    assert output.type == "tensor(float)"
    # A free dimension has a symbolic name (str) in place of a fixed size (int).
    batch = inputs["z"].shape[0]
    assert isinstance(batch, str)
    assert inputs["z"].shape == [batch, Z_DIM]
    assert isinstance(output.shape[0], str)
    assert output.shape[1:] == [1, 28, 28]
    if name in CONDITIONAL:
        assert inputs["labels"].type == "tensor(int64)"
        assert inputs["labels"].shape == [batch]


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_export_uses_eval_mode(suffix: str, tmp_path: Path) -> None:
    generator = build_generator("dcgan").train()
    path = tmp_path / f"generator{suffix}"
    z, _ = draw_inputs(BATCH_SIZES[-1], conditional=False)
    train_mode_images = generator_images(generator, z, None)

    EXPORTERS[suffix](generator, path)

    # The export works on a copy, so the caller's generator stays in training mode.
    assert generator.training
    images = RUNNERS[suffix](path, z, None)
    eval_mode_images = generator_images(generator.eval(), z, None)
    torch.testing.assert_close(images, eval_mode_images, atol=ATOL[suffix], rtol=0)
    assert (images - train_mode_images).abs().max() > 100 * ONNX_ATOL


class CheckedGenerator(nn.Module):
    """Linear generator that checks its noise with a branch on tensor values, as input checks do."""

    def __init__(self, z_dim: int = Z_DIM):
        super().__init__()
        self.z_dim = z_dim
        self.linear = nn.Linear(z_dim, 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(z).all():
            raise ValueError("z must be finite.")
        return torch.sigmoid(self.linear(z))


def test_onnx_falls_back_to_tracing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = CheckedGenerator().eval()
    path = tmp_path / "generator.onnx"

    with pytest.warns(UserWarning, match="torch.export could not capture CheckedGenerator"):
        export.export_onnx(generator, path)

    z, _ = draw_inputs(BATCH_SIZES[-1], conditional=False)
    torch.testing.assert_close(run_onnx(path, z, None), generator_images(generator, z, None), atol=ONNX_ATOL, rtol=0)


def test_describe_names_inputs_and_output() -> None:
    description = export.exportable(build_generator("conditional_dcgan")).describe()
    assert description == (
        f"inputs z float32 (N, {Z_DIM}), labels int64 (N,) in [0, {NUM_CLASSES}); "
        "output images float32 (N, 1, 28, 28) in [0, 1]"
    )


def test_generator_without_z_dim_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="z_dim"):
        export.export_torchscript(nn.Linear(Z_DIM, 784), tmp_path / "generator.pt")
    assert not (tmp_path / "generator.pt").exists()


def test_onnx_without_onnxscript_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # None in sys.modules makes the import raise ImportError, as if the package were missing.
    monkeypatch.setitem(sys.modules, "onnxscript", None)

    with pytest.raises(ImportError, match="onnxscript") as error_info:
        export.export_onnx(build_generator("mlp"), tmp_path / "generator.onnx")

    assert "pip install 'gan_lightning[export]'" in str(error_info.value)
    assert not (tmp_path / "generator.onnx").exists()


# Command line


@pytest.fixture(scope="module", params=["mlp", "conditional_mlp"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train two steps through the CLI and return the run's last.ckpt."""
    work_dir = tmp_path_factory.mktemp(f"export_run_{request.param}")
    return train_tiny_mlp_checkpoint(work_dir, Z_DIM, conditional=request.param in CONDITIONAL)


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_cli_exports_checkpoint(checkpoint: Path, suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "exported" / f"generator{suffix}"

    export.main(["--ckpt_path", str(checkpoint), "--output", str(output)])

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Wrote {export.FORMAT_NAMES[suffix]} model {output}: ")
    assert f"z float32 (N, {Z_DIM})" in lines[0]
    assert "output images float32 (N, 1, 28, 28)" in lines[0]
    generator = load_generator(checkpoint)
    conditional = num_classes_of(generator) > 0
    assert ("labels int64 (N,)" in lines[0]) == conditional
    z, labels = draw_inputs(3, conditional)
    torch.testing.assert_close(
        RUNNERS[suffix](output, z, labels), generator_images(generator, z, labels), atol=ATOL[suffix], rtol=0
    )


@pytest.mark.parametrize("output", ["generator.txt", "generator.pth", "generator"])
def test_cli_bad_suffix_rejected(output: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    suffix = Path(output).suffix
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt_path", str(tmp_path / "last.ckpt"), "--output", output])

    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"with suffix {suffix!r}" in message
    assert ".onnx" in message
    assert ".pt" in message
    assert not Path(output).exists()


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_cli_missing_checkpoint_rejected(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "missing.ckpt"
    output = tmp_path / f"generator{suffix}"

    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt_path", str(path), "--output", str(output)])

    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ")
    assert str(path) in message
    assert "not found" in message
    assert not output.exists()


def test_cli_without_onnxscript_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)

    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt_path", str(tmp_path / "missing.ckpt"), "--output", str(tmp_path / "generator.onnx")])

    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    # The package is checked before the checkpoint is read.
    assert message.startswith("error: ONNX export needs the package 'onnxscript'")
    assert "pip install 'gan_lightning[export]'" in message


@pytest.fixture(scope="module")
def ema_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train three steps with a moving average of G and return the run's last.ckpt."""
    work_dir = tmp_path_factory.mktemp("export_ema_run")
    return train_tiny_mlp_checkpoint(work_dir, Z_DIM, "--max_steps", "3", "--model.ema_decay", "0.5")


@pytest.mark.parametrize("ema", [True, False])
def test_cli_exports_chosen_weights(ema_checkpoint: Path, tmp_path: Path, ema: bool) -> None:
    output = tmp_path / "generator.pt"

    export.main(["--ckpt_path", str(ema_checkpoint), "--output", str(output), *([] if ema else ["--raw_weights"])])

    z, labels = draw_inputs(3, conditional=False)
    exported = RUNNERS[".pt"](output, z, labels)
    chosen = generator_images(load_generator(ema_checkpoint, ema=ema), z, labels)
    other = generator_images(load_generator(ema_checkpoint, ema=not ema), z, labels)
    torch.testing.assert_close(exported, chosen, atol=ATOL[".pt"], rtol=0)
    assert not torch.allclose(exported, other, atol=ATOL[".pt"], rtol=0)
