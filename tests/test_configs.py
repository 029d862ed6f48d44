"""Every YAML file in configs/ parses through the CLI and builds the model and data module."""

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import make_tiny_mnist
from gan_lightning.cli import GANCLI
from gan_lightning.datasets import DATASETS

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny copies of every supported data set, so that a config may choose any of them."""
    root = make_tiny_mnist(tmp_path_factory.mktemp("config_data"))
    for dataset_class in DATASETS.values():
        folder = root / dataset_class.__name__
        if not folder.exists():
            shutil.copytree(root / "MNIST", folder)
    return root


def build_cli(config: Path, data_dir: Path, runs_dir: Path) -> GANCLI:
    args = ["--config", str(config), "--data.data_dir", str(data_dir), "--wandb", "off", "--runs_dir", str(runs_dir)]
    return GANCLI(args=[*args, "--trainer.accelerator", "cpu"])


def test_configs_found() -> None:
    assert {path.name for path in CONFIGS} >= {"classic.yaml", "default.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_prints(config: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        GANCLI(args=["--config", str(config), "--print_config"])

    assert exit_info.value.code in (0, None)
    assert "g_lr" in yaml.safe_load(capsys.readouterr().out)["model"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_instantiates(config: Path, data_dir: Path, tmp_path: Path) -> None:
    settings = yaml.safe_load(config.read_text())
    cli = build_cli(config, data_dir, tmp_path / "runs")
    model_settings = settings.get("model", {})

    # Every value in the file reaches the object it configures.
    for name in ("generator", "discriminator"):
        for key, value in model_settings.get(name, {}).get("init_args", {}).items():
            assert getattr(getattr(cli.model, name), key) == value, f"model.{name}.init_args.{key}"
    for key, value in model_settings.items():
        if key not in ("generator", "discriminator"):
            assert expected_value(cli.model.hparams[key]) == value, f"model.{key}"
    for key, value in settings.get("data", {}).items():
        if key != "data_dir":
            assert cli.datamodule.hparams[key] == value, f"data.{key}"
    for key, value in settings.get("trainer", {}).items():
        assert cli.config.trainer[key] == value, f"trainer.{key}"


def expected_value(value: Any) -> Any:
    """Return YAML's form of a hyperparameter: tuples such as Adam's betas become lists."""
    return list(value) if isinstance(value, tuple) else value


def test_classic_config_settings(data_dir: Path, tmp_path: Path) -> None:
    cli = build_cli(REPO_ROOT / "configs" / "classic.yaml", data_dir, tmp_path / "runs")
    model = cli.model

    assert model.generator.z_dim == 64
    assert model.generator.hidden_dim == 128
    assert model.discriminator.hidden_dim == 128
    assert model.hparams.g_lr == pytest.approx(1e-5)
    assert model.hparams.d_lr == pytest.approx(1e-5)
    assert model.hparams.display_step == 500
    assert cli.datamodule.hparams.batch_size == 128
    assert cli.trainer.max_epochs == 200
