"""Export a trained generator to ONNX or TorchScript, for use without this package.

    python -m gan_lightning.export --ckpt_path RUN/checkpoints/last.ckpt --output generator.onnx
    python -m gan_lightning.export --ckpt_path RUN/checkpoints/last.ckpt --output generator.pt

The suffix of ``--output`` selects the format: ``.onnx`` for ONNX, ``.pt`` for TorchScript. The
exported model takes ``z``, float32 (N, z_dim) standard normal noise, and for a class-conditional
generator also ``labels``, int64 (N,) class indices. It returns ``images``, float32 (N, C, H, W)
in [0, 1], where flat generator outputs become one-channel square images. The batch size N is
free. The generator runs in eval mode, so BatchNorm uses its running statistics.

ONNX export needs the ``onnx`` and ``onnxscript`` packages (``pip install 'gan_lightning[export]'``),
and ONNX Runtime can run the result. TorchScript export needs only torch, and ``torch.jit.load``
reads the file.
"""

import argparse
import copy
import importlib
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from gan_lightning.checkpoint import CheckpointError, load_generator
from gan_lightning.images import as_images
from gan_lightning.labels import balanced_labels, generate, num_classes_of

ONNX_SUFFIX = ".onnx"
TORCHSCRIPT_SUFFIX = ".pt"
FORMAT_NAMES = {ONNX_SUFFIX: "ONNX", TORCHSCRIPT_SUFFIX: "TorchScript"}

# Batch size of the example inputs that the exporters trace. The exported batch dimension stays
# free, so this value does not limit the batch size at run time.
EXAMPLE_BATCH_SIZE = 2


class ExportableGenerator(nn.Module):
    """Unconditional generator behind the exported interface: z (N, z_dim) -> images (N, C, H, W).

    Takes a generator that is already in eval mode, in float32, on the CPU (see ``exportable``).
    """

    input_names = ("z",)

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator
        self.z_dim = generator.z_dim
        self.num_classes = num_classes_of(generator)
        # One forward pass fixes the image shape (C, H, W), so that forward takes only the
        # batch size from its input.
        with torch.no_grad():
            images = as_images(generate(generator, *self.example_inputs()))
        self.image_shape = tuple(images.shape[1:])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Return seeded example inputs for tracing, with EXAMPLE_BATCH_SIZE rows."""
        z = torch.randn(EXAMPLE_BATCH_SIZE, self.z_dim, generator=torch.Generator().manual_seed(0))
        return (z,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map noise (N, z_dim) to images (N, C, H, W) in [0, 1]."""
        return self.generator(z).reshape(z.shape[0], *self.image_shape)

    def describe(self) -> str:
        """Describe the inputs and the output, for example ``inputs z float32 (N, 64); output ...``."""
        inputs = [f"z float32 (N, {self.z_dim})"]
        if self.num_classes:
            inputs.append(f"labels int64 (N,) in [0, {self.num_classes})")
        shape = ", ".join(str(size) for size in self.image_shape)
        return f"inputs {', '.join(inputs)}; output images float32 (N, {shape}) in [0, 1]"


class ExportableConditionalGenerator(ExportableGenerator):
    """Conditional generator behind the exported interface: z (N, z_dim), labels (N,) -> images.

    NOTE: The ONNX model does not check its labels, because the conditional generators skip
    their checks on label values while they are traced or exported, and standard ONNX has no
    operator that raises an error. A label outside [0, num_classes) gets an all-zero class weight
    row, so its image belongs to no class. The TorchScript model raises RuntimeError for it in
    ``one_hot``.
    """

    input_names = ("z", "labels")

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Return seeded noise and balanced class indices for tracing, with EXAMPLE_BATCH_SIZE rows."""
        (z,) = super().example_inputs()
        return z, balanced_labels(EXAMPLE_BATCH_SIZE, self.num_classes)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Map noise (N, z_dim) and int64 class indices (N,) to images (N, C, H, W) in [0, 1]."""
        return self.generator(z, labels).reshape(z.shape[0], *self.image_shape)


def exportable(generator: nn.Module) -> ExportableGenerator:
    """Wrap a copy of ``generator`` in eval mode, float32 and on the CPU, for export.

    The caller's generator keeps its mode, dtype and device.
    """
    generator = getattr(generator, "_orig_mod", generator)  # unwrap torch.compile
    z_dim = getattr(generator, "z_dim", None)
    if not isinstance(z_dim, int) or isinstance(z_dim, bool) or z_dim <= 0:
        raise ValueError(
            f"{type(generator).__qualname__} has no positive integer attribute z_dim (got {z_dim!r}), "
            "which sizes the noise input of the exported model. Store z_dim in the generator's __init__."
        )
    generator = copy.deepcopy(generator).float().cpu().eval().requires_grad_(False)
    if num_classes_of(generator):
        return ExportableConditionalGenerator(generator).eval()
    return ExportableGenerator(generator).eval()


