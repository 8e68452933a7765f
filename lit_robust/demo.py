"""`lit-robust demo`: baseline vs ITLM on scikit-learn's digits with systematic label noise (no download)."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from lit_robust._backend import pl
from lit_robust._checks import LR_MAX, SEED_MAX
from lit_robust.callbacks import ITLM
from lit_robust.data import DigitsDataModule
from lit_robust.models.supervised import ImageClassifier
from lit_robust.reporting import print_table

__all__ = ["run_demo"]

#: the most early rounds: the demo lists every round's epochs, so 10**20 ended in an OverflowError traceback and
#: 10**9 would fill the memory before training; at ~0.1 s an epoch, 10,000 rounds already take hours
EARLY_ROUNDS_MAX = 10_000



def _quiet() -> None:
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning|lightning")


def _train(seed: int, clean_ratio: float, noise: str, itlm: ITLM | None, epochs: int,
           lr: float) -> tuple[float, bool]:
    """The clean test accuracy of one run, and whether its training diverged (weights not finite after the fit)."""
    pl.seed_everything(seed)  # `_quiet` silences its line; `verbose=` is new in pytorch-lightning 2.4
    data = DigitsDataModule(clean_ratio=clean_ratio, noise=noise, val_size=0, batch_size=64, seed=seed)
    model = ImageClassifier(backbone="mlp", image_size=8, lr=lr)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[itlm] if itlm else [], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", devices=1)
    trainer.fit(model, data)
    # `--lr 1e30` made every weight NaN in the first steps: the run scored chance (9.5 %) and the demo said nothing
    diverged = not all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return float(trainer.test(model, data, verbose=False)[0]["test_acc"]), diverged


def _starved_class_warnings(caught: list[warnings.WarningMessage]) -> tuple[list[str], list[str]]:
    """The recorded warnings that say one ITLM trim starved a class, each cut to its first clause ("ITLM round 2: the
    selection keeps 0 of 133 labelled 2, ..."), and those that say an `"auto"` estimate kept more samples than are
    clean, cut alike (the table shows each seed's estimate: the demo says them in one line below it, where a raw
    warning above the table read as a failure); every other warning is shown as usual."""
    starved, under = [], []
    for w in caught:
        text = str(w.message)
        if text.startswith("ITLM round") and "`ITLM(per_class=True)`" in text:
            starved.append(text.split(", against", 1)[0])
        elif text.startswith("ITLM round") and "`keep_ratio='auto'`" in text and "flags as clean" in text:
            under.append(text.split(": the selection", 1)[0])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return starved, under


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Name the flag, the allowed range and the value (argparse prints usage and exits with status 2)."""
    if not 0.0 < args.clean_ratio <= 1.0:
        p.error(f"argument --clean-ratio must be in (0, 1], got {args.clean_ratio}")
    if args.keep_ratio is not None and not 0.0 < args.keep_ratio <= 1.0:
        p.error(f"argument --keep-ratio must be in (0, 1], got {args.keep_ratio}")
    if args.keep_ratio is None and args.clean_ratio <= 0.05:
        p.error(f"argument --clean-ratio must be above 0.05 when --keep-ratio is not given (the default keep "
                f"ratio is the clean ratio - 0.05), got {args.clean_ratio}")
    for flag, value in (("--early-rounds", args.early_rounds), ("--early-epochs", args.early_epochs),
                        ("--final-epochs", args.final_epochs)):
        if value < 1:  # no early round would make the "ITLM" run plain training
            p.error(f"argument {flag} must be an integer >= 1, got {value}")
    if args.early_rounds > EARLY_ROUNDS_MAX:
        p.error(f"argument --early-rounds must be an integer in [1, {EARLY_ROUNDS_MAX}], got {args.early_rounds}")
    if not 0 < args.lr <= LR_MAX:  # inf passed here and was refused by the model, after the header; 1.7e308
        # ended in torch's "cannot be converted to type float without overflow" traceback in the first step
        p.error(f"argument --lr must be a number > 0 (at most {LR_MAX:.2g}, the largest float32), got {args.lr}")
    if any(not 0 <= s <= SEED_MAX for s in args.seeds):
        # seed_everything's bound (NumPy's): 2**32 ended in Lightning's traceback after the header
        p.error(f"argument --seeds must be integers in [0, {SEED_MAX}], got {args.seeds}")
    if len(set(args.seeds)) != len(args.seeds):
        # `--seeds 0 0` averaged one run twice and reported it as a mean over two seeds
        p.error(f"argument --seeds must be distinct seeds (each is one run of the mean), got {args.seeds}")


def _seed_row(seed: int, args: argparse.Namespace, keep: float, rounds: list[int]) -> dict[str, Any]:
    """One seed's runs: the baseline, ITLM at ``keep`` and, unless ``--no-auto``, ITLM with ``keep_ratio="auto"``."""
    base, base_diverged = _train(seed, args.clean_ratio, args.noise, None, sum(rounds), args.lr)
    itlm = ITLM(keep_ratio=keep, round_epochs=rounds, seed=seed, verbose=False, plot=False, per_class=args.per_class)
    acc, itlm_diverged = _train(seed, args.clean_ratio, args.noise, itlm, sum(rounds), args.lr)
    row = {"seed": seed, "baseline_acc": base, "itlm_acc": acc, "clean_precision": itlm.history[-1].clean_precision,
           "diverged": base_diverged + itlm_diverged}
    if not args.no_auto:  # the same ITLM, told nothing about the corruption rate
        auto = ITLM(keep_ratio="auto", round_epochs=rounds, seed=seed, verbose=False, plot=False,
                    per_class=args.per_class)
        row["itlm_auto_acc"], auto_diverged = _train(seed, args.clean_ratio, args.noise, auto, sum(rounds), args.lr)
        row["estimated_corruption"] = auto.history[-1].estimated_corruption
        row["diverged"] += auto_diverged
    return row


class _DemoParser(argparse.ArgumentParser):
    """An unknown flag gets the closest known one (a CLI newcomer's `--per_class` for `--per-class`)."""

    def error(self, message: str) -> Any:
        unknown = re.match(r"unrecognized arguments: (--\S+)", message)
        if unknown is not None:
            flag = unknown.group(1).split("=")[0]
            flags = [o for o in self._option_string_actions if o.startswith("--")]
            close = difflib.get_close_matches(flag.replace("_", "-"), flags, n=1, cutoff=0.7)
            if close:
                message += f" (did you mean {close[0]}?)"
        return super().error(message)


def _keep_ratio(text: str) -> float:
    """``--keep-ratio``'s value: a number; ``auto`` is told that the demo's third run already is ITLM "auto"."""
    try:
        return float(text)
    except ValueError:
        said = (" (the demo's third run is ITLM with keep_ratio='auto' already; --no-auto skips it)"
                if text.strip().lower() == "auto" else "")
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}{said}") from None


