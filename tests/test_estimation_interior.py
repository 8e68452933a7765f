"""estimate_corruption_from_interior ("disagreement_or_interior") and interior_disagreement: against a slow obvious
reference, on a known mixture, order-free, and their bad input."""

from __future__ import annotations

import math

import pytest
import torch

from lit_robust import estimate_corruption_from_interior, estimate_corruption_from_predictions
from lit_robust.functional.estimation import estimate_from_labels, interior_disagreement, label_clean_posterior
from lit_robust.report import confidence_from_outputs


def slow_interior(labels, predicted, confidence, share):
    """Per predicted class, sort its samples by (confidence highest first, agreeing first), take the first
    ceil(share * size) (at least one), count the disagreeing ones; weight each class's rate by its size."""
    rows = list(zip(labels.tolist(), predicted.tolist(), confidence.tolist()))
    total = 0.0
    for c in sorted({p for _, p, _ in rows}):
        members = [(y != p, -(-math.inf if math.isnan(q) else q)) for y, p, q in rows if p == c]
        members.sort(key=lambda t: (t[1], t[0]))  # -confidence ascending = confidence descending; False first
        top = max(1, math.ceil(share * len(members)))
        total += sum(w for w, _ in members[:top]) / top * len(members)
    return total / len(rows)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("share", [0.25, 0.4, 0.5, 0.75, 1.0, None])  # None: the default, INTERIOR_SHARE
def test_interior_disagreement_matches_the_slow_reference(seed, share):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 300, (1,), generator=g))
    labels = torch.randint(0, 5, (n,), generator=g)
    predicted = torch.where(torch.rand(n, generator=g) < 0.3, torch.randint(0, 5, (n,), generator=g), labels)
    # few distinct values: ties decide which samples stand for the interior
    confidence = torch.randint(0, 4, (n,), generator=g).double() / 4
    confidence[torch.rand(n, generator=g) < 0.05] = math.nan
    got = (interior_disagreement(labels, predicted, confidence) if share is None
           else interior_disagreement(labels, predicted, confidence, share))
    assert got == pytest.approx(slow_interior(labels, predicted, confidence, 0.4 if share is None else share),
                                abs=1e-12)


def test_interior_disagreement_depends_on_the_multiset_only():
    """The same triples in any order (or split across ranks and gathered): the same rate, bit for bit."""
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (500,), generator=g)
    # 70 % disagree, so that fewer than the interior's 40 % of a class agree: the tie rule below has work to do
    predicted = torch.where(torch.rand(500, generator=g) < 0.7, (labels + 1) % 3, labels)
    confidence = torch.randint(0, 3, (500,), generator=g).float() / 3  # many ties between agreeing and not
    rate = interior_disagreement(labels, predicted, confidence)
    for s in range(5):
        perm = torch.randperm(500, generator=torch.Generator().manual_seed(s))
        assert interior_disagreement(labels[perm], predicted[perm], confidence[perm]) == rate
    # ties put the agreeing samples first: all tied, a class's interior (its default 40 %) holds its disagreeing
    # samples only where fewer than 40 % of the class agree
    expected = 0.0
    for c in range(3):
        size, agree = int((predicted == c).sum()), int(((predicted == c) & (labels == c)).sum())
        top = math.ceil(0.4 * size)
        expected += max(0, top - agree) / top * size / 500
    assert expected > 0.2
    assert interior_disagreement(labels, predicted, torch.ones(500)) == pytest.approx(expected, abs=1e-12)


