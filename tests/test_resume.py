"""Exact resume through train.py: a run split across processes ends as one straight run does.

One module fixture trains the tiny networks in four train.py processes: 4 epochs straight,
2 epochs, those 2 resumed for 2 more, and the straight run resumed from its mid-epoch checkpoint
of step 6. With 256 images in batches of 64, an epoch is 4 batches, so step 6 is in epoch 1.
A ``BatchLog`` callback, imported from this file by the processes, records every batch.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import make_tiny_mnist
from gan_lightning import GAN, Discriminator, Generator, MNISTDataModule
from gan_lightning.cli import RUN_DIR_ENV
from gan_lightning.loader import DeviceBatchLoader, EpochShuffle
from gan_lightning.reliability import RandomState

TESTS_DIR = Path(__file__).resolve().parent
TRAIN_SCRIPT = TESTS_DIR.parent / "train.py"
TINY_RUN = [
    "--model.generator", "gan_lightning.networks.Generator",
    "--model.generator.init_args.hidden_dim", "8",
    "--model.discriminator", "gan_lightning.networks.Discriminator",
    "--model.discriminator.init_args.hidden_dim", "8",
    "--model.eval_metrics", "false",
    # The moving average of G is part of the state that must resume exactly.
    "--model.ema_decay", "0.9",
    "--data.batch_size", "64",
    "--wandb", "off",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--checkpoint.every_n_train_steps", "3",
    "--checkpoint.save_top_k", "-1",
]  # fmt: skip
BATCHES_PER_EPOCH = 4


class BatchLog(Callback):
    """Append the step, epoch and a digest of each training batch's images to a JSON-lines file."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        digest = hashlib.sha1(batch[0].cpu().numpy().tobytes()).hexdigest()
        entry = {"step": trainer.global_step, "epoch": trainer.current_epoch, "images": digest}
        with open(self.path, "a") as file:
            file.write(json.dumps(entry) + "\n")


def train_process(work_dir: Path, run_name: str, *args: str) -> subprocess.CompletedProcess:
    """Run train.py in a new process with a BatchLog writing to ``<run_name>.jsonl``."""
    env = {name: value for name, value in os.environ.items() if name not in (RUN_DIR_ENV, "PL_GLOBAL_SEED")}
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(TESTS_DIR)})
    batch_log = {"class_path": "test_resume.BatchLog", "init_args": {"path": str(work_dir / f"{run_name}.jsonl")}}
    command = [
        sys.executable, str(TRAIN_SCRIPT),
        "--data.data_dir", str(work_dir / "data"),
        "--runs_dir", str(work_dir / "runs"),
        "--run_name", run_name,
        f"--trainer.callbacks+={json.dumps(batch_log)}",
        *TINY_RUN, *args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=work_dir, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work_dir = tmp_path_factory.mktemp("resume")
    make_tiny_mnist(work_dir / "data")
    checkpoints = work_dir / "runs"
    processes = {
        "straight": train_process(work_dir, "straight", "--max_epochs", "4"),
        "half": train_process(work_dir, "half", "--max_epochs", "2"),
    }
    processes["resumed"] = train_process(
        work_dir, "resumed", "--max_epochs", "4", "--ckpt_path", str(checkpoints / "half" / "checkpoints" / "last.ckpt")
    )
    processes["mid_epoch"] = train_process(
        work_dir, "mid_epoch", "--max_epochs", "4", "--ckpt_path", str(checkpoints / "straight" / "checkpoints" / "step0000006.ckpt")
    )
    return {"work_dir": work_dir, "processes": processes}


def last_checkpoint(runs: dict[str, Any], name: str) -> dict[str, Any]:
    process = runs["processes"][name]
    assert process.returncode == 0, process.stderr[-3000:]
    path = runs["work_dir"] / "runs" / name / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)


