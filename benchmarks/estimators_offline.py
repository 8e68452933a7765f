"""Compare corruption-rate estimators offline, in seconds, on the per-sample data cached by
``benchmarks/corruption_rate.py --cache DIR`` (issue 15).

Each cached row and seed holds the scores of the model trained on every sample, and for classifiers its in-sample
class probabilities and the given labels, plus the true corrupted mask. Estimators compared (no retraining):

* ``gmm`` / ``bmm``: :func:`lit_robust.estimate_corruption` on the scores;
* ``disagree_raw``: the share of samples whose argmax differs from the given label (no correction);
* ``disagreement``: :func:`lit_robust.estimate_corruption_from_predictions` (the raw share corrected for the
  training error on the gmm's clean component; gmm where a row has no labels);
* ``per_class_gmm``: the gmm fitted within each given class, the rates combined by class size (a candidate that
  was not adopted: on digits' ~150 samples per class it gives 8.9 % on clean data);
* ``cleanlab_insample``: cleanlab's confident-learning count on the in-sample probabilities (if installed).

Rows are split as the estimator was chosen: **choose** = MNIST and digits rows, **check** = FashionMNIST,
regression and anomaly rows.

Usage::

    python benchmarks/corruption_rate.py --methods itlm_auto --cache benchmarks/cache --out /tmp/c.md  # ~15 min
    python benchmarks/estimators_offline.py --cache benchmarks/cache

The last line printed is one JSON object with the figures per estimator and split.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _per_class_gmm(d: dict[str, np.ndarray]) -> float | None:
    from lit_robust import estimate_corruption

    if "labels" not in d:
        return None
    s, y = torch.from_numpy(d["scores"]), d["labels"]
    return sum(estimate_corruption(s[torch.from_numpy(y == c)], "gmm").rate * int((y == c).sum())
               for c in np.unique(y)) / len(y)


def estimators() -> dict[str, Callable[[dict[str, np.ndarray]], float | None]]:
    from lit_robust import estimate_corruption, estimate_corruption_from_predictions, estimate_corruption_from_probs

    def gmm(d):
        return estimate_corruption(torch.from_numpy(d["scores"]), "gmm").rate

    def bmm(d):
        return estimate_corruption(torch.from_numpy(d["scores"]), "bmm").rate

    def disagree_raw(d):
        return float((d["probs"].argmax(1) != d["labels"]).mean()) if "probs" in d else None

    def disagreement(d):
        if "probs" not in d:
            return gmm(d)
        return estimate_corruption_from_predictions(torch.from_numpy(d["scores"]), torch.from_numpy(d["labels"]),
                                                    torch.from_numpy(d["probs"].argmax(1))).rate

    out = {"gmm": gmm, "bmm": bmm, "disagree_raw": disagree_raw, "disagreement": disagreement,
           "per_class_gmm": _per_class_gmm}
    if importlib.util.find_spec("cleanlab") is not None:
        def cleanlab_insample(d):
            if "probs" not in d:
                return None
            p = torch.from_numpy(d["probs"]).double()
            return estimate_corruption_from_probs(p / p.sum(1, keepdim=True), torch.from_numpy(d["labels"])).rate
        out["cleanlab_insample"] = cleanlab_insample
    return out


def split_of(row: str) -> str:
    return "choose" if ("-mnist-" in row or "-digits-" in row) else "check"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(HERE / "cache"), help="folder of corruption_rate.py --cache files")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    files = sorted(Path(args.cache).glob("*.npz"))
    if not files:
        raise SystemExit(f"`--cache` must be a folder of .npz files written by corruption_rate.py --cache, got "
                         f"{args.cache!r} (none found).")
    est = estimators()
    errs: dict[str, dict[str, list[float]]] = {}  # row -> estimator -> per-seed |err| in points
    clean: dict[str, dict[str, list[float]]] = {}
    for f in files:
        row = f.stem.rsplit("-s", 1)[0]
        d = dict(np.load(f))
        eps = float(d["corrupted"].mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, fn in est.items():
                r = fn(d)
                if r is None:
                    continue
                errs.setdefault(row, {}).setdefault(name, []).append(100 * abs(r - eps))
                if eps == 0:
                    clean.setdefault(row, {}).setdefault(name, []).append(100 * r)
    names = list(est)
    print("| row | split | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
    for row, e in errs.items():
        cells = [f"{statistics.fmean(e[n]):.1f}" if n in e else "–" for n in names]
        print(f"| {row} | {split_of(row)} | " + " | ".join(cells) + " |")
    summary: dict[str, Any] = {"benchmark": "estimators_offline", "rows": len(errs), "files": len(files)}
    for name in names:
        per = {}
        for split in ("choose", "check", "all"):
            v = [statistics.fmean(e[name]) for row, e in errs.items() if name in e
                 and (split == "all" or split_of(row) == split)]
            if v:
                per[split] = {"rows": len(v), "median_abs_err_pts": round(statistics.median(v), 2),
                              "share_err_le_5pts": round(sum(x <= 5 for x in v) / len(v), 3)}
        c = [statistics.fmean(v[name]) for v in clean.values() if name in v]
        per["max_clean_eps_hat_pct"] = round(max(c), 2) if c else None
        summary[name] = per
        print(f"{name}: " + "; ".join(f"{k} {v}" for k, v in per.items()))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
