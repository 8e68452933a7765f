"""A yes/no decision for new samples: `anomaly_threshold` against a slow reference, and the detectors'
`fit_threshold` / `predict_anomaly` (defaults, bad input, checkpoints)."""

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import RCA, IndexedDataset, RealNVP, RobustRealNVP, TwoMoonsAnomalyDataModule, anomaly_threshold
from tests.conftest import tiny_trainer


def slow_threshold(scores: list[float], contamination: float) -> float:
    """Sort (NaN/inf last), keep floor((1 - c) n) (at least 1), return the largest kept."""
    n = len(scores)
    kept = max(1, math.floor(round((1 - contamination) * n, 9)))
    ranked = sorted(scores, key=lambda v: (not math.isfinite(v), v if math.isfinite(v) else 0.0))
    return ranked[kept - 1]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("contamination", [0.0, 0.05, 0.1, 0.29, 0.49])
def test_threshold_matches_the_slow_reference(seed, contamination):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 60, (1,), generator=g))
    scores = torch.randint(0, 8, (n,), generator=g).double() / 2  # many ties
    if seed % 2:
        scores[torch.randperm(n, generator=g)[: n // 10]] = math.nan  # a few non-finite, ranked above the rest
    want = slow_threshold(scores.tolist(), contamination)
    if not math.isfinite(want):
        with pytest.raises(ValueError, match=r"`scores`: \d+ of \d+ are NaN or infinite"):
            anomaly_threshold(scores, contamination)
        return
    t = anomaly_threshold(scores, contamination)
    assert t == want
    flagged = ~(scores <= t)
    # without ties at the threshold it flags exactly the samples a trim at that rate drops
    if int((scores == t).sum()) == 1:
        assert int(flagged.sum()) == n - max(1, math.floor(round((1 - contamination) * n, 9)))


def test_threshold_of_the_docstring_and_of_all_non_finite_but_one():
    assert anomaly_threshold([0.5, 9.0, 1.0, 2.0, 1.5], 0.2) == 2.0
    assert anomaly_threshold([0.5, 9.0, 1.0, 2.0, 1.5], 0.0) == 9.0  # nothing of the training data flagged
    assert anomaly_threshold(torch.tensor([3.0, math.inf, math.nan]), 0.4) == 3.0  # floor(0.6 * 3) = 1 kept


@pytest.mark.parametrize(("value", "message"), [
    (0.5, r"`contamination` must be a number in \[0, 0.5\), got 0.5\.$"),
    (-0.1, r"`contamination` must be a number in \[0, 0.5\), got -0.1\.$"),
    (5, r"got 5\. It is a fraction, not a percent: for 5 % pass contamination=0\.05\."),
    ("auto", r"`contamination` must be a number in \[0, 0.5\), got 'auto'\."),
])
def test_bad_contamination_is_named(value, message):
    with pytest.raises(ValueError, match=message):
        anomaly_threshold([1.0, 2.0], value)
    with pytest.raises(ValueError, match=message):
        RealNVP(2, n_couplings=2, hidden=4).fit_threshold(torch.zeros(4, 2), value)
    with pytest.raises(ValueError, match="`scores` must hold at least one score, got none"):
        anomaly_threshold([], 0.1)


def test_contamination_as_a_numpy_float_or_a_0d_tensor_is_a_number():
    """A PyOD user's `contamination=y.float().mean()` (a 0-d tensor) or a numpy float32 was refused as "must be a
    number in [0, 0.5), got tensor(0.1000)" although `drop_ratio` takes them: they are read as the number they hold
    (float32's shortest decimal, so 0.1 flags 1 of 10 as 0.1 does)."""
    import numpy as np

    scores = torch.arange(10.0)
    for value in (np.float32(0.1), torch.tensor(0.1), np.float64(0.1)):
        assert anomaly_threshold(scores, value) == anomaly_threshold(scores, 0.1) == 8.0
    model = RealNVP(2, n_couplings=2, hidden=4)
    model.fit_threshold(torch.zeros(4, 2), torch.tensor(0.25))
    assert model.threshold_contamination == 0.25 and type(model.threshold_contamination) is float
    with pytest.raises(ValueError, match=r"`contamination` must be a number in \[0, 0.5\), got tensor\(\[0.1000\]\)"):
        anomaly_threshold(scores, torch.tensor([0.1]))  # one per sample is not a rate


def test_score_dataset_takes_a_tensor_refuses_rows_and_empty_data():
    """`score_dataset` (PyOD's `decision_scores_`) iterated a tensor row by row ("expects inputs of shape (2,)... Set
    `dim`") and a DataFrame by column name ("got a int"), and empty data ended in torch.cat's "expected a non-empty
    list of Tensors": a tensor is scored as `fit_threshold` scores one, the others are named."""
    import numpy as np
    import pandas as pd

    torch.manual_seed(0)
    model = RealNVP(2, n_couplings=2, hidden=4).eval()
    x = torch.randn(5, 2)
    scores, targets = model.score_dataset(x)
    assert torch.equal(scores, model.score_dataset(DataLoader(TensorDataset(x), batch_size=2))[0]) and targets is None
    for rows, kind in ((x.numpy(), "numpy.ndarray"), (pd.DataFrame(x.numpy()), r"pandas\.(core\.frame\.)?DataFrame")):
        with pytest.raises(TypeError, match=rf"RealNVP.score_dataset: `loader` must be a DataLoader or a float32 "
                                            rf"tensor \[n, 2\] of samples, got {kind}: convert it"):
            model.score_dataset(rows)
    for empty in (x[:0], DataLoader(TensorDataset(x[:0]), batch_size=2)):
        with pytest.raises(ValueError, match=r"RealNVP.score_dataset: `loader` must hold at least one sample, "
                                             r"got none"):
            model.score_dataset(empty)
        with pytest.raises(ValueError, match=r"RealNVP.fit_threshold: `data` must hold at least one sample, got none"):
            model.fit_threshold(empty, 0.1)
    assert np.isfinite(model.fit_threshold(x, 0.2))


@pytest.fixture(scope="module")
def moons():
    x, flag = TwoMoonsAnomalyDataModule(n_train=400, contamination=0.1, anomalies="uniform", seed=3).build()[:2]
    return x, flag


def _fit(model, moons, tmp_path, epochs=3, **kw):
    x, flag = moons
    loader = DataLoader(IndexedDataset(TensorDataset(x, flag.long()), corrupted=flag.bool()), batch_size=64,
                        shuffle=True)
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, epochs, **kw).fit(model, loader)
    return loader


def test_fit_threshold_defaults_to_the_drop_ratio_and_flags_that_share_of_the_training_data(tmp_path, moons):
    model = RobustRealNVP(2, n_couplings=2, hidden=16, drop_ratio=0.1)
    loader = _fit(model, moons, tmp_path)
    t = model.fit_threshold(loader)  # the shuffled training loader, sorted back by index
    scores = model.score_dataset(loader)[0]
    assert (model.threshold, model.threshold_contamination) == (t, 0.1)
    assert t == slow_threshold(scores.tolist(), 0.1)
    assert int((scores > t).sum()) == 400 - 360
    # the tensor form scores the same samples alike
    assert model.fit_threshold(moons[0]) == t
    # new samples: decided by the same threshold, not by their own batch's quantile
    x_new = torch.tensor([[0.0, 0.25], [8.0, 8.0], [math.nan, 0.0]])
    with torch.no_grad():
        want = model.eval().anomaly_score(x_new[:2]) > t
    assert model.predict_anomaly(x_new)[:2].tolist() == want.tolist()
    assert model.predict_anomaly(x_new)[1] and model.predict_anomaly(x_new)[2]  # far away, and NaN: anomalous
    assert model.fit_threshold(loader, contamination=0.0) == float(scores.max())


def test_auto_uses_the_fits_estimate_and_a_model_without_a_rate_asks_for_one(tmp_path, moons):
    auto = RealNVP(2, n_couplings=2, hidden=16, drop_ratio="auto", warmup_epochs=2)
    with pytest.raises(ValueError, match=r"`contamination` must be given: RealNVP\(drop_ratio='auto'\) has no "
                                         r"estimate yet"):
        auto.fit_threshold(moons[0])
    _fit(auto, moons, tmp_path)
    assert auto.estimated_corruption is not None
    auto.fit_threshold(moons[0])
    assert auto.threshold_contamination == auto.estimated_corruption
    plain = RealNVP(2, n_couplings=2, hidden=16)
    with pytest.raises(ValueError, match=r"`contamination` must be given \(a number in \[0, 0.5\), .*RealNVP "
                                         r"trained with drop_ratio=0.0, which names none, got None"):
        plain.fit_threshold(moons[0])
    with pytest.raises(RuntimeError, match=r"RealNVP.predict_anomaly needs a threshold: call "
                                           r"`model.fit_threshold\(train_loader\)`"):
        plain.predict_anomaly(moons[0])
    assert plain.fit_threshold(moons[0], 0.1) == slow_threshold(plain.score_dataset(
        DataLoader(TensorDataset(moons[0], moons[1])))[0].tolist(), 0.1)


@pytest.mark.parametrize("make", [lambda: RobustRealNVP(2, n_couplings=2, hidden=16, drop_ratio=0.1),
                                  lambda: RCA(2, hidden=16, latent=1, drop_ratio=0.1, test_passes=3)],
                         ids=["RobustRealNVP", "RCA"])
def test_the_threshold_travels_in_a_checkpoint_saved_after_it(tmp_path, moons, make):
    model = make()
    trainer = tiny_trainer(tmp_path, 2)
    x, flag = moons
    pl.seed_everything(0, verbose=False)
    trainer.fit(model, DataLoader(IndexedDataset(TensorDataset(x, flag.long())), batch_size=64))
    trainer.save_checkpoint(tmp_path / "before.ckpt")
    torch.manual_seed(0)
    t = model.fit_threshold(x)
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    loaded = type(model).load_from_checkpoint(tmp_path / "after.ckpt")
    assert (loaded.threshold, loaded.threshold_contamination) == (t, 0.1)
    torch.manual_seed(1)
    mine = model.predict_anomaly(x)
    torch.manual_seed(1)
    assert torch.equal(loaded.predict_anomaly(x), mine) and 0 < int(mine.sum()) < len(x)
    assert type(model).load_from_checkpoint(tmp_path / "before.ckpt").threshold is None  # saved before it was set


def test_new_samples_without_a_target_are_scored_and_predicted(tmp_path):
    """Production rows have no target: a loader over a tensor, or over `TensorDataset(x)` (1-tuples), is scored
    (an anomaly newcomer's were refused as "a list of length 1"); `predict` writes their scores by position."""
    from lit_robust import PredictionWriter

    torch.manual_seed(0)
    model = RealNVP(2, n_couplings=2, hidden=4).eval()
    x = torch.randn(10, 2)
    with torch.no_grad():
        want = model.anomaly_score(x)
    for loader in (DataLoader(x, batch_size=4), DataLoader(TensorDataset(x), batch_size=4)):
        scores, targets = model.score_dataset(loader)
        assert torch.allclose(scores, want) and targets is None
    writer = PredictionWriter(dirpath=str(tmp_path))
    tiny_trainer(tmp_path, 1, [writer]).predict(model, DataLoader(TensorDataset(x), batch_size=4))
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "index,prediction" and len(rows) == 11
    assert [round(float(r.split(",")[1]), 4) for r in rows[1:]] == [round(v, 4) for v in want.tolist()]


def test_predict_sets_a_threshold_at_the_models_rate_and_predictions_csv_decides(tmp_path, one_torch_thread):
    """A table newcomer found no way from `lit-robust predict` to a yes/no for new rows (PyOD's `predict`): the
    scores only, and `fit_threshold` from Python alone."""
    from lit_robust import PredictionWriter

    pl.seed_everything(0, verbose=False)
    data = TwoMoonsAnomalyDataModule(n_train=200, n_test=40, batch_size=50)
    model = RobustRealNVP(dim=2, hidden=8, n_couplings=2, drop_ratio=0.1)
    tiny_trainer(tmp_path, 1).fit(model, data)
    assert model.threshold is None  # not set by the fit
    writer = PredictionWriter(dirpath=str(tmp_path / "p"))
    tiny_trainer(tmp_path, 1, [writer]).predict(model, data)
    train_scores = model.score_dataset(data.train_dataloader())[0]
    assert model.threshold == anomaly_threshold(train_scores, 0.1) and model.threshold_contamination == 0.1
    import csv

    rows = list(csv.DictReader(open(writer.path)))
    assert list(rows[0]) == ["index", "prediction", "predicted_anomaly", "target"]
    assert [int(r["predicted_anomaly"]) for r in rows] == [int(not float(r["prediction"]) <= model.threshold)
                                                           for r in rows]
    assert 0 < sum(int(r["predicted_anomaly"]) for r in rows) < len(rows)

    # a threshold of your own is kept; a model that names no rate, or no training rows, writes the scores alone
    model.threshold = 1e9
    tiny_trainer(tmp_path, 1, [writer]).predict(model, data)
    assert model.threshold == 1e9 and {r["predicted_anomaly"] for r in csv.DictReader(open(writer.path))} == {"0"}
    plain = RealNVP(dim=2, hidden=8, n_couplings=2)  # drop_ratio=0
    tiny_trainer(tmp_path, 1, [writer]).predict(plain, data)
    assert plain.threshold is None and "predicted_anomaly" not in next(csv.DictReader(open(writer.path)))
    fresh = RobustRealNVP(dim=2, hidden=8, n_couplings=2, drop_ratio=0.1)
    tiny_trainer(tmp_path, 1, [writer]).predict(fresh, data.test_dataloader())  # no datamodule: no training rows
    assert fresh.threshold is None and "predicted_anomaly" not in next(csv.DictReader(open(writer.path)))


def _clean_loader(n: int = 256) -> DataLoader:
    """Gaussian rows without anomalies: `drop_ratio="auto"` estimates 0 on them."""
    return DataLoader(IndexedDataset(TensorDataset(torch.randn(n, 3), torch.zeros(n, dtype=torch.long))), batch_size=64)


@pytest.mark.parametrize("make", [lambda: RCA(3, hidden=8, latent=2, drop_ratio="auto", warmup_epochs=1),
                                  lambda: RobustRealNVP(3, n_couplings=2, hidden=8, drop_ratio="auto",
                                                        warmup_epochs=1)], ids=["RCA", "RobustRealNVP"])
def test_fit_threshold_warns_when_auto_estimated_no_anomalies(tmp_path, make, recwarn, one_torch_thread):
    """A newcomer's RCA with `"auto"` on breast cancer (10 % malignant) estimated 0; `fit_threshold` then set the
    largest training score without a word and flagged 2 of 207 test rows, 100 of them malignant."""
    pl.seed_everything(0, verbose=False)
    model, loader = make(), _clean_loader()
    tiny_trainer(tmp_path, 2).fit(model, loader)
    assert model.estimated_corruption == 0.0
    name = type(model).__name__
    recwarn.clear()
    with pytest.warns(UserWarning, match=rf"^{name}.fit_threshold: `contamination` was not given, so it is the "
                                         r"`drop_ratio='auto'` estimate, 0: the threshold is the largest training "
                                         r"score and flags almost nothing\. Pass the share of anomalies you expect in "
                                         r"`data`, a number in \[0, 0.5\): `fit_threshold\(data, contamination=0.05\)`") as caught:
        model.fit_threshold(loader)
    assert len([w for w in caught if "fit_threshold" in str(w.message)]) == 1  # once per call
    assert model.threshold == float(model.score_dataset(loader)[0].max()) or name == "RCA"  # RCA's dropout passes
    recwarn.clear()
    model.fit_threshold(loader, contamination=0.0)  # asked for: no warning
    model.fit_threshold(loader, contamination=0.1)
    assert not [w for w in recwarn if "fit_threshold" in str(w.message)]


def test_predict_says_why_predictions_csv_has_no_decision(tmp_path, monkeypatch, one_torch_thread):
    """`lit-robust predict` after an `"auto"` fit that estimated 0 left `predicted_anomaly` out of predictions.csv
    without a word (the flow's estimate was not even restored from the checkpoint under `trainer.predict`)."""
    from lit_robust import PredictionWriter

    said = []
    monkeypatch.setattr("lit_robust.anomaly.base.rank_zero_info", said.append)
    pl.seed_everything(0, verbose=False)
    loader = _clean_loader()
    data = pl.LightningDataModule.from_datasets(train_dataset=loader.dataset, predict_dataset=loader.dataset,
                                                batch_size=64)
    model = RobustRealNVP(3, n_couplings=2, hidden=8, drop_ratio="auto", warmup_epochs=1)
    trainer = tiny_trainer(tmp_path, 2)
    trainer.fit(model, loader)
    trainer.save_checkpoint(tmp_path / "auto.ckpt")
    fresh = RobustRealNVP(3, n_couplings=2, hidden=8, drop_ratio="auto", warmup_epochs=1)
    writer = PredictionWriter(dirpath=str(tmp_path / "p"))
    tiny_trainer(tmp_path, 1, [writer]).predict(fresh, data, ckpt_path=tmp_path / "auto.ckpt")  # as the CLI does
    assert fresh.estimated_corruption == 0.0 and fresh.threshold is None  # the fit's estimate, restored
    assert "predicted_anomaly" not in (tmp_path / "p" / "predictions.csv").read_text().splitlines()[0]
    fix = (". Set one in Python with `model.fit_threshold(train_loader, contamination=...)` (the share of anomalies in "
           "those rows, in [0, 0.5)), save a checkpoint after it (`trainer.save_checkpoint`) and predict from that "
           "checkpoint.")
    why = "RobustRealNVP: no threshold, so the predictions have no `predicted_anomaly` column: "
    assert said == [why + "`drop_ratio='auto'` estimated 0 anomalies in training, and a threshold at that rate, the "
                    "largest training score, flags almost nothing" + fix]
    said.clear()
    tiny_trainer(tmp_path, 1, [writer]).predict(RealNVP(3, n_couplings=2, hidden=8), data)
    tiny_trainer(tmp_path, 1, [writer]).predict(RobustRealNVP(3, n_couplings=2, hidden=8), loader)
    assert said == [why.replace("Robust", "") + "it trained with drop_ratio=0.0, which names no share of anomalies" + fix,
                    why + "no datamodule with training rows to set it on" + fix]
    said.clear()
    tiny_trainer(tmp_path, 1).predict(RealNVP(3, n_couplings=2, hidden=8), data)  # no predictions.csv: nothing said
    assert said == []
