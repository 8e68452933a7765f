"""estimate_corruption_from_class_floor: against a plain-Python reference, label noise at one rate in every class
with hard classes (where it beats the disagreement estimate), noise in some classes only (its documented blind spot),
clean data, order independence, degenerate inputs and argument checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lit_robust import estimate_corruption_from_class_floor, estimate_corruption_from_predictions
from lit_robust.functional.estimation import label_clean_posterior


def _ref(scores: list[float], labels: list[int], predicted: list[int], q: float) -> float:
    """Slow, obvious: per given class (finite scores, >= 2 samples) the share of mispredictions, sorted; the q-th
    quantile by linear interpolation at position q (k - 1); non-finite scores counted as corrupted."""
    fin = [i for i, s in enumerate(scores) if math.isfinite(s)]
    rates = []
    for c in sorted({labels[i] for i in fin}):
        members = [i for i in fin if labels[i] == c]
        if len(members) >= 2:
            rates.append(sum(predicted[i] != c for i in members) / len(members))
    rates.sort()
    pos = q * (len(rates) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(rates) - 1)
    r = rates[lo] + (pos - lo) * (rates[hi] - rates[lo])
    return (len(scores) - len(fin) + r * len(fin)) / len(scores)


def noisy(n: int, eps: float, seed: int, hard: dict[int, float] | None = None, noisy_classes: int = 10,
          gap: float = 2.0):
    """10 classes; ``eps`` of the samples of the first ``noisy_classes`` classes get a wrong label (all 10: drawn
    uniformly among the other classes; fewer: the next class among those, so the others get no wrong labels at all);
    the model predicts the true class, except on a share ``hard[c]`` of the clean samples of class c. Scores:
    exponential, ``gap`` higher for the wrong labels (0: one mode, as under class-pair noise)."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 10, (n,), generator=g)
    bad = (torch.rand(n, generator=g) < eps) & (true < noisy_classes)
    if noisy_classes == 10:
        wrong = (true + torch.randint(1, 10, (n,), generator=g)) % 10
    else:
        wrong = (true + 1) % noisy_classes
    given = torch.where(bad, wrong, true)
    miss = torch.zeros(n, dtype=torch.bool)
    for c, share in (hard or {}).items():
        miss |= (true == c) & ~bad & (torch.rand(n, generator=g) < share)
    predicted = torch.where(miss, (true + 1) % 10, true)
    scores = torch.empty(n, dtype=torch.float64).exponential_(5.0, generator=g) + gap * bad
    return scores, given, predicted, bad


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5])
def test_matches_plain_python_reference(q):
    scores, given, predicted, _ = noisy(700, 0.2, 0, {3: 0.3, 6: 0.5})
    scores[:4] = math.nan
    given[4:6] = 11  # a class with 2 samples counts; one with 1 sample (below) does not
    given[6] = 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = estimate_corruption_from_class_floor(scores, given, predicted, quantile=q).rate
    assert got == pytest.approx(_ref(scores.tolist(), given.tolist(), predicted.tolist(), q), abs=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.45])
def test_one_rate_in_every_class_with_hard_classes(eps):
    # two hard classes (40 % and 25 % of their clean samples mispredicted) and scores in one mode: the disagreement
    # estimate adds their error (about +6 points), the low quantile of the class rates does not
    scores, given, predicted, bad = noisy(6000, eps, 1, {4: 0.4, 6: 0.25}, gap=0.0)
    true_eps = float(bad.float().mean())
    est = estimate_corruption_from_class_floor(scores, given, predicted)
    assert est.rate == pytest.approx(true_eps, abs=0.025)
    assert est.reason == "class floor (quantile 0.1 of 10 class rates)"
    dis = estimate_corruption_from_predictions(scores, given, predicted).rate
    if eps == 0.0:
        assert est.rate == 0.0 and dis > 0.05
    else:
        assert abs(dis - true_eps) > abs(est.rate - true_eps)


def test_noise_in_some_classes_only_is_missed():
    # the documented blind spot: 40 % class-pair noise among 5 of 10 classes (about 20 % overall) reads as 0
    scores, given, predicted, bad = noisy(6000, 0.4, 2, noisy_classes=5)
    assert float(bad.float().mean()) > 0.15
    assert estimate_corruption_from_class_floor(scores, given, predicted).rate == 0.0
    assert estimate_corruption_from_predictions(scores, given, predicted).rate == pytest.approx(
        float(bad.float().mean()), abs=0.02)


def test_result_depends_only_on_the_multiset():
    scores, given, predicted, _ = noisy(3000, 0.3, 3, {2: 0.2})
    a = estimate_corruption_from_class_floor(scores, given, predicted)
    perm = torch.randperm(3000, generator=torch.Generator().manual_seed(1))
    b = estimate_corruption_from_class_floor(scores[perm], given[perm], predicted[perm])
    assert a.rate == b.rate
    assert torch.equal(b.clean_posterior, a.clean_posterior[perm])
    assert torch.equal(a.clean_posterior, label_clean_posterior(scores, given, predicted, a.rate))


