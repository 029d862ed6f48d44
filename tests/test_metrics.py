"""Tests of the classifier-based sample-quality metrics on synthetic digit-like images."""

import math
import os
import urllib.error

import pytest
import torch
import torchvision

from gan_lightning import metrics
from gan_lightning.classifier import load_classifier
from gan_lightning.metrics import ClassHistogram, SampleQuality, check_images, inception_fid


def stroke_images(n: int, seed: int, num_segments: int = 3, width: float = 1.2) -> torch.Tensor:
    """Draw n random polylines as blurred strokes, like handwriting. Returns (n, 1, 28, 28) in [0, 1].

    Each image is a chain of num_segments line segments with end points in the central 20x20 box. A pixel's
    value falls off as a Gaussian of its distance to the nearest segment, with standard deviation width.
    """
    generator = torch.Generator().manual_seed(seed)
    points = 4 + 20 * torch.rand(n, num_segments + 1, 2, generator=generator)
    start = points[:, :-1, None]  # (n, S, 1, 2)
    direction = points[:, 1:, None] - start  # (n, S, 1, 2)

    grid = torch.stack(torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij"), dim=-1)
    offset = grid.reshape(1, 1, 784, 2) - start  # (n, S, 784, 2)
    along = (offset * direction).sum(-1) / direction.square().sum(-1).clamp_min(1e-6)
    nearest = along.clamp(0, 1)[..., None] * direction
    distance = (offset - nearest).norm(dim=-1).amin(dim=1)  # (n, 784)

    return torch.exp(-0.5 * (distance / width) ** 2).reshape(n, 1, 28, 28)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def strokes():
    return stroke_images(300, seed=0)


def score(classifier, real: torch.Tensor, fake: torch.Tensor) -> dict:
    quality = SampleQuality(classifier)
    quality.update_real(real)
    quality.update_fake(fake)
    return quality.compute()


def test_compute_returns_all_keys(classifier, strokes):
    result = score(classifier, strokes, strokes)

    assert set(result) == {"fid", "kid", "kid_std", "is", "kl_uniform", "classes", "class_share"}
    assert len(result["class_share"]) == 10
    assert sum(result["class_share"]) == pytest.approx(1.0)
    assert isinstance(result["classes"], int)
    assert all(isinstance(result[key], float) for key in ("fid", "kid", "kid_std", "is", "kl_uniform"))


def test_same_images_give_fid_near_zero(classifier, strokes):
    assert abs(score(classifier, strokes, strokes)["fid"]) < 1e-2


def test_flat_images_give_same_numbers(classifier, strokes):
    as_images = score(classifier, strokes, strokes.flip(-1))
    flat = score(classifier, strokes.reshape(-1, 784), strokes.flip(-1).reshape(-1, 784))

    for key in ("fid", "kid", "kid_std", "is", "kl_uniform"):
        assert flat[key] == pytest.approx(as_images[key], rel=1e-5, abs=1e-6), key
    assert flat["classes"] == as_images["classes"]
    assert flat["class_share"] == as_images["class_share"]


def test_different_images_give_large_fid(classifier, strokes):
    same_kind = score(classifier, strokes, stroke_images(300, seed=1))
    blobs = score(classifier, strokes, stroke_images(300, seed=2, num_segments=1, width=4.0))
    noise = score(classifier, strokes, torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(3)))

    assert blobs["fid"] > 5 * same_kind["fid"]
    assert noise["fid"] > 5 * same_kind["fid"]
    assert blobs["kid"] > 5 * same_kind["kid"]


def test_collapsed_fakes_cover_few_classes(classifier, strokes):
    collapsed = strokes[:1].expand(300, -1, -1, -1)
    result = score(classifier, strokes, collapsed)

    assert result["classes"] <= 2
    assert result["kl_uniform"] > 2.0
    assert result["is"] == pytest.approx(1.0, abs=1e-3)
    assert max(result["class_share"]) == 1.0


def test_varied_strokes_cover_all_classes(classifier, strokes):
    result = score(classifier, strokes, strokes)

    assert result["classes"] == 10
    assert result["kl_uniform"] < 0.5
    assert result["is"] > 2.0


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.full((4, 1, 28, 28), 1.5), ValueError, "max 1.5000"),
        (torch.full((4, 784), -1.0), ValueError, r"\(x \+ 1\) / 2"),
        (torch.full((4, 784), float("nan")), ValueError, "NaN"),
        (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), TypeError, "torch.uint8"),
        (torch.zeros(0, 784), ValueError, "empty"),
        (torch.zeros(4, 3, 28, 28), ValueError, "shape"),
    ],
)
def test_invalid_images_raise(classifier, images, error, match):
    quality = SampleQuality(classifier)

    with pytest.raises(error, match=match):
        quality.update_fake(images)
    with pytest.raises(error, match=match):
        quality.update_real(images)


