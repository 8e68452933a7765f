"""Benchmark: per-batch robust filters (robust_dnn_thesis Tables 4.1 and 4.2, scaled to 2 CPU cores).

Classification (thesis Table 4.2 protocol: Adam, lr 0.001, momentum 0.9, batch 128; drop ratio ε = the
noise rate; the kept fraction warms up linearly over T_k epochs; test accuracy averaged over the last 10
epochs; 3 seeds), on the offline MNIST and FashionMNIST instead of CIFAR:

* symmetric 50 % (each corrupted label drawn uniformly among the other classes; ε = 0.5 needs
  ``allow_large_drop=True``, as the thesis also ran symmetric noise at and beyond 0.5) and pairflip 45 %
  (label a → a+1);
* Standard, SPL, PRL(L), PRL(G), Co-teaching, Co-PRL(L), Bootstrap (hard, β = 0.8, Reed et al.);
* a two-hidden-layer MLP (784-256-256-10, ReLU) instead of the thesis's CNN (which has BatchNorm, so the
  thesis could not run PRL(G) on it); ``FULL`` below gives the sizes and epochs.

Regression (thesis Table 4.1 protocol: a 3-layer fully connected network with 256 hidden units and leaky
ReLU, Adam with momentum 0.9, batch 512, R² on clean test data averaged over the last 10 epochs), on the
offline MNIST "ink landmarks" (:class:`lit_robust.MNISTLandmarksDataModule`: 10 standardised coordinates,
a real stand-in for CelebA's landmarks) instead of CNN features of CelebA:

* linadv, signflip, uninoise, pairflip, mixture at 10/20/30/40 %;
* Standard (MSE), Huber, SPL (= PRL(L) for the MSE loss: ‖ŷ−y‖₂ ranks like the loss), PRL(G), Co-PRL(L).

The paper's numbers are printed beside ours: for regression Table 4.1 (CelebA); for classification the
CIFAR-10 rows of Table 4.2 — a different data set, so only the *orderings* are comparable.

Usage::

    python benchmarks/batch_filters.py            # full tables -> benchmarks/results/batch_filters.md (+ .json)
    python benchmarks/batch_filters.py --quick    # one classification and one regression row (< 60 s)
    python benchmarks/batch_filters.py --smoke    # a few seconds, for the test suite
    python benchmarks/batch_filters.py --render benchmarks/results/batch_filters.json   # re-print a saved run

Own options: ``--part cls|reg``, ``--methods``, ``--cls-epochs``, ``--reg-epochs``, ``--reg-lr``; the rest
(``--seeds``, ``--jobs``, ``--out``, ``--data-root``) is the harness's (``benchmarks/harness.py``). The last line
printed is one JSON object with the headline figures. ``results/batch_filters_bn.md`` is a saved run of an option
since removed (``--part bn``, commit ec686ea); it renders from its JSON here and cannot be re-run from this checkout.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Benchmark, main, md_table, mean_std, pm, quiet, trainer  # noqa: E402

CLS_METHODS = ["standard", "spl", "prl", "prl_g", "coteaching", "co_prl", "bootstrap"]
REG_METHODS = ["standard", "huber", "spl", "prl_g", "co_prl"]
LABEL = {"standard": "Standard", "spl": "SPL", "prl": "PRL(L)", "prl_g": "PRL(G)", "coteaching": "Co-teaching",
         "co_prl": "Co-PRL(L)", "bootstrap": "Bootstrap", "huber": "Huber"}
CORRUPTIONS = ["linadv", "signflip", "uninoise", "pairflip", "mixture"]

# robust_dnn_thesis Table 4.2, CIFAR-10 rows (no PRL(G): the CNN has BatchNorm)
PAPER_CLS = {
    ("symmetric", 50): dict(standard=44.63, spl=72.22, prl=74.17, coteaching=74.25, co_prl=75.43, bootstrap=46.13),
    ("pairflip", 45): dict(standard=48.05, spl=58.95, prl=71.42, coteaching=72.43, co_prl=73.78, bootstrap=47.84),
}
# robust_dnn_thesis Table 4.1 (CelebA): Standard, Huber, PRL(G), PRL(L) (= SPL for MSE), Co-PRL(L)
_T41 = {
    "linadv": [(-2.33, .868, .876, .876, .876), (-8.65, .817, .871, .869, .869), (-18.529, .592, .865, .861, .860),
               (-32.22, -2.529, .857, .847, .847)],
    "signflip": [(.800, .857, .877, .878, .879), (.641, .786, .875, .875, .877), (.422, .629, .871, .873, .875),
                 (.193, .379, .872, .872, .871)],
    "uninoise": [(.845, .875, .879, .881, .881), (.798, .865, .878, .880, .880), (.728, .847, .878, .879, .879),
                 (.656, .825, .876, .878, .878)],
    "pairflip": [(.852, .870, .877, .876, .878), (.784, .841, .874, .873, .874), (.688, .770, .870, .872, .873),
                 (.556, .642, .863, .870, .870)],
    "mixture": [(-.212, .873, .878, .880, .880), (-.404, .855, .877, .878, .879), (-.716, .823, .875, .877, .878),
                (-3.130, .763, .872, .875, .876)],
}
PAPER_REG = {(c, 10 * (i + 1)): dict(zip(("standard", "huber", "prl_g", "spl", "co_prl"), v))
             for c, rows in _T41.items() for i, v in enumerate(rows)}


@dataclass(frozen=True)
class Protocol:
    cls_rows: tuple[tuple[str, str, int], ...]  # (dataset, noise, %)
    reg_rows: tuple[tuple[str, int], ...]  # (corruption, %)
    cls_methods: tuple[str, ...]
    reg_methods: tuple[str, ...]
    cls_epochs: int
    cls_train_size: int
    cls_warmup: int
    reg_epochs: int
    reg_train_size: int
    reg_warmup: int
    reg_lr: float
    last: int  # epochs averaged at the end
    cls_batch: int = 128
    cls_lr: float = 1e-3
    reg_batch: int = 512
    hidden: int = 256
    bootstrap_beta: float = 0.8
    seeds: tuple[int, ...] = (0, 1, 2)


FULL = Protocol(
    cls_rows=tuple((d, n, p) for d in ("mnist", "fashion") for n, p in (("symmetric", 50), ("pairflip", 45))),
    reg_rows=tuple((c, p) for c in CORRUPTIONS for p in (10, 20, 30, 40)),
    cls_methods=tuple(CLS_METHODS), reg_methods=tuple(REG_METHODS),
    cls_epochs=15, cls_train_size=4000, cls_warmup=5,
    reg_epochs=15, reg_train_size=4000, reg_warmup=5, reg_lr=1e-3, last=10)
QUICK = replace(FULL, cls_rows=(("mnist", "pairflip", 45),), reg_rows=(("signflip", 40),),
                cls_epochs=6, cls_train_size=2000, cls_warmup=2, reg_epochs=8, reg_train_size=2000, reg_warmup=2,
                last=3, seeds=(0,))
SMOKE = replace(QUICK, cls_methods=("standard", "co_prl"), reg_methods=("standard", "prl_g"), cls_epochs=2,
                cls_train_size=256, cls_warmup=1, reg_epochs=2, reg_train_size=256, reg_warmup=1, last=1)


# -- one run ---------------------------------------------------------------------------------------------
def _epoch_eval(x: torch.Tensor, y: torch.Tensor, metric: str):
    """A callback evaluating the module on clean test tensors at every training-epoch end."""
    from pytorch_lightning.callbacks import Callback
    from torchmetrics.functional import r2_score

    class EpochEval(Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        @torch.no_grad()
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            was_training = pl_module.training
            pl_module.eval()
            out = torch.cat([pl_module(x[i:i + 2000]) for i in range(0, len(x), 2000)])
            pl_module.train(was_training)
            if metric == "acc":
                self.values.append(100.0 * float((out.argmax(-1) == y).float().mean()))
            else:
                self.values.append(float(r2_score(out, y, multioutput="uniform_average")))

    return EpochEval()


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one method on one corrupted data set with one seed; the per-epoch clean test metric."""
    quiet()
    torch.set_num_threads(1)
    import pytorch_lightning as pl

    from lit_robust import (
        BatchFilter,
        CoTeaching,
        FashionMNISTDataModule,
        ImageClassifier,
        MLPRegressor,
        MNISTDataModule,
        MNISTLandmarksDataModule,
    )

    p = Protocol(**task["proto"])
    method, seed, pct = task["method"], task["seed"], task["pct"]
    eps = pct / 100
    t0 = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    if task["kind"] == "cls":
        cls = MNISTDataModule if task["dataset"] == "mnist" else FashionMNISTDataModule
        noise = "random" if task["noise"] == "symmetric" else "systematic"
        dm = cls(root=task["data_root"], clean_ratio=1 - eps, noise=noise, train_size=p.cls_train_size,
                 batch_size=p.cls_batch, seed=seed)
        model = ImageClassifier(backbone="mlp", hidden=p.hidden, hidden_layers=2, optimizer="adam", lr=p.cls_lr,
                                momentum=0.9, loss="bootstrap_hard" if method == "bootstrap" else "ce",
                                bootstrap_beta=p.bootstrap_beta)
        epochs, warmup, metric = p.cls_epochs, p.cls_warmup, "acc"
    else:
        dm = MNISTLandmarksDataModule(root=task["data_root"], corruption=task["corruption"], corrupt_ratio=eps,
                                      train_size=p.reg_train_size, batch_size=p.reg_batch, seed=seed)
        model = MLPRegressor(784, 10, hidden=p.hidden, hidden_layers=2, lr=p.reg_lr,
                             loss="huber" if method == "huber" else "mse")
        epochs, warmup, metric = p.reg_epochs, p.reg_warmup, "r2"
    dm.setup("fit")
    test = dm.test_set[:]
    x_test, y_test = test[1], test[2]
    large = eps >= 0.5
    callbacks: list = []
    filt = None
    if method in ("spl", "prl", "prl_g"):
        filt = BatchFilter(method, drop_ratio=eps, warmup_epochs=warmup, allow_large_drop=large)
        callbacks.append(filt)
    elif method in ("coteaching", "co_prl"):
        model = CoTeaching(model, rule="spl" if method == "coteaching" else "prl", drop_ratio=eps,
                           warmup_epochs=warmup, seed=10_000 + seed, allow_large_drop=large)
    ev = _epoch_eval(x_test, y_test, metric)
    trainer(epochs, callbacks + [ev], limit_val_batches=0).fit(model, dm)
    history = filt.history if filt is not None else getattr(model, "history", [])
    last = history[-1] if history else None
    rejects = None
    if last is not None:
        rejects = getattr(last, "dropped_corrupted_frac", None)
        if rejects is None:
            rejects = getattr(last, "dropped_corrupted_frac_1", None)
    values = ev.values
    return _report(dict(kind=task["kind"], dataset=task.get("dataset"), noise=task.get("noise"),
                corruption=task.get("corruption"), pct=pct, method=method, seed=seed, per_epoch=values,
                last_mean=sum(values[-p.last:]) / len(values[-p.last:]),
                rejects_corrupted=None if rejects is None else 100.0 * rejects,
                corrupted_frac=None if last is None or last.corrupted_frac is None else 100.0 * last.corrupted_frac,
                seconds=round(time.perf_counter() - t0, 1), n_test=len(y_test)))


