"""estimate_corruption_from_predictions: against a plain-Python reference, synthetic label noise with a known
rate (random and class-pair), clean data, order independence, degenerate inputs and argument checks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from lit_robust import estimate_corruption, estimate_corruption_from_predictions


def _ref(scores: list[float], labels: list[int], predicted: list[int]) -> float:
    """Slow, obvious: disagreement rate d, clean-component disagreement e_c from the gmm posteriors,
    (d - e_c) / (1 - e_c); non-finite scores counted as corrupted."""
    est = estimate_corruption(torch.tensor(scores, dtype=torch.float64))
    post = est.clean_posterior.tolist()
    fin = [i for i, s in enumerate(scores) if math.isfinite(s)]
    d = sum(labels[i] != predicted[i] for i in fin) / len(fin)
    e_c = 0.0
    if est.two_components:
        e_c = sum(post[i] * (labels[i] != predicted[i]) for i in fin) / sum(post[i] for i in fin)
    r = max(0.0, (d - e_c) / (1.0 - e_c))
    return (len(scores) - len(fin) + r * len(fin)) / len(scores)


def noisy(n: int, eps: float, train_err: float, seed: int, kind: str = "random"):
    """True classes, given labels with ``eps`` of them wrong, predictions = the true class except on a
    ``train_err`` share of the clean samples; scores: low for agreeing samples, high for disagreeing ones
    (class-pair noise: only moderately higher, as for a model that splits its probability over the pair)."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 10, (n,), generator=g)
    bad = torch.zeros(n, dtype=torch.bool)
    bad[torch.randperm(n, generator=g)[:round(eps * n)]] = True
    shift = torch.randint(1, 10, (n,), generator=g) if kind == "random" else torch.ones(n, dtype=torch.long)
    given = torch.where(bad, (true + shift) % 10, true)
    hard = (~bad) & (torch.rand(n, generator=g) < train_err)
    predicted = torch.where(hard, (true + 3) % 10, true)
    clean_loss = torch.empty(n, dtype=torch.float64).exponential_(1 / 0.2, generator=g)
    gap = 2.5 if kind == "random" else 0.4
    scores = clean_loss + gap * bad + 1.0 * hard * torch.rand(n, generator=g, dtype=torch.float64)
    return scores, given, predicted, bad


def test_matches_plain_python_reference():
    scores, given, predicted, _ = noisy(600, 0.25, 0.1, 0)
    scores[:3] = math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = estimate_corruption_from_predictions(scores, given, predicted).rate
        want = _ref(scores.tolist(), given.tolist(), predicted.tolist())
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.2 < got < 0.35


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.45])
@pytest.mark.parametrize("kind", ["random", "pair"])
def test_rate_of_known_label_noise(one_torch_thread, eps, kind):
    # random noise: separated losses, so 5 % training error is corrected for; class-pair noise: overlapping
    # losses, one component, no correction possible (see the next-but-two test), so no training error here
    scores, given, predicted, bad = noisy(4000, eps, 0.05 if kind == "random" else 0.0, 1, kind)
    est = estimate_corruption_from_predictions(scores, given, predicted)
    assert est.rate == pytest.approx(float(bad.float().mean()), abs=0.03)
    assert est.reason.startswith("disagreement")


def test_pair_noise_is_seen_where_the_loss_mixture_is_not():
    # class-pair noise: the losses overlap and the loss mixture finds nothing; the predictions still disagree
    scores, given, predicted, bad = noisy(4000, 0.4, 0.0, 2, "pair")
    assert estimate_corruption(scores).rate < 0.2
    assert estimate_corruption_from_predictions(scores, given, predicted).rate == pytest.approx(
        float(bad.float().mean()), abs=0.01)


def test_training_error_is_removed_when_the_mixture_separates():
    # 15 % of the clean samples are mispredicted: the raw disagreement is ~0.34, the estimate the true 0.2
    scores, given, predicted, bad = noisy(4000, 0.2, 0.15, 3)
    d = float((given != predicted).float().mean())
    rate = estimate_corruption_from_predictions(scores, given, predicted).rate
    assert d > 0.3 and rate == pytest.approx(float(bad.float().mean()), abs=0.03)


def test_clean_data_with_agreeing_predictions_gives_zero():
    scores, given, predicted, _ = noisy(2000, 0.0, 0.0, 4)
    assert estimate_corruption_from_predictions(scores, given, predicted).rate == 0.0


