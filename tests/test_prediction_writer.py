"""PredictionWriter: one CSV row per predicted sample, sorted by index, with the batch's target; a predict_step
returning something else warns and writes nothing; two gloo ranks write the same file as one process."""

import csv
import re
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import PredictionWriter, unpack_batch
from tests.conftest import TinyModel, blobs, ddp_cpu_strategy


class Classifier(TinyModel):
    def predict_step(self, batch, batch_idx):
        return self(unpack_batch(batch).input).argmax(-1)


class Logits(TinyModel):
    def predict_step(self, batch, batch_idx):
        return self(batch[1])


class Other(TinyModel):
    def __init__(self, returns):
        super().__init__()
        self.returns = returns

    def predict_step(self, batch, batch_idx):
        return {"dict": {"logits": self(batch[1])}, "none": None, "3d": self(batch[1])[:, None, :]}[self.returns]


def _trainer(writer, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, callbacks=[writer], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, **kwargs)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.filterwarnings("ignore:.*sampler has shuffling enabled")
def test_rows_sorted_by_index_with_class_ids_and_targets(tmp_path, one_torch_thread):
    data = blobs(50)
    loader = DataLoader(data, batch_size=16, shuffle=True)  # shuffled: the file is sorted anyway
    writer = PredictionWriter(dirpath=str(tmp_path))
    model = Classifier()
    _trainer(writer).predict(model, loader)
    assert writer.path == str(tmp_path / "predictions.csv") and writer.problem is None
    rows = _rows(writer.path)
    assert list(rows[0]) == ["index", "prediction", "target"]
    x, _ = data.dataset.tensors
    with torch.no_grad():
        argmax = model(x).argmax(1).tolist()
    assert [int(r["index"]) for r in rows] == list(range(50))
    assert [int(r["prediction"]) for r in rows] == argmax
    assert [int(r["target"]) for r in rows] == data.targets.tolist()  # the (noisy) labels the batches carry


def test_vector_outputs_get_one_column_each_at_full_precision(tmp_path, one_torch_thread):
    data = blobs(20)
    writer = PredictionWriter(dirpath=str(tmp_path), filename="logits.csv")
    model = Logits()
    _trainer(writer).predict(model, DataLoader(data, batch_size=8))
    rows = _rows(tmp_path / "logits.csv")
    assert list(rows[0]) == ["index", "prediction_0", "prediction_1", "prediction_2", "target"]
    x = data.dataset.tensors[0]
    with torch.no_grad():  # batch by batch, as predict ran (a matmul's last bits depend on the batch's size)
        logits = torch.cat([model(x[i:i + 8]) for i in range(0, 20, 8)])
    got = torch.tensor([[float(r[f"prediction_{j}"]) for j in range(3)] for r in rows], dtype=torch.float32)
    assert torch.equal(got, logits)  # the text reads back as the same float32


def test_pairs_without_index_and_several_loaders(tmp_path, one_torch_thread):
    """``(input, target)`` batches: the index Lightning's sampler drew; two loaders: a ``dataloader_idx`` column."""
    x = torch.randn(10, 2)
    pairs = TensorDataset(x, torch.arange(10) % 3)

    class PairModel(TinyModel):
        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch[0]).argmax(-1)

    writer = PredictionWriter(dirpath=str(tmp_path))
    model = PairModel()
    _trainer(writer).predict(model, [DataLoader(pairs, batch_size=4), DataLoader(TensorDataset(x[:3]), batch_size=2)])
    rows = _rows(writer.path)
    assert list(rows[0]) == ["index", "dataloader_idx", "prediction", "target"]
    assert [(int(r["dataloader_idx"]), int(r["index"])) for r in rows] == [(0, i) for i in range(10)] + [(1, i) for i in range(3)]
    with torch.no_grad():
        argmax = model(x).argmax(1).tolist()
    assert [int(r["prediction"]) for r in rows] == argmax + argmax[:3]
    assert [r["target"] for r in rows] == [str(i % 3) for i in range(10)] + ["", "", ""]  # 1-tuples: no target


@pytest.mark.parametrize(("returns", "named"), [("dict", "returned a dict"), ("none", "returned None"),
                                                ("3d", "returned a tensor of shape (8, 1, 3)")])
def test_other_predict_step_outputs_warn_and_write_nothing(returns, named, tmp_path, one_torch_thread):
    writer = PredictionWriter(dirpath=str(tmp_path))
    trainer = _trainer(writer)
    with pytest.warns(UserWarning, match=re.escape(f"no predictions.csv written: `predict_step` {named}")) as rec:
        out = trainer.predict(Other(returns), DataLoader(blobs(20), batch_size=8))
    assert len([w for w in rec if "PredictionWriter" in str(w.message)]) == 1
    assert len(out) == 3  # trainer.predict's own return value is untouched
    assert writer.path is None and named in writer.problem and not list(tmp_path.iterdir())


