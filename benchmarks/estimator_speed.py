"""Benchmark: the mixture estimators' EM on 1-D vectors against the generic EM, on the same scores.

``estimate_corruption(scores, "gmm")`` (every ``"auto"`` on scores without labels) runs EM from three starts
(``lit_robust.functional.estimation``, "Starts"), and those fits are nearly all its time; ``"bmm"`` (the Beta mixture,
opt-in) runs one. ``_fit_gmm`` and ``_fit_bmm`` run the EM for two components on 1-D vectors. ``generic_fit_gmm`` and
``generic_fit_bmm`` below are the same EMs written generically, on an ``m x 2`` matrix of responsibilities
(``generic_em`` with the weighted moments and each mixture's log-density): what ``_fit_gmm`` and ``_fit_bmm`` were
until 2026-12-06. Each whole estimate is run with one, then the other (the library's fit swapped for the
generic one), on one torch thread, alternately (generic first in even repetitions, new first in odd ones), for each
mixture, on

* ``clean``: exponential scores (rate 10), the slow case: the two components overlap, EM takes 350-550 iterations a
  start (the bmm: its 500 at most) and the fit is refused;
* ``noisy``: the same with 30 % of them replaced by scores uniform in [2, 3] (EM converges in 11-16 iterations).

Reported: the median time of each, their ratio, and whether the outputs agree (rate, reason, iterations, largest
posterior difference). Target: the same output (rates within 1e-12, the same reasons and iterations).

Usage::

    python benchmarks/estimator_speed.py           # n = 6e3, 6e4, 1e6 -> results/estimator_speed.md (+ .json)
    python benchmarks/estimator_speed.py --quick   # n = 6e3, 6e4 (< 60 s)
    python benchmarks/estimator_speed.py --smoke   # n = 2e3, a few seconds

Modes, ``--out``, ``--render`` and the JSON last line are ``harness.py``'s; every repetition runs in this one process
(``--jobs`` is 1).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_robust import estimate_corruption
from lit_robust.functional import estimation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, main, md_table, reproduce_note  # noqa: E402

SAME_RATE_ATOL = 1e-12


@dataclass(frozen=True)
class Protocol:
    ns: tuple[int, ...] = (6_000, 60_000, 1_000_000)
    reps: int = 2
    corrupted: float = 0.3
    seed: int = 0
    methods: tuple[str, ...] = ("gmm", "bmm")


FULL = Protocol()
QUICK = Protocol(ns=(6_000, 60_000))
SMOKE = Protocol(ns=(2_000,), reps=1)


def _weighted_moments(x: torch.Tensor, r: torch.Tensor, floor: float) -> tuple[torch.Tensor, ...]:
    nk = r.sum(0)
    mu = (r * x[:, None]).sum(0) / nk
    var = (r * (x[:, None] - mu) ** 2).sum(0) / nk + floor
    return nk / x.numel(), mu, var


def generic_em(x: torch.Tensor, resp: torch.Tensor, max_iter: int, tol: float, m_step, log_dens) -> dict:
    """Generic 2-component EM starting with an M-step from ``resp`` (the library's ``_em`` until 2026-12-06)."""
    m = x.numel()
    prev = -math.inf
    converged = False
    it = 0
    params = None
    ll = -math.inf
    for it in range(1, max_iter + 1):  # noqa: B007 - it is reported
        w, params = m_step(x, resp)
        if float(w.min().item()) <= 1e-12:  # a component emptied: the one-component fit is the answer
            break
        logp = log_dens(x, params) + torch.log(w)
        lse = torch.logsumexp(logp, dim=1)
        resp = torch.exp(logp - lse[:, None])
        ll = float(lse.sum().item())
        if abs(ll - prev) <= tol * m:
            converged = True
            break
        prev = ll
    return {"w": w, "params": params, "resp": resp, "loglik": ll, "n_iter": it, "converged": converged}


def generic_fit_gmm(x: torch.Tensor, resp: torch.Tensor, max_iter: int, tol: float) -> dict:
    """The generic EM for two Gaussians on an ``m x 2`` responsibility matrix (``_fit_gmm`` until 2026-12-06)."""
    floor = estimation._var_floor(x)

    def m_step(x, r):
        w, mu, var = _weighted_moments(x, r, floor)
        return w, (mu, var)

    def log_dens(x, p):
        mu, var = p
        return estimation._normal_loglik(x[:, None], mu, var)

    out = generic_em(x, resp, max_iter, tol, m_step, log_dens)
    mu, var = out["params"]
    return {"means": mu.tolist(), "vars": var.tolist(), "weights": out["w"].tolist(), "resp": out["resp"],
            "loglik": out["loglik"], "n_iter": out["n_iter"], "converged": out["converged"]}


def _beta_moments(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Method-of-moments Beta parameters of each component, on tensors (the library's until 2026-12-06)."""
    var = torch.minimum(var, mean * (1.0 - mean) * (1.0 - 1e-6))
    common = mean * (1.0 - mean) / var - 1.0
    return mean * common, (1.0 - mean) * common


def _beta_logpdf(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - 1.0) * torch.log(x) + (b - 1.0) * torch.log1p(-x)
            + torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b))


def generic_fit_bmm(x: torch.Tensor, resp: torch.Tensor, max_iter: int, tol: float) -> dict:
    """The generic EM for two Betas (weighted method of moments) on an ``m x 2`` responsibility matrix (``_fit_bmm``
    until 2026-12-06)."""
    floor = estimation._var_floor(x)

    def m_step(x, r):
        w, mu, var = _weighted_moments(x, r, floor)
        return w, _beta_moments(mu, var)

    def log_dens(x, p):
        a, b = p
        return _beta_logpdf(x[:, None], a, b)

    out = generic_em(x, resp, max_iter, tol, m_step, log_dens)
    a, b = out["params"]
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1.0))
    return {"means": mean.tolist(), "vars": var.tolist(), "weights": out["w"].tolist(), "resp": out["resp"],
            "loglik": out["loglik"], "n_iter": out["n_iter"], "converged": out["converged"]}


