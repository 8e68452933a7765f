"""Two newcomers' FashionMNIST image scenarios, re-measured: look-alike flips in image folders, and a relabel loop.

README's "Choosing the corruption rate" and the corruption-rate page quoted what two newcomers measured with their own
scripts, which were never committed. This script re-measures both the way they were described, with the public API
(``from lit_robust import ...``), so the figures have a source.

**Look-alike folders.** ``train_size`` images drawn (seeded) from FashionMNIST's training set are written as PNG
files, one sub-folder per class, and read back with ``ImageFolderDataModule(root, test_root=...)`` as the docs' "From
an image folder" recipe does (the clean test folder: FashionMNIST's ``test_size`` first test images). Before writing,
``round(rate × train_size)`` images of the 7 look-alike classes are moved into another class folder of their group.
The docs name neither the 7 classes nor how the newcomer flipped them; chosen here: the tops {T-shirt/top, Pullover,
Coat, Shirt} and the shoes {Sandal, Sneaker, Ankle boot} (Trouser, Dress and Bag untouched), the flipped images drawn
uniformly among those 7 classes' images, each moved to a uniformly drawn other class of its group. Model: the recipe's
``ImageClassifier("cnn2", optimizer="adam", lr=1e-3)``, batch 64, ITLM rounds ``round_epochs``. Arms, every fit
seeded with the seed: plain training of the rounds' total epochs; ITLM at the true rate; ITLM ``keep_ratio="auto"``
with ``estimator="disagreement"`` (ITLM's default until 2026-12-07), with ``estimator="class_floor"``, and with
``per_class=True`` (``"disagreement"``); ``--arms`` adds ``"auto, interior"`` (``"disagreement_or_interior"``, the
default since). Clean test accuracy; the estimate is the one the rounds dropped by (the last in ``ITLM.history``).

**Relabel loop.** ``loop_train_size`` FashionMNIST training images (seeded draw), ``loop_rate`` of the labels flipped
at random (``corrupt_labels(kind="random")``); the user's own LightningModule (``RobustMixin``; an MLP 784-256-10,
Adam lr 1e-3, batch 64), ``ITLM(keep_ratio="auto", round_epochs=loop_round_epochs, report=True)``. Each step fits,
reads the report, and "fixes" its top ``fix_rows`` rows as a person with the true labels would: the rows whose label
is truly wrong get the true label, the others stay. ``fix_steps`` such steps, then a last fit with every label right.
On every state of the labels a second fit with ``estimator="class_floor"`` reads its estimate (the loop follows the
default's report). The docs do not say how many rows the newcomer fixed per step; their quoted wrong shares (25, 20,
15.3, 10.7 % of 6,000: 1,500 → 1,200 → 918 → 642 wrong) fit 300 rows a step, which ``fix_rows`` takes.

``--quick``: one seed, fewer images and epochs; ``--smoke``: tiny (the tests). Full mode writes
``results/newcomer_images.md`` (+ ``.json``); the last line printed is one JSON object.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Benchmark, main, md_table, quiet, trainer  # noqa: E402

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
GROUPS: tuple[tuple[int, ...], ...] = ((0, 2, 4, 6), (5, 7, 9))  # the 7 look-alike classes: tops, shoes
ARMS = ("plain", "true rate", "auto", "auto, class_floor", "auto, per_class", "auto, interior")
DEFAULT_ARMS = ARMS[:-1]  # estimator="disagreement_or_interior" (opt-in): by `--arms`
ESTIMATOR = {"auto, class_floor": "class_floor", "auto, interior": "disagreement_or_interior"}  # else the default's
PARTS = ("folders", "loop")


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    # look-alike folders
    train_size: int = 6000
    test_size: int = 10000
    rate: float = 0.279
    round_epochs: tuple[int, ...] = (3, 3)
    arms: tuple[str, ...] = DEFAULT_ARMS
    # relabel loop
    loop_train_size: int = 6000
    loop_rate: float = 0.25
    loop_round_epochs: tuple[int, ...] = (4, 4, 4, 8)
    fix_rows: int = 300
    fix_steps: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    parts: tuple[str, ...] = PARTS


FULL = Protocol()
QUICK = Protocol(seeds=(0,), train_size=1500, test_size=1000, round_epochs=(2, 2), loop_train_size=1500,
                 loop_round_epochs=(2, 2), fix_rows=75, fix_steps=1)
SMOKE = Protocol(seeds=(0,), train_size=300, test_size=200, round_epochs=(1, 1), arms=("plain", "auto, class_floor"),
                 loop_train_size=300, loop_round_epochs=(1, 1), fix_rows=20, fix_steps=1)


def tasks(p: Protocol, args: Any) -> list[dict]:
    common = {"settings": p.__dict__, "data_root": args.data_root}
    loops = [{"part": "loop", "seed": s, **common} for s in p.seeds]  # the long ones first
    folders = [{"part": "folders", "seed": s, "arm": a, **common} for s in p.seeds for a in p.arms]
    return [t for t in loops + folders if t["part"] in p.parts]


add_arguments, configure = harness.parts_and_arms(PARTS, ARMS, "arms", "the look-alike folders' arms (default: all "
                                                  "but 'auto, interior')")


def _fashion(root: str, train: bool) -> tuple[Any, Any]:
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(root, train=train, download=False)
    return ds.data, ds.targets


def lookalike_flips(labels: Any, count: int, seed: int) -> Any:
    """``labels`` with ``count`` of the look-alike classes' labels moved to another class of their group (a copy)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    group_of = {c: grp for grp in GROUPS for c in grp}
    candidates = torch.tensor([i for i, y in enumerate(labels.tolist()) if y in group_of])
    if count > len(candidates):
        raise SystemExit(f"the look-alike classes hold {len(candidates)} images, fewer than the {count} to flip")
    chosen = candidates[torch.randperm(len(candidates), generator=g)[:count]]
    noisy = labels.clone()
    for i in chosen.tolist():
        others = [c for c in group_of[int(labels[i])] if c != int(labels[i])]
        noisy[i] = others[int(torch.randint(len(others), (1,), generator=g))]
    return noisy


