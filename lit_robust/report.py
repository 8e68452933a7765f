"""The per-sample report: one row per training sample, most suspicious first (pure; no Lightning import).

``ITLM(report=True)`` and ``BatchFilter(report=True)`` (and the modules with their own: ``RealNVP`` /
``RobustRealNVP``'s trimming filter, ``RCA``; ``ActivationClustering``, ranked by its ``cluster_score``) write it at the end of a fit (``lit-robust fit`` turns it on by
default); :func:`load_report` reads it back. The columns, in this order:

==========================  ==========================================================================================
``rank``                    1 = most suspicious
``index``                   the sample's dataset index (what :class:`~lit_robust.IndexedDataset` yields)
``score_round_<r>``         ITLM: the score (``sample_scores``, e.g. the loss) given by round ``r``'s model, one column
                            per round; the last from a scoring pass after the fit. Empty for a round whose model did
                            not score (a collapsed round kept its selection).
``score_last_epoch``        per-batch filters: the mean of the rule's score over the sample's batches in the last
                            epoch (training mode; RCA: its exchange score); empty when the last epoch did not see the
                            sample. "The last epoch" is the last whole one when a stop (``max_steps``, ``max_time``,
                            EarlyStopping inside an epoch) cut the final epoch short, for every filter column here.
``kept``                    ITLM: the last round trained on it; filters: no batch of the last epoch dropped it.
``first_dropped_round``     ITLM: the first round whose selection left it out (empty: never); filters:
/ ``_epoch``                the first epoch in which a batch dropped it.
``clean_posterior``         the estimate of the callback's ``estimator`` on the ranking score (the last score column)
                            of every scored sample: ``"gmm"``/``"bmm"``, ``P(clean | score)`` of
                            :func:`~lit_robust.estimate_corruption`; ``"disagreement"``/``"class_floor"``/
                            ``"disagreement_or_interior"``/``"floor_or_interior"`` (the last two ITLM's, from the
                            final pass's probabilities; ITLM's default is the last, the filters' ``"disagreement"``),
                            :func:`~lit_robust.functional.estimation.label_clean_posterior` (1 where the
                            predicted label agrees with the given one, ``1 - eps/d`` where not), or the gmm's when a
                            scored sample lacks a label. 0 for a NaN/inf score. Either way ``sum(1 - clean_posterior)``
                            is that estimate's number of corrupted samples: ``report.head(k)`` with that ``k``. Empty
                            for an unlabelled sample (below).
``given_label``             the training target, when it is an integer class label (empty otherwise, e.g. regression).
``predicted_label``         ITLM: the final model's :meth:`~lit_robust.RobustMixin.predicted_labels` (by default the
                            argmax of the ``[B, C]`` outputs ``per_sample_loss`` returns); filters: the argmax of those
                            outputs in the sample's last training forward of the last epoch; empty when there is none.
``given_class`` /           with a :class:`~lit_robust.TableDataModule`: the labels as the table names them (its
``predicted_class``         ``classes``); for its one-target regressions ``given_<column>`` / ``predicted_<column>``,
                            the targets in the table's units.
``corrupted``               the ground-truth flag, when the batches carry it (``(index, x, y, is_corrupted)``).
``given_target`` /          regression with one floating target per sample (shape ``[B]`` or ``[B, 1]``) only: the
``predicted_target``        target, and the model's output for it when ``per_sample_loss`` returns ``(losses,
                            outputs)`` with one output per sample (ITLM: the final model's, in eval mode; filters: the
                            mean over the sample's training forwards of the last epoch). Empty where unknown; absent
                            from a report whose targets are not such values (class labels, images, several targets).
==========================  ==========================================================================================

Ranking, the project's one tie rule turned around: a NaN/inf score first (the selections drop those first), then
finite scores descending, ties by ascending index; then a classifier's unlabelled samples -- a negative
``given_label`` such as ``F.cross_entropy(..., ignore_index=-100)``'s -100 or a semi-labelled set's -1, which the
label estimators leave out (:attr:`~lit_robust.functional.estimation.CorruptionEstimate.unlabelled`) -- by index,
whatever their score (an ignored loss of 0 had ranked them as the cleanest); samples without a ranking score last, by
index. The scores are
ranked as the file holds them (float32), so rows it shows tied are in index order.

CSV is written with the standard library, in UTF-8 (``pandas.read_csv`` opens it; :func:`load_report` reads the text
columns as text, so a class "None" or an id "007" comes back as written, as from Parquet); Parquet needs ``pyarrow``.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust.functional.estimation import (
    LABEL_ESTIMATORS,
    as_tensor,
    estimate_corruption,
    estimate_from_labels,
    not_integer_labels,
)
from lit_robust.selection.rules import starved_classes

__all__ = [
    "REPORT_FORMATS",
    "build_report",
    "suspicion_order",
    "unlabelled_rows",
    "rarely_predicted_classes",
    "one_class_predicted",
    "class_label",
    "datamodule_classes",
    "posterior_note",
    "labels_from_outputs",
    "label_part",
    "given_and_predicted",
    "integer_labels",
    "scalar_targets",
    "values_from_outputs",
    "write_report",
    "load_report",
    "report_format_of",
    "folder_error",
    "RoundScores",
    "EpochScores",
]

ReportFormat = Literal["csv", "parquet"]
REPORT_FORMATS = ("csv", "parquet")
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# duplicate_group, conflicting_target: a table's rows given more than once (TableDataModule.describe_report)
_INT_COLUMNS = ("rank", "index", "source_index", "first_dropped_round", "first_dropped_epoch", "given_label",
                "predicted_label", "duplicate_group")
_BOOL_COLUMNS = ("kept", "corrupted", "conflicting_target")
_TEXT_COLUMNS = ("given_class", "predicted_class", "path")  # class names (`describe_report`, image folders), files
NO_LABEL = -(2**62)  # "no label" in the integer label tensors of the accumulators below


# -- labels ------------------------------------------------------------------------------------------------------
def integer_labels(target: Any) -> Tensor | None:
    """``target`` when it is a 1-D tensor of integer class labels, else ``None`` (regression targets, soft labels,
    one-hot rows, a non-tensor). One-hot rows are not read as labels: telling them from multi-label or regression
    rows needs their values, a host read in every training step (a reviewer counted 2-4 per batch).

    >>> integer_labels(torch.tensor([2, 0])).tolist(), integer_labels(torch.tensor([0.5, 1.0]))
    ([2, 0], None)
    """
    if isinstance(target, Tensor) and target.ndim == 1 and not target.is_floating_point() \
            and not target.is_complex() and target.dtype != torch.bool:
        return target
    return None


def label_part(value: Any, module: Any, strict: bool = True) -> Any:
    """The class-label part of a target (or of outputs) of several parts: ``value[module.label_key]`` when the module
    names one (:attr:`~lit_robust.RobustMixin.label_key`) and ``value`` is a dict, list or tuple holding it; ``value``
    itself otherwise (a tensor, or no key named). A missing key raises a ``ValueError`` naming the keys there are;
    with ``strict=False`` (outputs, which need not hold every head) it gives ``None``.

    >>> class Module: label_key = "digit"
    >>> label_part({"digit": torch.tensor([3]), "ink": torch.tensor([0.2])}, Module()).tolist()
    [3]
    """
    key = getattr(module, "label_key", None)
    if key is None or isinstance(value, Tensor) or not isinstance(value, (dict, list, tuple)):
        return value
    if isinstance(key, str) and hasattr(value, "_fields"):  # a namedtuple (default_collate keeps its type)
        if key in value._fields:
            return getattr(value, key)
    else:
        try:
            return value[key]
        except (KeyError, IndexError, TypeError):
            pass
    if not strict:
        return None
    # a wrong key emptied the label columns without a word (a reviewer's `label_key="label"` for "digit")
    keys = list(value) if isinstance(value, dict) else list(getattr(value, "_fields", range(len(value))))
    raise ValueError(f"`label_key`={key!r} of {type(module).__name__} is not among its targets' keys or positions "
                     f"{keys}: set it to the one that holds the class labels.")


def given_and_predicted(outputs: Any, target: Any, module: Any) -> tuple[Tensor | None, Tensor | None]:
    """``(given, predicted)`` class labels of one batch: :func:`integer_labels` of the targets and
    :func:`labels_from_outputs` of the outputs, both read at the module's ``label_key`` (:func:`label_part`)."""
    label = label_part(target, module)
    return integer_labels(label), labels_from_outputs(label_part(outputs, module, strict=False), label)


def labels_from_outputs(outputs: Any, target: Any) -> Tensor | None:
    """A classifier's predicted class per sample: ``outputs.argmax(1)`` when ``outputs`` are ``[B, C]`` floating
    scores (logits or probabilities, ``C >= 2``) and ``target`` is a ``[B]`` integer label tensor; else ``None``
    (regression, a GAN's or a flow's outputs, a single binary logit).

    >>> labels_from_outputs(torch.tensor([[0.1, 2.0], [3.0, -1.0]]), torch.tensor([1, 1])).tolist()
    [1, 0]
    >>> labels_from_outputs(torch.tensor([[0.3], [0.2]]), torch.tensor([1, 0])) is None
    True
    """
    y = integer_labels(target)
    return outputs.detach().argmax(1) if y is not None and _class_scores(outputs, y) else None


def _class_scores(outputs: Any, labels: Tensor) -> bool:
    """Whether ``outputs`` are a classifier's ``[B, C]`` floating scores (``C >= 2``) for the ``[B]`` ``labels``: read
    off their shape and dtype alone (no host sync)."""
    return (isinstance(outputs, Tensor) and outputs.is_floating_point() and outputs.ndim == 2
            and outputs.shape[0] == labels.shape[0] and outputs.shape[1] >= 2)


