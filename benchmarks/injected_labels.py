"""Wrong labels planted on purpose as the noisy reference (issue 15): a classifier estimator measured, not adopted.

``estimators_offline.py``'s ``flip_tail`` estimated the wrong-label share by mixture proportion estimation (Blanchard,
Lee & Scott, AISTATS 2010) against the losses random wrong labels *would* have had, and failed: the model had trained
on the wrong labels it was given, so their losses sat far below the simulated ones. This script plants the reference
instead of simulating it. Before training, a known share of the samples (``inject``, drawn with the seed) get a label
drawn uniformly among the other classes; the model trains on every sample, the planted ones included, so their losses
are those of wrong labels the model was trained on. Over the other samples (the ones a user's estimate is about),

    ε̂ = min over t of  P(loss > t) / P(planted loss > t),

t running over the planted losses' quantiles 0, 0.02, …, 0.8 (the smallest ratio: a clean sample may exceed a
threshold, a planted one stands for every wrong label), capped at 1. It assumes the data's wrong labels look like the
planted ones, i.e. a random wrong class.

Protocol: ``corruption_rate.py``'s 21 classification rows (MNIST 6k, FashionMNIST 6k, digits; random noise at 10–45 %,
systematic a→a+1 flips at 20–40 %, clean), its data, model (an MLP of one hidden layer of 128, SGD lr 0.05 momentum
0.9, batch 128 / 64) and round 0's epochs (4; digits 10), one training per (row, seed, planted share). Planted shares
0 (the baseline: the product's estimators as they read today), 5 % and 10 %. Columns, each over the samples not planted
(the truth: their corrupted share): ``disagreement`` (ITLM's default until 2026-12-07, ``estimate_corruption_from_predictions`` on the
in-sample predictions), ``class_floor`` (``estimate_corruption_from_class_floor``), ``planted`` (the ratio above) and
``max(planted, class_floor)``. The planted labels cost a round-0 model nothing in ITLM (round 1 re-initialises and
trains on the original labels), but they need a hook into the user's labels that the callbacks do not have.

``--quick``: seed 0, shares 0 and 5 % (< 60 s on 2 cores); ``--smoke``: one digits row, 1 epoch (the tests). Full
mode: seeds 0–2, writes ``results/injected_labels.md`` (+ ``.json``); the last line printed is one JSON object of
headline figures. The development seeds 10–12 were run first with the same code (the corruption-rate page's record).
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Benchmark, machine_line, main, md_table, quiet, trainer  # noqa: E402

ESTIMATORS = ("disagreement", "class_floor", "planted", "max(planted, class_floor)")
THRESHOLD_QUANTILES = tuple(i / 50 for i in range(41))  # 0, 0.02, ..., 0.8


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    shares: tuple[float, ...] = (0.0, 0.05, 0.10)
    train_size: int = 6000
    epochs: int = 4
    digits_epochs: int = 10
    rows: str = "full"  # "full": corruption_rate's 21 classification rows; "smoke": digits random 30 % only


FULL = Protocol()
QUICK = Protocol(seeds=(0,), shares=(0.0, 0.05))
SMOKE = Protocol(seeds=(0,), shares=(0.0, 0.05), train_size=500, epochs=1, digits_epochs=1, rows="smoke")


def _rows(p: Protocol) -> list[dict]:
    cr = harness.load_module("corruption_rate")
    rows = [r for r in cr.rows_for(cr.FULL) if r["group"] == "cls"]
    return [r for r in rows if r["data"] == "digits" and r["kind"] == "random"] if p.rows == "smoke" else rows


def tasks(p: Protocol, args: Any) -> list[dict]:
    return [{"row": row, "seed": seed, "share": share, "settings": p.__dict__, "data_root": args.data_root}
            for row in _rows(p) for seed in p.seeds for share in p.shares]


def planted_ratio(scores: Any, planted: Any) -> float:
    """``min_t P(score > t | not planted) / P(score > t | planted)`` over the planted scores' quantiles
    ``THRESHOLD_QUANTILES``, capped at 1 (numpy arrays; ``planted`` a boolean mask with at least one True)."""
    import numpy as np

    ref, rest = scores[planted], scores[~planted]
    best = 1.0
    for q in THRESHOLD_QUANTILES:
        t = float(np.quantile(ref, q))
        above_ref = float((ref > t).mean())
        if above_ref > 0:
            best = min(best, float((rest > t).mean()) / above_ref)
    return best


def run_one(task: dict) -> dict:
    import torch

    from lit_robust import (
        ImageClassifier,
        estimate_corruption_from_class_floor,
        estimate_corruption_from_predictions,
    )
    from lit_robust._backend import pl

    quiet()
    torch.set_num_threads(1)
    cr = harness.load_module("corruption_rate")
    p, row, seed, share = task["settings"], task["row"], task["seed"], task["share"]
    digits = row["data"] == "digits"
    proto = cr.Protocol(train_size=p["train_size"], epochs=p["epochs"], digits_epochs=p["digits_epochs"])
    dm = cr._classification_data(row, seed, proto, task["data_root"])
    ds = dm.train_set
    given = ds.targets.clone()
    n = given.numel()
    planted = torch.zeros(n, dtype=torch.bool)
    if share > 0:
        g = torch.Generator().manual_seed(777 + seed)
        idx = torch.randperm(n, generator=g)[:round(share * n)]
        planted[idx] = True
        labels = given.clone()
        labels[idx] = (given[idx] + torch.randint(1, 10, (idx.numel(),), generator=g)) % 10
        ds.targets = labels
    pl.seed_everything(seed, verbose=False)
    model = ImageClassifier(backbone="mlp", image_size=8 if digits else 28, hidden=proto.hidden, lr=proto.lr)
    trainer(p["digits_epochs"] if digits else p["epochs"], []).fit(model, train_dataloaders=dm.train_dataloader())
    scores, probs = cr._scores_and_probs(model, ds)
    rest = ~planted
    s, y, pred = scores[rest], ds.targets[rest], probs.argmax(1)[rest]
    est = {"disagreement": estimate_corruption_from_predictions(s, y, pred).rate,
           "class_floor": estimate_corruption_from_class_floor(s, y, pred).rate}
    if share > 0:
        est["planted"] = planted_ratio(scores.numpy(), planted.numpy())
        est["max(planted, class_floor)"] = max(est["planted"], est["class_floor"])
    return {"row": row, "seed": seed, "share": share, "n": n, "planted": int(planted.sum()),
            "true": float(ds.corrupted[rest].float().mean()), "est": est,
            "planted_disagree": float((probs.argmax(1)[planted] != ds.targets[planted]).float().mean())
            if share > 0 else None}


def _key(r: dict) -> tuple:
    return r["row"]["data"], r["row"]["kind"], r["row"]["eps"]


def _cells(saved: dict) -> dict[tuple, dict[float, list[dict]]]:
    cells: dict[tuple, dict[float, list[dict]]] = {}
    for r in saved["results"]:
        cells.setdefault(_key(r), {}).setdefault(r["share"], []).append(r)
    return cells


def _errors(rs: list[dict], name: str) -> float:
    return statistics.fmean(100 * abs(r["est"][name] - r["true"]) for r in rs)


def _columns(shares: list[float]) -> list[tuple[float, str]]:
    """(share, estimator) columns: the baseline's two estimators, then each planted share's four."""
    return [(s, e) for s in shares for e in (ESTIMATORS[:2] if s == 0 else ESTIMATORS)]


def _name(share: float, est: str) -> str:
    return f"{est} (none planted)" if share == 0 else f"{est} ({100 * share:.0f} % planted)"


def headline(saved: dict) -> dict:
    cells = _cells(saved)
    shares = sorted({r["share"] for r in saved["results"]})
    out: dict[str, Any] = {"rows": len(cells), "estimators": {}}
    for share, est in _columns(shares):
        errs = {k: _errors(v[share], est) for k, v in cells.items()}
        clean = [statistics.fmean(100 * r["est"][est] for r in v[share]) for k, v in cells.items() if k[1] == "clean"]
        out["estimators"][_name(share, est)] = {
            "median_err_pts": round(statistics.median(errs.values()), 2),
            "within_5_pts": sum(e <= 5 for e in errs.values()),
            "largest_clean_eps_hat_pct": round(max(clean), 2) if clean else None,
            "median_err_pts_random": round(statistics.median(e for k, e in errs.items() if k[1] == "random"), 2)
            if any(k[1] == "random" for k in errs) else None,
            "median_err_pts_systematic": round(statistics.median(e for k, e in errs.items() if k[1] == "systematic"), 2)
            if any(k[1] == "systematic" for k in errs) else None}
    return out


def _or_dash(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v}{unit}"


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]
    cells = _cells(saved)
    shares = sorted({r["share"] for r in saved["results"]})
    cols = _columns(shares)
    rows = []
    for (data, kind, eps), by_share in cells.items():
        line = [data, kind, f"{eps}"]
        for share, est in cols:
            rs = by_share[share]
            line.append(f"{statistics.fmean(100 * r['est'][est] for r in rs):.1f} / {_errors(rs, est):.1f}")
        planted = [r for s in shares if s > 0 for r in by_share[s]]
        line.append(f"{statistics.fmean(100 * r['planted_disagree'] for r in planted):.1f}" if planted else "–")
        rows.append(line)
    h = headline(saved)
    summary = [f"- {name}: median |ε̂ − ε| {f['median_err_pts']} points over the {h['rows']} rows, "
               f"{f['within_5_pts']} within 5 points; median on the random-noise rows {_or_dash(f['median_err_pts_random'])}, "
               f"on the systematic rows {_or_dash(f['median_err_pts_systematic'])}; largest ε̂ on clean data "
               f"{_or_dash(f['largest_clean_eps_hat_pct'], ' %')}"
               for name, f in h["estimators"].items()]
    return "\n".join([
        "# Planted wrong labels as the noisy reference (issue 15; measured, not adopted)", "",
        f"corruption_rate.py's classification rows and round-0 model (epochs {p['epochs']}, digits "
        f"{p['digits_epochs']}; {p['train_size']} MNIST / FashionMNIST images), seeds {list(p['seeds'])}, one "
        "training per row, seed and planted share. Before training, the planted share of the samples get a label "
        "drawn uniformly among the other classes; every estimate is over the other samples, against their corrupted "
        "share. *planted*: min over t of P(loss > t) / P(planted loss > t), t the planted losses' quantiles 0–0.8. "
        "Each cell: ε̂ % / |ε̂ − ε| points, mean over seeds. *planted disagree*: % of the planted samples whose "
        "prediction differs from their planted label. Settings and the estimator: benchmarks/injected_labels.py.", "",
        *md_table(["data", "corruption", "ε %", *(_name(s, e) for s, e in cols), "planted disagree %"], rows), "",
        *summary, "",
        "The planted reference reads random wrong labels and clean data closely, and class-pair (systematic) noise as "
        "about 0: a model trained on a→a+1 flips learns them, their losses stay far below those of wrong labels drawn "
        "at random, and nothing in one training tells such flips from a model's own confusions.", "",
        machine_line(m), "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'injected_labels.json')}.", ""])


BENCHMARK = Benchmark(name="injected_labels", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_one, render=render, headline=headline,
                      jobs={"full": 2, "quick": 2, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