def test_degenerate_inputs():
    y = torch.arange(10) % 3
    with pytest.warns(RuntimeWarning, match="min_samples"):
        est = estimate_corruption_from_class_floor(torch.rand(10), y, (y + 1) % 3)
    assert est.rate == 0.0 and est.reason == "class floor (too few samples)"
    ones = torch.ones(40, dtype=torch.float64)
    with pytest.warns(UserWarning, match="no class holds 2 samples"):  # 40 classes of 1 sample
        est = estimate_corruption_from_class_floor(ones, torch.arange(40), torch.arange(40))
    assert est.rate == 0.0 and est.reason == "class floor (no class with 2 samples)"
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        est = estimate_corruption_from_class_floor(torch.full((30,), math.inf), torch.zeros(30, dtype=torch.long),
                                                   torch.zeros(30, dtype=torch.long))
    assert est.rate == 1.0
    empty = torch.zeros(0, dtype=torch.long)
    assert estimate_corruption_from_class_floor(torch.zeros(0), empty, empty).rate == 0.0


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((torch.rand(30), torch.rand(30), torch.zeros(30, dtype=torch.long)), {}, "`labels` must hold integer"),
    ((torch.rand(30), torch.zeros(30, dtype=torch.long), [0] * 30), {}, "`predicted` must be a torch.Tensor"),
    ((torch.rand(30), torch.zeros(29, dtype=torch.long), torch.zeros(30, dtype=torch.long)), {}, "must have the shape"),
    ((torch.rand(30), torch.zeros(30, dtype=torch.long), torch.zeros(30, dtype=torch.long)), {"quantile": 0.6},
     r"`quantile` must be a number in \[0, 0.5\], got 0.6"),
    ((torch.rand(30), torch.zeros(30, dtype=torch.long), torch.zeros(30, dtype=torch.long)), {"method": "em"},
     "`method` must be 'gmm' or 'bmm'"),
])
def test_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_corruption_from_class_floor(*args, **kwargs)


@pytest.mark.parametrize("quantile", [np.float32(0.1), torch.tensor(0.1), np.array(0.1)],
                         ids=["np.float32", "0-d tensor", "0-d array"])
def test_a_numpy_or_tensor_quantile_is_its_number(quantile):
    """``quantile=np.float32(0.1)`` (or a 0-d tensor) was refused: "`quantile` must be a number in [0, 0.5], got
    np.float32(0.1)"; it reads as the decimal it shows, 0.1."""
    labels = torch.arange(1000) % 10
    predicted = labels.clone()
    predicted[labels == 6] = 0
    predicted[:200] = (labels[:200] + 1) % 10
    scores = (predicted != labels).double() + torch.linspace(0, 0.1, 1000, dtype=torch.float64)
    a = estimate_corruption_from_class_floor(scores, labels, predicted, quantile=0.1)
    b = estimate_corruption_from_class_floor(scores, labels, predicted, quantile=quantile)
    assert b.rate == a.rate and b.reason == a.reason


def test_many_small_classes_are_warned_to_read_low():
    """200 classes of 5 samples, 20 % wrong labels (one per class) in 120 classes and a perfect model: 80 classes show
    no disagreement, so the 0.1 quantile reads 0 -- said (warning and reason) instead of a silent 0. Classes of 20
    samples or more say nothing."""
    labels = torch.arange(1000) % 200
    predicted = labels.clone()
    given = labels.clone()
    given[:120] = (labels[:120] + 1) % 200  # samples 0..119: one wrong label in each of 120 classes
    scores = (given != predicted).double()
    with pytest.warns(UserWarning, match=r"^estimate_corruption_from_class_floor: the classes hold a median of 5 "
                                         r"samples, fewer than 20: a class of so few often shows no disagreement by "
                                         r"chance, so the low quantile reads low \(0\.00 %\)\. Use the estimator "
                                         r"'disagreement'"):
        est = estimate_corruption_from_class_floor(scores, given, predicted)
    assert est.rate == 0.0 and est.reason == ("class floor (quantile 0.1 of 200 class rates; classes of median 5 "
                                              "samples: reads low)")
    big = torch.arange(200) % 10  # classes of 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "median" not in estimate_corruption_from_class_floor(big.double(), big, big).reason


def test_no_class_of_two_samples_is_warned():
    """50 classes of one sample each, every prediction disagreeing with its label: no class rate can be read and the
    estimate is 0 -- it was a silent 0 (only the reason said it), while classes of a few samples are warned about."""
    labels = torch.arange(50)
    with pytest.warns(UserWarning, match=r"^estimate_corruption_from_class_floor: no class holds 2 samples with a "
                                         r"finite score, so no class rate can be read and only the NaN/inf scores "
                                         r"count as corrupted \(0\.00 %\)\. Use the estimator 'disagreement'"):
        est = estimate_corruption_from_class_floor(torch.rand(50), labels, (labels + 1) % 50)
    assert est.rate == 0.0 and est.reason == "class floor (no class with 2 samples)"


def test_negative_labels_are_no_class():
    """A label of -100 (``ignore_index``) is no class of its own whose rate enters the quantile: left out, counted
    in ``unlabelled``, posterior 1, and the rate is the same count of wrong labels over all samples."""
    labels = torch.arange(1000) % 10
    predicted = labels.clone()
    predicted[:200] = (labels[:200] + 1) % 10  # 20 % wrong in every class
    scores = (predicted != labels).double() + torch.linspace(0, 0.1, 1000, dtype=torch.float64)
    given = torch.cat([labels, torch.full((100,), -100)])
    pred = torch.cat([predicted, torch.arange(100) % 10])
    s = torch.cat([scores, torch.zeros(100, dtype=torch.float64)])
    est = estimate_corruption_from_class_floor(s, given, pred)
    assert est.unlabelled == 100 and "of 10 class rates" in est.reason
    assert est.rate_labelled == pytest.approx(0.2) and est.rate == pytest.approx(0.2 * 1000 / 1100)
    assert bool((est.clean_posterior[1000:] == 1).all())