def confidence_from_outputs(outputs: Any, target: Any) -> Tensor | None:
    """A classifier's probability of its predicted class per sample, where :func:`labels_from_outputs` reads a
    prediction: the row's largest value when the ``[B, C]`` outputs are probabilities (every value in ``[0, 1]``, each
    row summing to 1 within 1e-3; read per batch), else the largest of their softmax (logits, or log-probabilities: the softmax of
    ``log_softmax`` is the softmax itself). ``[B]`` float32, or ``None``.

    >>> confidence_from_outputs(torch.tensor([[0.0, 2.0], [3.0, 1.0]]), torch.tensor([1, 1])).tolist()
    [0.8807970285415649, 0.8807970285415649]
    >>> confidence_from_outputs(torch.tensor([[0.25, 0.75], [0.5, 0.5]]), torch.tensor([1, 1])).tolist()
    [0.75, 0.5]
    """
    if labels_from_outputs(outputs, target) is None:
        return None
    x = outputs.detach().float()
    probs = bool(((x >= 0) & (x <= 1)).all()) and bool(((x.sum(1) - 1).abs() <= 1e-3).all())
    return (x if probs else torch.softmax(x, 1)).max(1).values


def scalar_targets(target: Any) -> Tensor | None:
    """``target`` as ``[B]`` floats when it holds one floating value per sample (shape ``[B]`` or ``[B, 1]``: a
    regression with one target), else ``None`` (class labels, several targets, a non-tensor).

    >>> scalar_targets(torch.tensor([[0.5], [2.0]])).tolist(), scalar_targets(torch.tensor([1, 0]))
    ([0.5, 2.0], None)
    """
    if not isinstance(target, Tensor) or not target.is_floating_point() or target.ndim not in (1, 2):
        return None
    if target.ndim == 2 and target.shape[1] != 1:
        return None
    return target.detach().reshape(-1)


def values_from_outputs(outputs: Any, target: Any) -> Tensor | None:
    """A regression's predicted value per sample: ``outputs`` as ``[B]`` floats when :func:`scalar_targets` takes
    ``target`` and ``outputs`` hold one floating value per sample (``[B]`` or ``[B, 1]``); else ``None``.

    >>> values_from_outputs(torch.tensor([[0.4], [1.5]]), torch.tensor([0.5, 2.0])).tolist()
    [0.4000000059604645, 1.5]
    >>> values_from_outputs(torch.tensor([[0.1, 2.0]]), torch.tensor([1])) is None
    True
    """
    y = scalar_targets(target)
    if y is None or not isinstance(outputs, Tensor) or not outputs.is_floating_point():
        return None
    if outputs.ndim not in (1, 2) or outputs.shape[0] != y.shape[0] or outputs.numel() != y.numel():
        return None
    return outputs.detach().reshape(-1)


def targets_reported(module: Any) -> bool:
    """Whether the report shows ``module``'s targets and predictions: not for placeholder targets
    (:attr:`~lit_robust.RobustMixin.report_targets` ``False``, a GAN's or a flow's zeros)."""
    return bool(getattr(module, "report_targets", True))


def report_fields(outputs: Any, batch: Any, module: Any = None) -> dict[str, Tensor | None]:
    """What a training forward tells the report about one batch (an :func:`~lit_robust.unpack_batch` result with
    ``target`` and ``corrupted``): :meth:`EpochScores.add`'s keyword arguments after ``dropped``; the ground truth
    alone where ``module``'s targets are not reported (:func:`targets_reported`)."""
    if not targets_reported(module):
        return {"corrupted": batch.corrupted}
    given, predicted = given_and_predicted(outputs, batch.target, module)
    return {"predicted": predicted, "given": given,
            "corrupted": batch.corrupted, "given_target": scalar_targets(batch.target),
            "predicted_target": values_from_outputs(outputs, batch.target)}


# -- ranking and the table ---------------------------------------------------------------------------------------
def suspicion_order(scores: Tensor, index: Tensor, scored: Tensor | None = None) -> Tensor:
    """Positions of the samples, most suspicious first: non-finite scores (by index), then finite scores
    descending with ties by ascending index, then the samples with ``scored == False`` (by index).

    >>> suspicion_order(torch.tensor([0.5, 0.9, float("nan"), 0.5]), torch.tensor([3, 1, 7, 2])).tolist()
    [2, 1, 3, 0]
    """
    if scores.ndim != 1:
        raise ValueError(f"`scores` must be 1-D (one score per sample), got shape {tuple(scores.shape)}.")
    if index.shape != scores.shape:
        raise ValueError(f"`index` must have one entry per score, shape ({scores.shape[0]},) (as `scores`), got "
                         f"{tuple(index.shape)}.")
    s = scores.detach().cpu().double()
    idx = index.detach().cpu().long()
    known = torch.ones_like(idx, dtype=torch.bool) if scored is None else scored.detach().cpu().bool()
    group = torch.where(known, torch.where(torch.isfinite(s), 1, 0), 2)
    key = torch.where(group == 1, -s, torch.zeros_like(s))
    order = torch.argsort(idx, stable=True)
    order = order[torch.argsort(key[order], stable=True)]
    return order[torch.argsort(group[order], stable=True)]


def unlabelled_rows(ranking: Tensor, scored: Tensor, given_label: Tensor | None, predicted_label: Tensor | None
                    ) -> Tensor:
    """``[n]`` booleans: the scored rows of a classifier (a predicted label) whose given label is negative but not
    :data:`NO_LABEL` -- a sample without a label (``F.cross_entropy(..., ignore_index=-100)``, a semi-labelled set's
    -1) -- and whose ranking score is finite (pure). The report ranks them after the labelled rows and leaves their
    ``clean_posterior`` empty; the label estimators leave them out of their counts.

    >>> unlabelled_rows(torch.tensor([0.0, 0.3]), torch.tensor([True, True]), torch.tensor([-100, 2]),
    ...                 torch.tensor([4, 2])).tolist()
    [True, False]
    """
    n = ranking.shape[0]
    if given_label is None or predicted_label is None:
        return torch.zeros(n, dtype=torch.bool)
    given, predicted = given_label.detach().cpu().long(), predicted_label.detach().cpu().long()
    finite = torch.isfinite(ranking.detach().cpu().double()) if ranking.is_floating_point() else torch.ones_like(scored)
    return (given < 0) & (given != NO_LABEL) & (predicted != NO_LABEL) & scored & finite


def rarely_predicted_classes(given: Tensor, predicted: Tensor, ratio: float = 0.25, min_count: int = 10
                             ) -> list[tuple[int, int, int]]:
    """``(class, times predicted, times given)`` of each class that ``predicted`` names for fewer than ``ratio`` times
    as many samples as ``given`` does, among classes given at least ``min_count`` times (pure; by class). Samples
    without both labels (:data:`NO_LABEL`, any negative value) are left out.

    A model trained on a selection that left out most of a class rarely predicts it, and its ``predicted_label`` is
    then no label to relabel that class's samples with (a cleanlab user's ITLM kept 21 of 600 Pullovers under pair
    noise; the final model predicted Pullover for 6 of 6,000 samples, and relabelling the report's top rows from it
    lowered the labels' accuracy from 83.9 % to 77.2 %).

    >>> rarely_predicted_classes(torch.tensor([0] * 12 + [1] * 12), torch.tensor([0] * 22 + [1] * 2))
    [(1, 2, 12)]
    """
    both = (given >= 0) & (predicted >= 0)
    g, p = given[both].long(), predicted[both].long()
    if not g.numel():
        return []
    size = int(max(int(g.max()), int(p.max()))) + 1
    n_given, n_pred = torch.bincount(g, minlength=size), torch.bincount(p, minlength=size)
    return [(c, int(n_pred[c]), int(n_given[c])) for c in range(size)
            if n_given[c] >= min_count and n_pred[c] < ratio * n_given[c]]


def one_class_predicted(given: Tensor, predicted: Tensor, share: float = 0.9, min_other: int = 10
                        ) -> tuple[int, int, int] | None:
    """``(class, times predicted, samples)`` when ``predicted`` names one class for at least ``share`` of the samples
    while ``given`` spreads them over several classes — none holding half of them, or, where one does, the class
    predicted is given to at least ``share`` of the ``min_other`` or more samples labelled otherwise: a model that did
    not learn, not a selection's imbalance (pure); ``None`` otherwise. Samples without both labels are left out.

    An image-folder user's augmented fit with too large a learning rate ended at the uniform guess's loss, its model
    predicting one class for all 1,500 files: no round was judged collapsed (the loss had fallen to ln(5) from a
    spike), and the only warning advised ``per_class=True``. A CLI newcomer's two-class table (59 % benign) at a
    learning rate of 10 predicted benign for all 426 rows, and the fit ended as if well: the majority class had
    ruled it out.

    >>> one_class_predicted(torch.tensor([0, 1, 2, 3] * 5), torch.tensor([2] * 19 + [1]))
    (2, 19, 20)
    >>> one_class_predicted(torch.tensor([0, 1, 2, 3] * 5), torch.tensor([2] * 17 + [1] * 3)) is None
    True
    >>> one_class_predicted(torch.tensor([0] * 60 + [1] * 40), torch.tensor([0] * 100))  # the minority never
    (0, 100, 100)
    >>> one_class_predicted(torch.tensor([0] * 95 + [1] * 50), torch.tensor([0] * 135 + [1] * 10)) is None
    True
    """
    both = (given >= 0) & (predicted >= 0)
    g, p = given[both].long(), predicted[both].long()
    n = int(g.numel())
    if n == 0:
        return None
    counts = torch.bincount(p)
    top = int(counts.argmax())
    if int(counts[top]) < share * n:
        return None
    if int(torch.bincount(g).max()) < 0.5 * n:
        return top, int(counts[top]), n
    other = g != top  # a majority given class: the rows labelled otherwise tell a model that learnt nothing
    others = int(other.sum())
    taken = int((other & (p == top)).sum())
    return (top, int(counts[top]), n) if others >= min_other and taken >= share * others else None


#: a regression's final model whose median residual exceeds this many median absolute deviations of the targets
#: did not learn (:func:`regression_did_not_learn`)
DIVERGED_FACTOR = 10.0


def regression_did_not_learn(given: Tensor, predicted: Tensor, factor: float = DIVERGED_FACTOR
                             ) -> tuple[float, float] | None:
    """``(median |predicted - given|, median absolute deviation of given)`` when the first is more than ``factor``
    times the second, or a prediction is not finite: a regression model that did not learn (pure); ``None``
    otherwise, and where fewer than 2 samples have both values or the targets do not vary. Medians, so that corrupted
    targets (a sentinel 999, a glitch) move neither figure: a model that learnt the clean rows is off by about their
    spread, one that diverged by far more. A CLI newcomer's regression at `lr 5` read train losses of 1e10-1e13, an
    estimate of 0 and a test R² of -3.7e11, and the fit ended as if well.

    >>> g = torch.arange(100.0)
    >>> regression_did_not_learn(g, g + 3.0) is None, regression_did_not_learn(g, g * 1e4)
    (True, (489951.0, 25.0))
    """
    both = ~torch.isnan(given) & ~torch.isnan(predicted)
    g, p = given[both].double(), predicted[both].double()
    if g.numel() < 2:
        return None
    spread = float((g - g.median()).abs().median())
    if spread <= 0.0:
        return None
    if not bool(torch.isfinite(p).all()):
        return math.inf, spread
    off = float((p - g).abs().median())
    return (off, spread) if off > factor * spread else None


