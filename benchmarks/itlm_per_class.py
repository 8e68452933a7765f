"""ITLM's one trim over all samples vs ``ITLM(per_class=True)``, which trims each class (by given label) alike.

A newcomer's FashionMNIST run with 20 % pair-swap noise (T-shirt <-> shirt, pullover <-> coat, sneaker <-> boot,
trouser <-> dress, sandal <-> bag) saw ITLM drop 532 of the 599 samples labelled T-shirt, most of them correctly
labelled, and end below plain training. Protocol (CPU-scaled, as ``corruption_rate.py``'s classification rows): a
seeded 6,000-image FashionMNIST subset, 20 % of the labels flipped by pair swap, by ``a -> a + 1`` (systematic) or
uniformly (random), or none (clean); an MLP (one hidden layer of 128, ``--hidden``; SGD lr 0.05 momentum 0.9, batch
128); ITLM round 0 on every sample then 2 re-initialised rounds, 4 epochs each (``--round-epochs``); ``keep_ratio`` the true rate (0.8; 1.0 on clean
data is plain training, so the clean row runs ``"auto"`` only) or ``"auto"`` (ITLM's default estimator), each with
``per_class`` off and on; plain = the same MLP trained as many epochs on every sample, and (full mode, or
``--plain-last-round 1``) plain last round = trained only the last round's epochs, as long as ITLM's final model. Per run: clean test accuracy (the
10,000 test images), the final selection's smallest per-class kept share (by given label) and its clean precision.
Seeds 0-2. ``--data mnist`` / ``digits`` run the same on the offline MNIST 6,000 or scikit-learn's digits (1,300
training images, rounds of 10 epochs, batch 64), and ``--rates`` several noise rates (e.g. ``0.1 0.2 0.3 0.4 0.45``,
the rows of ``corruption_rate.py``; pair swaps are FashionMNIST's). ``--quick``: seed 0, pair-swap and random only,
2,000 images, 2 epochs per round; ``--smoke`` as quick in one process. Both are smoke tests (they say so in the
markdown and the JSON line): measured on 2026-12-03, quick put ITLM below plain in every row, the opposite of the
full tables. Full mode writes ``results/itlm_per_class.md``
(+ ``.json``); the last line printed is one JSON object.
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
DATA = {"fashion": "FashionMNIST", "mnist": "MNIST", "digits": "digits"}
VARIANTS = ("plain", "plain last round", "true", "true per_class", "auto", "auto per_class")
# "plain" trains the sum of the rounds' epochs; "plain last round" only the last round's, as long as ITLM's final
# model (re-initialised at each round start) trains


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    kinds: tuple[str, ...] = KINDS
    rates: tuple[float, ...] = (0.2,)  # --rates; the clean row runs once, at 0
    data: str = "fashion"  # --data
    train_size: int = 6000
    round_epochs: tuple[int, ...] = (4, 4, 4)  # round 0 on every sample + re-initialised rounds (--round-epochs)
    hidden: int = 128  # --hidden
    lr: float = 0.05
    batch_size: int = 128
    # recorded in the saved run since 2026-12-03 (older runs' JSON lacks them: their tables say so)
    model: str = "ImageClassifier(backbone='mlp'), one hidden layer, ReLU"
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    plain_last_round: bool = True  # --plain-last-round: also plain training of the last round's epochs only


FULL = Protocol()
QUICK = Protocol(seeds=(0,), kinds=("pairs", "random"), train_size=2000, round_epochs=(2, 2), plain_last_round=False)


def _rows(settings: dict) -> list[tuple[str, float]]:
    """(noise, rate) of each table row: every noise at every rate, the clean row once at 0 (saved runs from before
    ``--rates`` carry one ``rate``)."""
    rates = settings.get("rates", [settings.get("rate")])
    return [(kind, 0.0) if kind == "clean" else (kind, rate) for kind in settings["kinds"]
            for rate in ([0.0] if kind == "clean" else rates)]


def tasks(p: Protocol, args: Any) -> list[dict]:
    out = []
    for kind, rate in _rows(p.__dict__):
        for seed in p.seeds:
            for variant in VARIANTS:
                if kind == "clean" and variant.startswith("true"):
                    continue  # keep_ratio 1.0 is plain training
                if variant == "plain last round" and not p.plain_last_round:
                    continue
                out.append({"kind": kind, "rate": rate, "seed": seed, "variant": variant,
                            "data_root": args.data_root, "settings": p.__dict__})
    return out


def _data(kind: str, rate: float, seed: int, p: Protocol, root: str) -> Any:
    """The datamodule with ``kind`` noise at ``rate`` applied to its training labels in place (and its
    ``corrupted`` flags)."""
    from lit_robust import DigitsDataModule, FashionMNISTDataModule, MNISTDataModule, corrupt_labels

    common = dict(clean_ratio=1.0, val_size=0, seed=seed)
    if p.data == "digits":
        dm = DigitsDataModule(batch_size=p.batch_size, **common)
    else:
        cls = FashionMNISTDataModule if p.data == "fashion" else MNISTDataModule
        dm = cls(root=root, train_size=p.train_size, batch_size=p.batch_size, **common)
    dm.setup("fit")
    ds = dm.train_set
    y = ds.targets.clone()
    if kind == "clean":
        noisy, corrupted = y, torch.zeros(y.numel(), dtype=torch.bool)
    elif kind == "pairs":
        noisy, corrupted = corrupt_labels(y, 1.0 - rate, "systematic", num_classes=10, seed=seed, mapping=PAIRS)
    else:
        noisy, corrupted = corrupt_labels(y, 1.0 - rate, kind, num_classes=10, seed=seed)
    ds.targets, ds.corrupted = noisy, corrupted
    return dm


def run_one(task: dict) -> dict:
    import pytorch_lightning as pl

    from lit_robust import ITLM
    from lit_robust.models.supervised import ImageClassifier

    quiet()
    torch.set_num_threads(1)
    p = Protocol(**task["settings"])
    dm = _data(task["kind"], task["rate"], task["seed"], p, task["data_root"])
    pl.seed_everything(task["seed"], verbose=False)
    model = ImageClassifier(backbone="mlp", image_size=8 if p.data == "digits" else 28, hidden=p.hidden, lr=p.lr,
                            optimizer=p.optimizer, momentum=p.momentum, weight_decay=p.weight_decay)
    variant = task["variant"]
    itlm = None
    if not variant.startswith("plain"):
        keep = "auto" if variant.startswith("auto") else 1.0 - task["rate"]
        itlm = ITLM(keep_ratio=keep, round_epochs=list(p.round_epochs), seed=task["seed"],
                    per_class=variant.endswith("per_class"), verbose=False, plot=False, report=False)
    epochs = p.round_epochs[-1] if variant == "plain last round" else sum(p.round_epochs)
    t = trainer(epochs, [] if itlm is None else [itlm])
    t.fit(model, train_dataloaders=dm.train_dataloader())
    acc = float(t.test(model, dm, verbose=False)[0]["test_acc"])
    out = {key: task[key] for key in ("kind", "rate", "seed", "variant")}
    out.update(acc=acc, n_train=len(dm.train_set), n_test=len(dm.test_set), epochs=epochs)
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


def _label(kind: str, rate: float) -> str:
    return f"{kind} {round(100 * rate)}"


def _runs(saved: dict, kind: str, rate: float, variant: str) -> list[dict]:
    """One table row's runs of one variant, by seed (results from before ``--rates`` carry no ``rate``)."""
    old = saved["settings"].get("rate")
    return sorted((r for r in saved["results"] if r["kind"] == kind
                   and r.get("rate", 0.0 if kind == "clean" else old) == rate
                   and r["variant"] == variant), key=lambda r: r["seed"])


