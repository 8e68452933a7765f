"""``drop_ratio="auto"`` on its default warm-up (``warmup_epochs=None``: 3 epochs) against the old default (0).

Settings (each fit one torch thread, CPU, 12 epochs, every filter argument but the warm-up at its default: estimator
``"disagreement"``, margin 0, no re-estimate):

* ``digits30`` / ``digits20``: scikit-learn's digits (1,300 training, 497 clean test images, no download), 30 % /
  20 % random label flips, ``ImageClassifier(backbone="mlp", image_size=8, lr=0.05)``,
  ``BatchFilter("prl", drop_ratio="auto")``;
* ``fashion30``: FashionMNIST (offline, ``--data-root``), a seeded 3,000-image training subset, 30 % random flips,
  the clean 10,000-image test split, ``ImageClassifier(backbone="mlp", image_size=28)`` (SGD lr 0.02),
  ``BatchFilter("prl", drop_ratio="auto")``;
* ``coteach_digits30``: digits 30 %, ``CoTeaching(<the digits MLP>, drop_ratio="auto")`` (its default rule).

Three arms per setting and seed: ``warmup_epochs=None`` (the default since 2026-12-05: 3 epochs with ``"auto"``),
``warmup_epochs=0`` (the default before), and a reference, ``drop_ratio`` = the true rate with ``warmup_epochs=3``
(the same ramp). Seeds 0-4 (``--seeds``), Co-teaching 0-2 (``--coteach-seeds``). Reported: the final estimate ε̂
(before clipping), the last epoch's drop ratio (0.49 = clipped), the clean test accuracy and the wall time of a
fit + test. ``--quick``: every setting, seed 0 (< 60 s on 2 cores); ``--smoke``: digits 30 %, seed 0, the two
warm-ups, in one process. Full mode writes ``results/auto_warmup.md`` (+ ``.json``); the last line printed is one
JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Benchmark, machine_line, main, md_table, quiet, trainer  # noqa: E402

SETTINGS = ("digits30", "digits20", "fashion30", "coteach_digits30")
RATES = {"digits30": 0.3, "digits20": 0.2, "fashion30": 0.3, "coteach_digits30": 0.3}
# arm -> (drop_ratio, warmup_epochs); "true_rate" drops the setting's true rate
ARMS = {"default": ("auto", None), "zero": ("auto", 0), "true_rate": (None, 3)}
ARM_LABEL = {"default": "None (3)", "zero": "0", "true_rate": "3, drop = true ε"}
CLIP = 0.49  # the largest drop ratio the filters allow: a last drop ratio here is a clipped estimate


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    coteach_seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[str, ...] = SETTINGS
    arms: tuple[str, ...] = ("default", "zero", "true_rate")
    epochs: int = 12
    fashion_train: int = 3000


FULL = Protocol()
QUICK = Protocol(seeds=(0,), coteach_seeds=(0,))
SMOKE = Protocol(seeds=(0,), coteach_seeds=(0,), settings=("digits30",), arms=("default", "zero"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coteach-seeds", type=int, nargs="+", default=None,
                   help="replace the Co-teaching setting's seeds (--seeds: the BatchFilter settings')")


def configure(p: Protocol, args: argparse.Namespace) -> Protocol:
    if args.coteach_seeds is not None:
        if any(s < 0 for s in args.coteach_seeds):
            raise SystemExit(f"`--coteach-seeds` must be integers >= 0, got {args.coteach_seeds}")
        p = replace(p, coteach_seeds=tuple(args.coteach_seeds))
    return p


def _seeds(p: Protocol | dict, setting: str) -> list[int]:
    get = p.get if isinstance(p, dict) else lambda k: getattr(p, k)
    return list(get("coteach_seeds") if setting.startswith("coteach") else get("seeds"))


def tasks(p: Protocol, args: Any) -> list[dict]:
    # the arms' order alternates from seed to seed, so that no arm always runs first in a worker (fair wall times)
    return [{"setting": s, "seed": seed, "arm": arm, "epochs": p.epochs, "fashion_train": p.fashion_train,
             "root": args.data_root}
            for s in p.settings for seed in _seeds(p, s) for arm in p.arms[::1 if seed % 2 == 0 else -1]]


def run_one(task: dict) -> dict:
    import pytorch_lightning as pl

    from lit_robust import BatchFilter, CoTeaching
    from lit_robust.data import DigitsDataModule, FashionMNISTDataModule
    from lit_robust.models.supervised import ImageClassifier

    quiet()
    # the old default's warnings (a short warm-up, a clipped estimate) are what this measures, once per fit
    warnings.filterwarnings("ignore", message=".*`drop_ratio='auto'`.*")
    torch.set_num_threads(1)
    setting, seed = task["setting"], task["seed"]
    rate = RATES[setting]
    drop, warmup = ARMS[task["arm"]]
    drop = rate if drop is None else drop
    t0 = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    if setting.startswith("fashion"):
        data = FashionMNISTDataModule(root=task["root"], train_size=task["fashion_train"], clean_ratio=1 - rate,
                                      batch_size=64, seed=seed)
        model = ImageClassifier(backbone="mlp", image_size=28)
    else:
        data = DigitsDataModule(clean_ratio=1 - rate, batch_size=64, seed=seed)
        model = ImageClassifier(backbone="mlp", image_size=8, lr=0.05)
    callbacks: list = []
    if setting.startswith("coteach"):
        model = owner = CoTeaching(model, drop_ratio=drop, warmup_epochs=warmup)
    else:
        owner = BatchFilter("prl", drop_ratio=drop, warmup_epochs=warmup)
        callbacks.append(owner)
    t = trainer(task["epochs"], callbacks)
    t.fit(model, data)
    acc = float(t.test(model, data, verbose=False)[0]["test_acc"])
    last = owner.history[-1]
    return {"setting": setting, "seed": seed, "arm": task["arm"], "drop_ratio": drop, "warmup_epochs": warmup,
            "eps_hat": owner.estimated_corruption if drop == "auto" else None, "final_drop_ratio": last.drop_ratio,
            "true_eps": last.corrupted_frac, "acc": acc,
            "eps_by_epoch": [r.estimated_corruption for r in owner.history],
            "wall_s": round(time.perf_counter() - t0, 2)}


def _rows(saved: dict, setting: str, arm: str) -> list[dict]:
    """One setting's runs of one arm, in the protocol's seed order."""
    by_seed = {r["seed"]: r for r in saved["results"] if r["setting"] == setting and r["arm"] == arm}
    return [by_seed[s] for s in _seeds(saved["settings"], setting) if s in by_seed]


def _clipped(r: dict) -> bool:
    return r["final_drop_ratio"] >= CLIP - 1e-9


def _pairs(saved: dict, setting: str) -> list[tuple[dict, dict]]:
    """(default, zero) per seed of one setting."""
    return list(zip(_rows(saved, setting, "default"), _rows(saved, setting, "zero")))


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]

    def rng(values: list[float], scale: float = 100.0) -> str:
        v = [scale * x for x in values]
        return f"{statistics.fmean(v):.1f} ({min(v):.1f}–{max(v):.1f})"

    body, seeds_line = [], []
    for setting in p["settings"]:
        for arm in p["arms"]:
            rs = _rows(saved, setting, arm)
            if not rs:
                continue
            est = rng([r["eps_hat"] for r in rs]) if arm != "true_rate" else f"given: {100 * rs[0]['drop_ratio']:.1f}"
            body.append([setting, ARM_LABEL[arm], len(rs), f"{100 * statistics.fmean(r['true_eps'] for r in rs):.1f}",
                         est, rng([r["final_drop_ratio"] for r in rs]), f"{sum(map(_clipped, rs))}/{len(rs)}",
                         rng([r["acc"] for r in rs]), "; ".join(f"{100 * r['acc']:.1f}" for r in rs),
                         rng([r["wall_s"] for r in rs], 1.0)])
    pairs = [pr for s in p["settings"] for pr in _pairs(saved, s)]
    if pairs:
        higher = sum(a["acc"] > b["acc"] for a, b in pairs)
        seeds_line = [f"New default against old, seed by seed: accuracy higher in {higher} of {len(pairs)} pairs; "
                      f"the old default's estimate clipped at {100 * CLIP:.0f} % in "
                      f"{sum(_clipped(b) for _, b in pairs)} of them, the new default's in "
                      f"{sum(_clipped(a) for a, _ in pairs)}.", ""]
    table = md_table(["setting", "warmup_epochs", "seeds", "true ε %", "ε̂ % mean (range)", "last drop ratio %",
                      "clipped", "test acc % mean (range)", "test acc % per seed", "wall s / fit mean (range)"], body)
    return "\n".join([
        "# drop_ratio='auto': the default warm-up (3 epochs) against the old one (0)", "",
        "`BatchFilter('prl', drop_ratio='auto')` (digits 30 % / 20 %, FashionMNIST 3,000-image subset 30 %, random "
        "flips) and `CoTeaching(..., drop_ratio='auto')` (digits 30 %), every argument but `warmup_epochs` at its "
        f"default, MLP, {p['epochs']} epochs; `warmup_epochs=None` (3 epochs with 'auto'), `0`, and the true rate "
        "given with a 3-epoch ramp. ε̂ is the final estimate before clipping; a last drop ratio of 49 % is a clipped "
        f"one. Seeds {list(p['seeds'])} (Co-teaching {list(p['coteach_seeds'])}); clean test accuracy; settings: "
        "benchmarks/auto_warmup.py.", "",
        *table, "",
        *seeds_line,
        machine_line(m), "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'auto_warmup.json')}.", ""])


def headline(saved: dict) -> dict:
    out: dict[str, Any] = {"rows": {}}
    for setting in saved["settings"]["settings"]:
        row = {}
        for arm in saved["settings"]["arms"]:
            rs = _rows(saved, setting, arm)
            if rs:
                row[arm] = {"acc": round(100 * statistics.fmean(r["acc"] for r in rs), 2),
                            "clipped": sum(map(_clipped, rs)), "n": len(rs)}
                if arm != "true_rate":
                    row[arm]["eps_hat"] = round(100 * statistics.fmean(r["eps_hat"] for r in rs), 2)
        out["rows"][setting] = row
    pairs = [pr for s in saved["settings"]["settings"] for pr in _pairs(saved, s)]
    out["pairs_default_acc_higher"] = f"{sum(a['acc'] > b['acc'] for a, b in pairs)}/{len(pairs)}"
    return out


BENCHMARK = Benchmark(name="auto_warmup", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_one, render=render, headline=headline, add_arguments=add_arguments,
                      configure=configure, jobs={"full": 2, "quick": 2, "smoke": 1})  # smoke: two ~1 s fits

if __name__ == "__main__":
    main(BENCHMARK)
