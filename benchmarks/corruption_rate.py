"""Benchmark: how well is the corrupted fraction estimated, and does ``keep_ratio="auto"`` lose accuracy? (issue 15)

Rows (each over 3 seeds in full mode):

* classification, label noise: MNIST (the offline 6,000 training digits) and FashionMNIST (a seeded 6,000
  subset) with random noise at 10/20/30/40/45 % and systematic noise at 20/30/40 %, and clean (0 %);
  FashionMNIST's full 60,000 on two rows with one seed only with ``--with-60k``; scikit-learn's digits (random 30 %, systematic 40 %, clean);
* regression, corrupted targets: ``DiabetesDataModule`` and ``MNISTLandmarksDataModule`` under ``linadv`` and
  ``uninoise`` at 20 and 40 %, and clean;
* anomaly detection, contaminated training sets: two moons with clustered / uniform anomalies at 5 and 10 %, and
  none; one-class MNIST at 10 % (normal digit = seed).

Estimate columns, all from models trained on every sample (no clean data, no ground truth):

* **ours**: ``estimate_corruption(scores, "gmm")`` on the per-sample scores of the model trained ``epochs``
  epochs on every sample (cross-entropy or squared loss; ``-log p`` of a RealNVP for anomalies) -- exactly the
  estimate ``ITLM(keep_ratio="auto")`` makes at its first scoring pass. ``bmm``: the Beta mixture on the same
  scores. Time: training + one scoring pass + the fit.
* **ITLM last**: the estimate ``ITLM(keep_ratio="auto")`` made at its last scoring pass (classification).
* **cleanlab CV**: ``cleanlab``'s confident-learning count (``estimate_corruption_from_probs``, the same count as
  ``cleanlab.count.num_label_issues``) on 5-fold cross-validated probabilities of the same model trained the
  same epochs; time: the 5 trainings, their predictions and the count. **cleanlab in-sample**: the same count on
  the probabilities of the model trained on every sample (what an ITLM scoring pass would give it).

Accuracy columns (classification, clean test set): **plain** = the model trained ``epochs`` epochs on every
sample (= ITLM's round 0); **ITLM true** = ``ITLM(keep_ratio=1 - eps)``; **ITLM auto** = ``ITLM(keep_ratio="auto")``;
both with round 0 on every sample and ``rounds`` re-initialised rounds of ``epochs`` epochs. **PRL true** =
``BatchFilter("prl", drop_ratio=eps)`` with ``epochs`` warm-up epochs over the same total epochs; **PRL auto** =
``BatchFilter("prl", drop_ratio="auto")`` when this checkout has it (reported as not measured otherwise).

Usage::

    python benchmarks/corruption_rate.py                 # full table -> benchmarks/results/corruption_rate.md
    python benchmarks/corruption_rate.py --quick         # four rows, one seed (< 60 s)
    python benchmarks/corruption_rate.py --smoke         # a few seconds, for the test suite

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import quiet as _quiet  # noqa: E402
from harness import run_tasks  # noqa: E402
from harness import trainer as _trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_OUT = HERE / "results" / "corruption_rate.md"

CLS_METHODS = ("itlm_auto", "itlm_auto_pred", "itlm_true", "cleanlab", "prl_true", "prl_auto")


@dataclass(frozen=True)
class Protocol:
    """CPU-scaled settings (small MLPs, few epochs)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    # classification: MLP (one hidden layer of `hidden`), SGD momentum 0.9, batch 128
    epochs: int = 5  # per round; plain training = round 0; each cleanlab fold trains this many
    rounds: int = 3  # ITLM rounds after round 0 (re-initialised)
    train_size: int = 6000  # MNIST (the whole offline set) and the FashionMNIST subset
    hidden: int = 128
    lr: float = 0.05
    batch_size: int = 128
    digits_epochs: int = 10
    folds: int = 5
    full60k_seeds: tuple[int, ...] = (0,)  # FashionMNIST's 60,000 (two rows)
    # regression: MLPRegressor (2 hidden layers of 256), Adam
    diabetes_epochs: int = 60
    landmarks_epochs: int = 15
    landmarks_size: int = 6000
    # anomaly detection: RealNVP (6 couplings, width 64), Adam 1e-3
    moons_epochs: int = 40
    moons_n: int = 2000
    mnist_ad_epochs: int = 15
    pca_dim: int = 32


FULL = Protocol(epochs=4, rounds=2)  # 2 shared cores: 4 epochs per round, round 0 + 2 ITLM rounds
QUICK = replace(FULL, seeds=(0,), epochs=2, rounds=1, train_size=2000, digits_epochs=4, diabetes_epochs=20,
                moons_epochs=10, moons_n=1000, full60k_seeds=())
SMOKE = replace(QUICK, epochs=1, train_size=500, digits_epochs=1, diabetes_epochs=2, moons_epochs=1, moons_n=300)

CLS_NOISE = [("random", e) for e in (10, 20, 30, 40, 45)] + [("systematic", e) for e in (20, 30, 40)] + [("clean", 0)]