def test_rounding_overshoot_is_clamped():
    images = torch.full((2, 784), 1.0005)

    assert check_images(images).max().item() == 1.0
    assert check_images(images.half()).dtype == torch.float32


def test_reset_fake_keeps_real(classifier, strokes):
    quality = SampleQuality(classifier)
    quality.update_real(strokes)
    quality.update_fake(strokes[:100])
    first = quality.compute()

    quality.reset_fake()
    assert quality.num_real == 300
    assert quality.num_fake == 0

    quality.update_fake(strokes[:100])
    assert quality.compute() == first


def test_reset_clears_real(classifier, strokes):
    quality = SampleQuality(classifier)
    quality.update_real(strokes)
    quality.update_fake(strokes)

    quality.reset()

    assert quality.num_real == 0
    assert quality.num_fake == 0
    with pytest.raises(RuntimeError, match="at least 2 real and 2 fake"):
        quality.compute()


def test_kid_with_few_samples(classifier, strokes):
    result = score(classifier, strokes[:20], stroke_images(10, seed=1))

    assert math.isfinite(result["kid"])
    assert math.isfinite(result["fid"])


def test_compute_leaves_global_random_state(classifier, strokes):
    quality = SampleQuality(classifier, kid_subset_size=50)
    quality.update_real(strokes)
    quality.update_fake(strokes.flip(-1))

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = quality.compute()
    assert torch.equal(torch.rand(3), expected)

    quality.update_fake(strokes.flip(-1))
    quality.update_fake(strokes)
    quality.reset_fake()
    quality.update_fake(strokes.flip(-1))
    assert quality.compute() == first


def test_train_keeps_classifier_in_eval(classifier):
    quality = SampleQuality(classifier)
    quality.train()

    assert quality.training
    assert not quality.classifier.training
    assert all(not module.training for module in quality.classifier.modules())


def test_class_histogram_by_hand():
    histogram = ClassHistogram(coverage_threshold=0.3)
    logits = torch.full((4, 10), -1e4)
    logits[[0, 1, 2], 3] = 0.0  # three confident predictions of class 3
    logits[3, 7] = 0.0  # one of class 7
    histogram.update(logits)

    result = histogram.compute()

    assert result["class_share"][3] == pytest.approx(0.75)
    assert result["class_share"][7] == pytest.approx(0.25)
    assert result["classes"] == 1  # class 7 has 0.25, below the 0.3 threshold
    expected_kl = 0.75 * math.log(7.5) + 0.25 * math.log(2.5)
    assert result["kl_uniform"] == pytest.approx(expected_kl)
    # Confident predictions: IS = exp(entropy of the marginal) = exp(-(0.75 ln 0.75 + 0.25 ln 0.25)).
    assert result["is"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_inception_fid_download_failure(monkeypatch, tmp_path):
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    def fail_download(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", fail_download)

    with pytest.raises(RuntimeError, match="Could not download the Inception-v3 weights") as raised:
        inception_fid()
    assert "works offline" in str(raised.value)


def test_inception_fid_missing_package(monkeypatch):
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None)

    with pytest.raises(ModuleNotFoundError, match="pip install torch-fidelity"):
        inception_fid()


def test_inception_fid_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights_path"):
        inception_fid(weights_path=tmp_path / "missing.pth")


def test_inception_fid_runs_with_random_weights(monkeypatch, strokes):
    # Random weights stand in for the downloaded ones, to check the conversion to 3-channel uint8 offline.
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", lambda *args, **kwargs: {})
    monkeypatch.setattr(inception_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    # The 64-wide layer keeps compute() fast; the image conversion is the same for every layer.
    fid = inception_fid(feature=64)

    fid.update_real(strokes[:3])
    fid.update_fake(strokes[:3].reshape(3, 784))
    assert abs(fid.compute()) < 1e-2

    fid.reset_fake()
    fid.update_fake(strokes[3:6])
    assert math.isfinite(fid.compute())


@pytest.mark.real_data
def test_real_train_against_test_fid_small(classifier):
    data_dir = os.environ.get("GAN_LIGHTNING_DATA_DIR")
    if not data_dir:
        pytest.skip("set GAN_LIGHTNING_DATA_DIR to the folder that contains MNIST/raw")
    train_images = torchvision.datasets.MNIST(root=data_dir, train=True, download=False).data[:10000]
    test_images = torchvision.datasets.MNIST(root=data_dir, train=False, download=False).data

    quality = SampleQuality(classifier)
    quality.update_real(test_images.unsqueeze(1).float() / 255)
    quality.update_fake(train_images.unsqueeze(1).float() / 255)
    result = quality.compute()

    assert result["fid"] < 5.0
    assert result["classes"] == 10
    assert result["kl_uniform"] < 0.01
