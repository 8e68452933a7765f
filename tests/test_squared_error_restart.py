"""`"auto"` on one regression target reads the losses with the gmm's restart
(`estimate_corruption(..., squared_errors=True)`): ITLM's, SPL's and the loss-scoring modules'; not PRL(L)'s gradient
norms, nor other data."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lit_robust.callbacks.itlm as itlm_module
import lit_robust.selection.auto_drop as auto_drop_module
from lit_robust import (
    ITLM,
    BatchFilter,
    DigitsDataModule,
    ImageClassifier,
    IndexedDataset,
    MLPRegressor,
    RealNVP,
    RobustMixin,
    TableDataModule,
    estimate_corruption,
)
from lit_robust._backend import pl
from lit_robust.data.indexed import unpack_batch
from lit_robust.data.spec import DataSpec, one_target_regression
from lit_robust.functional import estimation
from lit_robust.report import build_report
from tests.conftest import ddp_cpu_strategy, fit_ranks, glitched_energy_table

pd = pytest.importorskip("pandas")


def _diabetes_with_shifted_targets(seed: int):
    """scikit-learn's Diabetes table, 20 % of its training targets shifted by +-3 SD (a newcomer's case)."""
    from sklearn.datasets import load_diabetes

    df = load_diabetes(as_frame=True).frame.rename(columns={"target": "y"})
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(df))
    n_test = len(df) // 5
    test_df, train_df = (df.iloc[perm[:n_test]].reset_index(drop=True),
                         df.iloc[perm[n_test:]].reset_index(drop=True))
    bad = rng.random(len(train_df)) < 0.2
    train_df.loc[bad, "y"] = train_df.loc[bad, "y"] + rng.choice([-1, 1], bad.sum()) * 3 * train_df["y"].std()
    train_df["is_bad"] = bad
    return train_df, test_df, float(bad.mean())


def _trainer(callback: ITLM, epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)


@pytest.fixture
def quiet():
    for name in ("pytorch_lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("seed", [0, 1])
def test_diabetes_with_shifted_targets_is_estimated_not_read_as_clean(one_torch_thread, quiet, seed):
    """Diabetes, 20 % (seed 0: 20.1 %; seed 1: 16.4 %) of the targets shifted by 3 SD, `MLPRegressor`, ITLM auto
    after a round of 10 epochs: without the restart the gmm's first fit was refused by its majority rule and the
    estimate read 0 on both seeds (measured); with it, 16.9 % and 12.8 %."""
    train_df, test_df, true_rate = _diabetes_with_shifted_targets(seed)
    pl.seed_everything(0)
    data = TableDataModule(frame=train_df, target="y", task="regression", corrupted="is_bad", test_frame=test_df)
    itlm = ITLM(keep_ratio="auto", round_epochs=[10, 1], verbose=False, plot=False)
    _trainer(itlm, 11).fit(MLPRegressor(), data)
    estimate = itlm.history[1].estimated_corruption
    assert estimate is not None and abs(estimate - true_rate) <= 0.05, (estimate, true_rate)


def test_the_reports_clean_posterior_follows_squared_errors():
    """`build_report(..., squared_errors=True)` (what ITLM passes on a regression datamodule) gives the restarted
    gmm's posteriors; without it, these squared residuals read all clean (seed 7: one of the 10 seeds 0-9 on which
    EM's three starts still end in the refused fit; on the others they find the split themselves)."""
    g = torch.Generator().manual_seed(7)
    scores = torch.cat([torch.randn(160, dtype=torch.float64, generator=g) ** 2,
                        (4.0 + torch.randn(40, dtype=torch.float64, generator=g)) ** 2])
    index, kept = torch.arange(200), torch.ones(200, dtype=torch.bool)
    on = build_report(index, scores, kept, score_columns=["score"], squared_errors=True)
    off = build_report(index, scores, kept, score_columns=["score"])
    expected = estimate_corruption(scores, squared_errors=True)
    assert expected.reason == "two components (EM restarted from the top scores)"
    by_index = dict(zip(on["index"], on["clean_posterior"]))
    assert [by_index[i] for i in range(200)] == pytest.approx(expected.clean_posterior.tolist(), abs=1e-12)
    assert set(off["clean_posterior"]) == {1.0}


