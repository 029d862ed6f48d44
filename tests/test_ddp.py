"""Two CPU processes through train.py (DDP over gloo on 127.0.0.1), and the strategies rejected early.

The DDP run adds a ``ProcessProbe`` callback, imported from this file by every process, that
records which processes prepared the data and each process's final weights.
"""

import json
import os
import socket
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
from gan_lightning.datamodule import MNISTDataModule

TESTS_DIR = Path(__file__).resolve().parent
TRAIN_SCRIPT = TESTS_DIR.parent / "train.py"
TINY_RUN = [
    "--model.generator", "gan_lightning.networks.Generator",
    "--model.generator.init_args.hidden_dim", "8",
    "--model.discriminator", "gan_lightning.networks.Discriminator",
    "--model.discriminator.init_args.hidden_dim", "8",
    "--model.eval_metrics", "false",
    "--data.batch_size", "64",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip
MAX_STEPS = 4


class ProcessProbe(Callback):
    """Write, per process, a marker for each ``prepare_data`` call and the final weights to ``folder``.

    ``prepare_data`` is wrapped when the probe is built, which the CLI does in every process
    before training starts.
    """

    def __init__(self, folder: str):
        self.folder = Path(folder)
        original = MNISTDataModule.prepare_data

        def recorded_prepare_data(datamodule: MNISTDataModule) -> None:
            (self.folder / f"prepare_data.{os.getpid()}").touch()
            original(datamodule)

        MNISTDataModule.prepare_data = recorded_prepare_data

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank = trainer.global_rank
        parameters = {name: parameter.detach().cpu() for name, parameter in pl_module.named_parameters()}
        torch.save({"parameters": parameters, "fixed_z": pl_module.fixed_z.cpu()}, self.folder / f"rank{rank}.pt")
        info = {"pid": os.getpid(), "world_size": trainer.world_size, "global_step": trainer.global_step}
        (self.folder / f"rank{rank}.json").write_text(json.dumps(info))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work_dir = tmp_path_factory.mktemp("ddp")
    make_tiny_mnist(work_dir / "data")
    probe_dir = work_dir / "probe"
    probe_dir.mkdir()

    env = {name: value for name, value in os.environ.items() if name not in (RUN_DIR_ENV, "PL_GLOBAL_SEED")}
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(TESTS_DIR),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
        }
    )
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(work_dir / "wandb_home")

    probe = {"class_path": "test_ddp.ProcessProbe", "init_args": {"folder": str(probe_dir)}}
    command = [
        sys.executable, str(TRAIN_SCRIPT),
        "--data.data_dir", str(work_dir / "data"),
        "--runs_dir", str(work_dir / "runs"),
        "--wandb", "offline",
        "--trainer.strategy", "ddp_find_unused_parameters_true",
        "--trainer.devices", "2",
        "--trainer.accelerator", "cpu",
        "--max_steps", str(MAX_STEPS),
        f"--trainer.callbacks+={json.dumps(probe)}",
        *TINY_RUN,
    ]  # fmt: skip

    # The timeout fails the test when a process hangs instead of exiting on its own.
    process = subprocess.run(command, cwd=work_dir, env=env, capture_output=True, text=True, timeout=240)
    return {"process": process, "probe_dir": probe_dir, "runs_dir": work_dir / "runs"}


def finished(ddp_run: dict[str, Any]) -> dict[str, Any]:
    process = ddp_run["process"]
    assert process.returncode == 0, process.stderr[-3000:]
    return ddp_run


def test_ddp_both_ranks_trained(ddp_run: dict[str, Any]) -> None:
    probe_dir = finished(ddp_run)["probe_dir"]
    infos = [json.loads((probe_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]

    assert [info["world_size"] for info in infos] == [2, 2]
    assert [info["global_step"] for info in infos] == [MAX_STEPS, MAX_STEPS]
    assert infos[0]["pid"] != infos[1]["pid"]


def test_ddp_ranks_same_weights(ddp_run: dict[str, Any]) -> None:
    probe_dir = finished(ddp_run)["probe_dir"]
    rank0 = torch.load(probe_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(probe_dir / "rank1.pt", weights_only=True)

    assert torch.equal(rank0["fixed_z"], rank1["fixed_z"])
    assert rank0["parameters"].keys() == rank1["parameters"].keys()
    for name, parameter in rank0["parameters"].items():
        assert torch.equal(parameter, rank1["parameters"][name]), name


def test_ddp_checkpoint_matches_ranks(ddp_run: dict[str, Any]) -> None:
    runs = finished(ddp_run)
    (run_dir,) = runs["runs_dir"].iterdir()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    rank0 = torch.load(runs["probe_dir"] / "rank0.pt", weights_only=True)

    assert checkpoint["global_step"] == MAX_STEPS
    for name, parameter in rank0["parameters"].items():
        assert torch.equal(checkpoint["state_dict"][name], parameter), name


def test_ddp_one_process_prepares_data(ddp_run: dict[str, Any]) -> None:
    markers = list(finished(ddp_run)["probe_dir"].glob("prepare_data.*"))
    assert len(markers) == 1


def test_ddp_one_run_folder(ddp_run: dict[str, Any]) -> None:
    runs_dir = finished(ddp_run)["runs_dir"]
    (run_dir,) = runs_dir.iterdir()
    assert (run_dir / "config.yaml").is_file()


def test_ddp_one_wandb_run(ddp_run: dict[str, Any]) -> None:
    runs_dir = finished(ddp_run)["runs_dir"]
    assert len(list(runs_dir.glob("*/wandb/offline-run-*"))) == 1


def test_ddp_processes_exit(ddp_run: dict[str, Any]) -> None:
    probe_dir = finished(ddp_run)["probe_dir"]
    pids = [json.loads((probe_dir / f"rank{rank}.json").read_text())["pid"] for rank in (0, 1)]

    # The launched process may take a moment to be reaped after the main one returned.
    deadline = time.monotonic() + 10
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(process_gone(pid) for pid in pids)


def tiny_args(data_dir: Path, runs_dir: Path) -> list[str]:
    return ["--data.data_dir", str(data_dir), "--runs_dir", str(runs_dir), "--wandb", "off", "--max_steps", "1", *TINY_RUN]


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "ddp_find_unused_parameters_false"])
def test_plain_ddp_rejected(tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture, strategy: str) -> None:
    runs_dir = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        main([*tiny_args(mnist_dir, runs_dir), "--trainer.strategy", strategy, "--trainer.devices", "2", "--trainer.accelerator", "cpu"])

    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith(f"error: --trainer.strategy {strategy} cannot train a GAN")
    assert "_find_unused_parameters_true" in error
    assert not runs_dir.exists()


def test_auto_ddp_rejected(tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture) -> None:
    runs_dir = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        main([*tiny_args(mnist_dir, runs_dir), "--trainer.devices", "2", "--trainer.accelerator", "cpu"])

    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Pass --trainer.strategy ddp_find_unused_parameters_true" in error
    # The run folder was made before Lightning chose the strategy, and was empty, so it is gone.
    assert list(runs_dir.iterdir()) == []