def hard_clean(n=3000, error=0.2, seed=0, wrong=0.0):
    """Four classes; the model misses a share `error` of the clean labels, near its class boundaries (confidence
    0.35-0.5), and a share `wrong` of the labels is wrong, predicted far from the boundaries (0.6-1.0) as the clean
    right ones are. Losses: one exponential group."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 4, (n,), generator=g)
    predicted = truth.clone()
    hard = torch.rand(n, generator=g) < error
    predicted[hard] = (truth[hard] + 1) % 4
    confidence = torch.where(hard, 0.35 + 0.15 * torch.rand(n, generator=g), 0.6 + 0.4 * torch.rand(n, generator=g))
    labels = truth.clone()
    flip = (torch.rand(n, generator=g) < wrong) & ~hard
    labels[flip] = (truth[flip] + 2) % 4
    scores = torch.empty(n, dtype=torch.float64).exponential_(generator=g)
    return scores, labels, predicted, confidence.double(), flip


def test_one_group_of_losses_reads_the_interior_not_the_training_error():
    scores, labels, predicted, confidence, _ = hard_clean()
    dis = estimate_corruption_from_predictions(scores, labels, predicted)
    assert not dis.two_components and dis.rate == pytest.approx(float((labels != predicted).double().mean()))
    assert 0.18 < dis.rate < 0.22  # the training error, read as wrong labels
    est = estimate_corruption_from_interior(scores, labels, predicted, confidence)
    assert est.rate == 0.0
    assert est.reason == "interior (one component: the most confident 0.4 of each predicted class)"
    same = estimate_from_labels("disagreement_or_interior", scores, labels, predicted, confidence)
    assert (same.rate, same.reason) == (est.rate, est.reason)


def test_wrong_labels_far_from_the_boundaries_are_counted():
    """10 % wrong labels predicted as confidently as the right ones, beside a 20 % training error at the
    boundaries: the most confident 40 % of each predicted class holds the wrong labels at their share among the
    samples away from the boundaries."""
    scores, labels, predicted, confidence, flip = hard_clean(wrong=0.1)
    est = estimate_corruption_from_interior(scores, labels, predicted, confidence)
    away = confidence >= 0.6
    expected = float(flip[away].double().mean())  # the share among the confident samples, which the top 40 % samples
    assert est.rate == pytest.approx(expected, abs=0.02)
    assert est.rate == pytest.approx(interior_disagreement(labels, predicted, confidence), abs=1e-12)
    # the posterior is the label estimators' for this rate, and sums to the count
    assert torch.equal(est.clean_posterior, label_clean_posterior(scores, labels, predicted, est.rate))
    assert float((1 - est.clean_posterior).sum()) == pytest.approx(est.rate * 3000)


def test_two_groups_of_losses_give_the_disagreement_estimate():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=g)
    predicted = labels.clone()
    predicted[:400] = (labels[:400] + 1) % 10
    scores = torch.rand(2000, generator=g) + 2.0 * (predicted != labels)
    confidence = torch.rand(2000, generator=g)
    dis = estimate_corruption_from_predictions(scores, labels, predicted)
    assert dis.two_components
    est = estimate_corruption_from_interior(scores, labels, predicted, confidence)
    assert (est.rate, est.reason) == (dis.rate, dis.reason)
    assert torch.equal(est.clean_posterior, dis.clean_posterior)


def test_nonfinite_scores_count_as_corrupted_and_unlabelled_samples_are_left_out():
    scores, labels, predicted, confidence, _ = hard_clean(n=1000, wrong=0.1)
    base = estimate_corruption_from_interior(scores, labels, predicted, confidence)
    s = scores.clone()
    s[:10] = math.nan
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        est = estimate_corruption_from_interior(s, labels, predicted, confidence)
    finite = interior_disagreement(labels[10:], predicted[10:], confidence[10:])
    assert est.nonfinite == 10 and est.rate == pytest.approx((10 + finite * 990) / 1000)
    assert bool((est.clean_posterior[:10] == 0).all())
    y = labels.clone()
    y[:50] = -100  # no label
    est = estimate_corruption_from_interior(scores, y, predicted, confidence)
    assert est.unlabelled == 50 and bool((est.clean_posterior[:50] == 1).all())
    assert est.rate == pytest.approx(interior_disagreement(labels[50:], predicted[50:], confidence[50:]) * 950 / 1000)
    assert base.rate > 0


def test_too_few_samples_are_not_counted():
    scores, labels, predicted, confidence, _ = hard_clean(n=10, wrong=0.5)
    with pytest.warns(RuntimeWarning):
        est = estimate_corruption_from_interior(scores, labels, predicted, confidence)
    assert est.rate == 0.0 and est.reason.startswith("disagreement (too few samples")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"share": 0}, r"`share` must be a number in \(0, 1\], got 0"),
    ({"share": 1.5}, r"`share` must be a number in \(0, 1\], got 1.5"),
    ({"share": math.nan}, r"`share` must be a number in \(0, 1\], got nan"),
    ({"confidence": torch.ones(5)}, r"`confidence` must be a floating tensor of the shape of `scores` \(40,\), got "
                                    r"shape \(5,\)"),
    ({"confidence": torch.ones(40, dtype=torch.long)}, r"`confidence` must be a floating tensor .* dtype torch.int64"),
    ({"labels": torch.ones(40)}, r"`labels` must hold integer class indices, got dtype torch.float32"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = {"scores": torch.rand(40), "labels": torch.zeros(40, dtype=torch.long),
            "predicted": torch.zeros(40, dtype=torch.long), "confidence": torch.rand(40)}
    share = kwargs.pop("share", 0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        estimate_corruption_from_interior(**args, share=share)


def test_the_interior_estimator_needs_the_confidence():
    with pytest.raises(ValueError, match=r"`confidence` .* is needed by the estimator 'disagreement_or_interior', "
                                         r"got None"):
        estimate_from_labels("disagreement_or_interior", torch.rand(30), torch.zeros(30, dtype=torch.long),
                             torch.zeros(30, dtype=torch.long))


def test_confidence_from_outputs_reads_logits_log_probabilities_and_probabilities_alike():
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.zeros(64, dtype=torch.long)
    want = torch.softmax(logits, 1).max(1).values
    for outputs in (logits, torch.log_softmax(logits, 1), torch.softmax(logits, 1)):
        assert torch.allclose(confidence_from_outputs(outputs, y), want, atol=1e-6)
    assert confidence_from_outputs(torch.randn(8, 1), torch.zeros(8, dtype=torch.long)) is None  # one logit
    assert confidence_from_outputs(torch.randn(8, 3), torch.rand(8)) is None  # regression targets


@pytest.mark.parametrize(("args", "match"), [
    ((torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), torch.ones(5, 2)),
     r"`confidence` must be a 1-D floating tensor, one value per sample, got shape \(5, 2\)"),
    ((torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long), torch.ones(5)),
     r"`labels` must hold one integer class index per sample, shape \(5,\) as `confidence`, got shape \(4,\)"),
    ((torch.zeros(5, dtype=torch.long), torch.zeros(5), torch.ones(5)),
     r"`predicted` must hold one integer class index per sample, .* dtype torch.float32"),
])
def test_interior_disagreement_names_its_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        interior_disagreement(*args)