def rows_for(mode: str, with_60k: bool = False) -> list[dict[str, Any]]:
    """The (group, data, corruption, eps %) rows of a mode."""
    if mode in ("quick", "smoke"):
        rows = [("cls", "mnist", "random", 30), ("cls", "digits", "clean", 0),
                ("reg", "diabetes", "linadv", 20), ("ad", "moons", "clustered", 10)]
        if mode == "smoke":
            rows = rows[:1] + rows[2:]
    else:
        rows = [("cls", d, k, e) for d in ("mnist", "fashion") for k, e in CLS_NOISE]
        if with_60k:  # ~10x the cost of a 6k row per seed: opt-in on 2 shared cores
            rows += [("cls", "fashion60k", "random", 30), ("cls", "fashion60k", "systematic", 40)]
        rows += [("cls", "digits", "random", 30), ("cls", "digits", "systematic", 40), ("cls", "digits", "clean", 0)]
        rows += [("reg", d, k, e) for d in ("diabetes", "landmarks") for k in ("linadv", "uninoise") for e in (20, 40)]
        rows += [("reg", d, "clean", 0) for d in ("diabetes", "landmarks")]
        rows += [("ad", "moons", k, e) for k in ("clustered", "uniform") for e in (5, 10)] + [("ad", "moons", "clean", 0)]
        rows += [("ad", "mnist_oneclass", "other digits", 10)]
    return [dict(zip(("group", "data", "kind", "eps"), r)) for r in rows]


# -- helpers -----------------------------------------------------------------------------------------


