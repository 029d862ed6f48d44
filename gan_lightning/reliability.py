"""Keeping a training run resumable and failing early: callbacks, a checkpoint writer and checks.

- ``RandomState`` saves the random generators in checkpoints, so a resumed run draws the same noise.
- ``GracefulInterrupt`` makes SIGTERM and SIGINT stop training at the end of a batch.
- ``InterruptCheckpoint`` saves a checkpoint when a signal stops training and never after other errors.
- ``DivergenceGuard`` stops training, or skips the update, when a loss is NaN or infinite.
- ``AtomicCheckpointIO`` writes checkpoints atomically and loads them without running pickled code.
- ``check_run_config`` and ``check_strategy`` reject bad settings before anything is trained.
"""

import contextlib
import logging
import os
import pickle
import random
import signal
import sys
import threading
import uuid
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gan_lightning.callbacks import RunCheckpoint
from gan_lightning.checkpoint import NETWORKS_KEY, CheckpointError, build_network, load_checkpoint, network_spec

log = logging.getLogger(__name__)


class RandomState(Callback):
    """Save the random generators' states in checkpoints and restore them when training resumes.

    ``GAN.training_step`` draws its noise from the global torch generator, so a resumed run draws
    the same noise as an uninterrupted one only when it continues from the saved state. Saved: the
    CPU generator, the CUDA generator of this process's device, Python's ``random`` and NumPy's
    global generator. They are restored in ``on_train_start``, after everything that runs at fit
    start (building the networks, the sanity check), right before the first resumed batch.

    NOTE: only rank 0 writes checkpoints, so under DDP every process resumes with rank 0's states.
    That is exact here because all processes are seeded alike and draw alike.
    """

    def __init__(self) -> None:
        self._cuda_device: torch.device | None = None
        self._loaded: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self._cuda_device = device if device.type == "cuda" else None

    def state_dict(self) -> dict[str, Any]:
        _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            # A tensor and plain numbers, because torch.load(weights_only=True) rejects NumPy arrays.
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "position": int(position),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached_gaussian),
            },
        }
        if self._cuda_device is not None:
            state["cuda"] = torch.cuda.get_rng_state(self._cuda_device)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._loaded = self._loaded, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        version, internal_state, gauss_next = state["python"]
        random.setstate((version, tuple(internal_state), gauss_next))
        numpy_state = state["numpy"]
        np.random.set_state(
            (
                "MT19937",
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        if "cuda" in state and self._cuda_device is not None:
            torch.cuda.set_rng_state(state["cuda"], self._cuda_device)


class GracefulInterrupt(Callback):
    """Stop training at the end of the current batch on SIGTERM or on the first SIGINT (Ctrl+C).

    Lightning 2.6 stops after SIGTERM by raising ``SIGTERMException`` once the batch, its logging
    and any validation are done, and ``InterruptCheckpoint`` then saves a checkpoint that resumes
    exactly. After the last batch of an epoch, though, Lightning raises only once the epoch is
    marked complete, a state from which it resumes one epoch too far. So at an epoch's last batch
    this callback raises ``SIGTERMException`` itself, in ``on_train_batch_end``, which saves the
    state of a periodic checkpoint after that batch.

    NOTE: a stop at the last batch of an epoch leaves that batch's step metrics unlogged, and
    the resumed run skips that epoch's validation, as Lightning does for periodic checkpoints.

    Lightning turns SIGINT into ``KeyboardInterrupt`` wherever the code is, possibly between the
    D and the G update of a batch. This callback records the first SIGINT and stops as for
    SIGTERM. A second SIGINT raises ``KeyboardInterrupt`` at once, without a checkpoint.
    """

    def __init__(self) -> None:
        self.signal_received: signal.Signals | None = None
        self._previous_handler: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.signal_received = None
        # Python runs signal handlers in the main thread only, and only it may install them.
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_received is not None:
            raise KeyboardInterrupt
        self.signal_received = signal.SIGINT
        print(
            "Received SIGINT: training stops after the current batch and saves a checkpoint. "
            "Press Ctrl+C again to stop at once without one.",
            file=sys.stderr,
            flush=True,
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning's SIGTERM handler sets trainer.received_sigterm.
        stop = self.signal_received is not None or trainer.received_sigterm
        if trainer.world_size > 1:
            # All processes must stop after the same batch, or their collectives would not match.
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            raise SIGTERMException
        # Lightning 2.6 keeps the SIGTERM flag here (Trainer.received_sigterm only reads it) and
        # checks it at the end of every batch but an epoch's last.
        trainer._signal_connector.received_sigterm = True

    def _restore_handler(self) -> None:
        # After a KeyboardInterrupt, Lightning ignores SIGINT while it shuts down, and that setting stays.
        in_main_thread = threading.current_thread() is threading.main_thread()
        if self._previous_handler is not None and in_main_thread and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous_handler)
        self._previous_handler = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handler()


class InterruptCheckpoint(RunCheckpoint):
    """``RunCheckpoint`` whose ``save_on_exception`` saves only when a signal stopped training.

    After SIGTERM or SIGINT, ``SIGTERMException`` comes between batches (see ``GracefulInterrupt``),
    so that checkpoint resumes exactly. Other exceptions can arrive in the middle of a batch, and a
    ``DivergenceError`` comes with a non-finite loss, so a checkpoint written then could replace
    the last good one with a broken state. After SIGTERM, Lightning also raises ``SIGTERMException``
    between validation batches, and that state resumes exactly too.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            super().on_exception(trainer, pl_module, exception)


def _find_callback(trainer: L.Trainer | None, callback_type: type[Callback]) -> Any:
    if trainer is None:
        return None
    return next((callback for callback in trainer.callbacks if isinstance(callback, callback_type)), None)


def _newest_checkpoint(trainer: L.Trainer) -> str | None:
    for callback in trainer.checkpoint_callbacks:
        path = getattr(callback, "last_model_path", "")
        if path and Path(path).is_file():
            return path
    return None


def handle_interrupt(trainer: L.Trainer | None, stop: BaseException) -> int | None:
    """Finish the W&B run and print where the checkpoint is after a SIGINT or SIGTERM stop.

    ``stop`` is the exception that ended ``main``: ``SIGTERMException`` after a stop between
    batches, ``SystemExit(1)`` after Lightning caught a ``KeyboardInterrupt`` during fit, or
    ``KeyboardInterrupt`` before fit. Returns the exit status that shells report for the signal,
    128 + its number, or None when ``stop`` is not an interrupt (``--help`` also exits by SystemExit).
    """
    interrupt = _find_callback(trainer, GracefulInterrupt)
    received = interrupt.signal_received if interrupt is not None else None
    stopped_between_batches = isinstance(stop, SIGTERMException)
    if stopped_between_batches:
        signum = received or signal.SIGTERM
    elif isinstance(stop, KeyboardInterrupt) or (isinstance(stop, SystemExit) and received == signal.SIGINT):
        signum = signal.SIGINT
    else:
        return None
    status = 128 + signum

    if trainer is None:
        print(f"Stopped by {signum.name} before training started. No checkpoint was written.", file=sys.stderr)
        return status
    _finish_wandb_run(trainer, status)
    if not trainer.is_global_zero:
        return status
    checkpoint = _newest_checkpoint(trainer)
    if stopped_between_batches:
        stopped = f"Training stopped by {signum.name} after step {trainer.global_step}."
    else:
        stopped = f"Training stopped at once by SIGINT at step {trainer.global_step}, without saving."
    if checkpoint is None:
        print(f"{stopped} No checkpoint was written.", file=sys.stderr)
    else:
        print(f"{stopped} Newest checkpoint: {checkpoint} (resume with --ckpt_path {checkpoint})", file=sys.stderr)
    return status


def _finish_wandb_run(trainer: L.Trainer, status: int) -> None:
    # Lightning's WandbLogger.finalize does nothing unless training succeeded, which would leave
    # the run open until the interpreter exits.
    if not any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.run.finish(exit_code=status)


class DivergenceError(RuntimeError):
    """A training loss became NaN or infinite."""


class DivergenceGuard(Callback):
    """Stop training, or skip the update, when a loss is NaN or infinite.

    Each loss is checked in ``on_before_backward``, before it changes any gradient, and the check
    reads the result on the host, so on a GPU it waits for the device: one sync per loss and batch.

    Args:
        policy: ``stop`` raises ``DivergenceError`` naming the step and the loss before the loss
            updates any weights. ``skip`` leaves the network of that loss unchanged for this batch
            by clearing its gradients before its optimizer step, then continues.
        loss_names: names of the losses in the order in which ``training_step`` calls backward on
            them. ``GAN`` back-propagates ``d_loss``, then ``g_loss``.
        max_consecutive_skips: with ``skip``, raise ``DivergenceError`` when this many batches in
            a row had a skipped update, because training then makes no progress.
    """

    def __init__(
        self,
        policy: Literal["stop", "skip"] = "stop",
        loss_names: tuple[str, ...] = ("d_loss", "g_loss"),
        max_consecutive_skips: int = 100,
    ):
        if policy not in ("stop", "skip"):
            raise ValueError(f"policy must be 'stop' or 'skip', got {policy!r}. Pass --divergence.policy stop.")
        if max_consecutive_skips < 1:
            raise ValueError(
                f"max_consecutive_skips must be at least 1, got {max_consecutive_skips}. "
                "Pass --divergence.max_consecutive_skips 100."
            )
        self.policy = policy
        self.loss_names = tuple(loss_names)
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_updates = 0
        self.consecutive_skips = 0
        self._step = 0
        self._backward_calls = 0
        self._skip_next_optimizer_step = False
        self._batch_skipped = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        # Steps are numbered like checkpoints and image grids: batch k ends with global_step k.
        self._step = trainer.global_step + 1
        self._backward_calls = 0
        self._batch_skipped = False

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        index = self._backward_calls
        self._backward_calls += 1
        name = self.loss_names[index] if index < len(self.loss_names) else f"loss {index + 1}"
        value = loss.detach().float()
        # bool() copies the result to the host, which waits for the device on a GPU.
        finite_here = bool(torch.isfinite(value).all())
        # Every process takes the same decision, so they stop or skip together.
        if not trainer.strategy.reduce_boolean_decision(not finite_here, all=False):
            return
        if finite_here:
            loss_text = "finite here but not on another process"
        else:
            loss_text = str(value.item()) if value.numel() == 1 else "not finite"

        if self.policy == "stop":
            checkpoint = _newest_checkpoint(trainer)
            checkpoint_note = f"The newest checkpoint, {checkpoint}, is kept as it was." if checkpoint else "No checkpoint was written yet."
            raise DivergenceError(
                f"Training diverged at step {self._step}: {name} is {loss_text}, and no weights were updated with it. "
                f"{checkpoint_note} Resume from a checkpoint with lower learning rates (--model.g_lr, --model.d_lr), "
                "or pass --divergence.policy skip to skip such updates."
            )

        self._skip_next_optimizer_step = True
        self._batch_skipped = True
        self.skipped_updates += 1
        # Warn for the first ten skips, then every hundredth, so a long bad phase cannot flood the log.
        if self.skipped_updates <= 10 or self.skipped_updates % 100 == 0:
            log.warning(
                "Skipped the update of %s at step %d: it is %s (%d updates skipped in this run so far).",
                name, self._step, loss_text, self.skipped_updates,
            )  # fmt: skip

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if not self._skip_next_optimizer_step:
            return
        self._skip_next_optimizer_step = False
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if scaler is not None and parameter.grad is not None:
                    # GradScaler requires gradients, and skips the step (and lowers its scale)
                    # when they are not finite.
                    parameter.grad.fill_(float("nan"))
                else:
                    # Adam and the other torch optimizers leave parameters without a gradient
                    # untouched, moments and step count included.
                    parameter.grad = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.consecutive_skips = self.consecutive_skips + 1 if self._batch_skipped else 0
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise DivergenceError(
                f"Training diverged: the last {self.consecutive_skips} batches, up to step {self._step}, all had "
                "a NaN or infinite loss, so their updates were skipped. Resume from a checkpoint with lower "
                "learning rates (--model.g_lr, --model.d_lr)."
            )

    def state_dict(self) -> dict[str, int]:
        return {"skipped_updates": self.skipped_updates, "consecutive_skips": self.consecutive_skips}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped_updates = state_dict["skipped_updates"]
        self.consecutive_skips = state_dict["consecutive_skips"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in its folder, then rename it over the target.

    ``os.replace`` within one folder is atomic on POSIX and Windows, so a crash, a kill or a full
    disk while saving leaves the previous file complete. Lightning 2.6's own writer serializes to
    memory first, but then fsspec's local transaction moves a file from the system's temp folder
    into place, which is a copy, not atomic, when that folder is on another file system. Paths on
    other file systems (object stores) are written by Lightning's writer.

    Loading always uses ``torch.load(weights_only=True)``, even when the caller asks otherwise: it
    rejects pickled objects other than tensors and plain containers, so a crafted checkpoint
    cannot run code.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}.")
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path)
            return

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden and without the .ckpt suffix, so that no ModelCheckpoint counts a leftover one.
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temporary.open("xb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_folder(path.parent)

    def load_checkpoint(self, path: str | Path, map_location: Any | None = lambda storage, location: storage, weights_only: bool | None = None) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
            raise unreadable_checkpoint_error(path, error) from error


def unreadable_checkpoint_error(path: str | Path, error: BaseException) -> CheckpointError:
    """Describe in one line why ``torch.load(weights_only=True)`` could not read ``path``."""
    if isinstance(error, pickle.UnpicklingError):
        # torch's message spans several lines and suggests weights_only=False, which is unsafe here.
        reason = "it is not a checkpoint file, or it contains pickled objects other than tensors and plain containers"
    elif isinstance(error, EOFError):
        reason = "the file ends early, so it is empty or truncated"
    else:
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
    return CheckpointError(
        f"{path} is not a readable checkpoint: {reason}. Files that would need other objects are not loaded, "
        "because unpickling them could run code. Pass --ckpt_path with a .ckpt file from a gan_lightning run."
    )


def _sync_folder(folder: Path) -> None:
    # Makes the rename itself survive a power loss. Windows cannot open folders this way.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def with_checkpoint_io(plugins: Any) -> list[Any]:
    """Return the Trainer plugins with an ``AtomicCheckpointIO`` added unless one writes checkpoints already."""
    if plugins is None:
        plugins = []
    elif not isinstance(plugins, (list, tuple)):
        plugins = [plugins]
    plugins = list(plugins)
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


class ConfigError(ValueError):
    """A configuration value that is invalid, with the option that sets it."""


# Options that must be greater than zero. The classes check them too, but a check of the parsed
# config names the exact option and runs before the run folder is made.
POSITIVE_OPTIONS = ("model.g_lr", "model.d_lr", "model.display_step", "model.num_display", "data.batch_size")
# Constructor arguments of the networks that are sizes (see gan_lightning.networks and .dcgan).
NETWORK_SIZE_ARGS = ("z_dim", "im_dim", "hidden_dim", "width", "channels")
# Strategies whose DDP wrapper requires a gradient for every parameter in each backward pass.
# A GAN step leaves G without gradients in D's backward pass and D in G's, so these fail at the
# first step with "parameters that were not used in producing the loss".
PLAIN_DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
# Options of a ModelCheckpoint that choose when it saves. It takes at most one of them.
CHECKPOINT_INTERVALS = ("every_n_train_steps", "every_n_epochs", "train_time_interval")


def check_run_config(config: Any) -> None:
    """Raise ``ConfigError`` or ``CheckpointError`` for settings that would fail after the start.

    ``config`` is the parsed configuration of ``GANCLI``. Checked: the positive options, the
    sizes of the configured networks, the strategy, the checkpoint intervals, and that
    ``--ckpt_path`` is a safe checkpoint of the configured networks.
    """
    for option in POSITIVE_OPTIONS:
        value = config.get(option)
        if isinstance(value, (int, float)) and not value > 0:
            raise ConfigError(f"--{option} must be greater than 0, got {value}. Pass --{option} with a positive value.")
    for name in ("generator", "discriminator"):
        for argument, value in _init_args(config.get(f"model.{name}")).items():
            if argument in NETWORK_SIZE_ARGS and isinstance(value, int) and value <= 0:
                option = f"--model.{name}.init_args.{argument}"
                raise ConfigError(f"{option} must be a positive integer, got {value}. Pass {option} with a value > 0.")

    check_strategy_name(config.get("trainer.strategy"))
    check_checkpoint_intervals(config)
    if config.get("ckpt_path"):
        check_resume_checkpoint(config.ckpt_path, config.model)


def _init_args(network: Any) -> dict[str, Any]:
    """Return the ``init_args`` of a parsed ``class_path`` config as a dict, or {} for None."""
    init_args = getattr(network, "init_args", None)
    return init_args.as_dict() if init_args is not None else {}


def check_strategy_name(strategy: Any) -> None:
    """Raise ``ConfigError`` for a strategy name that cannot train a GAN (see PLAIN_DDP_STRATEGIES)."""
    if not isinstance(strategy, str):
        return
    base = strategy.removesuffix("_find_unused_parameters_false")
    if base in PLAIN_DDP_STRATEGIES:
        raise ConfigError(_ddp_advice(f"--trainer.strategy {strategy}", f"{base}_find_unused_parameters_true"))


def check_checkpoint_intervals(config: Any) -> None:
    """Raise ``ConfigError`` when a checkpoint callback of ``GANCLI`` is given two intervals."""
    for group in ("checkpoint", "best_checkpoint"):
        values = {name: config.get(f"{group}.{name}") for name in CHECKPOINT_INTERVALS}
        chosen = [f"--{group}.{name} {value}" for name, value in values.items() if value]
        if len(chosen) > 1:
            raise ConfigError(
                f"{' and '.join(chosen)} each set when checkpoints are saved, but a checkpoint callback takes "
                "one interval (--checkpoint.every_n_train_steps is 1000 unless set). Pass 0 or null for all "
                f"but one, for example --{group}.every_n_train_steps 0 --{group}.every_n_epochs 1."
            )


def check_strategy(strategy: Strategy) -> None:
    """Raise ``ConfigError`` when the Trainer chose DDP that needs every parameter in each backward.

    This catches ``--trainer.strategy auto`` with several devices, for which Lightning picks
    plain ``ddp``.
    """
    # Lightning 2.6 keeps DistributedDataParallel's keyword arguments in this attribute only.
    ddp_options = getattr(strategy, "_ddp_kwargs", None) or {}
    if isinstance(strategy, DDPStrategy) and not ddp_options.get("find_unused_parameters", False):
        raise ConfigError(
            _ddp_advice(f"The {type(strategy).__name__} that Lightning chose", "ddp_find_unused_parameters_true")
        )


def _ddp_advice(subject: str, strategy: str) -> str:
    return (
        f"{subject} cannot train a GAN: DDP expects a gradient for every parameter in each backward "
        "pass, but the D update leaves G without gradients and the G update leaves D without them. "
        f"Pass --trainer.strategy {strategy}."
    )


def check_resume_checkpoint(path: str, model_config: Any) -> None:
    """Raise ``CheckpointError`` unless ``path`` is a safe checkpoint of the configured networks.

    The file is read with ``torch.load(weights_only=True)``, which runs no pickled code. A network
    left at the GAN's default (``None`` in the config) is compared later, by
    ``GAN.on_load_checkpoint``.
    """
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        if error.__cause__ is None:
            raise  # The file is missing or no gan_lightning checkpoint, and the message is one line.
        raise unreadable_checkpoint_error(path, error.__cause__) from error.__cause__
    saved = checkpoint[NETWORKS_KEY]
    for name in ("generator", "discriminator"):
        network = getattr(model_config, name, None)
        if network is None or name not in saved:
            continue
        init_args = _init_args(network)
        # Building the network draws its initial weights, so the fork keeps the seeded stream as it was.
        with torch.random.fork_rng(devices=[]):
            configured = network_spec(build_network({"class_path": network.class_path, "init_args": init_args}))
        if configured != saved[name]:
            raise CheckpointError(
                f"Checkpoint {path} was trained with another {name} ({saved[name]}) than the one configured "
                f"now ({configured}). Configure the same network with --model.{name}, or start a new run "
                "without --ckpt_path."
            )


def remove_empty_run_dir(run_dir: str | None) -> None:
    """Remove the run folder of a run that failed before writing anything to it."""
    if run_dir:
        with contextlib.suppress(OSError):  # not empty, or already gone
            os.rmdir(run_dir)
