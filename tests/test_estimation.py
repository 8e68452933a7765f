"""estimate_corruption: EM against a plain-Python reference, synthetic mixtures with a known rate, clean data,
order independence, degenerate inputs, argument checks, and real cross-entropy losses on digits."""

from __future__ import annotations

import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lit_robust.functional.estimation as estimation
from lit_robust.functional.estimation import (
    _fit_bmm,
    _fit_gmm,
    _quantile_init,
    _top_split_init,
    bmm_transform,
    estimate_corruption,
    estimate_corruption_from_class_floor,
    estimate_corruption_from_predictions,
    far_out,
    gmm_transform,
    monotone_posterior,
)

METHODS = ("gmm", "bmm")
REPO = Path(__file__).resolve().parents[1]


def synthetic(kind: str, eps: float, n: int, seed: int) -> torch.Tensor:
    """Clean losses (small, right-skewed) followed by corrupted ones ~ 0.3 * Gamma(8) (mean 2.4)."""
    g = torch.Generator().manual_seed(seed)
    n_bad = round(eps * n)
    nc = n - n_bad
    if kind == "exp":
        clean = torch.empty(nc, dtype=torch.float64).exponential_(1 / 0.15, generator=g)
    elif kind == "gamma2":
        clean = 0.1 * torch._standard_gamma(torch.full((nc,), 2.0, dtype=torch.float64), generator=g)
    else:  # half-normal
        clean = 0.2 * torch.randn(nc, dtype=torch.float64, generator=g).abs()
    bad = 0.3 * torch._standard_gamma(torch.full((n_bad,), 8.0, dtype=torch.float64), generator=g)
    return torch.cat([clean, bad])


# ---------------------------------------------------------------- slow, obvious references


def _ref_gmm(x: list[float], r0: list[float], iters: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Plain-Python EM for a 2-component 1-D GMM; r0[i] = initial responsibility of component 0.
    Returns (weights, means, variances, final responsibility of component 0)."""
    n = len(x)
    mean_x = sum(x) / n
    floor = 1e-6 * sum((v - mean_x) ** 2 for v in x) / n + 1e-12
    r = [[r0[i], 1.0 - r0[i]] for i in range(n)]
    for _ in range(iters):
        w, mu, var = [], [], []
        for k in range(2):
            nk = sum(r[i][k] for i in range(n))
            m = sum(r[i][k] * x[i] for i in range(n)) / nk
            v = sum(r[i][k] * (x[i] - m) ** 2 for i in range(n)) / nk + floor
            w.append(nk / n)
            mu.append(m)
            var.append(v)
        for i in range(n):
            p = [w[k] * math.exp(-0.5 * (x[i] - mu[k]) ** 2 / var[k]) / math.sqrt(2 * math.pi * var[k])
                 for k in range(2)]
            r[i] = [p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1])]
    return w, mu, var, [ri[0] for ri in r]


def _ref_bmm(x: list[float], r0: list[float], iters: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Plain-Python EM for a 2-component Beta mixture (weighted method of moments, Arazo et al. 2019), ``iters``
    M- and E-steps. Returns (weights, a, b, final responsibility of component 0)."""
    n = len(x)
    mean_x = sum(x) / n
    floor = 1e-6 * sum((v - mean_x) ** 2 for v in x) / n + 1e-12
    r = [[r0[i], 1.0 - r0[i]] for i in range(n)]

    def pdf(xi, ak, bk):
        return math.exp((ak - 1) * math.log(xi) + (bk - 1) * math.log(1 - xi)
                        + math.lgamma(ak + bk) - math.lgamma(ak) - math.lgamma(bk))

    for _ in range(iters):
        w, a, b = [], [], []
        for k in range(2):
            nk = sum(r[i][k] for i in range(n))
            m = sum(r[i][k] * x[i] for i in range(n)) / nk
            v = min(sum(r[i][k] * (x[i] - m) ** 2 for i in range(n)) / nk + floor, m * (1 - m) * (1 - 1e-6))
            c = m * (1 - m) / v - 1
            w.append(nk / n)
            a.append(m * c)
            b.append((1 - m) * c)
        for i, xi in enumerate(x):
            p = [w[k] * pdf(xi, a[k], b[k]) for k in range(2)]
            r[i] = [p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1])]
    return w, a, b, [ri[0] for ri in r]


_REFERENCE_CASES = {  # (method, case): (scores, the share of the top scores EM starts from as the high component)
    ("gmm", "exp 30 %, halves"): (lambda: synthetic("exp", 0.3, 200, seed=3), None),
    ("gmm", "fitted clean losses, top quarter"): (lambda: fitted_clean_losses(), 0.25),  # defined below
    ("gmm", "clean exp, top eighth"): (lambda: synthetic("exp", 0.0, 200, seed=5), 0.125),
    ("bmm", "half-normal 20 %, halves"): (lambda: synthetic("halfn", 0.2, 200, seed=4), None),
    ("bmm", "clean exp, top quarter"): (lambda: synthetic("exp", 0.0, 200, seed=5), 0.25),
    ("bmm", "exp 40 %, top eighth"): (lambda: synthetic("exp", 0.4, 200, seed=6), 0.125),
}


@pytest.mark.parametrize(("method", "case"), list(_REFERENCE_CASES))
def test_em_matches_plain_python_reference(method, case):
    """Each 1-D EM against plain Python for up to 40 iterations, from the halves and the top starts; the gmm also on
    losses spread over orders of magnitude with exact zeros (a narrow component far from the mean, where the 1-D EM's
    ``E[x^2] - mu^2`` could cancel)."""
    scores, start = _REFERENCE_CASES[method, case]
    transform, fit_em = (gmm_transform, _fit_gmm) if method == "gmm" else (bmm_transform, _fit_bmm)
    x = transform(torch.sort(scores()).values)
    r0 = _quantile_init(x) if start is None else _top_split_init(x.numel(), start)
    for iters in (1, 2, 7, 40):
        fit = fit_em(x, r0.clone(), max_iter=iters, tol=0.0)
        # tol=0 stops only where the log-likelihood repeats exactly (two gmm cases do within 40 iterations)
        assert fit["n_iter"] == iters or (fit["converged"] and fit["n_iter"] < iters)
        if method == "gmm":
            w, mu, var, post0 = _ref_gmm(x.tolist(), r0[:, 0].tolist(), fit["n_iter"])
        else:
            w, a, b, post0 = _ref_bmm(x.tolist(), r0[:, 0].tolist(), fit["n_iter"])
            mu = [ak / (ak + bk) for ak, bk in zip(a, b)]
            var = [ak * bk / ((ak + bk) ** 2 * (ak + bk + 1)) for ak, bk in zip(a, b)]
        np.testing.assert_allclose(fit["weights"], w, rtol=0, atol=1e-9)
        np.testing.assert_allclose(fit["means"], mu, rtol=0, atol=1e-9)
        np.testing.assert_allclose(fit["vars"], var, rtol=0, atol=1e-9)
        np.testing.assert_allclose(fit["resp"][:, 0].numpy(), post0, rtol=0, atol=1e-9)


