"""The filters' ``drop_ratio="auto"`` on a user's own small CNN: FashionMNIST with a quarter of its labels flipped.

A newcomer (2026-12-07) trained their own CNN on 4,000 FashionMNIST images with 24.6 % of the labels flipped, under
``BatchFilter(rule, drop_ratio="auto")``: the estimate read 47-49 %, and SPL's test accuracy fell to 0.668 against
0.784 for plain training. The filters' default estimator, ``"disagreement"``, is taken during the warm-up (epochs 1
and 2 of 3), from a model that has not yet learnt the clean labels; where the loss mixture finds one group it
subtracts none of the model's own errors. This measures that set-up over three seeds, beside the opt-in
``estimator="class_floor"`` and the true rate given.

Protocol. Data: per seed, 4,000 of FashionMNIST's training images drawn at random (``torch.randperm`` seeded), each
label flipped with probability 0.25 to one of the other nine classes (uniformly), inputs ``pixel / 255``; the first
2,000 test images, clean. Model: two 3×3 convolutions (16, 32 channels) with ReLU and 2×2 max-pooling, a hidden layer
of 64, ten outputs; SGD lr 0.05, momentum 0.9, batch 64, 15 epochs, one torch thread; ``pl.seed_everything(seed)``.
Arms: ``plain`` (no callback); ``spl_auto`` / ``prl_auto``: ``BatchFilter(rule, drop_ratio="auto")`` with its
defaults (estimator ``"disagreement"``, a 3-epoch warm-up); ``spl_floor`` / ``prl_floor``: the same with
``estimator="class_floor"``; ``spl_true`` / ``prl_true``: ``drop_ratio`` = the seed's flipped share, warm-up 3;
``itlm_auto``: ``ITLM(keep_ratio="auto", round_epochs=[5, 5, 5])`` with its defaults (estimator
``"disagreement_or_interior"``, re-initialised rounds), the estimate from round 0's scoring pass, after 5 epochs.
Per run: clean test accuracy and the estimate (``filter.estimated_corruption``; ITLM's ``history[1]``).

``--quick``: seed 0, plain and SPL auto, 6 epochs (< 60 s on 2 cores); ``--smoke`` 1,000 images and 2 epochs in one
process (the tests). Full mode writes ``results/filter_auto_cnn.md`` (+ ``.json``); the last line printed is one JSON
object.
"""

from __future__ import annotations

import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Benchmark, main, md_table, quiet, trainer  # noqa: E402

ARMS = ("plain", "spl_auto", "spl_floor", "spl_true", "prl_auto", "prl_floor", "prl_true", "itlm_auto")
FLIP = 0.25


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ARMS
    n_train: int = 4000
    n_test: int = 2000
    epochs: int = 15


FULL = Protocol()
QUICK = Protocol(seeds=(0,), arms=("plain", "spl_auto"), epochs=6)  # the newcomer's case, shorter
SMOKE = Protocol(seeds=(0,), arms=("plain", "spl_auto"), n_train=1000, n_test=500, epochs=2)


def data(root: str, seed: int, n_train: int, n_test: int) -> tuple[Any, Any, Any, Any, Any]:
    """(train images, noisy labels, flipped flags, test images, test labels) of one seed."""
    from torchvision.datasets import FashionMNIST

    train = FashionMNIST(root, train=True, download=False)
    test = FashionMNIST(root, train=False, download=False)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)[:n_train]
    x = train.data[idx].float().div(255).unsqueeze(1)
    y = train.targets[idx].clone()
    flip = torch.rand(n_train, generator=g) < FLIP
    noisy = torch.where(flip, (y + torch.randint(1, 10, (n_train,), generator=g)) % 10, y)
    return x, noisy, noisy != y, test.data[:n_test].float().div(255).unsqueeze(1), test.targets[:n_test].clone()


def tasks(p: Protocol, args: Any) -> list[dict]:
    return [{"seed": s, "arm": arm, "n_train": p.n_train, "n_test": p.n_test, "epochs": p.epochs,
             "root": args.data_root} for s in p.seeds for arm in p.arms]


