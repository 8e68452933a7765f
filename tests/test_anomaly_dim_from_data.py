"""The anomaly detectors read `dim` from the datamodule when it is left out, as MLPClassifier reads its width: a CSV
user of `lit-robust fit --model RobustRealNVP --data TableDataModule` had to count their columns (first told that
`dim` is required, then that 5 does not fit 30)."""

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import RCA, AutoEncoder, IndexedDataset, RealNVP, RobustRealNVP, TableDataModule
from lit_robust.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = [(RealNVP, {}), (RobustRealNVP, {"drop_ratio": 0.1}), (RCA, {"drop_ratio": 0.1}), (AutoEncoder, {})]


def _table(n: int = 120, features: int = 7, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    anomaly = np.arange(n) % 10 == 0
    x[anomaly] += 4
    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(features)])
    frame["id"] = np.arange(n)  # not an input
    frame["is_anomaly"] = anomaly.astype(int)
    return frame


@pytest.mark.parametrize("cls, kwargs", MODELS, ids=[c.__name__ for c, _ in MODELS])
def test_dim_left_out_is_the_tables_feature_count_and_checkpoints_rebuild_it(cls, kwargs, tmp_path):
    pl.seed_everything(0)
    data = TableDataModule(frame=_table(), task="anomaly", target="is_anomaly", id_columns="id", test_size=0.25)
    model = cls(**kwargs)
    assert model.hparams.dim is None
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, data)
    assert model.hparams.dim == 7  # the 7 feature columns: not `id`, not the anomaly flags
    x = data.test_set.dataset.tensors[0]
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    again = cls.load_from_checkpoint(ckpt)  # no Trainer, no datamodule: built from the saved `dim`
    assert again.hparams.dim == 7
    model.eval(), again.eval()
    torch.manual_seed(1)
    expected = model.anomaly_score(x)
    torch.manual_seed(1)
    assert torch.equal(again.anomaly_score(x), expected)


@pytest.mark.parametrize("cls, kwargs", MODELS, ids=[c.__name__ for c, _ in MODELS])
def test_dim_left_out_without_a_datamodule_is_said_with_the_fix(cls, kwargs):
    model = cls(**kwargs)
    with pytest.raises(RuntimeError, match=rf"{cls.__name__}\(dim=None\) builds its layers at `setup`, from the "
                                           r"datamodule's number of features: fit it with one first"):
        model.anomaly_score(torch.randn(4, 7))
    x = torch.randn(40, 7)
    loader = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(40, dtype=torch.long))), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: `dim` is read from the datamodule when left at None, but "
                                         r"there is no datamodule .* \(plain dataloaders\)\. Pass it: the number of "
                                         rf"features, e.g. {cls.__name__}\(dim=30\)"):
        trainer.fit(model, loader)


def test_a_given_dim_that_contradicts_the_table_is_still_a_misfit():
    data = TableDataModule(frame=_table(), task="anomaly", target="is_anomaly", id_columns="id")
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"`model.dim`=5 does not fit `data`: TableDataModule yields vectors of 7 "
                                         r"features. Set `model.dim` to 7"):
        trainer.fit(RCA(dim=5), data)
    with pytest.raises(ValueError, match=r"`dim` must be an integer >= 2 \(Real NVP splits the coordinates\) or None"):
        RealNVP(dim=1)


def test_cli_fits_test_and_predicts_a_csv_without_dim(tmp_path, monkeypatch):
    path = tmp_path / "readings.csv"
    _table().to_csv(path, index=False)
    monkeypatch.chdir(tmp_path)
    args = ["--model", "RobustRealNVP", "--data", "TableDataModule", "--data.path", str(path), "--data.task", "anomaly",
            "--data.target", "is_anomaly", "--data.id_columns", "id", "--trainer.max_epochs", "2",
            "--trainer.enable_progress_bar", "false"]
    main(["fit", *args])
    main(["test", *args, "--ckpt_path", "last"])
    main(["predict", *args, "--ckpt_path", "last"])
    (written,) = tmp_path.glob("lightning_logs/version_*/predictions.csv")
    assert len(pd.read_csv(written)) == 24  # the test split: 20 % of 120 rows
