"""ITLM on a fine-tuned pretrained network: what the round restarts do to the pretrained weights.

A fine-tuner's frozen pretrained backbone was re-drawn at random at each ITLM round start (the default
``reinit=True``), without a word. Frozen parameters now keep their values, and ``reinit="restore"`` starts every
round from the weights the fit started with. This measures what each choice costs or gains.

Protocol (fine-tuning scaled to CPU): an MLP backbone (784-256-128, ReLU) is pretrained with a linear head on
``pretrain_size`` clean FashionMNIST images drawn from the first 30,000 of its training set (SGD, ``pretrain_epochs``;
a first probe pretrained on classes 0-4 for a task on 5-9 was dropped: its features were worth no more than random
ones to a linear head, 78.7 against 79.0 %). The task: ``train_size`` images drawn from the other 30,000 with
``1 - clean`` of the labels flipped at random (``FashionMNISTDataModule``'s random noise), a new linear head, SGD lr
0.02 momentum 0.9, batch 128, rounds ``round_epochs``; clean test accuracy on the 10,000 test images. Arms, with the
pretrained backbone:

* whole network trained: plain fine-tuning (no ITLM, the rounds' total epochs, and the last round's: what ITLM's
  final model trains after a restart); ITLM at the true rate with
  ``reinit=True`` (re-drawn at random), ``"restore"`` and ``False``; ITLM ``keep_ratio="auto"`` with ``True`` and
  ``"restore"``;
* backbone frozen: plain; ITLM (true rate, ``reinit=True``: the backbone now kept); and ITLM as it was before this
  fix (a model whose ``reinitialize`` re-draws the frozen backbone too);
* and, for scale, plain training from scratch (no pretraining).

``--quick``: one seed, fewer images and epochs; ``--smoke`` fewer still (the tests). Full mode writes
``results/itlm_finetune.md`` (+ ``.json``); the last line printed is one JSON object.
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


@dataclass(frozen=True)
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    clean: float = 0.7
    train_size: int = 6000
    pretrain_size: int = 20000
    pretrain_epochs: int = 3
    round_epochs: tuple[int, ...] = (4, 4, 4)
    batch_size: int = 128
    lr: float = 0.02


FULL = Protocol()
QUICK = Protocol(seeds=(0,), train_size=2000, pretrain_size=5000, pretrain_epochs=1, round_epochs=(2, 2))
SMOKE = Protocol(seeds=(0,), train_size=600, pretrain_size=1000, pretrain_epochs=1, round_epochs=(1, 1))

# (name, pretrained, frozen, ITLM's keep_ratio or None for plain training, reinit); plain training trains the rounds'
# total epochs, or with reinit="last" the last round's (what ITLM's final model trains with reinit=True/"restore")
ARMS: tuple[tuple[str, bool, bool, Any, Any], ...] = (
    ("plain fine-tuning", True, False, None, None),
    ("plain fine-tuning, the last round's epochs", True, False, None, "last"),
    ("ITLM reinit=True", True, False, "true", True),
    ("ITLM reinit='restore'", True, False, "true", "restore"),
    ("ITLM reinit=False", True, False, "true", False),
    ("ITLM auto, reinit=True", True, False, "auto", True),
    ("ITLM auto, reinit='restore'", True, False, "auto", "restore"),
    ("frozen backbone: plain", True, True, None, None),
    ("frozen backbone: ITLM reinit=True", True, True, "true", True),
    ("frozen backbone: ITLM re-drawing it (before the fix)", True, True, "true", "redraw_frozen"),
    ("from scratch: plain", False, False, None, None),
)


def tasks(p: Protocol, args: Any) -> list[dict]:
    return [{"seed": s, "root": args.data_root, "settings": p.__dict__} for s in p.seeds]


def _split(root: str, train: bool, part: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    from lit_robust import FashionMNISTDataModule
    from lit_robust.data.base import torchvision_split

    d = torchvision_split("FashionMNIST", root, train)
    x = (d.data[part].float() / 255.0 - FashionMNISTDataModule._mean) / FashionMNISTDataModule._std
    return x.flatten(1), d.targets[part].long()


def _pretrain(root: str, p: dict, seed: int) -> dict[str, torch.Tensor]:
    """The backbone's weights after supervised training on the pretraining images (plain PyTorch: the user's own)."""
    x, y = _split(root, True, slice(0, 30000))
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(y), generator=g)[:p["pretrain_size"]]
    x, y = x[pick], y[pick]
    torch.manual_seed(seed)
    backbone, head = _backbone(), torch.nn.Linear(128, 10)
    opt = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    for _ in range(p["pretrain_epochs"]):
        for b in torch.randperm(len(y), generator=g).split(p["batch_size"]):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(backbone(x[b])), y[b]).backward()
            opt.step()
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def _backbone() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU())


def run_one(task: dict) -> list[dict]:
    import pytorch_lightning as pl
    import torch.nn.functional as F

    from lit_robust import ITLM, FashionMNISTDataModule, RobustMixin
    from lit_robust.data.indexed import unpack_batch, unpack_eval_batch
    from lit_robust.mixin import reset_parameters

    class Task(FashionMNISTDataModule):
        def load(self):
            return (*_split(self.root, True, slice(30000, None)), *_split(self.root, False))

    class Net(RobustMixin, pl.LightningModule):
        def __init__(self, weights: dict | None, frozen: bool, lr: float) -> None:
            super().__init__()
            self.backbone, self.head, self.lr = _backbone(), torch.nn.Linear(128, 10), lr
            if weights is not None:
                self.backbone.load_state_dict(weights)
            for q in self.backbone.parameters():
                q.requires_grad = not frozen

        def forward(self, x):
            return self.head(self.backbone(x.flatten(1)))

        def per_sample_loss(self, batch):
            b = unpack_batch(batch)
            logits = self(b.input)
            return F.cross_entropy(logits, b.target, reduction="none"), logits

        def test_step(self, batch, batch_idx):
            b = unpack_eval_batch(batch)
            self.log("test_acc", (self(b.input).argmax(1) == b.target).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD([q for q in self.parameters() if q.requires_grad], lr=self.lr, momentum=0.9)

    class RedrawsFrozen(Net):
        def reinitialize(self, seed: int) -> None:  # what the default did before frozen parameters were kept
            for q in self.parameters():
                q.requires_grad = True
            reset_parameters(self, seed)
            for q in self.backbone.parameters():
                q.requires_grad = False

    quiet()
    torch.set_num_threads(1)
    p, seed = task["settings"], task["seed"]
    weights = _pretrain(task["root"], p, seed)
    out = []
    for name, pretrained, frozen, keep, reinit in ARMS:
        pl.seed_everything(seed, verbose=False)
        dm = Task(root=task["root"], clean_ratio=p["clean"], train_size=p["train_size"], batch_size=p["batch_size"],
                  seed=seed)
        cls = RedrawsFrozen if reinit == "redraw_frozen" else Net
        model = cls(weights if pretrained else None, frozen, p["lr"])
        callbacks = [] if keep is None else [ITLM(
            keep_ratio=p["clean"] if keep == "true" else "auto", round_epochs=list(p["round_epochs"]),
            reinit=True if reinit == "redraw_frozen" else reinit, verbose=False, plot=False)]
        t = trainer(p["round_epochs"][-1] if reinit == "last" else sum(p["round_epochs"]), callbacks)
        t.fit(model, dm)
        acc = float(t.test(model, dm, verbose=False)[0]["test_acc"])
        kept = all(torch.equal(a, weights[k]) for k, a in model.backbone.state_dict().items()) if frozen else None
        est = callbacks[0].history[-1].estimated_corruption if keep == "auto" else None
        out.append({"arm": name, "seed": seed, "acc": acc, "backbone_kept": kept, "estimate": est})
    return out


def _by_arm(saved: dict) -> dict[str, list[dict]]:
    rows = [r for per_seed in saved["results"] for r in per_seed]
    return {name: [r for r in rows if r["arm"] == name] for name, *_ in ARMS}


def _mean_acc(rs: list[dict]) -> float:
    return 100 * statistics.fmean(r["acc"] for r in rs)


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]
    arms = _by_arm(saved)
    plain = _mean_acc(arms["plain fine-tuning"])
    rows = []
    for name, rs in arms.items():
        kept = {r["backbone_kept"] for r in rs}
        est = [r["estimate"] for r in rs if r["estimate"] is not None]
        rows.append([name, f"{_mean_acc(rs):.1f}", f"{_mean_acc(rs) - plain:+.1f}",
                     "; ".join(f"{100 * r['acc']:.1f}" for r in rs),
                     "–" if kept == {None} else ("yes" if kept == {True} else "no" if kept == {False} else str(kept)),
                     "; ".join(f"{100 * e:.1f}" for e in est) or "–"])
    return "\n".join([
        "# ITLM on a fine-tuned pretrained network (FashionMNIST)", "",
        f"Backbone MLP 784-256-128 pretrained on {p['pretrain_size']} clean images of the first 30,000 "
        f"({p['pretrain_epochs']} epochs); task: {p['train_size']} other training images with "
        f"{100 * (1 - p['clean']):g} % of labels flipped at random, new linear head, SGD lr {p['lr']} momentum 0.9, "
        f"batch {p['batch_size']}, rounds {list(p['round_epochs'])} (plain training: {sum(p['round_epochs'])} "
        f"epochs, or the last round's {p['round_epochs'][-1]}); ITLM at the true rate (keep_ratio {p['clean']}) "
        f"unless \"auto\"; seeds {list(p['seeds'])}; test "
        "accuracy on the 10,000 clean test images, mean over seeds. *Frozen kept*: the frozen backbone "
        "ended equal to the pretrained one. Settings: benchmarks/itlm_finetune.py.", "",
        *md_table(["arm", "test acc %", "vs plain fine-tuning (points)", "per seed", "frozen backbone kept",
                   "\"auto\" ε̂ % (last round)"], rows), "",
        f"Wall time {m['wall_s']} s with {m['jobs']} jobs on a shared {m['cpus']}-core machine ({m['machine']}); "
        f"date {m['date']}; torch {m['torch']}.", "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'itlm_finetune.json')}.", ""])


def headline(saved: dict) -> dict:
    arms = _by_arm(saved)
    acc = {name: round(_mean_acc(rs), 2) for name, rs in arms.items()}
    return {"test_acc": acc,
            "restore_minus_reinit_points": round(acc["ITLM reinit='restore'"] - acc["ITLM reinit=True"], 2),
            "restore_minus_plain_last_round_points": round(
                acc["ITLM reinit='restore'"] - acc["plain fine-tuning, the last round's epochs"], 2),
            "frozen_kept_minus_redrawn_points": round(acc["frozen backbone: ITLM reinit=True"]
                                                      - acc["frozen backbone: ITLM re-drawing it (before the fix)"], 2)}


BENCHMARK = Benchmark(name="itlm_finetune", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_one, render=render, headline=headline,
                      jobs={"full": 2, "quick": 1, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
