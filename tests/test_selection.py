import math
import random

import pytest
import torch

from lit_robust.selection.rules import (
    keep_count,
    nonfinite_count,
    per_class_trim_mask,
    rank_order,
    scatter_scores,
    smallest_k_mask,
    trim_mask,
)


def reference_order(scores, index):
    """Slow, obvious reference: sort (finite?, score, index) tuples in Python."""
    keyed = []
    for pos, (s, i) in enumerate(zip(scores.tolist(), index.tolist())):
        finite = math.isfinite(s)
        keyed.append(((0, s, i) if finite else (1, 0.0, i), pos))
    return [pos for _, pos in sorted(keyed)]


def random_scores(n, seed, ties=True, nonfinite=True):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, generator=g)
    if ties:
        s = (s * 3).round() / 3  # many exact ties
    if nonfinite and n >= 4:
        s[torch.randperm(n, generator=g)[: n // 4]] = torch.tensor([math.nan, math.inf, -math.inf])[
            torch.randint(0, 3, (n // 4,), generator=g)]
    return s


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shuffled_index", [False, True])
def test_rank_order_matches_reference(n, seed, shuffled_index):
    s = random_scores(n, seed)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 9)) * 3 + 5 if shuffled_index \
        else torch.arange(n)
    assert rank_order(s, idx).tolist() == reference_order(s, idx)


@pytest.mark.parametrize("n", [1, 10, 333])
@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.55, 0.95, 1.0])
def test_trim_mask_matches_reference(n, ratio):
    s = random_scores(n, n)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    k = keep_count(n, ratio)
    expected = torch.zeros(n, dtype=torch.bool)
    expected[reference_order(s, idx)[:k]] = True
    got = trim_mask(s, ratio, idx)
    assert torch.equal(got, expected)
    assert int(got.sum()) == k


def test_nonfinite_scores_are_dropped_first():
    s = torch.tensor([math.nan, 0.3, math.inf, -math.inf, 0.1, 5.0])
    assert smallest_k_mask(s, 3).tolist() == [False, True, False, False, True, True]
    assert nonfinite_count(s) == 3


def test_ties_broken_by_index_not_position():
    s = torch.tensor([1.0, 1.0, 1.0, 0.0])
    idx = torch.tensor([9, 4, 7, 100])
    assert smallest_k_mask(s, 2, idx).tolist() == [False, True, False, True]


def test_selection_is_invariant_to_permutation():
    s = random_scores(500, 4)
    idx = torch.arange(500)
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(1))
    a = torch.nonzero(trim_mask(s, 0.6, idx)).flatten()
    b = idx[perm][trim_mask(s[perm], 0.6, idx[perm])]
    assert sorted(a.tolist()) == sorted(b.tolist())


def test_keep_count_is_floor_without_float_error():
    assert keep_count(100, 0.29) == 29
    assert keep_count(1000, 0.55) == 550
    assert keep_count(7, 0.5) == 3
    assert keep_count(0, 0.5) == 0


def test_keep_count_is_exact_at_large_n_and_round_trips_k_over_n():
    """Rounding to 9 decimals stopped absorbing the float error above n ~ 10**7 (a reviewer's keep_count(10**8, 0.29)
    = 28999999), and ITLM's "auto" keeps k as k / n: one sample fewer for a few n above 10**6 (n=9448373, k=8380971).
    The exact floor of the decimal product, from Fraction, is the reference."""
    from fractions import Fraction

    assert keep_count(10**8, 0.29) == 29000000 and keep_count(10**7, 0.57) == 5700000
    assert keep_count(9448373, 8380971 / 9448373) == 8380971
    rng = random.Random(0)
    for _ in range(20000):
        n = rng.randint(1, 10**9)
        k = rng.randint(1, n)
        assert keep_count(n, k / n) == k, (n, k)
        pct = rng.randint(1, 99)
        assert keep_count(n, pct / 100) == math.floor(Fraction(pct, 100) * n), (n, pct)
    assert keep_count(3, 0.333333333) == 0  # 0.999999999: a product 1e-9 below 1 is not 1


