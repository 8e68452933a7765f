"""ITLM re-initialising the model at each round start (``reinit=True``, the default and the paper's protocol for
DNNs, itlm_paper §5) vs training on from the last round's weights (``reinit=False``), in short fits.

Newcomers' short fits found ITLM's final model at or below plain training of the same length: with ``reinit=True``
it trains only the last round's epochs. Protocol (``itlm_per_class.py``'s, CPU-scaled): a seeded 6,000-image subset
of MNIST or FashionMNIST (scikit-learn's digits: 1,300 training images), labels flipped uniformly (random) or by
``a -> a + 1`` (systematic), or none (clean); an MLP (one hidden layer of 128; SGD lr 0.05 momentum 0.9, batch 128,
digits 64); ITLM rounds of 4 epochs (digits 10), round 0 on every sample, ``keep_ratio`` the true rate (1 − ε) or
``"auto"`` (ITLM's default estimator), each with ``reinit`` True and False; plain = the same MLP trained as many epochs on
every sample. The clean rows run ``"auto"`` only (keep_ratio 1.0 is plain training). Per run: clean test accuracy
(the data set's test split) and, for ITLM, the final selection's clean precision and the estimate. Seeds 0-2.
``--quick``: digits, random 30 %, seed 0, rounds of 3 epochs; ``--smoke`` the same in one process (smoke tests: too
short to rank anything). ``--round-epochs`` / ``--digits-round-epochs`` lengthen the rounds (where the model starts to
fit the wrong labels within a round: ``results/itlm_reinit_long.md`` has rounds of 12, digits 30). Full mode writes
``results/itlm_reinit.md`` (+ ``.json``); the last line printed is one JSON object.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Benchmark, load_module, main, md_table, quiet, trainer  # noqa: E402

VARIANTS = ("plain", "true reinit", "true keep", "auto reinit", "auto keep")
# "reinit": ITLM(reinit=True), the default; "keep": ITLM(reinit=False), training on across rounds


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    # (data, noise, rate): the rows
    rows: tuple[tuple[str, str, float], ...] = (
        ("mnist", "random", 0.4), ("mnist", "systematic", 0.2), ("mnist", "clean", 0.0),
        ("fashion", "random", 0.3), ("fashion", "systematic", 0.3), ("fashion", "clean", 0.0),
        ("digits", "random", 0.3))
    rounds: int = 4  # ITLM rounds, round 0 included
    round_epochs: int = 4  # per round on MNIST / FashionMNIST
    digits_round_epochs: int = 10
    train_size: int = 6000
    hidden: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 128
    digits_batch_size: int = 64
    model: str = "ImageClassifier(backbone='mlp'), one hidden layer, ReLU, SGD"


FULL = Protocol()
QUICK = Protocol(seeds=(0,), rows=(("digits", "random", 0.3),), rounds=2, digits_round_epochs=3)


def _epochs(p: Protocol, data: str) -> list[int]:
    return [p.digits_round_epochs if data == "digits" else p.round_epochs] * p.rounds


def tasks(p: Protocol, args: Any) -> list[dict]:
    return [{"data": data, "kind": kind, "rate": rate, "seed": seed, "variant": variant,
             "data_root": args.data_root, "settings": p.__dict__}
            for data, kind, rate in p.rows for seed in p.seeds for variant in VARIANTS
            if not (kind == "clean" and variant.startswith("true"))]


def run_one(task: dict) -> dict:
    import pytorch_lightning as pl

    from lit_robust import ITLM
    from lit_robust.models.supervised import ImageClassifier

    quiet()
    torch.set_num_threads(1)
    p = Protocol(**{**task["settings"], "rows": tuple(map(tuple, task["settings"]["rows"]))})
    digits = task["data"] == "digits"
    per_class = load_module("itlm_per_class")
    shape = per_class.Protocol(data=task["data"], train_size=p.train_size,
                               batch_size=p.digits_batch_size if digits else p.batch_size)
    dm = per_class._data(task["kind"], task["rate"], task["seed"], shape, task["data_root"])
    pl.seed_everything(task["seed"], verbose=False)
    model = ImageClassifier(backbone="mlp", image_size=8 if digits else 28, hidden=p.hidden, lr=p.lr,
                            momentum=p.momentum)
    rounds, variant, itlm = _epochs(p, task["data"]), task["variant"], None
    if variant != "plain":
        keep = "auto" if variant.startswith("auto") else 1.0 - task["rate"]
        itlm = ITLM(keep_ratio=keep, round_epochs=rounds, reinit=variant.endswith("reinit"), seed=task["seed"],
                    verbose=False, plot=False, report=False)
    t = trainer(sum(rounds), [] if itlm is None else [itlm])
    t.fit(model, train_dataloaders=dm.train_dataloader())
    out = {key: task[key] for key in ("data", "kind", "rate", "seed", "variant")}
    out.update(acc=float(t.test(model, dm, verbose=False)[0]["test_acc"]), epochs=sum(rounds))
    if itlm is not None:
        corrupted = dm.train_set.corrupted
        out.update(reinit=itlm.reinit, clean_precision=float((~corrupted[itlm.selection]).float().mean()),
                   eps_hat=itlm.history[-1].estimated_corruption)
    return out


def _runs(saved: dict, row: list, variant: str) -> dict[int, dict]:
    data, kind, rate = row
    return {r["seed"]: r for r in saved["results"]
            if (r["data"], r["kind"], r["rate"], r["variant"]) == (data, kind, rate, variant)}


def _label(row: list) -> str:
    data, kind, rate = row
    return f"{data} {kind}" + ("" if kind == "clean" else f" {round(100 * rate)} %")


def _diff(saved: dict, row: list, a: str, b: str) -> float | None:
    """Mean over seeds of (variant a − variant b) test accuracy, in points; None where either did not run."""
    ra, rb = _runs(saved, row, a), _runs(saved, row, b)
    seeds = [s for s in ra if s in rb]
    return round(100 * statistics.fmean(ra[s]["acc"] - rb[s]["acc"] for s in seeds), 2) if seeds else None


def _cell(saved: dict, row: list, variant: str) -> str:
    runs = _runs(saved, row, variant)
    if not runs:
        return "–"
    acc = [100 * r["acc"] for r in runs.values()]
    text = f"{statistics.fmean(acc):.1f}" + (f" ± {statistics.stdev(acc):.1f}" if len(acc) > 1 else "")
    if variant.startswith("auto"):
        text += f" (ε̂ {100 * statistics.fmean(r['eps_hat'] for r in runs.values()):.1f} %)"
    return text


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f}"


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]
    rows = [[_label(row), *(_cell(saved, row, v) for v in VARIANTS),
             _signed(_diff(saved, row, "true keep", "true reinit")),
             _signed(_diff(saved, row, "auto keep", "auto reinit"))] for row in p["rows"]]
    head = headline(saved)
    smoke = " Smoke test: too short to rank anything." if saved["mode"] != "full" else ""
    return "\n".join([
        "# ITLM: re-initialise at each round (reinit=True) or train on (reinit=False), rounds of "
        f"{p['round_epochs']} epochs", "",
        f"Test accuracy, %, mean ± std over seeds {p['seeds']}; ITLM {p['rounds']} rounds of {p['round_epochs']} "
        f"epochs (digits {p['digits_round_epochs']}), round 0 on every sample; plain = the same MLP for all those "
        f"epochs. `true`: keep_ratio = 1 − ε; `auto`: keep_ratio='auto' (ε̂ its mean estimate; ITLM's default estimator when measured, 'disagreement' before 2026-12-07). {p['model']}, "
        f"lr {p['lr']}, momentum {p['momentum']}, {p['train_size']:,} training images (digits 1,300). Settings and "
        f"protocol: benchmarks/itlm_reinit.py.{smoke}", "",
        *md_table(["row", *VARIANTS, "keep − reinit (true)", "keep − reinit (auto)"], rows), "",
        f"Over the rows: keep − reinit {head['keep_minus_reinit_true_pts']:+.2f} points at the true rate (ahead in "
        f"{head['keep_ahead_rows_true']} of {head['rows_true']} rows) and {head['keep_minus_reinit_auto_pts']:+.2f} "
        f"with 'auto' ({head['keep_ahead_rows_auto']} of {head['rows_auto']}); ITLM − plain: reinit "
        f"{head['reinit_minus_plain_pts']:+.2f}, keep {head['keep_minus_plain_pts']:+.2f} points (every ITLM arm, "
        "mean over rows).", "",
        harness.machine_line(m), "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'itlm_reinit.json')}.", ""])


def headline(saved: dict) -> dict[str, Any]:
    rows = saved["settings"]["rows"]
    out: dict[str, Any] = {}
    for arm in ("true", "auto"):
        d = [x for row in rows if (x := _diff(saved, row, f"{arm} keep", f"{arm} reinit")) is not None]
        out[f"keep_minus_reinit_{arm}_pts"] = round(statistics.fmean(d), 2) if d else float("nan")
        out[f"keep_ahead_rows_{arm}"], out[f"rows_{arm}"] = sum(x > 0 for x in d), len(d)
    for kind in ("reinit", "keep"):
        d = [x for row in rows for arm in ("true", "auto")
             if (x := _diff(saved, row, f"{arm} {kind}", "plain")) is not None]
        out[f"{kind}_minus_plain_pts"] = round(statistics.fmean(d), 2) if d else float("nan")
    return out


def add_arguments(p: Any) -> None:
    p.add_argument("--round-epochs", type=int, default=None,
                   help=f"epochs per round on MNIST / FashionMNIST (default {FULL.round_epochs})")
    p.add_argument("--digits-round-epochs", type=int, default=None,
                   help=f"epochs per round on digits (default {FULL.digits_round_epochs})")


def configure(p: Protocol, args: Any) -> Protocol:
    for opt in ("round_epochs", "digits_round_epochs"):
        value = getattr(args, opt)
        if value is None:
            continue
        if value < 1:
            raise SystemExit(f"`--{opt.replace('_', '-')}` must be an integer >= 1, got {value}")
        p = replace(p, **{opt: value})
    return p


BENCHMARK = Benchmark(name="itlm_reinit", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": QUICK},
                      tasks=tasks, run=run_one, render=render, headline=headline,
                      add_arguments=add_arguments, configure=configure,
                      jobs={"full": 2, "quick": 2, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