def write_folder(root: Path, images: Any, labels: Any) -> None:
    """``root/<class id>/<position>.png``: ``ImageFolder`` sorts the folders "0".."9", so class ids are kept."""
    from PIL import Image

    for c in range(10):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
    for k, (img, y) in enumerate(zip(images, labels.tolist())):
        Image.fromarray(img.numpy()).save(root / str(y) / f"{k:05d}.png")


def _estimate(itlm: Any) -> float | None:
    """The estimate the rounds dropped by: the last one ITLM recorded."""
    estimates = [r.estimated_corruption for r in itlm.history if r.estimated_corruption is not None]
    return estimates[-1] if estimates else None


def run_folders(task: dict) -> dict:
    import pytorch_lightning as pl
    import torch

    from lit_robust import ITLM, ImageClassifier, ImageFolderDataModule

    p, seed, arm = task["settings"], task["seed"], task["arm"]
    images, labels = _fashion(task["data_root"], True)
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:p["train_size"]]
    images, labels = images[pick], labels[pick]
    noisy = lookalike_flips(labels, round(p["rate"] * len(labels)), seed)
    true_rate = float((noisy != labels).float().mean())
    test_images, test_labels = _fashion(task["data_root"], False)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / "train", images, noisy)
        write_folder(Path(tmp) / "test", test_images[:p["test_size"]], test_labels[:p["test_size"]])
        pl.seed_everything(seed, verbose=False)
        dm = ImageFolderDataModule(os.path.join(tmp, "train"), test_root=os.path.join(tmp, "test"),
                                   batch_size=p["batch_size"])
        rounds = list(p["round_epochs"])
        callbacks = []
        if arm != "plain":
            callbacks = [ITLM(keep_ratio=1 - true_rate if arm == "true rate" else "auto", round_epochs=rounds,
                              **({} if arm == "true rate" else {"estimator": ESTIMATOR.get(arm, "disagreement")}),
                              per_class=arm == "auto, per_class", report=False, plot=False, verbose=False)]
        model = ImageClassifier("cnn2", num_classes=10, in_channels=1, image_size=28, optimizer="adam", lr=p["lr"])
        t = trainer(sum(rounds), callbacks)
        t.fit(model, dm)
        acc = float(t.test(model, dm, verbose=False)[0]["test_acc"])
    return {"part": "folders", "seed": seed, "arm": arm, "true_rate": true_rate, "test_acc": acc,
            "estimate": _estimate(callbacks[0]) if arm.startswith("auto") else None,
            "wall_s": round(time.perf_counter() - t0, 1)}


