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

    python benchmarks/batch_filters.py            # full tables -> benchmarks/results/batch_filters.md
    python benchmarks/batch_filters.py --quick    # one classification and one regression row (< 60 s)
    python benchmarks/batch_filters.py --smoke    # a few seconds, for the test suite

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import mean_std, quiet, run_tasks, trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_ROOT = HERE.parents[0].parent / "shared" / "data"
DEFAULT_OUT = HERE / "results" / "batch_filters.md"

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


FULL = Protocol(
    cls_rows=tuple((d, n, p) for d in ("mnist", "fashion") for n, p in (("symmetric", 50), ("pairflip", 45))),
    reg_rows=tuple((c, p) for c in CORRUPTIONS for p in (10, 20, 30, 40)),
    cls_methods=tuple(CLS_METHODS), reg_methods=tuple(REG_METHODS),
    cls_epochs=15, cls_train_size=4000, cls_warmup=5,
    reg_epochs=15, reg_train_size=4000, reg_warmup=5, reg_lr=1e-3, last=10)
QUICK = replace(FULL, cls_rows=(("mnist", "pairflip", 45),), reg_rows=(("signflip", 40),),
                cls_epochs=6, cls_train_size=2000, cls_warmup=2, reg_epochs=8, reg_train_size=2000, reg_warmup=2,
                last=3)
SMOKE = replace(QUICK, cls_methods=("standard", "co_prl"), reg_methods=("standard", "prl_g"), cls_epochs=2,
                cls_train_size=256, cls_warmup=1, reg_epochs=2, reg_train_size=256, reg_warmup=1, last=1)
REPORTED_SEEDS = [0, 1, 2]


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
    torch.set_num_threads(task["threads"])
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

    p = Protocol(**task["proto"]) if isinstance(task["proto"], dict) else task["proto"]
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
    return dict(kind=task["kind"], dataset=task.get("dataset"), noise=task.get("noise"),
                corruption=task.get("corruption"), pct=pct, method=method, seed=seed, per_epoch=values,
                last_mean=sum(values[-p.last:]) / len(values[-p.last:]),
                rejects_corrupted=None if rejects is None else 100.0 * rejects,
                corrupted_frac=None if last is None or last.corrupted_frac is None else 100.0 * last.corrupted_frac,
                seconds=round(time.perf_counter() - t0, 1), n_test=len(y_test))


def _report(res: dict[str, Any]) -> dict[str, Any]:
    row = f"{res['dataset']} {res['noise']}" if res["kind"] == "cls" else res["corruption"]
    rej = "" if res["rejects_corrupted"] is None else f" | rejects {res['rejects_corrupted']:.1f}% corrupted"
    print(f"# {row} {res['pct']}% {LABEL[res['method']]:>11} seed {res['seed']}: last-{len(res['per_epoch'])} "
          f"curve end {res['per_epoch'][-1]:.3f}, last mean {res['last_mean']:.3f}{rej} ({res['seconds']} s)",
          file=sys.stderr, flush=True)
    return res


# -- tables ----------------------------------------------------------------------------------------------
def aggregate(results: list[dict[str, Any]]) -> dict[str, dict[tuple, dict[str, Any]]]:
    out: dict[str, dict[tuple, dict[str, Any]]] = {"cls": {}, "reg": {}}
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["dataset"], r["noise"], r["pct"]) if r["kind"] == "cls" else (r["corruption"], r["pct"])
        groups.setdefault((r["kind"], key, r["method"]), []).append(r)
    for (kind, key, method), rs in groups.items():
        m, s = mean_std(r["last_mean"] for r in rs)
        rej = [r["rejects_corrupted"] for r in rs if r["rejects_corrupted"] is not None]
        out[kind].setdefault(key, {})[method] = dict(mean=m, std=s, n=len(rs),
                                                     rejects=mean_std(rej)[0] if rej else None,
                                                     corrupted=rs[0]["corrupted_frac"])
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


