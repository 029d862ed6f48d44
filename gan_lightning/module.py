"""The LightningModule that trains a generator against a discriminator."""

import functools
import math
from collections.abc import Iterable
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from gan_lightning.checkpoint import NETWORKS_KEY, CheckpointError, network_spec
from gan_lightning.ema import GeneratorEMA
from gan_lightning.idx import DatasetError
from gan_lightning.labels import balanced_labels, discriminate, generate, num_classes_of
from gan_lightning.losses import discriminator_loss, generator_loss, gradient_penalty
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


# Devices and dtypes for which torch 2.14 has a fused Adam kernel.
FUSED_ADAM_DEVICES = ("cpu", "cuda")
FUSED_ADAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def adam(parameters: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Build Adam with its fused kernel where the parameters allow it, which updates all of them in one call.

    Without ``fused``, torch 2.14 updates CPU parameters one tensor at a time in Python. With the
    classic MLP at batch 128 on 2 CPU cores, that loop took 19% of a training step (cProfile). A
    minimal training loop ran 24% faster with ``fused=True`` (about 6,400 against 8,000 images/s).
    The fused kernel also keeps Adam's step count on the parameters' device instead of reading it on the host.
    """
    parameters = list(parameters)
    fused = all(p.device.type in FUSED_ADAM_DEVICES and p.dtype in FUSED_ADAM_DTYPES for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=fused or None)


def _check_conditioning(generator: nn.Module, discriminator: nn.Module) -> int:
    """Return the generator's number of classes after checking that D is conditioned the same way."""
    g_classes, d_classes = num_classes_of(generator), num_classes_of(discriminator)
    if g_classes != d_classes:
        raise ValueError(
            f"The generator is conditioned on {g_classes} classes but the discriminator on {d_classes} "
            "(0 means unconditional). Use a conditional generator with a conditional discriminator of the "
            "same num_classes, or two unconditional networks."
        )
    return g_classes


def _check_loss_fits(loss: str, discriminator: nn.Module, compile: bool) -> None:
    if loss != "wgan_gp":
        return
    if any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in discriminator.modules()):
        raise ValueError(
            "loss wgan_gp penalises the gradient of each image's score, which BatchNorm in the discriminator "
            "mixes across the batch. Pass --model.discriminator.init_args.batch_norm false, or another loss."
        )
    if compile:
        raise ValueError(
            "loss wgan_gp differentiates through a gradient, which torch.compile does not support. "
            "Pass --model.compile false, or another loss."
        )