def _vs_plain(saved: dict) -> dict[str, dict[str, float]]:
    """Per row and ITLM variant: mean over seeds of (ITLM − plain of the last round's epochs), in points (runs that
    have the "plain last round" arm only)."""
    out: dict[str, dict[str, float]] = {}
    for kind, rate in _rows(saved["settings"]):
        short = {r["seed"]: r["acc"] for r in _runs(saved, kind, rate, "plain last round")}
        if not short:
            continue
        for variant in VARIANTS[2:]:
            acc = {r["seed"]: r["acc"] for r in _runs(saved, kind, rate, variant)}
            if acc:
                out.setdefault(_label(kind, rate), {})[variant] = round(
                    100 * statistics.fmean(acc[s] - short[s] for s in acc if s in short), 2)
    return out


def _paired(saved: dict) -> dict[str, dict[str, float]]:
    """Per row and ``keep_ratio``: mean over seeds of (per_class - one trim) test accuracy, in points."""
    out: dict[str, dict[str, float]] = {}
    for kind, rate in _rows(saved["settings"]):
        for base in ("true", "auto"):
            one = {r["seed"]: r["acc"] for r in _runs(saved, kind, rate, base)}
            per = {r["seed"]: r["acc"] for r in _runs(saved, kind, rate, f"{base} per_class")}
            if one and per:
                out.setdefault(_label(kind, rate), {})[base] = round(
                    100 * statistics.fmean(per[s] - one[s] for s in one), 2)
    return out


