"""Benchmark: the MNIST columns of itlm_paper.md Table 1 (Baseline / ITLM / Oracle) on the offline MNIST.

Setting (itlm_paper.md §6.2 and Appendix E.1):

* 3,000 training samples (the paper's 5 % subsample of MNIST), drawn per seed from the 6,000 offline
  training digits; a *noisy* validation split of 1,000 of the remaining digits carrying the same
  corruption; the 4,000 clean offline test digits for the reported accuracy;
* the two-layer CNN ``ImageClassifier(backbone="cnn2")``;
* systematic label errors at clean ratios 60/70/80/90 % and random ones at 30/50/70/90 %;
* ITLM with ``alpha = clean ratio - 5 %``: round 0 on every sample, then 5 ITLM rounds, the model,
  optimizer and LR schedule re-initialised at every round start;
* Baseline = the round-0 model of the ITLM run (E epochs on every sample — exactly what a separate
  baseline run with the same seed would train; it is evaluated on the test set at the end of round 0);
* Oracle = the same training on the clean samples only.

No clean data is used for any decision. Each method's reported model is the epoch of its last round
(round 0 for Baseline, round 5 for ITLM, the whole run for Oracle) with the best accuracy on the
*noisy* validation split (the paper's choice, App. E.1); the accuracy of the final model (no selection)
is reported too.

The paper trains 80 epochs with batch 1000, lr 0.3, plain SGD, step decay /5 at epoch 50. That is too
slow on 2 CPU cores for 8 rows x 3 seeds x 6 rounds, so the protocol is scaled (see ``FULL``): fewer
epochs per round with a smaller batch (more steps per epoch), the same step-decay shape (/5 after 5/8
of the epochs). The protocol was chosen on seed 100 only, which is not among the reported seeds.

Usage::

    python benchmarks/itlm_mnist.py            # full table -> benchmarks/results/itlm_mnist.md (+ .json)
    python benchmarks/itlm_mnist.py --protocol authors --rows systematic:60   # -> results/itlm_mnist_authors.md
    python benchmarks/itlm_mnist.py --quick    # one row, one seed, short rounds (< 60 s)
    python benchmarks/itlm_mnist.py --smoke    # a few seconds, for the test suite
    python benchmarks/itlm_mnist.py --render benchmarks/results/itlm_mnist.json   # re-print a saved run

Modes, seeds, workers, the saved run and the JSON last line are ``harness.py``'s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS, Benchmark, main, md_table, mean_std, mode_of, pm, quiet, reproduce_note, trainer  # noqa: E402

# itlm_paper.md Table 1, MNIST with two-layer CNN: (noise, clean %) -> (Baseline, ITLM, Oracle)
PAPER_TABLE1: dict[tuple[str, int], tuple[float, float, float]] = {
    ("systematic", 60): (66.69, 84.98, 92.44),
    ("systematic", 70): (80.74, 89.19, 92.82),
    ("systematic", 80): (89.91, 91.93, 92.93),
    ("systematic", 90): (92.35, 92.68, 93.20),
    ("random", 30): (80.87, 84.54, 91.37),
    ("random", 50): (88.59, 90.16, 92.14),
    ("random", 70): (91.18, 91.12, 92.82),
    ("random", 90): (92.50, 92.43, 93.20),
}
ROWS: list[tuple[str, int]] = list(PAPER_TABLE1)
METHODS = ("baseline", "itlm", "oracle")  # the order of Table 1's columns


@dataclass(frozen=True)
class Protocol:
    """Training protocol shared by Baseline, every ITLM round and Oracle."""

    epochs: int  # per round; Baseline and Oracle train the same number of epochs
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    decay_at: float  # the LR is divided by `1 / gamma` after this fraction of a round's epochs
    gamma: float
    rounds: int = 5  # ITLM rounds after round 0
    train_size: int = 3000
    val_size: int = 1000
    alpha_offset: float = 0.05  # alpha = clean ratio - alpha_offset
    test_size: int | None = None  # None: all 4,000 test digits (fewer only in --smoke)
    # at each round end, restore the epoch with the best noisy-validation accuracy before ITLM scores
    # (early stopping on the noisy validation split; App. E.1 keeps the best model on it)
    restore_best: bool = True
    # the network: "cnn2" (lit_robust's two-layer CNN, default init) or "lenet_tanh" (the ITLM authors' MNIST net:
    # conv 20@5x5 - tanh - pool, conv 50@5x5 - tanh - pool, fc 500 - tanh, fc 10 - tanh, weights N(0, init_std))
    arch: str = "cnn2"
    init_std: float = 0.02  # lenet_tanh only

    @property
    def milestones(self) -> list[int]:
        m = round(self.decay_at * self.epochs)
        return [m] if 0 < m < self.epochs else []

    def describe(self) -> str:
        ms = self.milestones
        sched = f"LR x{self.gamma:g} after epoch {ms[0]}" if ms else "constant LR"
        mom = f"momentum {self.momentum:g}" if self.momentum else "plain SGD"
        mom += f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        net = ("the ITLM authors' LeNet with tanh activations and tanh on the 10 outputs, weights "
               f"N(0, {self.init_std:g}) re-drawn every round; " if self.arch == "lenet_tanh" else "")
        return net + (f"{self.epochs} epochs per round (round 0 + {self.rounds} ITLM rounds), batch {self.batch_size}, "
                f"SGD lr {self.lr:g} ({mom}), {sched}; {self.train_size} train / {self.val_size} noisy val"
                + ("; each round ends on its best-noisy-val epoch, which ITLM then scores with" if self.restore_best
                   else ""))


# The scaled protocol (chosen on seed 100; see the module docstring).
FULL = Protocol(epochs=10, batch_size=100, lr=0.02, momentum=0.9, weight_decay=5e-4, decay_at=0.625, gamma=0.2)
QUICK = replace(FULL, epochs=3)
SMOKE = replace(FULL, epochs=1, rounds=1, train_size=500, val_size=200, test_size=500)
# The ITLM authors' MNIST setting: the network and initialisation of their code (yanyao-shen/ITLM-simplecode:
# tanh LeNet with tanh outputs, weights re-drawn from N(0, 0.02) every round, best-noisy-val checkpoint) and the
# schedule of itlm_paper.md App. E.1 for subsampled MNIST (plain SGD, batch 1000, lr 0.3, 80 epochs, /5 at epoch
# 50; the code's comment says lr 0.5: `--lr 0.5`).
AUTHORS = Protocol(epochs=80, batch_size=1000, lr=0.3, momentum=0.0, weight_decay=0.0, decay_at=0.625, gamma=0.2,
                   arch="lenet_tanh")
PROTOCOLS = {"scaled": (FULL, QUICK, SMOKE), "authors": (AUTHORS, replace(AUTHORS, epochs=3),
                                                         replace(AUTHORS, epochs=1, rounds=1, train_size=500,
                                                                 val_size=200, test_size=500, batch_size=100))}
REPORTED_SEEDS = [0, 1, 2]
EVAL_BATCH = 250  # validation, scoring and test batches (CPU forward passes are ~2x slower per sample at 1000)
TUNING_SEED = 100
QUICK_ROW = ("systematic", 70)  # --quick / --smoke: one row where the paper shows a clear ITLM gain


@dataclass(frozen=True)
class Settings:
    """What one run measures: the training protocol, the (noise, clean %) rows and the seeds."""

    protocol: Protocol
    rows: tuple[tuple[str, int], ...]
    seeds: tuple[int, ...]


MODES = {"full": Settings(FULL, tuple(ROWS), tuple(REPORTED_SEEDS)), "quick": Settings(QUICK, (QUICK_ROW,), (0,)),
         "smoke": Settings(SMOKE, (QUICK_ROW,), (0,))}


# -- one configuration -----------------------------------------------------------------------------


def _snapshot_callback(round_ends: list[int], restore_best: bool = False):
    """A callback keeping, per round, the final weights and the weights with the best noisy `val_acc`.

    With ``restore_best`` it loads the best weights back at each round end; listed before ITLM, it runs
    before ITLM's scoring pass in the same hook, so the round's selection is made by that model.
    """
    from pytorch_lightning.callbacks import Callback

    class Snapshots(Callback):
        def __init__(self) -> None:
            self.best: dict[int, tuple[float, dict]] = {}
            self.final: dict[int, dict] = {}
            self.lrs: list[float] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            epoch = trainer.current_epoch
            r = sum(1 for end in round_ends if end <= epoch)  # round of this epoch
            state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            acc = float(trainer.callback_metrics["val_acc"])
            if r not in self.best or acc > self.best[r][0]:
                self.best[r] = (acc, state)
            if epoch + 1 in round_ends:
                self.final[r] = state
                if restore_best:
                    pl_module.load_state_dict(self.best[r][1])
            self.lrs.append(float(trainer.optimizers[0].param_groups[0]["lr"]))

    return Snapshots()


def _lenet_tanh_classifier(proto: Protocol):
    """An :class:`ImageClassifier` whose network is the ITLM authors' MNIST LeNet (bounded outputs)."""
    from torch import nn

    from lit_robust import ImageClassifier

    class LeNetTanh(ImageClassifier):
        def __init__(self) -> None:
            super().__init__(backbone="cnn2", lr=proto.lr, momentum=proto.momentum, weight_decay=proto.weight_decay,
                             milestones=proto.milestones, gamma=proto.gamma)
            self.net = nn.Sequential(
                nn.Conv2d(1, 20, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.Tanh(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(800, 500), nn.Tanh(), nn.Linear(500, 10), nn.Tanh())
            self._draw(None)

        def _draw(self, generator: torch.Generator | None) -> None:
            with torch.no_grad():
                for m in self.net:
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        m.weight.normal_(0.0, proto.init_std, generator=generator)
                        m.bias.zero_()

        def reinitialize(self, seed: int) -> None:  # ITLM re-draws the weights at every round start
            self._draw(torch.Generator().manual_seed(seed))

    return LeNetTanh()


@torch.no_grad()
def _test_accuracy(module: torch.nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    module.load_state_dict(state)
    module.eval()
    b = EVAL_BATCH
    correct = sum(int((module(x[i:i + b]).argmax(-1) == y[i:i + b]).sum()) for i in range(0, len(y), b))
    return 100.0 * correct / len(y)


def run_config(noise: str, clean_pct: int, seed: int, proto: Protocol, data_root: str) -> dict[str, Any]:
    """Baseline, ITLM and Oracle for one (noise, clean ratio, seed); accuracies in % on the clean test set."""
    quiet()
    torch.set_num_threads(1)
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import ITLM, ImageClassifier, IndexedDataset, MNISTDataModule

    t0 = time.perf_counter()
    clean = clean_pct / 100.0
    alpha = round(clean - proto.alpha_offset, 6)
    dm = MNISTDataModule(root=str(data_root), clean_ratio=clean, noise=noise, train_size=proto.train_size,
                         val_size=proto.val_size, batch_size=proto.batch_size, eval_batch_size=EVAL_BATCH,
                         seed=seed)
    dm.setup("fit")
    x_test, y_test = (t[:proto.test_size] for t in dm.test_set.dataset.tensors)

    def model() -> ImageClassifier:
        if proto.arch == "lenet_tanh":
            return _lenet_tanh_classifier(proto)
        return ImageClassifier(backbone="cnn2", lr=proto.lr, momentum=proto.momentum,
                               weight_decay=proto.weight_decay, milestones=proto.milestones, gamma=proto.gamma)

    # Baseline (round 0) and ITLM (rounds 1..R) in one run
    E, R = proto.epochs, proto.rounds
    round_ends = [E * (r + 1) for r in range(R + 1)]
    pl.seed_everything(seed, verbose=False)
    module = model()
    itlm = ITLM(keep_ratio=alpha, round_epochs=[E] * (R + 1), initial_round_on_all=True, seed=seed,
                verbose=False, plot=False)
    snaps = _snapshot_callback(round_ends, proto.restore_best)
    trainer(E * (R + 1), [snaps, itlm]).fit(module, datamodule=dm)
    res: dict[str, Any] = {
        "noise": noise, "clean": clean_pct, "seed": seed, "alpha": alpha, "n_test": len(y_test),
        "baseline": _test_accuracy(module, snaps.best[0][1], x_test, y_test),
        "itlm": _test_accuracy(module, snaps.best[R][1], x_test, y_test),
        "baseline_final": _test_accuracy(module, snaps.final[0], x_test, y_test),
        "itlm_final": _test_accuracy(module, snaps.final[R], x_test, y_test),
        "clean_precision": [None if h.clean_precision is None else round(h.clean_precision, 4) for h in itlm.history],
        "lrs": snaps.lrs,
    }
    t1 = time.perf_counter()

    # Oracle: the clean training samples only
    ts = dm.train_set
    keep = ~ts.corrupted
    xs, _ = ts.dataset.tensors
    oracle_set = IndexedDataset(TensorDataset(xs[keep], ts.targets[keep]))
    pl.seed_everything(seed, verbose=False)
    oracle = model()
    osnaps = _snapshot_callback([E])
    trainer(E, [osnaps]).fit(oracle, train_dataloaders=DataLoader(oracle_set, batch_size=proto.batch_size,
                                                                    shuffle=True),
                              val_dataloaders=dm.val_dataloader())
    res["oracle"] = _test_accuracy(oracle, osnaps.best[0][1], x_test, y_test)
    res["oracle_final"] = _test_accuracy(oracle, osnaps.final[0], x_test, y_test)
    res["seconds"] = {"itlm_run": round(t1 - t0, 2), "oracle_run": round(time.perf_counter() - t1, 2)}
    return res


def tasks(s: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [dict(noise=n, clean_pct=c, seed=seed, proto=asdict(s.protocol), data_root=args.data_root)
            for (n, c) in s.rows for seed in s.seeds]


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    res = run_config(**{**task, "proto": Protocol(**task["proto"])})
    print(f"# {res['noise']:>10} {res['clean']:>3}% seed {res['seed']}: baseline {res['baseline']:.2f} "
          f"itlm {res['itlm']:.2f} oracle {res['oracle']:.2f} | final {res['baseline_final']:.2f} "
          f"{res['itlm_final']:.2f} {res['oracle_final']:.2f} | precision {res['clean_precision']} "
          f"| {res['seconds']}", file=sys.stderr, flush=True)
    return res


# -- aggregation and report ------------------------------------------------------------------------
def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for noise, clean in dict.fromkeys((r["noise"], r["clean"]) for r in results):
        rs = [r for r in results if r["noise"] == noise and r["clean"] == clean]
        row: dict[str, Any] = {"noise": noise, "clean": clean, "seeds": [r["seed"] for r in rs]}
        for key in ("baseline", "itlm", "oracle", "baseline_final", "itlm_final", "oracle_final"):
            row[key], row[key + "_std"] = mean_std([r[key] for r in rs])
        precs = [r["clean_precision"][-1] for r in rs if r["clean_precision"] and r["clean_precision"][-1] is not None]
        row["clean_precision"] = statistics.fmean(precs) if precs else None
        paper = PAPER_TABLE1.get((noise, clean))
        row["paper"] = dict(zip(("baseline", "itlm", "oracle"), paper)) if paper else None
        if paper:
            row["itlm_target_met"] = row["itlm"] >= paper[1] - 1.0
            row["gain_target_met"] = (row["itlm"] > row["baseline"]) if paper[1] > paper[0] else None
        rows.append(row)
    return rows


def render(saved: dict[str, Any]) -> str:
    """The tables of a saved run (``saved["settings"]["protocol"]["arch"]`` tells the two protocols apart)."""
    rows, results, m = aggregate(saved["results"]), saved["results"], saved["meta"]
    proto, seeds, n_test = Protocol(**saved["settings"]["protocol"]), saved["settings"]["seeds"], results[0]["n_test"]

    def yn(v: bool | None) -> str:
        return "—" if v is None else ("yes" if v else "**no**")

    authors = proto.arch == "lenet_tanh"
    stem = "itlm_mnist_authors" if authors else "itlm_mnist"

    lines = [
        "# ITLM on subsampled MNIST — itlm_paper.md Table 1 (MNIST columns)",
        "",
        ("The ITLM authors' protocol (`--protocol authors`): " if authors else "Scaled protocol: ")
        + f"{proto.describe()}; α = clean ratio − {proto.alpha_offset * 100:.0f} %; "
        f"test on {n_test:,} clean offline MNIST test digits"
        + ("." if authors else "; two-layer CNN (`cnn2`)."),
        "Baseline = the ITLM run's round-0 model (all samples, same epochs); Oracle = clean samples only. "
        "Model selection: best epoch of each method's last round on the **noisy** validation split "
        "(no clean data anywhere). Paper protocol: 80 epochs, batch 1000, lr 0.3, /5 at epoch 50, median of 5 runs.",
        "",
        f"Seeds {seeds} (mean ± std over seeds; "
        + ("the authors' settings, not tuned here). " if authors else f"protocol chosen on seed {TUNING_SEED} only). ")
        + "Accuracy in %.",
        "",
    ]
    table = []
    for r in rows:
        p = r["paper"] or {"baseline": float("nan"), "itlm": float("nan"), "oracle": float("nan")}
        prec = "—" if r["clean_precision"] is None else f"{100 * r['clean_precision']:.1f} %"
        table.append([r["noise"], f"{r['clean']} %", *(pm(r[k], r[k + "_std"], 2, n=len(r["seeds"])) for k in METHODS),
                      *(f"{p[k]:.2f}" for k in METHODS), f"{r['itlm'] - r['baseline']:+.2f}",
                      f"{p['itlm'] - p['baseline']:+.2f}", yn(r.get("itlm_target_met")),
                      yn(r.get("gain_target_met")), prec])
    lines += md_table(["noise", "clean", "Baseline (ours)", "ITLM (ours)", "Oracle (ours)", "Baseline (paper)",
                       "ITLM (paper)", "Oracle (paper)", "ITLM − Baseline (ours)", "ITLM − Baseline (paper)",
                       "ITLM ≥ paper − 1", "ITLM > Baseline where paper gains", "clean precision of last selection"],
                      table)
    judged = [r for r in rows if r.get("itlm_target_met") is not None]
    missed = [f"{r['noise']} {r['clean']} %" for r in judged if not r["itlm_target_met"]]
    gains = [r for r in rows if r.get("gain_target_met") is not None]
    no_gain = [f"{r['noise']} {r['clean']} %" for r in gains if not r["gain_target_met"]]
    lines += [
        "",
        f"Targets: ITLM ≥ the paper's ITLM − 1 point in {len(judged) - len(missed)} of {len(judged)} rows"
        + (f" (missed: {', '.join(missed)})" if missed else "")
        + f"; ITLM > Baseline in {len(gains) - len(no_gain)} of the {len(gains)} rows where the paper shows a gain"
        + (f" (not: {', '.join(no_gain)})" if no_gain else "") + ".",
    ]
    # the gain over Baseline, ours against the paper's: each side's own level cancels out of it
    papered = [r for r in rows if r["paper"]]
    if papered:
        def gap(r: dict[str, Any]) -> float:
            return (r["itlm"] - r["baseline"]) - (r["paper"]["itlm"] - r["paper"]["baseline"])

        def names(rs: list[dict[str, Any]]) -> str:
            return ", ".join(f"{r['noise']} {r['clean']} %" for r in rs) or "none"

        def span(values: list[float]) -> str:
            lo, hi = min(values), max(values)
            return f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}"

        close = [r for r in papered if abs(gap(r)) <= 1.0]
        above = [r for r in papered if gap(r) > 1.0]
        below = [r for r in papered if gap(r) < -1.0]
        lines += [
            "",
            f"Gain over Baseline (ITLM − Baseline, mean over seeds) within ±1 point of the paper's gain in {len(close)} "
            f"of {len(papered)} rows ({names(close)}); more than 1 point larger in {names(above)}; more than 1 point "
            f"smaller in {names(below)}. Level: Oracle {span([r['oracle'] for r in papered])} here, "
            f"{span([r['paper']['oracle'] for r in papered])} in the paper; each gain column compares a run with its "
            "own Baseline, whatever the level.",
        ]
    lines += [
        "",
        "Final model of each method (no model selection at all):",
        "",
        *md_table(["noise", "clean", "Baseline", "ITLM", "Oracle"],
                  [[r["noise"], f"{r['clean']} %", *(pm(r[k + "_final"], r[k + "_final_std"], 2, n=len(r["seeds"]))
                                                    for k in METHODS)]
                   for r in rows]),
    ]
    if authors:
        lines += [
            "",
            "The network, initialisation and checkpoint choice follow the authors' code (yanyao-shen/ITLM-simplecode); "
            "batch, lr and the decay epoch follow the paper's App. E.1 for subsampled MNIST. Run for the row the "
            "scaled protocol misses (systematic 60 %) only: one seed of one row costs ~20–40 min of one core here. "
            "Its Baseline is above the scaled protocol's on that row (72.7 against 66.6 %); the clean share of each "
            "round's selection is in the JSON (`clean_precision`, rounds 1–5). Command: "
            "`python benchmarks/itlm_mnist.py --protocol authors --rows systematic:60`.",
        ]
    lines += [] if authors else [
        "",
        f"Protocol choice (seed {TUNING_SEED} only, all 8 rows, never per row): lr 0.1 plain SGD left the Oracle "
        "under-trained at random 30 % (90 steps on 900 samples: 39.6 %); lr 0.05 with momentum 0.9 diverged there "
        "(10.3 %); lr 0.02, momentum 0.9, weight decay 5e-4 trained every row; ending each round on its "
        "best-noisy-val epoch (before ITLM scores) was kept because ITLM was better on 5 of the 8 rows of that "
        "seed (+0.8 points on average). Systematic 60 % is chaotic on a single seed: ITLM 74.6–79.3 % across "
        "three initialisations of seed 100 in exploratory runs. There the round-0 model predicts a+1 for whole "
        "classes (0 and 5); ITLM's selection then keeps those classes' mislabelled samples and drops the clean ones, "
        "so the flip persists through the rounds.",
    ]
    arch, system = m["machine"].split(", ", 1)
    # the run's recorded command, before the harness too: the fixed "--protocol authors" left out the
    # `--rows systematic:60` that made itlm_mnist_authors.md, and ran all 8 rows (hours) over its one
    command = m["command"]
    lines += [
        "",
        f"Wall time: {m['wall_s'] / 60:.1f} min ({m['jobs']} worker process(es) x 1 torch thread(s)); "
        f"date {m['date']}; machine: {arch}, {m['cpus']} CPU cores, {system}; torch {m['torch']}.",
        "",
        f"Reproduce: `{command}` "
        # paths from the repository root, where the command runs (`--render {stem}.json` found no file there)
        + (f"(writes this file and the per-seed `benchmarks/results/{stem}.json`; `--render "
           f"benchmarks/results/{stem}.json` re-prints it without training)"
           if m.get("pre_harness") else reproduce_note(saved, f"{stem}.json"))
        + ", `--quick` for a one-row check.",
        "",
    ]
    return "\n".join(lines)


def headline(saved: dict[str, Any]) -> dict[str, Any]:
    rows = {f"{r['noise']}_{r['clean']}": {k: round(r[k], 2) for k in ("baseline", "itlm", "oracle")}
            for r in aggregate(saved["results"])}
    return {"seeds": saved["settings"]["seeds"], "epochs_per_round": saved["settings"]["protocol"]["epochs"],
            "rows": rows}


# -- the script's own options ----------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", default="scaled", help="'scaled' (results/itlm_mnist.md) or 'authors' (the ITLM "
                   "authors' network and schedule; full mode writes results/itlm_mnist_authors.md)")
    p.add_argument("--rows", nargs="+", default=None, help="e.g. systematic:60 random:30")
    p.add_argument("--epochs", type=int, default=None, help="epochs per round (overrides the protocol)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--restore-best", type=int, default=None,
                   help="1: score each round with its best-noisy-val epoch, 0: with its last (overrides the protocol)")


# option -> (protocol field, allowed range as words, check)
OVERRIDES = {"epochs": ("epochs", "an integer >= 1", lambda v: v >= 1),
             "batch_size": ("batch_size", "an integer >= 1", lambda v: v >= 1),
             "lr": ("lr", "a number > 0", lambda v: v > 0),
             "momentum": ("momentum", "a number in [0, 1)", lambda v: 0 <= v < 1),
             "weight_decay": ("weight_decay", "a number >= 0", lambda v: v >= 0),
             "restore_best": ("restore_best", "0 or 1", lambda v: v in (0, 1))}


def configure(s: Settings, args: argparse.Namespace) -> Settings:
    if args.protocol not in PROTOCOLS:
        raise SystemExit(f"`--protocol` must be one of {sorted(PROTOCOLS)}, got {args.protocol!r}")
    proto = PROTOCOLS[args.protocol][("full", "quick", "smoke").index(mode_of(args))]
    for opt, (field, allowed, ok) in OVERRIDES.items():
        value = getattr(args, opt)
        if value is None:
            continue
        if not ok(value):
            raise SystemExit(f"`--{opt.replace('_', '-')}` must be {allowed}, got {value}")
        proto = replace(proto, **{field: bool(value) if field == "restore_best" else value})
    rows = s.rows
    if args.rows:
        rows = []
        for spec in args.rows:
            noise, _, pct = spec.partition(":")
            if noise not in ("random", "systematic") or not pct.isdigit() or not 0 < int(pct) <= 100:
                raise SystemExit(f"`--rows` entries must look like 'systematic:60' (noise random or systematic, "
                                 f"clean % in (0, 100]), got {spec!r}")
            rows.append((noise, int(pct)))
    if not (Path(args.data_root) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"`--data-root` must hold MNIST/raw, got {args.data_root!r}")
    if args.protocol != "scaled" and args.out is None and mode_of(args) == "full":
        args.out = str(RESULTS / f"itlm_mnist_{args.protocol}.md")  # the scaled table stays as it is
    return replace(s, protocol=proto, rows=tuple(rows))


BENCHMARK = Benchmark(name="itlm_mnist", doc=__doc__, modes=MODES, tasks=tasks, run=run_one, render=render,
                      headline=headline, add_arguments=add_arguments, configure=configure)

if __name__ == "__main__":
    main(BENCHMARK)
