"""Benchmark: why PRL / PRL-AT fall short of robust_dnn_thesis Table 5.8 at our scale — epoch-by-epoch traces.

``backdoor_mnist.py`` measures PRL-AT's poison accuracy on the offline MNIST (6,000 training images) far below the
thesis's MNIST cells (ResNet-32, 60,000 images, 100 epochs). This script follows one cell — multi-target patch
attack, ε = 0.25 — epoch by epoch, under the model / warm-up / data-size variants we tried, and prints after every
epoch:

* the clean and poison accuracy on the 4,000 offline test images (poison: trigger on every image, true labels);
* the PRL filter's *dropped precision* — the poisoned fraction of what it dropped that epoch. The filter drops
  ε of every batch, so this is also the fraction of the epoch's poisoned samples that were dropped; the rest,
  ``1 - precision``, were trained on.

The filter has to drop (nearly) every poisoned sample for poison accuracy to stay high: the samples it lets through
teach the trigger, their losses fall, the filter keeps more of them next epoch. Variants (``FULL``): MLP 784-256-256-10
and the small CNN with the benchmark's 1-epoch warm-up, the CNN and torchvision's ResNet-18 filtering from the first
step, and FashionMNIST at 6,000 vs all 60,000 training images (does more data alone help?). Adam lr 1e-3, batch 128,
τ = 0.05 on [0, 1] pixels, seed 0.

Usage (``benchmarks/harness.py`` runs it: ``--jobs``, ``--out``, ``--data-root``, ``--render``)::

    python benchmarks/backdoor_dynamics.py           # full -> benchmarks/results/backdoor_dynamics.md (+ .json)
    python benchmarks/backdoor_dynamics.py --quick   # two variants, PRL only, 2,000 images, 4 epochs (< 60 s)
    python benchmarks/backdoor_dynamics.py --smoke   # a few seconds, for the test suite
    python benchmarks/backdoor_dynamics.py --render benchmarks/results/backdoor_dynamics.json   # the table again

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, main, md_table, quiet, trainer  # noqa: E402

PAPER_PATCH_025 = {"prl": 89.91, "prl_at": 97.04}  # thesis Table 5.8, MNIST patch, ε = 0.25, poison accuracy


@dataclass(frozen=True)
class Variant:
    name: str
    dataset: str = "mnist"  # or "fashion"
    backbone: str = "cnn2"
    warmup_epochs: int = 1
    train_size: int | None = 6000  # None = every training image of the dataset
    epochs: int = 10
    methods: tuple[str, ...] = ("prl", "prl_at")


@dataclass(frozen=True)
class Settings:
    variants: tuple[Variant, ...]
    attack: str = "patch"
    eps: float = 0.25
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    tau_pixels: float = 0.05


FULL = Settings(variants=(
    Variant("MLP, 1-epoch warm-up (backdoor_mnist.py's table)", backbone="mlp", train_size=None),
    Variant("small CNN, 1-epoch warm-up", train_size=None),
    Variant("small CNN, no warm-up", warmup_epochs=0, train_size=None),
    Variant("ResNet-18, no warm-up", backbone="resnet18", warmup_epochs=0, train_size=None),
    Variant("FashionMNIST, small CNN, 1-epoch warm-up, 6,000 images", dataset="fashion", methods=("prl",)),
    Variant("FashionMNIST, small CNN, 1-epoch warm-up, 60,000 images", dataset="fashion", train_size=None, epochs=4,
            methods=("prl",)),
))
QUICK = Settings(variants=(
    Variant("small CNN, 1-epoch warm-up", train_size=2000, epochs=4, methods=("prl",)),
    Variant("small CNN, no warm-up", warmup_epochs=0, train_size=2000, epochs=4, methods=("prl",)),
))
SMOKE = Settings(variants=(Variant("small CNN, no warm-up", warmup_epochs=0, train_size=600, epochs=2),))


def _cost(v: Variant) -> int:
    return 2 * (v.backbone == "resnet18") + (v.train_size is None and v.dataset == "fashion")


def tasks(s: Settings, args: Any) -> list[dict]:
    """One task per (variant, method), the long runs first so that the two workers finish together."""
    todo = [{"settings": s, "variant": v, "method": m, "root": args.data_root} for v in s.variants for m in v.methods]
    return sorted(todo, key=lambda t: -_cost(t["variant"]))


def summarise(rows: list[dict], s: Settings, args: Any) -> list[dict]:
    """The traces back in the protocol's order (variants, then methods)."""
    rank = {(v.name, m): i for i, (v, m) in enumerate((v, m) for v in s.variants for m in v.methods)}
    return sorted(rows, key=lambda r: rank[(r["variant"], r["method"])])