def _sizes(saved: dict, key: str, sep: str = ",") -> str | None:
    """The training or test set size the runs recorded (``n_train`` / ``n_test``), ``None`` in runs that did not."""
    sizes = sorted({r[key] for r in saved["results"] if r.get(key) is not None})
    return " / ".join(f"{n:{sep}}" if sep else str(n) for n in sizes) if sizes else None


def settings_line(saved: dict) -> str:
    """The protocol of a saved run, from its settings (and the sizes its runs recorded); what an older run's JSON
    did not record is named as such, never filled in."""
    p = saved["settings"]
    missing = "not recorded in this run's JSON"
    name = DATA[p.get("data", "fashion")]
    n_train = _sizes(saved, "n_train") or f"{p['train_size']:,}"
    n_test = _sizes(saved, "n_test")
    rates = p.get("rates", [p.get("rate")])
    epochs = list(p["round_epochs"])
    opt = (f"{p['optimizer'].upper()} lr {p['lr']}, momentum {p['momentum']}, weight decay {p['weight_decay']}"
           if "optimizer" in p else f"lr {p['lr']} (optimizer, momentum and weight decay {missing})")
    return (f"Settings: model {p.get('model', missing)}, hidden width "
            f"{p['hidden']}; {opt}; batch {p['batch_size']}; ITLM round 0 on every sample then "
            f"{len(epochs) - 1} re-initialised rounds, epochs per round {epochs} (plain: {sum(epochs)} epochs on every "
            "sample" + (f"; plain last round: {epochs[-1]}" if p.get("plain_last_round") else "")
            + f"); {name}: {n_train} training images, "
            + (f"{n_test} clean test images" if n_test else f"test set size {missing}")
            + f"; seeds {list(p['seeds'])}; noise kinds {list(p['kinds'])} at rates "
            f"{[round(100 * r) for r in rates]} % (clean at 0).")


