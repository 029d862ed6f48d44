"""Validation of IDX files, the format of MNIST and its relatives.

torchvision reads these files without checking their length, so a truncated download fails
later with a reshape error that names no file. These checks read only the header and the file
size, and name the file that is wrong.
"""

from pathlib import Path

# Magic numbers of the IDX format: 0x0000 0803 is uint8 with 3 dimensions, 0x0000 0801 uint8 with 1.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


class DatasetError(RuntimeError):
    """A data set is missing, unreadable or inconsistent with the model."""


def _read_header(path: Path, num_fields: int) -> list[int]:
    with path.open("rb") as file:
        header = file.read(4 * num_fields)
    if len(header) < 4 * num_fields:
        raise DatasetError(
            f"IDX file {path} is truncated: {len(header)} bytes, shorter than its "
            f"{4 * num_fields}-byte header. Delete it and download the data set again."
        )
    return [int.from_bytes(header[i : i + 4], "big") for i in range(0, 4 * num_fields, 4)]


def check_idx_file(path: Path, expected_magic: int) -> int:
    """Check the magic number and length of one IDX file and return its number of items."""
    num_dims = expected_magic & 0xFF
    header = _read_header(path, 1 + num_dims)
    magic, dims = header[0], header[1:]
    if magic != expected_magic:
        raise DatasetError(
            f"IDX file {path} has magic number {magic:#010x}, expected {expected_magic:#010x}: "
            "it is not an uint8 IDX file of the expected kind (images or labels). "
            "Replace it with the original file of the data set."
        )

    item_size = 1
    for size in dims[1:]:
        item_size *= size
    expected_bytes = 4 * len(header) + dims[0] * item_size
    actual_bytes = path.stat().st_size
    if actual_bytes != expected_bytes:
        raise DatasetError(
            f"IDX file {path} has {actual_bytes} bytes but its header describes {dims[0]} items "
            f"of shape {tuple(dims[1:])}, which need {expected_bytes} bytes: the file is truncated "
            "or corrupt. Delete it and download the data set again."
        )
    return dims[0]


def check_idx_pair(images_path: Path, labels_path: Path) -> int:
    """Check an images file and its labels file and return the number of examples."""
    num_images = check_idx_file(images_path, IMAGES_MAGIC)
    num_labels = check_idx_file(labels_path, LABELS_MAGIC)
    if num_images != num_labels:
        raise DatasetError(
            f"IDX files {images_path} ({num_images} images) and {labels_path} ({num_labels} labels) "
            "do not match. Replace both with the original files of the data set."
        )
    return num_images
