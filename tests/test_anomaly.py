import json
import math
import re

import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import (
    RCA,
    AutoEncoder,
    BatchFilter,
    IndexedDataset,
    OneClassMNISTDataModule,
    RealNVP,
    RobustRealNVP,
    TwoMoonsAnomalyDataModule,
    load_report,
    roc_auc,
    unpack_batch,
)
from lit_robust.anomaly import anomaly_count, rca_exchange_masks, rca_keep_ratio
from lit_robust.functional.spectral import KLipschitzWeight
from tests.conftest import ddp_cpu_strategy, fit_ranks, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small models: intra-op threads only contend


# -- pure functions against slow references --------------------------------------------------------------------
def test_roc_auc_matches_sklearn_with_ties_and_large_scores():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        labels = torch.rand(200, generator=g) < 0.3
        scores = torch.randint(0, 20, (200,), generator=g).double() * 10 + 30 + 5.0 * labels  # ties, values >> 1
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-6)
    with pytest.raises(ValueError, match="both normal and anomalous"):
        roc_auc(torch.rand(4), torch.zeros(4))
    with pytest.raises(FloatingPointError, match="1 non-finite anomaly score"):
        roc_auc(torch.tensor([0.1, float("nan"), 0.3]), torch.tensor([0, 1, 0]))


def slow_exchange(e1, e2, beta, index):
    k = max(int(math.floor(round(beta * len(e1), 9))), 1)

    def keep(e):
        key = [(math.inf if not math.isfinite(v) else v, int(i), p) for p, (v, i) in enumerate(zip(e.tolist(), index))]
        chosen = {p for _, _, p in sorted(key)[:k]}
        return torch.tensor([p in chosen for p in range(len(e))])

    return keep(e2), keep(e1)  # A1 trains on A2's picks and vice versa


def test_rca_exchange_matches_reference_ranking():
    g = torch.Generator().manual_seed(1)
    for n in (1, 5, 16, 33):
        e1 = torch.randint(0, 4, (n,), generator=g).float()  # many ties
        e2 = torch.rand(n, generator=g)
        if n > 4:
            e2[3] = float("nan")
        index = torch.randperm(1000, generator=g)[:n]
        for beta in (1.0, 0.9, 0.55):
            got = rca_exchange_masks(e1, e2, beta, index)
            ref = slow_exchange(e1, e2, beta, index.tolist())
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_rca_keep_ratio_follows_algorithm_1():
    eps, max_epoch, alpha = 0.2, 20, 0.25
    beta = 1.0
    for epoch in range(max_epoch):
        assert rca_keep_ratio(epoch, eps, int(alpha * max_epoch)) == pytest.approx(beta)
        beta = max(beta - eps / (alpha * max_epoch), 1 - eps)  # Alg. 1, line 8


# -- RealNVP -----------------------------------------------------------------------------------------------------
def test_realnvp_log_prob_is_the_change_of_variables():
    torch.manual_seed(0)
    flow = RealNVP(3, n_couplings=4, hidden=8, spectral_norm=True).double().eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    got = flow.log_prob(x).detach()
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0))[0][0], x[i])
        z = flow(x[i : i + 1])[0][0]
        ref = -0.5 * (z**2).sum() - 1.5 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        assert float(got[i]) == pytest.approx(float(ref), abs=1e-9)
    z = flow(x)[0]
    for c in reversed(flow.couplings):
        z = c.inverse(z)
    torch.testing.assert_close(z, x)


def test_realnvp_switches():
    plain, trim, robust = RealNVP(2), RealNVP(2, drop_ratio=0.1), RobustRealNVP(2, drop_ratio=0.05, k=2.0)
    assert plain.configure_callbacks() == [] and not plain.spectral_layers
    (f,) = trim.configure_callbacks()
    assert isinstance(f, BatchFilter) and (f.rule, f.drop_ratio) == ("spl", 0.1) and not trim.spectral_layers
    assert len(robust.spectral_layers) == 6 * 2 * 3  # every Linear of every s and t network
    assert {p.k for m in robust.modules() if isinstance(m, KLipschitzWeight) for p in [m]} == {2.0}


def test_robust_realnvp_trims_anomalies_and_scores_the_test_split(tmp_path):
    pl.seed_everything(0)
    dm = TwoMoonsAnomalyDataModule(n_train=600, contamination=0.05, anomalies="uniform", n_test=400, seed=0)
    model = RobustRealNVP(2, n_couplings=4, hidden=32, drop_ratio=0.05, lr=5e-3, report_dir=str(tmp_path / "rep"))
    trainer = tiny_trainer(tmp_path, 8)
    trainer.fit(model, dm)
    last = model.batch_filter.history[-1]
    assert last.dropped == 4 * (128 - math.floor(0.95 * 128)) + (88 - math.floor(0.95 * 88))  # 600 = 4 x 128 + 88
    # uniform anomalies partly fall on the moons, so not all are separable; the trimmed ones are still enriched
    assert last.dropped_corrupted_frac > 4 * last.corrupted_frac
    # the per-sample report of the module's own filter (a newcomer found none for the flows): every training
    # sample once, most anomalous (highest -log p) first, what the last epoch dropped marked
    rows = load_report(model.batch_filter.report_path, as_frame=False)
    assert model.batch_filter.report_path == str(tmp_path / "rep" / "filter_spl_report.csv")
    assert model.report_path == model.batch_filter.report_path  # where RCA and CoTeaching keep theirs
    assert RealNVP(2).report_path is None and RealNVP(2).estimated_corruption is None  # no trimming filter
    assert sorted(r["index"] for r in rows) == list(range(600)) and [r["rank"] for r in rows] == list(range(1, 601))
    scores = [r["score_last_epoch"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert sum(not r["kept"] for r in rows) == last.dropped
    top = sum(r["corrupted"] for r in rows[:30])
    assert top > 4 * 30 * 0.05, top  # the top of the ranking is enriched in anomalies as the dropped samples are
    auc = trainer.test(model, dm, verbose=False)[0]["test_auroc"]
    scores, labels = model.score_dataset(dm.test_dataloader())
    assert auc == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-6)
    assert auc > 0.65
    # a user's own test split as plain `(x, is_anomaly)` pairs needs no index (a newcomer's did)
    x_test = torch.cat([unpack_batch(b).input for b in dm.test_dataloader()])
    plain = DataLoader(TensorDataset(x_test, labels), batch_size=64)
    assert trainer.test(model, plain, verbose=False)[0]["test_auroc"] == auc
    plain_scores, plain_labels = model.score_dataset(plain)
    assert torch.equal(plain_scores, scores) and torch.equal(plain_labels, labels)


def test_nan_log_density_fails_with_the_batch_index(tmp_path):
    x = torch.randn(100, 2)
    x[70, 1] = float("nan")  # batch 2 of 32 in a fixed order
    loader = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(100))), batch_size=32)
    with pytest.raises(FloatingPointError, match=r"1 non-finite log-density value\(s\) in training batch 2 "
                                                 r"\(dataset indices \[70\]\)"):
        tiny_trainer(tmp_path, 1).fit(RealNVP(2, hidden=8, drop_ratio=0.1), loader)


@pytest.mark.parametrize("bad", [0.5, -0.1, 1.2, True])
def test_bad_drop_ratio_is_rejected(bad):
    for cls in (RealNVP, RCA):
        with pytest.raises(ValueError, match=rf"`drop_ratio` must be a number in \[0, 0.5\), got {bad!r}"):
            cls(2, drop_ratio=bad)


def test_flow_report_needs_its_trimming_filter(tmp_path):
    with pytest.raises(ValueError, match=r"`report` needs the module's trimming filter: drop_ratio > 0 or 'auto', "
                                         r"got drop_ratio=0.0 \(rank the samples of a plain fit with `score_dataset`\)"):
        RealNVP(2, report=True)
    with pytest.raises(ValueError, match=r"`report_dir`='rep' \(a report\) needs the module's trimming filter"):
        RealNVP(2, report_dir="rep")
    with pytest.raises(ValueError, match="`report_dir` only applies with a report"):
        RobustRealNVP(2, report=False, report_dir=str(tmp_path))
    assert RealNVP(2).batch_filter is None  # the default (report None, no trimming) is fine
    assert RobustRealNVP(2, report=True).batch_filter.report is True