def class_label(c: int, names: Sequence[Any] | None) -> str:
    """Class ``c`` as a warning names it: ``"3"``, or ``"3 ('Shirt')"`` where the datamodule's ``classes`` names it
    (a CSV user's warnings said "labelled 1" of a table whose classes are ``benign``/``malignant``).

    >>> class_label(1, ["benign", "malignant"]), class_label(1, None)
    ("1 ('malignant')", '1')
    """
    if names is not None and 0 <= c < len(names):
        return f"{c} ({names[c]!r})"
    return str(c)


def datamodule_classes(trainer: Any) -> Sequence[Any] | None:
    """The class names a datamodule exposes as ``classes`` (a list, e.g. :class:`~lit_robust.data.TableDataModule`'s),
    else ``None``."""
    names = getattr(getattr(trainer, "datamodule", None), "classes", None)
    return names if isinstance(names, (list, tuple)) else None


def _float32_values(t: Tensor) -> list[float | None]:
    """Each float32 value as the shortest decimal that reads back as the same float32 (``0.1``, not
    ``0.10000000149011612``); NaN stays NaN."""
    return [float(v) for v in t.detach().cpu().float().numpy().astype(str)]


def _optional(values: list[Any], known: Tensor) -> list[Any]:
    return [v if k else None for v, k in zip(values, known.tolist())]


def build_report(
    index: Tensor,
    scores: Tensor,
    kept: Tensor,
    *,
    score_columns: Sequence[str],
    first_dropped: Tensor | None = None,
    first_dropped_column: str = "first_dropped_round",
    scored: Tensor | None = None,
    score_known: Tensor | None = None,
    given_label: Tensor | None = None,
    predicted_label: Tensor | None = None,
    corrupted: Tensor | None = None,
    estimator: Literal["gmm", "bmm", "disagreement", "class_floor", "disagreement_or_interior",
                       "floor_or_interior"] | None = "gmm",
    given_target: Tensor | None = None,
    predicted_target: Tensor | None = None,
    squared_errors: bool = False,
    confidence: Tensor | None = None,
) -> dict[str, list[Any]]:
    """The report as columns (``{name: [value per row]}``, rows most suspicious first), pure.

    Args:
        index: ``[n]`` dataset indices, distinct.
        scores: ``[n, R]`` (or ``[n]``) scores; column ``j`` is named ``score_columns[j]``; the last column ranks.
        kept: ``[n]`` booleans.
        score_columns: the ``R`` score column names.
        first_dropped: ``[n]`` integers, the first round/epoch the sample was dropped; negative = never.
        first_dropped_column: ``"first_dropped_round"`` or ``"first_dropped_epoch"``.
        scored: ``[n]`` booleans: the sample has a ranking score (the others rank last and get an empty ranking
            score, ``kept`` and ``clean_posterior``). Default: all.
        score_known: ``[n, R]`` booleans: which score entries exist (the others are written empty); its last
            column is ``scored``. Default: all.
        given_label, predicted_label: ``[n]`` integers; :data:`NO_LABEL` marks a missing one; ``None``: no column
            values at all (written empty).
        corrupted: ``[n]`` ground-truth flags (bool, or int8 with ``-1`` = unknown), or ``None``.
        estimator: the estimate behind ``clean_posterior`` (see the module docstring): ``"gmm"``/``"bmm"`` (the
            score mixture), ``"disagreement"``/``"class_floor"``/``"disagreement_or_interior"``/
            ``"floor_or_interior"`` (from ``given_label`` and ``predicted_label``, the last two also from
            ``confidence`` -- without it, the disagreement estimate's; the
            gmm's where a scored sample lacks either label); ``None``: empty. All are built for in-sample scores;
            for out-of-fold probabilities (cleanlab's ``pred_probs``) pass ``None`` and rank by their loss: the gmm
            read 551 corrupted rows for a newcomer's 359 flipped ones there.
        given_target, predicted_target: ``[n]`` floats of a regression with one target per sample, NaN where
            unknown; when either is given, both columns follow ``corrupted``.
        squared_errors: the scores are a regression's squared residuals: the gmm behind ``clean_posterior`` restarts
            where it alone refuses a majority high component (``estimate_corruption``'s ``squared_errors``).
        confidence: ``[n]`` floats, the predicted class's probability (``"disagreement_or_interior"`` and
            ``"floor_or_interior"`` only); not
            written.

    Returns:
        ``rank, index, *score_columns, kept, <first_dropped_column>, clean_posterior, given_label,
            predicted_label, corrupted[, given_target, predicted_target]`` — ``None`` where a value is unknown.
    """
    # NumPy arrays and pandas Series as the estimators take them: cleanlab's `~find_label_issues(...)` as `kept`
    # passed the shape checks and ended in "'numpy.ndarray' object has no attribute 'detach'" (a cleanlab user's)
    index, scores, kept = as_tensor("index", index), as_tensor("scores", scores), as_tensor("kept", kept)
    first_dropped, scored, score_known, given_label, predicted_label, corrupted, given_target, predicted_target, \
        confidence = (None if t is None else as_tensor(name, t) for name, t in (
            ("first_dropped", first_dropped), ("scored", scored), ("score_known", score_known),
            ("given_label", given_label), ("predicted_label", predicted_label), ("corrupted", corrupted),
            ("given_target", given_target), ("predicted_target", predicted_target), ("confidence", confidence)))
    if isinstance(score_columns, str) or not all(isinstance(c, str) for c in score_columns):
        raise ValueError(f"`score_columns` must be a list of column names, one per column of `scores`, got "
                         f"{score_columns!r} (e.g. ['score'] for one).")
    n = index.numel()
    scores = scores.detach().cpu()
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[0] != n or scores.shape[1] != len(score_columns) or not score_columns:
        raise ValueError(f"`scores` must be [n, R] with n = {n} samples and R = len(score_columns) = "
                         f"{len(score_columns)} >= 1, got shape {tuple(scores.shape)}.")
    if first_dropped_column not in ("first_dropped_round", "first_dropped_epoch"):
        raise ValueError(f"`first_dropped_column` must be 'first_dropped_round' or 'first_dropped_epoch', got "
                         f"{first_dropped_column!r}.")
    for name, t in (("kept", kept), ("first_dropped", first_dropped), ("scored", scored), ("given_label", given_label),
                    ("predicted_label", predicted_label), ("corrupted", corrupted), ("given_target", given_target),
                    ("predicted_target", predicted_target), ("confidence", confidence)):
        if t is not None and tuple(t.shape) != (n,):
            raise ValueError(f"`{name}` must have shape ({n},), got {tuple(t.shape)}.")
    if index.is_floating_point() or (n and torch.unique(index).numel() != n):
        # a plain-loop user's 50 rows all with index 0 were written as 50 rows of one sample
        raise ValueError(f"`index` must hold {n} distinct integer dataset indices, got dtype {index.dtype} with "
                         f"{torch.unique(index).numel() if n else 0} distinct values.")
    # a plain-loop user's `estimator="Disagreement"` gave every row P(clean) 1.0, and float labels were truncated
    if estimator not in (None, "gmm", "bmm", *LABEL_ESTIMATORS):
        raise ValueError(f"`estimator` must be one of {', '.join(map(repr, ('gmm', 'bmm', *LABEL_ESTIMATORS)))} or "
                         f"None, got {estimator!r}.")
    for name, t in (("given_label", given_label), ("predicted_label", predicted_label)):
        if t is not None and (t.is_floating_point() or t.is_complex()):
            raise ValueError(not_integer_labels(name, t))  # the estimators' words (and their cast)
    scored = torch.ones(n, dtype=torch.bool) if scored is None else scored.detach().cpu().bool()
    known = torch.ones(scores.shape, dtype=torch.bool) if score_known is None else score_known.detach().cpu().bool()
    known = known.clone()
    known[:, -1] = scored
    ranking = scores[:, -1]
    # ranked by the values the file holds (the score columns are written as float32): a mean kept in float64
    # (Co-teaching's and RCA's (s1 + s2) / 2) ranked two rows apart by a difference the file rounds away, so rows
    # the file shows tied came out of index order (about one pair in a 6,000-row report)
    unlabelled = unlabelled_rows(ranking, scored, given_label, predicted_label)
    order = suspicion_order(ranking.float() if ranking.is_floating_point() else ranking, index, scored & ~unlabelled)
    # the unlabelled rows (a classifier's negative given label: ignore_index=-100, -1) after every labelled scored
    # row, by index: their loss of 0 had ranked them as the cleanest, which says nothing of a label they lack
    group = torch.where(unlabelled, 1, torch.where(scored, 0, 2))
    order = order[torch.argsort(group[order], stable=True)]

    posterior = [None] * n
    if estimator is not None and bool(scored.any()):
        post = torch.full((n,), math.nan, dtype=torch.float64)
        post[scored] = _clean_posterior(ranking[scored].double(), estimator,
                                        None if given_label is None else given_label.detach().cpu().long()[scored],
                                        None if predicted_label is None else
                                        predicted_label.detach().cpu().long()[scored], squared_errors,
                                        None if confidence is None else confidence.detach().cpu().double()[scored])
        posterior = _optional(post[order].tolist(), (scored & ~unlabelled)[order])

    table: dict[str, list[Any]] = {"rank": list(range(1, n + 1)),
                                   "index": index.detach().cpu().long()[order].tolist()}
    for j, name in enumerate(score_columns):
        table[name] = _optional(_float32_values(scores[order, j]), known[order, j])
    table["kept"] = _optional(kept.detach().cpu().bool()[order].tolist(), scored[order])
    if first_dropped is None:
        table[first_dropped_column] = [None] * n
    else:
        fd = first_dropped.detach().cpu().long()[order]
        table[first_dropped_column] = _optional(fd.tolist(), fd >= 0)
    table["clean_posterior"] = posterior
    for name, labels in (("given_label", given_label), ("predicted_label", predicted_label)):
        if labels is None:
            table[name] = [None] * n
        else:
            lab = labels.detach().cpu().long()[order]
            table[name] = _optional(lab.tolist(), lab != NO_LABEL)
    if corrupted is None:
        table["corrupted"] = [None] * n
    else:
        c = corrupted.detach().cpu().to(torch.int8)[order]  # bool -> 0/1; int8 keeps -1 = unknown
        table["corrupted"] = _optional([bool(v) for v in c.tolist()], c >= 0)
    if given_target is not None or predicted_target is not None:
        for name, values in (("given_target", given_target), ("predicted_target", predicted_target)):
            v = torch.full((n,), math.nan) if values is None else values.detach().cpu().float()[order]
            table[name] = _optional(_float32_values(v), ~torch.isnan(v))  # written like the scores
    return table