def _spy(monkeypatch, module=itlm_module) -> list[bool]:
    """Record the `squared_errors` of each estimate `module` (ITLM's, or the filters' `auto_drop`) makes."""
    calls: list[bool] = []
    real = module.estimate_corruption

    def spy(scores, method="gmm", **kw):
        calls.append(kw.get("squared_errors", False))
        return real(scores, method, **kw)

    monkeypatch.setattr(module, "estimate_corruption", spy)
    return calls


def _diabetes_data() -> TableDataModule:
    train_df, test_df, _ = _diabetes_with_shifted_targets(0)
    pl.seed_everything(0)
    return TableDataModule(frame=train_df, target="y", task="regression", corrupted="is_bad", test_frame=test_df)


@pytest.mark.parametrize("estimator, restarts", [("gmm", True), ("disagreement", True), ("bmm", False)])
def test_the_restart_is_used_for_one_regression_target(one_torch_thread, quiet, monkeypatch, estimator, restarts):
    """With the gmm, asked for by name or the default's fall-back (no class labels); not with the bmm, whose fit the
    pure function refuses to restart."""
    calls = _spy(monkeypatch)
    _trainer(ITLM(keep_ratio="auto", round_epochs=[1, 1], estimator=estimator, verbose=False, plot=False), 2).fit(
        MLPRegressor(), _diabetes_data())
    assert calls == [restarts]


def test_the_restart_reads_the_training_set_without_a_datamodule_and_skips_a_classifier(one_torch_thread, quiet,
                                                                                       monkeypatch):
    calls = _spy(monkeypatch)
    data = _diabetes_data()
    data.setup("fit")
    _trainer(ITLM(keep_ratio="auto", round_epochs=[1, 1], verbose=False, plot=False), 2).fit(
        MLPRegressor(in_features=data.data_spec.input_shape[0], out_features=1),
        train_dataloaders=data.train_dataloader())
    assert calls == [True]  # plain loaders: the training set's float targets say it
    # a classifier's losses, the gmm asked for by name: no restart
    calls.clear()
    pl.seed_everything(0)
    digits = DigitsDataModule(clean_ratio=0.7, noise="random", val_size=0, batch_size=64, seed=0)
    _trainer(ITLM(keep_ratio="auto", round_epochs=[1, 1], estimator="gmm", verbose=False, plot=False), 2).fit(
        ImageClassifier(backbone="mlp", image_size=8), digits)
    assert calls == [False]


def test_one_target_regression_reads_the_spec_or_the_targets():
    regression = DataSpec("D", (10,), "regression", target_dim=1)
    assert one_target_regression(regression, None)
    assert not one_target_regression(DataSpec("L", (784,), "regression", target_dim=10), None)  # mean of 10 squares
    assert not one_target_regression(DataSpec("M", (1, 28, 28), "class", num_classes=10), torch.rand(5, 1))
    assert one_target_regression(None, torch.tensor([0.5, -1.0, 2.0]))
    assert one_target_regression(None, torch.tensor([[0.5], [2.0]]))
    assert not one_target_regression(None, torch.tensor([[0.5, 1.0], [2.0, 0.1]]))  # two targets (or soft labels)
    assert not one_target_regression(None, torch.tensor([0, 2, 1]))  # class labels
    assert not one_target_regression(None, torch.tensor([0.0, 1.0, 1.0]))  # a binary classifier's float labels
    assert not one_target_regression(None, torch.zeros(4))  # placeholders
    assert not one_target_regression(None, torch.tensor([0.5, 2.0]), reported=False)
    assert not one_target_regression(None, None) and not one_target_regression(None, [0.5, 2.0])