def test_other_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="`dim` must be an integer >= 2"):
        RealNVP(1)
    with pytest.raises(ValueError, match=r"`k` \(the Lipschitz bound per layer\) must be a finite number > 0, got 0"):
        RealNVP(2, spectral_norm=True, k=0)
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\), got 1.0"):
        RCA(4, dropout=1.0)
    with pytest.raises(ValueError, match="`test_passes` must be an integer >= 1, got 0"):
        RCA(4, test_passes=0)
    with pytest.raises(ValueError, match=r"`contamination` must be a number in \[0, 0.5\), got 0.5"):
        TwoMoonsAnomalyDataModule(contamination=0.5)
    with pytest.raises(ValueError, match="`anomalies` must be 'uniform' or 'clustered', got 'ring'"):
        TwoMoonsAnomalyDataModule(anomalies="ring")
    with pytest.raises(ValueError, match=r"`normal_class` must be an integer in \[0, 9\], got 10"):
        OneClassMNISTDataModule(normal_class=10)
    with pytest.raises(ValueError, match=r"`anomaly_classes` must be a non-empty list of classes in \[1, 2"):
        OneClassMNISTDataModule(normal_class=0, anomaly_classes=[0, 3])
    with pytest.raises(ValueError, match="expects inputs of shape"):
        RealNVP(3).log_prob(torch.zeros(2, 4))



@pytest.mark.parametrize(("cls", "kwargs"), [
    (RCA, {"dim": 3, "hidden": 8, "latent": 2, "test_passes": 2, "warmup_epochs": 1}),
    (AutoEncoder, {"dim": 3, "hidden": 8, "latent": 2}),
    (RealNVP, {"dim": 4, "n_couplings": 2, "hidden": 8, "layers": 1, "warmup_epochs": 1, "n_power_iterations": 2}),
    (RobustRealNVP, {"dim": 4, "n_couplings": 2, "hidden": 8, "layers": 1, "warmup_epochs": 1,
                     "n_power_iterations": 2}),
])
def test_numpy_integer_sizes_are_taken_and_saved_as_python_ints(cls, kwargs):
    """`RCA(dim=np.int64(3))` (a size computed with numpy) was refused as "must be an integer >= 1, got
    np.int64(3)", unlike `lit_robust._checks.check_int` everywhere else; and the numpy `warmup_epochs` RCA did take
    went into `hparams` as is, which made its checkpoints unreadable weights-only."""
    import io

    import numpy as np

    model = cls(**{k: np.int64(v) for k, v in kwargs.items()})
    assert {k: (type(model.hparams[k]), model.hparams[k]) for k in kwargs} == {k: (int, v) for k, v in kwargs.items()}
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(model.hparams)}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["hyper_parameters"]["warmup_epochs" if "warmup_epochs" in kwargs
                                                                     else "dim"] == kwargs.get("warmup_epochs", 3)


# -- RCA and the autoencoder ---------------------------------------------------------------------------------------
def test_rca_trains_on_exchanged_selections_and_beats_chance(tmp_path):
    pl.seed_everything(0)
    dm = TwoMoonsAnomalyDataModule(n_train=600, contamination=0.1, anomalies="uniform", n_test=400, seed=1,
                                   batch_size=64)
    dm.setup()
    seen = []

    class Spy(RCA):
        def training_step(self, batch, batch_idx):
            seen.append(self.keep_ratio_at(self.current_epoch))
            return super().training_step(batch, batch_idx)

    model = Spy(2, hidden=32, latent=1, drop_ratio=0.1, warmup_epochs=2, dropout=0.1, test_passes=4)
    trainer = tiny_trainer(tmp_path, 3)
    trainer.fit(model, dm)
    assert sorted(set(seen)) == pytest.approx([0.9, 0.95, 1.0])
    assert trainer.callback_metrics["rca/keep_ratio"] == pytest.approx(0.9)
    # > 1.5x the anomalies' 10% share of the data (torch 2.4's streams give 0.198 here, newer ones more than 0.2)
    assert trainer.callback_metrics["rca/dropped_anomaly_frac"] > 0.15
    model.eval()
    torch.manual_seed(0)
    s1 = model.anomaly_score(dm.x_test[:50])
    s2 = model.anomaly_score(dm.x_test[:50])
    assert not torch.equal(s1, s2)  # dropout stays on at test time (the ensemble) ...
    assert not model.ae1.encoder[2].training  # ... and the modules' modes are restored afterwards
    auc = trainer.test(model, dm, verbose=False)[0]["test_auroc"]
    assert auc > 0.6  # a 1-d bottleneck on 2-d moons after 3 epochs: better than chance, not more


def _moons_loader(n: int, batch_size: int, seed: int = 1) -> DataLoader:
    """Two moons with 10 % uniform anomalies as RCA trains on them, in a fixed order (no shuffle: a resumed fit sees
    the batches an uninterrupted one does)."""
    x, flag = TwoMoonsAnomalyDataModule(n_train=n, contamination=0.1, anomalies="uniform", seed=seed).build()[:2]
    return DataLoader(IndexedDataset(TensorDataset(x, flag.long()), corrupted=flag.bool()), batch_size=batch_size)


def test_rca_report_is_the_last_epochs_mean_exchange_score(tmp_path, monkeypatch):
    """RCA's per-sample report (a newcomer found none): every training sample once, with the mean over the last
    epoch of its exchange score (e1 + e2) / 2, left out of an update or not, and its ground truth -- against a slow
    reference built from what the exchange saw, batch by batch."""
    import lit_robust.anomaly.rca as rca_module

    seen = []  # (epoch, index, e1, e2, mask1, mask2) of every batch
    exchange = rca_module.rca_exchange_masks

    def recording(e1, e2, keep_ratio, index=None):
        m1, m2 = exchange(e1, e2, keep_ratio, index)
        seen.append((model.current_epoch, index.tolist(), e1.tolist(), e2.tolist(), m1.tolist(), m2.tolist()))
        return m1, m2

    monkeypatch.setattr(rca_module, "rca_exchange_masks", recording)
    pl.seed_everything(0)
    loader = _moons_loader(250, 64)  # 4 batches, the last of 58
    model = RCA(2, hidden=16, latent=1, drop_ratio=0.2, warmup_epochs=1, dropout=0.1, report_dir=str(tmp_path))
    tiny_trainer(tmp_path, 3).fit(model, loader)
    assert model.report_path == str(tmp_path / "rca_report.csv")
    rows = load_report(model.report_path, as_frame=False)

    total, visits, left_out = {}, {}, set()
    for epoch, index, e1, e2, m1, m2 in seen:
        if epoch != 2:
            continue
        for i, a, b, k1, k2 in zip(index, e1, e2, m1, m2):
            total[i] = total.get(i, 0.0) + 0.5 * (a + b)
            visits[i] = visits.get(i, 0) + 1
            if not (k1 and k2):
                left_out.add(i)
    first_dropped = {}
    for epoch, index, _, _, m1, m2 in seen:
        for i, k1, k2 in zip(index, m1, m2):
            if not (k1 and k2):
                first_dropped.setdefault(i, epoch)
    truth = loader.dataset.corrupted.tolist()
    ref = sorted(({"index": i, "score": total[i] / visits[i]} for i in range(250)), key=lambda r: (-r["score"], r["index"]))
    assert [r["index"] for r in rows] == [r["index"] for r in ref]
    for row, want in zip(rows, ref):
        i = row["index"]
        assert row["score_last_epoch"] == pytest.approx(want["score"], rel=1e-6)
        assert row["kept"] == (i not in left_out)
        assert row["first_dropped_epoch"] == first_dropped.get(i)
        assert row["corrupted"] == truth[i]
        assert row["given_label"] is None and row["predicted_label"] is None  # no labels in anomaly detection
        assert 0.0 <= row["clean_posterior"] <= 1.0
    assert 0 < len(left_out) < 250 and min(first_dropped.values()) == 1  # warm-up epoch 0 keeps every sample