def top_rows_dropped(kept: Sequence[Any]) -> tuple[int, float, float] | None:
    """How the ranking agrees with a selection (pure): for ``kept``, the rows' kept flags in rank order (most
    suspicious first; ``None`` for a row without one), ``(k, share, chance)``: ``k`` rows were dropped, ``share`` of
    the top ``k`` rows were dropped ones, ``chance`` = k / n is what a random order gives. ``None`` when nothing or
    everything was dropped.

    >>> top_rows_dropped([False, False, True, True, True, True, True, True, True, True])
    (2, 1.0, 0.2)
    >>> top_rows_dropped([True, True, True, False, False])[1]
    0.0
    """
    flags = [bool(v) for v in kept if v is not None]
    n = len(flags)
    k = flags.count(False)
    if k == 0 or k == n:
        return None
    return k, flags[:k].count(False) / k, k / n


def posterior_note(table: dict[str, list[Any]]) -> str | None:
    """A sentence for the log when the report's ``clean_posterior`` is 1 on every scored row (its estimator found one
    component in the final scores), else ``None``. Without it a plain-PyTorch newcomer, whose ``per_sample_loss``
    returned the losses alone (no labels, so the loss mixture), counted 0 bad samples from the column
    (``sum(1 - clean_posterior)``) while the ranking's top 500 were 99.8 % mislabelled."""
    values = [v for v in table.get("clean_posterior", []) if v is not None and not math.isnan(v)]
    if len(values) < 20 or any(v < 1.0 for v in values):
        return None
    return ("the report's `clean_posterior` is 1 on every row: its estimator found one component in the final "
            "scores, so `sum(1 - clean_posterior)` counts 0 bad samples. The ranking (most suspicious first) still "
            "stands: cut it at a count you trust (the fit's estimate, or your own).")


def unseen_note(table: dict[str, list[Any]]) -> str | None:
    """A sentence for a per-batch filter's report when the last epoch did not see some rows, else ``None``: those
    samples have no score, so their ``kept`` and ``predicted_label`` are empty too, and a per-class figure over the
    report covers the seen rows only (a power user's ``limit_train_batches=0.8`` left 1,200 of 6,000 rows empty, a
    stop inside the epoch 3,632, without a word). Unseen rows are those without ``kept``: a seen sample whose score
    is NaN is scored (ranked first and dropped), not unseen."""
    scores, kept = table.get("score_last_epoch"), table.get("kept")
    if not scores or not kept:
        return None
    unseen = sum(v is None for v in kept)
    if unseen == 0:
        return None
    if unseen == len(kept):  # a module that never hands its losses to the filter (a power user's)
        return ("no row has a score: the filter scored no sample in the last epoch. Does the module's "
                "`training_step` pass its per-sample losses to `self.reduce_loss(losses, batch, outputs)`?")
    return (f"{unseen} of its {len(scores)} rows have no score: the last epoch did not see those samples "
            "(`limit_train_batches` or `overfit_batches`, a loader with `drop_last=True`, a stop inside the epoch, a "
            "sampler that draws "
            "with replacement such as `WeightedRandomSampler`, a stream that yields fewer samples than its "
            "`__len__`, or ITLM beside the filter, whose round trains on its selection only), so their `kept` and "
            "`predicted_label` are empty too. Per-class figures over the report count the seen rows only: select "
            "them with `report[report.kept.notna()]`.")


def starved_classes_note(table: dict[str, list[Any]], min_rows: int = 10, share: float = 0.5) -> str | None:
    """A sentence for a per-batch filter's report when its last epoch kept some given label (of ``min_rows`` scored
    rows or more) under ``share`` of the overall kept share, else ``None`` (pure). ITLM says so of its selections; an
    imbalanced-data newcomer's SPL filter kept 17.7 % of the rows labelled 5 against 75 % overall, about a third of
    the rare classes' clean samples dropped, without a word."""
    kept, given = table.get("kept"), table.get("given_label")
    if not kept or not given:
        return None
    scored = [bool(k) for k in kept if k is not None]
    rows = [(g, k) for g, k in zip(given, kept) if g is not None and k is not None and g >= 0]
    if not rows or not scored:
        return None
    labels, mask = torch.tensor([g for g, _ in rows]), torch.tensor([bool(k) for _, k in rows])
    # over every scored row: a regression newcomer's integer targets read "against 71% overall" of the non-negative
    # ones while the filter had kept 79.7 %
    overall = sum(scored) / len(scored)
    low = sorted(starved_classes(labels, mask, share, min_rows), key=lambda t: t[1] / t[2])
    if not low:
        return None
    negative = any(g is not None and g < 0 for g in given)
    targets = (" (Integer targets are read as class labels, and some here are negative: if they are regression "
               "targets, cast them to float.)" if negative else "")
    few = [t for t in low if t[1] < share * overall * t[2]]
    often = [(str(c), n - k, n) for c, k, n in low if k >= share * overall * n]
    parts = []
    if few:
        listed = ", ".join(f"{k} of the {n} labelled {c}" for c, k, n in few[:3])
        parts.append(f"its last epoch kept {listed}{' ...' if len(few) > 3 else ''}, against {overall:.0%} overall: a "
                     "rare, hard or confusable class's samples score high. If their labels are right, the filter "
                     "starves the class (a smaller `drop_ratio`, or ITLM with `per_class=True`); if most are wrong "
                     "(uniform noise on a long-tailed set flips common classes' samples into the rare ones), dropping "
                     "them is right.")
    if often:
        parts.append(often_dropped_note("its last epoch dropped", often, 1.0 - overall, "a smaller `drop_ratio`, or ITLM "
                                        "with `per_class=True`, keeps more of it"))
    return " ".join(parts) + targets


def batch_class_labels(outputs: Any, target: Any, module: Any) -> tuple[Tensor | None, int]:
    """A classifier's batch, as a per-batch filter counts it by class for :func:`counted_classes_note`: the given
    labels (:func:`given_and_predicted`'s, at the module's ``label_key``) and the number of classes, the width of its
    ``[B, C]`` outputs; ``(None, 0)`` where the batch has no such pair (a regression, with integer targets too; soft
    or one-hot targets; a module whose targets are placeholders, :func:`targets_reported`). Read from the batch, not
    the data set: a ``random_split`` or ``Subset`` of torchvision's MNIST holds no ``targets`` of its own (pure).

    >>> labels, classes = batch_class_labels(torch.zeros(3, 4), torch.tensor([0, 3, 1]), None)
    >>> labels.tolist(), classes
    ([0, 3, 1], 4)
    >>> batch_class_labels(torch.zeros(3), torch.tensor([0, 3, 1]), None)   # one output: an integer regression
    (None, 0)
    """
    if module is not None and not targets_reported(module):
        return None, 0
    given = integer_labels(label_part(target, module, strict=False))  # (a count beside the fit: it never stops one)
    outputs = label_part(outputs, module, strict=False)
    if given is None or not _class_scores(outputs, given):  # (in the training step: no argmax for a shape check)
        return None, 0
    return given, int(outputs.shape[1])


def class_count_step(labels: Tensor | None, kept: Tensor, slots: int) -> Tensor | None:
    """One batch's counts by given label, ``[2 * slots]`` int64 on ``kept``'s device: the samples of each label
    ``0 .. slots - 1`` seen, then those kept; labels outside that range, or not one integer per entry of ``kept``,
    count nowhere (``None`` where ``labels`` is not such a tensor). No host sync (pure).

    >>> class_count_step(torch.tensor([0, 1, 1, 5]), torch.tensor([True, False, True, True]), 2).tolist()
    [1, 2, 1, 1]
    """
    if (slots <= 0 or not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex()
            or labels.dtype == torch.bool or labels.numel() != kept.numel()):
        return None
    dev = kept.device
    y = labels.detach().to(dev).long().reshape(-1)
    valid = (y >= 0) & (y < slots)
    at = torch.where(valid, y, torch.zeros_like(y))
    out = torch.zeros(2 * slots, dtype=torch.int64, device=dev)
    out.index_add_(0, at, valid.long())
    out.index_add_(0, at + slots, (valid & kept.to(dev).bool().reshape(-1)).long())
    return out


def counted_classes_note(seen_by_class: Sequence[int], kept_by_class: Sequence[int], seen: int,
                         dropped: int) -> str | None:
    """:func:`starved_classes_note` from one epoch's counts by given label (a per-batch filter without a report),
    with ``seen`` and ``dropped`` of every sample for the overall share; ``None`` where no class was starved (pure).
    A newcomer's Adam-trained PRL kept 0 of the 102 samples labelled 3 (test accuracy 0 on that digit) and said so
    only with ``report=True``.

    >>> counted_classes_note([100, 100], [90, 10], 200, 100).startswith("its last epoch kept 10 of the 100 labelled 1")
    True
    """
    labels = [c for c, n in enumerate(seen_by_class) for _ in range(n)]
    kept = [i < k for n, k in zip(seen_by_class, kept_by_class) for i in range(n)]
    # the samples of no counted label: in the overall share, as the report's rows are
    others = max(0, seen - len(labels))
    others_kept = min(others, max(0, seen - dropped - sum(kept_by_class)))
    labels += [None] * others
    kept += [i < others_kept for i in range(others)]
    return starved_classes_note({"given_label": labels, "kept": kept})