def smoke_note(saved: dict) -> str | None:
    """For a ``--quick`` or ``--smoke`` run: that its figures are a smoke test, not the full tables' comparison."""
    if saved["mode"] == "full":
        return None
    p = saved["settings"]
    return (f"**{saved['mode'].capitalize()} mode is a smoke test**: seeds {list(p['seeds'])}, {p['train_size']:,} "
            f"images, rounds of {list(p['round_epochs'])} epochs (ITLM's final model trains the last round's "
            f"{p['round_epochs'][-1]} epochs, plain {sum(p['round_epochs'])}). It checks that the script runs end to "
            "end; its figures do not reproduce the full tables' comparison of ITLM with plain training or of one "
            "trim with `per_class` (full mode: `results/itlm_per_class*.md`).")


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]
    note = smoke_note(saved)
    body, diffs = [], []
    for kind, rate in _rows(p):
        for variant in VARIANTS:
            rows = _runs(saved, kind, rate, variant)
            if not rows:
                continue
            per_seed = ", ".join(f"{100 * r['acc']:.1f}" for r in rows)
            body.append([kind, f"{100 * rate:.0f}", variant, _cell(rows, "acc"), per_seed,
                         _cell(rows, "min_class_kept", digits=0), _cell(rows, "clean_precision"),
                         _cell(rows, "eps_hat")])
    paired, pair_rows = _paired(saved), []
    for kind, rate in _rows(p):
        by_base = paired.get(_label(kind, rate), {})
        diffs += list(by_base.values())
        cells = [kind, f"{100 * rate:.0f}"]
        for base in ("true", "auto"):
            cells += [_cell(_runs(saved, kind, rate, base), "acc"),
                      _cell(_runs(saved, kind, rate, f"{base} per_class"), "acc"),
                      f"{by_base[base]:+.1f}" if base in by_base else "–"]
        pair_rows.append(cells)
    ahead, behind = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    eq_rows, eq_diffs = [], []
    vs_plain = _vs_plain(saved)
    for kind, rate in _rows(p):
        d = vs_plain.get(_label(kind, rate))
        if d is None:
            continue
        eq_diffs += [d[v] for v in ("true", "auto") if v in d]
        eq_rows.append([kind, f"{100 * rate:.0f}", _cell(_runs(saved, kind, rate, "plain"), "acc"),
                        _cell(_runs(saved, kind, rate, "plain last round"), "acc"),
                        *(f"{d[v]:+.1f}" if v in d else "–" for v in VARIANTS[2:])])
    epochs = list(p["round_epochs"])
    equal = [] if not eq_rows else [
        f"ITLM against plain training of equal length: *plain* trains {sum(epochs)} epochs (the sum of the rounds), "
        f"*plain last round* {epochs[-1]}, as many as ITLM's final model, which is re-initialised at its last round's "
        "start. Δ = ITLM − plain last round, points, mean of the seeds' differences:", "",
        *md_table(["noise", "ε %", "plain", "plain last round", *(f"Δ {v}" for v in VARIANTS[2:])], eq_rows), "",
        f"ITLM (true / auto, one trim) ahead of plain last round in {sum(x > 0 for x in eq_diffs)} of "
        f"{len(eq_diffs)} (row, keep_ratio) pairs; mean Δ {statistics.fmean(eq_diffs):+.2f} points, range "
        f"{min(eq_diffs):+.1f} to {max(eq_diffs):+.1f}." if eq_diffs else "", ""]
    table = md_table(["noise", "ε %", "ITLM", "test acc %", "per seed", "smallest class kept %",
                      "selection clean %", "ε̂ %"], body)
    pair_table = md_table(["noise", "ε %", "true", "true per_class", "Δ", "auto", "auto per_class", "Δ"], pair_rows)
    name = DATA[p.get("data", "fashion")]
    return "\n".join([
        f"# ITLM: one trim vs `per_class=True` ({name} {_sizes(saved, 'n_train', '') or p['train_size']}, MLP of "
        f"{p['hidden']}, rounds of {list(p['round_epochs'])} epochs)", "",
        "`true` = `ITLM(keep_ratio=1 − ε)`, `auto` = `ITLM(keep_ratio='auto')` (ITLM's default estimator when measured: 'disagreement' before 2026-12-07); `per_class` "
        "trims each class by its given label to the same share. Mean over seeds "
        f"{list(p['seeds'])}; *smallest class kept* = the final selection's smallest share of one class's samples "
        "(by given label).", "",
        settings_line(saved), "",
        *([note, ""] if note else []),
        *table, "",
        "Test accuracy %, one trim against `per_class` (Δ = per_class − one trim, points, mean of the seeds' "
        "differences):", "",
        *pair_table, "",
        f"per_class ahead in {ahead}, behind in {behind} of {len(diffs)} (row, keep_ratio) pairs; mean Δ "
        f"{statistics.fmean(diffs):+.2f} points, range {min(diffs):+.1f} to {max(diffs):+.1f}." if diffs else "",
        "", *equal,
        f"Wall time {m['wall_s']} s with {m['jobs']} jobs on a shared {m['cpus']}-core machine ({m['machine']}); "
        f"date {m['date']}; torch {m['torch']}.", "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'itlm_per_class.json')}.", ""])