def run_trace(task: dict) -> dict:
    """Train one (variant, method) and record clean / poison accuracy and dropped precision after every epoch."""
    quiet()
    torch.set_num_threads(1)
    import pytorch_lightning as pl

    import lit_robust as lr
    from lit_robust.callbacks.backdoor_metrics import backdoor_counts
    from lit_robust.data.indexed import unpack_batch

    s: Settings = task["settings"]
    v: Variant = task["variant"]
    method = task["method"]
    pl.seed_everything(s.seed, verbose=False)
    dm_cls = lr.BackdoorMNISTDataModule if v.dataset == "mnist" else lr.BackdoorFashionMNISTDataModule
    dm = dm_cls(root=task["root"], attack=s.attack, poison_rate=s.eps, train_size=v.train_size,
                batch_size=s.batch_size, seed=s.seed)
    model = lr.ImageClassifier(backbone=v.backbone, hidden=256, hidden_layers=2, optimizer="adam", lr=s.lr)
    filt = lr.BatchFilter("prl", drop_ratio=s.eps, warmup_epochs=v.warmup_epochs)
    callbacks: list[Any] = [filt]
    if method == "prl_at":
        lo, hi = dm.value_range  # black and white in normalised units: τ on [0, 1] pixels × (hi - lo)
        callbacks.append(lr.AdversarialTrigger(tau=s.tau_pixels * (hi - lo)))
    trace: list[dict] = []

    class Trace(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            rec = filt.epoch_record(trainer.current_epoch)
            was_training = module.training
            module.eval()
            counts = torch.zeros(5, dtype=torch.int64)  # [n, clean correct, poison correct, attackable, hits]
            with torch.no_grad():
                for batch in trainer.datamodule.test_dataloader():
                    b = unpack_batch(batch)
                    counts += backdoor_counts(module(b.input).argmax(-1), module(dm.trigger(b.input)).argmax(-1),
                                              b.target, None, dm.num_classes)
            module.train(was_training)
            n, clean, poison = (int(v) for v in counts[:3])
            trace.append({"epoch": trainer.current_epoch, "clean": 100 * clean / n, "poison": 100 * poison / n,
                          "dropped_precision": (100 * rec.corrupted_dropped / rec.dropped) if rec.dropped else None})

    callbacks.append(Trace())
    t0 = time.perf_counter()
    trainer(v.epochs, callbacks).fit(model, dm)
    return {"variant": v.name, "method": method, "trace": trace, "train_images": len(dm.train_set),
            "wall_s": time.perf_counter() - t0}


def _fmt_series(values: list[float | None]) -> str:
    return " → ".join("–" if x is None else f"{x:.0f}" for x in values)


def render(saved: dict) -> str:
    s, m = saved["settings"], saved["meta"]
    table = md_table(
        ["variant", "method", "train images", "poison accuracy by epoch", "clean accuracy by epoch",
         "dropped precision by epoch", "last poison", "last clean"],
        [[r["variant"], r["method"].upper().replace("_", "-"), r["train_images"],
          _fmt_series([e["poison"] for e in r["trace"]]), _fmt_series([e["clean"] for e in r["trace"]]),
          _fmt_series([e["dropped_precision"] for e in r["trace"]]), f"{r['trace'][-1]['poison']:.1f}",
          f"{r['trace'][-1]['clean']:.1f}"] for r in saved["results"]])
    return "\n".join([
        "# Backdoor defence dynamics: PRL / PRL-AT epoch by epoch (thesis Table 5.8, patch, ε = 0.25)",
        "",
        f"Generated by `{m['command']}` on {m['date']} ({m['machine']}, torch {m['torch']}); wall time "
        f"{m['wall_s'] / 60:.1f} min. Settings: attack {s['attack']}, ε = {s['eps']}, seed {s['seed']}, Adam lr "
        f"{s['lr']}, batch {s['batch_size']}, τ = {s['tau_pixels']} on [0, 1] pixels; PRL drops ε of every batch after "
        f"the warm-up. Thesis (ResNet-32, 60,000 MNIST images, 100 epochs): PRL {PAPER_PATCH_025['prl']}, PRL-AT "
        f"{PAPER_PATCH_025['prl_at']} % poison accuracy.",
        "",
        "Per epoch (0, 1, …): poison accuracy %, clean accuracy %, and the PRL filter's dropped precision % (poisoned "
        "share of the dropped samples = share of the epoch's poisoned samples that were dropped; – = warm-up epoch, "
        "nothing dropped).",
        "",
        *table,
        "",
        f"Reproduce: `{m['command']}`.",
        ""])


def headline(saved: dict) -> dict:
    out: dict[str, Any] = {}
    for r in saved["results"]:
        t = r["trace"]
        last = t[-1]["dropped_precision"]
        out[f"{r['variant']} / {r['method']}"] = {
            "last_poison": round(t[-1]["poison"], 1), "max_poison": round(max(e["poison"] for e in t), 1),
            "last_dropped_precision": None if last is None else round(last, 1)}
    return out


BENCHMARK = Benchmark(name="backdoor_dynamics", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_trace, summarise=summarise, render=render, headline=headline,
                      jobs={"full": 2, "quick": 2, "smoke": 2})

if __name__ == "__main__":
    main(BENCHMARK)