def often_dropped_note(what: str, classes: Sequence[tuple[str, int, int]], overall: float, keep_more: str) -> str:
    """The sentence for classes a selection drops at many times the overall rate (``(name, dropped, rows)`` each;
    :data:`~lit_robust.selection.rules.DROP_FACTOR`), which is right or wrong by where the wrong labels are: labels
    flipped into a class put its drops there (a reviewer's 5 % of MNIST relabelled 0: every dropped 0 was a wrong
    label), a minority class with right but hard labels does too (a newcomer's 36 dropped rows, all right). So both
    are said, and how to tell (pure). ``what``: the subject ("the selection drops"); ``keep_more``: the owner's way to
    keep more of such a class.

    >>> often_dropped_note("the selection drops", [("0", 202, 862)], 0.045, "`per_class=True` keeps more of it")[:85]
    'the selection drops 202 of the 862 labelled 0 (23%, 5 times the overall 4.5%): either'
    """
    listed = ", ".join(f"{d} of the {n} labelled {c} ({d / n:.0%}, {d / n / overall:.0f} times the overall "
                       f"{overall:.1%})" for c, d, n in classes[:3]) + (" ..." if len(classes) > 3 else "")
    one = len(classes) == 1
    return (f"{what} {listed}: either labels were flipped into {'that class' if one else 'those classes'} (then "
            f"these are the rows to drop), or {'its' if one else 'their'} right labels sit on hard or rare samples "
            f"that score high (then the trim starves {'it' if one else 'them'}: {keep_more}). The per-sample "
            "report's dropped rows with that given label tell which.")


def _clean_posterior(scores: Tensor, estimator: str, given: Tensor | None, predicted: Tensor | None,
                     squared_errors: bool = False, confidence: Tensor | None = None) -> Tensor:
    """``clean_posterior`` of the scored samples: the label estimator's where every one has both labels, else the
    score mixture's (``"gmm"`` behind the label estimators; ``squared_errors`` goes to the gmm).
    ``"disagreement_or_interior"`` or ``"floor_or_interior"`` without ``confidence``: the disagreement estimate's."""
    labelled = (given is not None and predicted is not None and bool((given != NO_LABEL).all())
                and bool((predicted != NO_LABEL).all()))
    with warnings.catch_warnings():
        # too few samples for a mixture: the estimator's warning names its `min_samples`, an argument no callback
        # takes (a newcomer's 15-sample fit with a fixed keep_ratio got it); the report's docs say what follows
        warnings.filterwarnings("ignore", message=r".*a mixture needs \(its `min_samples`\)", category=RuntimeWarning)
        if estimator in LABEL_ESTIMATORS and labelled:
            if estimator in ("disagreement_or_interior", "floor_or_interior") and confidence is None:
                estimator = "disagreement"
            return estimate_from_labels(estimator, scores, given, predicted, confidence).clean_posterior
        method = estimator if estimator in ("gmm", "bmm") else "gmm"
        return estimate_corruption(scores, method, squared_errors=squared_errors and method == "gmm").clean_posterior