def _ref_monotone(x: list[float], raw: list[float], mu0: float, mu1: float) -> list[float]:
    """Plain Python: above the high mean, the smallest raw posterior from the mean up to the score; below the low mean,
    the largest from the score up to the mean; between them, the raw posterior."""
    out = []
    for i, xi in enumerate(x):
        if xi >= mu1:
            out.append(min(raw[j] for j in range(len(x)) if mu1 <= x[j] <= xi and j <= i))
        elif xi <= mu0:
            out.append(max(raw[j] for j in range(len(x)) if xi <= x[j] <= mu0 and j >= i))
        else:
            out.append(raw[i])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_monotone_posterior_matches_plain_python(seed):
    """Random posteriors on sorted scores with ties, the means on scores and between them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.sort(torch.randint(0, 40, (120,), generator=g).double() / 4).values
    raw = torch.rand(120, dtype=torch.float64, generator=g)
    mu0, mu1 = (float(x[30]), float(x[90])) if seed % 2 else (2.13, 7.77)
    resp = torch.stack([raw, 1 - raw], dim=1)
    got = monotone_posterior({"resp": resp, "means": [mu0, mu1]}, x)
    assert got.tolist() == _ref_monotone(x.tolist(), raw.tolist(), mu0, mu1)
    assert torch.equal(resp[:, 0], raw)  # the fit is not changed


def test_clean_posterior_never_rises_with_the_score(monkeypatch):
    """A narrow corrupted mode (2.0 +- 0.05) among clean exponential scores, and three scores above it (2.6-3.0, inside
    the far-out fence). On the gmm's log scale the clean component is the wider one, so its tail outweighs the high
    component's again up there: the mixture's own posterior read those three as clean (1.0) and the scores below them
    as corrupted. They now read as corrupted as the high mode's top, and the rate counts them."""
    g = torch.Generator().manual_seed(1)
    s = torch.cat([torch.empty(1600, dtype=torch.float64).exponential_(10.0, generator=g),
                   2.0 + 0.05 * torch.randn(400, dtype=torch.float64, generator=g),
                   torch.tensor([2.6, 2.8, 3.0], dtype=torch.float64)])
    order = torch.argsort(s, stable=True)
    est = estimate_corruption(s)
    assert est.reason == "two components" and est.far_out == 0
    assert (est.clean_posterior[order].diff() <= 0).all()
    assert est.clean_posterior[-3:].max() < 1e-3
    with monkeypatch.context() as mp:  # the mixture's own posterior, as before 2026-12-06
        mp.setattr(estimation, "monotone_posterior", lambda fit, x: fit["resp"][:, 0].clone())
        raw = estimate_corruption(s)
    assert raw.clean_posterior[order].diff().max() > 0.9 and raw.clean_posterior[-3:].min() > 0.999
    assert est.rate - raw.rate == pytest.approx(3 / s.numel(), abs=2e-4)
    for method in METHODS:  # and a well-separated mixture of the usual shape, both mixtures
        x = synthetic("exp", 0.3, 2000, 5)
        e = estimate_corruption(x, method)
        assert e.two_components and (e.clean_posterior[torch.argsort(x, stable=True)].diff() <= 0).all()


# ---------------------------------------------------------------- known mixtures, clean data


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3, 0.4, 0.45])
@pytest.mark.parametrize("kind", ["exp", "halfn"])
def test_rate_of_a_known_mixture(one_torch_thread, method, eps, kind):
    # measured (5 seeds x exp/gamma2/halfn, n=2000): gmm |err| <= 0.008, bmm <= 0.020; asserted with a margin
    for seed in range(3):
        est = estimate_corruption(synthetic(kind, eps, 2000, seed), method)
        assert est.two_components, est.reason
        assert abs(est.rate - eps) <= 0.03, (seed, est.rate)
        # the posterior separates the two groups: the clean block mostly clean, the corrupted block mostly not.
        # Measured over 40 seeds (torch 2.14): clean block >= 0.97, corrupted block <= 0.106 (gmm, exp at 10 %, whose
        # corrupted tail reaches into the clean mode); these 3 seeds read 0.1056 there on torch 2.6's draws
        n_bad = round(eps * 2000)
        assert est.clean_posterior[: 2000 - n_bad].mean() > 0.95
        assert est.clean_posterior[2000 - n_bad:].mean() < 0.15


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["exp", "gamma2", "halfn"])
@pytest.mark.parametrize("n", [1000, 6000])
def test_clean_scores_give_a_rate_near_zero(one_torch_thread, method, kind, n):
    for seed in range(3):
        est = estimate_corruption(synthetic(kind, 0.0, n, seed), method)
        assert est.rate <= 0.03, (seed, est.rate, est.reason)


@pytest.mark.xfail(strict=True, reason="known defect (issue 15): the gmm's model selection accepts a second "
                   "component on some draws of a few hundred clean half-normal scores (measured: 8 of 40 seeds)")
def test_clean_half_normal_scores_of_a_few_hundred_read_near_zero_on_every_draw(one_torch_thread):
    """A reviewer's sweep past the 3 seeds above: 500 clean half-normal scores (the shape of |residual|) read above
    3 % in 8 of 40 seeds, up to 0.49. In log space a wide low tail and a narrow 'high' part of weight just under 1/2
    pass both Ashman's D >= 2 (2.0-2.4 here) and the majority rule. Pinned until the model selection changes and the
    benchmarks are re-run; the docs' corruption-rate page says so."""
    rates = [estimate_corruption(synthetic("halfn", 0.0, 500, seed)).rate for seed in range(40)]
    assert max(rates) <= 0.03, sorted(rates)[-8:]


# the seeds of the sweep above whose 500 clean half-normal scores read above 3 % (measured 2026-12-06)
SPURIOUS_HALFN_SEEDS = (2, 13, 15, 29, 32, 34, 35, 37)