def batch_log(runs: dict[str, Any], name: str) -> list[dict[str, Any]]:
    lines = (runs["work_dir"] / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_tensors_close(actual: Any, expected: Any, where: str) -> None:
    """Compare nested dicts and lists of tensors within 1e-6, and other values exactly."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_tensors_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (actual_item, expected_item) in enumerate(zip(actual, expected)):
            assert_tensors_close(actual_item, expected_item, f"{where}[{index}]")
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6, msg=lambda text: f"{where}: {text}")
    else:
        assert actual == expected, where


@pytest.mark.parametrize("resumed", ["resumed", "mid_epoch"])
def test_resume_same_weights(runs: dict[str, Any], resumed: str) -> None:
    straight = last_checkpoint(runs, "straight")
    # The state dict contains both networks' weights, BatchNorm statistics, the fixed noise and
    # the moving average of the generator.
    assert "generator_ema.num_updates" in straight["state_dict"]
    assert_tensors_close(last_checkpoint(runs, resumed)["state_dict"], straight["state_dict"], "state_dict")


@pytest.mark.parametrize("resumed", ["resumed", "mid_epoch"])
def test_resume_same_optimizers(runs: dict[str, Any], resumed: str) -> None:
    straight = last_checkpoint(runs, "straight")
    optimizer_states = last_checkpoint(runs, resumed)["optimizer_states"]

    assert len(optimizer_states) == 2
    assert_tensors_close(optimizer_states, straight["optimizer_states"], "optimizer_states")


@pytest.mark.parametrize("resumed", ["resumed", "mid_epoch"])
def test_resume_same_progress(runs: dict[str, Any], resumed: str) -> None:
    straight = last_checkpoint(runs, "straight")
    checkpoint = last_checkpoint(runs, resumed)

    assert straight["global_step"] == 4 * BATCHES_PER_EPOCH
    assert checkpoint["global_step"] == straight["global_step"]
    assert checkpoint["epoch"] == straight["epoch"]


def test_resume_same_fixed_noise(runs: dict[str, Any]) -> None:
    straight = last_checkpoint(runs, "straight")["state_dict"]["fixed_z"]
    assert torch.equal(last_checkpoint(runs, "half")["state_dict"]["fixed_z"], straight)
    assert torch.equal(last_checkpoint(runs, "resumed")["state_dict"]["fixed_z"], straight)


def test_half_run_last_checkpoint_final(runs: dict[str, Any]) -> None:
    # Periodic saves at steps 3 and 6 must not leave last.ckpt behind the final step 8.
    assert last_checkpoint(runs, "half")["global_step"] == 2 * BATCHES_PER_EPOCH


def test_resume_same_data_order(runs: dict[str, Any]) -> None:
    straight = batch_log(runs, "straight")

    assert [entry["step"] for entry in straight] == list(range(1, 4 * BATCHES_PER_EPOCH + 1))
    assert batch_log(runs, "half") + batch_log(runs, "resumed") == straight


def test_mid_epoch_resume_same_data_order(runs: dict[str, Any]) -> None:
    straight = batch_log(runs, "straight")
    mid_epoch = batch_log(runs, "mid_epoch")

    # Step 7 is the third batch of epoch 1, so the resumed run starts inside an epoch.
    assert mid_epoch[0]["step"] == 7
    assert mid_epoch[0]["epoch"] == 1
    assert mid_epoch == straight[6:]


def test_checkpoint_has_loader_position(runs: dict[str, Any]) -> None:
    path = runs["work_dir"] / "runs" / "straight" / "checkpoints" / "step0000006.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)

    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches_served": 2}]


def make_loader(num_items: int = 20, batch_size: int = 4) -> DeviceBatchLoader:
    images = torch.arange(num_items, dtype=torch.uint8).view(num_items, 1, 1).expand(num_items, 2, 2).contiguous()
    sampler = EpochShuffle(num_items, shuffle=True, seed=3, rank=0, world_size=1)
    return DeviceBatchLoader(images, torch.arange(num_items), batch_size, sampler)


def test_loader_resumes_mid_epoch() -> None:
    loader = make_loader()
    loader.sampler.set_epoch(2)
    iterator = iter(loader)
    served = [labels for _, labels in (next(iterator), next(iterator))]
    state = loader.state_dict()

    resumed = make_loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    rest = [labels for _, labels in resumed]

    full = [labels for _, labels in loader]
    assert state == {"epoch": 2, "batches_served": 2}
    assert torch.equal(torch.cat(served + rest), torch.cat(full))


def test_loader_position_other_epoch_ignored() -> None:
    loader = make_loader()
    loader.load_state_dict({"epoch": 2, "batches_served": 5})
    loader.sampler.set_epoch(3)

    assert len(list(loader)) == len(loader)


def test_loader_position_used_once() -> None:
    loader = make_loader()
    loader.load_state_dict({"epoch": 0, "batches_served": 3})

    assert len(list(loader)) == len(loader) - 3
    assert len(list(loader)) == len(loader)


class NoiseProbe(Callback):
    """Draw from the global generator when training starts, after the callbacks listed before it."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.noise = torch.randn(5)


def test_random_state_restored_at_train_start(tmp_path: Path, mnist_dir: Path) -> None:
    torch.manual_seed(7)
    state = RandomState().state_dict()
    expected = torch.randn(5)

    restorer = RandomState()
    restorer.load_state_dict(state)
    probe = NoiseProbe()
    torch.manual_seed(8)
    model = GAN(Generator(z_dim=4, hidden_dim=8), Discriminator(hidden_dim=8), eval_metrics=False)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[restorer, probe], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(mnist_dir), batch_size=64, download=False))

    assert torch.equal(probe.noise, expected)
