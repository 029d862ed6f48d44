"""Reading and validation of IDX files, the format of MNIST and its relatives.

A file is either stored as is or gzip-compressed with the suffix ``.gz``. Compressed files are
decompressed in memory, never on disk, so the data folder may be read-only. Every check compares
the header with the length of the data and names the file that is wrong, because a truncated
file would otherwise fail later with a reshape error that names no file.
"""

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch

# Magic numbers of the IDX format: 0x0000 0803 is uint8 with 3 dimensions, 0x0000 0801 uint8 with 1.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

GZIP_SUFFIX = ".gz"

# Bytes decompressed per read, so that checking a compressed file needs little memory.
_CHUNK_BYTES = 1 << 20


class DatasetError(RuntimeError):
    """A data set is missing, unreadable or inconsistent with the model."""


def _header_size(expected_magic: int) -> int:
    # The magic number, then one 4-byte size per dimension.
    return 4 * (1 + (expected_magic & 0xFF))


def _gzip_chunks(path: Path) -> Iterator[bytes]:
    """Yield the decompressed content of ``path`` in chunks, raising ``DatasetError`` if it is not valid gzip."""
    with path.open("rb") as compressed, gzip.GzipFile(fileobj=compressed) as stream:
        try:
            while chunk := stream.read(_CHUNK_BYTES):
                yield chunk
        except (OSError, EOFError, zlib.error) as error:
            raise DatasetError(
                f"IDX file {path} is not a complete gzip file ({error}): the file is truncated or corrupt. "
                "Delete it and download the data set again."
            ) from error


def _after_decompression(path: Path) -> str:
    return " after decompression" if path.name.endswith(GZIP_SUFFIX) else ""


def _parse_header(path: Path, header: bytes, expected_magic: int) -> list[int]:
    """Return the dimensions stored in ``header`` after checking its length and magic number."""
    header_size = _header_size(expected_magic)
    if len(header) < header_size:
        raise DatasetError(
            f"IDX file {path} is truncated: {len(header)} bytes{_after_decompression(path)}, shorter than its "
            f"{header_size}-byte header. Delete it and download the data set again."
        )
    fields = [int.from_bytes(header[i : i + 4], "big") for i in range(0, header_size, 4)]
    magic, dims = fields[0], fields[1:]
    if magic != expected_magic:
        raise DatasetError(
            f"IDX file {path} has magic number {magic:#010x}, expected {expected_magic:#010x}: "
            "it is not an uint8 IDX file of the expected kind (images or labels). "
            "Replace it with the original file of the data set."
        )
    return dims


def _check_length(path: Path, dims: list[int], actual_bytes: int) -> None:
    expected_bytes = 4 * (1 + len(dims)) + math.prod(dims)
    if actual_bytes != expected_bytes:
        raise DatasetError(
            f"IDX file {path} has {actual_bytes} bytes{_after_decompression(path)} but its header describes {dims[0]} items "
            f"of shape {tuple(dims[1:])}, which need {expected_bytes} bytes: the file is truncated "
            "or corrupt. Delete it and download the data set again."
        )


def check_idx_file(path: Path, expected_magic: int) -> int:
    """Check the magic number and length of one IDX file and return its number of items.

    An uncompressed file is checked from its header and size alone. A ``.gz`` file is
    decompressed once in chunks, without keeping its content.
    """
    header_size = _header_size(expected_magic)
    if path.name.endswith(GZIP_SUFFIX):
        header = b""
        actual_bytes = 0
        for chunk in _gzip_chunks(path):
            if len(header) < header_size:
                header += chunk[: header_size - len(header)]
            actual_bytes += len(chunk)
    else:
        with path.open("rb") as file:
            header = file.read(header_size)
        actual_bytes = path.stat().st_size

    dims = _parse_header(path, header, expected_magic)
    _check_length(path, dims, actual_bytes)
    return dims[0]


def _check_counts(images_path: Path, num_images: int, labels_path: Path, num_labels: int) -> None:
    if num_images != num_labels:
        raise DatasetError(
            f"IDX files {images_path} ({num_images} images) and {labels_path} ({num_labels} labels) "
            "do not match. Replace both with the original files of the data set."
        )


def check_idx_pair(images_path: Path, labels_path: Path) -> int:
    """Check an images file and its labels file and return the number of examples."""
    num_images = check_idx_file(images_path, IMAGES_MAGIC)
    num_labels = check_idx_file(labels_path, LABELS_MAGIC)
    _check_counts(images_path, num_images, labels_path, num_labels)
    return num_images


def _read_content(path: Path) -> bytearray:
    """Return the (decompressed) bytes of ``path`` in one writable buffer."""
    if path.name.endswith(GZIP_SUFFIX):
        content = bytearray()
        for chunk in _gzip_chunks(path):
            content += chunk
        return content

    with path.open("rb") as file:
        content = bytearray(path.stat().st_size)
        num_read = file.readinto(content)
    del content[num_read:]
    return content


def read_idx_file(path: Path, expected_magic: int) -> torch.Tensor:
    """Read one uint8 IDX file, plain or ``.gz``, with the checks of ``check_idx_file``.

    Returns a uint8 tensor of the shape in the header: (N, H, W) for images, (N,) for labels.
    """
    content = _read_content(path)
    header_size = _header_size(expected_magic)
    dims = _parse_header(path, bytes(content[:header_size]), expected_magic)
    _check_length(path, dims, len(content))
    if math.prod(dims) == 0:
        # torch.frombuffer raises ValueError when no bytes follow the offset.
        return torch.zeros(dims, dtype=torch.uint8)
    # The tensor shares the buffer, which nothing else references, so nothing is copied.
    return torch.frombuffer(content, dtype=torch.uint8, offset=header_size).view(dims)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an images file and its labels file: uint8 images (N, H, W) and uint8 labels (N,)."""
    images = read_idx_file(images_path, IMAGES_MAGIC)
    labels = read_idx_file(labels_path, LABELS_MAGIC)
    _check_counts(images_path, len(images), labels_path, len(labels))
    return images, labels
