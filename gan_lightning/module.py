"""The LightningModule that trains a generator against a discriminator."""

import math

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from gan_lightning.checkpoint import NETWORKS_KEY, CheckpointError, network_spec
from gan_lightning.idx import DatasetError
from gan_lightning.losses import bce_discriminator_loss, bce_generator_loss
from gan_lightning.metrics import check_images
from gan_lightning.networks import Discriminator, Generator
from gan_lightning.quality import VAL_METRICS, ValidationQuality, eval_noise, generate_images, score_generator


def _no_closure() -> None:
    return None


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}. Pass --model.{name} with a value > 0.")


def _check_betas(name: str, betas: tuple[float, float]) -> None:
    if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
        raise ValueError(
            f"{name} must be two numbers in [0, 1), got {betas}. Pass --model.{name} '[0.5, 0.999]'."
        )


class GAN(L.LightningModule):
    """A GAN trained with manual optimization: each batch updates D, then G.

    Args:
        generator: maps noise (N, z_dim) to images in [0, 1] and has a ``z_dim`` attribute;
            the classic ``Generator(z_dim=64)`` when not given.
        discriminator: maps images to logits (N, 1); the classic ``Discriminator()`` when not given.
        g_lr: Adam learning rate of the generator.
        d_lr: Adam learning rate of the discriminator.
        g_betas: Adam betas of the generator.
        d_betas: Adam betas of the discriminator.
        display_step: batches between logged loss means and image grids.
        num_display: images in the grid of fakes drawn from the fixed noise.
        reuse_fakes: score the fakes made for the D update again, with the updated D, for the
            G update, instead of drawing new noise: one generator forward per batch instead of two.
        compile: compile the generator and the discriminator with ``torch.compile``.
        fixed_noise_seed: seed of the fixed noise batch behind the grids of fakes.
        eval_metrics: at each validation pass, score ``num_eval_samples`` fakes against the
            validation images and log ``val/fid``, ``val/kid``, ``val/is``, ``val/kl_uniform``
            and ``val/classes`` (see ``gan_lightning.metrics.SampleQuality``).
        num_eval_samples: fakes scored per validation pass, split across processes.
        eval_seed: seed of the noise behind those fakes, so every pass scores the same noise;
            ``python -m gan_lightning.evaluate --seed`` takes the same seed.
    """

    def __init__(
        self,
        generator: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        g_lr: float = 2e-4,
        d_lr: float = 2e-4,
        g_betas: tuple[float, float] = (0.5, 0.999),
        d_betas: tuple[float, float] = (0.5, 0.999),
        display_step: int = 500,
        num_display: int = 25,
        reuse_fakes: bool = False,
        compile: bool = False,
        fixed_noise_seed: int = 0,
        eval_metrics: bool = True,
        num_eval_samples: int = 10000,
        eval_seed: int = 0,
    ):
        super().__init__()
        for name, value in (("g_lr", g_lr), ("d_lr", d_lr), ("display_step", display_step), ("num_display", num_display)):
            _check_positive(name, value)
        _check_betas("g_betas", g_betas)
        _check_betas("d_betas", d_betas)
        if num_eval_samples < 2:
            raise ValueError(
                f"num_eval_samples must be at least 2, because FID needs two samples, got {num_eval_samples}. "
                "Pass --model.num_eval_samples 10000."
            )
        # The networks are saved in the checkpoint's state dict and described by
        # gan_lightning.checkpoint, so they stay out of the hyperparameters.
        self.save_hyperparameters(ignore=["generator", "discriminator"], logger=False)
        self.automatic_optimization = False

        self.generator = generator if generator is not None else Generator(z_dim=64)
        self.discriminator = discriminator if discriminator is not None else Discriminator()
        self.z_dim: int = self.generator.z_dim

        generator_rng = torch.Generator().manual_seed(fixed_noise_seed)
        self.register_buffer("fixed_z", torch.randn(num_display, self.z_dim, generator=generator_rng))

        # Means over the current display window; torchmetrics syncs them across processes.
        self.d_loss_window = MeanMetric()
        self.g_loss_window = MeanMetric()

        # Made by setup() for each fit or validate call when eval_metrics is on. A plain object,
        # so the classifier and the metric states stay out of the state dict and the checkpoints.
        self.validation_quality: ValidationQuality | None = None

    def configure_model(self) -> None:
        if self.hparams.compile:
            # Compiling the networks in place keeps their state-dict keys unchanged. The
            # LightningModule itself is not compiled: its optimizer toggling breaks graphs.
            self.generator.compile()
            self.discriminator.compile()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.g_lr, betas=self.hparams.g_betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.d_lr, betas=self.hparams.d_betas)
        return [opt_g, opt_d]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate images from noise z: (N, z_dim)."""
        return self.generator(z)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[NETWORKS_KEY] = self._network_specs()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(NETWORKS_KEY)
        current = self._network_specs()
        if saved is not None and saved != current:
            raise CheckpointError(
                "The checkpoint was trained with other networks than the ones configured now.\n"
                f"  checkpoint: {saved}\n  configured: {current}\n"
                "Configure the same networks (--model.generator and --model.discriminator), "
                "or start a new run without --ckpt_path."
            )

    def _network_specs(self) -> dict:
        return {"generator": network_spec(self.generator), "discriminator": network_spec(self.discriminator)}

    def on_fit_start(self) -> None:
        self._check_image_shape()

    def _check_image_shape(self) -> None:
        """Raise before the first step when the data's images do not fit the networks."""
        datamodule = self.trainer.datamodule
        image_shape = getattr(datamodule, "image_shape", None)
        if image_shape is None:
            return
        num_pixels = math.prod(image_shape)
        fix = (
            f"Set the networks' im_dim to {num_pixels} (--model.generator.init_args.im_dim and "
            "--model.discriminator.init_args.im_dim) or choose a matching data set."
        )
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                fake = self.generator(self.fixed_z[:2])
                if fake[0].numel() != num_pixels:
                    raise DatasetError(
                        f"The data set's images have shape {tuple(image_shape)} ({num_pixels} pixels) "
                        f"but the generator makes images of {fake[0].numel()} pixels. {fix}"
                    )
                real = torch.zeros(2, *image_shape, device=self.device)
                try:
                    self.discriminator(real)
                except RuntimeError as error:
                    raise DatasetError(
                        f"The discriminator cannot take the data set's images of shape "
                        f"{tuple(image_shape)} ({num_pixels} pixels): {error}. {fix}"
                    ) from error
        finally:
            self.train(training)

    def _step_uncounted(self, optimizer: LightningOptimizer) -> None:
        # Lightning adds every optimizer step to global_step. Only D's step is counted so that
        # global_step, max_steps and checkpoint cadence count batches; G's step still goes
        # through the strategy, so precision plugins (the AMP loss scaler) and DDP apply.
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure, model=self)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        real, _ = batch  # (N, C, H, W) in [0, 1]
        opt_g, opt_d = self.optimizers()
        num_images = real.shape[0]

        # Update D: reals against ones, detached fakes against zeros.
        z = torch.randn(num_images, self.z_dim, device=real.device)
        if self.hparams.reuse_fakes:
            fake = self.generator(z)
        else:
            with torch.no_grad():
                fake = self.generator(z)
        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        d_loss = bce_discriminator_loss(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        # Update G: fakes scored by the updated D against ones. Toggling freezes D's
        # parameters, so G's loss leaves no gradient on D.
        with self.toggled_optimizer(opt_g):
            if not self.hparams.reuse_fakes:
                fake = self.generator(torch.randn(num_images, self.z_dim, device=real.device))
            g_loss = bce_generator_loss(self.discriminator(fake))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            self._step_uncounted(opt_g)

        self._log_step(d_loss.detach(), g_loss.detach(), d_real.detach(), d_fake.detach())
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def _log_step(self, d_loss: torch.Tensor, g_loss: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        step = self.global_step  # batches done, this one included
        # Lightning sends step metrics to the loggers and the progress bar only on batches that
        # are multiples of log_every_n_steps, so they are logged on those batches alone. One
        # self.log call costs about 0.8 ms in Lightning 2.6 (cProfile, 2-core CPU), over a tenth
        # of a CPU step at batch 128.
        if step % self.trainer.log_every_n_steps == 0:
            self.log("train/d_loss", d_loss, prog_bar=True)
            self.log("train/g_loss", g_loss, prog_bar=True)
            self.log("train/d_real", torch.sigmoid(d_real.float()).mean())
            self.log("train/d_fake", torch.sigmoid(d_fake.float()).mean())

        self.d_loss_window.update(d_loss)
        self.g_loss_window.update(g_loss)
        if step % self.hparams.display_step == 0:
            d_mean = self.d_loss_window.compute()
            g_mean = self.g_loss_window.compute()
            # Sent to the loggers directly: self.log would repeat the value at every later
            # step of the epoch and would wait for the next log_every_n_steps boundary.
            # Lightning logs the metrics of batch k at logger step k - 1, and so does this.
            window = {"train/d_loss_window": d_mean.item(), "train/g_loss_window": g_mean.item()}
            for logger in self.loggers:
                logger.log_metrics(window, step=step - 1)
            rank_zero_info(
                f"step {step}: mean d_loss {window['train/d_loss_window']:.4f}, "
                f"mean g_loss {window['train/g_loss_window']:.4f} "
                f"over the last {self.hparams.display_step} batches"
            )
            self.d_loss_window.reset()
            self.g_loss_window.reset()

    def setup(self, stage: str) -> None:
        if stage not in ("fit", "validate") or not self.hparams.eval_metrics:
            return
        world_size = self.trainer.world_size
        if self.hparams.num_eval_samples < 2 * world_size:
            raise ValueError(
                f"num_eval_samples must be at least 2 per process, got {self.hparams.num_eval_samples} for "
                f"{world_size} processes. Pass --model.num_eval_samples 10000."
            )
        dataset = getattr(self.trainer.datamodule, "hparams", {}).get("dataset", "mnist")
        if dataset != "mnist":
            rank_zero_warn(
                f"The val/* metrics use a classifier trained on MNIST digits, so on {dataset} they are not "
                "comparable with MNIST numbers, and val/is and val/classes count digit classes."
            )
        # New real statistics for every fit or validate call, in case the data changed in between.
        self.validation_quality = ValidationQuality()

    def on_validation_start(self) -> None:
        if self.validation_quality is not None:
            self.validation_quality.to(self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        quality = self.validation_quality
        # Only the first full pass adds real images, and later passes keep its statistics. The
        # sanity check runs only a few batches, so it adds none.
        if quality is None or quality.real_complete or self.trainer.sanity_checking:
            return
        real, _ = batch  # (N, C, H, W) in [0, 1]
        quality.metrics.update_real(real)

    def on_validation_epoch_end(self) -> None:
        quality = self.validation_quality
        if quality is None:
            return
        if self.trainer.sanity_checking:
            self._check_eval_images()
            return
        quality.real_complete = True

        # NOTE: with several processes, each scores its slice of the same noise, and torchmetrics
        # gathers the states. FID, IS and the class metrics then match a single process (checked
        # with 2 CPU processes and the device loader, which drops up to world_size - 1 reals so
        # that the shares are equal). KID draws its subsets from reals gathered in another order,
        # so it differs within kid_std.
        result = score_generator(
            self.generator,
            quality.metrics,
            self.hparams.num_eval_samples,
            self.hparams.eval_seed,
            device=self.device,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )
        # Every process computed the same gathered result. sync_dist averages these equal values
        # and keeps Lightning from warning about epoch-level metrics that are not synced.
        for name in VAL_METRICS:
            self.log(f"val/{name}", float(result[name]), prog_bar=name == "fid", sync_dist=True)
        rank_zero_info(
            f"validation at step {self.global_step}: "
            + ", ".join(f"val/{name} {result[name]:.4g}" for name in VAL_METRICS)
        )

    def _check_eval_images(self) -> None:
        """Raise before the first step when the generator's images are outside [0, 1], which scoring rejects."""
        z = eval_noise(2, self.z_dim, self.hparams.eval_seed).to(self.device)
        try:
            check_images(generate_images(self.generator, z))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"The generator's images cannot be scored for the val/* metrics: {error} "
                "Or turn the metrics off with --model.eval_metrics false."
            ) from error