def markdown(agg: dict, proto: Protocol, seeds: list[int], wall: float, jobs: int, threads: int, date: str) -> str:
    cls_m, reg_m = list(proto.cls_methods), list(proto.reg_methods)
    lines = ["# Per-batch robust filters (robust_dnn_thesis Tables 4.1 / 4.2, scaled to CPU)", "",
             f"Produced by `python benchmarks/batch_filters.py` on {date} ({platform.processor() or platform.machine()}, "
             f"{jobs} worker process(es) × {threads} torch thread(s)); wall time {wall / 60:.1f} min; seeds {seeds}.",
             "Each cell: mean ± std over seeds of the clean-test metric averaged over the last "
             f"{proto.last} epochs; drop ratio ε = corruption rate, warm-up T_k epochs; paper's value in parentheses.",
             ""]
    if agg["cls"]:
        lines += ["## Classification: test accuracy (%)", "",
                  f"MLP 784-256-256-10, Adam lr {proto.cls_lr}, batch {proto.cls_batch}, {proto.cls_epochs} epochs, "
                  f"T_k = {proto.cls_warmup}, {proto.cls_train_size} training images per data set (seeded subsamples of "
                  "the offline 6,000 MNIST / 60,000 FashionMNIST training images), the full offline test sets "
                  "(4,000 / 10,000). Symmetric = `noise='random'`, pairflip = `noise='systematic'` (a → a+1). "
                  "Paper column: CIFAR-10 (Table 4.2), not comparable in level — compare orderings.", "",
                  "| data | noise | " + " | ".join(LABEL[m] for m in cls_m) + " |",
                  "|---|---|" + "---|" * len(cls_m)]
        for (ds, noise, pct), cells in sorted(agg["cls"].items()):
            paper = PAPER_CLS.get((noise, pct), {})
            row = []
            for m in cls_m:
                c = cells.get(m)
                cell = "–" if c is None else f"{c['mean']:.2f} ± {c['std']:.2f}"
                row.append(cell + (f" ({paper[m]:.2f})" if m in paper else ""))
            name = "MNIST" if ds == "mnist" else "FashionMNIST"
            lines.append(f"| {name} | {noise} {pct} % | " + " | ".join(row) + " |")
        lines += ["", "Orderings (ours; the thesis's hold on CIFAR-10):", ""]
        for key, checks in orderings(agg["cls"]).items():
            lines.append(f"- {key}: " + ", ".join(f"{k} **{'holds' if v else 'does not hold'}**"
                                                  for k, v in checks.items()))
        lines += ["", "Corrupted fraction among the samples each filter rejected in the last epoch (%; random "
                  "rejection would reach the corruption rate; Co-teaching: network 1's rejects):", "",
                  "| data | noise | " + " | ".join(LABEL[m] for m in cls_m if m not in ("standard", "bootstrap"))
                  + " |", "|---|---|" + "---|" * len([m for m in cls_m if m not in ("standard", "bootstrap")])]
        for (ds, noise, pct), cells in sorted(agg["cls"].items()):
            row = [("–" if cells.get(m, {}).get("rejects") is None else f"{cells[m]['rejects']:.1f}")
                   for m in cls_m if m not in ("standard", "bootstrap")]
            lines.append(f"| {'MNIST' if ds == 'mnist' else 'FashionMNIST'} | {noise} {pct} % | " + " | ".join(row) + " |")
        lines.append("")
    if agg["reg"]:
        lines += ["## Regression: test R² (MNIST ink landmarks, 10 targets)", "",
                  f"MLP 784-256-256-10 (leaky ReLU), Adam lr {proto.reg_lr}, batch {proto.reg_batch}, "
                  f"{proto.reg_epochs} epochs, T_k = {proto.reg_warmup}, {proto.reg_train_size} training images (seeded "
                  "subsample of the offline 6,000), "
                  "4,000 clean test images; targets standardised. Paper: CelebA landmarks (Table 4.1).", "",
                  "| corruption | " + " | ".join(LABEL[m] for m in reg_m) + " |", "|---|" + "---|" * len(reg_m)]
        for (corr, pct), cells in sorted(agg["reg"].items(), key=lambda kv: (CORRUPTIONS.index(kv[0][0]), kv[0][1])):
            paper = PAPER_REG.get((corr, pct), {})
            row = []
            for m in reg_m:
                c = cells.get(m)
                cell = "–" if c is None else f"{c['mean']:.3f} ± {c['std']:.3f}"
                row.append(cell + (f" ({paper[m]:.3f})" if m in paper else ""))
            lines.append(f"| {corr} {pct} % | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def headline(agg: dict) -> dict[str, Any]:
    cls = {"_".join(str(k) for k in key): {m: round(c["mean"], 2) for m, c in cells.items()}
           for key, cells in sorted(agg["cls"].items())}
    reg = {f"{c}_{p}": {m: round(v["mean"], 3) for m, v in cells.items()} for (c, p), cells in sorted(agg["reg"].items())}
    return {"classification": cls, "orderings": orderings(agg["cls"]), "regression": reg}


# -- driver ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    level = p.add_mutually_exclusive_group()
    level.add_argument("--quick", action="store_true", help="one classification and one regression row (< 60 s)")
    level.add_argument("--smoke", action="store_true", help="tiny data, two methods each (a few seconds)")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="folder holding MNIST/raw and FashionMNIST/raw")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--part", choices=("all", "cls", "reg"), default="all")
    p.add_argument("--methods", nargs="+", default=None, help="restrict to these methods")
    p.add_argument("--cls-epochs", type=int, default=None)
    p.add_argument("--reg-epochs", type=int, default=None)
    p.add_argument("--reg-lr", type=float, default=None)
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: 2 full, 1 quick/smoke)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--out", default=None, help=f"markdown output (full mode default: {DEFAULT_OUT})")
    p.add_argument("--json-out", default=None, help="raw per-run results (full mode default: next to --out)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    full = not (args.quick or args.smoke)
    proto = QUICK if args.quick else SMOKE if args.smoke else FULL
    over = {k: v for k, v in (("cls_epochs", args.cls_epochs), ("reg_epochs", args.reg_epochs),
                              ("reg_lr", args.reg_lr)) if v is not None}
    if args.part == "cls":
        over["reg_rows"] = ()
    elif args.part == "reg":
        over["cls_rows"] = ()
    if args.methods:
        over["cls_methods"] = tuple(m for m in proto.cls_methods if m in args.methods)
        over["reg_methods"] = tuple(m for m in proto.reg_methods if m in args.methods)
    proto = replace(proto, **over)
    seeds = args.seeds if args.seeds is not None else (REPORTED_SEEDS if full else [0])
    jobs = args.jobs if args.jobs is not None else (2 if full else 1)
    if not (Path(args.data_root) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"`--data-root` must hold MNIST/raw, got {args.data_root!r}.")
    common = dict(proto=asdict(proto), data_root=args.data_root, threads=args.threads)
    tasks = [dict(kind="cls", dataset=d, noise=n, pct=pc, method=m, seed=s, **common)
             for (d, n, pc) in proto.cls_rows for m in proto.cls_methods for s in seeds]
    tasks += [dict(kind="reg", corruption=c, pct=pc, method=m, seed=s, **common)
              for (c, pc) in proto.reg_rows for m in proto.reg_methods for s in seeds]
    t0 = time.perf_counter()
    results = [_report(r) for r in run_tasks(run_one, tasks, jobs)]
    wall = time.perf_counter() - t0
    mode = "full" if full else ("quick" if args.quick else "smoke")
    run = {"mode": mode, "protocol": asdict(proto), "seeds": seeds, "jobs": jobs, "threads": args.threads,
           "wall_s": round(wall, 1), "date": _dt.date.today().isoformat(), "results": results}
    out = args.out or (str(DEFAULT_OUT) if full else None)
    json_out = args.json_out or (str(Path(out).with_suffix(".json")) if full and out else None)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(run, indent=1))
    agg = aggregate(results)
    md = markdown(agg, proto, seeds, wall, jobs, args.threads, run["date"])
    print(md)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(md)
    summary = {"benchmark": "batch_filters", "mode": mode, "seeds": seeds, "wall_s": run["wall_s"], **headline(agg)}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
