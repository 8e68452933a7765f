"""estimate_corruption_from_spread ("floor_or_interior") and disagreement_concentration: against a slow obvious
reference, on known mixtures, order-free, and their bad input."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from lit_robust import (
    estimate_corruption_from_class_floor,
    estimate_corruption_from_interior,
    estimate_corruption_from_spread,
)
from lit_robust.functional.estimation import SPREAD_BAR, disagreement_concentration, estimate_from_labels


def slow_concentration(labels, predicted):
    """Count the (predicted, given) pairs of the disagreeing labelled samples; per predicted class take the largest
    count; their sum over all disagreements, rescaled so that an even spread over the other classes is 0."""
    pairs = [(p, y) for y, p in zip(labels.tolist(), predicted.tolist()) if y >= 0]
    classes = {c for pair in pairs for c in pair}
    wrong = Counter((p, y) for p, y in pairs if p != y)
    if len(classes) < 3 or not wrong:
        return None
    top = sum(max(n for (p, _), n in wrong.items() if p == c) for c in {p for p, _ in wrong})
    even = 1 / (len(classes) - 1)
    return (top / sum(wrong.values()) - even) / (1 - even)


@pytest.mark.parametrize("seed", range(8))
def test_concentration_matches_the_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 400, (1,), generator=g))
    k = int(torch.randint(2, 7, (1,), generator=g))
    labels = torch.randint(0, k, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.05] = -100  # unlabelled: left out
    pair = (labels + 1) % k  # some class-pair flips, some uniform ones
    uniform = torch.randint(0, k, (n,), generator=g)
    u = torch.rand(n, generator=g)
    predicted = torch.where(u < 0.2, pair, torch.where(u < 0.4, uniform, labels.clamp(min=0)))
    want = slow_concentration(labels, predicted)
    got = disagreement_concentration(labels, predicted)
    assert (got is None) == (want is None)
    if want is not None:
        assert got == pytest.approx(want, abs=1e-12) and 0 <= got <= 1


def test_concentration_reads_spread_and_pairs_apart():
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 10, (5000,), generator=g)
    flip = torch.rand(5000, generator=g) < 0.3
    uniform = truth.clone()
    uniform[flip] = (truth[flip] + torch.randint(1, 10, (int(flip.sum()),), generator=g)) % 10
    pairs = truth.clone()
    pairs[flip] = (truth[flip] + 1) % 10
    # the model predicts the truth: its disagreements are the flips
    assert disagreement_concentration(uniform, truth) < 0.05
    assert disagreement_concentration(pairs, truth) == 1.0
    perm = torch.randperm(5000, generator=g)  # any order: the same value, bit for bit
    assert disagreement_concentration(uniform[perm], truth[perm]) == disagreement_concentration(uniform, truth)
    # nothing to read: two classes, or no disagreement
    assert disagreement_concentration(truth % 2, (truth + 1) % 2) is None
    assert disagreement_concentration(truth, truth) is None


def noisy(kind, n=4000, rate=0.3, seed=0):
    """Ten classes; the model predicts the truth except on one hard class it always takes for another (its own
    error, concentrated on one pair); a share `rate` of the labels is flipped uniformly or to the next class. The
    wrong labels' losses are high, the right ones' low; confidence high everywhere."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 10, (n,), generator=g)
    predicted = truth.clone()
    predicted[truth == 3] = 5
    flip = torch.rand(n, generator=g) < rate
    labels = truth.clone()
    shift = torch.randint(1, 10, (int(flip.sum()),), generator=g) if kind == "uniform" else 1
    labels[flip] = (truth[flip] + shift) % 10
    scores = (labels != predicted).double() * 3 + torch.rand(n, generator=g, dtype=torch.float64)
    return scores, labels, predicted, torch.full((n,), 0.9, dtype=torch.float64), flip


def test_uniform_noise_takes_the_class_floor():
    scores, labels, predicted, confidence, flip = noisy("uniform")
    est = estimate_corruption_from_spread(scores, labels, predicted, confidence)
    floor = estimate_corruption_from_class_floor(scores, labels, predicted)
    assert est.rate == floor.rate
    assert torch.equal(est.clean_posterior, floor.clean_posterior)
    assert est.reason.startswith("class floor") and f"< {SPREAD_BAR:g}" in est.reason
    assert abs(est.rate - float(flip.double().mean())) < 0.03
    # the disagreement estimate adds the hard class's own error
    assert estimate_corruption_from_interior(scores, labels, predicted, confidence).rate > est.rate + 0.05


def test_pair_noise_takes_the_interior_estimator():
    scores, labels, predicted, confidence, _ = noisy("pairs")
    est = estimate_corruption_from_spread(scores, labels, predicted, confidence)
    interior = estimate_corruption_from_interior(scores, labels, predicted, confidence)
    assert est.rate == interior.rate and torch.equal(est.clean_posterior, interior.clean_posterior)
    assert "concentrated on class pairs" in est.reason and est.reason.startswith(interior.reason[:-1])
    wrong = int((labels != predicted).sum())  # and says how many disagreements it read that from
    assert est.reason.endswith(f", of {wrong} disagreements)") and wrong > 1, est.reason


