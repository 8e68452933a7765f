import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_robust.cli import main
from tests.conftest import REPO, SHARED_DATA

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def shrink(cfg: dict, tmp_path: Path) -> dict:
    """Keep a config's structure but make it run in seconds: 1 epoch per round, small data."""
    trainer = cfg.setdefault("trainer", {})
    rounds = None
    for cb in trainer.get("callbacks") or []:
        args = cb.get("init_args", {})
        if "round_epochs" in args:
            args["round_epochs"] = [1] * min(3, len(args["round_epochs"]))
            args["verbose"] = False
            rounds = args["round_epochs"]
        if "warmup_epochs" in args:
            args["warmup_epochs"] = 0  # one epoch: filter from the first step
    model_args = cfg.get("model", {}).get("init_args", {})
    if "warmup_epochs" in model_args:  # e.g. CoTeaching
        model_args["warmup_epochs"] = 0
    trainer["max_epochs"] = sum(rounds) if rounds else 1
    trainer.update(default_root_dir=str(tmp_path), accelerator="cpu", limit_val_batches=2,
                   enable_progress_bar=False, logger=False)
    trainer["callbacks"] = [cb for cb in trainer.get("callbacks") or [] if "ModelCheckpoint" not in cb["class_path"]]
    trainer["enable_checkpointing"] = False
    data = cfg.get("data", {}).get("init_args", {})
    if "root" in data:
        data["root"] = str(SHARED_DATA)
    if "train_size" in data:
        data["train_size"], data["val_size"] = 300, 100
    if "labeled_fraction" in data:  # SemiSupervisedBackdoorMNISTDataModule
        data.update(labeled_size=200, unlabeled_mnist=200, test_size=200)
        if data.get("unlabeled_fashion"):
            data["unlabeled_fashion"] = 100
    return cfg


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory) -> Path:
    """The checkpoint of a shrunk ``configs/simclr_pretrain.yaml`` run, for the configs that fine-tune on it."""
    tmp = tmp_path_factory.mktemp("simclr_pretrain")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "simclr_pretrain.yaml").read_text()), tmp)
    cfg["trainer"]["enable_checkpointing"] = True  # Lightning's default ModelCheckpoint: <root>/checkpoints/
    small = tmp / "simclr_pretrain.yaml"
    small.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(small)])
    ckpts = sorted((tmp / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 1, ckpts
    return ckpts[0]


def test_every_config_is_tested():
    assert {p.name for p in CONFIGS} >= {"itlm_mnist.yaml", "itlm_digits.yaml", "prl_mnist.yaml", "spl_mnist.yaml",
                                         "prl_g_mnist.yaml", "coteaching_mnist.yaml", "bootstrap_mnist.yaml",
                                         "prl_regression.yaml", "backdoor_patch_prl_at.yaml", "backdoor_blend_prl_at.yaml",
                                         "itlm_backdoor_watermark.yaml",
                                         "simclr_pretrain.yaml", "simclr_finetune_prl.yaml"}


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-robust"])


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_fits(config, tmp_path, request):
    cfg = shrink(yaml.safe_load(config.read_text()), tmp_path)
    model_args = cfg.get("model", {}).get("init_args", {})
    if "backbone_checkpoint" in model_args:  # fine-tuning configs read a shrunk pretraining run's checkpoint
        model_args["backbone_checkpoint"] = str(request.getfixturevalue("simclr_checkpoint"))
    small = tmp_path / config.name
    small.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(small)])


def test_demo_prints_table_and_json(capsys):
    main(["demo", "--seeds", "0", "--early-rounds", "1", "--early-epochs", "1", "--final-epochs", "1"])
    out = capsys.readouterr().out
    assert "baseline" in out and "ITLM" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary) >= {"baseline_acc", "itlm_acc", "clean_precision", "wall_s"}
    assert 0.0 <= summary["itlm_acc"] <= 1.0 and 0.5 <= summary["clean_precision"] <= 1.0


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "lit_robust", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fit" in out.stdout and "test" in out.stdout


@pytest.mark.parametrize(
    ("config", "arg", "value", "message"),
    [
        ("itlm_digits.yaml", "keep_ratio", 1.5, "`keep_ratio` must be in (0, 1], got 1.5"),
        ("prl_mnist.yaml", "drop_ratio", 0.6, "`drop_ratio` must be in [0, 0.5), got 0.6"),
        ("backdoor_patch_prl_at.yaml", "tau", -0.1, "`tau` (the perturbation limit, ||c||_inf <= tau) must be a finite "
                                                    "number >= 0, got -0.1"),
    ],
)
def test_cli_rejects_bad_callback_argument(tmp_path, capsys, config, arg, value, message):
    cfg = shrink(yaml.safe_load((REPO / "configs" / config).read_text()), tmp_path)
    cb = next(c for c in cfg["trainer"]["callbacks"] if arg in c.get("init_args", {}))
    cb["init_args"][arg] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    # depending on jsonargparse's error handler the constructor's error is raised or printed before exiting
    with pytest.raises((ValueError, SystemExit)) as err:
        main(["fit", "--config", str(bad)])
    assert message in str(err.value) + capsys.readouterr().err


def test_finetune_config_without_backbone_checkpoint_file_says_so(tmp_path, capsys):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "simclr_finetune_prl.yaml").read_text()), tmp_path)
    cfg["model"]["init_args"]["backbone_checkpoint"] = str(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises((FileNotFoundError, ValueError, SystemExit)) as err:
        main(["fit", "--config", str(bad)])
    assert "`backbone_checkpoint` must be an existing checkpoint file" in str(err.value) + capsys.readouterr().err
