"""label_clean_posterior, the clean posterior of the label estimators ("disagreement", "class_floor"): against a
plain-Python reference, and its promise -- sum(1 - P(clean)) is the estimated count -- including when the score
mixture finds one component (the report's posterior was then 1 everywhere while the estimate was not 0)."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from lit_robust import estimate_corruption, estimate_corruption_from_class_floor, estimate_corruption_from_predictions
from lit_robust.functional.estimation import label_clean_posterior


def _ref(scores: list[float], labels: list[int], predicted: list[int], rate_finite: float) -> list[float]:
    """Slow, obvious: 0 for a NaN/inf score; among the finite ones a disagreeing sample is corrupted with
    probability min(1, rate / (share that disagrees)), an agreeing one never."""
    fin = [i for i, s in enumerate(scores) if math.isfinite(s)]
    wrong = [i for i in fin if labels[i] != predicted[i]]
    share = min(1.0, rate_finite / (len(wrong) / len(fin))) if wrong else 0.0
    return [0.0 if i not in fin else (1.0 - share if i in wrong else 1.0) for i in range(len(scores))]


def _data(n: int, seed: int, eps: float = 0.2, err: float = 0.1, gap: float = 0.0):
    """Labels with ``eps`` of them wrong (always mispredicted) and ``err`` of the clean ones mispredicted; scores
    one exponential mode (gap 0: the mixture finds one component, as on the breast-cancer data a user tried)."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 5, (n,), generator=g)
    bad = torch.rand(n, generator=g) < eps
    given = torch.where(bad, (true + 1) % 5, true)
    hard = (~bad) & (torch.rand(n, generator=g) < err)
    predicted = torch.where(hard, (true + 2) % 5, true)
    scores = torch.empty(n, dtype=torch.float64).exponential_(generator=g) + gap * bad
    return scores, given, predicted


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.17, 0.5, 1.0])
def test_matches_plain_python_reference(rate):
    scores, given, predicted = _data(300, 0)
    scores[[3, 40]] = torch.tensor([math.nan, math.inf], dtype=torch.float64)
    got = label_clean_posterior(scores, given, predicted, rate)
    want = _ref(scores.tolist(), given.tolist(), predicted.tolist(), rate)
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("fn", [estimate_corruption_from_predictions, estimate_corruption_from_class_floor])
@pytest.mark.parametrize("gap", [0.0, 6.0])
def test_posterior_sums_to_the_estimated_count(fn, gap):
    scores, given, predicted = _data(2000, 1, gap=gap)
    scores[:5] = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN scores are warned about
        est = fn(scores, given, predicted)
    assert est.rate > 0.1
    assert float((1.0 - est.clean_posterior).sum()) == pytest.approx(est.rate * 2000, abs=1e-6)
    assert est.clean_posterior[:5].tolist() == [0.0] * 5
    agree = (given == predicted) & torch.isfinite(scores)
    assert bool((est.clean_posterior[agree] == 1.0).all())


def test_one_mixture_component_no_longer_reads_as_all_clean():
    """The defect a user met: the loss mixture rejected its second component (posterior 1 everywhere), while the
    disagreement estimate said ~0.2; the posterior now says what the estimate says."""
    scores, given, predicted = _data(1000, 2)
    assert not estimate_corruption(scores).two_components
    est = estimate_corruption_from_predictions(scores, given, predicted)
    assert est.rate > 0.15
    wrong = given != predicted
    assert bool((est.clean_posterior[wrong] < 1.0).all()) and bool((est.clean_posterior[~wrong] == 1.0).all())
    assert est.rate == pytest.approx(1.0 - float(est.clean_posterior.mean()), abs=1e-12)


def test_nothing_disagrees():
    scores = torch.linspace(0, 1, 50, dtype=torch.float64)
    labels = torch.arange(50) % 3
    assert label_clean_posterior(scores, labels, labels.clone(), 0.3).tolist() == [1.0] * 50


@pytest.mark.parametrize(("change", "message"), [
    ({"rate_finite": math.nan}, "`rate_finite` must be a number in [0, 1], got nan."),  # was read as 0
    ({"rate_finite": 1.5}, "`rate_finite` must be a number in [0, 1], got 1.5."),  # was read as 1
    ({"rate_finite": "0.1"}, "`rate_finite` must be a number in [0, 1], got '0.1' (a str)."),  # was float("0.1")
    ({"labels": torch.zeros(49, dtype=torch.long)},  # was torch's "The size of tensor a (49) must match ..."
     "`labels` and `predicted` must have the shape of `scores` (50,), got (49,) and (50,)."),
    ({"predicted": torch.zeros(50)}, "`predicted` must hold integer class indices, got dtype torch.float32: class "
                                     "labels stored as floats (e.g. 3.0); cast them to integers (`.long()`, NumPy "
                                     "`.astype(int)`)."),
    ({"scores": torch.zeros(50, 1)}, "`scores` must be a 1-D real tensor with one score per sample, got shape (50, 1)"),
    ({"scores": [0.5] * 50}, "`scores` must be a torch.Tensor or a NumPy array, got list."),
])
def test_bad_arguments_are_named(change, message):
    args = {"scores": torch.linspace(0, 1, 50, dtype=torch.float64), "labels": torch.arange(50) % 3,
            "predicted": torch.zeros(50, dtype=torch.long), "rate_finite": 0.3} | change
    with pytest.raises(ValueError, match=re.escape(message)):
        label_clean_posterior(**args)


def test_numpy_arrays_and_scalars_give_the_tensor_posterior():
    """NumPy arrays ended in "'numpy.ndarray' object has no attribute 'detach'"."""
    scores, given, predicted = _data(300, 3)
    want = label_clean_posterior(scores, given, predicted, 0.2)
    got = label_clean_posterior(scores.numpy(), given.numpy(), predicted.numpy(), np.float32(0.2))
    assert torch.equal(got, want)


def test_unlabelled_samples_get_one_and_are_not_counted():
    """A negative label with a finite score is no disagreement: posterior 1, and the share ``rate_finite`` is of the
    labelled samples (4 labelled, 2 disagreeing, rate 0.25: half the disagreeing ones corrupted)."""
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0, 0.0])
    labels = torch.tensor([0, 1, 2, 3, -100, -1])
    predicted = torch.tensor([0, 1, 0, 0, 3, 2])
    post = label_clean_posterior(scores, labels, predicted, 0.25)
    assert post.tolist() == [1.0, 1.0, 0.5, 0.5, 1.0, 1.0]
