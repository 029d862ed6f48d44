"""The command line: short options, run folders, resuming, W&B offline logs and early data checks.

The runs through ``train.py`` start Python in a subprocess, which costs several seconds of
imports each, so one module fixture makes all of them and the tests share the results.
"""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from wandb.proto import wandb_internal_pb2

from conftest import make_tiny_mnist
from gan_lightning.cli import RUN_DIR_ENV, UsageError, expand_short_options, main

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "train.py"
TINY_NETWORKS = [
    "--model.generator", "gan_lightning.networks.Generator",
    "--model.generator.init_args.hidden_dim", "8",
    "--model.discriminator", "gan_lightning.networks.Discriminator",
    "--model.discriminator.init_args.hidden_dim", "8",
    "--model.num_eval_samples", "200",
]


def smoke_args(data_dir: Path, runs_dir: Path) -> list[str]:
    return [
        "--data.data_dir", str(data_dir),
        "--max_steps", "4",
        "--model.display_step", "2",
        "--wandb", "offline",
        "--runs_dir", str(runs_dir),
        *TINY_NETWORKS,
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def subprocess_env(home: Path) -> dict[str, str]:
    """Return the environment of a train.py subprocess: W&B offline, no state of other runs."""
    env = {name: value for name, value in os.environ.items() if name not in (RUN_DIR_ENV, "PL_GLOBAL_SEED")}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"})
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[name] = str(home / "wandb_home")
    return env


def run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args],
        cwd=cwd,
        env=subprocess_env(cwd),
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_folders(runs_dir: Path) -> set[Path]:
    return set(runs_dir.iterdir()) if runs_dir.is_dir() else set()


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Return {relative path: (size, mtime in ns)} of every file under ``folder``."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train the smoke command twice, then resume the first run to step 6.

    The resumed run logs every step, so that its loggers receive scalar metrics.
    """
    work_dir = tmp_path_factory.mktemp("cli_runs")
    data_dir = make_tiny_mnist(work_dir / "data")
    runs_dir = work_dir / "runs"
    result: dict[str, Any] = {}

    for name in ("first", "second"):
        before = run_folders(runs_dir)
        result[f"{name}_process"] = run_train(smoke_args(data_dir, runs_dir), work_dir)
        result[name] = sorted(run_folders(runs_dir) - before)

    first = result["first"][0] if len(result["first"]) == 1 else None
    if first is not None:
        result["first_state"] = folder_state(first)
        result["first_last_ckpt"] = (first / "checkpoints" / "last.ckpt").read_bytes()
        before = run_folders(runs_dir)
        resume_args = ["--ckpt_path", str(first / "checkpoints" / "last.ckpt"), "--max_steps", "6", "--trainer.log_every_n_steps", "1"]
        result["resumed_process"] = run_train([*smoke_args(data_dir, runs_dir), *resume_args], work_dir)
        result["resumed"] = sorted(run_folders(runs_dir) - before)
    return result


def only_folder(runs: dict[str, Any], name: str) -> Path:
    process = runs[f"{name}_process"]
    assert process.returncode == 0, process.stderr[-3000:]
    assert len(runs[name]) == 1
    return runs[name][0]


def test_short_options_expanded() -> None:
    args = ["--accelerator", "cpu", "--devices=1", "--max_epochs", "2", "--precision", "32", "--max_steps=9"]
    expected = ["--trainer.accelerator", "cpu", "--trainer.devices=1", "--trainer.max_epochs", "2", "--trainer.precision", "32", "--trainer.max_steps=9"]
    assert expand_short_options(args) == expected


def test_full_options_unchanged() -> None:
    args = ["--trainer.accelerator", "cpu", "--model.g_lr", "1e-4", "--config", "configs/default.yaml", "--data.batch_size=64"]
    assert expand_short_options(args) == args


@pytest.mark.parametrize("args", [["--optimizer", "Adam"], ["--lr_scheduler=X"]])
def test_optimizer_options_rejected(args: list[str]) -> None:
    with pytest.raises(UsageError) as error:
        expand_short_options(args)

    message = str(error.value)
    assert args[0].split("=")[0] in message
    assert "--model.g_lr" in message


def test_main_rejects_optimizer(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--optimizer", "Adam"])

    assert exit_info.value.code == 2
    assert "--model.g_lr" in capsys.readouterr().err


def test_smoke_run_exits_zero(runs: dict[str, Any]) -> None:
    process = runs["first_process"]
    assert process.returncode == 0, process.stderr[-3000:]


@pytest.mark.parametrize(
    "name",
    [
        "config.yaml",
        "checkpoints/last.ckpt",
        "images/fake_step0000002.png",
        "images/real_step0000002.png",
        "images/fake_step0000004.png",
        "images/real_step0000004.png",
        "losses.png",
    ],
)
def test_smoke_run_files(runs: dict[str, Any], name: str) -> None:
    assert (only_folder(runs, "first") / name).is_file()


def test_short_run_writes_metrics_csv(runs: dict[str, Any]) -> None:
    assert (only_folder(runs, "first") / "csv" / "metrics.csv").is_file()


def test_smoke_run_config(runs: dict[str, Any]) -> None:
    config = yaml.safe_load((only_folder(runs, "first") / "config.yaml").read_text())

    # --max_steps is the short form of --trainer.max_steps.
    assert config["trainer"]["max_steps"] == 4
    assert config["model"]["display_step"] == 2
    assert config["model"]["generator"]["init_args"]["hidden_dim"] == 8


def test_smoke_run_checkpoint_step(runs: dict[str, Any]) -> None:
    path = only_folder(runs, "first") / "checkpoints" / "last.ckpt"
    assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == 4


def test_repeat_run_new_folder(runs: dict[str, Any]) -> None:
    assert only_folder(runs, "second") != only_folder(runs, "first")
    assert (only_folder(runs, "second") / "checkpoints" / "last.ckpt").is_file()


def test_resume_new_folder(runs: dict[str, Any]) -> None:
    resumed = only_folder(runs, "resumed")
    assert resumed not in (only_folder(runs, "first"), only_folder(runs, "second"))
    assert torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 6


def test_resume_leaves_first_run(runs: dict[str, Any]) -> None:
    only_folder(runs, "resumed")
    first = only_folder(runs, "first")

    assert (first / "checkpoints" / "last.ckpt").read_bytes() == runs["first_last_ckpt"]
    assert folder_state(first) == runs["first_state"]


def test_resumed_run_metrics_csv(runs: dict[str, Any]) -> None:
    lines = (only_folder(runs, "resumed") / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert "train/d_loss" in header
    assert "train/g_loss" in header


# The .wandb file of an offline run is a log of protobuf records in LevelDB's log framing: a
# 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header (checksum, length,
# type). wandb 0.31 writes it from its Go core and ships no Python reader, so the test splits the
# framing itself and parses each record with wandb's own protobuf class. Checksums are not verified.
WANDB_BLOCK_SIZE = 32768
WANDB_CHUNK_FULL, WANDB_CHUNK_FIRST, WANDB_CHUNK_MIDDLE, WANDB_CHUNK_LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), "not a W&B transaction log"
    payloads, pending, offset = [], b"", 7
    while offset + 7 <= len(data):
        if WANDB_BLOCK_SIZE - offset % WANDB_BLOCK_SIZE < 7:
            # Fewer than 7 bytes left in the block: padding up to the next block.
            offset += WANDB_BLOCK_SIZE - offset % WANDB_BLOCK_SIZE
            continue
        _, length, chunk_type = struct.unpack_from("<IHB", data, offset)
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if chunk_type == WANDB_CHUNK_FULL:
            payloads.append(chunk)
        elif chunk_type == WANDB_CHUNK_FIRST:
            pending = chunk
        elif chunk_type == WANDB_CHUNK_MIDDLE:
            pending += chunk
        elif chunk_type == WANDB_CHUNK_LAST:
            payloads.append(pending + chunk)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def wandb_records(run_dir: Path, record_type: str) -> list[Any]:
    """Return the records of one type ("config", "history", ...) of the run's offline W&B log."""
    paths = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(paths) == 1, paths
    records = read_wandb_records(paths[0])
    return [getattr(record, record_type) for record in records if record.WhichOneof("record_type") == record_type]