def _friedman_uniform(seed: int):
    """Friedman1 (2,000 rows, noise 1.0), 25 % of the training targets replaced by uniform values over their range."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=2000, noise=1.0, random_state=seed)
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
    df["y"] = y
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(df))
    test_df, train_df = df.iloc[perm[:400]].reset_index(drop=True), df.iloc[perm[400:]].reset_index(drop=True)
    bad = rng.random(len(train_df)) < 0.25
    train_df.loc[bad, "y"] = rng.uniform(train_df["y"].min(), train_df["y"].max(), bad.sum())
    train_df["is_bad"] = bad
    return TableDataModule(frame=train_df, target="y", task="regression", corrupted="is_bad", test_frame=test_df)


@pytest.mark.parametrize(("seed", "low"), [(0, 0.05), (1, 0.10)])
@pytest.mark.parametrize("reestimate", [False, None])
def test_spl_auto_on_uniform_target_noise_is_not_read_as_clean(one_torch_thread, quiet, seed, low, reestimate):
    """Friedman1 with 25.6 / 27.0 % of its targets uniform noise, `BatchFilter("spl", drop_ratio="auto")`, its
    3-epoch warm-up: without the restart the estimate was 0 on both seeds (measured), with it 7.5 and 13.2 %, the
    median of epochs 1 and 2 fixed at the end of warm-up (`reestimate=False`). Re-made in epoch 3 (`None`, the default
    on one regression target) it reads 0 on both seeds, a 4-epoch fit's model having begun to drop; the vote keeps
    epoch 2's positive estimate in force (2 of the 3 estimates after epoch 0 are positive): 8.4 and 16.3 %. With the
    latest epoch's estimate in force, as first shipped, the fit ended on 0."""
    data = _friedman_uniform(seed)
    pl.seed_everything(0)
    spl = BatchFilter("spl", drop_ratio="auto", reestimate=reestimate)
    _trainer(spl, 4).fit(MLPRegressor(), data)
    assert low <= spl.estimated_corruption <= 0.27, spl.estimated_corruption
    if reestimate is None:
        assert spl._auto.estimates[3] == 0.0 and spl.estimated_corruption == spl._auto.estimates[2]


def _filter_spy(monkeypatch) -> list[bool]:
    return _spy(monkeypatch, auto_drop_module)


@pytest.mark.parametrize("rule", ["spl", "prl"])
def test_the_filters_restart_on_losses_of_one_regression_target(one_torch_thread, quiet, monkeypatch, rule):
    """SPL's scores are the squared losses; PRL(L)'s, with the MSE layer on one target, the norms 2 |y_hat - y|, whose
    squares it estimates from since 2026-12-07 (a regression newcomer's PRL(L) "auto" read the 999 sentinels alone):
    both restart. A classifier's gradient norms do not (below: there the restart read clean FashionMNIST as 15 %
    corrupted). One estimate per warm-up epoch."""
    calls = _filter_spy(monkeypatch)
    _trainer(BatchFilter(rule, drop_ratio="auto", warmup_epochs=2), 2).fit(MLPRegressor(), _diabetes_data())
    assert calls == [True, True]


def test_the_filters_do_not_restart_on_a_classifier_or_a_flow(one_torch_thread, quiet, monkeypatch):
    calls = _filter_spy(monkeypatch)
    pl.seed_everything(0)
    digits = DigitsDataModule(clean_ratio=0.7, noise="random", val_size=0, batch_size=64, seed=0)
    _trainer(BatchFilter("spl", drop_ratio="auto", warmup_epochs=1, estimator="gmm"), 1).fit(
        ImageClassifier(backbone="mlp", image_size=8), digits)
    assert calls == [False]
    calls.clear()  # a classifier's PRL(L) gradient norms neither
    pl.seed_everything(0)
    _trainer(BatchFilter("prl", drop_ratio="auto", warmup_epochs=1, estimator="gmm"), 1).fit(
        ImageClassifier(backbone="mlp", image_size=8), digits)
    assert calls == [False]
    # a flow's -log p on plain loaders, its targets placeholders: RealNVP's own SPL filter does not restart
    calls.clear()
    points = IndexedDataset(TensorDataset(torch.randn(256, 2), torch.zeros(256)))
    flow = RealNVP(2, n_couplings=2, hidden=16, drop_ratio="auto", warmup_epochs=1)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(flow, DataLoader(points, batch_size=64))
    assert calls == [False]


