"""`lit-robust predict` after a fit: the predictions land in the run's log folder as predictions.csv (the
PredictionWriter the CLI adds, on the defaults: progress bar, logger, checkpointing)."""

import csv
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning.callbacks import BasePredictionWriter

from lit_robust import PredictionWriter
from lit_robust.cli import run
from tests.conftest import REPO
from tests.test_cli import shrink


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-robust"])


@pytest.fixture
def digits_config(tmp_path) -> Path:
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    return small


def test_predict_after_fit_writes_the_test_predictions(digits_config, one_torch_thread):
    run(["fit", "--config", str(digits_config)])
    cli = run(["predict", "--config", str(digits_config), "--ckpt_path", "last"])
    writers = [c for c in cli.trainer.callbacks if isinstance(c, BasePredictionWriter)]
    assert len(writers) == 1 and isinstance(writers[0], PredictionWriter)
    path = Path(cli.trainer.log_dir) / "predictions.csv"
    assert writers[0].path == str(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    dm, model = cli.datamodule, cli.model  # the fitted weights (--ckpt_path last), the test split
    x, y = dm.test_set.dataset.tensors
    model.eval()
    with torch.no_grad():
        argmax = model(x).argmax(1)
    assert len(rows) == len(dm.test_set) == 497
    assert [int(r["index"]) for r in rows] == list(range(497))  # unique, sorted
    assert [int(r["prediction"]) for r in rows] == argmax.tolist()
    assert [int(r["target"]) for r in rows] == y.tolist()


def test_predict_keeps_a_writer_the_config_names(digits_config, tmp_path, one_torch_thread):
    """A config with its own BasePredictionWriter gets no second one."""
    cfg = yaml.safe_load(digits_config.read_text())
    cfg["trainer"]["callbacks"].append({"class_path": "lit_robust.PredictionWriter",
                                        "init_args": {"dirpath": str(tmp_path / "mine")}})
    digits_config.write_text(yaml.safe_dump(cfg))
    cli = run(["predict", "--config", str(digits_config)])  # no fit: the untrained model (warned) is enough here
    writers = [c for c in cli.trainer.callbacks if isinstance(c, BasePredictionWriter)]
    assert len(writers) == 1 and writers[0].path == str(tmp_path / "mine" / "predictions.csv")