GENERIC = {"gmm": ("_fit_gmm", generic_fit_gmm), "bmm": ("_fit_bmm", generic_fit_bmm)}


@contextlib.contextmanager
def generic_fits(method: str):
    """``estimate_corruption`` with ``method``'s generic EM inside (module-level swap, restored on exit)."""
    name, generic = GENERIC[method]
    fast = getattr(estimation, name)
    setattr(estimation, name, generic)
    try:
        yield
    finally:
        setattr(estimation, name, fast)


def make_scores(n: int, kind: str, p: Protocol) -> torch.Tensor:
    g = torch.Generator().manual_seed(p.seed)
    x = torch.empty(n, dtype=torch.float64).exponential_(10.0, generator=g)
    if kind == "noisy":
        bad = round(p.corrupted * n)
        x[n - bad:] = 2.0 + torch.rand(bad, dtype=torch.float64, generator=g)
    return x


def measure(x: torch.Tensor, method: str, reps: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"generic": [], "new": []}
    est = {}
    for rep in range(reps):
        for which in (("generic", "new") if rep % 2 == 0 else ("new", "generic")):
            with generic_fits(method) if which == "generic" else contextlib.nullcontext():
                t0 = time.perf_counter()
                est[which] = estimate_corruption(x, method)
                times[which].append(time.perf_counter() - t0)
    g, f = est["generic"], est["new"]
    return dict(generic_s=times["generic"], new_s=times["new"],
                ratio=statistics.median(times["generic"]) / statistics.median(times["new"]),
                rate_generic=g.rate, rate_new=f.rate, rate_diff=abs(g.rate - f.rate),
                posterior_diff=float((g.clean_posterior - f.clean_posterior).abs().max()),
                reason_generic=g.reason, reason_new=f.reason, n_iter=(g.n_iter, f.n_iter),
                same=abs(g.rate - f.rate) <= SAME_RATE_ATOL and g.reason == f.reason and g.n_iter == f.n_iter)


