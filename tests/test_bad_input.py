"""Bad data, settings and checkpoints given to the command line: one ``error:`` line before training.

The classes' own checks are tested in test_data.py, test_module.py and test_sample.py. These
tests run ``gan_lightning.cli.main`` in this process and check the exit status, the message and
that no run folder is left behind.
"""

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from lightning.pytorch.plugins.io import TorchCheckpointIO

from conftest import TRAIN_IMAGES, TRAIN_LABELS, make_tiny_mnist
from gan_lightning.checkpoint import NETWORKS_KEY, CheckpointError
from gan_lightning.cli import main
from gan_lightning.idx import LABELS_MAGIC
from gan_lightning.reliability import AtomicCheckpointIO
from test_sample import CreateMarker

TINY_NETWORKS = [
    "--model.generator", "gan_lightning.networks.Generator",
    "--model.generator.init_args.hidden_dim", "8",
    "--model.discriminator", "gan_lightning.networks.Discriminator",
    "--model.discriminator.init_args.hidden_dim", "8",
]  # fmt: skip
QUIET = ["--wandb", "off", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_main(data_dir: Path, runs_dir: Path, *options: str, networks: list[str] = TINY_NETWORKS) -> None:
    main(["--data.data_dir", str(data_dir), "--runs_dir", str(runs_dir), "--max_steps", "2", "--model.eval_metrics", "false", *QUIET, *networks, *options])


def rejection(capsys: pytest.CaptureFixture, data_dir: Path, runs_dir: Path, *options: str, **kwargs: Any) -> tuple[int, str]:
    """Run main, expect it to exit, and return (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(data_dir, runs_dir, *options, **kwargs)
    return exit_info.value.code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train 2 steps of the tiny networks (hidden_dim 8) and return the run's last.ckpt."""
    work_dir = tmp_path_factory.mktemp("bad_input_checkpoint")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(work_dir)
        run_main(make_tiny_mnist(work_dir / "data"), work_dir / "runs")
    (run_dir,) = (work_dir / "runs").iterdir()
    return run_dir / "checkpoints" / "last.ckpt"


def test_missing_data_offline_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def fail_download(self: torchvision.datasets.MNIST) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the test tried to reach the network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fail_download)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data_dir = tmp_path / "missing"
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, data_dir, runs_dir)

    (line,) = error_lines(stderr)
    assert status == 1
    assert str(data_dir / "MNIST" / "raw") in line
    assert "--data.data_dir" in line
    assert "Traceback" not in stderr
    assert not runs_dir.exists()


def test_truncated_idx_rejected(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = mnist_dir / "MNIST" / "raw" / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:-1000])
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir)

    (line,) = error_lines(stderr)
    assert status == 1
    assert str(path) in line
    assert "truncated" in line
    assert "download the data set again" in line
    assert not runs_dir.exists()


def test_wrong_magic_idx_rejected(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = mnist_dir / "MNIST" / "raw" / TRAIN_IMAGES
    content = bytearray(path.read_bytes())
    content[:4] = LABELS_MAGIC.to_bytes(4, "big")
    path.write_bytes(bytes(content))
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir)

    (line,) = error_lines(stderr)
    assert status == 1
    assert str(path) in line
    assert f"magic number {LABELS_MAGIC:#010x}" in line
    assert not runs_dir.exists()


def test_image_size_mismatch_rejected(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs_dir = tmp_path / "runs"
    networks = [*TINY_NETWORKS, "--model.generator.init_args.im_dim", "100", "--model.discriminator.init_args.im_dim", "100"]

    status, stderr = rejection(capsys, mnist_dir, runs_dir, networks=networks)

    (line,) = error_lines(stderr)
    assert status == 1
    assert "(784 pixels)" in line
    assert "makes images of 100 pixels" in line
    assert "--model.generator.init_args.im_dim" in line
    assert "Traceback" not in stderr
    # The images are checked once the data is loaded, after the run folder was made, but nothing
    # in that folder can be resumed, and the next run gets a folder of its own.
    (failed_run,) = runs_dir.iterdir()
    assert not (failed_run / "checkpoints").exists()
    run_main(mnist_dir, runs_dir)
    assert len([path for path in runs_dir.glob("*/checkpoints/last.ckpt")]) == 1


@pytest.mark.parametrize(
    ("option", "value", "networks"),
    [
        ("--model.generator.init_args.z_dim", "0", TINY_NETWORKS),
        ("--model.generator.init_args.hidden_dim", "-1", TINY_NETWORKS),
        ("--model.discriminator.init_args.hidden_dim", "0", TINY_NETWORKS),
        # The default config's DCGAN networks have a width instead of a hidden_dim.
        ("--model.generator.init_args.width", "0", []),
        ("--data.batch_size", "0", TINY_NETWORKS),
        ("--model.g_lr", "0", TINY_NETWORKS),
        ("--model.d_lr", "-0.001", TINY_NETWORKS),
    ],
)
def test_nonpositive_value_rejected(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, option: str, value: str, networks: list[str]
) -> None:
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir, option, value, networks=networks)

    (line,) = error_lines(stderr)
    assert status == 2
    assert line.startswith(f"error: {option} must be")
    assert f"got {value}" in line
    assert f"Pass {option}" in line
    assert "Traceback" not in stderr
    assert not runs_dir.exists()


