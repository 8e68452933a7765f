"""PRL(L) with ``drop_ratio="auto"`` vs the true rate on scikit-learn's digits (no download).

An MLP (``ImageClassifier(backbone="mlp")``, SGD lr 0.05) on 1,300 training digits with 30 % random or systematic
label noise, ``BatchFilter("prl", drop_ratio, warmup_epochs=10)``, 30 epochs, seeds 0-2; clean test accuracy on the
497 held-out digits and the estimate ``eps_hat``. ``--quick``: 1 seed, random noise, 8 epochs (warm-up 3).
Writes ``results/filter_auto_digits.md`` (full mode only); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet, run_tasks, trainer  # noqa: E402


def run_one(task: dict) -> dict:
    import pytorch_lightning as pl

    from lit_robust import BatchFilter
    from lit_robust.data import DigitsDataModule
    from lit_robust.models.supervised import ImageClassifier

    quiet()
    torch.set_num_threads(1)
    pl.seed_everything(task["seed"], verbose=False)
    data = DigitsDataModule(clean_ratio=0.7, noise=task["noise"], val_size=0, batch_size=64, seed=task["seed"])
    f = BatchFilter("prl", task["drop"], warmup_epochs=task["warmup"])
    model = ImageClassifier(backbone="mlp", image_size=8, lr=0.05)
    t = trainer(task["epochs"], [f])
    t.fit(model, data)
    acc = float(t.test(model, data, verbose=False)[0]["test_acc"])
    return {**task, "acc": acc, "eps_hat": f.estimated_corruption,
            "true_eps": f.history[-1].corrupted_frac, "dropped_corrupted_frac": f.history[-1].dropped_corrupted_frac}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true", help="as --quick (the test suite's name for it)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-root", default=None, help="unused (digits ship with scikit-learn)")
    args = p.parse_args()
    quick = args.quick or args.smoke
    seeds, noises, epochs, warmup = ([0], ["random"], 8, 3) if quick else ([0, 1, 2], ["random", "systematic"], 30, 10)
    tasks = [{"seed": s, "noise": n, "drop": d, "epochs": epochs, "warmup": warmup}
             for n in noises for s in seeds for d in ("auto", 0.3)]
    t0 = time.perf_counter()
    rows = list(run_tasks(run_one, tasks, args.jobs))
    lines = ["| noise | seed | eps_hat | true eps | acc auto | acc eps = 0.3 |", "|---|---|---|---|---|---|"]
    summary: dict = {"benchmark": "filter_auto_digits", "mode": "quick" if quick else "full", "rows": {}}
    for n in noises:
        errs, d_acc = [], []
        for s in seeds:
            a = next(r for r in rows if r["noise"] == n and r["seed"] == s and r["drop"] == "auto")
            k = next(r for r in rows if r["noise"] == n and r["seed"] == s and r["drop"] == 0.3)
            lines.append(f"| {n} | {s} | {a['eps_hat']:.3f} | {a['true_eps']:.3f} | {100 * a['acc']:.1f} % | "
                         f"{100 * k['acc']:.1f} % |")
            errs.append(abs(a["eps_hat"] - a["true_eps"]))
            d_acc.append(a["acc"] - k["acc"])
        summary["rows"][n] = {"eps_hat": [round(r["eps_hat"], 4) for r in rows if r["noise"] == n and r["drop"] == "auto"],
                              "mean_abs_err_points": round(100 * statistics.fmean(errs), 2),
                              "mean_acc_auto_minus_true_points": round(100 * statistics.fmean(d_acc), 2)}
    table = "\n".join(lines)
    print(table)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    if not quick:
        out = Path(__file__).parent / "results" / "filter_auto_digits.md"
        out.write_text(f"# PRL(L) drop_ratio='auto' vs the true rate, digits (MLP, 30 epochs, warm-up 10)\n\n{table}\n\n"
                       f"Wall time {summary['wall_s']} s with {args.jobs} jobs on a shared 2-core machine.\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
