"""Sample-quality metrics for generated MNIST-like digits, computed on features of the project's classifier.

SampleQuality reports FID and KID (torchmetrics) on the classifier's penultimate features, an Inception-score
analogue on its softmax, and how evenly the fakes cover the 10 classes. inception_fid() builds the standard
Inception-v3 FID for comparison with published numbers, which needs torch-fidelity and downloaded weights.
"""

import importlib.util
import socket
import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gan_lightning.classifier import FEATURE_DIM, MNISTClassifier, as_image_batch, load_classifier

NUM_CLASSES = 10

# Pixel values may exceed [0, 1] by this much (float rounding in a generator's output) before update_* raises.
PIXEL_TOLERANCE = 1e-3

# Images per classifier forward pass inside update_*, which bounds activation memory for large batches.
CHUNK_SIZE = 1000


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate generator output or real images. images: (N, 1, 28, 28) or (N, 784) float in [0, 1].

    Returns (N, 1, 28, 28) float32 clamped to [0, 1]. Raises TypeError for non-float tensors and ValueError for
    other shapes, an empty batch, NaN or infinite values, or values outside [0, 1] by more than PIXEL_TOLERANCE.
    """
    if not torch.is_tensor(images) or not images.is_floating_point():
        kind = images.dtype if torch.is_tensor(images) else type(images).__name__
        raise TypeError(
            f"Expected a floating-point image tensor with values in [0, 1], got {kind}. "
            "Convert uint8 images with images.float() / 255."
        )

    images = as_image_batch(images)
    if images.shape[0] == 0:
        raise ValueError("Expected at least one image, got an empty batch.")
    if not torch.isfinite(images).all():
        raise ValueError("Images contain NaN or infinite values. Check the generator for a diverged run.")

    low, high = (value.item() for value in torch.aminmax(images))
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        raise ValueError(
            f"Expected pixel values in [0, 1], got min {low:.4f} and max {high:.4f}. "
            "Map tanh outputs in [-1, 1] to [0, 1] with (x + 1) / 2."
        )
    return images.float().clamp(0, 1)


class PrecomputedFeatures(nn.Module):
    """Feature extractor for torchmetrics that passes features (N, num_features) through unchanged.

    SampleQuality runs the classifier once per batch and hands the same features to FID and KID, which would
    otherwise each run it again. torchmetrics reads num_features to size its state.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"Expected features of shape (N, {self.num_features}), got {tuple(features.shape)}.")
        return features