# -- files -------------------------------------------------------------------------------------------------------
def report_format_of(path: str | os.PathLike) -> ReportFormat:
    """``"csv"`` or ``"parquet"`` from ``path``'s suffix (``.csv``, ``.parquet``, ``.pq``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"`path` must end in one of {sorted(_SUFFIXES)} (the report's format), got {os.fspath(path)!r}.")
    return _SUFFIXES[suffix]  # type: ignore[return-value]


def _require_pyarrow(what: str) -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"{what} needs pyarrow: `pip install pyarrow` (or `pip install \"lit-robust[report]\"`), "
                          "or use the CSV format.") from err
    return pq


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # full precision; nan / inf / -inf as pandas reads them
    return str(v)


def _is_text_column(column: str, values: Sequence[Any]) -> bool:
    """A column written as text: the known text columns, and one the report does not know with any ``str`` value."""
    if column in _TEXT_COLUMNS:
        return True
    return column not in _INT_COLUMNS and column not in _BOOL_COLUMNS and any(isinstance(v, str) for v in values)


def _text_cell(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _csv_line(cells: Sequence[str], quote: Sequence[bool]) -> str:
    """One CSV line as ``csv.writer`` writes it (``"\\r\\n"``, quoting where needed), with the ``quote`` cells
    that are not empty always quoted: the standard writer cannot quote some cells and not others."""
    out = []
    for cell, forced in zip(cells, quote):
        needs = (forced and cell != "") or any(ch in cell for ch in ',"\r\n')
        out.append('"' + cell.replace('"', '""') + '"' if needs else cell)
    if out == [""]:  # a one-column row with an empty cell: an empty line would be skipped by readers
        out = ['""']
    return ",".join(out) + "\r\n"


def training_source_index(trainer: Any) -> Tensor | None:
    """``trainer.datamodule.train_source_index`` when the datamodule has one (lit_robust's datamodules: each training
    sample's position in the data set they read, e.g. torchvision's FashionMNIST training split), else ``None``."""
    src = getattr(getattr(trainer, "datamodule", None), "train_source_index", None)
    return None if src is None else torch.as_tensor(src).long().cpu()


def subset_source_index(dataset: Any) -> Tensor | None:
    """Where the training set is an :class:`~lit_robust.IndexedDataset` around a ``Subset`` (``random_split``, a
    chosen subset; nested ones too): each of its samples' position in the data set under the Subsets, as a long tensor
    — the report's ``source_index`` when the datamodule has no ``train_source_index`` of its own; ``None`` without a
    Subset. A Lightning user's own datamodule (FashionMNIST, a subset, ``random_split``) had the report's ``index``, a
    position in the split, and mapped it back through two permutations by hand."""
    from torch.utils.data import Subset

    from lit_robust.data.indexed import IndexedDataset

    for _ in range(16):
        if isinstance(dataset, IndexedDataset):
            break
        dataset = getattr(dataset, "dataset", None)
    if not isinstance(dataset, IndexedDataset) or not isinstance(dataset.dataset, Subset):
        return None
    base, positions = dataset.dataset, None
    while isinstance(base, Subset):
        indices = torch.as_tensor([int(i) for i in base.indices], dtype=torch.long)
        # a negative index reads from the end, as `Subset` reads it: `Subset(ds, [-1])`'s sample is row n - 1, not -1
        indices = torch.where(indices < 0, indices + len(base.dataset), indices)
        positions = indices if positions is None else indices[positions]
        base = base.dataset
    return positions


def sample_files(dataset: Any) -> tuple[list[str], list[str] | None] | None:
    """``(paths, class names)`` of a data set read from files — torchvision's ``ImageFolder`` / ``DatasetFolder``
    (its ``samples``, ``classes``) inside an :class:`~lit_robust.IndexedDataset` — with ``paths[i]`` the file of the
    sample the ``IndexedDataset`` yields as index ``i`` (through any ``Subset`` below it); ``None`` for other data sets.
    An image-folder newcomer had only ``index`` in the report and, after moving the top files away, mapped it through a
    fresh ``ImageFolder`` onto other files (1,850 of 2,000 rows) without an error."""

    from lit_robust.data.indexed import IndexedDataset

    for _ in range(16):  # down to the IndexedDataset: wrappers above it do not change the indices it yields
        if isinstance(dataset, IndexedDataset):
            break
        dataset = getattr(dataset, "dataset", None)
    if not isinstance(dataset, IndexedDataset):
        return None
    return base_sample_files(dataset.dataset)


def base_sample_files(base: Any) -> tuple[list[str], list[str] | None] | None:
    """:func:`sample_files` of the data set an :class:`~lit_robust.IndexedDataset` wraps (``ImageFolder``, or a
    ``Subset`` of one): ``paths[i]`` is the file of its item ``i``."""
    from torch.utils.data import Subset

    positions = None
    while isinstance(base, Subset):
        indices = [int(i) for i in base.indices]
        positions = indices if positions is None else [indices[p] for p in positions]
        base = base.dataset
    samples = getattr(base, "samples", None)  # [(path, class id), ...]
    first = samples[0] if isinstance(samples, (list, tuple)) and samples else None
    if not isinstance(first, (list, tuple)) or not first or not isinstance(first[0], (str, os.PathLike)):
        return None
    files = [os.fspath(s[0]) for s in samples]
    classes = getattr(base, "classes", None)
    names = [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None
    return (files if positions is None else [files[p] for p in positions]), names


#: a column of class ids → the column of their names, in the per-sample report and in ``predictions.csv`` (one rule
#: for a ``TableDataModule``'s classes and an image folder's)
REPORT_CLASS_COLUMNS = {"given_label": "given_class", "predicted_label": "predicted_class"}
PREDICTION_CLASS_COLUMNS = {"prediction": "predicted_class", "target": "target_class"}


def with_sample_files(table: dict[str, list[Any]], dataset: Any,
                      class_columns: dict[str, str] = REPORT_CLASS_COLUMNS) -> dict[str, list[Any]]:
    """``table`` with ``path`` after ``index`` and, for each of ``class_columns`` (a column of class ids → the column
    of their names) whose values are all class ids, the class names appended, where ``dataset`` is read from files
    (:func:`sample_files`); as it is otherwise."""
    found = sample_files(dataset) if "index" in table and "path" not in table else None
    if found is None:
        return table
    files, names = found
    rows = [int(i) for i in table["index"]]
    if rows and max(rows) >= len(files):
        return table  # the report's indices are not this data set's
    out: dict[str, list[Any]] = {}
    for column, values in table.items():
        out[column] = values
        if column == "index":
            out["path"] = [files[i] for i in rows]
    for label, name in class_columns.items():
        ids = table.get(label)
        if names is None or ids is None or name in table or not all(v is None or type(v) is int for v in ids):
            continue
        out[name] = [names[v] if v is not None and 0 <= v < len(names) else None for v in ids]
    return out


def _training_dataset(trainer: Any) -> Any:
    loader = getattr(trainer, "train_dataloader", None)
    if isinstance(loader, (list, tuple)) and len(loader) == 1:
        loader = loader[0]
    return getattr(loader, "dataset", None)


def write_training_report(table: dict[str, list[Any]], path: str | os.PathLike, trainer: Any) -> str:
    """:func:`write_report` of a training report, in the words of the trainer's datamodule: ``source_index``
    (:func:`training_source_index`) and what its ``describe_report(table)`` adds (a
    :class:`~lit_robust.TableDataModule`: the class names, a regression's targets in the table's units); without
    one, a training set read from files (an ``ImageFolder`` in an ``IndexedDataset``) adds each sample's ``path`` and
    class names (:func:`sample_files`). A datamodule without ``train_source_index`` whose training set is a ``Subset``
    in an ``IndexedDataset`` gets ``source_index`` from the Subsets (:func:`subset_source_index`)."""
    describe = getattr(getattr(trainer, "datamodule", None), "describe_report", None)
    if callable(describe):
        table = describe(table)
    else:
        table = with_sample_files(table, _training_dataset(trainer))
    source = training_source_index(trainer)
    if source is None:
        source = subset_source_index(_training_dataset(trainer))
    return write_report(table, path, source)


def replaced_note(path: str | os.PathLike) -> str:
    """What to add to "report written to ``path``" when a file is there already (call before writing): a user's two
    fits with `logger=False` in one folder replaced the first fit's report without a word, while Lightning named the
    second checkpoint `-v1`."""
    # an earlier fit's report in the other format stays beside this one: a user's csv fit then parquet fit in one
    # `report_dir` left both, said nothing, and `load_report(folder)` then refused the pair without telling which
    # one was this fit's
    stem, suffix = os.path.splitext(os.fspath(path))
    others = [os.path.basename(stem + s) for s in _SUFFIXES if s != suffix and os.path.isfile(stem + s)]
    stale = (f"; the {' and '.join(others)} beside it {'is' if len(others) == 1 else 'are'} from an earlier fit, "
             "not this one" if others else "")
    if not os.path.exists(path):
        return f" ({stale[2:]})" if stale else ""
    return (" (replacing the file there, from an earlier fit or an earlier part of this one: give each fit a "
            f"`report_dir` of its own to keep both{stale})")


def _publish(tmp: str, path: str) -> None:
    """Move a finished temporary file onto ``path`` with the permissions of a file opened there (``0o666`` less the
    umask): ``mkstemp`` makes it owner-only, and a newcomer's teammates could not read the report on a shared box."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _arrow_type_of(values: Sequence[Any], pa: Any) -> Any:
    """A column's Parquet type from its values where its name says none (a datamodule's own columns, e.g.
    ``TableDataModule``'s ``id_columns``): text if any value is, whole numbers, booleans, else floats."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, str) for v in present):
        return pa.string()
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    return pa.float64()


def write_report(table: dict[str, list[Any]], path: str | os.PathLike, source_index: Tensor | None = None, *,
                 quote_text: bool = True) -> str:
    """Write a :func:`build_report` table to ``path``, as CSV (UTF-8) or Parquet by its suffix; returns the path.

    ``source_index`` (one entry per training sample, :func:`training_source_index`) adds the column ``source_index``
    after ``index``: where each row's sample sits in the data set the datamodule read (a datamodule that draws and
    shuffles its training split has ``index`` ≠ that position). The file is written next to its final name and then
    renamed, so a reader never sees half a report.

    A column of text (the class names, ``path``, and a column with any ``str`` value, e.g. a datamodule's id column)
    has its missing values (``None``, a float NaN) as empty cells. In a CSV, with ``quote_text`` (default), the text
    cells of a column :func:`load_report` does not know by name are quoted, which is how it reads ``"007"`` back as
    text where Parquet has the column's type.
    """
    if source_index is not None and "index" in table:
        # a list, or one of the wrong length, ended in torch's IndexError / TypeError, naming no argument
        source_index = as_tensor("source_index", source_index)
        rows = torch.as_tensor(table["index"], dtype=torch.long)
        if source_index.ndim != 1 or source_index.is_floating_point() or (
                rows.numel() and int(rows.max()) >= source_index.numel()):
            raise ValueError(f"`source_index` must be a 1-D integer array with one entry per training sample (the "
                             f"report's `index` goes up to {int(rows.max()) if rows.numel() else -1}), got dtype "
                             f"{source_index.dtype} and shape {tuple(source_index.shape)}.")
        mapped = source_index[rows].tolist()
        columns = list(table)
        at = columns.index("index") + 1
        table = {c: (mapped if c == "source_index" else table[c])
                 for c in (*columns[:at], "source_index", *columns[at:])}
    fmt = report_format_of(path)
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    columns = list(table)
    text = {c for c in columns if _is_text_column(c, table[c])}
    # a missing value of a text column (a float NaN from pandas, e.g. an id column's empty cell) is an empty cell,
    # not the text "nan" (which Parquet kept as text while CSV read it back as missing)
    table = {c: [_text_cell(v) for v in table[c]] if c in text else table[c] for c in columns}
    if fmt == "parquet":
        pq = _require_pyarrow("`report_format='parquet'`")
        import pyarrow as pa

        types = {c: (pa.int64() if c in _INT_COLUMNS else pa.bool_() if c in _BOOL_COLUMNS else
                     pa.string() if c in text else _arrow_type_of(table[c], pa)) for c in columns}
        arrow = pa.table({c: pa.array(table[c], type=types[c]) for c in columns})
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".parquet", dir=folder)
        os.close(fd)
        try:
            pq.write_table(arrow, tmp)
            _publish(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path
    # the text cells of the columns `load_report` does not know by name are quoted: that is how it tells an id
    # column's "007" or "1" (text) from a number, as Parquet's column type does
    quote = [quote_text and c in text and c not in _TEXT_COLUMNS for c in columns]
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".csv", dir=folder)
    try:
        # UTF-8 whatever the locale: under LC_ALL=C a class named "café" failed the fit at its end
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(_csv_line(columns, [False] * len(columns)))
            for row in zip(*(table[c] for c in columns)):
                f.write(_csv_line([_csv_cell(v) for v in row], quote))
        _publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# one CSV field (quoted, with "" for a quote, or plain) and what ends it
_CSV_FIELD = re.compile(r'("(?:[^"]|"")*"|[^,"\r\n]*)(,|\r\n|\n|\r|$)')


_SCANNED = 1 << 20  # characters of a CSV report :func:`_quoted_columns` reads


def _quoted_columns(path: str | os.PathLike) -> set[int]:
    """The positions of the columns whose first non-empty cell in the file's first MiB is quoted (:func:`write_report`
    quotes every text cell of a column it does not know by name). A column without a non-empty cell there counts as
    unquoted, and pandas reads it by its cells. Bounded: going on cell by cell in Python through a report with a
    column empty in every row took 26x pandas' read of the file (a reviewer's, 300,000 rows)."""
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read(_SCANNED)
        whole = not f.read(1)
    first: dict[int, bool] = {}
    width, row, column, pos = None, 0, 0, 0
    while pos < len(text) and (width is None or len(first) < width):
        m = _CSV_FIELD.match(text, pos)
        if m is None or (not whole and m.end() == len(text)):
            # a quoted cell cut by the end of what was read (no match), or a last cell that may be cut: undecided
            # (returning nothing here read every column by its cells past 1 MiB: ids "007" came back as 7)
            break
        field, end = m.group(1), m.group(2)
        if row > 0 and field not in ("", '""') and column not in first:
            first[column] = field.startswith('"')
        column += 1
        if end != ",":
            if width is None:
                width = column
            row, column = row + 1, 0
        if m.end() == pos:
            break
        pos = m.end()
    return {c for c, quoted in first.items() if quoted}


def _reads_as(kind: type, cell: str) -> bool:
    """Whether ``kind(cell)`` (``int`` or ``float``) reads the text ``cell``."""
    try:
        kind(cell)
    except ValueError:
        return False
    return True


def _column_kind(column: str, cells: Sequence[str], quoted: bool) -> str:
    """How :func:`load_report` reads a CSV column: ``"int"``, ``"bool"``, ``"text"`` or ``"float"``, by its name where
    the report knows it, else by its cells (``cells``: the non-empty ones; ``quoted``: its text cells were quoted)."""
    if column in _INT_COLUMNS:
        return "int"
    if column in _BOOL_COLUMNS:
        return "bool"
    if column in _TEXT_COLUMNS or quoted:
        return "text"
    if cells and all(c in ("True", "False") for c in cells):
        return "bool"
    if not all(_reads_as(float, c) for c in cells):  # as pandas reads a column it is not told the type of
        return "text"
    return "int" if all(_reads_as(int, c) for c in cells) and cells else "float"


def _parse(kind: str, cell: str) -> Any:
    if cell == "":
        return None
    if kind == "int":
        return int(cell)
    if kind == "bool":
        return cell == "True"
    if kind == "text":
        return cell
    return float(cell)


def _check_report_columns(path: str | os.PathLike, fmt: str) -> None:
    """Raise unless the file has a report's ``rank`` and ``index`` columns (a newcomer's ``metrics.csv`` loaded as a
    report without a word)."""
    if fmt == "parquet":
        pq = _require_pyarrow("reading a Parquet report")
        try:
            columns = list(pq.read_schema(os.fspath(path)).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid etc.: the file is no Parquet file
            raise ValueError(f"`path` must be a per-sample report, but {os.fspath(path)!r} is not a Parquet file "
                             f"pyarrow can read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).") \
                from None
    else:
        with open(path, newline="", encoding="utf-8") as f:
            columns = next(csv.reader(f), [])
    if not {"rank", "index"} <= set(columns):
        raise ValueError(f"`path` must be a per-sample report (with `rank` and `index` columns), but "
                         f"{os.fspath(path)!r} has columns {columns[:8]}{' ...' if len(columns) > 8 else ''}.")


def _reports_in(folder: str) -> list[str]:
    """The names of the per-sample report files in ``folder`` (``*_report.csv`` / ``.parquet``), sorted; a folder of
    such a name is none (a reviewer's folder `itlm_report.csv` was offered as a report, then refused as "not an
    existing report file")."""
    return sorted(p for p in os.listdir(folder) if Path(p).stem.endswith("_report") and Path(p).suffix in _SUFFIXES
                  and os.path.isfile(os.path.join(folder, p)))


def _reports_below(folder: str, depth: int = 2) -> list[str]:
    """The per-sample reports in ``folder``'s subfolders down to ``depth`` levels, as paths: a logger's ``version_N``
    one level down, and two levels down from a Trainer's ``default_root_dir`` (``lightning_logs/version_N``), which a
    report newcomer passed and was told "none"."""
    try:
        subs = [os.path.join(folder, sub) for sub in sorted(os.listdir(folder)) if not sub.startswith(".")]
        subs = [inner for inner in subs if os.path.isdir(inner) and os.access(inner, os.R_OK | os.X_OK)]
        found = [os.path.join(inner, p) for inner in subs for p in _reports_in(inner)]
    except OSError:  # a folder that cannot be listed holds no report this can name
        return []
    return found + [p for inner in subs for p in _reports_below(inner, depth - 1)] if depth > 1 else found


def load_report(path: str | os.PathLike, as_frame: bool | None = None) -> Any:
    """Read a per-sample report (CSV or Parquet, by the suffix), rows most suspicious first.

    Args:
        path: the file ``ITLM``/``BatchFilter`` wrote (e.g. ``<log_dir>/itlm_report.csv``), or the folder holding
            it (one ``*_report.csv`` / ``.parquet`` there).
        as_frame: ``None`` (default): a ``pandas.DataFrame`` when pandas is installed, else a list of dicts (one
            per row, ``None`` for an empty cell); ``True``: a DataFrame (an ``ImportError`` without pandas);
            ``False``: the list of dicts.

    In the DataFrame the label and round/epoch columns are nullable integers (``Int64``) and ``kept`` /
    ``corrupted`` nullable booleans, so an empty cell is ``<NA>`` and not a float NaN.
    """
    if as_frame not in (None, True, False):
        raise ValueError(f"`as_frame` must be True, False or None, got {as_frame!r}.")
    if not isinstance(path, (str, os.PathLike)):  # an auditor's `load_report(None)`: os.stat's TypeError
        raise TypeError(f"`path` must be the report file or the folder holding it (a str or path), got "
                        f"{type(path).__name__}" + (": did the fit write no report (`report_path` is None)? Under "
                                                    "`ddp_spawn` the script's callback is a copy that did not run: "
                                                    "read the path the fit printed (\"per-sample report written "
                                                    "to ...\"), or give the callback a `report_dir`."
                                                    if path is None else "."))
    path = os.path.expanduser(path)  # `~` is the home folder, as `report_dir` and `pandas.read_csv` read it
    if os.path.isdir(path):  # a run's folder (a newcomer passed one): the one report in it
        found = _reports_in(path)
        if len(found) != 1:  # several: the files exist, the choice is the user's (ValueError); none: not found
            newest = max(found, key=lambda p: os.path.getmtime(os.path.join(path, p))) if found else None
            what = f"{len(found)}: {found}; pass one of them (the newest: {newest!r})" if found else "none"
            error = ValueError if found else FileNotFoundError
            below = _reports_below(path) if not found else []
            if below:
                # the logger's root (`lightning_logs`), a natural first guess of a reports newcomer's: its runs' folders
                # hold the reports
                newest = max(below, key=os.path.getmtime)
                what += (f"; the folders in it hold {len(below)} (the newest: {os.path.relpath(newest, path)!r}): "
                         "pass one of them, or its run's folder")
            raise error(f"`path` is a folder; it must hold one per-sample report (`*_report.csv` or .parquet), got "
                        f"{what} in {os.fspath(path)!r}.")
        path = os.path.join(path, found[0])
    elif not os.path.exists(path):  # before the suffix: a newcomer's missing run folder got "must end in .csv"
        raise FileNotFoundError(f"`path` must be an existing report file or the folder holding it, got "
                                f"{os.fspath(path)!r}, which does not exist.")
    fmt = report_format_of(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` must be an existing report file, got {os.fspath(path)!r}.")
    _check_report_columns(path, fmt)
    pd = None
    if as_frame is not False:
        try:
            import pandas as pd
        except ImportError as err:
            if as_frame:
                raise ImportError("`as_frame=True` needs pandas: `pip install pandas` (or "
                                  "`pip install \"lit-robust[report]\"`).") from err
    if fmt == "parquet":
        pq = _require_pyarrow("reading a Parquet report")
        arrow = pq.read_table(os.fspath(path))
        if pd is None:
            return arrow.to_pylist()
        frame = arrow.to_pandas()
    else:
        frame = _read_csv_report(path, pd)
        if pd is None:
            return frame
    for c in frame.columns:
        if c in _INT_COLUMNS:
            frame[c] = frame[c].astype("Int64")
        elif c in _BOOL_COLUMNS:
            frame[c] = frame[c].astype("boolean")
    return frame


def _read_csv_report(path: str | os.PathLike, pd: Any) -> Any:
    """A CSV report as a DataFrame (``pd``; :func:`load_report` gives the known columns their dtypes) or, without
    pandas, a list of dicts (each column read as its kind, :func:`_column_kind`), so that it equals the Parquet
    report: the text columns -- known by name, or quoted by the writer -- as text with only the empty cell missing
    (pandas' defaults read the class "None" and the id "NA" as NaN, the id "007" as 7)."""
    quoted = _quoted_columns(path)
    if pd is None:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = list(reader)
        kinds = [_column_kind(c, [r[j] for r in rows if r[j] != ""], j in quoted)
                 for j, c in enumerate(header)]
        return [{c: _parse(k, v) for c, k, v in zip(header, kinds, r)} for r in rows]
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    text = {c for j, c in enumerate(header) if c in _TEXT_COLUMNS or (j in quoted)}
    # text columns keep every cell but the empty one; the others read "nan" (how a NaN is written) as missing too.
    # pandas parses the numbers: per cell in Python the read took 35x pandas' own at 60,000 rows
    return pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False, encoding="utf-8",
                       na_values={c: [""] if c in text else ["", "nan"] for c in header})