def execute(p: Protocol, args: Any, jobs: int) -> dict[str, Any]:
    if jobs != 1:
        raise SystemExit(f"`--jobs` must be 1 for estimator_speed (repetitions are timed in one process), got {jobs}.")
    torch.set_num_threads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for method in p.methods:
        for n in p.ns:
            for kind in ("clean", "noisy"):
                rows.append(dict(method=method, n=n, kind=kind, **measure(make_scores(n, kind, p), method, p.reps)))
                r = rows[-1]
                print(f"[estimator_speed] {method} n={n} {kind}: generic {statistics.median(r['generic_s']):.3f}s "
                      f"new {statistics.median(r['new_s']):.3f}s ({r['ratio']:.2f}x), same output: {r['same']}",
                      flush=True)
    return {"rows": rows, "load_average": None if load is None else round(load, 2)}


def fmt_times(ts: list[float]) -> str:
    return " / ".join(f"{t:.3f}" for t in ts)


def render(saved: dict[str, Any]) -> str:
    s, res, m = saved["settings"], saved["results"], saved["meta"]
    rows = res["rows"]
    h = headline(saved)
    lines = [
        "# The mixture estimators' EM: on 1-D vectors against the generic EM",
        "",
        "One `estimate_corruption(scores, method)` (gmm: three EM starts; bmm: one) with `_fit_gmm` / `_fit_bmm` as "
        "they are (**new**: two components on 1-D vectors) and swapped for the generic EM on an m × 2 responsibility "
        "matrix (**generic**: `_fit_gmm` and `_fit_bmm` until 2026-12-06), on the same float64 scores, "
        f"one torch thread, {s['reps']} repetition(s) each, "
        "alternately. clean: exponential scores (rate 10), where EM runs hundreds of iterations per start and the fit "
        f"is refused; noisy: {s['corrupted']:.0%} of them replaced by scores uniform in [2, 3] (seed {s['seed']}). "
        "Times in seconds, each repetition; the ratio is of the medians.",
        "",
        *md_table(["mixture", "n", "scores", "generic s", "new s", "generic ÷ new", "ε̂ generic", "ε̂ new", "\\|Δε̂\\|",
                   "max \\|Δ posterior\\|", "EM iterations (the fit kept)", "same output"],
                  [[r.get("method", "gmm"), f"{r['n']:,}", r["kind"],
                    fmt_times(r["generic_s"]), fmt_times(r["new_s"]), f"{r['ratio']:.2f}",
                    f"{r['rate_generic']:.6f}", f"{r['rate_new']:.6f}", f"{r['rate_diff']:.1e}",
                    f"{r['posterior_diff']:.1e}", str(r["n_iter"][1]), "yes" if r["same"] else "**NO**"]
                   for r in rows]),
        "",
        f"- Same output (rates within {SAME_RATE_ATOL:g}, the same reasons and iterations) in every row: "
        f"**{'yes' if h['same_output'] else 'NO'}** (largest |Δε̂| {h['max_rate_diff']:.1e}, largest posterior "
        f"difference {h['max_posterior_diff']:.1e}).",
        f"- generic ÷ new: {h['ratio_min']:.2f}–{h['ratio_max']:.2f}× over the rows.",
        "",
        f"Mode {saved['mode']}; wall time {m['wall_s']:.0f} s; date {m['date']}; machine: {m['machine']}, {m['cpus']} "
        f"CPU cores (shared with other jobs: only the ratios mean anything); torch {m['torch']}; load average at start "
        f"{res['load_average']}.",
        "",
        f"Reproduce: `{m['command']}` {reproduce_note(saved, 'estimator_speed.json')}.",
        "",
    ]
    return "\n".join(lines)


def headline(saved: dict[str, Any]) -> dict[str, Any]:
    rows = saved["results"]["rows"]
    return {"same_output": all(r["same"] for r in rows), "max_rate_diff": max(r["rate_diff"] for r in rows),
            "max_posterior_diff": max(r["posterior_diff"] for r in rows),
            "ratio_min": round(min(r["ratio"] for r in rows), 2), "ratio_max": round(max(r["ratio"] for r in rows), 2),
            "ratio": {f"{r.get('method', 'gmm')}-{r['n']}-{r['kind']}": round(r["ratio"], 2) for r in rows}}


BENCHMARK = Benchmark(name="estimator_speed", doc=__doc__, modes={"full": FULL, "quick": QUICK, "smoke": SMOKE},
                      execute=execute, render=render, headline=headline, jobs={"full": 1, "quick": 1, "smoke": 1},
                      data=False)

if __name__ == "__main__":
    main(BENCHMARK)
