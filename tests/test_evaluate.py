"""``python -m gan_lightning.evaluate``: the numbers that training logged, the table, JSON, .npz files and errors."""

import csv
import json
import math
import os
import re
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import make_tiny_mnist, train_tiny_run
from gan_lightning import GAN, evaluate, metrics, sample
from gan_lightning.datasets import load_split
from gan_lightning.quality import VAL_METRICS

NUM_EVAL_SAMPLES = 300
EVAL_SEED = 3
REPORT_KEYS = {
    "ckpt_path", "global_step", "num_fake", "seed", "dataset", "num_real", "fid", "kid", "kid_std", "is",
    "kl_uniform", "classes", "class_share", "coverage_threshold", "weights",
}  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train 4 steps through the CLI with validation after steps 2 and 4, and read the logged val/* rows."""
    work_dir = tmp_path_factory.mktemp("evaluate_run")
    data_dir = make_tiny_mnist(work_dir / "data")
    run_dir = train_tiny_run(
        work_dir,
        data_dir,
        "--max_steps", "4",
        "--model.generator", "gan_lightning.networks.Generator",
        "--model.generator.init_args.hidden_dim", "8",
        "--model.discriminator", "gan_lightning.networks.Discriminator",
        "--model.discriminator.init_args.hidden_dim", "8",
        "--model.num_eval_samples", str(NUM_EVAL_SAMPLES),
        "--model.eval_seed", str(EVAL_SEED),
    )  # fmt: skip
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/fid")]
    return {"data_dir": data_dir, "checkpoints": run_dir / "checkpoints", "val_rows": rows}


def run_evaluate(capsys: pytest.CaptureFixture, *args: str) -> str:
    evaluate.main(list(args))
    return capsys.readouterr().out


def evaluate_json(capsys: pytest.CaptureFixture, *args: str) -> dict[str, Any]:
    return json.loads(run_evaluate(capsys, *args, "--json"))


def checkpoint_args(run: dict[str, Any], name: str) -> list[str]:
    return [
        "--ckpt_path", str(run["checkpoints"] / name),
        "--num_samples", str(NUM_EVAL_SAMPLES),
        "--seed", str(EVAL_SEED),
        "--data_dir", str(run["data_dir"]),
    ]  # fmt: skip


def error_message(capsys: pytest.CaptureFixture, *args: str) -> tuple[Any, str]:
    """Run evaluate, expect it to exit, and return the exit code and the message (argparse writes to stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(list(args))
    code = exit_info.value.code
    return code, code if isinstance(code, str) else capsys.readouterr().err


def test_training_logged_two_validations(trained_run: dict[str, Any]) -> None:
    assert len(trained_run["val_rows"]) == 2


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_same_numbers_as_training(trained_run: dict[str, Any], capsys: pytest.CaptureFixture, name: str) -> None:
    rows = trained_run["val_rows"]
    if name == "last.ckpt":
        logged = rows[-1]  # the validation after the last step
    else:
        logged = min(rows, key=lambda row: float(row["val/fid"]))

    report = evaluate_json(capsys, *checkpoint_args(trained_run, name))

    for key in VAL_METRICS:
        # metrics.csv contains the float32 values that Lightning logged.
        assert report[key] == pytest.approx(float(logged[f"val/{key}"]), rel=1e-4), key


def test_json_report_keys(trained_run: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    report = evaluate_json(capsys, *checkpoint_args(trained_run, "last.ckpt"))

    assert set(report) == REPORT_KEYS
    assert report["global_step"] == 4
    assert report["num_fake"] == NUM_EVAL_SAMPLES
    assert report["seed"] == EVAL_SEED
    assert report["weights"] == "trained"
    assert report["num_real"] == 64
    assert len(report["class_share"]) == 10
    assert sum(report["class_share"]) == pytest.approx(1.0)


def test_table_output(trained_run: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    report = evaluate_json(capsys, *checkpoint_args(trained_run, "last.ckpt"))
    table = run_evaluate(capsys, *checkpoint_args(trained_run, "last.ckpt"))
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines() if line.startswith("  ") and len(line.split()) > 2}

    assert "(step 4)" in table
    assert f"fakes: {NUM_EVAL_SAMPLES} from seed {EVAL_SEED}" in table
    assert "reals: 64 test images of mnist" in table
    assert float(rows["fid"]) == pytest.approx(report["fid"], abs=1e-3)
    assert float(rows["kid"]) == pytest.approx(report["kid"], abs=1e-5)
    assert int(rows["classes"]) == report["classes"]
    assert "inception_fid" not in rows


def test_default_sample_count() -> None:
    args = evaluate._parse_args(["--ckpt_path", "x.ckpt", "--data_dir", "data"])

    # The defaults of the model options num_eval_samples and eval_seed.
    assert args.num_samples == 10000
    assert args.seed == 0
    assert args.num_samples == GAN().hparams.num_eval_samples
    assert args.seed == GAN().hparams.eval_seed


def test_npz_samples_close_to_checkpoint(trained_run: dict[str, Any], capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    samples = tmp_path / "samples.npz"
    sample.main(["--ckpt_path", str(trained_run["checkpoints"] / "last.ckpt"), "--output", str(samples),
                 "--num_samples", str(NUM_EVAL_SAMPLES), "--seed", str(EVAL_SEED)])  # fmt: skip
    capsys.readouterr()

    from_checkpoint = evaluate_json(capsys, *checkpoint_args(trained_run, "last.ckpt"))
    from_file = evaluate_json(capsys, "--samples", str(samples), "--data_dir", str(trained_run["data_dir"]))

    assert from_file["samples"] == str(samples)
    assert from_file["num_fake"] == NUM_EVAL_SAMPLES
    # The same images, rounded to 8 bits in the file.
    assert from_file["fid"] == pytest.approx(from_checkpoint["fid"], rel=1e-2)
    assert from_file["class_share"] == pytest.approx(from_checkpoint["class_share"], abs=0.02)


def test_npz_of_reference_scores_zero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = make_tiny_mnist(tmp_path / "data")
    samples = tmp_path / "reference.npz"
    np.savez_compressed(samples, images=load_split(data_dir, "mnist", "test").images.numpy())

    report = evaluate_json(capsys, "--samples", str(samples), "--data_dir", str(data_dir))

    # The file contains the test split itself, so the two feature sets are the same. KID is not 0 here: its
    # unbiased estimate leaves out the kernel's diagonal within each set but not between the two sets.
    assert report["num_fake"] == report["num_real"] == 64
    assert abs(report["fid"]) < 1e-2


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("make_file", "match"),
    [
        (lambda path: write_npz(path, images=np.zeros((4, 28, 28), dtype=np.float32)), "dtype float32"),
        (lambda path: write_npz(path, images=np.zeros((4, 784), dtype=np.uint8)), r"shape \(4, 784\)"),
        (lambda path: write_npz(path, images=np.zeros((1, 28, 28), dtype=np.uint8)), "at least 2"),
        (lambda path: write_npz(path, pictures=np.zeros((4, 28, 28), dtype=np.uint8)), "no 'images' array"),
        (lambda path: path.write_text("not an archive"), "not a readable .npz"),
        (lambda path: path, "not found"),
    ],
    ids=["float", "flat", "one_image", "no_images", "text", "missing"],
)
def test_invalid_npz_rejected(shared_mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, make_file: Any, match: str) -> None:
    path = tmp_path / "samples.npz"
    make_file(path)

    code, message = error_message(capsys, "--samples", str(path), "--data_dir", str(shared_mnist_dir))

    assert message.startswith("error:")
    assert str(path) in message
    assert re.search(match, message), message


def test_npy_file_rejected(shared_mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "samples.npy"
    np.save(path, np.zeros((4, 28, 28), dtype=np.uint8))

    code, message = error_message(capsys, "--samples", str(path), "--data_dir", str(shared_mnist_dir))

    assert "expected an .npz archive" in message


def test_missing_data_dir_rejected(trained_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, message = error_message(capsys, "--ckpt_path", str(trained_run["checkpoints"] / "last.ckpt"), "--data_dir", str(tmp_path / "empty"))

    assert message.startswith("error:")
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "--data_dir" in message


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--samples", "x.npz", "--seed", "1"], "--seed"),
        (["--samples", "x.npz", "--num_samples", "10"], "--num_samples"),
        (["--ckpt_path", "x.ckpt", "--num_samples", "1"], "--num_samples"),
        (["--ckpt_path", "x.ckpt", "--inception_weights", "w.pth"], "--inception_weights"),
        (["--ckpt_path", "x.ckpt", "--samples", "x.npz"], "--samples"),
    ],
    ids=["seed_with_samples", "num_samples_with_samples", "one_sample", "weights_without_inception", "both_sources"],
)
def test_invalid_options_rejected(args: list[str], option: str, capsys: pytest.CaptureFixture) -> None:
    code, message = error_message(capsys, *args, "--data_dir", "data")

    assert code == 2
    assert option in message


def test_inception_download_failure_stops_early(trained_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    def fail_download(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("network unreachable")

    loaded = []
    monkeypatch.setattr(inception_module, "load_state_dict_from_url", fail_download)
    monkeypatch.setattr(evaluate, "load_checkpoint", lambda path: loaded.append(path))

    code, message = error_message(capsys, *checkpoint_args(trained_run, "last.ckpt"), "--inception")

    assert message.startswith("error: Could not download the Inception-v3 weights")
    assert loaded == []  # failed before reading the checkpoint


def test_inception_fid_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # Random weights stand in for the downloaded ones, and the 64-wide layer keeps compute() fast.
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", lambda *args, **kwargs: {})
    monkeypatch.setattr(inception_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    monkeypatch.setattr(evaluate, "inception_fid", lambda weights_path: metrics.inception_fid(weights_path, feature=64))
    # Four test images and four fakes, because Inception-v3 scores each at 299x299.
    data_dir = make_tiny_mnist(tmp_path / "data", num_test=4)
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=load_split(data_dir, "mnist", "test").images.flip(-1).numpy())

    report = evaluate_json(capsys, "--samples", str(samples), "--data_dir", str(data_dir), "--inception")
    table = run_evaluate(capsys, "--samples", str(samples), "--data_dir", str(data_dir), "--inception")

    assert math.isfinite(report["inception_fid"])
    assert f"{report['inception_fid']:.3f}" in table
    assert "inception_fid" in table


def test_images_converted_by_255(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "samples.npz", images=np.array([[[0, 255] * 14] * 28, [[51, 102] * 14] * 28], dtype=np.uint8))

    images = evaluate.load_samples(path)

    assert images.shape == (2, 1, 28, 28)
    assert images.dtype == torch.float32
    assert images[0, 0, 0, :2].tolist() == [0.0, 1.0]
    assert images[1, 0, 0, :2].tolist() == pytest.approx([0.2, 0.4])


@pytest.mark.real_data
def test_real_train_images_score_near_floor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = os.environ.get("GAN_LIGHTNING_DATA_DIR")
    if not data_dir:
        pytest.skip("set GAN_LIGHTNING_DATA_DIR to the folder that contains MNIST/raw")
    samples = tmp_path / "train10k.npz"
    np.savez_compressed(samples, images=load_split(data_dir, "mnist", "train").images[:10000].numpy())

    report = evaluate_json(capsys, "--samples", str(samples), "--data_dir", data_dir)

    # 10,000 training digits against the 10,000 test digits: the score of a generator that copied the training set.
    assert report["num_real"] == 10000
    assert report["fid"] < 5.0
    assert report["classes"] == 10
    assert report["kl_uniform"] < 0.01