def run_loop(task: dict) -> dict:
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import ITLM, IndexedDataset, RobustMixin, corrupt_labels, load_report

    class MyMLP(RobustMixin, pl.LightningModule):  # the user's own module
        def __init__(self, lr: float) -> None:
            super().__init__()
            self.lr = lr
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                           torch.nn.Linear(256, 10))

        def per_sample_loss(self, batch):
            _, x, y = batch[:3]
            logits = self.net(x)
            return F.cross_entropy(logits, y, reduction="none"), logits

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    p, seed = task["settings"], task["seed"]
    images, labels = _fashion(task["data_root"], True)
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:p["loop_train_size"]]
    x, truth = images[pick].float().div(255), labels[pick]
    current, _ = corrupt_labels(truth, clean_ratio=1 - p["loop_rate"], kind="random", num_classes=10, seed=seed)
    rounds = list(p["loop_round_epochs"])
    steps = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for step in range(p["fix_steps"] + 2):
            if step == p["fix_steps"] + 1:
                current = truth.clone()  # the last state: every label right
            wrong = current != truth
            row: dict[str, Any] = {"step": step, "wrong": int(wrong.sum()), "wrong_share": float(wrong.float().mean())}
            for estimator in ("disagreement", "class_floor"):
                pl.seed_everything(seed, verbose=False)
                train = IndexedDataset(TensorDataset(x, truth), targets=current, corrupted=wrong)
                itlm = ITLM(keep_ratio="auto", round_epochs=rounds, estimator=estimator, report=True,
                            report_dir=os.path.join(tmp, f"{step}_{estimator}"), plot=False, verbose=False)
                trainer(sum(rounds), [itlm]).fit(MyMLP(p["lr"]), DataLoader(train, batch_size=p["batch_size"],
                                                                              shuffle=True))
                row[estimator] = _estimate(itlm)
                if estimator == "disagreement":
                    top = torch.tensor(load_report(itlm.report_path)["index"].head(p["fix_rows"]).tolist())
            if step < p["fix_steps"]:  # fix the top rows whose label is truly wrong
                fixed = top[current[top] != truth[top]]
                row["top_rows_wrong"] = len(fixed)
                current = current.clone()
                current[fixed] = truth[fixed]
            steps.append(row)
    return {"part": "loop", "seed": seed, "steps": steps, "wall_s": round(time.perf_counter() - t0, 1)}


def run_one(task: dict) -> dict:
    import torch

    quiet()
    torch.set_num_threads(1)
    return run_loop(task) if task["part"] == "loop" else run_folders(task)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _folders(saved: dict) -> dict[str, list[dict]]:
    arms: dict[str, list[dict]] = {}
    for r in saved["results"]:
        if r["part"] == "folders":
            arms.setdefault(r["arm"], []).append(r)
    return arms