def history_rows(run_dir: Path) -> list[dict[tuple[str, ...], Any]]:
    """Return each history record as {key path: decoded value}."""
    rows = []
    for history in wandb_records(run_dir, "history"):
        rows.append({tuple(item.nested_key) or (item.key,): json.loads(item.value_json) for item in history.item})
    return rows


def test_wandb_config_has_settings(runs: dict[str, Any]) -> None:
    run_dir = only_folder(runs, "first")
    updates = {item.key: json.loads(item.value_json) for config in wandb_records(run_dir, "config") for item in config.update}

    assert updates["model"]["g_lr"] == pytest.approx(2e-4)
    assert updates["model"]["display_step"] == 2
    assert updates["model"]["generator"]["init_args"]["hidden_dim"] == 8
    assert updates["data"]["batch_size"] == 128
    assert updates["trainer"]["max_steps"] == 4


def test_wandb_config_sent_once(runs: dict[str, Any]) -> None:
    configs = wandb_records(only_folder(runs, "first"), "config")
    full_configs = [config for config in configs if any(item.key == "model" for item in config.update)]
    assert len(full_configs) == 1


def test_wandb_images_logged(runs: dict[str, Any]) -> None:
    rows = history_rows(only_folder(runs, "first"))
    image_steps = [row[("trainer/global_step",)] for row in rows if ("images", "_type") in row]
    # Grids of batches 2 and 4 go to logger steps 1 and 3, beside the metrics of the same batches.
    assert image_steps == [1, 3]