def test_one_group_of_losses_takes_the_interior_estimator():
    """A clean hard task of three alike classes: the model's own confusions spread evenly over the other two classes
    (concentration 0.07), and its least disagreeing class's error is 19 %, no wrong label. The losses form one
    group, so the floor is not read: the interior estimator's 5.7 % is."""
    from tests.conftest import overlapping_blobs

    x, y = overlapping_blobs(631, sd=2.5).dataset.tensors
    logits = -((x[:, None, :] - torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])) ** 2).sum(-1) / 8
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none").double()
    pred, conf = logits.argmax(1), torch.softmax(logits, 1).max(1).values
    assert disagreement_concentration(y, pred) < 0.1
    assert estimate_corruption_from_class_floor(loss, y, pred).rate > 0.15
    est = estimate_corruption_from_spread(loss, y, pred, conf)
    assert not est.two_components and "the losses form one group" in est.reason
    assert est.rate == estimate_corruption_from_interior(loss, y, pred, conf).rate < 0.06  # measured 5.7 %


@pytest.mark.parametrize("bar", [0.0, 1.0])
def test_the_bar_decides(bar):
    """bar 0: every concentration is at or above it (the interior); bar 1: only disagreements all on one pair."""
    scores, labels, predicted, confidence, _ = noisy("uniform")
    est = estimate_corruption_from_spread(scores, labels, predicted, confidence, bar=bar)
    assert est.reason.startswith("class floor") == (bar == 1.0)


def test_two_classes_and_small_classes_take_the_interior_estimator():
    scores, labels, predicted, confidence, _ = noisy("uniform")
    binary = estimate_corruption_from_spread(scores, labels % 2, predicted % 2, confidence)
    assert "no concentration to read" in binary.reason
    assert binary.rate == estimate_corruption_from_interior(scores, labels % 2, predicted % 2, confidence).rate
    # 1500 samples over 10 classes (median about 150, below 200): the floor would read low by chance, so the interior
    s, y, p, c, _ = noisy("uniform", n=1500)
    est = estimate_corruption_from_spread(s, y, p, c)
    assert "classes of median" in est.reason and est.rate == estimate_corruption_from_interior(s, y, p, c).rate
    assert estimate_corruption_from_spread(s, y, p, c, min_class=100).reason.startswith("class floor")


def test_order_free_and_nonfinite_scores_count_as_corrupted():
    scores, labels, predicted, confidence, _ = noisy("uniform")
    est = estimate_corruption_from_spread(scores, labels, predicted, confidence)
    assert est.reason.startswith("class floor")
    perm = torch.randperm(4000, generator=torch.Generator().manual_seed(3))
    assert estimate_corruption_from_spread(scores[perm], labels[perm], predicted[perm], confidence[perm]).rate == \
        est.rate
    s = scores.clone()
    s[:20] = math.inf
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        bad = estimate_corruption_from_spread(s, labels, predicted, confidence)
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        floor = estimate_corruption_from_class_floor(s, labels, predicted)
    assert bad.nonfinite == 20 and bad.rate == floor.rate and bool((bad.clean_posterior[:20] == 0).all())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"bar": -0.1}, r"`bar` must be a number in \[0, 1\], got -0.1"),
    ({"bar": math.nan}, r"`bar` must be a number in \[0, 1\], got nan"),
    ({"min_class": 1}, r"`min_class` must be an integer >= 2, got 1\."),
    ({"min_class": 200.0}, r"`min_class` must be an integer >= 2, got 200.0\."),
    ({"labels": torch.ones(40)}, r"`labels` must hold integer class indices, got dtype torch.float32"),
    ({"confidence": torch.ones(5)}, r"`confidence` must be a floating tensor of the shape of `scores`"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = {"scores": torch.rand(40), "labels": torch.zeros(40, dtype=torch.long),
            "predicted": torch.zeros(40, dtype=torch.long), "confidence": torch.rand(40), **kwargs}
    with pytest.raises(ValueError, match=match):
        estimate_corruption_from_spread(**args)


def test_concentration_names_its_bad_arguments():
    with pytest.raises(ValueError, match=r"`labels` must be a 1-D tensor of integer class indices, got shape "
                                         r"\(4,\) and dtype torch.float32"):
        disagreement_concentration(torch.ones(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`labels` and `predicted` must have one value per sample each, got shapes "
                                         r"\(4,\) and \(5,\)"):
        disagreement_concentration(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long))


def test_the_spread_estimator_needs_the_confidence():
    with pytest.raises(ValueError, match=r"`confidence` .* is needed by the estimator 'floor_or_interior', got None"):
        estimate_from_labels("floor_or_interior", torch.rand(30), torch.zeros(30, dtype=torch.long),
                             torch.zeros(30, dtype=torch.long))
