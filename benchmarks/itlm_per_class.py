"""ITLM's one trim over all samples vs ``ITLM(per_class=True)``, which trims each class (by given label) alike.

A newcomer's FashionMNIST run with 20 % pair-swap noise (T-shirt <-> shirt, pullover <-> coat, sneaker <-> boot,
trouser <-> dress, sandal <-> bag) saw ITLM drop 532 of the 599 samples labelled T-shirt, most of them correctly
labelled, and end below plain training. Protocol (CPU-scaled, as ``corruption_rate.py``'s classification rows): a
seeded 6,000-image FashionMNIST subset, 20 % of the labels flipped by pair swap, by ``a -> a + 1`` (systematic) or
uniformly (random), or none (clean); an MLP (one hidden layer of 128, ``--hidden``; SGD lr 0.05 momentum 0.9, batch
128); ITLM round 0 on every sample then 2 re-initialised rounds, 4 epochs each (``--round-epochs``); ``keep_ratio`` the true rate (0.8; 1.0 on clean
data is plain training, so the clean row runs ``"auto"`` only) or ``"auto"`` (default estimator), each with
``per_class`` off and on; plain = the same MLP trained as many epochs on every sample. Per run: clean test accuracy (the
10,000 test images), the final selection's smallest per-class kept share (by given label) and its clean precision.
Seeds 0-2. ``--quick``: seed 0, pair-swap and random only, 2,000 images, 2 epochs per round; ``--smoke`` as quick in
one process. Full mode writes ``results/itlm_per_class.md`` (+ ``.json``); the last line printed is one JSON object.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Benchmark, main, md_table, quiet, trainer  # noqa: E402

# FashionMNIST's confusable pairs: T-shirt/shirt, trouser/dress, pullover/coat, sandal/bag, sneaker/ankle boot
PAIRS = torch.tensor([6, 3, 4, 1, 2, 8, 0, 9, 5, 7])
KINDS = ("pairs", "systematic", "random", "clean")
VARIANTS = ("plain", "true", "true per_class", "auto", "auto per_class")


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    kinds: tuple[str, ...] = KINDS
    rate: float = 0.2
    train_size: int = 6000
    round_epochs: tuple[int, ...] = (4, 4, 4)  # round 0 on every sample + re-initialised rounds (--round-epochs)
    hidden: int = 128  # --hidden
    lr: float = 0.05
    batch_size: int = 128


FULL = Protocol()
QUICK = Protocol(seeds=(0,), kinds=("pairs", "random"), train_size=2000, round_epochs=(2, 2))


def tasks(p: Protocol, args: Any) -> list[dict]:
    out = []
    for kind in p.kinds:
        for seed in p.seeds:
            for variant in VARIANTS:
                if kind == "clean" and variant.startswith("true"):
                    continue  # keep_ratio 1.0 is plain training
                out.append({"kind": kind, "seed": seed, "variant": variant, "data_root": args.data_root,
                             "settings": p.__dict__})
    return out


def _data(kind: str, seed: int, p: Protocol, root: str) -> Any:
    """The datamodule with ``kind`` noise applied to its training labels in place (and its ``corrupted`` flags)."""
    from lit_robust import FashionMNISTDataModule, corrupt_labels

    dm = FashionMNISTDataModule(root=root, train_size=p.train_size, batch_size=p.batch_size, clean_ratio=1.0,
                                val_size=0, seed=seed)
    dm.setup("fit")
    ds = dm.train_set
    y = ds.targets.clone()
    if kind == "clean":
        noisy, corrupted = y, torch.zeros(y.numel(), dtype=torch.bool)
    elif kind == "pairs":
        noisy, corrupted = corrupt_labels(y, 1.0 - p.rate, "systematic", num_classes=10, seed=seed, mapping=PAIRS)
    else:
        noisy, corrupted = corrupt_labels(y, 1.0 - p.rate, kind, num_classes=10, seed=seed)
    ds.targets, ds.corrupted = noisy, corrupted
    return dm


def run_one(task: dict) -> dict:
    import pytorch_lightning as pl

    from lit_robust import ITLM
    from lit_robust.models.supervised import ImageClassifier

    quiet()
    torch.set_num_threads(1)
    p = Protocol(**task["settings"])
    dm = _data(task["kind"], task["seed"], p, task["data_root"])
    pl.seed_everything(task["seed"], verbose=False)
    model = ImageClassifier(backbone="mlp", image_size=28, hidden=p.hidden, lr=p.lr)
    variant = task["variant"]
    itlm = None
    if variant != "plain":
        keep = "auto" if variant.startswith("auto") else 1.0 - p.rate
        itlm = ITLM(keep_ratio=keep, round_epochs=list(p.round_epochs), seed=task["seed"],
                    per_class=variant.endswith("per_class"), verbose=False, plot=False, report=False)
    t = trainer(sum(p.round_epochs), [] if itlm is None else [itlm])
    t.fit(model, train_dataloaders=dm.train_dataloader())
    acc = float(t.test(model, dm, verbose=False)[0]["test_acc"])
    out = {key: task[key] for key in ("kind", "seed", "variant")}
    out["acc"] = acc
    if itlm is not None:
        labels, corrupted = dm.train_set.targets, dm.train_set.corrupted
        kept = torch.zeros(labels.numel(), dtype=torch.bool)
        kept[itlm.selection] = True
        shares = [float(kept[labels == c].float().mean()) for c in labels.unique().tolist()]
        out.update(min_class_kept=min(shares), kept=int(kept.sum()),
                   clean_precision=float((~corrupted[kept]).float().mean()),
                   eps_hat=itlm.history[-1].estimated_corruption)
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(vals) if vals else None


def _cell(rows: list[dict], key: str, scale: float = 100.0, digits: int = 1) -> str:
    m = _mean(rows, key)
    return "–" if m is None else f"{scale * m:.{digits}f}"


def _paired(saved: dict) -> dict[str, dict[str, float]]:
    """Per noise and ``keep_ratio``: mean over seeds of (per_class - one trim) test accuracy, in points."""
    out: dict[str, dict[str, float]] = {}
    for kind in saved["settings"]["kinds"]:
        for base in ("true", "auto"):
            one = {r["seed"]: r["acc"] for r in saved["results"] if r["kind"] == kind and r["variant"] == base}
            per = {r["seed"]: r["acc"] for r in saved["results"]
                   if r["kind"] == kind and r["variant"] == f"{base} per_class"}
            if one and per:
                out.setdefault(kind, {})[base] = round(100 * statistics.fmean(per[s] - one[s] for s in one), 2)
    return out


def render(saved: dict) -> str:
    p, m, res = saved["settings"], saved["meta"], saved["results"]
    body = []
    for kind in p["kinds"]:
        for variant in VARIANTS:
            rows = [r for r in res if r["kind"] == kind and r["variant"] == variant]
            if not rows:
                continue
            per_seed = ", ".join(f"{100 * r['acc']:.1f}" for r in sorted(rows, key=lambda r: r["seed"]))
            body.append([kind, variant, _cell(rows, "acc"), per_seed, _cell(rows, "min_class_kept", digits=0),
                         _cell(rows, "clean_precision"), _cell(rows, "eps_hat")])
    table = md_table(["noise (20 %)", "ITLM", "test acc %", "per seed", "smallest class kept %",
                      "selection clean %", "ε̂ %"], body)
    return "\n".join([
        f"# ITLM: one trim vs `per_class=True` (FashionMNIST {p['train_size']}, MLP of {p['hidden']}, rounds of "
        f"{list(p['round_epochs'])} epochs)", "",
        "`true` = `ITLM(keep_ratio=0.8)`, `auto` = `ITLM(keep_ratio='auto')` (default estimator); `per_class` trims "
        "each class by its given label to the same share. Mean over seeds "
        f"{list(p['seeds'])}; *smallest class kept* = the final selection's smallest share of one class's samples "
        "(by given label). Settings: benchmarks/itlm_per_class.py.", "",
        *table, "",
        "per_class − one trim, test accuracy (points, mean of the seeds' differences): "
        + "; ".join(f"{kind} {', '.join(f'{base} {d:+.1f}' for base, d in diffs.items())}"
                    for kind, diffs in _paired(saved).items()) + ".", "",
        f"Wall time {m['wall_s']} s with {m['jobs']} jobs on a shared {m['cpus']}-core machine ({m['machine']}); "
        f"date {m['date']}; torch {m['torch']}.", "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'itlm_per_class.json')}.", ""])


def headline(saved: dict) -> dict:
    out: dict[str, Any] = {}
    for kind in saved["settings"]["kinds"]:
        row = {}
        for variant in VARIANTS:
            rows = [r for r in saved["results"] if r["kind"] == kind and r["variant"] == variant]
            if rows:
                acc, low = _mean(rows, "acc"), _mean(rows, "min_class_kept")
                row[variant] = {"acc": round(100 * acc, 2),
                                "min_class_kept": None if low is None else round(100 * low, 1)}
        out[kind] = row
    out["per_class_minus_one_trim_points"] = _paired(saved)
    return out


def add_arguments(parser: Any) -> None:
    parser.add_argument("--round-epochs", type=int, nargs="+", default=None,
                        help="epochs of each ITLM round (default: 4 4 4; plain training trains their sum)")
    parser.add_argument("--hidden", type=int, default=None, help="the MLP's hidden width (default 128)")


def configure(s: Protocol, args: Any) -> Protocol:
    from dataclasses import replace

    if args.round_epochs is not None:
        if len(args.round_epochs) < 2 or any(e < 1 for e in args.round_epochs):
            raise SystemExit(f"`--round-epochs` must be two or more integers >= 1, got {args.round_epochs}")
        s = replace(s, round_epochs=tuple(args.round_epochs))
    if args.hidden is not None:
        if args.hidden < 1:
            raise SystemExit(f"`--hidden` must be an integer >= 1, got {args.hidden}")
        s = replace(s, hidden=args.hidden)
    return s


BENCHMARK = Benchmark(name="itlm_per_class", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": QUICK},
                      tasks=tasks, run=run_one, render=render, headline=headline,
                      add_arguments=add_arguments, configure=configure,
                      jobs={"full": 2, "quick": 2, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