def folder_error(folder: str | os.PathLike) -> str | None:
    """``None`` when a file can be written into ``folder`` (created if missing), else what went wrong
    (``"NotADirectoryError: ..."``); tried by creating and removing a file there."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".report-probe-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None


# -- what the callbacks accumulate -------------------------------------------------------------------------------
class RoundScores:
    """ITLM's report state: each round's scores of every sample and the round each sample was first dropped.

    Holds dense CPU tensors of ``n`` entries (one float per sample per round); the callback fills it on the rank
    that writes the report.
    """

    def __init__(self, n: int, num_rounds: int) -> None:
        self.n = int(n)
        self.num_rounds = int(num_rounds)
        self.scores = torch.full((self.n, self.num_rounds), math.nan, dtype=torch.float32)
        self.known = torch.zeros((self.n, self.num_rounds), dtype=torch.bool)
        self.first_dropped = torch.full((self.n,), -1, dtype=torch.int64)
        self.selection: Tensor | None = None  # the latest selection (sorted indices); None = every sample

    def set_scores(self, round_: int, index: Tensor, scores: Tensor) -> None:
        """Round ``round_``'s model scored the samples ``index``."""
        self.scores[index.cpu().long(), round_] = scores.detach().cpu().float()
        self.known[index.cpu().long(), round_] = True

    def set_selection(self, round_: int, selection: Tensor | None) -> None:
        """Round ``round_`` trains on ``selection`` (sorted dataset indices; ``None`` = all)."""
        self.selection = None if selection is None else selection.detach().cpu().long()
        if selection is None:
            return
        dropped = torch.ones(self.n, dtype=torch.bool)
        dropped[self.selection] = False
        self.first_dropped[dropped & (self.first_dropped < 0)] = round_

    def kept(self) -> Tensor:
        if self.selection is None:
            return torch.ones(self.n, dtype=torch.bool)
        kept = torch.zeros(self.n, dtype=torch.bool)
        kept[self.selection] = True
        return kept

    def table(self, ranking_round: int, given_label: Tensor | None, predicted_label: Tensor | None,
              corrupted: Tensor | None, estimator: str = "gmm", given_target: Tensor | None = None,
              predicted_target: Tensor | None = None, squared_errors: bool = False,
              confidence: Tensor | None = None) -> dict[str, list[Any]]:
        """The report, ranked by round ``ranking_round``'s scores (the rounds after it are left out)."""
        cols = list(range(ranking_round + 1))
        return build_report(torch.arange(self.n), self.scores[:, cols], self.kept(),
                            score_columns=[f"score_round_{r}" for r in cols], first_dropped=self.first_dropped,
                            scored=self.known[:, ranking_round], score_known=self.known[:, cols],
                            given_label=given_label, predicted_label=predicted_label, corrupted=corrupted,
                            estimator=estimator, given_target=given_target, predicted_target=predicted_target,
                            squared_errors=squared_errors, confidence=confidence)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "num_rounds": self.num_rounds, "scores": self.scores.clone(), "known": self.known.clone(),
                "first_dropped": self.first_dropped.clone(), "selection": self.selection}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> RoundScores:
        obj = cls(state["n"], state["num_rounds"])
        obj.scores, obj.known = state["scores"].clone(), state["known"].clone()
        obj.first_dropped, obj.selection = state["first_dropped"].clone(), state["selection"]
        return obj


Reduce = Callable[[Tensor], Tensor]


