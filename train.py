"""Train a GAN on MNIST.

    python train.py --data.data_dir DIR                     # the default config, configs/default.yaml
    python train.py --config configs/classic.yaml           # the classic settings
    python train.py --accelerator gpu --devices 1 --max_epochs 5
    python train.py --print_config                          # show the resolved config

Every Lightning CLI option works as well (--trainer.*, --model.*, --data.*); see --help.
"""

from gan_lightning.cli import main

if __name__ == "__main__":
    main()