def check_onnx_packages() -> None:
    """Raise ImportError naming the fix when a package that ONNX export needs is not installed."""
    for package in ("onnx", "onnxscript"):
        try:
            importlib.import_module(package)
        except ImportError as error:
            raise ImportError(
                f"ONNX export needs the package {package!r}, which is not installed ({error}). "
                "Install it with: pip install 'gan_lightning[export]'"
            ) from error


def export_onnx(generator: nn.Module, path: str | Path) -> ExportableGenerator:
    """Write ``generator`` to ``path`` as one self-contained ONNX file and return the exported wrapper.

    The model has inputs ``z`` (and ``labels`` when conditional) and output ``images``, all with
    a free batch dimension. It is captured with ``torch.export``. Where ``torch.export`` cannot
    capture the generator, for example because its forward branches on tensor values, this
    warns and uses the TorchScript-based exporter of torch.onnx instead.
    """
    check_onnx_packages()
    model = exportable(generator)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # z names the batch dimension N. labels gets a free size, which torch.export finds equal to
    # N, because torch 2.14 warns that the name goes unused when both inputs get the same Dim.
    batch_sizes = [torch.export.Dim("batch")] + [torch.export.Dim.DYNAMIC] * (len(model.input_names) - 1)
    try:
        torch.onnx.export(
            model,
            model.example_inputs(),
            path,
            input_names=list(model.input_names),
            output_names=["images"],
            dynamo=True,
            dynamic_shapes={name: {0: size} for name, size in zip(model.input_names, batch_sizes)},
            # The weights stay inside the .onnx file. Protobuf limits that to 2 GB, far above
            # the size of these generators.
            external_data=False,
            verbose=False,
        )
    except torch.onnx.OnnxExporterError as error:
        reason = str(error.__cause__ or error).strip().splitlines()[0]
        warnings.warn(
            f"torch.export could not capture {type(model.generator).__qualname__} ({reason}). "
            "Exporting it with the TorchScript-based ONNX exporter instead.",
            stacklevel=2,
        )
        _export_onnx_from_trace(model, path)
    return model


def _export_onnx_from_trace(model: ExportableGenerator, path: Path) -> None:
    # NOTE: torch 2.14 warns that this exporter is deprecated and will be removed.
    # Tracing records one path through Python branches on tensor values, which drops the
    # generator's input checks from the model.
    batch_axes = {name: {0: "batch"} for name in (*model.input_names, "images")}
    torch.onnx.export(
        model,
        model.example_inputs(),
        path,
        input_names=list(model.input_names),
        output_names=["images"],
        dynamo=False,
        dynamic_axes=batch_axes,
    )


def export_torchscript(generator: nn.Module, path: str | Path) -> ExportableGenerator:
    """Write ``generator`` to ``path`` as a traced TorchScript module and return the exported wrapper.

    The module takes ``z`` (and ``labels`` when conditional) and returns ``images``, for any batch
    size. torch 2.14 warns that ``torch.jit.trace`` is deprecated. Tracing also warns for each
    Python branch on a tensor value or size in the generator, such as the conditional
    generators' check of the number of labels, because the trace records only the branch taken.
    """
    model = exportable(generator)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        traced = torch.jit.trace(model, model.example_inputs())
    traced.save(str(path))
    return model


EXPORTERS = {ONNX_SUFFIX: export_onnx, TORCHSCRIPT_SUFFIX: export_torchscript}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gan_lightning.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="Checkpoint written by training (.ckpt).")
    parser.add_argument(
        "--output", default="generator.onnx", help="Output file: .onnx for ONNX, .pt for TorchScript."
    )
    parser.add_argument(
        "--raw_weights",
        action="store_true",
        help="Export the generator's trained weights even when the checkpoint keeps their moving average (ema_decay).",
    )
    args = parser.parse_args(argv)
    suffix = Path(args.output).suffix
    if suffix not in EXPORTERS:
        parser.error(
            f"--output must end in .onnx (ONNX) or .pt (TorchScript), got {args.output!r} "
            f"with suffix {suffix!r}."
        )
    return args


def _exit_with_error(error: Exception) -> NoReturn:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, load the checkpoint's generator and export it."""
    args = _parse_args(argv)
    output = Path(args.output)
    if output.suffix == ONNX_SUFFIX:
        try:
            check_onnx_packages()
        except ImportError as error:
            _exit_with_error(error)
    try:
        generator = load_generator(args.ckpt_path, ema=not args.raw_weights)
    except CheckpointError as error:
        _exit_with_error(error)
    model = EXPORTERS[output.suffix](generator, output)
    print(f"Wrote {FORMAT_NAMES[output.suffix]} model {output}: {model.describe()}")


if __name__ == "__main__":
    main()
