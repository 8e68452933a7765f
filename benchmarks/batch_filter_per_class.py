"""A per-class drop quota for the per-batch filters, measured before building it: PRL(L) with one ranking of each
batch (what ``BatchFilter`` does) against the same drop count shared among the batch's given labels.

The candidate: a batch of ``B`` samples drops ``B - floor((1 - eps) B)`` of them, as ``BatchFilter`` does, but shared
among the classes the batch's given labels name in proportion to their counts (largest remainder, ties by the smaller
label), each class dropping its highest ``(score, index)``; this is ``ITLM(per_class=True)``'s rule applied to one
batch. It was not adopted: it read lower in every row (``results/batch_filter_per_class.md``), so the filters have no
``per_class`` option.

Protocol: MNIST 6,000 (offline), an MLP (``ImageClassifier(backbone="mlp")``, SGD lr 0.05), batch 128, 12 epochs,
``BatchFilter("prl", drop_ratio=eps, warmup_epochs=2)`` at the true rate, systematic noise at 20/30/40 % and random
at 30/45 %, seeds 0-2; clean test accuracy on the 4,000 test images. ``--quick``: systematic 40 %, seed 0, 4 epochs;
``--smoke`` the same in one process. Full mode writes ``results/batch_filter_per_class.md`` (+ ``.json``); the last
line printed is one JSON object.
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
    rows: tuple[tuple[str, float], ...] = (("systematic", 0.2), ("systematic", 0.3), ("systematic", 0.4),
                                           ("random", 0.3), ("random", 0.45))
    epochs: int = 12
    warmup: int = 2
    batch_size: int = 128


FULL = Protocol()
QUICK = Protocol(seeds=(0,), rows=(("systematic", 0.4),), epochs=4, warmup=1)


def tasks(p: Protocol, args: Any) -> list[dict]:
    return [{"noise": noise, "rate": rate, "seed": s, "per_class": pc, "root": args.data_root, "settings": p.__dict__}
            for noise, rate in p.rows for s in p.seeds for pc in (False, True)]


def per_class_batch_mask(scores: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, keep: int) -> torch.Tensor:
    """The candidate rule (pure): drop ``n - keep`` samples, shared among the given labels by largest remainder."""
    from lit_robust.selection.rules import smallest_k_mask

    n = scores.numel()
    drop = n - keep
    classes, counts = torch.unique(labels, sorted=True, return_counts=True)
    quota = counts.double() * drop / n
    share = quota.floor().long()
    remainders = sorted(range(classes.numel()), key=lambda i: (-float(quota[i] - share[i]), int(classes[i])))
    for i in remainders[:drop - int(share.sum())]:
        share[i] += 1
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    for c, d in zip(classes.tolist(), share.tolist()):
        members = labels == c
        mask[members] = smallest_k_mask(scores[members], int(members.sum()) - d, index[members])
    return mask


def run_one(task: dict) -> dict:
    import pytorch_lightning as pl

    from lit_robust import BatchFilter, ImageClassifier, MNISTDataModule
    from lit_robust.data.indexed import unpack_batch
    from lit_robust.selection.rules import batch_keep_count

    class PerClassFilter(BatchFilter):
        """BatchFilter whose batch selection is the candidate (the batch's given labels kept for ``_select``)."""

        def _mask(self, losses, batch, outputs, module, record):
            self._labels = unpack_batch(batch).target
            return super()._mask(losses, batch, outputs, module, record)

        def _select(self, scores, index, eps):  # one process: every entry is counted (no padding repeats)
            keep, _ = batch_keep_count(scores.numel(), eps)
            return per_class_batch_mask(scores, self._labels.to(scores.device), index, keep), None

    quiet()
    torch.set_num_threads(1)
    p = task["settings"]
    pl.seed_everything(task["seed"], verbose=False)
    dm = MNISTDataModule(root=task["root"], clean_ratio=1 - task["rate"], noise=task["noise"],
                         batch_size=p["batch_size"], seed=task["seed"])
    f = (PerClassFilter if task["per_class"] else BatchFilter)("prl", drop_ratio=task["rate"],
                                                                warmup_epochs=p["warmup"])
    model = ImageClassifier("mlp", num_classes=10, lr=0.05)
    t = trainer(p["epochs"], [f])
    t.fit(model, dm)
    acc = float(t.test(model, dm, verbose=False)[0]["test_acc"])
    last = f.history[-1]
    return {k: v for k, v in task.items() if k not in ("root", "settings")} | {
        "acc": acc, "dropped_corrupted_frac": last.dropped_corrupted_frac}


def _pairs(saved: dict) -> list[tuple[str, float, list[dict], list[dict]]]:
    rows = saved["results"]
    out = []
    for noise, rate in saved["settings"]["rows"]:
        mine = [r for r in rows if r["noise"] == noise and r["rate"] == rate]
        out.append((noise, rate, [r for r in mine if not r["per_class"]], [r for r in mine if r["per_class"]]))
    return out


def _mean(rs: list[dict], key: str) -> float:
    return 100 * statistics.fmean(r[key] for r in rs)


def render(saved: dict) -> str:
    p, m = saved["settings"], saved["meta"]
    table = md_table(
        ["noise", "ε %", "one ranking: test acc %", "per-class quota: test acc %", "difference (points)",
         "one ranking: dropped that were corrupted %", "per-class quota: dropped that were corrupted %", "per seed"],
        [[noise, f"{100 * rate:g}", f"{_mean(one, 'acc'):.1f}", f"{_mean(pc, 'acc'):.1f}",
          f"{_mean(pc, 'acc') - _mean(one, 'acc'):+.1f}", f"{_mean(one, 'dropped_corrupted_frac'):.1f}",
          f"{_mean(pc, 'dropped_corrupted_frac'):.1f}",
          "; ".join(f"{100 * a['acc']:.1f} / {100 * b['acc']:.1f}" for a, b in zip(one, pc))]
         for noise, rate, one, pc in _pairs(saved)])
    return "\n".join([
        "# Per-batch filters: one ranking of the batch vs a per-class drop quota (PRL(L), MNIST 6,000)", "",
        f"`BatchFilter('prl', drop_ratio=ε, warmup_epochs={p['warmup']})` at the true rate; the per-class quota shares "
        "each batch's drop count among its given labels (largest remainder), as `ITLM(per_class=True)` does for the "
        f"whole set. MLP, SGD lr 0.05, batch {p['batch_size']}, {p['epochs']} epochs, seeds {list(p['seeds'])}; "
        "clean test accuracy on 4,000 test images, mean over seeds (per seed: one ranking / per-class quota); "
        "settings: benchmarks/batch_filter_per_class.py.", "",
        *table, "",
        f"Wall time {m['wall_s']} s with {m['jobs']} jobs on a shared {m['cpus']}-core machine ({m['machine']}); "
        f"date {m['date']}; torch {m['torch']}.", "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'batch_filter_per_class.json')}.", ""])


def headline(saved: dict) -> dict:
    rows = {f"{noise} {100 * rate:g}": round(_mean(pc, "acc") - _mean(one, "acc"), 2)
            for noise, rate, one, pc in _pairs(saved)}
    return {"per_class_minus_one_ranking_points": rows,
            "rows_per_class_ahead": sum(v > 0 for v in rows.values()), "rows": len(rows)}


BENCHMARK = Benchmark(name="batch_filter_per_class", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": QUICK},
                      tasks=tasks, run=run_one, render=render, headline=headline,
                      jobs={"full": 2, "quick": 2, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