@torch.no_grad()
def _scores_and_probs(module: Any, dataset: Any, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample scores (``sample_scores``, eval mode) and, for classifiers, softmax probabilities."""
    from torch.utils.data import DataLoader

    was = module.training
    module.eval()
    scores, probs = [], []
    for b in DataLoader(dataset, batch_size=batch, shuffle=False):
        scores.append(module.sample_scores(b).double())
        if hasattr(module, "net"):
            probs.append(torch.softmax(module(b[1]).double(), 1))
    module.train(was)
    return torch.cat(scores), (torch.cat(probs) if probs else None)


@torch.no_grad()
def _accuracy(module: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    was = module.training
    module.eval()
    correct = sum(int((module(x[i:i + 1000]).argmax(-1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    module.train(was)
    return 100.0 * correct / len(y)


def _timed_gmm(scores: torch.Tensor, method: str = "gmm") -> tuple[float, float]:
    from lit_robust import estimate_corruption

    t = time.perf_counter()
    rate = estimate_corruption(scores, method).rate
    return rate, time.perf_counter() - t


def cache_path(cache_dir: str | Path, row: dict, seed: int) -> Path:
    """``<cache_dir>/<group>-<data>-<kind>-<eps>-s<seed>.npz`` (the kind's spaces as underscores)."""
    kind = row["kind"].replace(" ", "_")
    return Path(cache_dir) / f"{row['group']}-{row['data']}-{kind}-{row['eps']}-s{seed}.npz"


def _save_cache(task: dict, *, scores: torch.Tensor, corrupted: torch.Tensor, probs: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, later: list[torch.Tensor] | None = None) -> None:
    """With ``--cache DIR``: one ``.npz`` per row and seed, so estimators can be compared offline in seconds.

    Keys: ``scores`` (per-sample scores of the model trained on every sample), ``corrupted`` (true mask), and for
    classifiers ``probs`` (its in-sample softmax), ``labels`` (given labels) and ``later`` (``[rounds, n]``: the
    scores of ITLM auto's later scoring passes, each from a model trained on the previous selection -- these depend
    on the estimator that made that selection, the default at cache time).
    """
    if not task.get("cache_dir"):
        return
    import numpy as np

    arrays = {"scores": scores.double().numpy(), "corrupted": corrupted.bool().numpy()}
    if probs is not None:
        arrays["probs"] = probs.float().numpy()
    if labels is not None:
        arrays["labels"] = labels.long().numpy()
    if later:
        arrays["later"] = torch.stack([h.double() for h in later]).numpy()
    path = cache_path(task["cache_dir"], task["row"], task["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _classification_data(row: dict, seed: int, p: Protocol, root: str) -> Any:
    from lit_robust import DigitsDataModule, FashionMNISTDataModule, MNISTDataModule

    clean = 1.0 - row["eps"] / 100.0
    noise = "random" if row["kind"] == "clean" else row["kind"]
    common = dict(clean_ratio=clean, noise=noise, val_size=0, seed=seed)
    if row["data"] == "digits":
        dm = DigitsDataModule(batch_size=64, **common)
    elif row["data"] == "mnist":
        dm = MNISTDataModule(root=root, train_size=min(p.train_size, 6000), batch_size=p.batch_size, **common)
    elif row["data"] == "fashion":
        dm = FashionMNISTDataModule(root=root, train_size=p.train_size, batch_size=p.batch_size, **common)
    else:  # fashion60k
        dm = FashionMNISTDataModule(root=root, train_size=None, batch_size=p.batch_size, **common)
    dm.setup("fit")
    return dm


def run_classification(task: dict) -> dict[str, Any]:
    """Every estimate and accuracy column of one classification row and seed."""
    _quiet()
    torch.set_num_threads(1)
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback
    from torch.utils.data import DataLoader, Subset

    from lit_robust import (
        ITLM,
        BatchFilter,
        ImageClassifier,
        estimate_corruption_from_predictions,
        estimate_corruption_from_probs,
    )

    row, seed, p, methods = task["row"], task["seed"], task["protocol"], task["methods"]
    digits = row["data"] == "digits"
    epochs = p.digits_epochs if digits else p.epochs
    eps = row["eps"] / 100.0
    dm = _classification_data(row, seed, p, task["data_root"])
    train_set = dm.train_set
    n = len(train_set)
    labels = train_set.targets
    x_test, y_test = dm.test_set.dataset.tensors

    def model() -> Any:
        return ImageClassifier(backbone="mlp", image_size=8 if digits else 28, hidden=p.hidden, lr=p.lr)

    out: dict[str, Any] = {"row": row, "seed": seed, "n": n, "true_eps": float(train_set.corrupted.float().mean()),
                           "seconds": {}}
    rounds = [epochs] * (p.rounds + 1)

    class RoundZeroProbe(Callback):
        """At the end of round 0 (listed before ITLM, so before its scoring pass): the plain model's test accuracy,
        its scores and probabilities on the training set, and the time it took."""

        def on_train_start(self, trainer, pl_module) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch + 1 != epochs:
                return
            self.train_s = time.perf_counter() - self.t0
            t = time.perf_counter()
            self.scores, self.probs = _scores_and_probs(pl_module, train_set)
            self.score_s = time.perf_counter() - t
            self.acc = _accuracy(pl_module, x_test, y_test)

    if "itlm_auto" in methods:
        pl.seed_everything(seed, verbose=False)
        m = model()
        probe = RoundZeroProbe()
        # every round's scores, for offline comparisons of estimators (and for the cache)
        keep = bool(task.get("keep_scores") or task.get("cache_dir"))
        # the loss mixture, named: ITLM's default estimator is now "disagreement" (the itlm_auto_pred column)
        itlm = ITLM(keep_ratio="auto", round_epochs=rounds, seed=seed, verbose=False, plot=keep,
                    reestimate=bool(task.get("reestimate", False)), estimator="gmm")
        _trainer(sum(rounds), [probe, itlm]).fit(m, train_dataloaders=dm.train_dataloader())
        if keep:
            out["score_history"] = itlm.score_history
        out["plain"] = probe.acc
        out["itlm_auto"] = _accuracy(m, x_test, y_test)
        out["itlm_auto_estimates"] = [h.estimated_corruption for h in itlm.history[1:]]
        out["itlm_auto_clean_precision"] = [h.clean_precision for h in itlm.history[1:]]
        rate, fit_s = _timed_gmm(probe.scores)
        out["ours"] = rate
        out["bmm"] = _timed_gmm(probe.scores, "bmm")[0]
        out["seconds"]["ours"] = probe.train_s + probe.score_s + fit_s
        out["seconds"]["ours_fit"] = fit_s
        out["cleanlab_insample"] = estimate_corruption_from_probs(probe.probs, labels).rate
        t = time.perf_counter()
        out["pred"] = estimate_corruption_from_predictions(probe.scores, labels, probe.probs.argmax(1)).rate
        out["seconds"]["pred"] = probe.train_s + probe.score_s + time.perf_counter() - t
        out["scores_round1"] = probe.scores.float()  # for offline comparisons; not written to the JSON
        _save_cache(task, scores=probe.scores, probs=probe.probs, labels=labels, corrupted=train_set.corrupted,
                    later=[h["scores"] for h in itlm.score_history] if keep else [])
    if "itlm_auto_pred" in methods:
        pl.seed_everything(seed, verbose=False)
        m = model()
        itlm = ITLM(keep_ratio="auto", round_epochs=rounds, seed=seed, verbose=False, plot=False,
                    estimator="disagreement")
        _trainer(sum(rounds), [itlm]).fit(m, train_dataloaders=dm.train_dataloader())
        out["itlm_pred"] = _accuracy(m, x_test, y_test)
        out["itlm_pred_estimates"] = [h.estimated_corruption for h in itlm.history[1:]]
    if "itlm_true" in methods:
        pl.seed_everything(seed, verbose=False)
        m = model()
        itlm = ITLM(keep_ratio=max(1.0 - eps, 1e-6), round_epochs=rounds, seed=seed, verbose=False, plot=False)
        _trainer(sum(rounds), [itlm]).fit(m, train_dataloaders=dm.train_dataloader())
        out["itlm_true"] = _accuracy(m, x_test, y_test)
    if "cleanlab" in methods:
        t = time.perf_counter()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
        probs = torch.empty(n, 10, dtype=torch.float64)
        for f in range(p.folds):
            held = perm[f::p.folds]
            fit_idx = torch.cat([perm[g::p.folds] for g in range(p.folds) if g != f])
            pl.seed_everything(seed + f, verbose=False)
            m = model()
            loader = DataLoader(Subset(train_set, fit_idx.tolist()), batch_size=dm.batch_size, shuffle=True)
            _trainer(epochs, []).fit(m, train_dataloaders=loader)
            probs[held] = _scores_and_probs(m, Subset(train_set, held.tolist()))[1]
        out["cleanlab"] = estimate_corruption_from_probs(probs, labels).rate
        out["seconds"]["cleanlab"] = time.perf_counter() - t
    for name in ("prl_true", "prl_auto"):
        if name not in methods:
            continue
        drop: Any = eps if name == "prl_true" else "auto"
        try:
            filt = BatchFilter("prl", drop_ratio=drop, warmup_epochs=epochs)
        except (ValueError, TypeError) as err:
            out[name] = None
            out[f"{name}_note"] = f"not available in this checkout: {err}"
            continue
        pl.seed_everything(seed, verbose=False)
        m = model()
        _trainer(sum(rounds), [filt]).fit(m, train_dataloaders=dm.train_dataloader())
        out[name] = _accuracy(m, x_test, y_test)
    return out


def run_regression(task: dict) -> dict[str, Any]:
    """Our estimate on the squared losses of an MLP trained on every (possibly corrupted) target."""
    _quiet()
    torch.set_num_threads(1)
    import pytorch_lightning as pl

    from lit_robust import DiabetesDataModule, MLPRegressor, MNISTLandmarksDataModule

    row, seed, p = task["row"], task["seed"], task["protocol"]
    corruption = "linadv" if row["kind"] == "clean" else row["kind"]
    common = dict(corruption=corruption, corrupt_ratio=row["eps"] / 100.0, val_size=0, seed=seed)
    if row["data"] == "diabetes":
        dm, epochs = DiabetesDataModule(batch_size=32, **common), p.diabetes_epochs
        dm.setup("fit")
        model = MLPRegressor(dm.in_features, dm.out_features, lr=1e-3)
    else:
        dm = MNISTLandmarksDataModule(root=task["data_root"], train_size=p.landmarks_size, batch_size=128, **common)
        epochs = p.landmarks_epochs
        dm.setup("fit")
        model = MLPRegressor(dm.in_features, dm.out_features, lr=1e-3)
    t = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    _trainer(epochs, []).fit(model, train_dataloaders=dm.train_dataloader())
    scores, _ = _scores_and_probs(model, dm.train_set)
    rate, fit_s = _timed_gmm(scores)
    _save_cache(task, scores=scores, corrupted=dm.train_set.corrupted)
    return {"row": row, "seed": seed, "n": len(dm.train_set), "true_eps": float(dm.train_set.corrupted.float().mean()),
            "ours": rate, "bmm": _timed_gmm(scores, "bmm")[0],
            "seconds": {"ours": time.perf_counter() - t, "ours_fit": fit_s}}


def run_anomaly(task: dict) -> dict[str, Any]:
    """Our estimate on ``-log p`` of a RealNVP trained on the whole contaminated training set."""
    _quiet()
    torch.set_num_threads(1)
    import pytorch_lightning as pl

    from lit_robust import OneClassMNISTDataModule, RealNVP, TwoMoonsAnomalyDataModule

    row, seed, p = task["row"], task["seed"], task["protocol"]
    if row["data"] == "moons":
        dm = TwoMoonsAnomalyDataModule(n_train=p.moons_n, contamination=row["eps"] / 100.0,
                                       anomalies="uniform" if row["kind"] == "clean" else row["kind"], seed=seed)
        epochs = p.moons_epochs
    else:
        dm = OneClassMNISTDataModule(root=task["data_root"], normal_class=seed % 10, contamination=row["eps"] / 100.0,
                                     pca_dim=p.pca_dim, seed=seed)
        epochs = p.mnist_ad_epochs
    dm.setup("fit")
    t = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    model = RealNVP(dm.dim, n_couplings=6, hidden=64, drop_ratio=0.0, lr=1e-3)
    _trainer(epochs, []).fit(model, train_dataloaders=dm.train_dataloader())
    scores, _ = _scores_and_probs(model, dm.train_set)
    rate, fit_s = _timed_gmm(scores)
    truth = dm.train_set.corrupted
    _save_cache(task, scores=scores, corrupted=truth)
    return {"row": row, "seed": seed, "n": len(dm.train_set), "true_eps": float(truth.float().mean()),
            "ours": rate, "bmm": _timed_gmm(scores, "bmm")[0],
            "seconds": {"ours": time.perf_counter() - t, "ours_fit": fit_s}}


def run_task(task: dict) -> dict[str, Any]:
    fn = {"cls": run_classification, "reg": run_regression, "ad": run_anomaly}[task["row"]["group"]]
    return fn(task)


# -- aggregation and report ------------------------------------------------------------------------


def _key(row: dict) -> tuple:
    return row["group"], row["data"], row["kind"], row["eps"]


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key in dict.fromkeys(_key(r["row"]) for r in results):
        rs = [r for r in results if _key(r["row"]) == key]
        row: dict[str, Any] = dict(rs[0]["row"], seeds=[r["seed"] for r in rs], n=rs[0]["n"])
        row["true_eps"] = 100 * statistics.fmean(r["true_eps"] for r in rs)
        for r in rs:
            r.setdefault("pred", r.get("ours"))
        for col in ("ours", "bmm", "pred", "cleanlab", "cleanlab_insample"):
            vals = [r.get(col) for r in rs]
            if all(v is None for v in vals):
                continue
            row[col] = 100 * _mean(vals)
            # error per seed against that seed's true corrupted fraction, then the mean over seeds
            row[col + "_err"] = 100 * _mean([abs(r[col] - r["true_eps"]) for r in rs if r.get(col) is not None])
        last = [r["itlm_auto_estimates"][-1] for r in rs if r.get("itlm_auto_estimates")]
        if last:
            row["itlm_last"] = 100 * statistics.fmean(last)
            row["itlm_last_err"] = 100 * statistics.fmean(abs(r["itlm_auto_estimates"][-1] - r["true_eps"])
                                                          for r in rs if r.get("itlm_auto_estimates"))
            row["itlm_estimates"] = [[round(100 * e, 1) for e in r["itlm_auto_estimates"]] for r in rs]
            row["itlm_zero_rounds"] = sum(e == 0.0 for r in rs for e in r["itlm_auto_estimates"])
        for col in ("ours", "cleanlab"):
            secs = [r["seconds"][col] for r in rs if col in r["seconds"]]
            if secs:
                row[col + "_s"] = statistics.fmean(secs)
        pred_est = [r["itlm_pred_estimates"] for r in rs if r.get("itlm_pred_estimates")]
        if pred_est:
            row["itlm_pred_estimates"] = [[round(100 * e, 1) for e in x] for x in pred_est]
        for col in ("plain", "itlm_true", "itlm_auto", "itlm_pred", "prl_true", "prl_auto"):
            if any(col in r for r in rs):
                row[col] = _mean([r.get(col) for r in rs])
        notes = {r.get("prl_auto_note") for r in rs} - {None}
        if notes:
            row["prl_auto_note"] = notes.pop()
        rows.append(row)
    return rows


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errs = [r["ours_err"] for r in rows]
    clean = [r["ours"] for r in rows if r["eps"] == 0]
    acc_rows = [r for r in rows if r.get("itlm_auto") is not None and r.get("itlm_true") is not None]
    cl_rows = [r for r in rows if r.get("cleanlab_err") is not None]
    ours_s = sum(r["ours_s"] for r in cl_rows)
    cl_s = sum(r["cleanlab_s"] for r in cl_rows)
    prl_rows = [r for r in rows if r.get("prl_auto") is not None and r.get("prl_true") is not None]
    out: dict[str, Any] = {
        "rows": len(rows),
        "median_abs_err_pts": round(statistics.median(errs), 2) if errs else None,
        "share_rows_err_le_5pts": round(sum(e <= 5 for e in errs) / len(errs), 3) if errs else None,
        "max_clean_eps_hat_pct": round(max(clean), 2) if clean else None,
        "itlm_auto_ge_true_minus_1_share": (round(sum(r["itlm_auto"] >= r["itlm_true"] - 1 for r in acc_rows)
                                                  / len(acc_rows), 3) if acc_rows else None),
        "prl_auto_ge_true_minus_1_share": (round(sum(r["prl_auto"] >= r["prl_true"] - 1 for r in prl_rows)
                                                 / len(prl_rows), 3) if prl_rows else "not measured"),
        "cleanlab_rows": len(cl_rows),
        "ours_better_than_cleanlab_rows": sum(r["ours_err"] < r["cleanlab_err"] for r in cl_rows),
        "cleanlab_better_rows": sum(r["cleanlab_err"] < r["ours_err"] for r in cl_rows),
        "cleanlab_median_abs_err_pts": (round(statistics.median(r["cleanlab_err"] for r in cl_rows), 2)
                                        if cl_rows else None),
        "cleanlab_time_over_ours": round(cl_s / ours_s, 2) if ours_s else None,
    }
    # the same figures for `estimator="disagreement"` (pred = ours where a row has no predicted labels)
    p_errs = [r["pred_err"] for r in rows if r.get("pred_err") is not None]
    p_clean = [r["pred"] for r in rows if r["eps"] == 0 and r.get("pred") is not None]
    p_acc = [r for r in acc_rows if r.get("itlm_pred") is not None]
    p_cl = [r for r in cl_rows if r.get("pred_err") is not None]
    if p_errs:
        out["disagreement"] = {
            "median_abs_err_pts": round(statistics.median(p_errs), 2),
            "share_rows_err_le_5pts": round(sum(e <= 5 for e in p_errs) / len(p_errs), 3),
            "max_clean_eps_hat_pct": round(max(p_clean), 2) if p_clean else None,
            "itlm_auto_ge_true_minus_1_share": (round(sum(r["itlm_pred"] >= r["itlm_true"] - 1 for r in p_acc)
                                                      / len(p_acc), 3) if p_acc else None),
            "better_than_cleanlab_rows": sum(r["pred_err"] < r["cleanlab_err"] for r in p_cl),
            "cleanlab_better_rows": sum(r["cleanlab_err"] < r["pred_err"] for r in p_cl),
        }
    itlm_rows = [r for r in rows if r.get("itlm_last_err") is not None]
    if itlm_rows:
        out["itlm_last_median_abs_err_pts"] = round(statistics.median(r["itlm_last_err"] for r in itlm_rows), 2)
        out["itlm_rounds_estimating_0_on_noisy_rows"] = sum(r["itlm_zero_rounds"] for r in itlm_rows if r["eps"] > 0)
    out["targets_met"] = {
        "median_err_le_3": out["median_abs_err_pts"] is not None and out["median_abs_err_pts"] <= 3,
        "err_le_5_in_90pct_rows": out["share_rows_err_le_5pts"] is not None and out["share_rows_err_le_5pts"] >= 0.9,
        "clean_eps_hat_le_3": out["max_clean_eps_hat_pct"] is not None and out["max_clean_eps_hat_pct"] <= 3,
        "itlm_auto_within_1pt_in_80pct_rows": (out["itlm_auto_ge_true_minus_1_share"] is not None
                                               and out["itlm_auto_ge_true_minus_1_share"] >= 0.8),
        "ahead_of_cleanlab_in_more_rows_at_lower_time": (
            out["ours_better_than_cleanlab_rows"] > out["cleanlab_better_rows"]
            and (out["cleanlab_time_over_ours"] or 0) > 1),
    }
    return out


def _f(v: Any, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


DATA_NAMES = {"mnist": "MNIST 6k", "fashion": "FashionMNIST 6k", "fashion60k": "FashionMNIST 60k", "digits": "digits",
              "diabetes": "Diabetes", "landmarks": "MNIST landmarks", "moons": "two moons",
              "mnist_oneclass": "one-class MNIST"}


def render(rows: list[dict[str, Any]], head: dict[str, Any], meta: dict[str, Any]) -> str:
    p = meta["protocol"]
    lines = [
        "# Estimating the corrupted fraction (issue 15)", "",
        f"Run {meta['date']} on {meta['machine']}, mode `{meta['mode']}`, seeds {list(p['seeds'])} "
        f"(FashionMNIST 60k, if run: {list(p['full60k_seeds'])}), wall time {meta['wall_s'] / 60:.1f} min with "
        f"{meta['jobs']} worker(s); 2 CPU cores shared with other users (times are noisy).", "",
        "Settings (scaled to CPU): classification MLP (one hidden layer of "
        f"{p['hidden']}), SGD lr {p['lr']} momentum 0.9, batch {p['batch_size']} (digits 64); {p['epochs']} epochs "
        f"per round (digits {p['digits_epochs']}), ITLM round 0 on all + {p['rounds']} re-initialised rounds; "
        f"cleanlab {p['folds']}-fold CV of the same model and epochs. Regression MLP (2×256), Adam 1e-3, "
        f"Diabetes {p['diabetes_epochs']} / landmarks {p['landmarks_epochs']} epochs ({p['landmarks_size']} images). "
        f"Anomalies: RealNVP (6 couplings, width 64), Adam 1e-3, moons {p['moons_epochs']} epochs (n = "
        f"{p['moons_n']}), one-class MNIST {p['mnist_ad_epochs']} epochs on {p['pca_dim']} PCA features "
        "(normal digit = seed).", "",
        "ε̂ in %; |err| = mean over seeds of |ε̂ − ε| in points (ε: each seed's actual corrupted fraction). "
        "**ours** = `estimate_corruption(scores, 'gmm')` on the scores of the model trained on every sample "
        "(= the first estimate of ITLM auto with `estimator='gmm'`, and the estimator of the filters' "
        "`drop_ratio='auto'`); **disagreement** = `estimate_corruption_from_predictions` on the same model's "
        "scores and in-sample predicted labels (= the first estimate of ITLM auto with its default "
        "`estimator='disagreement'`; gmm on rows without labels); **ITLM last** = ITLM auto (gmm)'s estimate at "
        "its last scoring pass; "
        "**cleanlab CV** = confident-learning count on 5-fold CV probabilities; **in-sample** = the same count on the "
        "probabilities of the model trained on every sample. Time: ours = training + scoring + fit; cleanlab = 5 "
        "trainings + predictions + count.", "",
        "| data | corruption | ε % | ours ε̂ | ours \\|err\\| | bmm ε̂ | ITLM last ε̂ | cleanlab CV ε̂ | cleanlab \\|err\\| "
        "| cleanlab in-sample ε̂ | disagreement ε̂ | disagreement \\|err\\| | ours s | cleanlab s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {DATA_NAMES[r['data']]} | {r['kind']} | {r['eps']} | {_f(r['ours'])} | {_f(r['ours_err'])} | "
                     f"{_f(r.get('bmm'))} | {_f(r.get('itlm_last'))} | {_f(r.get('cleanlab'))} | "
                     f"{_f(r.get('cleanlab_err'))} | {_f(r.get('cleanlab_insample'))} | {_f(r.get('pred'))} | "
                     f"{_f(r.get('pred_err'))} | {_f(r.get('ours_s'))} | "
                     f"{_f(r.get('cleanlab_s'))} |")
    lines += ["", "Test accuracy (%, clean test set, mean over seeds); plain = round 0 of ITLM (the model trained "
              "one round's epochs on every sample).", "",
              "| data | corruption | ε % | plain | ITLM true | ITLM auto gmm | auto − true | ITLM auto disagreement | "
              "disagreement − true | PRL true | PRL auto | ITLM auto ε̂ per round (per seed) | disagreement ε̂ per "
              "round |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("itlm_auto") is None:
            continue
        diff = r["itlm_auto"] - r["itlm_true"] if r.get("itlm_true") is not None else None
        prl_auto = _f(r.get("prl_auto")) if r.get("prl_auto") is not None else "not measured"
        pdiff = (r["itlm_pred"] - r["itlm_true"] if r.get("itlm_true") is not None and r.get("itlm_pred") is not None
                 else None)
        lines.append(f"| {DATA_NAMES[r['data']]} | {r['kind']} | {r['eps']} | {_f(r.get('plain'))} | "
                     f"{_f(r.get('itlm_true'))} | {_f(r['itlm_auto'])} | {_f(diff)} | {_f(r.get('itlm_pred'))} | "
                     f"{_f(pdiff)} | {_f(r.get('prl_true'))} | {prl_auto} | {r.get('itlm_estimates')} | "
                     f"{r.get('itlm_pred_estimates', '–')} |")
    notes = {r["prl_auto_note"] for r in rows if r.get("prl_auto_note")} | ({meta["prl_note"]} - {None})
    if notes:
        lines += ["", f"PRL(L) true / auto: {notes.pop()}"]
    t = head["targets_met"]
    lines += ["", "## Headline and targets", "",
              "`estimator='gmm'` (the loss mixture; ITLM's default before issue 15, the filters' estimator):", "",
              f"- median |ε̂ − ε| over all {head['rows']} rows: {head['median_abs_err_pts']} points (target ≤ 3: "
              f"{'met' if t['median_err_le_3'] else 'not met'})",
              f"- rows within 5 points: {100 * head['share_rows_err_le_5pts']:.0f} % (target ≥ 90 %: "
              f"{'met' if t['err_le_5_in_90pct_rows'] else 'not met'})",
              f"- clean data: largest ε̂ {head['max_clean_eps_hat_pct']} % (target ≤ 3 %: "
              f"{'met' if t['clean_eps_hat_le_3'] else 'not met'})",
              f"- ITLM auto ≥ ITLM true − 1 point in {_f(100 * (head['itlm_auto_ge_true_minus_1_share'] or 0), 0)} % of "
              f"classification rows (target ≥ 80 %: {'met' if t['itlm_auto_within_1pt_in_80pct_rows'] else 'not met'})"
              f"; PRL auto: {head['prl_auto_ge_true_minus_1_share']}",
              f"- against cleanlab CV on {head['cleanlab_rows']} classification rows: ours closer in "
              f"{head['ours_better_than_cleanlab_rows']}, cleanlab closer in {head['cleanlab_better_rows']} (median "
              f"error cleanlab {head['cleanlab_median_abs_err_pts']} points); cleanlab took "
              f"{head['cleanlab_time_over_ours']}× our time (target: ahead in more rows at lower time: "
              f"{'met' if t['ahead_of_cleanlab_in_more_rows_at_lower_time'] else 'not met'})"]
    if "disagreement" in head:
        d = head["disagreement"]

        def met(ok: bool) -> str:
            return "met" if ok else "not met"

        share = d["itlm_auto_ge_true_minus_1_share"] or 0
        lines += ["", "`estimator='disagreement'` (ITLM's default; `estimate_corruption_from_predictions` on the same "
                  "model's in-sample predictions, gmm on rows without labels):", "",
                  f"- median |ε̂ − ε| {d['median_abs_err_pts']} points (target ≤ 3: "
                  f"{met(d['median_abs_err_pts'] <= 3)}); {100 * d['share_rows_err_le_5pts']:.0f} % of rows within 5 "
                  f"points (target ≥ 90 %: {met(d['share_rows_err_le_5pts'] >= 0.9)}); largest clean ε̂ "
                  f"{d['max_clean_eps_hat_pct']} % (target ≤ 3 %: {met((d['max_clean_eps_hat_pct'] or 0) <= 3)})",
                  f"- ITLM auto with it ≥ ITLM true − 1 point in {_f(100 * share, 0)} % of classification rows "
                  f"(target ≥ 80 %: {met(share >= 0.8)})",
                  f"- against cleanlab CV: closer in {d['better_than_cleanlab_rows']} rows, cleanlab closer in "
                  f"{d['cleanlab_better_rows']} (target: ahead in more rows: "
                  f"{met(d['better_than_cleanlab_rows'] > d['cleanlab_better_rows'])})", ""]
    if "itlm_last_median_abs_err_pts" in head:
        lines.append(f"- ITLM auto (gmm)'s last-round estimate: median error {head['itlm_last_median_abs_err_pts']} points; "
                     f"rounds that estimated 0 on noisy rows: {head['itlm_rounds_estimating_0_on_noisy_rows']}")
    return "\n".join(lines) + "\n"


def ab_reestimate(args: argparse.Namespace) -> dict[str, Any]:
    """``ITLM(keep_ratio="auto")`` with ``reestimate=True`` (every round, the behaviour before the option) and
    ``False`` (keep the first positive estimate) on label-noise rows, seeds 100-101, 5 epochs x (1 + 3) rounds."""
    proto = replace(FULL, epochs=5, rounds=3)
    sel = [("random", 10), ("random", 20), ("random", 30), ("systematic", 20), ("clean", 0)]
    rows = [dict(group="cls", data=d, kind=k, eps=e) for d in ("mnist", "fashion", "digits") for k, e in sel]
    tasks = [{"row": r, "seed": s, "protocol": proto, "methods": ("itlm_auto",), "data_root": args.data_root,
              "reestimate": re} for r in rows for s in (100, 101) for re in (True, False)]
    t0 = time.perf_counter()
    res = list(run_tasks(run_task, tasks, args.jobs))
    print("| data | noise | ε % | seed | every round: ε̂ | acc | first positive: ε̂ | acc |\n|---|---|---|---|---|---|---|---|")
    err = {True: [], False: []}
    acc: dict[bool, list[float]] = {True: [], False: []}
    for every, first in zip(res[::2], res[1::2]):
        r = every["row"]
        cells = [" / ".join(f"{100 * e:.1f}" for e in x["itlm_auto_estimates"]) for x in (every, first)]
        print(f"| {r['data']} | {r['kind']} | {r['eps']} | {every['seed']} | {cells[0]} | {every['itlm_auto']:.1f} | "
              f"{cells[1]} | {first['itlm_auto']:.1f} |")
        for flag, x in ((True, every), (False, first)):
            err[flag].append(100 * abs(x["itlm_auto_estimates"][-1] - x["true_eps"]))
            acc[flag].append(x["itlm_auto"])
    summary = {"benchmark": "corruption_rate", "mode": "ab_reestimate", "wall_s": round(time.perf_counter() - t0, 1)}
    for flag, name in ((True, "every_round"), (False, "first_positive")):
        summary[name] = {"median_last_abs_err_pts": round(statistics.median(err[flag]), 2),
                         "share_last_err_le_5pts": round(sum(e <= 5 for e in err[flag]) / len(err[flag]), 3),
                         "mean_test_acc": round(statistics.fmean(acc[flag]), 2)}
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="four rows, one seed (< 60 s)")
    mode.add_argument("--smoke", action="store_true", help="three tiny rows, for the test suite")
    mode.add_argument("--ab-reestimate", action="store_true",
                      help="ITLM auto with reestimate=True vs False (results/corruption_rate_reestimate.md)")
    ap.add_argument("--data-root", default=os.environ.get("LIT_ROBUST_DATA", str(DEFAULT_DATA_ROOT)))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=list(CLS_METHODS),
                    help=f"classification columns among {list(CLS_METHODS)} (itlm_auto always runs)")
    ap.add_argument("--groups", nargs="+", default=["cls", "reg", "ad"], help="row groups among cls, reg, ad")
    ap.add_argument("--data", nargs="+", default=None, help="only these data sets (e.g. mnist digits moons)")
    ap.add_argument("--with-60k", action="store_true", help="add FashionMNIST's 60,000 (two rows, seed 0; slow)")
    ap.add_argument("--cache", default=None, metavar="DIR",
                    help="also write each row and seed's scores, in-sample probabilities, labels and true mask to "
                         "DIR/*.npz (for offline estimator comparisons; benchmarks/cache/ is gitignored)")
    ap.add_argument("--out", default=None, help="markdown path (default: results/corruption_rate.md in full mode)")
    args = ap.parse_args(argv)
    if args.jobs not in (1, 2):
        raise SystemExit(f"`--jobs` must be 1 or 2 (the machine has 2 shared cores), got {args.jobs}.")
    bad = sorted(set(args.methods) - set(CLS_METHODS))
    if bad:
        raise SystemExit(f"`--methods` must be among {list(CLS_METHODS)}, got {bad}.")
    bad = sorted(set(args.groups) - {"cls", "reg", "ad"})
    if bad:
        raise SystemExit(f"`--groups` must be among ['cls', 'reg', 'ad'], got {bad}.")
    if args.ab_reestimate:
        return ab_reestimate(args)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    proto = SMOKE if args.smoke else QUICK if args.quick else FULL
    methods = tuple(dict.fromkeys(["itlm_auto", *args.methods]))
    prl_note = None
    if "prl_auto" in methods:
        from lit_robust import BatchFilter

        try:
            BatchFilter("prl", drop_ratio="auto")
        except (ValueError, TypeError) as err:
            # without the auto column the PRL true-rate column is not compared with anything: skip both
            prl_note = f"not measured: `BatchFilter(drop_ratio='auto')` is not in this checkout ({err})"
            methods = tuple(m for m in methods if m not in ("prl_auto", "prl_true"))
            print(f"PRL(L) columns {prl_note}", flush=True)
    rows = [r for r in rows_for(mode_name, args.with_60k) if r["group"] in args.groups and (args.data is None
                                                                             or r["data"] in args.data)]
    tasks = []
    for row in rows:
        seeds = proto.full60k_seeds if row["data"] == "fashion60k" else proto.seeds
        for seed in seeds:
            tasks.append({"row": row, "seed": seed, "protocol": proto, "methods": methods,
                          "data_root": args.data_root, "cache_dir": args.cache})
    # the slowest first, so the two workers finish together
    weight = {"fashion60k": 100, "mnist": 10, "fashion": 10, "landmarks": 3}
    tasks.sort(key=lambda t: -weight.get(t["row"]["data"], 1))
    t0 = time.perf_counter()
    results = []
    for res in run_tasks(run_task, tasks, args.jobs):
        res.pop("scores_round1", None)
        res.pop("score_history", None)
        results.append(res)
        r = res["row"]
        print(f"  {r['data']} {r['kind']} {r['eps']}% seed {res['seed']}: eps_hat ours {100 * res['ours']:.1f} "
              + (f"cleanlab {100 * res['cleanlab']:.1f} " if res.get("cleanlab") is not None else "")
              + (f"acc plain {res['plain']:.1f} true {res.get('itlm_true', float('nan')):.1f} auto "
                 f"{res['itlm_auto']:.1f}" if "itlm_auto" in res else ""), flush=True)
    wall = time.perf_counter() - t0
    order = {_key(r): i for i, r in enumerate(rows)}
    results.sort(key=lambda r: (order[_key(r["row"])], r["seed"]))
    agg = aggregate(results)
    head = headline(agg)
    meta = {"date": _dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "mode": mode_name, "jobs": args.jobs, "wall_s": wall, "protocol": asdict(proto),
            "methods": list(methods), "prl_note": prl_note}
    text = render(agg, head, meta)
    print(text)
    out = args.out or (str(DEFAULT_OUT) if mode_name == "full" else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps({"meta": meta, "headline": head, "rows": agg,
                                                               "runs": results}, indent=1, default=str))
    summary = {"benchmark": "corruption_rate", "mode": mode_name, "wall_s": round(wall, 1), **head}
    print(json.dumps(summary, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))
    return summary


if __name__ == "__main__":
    main()