class EpochScores:
    """A per-batch filter's report state, on the training device: per sample, this epoch's score sum, times
    scored and times dropped, and its last prediction; the given label and ground truth; the epoch first dropped;
    for a regression with one target per sample, this epoch's sums of the target and of the prediction.

    :meth:`add` is called once per training batch and only runs a few tensor operations on the batch's device (no
    host synchronisation): one ``index_add_`` into a ``[4, n + 1]`` table of sums (score sum, times scored, times
    dropped, visits) and one ``index_copy_`` into a ``[3, n + 1]`` table of labels (prediction, given label, ground
    truth, each stored +1 so that 0 means unknown), and for a regression one more ``index_add_`` into a
    ``[4, n + 1]`` table of values (target sum and count, prediction sum and count); an index outside ``[0, n)`` goes to
    the extra column ``n`` and
    is reported at the next :meth:`flush`. What a rank adds stays *local* until :meth:`flush` merges every rank's
    local part into the *global* part with the collectives it is handed (sum for the sums, max for the labels), so
    the global part is the same on every rank. Call :meth:`flush` wherever a checkpoint may follow (validation end,
    epoch end), and :meth:`end_epoch` after the flush at the epoch's end.
    """

    SUM_ROWS = ("score_sum", "seen", "dropped", "visits")
    LABEL_ROWS = ("pred", "given", "corrupted")
    VALUE_ROWS = ("target_sum", "targeted", "predicted_sum", "predicted")
    _TENSORS = ("local_sums", "local_labels", "local_values", "sums", "labels", "values", "first_dropped")
    _SHOWN = ("sums", "labels", "values", "first_dropped")  # the flushed tables a report is read from

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        self.n = int(n)
        dev = torch.device(device)
        fdtype = torch.float32 if dev.type == "mps" else torch.float64  # counts are exact integers in either
        self.local_sums = torch.zeros(len(self.SUM_ROWS), self.n + 1, dtype=fdtype, device=dev)
        self.local_labels = torch.zeros(len(self.LABEL_ROWS), self.n + 1, dtype=torch.int64, device=dev)
        self.local_values = torch.zeros(len(self.VALUE_ROWS), self.n + 1, dtype=fdtype, device=dev)
        self.sums = self.local_sums.clone()  # global: every rank's, merged by `flush`
        self.labels = self.local_labels.clone()
        self.values = self.local_values.clone()
        self.first_dropped = torch.full((self.n,), -1, dtype=torch.int64, device=dev)
        self.epoch: int | None = None  # epoch the sums belong to
        self.cut: tuple[int, int] | None = None  # (batches trained, of) when a stop ended `epoch` before its last batch
        self.whole = False  # `epoch` ended, and ran every batch
        # the last whole epoch's tables (on the CPU), kept from the next epoch's start: the report of a fit whose
        # last epoch a stop cut short (a power user's `max_steps` left 880 of 1,200 rows empty)
        self.last_whole: dict[str, Tensor] | None = None
        self.last_whole_epoch: int | None = None

    @property
    def device(self) -> torch.device:
        return self.first_dropped.device

    def to(self, device: torch.device | str) -> EpochScores:
        dev = torch.device(device)
        for name in self._TENSORS:
            setattr(self, name, getattr(self, name).to(dev))
        return self

    def start_epoch(self, epoch: int) -> None:
        """Begin ``epoch``: this epoch's sums and predictions start from zero (nothing happens when they already
        belong to ``epoch``, e.g. on a resumed run)."""
        if self.epoch == epoch:
            return
        if self.epoch is not None and self.whole:
            self.last_whole = {name: getattr(self, name).cpu().clone() for name in self._SHOWN}
            self.last_whole_epoch = self.epoch
        self.whole, self.cut = False, None
        for t in (self.local_sums, self.sums, self.local_values, self.values):
            t.zero_()
        for t in (self.local_labels, self.labels):
            t[0].zero_()  # the prediction is the epoch's; the given label and the ground truth stay
        self.epoch = epoch

    def add(self, index: Tensor, scores: Tensor | None, dropped: Tensor, predicted: Tensor | None = None,
            given: Tensor | None = None, corrupted: Tensor | None = None, given_target: Tensor | None = None,
            predicted_target: Tensor | None = None) -> None:
        """One batch: dataset ``index`` ``[B]``, the rule's ``scores`` (``None``: not computed this batch), the
        ``dropped`` mask, and optionally predicted / given labels, ground-truth flags, and a regression's ``[B]``
        targets and predictions (:func:`scalar_targets`, :func:`values_from_outputs`)."""
        dev = self.device
        idx = index.to(dev).long().reshape(-1)
        idx = torch.where((idx >= 0) & (idx < self.n), idx, self.n)  # anything else lands in the extra column
        sums = self.local_sums
        one = torch.ones(idx.shape, dtype=sums.dtype, device=dev)
        drop = dropped.to(device=dev, dtype=sums.dtype).reshape(-1)
        if scores is None:
            zero = torch.zeros_like(one)
            rows = torch.stack([zero, zero, drop, one])
        else:
            rows = torch.stack([scores.detach().to(device=dev, dtype=sums.dtype).reshape(-1), one, drop, one])
        sums.index_add_(1, idx, rows)
        if given_target is not None:
            vdtype = self.local_values.dtype
            target = given_target.detach().to(device=dev, dtype=vdtype).reshape(-1)
            ones = torch.ones_like(target)
            pred, predicted_ = ((torch.zeros_like(target), torch.zeros_like(target)) if predicted_target is None else
                                (predicted_target.detach().to(device=dev, dtype=vdtype).reshape(-1), ones))
            self.local_values.index_add_(1, idx, torch.stack([target, ones, pred, predicted_]))
        given_rows = (predicted, given, corrupted)
        if all(v is None for v in given_rows):
            return
        labels = self.local_labels
        old = labels[:, idx]
        new = torch.stack([old[r] if v is None else v.detach().to(dev).long().reshape(-1) + 1
                           for r, v in enumerate(given_rows)])
        labels.index_copy_(1, idx, new)

    def flush(self, reduce_sum: Reduce, reduce_max: Reduce) -> None:
        """Merge every rank's local part into the global part (collectives: call on every rank) and clear it."""
        k = self.local_sums.shape[0]
        merged = reduce_sum(torch.cat([self.local_sums, self.local_values]))  # one collective for both
        self.sums += merged[:k]
        self.values += merged[k:]
        self.labels = torch.maximum(self.labels, reduce_max(self.local_labels))
        for t in (self.local_sums, self.local_labels, self.local_values):
            t.zero_()
        bad = int(self.sums[3, self.n])
        if bad:
            raise ValueError(f"the report needs dataset indices in [0, {self.n}) (the training set's length), but "
                             f"{bad} training samples had an index outside it; wrap the training set in "
                             "`lit_robust.IndexedDataset` (a `Subset` of one keeps the full set's indices: put the "
                             "Subset inside, `IndexedDataset(Subset(train_set.dataset, keep), "
                             "targets=train_set.targets[keep])`).")

    def end_epoch(self, epoch: int, cut: tuple[int, int] | None = None) -> None:
        """After the flush at the end of ``epoch``: a sample dropped in it for the first time gets ``epoch``. ``cut``:
        ``(batches trained, batches of an epoch)`` when a stop ended the epoch before its last batch."""
        first = (self.sums[2, : self.n] > 0) & (self.first_dropped < 0)
        self.first_dropped = torch.where(first, torch.full_like(self.first_dropped, epoch), self.first_dropped)
        self.whole, self.cut = cut is None, cut

    @property
    def shown_epoch(self) -> int | None:
        """The epoch :meth:`table` reports: the last epoch, or the whole one before it when a stop cut the last
        short (a fit stopped inside its first epoch reports that part)."""
        return self.last_whole_epoch if self.shows_last_whole else self.epoch

    @property
    def shows_last_whole(self) -> bool:
        return self.cut is not None and self.last_whole is not None

    def table(self, estimator: str = "gmm") -> dict[str, list[Any]]:
        """The report of the last flushed epoch, or of the last whole epoch when a stop cut the last one short
        (:attr:`shown_epoch`)."""
        shown = self.last_whole if self.shows_last_whole else {name: getattr(self, name) for name in self._SHOWN}
        assert shown is not None
        sums, labels = shown["sums"][:, : self.n].cpu(), shown["labels"][:, : self.n].cpu()
        seen = sums[1] > 0
        mean = torch.where(seen, sums[0] / sums[1].clamp(min=1), torch.full_like(sums[0], math.nan))
        kept = sums[2] == 0

        def label(r: int) -> Tensor | None:
            v = labels[r]
            return None if not bool((v > 0).any()) else torch.where(v > 0, v - 1, torch.full_like(v, NO_LABEL))

        corrupted = None if not bool((labels[2] > 0).any()) else labels[2].to(torch.int8) - 1
        values = shown["values"][:, : self.n].cpu()
        given_target = predicted_target = None
        if bool((values[1] > 0).any()):  # a regression's targets were added

            def mean_of(r: int) -> Tensor:
                return torch.where(values[r + 1] > 0, values[r] / values[r + 1].clamp(min=1), math.nan)

            given_target, predicted_target = mean_of(0), mean_of(2)
        return build_report(torch.arange(self.n), mean, kept, score_columns=["score_last_epoch"],
                            first_dropped=shown["first_dropped"].cpu(), first_dropped_column="first_dropped_epoch",
                            scored=seen, given_label=label(1), predicted_label=label(0), corrupted=corrupted,
                            estimator=estimator, given_target=given_target, predicted_target=predicted_target)

    def local_part(self) -> dict[str, Tensor]:
        """This rank's sums not yet flushed, on the CPU: the columns it added to (``cols``) and their rows of the
        local tables (``sums``, ``labels``, ``values``), for a checkpoint that keeps every rank's
        (:meth:`set_local_parts` puts them back)."""
        touched = ((self.local_sums != 0).any(0) | (self.local_labels != 0).any(0)
                   | (self.local_values != 0).any(0))
        cols = touched.nonzero().reshape(-1)
        return {"cols": cols.cpu(), "sums": self.local_sums[:, cols].cpu(), "labels": self.local_labels[:, cols].cpu(),
                "values": self.local_values[:, cols].cpu()}

    def set_local_parts(self, parts: list[dict[str, Tensor]]) -> None:
        """The local tables from parts :meth:`local_part` returned: one rank's as they were, several merged as
        :meth:`flush` merges the ranks' (sums added, labels by maximum); none: zeros."""
        for t in (self.local_sums, self.local_labels, self.local_values):
            t.zero_()
        for part in parts:
            cols = part["cols"].to(self.device)
            self.local_sums.index_add_(1, cols, part["sums"].to(self.device, self.local_sums.dtype))
            self.local_values.index_add_(1, cols, part["values"].to(self.device, self.local_values.dtype))
            self.local_labels[:, cols] = torch.maximum(self.local_labels[:, cols], part["labels"].to(self.device))

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "epoch": self.epoch, "cut": self.cut, "whole": self.whole,
                "last_whole": self.last_whole, "last_whole_epoch": self.last_whole_epoch,
                **{name: getattr(self, name).cpu() for name in self._TENSORS}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> EpochScores:
        obj = cls(state["n"], "cpu")
        obj.epoch = state["epoch"]
        # a checkpoint from before the last whole epoch was kept has none: its report is of the last epoch, as then
        obj.cut, obj.whole = state.get("cut"), bool(state.get("whole", False))
        last = state.get("last_whole")
        obj.last_whole = None if last is None else {k: v.clone() for k, v in last.items()}
        obj.last_whole_epoch = state.get("last_whole_epoch")
        for name in cls._TENSORS:
            if name in state:  # a checkpoint from before the regression values has none: they start at zero
                setattr(obj, name, state[name].clone())
        return obj.to(device)