def test_clean_data_with_training_error_and_one_component_returns_the_disagreement():
    # the documented weakness: one score mode, so training error and noise cannot be told apart
    g = torch.Generator().manual_seed(5)
    given = torch.randint(0, 10, (2000,), generator=g)
    predicted = torch.where(torch.arange(2000) < 200, (given + 1) % 10, given)
    scores = torch.empty(2000, dtype=torch.float64).exponential_(5.0, generator=g)
    est = estimate_corruption_from_predictions(scores, given, predicted)
    assert not est.two_components and est.rate == pytest.approx(0.1)


def test_result_depends_only_on_the_multiset():
    scores, given, predicted, _ = noisy(3000, 0.3, 0.1, 6)
    a = estimate_corruption_from_predictions(scores, given, predicted)
    perm = torch.randperm(3000, generator=torch.Generator().manual_seed(1))
    b = estimate_corruption_from_predictions(scores[perm], given[perm], predicted[perm])
    assert a.rate == b.rate
    assert torch.equal(b.clean_posterior, a.clean_posterior[perm])


def test_degenerate_inputs():
    y = torch.arange(10) % 3
    with pytest.warns(RuntimeWarning, match="min_samples"):
        est = estimate_corruption_from_predictions(torch.rand(10), y, (y + 1) % 3)
    assert est.rate == 0.0 and est.reason == "disagreement (too few samples)"
    est = estimate_corruption_from_predictions(torch.ones(50), torch.zeros(50, dtype=torch.long),
                                               torch.zeros(50, dtype=torch.long))
    assert est.rate == 0.0
    # all-equal scores: one component, the rate is the disagreement
    pred = torch.zeros(50, dtype=torch.long)
    pred[:5] = 1
    assert estimate_corruption_from_predictions(torch.ones(50), torch.zeros(50, dtype=torch.long), pred).rate == 0.1
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        est = estimate_corruption_from_predictions(torch.full((30,), math.nan), torch.zeros(30, dtype=torch.long),
                                                   torch.zeros(30, dtype=torch.long))
    assert est.rate == 1.0
    empty = torch.zeros(0, dtype=torch.long)
    assert estimate_corruption_from_predictions(torch.zeros(0), empty, empty).rate == 0.0


@pytest.mark.parametrize(("args", "message"), [
    ((torch.rand(30), torch.rand(30), torch.zeros(30, dtype=torch.long)), "`labels` must hold integer"),
    ((torch.rand(30), torch.zeros(30, dtype=torch.long), [0] * 30), "`predicted` must be a torch.Tensor"),
    ((torch.rand(30), torch.zeros(29, dtype=torch.long), torch.zeros(30, dtype=torch.long)), "must have the shape"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        estimate_corruption_from_predictions(*args)


def test_bad_method():
    with pytest.raises(ValueError, match="`method` must be 'gmm' or 'bmm'"):
        estimate_corruption_from_predictions(torch.rand(30), torch.zeros(30, dtype=torch.long),
                                             torch.zeros(30, dtype=torch.long), "em")


@pytest.mark.parametrize("ignored_score", [0.0, None])
def test_negative_labels_are_unlabelled_and_left_out(ignored_score):
    """Samples labelled -100 (``ignore_index``) or -1 are no class: the estimate of the labelled ones is what it is
    without them, over all n samples; it had counted them as always disagreeing (0.30 for 0.20 with loss 0)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=g)
    predicted = labels.clone()
    predicted[:400] = (labels[:400] + 1) % 10
    scores = torch.rand(2000, generator=g) + 2.0 * (predicted != labels)
    given = labels.clone()
    given[1800:1900], given[1900:] = -100, -1
    if ignored_score is not None:
        scores[1800:] = ignored_score  # the loss of an ignored target
    est = estimate_corruption_from_predictions(scores, given, predicted)
    alone = estimate_corruption_from_predictions(scores[:1800], labels[:1800], predicted[:1800])
    assert est.unlabelled == 200 and est.n == 2000
    assert est.rate == pytest.approx(alone.rate * 1800 / 2000, abs=1e-12)
    assert est.rate_labelled == pytest.approx(alone.rate, abs=1e-12)
    assert 0.19 < est.rate_labelled < 0.24  # 400 of the 1800 labels are wrong: 0.222
    assert torch.equal(est.clean_posterior[1800:], torch.ones(200, dtype=torch.float64))
    assert torch.equal(est.clean_posterior[:1800], alone.clean_posterior)
    assert float((1 - est.clean_posterior).sum()) == pytest.approx(est.rate * 2000)
    assert "200 unlabelled left out" in est.reason
    # a non-finite score still counts as corrupted, label or not
    scores[1800] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN"):
        nan = estimate_corruption_from_predictions(scores, given, predicted)
    assert nan.unlabelled == 199 and nan.nonfinite == 1 and float(nan.clean_posterior[1800]) == 0.0
