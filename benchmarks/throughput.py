"""Training throughput of gan_lightning against plain PyTorch loops, in one process.

    python benchmarks/throughput.py --data_dir DIR [--batch_size 128] [--steps 300] [--device cpu]
        [--compile] [--precision bf16-mixed] [--reuse_fakes true|false]

Three ways of training the same networks on the same batch size are timed after a warm-up:

- trainer: the project's path, ``GAN`` and ``MNISTDataModule`` through ``lightning.Trainer``;
- plain, torchvision loader: the baseline, a hand-written loop over a torchvision ``DataLoader``
  with ``ToTensor()`` that trains as the classic notebook does (see ``plain_loop``);
- plain, device loader: a hand-written loop over the project's device-resident loader that
  does the trainer's work per step, so its gap to ``trainer`` is Lightning's own overhead.

Prints the median images per second of each path over ``--repeats`` interleaved runs, the ratios,
and peak memory.
"""

import argparse
import resource
import statistics
import time
from contextlib import nullcontext

import lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from gan_lightning import GAN, Discriminator, Generator, MNISTDataModule
from gan_lightning.datasets import ensure_dataset, load_split
from gan_lightning.loader import DeviceBatchLoader, EpochShuffle
from gan_lightning.module import adam


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _networks(device: torch.device, compile_networks: bool) -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    generator, discriminator = Generator(z_dim=64).to(device), Discriminator().to(device)
    if compile_networks:
        generator.compile()
        discriminator.compile()
    return generator, discriminator


def _autocast(device: torch.device, precision: str):
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def plain_loop(batches, device: torch.device, args: argparse.Namespace, like_trainer: bool) -> float:
    """Train with a hand-written loop and return images per second after the warm-up.

    Without ``like_trainer`` the loop is the classic one: torch's default Adam, two generator
    forwards per step, and G's backward also computes gradients for D's weights, which the next D
    step clears. With it, the loop does what ``GAN`` does: Adam from ``gan_lightning.module.adam``,
    ``--reuse_fakes`` decides on the second forward, and D's weights take no gradient from G's loss.
    """
    reuse_fakes = like_trainer and args.reuse_fakes
    generator, discriminator = _networks(device, args.compile)
    # The classic loop uses torch's default Adam; the trainer's uses the fused kernel where it can.
    make_adam = adam if like_trainer else torch.optim.Adam
    opt_g = make_adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = make_adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision.startswith("16"))

    def step(real: torch.Tensor) -> None:
        real = real.to(device, non_blocking=True)
        z = torch.randn(len(real), 64, device=device)
        with _autocast(device, args.precision):
            fake = generator(z) if reuse_fakes else generator(z).detach()
            d_real, d_fake = discriminator(real), discriminator(fake.detach())
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))) / 2
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(opt_d)
        discriminator.requires_grad_(not like_trainer)
        with _autocast(device, args.precision):
            if not reuse_fakes:
                fake = generator(torch.randn(len(real), 64, device=device))
            d_fake = discriminator(fake)
            g_loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(g_loss).backward()
        scaler.step(opt_g)
        scaler.update()
        discriminator.requires_grad_(True)

    done, images, start = 0, 0, 0.0
    while done < args.warmup + args.steps:
        for real, _ in batches:
            if done == args.warmup:
                _sync(device)
                start, images = time.perf_counter(), 0
            step(real)
            done += 1
            images += len(real)
            if done == args.warmup + args.steps:
                break
    _sync(device)
    return images / (time.perf_counter() - start)


class _Timer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup = warmup
        self.images = 0
        self.start = 0.0
        self.elapsed = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            _sync(pl_module.device)
            self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.images += len(batch[0])

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.elapsed = time.perf_counter() - self.start


def trainer_path(device: torch.device, args: argparse.Namespace) -> float:
    """Train through lightning.Trainer and return images per second after the warm-up."""
    generator, discriminator = _networks(device, False)
    model = GAN(
        generator, discriminator, reuse_fakes=args.reuse_fakes, compile=args.compile, display_step=10**9, eval_metrics=False
    )
    data = MNISTDataModule(data_dir=args.data_dir, batch_size=args.batch_size, loader="device", download=False)
    timer = _Timer(args.warmup)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=data)
    return timer.images / timer.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="Folder holding MNIST/raw/ in torchvision's layout.")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300, help="Timed batches per path.")
    parser.add_argument("--warmup", type=int, default=30, help="Untimed batches before timing.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks in every path.")
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-mixed or 16-mixed.")
    parser.add_argument("--reuse_fakes", type=lambda text: text.lower() == "true", default=True,
                        help="Trainer and plain device paths: one generator forward per step (true, the "
                        "default config's setting) or two (false).")
    parser.add_argument("--num_workers", type=int, default=2, help="Workers of the torchvision DataLoader.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Timed runs of each path, interleaved; the median is reported.")
    args = parser.parse_args()
    device = torch.device(args.device)

    ensure_dataset(args.data_dir, "mnist", download=False)
    train = load_split(args.data_dir, "mnist", "train")
    device_batches = DeviceBatchLoader(
        train.images.to(device), train.labels.to(device), args.batch_size, EpochShuffle(len(train.images), True, 0, 0, 1)
    )
    tv_batches = DataLoader(
        MNIST(args.data_dir, train=True, transform=ToTensor(), download=False),
        batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.num_workers, persistent_workers=args.num_workers > 0, pin_memory=device.type == "cuda",
    )

    # Interleaving the paths spreads any slowdown of the machine over all of them.
    runs = {"trainer (device loader)": [], "plain loop, torchvision loader": [], "plain loop, device loader": []}
    for _ in range(args.repeats):
        runs["trainer (device loader)"].append(trainer_path(device, args))
        runs["plain loop, torchvision loader"].append(plain_loop(tv_batches, device, args, like_trainer=False))
        runs["plain loop, device loader"].append(plain_loop(device_batches, device, args, like_trainer=True))
    results = {name: statistics.median(rates) for name, rates in runs.items()}

    baseline = results["plain loop, torchvision loader"]
    print(f"\nbatch {args.batch_size}, {args.steps} timed steps, device {device}, precision {args.precision}, "
          f"compile {args.compile}, reuse_fakes {args.reuse_fakes}, torch threads {torch.get_num_threads()}")
    print(f"{'path':34} {'images/s':>10} {'vs plain torchvision':>22}   all runs")
    for name, rate in results.items():
        every_run = ", ".join(f"{value:.0f}" for value in runs[name])
        print(f"{name:34} {rate:10.0f} {rate / baseline:21.2f}x   {every_run}")
    overhead = 1 - results["trainer (device loader)"] / results["plain loop, device loader"]
    print(f"Lightning overhead vs the same loop on device data: {overhead:.1%} of a step")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