def _report(res: dict[str, Any]) -> dict[str, Any]:
    row = f"{res['dataset']} {res['noise']}" if res["kind"] == "cls" else res["corruption"]
    rej = "" if res["rejects_corrupted"] is None else f" | rejects {res['rejects_corrupted']:.1f}% corrupted"
    print(f"# {row} {res['pct']}% {LABEL[res['method']]:>11} seed {res['seed']}: last-{len(res['per_epoch'])} "
          f"curve end {res['per_epoch'][-1]:.3f}, last mean {res['last_mean']:.3f}{rej} ({res['seconds']} s)",
          file=sys.stderr, flush=True)
    return res


# -- tables (from the saved run only) ----------------------------------------------------------------------
def aggregate(results: list[dict[str, Any]]) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Per kind (``cls``, ``reg``, and ``bn`` in the saved BatchNorm run), row and method: the cell's figures."""
    out: dict[str, dict[tuple, dict[str, Any]]] = {"cls": {}, "reg": {}, "bn": {}}
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["dataset"], r["noise"], r["pct"]) if r["kind"] != "reg" else (r["corruption"], r["pct"])
        groups.setdefault((r["kind"], key, r["method"]), []).append(r)
    for (kind, key, method), rs in groups.items():
        m, s = mean_std(r["last_mean"] for r in rs)
        rej = [r["rejects_corrupted"] for r in rs if r["rejects_corrupted"] is not None]
        out[kind].setdefault(key, {})[method] = dict(
            mean=m, std=s, n=len(rs), rejects=mean_std(rej)[0] if rej else None, corrupted=rs[0]["corrupted_frac"],
            seconds=mean_std(r["seconds"] for r in rs)[0],
            per_seed=[round(r["last_mean"], 2) for r in sorted(rs, key=lambda r: r["seed"])])
    return out