def run_demo(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train a plain baseline and ITLM on the same noisy digits; print a table; return the figures."""
    p = _DemoParser(prog="lit-robust demo", description=__doc__)
    p.add_argument("--clean-ratio", type=float, default=0.6, help="fraction of correct labels (default 0.6)")
    p.add_argument("--noise", choices=["systematic", "random"], default="systematic")
    p.add_argument("--keep-ratio", type=_keep_ratio, default=None, help="ITLM alpha (default: clean ratio - 0.05)")
    p.add_argument("--early-rounds", type=int, default=5, help="number of early-stopped rounds (default 5)")
    p.add_argument("--early-epochs", type=int, default=2, help="epochs per early-stopped round (default 2)")
    p.add_argument("--final-epochs", type=int, default=20, help="epochs of the last, full round (default 20)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", action="store_true",
                   help="the ITLM runs trim each class alike (ITLM(per_class=True)): one trim leaves some digits "
                        "almost without samples under this class-pair noise, and ITLM warns")
    p.add_argument("--no-auto", action="store_true",
                   help="skip the third run, ITLM with keep_ratio='auto' (the corruption rate estimated)")
    args = p.parse_args(list(argv) if argv is not None else None)
    _check_args(p, args)
    keep = args.keep_ratio if args.keep_ratio is not None else round(args.clean_ratio - 0.05, 6)
    rounds = [args.early_epochs] * args.early_rounds + [args.final_epochs]
    _quiet()
    console = Console()
    console.print(f"[bold]lit-robust demo[/bold]: scikit-learn digits, {100 * (1 - args.clean_ratio):.0f}% "
                  f"{args.noise} label noise, MLP; ITLM keep_ratio={keep}, round_epochs={rounds}"
                  + (", per_class=True" if args.per_class else ""))
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # one thread: the networks are tiny, and torch's default (one per core) made the demo 9x slower on a busy
    # shared machine (a release checker's 28.9 s against 3.1 s for one seed)
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            rows = [_seed_row(seed, args, keep, rounds) for seed in args.seeds]
    finally:
        torch.set_num_threads(threads)
    starved, under = _starved_class_warnings(caught)
    table = Table(title="Clean test accuracy (digits, 497 held-out images)")
    per = " per class" if args.per_class else ""
    cols = ["seed", "baseline", f"ITLM{per} α={keep:g}", "its selection clean"]
    cols += [] if args.no_auto else [f"ITLM{per} auto", "auto's ε̂"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        cells = [str(r["seed"]), f"{100 * r['baseline_acc']:.1f}%", f"{100 * r['itlm_acc']:.1f}%",
                 f"{100 * r['clean_precision']:.1f}%"]
        if not args.no_auto:
            # a diverged auto run (`--lr 1e30`) ended before any round made an estimate: a traceback here hid the table
            est = r["estimated_corruption"]
            cells += [f"{100 * r['itlm_auto_acc']:.1f}%", "—" if est is None else f"{100 * est:.1f}%"]
        table.add_row(*cells)
    print_table(table, console)
    diverged = sum(r["diverged"] for r in rows)
    chance = [r for r in rows if r["baseline_acc"] < 0.2]  # 10 digits: 10 % is a guess
    if chance and not diverged:
        # `--lr 100`: finite weights at chance, and the summary blamed class-pair noise and advised --per-class (a
        # newcomer's first hour)
        lr_hint = (f" --lr {args.lr:g} is likely too large for this MLP: try a smaller --lr (the default is 0.05)."
                   if args.lr > 0.05 else "")
        console.print(f"[bold]The plain model scored at chance on {len(chance)} of {len(rows)} seeds[/bold] "
                      f"({', '.join(f'{100 * acc:.1f}%' for acc in (r['baseline_acc'] for r in chance))}; a guess "
                      "among 10 digits: "
                      f"10%): it learnt nothing, so ITLM's rounds could not either, and one trim's starved digits "
                      f"follow from that.{lr_hint}")
        starved = []
    if starved:
        # 16 multi-line warnings above the table read as a failure to a docs newcomer's first run: one line here
        console.print(f"ITLM warned {len(starved)} times that one trim kept few or no samples of some digits (e.g. "
                      f"{starved[0]}): under class-pair noise their wrong labels all point at one other digit. "
                      "`lit-robust demo --per-class` trims each digit alike.")
    if diverged:
        runs = len(rows) * (2 if args.no_auto else 3)
        console.print(f"[bold]{diverged} of {runs} runs diverged[/bold]: their weights are not finite (NaN/inf) after "
                      "training, so their accuracy is that of a constant guess. "
                      f"--lr {args.lr:g} is too large for this MLP: try a smaller --lr (the default is 0.05).")
    if under:
        console.print(f"ITLM warned {len(under)} time{'' if len(under) == 1 else 's'} that `\"auto\"` estimated below "
                      "the true rate and kept more samples than are clean "
                      f"({'' if len(under) == 1 else 'e.g. '}{under[0]}).")

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]  # None: a diverged run's missing estimate
        return sum(values) / len(values) if values else None

    summary = {"baseline_acc": mean("baseline_acc"), "itlm_acc": mean("itlm_acc"),
               "clean_precision": mean("clean_precision"), "seeds": args.seeds, "per_class": args.per_class}
    if not args.no_auto:
        summary.update(itlm_auto_acc=mean("itlm_auto_acc"), estimated_corruption=mean("estimated_corruption"))
    if diverged:  # (absent from a sound run's line, which keeps its keys)
        summary["diverged_runs"] = diverged
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    console.print(f"The training labels are {100 * args.clean_ratio:.0f}% correct; ITLM's last round trained on a "
                  f"selection that is {100 * summary['clean_precision']:.1f}% correct on average. "
                  f"Mean accuracy: baseline {100 * summary['baseline_acc']:.1f}%, ITLM{per} "
                  f"{100 * summary['itlm_acc']:.1f}%"
                  + ("." if args.no_auto else
                     f", ITLM{per} auto {100 * summary['itlm_auto_acc']:.1f}% (estimated corruption "
                     + ("none" if summary["estimated_corruption"] is None else
                        f"{100 * summary['estimated_corruption']:.1f}%")
                     + f", true {100 * (1 - args.clean_ratio):.0f}%)."))
    print(json.dumps(summary))
    return summary