def test_a_later_predict_that_works_writes_again(tmp_path, one_torch_thread):
    writer = PredictionWriter(dirpath=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(writer).predict(Other("dict"), DataLoader(blobs(20), batch_size=8))
    assert writer.path is None
    _trainer(writer).predict(Classifier(), DataLoader(blobs(20), batch_size=8))
    assert writer.problem is None and len(_rows(writer.path)) == 20


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="`filename` must be a file name ending in '.csv'"):
        PredictionWriter(filename="out/predictions.csv")
    with pytest.raises(ValueError, match="`dirpath` must be a folder path"):
        PredictionWriter(dirpath="")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_ranks_gather_into_one_file_on_rank_0(tmp_path):
    """241 samples over 2 gloo ranks (uneven shards, batches of 50): rank 0 writes every row once, sorted, the
    same file as one process."""
    data = blobs(241)
    pl.seed_everything(0, verbose=False)
    model = Classifier()
    one = PredictionWriter(dirpath=str(tmp_path / "one"))
    _trainer(one).predict(model, DataLoader(data, batch_size=50))
    two = PredictionWriter(dirpath=str(tmp_path / "two"))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), callbacks=[two], logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.predict(model, DataLoader(data, batch_size=50), return_predictions=False)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "two" / "predictions.csv").read_text() == (tmp_path / "one" / "predictions.csv").read_text()
    assert len(_rows(tmp_path / "two" / "predictions.csv")) == 241


def test_ready_made_models_without_a_predict_step_of_their_own_now_have_one(tmp_path, one_torch_thread):
    """LinearRegressor (outputs) and LinearProbe (class ids) used Lightning's default predict_step, `self(batch)`:
    a TypeError on an `(index, input, target)` batch."""
    from lit_robust import LinearProbe, LinearRegressor, SyntheticRegressionDataModule

    dm = SyntheticRegressionDataModule(n=20, dim=4, n_test=30)
    writer = PredictionWriter(dirpath=str(tmp_path))
    model = LinearRegressor(dim=4)
    _trainer(writer).predict(model, datamodule=dm)
    rows = _rows(writer.path)
    x, y = dm.test_set.dataset.tensors
    with torch.no_grad():
        want = model(x).squeeze(1)
    assert torch.equal(torch.tensor([float(r["prediction"]) for r in rows], dtype=torch.float32), want)
    assert torch.equal(torch.tensor([float(r["target"]) for r in rows], dtype=torch.float32), y.squeeze(1))
    probe = LinearProbe(None, num_classes=10).eval()
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(probe.predict_step((torch.arange(5), images, torch.zeros(5, dtype=torch.long)), 0),
                           probe(images).argmax(1))


def test_an_image_folders_predictions_name_each_rows_file_and_classes(tmp_path, one_torch_thread):
    """An image-folder newcomer's predictions.csv had `index,prediction,target` only: over an `IndexedDataset` of
    files (torchvision's `ImageFolder` holds `samples` and `classes`) each row also names its file and classes."""
    from lit_robust import IndexedDataset

    blob = blobs(12)
    x, y = blob.dataset.tensors

    names = ["ant", "bee", "cat"]

    class Folder(torch.utils.data.Dataset):  # an ImageFolder's attributes over the blobs
        classes = names
        samples = [(f"root/{names[int(c)]}/{i:02d}.png", int(c)) for i, c in enumerate(y)]

        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return x[i], int(y[i])

    writer = PredictionWriter(dirpath=str(tmp_path))
    model = Classifier()
    _trainer(writer).predict(model, DataLoader(IndexedDataset(Folder()), batch_size=5))
    rows = _rows(writer.path)
    assert list(rows[0]) == ["index", "path", "prediction", "target", "predicted_class", "target_class"]
    with torch.no_grad():
        argmax = model(x).argmax(1).tolist()
    assert [r["path"] for r in rows] == [p for p, _ in Folder.samples]
    assert [r["predicted_class"] for r in rows] == [Folder.classes[c] for c in argmax]
    assert [r["target_class"] for r in rows] == [Folder.classes[int(c)] for c in y]


def test_a_dirpath_that_cannot_be_written_is_refused_before_predicting(tmp_path):
    """Reviewer: a `dirpath` under a regular file ran the whole predict, then raised a bare NotADirectoryError; it is
    checked at setup, a ValueError naming `dirpath`, before any batch."""
    (tmp_path / "afile").write_text("")
    calls = []

    class Counting(Classifier):
        def predict_step(self, batch, batch_idx):
            calls.append(batch_idx)
            return super().predict_step(batch, batch_idx)

    writer = PredictionWriter(dirpath=str(tmp_path / "afile" / "sub"))
    with pytest.raises(ValueError, match=r"`dirpath` must be a folder predictions.csv can be written into, got "
                                         r"'.*afile/sub' \(NotADirectoryError"):
        _trainer(writer).predict(Counting(), DataLoader(blobs(20), batch_size=8))
    assert calls == []


def test_a_dirpath_with_a_leading_tilde_is_under_the_home_folder(tmp_path, monkeypatch, one_torch_thread):
    """`PredictionWriter(dirpath="~/preds")` wrote into a folder named `~` under the current one, where Lightning's
    `ModelCheckpoint(dirpath)` reads `~` as the home folder."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    writer = PredictionWriter(dirpath="~/preds")
    _trainer(writer).predict(Classifier(), DataLoader(blobs(20), batch_size=8))
    assert writer.path == str(home / "preds" / "predictions.csv") and len(_rows(writer.path)) == 20
    assert not (cwd / "~").exists()
