"""Tests of the MNIST classifier, its packaged weights and the script that trains it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from gan_lightning.classifier import (
    CLASSIFIER_SHA256,
    FEATURE_DIM,
    WEIGHTS_PATH,
    MNISTClassifier,
    file_sha256,
    load_classifier,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_forward_shapes():
    model = MNISTClassifier().eval()
    images = torch.rand(5, 1, 28, 28)

    assert model(images).shape == (5, 10)
    assert model.features(images).shape == (5, FEATURE_DIM)


def test_flat_input_matches_images():
    model = MNISTClassifier().eval()
    images = torch.rand(4, 1, 28, 28)

    torch.testing.assert_close(model(images.reshape(4, 784)), model(images))


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 3, 28, 28), (4, 783), (784,)])
def test_wrong_shape_raises(shape):
    with pytest.raises(ValueError, match="Expected MNIST images of shape"):
        MNISTClassifier()(torch.rand(shape))


def test_packaged_weights_small():
    assert WEIGHTS_PATH.stat().st_size < 1_000_000


def test_load_returns_frozen_eval_model():
    model = load_classifier()

    assert not model.training
    assert all(not module.training for module in model.modules())
    assert all(not parameter.requires_grad for parameter in model.parameters())
    assert model(torch.rand(2, 784)).shape == (2, 10)


def test_load_matches_checksum_constant():
    assert file_sha256(WEIGHTS_PATH) == CLASSIFIER_SHA256


def test_tampered_weights_raise(tmp_path):
    tampered = tmp_path / "mnist_classifier.pt"
    shutil.copyfile(WEIGHTS_PATH, tampered)
    data = bytearray(tampered.read_bytes())
    data[-100] ^= 0xFF
    tampered.write_bytes(bytes(data))

    with pytest.raises(RuntimeError) as raised:
        load_classifier(weights_path=tampered)
    message = str(raised.value)
    assert str(tampered) in message
    assert CLASSIFIER_SHA256 in message
    assert file_sha256(tampered) in message
    assert "scripts/train_classifier.py" in message


def test_missing_weights_raise(tmp_path):
    missing = tmp_path / "missing.pt"

    with pytest.raises(FileNotFoundError, match="scripts/train_classifier.py"):
        load_classifier(weights_path=missing)


def run_train_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(REPO_ROOT / "scripts" / "train_classifier.py"), "--threads", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_train_script_writes_loadable_weights(tmp_path, mnist_dir):
    first = tmp_path / "first.pt"
    second = tmp_path / "second" / "other_name.pt"

    for output in (first, second):
        result = run_train_script("--data_dir", str(mnist_dir), "--epochs", "1", "--output", str(output))
        assert result.returncode == 0, result.stderr
        assert f"sha256: {file_sha256(output)}" in result.stdout
        assert "test accuracy:" in result.stdout

    # Same seed and settings give the same bytes, whatever the file is called.
    assert file_sha256(first) == file_sha256(second)
    state_dict = torch.load(first, weights_only=True)
    MNISTClassifier().load_state_dict(state_dict)
    assert state_dict["head.weight"].dtype == torch.float16


def test_train_script_missing_data_raises(tmp_path):
    result = run_train_script("--data_dir", str(tmp_path), "--epochs", "1", "--output", str(tmp_path / "w.pt"))

    assert result.returncode != 0
    assert "MNIST not found under --data_dir" in result.stderr
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.real_data
def test_accuracy_on_real_test_set():
    data_dir = os.environ.get("GAN_LIGHTNING_DATA_DIR")
    if not data_dir:
        pytest.skip("set GAN_LIGHTNING_DATA_DIR to the folder that contains MNIST/raw")
    test_set = torchvision.datasets.MNIST(root=data_dir, train=False, download=False)
    images = test_set.data.unsqueeze(1).float() / 255
    model = load_classifier()

    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(dim=1) for chunk in images.split(1000)])
    accuracy = (predictions == test_set.targets).float().mean().item()

    assert accuracy >= 0.99
