"""estimate_corruption_from_probs (confident learning through cleanlab): against a plain-Python reference of the
confident-learning count, cleanlab's own `num_label_issues`, probabilities with a known number of wrong labels,
clean probabilities, degenerate inputs and argument checks."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from lit_robust.functional.estimation import estimate_corruption_from_probs

cleanlab = pytest.importorskip("cleanlab")


def reference_flags(probs: list[list[float]], labels: list[int]) -> list[bool]:
    """Confident learning's off-diagonal samples, written out: per-class threshold t_j = mean p_j over the samples
    labelled j; a sample's guessed true class is its one class with p_j >= t_j, or its argmax when several are;
    it is flagged when that guess differs from its label, unless its argmax already is its label."""
    n, k = len(probs), len(probs[0])
    t = []
    for j in range(k):
        col = [probs[i][j] for i in range(n) if labels[i] == j]
        t.append(sum(col) / len(col))
    flags = []
    for i in range(n):
        confident = [j for j in range(k) if probs[i][j] >= t[j] - 1e-6]
        argmax = max(range(k), key=lambda j: (probs[i][j], -j))
        if not confident:
            flags.append(False)
            continue
        guess = confident[0] if len(confident) == 1 else argmax
        flags.append(guess != labels[i] and argmax != labels[i])
    return flags


def random_case(seed: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(2, 7, (1,), generator=g))
    labels = torch.randint(0, k, (n,), generator=g)
    labels[:k] = torch.arange(k)  # every class present
    logits = 2.0 * torch.randn(n, k, generator=g)
    logits[torch.arange(n), labels] += 1.5
    return logits.softmax(1).double(), labels


@pytest.mark.parametrize("seed", range(12))
def test_matches_plain_python_confident_learning(seed):
    probs, labels = random_case(seed)
    est = estimate_corruption_from_probs(probs, labels)
    flags = reference_flags(probs.tolist(), labels.tolist())
    assert (est.clean_posterior == 0).tolist() == flags
    assert est.rate == pytest.approx(sum(flags) / len(flags), abs=1e-12)
    assert 0.1 < est.rate < 0.9  # the cases are not trivial


@pytest.mark.parametrize("seed", range(4))
def test_count_equals_cleanlab_num_label_issues(seed):
    from cleanlab.count import num_label_issues

    probs, labels = random_case(100 + seed, n=500)
    est = estimate_corruption_from_probs(probs, labels)
    assert round(est.rate * 500) == num_label_issues(labels.numpy(), probs.numpy())


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.45])
def test_known_wrong_labels_from_out_of_sample_probabilities(eps):
    """A model that predicts the true class with 0.8 for every sample: exactly the wrong labels are flagged."""
    n, k = 1000, 10
    g = torch.Generator().manual_seed(0)
    true = torch.arange(n) % k
    wrong = torch.zeros(n, dtype=torch.bool)
    wrong[torch.randperm(n, generator=g)[: round(eps * n)]] = True
    given = torch.where(wrong, (true + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k, true)
    probs = torch.full((n, k), 0.2 / (k - 1), dtype=torch.float64)
    probs[torch.arange(n), true] = 0.8
    est = estimate_corruption_from_probs(probs, given)
    assert est.rate == pytest.approx(eps, abs=1e-12)
    assert torch.equal(est.clean_posterior == 0, wrong)


def test_clean_labels_give_zero():
    probs, labels = random_case(7)
    clean = probs.argmax(1)  # every label is the model's prediction
    assert estimate_corruption_from_probs(probs, clean).rate == 0.0


def test_float32_probs_and_permutation():
    probs, labels = random_case(3)
    a = estimate_corruption_from_probs(probs.float(), labels)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    b = estimate_corruption_from_probs(probs[perm], labels[perm])
    assert a.rate == b.rate and torch.equal(a.clean_posterior[perm], b.clean_posterior)


def test_nonfinite_rows_count_as_corrupted():
    probs, labels = random_case(5)
    base = estimate_corruption_from_probs(probs, labels)
    bad = torch.cat([probs, torch.full((2, probs.shape[1]), float("nan"), dtype=torch.float64)])
    with pytest.warns(RuntimeWarning, match="2 of 202 probability rows hold NaN or inf"):
        est = estimate_corruption_from_probs(bad, torch.cat([labels, torch.zeros(2, dtype=torch.long)]))
    assert est.nonfinite == 2 and est.rate == pytest.approx((base.rate * 200 + 2) / 202)
    assert est.clean_posterior[-2:].tolist() == [0.0, 0.0]


def test_too_few_rows_warn_and_count_nothing():
    probs, labels = random_case(5, n=10)
    with pytest.warns(RuntimeWarning, match="only 10 finite rows"):
        est = estimate_corruption_from_probs(probs, labels)
    assert est.rate == 0.0 and est.reason == "too few samples"


@pytest.mark.parametrize("args, message", [
    ((torch.rand(30), torch.zeros(30, dtype=torch.long)), "`probs` must be a [n, K] tensor"),
    ((torch.full((30, 1), 1.0), torch.zeros(30, dtype=torch.long)), "`probs` must be a [n, K] tensor"),
    ((torch.full((30, 2), 0.5), torch.zeros(29, dtype=torch.long)), "`labels` must be a 1-D tensor with one label"),
    ((torch.full((30, 2), 0.5), torch.zeros(30)), "`labels` must hold integer class indices, got dtype torch.float32"),
    ((torch.full((30, 2), 0.5), torch.full((30,), 2)), "`labels` must be in [0, 1]"),
    ((torch.full((30, 2), 2.0), torch.zeros(30, dtype=torch.long)), "`probs` must hold class probabilities"),
    (([[0.5, 0.5]] * 30, torch.zeros(30, dtype=torch.long)), "`probs` must be a torch.Tensor or a NumPy array, got list"),
    ((torch.full((30, 2), 0.5), np.array(["a"] * 30)), "`labels` must hold real numbers, got an array of dtype <U1"),
    # the cast to float64 dropped the imaginary part (torch's own warning) and the count went on
    ((torch.full((30, 2), 0.5, dtype=torch.complex64), torch.zeros(30, dtype=torch.long)),
     "`probs` must be real, got dtype torch.complex64."),
    # unsigned labels ended in torch's '"min_all" not implemented for 'UInt16''
    ((torch.full((30, 2), 0.5), torch.full((30,), 2, dtype=torch.uint16)),
     "`labels` must be in [0, 1] (one column of `probs` per class; a negative label marks an unlabelled row), got "
     "values in [2, 2]."),
    ((torch.full((30, 2), 0.5), np.full(30, 3, dtype=np.uint64)), "`labels` must be in [0, 1]"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        estimate_corruption_from_probs(*args)


@pytest.mark.parametrize("as_given", [
    lambda y: y.to(torch.uint16), lambda y: y.numpy().astype(np.uint32), lambda y: y.numpy().astype(np.uint64),
], ids=["torch.uint16", "np.uint32", "np.uint64"])
def test_unsigned_labels_count_as_int64_labels(as_given):
    probs, labels = random_case(3)
    a, b = estimate_corruption_from_probs(probs, labels), estimate_corruption_from_probs(probs, as_given(labels))
    assert b.rate == a.rate and torch.equal(b.clean_posterior, a.clean_posterior)


def test_numpy_min_samples_is_an_integer():
    """``min_samples=np.int64(20)`` was refused with "`min_samples` must be an integer >= 2, got np.int64(20)"."""
    probs, labels = random_case(4)
    assert estimate_corruption_from_probs(probs, labels, min_samples=np.int64(20)).rate == \
        estimate_corruption_from_probs(probs, labels, min_samples=20).rate


def test_bad_method_and_min_samples():
    probs, labels = random_case(0)
    with pytest.raises(ValueError, match="`method` must be 'cleanlab', got 'gmm'"):
        estimate_corruption_from_probs(probs, labels, "gmm")
    with pytest.raises(ValueError, match="`min_samples` must be an integer >= 2, got 1"):
        estimate_corruption_from_probs(probs, labels, min_samples=1)


def test_numpy_arrays_and_pandas_series_are_taken_as_tensors():
    """A cleanlab user's `cross_val_predict` probabilities and labels are NumPy arrays (their labels a DataFrame
    column): they were refused. Every estimator now reads them as it reads tensors."""
    import pandas as pd

    from lit_robust import estimate_corruption, estimate_corruption_from_predictions
    from lit_robust.functional.estimation import estimate_corruption_from_class_floor

    probs, labels = random_case(3, n=300)
    want = estimate_corruption_from_probs(probs, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only array (a Series under copy-on-write) made torch warn
        got = estimate_corruption_from_probs(probs.numpy(), pd.Series(labels.numpy()))
        big_endian = estimate_corruption_from_probs(probs.numpy().astype(">f8"), labels.numpy().astype(">i8"))
    assert got.rate == want.rate and torch.equal(got.clean_posterior, want.clean_posterior)
    assert big_endian.rate == want.rate
    scores = -torch.log(probs[torch.arange(300), labels])
    predicted = probs.argmax(1)
    assert estimate_corruption(scores.numpy()).rate == estimate_corruption(scores).rate
    for estimator in (estimate_corruption_from_predictions, estimate_corruption_from_class_floor):
        want = estimator(scores, labels, predicted)
        got = estimator(scores.numpy(), labels.numpy(), predicted.numpy())
        assert got.rate == want.rate and torch.equal(got.clean_posterior, want.clean_posterior)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_softmax_is_taken_as_probabilities(dtype):
    """A bfloat16 softmax sums to 1 only within ~3e-3 (8-bit mantissa): it was refused with "apply softmax to logits
    first", although it was one. It now gives the estimate of the same probabilities in float32."""
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 10, generator=g)
    labels = logits.argmax(1)
    labels[:50] = (labels[:50] + 1) % 10
    probs = torch.softmax(logits.to(dtype), 1)
    assert float((probs.double().sum(1) - 1).abs().max()) > (1e-3 if dtype == torch.bfloat16 else 0.0)
    est = estimate_corruption_from_probs(probs, labels)
    assert est.rate == pytest.approx(estimate_corruption_from_probs(torch.softmax(logits, 1), labels).rate, abs=0.01)
    with pytest.raises(ValueError, match="`probs` must hold class probabilities"):  # logits are still refused
        estimate_corruption_from_probs(logits.to(dtype), labels)


def test_negative_labels_are_unlabelled_rows():
    """Rows labelled -100 or -1 carry no label: left out of the count (posterior 1, ``unlabelled``), where they had
    been refused; a label past the last column is still refused."""
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]] * 10)
    labels = torch.tensor([0, 0, 1, 1] * 9 + [1, 1, 0, 0])
    alone = estimate_corruption_from_probs(probs, labels)
    est = estimate_corruption_from_probs(torch.cat([probs, probs[:4]]), torch.cat([labels, torch.tensor([-100, -1] * 2)]))
    assert est.unlabelled == 4 and est.n == 44
    assert est.rate == pytest.approx(alone.rate * 40 / 44) and est.rate_labelled == pytest.approx(alone.rate)
    assert torch.equal(est.clean_posterior[40:], torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=re.escape("`labels` must be in [0, 1]") + ".*got values in \\[-1, 2\\]"):
        estimate_corruption_from_probs(probs[:3], torch.tensor([-1, 0, 2]))
