"""The command line: Lightning CLI plus run folders, W&B, short options and early checks.

Usage (see the README for more)::

    python train.py --data.data_dir DIR                 # the default config
    python train.py --config configs/classic.yaml       # the classic settings
    python train.py --accelerator gpu --devices 2 --max_epochs 5 --precision bf16-mixed
    python train.py --print_config
"""

import os
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from gan_lightning.callbacks import ImageGrids, LossPlot, Throughput
from gan_lightning.checkpoint import CheckpointError
from gan_lightning.datamodule import MNISTDataModule
from gan_lightning.datasets import ensure_dataset
from gan_lightning.idx import DatasetError
from gan_lightning.module import GAN
from gan_lightning.reliability import (
    DivergenceError,
    DivergenceGuard,
    GracefulInterrupt,
    InterruptCheckpoint,
    RandomState,
    check_run_config,
    check_strategy,
    handle_interrupt,
    remove_empty_run_dir,
    with_checkpoint_io,
)
from gan_lightning.tracking import resolve_wandb_mode

# Short forms accepted for the most used Trainer options: --accelerator gpu == --trainer.accelerator gpu.
SHORT_TRAINER_OPTIONS = ("accelerator", "devices", "max_epochs", "max_steps", "precision")
# Set by the first process to the run folder it made, so that processes it launches (DDP) reuse it.
RUN_DIR_ENV = "GAN_LIGHTNING_RUN_DIR"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


# A checkpoint written after batch N contains the weights after that batch's updates, which is what
# resuming needs. Lightning 2.6 warns about it for every manual-optimization module.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


class UsageError(ValueError):
    """A command-line option that this program rejects, with the option to use instead."""


def expand_short_options(argv: list[str]) -> list[str]:
    """Rewrite short Trainer options to their full form and reject top-level optimizers.

    ``--optimizer`` and ``--lr_scheduler`` would configure one optimizer, but a GAN has two.
    """
    expanded = []
    for arg in argv:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if name in ("optimizer", "lr_scheduler"):
            raise UsageError(
                f"--{name} is not supported: a GAN trains two networks with two Adam optimizers. "
                "Set them with --model.g_lr, --model.d_lr, --model.g_betas and --model.d_betas."
            )
        if name in SHORT_TRAINER_OPTIONS:
            arg = "--trainer." + arg[2:]
        expanded.append(arg)
    return expanded


