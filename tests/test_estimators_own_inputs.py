"""The estimators and the report builder on a user's own arrays, as a newcomer called them without Lightning: NumPy
and pandas inputs, arguments in another function's order, probabilities in percent, float or missing labels, and
where the warnings point."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lit_robust.functional.estimation import (
    estimate_corruption,
    estimate_corruption_from_class_floor,
    estimate_corruption_from_interior,
    estimate_corruption_from_predictions,
    estimate_corruption_from_probs,
)
from lit_robust.report import build_report, load_report, write_report

RNG = np.random.default_rng(0)
N = 200
LOSS, LABELS, PRED, CONF = RNG.random(N), RNG.integers(0, 3, N), RNG.integers(0, 3, N), RNG.random(N)
PROBS = RNG.dirichlet([1.0, 1.0, 1.0], N)
MIXED_UP = "(an array there: are the arguments in this function's order?"


@pytest.mark.parametrize(("fn", "args", "said"), [
    # the interior estimator's arguments given to the disagreement one, a loss's labels to the mixture, ...: each was
    # numpy's "The truth value of an array with more than one element is ambiguous", naming no argument
    (estimate_corruption_from_predictions, (LOSS, LABELS, PRED, CONF), "`method` must be 'gmm' or 'bmm', got a "
                                                                        "`ndarray` of shape (200,)"),
    (estimate_corruption, (LOSS, LABELS), "`method` must be 'gmm' or 'bmm', got a `ndarray` of shape (200,)"),
    (estimate_corruption_from_probs, (PROBS, LABELS, PRED), "`method` must be 'cleanlab', got a `ndarray` of shape"),
    (estimate_corruption_from_class_floor, (LOSS, LABELS, PRED, CONF), "`method` must be 'gmm' or 'bmm', got a"),
    (estimate_corruption_from_interior, (LOSS, LABELS, PRED, CONF, PROBS), "got a `ndarray` of shape (200, 3)"),
])
def test_an_array_in_the_method_slot_is_named(fn, args, said):
    with pytest.raises(ValueError, match=re.escape(said) + ".*" + re.escape(MIXED_UP)):
        fn(*args)


def test_probabilities_in_percent_are_told_to_be_divided_not_softmaxed():
    """The advice was softmax whatever the rows held: a user who applied it to percentages counted 32.6 % where
    their probabilities, divided by 100, read 19.3 %."""
    with pytest.raises(ValueError, match=re.escape("got a row summing to 100: divide each row by its sum "
                                                   "(percentages: by 100). Softmax is for logits")):
        estimate_corruption_from_probs(PROBS * 100, LABELS)
    with pytest.raises(ValueError, match=re.escape("got a negative entry (-0.4") + ".*" + re.escape(
            "logits or log-probabilities? Apply softmax to logits, exp to log-probabilities.")):
        estimate_corruption_from_probs(PROBS - 0.5, LABELS)
    estimate_corruption_from_probs(PROBS * 100 / 100, LABELS)  # the advice works


def test_float_and_missing_labels_are_told_how_to_cast():
    with pytest.raises(ValueError, match=re.escape("`labels` must hold integer class indices, got dtype "
                                                   "torch.float64: class labels stored as floats (e.g. 3.0); cast "
                                                   "them to integers (`.long()`, NumPy `.astype(int)`).")):
        estimate_corruption_from_predictions(LOSS, LABELS.astype(float), PRED)
    # pandas' nullable column with a missing label reads as float64 with NaN
    with_na = pd.Series(LABELS, dtype="Int64")
    with_na[3] = pd.NA
    with pytest.raises(ValueError, match=re.escape("after marking the 1 missing ones (NaN, pandas' <NA>) -100: a row "
                                                   "without a label is left out of the count.")):
        estimate_corruption_from_predictions(LOSS, with_na.to_numpy(dtype=float, na_value=np.nan), PRED)
    marked = with_na.fillna(-100).to_numpy(dtype=int)
    assert estimate_corruption_from_predictions(LOSS, marked, PRED).unlabelled == 1  # the advice works
    with pytest.raises(ValueError, match=re.escape("got an array of dtype <U3; class names? map them to the column "
                                                   "indices 0..K-1")):
        estimate_corruption_from_probs(PROBS, np.array(["cat", "dog"] * 100))
    with pytest.raises(ValueError, match=re.escape("`labels` must hold integer class indices, got dtype "
                                                   "torch.float64.")):
        estimate_corruption_from_predictions(LOSS, LABELS + 0.5, PRED)  # not whole numbers: no cast advice


@pytest.mark.parametrize(("fn", "extra"), [
    (estimate_corruption_from_predictions, ()), (estimate_corruption_from_class_floor, ()),
    (estimate_corruption_from_interior, (CONF[:10],)),
])
def test_the_label_estimators_warn_in_their_own_name_at_the_callers_line(fn, extra):
    """They said "estimate_corruption: only 10 finite scores ..." at a line inside the library."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(LOSS[:10], LABELS[:10], PRED[:10], *extra)
    assert [(str(w.message).split(":")[0], w.filename) for w in caught] == [(fn.__name__, __file__)]
    assert "only 10 finite scores" in str(caught[0].message)
    nan_loss = LOSS.copy()
    nan_loss[0] = np.nan
    with pytest.warns(RuntimeWarning, match=f"^{fn.__name__}: 1 of 200 scores are NaN or infinite") as record:
        fn(nan_loss, LABELS, PRED, *((CONF,) if extra else ()))
    assert record[0].filename == __file__


