"""Finding, downloading and loading MNIST-like data sets as uint8 tensors.

Every data set here uses torchvision's layout: ``DATA_DIR/<Name>/raw/`` containing four IDX files,
each stored as is or gzip-compressed with the suffix ``.gz``. Fashion-MNIST is also found in the
folder of the Debian package ``dataset-fashion-mnist``. The files are parsed here, with checks
that name the file that is wrong, and nothing is ever written to the data folder except by a
download. torchvision is used only to download.
"""

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchvision import datasets as tv_datasets

from gan_lightning.idx import GZIP_SUFFIX, DatasetError, check_idx_pair, read_idx_pair

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

EMNIST_DIGITS_FILES = {
    "train": ("emnist-digits-train-images-idx3-ubyte", "emnist-digits-train-labels-idx1-ubyte"),
    "test": ("emnist-digits-test-images-idx3-ubyte", "emnist-digits-test-labels-idx1-ubyte"),
}

# The Debian package of Fashion-MNIST (in Debian 12, bookworm) installs the four .gz files in this folder.
DEBIAN_FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetSpec:
    """File names, folder and reading options of one data set."""

    # torchvision's class for the data set downloads it, and its name is the folder under DATA_DIR.
    torchvision_class: type[tv_datasets.MNIST]
    # (images file, labels file) of each split, without the optional .gz suffix.
    split_files: dict[str, tuple[str, str]]
    num_classes: int = 10
    # Extra arguments of the torchvision class, such as EMNIST's split.
    download_options: dict[str, str] = field(default_factory=dict)
    # True when the files store each image transposed (rows as columns).
    transposed: bool = False
    # Source of the files, named in the error message when they are missing.
    source_hint: str = ""


SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(tv_datasets.MNIST, SPLIT_FILES),
    "fashion_mnist": DatasetSpec(
        tv_datasets.FashionMNIST,
        SPLIT_FILES,
        source_hint=(
            f"On Debian, `apt-get install {DEBIAN_FASHION_MNIST_PACKAGE}` installs them in "
            f"{DEBIAN_FASHION_MNIST_DIR}, where they are found without --data.data_dir."
        ),
    ),
    "kmnist": DatasetSpec(tv_datasets.KMNIST, SPLIT_FILES),
    # EMNIST's files store every image transposed relative to MNIST, so load_split transposes
    # them back and the digits come out upright, as in MNIST.
    "emnist_digits": DatasetSpec(
        tv_datasets.EMNIST,
        EMNIST_DIGITS_FILES,
        download_options={"split": "digits"},
        transposed=True,
        source_hint="The EMNIST archive gzip.zip contains these files, gzip-compressed, in its gzip/ folder.",
    ),
}

# The torchvision class of each data set, kept for callers that list the names or folders.
DATASETS: dict[str, type[tv_datasets.MNIST]] = {name: spec.torchvision_class for name, spec in SPECS.items()}

# (data set, folder) pairs already reported, so each folder is logged once per process.
_reported_folders: set[tuple[str, Path]] = set()


