"""An exponential moving average of a generator's weights, for smoother samples."""

import copy

import torch
from torch import nn


class GeneratorEMA(nn.Module):
    """A copy of a generator whose weights and buffers follow the generator's as a moving average.

    Update n (counting from 0) moves every floating-point tensor of the copy towards the
    generator's with decay min(decay, (1 + n) / (10 + n)), the schedule of TensorFlow's
    ExponentialMovingAverage with num_updates, and update 0 copies the weights. Without the ramp,
    a decay of 0.999 keeps 39% of the first weights after 936 updates (two MNIST epochs at batch
    128), and early samples look untrained. Integer buffers, such as BatchNorm's batch counter,
    are copied.

    The copy is ``module`` and the update count is ``num_updates``. Both are in the state dict, so
    checkpoints keep the average and a resumed run continues it. The count is mirrored on the
    host, so only the first update after loading a state dict reads it from the device.
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

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """Run the averaged generator."""
        return self.module(*args)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_num_updates = None