def test_the_spurious_splits_of_small_clean_data_are_flagged_barely_separated(one_torch_thread):
    """The estimate stays (refusing these fits cost real readings), but the result says it rests on a barely separated
    split: every draw of the xfail's sweep that reads above 3 % is flagged, with its Ashman's D under 2 + 8/sqrt(500);
    the draws that read 0 are not."""
    ests = {seed: estimate_corruption(synthetic("halfn", 0.0, 500, seed)) for seed in range(40)}
    spurious = tuple(seed for seed, est in ests.items() if est.rate > 0.03)
    assert spurious == SPURIOUS_HALFN_SEEDS
    assert [ests[s].barely_separated for s in spurious] == [True] * 8
    assert all(2.0 <= ests[s].ashman_d < ests[s].barely_separated_below for s in spurious)
    assert ests[2].barely_separated_below == pytest.approx(2 + 8 / math.sqrt(500))
    assert not any(est.barely_separated for seed, est in ests.items() if seed not in spurious)


@pytest.mark.parametrize("kind", ["exp", "gamma2", "halfn"])
@pytest.mark.parametrize("n", [500, 2000])
def test_a_well_separated_mixture_is_not_flagged(one_torch_thread, kind, n):
    for seed in range(3):
        est = estimate_corruption(synthetic(kind, 0.2, n, seed))
        assert est.two_components and abs(est.rate - 0.2) < 0.03, (seed, est.rate)
        assert not est.barely_separated, (seed, est.ashman_d)


def _ref_barely_separated(est) -> bool:
    """Plain Python: a gmm fit the rules accepted (the plain one or the squared-error restart; not a label
    estimator's correction) with Ashman's D below 2 + 8/sqrt(m), m the scores fitted."""
    if est.method != "gmm" or est.reason not in ("two components", "two components (EM restarted from the top scores)"):
        return False
    m = est.n - est.nonfinite - est.far_out - est.unlabelled
    return est.ashman_d < 2.0 + 8.0 / math.sqrt(m)


