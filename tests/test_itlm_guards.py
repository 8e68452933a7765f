"""ITLM's guards: argument checks, silent misconfigurations, round output."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import ITLM, IndexedDataset
from tests.conftest import BlobsData, TinyModel, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fit(tmp_path, itlm, model=None, data=None, callbacks=(), ckpt_path=None, seed=0, **kw):
    pl.seed_everything(seed, verbose=False)
    model = model if model is not None else TinyModel()
    trainer = tiny_trainer(tmp_path, sum(itlm.round_epochs), [itlm, *callbacks], **kw)
    trainer.fit(model, data if data is not None else BlobsData(), ckpt_path=ckpt_path)
    return model, trainer


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"round_epochs": 6}, ValueError, r"`round_epochs` must be a non-empty list of integers >= 1, got 6\."),
    ({"round_epochs": None}, ValueError, r"`round_epochs` must be a non-empty list of integers >= 1, got None\."),
    ({"seed": "0"}, TypeError, r"`seed` must be an integer, got '0'\."),
    ({"seed": 1.5}, TypeError, r"`seed` must be an integer, got 1.5\."),
    ({"monitor": 5}, TypeError, r"`monitor` must be a metric name \(a non-empty string\) or None, got 5\."),
    ({"monitor": ""}, TypeError, r"`monitor` must be a metric name"),
    ({"plot_dir": 3}, TypeError, r"`plot_dir` must be a folder path \(str or os.PathLike\) or None, got 3\."),
    ({"verbose": "no"}, TypeError, r"`verbose` must be True or False, got 'no'\."),
    ({"reinit": 0}, TypeError, r"`reinit` must be True or False, got 0\."),
])
def test_arguments_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        ITLM(**{"keep_ratio": 0.5, "round_epochs": [1, 1], **kwargs})


def test_plot_dir_may_be_a_path(tmp_path):
    assert ITLM(0.5, [1], plot_dir=tmp_path).plot_dir == tmp_path


def test_round_epochs_accept_a_tuple_of_integers():
    assert ITLM(0.5, (2, 3)).round_epochs == [2, 3]


# ---------------------------------------------------------------- silent cases made loud
def test_keep_ratio_keeping_no_sample_is_an_error_before_training(tmp_path):
    itlm = ITLM(keep_ratio=0.004, round_epochs=[1, 1], verbose=False, plot=False)
    model = TinyModel()
    with pytest.raises(ValueError, match=r"`keep_ratio` must keep at least one of the 240 training samples: "
                                         r"floor\(0.004 \* 240\) = 0\. Use `keep_ratio` >= 1/240 = 0.004167, "
                                         r"got 0.004\."):
        fit(tmp_path, itlm, model)
    assert model.seen == []


def test_empty_training_set_is_an_error(tmp_path):
    empty = IndexedDataset(TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))
    itlm = ITLM(keep_ratio=0.5, round_epochs=[1, 1], verbose=False, plot=False)
    trainer = tiny_trainer(tmp_path, 2, [itlm])
    with pytest.raises(ValueError, match="ITLM needs a non-empty training set: the training dataloader's dataset "
                                         "has 0 samples"):
        trainer.fit(TinyModel(), train_dataloaders=DataLoader(empty, batch_size=4))


def test_plot_without_logger_or_plot_dir_says_so(tmp_path, monkeypatch):
    said = []
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    fit(tmp_path, ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False))
    assert said == ["ITLM: no score plot written (`plot=True`, but no logger and no `plot_dir`)."]
    fit(tmp_path, ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False, plot=False))
    assert len(said) == 1


# ---------------------------------------------------------------- output: one line per round, the table once
def test_verbose_prints_a_line_per_round_and_the_table_once(tmp_path, capsys):
    itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], verbose=True, plot=False)
    fit(tmp_path, itlm)
    out = capsys.readouterr().out
    for r in range(3):
        assert out.count(f"ITLM round {r}/2: 1 epoch on ") == 1
    assert out.count("ITLM rounds") == 1  # the whole table, once, at fit end
    assert out.index("ITLM round 2/2") < out.index("ITLM rounds")
    assert out.count("144/240") == 2 + 2  # rounds 1 and 2: once in their line, once in the table


def test_quiet_prints_nothing(tmp_path, capsys):
    fit(tmp_path, ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False, plot=False))
    assert "ITLM" not in capsys.readouterr().out