def _loops(saved: dict) -> list[dict]:
    return [r for r in saved["results"] if r["part"] == "loop"]


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]
    arms = _folders(saved)
    seeds = [r["seed"] for r in next(iter(arms.values()), [])]
    rates = "; ".join(f"{100 * r['true_rate']:.1f}" for r in next(iter(arms.values()), []))
    folder_rows = [[arm, "; ".join(f"{r['test_acc']:.3f}" for r in rs),
                    f"{statistics.fmean(r['test_acc'] for r in rs):.3f}",
                    "; ".join(_pct(r["estimate"]) for r in rs)] for arm, rs in arms.items()]
    loop_rows = []
    for r in _loops(saved):
        for s in r["steps"]:
            last = s["step"] == p["fix_steps"] + 1
            loop_rows.append([r["seed"], f"{s['step']}{' (all right)' if last else ''}", s["wrong"],
                              _pct(s["wrong_share"]), _pct(s["disagreement"]), _pct(s["class_floor"]),
                              s.get("top_rows_wrong", "–")])
    h = headline(saved)
    groups = " and ".join("{" + ", ".join(CLASSES[c] for c in g) + "}" for g in GROUPS)
    return "\n".join([
        ("# Two newcomers' FashionMNIST image scenarios: look-alike flips in image folders, a relabel loop" if loop_rows
         else "# A newcomer's FashionMNIST image scenario: look-alike flips in image folders (`--parts folders`)"), "",
        "## Look-alike flips in image folders", "",
        f"{p['train_size']:,} FashionMNIST training images as PNG folders (`ImageFolderDataModule`, clean test folder "
        f"of {p['test_size']:,} test images); {100 * p['rate']:.1f} % of the labels moved within the look-alike "
        f"groups {groups} (true share per seed: {rates} %). `ImageClassifier(\"cnn2\", optimizer=\"adam\", "
        f"lr={p['lr']})`, batch {p['batch_size']}, ITLM rounds {list(p['round_epochs'])}, plain training "
        f"{sum(p['round_epochs'])} epochs; seeds {seeds} (the draw, the flips and the fit). ε̂: the estimate the "
        "rounds dropped by, in %. *auto*: ITLM `keep_ratio='auto'` with `estimator='disagreement'` (ITLM's default "
        "until 2026-12-07); *auto, class_floor* and *auto, interior*: with `'class_floor'` and "
        "`'disagreement_or_interior'` (ITLM's default since 2026-12-07); *auto, per_class*: `per_class=True`, "
        "`'disagreement'`.", "",
        *md_table(["arm", "test accuracy per seed", "mean", "ε̂ per seed"], folder_rows), "",
        *(_loop_section(p, loop_rows) if loop_rows else []),
        "Mean test accuracy (folders): " + "; ".join(f"{a}: {v:.3f}" for a, v in h["folders_mean_test_acc"].items())
        + (". Relabel loop, means over seeds per step: wrong " + " / ".join(f"{v:.1f}" for v in
                                                                           h.get("loop_mean_wrong_pct", []))
           + " %; " + "; ".join(f"ε̂ {e} " + " / ".join(f"{v:.1f}" for v in vs) + " %"
                               for e, vs in h.get("loop_mean_eps_hat", {}).items()) if loop_rows else "") + ".", "",
        harness.machine_line(m), "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'newcomer_images.json')}.", ""])


def _loop_section(p: dict, loop_rows: list[list[Any]]) -> list[str]:
    return [
        "## Relabel loop", "",
        f"{p['loop_train_size']:,} FashionMNIST training images, {100 * p['loop_rate']:.0f} % of the labels flipped at "
        "random; the user's own MLP (784-256-10, Adam lr "
        f"{p['lr']}, batch {p['batch_size']}); `ITLM(keep_ratio=\"auto\", "
        f"round_epochs={list(p['loop_round_epochs'])})`."
        f" After each fit the top {p['fix_rows']} rows of the default estimator's report are fixed (those truly "
        f"wrong relabelled with the true label); fix steps: {p['fix_steps']}, then every label right. ε̂ in % "
        "(`\"disagreement\"`, ITLM's default until 2026-12-07, and `\"class_floor\"`, each its own fit on the same "
        "labels).", "",
        *md_table(["seed", "step", "wrong labels", "wrong %", "ε̂ disagreement", "ε̂ class_floor",
                   "wrong among the top rows (fixed)"], loop_rows), ""]


def headline(saved: dict) -> dict:
    out: dict[str, Any] = {
        "folders_mean_test_acc": {arm: round(statistics.fmean(r["test_acc"] for r in rs), 4)
                                  for arm, rs in _folders(saved).items()},
        "folders_eps_hat_pct": {arm: [None if r["estimate"] is None else round(100 * r["estimate"], 1) for r in rs]
                                for arm, rs in _folders(saved).items() if arm.startswith("auto")}}
    loops = _loops(saved)
    if loops:
        n = len(loops[0]["steps"])
        out["loop_mean_wrong_pct"] = [round(statistics.fmean(100 * r["steps"][i]["wrong_share"] for r in loops), 1)
                                      for i in range(n)]
        out["loop_mean_eps_hat"] = {e: [round(statistics.fmean(100 * r["steps"][i][e] for r in loops), 1)
                                        for i in range(n)] for e in ("disagreement", "class_floor")}
    return out


BENCHMARK = Benchmark(name="newcomer_images", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_one, render=render, headline=headline, add_arguments=add_arguments,
                      configure=configure, jobs={"full": 2, "quick": 2, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