def _process_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def make_run_dir(runs_dir: str, run_name: str | None) -> Path:
    """Create a new folder for this run and return it; never reuse an existing one.

    Processes launched by this one for DDP find the folder in ``GAN_LIGHTNING_RUN_DIR``.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        return Path(inherited)
    # NOTE: processes started together by torchrun or SLURM do not share a name; give
    # --run_name so that rank 0 creates the folder and the others use the same path.
    base = Path(runs_dir).expanduser() / (run_name or datetime.now().strftime("%Y%m%d-%H%M%S"))
    if _process_rank() != 0:
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = base, 1
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            suffix += 1
            candidate = base.with_name(f"{base.name}-{suffix}")
    os.environ[RUN_DIR_ENV] = str(candidate)
    return candidate


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run folder and send it to the loggers once."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            self.parser.save(self.config, path, skip_none=False, overwrite=False, multifile=False)
        # The module and data module save their hyperparameters with logger=False, so this
        # is the only time the configuration reaches the loggers.
        config = self.config.as_dict()
        for logger in trainer.loggers:
            logger.log_hyperparams(config)


class ShortUsageParser(LightningArgumentParser):
    """The CLI's parser, whose errors end with a one-line usage instead of every option.

    The full usage lists each option of the Trainer, the model, the data and the callbacks, about
    90 lines that push the error message out of sight. ``--help`` still prints them all.
    """

    def print_usage(self, file: Any = None) -> None:
        prog = self.prog.replace(" [options]", "")
        (file or sys.stdout).write(f"usage: {prog} [--config CONFIG] [options]\n")


class GANCLI(LightningCLI):
    """The Lightning CLI of ``GAN`` and ``MNISTDataModule`` with the project's defaults."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any):
        super().__init__(
            GAN,
            MNISTDataModule,
            args=args,
            run=False,
            auto_configure_optimizers=False,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"save_to_log_dir": False},
            seed_everything_default=0,
            # Added to every run, also when --trainer.callbacks lists others.
            trainer_defaults={"callbacks": [ImageGrids(), LossPlot(), Throughput(), RandomState(), GracefulInterrupt()]},
            parser_kwargs={"default_config_files": [str(DEFAULT_CONFIG)]},
            parser_class=ShortUsageParser,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="Checkpoint to resume training from.")
        parser.add_argument("--runs_dir", type=str, default="runs", help="Parent folder of the run folders, one per run.")
        parser.add_argument("--run_name", type=str | None, default=None, help="Name of this run's folder (default: the start time).")
        parser.add_argument(
            "--wandb", type=str, default="auto", choices=["auto", "online", "offline", "off"],
            help="Weights & Biases: auto is online when logged in and offline otherwise; off disables it.",
        )
        parser.add_argument("--wandb_project", type=str, default="gan_lightning", help="W&B project name.")
        # A RunCheckpoint that also saves when SIGTERM or SIGINT stops training, never after other errors.
        parser.add_lightning_class_args(InterruptCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.save_on_exception": True,
                "checkpoint.every_n_train_steps": 1000,
                "checkpoint.save_top_k": 3,
                "checkpoint.monitor": "step",
                "checkpoint.mode": "max",
                "checkpoint.filename": "step{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # Stops training on a NaN or infinite loss, or skips such updates with --divergence.policy skip.
        parser.add_lightning_class_args(DivergenceGuard, "divergence")
        # The checkpoint with the lowest val/fid so far, overwritten in place as best.ckpt.
        parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
        parser.set_defaults(
            {
                "best_checkpoint.monitor": "val/fid",
                "best_checkpoint.mode": "min",
                "best_checkpoint.save_top_k": 1,
                "best_checkpoint.filename": "best",
                "best_checkpoint.auto_insert_metric_name": False,
            }
        )

    def before_instantiate_classes(self) -> None:
        config = self.config
        # Reject bad values, strategies and checkpoints before the data is fetched or a folder made.
        check_run_config(config)
        # Check or fetch the data before any model is built or folder is made.
        ensure_dataset(config.data.data_dir, config.data.dataset, download=config.data.download and _process_rank() == 0)

        run_dir = make_run_dir(config.runs_dir, config.run_name)
        self.run_dir = run_dir
        config.trainer.default_root_dir = str(run_dir)
        config.checkpoint.dirpath = str(run_dir / "checkpoints")
        config.best_checkpoint.dirpath = str(run_dir / "checkpoints")
        if not config.model.eval_metrics:
            # Nothing logs val/fid then, and ModelCheckpoint raises when validation ran without
            # logging its monitored key. save_top_k 0 turns the best checkpoint off.
            config.best_checkpoint.save_top_k = 0
        if config.trainer.logger is None:
            config.trainer.logger = self._loggers(run_dir, config.wandb, config.wandb_project)
        rank_zero_info(f"Run folder: {run_dir}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Checkpoints are written atomically and loaded without running pickled code.
        kwargs.setdefault("plugins", with_checkpoint_io(self.config_init.get("trainer.plugins")))
        trainer = super().instantiate_trainer(**kwargs)
        check_strategy(trainer.strategy)
        return trainer

    def _loggers(self, run_dir: Path, wandb: str, project: str) -> list[dict[str, Any]]:
        loggers = [
            {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir), "name": "csv", "version": ""}}
        ]
        mode = resolve_wandb_mode(wandb)
        if mode == "off":
            return loggers
        if mode == "offline":
            rank_zero_info(
                "Weights & Biases: not logged in (or offline requested), so this run is logged offline. "
                f"Upload it later with: wandb sync {run_dir / 'wandb' / 'latest-run'}"
            )
        wandb_logger = {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"save_dir": str(run_dir), "project": project, "name": run_dir.name, "offline": mode == "offline"},
        }
        return [wandb_logger, *loggers]


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (``sys.argv`` when ``argv`` is None) and train."""
    try:
        args = expand_short_options(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if argv is None:
        # DDP relaunches this script with sys.argv, so the processes it starts see the full forms too.
        sys.argv[1:] = args
    inherited_run_dir = RUN_DIR_ENV in os.environ
    trainer = None
    try:
        cli = GANCLI(args=None if argv is None else args)
        trainer = cli.trainer
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    except (DatasetError, CheckpointError, DivergenceError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except (ValueError, MisconfigurationException) as error:
        if trainer is not None:
            raise
        # Nothing has run after a ConfigError, a value that a class rejected while the CLI built
        # it, or Lightning's rejection of a Trainer or callback setting, so the empty run folder
        # is removed too.
        print(f"error: {error}", file=sys.stderr)
        if not inherited_run_dir:
            remove_empty_run_dir(os.environ.get(RUN_DIR_ENV))
        raise SystemExit(2) from None
    except (KeyboardInterrupt, SystemExit) as stop:
        # SIGINT and SIGTERM end with 128 + the signal number, as shells report them.
        status = handle_interrupt(trainer, stop)
        if status is None:
            raise
        raise SystemExit(status) from None
    finally:
        if not inherited_run_dir:
            # A later run in this process gets a folder of its own.
            os.environ.pop(RUN_DIR_ENV, None)