@pytest.mark.parametrize("with_val", [False, True], ids=["ckpt-at-epoch-end", "ckpt-at-validation-end"])
def test_rca_resumed_fit_writes_the_same_report(tmp_path, with_val):
    from pytorch_lightning.callbacks import ModelCheckpoint

    class WithVal(RCA):  # a validation loop: the checkpoint is written at validation end, before the epoch's end
        def validation_step(self, batch, batch_idx):
            self.log("val_score", self.anomaly_score(unpack_batch(batch).input).mean())

    def run(root, ckpt_path=None):
        pl.seed_everything(0 if ckpt_path is None else 99)
        cls = WithVal if with_val else RCA
        model = cls(2, hidden=16, latent=1, drop_ratio=0.2, warmup_epochs=1, dropout=0.0, report_dir=str(root))
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        trainer = tiny_trainer(root, 3, [ckpt], enable_checkpointing=True, num_sanity_val_steps=0)
        trainer.fit(model, _moons_loader(250, 64), _moons_loader(100, 50, seed=2) if with_val else None,
                    ckpt_path=ckpt_path)
        return (root / "rca_report.csv").read_text()

    full = run(tmp_path / "a")
    resumed = run(tmp_path / "b", ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    assert resumed == full
    # from the last epoch's: Lightning skips the fit loop and its `on_train_end`; the report is written at fit end
    assert run(tmp_path / "c", ckpt_path=tmp_path / "a" / "epoch=2.ckpt") == full
    rows = load_report(tmp_path / "b" / "rca_report.csv", as_frame=False)
    assert 1 in {r["first_dropped_epoch"] for r in rows}  # drops from before the checkpoint came through it


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rca_report_under_ddp_has_every_sample_once(tmp_path):
    """Two gloo ranks, each training on its half: the one file (rank 0's) has every training sample once, scored by
    the rank that saw it, with its ground truth."""
    dm = TwoMoonsAnomalyDataModule(n_train=219, contamination=0.1, anomalies="uniform", seed=3, batch_size=32)

    def make():
        model = RCA(2, hidden=8, latent=1, drop_ratio=0.2, warmup_epochs=0, dropout=0.0, report_dir=str(tmp_path))
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             deterministic=True)
        return trainer, model, dm

    fit_ranks(make)
    dm.setup()
    n = len(dm.train_set)
    assert n % 2 == 1  # an odd set: one rank gets a padded repeat
    rows = load_report(tmp_path / "rca_report.csv", as_frame=False)
    assert sorted(r["index"] for r in rows) == list(range(n))
    assert all(r["score_last_epoch"] is not None and r["kept"] is not None for r in rows)
    assert [r["corrupted"] for r in sorted(rows, key=lambda r: r["index"])] == dm.train_is_anomaly.tolist()
    assert 0 < sum(not r["kept"] for r in rows) < n


class _RecordRCAMetrics(pl.Callback):
    """Rank 0 writes the epoch's logged ``rca/*`` figures to ``out`` (the callback objects of a forked rank are not the
    test's)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            with open(self.out, "w") as f:
                json.dump({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("rca/")}, f)


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rca_under_ddp_with_the_progress_bar_on_ends_and_logs_the_whole_epochs_figures(tmp_path):
    """A 2-process `lit-robust fit` of configs/rca_mnist.yaml hung at the end of epoch 0 (SIGTERM ignored): the
    progress bar's epoch-end read on rank 0 all-reduced `rca/keep_ratio`, logged from the step with `sync_dist=True`,
    while rank 1 was in the report's collective. The progress bar is left on, as `lit-robust` has it."""
    dm = TwoMoonsAnomalyDataModule(n_train=219, contamination=0.1, anomalies="uniform", seed=3, batch_size=32)

    def make():
        model = RCA(2, hidden=8, latent=1, drop_ratio=0.2, warmup_epochs=0, dropout=0.0, report_dir=str(tmp_path))
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), logger=False,
                             enable_checkpointing=False, enable_model_summary=False, deterministic=True,
                             callbacks=[_RecordRCAMetrics(str(tmp_path / "metrics.json"))])
        return trainer, model, dm

    fit_ranks(make)
    logged = json.loads((tmp_path / "metrics.json").read_text())
    rows = load_report(tmp_path / "rca_report.csv", as_frame=False)
    # the last epoch's samples left out of an update, over both ranks: the figure is their anomalies' share (the one
    # padded repeat may count once more on its rank, hence the tolerance of one sample)
    dropped = [r for r in rows if not r["kept"]]
    share = sum(bool(r["corrupted"]) for r in dropped) / len(dropped)
    assert logged["rca/keep_ratio"] == pytest.approx(0.8)
    assert logged["rca/dropped_anomaly_frac"] == pytest.approx(share, abs=1.01 / len(dropped)), (share, logged)


def test_rca_report_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"`report_format` must be one of \['csv', 'parquet'\], got 'xls'"):
        RCA(2, report_format="xls")
    with pytest.raises(ValueError, match=r"`report_dir` only applies with a report"):
        RCA(2, report=False, report_dir=str(tmp_path))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"`report_dir` must be a folder the report can be written into"):
        tiny_trainer(tmp_path, 1).fit(RCA(2, hidden=8, latent=1, report_dir=str(blocker / "sub")), _moons_loader(50, 25))
    model = RCA(2, hidden=8, latent=1)
    tiny_trainer(tmp_path, 1).fit(model, _moons_loader(50, 25))
    assert model.report_path is None and not list(tmp_path.rglob("*report*.csv"))  # off by default in Python


def test_autoencoder_score_is_deterministic_reconstruction_error():
    torch.manual_seed(0)
    ae = AutoEncoder(5, hidden=8, latent=2, dropout=0.5)
    ae.train()
    x = torch.randn(4, 5)
    torch.testing.assert_close(ae.anomaly_score(x), ae.anomaly_score(x))
    with torch.no_grad():
        ae.net.eval()
        ref = ((ae.net(x) - x) ** 2).mean(1)
    torch.testing.assert_close(ae.anomaly_score(x), ref)


# -- data -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
def test_two_moons_counts_and_flags(kind):
    dm = TwoMoonsAnomalyDataModule(n_train=1000, contamination=0.05, anomalies=kind, n_test=300,
                                   test_anomaly_ratio=0.2, seed=3)
    dm.setup()
    assert len(dm.train_set) == 1000 and int(dm.train_is_anomaly.sum()) == 50
    assert len(dm.test_set) == 300 and int(dm.test_is_anomaly.sum()) == 60
    i, x, y, flag = dm.train_set[int(torch.nonzero(dm.train_is_anomaly)[0])]
    assert bool(flag) and int(y) == 1 and x.shape == (2,)
    anomalies = dm.x_train[dm.train_is_anomaly]
    if kind == "clustered":
        assert (anomalies - torch.tensor([-0.5, -0.5])).norm(dim=1).max() < 0.3
    else:
        assert anomalies.std(0).min() > 0.5
    dm2 = TwoMoonsAnomalyDataModule(n_train=1000, contamination=0.05, anomalies=kind, n_test=300, seed=3)
    dm2.setup()
    torch.testing.assert_close(dm2.x_train, dm.x_train)  # seeded


def test_one_class_mnist(shared_data):
    dm = OneClassMNISTDataModule(root=str(shared_data), normal_class=3, contamination=0.1, pca_dim=16, seed=0)
    dm.setup()
    from torchvision.datasets import MNIST

    train = MNIST(str(shared_data), train=True, download=False)
    n_normal = int((train.targets == 3).sum())
    assert int((~dm.train_is_anomaly).sum()) == n_normal
    assert int(dm.train_is_anomaly.sum()) == anomaly_count(n_normal, 0.1)
    assert dm.dim == 16 and dm.x_test.shape == (4000, 16)
    torch.testing.assert_close(dm.x_train.std(0), torch.ones(16), rtol=1e-3, atol=1e-3)  # whitened
    test = MNIST(str(shared_data), train=False, download=False)
    assert torch.equal(dm.test_is_anomaly, test.targets != 3)
    raw = OneClassMNISTDataModule(root=str(shared_data), normal_class=3, anomaly_classes=[8], max_normal=100,
                                  seed=0, test_size=50)
    raw.setup()
    assert raw.x_train.shape == (111, 784) and float(raw.x_train.max()) <= 1.0 and len(raw.test_set) == 50
    pixels = train.data.flatten(1).float() / 255.0
    for a in raw.x_train[raw.train_is_anomaly]:  # every anomaly is a training image of class 8
        assert set(train.targets[(pixels == a).all(1)].tolist()) == {8}


