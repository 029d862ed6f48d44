"""A training step must not read device values on the host, because on a GPU each read waits for the device.

On the CPU such reads cost nothing, so the test counts the calls that would wait on a GPU: Tensor.item(),
bool(), int(), float(), tolist() and numpy(). It counts from the first callback's on_train_batch_start to the
last callback's on_train_batch_end, on batches where Lightning writes no step metrics and no grid is due.
Reads by torch.optim are left out (see _called_by_optimizer).
"""

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from gan_lightning import GAN, MNISTDataModule
from gan_lightning import conditional as conditional_networks
from gan_lightning.callbacks import ImageGrids, LossPlot, Throughput
from gan_lightning.conditional import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
from gan_lightning.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lightning.reliability import RandomState

HOST_READS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy")


class HostReads:
    """Count host reads of tensor values while ``active`` is set, with the names of the methods called."""

    def __init__(self) -> None:
        self.active = False
        self.calls: Counter[str] = Counter()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor: torch.Tensor, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                if self.active and not _called_by_optimizer():
                    self.calls[_name] += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _called_by_optimizer() -> bool:
    # Adam keeps its step count in a CPU tensor unless capturable or fused is set, also when the
    # weights are on a GPU, so reading it does not wait for the device.
    caller = sys._getframe(2).f_code.co_filename
    return f"{os.sep}torch{os.sep}optim{os.sep}" in caller


class StartCounting(Callback):
    def __init__(self, reads: HostReads) -> None:
        self.reads = reads

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.reads.active = True


class StopCounting(Callback):
    def __init__(self, reads: HostReads) -> None:
        self.reads = reads

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.reads.active = False


def unconditional(**options: Any) -> GAN:
    batch_norm = options.get("loss") != "wgan_gp"
    return GAN(DCGANGenerator(z_dim=8, width=4), DCGANDiscriminator(width=4, batch_norm=batch_norm), **options)


def conditional(**options: Any) -> GAN:
    generator = ConditionalDCGANGenerator(z_dim=8, num_classes=10, embed_dim=4, width=4)
    return GAN(generator, ConditionalDCGANDiscriminator(num_classes=10, width=4), **options)


@pytest.mark.parametrize(
    ("build", "options"),
    [
        (unconditional, {"reuse_fakes": True}),
        (unconditional, {"reuse_fakes": False, "ema_decay": 0.999}),
        (unconditional, {"loss": "wgan_gp", "n_critic": 2}),
        (conditional, {"loss": "hinge", "ema_decay": 0.9}),
    ],
    ids=["default", "ema", "wgan_gp", "conditional_hinge_ema"],
)
def test_step_reads_nothing_on_host(
    build: Any, options: dict[str, Any], mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = HostReads()
    model = build(eval_metrics=False, display_step=1000, **options)
    callbacks = [StartCounting(reads), ImageGrids(), LossPlot(), Throughput(), RandomState(), StopCounting(reads)]
    trainer = L.Trainer(
        accelerator="cpu", max_steps=5, log_every_n_steps=1000, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=callbacks,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    reads.install(monkeypatch)
    # The conditional networks check label values only on CPU tensors, never on a GPU's.
    monkeypatch.setattr(conditional_networks, "_check_values", lambda labels: False)

    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(mnist_dir), batch_size=64, download=False))

    assert trainer.global_step == 5
    assert dict(reads.calls) == {}


def test_host_reads_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = HostReads()
    reads.install(monkeypatch)
    reads.active = True

    value = torch.tensor(2.0)
    value.item()
    bool(value > 1)
    float(value)

    assert reads.calls == Counter({"item": 1, "__bool__": 1, "__float__": 1})