@pytest.mark.parametrize(("rule", "loss", "restarts"), [("spl", None, True), ("prl", "mse", True),
                                                         ("prl", lambda o, y: (o - y).abs().squeeze(-1), False)])
def test_coteaching_restarts_on_its_losses_only(one_torch_thread, quiet, monkeypatch, rule, loss, restarts):
    """Co-teaching's scores are the two networks' losses; Co-PRL(L)'s with the MSE layer on one target the norms
    2 |y_hat - y|, estimated from their squares (since 2026-12-07); with a loss of one's own, gradient norms of
    unknown form: not restarted."""
    from lit_robust import CoTeaching

    calls = _filter_spy(monkeypatch)
    data = _diabetes_data()
    data.setup("fit")
    co = CoTeaching(MLPRegressor(in_features=data.data_spec.input_shape[0], out_features=1), rule=rule,
                    drop_ratio="auto", warmup_epochs=1, loss=loss)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(co, data)
    assert calls == [restarts]


# ---------------------------------------------------------------- DDP: the restarted estimate at 1, 2 and 3 ranks
class FixedSquaredErrors(RobustMixin, pl.LightningModule):
    """A one-target regressor whose per-sample loss is a fixed squared residual per dataset index (plus 0 x its
    output, so that it trains): the estimate depends on the gathered scores alone, not on how the ranks trained."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("fixed", scores.float())
        self.lin = torch.nn.Linear(1, 1)

    def per_sample_loss(self, batch):
        b = unpack_batch(batch)
        out = self.lin(b.input).reshape(-1)
        return self.fixed[b.index] + 0.0 * out, out

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class OneTargetData(pl.LightningDataModule):
    def __init__(self, n: int = 241) -> None:  # 241: uneven shards at 2 and 3 ranks
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.ds = IndexedDataset(TensorDataset(torch.randn(n, 1, generator=g), torch.randn(n, generator=g)))

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=32, shuffle=True)


class RecordEstimate(pl.Callback):
    def __init__(self, itlm: ITLM, out: str) -> None:
        self.itlm, self.out = itlm, out

    def on_fit_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            with open(self.out, "w") as f:
                json.dump([(r.kept, r.estimated_corruption) for r in self.itlm.history], f)


def _ddp_estimate(tmp_path, devices: int, scores: torch.Tensor) -> list:
    out = str(tmp_path / f"ws{devices}.json")
    kw = {"strategy": ddp_cpu_strategy()} if devices > 1 else {}

    def make():
        itlm = ITLM("auto", [1, 1], verbose=False, plot=False)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=devices,
                             callbacks=[itlm, RecordEstimate(itlm, out)], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, deterministic=True, **kw)
        return trainer, FixedSquaredErrors(scores), OneTargetData(len(scores))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_ranks(make)
    with open(out) as f:
        return json.load(f)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_restarted_estimate_is_the_same_for_any_world_size(tmp_path):
    """Squared residuals whose first fit the majority rule refuses (0 without the restart; seed 7, as EM's three
    starts end in that fit): 1, 2 and 3 ranks estimate what the pure function does on all 241 scores, restarted, and
    keep the same count."""
    from tests.test_estimation import squared_residuals

    scores = squared_residuals(241, seed=7)
    expected = estimate_corruption(scores.float(), squared_errors=True)
    assert expected.reason == "two components (EM restarted from the top scores)"
    assert estimate_corruption(scores.float()).rate == 0.0
    one = _ddp_estimate(tmp_path, 1, scores)
    assert one[1][1] == pytest.approx(expected.rate, abs=1e-12)
    for devices in (2, 3):
        assert _ddp_estimate(tmp_path, devices, scores) == one, devices


class _PairsOnly(torch.utils.data.Dataset):
    """A Dataset of its own: its targets cannot be read without loading the samples."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class _SaysRegression(pl.LightningDataModule):
    """A user's datamodule over such a Dataset, saying what it yields with `lit_robust.DataSpec`."""

    data_spec = DataSpec("SaysRegression", (1,), "regression", target_dim=1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(IndexedDataset(_PairsOnly(torch.randn(64, 1, generator=g), torch.randn(64, generator=g))),
                          batch_size=16)


def test_a_datamodule_of_ones_own_opts_in_with_its_data_spec(one_torch_thread, quiet, monkeypatch):
    """The docs' way for a Dataset whose targets cannot be read: the datamodule's `data_spec` says one regression
    target, and ITLM restarts; without it, it cannot tell, and does not."""
    calls = _spy(monkeypatch)
    model = FixedSquaredErrors(torch.rand(64))
    _trainer(ITLM(keep_ratio="auto", round_epochs=[1, 1], verbose=False, plot=False), 2).fit(model, _SaysRegression())
    assert calls == [True]
    calls.clear()
    _trainer(ITLM(keep_ratio="auto", round_epochs=[1, 1], verbose=False, plot=False), 2).fit(
        FixedSquaredErrors(torch.rand(64)), _SaysRegression().train_dataloader())
    assert calls == [False]


def test_glitched_meter_readings_are_dropped_by_itlm_auto(one_torch_thread, quiet):
    """Friedman1 targets read as kWh (2,000 rows, a fifth held out), 25 % of the training readings glitched in equal
    parts to 0, 9999 or +150 (benchmarks/newcomer_tables.py's energy table, seed 0). Round 0's model has learnt little
    (its loss is the 9999 rows'), the 9999 rows lie far beyond the rest, and the fit to all scores found one component:
    `"auto"` read 0 and the final model trained on them (test RMSE 893 kWh with rounds [10, 10, 10, 30]). They are
    counted as corrupted now and dropped (RMSE 13.1 kWh; 1.5-1.7 at the true rate)."""
    train, test, glitched_share = glitched_energy_table(seed=0)
    pl.seed_everything(0)
    data = TableDataModule(frame=train, target="kwh", task="regression", corrupted="is_bad", test_frame=test, seed=0)
    itlm = ITLM(keep_ratio="auto", round_epochs=[10, 1], seed=0, verbose=False, plot=True)
    _trainer(itlm, 11).fit(MLPRegressor(), data)
    estimate = itlm.history[1].estimated_corruption
    assert estimate == pytest.approx(glitched_share, abs=1e-9), estimate
    scores, kept = itlm.score_history[0]["scores"], itlm.score_history[0]["kept"]
    glitched = scores > 1e6  # the 9999 readings' squared errors; nothing else comes near
    assert int(glitched.sum()) == round(glitched_share * len(train)) and not kept[glitched].any()


# -- layers: the squared-error gmm looks again among the scores it read clean --------------------------------------
def _layered_residuals(seed: int, near: float = 6.0, far: float = 1000.0) -> torch.Tensor:
    """Squared residuals of 1,500 clean rows (N(0, 1)), 150 far glitches (about `far`) and 350 nearer ones (about
    `near`): 25 % corrupted, in two layers, as a regression's ×10 targets beside +3 SD and uniform ones."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(1500, dtype=torch.float64, generator=g)
    far_rows = far * (1 + 0.1 * torch.randn(150, dtype=torch.float64, generator=g))
    near_rows = near + torch.randn(350, dtype=torch.float64, generator=g)
    return torch.cat([clean, far_rows, near_rows]) ** 2


def _reference_layers(monkeypatch, scores: torch.Tensor) -> torch.Tensor:
    """The obvious version, in the input order, by public calls: the squared-error gmm without layers, then up to two
    more fits on the scores read clean (posterior >= 1/2), each taken when it finds two components and reads at most a
    quarter of them as corrupted; a sample's posterior is the least of its levels'."""
    with monkeypatch.context() as m:
        m.setattr(estimation, "_MAX_LAYERS", 0)
        first = estimate_corruption(scores, squared_errors=True)
        post = first.clean_posterior.clone()
        if first.two_components:
            for _ in range(2):
                keep = post >= 0.5
                if int(keep.sum()) < 20:
                    break
                level = estimate_corruption(scores[keep], squared_errors=True)
                if not level.two_components or level.rate > 0.25:
                    break
                post[keep] = torch.minimum(post[keep], level.clean_posterior)
    return post


@pytest.mark.parametrize(("seed", "near", "far"), [(0, 6.0, 1000.0), (1, 8.0, 300.0), (2, 5.0, 1e4)])
def test_layers_find_nearer_glitches_under_far_ones_as_the_reference_does(monkeypatch, seed, near, far):
    """The gmm alone takes the far layer (7.5 %) and reads the nearer one as clean; with `squared_errors=True` the
    scores it read clean are fitted again and the nearer layer is found: 23-25 % for 25 %. The posteriors are the
    reference's, whatever the input order."""
    scores = _layered_residuals(seed, near, far)
    alone = estimate_corruption(scores)
    assert alone.rate == pytest.approx(0.075, abs=0.005)
    est = estimate_corruption(scores, squared_errors=True)
    assert 0.22 <= est.rate <= 0.26 and est.reason.endswith("then 1 more layer among the scores read clean"), est
    perm = torch.randperm(scores.numel(), generator=torch.Generator().manual_seed(seed))
    shuffled = estimate_corruption(scores[perm], squared_errors=True)
    assert shuffled.rate == est.rate
    torch.testing.assert_close(shuffled.clean_posterior, est.clean_posterior[perm])
    torch.testing.assert_close(est.clean_posterior, _reference_layers(monkeypatch, scores))


@pytest.mark.parametrize("seed", range(5))
def test_layers_leave_a_split_of_clean_rows_of_two_noise_levels_alone(seed):
    """Clean rows of two noise levels (half with 3.2 times the other half's spread, as a heteroscedastic target's
    residuals) beside 150 far glitches: what is left after the far ones splits into its two halves, a layer that would
    read about half the clean rows as corrupted (clean Diabetes's residuals did: 41-50 %). More than a quarter is
    refused: the estimate is the far glitches' share, as without layers."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.cat([torch.randn(700, dtype=torch.float64, generator=g),
                       3.2 * torch.randn(700, dtype=torch.float64, generator=g)])
    scores = torch.cat([clean, 1000 * (1 + 0.1 * torch.randn(150, dtype=torch.float64, generator=g))]) ** 2
    est = estimate_corruption(scores, squared_errors=True)
    assert est.rate == estimate_corruption(scores).rate == pytest.approx(150 / 1550, abs=1e-3)
    assert "layer" not in est.reason


def test_layers_are_only_looked_for_on_squared_errors_with_two_components():
    """Clean squared residuals read 0 (no first split, no layers); other scores get no layers."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(2000, dtype=torch.float64, generator=g) ** 2
    assert estimate_corruption(clean, squared_errors=True).rate == 0.0
    layered = _layered_residuals(0)
    assert estimate_corruption(layered).rate == estimate_corruption(layered, "gmm", squared_errors=False).rate < 0.08


# -- auto_probe: a round that trains on a trimmed set where the first estimate reads 0 ------------------------------
def _linear_with_x10_and_shifts(rate: float, seed: int = 100):
    """scikit-learn's make_regression (2,000 rows, 10 features, noise 10; a fifth held out), ``rate`` of the training
    targets glitched, half ×10 and half ±3 SD: the set-up on which ITLM ``"auto"`` read 0 in every round (scratch runs
    of 2026-12-06, seeds 100-101)."""
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=2000, n_features=10, n_informative=6, noise=10.0, random_state=seed)
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
    df["y"] = y
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(df))
    test_df, train_df = df.iloc[perm[:400]].reset_index(drop=True), df.iloc[perm[400:]].reset_index(drop=True)
    clean_y = train_df["y"].to_numpy().copy()
    n_bad = round(rate * len(train_df))
    bad = rng.permutation(len(train_df))[:n_bad]
    noisy = clean_y.copy()
    noisy[bad[0::2]] = 10 * clean_y[bad[0::2]]
    noisy[bad[1::2]] = clean_y[bad[1::2]] + rng.choice([-1.0, 1.0], len(bad[1::2])) * 3 * clean_y.std(ddof=1)
    train_df["y"] = noisy
    train_df["is_bad"] = np.isin(np.arange(len(train_df)), bad)
    return train_df, test_df