def test_one_class_mnist_says_at_setup_what_its_test_draw_and_pca_dim_cannot_give(shared_data):
    """Reviewer: `test_size=10` (seed 0) drew no image of the normal class, and the fit ran before `test` failed on
    ROC-AUC; `pca_dim=10` of 6 training images was silently lowered to 6 features. Both are said at `setup`."""
    with pytest.raises(ValueError, match=r"`test_size`=10 draws no normal \(class 0\) test image of the 4000 \(with "
                                         r"`seed`=0\): the test ROC-AUC needs both kinds"):
        OneClassMNISTDataModule(root=str(shared_data), max_normal=50, test_size=10, seed=0).setup()
    ok = OneClassMNISTDataModule(root=str(shared_data), max_normal=50, test_size=10, seed=1)  # one normal of 10
    ok.setup()
    assert 0 < int(ok.test_is_anomaly.sum()) < 10
    with pytest.raises(ValueError, match=r"`pca_dim` must be at most 5, one less than the 6 training images .*, got "
                                         r"10\. Lower `pca_dim` or raise `max_normal`"):
        OneClassMNISTDataModule(root=str(shared_data), max_normal=5, pca_dim=10).setup()
    most = OneClassMNISTDataModule(root=str(shared_data), max_normal=5, pca_dim=5)
    most.setup()
    assert most.dim == 5


def test_spectral_norm_keeps_the_flow_smooth_inside_training(tmp_path):
    """The couplings' Linear layers are at sigma = k after training (the normalisation is active in fit)."""
    pl.seed_everything(0)
    dm = TwoMoonsAnomalyDataModule(n_train=256, n_test=64, seed=0)
    model = RealNVP(2, n_couplings=2, hidden=16, spectral_norm=True, k=0.8, lr=1e-2)
    tiny_trainer(tmp_path, 2).fit(model, dm)
    # eval mode freezes the power-iteration vectors of the last training forward; the last optimizer step moved
    # the weights since, so converge the estimates with one more training forward before reading the bound
    for p in model.modules():
        if isinstance(p, KLipschitzWeight):
            p.n_power_iterations = 100
    model.train()
    model.log_prob(dm.x_train[:8])
    sig = model.layer_sigmas()
    assert len(sig) == 12 and max(sig) == pytest.approx(0.8, rel=1e-3) and min(sig) == pytest.approx(0.8, rel=1e-3)
    plain = RealNVP(2, n_couplings=2, hidden=16)
    assert max(plain.layer_sigmas()) > 1.0  # without the switch the layers are unconstrained


def test_one_class_fashion_mnist(shared_data):
    from lit_robust import OneClassFashionMNISTDataModule

    dm = OneClassFashionMNISTDataModule(root=str(shared_data), normal_class=7, contamination=0.2, max_normal=80,
                                        test_size=200, seed=1)
    dm.setup()
    assert dm.x_train.shape == (100, 784) and int(dm.train_is_anomaly.sum()) == 20  # 80 normal + 20 = 20%
    i, x, y, flag = dm.train_set[0]
    assert int(y) == int(flag) and len(dm.test_set) == 200
    assert 0 < int(dm.test_is_anomaly.sum()) < 200


def test_a_compiled_rca_fit_compiles_the_same_graphs_for_2_and_6_epochs(tmp_path):
    # the warm-up's keep ratio, the "auto" scores, the report and the logging stay out of the compiled graph
    # (before: 20 graphs for 2 epochs, 24 for 6 -- a recompile per warm-up epoch)
    from tests.conftest import graphs_compiled_over

    loader = DataLoader(IndexedDataset(TensorDataset(torch.randn(256, 2), torch.zeros(256))), batch_size=32)

    def make():
        return RCA(2, hidden=8, latent=1, drop_ratio=0.1, warmup_epochs=4)

    two, six = (graphs_compiled_over(tmp_path, make, loader, epochs) for epochs in (2, 6))
    assert two == six, (two, six)


@pytest.mark.parametrize("make", [lambda d: RealNVP(d, n_couplings=2, hidden=8), lambda d: RobustRealNVP(d, hidden=8),
                                  lambda d: RCA(d, hidden=8, latent=2), lambda d: AutoEncoder(d, hidden=8, latent=2)],
                         ids=["RealNVP", "RobustRealNVP", "RCA", "AutoEncoder"])
def test_float64_features_and_a_wrong_width_are_named_not_a_matmul_error(tmp_path, make):
    """A newcomer's ``torch.tensor(StandardScaler().fit_transform(X))`` (float64) ended in torch's "mat1 and mat2 must
    have the same dtype" from inside the network, and ``RCA(dim=10)`` on 30 features in "cannot be multiplied"."""
    def fit(model, x):
        data = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long))), batch_size=16)
        tiny_trainer(tmp_path, 1).fit(model, data)

    x = torch.randn(32, 6, dtype=torch.float64)
    name = type(make(6)).__name__
    with pytest.raises(ValueError, match=rf"{name}\(dim=6\) expects inputs of dtype torch.float32, its parameters' "
                                         r"dtype, got torch.float64 \(numpy's default\): convert them, e.g. "
                                         r"`torch.as_tensor\(features, dtype=torch.float32\)`, or train in 64 bits"):
        fit(make(6), x)
    # RobustRealNVP's filter checks the first batch before its step: the datamodule-style line names the argument
    with pytest.raises(ValueError, match=rf"{name}\(dim=4\) expects inputs of shape \[batch, .*4.*got \(16, 6\)|"
                                         r"`model.dim`=4 does not fit `data`: the (first training batch|training set) yields vectors "
                                         r"of 6 features. Set `model.dim` to 6."):
        fit(make(4), x.float())
    with pytest.raises(ValueError, match=r"got torch.int64: convert them"):  # scoring integer features
        make(6).anomaly_score(torch.zeros(3, 6, dtype=torch.long))
    fit(make(6), x.float())  # float32 trains
    pl.seed_everything(0)
    model = make(6)
    trainer = pl.Trainer(max_epochs=1, precision="64-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(32, dtype=torch.long))), batch_size=16))
    assert model.anomaly_score(x).dtype == torch.float64  # or in 64 bits, as the message says


@pytest.mark.parametrize("make", [lambda d: RobustRealNVP(d, hidden=8), lambda d: RCA(d, hidden=8, latent=2)],
                         ids=["RobustRealNVP", "RCA"])
def test_a_64_bit_model_reloaded_from_its_checkpoint_stays_64_bit(tmp_path, make):
    """`load_from_checkpoint` built float32 layers, so a detector trained with `precision="64-true"` came back with
    its weights rounded to float32 and refused the float64 rows it was trained on (a PyOD user's): it is float64
    again and scores as the saved model did; a float32 model's checkpoint still loads as float32."""
    x = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pl.seed_everything(0)
    model = make(4)
    trainer = pl.Trainer(max_epochs=1, precision="64-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(32, dtype=torch.long))), batch_size=16))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = type(model).load_from_checkpoint(tmp_path / "m.ckpt")
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    torch.manual_seed(1)  # RCA averages dropout passes
    want = model.anomaly_score(x).detach()
    torch.manual_seed(1)
    assert torch.equal(loaded.anomaly_score(x).detach(), want)
    model32 = make(4)
    torch.save({"state_dict": model32.state_dict(), "hyper_parameters": dict(model32.hparams),
                "pytorch-lightning_version": pl.__version__}, tmp_path / "m32.ckpt")
    assert {p.dtype for p in type(model32).load_from_checkpoint(tmp_path / "m32.ckpt").parameters()} == {torch.float32}


def test_roc_auc_takes_numpy_arrays_and_lists():
    import numpy as np

    assert roc_auc(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1])) == 1.0
    assert roc_auc([3.0, 1.0, 2.0], [1, 0, 0]) == 1.0
    assert roc_auc([3.0, 1.0, 2.0], [True, False, False]) == 1.0
    # an auditor's labels 0/1/2: torchmetrics' "Detected the following values in target" named no argument
    with pytest.raises(ValueError, match=r"`is_anomaly` must hold 0 \(normal\) and 1 \(anomaly\) only, got the "
                                         r"values \[0, 1, 2\]"):
        roc_auc(torch.tensor([0.1, 0.5, 0.2, 0.9]), torch.tensor([0, 2, 0, 1]))


