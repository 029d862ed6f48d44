"""Train Generative Adversarial Networks on MNIST and its relatives with PyTorch Lightning."""

from gan_lightning.datamodule import MNISTDataModule
from gan_lightning.losses import get_disc_loss, get_gen_loss
from gan_lightning.module import GAN
from gan_lightning.networks import Discriminator, Generator, get_discriminator_block, get_generator_block, get_noise

__all__ = [
    "GAN",
    "Discriminator",
    "Generator",
    "MNISTDataModule",
    "get_disc_loss",
    "get_discriminator_block",
    "get_gen_loss",
    "get_generator_block",
    "get_noise",
]