class ClassHistogram(Metric):
    """Statistics of classifier predictions on a set of images: softmax means and a histogram of predicted classes.

    All states are sums, so torchmetrics adds them across processes. The Inception-score analogue is computed
    here by hand: torchmetrics 1.9 InceptionScore accepts a custom classifier, but it scores 10 random splits
    and, with normalize=True, converts float images to uint8 even for a custom classifier.
    """

    full_state_update = False

    def __init__(self, coverage_threshold: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < coverage_threshold <= 1:
            raise ValueError(f"coverage_threshold must be in (0, 1], got {coverage_threshold}.")
        self.coverage_threshold = coverage_threshold

        self.add_state("probability_sum", torch.zeros(NUM_CLASSES, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("negative_entropy_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("predicted_counts", torch.zeros(NUM_CLASSES, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor) -> None:
        """Add a batch of logits (N, 10)."""
        log_probs = logits.double().log_softmax(dim=1)
        probs = log_probs.exp()

        self.probability_sum += probs.sum(dim=0)
        self.negative_entropy_sum += (probs * log_probs).sum()
        # one_hot().sum() in place of bincount, which has no deterministic CUDA implementation.
        self.predicted_counts += nn.functional.one_hot(logits.argmax(dim=1), NUM_CLASSES).sum(dim=0)
        self.num_samples += logits.shape[0]

    def compute(self) -> dict[str, float | list[float]]:
        """Compute `is`, `kl_uniform`, `classes` and `class_share` over all images added since the last reset.

        is: exp(E_x KL(p(y|x) || p(y))), where p(y) is the mean softmax over all images (one split, not ten).
        kl_uniform: KL divergence of the predicted-class histogram from the uniform distribution over 10 classes,
            0 for a perfectly even histogram and log(10) = 2.303 when every image gets the same class.
        classes: number of classes predicted for at least coverage_threshold of the images.
        class_share: fraction of images predicted as each class 0..9.
        """
        if self.num_samples == 0:
            raise RuntimeError("ClassHistogram has no images. Call update() before compute().")
        n = self.num_samples.double()
        mean_probs = self.probability_sum / n
        # E_x KL(p(y|x) || p(y)) = E_x sum_y p log p - sum_y p(y) log p(y)
        mean_kl = self.negative_entropy_sum / n - torch.special.xlogy(mean_probs, mean_probs).sum()

        share = self.predicted_counts.double() / n
        kl_uniform = torch.special.xlogy(share, share * NUM_CLASSES).sum()
        return {
            "is": mean_kl.exp().item(),
            "kl_uniform": kl_uniform.item(),
            "classes": int((share >= self.coverage_threshold).sum().item()),
            "class_share": share.tolist(),
        }


class SampleQuality(nn.Module):
    """FID, KID, an Inception-score analogue and class coverage of fake digits, measured with the MNIST classifier.

    Real statistics persist across reset_fake(), so a training run adds the real images once and then scores
    each new set of fakes with update_fake() and compute(). reset() clears both. The classifier stays in eval
    mode even when a parent module calls train(). Its weights are part of this module's state_dict.
    """

    def __init__(
        self,
        classifier: MNISTClassifier | None = None,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        coverage_threshold: float = 0.01,
    ) -> None:
        """Set up the metrics.

        classifier: feature extractor. None loads the packaged, checksum-verified weights.
        kid_subset_size: images per KID subset, 1000 by default as in torchmetrics. When fewer real or fake
            images are stored, compute() uses their count instead, so small runs work.
        kid_subsets: number of random subsets whose KID is averaged (mean and standard deviation are reported).
            KID dominates compute(): 100 subsets of 1000 took about 9 s on 2 busy CPU cores, FID under 1 s.
        coverage_threshold: share of the fakes a class needs to count in `classes`. The default 0.01 is a tenth of
            the 0.1 share of a perfectly even generator, so a class counts unless it is nearly missing.
        """
        super().__init__()
        if kid_subset_size < 2:
            raise ValueError(f"kid_subset_size must be at least 2, got {kid_subset_size}.")
        self.kid_subset_size = kid_subset_size
        self.classifier = classifier if classifier is not None else load_classifier()
        self.classifier.requires_grad_(False).eval()

        # torchmetrics 1.9 FID and KID pass a custom feature module's input through unrescaled (normalize only
        # applies to their built-in Inception), so these metrics receive the classifier features as computed here.
        feature_input = PrecomputedFeatures(FEATURE_DIM)
        self.fid = FrechetInceptionDistance(feature=feature_input, reset_real_features=False)
        with warnings.catch_warnings():
            # KID keeps every feature vector: about 0.5 kB per image at FEATURE_DIM = 128, so 5 MB per 10,000.
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            self.kid = KernelInceptionDistance(
                feature=feature_input, subsets=kid_subsets, subset_size=kid_subset_size, reset_real_features=False
            )
        self.fake_classes = ClassHistogram(coverage_threshold)
        # Share of conditional fakes that the classifier assigns to the class they were drawn for.
        self.label_accuracy = MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro")

    def train(self, mode: bool = True) -> "SampleQuality":
        super().train(mode)
        self.classifier.eval()  # BatchNorm must keep its running statistics
        return self

    @property
    def num_real(self) -> int:
        """Number of real images added in this process since the last reset()."""
        return int(self.fid.real_features_num_samples.item())

    @property
    def num_fake(self) -> int:
        """Number of fake images added in this process since the last reset_fake() or reset()."""
        return int(self.fid.fake_features_num_samples.item())

    @torch.no_grad()
    def _classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the classifier in chunks. images: (N, 1, 28, 28) or (N, 784) -> features (N, D), logits (N, 10)."""
        parameter = next(self.classifier.parameters())
        # NOTE: tested on CPU only. GPU runs, including torch.use_deterministic_algorithms, are untested.
        images = check_images(images).to(device=parameter.device, dtype=parameter.dtype)

        # Autocast off, so scores do not depend on the caller's mixed-precision setting.
        with torch.autocast(device_type=parameter.device.type, enabled=False):
            features = torch.cat([self.classifier.features(chunk) for chunk in images.split(CHUNK_SIZE)])
            logits = self.classifier.head(features)
        return features, logits

    def update_real(self, images: torch.Tensor) -> None:
        """Add real images: (N, 1, 28, 28) or (N, 784) float in [0, 1]."""
        features, _ = self._classify(images)
        self.fid.update(features, real=True)
        self.kid.update(features, real=True)

    def update_fake(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add generated images: (N, 1, 28, 28) or (N, 784) float in [0, 1].

        labels: for a conditional generator, the classes (N,) the images were drawn for; compute()
        then also reports ``label_accuracy``.
        """
        features, logits = self._classify(images)
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)
        self.fake_classes.update(logits)
        if labels is not None:
            self.label_accuracy.update(logits, labels.to(logits.device))

    def compute(self) -> dict[str, float | list[float]]:
        """Compute fid, kid, kid_std, is, kl_uniform, classes and class_share of the fakes against the reals.

        Also label_accuracy when the fakes came with labels.

        Needs at least 2 real and 2 fake images. KID subsets are drawn with a fixed seed in a forked random
        state, so repeated calls agree and the caller's random stream is left untouched.
        """
        if self.num_real < 2 or self.num_fake < 2:
            raise RuntimeError(
                f"SampleQuality needs at least 2 real and 2 fake images, got {self.num_real} real and "
                f"{self.num_fake} fake. Call update_real() and update_fake() before compute()."
            )

        # NOTE: under distributed training these counts are per process, so the subset may be smaller than
        # the gathered feature set allows.
        self.kid.subset_size = min(self.kid_subset_size, self.num_real, self.num_fake)
        with torch.random.fork_rng(devices=[]):
            # Seeds the CPU generator only, because torch.manual_seed would also reseed every GPU's generator.
            torch.default_generator.manual_seed(0)
            kid_mean, kid_std = self.kid.compute()

        result = {
            "fid": self.fid.compute().item(),
            "kid": kid_mean.item(),
            "kid_std": kid_std.item(),
            **self.fake_classes.compute(),
        }
        if self.label_accuracy.update_count:
            result["label_accuracy"] = self.label_accuracy.compute().item()
        return result

    def reset_fake(self) -> None:
        """Clear the fake statistics and keep the real ones."""
        self.fid.reset()
        self.kid.reset()
        self.fake_classes.reset()
        self.label_accuracy.reset()

    def reset(self) -> None:
        """Clear both the real and the fake statistics."""
        for metric in (self.fid, self.kid):
            metric.reset_real_features = True
            metric.reset()
            metric.reset_real_features = False
        self.fake_classes.reset()
        self.label_accuracy.reset()


class InceptionFID(nn.Module):
    """Standard Inception-v3 FID (torchmetrics with torch-fidelity weights) for grey 28x28 images in [0, 1].

    Inception-FID on MNIST is comparable with published numbers but is widely thought unreliable for 28x28
    grey digits, and it runs a 299x299 Inception-v3 per image, which is slow on a CPU.
    """

    def __init__(self, fid: FrechetInceptionDistance) -> None:
        super().__init__()
        self.fid = fid

    @staticmethod
    def _to_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
        """Convert images: (N, 1, 28, 28) or (N, 784) in [0, 1] -> (N, 3, 28, 28) uint8.

        Rounds to the nearest level like the saved uint8 samples, where torchmetrics' normalize=True would
        truncate. torch-fidelity resizes to 299x299 itself.
        """
        images = check_images(images)
        return images.mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1)

    @torch.no_grad()
    def _update(self, images: torch.Tensor, real: bool) -> None:
        device = self.fid.real_features_sum.device
        for chunk in self._to_rgb_uint8(images).split(100):
            self.fid.update(chunk.to(device), real=real)

    def update_real(self, images: torch.Tensor) -> None:
        """Add real images: (N, 1, 28, 28) or (N, 784) float in [0, 1]."""
        self._update(images, real=True)

    def update_fake(self, images: torch.Tensor) -> None:
        """Add generated images: (N, 1, 28, 28) or (N, 784) float in [0, 1]."""
        self._update(images, real=False)

    def compute(self) -> float:
        """Return the FID of the fakes against the reals, which needs at least 2 of each."""
        return self.fid.compute().item()

    def reset_fake(self) -> None:
        """Clear the fake statistics and keep the real ones."""
        self.fid.reset()


def _standard_fid(feature: int, weights_path: str | None) -> FrechetInceptionDistance:
    # normalize=False because InceptionFID converts to uint8 itself.
    return FrechetInceptionDistance(
        feature=feature, reset_real_features=False, normalize=False, feature_extractor_weights_path=weights_path
    )


def inception_fid(
    weights_path: str | Path | None = None, download_timeout_s: float = 30.0, feature: int = 2048
) -> InceptionFID:
    """Build the standard Inception-v3 FID, keeping real statistics across reset_fake().

    weights_path: local copy of torch-fidelity's weights-inception-2015-12-05-6726825d.pth. None uses the copy
        in torch.hub's cache folder or downloads it there.
    download_timeout_s: seconds each network operation of that download may block before it fails.
    feature: Inception layer width, 64, 192, 768 or 2048. Published FIDs use 2048, whose compute() takes
        tens of seconds on a CPU because torchmetrics takes eigenvalues of a 2048x2048 float64 matrix.

    Raises ModuleNotFoundError when torch-fidelity is missing and RuntimeError when the weights cannot be
    downloaded.
    """
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ModuleNotFoundError(
            "Inception-based FID needs the torch-fidelity package: pip install torch-fidelity. "
            "The classifier-based FID of SampleQuality works without it and offline."
        )

    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"Inception-v3 weights not found at weights_path {path}.")
        return InceptionFID(_standard_fid(feature, str(path)))

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(download_timeout_s)
    try:
        fid = _standard_fid(feature, None)
    except OSError as error:  # URLError, timeouts and refused connections are all OSError
        raise RuntimeError(
            f"Could not download the Inception-v3 weights for FID ({error}). Pass weights_path to a local copy "
            "of weights-inception-2015-12-05-6726825d.pth, or use SampleQuality, whose classifier-based FID "
            "works offline."
        ) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return InceptionFID(fid)
