"""Describing networks in checkpoints and loading checkpoints without running pickled code.

A checkpoint stores each network as ``{"class_path": "pkg.module.Class", "init_args": {...}}``
beside its weights. Loading imports that class from the installed packages and reads the file
with ``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and
plain containers, so a crafted file cannot execute code.
"""

import importlib
import inspect
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

NETWORKS_KEY = "gan_lightning_networks"
# State-dict prefix of the generator's moving average (GAN.generator_ema, a GeneratorEMA).
EMA_PREFIX = "generator_ema.module."


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


def network_spec(network: nn.Module) -> dict[str, Any]:
    """Describe ``network`` by its class path and constructor arguments.

    Every constructor argument must be stored as an attribute of the same name, as the networks
    of this package do.
    """
    network = getattr(network, "_orig_mod", network)  # unwrap torch.compile
    cls = type(network)
    init_args = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(network, name):
            raise CheckpointError(
                f"{cls.__qualname__} does not store its constructor argument {name!r} as an "
                f"attribute, so checkpoints cannot record its architecture. Set self.{name} = {name} "
                "in its __init__."
            )
        init_args[name] = getattr(network, name)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def build_network(spec: dict[str, Any]) -> nn.Module:
    """Build an untrained network from a ``network_spec`` description."""
    class_path = spec.get("class_path", "")
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise CheckpointError(
            f"Network class {class_path!r} recorded in the checkpoint cannot be imported: {error}. "
            "Install the package that defines it."
        ) from error
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"{class_path!r} recorded in the checkpoint is not a torch.nn.Module class.")
    return cls(**spec.get("init_args", {}))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file on the CPU without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} not found. Pass --ckpt_path with an existing .ckpt file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint of this package, or it contains objects other than "
            f"tensors and plain containers, which are not loaded for safety: {error}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or NETWORKS_KEY not in checkpoint:
        raise CheckpointError(
            f"{path} is not a gan_lightning checkpoint: it has no state_dict or no network "
            "description. Pass a .ckpt file written by gan_lightning training."
        )
    return checkpoint


def _sub_state_dict(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_network(checkpoint: dict[str, Any], name: str, ema: bool = False) -> nn.Module:
    """Build network ``name`` ("generator" or "discriminator") with its weights, in eval mode.

    ``ema`` loads the generator's moving-average weights instead of the trained ones.
    """
    network = build_network(checkpoint[NETWORKS_KEY][name])
    if ema and name != "generator":
        raise ValueError(f"Only the generator has moving-average weights, not the {name}.")
    state_dict = _sub_state_dict(checkpoint["state_dict"], EMA_PREFIX if ema else f"{name}.")
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(f"The checkpoint's {name} weights do not fit its recorded architecture: {error}") from error
    return network.eval()


def has_ema(checkpoint: dict[str, Any]) -> bool:
    """Return whether the checkpoint contains a moving average of the generator's weights."""
    return any(key.startswith(EMA_PREFIX) for key in checkpoint["state_dict"])


def load_generator(path: str | Path, ema: bool = True) -> nn.Module:
    """Load the generator of a checkpoint file in eval mode on the CPU.

    With ``ema`` (the default) a checkpoint that keeps a moving average of the generator's weights
    gives the averaged generator, which training also uses for its grids and metrics.
    """
    checkpoint = load_checkpoint(path)
    return load_network(checkpoint, "generator", ema=ema and has_ema(checkpoint))