def orderings(table: dict[tuple, dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """Per classification row, whether the thesis's orderings hold in our means."""
    res = {}
    for key, cells in table.items():
        g = {m: c["mean"] for m, c in cells.items()}
        checks = {}
        if {"prl", "spl", "standard"} <= g.keys():
            checks["prl>spl>standard"] = g["prl"] > g["spl"] > g["standard"]
        if {"co_prl", "coteaching"} <= g.keys():
            checks["co_prl>=coteaching"] = g["co_prl"] >= g["coteaching"]
        res["_".join(str(k) for k in key)] = checks
    return res


# the thesis's orderings, checked seed by seed: (label, winner, loser, strict)
PAIRS = [("PRL(L) > SPL", "prl", "spl", True), ("SPL > Standard", "spl", "standard", True),
         ("Co-PRL(L) ≥ Co-teaching", "co_prl", "coteaching", False)]


def per_seed_wins(results: list[dict[str, Any]]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per classification row and ordering of ``PAIRS``: (seeds where it holds, seeds with both methods)."""
    runs: dict[tuple, dict[str, float]] = {}
    for r in results:
        if r["kind"] == "cls":
            runs.setdefault((r["dataset"], r["noise"], r["pct"], r["seed"]), {})[r["method"]] = r["last_mean"]
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for (ds, noise, pct, _seed), g in sorted(runs.items()):
        row = out.setdefault(f"{ds}_{noise}_{pct}", {})
        for label, a, b, strict in PAIRS:
            if a in g and b in g:
                won, n = row.get(label, (0, 0))
                row[label] = (won + (g[a] > g[b] if strict else g[a] >= g[b]), n + 1)
    return out


def _data_name(ds: str) -> str:
    return "MNIST" if ds == "mnist" else "FashionMNIST"


def render(saved: dict) -> str:
    """The markdown of a saved run: the filter tables, or the saved BatchNorm run (``settings.part == "bn"``)."""
    return _render_bn(saved) if saved["settings"].get("part") == "bn" else _render_filters(saved)


def _render_filters(saved: dict) -> str:
    p, m, agg = saved["settings"], saved["meta"], aggregate(saved["results"])
    cls_m, reg_m = list(p["cls_methods"]), list(p["reg_methods"])
    torch_note = f" torch {m['torch']}." if m.get("torch") else ""
    lines = ["# Per-batch robust filters (robust_dnn_thesis Tables 4.1 / 4.2, scaled to CPU)", "",
             f"Produced by `{m['command']}` on {m['date']} ({m['machine']}, {m['jobs']} worker process(es) × 1 torch "
             f"thread(s)); wall time {m['wall_s'] / 60:.1f} min; seeds {list(p['seeds'])}.{torch_note}",
             _reproduce(saved),
             "Each cell: mean ± std over seeds of the clean-test metric averaged over the last "
             f"{p['last']} epochs; drop ratio ε = corruption rate, warm-up T_k epochs; paper's value in parentheses.",
             ""]
    if agg["cls"]:
        lines += ["## Classification: test accuracy (%)", "",
                  f"MLP 784-256-256-10, Adam lr {p['cls_lr']}, batch {p['cls_batch']}, {p['cls_epochs']} epochs, "
                  f"T_k = {p['cls_warmup']}, {p['cls_train_size']} training images per data set (seeded subsamples "
                  "of the offline 6,000 MNIST / 60,000 FashionMNIST training images), the full offline test sets "
                  "(4,000 / 10,000). Symmetric = `noise='random'`, pairflip = `noise='systematic'` (a → a+1). "
                  "Paper column: CIFAR-10 (Table 4.2), not comparable in level — compare orderings.", "",
                  "| data | noise | " + " | ".join(LABEL[m] for m in cls_m) + " |",
                  "|---|---|" + "---|" * len(cls_m)]
        for (ds, noise, pct), cells in sorted(agg["cls"].items()):
            paper = PAPER_CLS.get((noise, pct), {})
            row = [("–" if cells.get(m) is None else pm(cells[m]["mean"], cells[m]["std"], 2, n=cells[m]["n"]))
                   + (f" ({paper[m]:.2f})" if m in paper else "") for m in cls_m]
            lines.append(f"| {_data_name(ds)} | {noise} {pct} % | " + " | ".join(row) + " |")
        lines += ["", "Orderings (ours, on the means over seeds; the thesis's hold on CIFAR-10), and in how many "
                  "seeds each holds seed by seed:", ""]
        wins = per_seed_wins(saved["results"])
        for key, checks in orderings(agg["cls"]).items():
            seeds = "; ".join(f"{label} in {won} of {n}" for label, (won, n) in wins.get(key, {}).items())
            lines.append(f"- {key}: " + ", ".join(f"{k} **{'holds' if v else 'does not hold'}**"
                                                  for k, v in checks.items()) + (f" — per seed: {seeds}" if seeds else ""))
        totals = {label: tuple(map(sum, zip(*(row[label] for row in wins.values() if label in row))))
                  for label, *_ in PAIRS if any(label in row for row in wins.values())}
        if totals:
            lines += ["", "Per seed over all rows: " + "; ".join(f"{label} in {won} of {n} (row, seed) pairs"
                                                             for label, (won, n) in totals.items()) + "."]
        filters = [m for m in cls_m if m not in ("standard", "bootstrap")]
        lines += ["", "Corrupted fraction among the samples each filter rejected in the last epoch (%; random "
                  "rejection would reach the corruption rate; Co-teaching: network 1's rejects):", "",
                  "| data | noise | " + " | ".join(LABEL[m] for m in filters) + " |", "|---|---|" + "---|" * len(filters)]
        for (ds, noise, pct), cells in sorted(agg["cls"].items()):
            row = [("–" if cells.get(m, {}).get("rejects") is None else f"{cells[m]['rejects']:.1f}") for m in filters]
            lines.append(f"| {_data_name(ds)} | {noise} {pct} % | " + " | ".join(row) + " |")
        lines.append("")
    if agg["reg"]:
        lines += ["## Regression: test R² (MNIST ink landmarks, 10 targets)", "",
                  f"MLP 784-256-256-10 (leaky ReLU), Adam lr {p['reg_lr']}, batch {p['reg_batch']}, "
                  f"{p['reg_epochs']} epochs, T_k = {p['reg_warmup']}, {p['reg_train_size']} training images (seeded "
                  "subsample of the offline 6,000), "
                  "4,000 clean test images; targets standardised. Paper: CelebA landmarks (Table 4.1).", "",
                  "| corruption | " + " | ".join(LABEL[m] + (" †" if m == "spl" else "") for m in reg_m) + " |",
                  "|---|" + "---|" * len(reg_m)]
        for (corr, pct), cells in sorted(agg["reg"].items(), key=lambda kv: (CORRUPTIONS.index(kv[0][0]), kv[0][1])):
            paper = PAPER_REG.get((corr, pct), {})
            row = [("–" if cells.get(m) is None else pm(cells[m]["mean"], cells[m]["std"], 3, n=cells[m]["n"]))
                   + (f" ({paper[m]:.3f})" if m in paper else "") for m in reg_m]
            lines.append(f"| {corr} {pct} % | " + " | ".join(row) + " |")
        if "spl" in reg_m:
            lines += ["", "† The paper's values in the SPL column are Table 4.1's PRL(L) column: the table has no SPL "
                      "column, and the thesis says SPL has the same form as PRL(L) for regression with the mean square "
                      "error, the loss-layer gradient norm being the loss itself (§4.3.6, and again in the list of "
                      "baselines of §4.4)."]
        lines.append("")
    return "\n".join(lines)


def _reproduce(saved: dict) -> str:
    """The command that writes this table where it is committed: a full run's ``--out`` elsewhere (a scratch folder)
    is dropped when it named ``batch_filters.md``, since full mode writes ``benchmarks/results/batch_filters.md``."""
    argv, out = harness.split_out(saved["meta"]["command"])
    cmd = shlex.join(argv) if saved["mode"] == "full" and out is not None and Path(out).name == "batch_filters.md" \
        else saved["meta"]["command"]
    return f"Reproduce: `{cmd}` " + harness.reproduce_note({**saved, "meta": {**saved["meta"], "command": cmd}},
                                                           "batch_filters.json") + "."


BN_NAMES = {"standard": "Standard", "prl": "PRL(L)", "prl_refit": "PRL(L), refit_kept"}


def _render_bn(saved: dict) -> str:
    """The saved run of ``--part bn`` (commit ec686ea; the option was removed after it): its table from the runs,
    its header and the verdict written with it from ``meta``."""
    p, m, agg = saved["settings"], saved["meta"], aggregate(saved["results"])
    methods = list(dict.fromkeys(x for proto in p["protocols"] for x in proto["bn_methods"]))
    q = p["protocols"][0]
    lines = ["# PRL's kept-subset forward on a BatchNorm CNN (issue 16, item 6)", "",
             f"Produced at commit {m['commit']} by `python benchmarks/batch_filters.py` on {m['date']} "
             f"({m['machine']}, {m['jobs']} worker process(es) × 1 torch thread(s)); wall time ({m['runs']}) "
             f"{m['wall_s'] / 60:.1f} min; seeds {list(p['seeds'])}.",
             "Drop ratio ε = the corruption rate (symmetric 50 %: `allow_large_drop=True`), warm-up T_k epochs, the "
             "same seeds and data for every method.", "",
             "## BatchNorm CNN: PRL's kept-subset forward (`BatchFilter(refit_kept=True)`)", "",
             f"The CNN of `bn_cnn()` (BatchNorm after each of 4 convolutions, training mode), Adam lr "
             f"{q['cls_lr']}, batch {q['cls_batch']}, {q['bn_epochs']} epochs, T_k = {q['bn_warmup']}, "
             f"{q['bn_train_size']} training images (seeded subsample of the offline 6,000 MNIST), the 4,000 "
             f"clean test images; test accuracy (%) averaged over the last {q['bn_last']} epochs, mean ± std "
             "over seeds (per seed in brackets); seconds per run (mean; the machine was shared).", "",
             *md_table(["data", "noise", *(BN_NAMES[x] for x in methods)],
                       [[_data_name(ds), f"{noise} {pct} %",
                         *("–" if cells.get(x) is None else f"{pm(cells[x]['mean'], cells[x]['std'], 2, n=cells[x]['n'])} "
                           f"{cells[x]['per_seed']} ({cells[x]['seconds']:.0f} s)" for x in methods)]
                        for (ds, noise, pct), cells in sorted(agg["bn"].items())]), "",
             *m["verdict"]]
    return "\n".join(lines)


def headline(saved: dict) -> dict[str, Any]:
    agg = aggregate(saved["results"])
    if saved["settings"].get("part") == "bn":
        return {"batchnorm": {"_".join(str(k) for k in key): {m: round(c["mean"], 2) for m, c in cells.items()}
                              for key, cells in sorted(agg["bn"].items())}}
    cls = {"_".join(str(k) for k in key): {m: round(c["mean"], 2) for m, c in cells.items()}
           for key, cells in sorted(agg["cls"].items())}
    reg = {f"{c}_{p}": {m: round(v["mean"], 3) for m, v in cells.items()} for (c, p), cells in sorted(agg["reg"].items())}
    return {"seeds": list(saved["settings"]["seeds"]), "classification": cls, "orderings": orderings(agg["cls"]),
            "regression": reg}


# -- the script's own options and its tasks ---------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", choices=("all", "cls", "reg"), default="all", help="only the classification or "
                   "regression rows")
    p.add_argument("--methods", nargs="+", default=None, help=f"restrict to these methods, among "
                   f"{list(dict.fromkeys(CLS_METHODS + REG_METHODS))}")
    p.add_argument("--cls-epochs", type=int, default=None, help="replace the classification epochs")
    p.add_argument("--reg-epochs", type=int, default=None, help="replace the regression epochs")
    p.add_argument("--reg-lr", type=float, default=None, help="replace the regression learning rate")


def configure(proto: Protocol, args: argparse.Namespace) -> Protocol:
    over: dict[str, Any] = {}
    for name in ("cls_epochs", "reg_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"`--{name.replace('_', '-')}` must be an integer >= 1, got {value}")
        if value is not None:
            over[name] = value
    if args.reg_lr is not None:
        if not args.reg_lr > 0:  # also NaN
            raise SystemExit(f"`--reg-lr` must be a float > 0, got {args.reg_lr}")
        over["reg_lr"] = args.reg_lr
    if args.part == "cls":
        over["reg_rows"] = ()
    elif args.part == "reg":
        over["cls_rows"] = ()
    if args.methods:
        known = list(dict.fromkeys(CLS_METHODS + REG_METHODS))
        bad = [m for m in args.methods if m not in known]
        if bad:
            raise SystemExit(f"`--methods` must be among {known}, got {bad}")
        over["cls_methods"] = tuple(m for m in proto.cls_methods if m in args.methods)
        over["reg_methods"] = tuple(m for m in proto.reg_methods if m in args.methods)
    return replace(proto, **over)


def tasks(p: Protocol, args: argparse.Namespace) -> list[dict]:
    common = dict(proto=asdict(p), data_root=args.data_root)
    out = [dict(kind="cls", dataset=d, noise=n, pct=pc, method=m, seed=s, **common)
           for (d, n, pc) in p.cls_rows for m in p.cls_methods for s in p.seeds]
    return out + [dict(kind="reg", corruption=c, pct=pc, method=m, seed=s, **common)
                  for (c, pc) in p.reg_rows for m in p.reg_methods for s in p.seeds]


BENCHMARK = Benchmark(name="batch_filters", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_one, render=render, headline=headline, add_arguments=add_arguments,
                      configure=configure)

if __name__ == "__main__":
    main(BENCHMARK)