def _fit_probe(train_df, test_df, probe: float):
    pl.seed_everything(100)
    data = TableDataModule(frame=train_df, target="y", task="regression", corrupted="is_bad", test_frame=test_df,
                           seed=100)
    itlm = ITLM(keep_ratio="auto", round_epochs=[10, 10, 10], seed=100, verbose=False, plot=False, auto_probe=probe)
    model = MLPRegressor()
    trainer = _trainer(itlm, 30)
    trainer.fit(model, data)
    return itlm, float(trainer.test(model, data, verbose=False)[0]["test_r2"])


def test_auto_probe_finds_the_glitches_a_first_estimate_of_zero_missed(one_torch_thread, quiet, monkeypatch):
    """30 % of the targets ×10 or ±3 SD: round 0's model is pulled so far that its scores form one component
    (separation) and ``"auto"`` reads 0 in every round (test R² below 0). With ``auto_probe=0.2`` round 1 trains on
    the 80 % lowest-scored rows, its model's scores separate, and the last round trims about the true share (R² 0.99,
    as at the true rate), the probe said once."""
    train_df, test_df = _linear_with_x10_and_shifts(0.3)
    plain, r2_plain = _fit_probe(train_df, test_df, 0.0)
    assert [h.estimated_corruption for h in plain.history[1:]] == [0.0, 0.0] and r2_plain < 0.5
    said: list[str] = []
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    probed, r2 = _fit_probe(train_df, test_df, 0.2)
    assert probed.history[1].estimated_corruption == 0.0 and probed.history[1].kept == int(0.8 * 1600)
    assert probed.history[2].estimated_corruption == pytest.approx(0.3, abs=0.03)
    assert probed.history[2].kept == int((1 - probed.history[2].estimated_corruption) * 1600)
    assert r2 > 0.95
    said = [m for m in said if "as a probe" in m]
    assert len(said) == 1 and said[0].startswith("ITLM round 1: `keep_ratio='auto'` estimated 0 (one component"), said


def test_auto_probe_keeps_every_clean_row_at_the_last_round(one_torch_thread, quiet):
    """Clean targets: the probe round trains on 80 %, its model's scores read 0 again, and the last round keeps every
    row, as without the probe."""
    train_df, test_df = _linear_with_x10_and_shifts(0.0)
    probed, r2 = _fit_probe(train_df, test_df, 0.2)
    assert [h.estimated_corruption for h in probed.history[1:]] == [0.0, 0.0]
    assert [h.kept for h in probed.history] == [1600, 1280, 1600] and r2 > 0.98


def test_auto_probe_is_not_taken_at_the_last_round_nor_after_a_positive_estimate():
    """Pure rule: only a round that is not the last probes, and only while no earlier round found a share."""
    itlm = ITLM(keep_ratio="auto", round_epochs=[2, 2, 2, 2], auto_probe=0.2)
    assert [itlm._probes(r) for r in (1, 2, 3)] == [True, True, False]
    assert not ITLM(keep_ratio="auto", round_epochs=[2, 2, 2], auto_probe=0.0)._probes(1)
    assert ITLM(keep_ratio="auto", round_epochs=[2, 2]).resume_arguments()["auto_probe"] == 0.0
