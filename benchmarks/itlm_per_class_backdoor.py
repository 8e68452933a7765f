"""ITLM's one trim vs ``ITLM(per_class=True)`` under single-target watermark backdoors (why per_class is opt-in).

A single-target backdoor relabels its poisoned samples into one class, so the poisoned share of that class is many
times the overall one: one trim at ``keep_ratio`` α can drop them all, a per-class trim drops only ``1 - α`` of that
class. Protocol: ``backdoor_mnist.py``'s watermark part (itlm_paper §6.4, Table 4 pattern) unchanged — MNIST 6,000,
5 % of the source class watermarked ('X' 1 → 2, 'X' 9 → 4, 'L' 6 → 0) and relabelled, cnn2, Adam lr 1e-3, ITLM
α = 0.98, rounds [1, 1, 1, 1, 10] with re-initialisation, seeds 0-2 — once with ``per_class`` off and once on.
Per run: attack success rate (ASR) on the watermarked test images of the source class, clean test accuracy, and the
share of the poisoned training samples the final selection dropped. ``--quick``: 'X' 1 → 2, seed 0, 3,000 images,
rounds [1, 1, 1, 1, 3]; ``--smoke`` smaller still. Full mode writes ``results/itlm_per_class_backdoor.md``
(+ ``.json``); the last line printed is one JSON object.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backdoor_mnist  # noqa: E402
import harness  # noqa: E402
from harness import Benchmark, main, md_table  # noqa: E402

FULL, QUICK, SMOKE = backdoor_mnist.FULL, backdoor_mnist.QUICK, backdoor_mnist.SMOKE


def configure(s: Any, args: Any) -> Any:
    """``--seeds`` names the watermark runs' seeds (``wm_seeds``): the only runs this script makes."""
    return replace(s, wm_seeds=tuple(args.seeds)) if args.seeds is not None else s


def tasks(s: Any, args: Any) -> list[dict]:
    return [{"settings": s, "root": args.data_root, "attack": atk, "method": "itlm", "seed": seed,
             "per_class": per_class}
            for atk in s.watermarks for seed in s.wm_seeds for per_class in (False, True)]


def run_one(task: dict) -> dict:
    return {**backdoor_mnist.run_watermark(task), "per_class": task["per_class"]}


def _mean(rows: list[dict], key: str, scale: float = 1.0) -> str:
    return f"{scale * statistics.fmean(r[key] for r in rows):.1f}" if rows else "–"


def _groups(saved: dict) -> list[tuple[str, list[dict], list[dict]]]:
    out = []
    for atk in saved["settings"]["watermarks"]:
        rows = [r for r in saved["results"] if r["attack"] == list(atk)]
        name = f"{atk[0].removeprefix('watermark_').upper()} {atk[1]} → {atk[2]}"
        out.append((name, [r for r in rows if not r["per_class"]], [r for r in rows if r["per_class"]]))
    return out


def render(saved: dict) -> str:
    s, m = saved["settings"], saved["meta"]
    body = []
    for name, one, per in _groups(saved):
        cells = [name, str(one[0]["poisoned"] if one else "–")]
        for rows in (one, per):
            cells += [_mean(rows, "clean"), _mean(rows, "asr"), _mean(rows, "recall", 100.0),
                      ", ".join(f"{r['asr']:.1f}" for r in sorted(rows, key=lambda r: r["seed"]))]
        body.append(cells)
    table = md_table(["watermark, a → b", "poisoned", "one trim clean %", "one trim ASR %", "one trim dropped % of "
                      "poisoned", "ASR per seed", "per_class clean %", "per_class ASR %",
                      "per_class dropped % of poisoned", "ASR per seed"], body)
    rounds = [s["wm_early_epochs"]] * s["wm_early_rounds"] + [s["wm_final_epochs"]]
    return "\n".join([
        "# ITLM under single-target watermark backdoors: one trim vs `per_class=True`", "",
        f"MNIST {s['wm_train_size'] or 6000}, {int(100 * s['wm_rate'])} % of the source class watermarked and "
        f"relabelled to the target; cnn2, Adam lr 1e-3; `ITLM(keep_ratio={s['wm_keep_ratio']}, round_epochs={rounds})`"
        f" (re-initialised each round) with `per_class` off and on; seeds {list(s['wm_seeds'])}. ASR = attack "
        "success on the watermarked test images of the source class; *dropped* = the final selection's share of the "
        "poisoned training samples left out. Settings: benchmarks/itlm_per_class_backdoor.py "
        "(backdoor_mnist.py's watermark part).", "",
        *table, "",
        f"Wall time {m['wall_s']} s with {m['jobs']} jobs on a shared {m['cpus']}-core machine ({m['machine']}); "
        f"date {m['date']}; torch {m['torch']}.", "",
        f"Reproduce: `{m['command']}` {harness.reproduce_note(saved, 'itlm_per_class_backdoor.json')}.", ""])


def headline(saved: dict) -> dict:
    out: dict[str, Any] = {}
    for name, one, per in _groups(saved):
        out[name] = {label: {"asr": round(statistics.fmean(r["asr"] for r in rows), 2),
                             "dropped_poisoned": round(100 * statistics.fmean(r["recall"] for r in rows), 1)}
                     for label, rows in (("one_trim", one), ("per_class", per)) if rows}
    return out


BENCHMARK = Benchmark(name="itlm_per_class_backdoor", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      tasks=tasks, run=run_one, render=render, headline=headline, configure=configure,
                      jobs={"full": 2, "quick": 2, "smoke": 1})

if __name__ == "__main__":
    main(BENCHMARK)