def test_a_test_auroc_below_a_half_asks_whether_the_flag_is_inverted(recwarn):
    """An anomaly newcomer's flipped test flags read ROC-AUC 0.057 and nothing was said."""
    from lit_robust import RealNVP

    model = RealNVP(dim=2)
    model.test_auroc.update(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([1, 1, 0, 0]))
    model.on_test_epoch_end()
    said = [str(w.message) for w in recwarn if "below 0.5" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("RealNVP: test ROC-AUC 0.000 is below 0.5") and "inverted" in said[0]
    recwarn.clear()
    good = RealNVP(dim=2)
    good.test_auroc.update(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1]))
    good.on_test_epoch_end()
    assert not [w for w in recwarn if "below 0.5" in str(w.message)]


def test_the_flows_trimming_filter_speaks_for_the_flow():
    """An anomaly newcomer read "BatchFilter: `drop_ratio='auto'` ..." for a filter they had never configured."""
    from lit_robust import RealNVP

    model = RealNVP(dim=2, drop_ratio="auto")
    assert model.batch_filter._auto.owner == "RealNVP" and model.batch_filter._report.owner == "RealNVP"


def test_the_flows_short_auto_warm_up_warning_speaks_for_the_flow():
    """`RealNVP(drop_ratio="auto", warmup_epochs=0)` was warned at construction "BatchFilter: `drop_ratio='auto'` with
    `warmup_epochs=0` fixes its estimate ...", naming a filter the user never made (its later notes said RealNVP)."""
    import warnings

    from lit_robust import RealNVP

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RealNVP(dim=2, drop_ratio="auto", warmup_epochs=0)
    said = [str(w.message) for w in caught if "fixes its estimate" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("RealNVP: `drop_ratio='auto'` with `warmup_epochs=0`"), said


def test_the_flows_warm_up_warning_speaks_for_the_flow(tmp_path):
    """A release checker's `RobustRealNVP(warmup_epochs=10)` under `max_epochs=3` was warned by "BatchFilter: the
    Trainer's `max_epochs`=3 ends the fit ...", a filter they had not configured."""
    import warnings

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import IndexedDataset, RobustRealNVP

    torch.manual_seed(0)
    data = DataLoader(IndexedDataset(TensorDataset(torch.randn(64, 2), torch.zeros(64))), batch_size=32)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(RobustRealNVP(dim=2, drop_ratio=0.05, warmup_epochs=10), data)
    said = [str(w.message) for w in caught if "ends the fit before the filter reaches" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("RobustRealNVP: the Trainer's `max_epochs`=1 ends the fit"), said
    # and the other warm-up warning, for a fit something else stopped (a second release check)
    trainer = pl.Trainer(max_epochs=20, max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(RobustRealNVP(dim=2, drop_ratio=0.05, warmup_epochs=10), data)
    said = [str(w.message) for w in caught if "inside the warm-up" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("RobustRealNVP: the fit ended after epoch 1 of 20, inside"), said


def _blobs(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    flag = torch.zeros(n, dtype=torch.bool)
    flag[: n // 10] = True
    x[flag] = 6.0 + torch.randn(int(flag.sum()), 3, generator=g)
    return x, flag


def test_scoring_a_flow_in_training_mode_leaves_it_unchanged():
    """An anomaly newcomer scored straight after `fit` (the module still in training mode): each `anomaly_score`
    call advanced the spectral norms' power iteration, moving the largest score by 160 per call."""
    torch.manual_seed(0)
    model = RobustRealNVP(3, n_couplings=2, hidden=8).train()
    x, _ = _blobs()
    for _ in range(3):  # a few training-mode forwards, as training leaves the vectors
        model.per_sample_loss((torch.arange(len(x)), x, torch.zeros(len(x))))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = model.anomaly_score(x)
    for _ in range(5):
        again = model.anomaly_score(x)
    assert torch.equal(first, again)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(m.training for m in model.modules())  # the modes are restored
    with torch.no_grad():
        model.eval()
        assert torch.equal(model.anomaly_score(x), first)  # what eval mode gives


def test_anomaly_score_of_a_numpy_array_says_to_convert_it():
    """A newcomer's numpy features ended in "'tuple' object has no attribute 'numel'"."""
    x = _blobs()[0].numpy()
    for model in (RealNVP(3, hidden=8), RCA(3, hidden=8, latent=2)):
        with pytest.raises(TypeError, match=r"\(dim=3\) expects a torch.Tensor of shape \[batch, 3\], got "
                                            r"numpy.ndarray: convert it, e.g. `torch.as_tensor\(features, "
                                            r"dtype=torch.float32\)`"):
            model.anomaly_score(x)


def test_a_non_finite_sample_is_named_once_even_when_two_networks_score_it(tmp_path):
    """RCA checks both autoencoders' errors: a newcomer's one NaN row read `dataset indices [100, 100]`."""
    x = torch.randn(128, 3)
    x[100, 0] = float("nan")
    loader = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(128, dtype=torch.long))), batch_size=64)
    with pytest.raises(FloatingPointError, match=r"2 non-finite reconstruction error value\(s\) in training batch 1 "
                                                 r"\(dataset indices \[100\]\)"):
        tiny_trainer(tmp_path, 1).fit(RCA(3, hidden=8, latent=2, drop_ratio=0.1), loader)


def test_score_dataset_returns_dataset_order_from_a_shuffled_indexed_loader():
    """A newcomer scored the shuffled training loader and paired the scores with their labels: AUROC 0.49 for 0.94."""
    torch.manual_seed(0)
    x, flag = _blobs()
    model = RealNVP(3, n_couplings=2, hidden=8)
    data = IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), corrupted=flag)
    ordered, _ = model.score_dataset(DataLoader(data, batch_size=32))
    shuffled, targets = model.score_dataset(DataLoader(data, batch_size=32, shuffle=True))
    assert torch.equal(shuffled, ordered) and torch.equal(targets, torch.zeros(len(x), dtype=torch.long))
    with torch.no_grad():
        assert torch.equal(ordered, model.eval().anomaly_score(x))
    # without an index nothing maps the scores back: a shuffling loader is warned about
    with pytest.warns(UserWarning, match=r"RealNVP.score_dataset: the loader shuffles and its batches carry no "
                                         r"dataset index.*`shuffle=False`"):
        model.score_dataset(DataLoader(TensorDataset(x, flag.long()), batch_size=32, shuffle=True))


def test_a_flow_loaded_from_its_checkpoint_keeps_what_auto_estimated(tmp_path):
    """A newcomer's `RobustRealNVP.load_from_checkpoint` read `estimated_corruption` None (RCA's kept it); the report
    of either has no label columns (RealNVP's read `given_label` 0, RCA's <NA>, on the same data)."""
    pl.seed_everything(0)
    x, flag = _blobs(256)
    loader = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), corrupted=flag),
                        batch_size=64)
    model = RobustRealNVP(3, n_couplings=2, hidden=16, drop_ratio="auto", warmup_epochs=2, lr=5e-3,
                          report_dir=str(tmp_path / "rep"))
    trainer = tiny_trainer(tmp_path, 3)
    trainer.fit(model, loader)
    assert model.estimated_corruption is not None
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = RobustRealNVP.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.estimated_corruption == model.estimated_corruption
    assert loaded.batch_filter.history == model.batch_filter.history
    rows = load_report(model.report_path, as_frame=False)
    assert {r["given_label"] for r in rows} == {None} and {r["predicted_label"] for r in rows} == {None}
    assert sum(r["corrupted"] for r in rows[:20]) == 20  # the anomalies still rank first