def test_keep_count_does_not_count_one_too_many_above_10_to_the_8():
    """A margin of 1e-12 of the product (4e-4 at 4e8) counted exact products such as 434740757.9996 as the next whole
    number (a reviewer's keep_count(862409756, 0.5041) = 434740758, 3 in 200,000 random draws). The margin is now a
    few units in the last place: the exact floor of the decimal product (Fraction) is the reference, with ratios of 4
    and 6 decimals, and k / n still round-trips."""
    from fractions import Fraction

    assert keep_count(862409756, 0.5041) == 434740757
    rng = random.Random(1)
    for _ in range(20000):
        n = rng.randint(10**7, 10**9)
        ratio = Fraction(rng.randint(1, 10**4), 10**4) if rng.random() < 0.5 else Fraction(rng.randint(1, 10**6), 10**6)
        assert keep_count(n, float(ratio)) == math.floor(ratio * n), (n, ratio)
        k = rng.randint(1, n)
        assert keep_count(n, k / n) == k, (n, k)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, math.nan])
def test_keep_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\], got"):
        keep_count(10, ratio)


def test_k_out_of_range():
    with pytest.raises(ValueError, match=r"`k` must be an integer in \[0, 3\].*got 4"):
        smallest_k_mask(torch.zeros(3), 4)
    with pytest.raises(ValueError, match=r"`k` must be an integer in \[0, 3\].*got 1.5"):  # not a slice's TypeError
        smallest_k_mask(torch.zeros(3), 1.5)


def test_index_length_mismatch():
    with pytest.raises(ValueError, match=r"one entry per score, 3 entries \(as `scores`\), got 2\."):
        rank_order(torch.zeros(3), torch.arange(2))


def test_scores_must_be_1d():
    with pytest.raises(ValueError, match=r"`scores` must be a 1-D tensor.*shape \(2, 2\)"):
        rank_order(torch.zeros(2, 2))


def test_scatter_scores_dedupes_and_checks():
    dense = scatter_scores(4, torch.tensor([2, 0, 1, 3, 2]), torch.tensor([0.2, 0.0, 0.1, 0.3, 0.2]))
    assert dense.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="never scored"):
        scatter_scores(4, torch.tensor([0, 1]), torch.tensor([0.0, 0.1]))
    with pytest.raises(ValueError, match="scored twice with different scores"):
        scatter_scores(2, torch.tensor([0, 1, 1]), torch.tensor([0.0, 0.1, 0.5]))
    with pytest.raises(ValueError, match=r"must be in \[0, 2\)"):
        scatter_scores(2, torch.tensor([0, 2]), torch.tensor([0.0, 0.1]))


def reference_per_class(scores, labels, ratio, index):
    """Slow, obvious reference: per class, sort its (finite?, score, index) tuples and keep floor(ratio * n_c)."""
    keep = [False] * len(scores)
    for c in set(labels.tolist()):
        members = [p for p, y in enumerate(labels.tolist()) if y == c]
        keyed = sorted(((0, scores[p].item(), index[p].item()) if math.isfinite(scores[p].item())
                        else (1, 0.0, index[p].item()), p) for p in members)
        for _, p in keyed[:math.floor(ratio * len(members))]:
            keep[p] = True
    return keep


