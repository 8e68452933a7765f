"""`lit-robust predict` after a fit: the predictions land in the run's log folder as predictions.csv (the
PredictionWriter the CLI adds, on the defaults: progress bar, logger, checkpointing)."""

import csv
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import BasePredictionWriter

from lit_robust import MLPClassifier, PredictionWriter
from lit_robust.cli import main, run
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



class WithoutPredictStep(MLPClassifier):
    """A module of one's own that keeps Lightning's default `predict_step` (whose batch goes whole to `forward`)."""

    predict_step = pl.LightningModule.predict_step


def test_predict_of_a_module_without_its_own_predict_step_says_how_to_add_one(digits_config, capsys):
    """A CLI newcomer's module was told by Lightning that predicting "requires `forward`"; with a `forward` added,
    the whole batch went to it and ended in a traceback."""
    assert WithoutPredictStep.predict_step is pl.LightningModule.predict_step
    with pytest.raises(SystemExit) as done:
        main(["predict", "--config", str(digits_config), "--model", "tests.test_cli_predict.WithoutPredictStep"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert ("lit-robust predict: error: `lit-robust predict` needs the module's own `predict_step`, and "
            "WithoutPredictStep has none: Lightning's default hands the whole batch to `forward` (lit_robust's "
            "datamodules give `[index, input, target, ...]`). Add one to WithoutPredictStep, e.g. `def predict_step("
            "self, batch, batch_idx): return self(lit_robust.unpack_eval_batch(batch).input).argmax(1)`") in err, err
    assert ": `forward` got the whole batch and raised " in err, err


class ReadsTheBatch(WithoutPredictStep):
    """A `forward` that reads a dict batch itself (HF-style): Lightning's default `predict_step` serves it."""

    def forward(self, batch):
        return super().forward(batch["x"] if isinstance(batch, dict) else batch)


class DictBatches(pl.LightningDataModule):
    def predict_dataloader(self):
        return torch.utils.data.DataLoader([{"x": torch.randn(64)} for _ in range(6)], batch_size=3)


def test_a_forward_that_reads_the_whole_batch_predicts_and_lit_robusts_own_modules_are_named(tmp_path, capsys):
    """An adversarial reviewer's HF-style module (dict batches its `forward` reads) was refused by the first guard; the
    module is left as it is now (an instance patch could not be pickled for `ddp_spawn`). A module without `forward`
    either, and lit_robust's own modules without predictions, are refused before the run."""
    from lit_robust import DCGAN
    from lit_robust.cli import predict_step_advice

    run(["predict", "--model", "tests.test_cli_predict.ReadsTheBatch", "--model.in_features", "64",
         "--model.num_classes", "3", "--data", "tests.test_cli_predict.DictBatches",
         "--trainer.default_root_dir", str(tmp_path)])
    rows = list(tmp_path.glob("**/predictions.csv"))
    assert len(rows) == 1 and len(rows[0].read_text().splitlines()) == 7  # a header and 6 rows

    class NoForward(pl.LightningModule):
        pass

    with pytest.raises(ValueError, match=r"needs the module's own `predict_step`, and NoForward has none"):
        predict_step_advice(NoForward())
    with pytest.raises(ValueError, match=r"lit_robust's DCGAN makes none \(it has no `predict_step`\)"):
        predict_step_advice(DCGAN())
    model = MLPClassifier(in_features=4, num_classes=3)
    assert predict_step_advice(model) is None and "predict_step" not in vars(model)