_DETECTORS = {"RCA": lambda: RCA(3, hidden=8, latent=2, drop_ratio=0.1, dropout=0.0),
              "AutoEncoder": lambda: AutoEncoder(3, hidden=8, latent=2),
              "RealNVP": lambda: RealNVP(3, n_couplings=2, hidden=8),
              "RobustRealNVP": lambda: RobustRealNVP(3, n_couplings=2, hidden=8, drop_ratio=0.1)}


@pytest.mark.parametrize("loaders", [1, 2])
@pytest.mark.parametrize("form", ["plain", "indexed"])
@pytest.mark.parametrize("name", list(_DETECTORS))
def test_every_detector_logs_val_auroc_over_the_validation_epoch(tmp_path, name, form, loaders, recwarn):
    """The README said the anomaly detectors log `val_*` metrics; RCA and AutoEncoder had no `validation_step`
    (Lightning: "Skipping val loop") and the flows logged `val_nll` only. A list of two validation (or test) loaders
    stopped every detector's fit with Lightning's "no `dataloader_idx` argument in `RealNVP.validation_step()`": each
    loader now gets its own `/dataloader_idx_k` value, over that loader alone."""
    pl.seed_everything(0)
    x, flag = _blobs(256)
    train = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), corrupted=flag),
                       batch_size=64)

    def evaluation(seed, n):
        xv, flag_v = _blobs(n, seed=seed)
        # plain `(x, is_anomaly)` pairs, or the training form (placeholder target, the flag as `corrupted`)
        return flag_v, (DataLoader(TensorDataset(xv, flag_v.long()), batch_size=40) if form == "plain" else
                        DataLoader(IndexedDataset(TensorDataset(xv, torch.zeros(len(xv), dtype=torch.long)),
                                                  corrupted=flag_v), batch_size=40))

    flags, vals = zip(*[evaluation(1 + k, 150 - 50 * k) for k in range(loaders)])
    model = _DETECTORS[name]()
    before = set(model.state_dict())
    trainer = tiny_trainer(tmp_path, 2)
    trainer.fit(model, train, vals[0] if loaders == 1 else list(vals))
    assert not [w for w in recwarn if "validation_step" in str(w.message)]
    names = ["val_auroc"] if loaders == 1 else [f"val_auroc/dataloader_idx_{k}" for k in range(loaders)]
    for key, val, flag_v in zip(names, vals, flags):
        logged = float(trainer.callback_metrics[key])
        # over the whole epoch (4 batches, the last one short), not the mean of per-batch values
        assert logged == pytest.approx(roc_auc(model.score_dataset(val)[0], flag_v), abs=1e-6)
        assert 0.9 < logged <= 1.0  # the anomalies sit 6 standard deviations away
    if "RealNVP" in name:
        assert ("val_nll" if loaders == 1 else "val_nll/dataloader_idx_1") in trainer.callback_metrics
    if loaders == 2 and form == "plain":  # test loaders alike (test batches carry the flag as their target)
        tested = trainer.test(model, list(vals), verbose=False)
        for k, (val, flag_v) in enumerate(zip(vals, flags)):
            want = roc_auc(model.score_dataset(val)[0], flag_v)
            assert tested[k][f"test_auroc/dataloader_idx_{k}"] == pytest.approx(want, abs=1e-6)
    # the metric keeps no state in checkpoints: their keys are the same as before
    assert set(model.state_dict()) == before and not any("val_auroc" in k for k in before)


@pytest.mark.parametrize("name", list(_DETECTORS))
def test_an_unlabelled_validation_loader_logs_no_val_auroc_and_says_why(tmp_path, name, monkeypatch):
    said = []
    monkeypatch.setattr("lit_robust.anomaly.base.rank_zero_info", said.append)
    pl.seed_everything(0)
    x, flag = _blobs(128)
    train = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long))), batch_size=64)
    val = DataLoader(TensorDataset(_blobs(60, seed=1)[0]), batch_size=32)  # samples without a flag
    trainer = tiny_trainer(tmp_path, 2)
    trainer.fit(_DETECTORS[name](), train, val)
    assert "val_auroc" not in trainer.callback_metrics
    assert ("val_nll" in trainer.callback_metrics) == ("RealNVP" in name)
    notes = [m for m in said if "val_auroc" in m]
    assert notes == [f"{name}: the validation batches carry no is-anomaly flag (a tensor or `TensorDataset(x)`), so "
                     "`val_auroc` is not logged: give them as `(x, is_anomaly)` pairs, 1 = anomaly."]
    # one class only (no anomaly among the validation rows): no val_auroc either, one note, no crash
    said.clear()
    normal = DataLoader(TensorDataset(_blobs(60, seed=1)[0][10:], torch.zeros(50, dtype=torch.long)), batch_size=32)
    trainer = tiny_trainer(tmp_path, 2)
    trainer.fit(_DETECTORS[name](), train, normal)
    assert "val_auroc" not in trainer.callback_metrics
    notes = [m for m in said if "val_auroc" in m]
    assert len(notes) == 1 and "needs both normal and anomalous samples" in notes[0], notes


@pytest.mark.parametrize("name", ["RCA", "AutoEncoder", "RobustRealNVP"])
def test_numpy_features_given_to_fit_or_fit_threshold_say_what_to_pass(tmp_path, name):
    """A PyOD newcomer's `trainer.fit(RobustRealNVP(...), X)` was answered by "`BatchFilter`: lit_robust expects
    batches ..." (a class they never created), and `fit_threshold(X)` by the batch layout."""
    pd = pytest.importorskip("pandas")
    x = _blobs(64)[0].numpy()
    model = _DETECTORS[name]()
    with pytest.raises(TypeError, match=rf"^{name}\(dim=3\) expects a DataLoader of float32 tensors, got batches of "
                                        r"numpy.ndarray \(Lightning iterates a numpy array or a DataFrame item by "
                                        r"item\): pass `DataLoader\(IndexedDataset\(TensorDataset\(x, torch.zeros"):
        tiny_trainer(tmp_path, 1).fit(model, x)
    with pytest.raises(TypeError, match=r"got batches of numpy.ndarray .*: pass `DataLoader\(TensorDataset\(x\), "):
        tiny_trainer(tmp_path, 1).predict(model, x)
    for data, kind in ((x, "numpy.ndarray"), (pd.DataFrame(x), r"pandas\.(core\.frame\.)?DataFrame"),
                       (x.tolist(), "builtins.list")):
        with pytest.raises(TypeError, match=rf"^{name}.fit_threshold: `data` must be a DataLoader or a float32 tensor "
                                            rf"\[n, 3\] of samples, got {kind}: convert it, e.g. `fit_threshold\("
                                            r"torch.as_tensor\(features, dtype=torch.float32\)\)`\.$"):
            model.fit_threshold(data, contamination=0.1)
    # what it asks for works: a tensor, and a loader (or a list of tensor batches) of them
    t = torch.as_tensor(x, dtype=torch.float32)
    assert model.fit_threshold(t, contamination=0.1) == model.fit_threshold([t[:32], t[32:]], contamination=0.1)


@pytest.mark.parametrize("changed", [{"warmup_epochs": 2}, {"auto_margin": 0.1}, {"estimator": "bmm"},
                                     {"drop_ratio": 0.2}])