def run_one(task: dict) -> dict:
    import pytorch_lightning as pl
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import ITLM, BatchFilter, IndexedDataset

    quiet()
    warnings.filterwarnings("ignore", message=".*(starv|keeps? none|per_class).*")
    torch.set_num_threads(1)
    seed, arm = task["seed"], task["arm"]
    x, noisy, flipped, xt, yt = data(task["root"], seed, task["n_train"], task["n_test"])
    pl.seed_everything(seed, verbose=False)
    train = DataLoader(IndexedDataset(TensorDataset(x, noisy), corrupted=flipped), batch_size=64, shuffle=True)
    test = DataLoader(TensorDataset(xt, yt), batch_size=500)
    true_rate = float(flipped.float().mean())
    flt = None
    if arm == "itlm_auto":
        flt = ITLM(keep_ratio="auto", round_epochs=[5, 5, task["epochs"] - 10] if task["epochs"] > 10 else
                   [1, task["epochs"] - 1], verbose=False, plot=False)
    elif arm != "plain":
        rule, how = arm.split("_")
        kwargs = {"auto": {"drop_ratio": "auto"}, "floor": {"drop_ratio": "auto", "estimator": "class_floor"},
                  "true": {"drop_ratio": true_rate, "warmup_epochs": 3}}[how]
        flt = BatchFilter(rule, **kwargs)
    # the newcomer's own small CNN
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))
    model = harness.own_classifier(net, lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9))
    t = trainer(task["epochs"], [] if flt is None else [flt])
    t.fit(model, train)
    out = {"seed": seed, "arm": arm, "true_rate": true_rate,
           "acc": float(t.test(model, test, verbose=False)[0]["test_acc"])}
    if arm == "itlm_auto":
        out["eps_hat"] = float(flt.history[1].estimated_corruption)
    elif flt is not None and flt.estimated_corruption is not None:
        out["eps_hat"] = float(flt.estimated_corruption)
    return out


def _runs(saved: dict, arm: str) -> list[dict]:
    return [r for r in saved["results"] if r["arm"] == arm]


def headline(saved: dict) -> dict[str, Any]:
    plain = {r["seed"]: r["acc"] for r in _runs(saved, "plain")}
    out: dict[str, Any] = {"seeds": saved["settings"]["seeds"]}
    for arm in saved["settings"]["arms"]:
        runs = _runs(saved, arm)
        if not runs:
            continue
        row = {"acc_pct": round(100 * statistics.fmean(r["acc"] for r in runs), 2)}
        if arm != "plain":
            diffs = [100 * (r["acc"] - plain[r["seed"]]) for r in runs if r["seed"] in plain]
            row["minus_plain_pts"] = round(statistics.fmean(diffs), 2) if diffs else None
            row["ahead_of_plain_runs"] = sum(d > 0 for d in diffs)
        est = [r for r in runs if "eps_hat" in r]
        if est and not arm.endswith("true"):
            row["eps_hat_pct"] = [round(100 * r["eps_hat"], 1) for r in est]
            row["mean_abs_err_pts"] = round(statistics.fmean(100 * abs(r["eps_hat"] - r["true_rate"]) for r in est), 2)
        out[arm] = row
    return out


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]
    head = headline(saved)
    plain = {r["seed"]: r["acc"] for r in _runs(saved, "plain")}
    rows = []
    for arm in p["arms"]:
        for r in sorted(_runs(saved, arm), key=lambda r: r["seed"]):
            diff = f"{100 * (r['acc'] - plain[r['seed']]):+.1f}" if arm != "plain" and r["seed"] in plain else "–"
            eps = f"{100 * r['eps_hat']:.1f}" if "eps_hat" in r and not arm.endswith("true") else "–"
            rows.append([arm, str(r["seed"]), f"{100 * r['true_rate']:.1f}", eps, f"{100 * r['acc']:.1f}", diff])
    means = [[arm, f"{h['acc_pct']:.2f}", "–" if h.get("minus_plain_pts") is None else f"{h['minus_plain_pts']:+.2f}",
              str(h.get("ahead_of_plain_runs", "–")), str(h.get("mean_abs_err_pts", "–"))]
             for arm in p["arms"] if (h := head.get(arm))]
    smoke = " A quick or smoke run: too few seeds to rank anything." if saved["mode"] != "full" else ""
    out = [
        "# The filters' `drop_ratio=\"auto\"` on a user's own small CNN (FashionMNIST, 25 % flipped)", "",
        f"Seeds {p['seeds']}; {p['n_train']:,} training images per seed with each label flipped with probability "
        f"{FLIP} to another class, the first {p['n_test']:,} test images (clean); a small CNN of the user's own, SGD "
        f"lr 0.05 momentum 0.9, batch 64, {p['epochs']} epochs. `*_auto`: `BatchFilter(rule, drop_ratio=\"auto\")` "
        "with its defaults (estimator `\"disagreement\"`, warm-up 3); `*_floor`: `estimator=\"class_floor\"`; "
        "`*_true`: the seed's flipped share given; `itlm_auto`: `ITLM(keep_ratio=\"auto\", round_epochs=[5, 5, 5])` "
        "with its defaults, its estimate from round 0 (5 epochs). ε̂ = the estimate. Protocol: "
        f"benchmarks/filter_auto_cnn.py.{smoke}", "",
        *md_table(["arm", "seed", "flipped %", "ε̂ %", "test acc %", "− plain (points)"], rows), "",
        "Means over seeds:", "",
        *md_table(["arm", "test acc %", "− plain (points)", "runs ahead of plain", "mean error of ε̂ (points)"], means),
        "", harness.machine_line(m), "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'filter_auto_cnn.json')}.", ""]
    return "\n".join(out)


BENCHMARK = Benchmark(name="filter_auto_cnn", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_one, render=render, headline=headline,
                      jobs={"full": 2, "quick": 2, "smoke": 1}, data=True)

if __name__ == "__main__":
    main(BENCHMARK)