def test_build_report_takes_numpy_and_pandas_as_the_estimators_do(tmp_path):
    """cleanlab's mask `~find_label_issues(...)` as `kept` passed the shape checks and ended in "'numpy.ndarray' object
    has no attribute 'detach'"; so did NumPy `index`, a pandas Series of scores and NumPy `corrupted`."""
    kept = LOSS < 0.8
    corrupted = LABELS != PRED
    args = dict(score_columns=["score"], given_label=LABELS, predicted_label=PRED, corrupted=corrupted, estimator=None)
    from_numpy = build_report(np.arange(N), pd.Series(LOSS), kept, **args)
    from_torch = build_report(torch.arange(N), torch.from_numpy(LOSS), torch.from_numpy(kept), **{
        **args, "given_label": torch.from_numpy(LABELS), "predicted_label": torch.from_numpy(PRED),
        "corrupted": torch.from_numpy(corrupted)})
    assert from_numpy == from_torch
    assert from_numpy["kept"][:3] == [False, False, False] and sum(from_numpy["kept"]) == int(kept.sum())
    with pytest.raises(ValueError, match=re.escape("`score_columns` must be a list of column names, one per column of "
                                                   "`scores`, got 'score' (e.g. ['score'] for one).")):
        build_report(np.arange(N), LOSS, kept, **{**args, "score_columns": "score"})
    with pytest.raises(ValueError, match=re.escape("`kept` must be a torch.Tensor or a NumPy array, got list.")):
        build_report(np.arange(N), LOSS, kept.tolist(), **args)


def test_write_report_names_a_source_index_that_does_not_fit(tmp_path):
    """A `source_index` of the wrong length or a list ended in torch's IndexError / TypeError."""
    table = build_report(np.arange(N), LOSS, LOSS < 0.8, score_columns=["score"], estimator=None)
    with pytest.raises(ValueError, match=re.escape("`source_index` must be a 1-D integer array with one entry per "
                                                   "training sample (the report's `index` goes up to 199), got dtype "
                                                   "torch.int64 and shape (10,).")):
        write_report(table, tmp_path / "r.csv", np.arange(10))
    with pytest.raises(ValueError, match=re.escape("`source_index` must be a torch.Tensor or a NumPy array, got list.")):
        write_report(table, tmp_path / "r.csv", list(range(N)))
    write_report(table, tmp_path / "r.csv", pd.Index(np.arange(N) + 1000))
    frame = load_report(tmp_path / "r.csv")
    assert (frame["source_index"] == frame["index"] + 1000).all()