def test_rca_resumed_with_other_schedule_arguments_is_an_error_naming_them(tmp_path, changed):
    """A reviewer's RCA resumed with another `warmup_epochs` or `auto_margin` was accepted without a word, a run equal
    to neither; BatchFilter refuses the same. Checkpoints written before RCA saved these arguments still resume."""
    import re

    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(root, epochs, ckpt_path=None, save=False, **kw):
        pl.seed_everything(0, verbose=False)
        model = RCA(2, hidden=8, latent=1, **{"drop_ratio": "auto", "warmup_epochs": 3, "dropout": 0.0, **kw})
        cb = [ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")] if save else []
        tiny_trainer(root, epochs, cb, enable_checkpointing=save).fit(model, _moons_loader(100, 50),
                                                                      ckpt_path=ckpt_path)
        return model

    run(tmp_path / "a", 2, save=True)
    (name, value), = changed.items()
    was = {"warmup_epochs": 3, "auto_margin": 0.0, "estimator": "gmm", "drop_ratio": "auto"}[name]
    with pytest.raises(ValueError, match=re.escape(f"the checkpoint was written by RCA with `{name}` {was!r} (this "
                                                   f"fit: {value!r}): a resumed fit needs the RCA arguments")):
        run(tmp_path / "b", 3, ckpt_path=tmp_path / "a" / "epoch=1.ckpt", **changed)
    old = torch.load(tmp_path / "a" / "epoch=1.ckpt", weights_only=False)
    del old["rca_arguments"]  # as written before the arguments were saved
    torch.save(old, tmp_path / "old.ckpt")
    assert run(tmp_path / "c", 3, ckpt_path=tmp_path / "old.ckpt", **changed).current_epoch == 3


@pytest.mark.parametrize("wrap", [lambda x: x, TensorDataset], ids=["tensor", "TensorDataset(x)"])
def test_testing_on_unlabelled_batches_says_test_needs_is_anomaly_labels(tmp_path, wrap):
    """`trainer.test` of a detector on batches of inputs alone was answered by the generic batch-layout error
    ("expects batches `(index, input, target[, is_corrupted])`"), which said nothing of the labels ROC-AUC needs."""
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match=r"^RCA\(dim=4\): `trainer.test` measures ROC-AUC against is-anomaly labels, "
                                         r"and the test batches carry none .*`TensorDataset\(x, is_anomaly\)`"):
        tiny_trainer(tmp_path, 1).test(RCA(dim=4, hidden=8, latent=2), DataLoader(wrap(x), batch_size=4))


def test_the_anomaly_module_imports_on_a_torchmetrics_without_the_dim_zero_cat_re_export():
    """torchmetrics before 1.2 has `dim_zero_cat` in `torchmetrics.utilities.data` only: `import lit_robust` failed
    there with an ImportError (anomaly/base.py imported it from `torchmetrics.utilities`)."""
    import subprocess
    import sys

    code = ("import torchmetrics.utilities as u\nif hasattr(u, 'dim_zero_cat'):\n    del u.dim_zero_cat\n"
            "import lit_robust.anomaly.base\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("name", ["RCA", "CoTeaching"])
def test_fit_then_test_on_one_trainer_does_not_say_a_private_callback_overrides_the_users(tmp_path, name, caplog):
    """RCA (and CoTeaching) fitted then tested on one Trainer, as the docs' snippets do, logged Lightning's "The
    following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks passed to
    Trainer: _UnwrittenReportNote": the module handed its own report note back at `test`, already attached by `fit`."""
    import logging

    from lit_robust import CoTeaching, MLPClassifier

    if name == "RCA":
        model, loader = RCA(2, hidden=8, latent=1, dropout=0.0), _moons_loader(64, 32)
        test_loader = loader
    else:
        model = CoTeaching(MLPClassifier(in_features=2, num_classes=2, hidden=8), drop_ratio=0.2)
        x, y = torch.randn(64, 2), torch.arange(64) % 2
        loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=32)
        test_loader = DataLoader(TensorDataset(x[:20], y[:20]), batch_size=10)
    trainer = tiny_trainer(tmp_path, 1)
    trainer.fit(model, loader)
    said = logging.getLogger("pytorch_lightning")  # Lightning's logger does not propagate to caplog's root handler
    said.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="pytorch_lightning"):
            trainer.test(model, test_loader, verbose=False)
    finally:
        said.removeHandler(caplog.handler)
    assert "will override existing callbacks" not in caplog.text
    assert sum(type(cb).__name__ == "_UnwrittenReportNote" for cb in trainer.callbacks) == 1


@pytest.mark.parametrize("name", ["RCA", "RobustRealNVP"])
def test_an_auto_checkpoint_from_before_the_default_warm_up_names_the_detector_and_the_argument(tmp_path, name):
    """A checkpoint of a `drop_ratio="auto"` fit written when the default warm-up was 0, resumed on today's default
    (`warmup_epochs=None`: 3), was refused as written "by BatchFilter" (RobustRealNVP's own filter, never made by
    the user) with "(this fit: 3)", a warm-up the user had not passed; it names the detector and the argument."""
    import re

    def model(**kw):
        if name == "RCA":
            return RCA(2, hidden=8, latent=1, dropout=0.0, drop_ratio="auto", **kw)
        return RobustRealNVP(2, n_couplings=2, hidden=8, drop_ratio="auto", **kw)

    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 1)
    trainer.fit(model(warmup_epochs=0), _moons_loader(64, 32))
    trainer.save_checkpoint(tmp_path / "old.ckpt")
    expected = (f"the checkpoint was written by {name} with `warmup_epochs` 0 (this fit: 3, the default with "
                f"drop_ratio='auto'; pass `warmup_epochs=0` to resume this checkpoint): a resumed fit needs the {name} "
                "arguments")
    with pytest.raises(ValueError, match=re.escape(expected)):
        tiny_trainer(tmp_path, 2).fit(model(), _moons_loader(64, 32), ckpt_path=tmp_path / "old.ckpt")
    assert tiny_trainer(tmp_path, 2).fit(model(warmup_epochs=0), _moons_loader(64, 32),
                                         ckpt_path=tmp_path / "old.ckpt") is None  # as the message says


def test_a_numeric_drop_ratio_warm_up_left_out_is_not_said_to_be_the_auto_default(tmp_path):
    """With a numeric `drop_ratio` a warm-up left out is 0, the default with a number: a resume refused for another
    warm-up said "(this fit: 0, the default with drop_ratio='auto'; ...)", the default of the mode not in use."""
    import re

    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 1)
    trainer.fit(RCA(2, hidden=8, latent=1, dropout=0.0, drop_ratio=0.1, warmup_epochs=1), _moons_loader(64, 32))
    trainer.save_checkpoint(tmp_path / "warm.ckpt")
    expected = ("the checkpoint was written by RCA with `warmup_epochs` 1 (this fit: 0, the default with a numeric "
                "drop_ratio; pass `warmup_epochs=1` to resume this checkpoint)")
    with pytest.raises(ValueError, match=re.escape(expected)):
        tiny_trainer(tmp_path, 2).fit(RCA(2, hidden=8, latent=1, dropout=0.0, drop_ratio=0.1), _moons_loader(64, 32),
                                      ckpt_path=tmp_path / "warm.ckpt")


def test_a_monitor_on_an_rca_figure_logged_in_some_epochs_is_refused_before_training(tmp_path):
    """`EarlyStopping(monitor="rca/dropped_anomaly_frac")` ended in Lightning's RuntimeError after epoch 0, which
    drops nothing (BatchFilter refused its own such keys; RCA did not)."""
    from pytorch_lightning.callbacks import EarlyStopping

    model = RCA(2, hidden=8, latent=1, drop_ratio="auto")
    monitor = "rca/dropped_anomaly_frac"
    with pytest.raises(ValueError, match=re.escape(f"`EarlyStopping(monitor={monitor!r})`: RCA logs `{monitor}` only "
                                                   "in epochs that drop samples (none in the warm-up's first) and "
                                                   "only on data with the anomaly flag")):
        tiny_trainer(tmp_path, 3, [EarlyStopping(monitor=monitor)]).fit(model, _moons_loader(64, 32))
    assert model.trainer.global_step == 0
    # RCA keeps no `history`; RobustRealNVP's is its filter's (the refusal pointed both at "its `history`")
    with pytest.raises(ValueError, match=r"monitor a validation metric, and read the figures in the logger's "
                                         r"metrics\.$"):
        tiny_trainer(tmp_path, 3, [EarlyStopping(monitor=monitor)]).fit(model, _moons_loader(64, 32))
    flow = RobustRealNVP(2, drop_ratio=0.1)
    with pytest.raises(ValueError, match=r"^`EarlyStopping\(monitor='filter/estimated_corruption'\)`: RobustRealNVP "
                                         r"logs .* only with `drop_ratio='auto'` \(this fit's: 0\.1\), .* read the "
                                         r"figures in `model\.batch_filter\.history` or the logger's metrics\.$"):
        tiny_trainer(tmp_path, 3, [EarlyStopping(monitor="filter/estimated_corruption")]).fit(
            flow, _moons_loader(64, 32))