@dataclass
class ImageSet:
    """One split of a data set: uint8 images (N, H, W) with 0 as black, int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class _FoundFiles:
    """Files of one data set found in one folder."""

    folder: Path
    # Path of each split's (images, labels) files, for splits whose both files exist.
    splits: dict[str, tuple[Path, Path]]
    # File names without .gz that exist in neither form.
    missing: list[str]


def _spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise DatasetError(
            f"Unknown data set {name!r}. Pass --data.dataset with one of: {', '.join(SPECS)}."
        )
    return SPECS[name]


def _dataset_class(name: str) -> type[tv_datasets.MNIST]:
    return _spec(name).torchvision_class


def raw_folder(data_dir: str | Path, name: str) -> Path:
    """Return the folder where torchvision keeps the IDX files of data set ``name``."""
    return Path(data_dir).expanduser() / _dataset_class(name).__name__ / "raw"


def _system_folder(name: str) -> Path | None:
    """Return the folder where a system package installs data set ``name``, if there is one."""
    # Read at call time, so that tests can point the constant at a folder of their own.
    return DEBIAN_FASHION_MNIST_DIR if name == "fashion_mnist" else None


def _find_file(folder: Path, file_name: str) -> Path | None:
    # The uncompressed file wins, because torchvision's download leaves both forms.
    for path in (folder / file_name, folder / f"{file_name}{GZIP_SUFFIX}"):
        if path.is_file():
            return path
    return None


def _find_in_folder(folder: Path, spec: DatasetSpec) -> _FoundFiles:
    found = _FoundFiles(folder=folder, splits={}, missing=[])
    for split, file_names in spec.split_files.items():
        paths = [_find_file(folder, file_name) for file_name in file_names]
        found.missing += [file_name for file_name, path in zip(file_names, paths) if path is None]
        if None not in paths:
            found.splits[split] = (paths[0], paths[1])
    return found


def _find_files(data_dir: str | Path, name: str) -> _FoundFiles:
    """Look for the files of ``name`` in the data folder, then in the system package folder.

    The system folder is used only when the data folder lacks a file and the system folder has
    all of them, so the files of one data set always come from one folder.
    """
    spec = _spec(name)
    found = _find_in_folder(raw_folder(data_dir, name), spec)
    system_folder = _system_folder(name)
    if found.missing and system_folder is not None:
        system_found = _find_in_folder(system_folder, spec)
        if not system_found.missing:
            return system_found
    return found


def _missing_message(
    name: str, found: _FoundFiles, download_result: str = "", extra_fix: str = "", option: str = "--data.data_dir"
) -> str:
    """Compose the error for missing files: where they were looked for, ``download_result``, and the fixes."""
    spec = _spec(name)
    message = f"{name} files not found in {found.folder} (missing: {', '.join(found.missing)})."
    system_folder = _system_folder(name)
    if system_folder is not None:
        message += f" They are not all in {system_folder} either."
    if download_result:
        message += f" {download_result}"
    message += (
        f" Put the IDX files in {found.folder}, each uncompressed or gzip-compressed with "
        f"the suffix .gz, or pass {option} DIR where DIR contains {spec.torchvision_class.__name__}/raw/ "
        "with the files."
    )
    if spec.source_hint:
        message += f" {spec.source_hint}"
    if extra_fix:
        message += f" {extra_fix}"
    return message


def _download(data_dir: str | Path, name: str, found: _FoundFiles) -> None:
    spec = _spec(name)
    root = Path(data_dir).expanduser()
    raw = raw_folder(data_dir, name)
    # The folders a download may create, deepest first, so that a failed one leaves none behind.
    new_folders = [folder for folder in (raw, raw.parent, root) if not folder.exists()]
    try:
        spec.torchvision_class(root=str(root), train=True, download=True, **spec.download_options)
    except (OSError, RuntimeError) as error:
        for folder in new_folders:
            with contextlib.suppress(OSError):
                folder.rmdir()  # removes empty folders only
        raise DatasetError(_missing_message(name, found, f"The download failed: {error}")) from error


def _system_file_hint(name: str, folder: Path) -> str:
    if folder != _system_folder(name):
        return ""
    return (
        " The file belongs to a system package: reinstall it with "
        f"`apt-get install --reinstall {DEBIAN_FASHION_MNIST_PACKAGE}`."
    )


def _report_folder(data_dir: str | Path, name: str, folder: Path) -> None:
    """Log once per process that ``name`` is read from the system package folder."""
    if folder != _system_folder(name) or (name, folder) in _reported_folders:
        return
    _reported_folders.add((name, folder))
    rank_zero_info(
        f"{raw_folder(data_dir, name)} lacks {name} files, so they are read from {folder}, "
        f"the folder of the Debian package {DEBIAN_FASHION_MNIST_PACKAGE}."
    )


def ensure_dataset(data_dir: str | Path, name: str, download: bool = True, option: str = "--data.data_dir") -> Path:
    """Make sure the IDX files of ``name`` can be read, downloading them if allowed.

    Looks in ``raw_folder(data_dir, name)``, then (Fashion-MNIST only) in the folder of the Debian
    package, then downloads into the raw folder when ``download`` is true. Returns the folder
    that contains the files. Raises ``DatasetError`` naming the folder and the option to pass when
    the files are missing and cannot be downloaded, or when a file is truncated or corrupt.
    ``option`` is the command-line option that sets ``data_dir``, named in the error.
    """
    found = _find_files(data_dir, name)
    if found.missing and download:
        _download(data_dir, name, found)
        found = _find_files(data_dir, name)
    if found.missing:
        if download:
            raise DatasetError(_missing_message(name, found, "The download did not provide them."))
        fix = "Or allow the download on a machine with network access." if option == "--data.data_dir" else ""
        raise DatasetError(_missing_message(name, found, extra_fix=fix, option=option))

    for images_path, labels_path in found.splits.values():
        try:
            check_idx_pair(images_path, labels_path)
        except DatasetError as error:
            raise DatasetError(f"{error}{_system_file_hint(name, found.folder)}") from error
    _report_folder(data_dir, name, found.folder)
    return found.folder


def load_split(data_dir: str | Path, name: str, split: str) -> ImageSet:
    """Load one split ("train" or "test") of a data set as uint8 tensors, without downloading.

    Images come out upright as in MNIST, also for data sets that store them transposed.
    """
    spec = _spec(name)
    if split not in spec.split_files:
        raise ValueError(f"split must be one of {', '.join(spec.split_files)}, got {split!r}.")
    found = _find_files(data_dir, name)
    if split not in found.splits:
        raise DatasetError(_missing_message(name, found))
    images_path, labels_path = found.splits[split]

    try:
        images, labels = read_idx_pair(images_path, labels_path)
    except DatasetError as error:
        raise DatasetError(f"{error}{_system_file_hint(name, found.folder)}") from error
    if len(labels) > 0 and int(labels.max()) >= spec.num_classes:
        raise DatasetError(
            f"IDX file {labels_path} contains label {int(labels.max())}, but {name} has labels 0 to "
            f"{spec.num_classes - 1}. Replace it with the original labels file of {name}."
        )
    _report_folder(data_dir, name, found.folder)

    if spec.transposed:
        images = images.transpose(1, 2).contiguous()
    return ImageSet(images=images, labels=labels.long())