def test_class_rejected_value_no_folder(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # GAN itself checks num_eval_samples while the CLI builds it, after the run folder was made.
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir, "--model.num_eval_samples", "1")

    (line,) = error_lines(stderr)
    assert status == 2
    assert "num_eval_samples must be at least 2" in line
    assert "Traceback" not in stderr
    assert list(runs_dir.iterdir()) == []


def test_other_architecture_checkpoint_rejected(trained_checkpoint: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs_dir = tmp_path / "runs"
    networks = [*TINY_NETWORKS, "--model.generator.init_args.hidden_dim", "16"]

    status, stderr = rejection(capsys, mnist_dir, runs_dir, "--ckpt_path", str(trained_checkpoint), networks=networks)

    (line,) = error_lines(stderr)
    assert status == 1
    assert line.startswith(f"error: Checkpoint {trained_checkpoint} was trained with another generator")
    assert stderr.rstrip().splitlines()[-1] == line
    assert "'hidden_dim': 8" in stderr
    assert "'hidden_dim': 16" in stderr
    assert "--model.generator" in stderr
    assert not runs_dir.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", "foreign"], ids=["empty", "text", "foreign"])
def test_non_checkpoint_rejected(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes | str) -> None:
    path = tmp_path / "model.ckpt"
    if content == "foreign":
        torch.save({"state_dict": {"weight": torch.zeros(2)}}, path)
    else:
        path.write_bytes(content)
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir, "--ckpt_path", str(path))

    (line,) = error_lines(stderr)
    assert status == 1
    assert str(path) in line
    assert "not a" in line
    # The message is one line, also where torch's reason spans several.
    assert stderr.rstrip().splitlines()[-1] == line
    assert "Traceback" not in stderr
    assert not runs_dir.exists()


def test_missing_checkpoint_rejected(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "missing.ckpt"
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir, "--ckpt_path", str(path))

    assert status == 1
    assert error_lines(stderr) == [f"error: Checkpoint {path} not found. Pass --ckpt_path with an existing .ckpt file."]
    assert not runs_dir.exists()


def malicious_copy(checkpoint: Path, folder: Path) -> tuple[Path, Path]:
    """Write a copy of a real checkpoint with a payload that creates a marker file when unpickled."""
    marker = folder / "marker"
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content[NETWORKS_KEY]["payload"] = CreateMarker(marker)
    path = folder / "malicious.ckpt"
    torch.save(content, path)
    return path, marker


def test_malicious_checkpoint_rejected(trained_checkpoint: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, marker = malicious_copy(trained_checkpoint, tmp_path)
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir, "--ckpt_path", str(path))

    (line,) = error_lines(stderr)
    assert status == 1
    assert str(path) in line
    assert not marker.exists()
    assert not runs_dir.exists()


def test_checkpoint_io_never_runs_pickled_code(trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, marker = malicious_copy(trained_checkpoint, tmp_path)
    # torch.load then unpickles any object unless the caller passes weights_only=True itself.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    with pytest.raises(CheckpointError):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()

    # Lightning's own reader runs the payload under the same setting.
    TorchCheckpointIO().load_checkpoint(path)
    assert marker.exists()


@pytest.mark.parametrize("where", ["command_line", "config_file"])
def test_unknown_config_key_rejected(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, where: str) -> None:
    runs_dir = tmp_path / "runs"
    if where == "command_line":
        options = ["--model.g_lrr", "0.001"]
    else:
        config = tmp_path / "config.yaml"
        config.write_text("model:\n  g_lrr: 0.001\n")
        options = ["--config", str(config)]

    status, stderr = rejection(capsys, mnist_dir, runs_dir, *options)

    assert status == 2
    assert stderr.splitlines()[-1].startswith("error:")
    assert "g_lrr" in stderr.splitlines()[-1]
    assert "Traceback" not in stderr
    # A one-line usage, so the error is not buried under every option of the CLI.
    assert len(stderr.splitlines()) <= 4
    assert not runs_dir.exists()


def test_two_checkpoint_intervals_rejected(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir, "--checkpoint.every_n_epochs", "1")

    (line,) = error_lines(stderr)
    assert status == 2
    assert "--checkpoint.every_n_train_steps 1000 and --checkpoint.every_n_epochs 1" in line
    assert "--checkpoint.every_n_train_steps 0 --checkpoint.every_n_epochs 1" in line
    assert "Traceback" not in stderr
    assert not runs_dir.exists()


def test_lightning_rejection_no_folder(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The Trainer itself rejects zero devices, after the run folder was made.
    runs_dir = tmp_path / "runs"

    status, stderr = rejection(capsys, mnist_dir, runs_dir, "--trainer.accelerator", "cpu", "--trainer.devices", "0")

    (line,) = error_lines(stderr)
    assert status == 2
    assert "devices='0'" in line
    assert "Traceback" not in stderr
    assert list(runs_dir.iterdir()) == []