def wandb_image_grids(run_dir: Path, step: int) -> dict[str, np.ndarray]:
    """Return the grids logged at ``step`` by caption, as pixel arrays."""
    row = next(row for row in history_rows(run_dir) if row.get(("trainer/global_step",)) == step and ("images", "filenames") in row)
    media_root = next(run_dir.glob("wandb/offline-run-*/files"))
    grids = {}
    for caption, filename in zip(row[("images", "captions")], row[("images", "filenames")]):
        grids[caption] = np.asarray(Image.open(media_root / filename).convert("RGB"), dtype=np.int16)
    return grids


@pytest.mark.parametrize("kind", ["fake", "real"])
def test_wandb_images_match_png(runs: dict[str, Any], kind: str) -> None:
    run_dir = only_folder(runs, "first")
    logged = wandb_image_grids(run_dir, 1)[kind]  # the grid of batch 2, at logger step 1
    written = np.asarray(Image.open(run_dir / "images" / f"{kind}_step0000002.png").convert("RGB"), dtype=np.int16)

    assert logged.shape == written.shape
    # Rounding to 8 bits may differ by one level.
    assert np.abs(logged - written).max() <= 1


def test_wandb_history_has_losses(runs: dict[str, Any]) -> None:
    rows = history_rows(only_folder(runs, "resumed"))
    keys = {key for row in rows for key in row}
    assert ("train/d_loss",) in keys
    assert ("train/g_loss",) in keys


def tiny_args(data_dir: Path, runs_dir: Path) -> list[str]:
    return [
        "--data.data_dir", str(data_dir),
        "--max_steps", "2",
        "--model.display_step", "2",
        "--runs_dir", str(runs_dir),
        *TINY_NETWORKS,
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def test_wandb_off_no_folder(tmp_path: Path, mnist_dir: Path) -> None:
    runs_dir = tmp_path / "runs"
    main([*tiny_args(mnist_dir, runs_dir), "--wandb", "off"])

    (run_dir,) = runs_dir.iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "wandb").exists()
    assert not (tmp_path / "wandb").exists()


def test_main_twice_in_process(tmp_path: Path, mnist_dir: Path) -> None:
    runs_dir = tmp_path / "runs"
    main([*tiny_args(mnist_dir, runs_dir), "--wandb", "off"])
    main([*tiny_args(mnist_dir, runs_dir), "--wandb", "off"])
    assert len(list(runs_dir.iterdir())) == 2


@pytest.fixture(scope="module")
def missing_data_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work_dir = tmp_path_factory.mktemp("missing_data")
    data_dir = work_dir / "empty"
    data_dir.mkdir()
    runs_dir = work_dir / "runs"
    process = run_train(["--data.data_dir", str(data_dir), "--data.download", "false", "--runs_dir", str(runs_dir)], work_dir)
    return {"process": process, "data_dir": data_dir, "runs_dir": runs_dir}


def test_missing_data_exits_nonzero(missing_data_run: dict[str, Any]) -> None:
    process = missing_data_run["process"]

    assert process.returncode != 0
    assert str(missing_data_run["data_dir"] / "MNIST" / "raw") in process.stderr
    assert "--data.data_dir" in process.stderr
    assert not missing_data_run["runs_dir"].exists()


def test_missing_data_no_traceback(missing_data_run: dict[str, Any]) -> None:
    assert "Traceback" not in missing_data_run["process"].stderr


def test_print_config(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--print_config"])

    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["g_lr"] == pytest.approx(2e-4)
    assert config["data"]["batch_size"] == 128