class GAN(L.LightningModule):
    """A GAN trained with manual optimization: each batch updates D, then (every ``n_critic`` batches) G.

    Args:
        generator: maps noise (N, z_dim) to images in [0, 1] and has a ``z_dim`` attribute;
            the classic ``Generator(z_dim=64)`` when not given. A class-conditional generator
            (see ``gan_lightning.labels``) is trained on the labels of the real batch.
        discriminator: maps images to logits (N, 1); the classic ``Discriminator()`` when not given.
            Conditional when the generator is, with the same ``num_classes``.
        loss: ``bce`` (non-saturating), ``hinge``, ``lsgan`` or ``wgan_gp``; see
            ``gan_lightning.losses.discriminator_loss``.
        n_critic: D updates per G update. Every batch updates D; G is updated on every
            ``n_critic``-th batch, so steps keep counting batches.
        gp_weight: weight of the gradient penalty of ``wgan_gp``.
        ema_decay: keep an exponential moving average of the generator's weights with this decay
            (ramped up over the first updates, see ``GeneratorEMA``), updated after every G step, and use it for grids, validation metrics, sampling and
            export. ``None`` turns it off.
        g_lr: Adam learning rate of the generator.
        d_lr: Adam learning rate of the discriminator.
        g_betas: Adam betas of the generator.
        d_betas: Adam betas of the discriminator.
        display_step: batches between logged loss means and image grids.
        num_display: images in the grid of fakes drawn from the fixed noise.
        reuse_fakes: score the fakes made for the D update again, with the updated D, for the
            G update, instead of drawing new noise: one generator forward per G update instead of two.
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
        loss: Literal["bce", "hinge", "lsgan", "wgan_gp"] = "bce",
        n_critic: int = 1,
        gp_weight: float = 10.0,
        ema_decay: float | None = None,
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
        _check_positive("n_critic", n_critic)
        _check_positive("gp_weight", gp_weight)
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(
                f"ema_decay must be in (0, 1), got {ema_decay}. Pass --model.ema_decay 0.995, or null to turn it off."
            )
        if int(n_critic) != n_critic:
            raise ValueError(f"n_critic must be a whole number, got {n_critic}. Pass --model.n_critic 5.")
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
        self.num_classes = _check_conditioning(self.generator, self.discriminator)
        _check_loss_fits(loss, self.discriminator, compile)

        generator_rng = torch.Generator().manual_seed(fixed_noise_seed)
        self.register_buffer("fixed_z", torch.randn(num_display, self.z_dim, generator=generator_rng))

        # The average lives in the state dict as generator_ema.module.*, so checkpoints keep it
        # and a resumed run continues it. Its weights take no gradients.
        self.generator_ema: GeneratorEMA | None = None
        if ema_decay is not None:
            self.generator_ema = GeneratorEMA(self.generator, ema_decay)

        # Means over the current display window, which torchmetrics syncs across processes. Its NaN
        # check reads every value on the host and would make a GPU step wait, so it is off. A NaN
        # loss then makes the window's mean NaN, and DivergenceGuard stops or skips such batches.
        self.d_loss_window = MeanMetric(nan_strategy="disable")
        self.g_loss_window = MeanMetric(nan_strategy="disable")

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
        opt_g = adam(self.generator.parameters(), lr=self.hparams.g_lr, betas=self.hparams.g_betas)
        opt_d = adam(self.discriminator.parameters(), lr=self.hparams.d_lr, betas=self.hparams.d_betas)
        return [opt_g, opt_d]

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator behind grids, validation metrics and samples: the average when ``ema_decay`` is set.

        The average's BatchNorm statistics are measured here when its weights changed since the last
        call (see ``GeneratorEMA``).
        """
        return self.generator_ema.averaged() if self.generator_ema is not None else self.generator

    @property
    def fixed_labels(self) -> torch.Tensor | None:
        """Labels of the fixed noise for a conditional generator: 0, 1, ..., 9, 0, 1, ...; else None."""
        if not self.num_classes:
            return None
        return balanced_labels(len(self.fixed_z), self.num_classes, self.fixed_z.device)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images from noise z: (N, z_dim), with labels for a conditional generator."""
        return generate(self.sampling_generator, z, labels)

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
        num_classes = getattr(datamodule, "num_classes", None)
        if self.num_classes and num_classes is not None and num_classes > self.num_classes:
            raise DatasetError(
                f"The data set has {num_classes} classes but the networks are conditioned on {self.num_classes}. "
                f"Set num_classes to {num_classes} (--model.generator.init_args.num_classes and "
                "--model.discriminator.init_args.num_classes)."
            )
        labels = balanced_labels(2, self.num_classes, self.device) if self.num_classes else None
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                fake = generate(self.generator, self.fixed_z[:2], labels)
                if fake[0].numel() != num_pixels:
                    raise DatasetError(
                        f"The data set's images have shape {tuple(image_shape)} ({num_pixels} pixels) "
                        f"but the generator makes images of {fake[0].numel()} pixels. {fix}"
                    )
                real = torch.zeros(2, *image_shape, device=self.device)
                try:
                    discriminate(self.discriminator, real, labels)
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
        real, labels = batch  # (N, C, H, W) in [0, 1], (N,) class indices
        labels = labels if self.num_classes else None  # fakes take the labels of the reals
        opt_g, opt_d = self.optimizers()
        num_images = real.shape[0]
        loss = self.hparams.loss
        # G trains on every n_critic-th batch; global_step counts the batches done before this one.
        train_generator = (self.global_step + 1) % self.hparams.n_critic == 0
        reuse_fakes = self.hparams.reuse_fakes and train_generator

        # Update D on reals and detached fakes.
        z = torch.randn(num_images, self.z_dim, device=real.device)
        with torch.set_grad_enabled(reuse_fakes):
            fake = generate(self.generator, z, labels)
        d_real = discriminate(self.discriminator, real, labels)
        d_fake = discriminate(self.discriminator, fake.detach(), labels)
        d_loss = discriminator_loss(loss, d_real, d_fake)
        if loss == "wgan_gp":
            critic = functools.partial(discriminate, self.discriminator, labels=labels)
            d_loss = d_loss + self.hparams.gp_weight * gradient_penalty(critic, real, fake.detach().view_as(real))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        outputs = {"d_loss": d_loss.detach()}
        if train_generator:
            # Update G: fakes scored by the updated D. Toggling freezes D's parameters, so G's
            # loss leaves no gradient on D.
            with self.toggled_optimizer(opt_g):
                if not reuse_fakes:
                    fake = generate(self.generator, torch.randn(num_images, self.z_dim, device=real.device), labels)
                g_loss = generator_loss(loss, discriminate(self.discriminator, fake, labels))
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g_loss)
                self._step_uncounted(opt_g)
            if self.generator_ema is not None:
                self.generator_ema.update(self.generator)
            outputs["g_loss"] = g_loss.detach()

        self._log_step(outputs, d_real.detach(), d_fake.detach())
        return outputs

    def _log_step(self, losses: dict[str, torch.Tensor], d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        """Log the losses of this batch (``g_loss`` only on batches that update G) and D's mean outputs.

        ``train/d_real`` and ``train/d_fake`` are D's mean probabilities for ``bce`` and its mean raw
        scores for the other losses, whose outputs are not logits of a probability.
        """
        step = self.global_step  # batches done, this one included
        d_loss, g_loss = losses["d_loss"], losses.get("g_loss")
        # Lightning sends step metrics to the loggers and the progress bar only on batches that
        # are multiples of log_every_n_steps, so they are logged on those batches alone. One
        # self.log call costs about 0.8 ms in Lightning 2.6 (cProfile, 2-core CPU), over a tenth
        # of a CPU step at batch 128.
        if step % self.trainer.log_every_n_steps == 0:
            as_score = torch.sigmoid if self.hparams.loss == "bce" else (lambda scores: scores)
            self.log("train/d_loss", d_loss, prog_bar=True)
            if g_loss is not None:
                self.log("train/g_loss", g_loss, prog_bar=True)
            self.log("train/d_real", as_score(d_real.float()).mean())
            self.log("train/d_fake", as_score(d_fake.float()).mean())

        self.d_loss_window.update(d_loss)
        if g_loss is not None:
            self.g_loss_window.update(g_loss)
        if step % self.hparams.display_step == 0:
            # Sent to the loggers directly: self.log would repeat the value at every later
            # step of the epoch and would wait for the next log_every_n_steps boundary.
            # Lightning logs the metrics of batch k at logger step k - 1, and so does this.
            window = {"train/d_loss_window": self.d_loss_window.compute().item()}
            message = f"step {step}: mean d_loss {window['train/d_loss_window']:.4f}"
            # With n_critic > display_step, a window may contain no G step.
            if self.g_loss_window.update_count:
                window["train/g_loss_window"] = self.g_loss_window.compute().item()
                message += f", mean g_loss {window['train/g_loss_window']:.4f}"
            for logger in self.loggers:
                logger.log_metrics(window, step=step - 1)
            rank_zero_info(f"{message} over the last {self.hparams.display_step} batches")
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
            self.sampling_generator,
            quality.metrics,
            self.hparams.num_eval_samples,
            self.hparams.eval_seed,
            device=self.device,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )
        # Every process computed the same gathered result. sync_dist averages these equal values
        # and keeps Lightning from warning about epoch-level metrics that are not synced.
        names = VAL_METRICS + (("label_accuracy",) if "label_accuracy" in result else ())
        for name in names:
            self.log(f"val/{name}", float(result[name]), prog_bar=name == "fid", sync_dist=True)
        rank_zero_info(
            f"validation at step {self.global_step}: " + ", ".join(f"val/{name} {result[name]:.4g}" for name in names)
        )

    def _check_eval_images(self) -> None:
        """Raise before the first step when the generator's images are outside [0, 1], which scoring rejects."""
        z = eval_noise(2, self.z_dim, self.hparams.eval_seed).to(self.device)
        try:
            check_images(generate_images(self.sampling_generator, z))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"The generator's images cannot be scored for the val/* metrics: {error} "
                "Or turn the metrics off with --model.eval_metrics false."
            ) from error
