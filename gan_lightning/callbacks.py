"""Callbacks for the side work of a GAN run: image grids, the loss plot, throughput."""

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from gan_lightning.images import as_images, to_uint8
from gan_lightning.labels import generate


def _image_shape(trainer: L.Trainer) -> tuple[int, ...] | None:
    return getattr(trainer.datamodule, "image_shape", None)


def _run_folder(trainer: L.Trainer, dirpath: str | None) -> Path:
    return Path(dirpath) if dirpath is not None else Path(trainer.default_root_dir)


class ImageGrids(Callback):
    """Write a grid of fakes from the module's fixed noise and a grid of reals every
    ``display_step`` batches, as PNG files under ``<run folder>/images`` and to the logger."""

    def __init__(self, dirpath: str | None = None, nrow: int = 5):
        self.dirpath = dirpath
        self.nrow = nrow

    @torch.no_grad()
    def fake_grid(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        """Draw the fixed noise through the generator in eval mode: a (3, H', W') grid.

        The generator is the moving average when the module keeps one; a conditional one draws the
        module's fixed labels, 0 to 9 in turn.
        """
        generator = pl_module.sampling_generator
        was_training = generator.training
        generator.eval()
        fake = generate(generator, pl_module.fixed_z, pl_module.fixed_labels).float()
        generator.train(was_training)
        return make_grid(as_images(fake, _image_shape(trainer)).cpu(), nrow=self.nrow)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step % pl_module.hparams.display_step != 0:
            return
        fake_grid = self.fake_grid(trainer, pl_module)
        real = batch[0][: len(pl_module.fixed_z)].float()
        real_grid = make_grid(as_images(real, _image_shape(trainer)).cpu(), nrow=self.nrow)
        self._write(trainer, step, {"fake": fake_grid, "real": real_grid})

    @rank_zero_only
    def _write(self, trainer: L.Trainer, step: int, grids: dict[str, torch.Tensor]) -> None:
        folder = _run_folder(trainer, self.dirpath) / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for kind, grid in grids.items():
            save_image(grid, folder / f"{kind}_step{step:07d}.png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                images = [to_uint8(grid) for grid in grids.values()]
                # At the logger step of this batch's metrics (batch k is logged at step k - 1).
                logger.log_image(key="images", images=images, caption=list(grids), step=step - 1)


class LossPlot(Callback):
    """Record both losses at every batch and plot them to ``<run folder>/losses.png`` at the end.

    Batches that do not update G (``n_critic`` > 1) record its loss as NaN, which the plot leaves out.

    The history is kept in checkpoints, so the plot of a resumed run covers the whole run.
    """

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath
        self.history: list[torch.Tensor] = []  # (3,) rows of step, d_loss, g_loss
        self.pending: list[torch.Tensor] = []  # device tensors not yet copied to the host

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        d_loss = outputs["d_loss"].float()
        step = torch.tensor(float(trainer.global_step), device=d_loss.device)
        g_loss = outputs["g_loss"].float() if "g_loss" in outputs else torch.full_like(d_loss, float("nan"))
        self.pending.append(torch.stack([step, d_loss, g_loss]))

    def _flush(self) -> None:
        # One host copy per epoch instead of one per batch keeps a GPU step free of syncs.
        if self.pending:
            self.history.append(torch.stack(self.pending).cpu())
            self.pending = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"history": torch.cat(self.history) if self.history else torch.zeros(0, 3)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [state_dict["history"]]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()
        if trainer.is_global_zero and self.history:
            self.plot(torch.cat(self.history), _run_folder(trainer, self.dirpath) / "losses.png")

    @staticmethod
    def plot(history: torch.Tensor, path: Path) -> None:
        """Plot the rows (step, d_loss, g_loss) of ``history`` to the PNG file ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        figure, axes = plt.subplots(figsize=(8, 4.5))
        for column, label in ((1, "discriminator"), (2, "generator")):
            rows = history[history[:, column].isfinite()]
            if len(rows) == 0:
                continue
            steps = rows[:, 0].numpy()
            axes.plot(steps, rows[:, column].numpy(), label=label, linewidth=0.6, alpha=0.35)
            smooth = _moving_average(rows[:, column], max(1, len(rows) // 100))
            axes.plot(steps[len(steps) - len(smooth) :], smooth.numpy(), label=f"{label} (moving mean)")
        axes.set_xlabel("batch")
        axes.set_ylabel("loss")
        axes.legend()
        axes.grid(alpha=0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)


def _moving_average(values: torch.Tensor, window: int) -> torch.Tensor:
    kernel = torch.full((1, 1, window), 1.0 / window)
    return torch.nn.functional.conv1d(values.view(1, 1, -1), kernel).view(-1)


class Throughput(Callback):
    """Log training images per second (``train/images_per_sec``) and show it in the progress bar.

    The rate is measured over windows of ``window`` batches of this process, so it costs one
    clock read per batch and no device sync.
    """

    def __init__(self, window: int = 50):
        self.window = window
        self._start_time = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_time = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._images += len(batch[0])
        if (batch_idx + 1) % self.window != 0:
            return
        elapsed = time.perf_counter() - self._start_time
        rate = self._images * trainer.world_size / elapsed
        pl_module.log("train/images_per_sec", rate, prog_bar=True, rank_zero_only=True)
        self._start_time = time.perf_counter()
        self._images = 0


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` contains the final state once training ends.

    Lightning 2.6 writes ``last.ckpt`` at the end of training only when no ``last.ckpt`` was
    written before, so with ``every_n_train_steps`` it would keep the state of the last multiple
    of that interval instead of the final batch.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