def fitted_clean_losses(seed: int = 1) -> torch.Tensor:
    """The losses of a model that has fitted its clean samples: 168 clean ones spread over orders of magnitude
    (log-normal around 1e-5, sigma 2.5; 30 of them exactly 0, as float32 losses underflow), then 72 corrupted ones
    (30 %) at 2-20."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.exp(math.log(1e-5) + 2.5 * torch.randn(168, generator=g, dtype=torch.float64))
    clean[:30] = 0.0
    return torch.cat([clean, 2 + 18 * torch.rand(72, generator=g, dtype=torch.float64)])


def test_gmm_keeps_the_start_of_highest_likelihood(one_torch_thread, monkeypatch):
    """EM from the halves stops in a worse optimum on such losses: its low component holds the zeros and the lowest
    losses, its "high" one the rest of the clean spread with the corrupted losses, and the estimate read 0.50 for 0.30
    (ITLM's later rounds re-estimated read 0.49, or 0 where that half was a majority). EM from the top quarter
    reaches the split at the gap. The estimate is the fit of highest likelihood over the three starts (a later
    start's only where it gains more than one nat), checked against the three fits made by hand."""
    scores = fitted_clean_losses()
    x = gmm_transform(torch.sort(scores).values)
    m = x.numel()
    fits = [_fit_gmm(x, init, 500, 1e-8) for init in (_quantile_init(x), _top_split_init(m, 0.25),
                                                       _top_split_init(m, 0.125))]
    best = fits[0]
    for fit in fits[1:]:
        if fit["loglik"] > best["loglik"] + 1.0:
            best = fit
    assert best is not fits[0] and best["loglik"] > fits[0]["loglik"] + 50  # not a near tie
    assert fits[0]["weights"][1] > 0.45  # the halves' optimum: half of the scores "high"
    est = estimate_corruption(scores)
    assert est.reason == "two components" and est.rate == pytest.approx(72 / 240, abs=1e-9)
    assert est.weights == pytest.approx(best["weights"], abs=1e-12) and est.means == pytest.approx(best["means"])
    # the defect, with the halves alone
    monkeypatch.setattr(estimation, "_TOP_STARTS", ())
    halves = estimate_corruption(scores)
    assert halves.rate > 0.45


def _generic_fit(method: str = "gmm"):
    """The generic EM on an m x 2 responsibility matrix (``_fit_gmm`` and ``_fit_bmm`` until 2026-12-06),
    from the benchmark that times the two (``benchmarks/estimator_speed.py``)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    return getattr(harness.load_module("estimator_speed"), f"generic_fit_{method}")


@pytest.mark.parametrize("case", ["exp 30 %", "clean half-normal 500", "fitted clean losses", "squared residuals",
                                  "a few far-out", "glitched meter, halves only", "clean exp 3000"])
def test_whole_estimates_with_the_1d_em_equal_the_generic_em(one_torch_thread, monkeypatch, case):
    """``_fit_gmm`` runs the generic EM on 1-D vectors (4-6x faster): every path of the estimate -- the three starts,
    the squared-error restart, the refit without far-out scores, a refused clean fit -- gives what the generic EM
    gives, to 1e-12, with the same reason and iterations."""
    g = torch.Generator().manual_seed(7)
    scores, kw = {
        "exp 30 %": (synthetic("exp", 0.3, 1000, 2), {}),
        "clean half-normal 500": (synthetic("halfn", 0.0, 500, 3), {}),
        "fitted clean losses": (fitted_clean_losses(), {}),
        "squared residuals": (torch.cat([torch.randn(240, dtype=torch.float64, generator=g),
                                         4 + torch.randn(60, dtype=torch.float64, generator=g)]) ** 2,
                              {"squared_errors": True}),
        "a few far-out": (torch.cat([synthetic("exp", 0.2, 995, 4), torch.full((5,), 1e8, dtype=torch.float64)]), {}),
        "glitched meter, halves only": (_glitched_meter_losses()[0], {}),
        "clean exp 3000": (synthetic("exp", 0.0, 3000, 6), {}),
    }[case]
    if case == "glitched meter, halves only":  # the refit without the far-out scores (see the test below)
        monkeypatch.setattr(estimation, "_TOP_STARTS", ())
    new = estimate_corruption(scores, **kw)
    monkeypatch.setattr(estimation, "_fit_gmm", _generic_fit())
    old = estimate_corruption(scores, **kw)
    assert (new.reason, new.n_iter, new.far_out) == (old.reason, old.n_iter, old.far_out)
    assert new.rate == pytest.approx(old.rate, abs=1e-12)
    assert torch.allclose(new.clean_posterior, old.clean_posterior, rtol=0, atol=1e-12)
    assert new.means == pytest.approx(old.means, abs=1e-9) and new.weights == pytest.approx(old.weights, abs=1e-12)
    assert new.reason == {"exp 30 %": "two components", "clean half-normal 500": "one component (separation)",
                          "fitted clean losses": "two components",
                          "squared residuals": "two components (EM restarted from the top scores)",
                          "a few far-out": "two components", "clean exp 3000":
                          "one component (high component is the majority)"}.get(case, new.reason)
    assert (new.far_out > 0) == (case in ("a few far-out", "glitched meter, halves only"))
    assert case != "glitched meter, halves only" or "far-out scores were counted" in new.reason


@pytest.mark.parametrize("case", ["exp 30 %", "half-normal 10 %", "clean half-normal 500", "fitted clean losses",
                                  "a few far-out", "glitched meter", "clean exp 3000"])
def test_whole_bmm_estimates_with_the_1d_em_equal_the_generic_em(one_torch_thread, monkeypatch, case):
    """``_fit_bmm`` runs the generic Beta EM on 1-D vectors: the whole estimate -- two components, a refused clean fit
    (up to ``max_iter`` iterations), a few far-out scores left out -- gives what the generic EM gives, to 1e-12, with
    the same reason and iterations."""
    scores = {
        "exp 30 %": synthetic("exp", 0.3, 1000, 2),
        "half-normal 10 %": synthetic("halfn", 0.1, 2000, 8),
        "clean half-normal 500": synthetic("halfn", 0.0, 500, 3),
        "fitted clean losses": fitted_clean_losses(),
        "a few far-out": torch.cat([synthetic("exp", 0.2, 995, 4), torch.full((5,), 1e8, dtype=torch.float64)]),
        "glitched meter": _glitched_meter_losses()[0],
        "clean exp 3000": synthetic("exp", 0.0, 3000, 6),
    }[case]
    new = estimate_corruption(scores, "bmm")
    monkeypatch.setattr(estimation, "_fit_bmm", _generic_fit("bmm"))
    old = estimate_corruption(scores, "bmm")
    assert (new.reason, new.n_iter, new.far_out, new.converged) == (old.reason, old.n_iter, old.far_out, old.converged)
    assert new.rate == pytest.approx(old.rate, abs=1e-12)
    assert torch.allclose(new.clean_posterior, old.clean_posterior, rtol=0, atol=1e-12)
    assert new.means == pytest.approx(old.means, abs=1e-9) and new.weights == pytest.approx(old.weights, abs=1e-12)
    assert new.stds == pytest.approx(old.stds, abs=1e-9)
    # the cases reach the paths they are named for
    assert (new.rate > 0.05) == (case in ("exp 30 %", "half-normal 10 %", "a few far-out", "glitched meter"))
    assert (new.far_out > 0) == (case == "a few far-out")  # the glitched meter's bmm splits without a refit


@pytest.mark.parametrize("method", METHODS)
def test_an_emptied_component_ends_em_as_the_generic_em_does(method):
    """A component with no responsibility left (here the start's) ends EM after its M-step, with the one-component fit
    and a NaN mean for the empty one, as the generic EM's 0/0 gives; the 1-D gmm EM divided by zero instead."""
    x = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    start = torch.zeros(50, 2, dtype=torch.float64)
    start[:, 0] = 1.0
    fit = _fit_gmm if method == "gmm" else _fit_bmm
    new, old = fit(x, start.clone(), 10, 1e-8), _generic_fit(method)(x, start.clone(), 10, 1e-8)
    assert (new["n_iter"], new["converged"], new["loglik"]) == (old["n_iter"], old["converged"], old["loglik"]) == (
        1, False, -math.inf)
    assert new["weights"] == old["weights"] == [1.0, 0.0]
    assert new["means"][0] == pytest.approx(old["means"][0]) and old["means"][0] == pytest.approx(0.5)
    assert math.isnan(new["means"][1])
    assert math.isnan(old["means"][1]) and math.isnan(new["vars"][1]) and math.isnan(old["vars"][1])
    assert torch.equal(new["resp"], start)


def _restart_case():
    """Clean squared residuals of 60 samples (seed 132 of 0-399, the first the restart splits) that the restart splits
    with D 2.62, in [2.5, 2 + 8/sqrt(60) = 3.03)."""
    g = torch.Generator().manual_seed(132)
    return estimate_corruption(torch.randn(60, dtype=torch.float64, generator=g) ** 2, squared_errors=True)


def test_barely_separated_matches_plain_python_reference(one_torch_thread):
    """The property against the formula on every kind of result: spurious and right splits, one component, the bmm,
    non-finite and far-out scores (m counts neither: 1,500 NaN beside 500 scores leave the bar at 2.36, where n would
    put it at 2.18, under seed 37's D 2.27), the squared-error restart and the label estimators (never flagged: they
    use the split for a correction only)."""
    halfn = synthetic("halfn", 0.0, 500, 37)
    far = torch.cat([halfn, torch.tensor([1e6], dtype=torch.float64)])
    nans = torch.cat([halfn, torch.full((1500,), math.nan, dtype=torch.float64)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_nans = estimate_corruption(nans)
        cases = [estimate_corruption(synthetic("halfn", 0.0, 500, s)) for s in (0, 2, 15)] + [
            estimate_corruption(synthetic("exp", 0.2, 300, 0)), estimate_corruption(halfn, "bmm"),
            estimate_corruption(far), with_nans, _restart_case()]
        labels = torch.arange(500) % 3
        predicted = labels.clone()
        predicted[:40] = (predicted[:40] + 1) % 3
        cases += [estimate_corruption_from_predictions(halfn, labels, predicted),
                  estimate_corruption_from_class_floor(halfn, labels, predicted)]
    assert cases[5].far_out == 1 and with_nans.nonfinite == 1500
    assert cases[7].reason == "two components (EM restarted from the top scores)" and 2.5 < cases[7].ashman_d < 3.03
    assert cases[8].two_components and cases[9].two_components  # the mixture's split, as the plain gmm's
    got = [est.barely_separated for est in cases]
    assert got == [_ref_barely_separated(est) for est in cases]
    assert got == [False, True, True, False, False, True, True, True, False, False]
    assert with_nans.rate == pytest.approx((1500 + 500 * estimate_corruption(halfn).rate) / 2000)  # unchanged


def squared_residuals(n: int, seed: int, eps: float = 0.2, shift: float = 4.0) -> torch.Tensor:
    """A regression's squared errors: clean ones ~ N(0, 1)^2, a share ``eps`` ~ (shift + N(0, 1))^2."""
    g = torch.Generator().manual_seed(seed)
    n_bad = round(eps * n)
    return torch.cat([torch.randn(n - n_bad, dtype=torch.float64, generator=g) ** 2,
                      (shift + torch.randn(n_bad, dtype=torch.float64, generator=g)) ** 2])


def _ref_loglik(x: list[float], w: list[float], mu: list[float], var: list[float]) -> float:
    return sum(math.log(sum(w[k] * math.exp(-0.5 * (v - mu[k]) ** 2 / var[k]) / math.sqrt(2 * math.pi * var[k])
                            for k in range(2))) for v in x)


def test_squared_errors_restart_matches_plain_python_reference():
    """The whole decision in plain Python, on squared residuals whose first fit rule (d) refuses: EM from the halves
    passes BIC, D >= 2 and the order of the means but its high component is the majority, and neither start from the
    top scores beats its likelihood by a nat; of those two (the restart), the fit of highest likelihood passing BIC,
    D >= 2.5, the order and the minority rule gives the rate and the posteriors. Fixed iteration counts (tol=0) so
    both run the same EM. Seed 10: on seed 0 the starts from the top find the split themselves now."""
    iters = 60
    xs = torch.sort(squared_residuals(200, seed=10)).values
    x = gmm_transform(xs).tolist()
    n = len(x)
    mean = sum(x) / n
    var1 = sum((v - mean) ** 2 for v in x) / n
    bic1 = -2 * sum(-0.5 * (math.log(2 * math.pi * var1) + (v - mean) ** 2 / var1) for v in x) + 2 * math.log(n)

    def fit(n_high: int) -> dict:
        w, mu, var, post0 = _ref_gmm(x, [1.0] * (n - n_high) + [0.0] * n_high, iters)
        ll = _ref_loglik(x, w, mu, var)
        return dict(w=w, mu=mu, d=math.sqrt(2) * abs(mu[1] - mu[0]) / math.sqrt(var[0] + var[1]), ll=ll,
                    bic=-2 * ll + 5 * math.log(n), post0=post0)

    first = fit(n - n // 2)
    tops = [fit(max(1, round(share * n))) for share in (0.25, 0.125)]
    assert all(f["ll"] <= first["ll"] + 1.0 for f in tops)  # the halves' fit stands
    assert first["bic"] < bic1 and first["d"] >= 2 and first["mu"][1] > first["mu"][0]
    assert first["w"][1] >= first["w"][0]  # refused by rule (d) alone
    passing = [f for f in tops
               if f["bic"] < bic1 and f["d"] >= 2.5 and f["mu"][1] > f["mu"][0] and f["w"][1] < f["w"][0]]
    assert passing
    best = max(passing, key=lambda f: f["ll"])
    est = estimate_corruption(xs, "gmm", max_iter=iters, tol=0.0, squared_errors=True)
    assert est.reason == "two components (EM restarted from the top scores)" and est.two_components
    post0 = _ref_monotone(x, best["post0"], *best["mu"])  # the top 4 scores' posteriors rose again (0.017-0.024)
    np.testing.assert_allclose(est.clean_posterior.numpy(), post0, rtol=0, atol=1e-9)
    assert est.rate == pytest.approx(1 - sum(post0) / n, abs=1e-9)
    assert est.weights == pytest.approx(tuple(best["w"]), abs=1e-9) and est.ashman_d == pytest.approx(best["d"])
    # off (the default), the same scores are refused by rule (d): an estimate of 0
    off = estimate_corruption(xs, "gmm", max_iter=iters, tol=0.0)
    assert off.rate == 0.0 and off.reason == "one component (high component is the majority)"


def test_squared_residuals_with_shifted_targets_read_near_their_rate(one_torch_thread):
    """A regression's squared errors, 20 % of targets shifted by 4 SD: rule (d) refused the first fit on 5 of these 8
    seeds (an estimate of 0) while EM started from the halves only; from the top quarter and eighth as well, on seed 1
    alone. With ``squared_errors=True`` every seed reads 0.14-0.19."""
    plain = [estimate_corruption(squared_residuals(350, seed)) for seed in range(8)]
    assert [seed for seed, e in enumerate(plain) if e.rate == 0.0] == [1]  # the defect left, without the restart
    ests = [estimate_corruption(squared_residuals(350, seed), squared_errors=True) for seed in range(8)]
    assert ests[1].reason == "two components (EM restarted from the top scores)"  # the case is exercised
    assert all(abs(e.rate - 0.2) <= 0.07 for e in ests), [(round(e.rate, 3), e.reason) for e in ests]


@pytest.mark.parametrize("n", [200, 2000, 6000])
def test_clean_squared_residuals_read_near_zero_with_the_restart(one_torch_thread, n):
    for seed in range(3):
        est = estimate_corruption(squared_residuals(n, seed, eps=0.0), squared_errors=True)
        assert est.rate <= 0.03, (seed, est.rate, est.reason)


def test_squared_errors_is_the_gmms_and_a_bool():
    xs = squared_residuals(200, seed=0)
    with pytest.raises(ValueError, match=r"`squared_errors=True` is the gmm's restart: `method` must be 'gmm' .* "
                                         r"got 'bmm'"):
        estimate_corruption(xs, "bmm", squared_errors=True)
    with pytest.raises(ValueError, match=r"`squared_errors` must be True or False, got 'yes'"):
        estimate_corruption(xs, squared_errors="yes")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("zeros", [0, 100, 300])
def test_a_spike_of_zero_losses_stays_clean(method, zeros):
    """Losses that underflowed to exactly 0 (up to 30 % of the data here) must not be split off as a mode."""
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.zeros(zeros, dtype=torch.float64), 0.1 * torch.rand(800 - zeros, dtype=torch.float64,
                   generator=g), 2.0 + torch.rand(200, dtype=torch.float64, generator=g)])
    est = estimate_corruption(s, method)
    assert est.rate == pytest.approx(0.2, abs=0.01), est.reason


def test_rate_is_one_minus_mean_clean_posterior():
    s = synthetic("exp", 0.25, 1000, 0)
    s[:7] = math.nan
    with pytest.warns(RuntimeWarning):
        est = estimate_corruption(s)
    assert est.rate == pytest.approx(1.0 - est.clean_posterior.mean().item(), abs=1e-12)
    assert 0.0 <= est.clean_posterior.min() and est.clean_posterior.max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_result_depends_only_on_the_multiset(method):
    s = synthetic("exp", 0.3, 1500, 1)
    a = estimate_corruption(s, method)
    perm = torch.randperm(s.numel(), generator=torch.Generator().manual_seed(9))
    b = estimate_corruption(s[perm], method)
    assert a.rate == b.rate
    assert torch.equal(b.clean_posterior, a.clean_posterior[perm])
    assert (a.means, a.stds, a.weights, a.n_iter) == (b.means, b.stds, b.weights, b.n_iter)


def test_gmm_is_scale_and_shift_free():
    s = synthetic("gamma2", 0.2, 1500, 2)
    a = estimate_corruption(s)
    b = estimate_corruption(7.5 * s - 3.0)
    assert b.rate == pytest.approx(a.rate, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_scores_whose_span_overflows_float64_give_the_rescaled_estimate(method):
    """A reviewer's case: scores spread over +-1e308 made ``s - min(s)`` infinite, the fit NaN, and the estimate a
    silent 0 ("one component (BIC)"). Both transforms are scale-free, so such scores now give the estimate of the
    same scores rescaled."""
    s = synthetic("gamma2", 0.2, 1500, 2)
    s = s - (s.max() + s.min()) / 2
    big = s * (1.5e308 / float(s.abs().max()))
    assert not math.isfinite(float(big.max() - big.min())) and bool(torch.isfinite(big).all())
    a, b = estimate_corruption(s, method), estimate_corruption(big, method)
    assert b.means is not None and all(math.isfinite(v) for v in b.means)
    assert b.reason == a.reason and b.rate == pytest.approx(a.rate, abs=1e-9) and a.rate > 0.1
    assert torch.allclose(b.clean_posterior, a.clean_posterior, atol=1e-9)


def test_float32_and_integer_scores_are_accepted():
    s = synthetic("exp", 0.3, 1000, 5)
    assert estimate_corruption(s.float()).rate == pytest.approx(estimate_corruption(s).rate, abs=1e-3)
    est = estimate_corruption(torch.tensor([0] * 60 + [9] * 40))
    assert est.clean_posterior.dtype == torch.float64 and 0.0 <= est.rate < 1.0


# ---------------------------------------------------------------- degenerate inputs


@pytest.mark.parametrize("method", METHODS)
def test_all_equal_scores_give_zero_silently(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = estimate_corruption(torch.full((500,), 0.7), method)
    assert est.rate == 0.0 and est.reason == "all equal" and not est.two_components
    assert torch.equal(est.clean_posterior, torch.ones(500, dtype=torch.float64))


@pytest.mark.parametrize("method", METHODS)
def test_too_few_samples_warns_and_gives_zero(method):
    with pytest.warns(RuntimeWarning, match=r"only 5 finite scores, fewer than the 20 a mixture needs \(its `min_samples`\)"):
        est = estimate_corruption(torch.tensor([0.1, 0.2, 0.1, 5.0, 6.0]), method)
    assert est.rate == 0.0 and est.reason == "too few samples"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = estimate_corruption(torch.empty(0), method)
    assert empty.rate == 0.0 and empty.n == 0 and empty.clean_posterior.numel() == 0


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_scores_count_as_corrupted(method):
    s = synthetic("exp", 0.2, 1000, 6)
    bad_at = torch.tensor([3, 500, 900, 999, 10])
    s_bad = s.clone()
    s_bad[bad_at] = torch.tensor([math.nan, math.inf, -math.inf, math.nan, math.inf], dtype=torch.float64)
    keep = torch.ones(1000, dtype=torch.bool)
    keep[bad_at] = False
    with pytest.warns(RuntimeWarning, match="5 of 1000 scores are NaN or infinite") as rec:
        est = estimate_corruption(s_bad, method)
    assert len([w for w in rec if issubclass(w.category, RuntimeWarning)]) == 1
    ref = estimate_corruption(s[keep], method)  # the fit sees only the finite scores
    assert est.nonfinite == 5 and est.n == 1000
    assert torch.all(est.clean_posterior[bad_at] == 0)
    assert torch.equal(est.clean_posterior[keep], ref.clean_posterior)
    assert est.rate == pytest.approx((5 + ref.rate * 995) / 1000, abs=1e-12)


def test_all_nonfinite():
    with pytest.warns(RuntimeWarning) as rec:
        est = estimate_corruption(torch.full((30,), math.nan))
    assert est.rate == 1.0 and est.nonfinite == 30
    assert any("30 of 30 scores are NaN or infinite" in str(w.message) for w in rec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "foo"}, "`method` must be 'gmm' or 'bmm', got 'foo'."),
        ({"max_iter": 0}, "`max_iter` must be an integer >= 1, got 0."),
        ({"max_iter": 2.5}, "`max_iter` must be an integer >= 1, got 2.5."),
        ({"tol": -1.0}, "`tol` must be a number >= 0, got -1.0."),
        ({"tol": math.nan}, "`tol` must be a number >= 0, got nan."),
        ({"min_samples": 1}, "`min_samples` must be an integer >= 2, got 1."),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        estimate_corruption(torch.rand(50), **kwargs)


def test_bad_scores():
    with pytest.raises(ValueError, match=re.escape("`scores` must be a 1-D tensor with one score per sample, got "
                                                   "shape (10, 2).")):
        estimate_corruption(torch.rand(10, 2))
    with pytest.raises(ValueError, match=re.escape("`scores` must be a torch.Tensor or a NumPy array, got list.")):
        estimate_corruption([0.1, 0.2])


def _noisy_labels(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and predictions of ``n`` samples, the last fifth of them disagreeing (as ``synthetic``'s high scores)."""
    labels = torch.arange(n) % 5
    predicted = labels.clone()
    predicted[n - n // 5:] = (labels[n - n // 5:] + 1) % 5
    return labels, predicted


#: the estimators that read per-sample scores, called on scores (and, for the label ones, labels and predictions)
SCORE_ESTIMATORS = {
    "mixture": lambda s, y, p, **kw: estimate_corruption(s, **kw),
    "disagreement": lambda s, y, p, **kw: estimate_corruption_from_predictions(s, y, p, **kw),
    "class_floor": lambda s, y, p, **kw: estimate_corruption_from_class_floor(s, y, p, **kw),
}


@pytest.mark.parametrize("estimator", sorted(SCORE_ESTIMATORS))
@pytest.mark.parametrize("scalar", [np.float64(0.5), np.array(0.5), np.float32(2.0)], ids=["np.float64", "0-d", "f32"])
def test_a_numpy_scalar_is_refused_as_a_0d_tensor_is(estimator, scalar):
    """A NumPy scalar or 0-d array was made 1-D by the conversion and read as one sample ("too few samples", rate 0,
    a warning about 1 finite score) where a 0-d tensor is refused; the label estimators' shape message said (1,)."""
    label = np.asarray(np.int64(1))
    with pytest.raises(ValueError, match=re.escape("`scores` must be a 1-D tensor with one score per sample, got "
                                                   "shape ().")):
        SCORE_ESTIMATORS[estimator](scalar, label, label)


@pytest.mark.parametrize("estimator", sorted(SCORE_ESTIMATORS))
@pytest.mark.parametrize("convert", [lambda s: s.to_sparse(), lambda s: s.numpy().astype(np.longdouble)],
                         ids=["sparse tensor", "longdouble array"])
def test_sparse_tensors_and_longdouble_arrays_give_the_dense_float64_estimate(estimator, convert):
    """A sparse tensor ended in torch's "Could not run 'aten::ne.Scalar' with arguments from the 'SparseCPU' backend"
    and a NumPy longdouble array in "can't convert np.ndarray of type numpy.longdouble", naming no argument."""
    s = synthetic("exp", 0.2, 400, 3)
    labels, predicted = _noisy_labels(400)
    fn = SCORE_ESTIMATORS[estimator]
    a, b = fn(s, labels, predicted), fn(convert(s), labels, predicted)
    assert a.rate > 0.1 and b.rate == a.rate and torch.equal(b.clean_posterior, a.clean_posterior)


@pytest.mark.parametrize("estimator", sorted(SCORE_ESTIMATORS))
@pytest.mark.parametrize("kwargs", [{"min_samples": np.int64(300)}, {"min_samples": np.int32(500)}])
def test_numpy_integers_are_integers(estimator, kwargs):
    """``min_samples=np.int64(300)`` was refused with "`min_samples` must be an integer >= 2, got np.int64(300)"."""
    s = synthetic("exp", 0.2, 400, 4)
    labels, predicted = _noisy_labels(400)
    fn = SCORE_ESTIMATORS[estimator]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 400 < 500: "too few samples", as with the int
        a = fn(s, labels, predicted, **{k: int(v) for k, v in kwargs.items()})
        b = fn(s, labels, predicted, **kwargs)
    assert b.rate == a.rate and b.reason == a.reason


def test_numpy_max_iter_is_an_integer():
    s = synthetic("exp", 0.2, 400, 4)
    a, b = estimate_corruption(s, max_iter=7), estimate_corruption(s, max_iter=np.int32(7))
    assert b.n_iter == a.n_iter == 7 and b.rate == a.rate


@pytest.mark.parametrize("outlier", [1e15, 1e30, 1e300])
def test_bmm_keeps_a_far_top_score_inside_the_open_interval(outlier):
    """One score 1e15 times the lower quartile's: the offset fell below the rounding of the maximum, which normalised
    to exactly 1, the Beta log-density was infinite, and the estimate reported NaN means, variances and BIC as
    "one component (BIC)". The transform now stays in (0, 1) and every fitted field is a number."""
    s = synthetic("exp", 0.2, 400, 5)
    s[7] = outlier
    x = bmm_transform(torch.sort(s).values)
    assert 0.0 < float(x.min()) and float(x.max()) < 1.0
    est = estimate_corruption(s, "bmm")
    fields = [*est.means, *est.stds, *est.weights, est.ashman_d, est.bic1, est.bic2]
    assert all(math.isfinite(v) for v in fields), fields
    assert est.rate == pytest.approx(1.0 - float(est.clean_posterior.mean()), abs=1e-12)


# ---------------------------------------------------------------- real losses


def test_cross_entropy_on_digits_with_30_percent_flipped_labels(one_torch_thread):
    """A logistic regression fitted on the noisy labels; per-sample CE against those labels.
    Measured over seeds 0-2: gmm 0.300-0.308, bmm 0.348-0.363."""
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    assert sklearn
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(0)
    n = len(y)
    flip = rng.permutation(n)[: round(0.3 * n)]
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 10, len(flip))) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; the losses are what matters
        clf = LogisticRegression(C=1.0, max_iter=200).fit(x, noisy)
    ce = torch.from_numpy(-clf.predict_log_proba(x)[np.arange(n), noisy])
    for method in METHODS:
        est = estimate_corruption(ce, method)
        assert abs(est.rate - 0.3) <= 0.1, (method, est.rate)
        # the posterior ranks the flipped samples as corrupted
        is_bad = torch.zeros(n, dtype=torch.bool)
        is_bad[torch.from_numpy(flip)] = True
        assert est.clean_posterior[is_bad].mean() < 0.3 < 0.7 < est.clean_posterior[~is_bad].mean()


def test_estimate_does_not_depend_on_the_thread_count():
    """Torch splits a CPU sum of 32k+ elements among its threads, so the EM's sums -- and the estimate's last bits --
    depended on the thread count (300k scores: the 16th digit of `rate` on 1 and 2 threads), which Lightning's DDP
    sets per process from the world size. The estimate is now made on one thread: the same bits on any count."""
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.empty(240_000, dtype=torch.float64).exponential_(10.0, generator=g),
                   2.0 + 0.5 * torch.randn(60_000, dtype=torch.float64, generator=g).abs()])
    labels = torch.randint(0, 10, (s.numel(),), generator=g)
    predicted = torch.where(s > 1.0, (labels + 1) % 10, labels)
    predicted[:3000] = (labels[:3000] + 2) % 10  # a training error among the clean samples: e_c enters the estimate
    threads = torch.get_num_threads()
    out = []
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            a, b = estimate_corruption(s), estimate_corruption_from_predictions(s, labels, predicted)
            assert torch.get_num_threads() == n_threads  # restored
            out.append((a.rate, a.means, a.clean_posterior, b.rate))
    finally:
        torch.set_num_threads(threads)
    assert out[0][0] == out[1][0] and out[0][1] == out[1][1] and out[0][3] == out[1][3]
    assert torch.equal(out[0][2], out[1][2])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_warnings_name_the_callers_line(n_threads):
    """The one-thread wrapper of `estimate_corruption` added a frame: its warnings named the wrapper's line in
    estimation.py instead of the caller's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with pytest.warns(RuntimeWarning) as rec:
            estimate_corruption(torch.tensor([1.0, math.nan] * 5))
    finally:
        torch.set_num_threads(threads)
    assert len(rec) == 2 and all(w.filename == __file__ for w in rec), [w.filename for w in rec]


def _ref_far_out(scores: list[float]) -> int:
    """Tukey's far-out fence in plain Python: log(s - min + delta), delta half the lower quartile of the positive
    differences, quartiles by linear interpolation (torch.quantile's), count above q75 + 3 IQR; 0 for IQR 0."""
    def quantile(v: list[float], q: float) -> float:
        v = sorted(v)
        pos = q * (len(v) - 1)
        lo = math.floor(pos)
        return v[lo] + (pos - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])

    z = [s - min(scores) for s in scores]
    delta = 0.5 * quantile([v for v in z if v > 0], 0.25)
    t = [math.log(v + delta) for v in z]
    q25, q75 = quantile(t, 0.25), quantile(t, 0.75)
    return 0 if not q75 > q25 else sum(v > q75 + 3.0 * (q75 - q25) for v in t)


@pytest.mark.parametrize("seed", range(4))
def test_far_out_matches_plain_python_reference(seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.cat([torch.rand(300, dtype=torch.float64, generator=g),
                   10.0 ** (1 + 6 * torch.rand(seed + 1, dtype=torch.float64, generator=g))])
    xs = torch.sort(s).values
    assert far_out(xs) == _ref_far_out(xs.tolist()) == seed + 1


def _far_case(big: float | None) -> torch.Tensor:
    """1,000 scores, 20 % corrupted (clean U(0, 1), corrupted 3 + U(0, 1)); the first clean one replaced by ``big``."""
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.rand(800, dtype=torch.float64, generator=g),
                   3.0 + torch.rand(200, dtype=torch.float64, generator=g)])
    if big is not None:
        s[0] = big
    return s


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("big", [30.0, 1e6, 1e12])
def test_one_far_out_score_is_counted_corrupted_and_leaves_the_estimate_as_it_was(method, big):
    """One score far above the rest (a diverged loss) took a component of its own: the gmm read 0 at 1e6, the bmm
    at 30. It is now left out of the fit and counted as corrupted."""
    base = estimate_corruption(_far_case(None), method)
    est = estimate_corruption(_far_case(big), method)
    assert est.far_out == 1 and est.two_components, est.reason
    assert est.clean_posterior[0] == 0.0
    # the other 999 fitted as before, up to the one score that left the clean part
    assert est.rate == pytest.approx(base.rate, abs=0.002)
    assert est.rate == pytest.approx(1.0 - est.clean_posterior.mean().item(), abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_far_out_scores_on_clean_data_count_each_and_nothing_else(method):
    s = torch.cat([synthetic("exp", 0.0, 997, 1), torch.tensor([1e4, 1e7, 1e9], dtype=torch.float64)])
    assert estimate_corruption(s[:997], method).rate == 0.0
    est = estimate_corruption(s, method)
    assert est.far_out == 3 and not est.two_components
    assert est.rate == pytest.approx(3 / 1000, abs=1e-12)
    assert torch.equal(est.clean_posterior[-3:], torch.zeros(3, dtype=torch.float64))


def test_a_corrupted_mode_beyond_the_fence_is_fitted_not_left_out():
    """20 % of the scores at 2-3 among clean ones below 0.1 all lie beyond the fence: above 1 % of the scores, they
    are fitted (the rule leaves out a few extreme scores, never a mode)."""
    g = torch.Generator().manual_seed(0)
    s = torch.cat([0.1 * torch.rand(800, dtype=torch.float64, generator=g),
                   2.0 + torch.rand(200, dtype=torch.float64, generator=g)])
    assert far_out(torch.sort(s).values) == 200
    est = estimate_corruption(s)
    assert est.far_out == 0 and est.rate == pytest.approx(0.2, abs=0.01)


def _glitched_meter_losses() -> tuple[torch.Tensor, int]:
    """Squared errors of an untrained regression model on an energy table: a clean bulk, a wide low tail (readings
    glitched to 0, which the model happens to predict) and 133 readings of 9999 far above both (9 %)."""
    g = torch.Generator().manual_seed(0)
    bulk = torch.exp(6.6 + 0.3 * torch.randn(1200, dtype=torch.float64, generator=g))
    low = torch.exp(-2.0 + 8.0 * torch.rand(134, dtype=torch.float64, generator=g))
    glitch = torch.exp(14.4 + 0.01 * torch.randn(133, dtype=torch.float64, generator=g))
    return torch.cat([bulk, low, glitch]), 133


def test_many_far_out_scores_a_refused_fit_left_in_are_counted_and_the_rest_fitted(monkeypatch):
    """More than 1 % beyond the fence is fitted with the rest, as a corrupted mode must be; but where that fit finds
    one component (here, with EM from the halves, the low tail took the second one, D 1.0), the 9 % far out had read
    0 and a regression trained on readings of 9999 (a newcomer's energy table: test RMSE 876-894 kWh against 1.5-1.7
    at the true rate). They are counted as corrupted then, and the rest fitted again, as a plain reference does by
    hand. EM's starts from the top scores find that mode in the fit to all now; the refit stays for where none does."""
    s, n_glitch = _glitched_meter_losses()
    xs = torch.sort(s).values
    beyond = _ref_far_out(xs.tolist())
    assert beyond == n_glitch > 0.01 * s.numel()
    direct = estimate_corruption(s)
    assert direct.reason == "two components" and direct.far_out == 0
    assert direct.rate == pytest.approx(n_glitch / s.numel(), abs=1e-4)
    monkeypatch.setattr(estimation, "_TOP_STARTS", ())  # EM from the halves alone: the fit to all is refused
    est = estimate_corruption(s)
    rest = estimate_corruption(xs[: s.numel() - beyond])  # by hand: the scores below the fence alone
    assert est.far_out == beyond and est.n_fitted == s.numel() - beyond
    assert est.rate == pytest.approx((beyond + rest.rate * rest.n) / s.numel(), abs=1e-12)
    assert est.rate == pytest.approx(n_glitch / s.numel(), abs=1e-12)  # the rest is one mode
    assert torch.equal(est.clean_posterior[-n_glitch:], torch.zeros(n_glitch, dtype=torch.float64))
    assert est.reason.startswith(rest.reason) and "far-out scores were counted" in est.reason
    assert "(the fit to all: one component (separation))" in est.reason, est.reason
    # the same scores without the glitches: nothing is counted
    assert estimate_corruption(s[:-n_glitch]).rate == 0.0


def test_a_score_inside_the_far_out_fence_still_sets_the_bmms_scale():
    """The documented limit of the far-out rule (a newcomer found the docs' "both read 20 % now" held for uniform clean
    scores only): with exponential clean losses and the corrupted at 2-3, one score of 30 lies inside the fence and
    the bmm reads 0 while the gmm reads 20 %; one of 60 lies beyond it, and both read 20 %."""
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.empty(800, dtype=torch.float64).exponential_(10.0, generator=g),
                   2.0 + torch.rand(200, dtype=torch.float64, generator=g)])
    for big, bmm_rate, far in ((30.0, 0.0, 0), (60.0, 0.201, 1)):
        x = s.clone()
        x[0] = big
        b, gm = estimate_corruption(x, "bmm"), estimate_corruption(x, "gmm")
        assert (round(b.rate, 3), b.far_out) == (bmm_rate, far), big
        assert round(gm.rate, 2) == 0.2, big