@pytest.mark.parametrize("n", [1, 9, 250])
@pytest.mark.parametrize("ratio", [0.3, 0.7, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_trim_mask_matches_reference(n, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    s = random_scores(n, seed + 7)
    labels = torch.randint(0, 5, (n,), generator=g) * 2  # classes 0, 2, 4, 6, 8: gaps between them
    idx = torch.randperm(n, generator=g) + 10
    got = per_class_trim_mask(s, labels, ratio, idx)
    assert got.tolist() == reference_per_class(s, labels, ratio, idx)
    for c in labels.unique().tolist():  # every class keeps its share, whatever the other classes score
        assert int(got[labels == c].sum()) == keep_count(int((labels == c).sum()), ratio)
    # without an index, ties go by position
    assert per_class_trim_mask(s, labels, ratio).tolist() == reference_per_class(s, labels, ratio, torch.arange(n))


def test_per_class_trim_keeps_a_class_that_one_trim_would_empty():
    # class 1 scores high everywhere (a confusable class under pair-swap noise): one trim drops all of it
    s = torch.tensor([0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0])
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert trim_mask(s, 0.5).tolist() == [True] * 4 + [False] * 4
    assert per_class_trim_mask(s, y, 0.5).tolist() == [True, True, False, False, True, True, False, False]


@pytest.mark.parametrize("labels,match", [
    (torch.tensor([0.0, 1.0, 1.0]), r"`labels` must be integer class labels, got dtype torch.float32"),
    (torch.tensor([0, -1, 1]), r"`labels` must be class labels >= 0, got -1"),
    (torch.tensor([0, 1]), r"`labels` must have one entry per score, 3 entries \(as `scores`\), got 2\."),
    (torch.tensor([[0, 1, 1]]), r"`labels` must be a 1-D tensor"),
])
def test_per_class_trim_mask_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        per_class_trim_mask(torch.tensor([0.1, 0.2, 0.3]), labels, 0.5)


@pytest.mark.parametrize("seed", range(8))
def test_starved_classes_matches_a_slow_reference(seed):
    from lit_robust.selection.rules import starved_classes

    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 400, (1,), generator=g))
    labels = torch.randint(0, 6, (n,), generator=g)
    # a kept share per class; half the seeds keep most of every class and one less (the drop-rate branch)
    keep = torch.rand(6, generator=g) if seed % 2 else 1 - 0.02 * torch.rand(6, generator=g)
    if not seed % 2:
        keep[seed % 6] = 0.65
    kept = torch.rand(n, generator=g) < keep[labels]
    overall = sum(bool(k) for k in kept) / n
    expected = []
    for c in range(int(labels.max()) + 1):
        count = sum(1 for y in labels.tolist() if y == c)
        k = sum(1 for y, s in zip(labels.tolist(), kept.tolist()) if y == c and s)
        dropped_share, overall_dropped = (count - k) / max(count, 1), 1 - overall
        often = dropped_share >= 5 * overall_dropped - 1e-12 and dropped_share >= 0.1 - 1e-12
        if count >= 10 and (k < 0.5 * overall * count or often):
            expected.append((c, k, count))
    assert starved_classes(labels, kept) == expected
    assert starved_classes(labels[:0], kept[:0]) == []
    if seed in (2, 4, 6):  # found by the drop rate alone (35 % of the class against about 6 % overall)
        assert expected and not starved_classes(labels, kept, drop_factor=math.inf)


def test_mismatched_or_float_indices_are_named():
    """`per_class_trim_mask` and `scatter_scores` said "got 2 indices for 3 scores; they must match" without naming
    the argument, and `scatter_scores` with float indices raised torch's bare IndexError."""
    from lit_robust.selection.rules import scatter_scores

    y = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match=r"`index` must have one entry per score, 3 entries \(as `scores`\), got 2\."):
        per_class_trim_mask(torch.ones(3), y, 0.5, torch.arange(2))
    with pytest.raises(ValueError, match=r"`index` must have one entry per score, 3 entries \(as `scores`\), got 2\."):
        scatter_scores(3, torch.arange(2), torch.ones(3))
    with pytest.raises(ValueError, match=r"`index` must hold integer sample indices, got dtype torch.float32"):
        scatter_scores(3, torch.tensor([0.0, 1.0, 2.0]), torch.ones(3))