class _FailsAfter(torch.utils.data.Dataset):
    """``(x, is_anomaly)`` rows that raise from row ``stop`` on: a test or validation interrupted mid-epoch."""

    def __init__(self, x, flag, stop):
        self.x, self.flag, self.stop = x, flag, stop

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i >= self.stop:
            raise OSError("disk error")
        return self.x[i], self.flag[i]


@pytest.mark.parametrize("cls", ["RealNVP", "RCA"])
def test_an_evaluation_that_raised_leaves_nothing_in_the_next_ones_auroc(tmp_path, cls):
    """An anomaly newcomer's `trainer.test` on labels 0/2 was refused at its end, and every later test of the same model
    on good labels was refused with the old ones ("got the values [0, 1, 2]"); a test interrupted by a loader error
    after one batch left that batch in the next test's ROC-AUC (0.928 for 0.930), a validation's likewise (each with
    a Trainer of its own, as in a notebook; one Trainer's next run reset them)."""
    import lit_robust

    torch.manual_seed(0)
    x = torch.cat([torch.randn(60, 2), torch.randn(60, 2) + 2.5])
    flag = torch.cat([torch.zeros(60), torch.ones(60)]).long()
    model = getattr(lit_robust, cls)(2) if cls == "RealNVP" else RCA(2, hidden=8, latent=1, drop_ratio=0.0)
    trainer = tiny_trainer(tmp_path, 1)
    trainer.fit(model, DataLoader(IndexedDataset(TensorDataset(x, torch.zeros_like(flag))), batch_size=40))
    model.eval()

    def good_auc():
        torch.manual_seed(1)  # RCA's test passes sample dropout masks
        return tiny_trainer(tmp_path, 1).test(model, DataLoader(TensorDataset(x, flag), batch_size=40),
                                              verbose=False)[0]["test_auroc"]

    first = good_auc()
    with pytest.raises(ValueError, match=r"got the values \[0, 2\]"):
        tiny_trainer(tmp_path, 1).test(model, DataLoader(TensorDataset(x, 2 * flag), batch_size=40), verbose=False)
    assert good_auc() == first
    # the first batch's rows scored with their labels inverted, then the loader fails
    with pytest.raises(OSError, match="disk error"):
        tiny_trainer(tmp_path, 1).test(model, DataLoader(_FailsAfter(x, 1 - flag, 50), batch_size=40), verbose=False)
    assert good_auc() == first
    with pytest.raises(OSError, match="disk error"):
        tiny_trainer(tmp_path, 1).validate(model, DataLoader(_FailsAfter(x, 1 - flag, 50), batch_size=40), verbose=False)
    torch.manual_seed(1)
    val = tiny_trainer(tmp_path, 1).validate(model, DataLoader(TensorDataset(x, flag), batch_size=40), verbose=False)[0]["val_auroc"]
    assert val == pytest.approx(first, abs=0 if cls == "RealNVP" else 0.05)


@pytest.mark.parametrize("cls", ["RealNVP", "RCA"])
def test_a_threshold_set_before_a_fit_is_cleared_by_it(tmp_path, cls):
    """An anomaly newcomer's RCA, fitted again after `fit_threshold`, kept the old threshold (recall 0.03 where a fresh
    one gave 0.53) and saved it in the new fit's checkpoints, without a word."""
    import lit_robust

    torch.manual_seed(0)
    loader = _moons_loader(64, 32)
    model = lit_robust.RealNVP(2) if cls == "RealNVP" else RCA(2, hidden=8, latent=1, drop_ratio=0.1)
    tiny_trainer(tmp_path, 1).fit(model, loader)
    model.fit_threshold(loader, contamination=0.1)
    assert model.threshold is not None
    trainer = tiny_trainer(tmp_path, 1)
    with pytest.warns(UserWarning, match=rf"^{cls}: the threshold .* set by `fit_threshold` before this fit is "
                                         r"cleared: .* Call `fit_threshold` again after the fit"):
        trainer.fit(model, loader)
    assert model.threshold is None and model.threshold_contamination is None
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    assert "anomaly_threshold" not in torch.load(tmp_path / "after.ckpt", weights_only=False)


def test_nan_rows_at_predict_are_scored_nan_decided_anomalies_and_named(tmp_path):
    """An anomaly newcomer's 3 NaN rows among 207 new ones: `predict_anomaly` flagged them (as documented), while
    `trainer.predict` and `score_dataset` refused every row ("3 non-finite anomaly score value(s) in predict batch
    0"). The scores pass on, the decisions count them as anomalies, and the rows are named once."""
    from lit_robust import RealNVP

    torch.manual_seed(0)
    x = torch.randn(60, 2)
    model = RealNVP(2)
    tiny_trainer(tmp_path, 1).fit(model, DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(60))), batch_size=20))
    model.fit_threshold(x, contamination=0.1)
    new = torch.randn(50, 2)
    new[[3, 41]] = float("nan")
    with pytest.warns(UserWarning) as record:
        out = torch.cat(tiny_trainer(tmp_path, 1).predict(model, DataLoader(TensorDataset(new), batch_size=20)))
    said = [str(w.message) for w in record if "scored NaN or inf" in str(w.message)]
    # rows by their place in the loader's order, as `predictions.csv`'s index (a reviewer read "batch 2, rows [1]" as
    # the data's row 1)
    assert said == ["RealNVP.predict: 2 sample(s) scored NaN or inf (batch 0, rows (in the loader order) [3]; batch "
                    "2, rows (in the loader order) [41]): their "
                    "inputs hold NaN/inf, or values far outside the training data's. Their scores are kept as they "
                    "are, and the decisions (`predict_anomaly`, `predicted_anomaly`) count them as anomalies."]
    assert out.isnan().nonzero().flatten().tolist() == [3, 41]
    with pytest.warns(UserWarning, match=r"^RealNVP.score_dataset: 2 sample\(s\) scored NaN or inf \(batch 0, rows "
                                         r"\(in the loader order\) \[3, 41\]\)"):
        scores = model.score_dataset(new)[0]
    # `trainer.test` refuses them (no ROC-AUC of NaN), naming the rows of a plain loader's batch, not "batch 0" only
    with pytest.raises(FloatingPointError, match=r"^2 non-finite anomaly score value\(s\) in test batch 0 \(its rows "
                                                 r"\[3, 41\], counted from 0\)"):
        tiny_trainer(tmp_path, 1).test(model, DataLoader(TensorDataset(new, torch.zeros(50).long()), batch_size=50),
                                       verbose=False)
    assert torch.equal(scores.isnan(), out.isnan())
    assert torch.allclose(scores[~scores.isnan()], out[~out.isnan()], rtol=1e-5)  # other batches: float rounding
    assert model.predict_anomaly(new)[[3, 41]].all()


def test_an_indexed_test_set_is_tested_by_its_corrupted_flag(tmp_path):
    """The anomaly page's own data recipe puts zeros in the target and the known anomalies in `corrupted`; tested
    with it, `trainer.test` read the zeros: "ROC-AUC needs both normal and anomalous samples" of 19 flagged rows."""
    from lit_robust import RealNVP

    torch.manual_seed(0)
    x = torch.cat([torch.randn(60, 2), torch.randn(20, 2) + 3])
    flag = torch.cat([torch.zeros(60), torch.ones(20)]).long()
    model = RealNVP(2)
    tiny_trainer(tmp_path, 1).fit(model, DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(80))), batch_size=20))
    indexed = DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(80, dtype=torch.long)), corrupted=flag.bool()),
                         batch_size=40)
    pairs = DataLoader(TensorDataset(x, flag), batch_size=40)
    got = [tiny_trainer(tmp_path, 1).test(model, loader, verbose=False)[0]["test_auroc"] for loader in (indexed, pairs)]
    assert got[0] == got[1] == roc_auc(model.score_dataset(x)[0], flag) and got[0] > 0.8
