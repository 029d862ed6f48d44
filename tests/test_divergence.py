"""NaN and infinite losses, and checkpoints that a crash must not leave half-written.

The losses are made non-finite at a chosen step by wrapping the loss functions that
``gan_lightning.module`` calls once per batch each. Training runs in this process through
``gan_lightning.cli.main``, for 8 batches of 64 images with a checkpoint every 2 steps.
"""

import errno
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gan_lightning import module as gan_module
from gan_lightning.cli import GANCLI, main
from gan_lightning.reliability import AtomicCheckpointIO

TINY_RUN = [
    "--model.generator", "gan_lightning.networks.Generator",
    "--model.generator.init_args.hidden_dim", "8",
    "--model.discriminator", "gan_lightning.networks.Discriminator",
    "--model.discriminator.init_args.hidden_dim", "8",
    "--model.eval_metrics", "false",
    "--data.batch_size", "64",
    "--wandb", "off",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--checkpoint.every_n_train_steps", "2",
    "--checkpoint.save_top_k", "-1",
    "--trainer.max_steps", "8",
]  # fmt: skip
LOSS_FUNCTIONS = {"d_loss": "discriminator_loss", "g_loss": "generator_loss"}


class BadLoss:
    """Wrap a loss function so that from call ``first_call`` on it returns ``value`` times the loss.

    Before returning the first bad loss it copies every last.ckpt under ``runs_dir``, so a test
    can check that the file stays as it was.
    """

    def __init__(self, function: Callable[..., torch.Tensor], first_call: int, value: float, runs_dir: Path, repeat: bool = False):
        self.function = function
        self.first_call = first_call
        self.value = value
        self.runs_dir = runs_dir
        self.repeat = repeat
        self.calls = 0
        self.last_checkpoints: dict[Path, bytes] = {}

    def __call__(self, *args: Any) -> torch.Tensor:
        self.calls += 1
        loss = self.function(*args)
        if self.calls == self.first_call:
            self.last_checkpoints = {path: path.read_bytes() for path in self.runs_dir.glob("*/checkpoints/last.ckpt")}
        if self.calls == self.first_call or (self.repeat and self.calls > self.first_call):
            # Multiplying keeps the autograd graph, so backward gets the bad value too.
            return loss * self.value
        return loss


def inject(monkeypatch: pytest.MonkeyPatch, loss_name: str, step: int, value: float, runs_dir: Path, repeat: bool = False) -> BadLoss:
    function_name = LOSS_FUNCTIONS[loss_name]
    bad_loss = BadLoss(getattr(gan_module, function_name), step, value, runs_dir, repeat)
    monkeypatch.setattr(gan_module, function_name, bad_loss)
    return bad_loss


def train(data_dir: Path, runs_dir: Path, *options: str) -> None:
    main(["--data.data_dir", str(data_dir), "--runs_dir", str(runs_dir), *TINY_RUN, *options])


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def all_finite(checkpoint: dict[str, Any]) -> bool:
    return all(torch.isfinite(tensor).all() for tensor in checkpoint["state_dict"].values())


@pytest.mark.parametrize(("loss_name", "value"), [("d_loss", float("nan")), ("g_loss", float("inf"))])
def test_bad_loss_stops_training(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, loss_name: str, value: float
) -> None:
    runs_dir = tmp_path / "runs"
    bad_loss = inject(monkeypatch, loss_name, 5, value, runs_dir)

    with pytest.raises(SystemExit) as exit_info:
        train(mnist_dir, runs_dir)

    error = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert f"error: Training diverged at step 5: {loss_name} is {value}" in error
    assert "--divergence.policy skip" in error
    assert "Traceback" not in error
    assert bad_loss.calls == 5


@pytest.mark.parametrize("loss_name", ["d_loss", "g_loss"])
def test_bad_loss_keeps_last_checkpoint(tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, loss_name: str) -> None:
    runs_dir = tmp_path / "runs"
    bad_loss = inject(monkeypatch, loss_name, 5, float("nan"), runs_dir)

    with pytest.raises(SystemExit):
        train(mnist_dir, runs_dir)

    (checkpoints,) = runs_dir.glob("*/checkpoints")
    last = checkpoints / "last.ckpt"
    assert list(bad_loss.last_checkpoints) == [last]
    assert last.read_bytes() == bad_loss.last_checkpoints[last]
    assert load(last)["global_step"] == 4
    assert all_finite(load(last))
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt"]


def test_skip_policy_skips_update(tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    runs_dir = tmp_path / "runs"
    inject(monkeypatch, "d_loss", 3, float("nan"), runs_dir)

    with caplog.at_level(logging.WARNING, logger="gan_lightning.reliability"):
        train(mnist_dir, runs_dir, "--divergence.policy", "skip")

    (run_dir,) = runs_dir.iterdir()
    checkpoint = load(run_dir / "checkpoints" / "last.ckpt")
    opt_g, opt_d = checkpoint["optimizer_states"]
    assert checkpoint["global_step"] == 8
    assert all_finite(checkpoint)
    # Adam counts steps per parameter: D skipped one of its 8 updates, G none.
    assert {int(state["step"]) for state in opt_d["state"].values()} == {7}
    assert {int(state["step"]) for state in opt_g["state"].values()} == {8}
    assert checkpoint["callbacks"]["DivergenceGuard"]["skipped_updates"] == 1
    assert "Skipped the update of d_loss at step 3: it is nan" in caplog.text


def test_skip_policy_stops_after_limit(tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    runs_dir = tmp_path / "runs"
    inject(monkeypatch, "g_loss", 3, float("nan"), runs_dir, repeat=True)

    with pytest.raises(SystemExit) as exit_info:
        train(mnist_dir, runs_dir, "--divergence.policy", "skip", "--divergence.max_consecutive_skips", "2")

    assert exit_info.value.code == 1
    assert "the last 2 batches, up to step 4, all had a NaN or infinite loss" in capsys.readouterr().err


def partial_then_fail(real_save: Callable[..., None]) -> Callable[..., None]:
    """Return a torch.save that writes half of the bytes of a step-3 checkpoint, then fails like a full disk."""

    def save(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(obj, dict) and obj.get("global_step") == 3):
            real_save(obj, file, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_crash_during_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"global_step": 2, "weight": torch.ones(3)}, path)
    monkeypatch.setattr(torch, "save", partial_then_fail(torch.save))

    with pytest.raises(OSError):
        checkpoint_io.save_checkpoint({"global_step": 3, "weight": torch.zeros(3)}, path)

    loaded = checkpoint_io.load_checkpoint(path)
    assert loaded["global_step"] == 2
    assert torch.equal(loaded["weight"], torch.ones(3))
    assert [child.name for child in path.parent.iterdir()] == ["last.ckpt"]


def test_crash_during_training_save(tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs_dir = tmp_path / "runs"
    monkeypatch.setattr(torch, "save", partial_then_fail(torch.save))

    with pytest.raises(OSError):
        train(mnist_dir, runs_dir, "--checkpoint.every_n_train_steps", "1")

    (checkpoints,) = runs_dir.glob("*/checkpoints")
    assert load(checkpoints / "last.ckpt")["global_step"] == 2
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last.ckpt", "step0000001.ckpt", "step0000002.ckpt"]


def test_cli_writes_checkpoints_atomically(tmp_path: Path, mnist_dir: Path) -> None:
    cli = GANCLI(args=["--data.data_dir", str(mnist_dir), "--runs_dir", str(tmp_path / "runs"), *TINY_RUN])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