def headline(saved: dict) -> dict:
    out: dict[str, Any] = {}
    for kind, rate in _rows(saved["settings"]):
        row = {}
        for variant in VARIANTS:
            rows = _runs(saved, kind, rate, variant)
            if rows:
                acc, low = _mean(rows, "acc"), _mean(rows, "min_class_kept")
                row[variant] = {"acc": round(100 * acc, 2),
                                "min_class_kept": None if low is None else round(100 * low, 1)}
        out[_label(kind, rate)] = row
    out["per_class_minus_one_trim_points"] = _paired(saved)
    vs_plain = _vs_plain(saved)
    if vs_plain:
        out["itlm_minus_plain_last_round_points"] = vs_plain
    note = smoke_note(saved)
    if note:
        out["note"] = (f"{saved['mode']} mode is a smoke test: its figures do not reproduce the full tables' "
                       "comparison (see the markdown)")
    return out


def add_arguments(parser: Any) -> None:
    parser.add_argument("--round-epochs", type=int, nargs="+", default=None,
                        help="epochs of each ITLM round (default: 4 4 4; plain training trains their sum)")
    parser.add_argument("--hidden", type=int, default=None, help="the MLP's hidden width (default 128)")
    parser.add_argument("--data", choices=sorted(DATA), default=None,
                        help="fashion (default: a 6,000 subset), mnist (the offline 6,000) or digits (scikit-learn's; "
                             "rounds of 10 epochs and batch 64 unless given)")
    parser.add_argument("--rates", type=float, nargs="+", default=None,
                        help="noise rates of the noisy rows, each in (0, 0.5) (default: 0.2)")
    parser.add_argument("--plain-last-round", type=int, choices=(0, 1), default=None,
                        help="1: also train plain for the last round's epochs only, as long as ITLM's final model "
                             "(default: 1 in full mode, 0 in --quick / --smoke)")
    parser.add_argument("--kinds", nargs="+", default=None,
                        help=f"rows among {list(KINDS)} (default: all; pairs only with FashionMNIST)")


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
    if args.plain_last_round is not None:
        s = replace(s, plain_last_round=bool(args.plain_last_round))
    if args.rates is not None:
        if any(not 0.0 < r < 0.5 for r in args.rates):
            raise SystemExit(f"`--rates` must each be in (0, 0.5), got {args.rates}")
        s = replace(s, rates=tuple(args.rates))
    if args.data is not None and args.data != "fashion":
        s = replace(s, data=args.data, kinds=tuple(k for k in s.kinds if k != "pairs"))
        if args.data == "digits":  # scikit-learn's digits: its own fixed split, `train_size` does not apply
            from lit_robust import DigitsDataModule

            dm = DigitsDataModule(clean_ratio=1.0, val_size=0, seed=0)
            dm.setup("fit")
            s = replace(s, batch_size=64, round_epochs=tuple(args.round_epochs or (10,) * len(s.round_epochs)),
                        train_size=len(dm.train_set))
    if args.kinds is not None:
        allowed = KINDS if s.data == "fashion" else tuple(k for k in KINDS if k != "pairs")
        if not args.kinds or any(k not in allowed for k in args.kinds):
            raise SystemExit(f"`--kinds` must be among {list(allowed)} with --data {s.data}, got {args.kinds}")
        s = replace(s, kinds=tuple(args.kinds))
    return s


BENCHMARK = Benchmark(name="itlm_per_class", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": QUICK},
                      tasks=tasks, run=run_one, render=render, headline=headline,
                      add_arguments=add_arguments, configure=configure,
                      jobs={"full": 2, "quick": 2, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
