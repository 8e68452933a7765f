"""Benchmark: exact global selection at scale — histogram (radix) select vs gather-all vs one process.

``n`` float32 scores (standard normal, seeded; optionally a tie-heavy variant) are split into ``W``
contiguous shards, the layout :class:`lit_robust.selection.samplers.ShardedSampler` gives a scoring pass. The
``W`` ranks are *simulated in this process* with :class:`lit_robust.selection.sharded.SimulatedCollectives`:
each rank's local work runs one after the other and an all-reduce is the sum of the ranks'
histograms, so the time measured is the total work of all ranks, comparable to one process selecting
over the same ``n`` scores. Bytes are counted per rank as the payload it contributes to (``sent``) and
receives from (``received``) collectives.

Methods, all keeping ``k = floor(0.7 n)`` (a typical ITLM ``keep_ratio``):

* ``histogram``: :func:`~lit_robust.selection.sharded.sharded_smallest_k_masks` with ``algorithm="histogram"``
  (11-bit digits: 16 KiB per all-reduce);
* ``gather``: the same with ``algorithm="gather"`` (all-gather ``(index, score)``, de-duplicate, one
  sort by ``(score, index)``; in a real run *every* rank does this sort over all ``n``);
* ``kthvalue`` / ``topk``: one process, ``torch.kthvalue(x, k)`` and
  ``torch.topk(x, k, largest=False, sorted=False)`` over the concatenated scores (no index tie-break).

Targets (issue 3): histogram bytes per rank independent of ``n``; histogram time within 3x of one
``torch.kthvalue`` pass. Histogram and kthvalue are timed in interleaved repetitions (median), so the
load of a shared machine hits both alike. Every histogram mask is checked against the gather mask.

Usage::

    python benchmarks/selection_scaling.py           # n = 1e6, 1e7, 1e8 -> results/selection_scaling.md (+ .json)
    python benchmarks/selection_scaling.py --quick   # n = 1e6, 1e7 (< 60 s)
    python benchmarks/selection_scaling.py --smoke   # a few seconds
    python benchmarks/selection_scaling.py --render benchmarks/results/selection_scaling.json  # re-print a saved run

``--n-max`` drops the sizes above it, ``--threads`` sets torch's threads (1 by default). Modes, ``--out``,
``--render`` and the JSON last line (the headline figures) are ``harness.py``'s; every repetition runs in this one
process (``--jobs`` is 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_robust.selection.radix import pass_schedule
from lit_robust.selection.rules import keep_count
from lit_robust.selection.sharded import _META, SimulatedCollectives, sharded_smallest_k_masks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, main, md_table, reproduce_note  # noqa: E402

KEEP_RATIO = 0.7
BITS_PER_PASS = 11
SEED = 0


@dataclass(frozen=True)
class Protocol:
    """Sizes, simulated world sizes and repetitions of a mode; the constants and options the saved run keeps."""

    ns: tuple[int, ...] = (10**6, 10**7, 10**8)
    worlds: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    gather_worlds: tuple[int, ...] = (2, 8, 64)
    reps: int = 5
    topk_max_n: int = 10**8
    ties_n: int | None = 10**7
    keep_ratio: float = KEEP_RATIO
    bits_per_pass: int = BITS_PER_PASS
    seed: int = SEED
    threads: int = 1
    n_max: float | None = None


FULL = Protocol()
QUICK = Protocol(ns=(10**6, 10**7), worlds=(2, 8, 64), gather_worlds=(2, 64), reps=3, topk_max_n=10**7, ties_n=None)
SMOKE = Protocol(ns=(10**5, 10**6), worlds=(2, 64), gather_worlds=(2,), reps=1, topk_max_n=10**6, ties_n=None)


def make_scores(n: int, dist: str, seed: int = SEED) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    if dist == "ties":  # few distinct values: most of the selection is decided by index
        x = (x * 8).round_() / 8
    return x


def shards(n: int, world: int, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    bounds = [r * n // world for r in range(world + 1)]
    return ([x[bounds[r]: bounds[r + 1]] for r in range(world)],
            [torch.arange(bounds[r], bounds[r + 1]) for r in range(world)])


def timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def available_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def measure(n: int, world: int, x: torch.Tensor, reps: int, with_gather: bool, with_topk: bool,
            dist: str) -> dict[str, Any]:
    k = keep_count(n, KEEP_RATIO)
    scores, index = shards(n, world, x)
    hist_t, kth_t = [], []
    info = masks = None
    for rep in range(reps):  # interleaved: histogram, kthvalue, kthvalue, histogram, ...
        order = ("hist", "kth") if rep % 2 == 0 else ("kth", "hist")
        for what in order:
            if what == "hist":
                t, (masks, info) = timed(lambda: sharded_smallest_k_masks(
                    scores, index, k, SimulatedCollectives(world), algorithm="histogram", bits_per_pass=BITS_PER_PASS))
                hist_t.append(t)
            else:
                kth_t.append(timed(lambda: torch.kthvalue(x, k))[0])
    assert masks is not None and info is not None
    kept = sum(int(m.sum()) for m in masks)
    row: dict[str, Any] = dict(
        dist=dist, n=n, world=world, k=k, hist_s=statistics.median(hist_t), kth_s=statistics.median(kth_t),
        hist_sent=info.bytes_sent, hist_received=info.bytes_received, passes=info.passes, dedupe=info.dedupe,
        kept_ok=kept == k, gather_s=None, gather_sent=None, gather_received=None, exact=None, topk_s=None)
    row["ratio"] = row["hist_s"] / row["kth_s"]
    if with_gather:
        t, (gmasks, ginfo) = timed(lambda: sharded_smallest_k_masks(scores, index, k, SimulatedCollectives(world),
                                                                     algorithm="gather"))
        row.update(gather_s=t, gather_sent=ginfo.bytes_sent, gather_received=ginfo.bytes_received,
                   exact=all(torch.equal(a, b) for a, b in zip(masks, gmasks)))
        del gmasks
    if with_topk:
        row["topk_s"] = timed(lambda: torch.topk(x, k, largest=False, sorted=False))[0]
    return row


def fmt_bytes(b: int | str | None) -> str:
    """Bytes in the largest unit that fits (a transcribed run holds some cells as the text the table printed)."""
    if b is None:
        return "—"
    if isinstance(b, str):
        return b
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b} B"


def fmt_s(t: float | None) -> str:
    return "—" if t is None else f"{t:.3f}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-max", type=float, default=None, help="drop sizes above this n")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is the most stable on a shared machine)")


def configure(p: Protocol, args: argparse.Namespace) -> Protocol:
    if args.n_max is not None and not args.n_max >= min(p.ns):
        raise SystemExit(f"`--n-max` must be a size >= {min(p.ns):.0e} (this mode's smallest n), got {args.n_max:g}.")
    if args.threads < 1:
        raise SystemExit(f"`--threads` must be an integer >= 1, got {args.threads}.")
    return dataclasses.replace(p, threads=args.threads, n_max=args.n_max)


def execute(p: Protocol, args: argparse.Namespace, jobs: int) -> dict[str, Any]:
    """Every size and world size in this one process (histogram and kthvalue interleaved); the summary is computed
    here once, from the unrounded figures, and saved with the rows."""
    if jobs != 1:
        raise SystemExit(f"`--jobs` must be 1 for selection_scaling (repetitions are timed in one process), got {jobs}.")
    torch.set_num_threads(p.threads)
    notes: list[str] = []
    ns = list(p.ns)
    if p.n_max is not None:
        dropped = [n for n in ns if n > p.n_max]
        ns = [n for n in ns if n <= p.n_max]
        if dropped:
            notes.append(f"sizes {dropped} skipped by `--n-max {p.n_max:.0e}`.")
    # ~ 50 bytes per score at the peak of gather-all (gathered copies + two argsorts); keep a margin
    avail = available_gib()
    if avail is not None:
        fits = [n for n in ns if n * 50 / 2**30 < 0.8 * avail]
        if len(fits) < len(ns):
            notes.append(f"top end reduced: n = {[n for n in ns if n not in fits]} needs more than the "
                         f"{avail:.1f} GiB of memory available.")
            ns = fits
    notes.append("kthvalue/topk are one-process baselines without the index tie-break or de-duplication; histogram "
                 "and gather return the exact masks (checked equal in the last column).")
    notes.append("In a real run the histogram work divides over the W ranks (each keys only its shard), plus one "
                 "all-reduce latency per pass; gather-all makes every rank receive and sort all n scores.")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for n in ns:
        x = make_scores(n, "normal", p.seed)
        for world in p.worlds:
            rows.append(measure(n, world, x, p.reps, with_gather=world in p.gather_worlds,
                                with_topk=world == p.worlds[0] and n <= p.topk_max_n, dist="normal"))
            print(f"[selection_scaling] n={n:.0e} W={world}: hist {rows[-1]['hist_s']:.3f}s "
                  f"kth {rows[-1]['kth_s']:.3f}s", flush=True)
        del x
    if p.ties_n is not None and p.ties_n in ns:
        x = make_scores(p.ties_n, "ties", p.seed)
        for world in (p.worlds[0], p.worlds[-1]):
            rows.append(measure(p.ties_n, world, x, p.reps, with_gather=True, with_topk=False, dist="ties"))
        del x
    return {"rows": rows, "summary": summarise(rows, ns, p), "notes": notes,
            "load_average": None if load is None else round(load, 2)}


def summarise(rows: list[dict[str, Any]], ns: list[int], p: Protocol) -> dict[str, Any]:
    by_n: dict[str, dict[str, int]] = {}
    for r in rows:
        by_n.setdefault(f"W={r['world']}", {})[f"{r['dist']} n={r['n']:.0e}"] = r["hist_sent"]
    # n-independent bound on one rank's payload (see the markdown): meta row, unique-count, tie span, passes
    key_passes, index_passes = pass_schedule(32, p.bits_per_pass), pass_schedule(64, p.bits_per_pass)
    meta_bytes = 8 * _META  # the int64 meta row every selection all-gathers first (56 bytes until 2026-12-05)
    bound = meta_bytes + 8 + 24 + sum((1 << w) * 8 for _, w in key_passes + index_passes)
    ratios = [r["ratio"] for r in rows]
    n_max = max(ns)
    gather_at_max = [r["gather_received"] for r in rows if r["n"] == n_max and r["gather_received"] is not None]
    return {
        "n_max": n_max,
        "worlds": list(p.worlds),
        "hist_bytes_sent_bound": bound,
        "meta_row_bytes": meta_bytes,
        "key_passes_max": len(key_passes),
        "index_passes_max": len(index_passes),
        "hist_bytes_sent_by_n": by_n,
        "hist_bytes_independent_of_n": all(r["hist_sent"] <= bound for r in rows),
        "hist_bytes_sent_min": min(r["hist_sent"] for r in rows),
        "hist_bytes_sent_max": max(r["hist_sent"] for r in rows),
        "gather_bytes_received_at_n_max": max(gather_at_max) if gather_at_max else None,
        "hist_over_kthvalue_max": max(ratios),
        "hist_over_kthvalue_median": statistics.median(ratios),
        "target_3x_met": max(ratios) <= 3.0,
        "all_exact": all(r["exact"] is not False for r in rows) and all(r["kept_ok"] for r in rows),
        "hist_s_at_n_max": {str(r["world"]): round(r["hist_s"], 4) for r in rows
                            if r["n"] == n_max and r["dist"] == "normal"},
        "kthvalue_s_at_n_max": statistics.median(r["kth_s"] for r in rows if r["n"] == n_max),
        "topk_s_at_n_max": next((r["topk_s"] for r in rows if r["n"] == n_max and r["topk_s"] is not None), None),
        "gather_s_at_n_max": {str(r["world"]): round(r["gather_s"], 3) for r in rows
                              if r["n"] == n_max and r["gather_s"] is not None and r["dist"] == "normal"},
    }


def render(saved: dict[str, Any]) -> str:
    """The table, the targets and the bytes by world size, from the saved run only (a transcribed run holds some
    byte cells as printed; one saved before the harness keeps its fixed Reproduce line)."""
    s, res, m = saved["settings"], saved["results"], saved["meta"]
    h, rows = res["summary"], res["rows"]

    def cells(r: dict[str, Any]) -> list[str]:
        exact = "—" if r["exact"] is None else ("yes" if r["exact"] else "**NO**")
        return [r["dist"], f"{r['n']:.0e}", str(r["world"]), fmt_s(r["hist_s"]), fmt_s(r["kth_s"]), f"{r['ratio']:.2f}",
                fmt_s(r["topk_s"]), fmt_s(r["gather_s"]), f"{fmt_bytes(r['hist_sent'])} / {fmt_bytes(r['hist_received'])}",
                f"{fmt_bytes(r['gather_sent'])} / {fmt_bytes(r['gather_received'])}", str(r["passes"]), exact]

    bits = s["bits_per_pass"]
    columns = list(dict.fromkeys(f"{r['dist']} n={r['n']:.0e}" for r in rows))
    arch, system = m["machine"].split(", ", 1)
    lines = [
        "# Exact global selection: histogram select vs gather-all vs one process",
        "",
        f"float32 scores, standard normal (seed {s['seed']}; `ties` rows: rounded to multiples of 1/8), split into W "
        f"contiguous shards (`ShardedSampler` layout); k = floor({s['keep_ratio']} n). W ranks are simulated in one "
        "process (`SimulatedCollectives`): times are the total work of all ranks, run one after the other, so they "
        "compare with one process selecting over the same n. `histogram` and `kthvalue` are medians of "
        f"{s['reps']} interleaved repetitions; `gather` and `topk` are single runs. Bytes are per rank: payload "
        "sent to / received from collectives (a ring all-reduce moves about twice the payload on the wire). "
        f"Histogram digits: {bits} bits (one all-reduce of 2^{bits} int64 counts = 16 KiB per pass).",
        "",
        *md_table(["dist", "n", "W", "histogram s", "kthvalue s", "hist ÷ kth", "topk s", "gather s",
                   "hist bytes sent / recv", "gather bytes sent / recv", "passes", "hist == gather"],
                  [cells(r) for r in rows]),
        "",
        "## Targets",
        "",
        f"* Histogram bytes per rank independent of n: **{'met' if h['hist_bytes_independent_of_n'] else 'NOT met'}**. "
        f"Every row sends at most {fmt_bytes(h['hist_bytes_sent_bound'])} per rank, a bound that holds for any n: one "
        f"{h.get('meta_row_bytes', 56)}-byte metadata row, at most {h['key_passes_max']} key passes and "
        f"{h['index_passes_max']} index passes of "
        f"at most 16 KiB each, and 32 bytes of counts/spans. Measured: {fmt_bytes(h['hist_bytes_sent_min'])} – "
        f"{fmt_bytes(h['hist_bytes_sent_max'])} sent per rank over all rows; the number of passes depends "
        "on the data (a pass can settle the threshold early; index passes run only when the threshold score is "
        "tied), not on n (table below). Gather-all receives "
        f"{fmt_bytes(h['gather_bytes_received_at_n_max'])} per rank at n = {h['n_max']:.0e}, growing linearly with n.",
        f"* Histogram select within 3x of one `torch.kthvalue` pass: **{'met' if h['target_3x_met'] else 'NOT met'}** "
        f"(largest ratio {h['hist_over_kthvalue_max']:.2f}, median {h['hist_over_kthvalue_median']:.2f}).",
        "",
        "Histogram bytes sent per rank, by world size (rows) and data (columns):",
        "",
        *md_table(["W", *columns], [[w[2:], *(str(by_col.get(c, "—")) for c in columns)]
                                    for w, by_col in h["hist_bytes_sent_by_n"].items()]),
        "",
        "## Notes",
        "",
        *[f"* {note}" for note in res["notes"]],
        "",
        f"Mode {saved['mode']}; wall time {m['wall_s']:.0f} s; torch threads {s['threads']}; date {m['date']}; "
        f"machine: {arch}, {m['cpus']} CPU cores (shared with other jobs), {system}; torch {m['torch']}; load "
        f"average at start {res['load_average']}.",
        "",
        "Reproduce: `python benchmarks/selection_scaling.py` (`--quick` for the reduced case)." if m.get("pre_harness")
        else f"Reproduce: `{m['command']}` {reproduce_note(saved, 'selection_scaling.json')}.",
        "",
    ]
    return "\n".join(lines)


def headline(saved: dict[str, Any]) -> dict[str, Any]:
    res = saved["results"]
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res["summary"].items()}
    return {**out, "threads": saved["settings"]["threads"], "load_average": res["load_average"], "notes": res["notes"]}


BENCHMARK = Benchmark(name="selection_scaling", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      execute=execute, render=render, headline=headline, add_arguments=add_arguments,
                      configure=configure, jobs={"full": 1, "quick": 1, "smoke": 1}, data=False)

if __name__ == "__main__":
    main(BENCHMARK)
