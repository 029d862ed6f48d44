"""An exponential moving average of a generator's weights, for smoother samples."""

import copy

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from gan_lightning.labels import generate

# Noise behind the BatchNorm statistics of the average: BATCH_NORM_BATCHES batches of
# BATCH_NORM_BATCH_SIZE, drawn from their own seed, so the estimate depends only on the weights and
# the global random stream is left untouched.
BATCH_NORM_BATCHES = 16
BATCH_NORM_BATCH_SIZE = 256
BATCH_NORM_SEED = 0


class GeneratorEMA(nn.Module):
    """A copy of a generator whose weights and buffers follow the generator's as a moving average.

    Update n (counting from 0) moves every floating-point tensor of the copy towards the
    generator's with decay min(decay, (1 + n) / (10 + n)), the schedule of TensorFlow's
    ExponentialMovingAverage with num_updates, and update 0 copies the weights. Without the ramp,
    a decay of 0.999 keeps 39% of the first weights after 936 updates (two MNIST epochs at batch
    128), and early samples look untrained. Integer buffers, such as BatchNorm's batch counter,
    are copied.

    BatchNorm's running statistics are measured rather than averaged: ``averaged()`` and
    ``state_dict()`` first run the averaged weights in training mode on fresh noise
    (``torch.optim.swa_utils.update_bn``) when the weights changed since the last measurement.
    The generator's own statistics do not fit the averaged weights. Averaging weights that point in
    different directions gives smaller activations than any single set of them, and normalising
    those with the averaged, larger variances shrinks them further. The samples then move towards
    one blurred image per class (README, Results).

    The copy is ``module`` and the update count is ``num_updates``. Both are in the state dict, so
    checkpoints keep the average, with measured statistics, and a resumed run continues it. The
    count is mirrored on the host, so only the first update after loading a state dict reads it
    from the device.
    ``torch.optim.swa_utils.AveragedModel`` does the same averaging but reads its count from the
    device at every update, which would make each GPU training step wait.
    """

    def __init__(self, generator: nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}.")
        self.decay = decay
        self.module = copy.deepcopy(generator).requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        # None after loading a state dict, until the next update reads num_updates once.
        self._host_num_updates: int | None = 0
        # Whether the weights changed since the BatchNorm statistics were last measured.
        self._batch_norm_stale = True
        self.register_state_dict_pre_hook(_measure_before_saving)

    def decay_at(self, num_updates: int) -> float:
        """Return the decay of update ``num_updates`` (counting from 0)."""
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        """Move the average towards the current weights and buffers of ``generator``."""
        if self._host_num_updates is None:
            self._host_num_updates = int(self.num_updates)
        step = self._host_num_updates
        weight = 1.0 - self.decay_at(step)

        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*generator.parameters(), *generator.buffers()]
        if len(averaged) != len(current):
            raise ValueError(
                f"The generator has {len(current)} weights and buffers but its average has {len(averaged)}. "
                "Average the generator that the average was made from."
            )
        for average, value in zip(averaged, current):
            if step == 0 or not average.is_floating_point():
                average.copy_(value)
            else:
                average.lerp_(value.to(average.dtype), weight)

        self.num_updates.add_(1)
        self._host_num_updates = step + 1
        self._batch_norm_stale = True

    def averaged(self) -> nn.Module:
        """Return the averaged generator, with BatchNorm statistics measured for its current weights."""
        if self._batch_norm_stale:
            self.measure_batch_norm()
        return self.module

    @torch.no_grad()
    def measure_batch_norm(self) -> None:
        """Set the running statistics of the average's BatchNorm layers to those of its weights.

        Runs the average on BATCH_NORM_BATCHES batches of noise in its own dtype and on its own
        device, with balanced classes for a conditional generator, and autocast off. A generator
        without BatchNorm is left as it is.

        NOTE: run on CPU only so far. Under --trainer.sync_batchnorm the layers would all-reduce here,
        so every process would have to reach this call at the same point.
        """
        self._batch_norm_stale = False
        if not any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in self.module.modules()):
            return
        parameter = next(self.module.parameters())
        noise = torch.Generator().manual_seed(BATCH_NORM_SEED)
        batches = [
            torch.randn(BATCH_NORM_BATCH_SIZE, self.module.z_dim, generator=noise).to(parameter.device, parameter.dtype)
            for _ in range(BATCH_NORM_BATCHES)
        ]
        with torch.autocast(device_type=parameter.device.type, enabled=False):
            # update_bn restores the mode of the model it is given, so the wrapper takes the average's.
            update_bn(batches, _Generate(self.module).train(self.module.training))

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """Run the averaged generator."""
        return self.averaged()(*args)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_num_updates = None
        self._batch_norm_stale = True


def _measure_before_saving(ema: GeneratorEMA, prefix: str, keep_vars: bool) -> None:
    """State-dict pre-hook: saved averages carry BatchNorm statistics that fit their weights."""
    ema.averaged()


class _Generate(nn.Module):
    """Calls a generator on noise alone, with balanced classes when it is conditional (for update_bn)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return generate(self.generator, z)
