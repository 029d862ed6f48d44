"""SIGTERM and SIGINT sent to a real train.py process: checkpoint, clean logs, exit status, resume.

One module fixture starts a long tiny run per signal, waits for the image grid of step 10, sends
the signal, and resumes from the checkpoint that the process names. The runs log to W&B offline
with a fake ``WANDB_API_KEY`` in their environment, which must not reach any file they write.
Where the signal lands depends on timing, so ``SignalAt`` also sends SIGTERM from inside a run
in this process at chosen points: within an epoch, after its last batch, and during validation.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import make_tiny_mnist
from gan_lightning.cli import RUN_DIR_ENV, main
from gan_lightning.reliability import GracefulInterrupt, handle_interrupt
from test_cli import wandb_records

TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "train.py"
FAKE_API_KEY = "0123456789abcdef0123456789abcdef01234567"
TINY_RUN = [
    "--model.generator", "gan_lightning.networks.Generator",
    "--model.generator.init_args.hidden_dim", "8",
    "--model.discriminator", "gan_lightning.networks.Discriminator",
    "--model.discriminator.init_args.hidden_dim", "8",
    "--model.eval_metrics", "false",
    "--model.display_step", "5",
    "--data.batch_size", "64",
    "--trainer.log_every_n_steps", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143}
STOP_LINE = re.compile(r"Training stopped by (?P<signal>SIG\w+) after step (?P<step>\d+)\. Newest checkpoint: (?P<path>\S+) ")
# Extra batches trained by the resumed run.
MORE_STEPS = 4


def process_env(work_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in (RUN_DIR_ENV, "PL_GLOBAL_SEED")}
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_API_KEY": FAKE_API_KEY})
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(work_dir / "wandb_home")
    return env


def interrupt_run(work_dir: Path, signal_name: str) -> dict[str, Any]:
    """Start a long run, send ``signal_name`` once it has written the grid of step 10, and wait."""
    run_dir = work_dir / "runs" / signal_name
    command = [
        sys.executable, str(TRAIN_SCRIPT),
        "--data.data_dir", str(work_dir / "data"),
        "--runs_dir", str(work_dir / "runs"),
        "--run_name", signal_name,
        "--wandb", "offline",
        "--max_steps", "100000",
        *TINY_RUN,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=work_dir, env=process_env(work_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "images" / "fake_step0000010.png").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        process.send_signal(getattr(signal, signal_name))
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return {"returncode": process.returncode, "stdout": stdout, "stderr": stderr, "run_dir": run_dir}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    work_dir = tmp_path_factory.mktemp("interrupts")
    make_tiny_mnist(work_dir / "data")
    result = {}
    for signal_name in EXIT_STATUS:
        run = interrupt_run(work_dir, signal_name)
        match = STOP_LINE.search(run["stderr"])
        if match is not None:
            run["step"] = int(match["step"])
            run["checkpoint"] = Path(match["path"])
            run["resumed"] = subprocess.run(
                [
                    sys.executable, str(TRAIN_SCRIPT),
                    "--data.data_dir", str(work_dir / "data"),
                    "--runs_dir", str(work_dir / "runs"),
                    "--run_name", f"{signal_name}_resumed",
                    "--wandb", "off",
                    "--ckpt_path", str(run["checkpoint"]),
                    "--max_steps", str(run["step"] + MORE_STEPS),
                    *TINY_RUN,
                ],  # fmt: skip
                cwd=work_dir, env=process_env(work_dir), capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            run["resumed_dir"] = work_dir / "runs" / f"{signal_name}_resumed"
        result[signal_name] = run
    result["data_dir"] = work_dir / "data"
    result["wandb_home"] = work_dir / "wandb_home"
    return result


def stopped_run(runs: dict[str, Any], signal_name: str) -> dict[str, Any]:
    run = runs[signal_name]
    assert "checkpoint" in run, f"no stop line on stderr: {run['stderr'][-3000:]}"
    return run


@pytest.mark.parametrize("signal_name", EXIT_STATUS)
def test_interrupt_exit_status(runs: dict[str, Any], signal_name: str) -> None:
    run = runs[signal_name]
    assert run["returncode"] == EXIT_STATUS[signal_name], run["stderr"][-3000:]


@pytest.mark.parametrize("signal_name", EXIT_STATUS)
def test_interrupt_prints_one_stop_line(runs: dict[str, Any], signal_name: str) -> None:
    run = stopped_run(runs, signal_name)
    lines = [line for line in run["stderr"].splitlines() if line.startswith("Training stopped by")]

    assert len(lines) == 1
    assert f"by {signal_name} after step" in lines[0]
    assert f"--ckpt_path {run['checkpoint']}" in lines[0]
    assert "Traceback" not in run["stderr"]


@pytest.mark.parametrize("signal_name", EXIT_STATUS)
def test_interrupt_checkpoint_loads(runs: dict[str, Any], signal_name: str) -> None:
    run = stopped_run(runs, signal_name)
    checkpoint = torch.load(run["checkpoint"], map_location="cpu", weights_only=True)

    assert run["checkpoint"] == run["run_dir"] / "checkpoints" / "last.ckpt"
    # The stop comes after the grid of step 10 was written, at the end of a batch.
    assert run["step"] >= 10
    assert checkpoint["global_step"] == run["step"]
    assert (run["run_dir"] / "checkpoints" / f"step{run['step']:07d}.ckpt").is_file()


@pytest.mark.parametrize("signal_name", EXIT_STATUS)
def test_interrupt_leaves_no_temporary_files(runs: dict[str, Any], signal_name: str) -> None:
    names = [path.name for path in (stopped_run(runs, signal_name)["run_dir"] / "checkpoints").iterdir()]
    assert all(name.endswith(".ckpt") for name in names), names


@pytest.mark.parametrize("signal_name", EXIT_STATUS)
def test_interrupt_closes_wandb_run(runs: dict[str, Any], signal_name: str) -> None:
    exits = wandb_records(stopped_run(runs, signal_name)["run_dir"], "exit")
    assert [record.exit_code for record in exits] == [EXIT_STATUS[signal_name]]


@pytest.mark.parametrize("signal_name", EXIT_STATUS)
def test_interrupt_writes_csv_metrics(runs: dict[str, Any], signal_name: str) -> None:
    run = stopped_run(runs, signal_name)
    lines = (run["run_dir"] / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    steps = [int(line.split(",")[header.index("step")]) for line in lines[1:]]

    # Lightning logs the metrics of batch k at logger step k - 1. A stop at the last batch of an
    # epoch (4 batches here) comes before that batch's metrics are logged.
    last_logged_batch = run["step"] - 1 if run["step"] % 4 == 0 else run["step"]
    assert max(steps) == last_logged_batch - 1


@pytest.mark.parametrize("signal_name", EXIT_STATUS)
def test_interrupted_run_resumes_exactly(runs: dict[str, Any], signal_name: str, tmp_path: Path) -> None:
    run = stopped_run(runs, signal_name)
    resumed = run["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final_steps = run["step"] + MORE_STEPS
    straight_dir = tmp_path / "runs"

    main(["--data.data_dir", str(runs["data_dir"]), "--runs_dir", str(straight_dir), "--wandb", "off", "--max_steps", str(final_steps), *TINY_RUN])

    (straight_run_dir,) = straight_dir.iterdir()
    straight = torch.load(straight_run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    checkpoint = torch.load(run["resumed_dir"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == final_steps
    assert straight["global_step"] == final_steps
    for name, weight in straight["state_dict"].items():
        torch.testing.assert_close(checkpoint["state_dict"][name], weight, rtol=0, atol=1e-6, msg=lambda text, name=name: f"{name}: {text}")


def test_api_key_not_written(runs: dict[str, Any]) -> None:
    folders = [runs[name][key] for name in EXIT_STATUS for key in ("run_dir", "resumed_dir") if key in runs[name]]
    folders.append(runs["wandb_home"])
    files = [path for folder in folders for path in folder.rglob("*") if path.is_file()]
    kinds = {path.suffix for path in files}

    # The search covers every kind of file the runs write.
    assert {".yaml", ".ckpt", ".csv", ".wandb", ".log"} <= kinds
    assert [path for path in files if FAKE_API_KEY.encode() in path.read_bytes()] == []


def test_second_sigint_stops_at_once() -> None:
    interrupt = GracefulInterrupt()
    interrupt._on_sigint(signal.SIGINT, None)

    assert interrupt.signal_received == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        interrupt._on_sigint(signal.SIGINT, None)


def test_sigint_before_training_status(capsys: pytest.CaptureFixture) -> None:
    status = handle_interrupt(None, KeyboardInterrupt())

    assert status == 130
    assert "before training started" in capsys.readouterr().err


def test_other_exit_not_interrupt() -> None:
    assert handle_interrupt(None, SystemExit(0)) is None


class SignalAt(Callback):
    """Send SIGTERM to this process after training batch ``step``, or while validating after it."""

    def __init__(self, step: int, during_validation: bool = False):
        self.step = step
        self.during_validation = during_validation

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.during_validation and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.during_validation and trainer.global_step == self.step and not trainer.sanity_checking and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize(
    ("step", "batch_size", "during_validation"),
    [(10, 64, False), (12, 64, False), (8, 32, True)],
    # Batches of 64 make epochs of 4 batches and one validation batch, batches of 32 make 8 and 2.
    ids=["within_epoch", "epoch_end", "validation"],
)
def test_sigterm_at_step_resumes_exactly(mnist_dir: Path, tmp_path: Path, step: int, batch_size: int, during_validation: bool) -> None:
    final_step = step + MORE_STEPS
    signal_at = {"class_path": "test_interrupts.SignalAt", "init_args": {"step": step, "during_validation": during_validation}}
    options = ["--data.data_dir", str(mnist_dir), "--runs_dir", str(tmp_path), "--wandb", "off", *TINY_RUN, "--data.batch_size", str(batch_size)]

    with pytest.raises(SystemExit) as exit_info:
        main([*options, "--run_name", "stopped", "--max_steps", "1000", f"--trainer.callbacks+={json.dumps(signal_at)}"])
    stopped = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    main([*options, "--run_name", "resumed", "--max_steps", str(final_step), "--ckpt_path", str(stopped)])
    main([*options, "--run_name", "straight", "--max_steps", str(final_step)])

    assert exit_info.value.code == EXIT_STATUS["SIGTERM"]
    assert torch.load(stopped, map_location="cpu", weights_only=True)["global_step"] == step
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == final_step
    for name, weight in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], weight, rtol=0, atol=1e-6, msg=lambda text, name=name: f"{name}: {text}")
