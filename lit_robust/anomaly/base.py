"""What every anomaly detector here shares: a score (higher = more anomalous), ROC-AUC on a test split,
and a loud failure when a score or a training loss is not finite."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities.data import dim_zero_cat  # its home since torchmetrics 1.0 (re-exported only later)

from lit_robust._backend import pl, rank_zero_info, rank_zero_warn
from lit_robust._checks import check_has_values, real_scalar
from lit_robust._modes import enter_eval, restore_modes
from lit_robust.callbacks.prediction_writer import PredictionWriter
from lit_robust.data.indexed import unpack_eval_batch
from lit_robust.data.spec import DataSpec, check_fits_data, datamodule_spec, misfit
from lit_robust.models.supervised import loader_metric
from lit_robust.selection.rules import keep_count, percent_hint

__all__ = ["AnomalyDetector", "AnomalyAUROC", "anomaly_threshold", "roc_auc", "check_finite", "check_ratio",
           "check_input_dim", "check_input"]


def check_ratio(name: str, value: Any, high: float = 0.5) -> float:
    """``value`` as a float in ``[0, high)``, or a ``ValueError`` naming ``name``, the range and the value. A numpy
    float or a 0-d tensor counts as a number (``drop_ratio`` takes them too): a PyOD user's ``contamination=
    y.float().mean()`` was told it "must be a number in [0, 0.5), got tensor(0.1000)"."""
    number = real_scalar(value)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0.0 <= number < high:
        raise ValueError(f"`{name}` must be a number in [0, {high}), got {value!r}."
                         + percent_hint(name, number, high, high_open=True))
    return float(number)


def check_input_dim(spec: DataSpec, dim: int, flatten: bool) -> None:
    """Raise unless ``spec``'s inputs have ``dim`` values (``flatten``: any shape of ``dim`` values; else vectors)."""
    if spec.in_features != dim or (not flatten and len(spec.input_shape) != 1):
        fix = f"Set `model.dim` to {spec.in_features}." if flatten or len(spec.input_shape) == 1 else \
            "The model takes flat vectors [batch, dim]."
        raise misfit("dim", dim, spec, spec.inputs(), fix)


def check_input(owner: str, x: Tensor, dim: int, dtype: torch.dtype, flat: bool) -> None:
    """Raise a ``ValueError`` naming ``owner`` (e.g. ``"RCA(dim=10)"``) unless ``x`` holds ``dim`` values per sample
    (``flat``: shape ``[batch, dim]``; else any ``[batch, ...]`` of ``dim`` values) of ``dtype``, the parameters'
    dtype. Without it a float64 feature matrix (numpy's default) or a wrong width ends in torch's "mat1 and mat2"
    error from inside the network (a newcomer's ``StandardScaler`` output, an ``RCA(dim=10)`` on 30 features)."""
    if not isinstance(x, Tensor):
        # a newcomer's numpy array ended in "'tuple' object has no attribute 'numel'"
        raise TypeError(f"{owner} expects a torch.Tensor of shape [batch, {dim}], got {type(x).__module__}."
                        f"{type(x).__qualname__}: convert it, e.g. `torch.as_tensor(features, dtype={dtype})`.")
    per_sample = x.shape[1:].numel() if x.ndim >= 2 else None
    if (x.ndim != 2 or x.shape[1] != dim) if flat else per_sample != dim:
        want = f"[batch, {dim}]" if flat else f"[batch, ...] with {dim} values per sample"
        raise ValueError(f"{owner} expects inputs of shape {want}, got {tuple(x.shape)}. Set `dim` to the number of "
                         "features, or reshape the inputs.")
    if x.dtype != dtype:
        numpy_default, precision = "", ""
        if x.dtype == torch.float64:
            numpy_default = " (numpy's default)"
            precision = ', or train in 64 bits: `Trainer(precision="64-true")`'
        raise ValueError(f"{owner} expects inputs of dtype {dtype}, its parameters' dtype, got {x.dtype}{numpy_default}: "
                         f"convert them, e.g. `torch.as_tensor(features, dtype={dtype})`{precision}.")


def _as_tensor(name: str, values: Any) -> Tensor:
    """``values`` (a tensor, numpy array or list of numbers) as a tensor; anything else a ``ValueError`` naming it."""
    try:
        out = torch.as_tensor(values)
    except (TypeError, RuntimeError, ValueError):
        raise ValueError(f"`{name}` must be a tensor, numpy array or list of numbers, got {values!r}.") from None
    check_has_values(name, out)
    if out.ndim == 0 and not isinstance(values, Tensor):
        raise ValueError(f"`{name}` must be a tensor, numpy array or list of numbers (one per sample), got {values!r}.")
    return out


def anomaly_threshold(scores: Tensor | Any, contamination: float) -> float:
    """The score above which a sample is called anomalous, from the scores of training data of which a share
    ``contamination`` is anomalous: the largest of the ``floor((1 - contamination) * n)`` lowest scores (at least
    one), i.e. the largest score a trim at that rate keeps. A sample is anomalous when its score is greater (pure).

    On the training scores themselves this flags ``n - floor((1 - contamination) * n)`` samples, fewer where other
    scores tie with the threshold. NaN/inf scores rank above every finite one, as in the trimming; a threshold that
    would fall on one raises ``ValueError``. ``contamination=0`` gives the largest training score.

    >>> anomaly_threshold(torch.tensor([0.5, 9.0, 1.0, 2.0, 1.5]), 0.2)  # 4 kept: 0.5, 1.0, 1.5, 2.0
    2.0
    """
    contamination = check_ratio("contamination", contamination)
    s = _as_tensor("scores", scores).detach().flatten().double().cpu()
    if s.numel() == 0:
        raise ValueError("`scores` must hold at least one score, got none.")
    k = max(1, keep_count(s.numel(), 1.0 - contamination))
    ranked = torch.sort(torch.where(torch.isfinite(s), s, torch.inf)).values
    threshold = float(ranked[k - 1])
    if not math.isfinite(threshold):
        bad = int((~torch.isfinite(s)).sum())
        raise ValueError(f"`scores`: {bad} of {s.numel()} are NaN or infinite, so the threshold at contamination="
                         f"{contamination:g} (the largest of the {k} lowest) is not a number. Score finite data.")
    return threshold


def roc_auc(scores: Tensor | Any, is_anomaly: Tensor | Any) -> float:
    """ROC-AUC of anomaly ``scores`` (higher = more anomalous) against 0/1 labels (torchmetrics); tensors, numpy
    arrays or lists.

    torchmetrics passes scores outside [0, 1] through a sigmoid, which saturates for scores such as
    ``-log p`` (every value above ~17 becomes 1.0, a tie). The scores are therefore replaced by their dense
    ranks scaled to [0, 1] first: the same order, ties kept, so the AUC is unchanged.

    >>> roc_auc(torch.tensor([40.0, 90.0, 50.0, 80.0]), torch.tensor([0, 1, 0, 1]))
    1.0
    """
    scores, is_anomaly = (_as_tensor("scores", scores).detach().flatten(),
                          _as_tensor("is_anomaly", is_anomaly).detach().flatten())
    if scores.numel() != is_anomaly.numel():
        raise ValueError(f"`is_anomaly` must have one label per score, {scores.numel()} entries (as `scores`), got "
                         f"{is_anomaly.numel()}.")
    if bool(((is_anomaly != 0) & (is_anomaly != 1)).any()):  # torchmetrics' "Detected the following values in
        # target" named no argument (an auditor's labels 0/1/2)
        values = sorted({float(v) if is_anomaly.is_floating_point() else int(v) for v in is_anomaly.unique()[:8]})
        raise ValueError(f"`is_anomaly` must hold 0 (normal) and 1 (anomaly) only, got the values {values}.")
    n_pos = int(is_anomaly.bool().sum())
    if n_pos == 0 or n_pos == is_anomaly.numel():
        raise ValueError("ROC-AUC needs both normal and anomalous samples in the labels.")
    check_finite("anomaly score", scores)
    _, ranks = torch.unique(scores.double(), sorted=True, return_inverse=True)
    unit = ranks.double() / max(int(ranks.max()), 1)
    return float(binary_auroc(unit, is_anomaly.long()))


def _rows_not_batches(data: Any) -> bool:
    """Whether ``data`` is feature rows rather than a loader of batches: a numpy array, a DataFrame, anything not
    iterable, or a list of numbers or of lists of numbers (``X.tolist()``)."""
    if isinstance(data, str) or hasattr(data, "__array__") or not hasattr(data, "__iter__"):
        return True
    if isinstance(data, (list, tuple)) and data:
        first = data[0]
        if isinstance(first, (list, tuple)) and first:
            first = first[0]
        return isinstance(first, (int, float)) or hasattr(first, "__array__") and not isinstance(first, Tensor)
    return False


class AnomalyAUROC(Metric):
    """ROC-AUC over every test batch (all ranks under DDP), computed with :func:`roc_auc`."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, is_anomaly: Tensor) -> None:
        self.scores.append(scores.detach().flatten().double())
        self.labels.append(is_anomaly.detach().flatten().long())

    def compute(self) -> Tensor:
        return torch.tensor(roc_auc(dim_zero_cat(self.scores), dim_zero_cat(self.labels)))


def check_finite(what: str, values: Tensor, batch_idx: int | None = None, index: Tensor | None = None,
                 stage: str = "") -> None:
    """Raise ``FloatingPointError`` naming the batch (and the first sample indices) if ``values`` holds NaN/inf."""
    bad = ~torch.isfinite(values.detach())
    if not bool(bad.any()):
        return
    where = f" in {stage} batch {batch_idx}" if batch_idx is not None else ""
    ids = ""
    if index is None and batch_idx is not None:
        # a plain loader's rows, by their place in the batch (a reviewer's test refusal named "batch 0" only)
        rows = bad.flatten().nonzero().flatten().tolist()
        ids = f" (its rows {rows[:5]}{f' and {len(rows) - 5} more' if len(rows) > 5 else ''}, counted from 0)"
    if index is not None:
        # each sample once (RCA checks both autoencoders' errors: a newcomer's one NaN row was named twice)
        ids = list(dict.fromkeys(index.detach().cpu().flatten()[bad.cpu().flatten()].tolist()))
        ids = f" (dataset indices {ids[:5]}{f' and {len(ids) - 5} more' if len(ids) > 5 else ''})"
    raise FloatingPointError(f"{int(bad.sum())} non-finite {what} value(s){where}{ids}. Check the inputs for "
                             "NaN/inf, or lower the learning rate if the model diverged.")


class AnomalyDetector(pl.LightningModule):
    """Base LightningModule: subclasses implement :meth:`anomaly_score`; this class supplies

    * ``test_step`` — on ``(index, x, is_anomaly)`` batches (an indexed batch's ``corrupted`` flag where it has one,
      as ``validation_step``), accumulates ROC-AUC (``test_auroc``); batches without
      labels (a tensor, ``TensorDataset(x)``) raise a ``ValueError`` saying so;
    * ``validation_step`` — the same ROC-AUC over each validation epoch (``val_auroc``), where the validation batches
      carry the is-anomaly flag (an indexed batch's ``corrupted`` flag where it has one, else its target); on
      unlabelled ones (a tensor, ``TensorDataset(x)``) it logs nothing and says so once;
    * ``predict_step`` — the anomaly scores of a batch (NaN/inf ones passed on, and said at the end);
    * :meth:`score_dataset` — scores of every sample of a loader, in order;
    * :meth:`fit_threshold` and :meth:`predict_anomaly` — a yes/no decision for new samples, from a threshold set on
      the training scores and kept in the checkpoints saved afterwards.
    """

    def __init__(self) -> None:
        super().__init__()
        self.test_auroc = AnomalyAUROC()
        self.val_auroc = AnomalyAUROC()  # a list state: not in the state dict (as test_auroc)
        # the metrics of evaluation loaders 1, 2, ... (`loader_metric`): one metric fed by two validation loaders would
        # give both the AUROC over all of them
        self.val_auroc_more, self.test_auroc_more = nn.ModuleList(), nn.ModuleList()
        self._told_val: set[str] = set()  # the notes on a validation epoch without a val_auroc, each said once
        self.threshold: float | None = None  # set by `fit_threshold`
        self.threshold_contamination: float | None = None

    def setup(self, stage: str) -> None:
        # this module overrides `on_before_batch_transfer` only to check the batch type, so Lightning's note that the
        # module's hook is used over the datamodule's says nothing here; an anomaly newcomer read it in every fit and
        # predict with lit_robust's own model and datamodule
        warnings.filterwarnings("ignore", message=r"You have overridden `on_before_batch_transfer` in `LightningModule` "
                                r"but have passed in a `LightningDataModule`")
        if "dim" in self.hparams and self.hparams.dim is None:
            self.hparams["dim"] = self._dim_from_data()  # saved in checkpoints: `load_from_checkpoint` builds at once
            self._build(self.hparams.dim)
        check_fits_data(self)  # calls `check_data` of subclasses that have one

    def _build_if_sized(self) -> None:
        """Build the networks now when ``dim`` is given (else :meth:`setup` does, from the datamodule)."""
        if self.hparams.dim is not None:
            self._build(self.hparams.dim)

    def _build(self, dim: int) -> None:  # pragma: no cover - subclasses with a `dim` build their networks here
        raise NotImplementedError

    def _dim_from_data(self) -> int:
        """``dim`` for a model built at ``setup`` (``dim=None``): the number of input values per sample of the
        trainer's datamodule (a :class:`~lit_robust.TableDataModule`'s feature columns), which :meth:`setup` stores
        in ``hparams`` so that checkpoints rebuild the same networks."""
        name = type(self).__name__
        spec = datamodule_spec(getattr(self, "_trainer", None))
        if spec is None:
            raise ValueError(f"{name}: `dim` is read from the datamodule when left at None, but there is no datamodule "
                             f"saying what it yields (plain dataloaders). Pass it: the number of features, e.g. "
                             f"{name}(dim=30).")
        return spec.in_features

    def _require_built(self) -> None:
        """Raise, naming the fix, when the networks wait for ``setup`` (``dim=None``, no fit yet)."""
        if "dim" in self.hparams and self.hparams.dim is None:
            name = type(self).__name__
            raise RuntimeError(f"{name}(dim=None) builds its layers at `setup`, from the datamodule's number of "
                               f"features: fit it with one first (`trainer.fit(model, datamodule)`), or pass `dim`.")

    def _dim(self) -> str:
        dim = getattr(self.hparams, "dim", None)
        return "dim" if dim is None else str(dim)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Refuse a batch that is not a tensor or a tuple, list or dict of them, naming this module: a numpy array
        given to ``trainer.fit`` is iterated row by row (a PyOD newcomer's ``trainer.fit(RobustRealNVP(...),
        X)`` was answered by a ``BatchFilter`` they had never created, RCA's by the batch layout)."""
        if not isinstance(batch, (Tensor, tuple, list, dict)):
            kind = f"{type(batch).__module__}.{type(batch).__qualname__}"
            stage = getattr(getattr(self._trainer, "state", None), "stage", None)
            training = stage is not None and stage.value == "train"
            fix = ("`DataLoader(IndexedDataset(TensorDataset(x, torch.zeros(len(x), dtype=torch.long))), batch_size=64, "
                   "shuffle=True)`" if training else "`DataLoader(TensorDataset(x), batch_size=256)` (or `TensorDataset("
                   "x, is_anomaly)` to score against known anomalies)")
            raise TypeError(f"{type(self).__name__}(dim={self._dim()}) expects a DataLoader of float32 tensors, got "
                            f"batches of {kind} (Lightning iterates a numpy array or a DataFrame item by item): pass "
                            f"{fix}, with `x = torch.as_tensor(features, dtype=torch.float32)`.")
        return super().on_before_batch_transfer(batch, dataloader_idx)

    def anomaly_score(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Per-sample anomaly score of ``x`` (shape ``[B]``, higher = more anomalous)."""
        raise NotImplementedError

    @staticmethod
    def _with_no_target(batch: Any) -> Any:
        """A batch of samples without a target as ``(x, None)``: a loader over a tensor, or a ``TensorDataset(x)``'s
        1-tuples (an anomaly newcomer's production rows were refused as "a list of length 1"); others unchanged."""
        if isinstance(batch, Tensor) or (isinstance(batch, (tuple, list)) and len(batch) == 1):
            return (batch if isinstance(batch, Tensor) else batch[0], None)
        return batch

    def _scores(self, batch: Any, batch_idx: int, stage: str) -> tuple[Tensor, Any]:
        b = unpack_eval_batch(batch if stage == "test" else self._with_no_target(batch))
        scores = self.anomaly_score(b.input)
        if stage in ("predict", "scoring"):
            # scores for decisions pass NaN/inf on, which decide "anomaly" (`predict_anomaly`, `predicted_anomaly`):
            # an anomaly newcomer's 3 NaN rows among 207 new ones made `trainer.predict` refuse them all ("batch 0")
            # while `predict_anomaly` flagged them
            self._count_nonfinite(scores, batch_idx, b.index)
        else:
            check_finite("anomaly score", scores, batch_idx, b.index, stage)
        return scores, b

    def _count_nonfinite(self, scores: Tensor, batch_idx: int, index: Any) -> None:
        # rows without a dataset index are named by their place in the loader's order (the samples scored before
        # this batch, plus the place in it): a reviewer read "batch 2, rows [20]" as the data's row 20 (it was 120)
        offset = self.__dict__.get("_scored_before", 0)
        self.__dict__["_scored_before"] = offset + scores.numel()
        bad = ~torch.isfinite(scores.detach())
        if not bool(bad.any()):
            return
        where = (index.detach().flatten().cpu()[bad.flatten().cpu()] if isinstance(index, Tensor)
                 else bad.flatten().nonzero().flatten().cpu() + offset)
        self.__dict__.setdefault("_nonfinite_seen", []).append((batch_idx, isinstance(index, Tensor), where.tolist()))

    def _start_counting_nonfinite(self) -> None:
        self.__dict__.pop("_nonfinite_seen", None)
        self.__dict__.pop("_scored_before", None)

    def _say_nonfinite(self, what: str) -> None:
        """Warn of the NaN/inf scores counted since the last call (:meth:`_count_nonfinite`), naming their rows."""
        seen = self.__dict__.pop("_nonfinite_seen", [])
        self.__dict__.pop("_scored_before", None)
        if not seen:
            return
        count = sum(len(rows) for _, _, rows in seen)
        named = "; ".join(f"batch {i}, {'dataset indices' if indexed else 'rows (in the loader order)'} {rows[:5]}"
                          f"{f' and {len(rows) - 5} more' if len(rows) > 5 else ''}" for i, indexed, rows in seen[:3])
        more = f"; and in {len(seen) - 3} more batches" if len(seen) > 3 else ""
        rank_zero_warn(f"{type(self).__name__}.{what}: {count} sample(s) scored NaN or inf ({named}{more}): their "
                       "inputs hold NaN/inf, or values far outside the training data's. Their scores are kept as they "
                       "are, and the decisions (`predict_anomaly`, `predicted_anomaly`) count them as anomalies.")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._with_no_target(batch) is not batch:
            # a batch of inputs alone (a tensor, `TensorDataset(x)`): the batch-layout error said nothing of the labels
            # that ROC-AUC needs, nor of where unlabelled rows are scored
            raise ValueError(f"{type(self).__name__}(dim={self._dim()}): `trainer.test` measures ROC-AUC against "
                             "is-anomaly labels, and the test batches carry none (a tensor or `TensorDataset(x)`): "
                             "give them as `(x, is_anomaly)` pairs, 1 = anomaly (`TensorDataset(x, is_anomaly)`), "
                             "or score unlabelled rows with `trainer.predict` or `model.score_dataset`.")
        scores, b = self._scores(batch, batch_idx, "test")
        metric, name = loader_metric(self, "test_auroc", "test_auroc_more", dataloader_idx, AnomalyAUROC)
        # an indexed batch's `corrupted` flag is the is-anomaly flag where it has one, as for `val_auroc`: the training
        # form of one's own data (docs: zeros as the target, the known anomalies as `corrupted`) was tested against
        # its placeholder zeros ("ROC-AUC needs both normal and anomalous samples", 19 flagged of 269)
        metric.update(scores, (b.corrupted if isinstance(b.corrupted, Tensor) else b.target).long())
        # several test loaders: Lightning adds `/dataloader_idx_k`, each from its own loader's metric
        self.log("test_auroc", metric, metric_attribute=name, on_step=False, on_epoch=True)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """``val_auroc`` over each validation epoch (several validation loaders: ``val_auroc/dataloader_idx_k``, one
        each; a Lightning user's list of two loaders got Lightning's "no `dataloader_idx` argument" error)."""
        scores, b = self._scores(batch, batch_idx, "validation")
        self._update_val_auroc(scores, b, dataloader_idx)

    def _update_val_auroc(self, scores: Tensor, b: Any, dataloader_idx: int = 0) -> None:
        """Accumulate ``val_auroc`` (of validation loader ``dataloader_idx``) from a validation batch's scores, when the
        batch carries an is-anomaly flag: the ``corrupted`` flag of an indexed batch (the training form of one's own data
        has a placeholder target), else the target (a plain ``(x, is_anomaly)`` pair, the datamodules' splits)."""
        flag = b.corrupted if isinstance(b.corrupted, Tensor) else b.target
        if isinstance(flag, Tensor):
            loader_metric(self, "val_auroc", "val_auroc_more", dataloader_idx, AnomalyAUROC)[0].update(
                scores, flag.long())

    def on_validation_epoch_start(self) -> None:
        # from empty accumulators: an epoch that raised (a loader's error, labels 0/2 found at the epoch's end) left its
        # rows in the metrics, and the next epoch mixed them in (an anomaly newcomer's 0.918 for 0.931) or failed on them
        for metric in (self.val_auroc, *self.val_auroc_more):
            metric.reset()

    def on_test_epoch_start(self) -> None:
        for metric in (self.test_auroc, *self.test_auroc_more):  # as `on_validation_epoch_start`
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        """Log ``val_auroc`` over the epoch (every rank's batches), or say once why there is none. Without it a
        newcomer's RCA and AutoEncoder were given a validation loader and Lightning skipped the loop ("no
        `validation_step`")."""
        metrics = [self.val_auroc, *self.val_auroc_more]
        trainer = self._trainer
        several = trainer is not None and len(getattr(trainer, "num_val_batches", None) or []) > 1
        try:
            if not any(m.update_called for m in metrics):
                self._say_no_val_auroc("labels", "the validation batches carry no is-anomaly flag (a tensor or "
                                       "`TensorDataset(x)`), so `val_auroc` is not logged: give them as `(x, "
                                       "is_anomaly)` pairs, 1 = anomaly")
                return
            for k, metric in enumerate(metrics):
                if not metric.update_called:
                    continue
                name = f"val_auroc/dataloader_idx_{k}" if several else "val_auroc"  # Lightning's names in a step
                try:
                    auc = float(metric.compute())  # a collective under DDP: every rank gets here
                except ValueError as exc:  # one class only (no anomaly among the validation rows, or placeholders)
                    self._say_no_val_auroc("classes", f"`{name}` is not logged: {exc} The validation flags hold one "
                                           "value only")
                    continue
                # identical on every rank; the name says its loader already
                self.log(name, auc, on_step=False, on_epoch=True, add_dataloader_idx=False)
        finally:
            for metric in metrics:
                metric.reset()

    def _say_no_val_auroc(self, key: str, why: str) -> None:
        # the few batches of the sanity check may hold one class where the whole split does not
        if (self._trainer is not None and self._trainer.sanity_checking) or key in self._told_val:
            return
        self._told_val.add(key)
        rank_zero_info(f"{type(self).__name__}: {why}.")

    def on_test_epoch_end(self) -> None:
        for k, metric in enumerate([self.test_auroc, *self.test_auroc_more]):
            if not metric.update_called:
                continue
            auc = float(metric.compute())  # cached: the logged value
            if auc < 0.5:
                # an anomaly newcomer's flipped test flags read 0.057, and nothing was said
                which = f" (test loader {k})" if self.test_auroc_more else ""
                rank_zero_warn(f"{type(self).__name__}: test ROC-AUC {auc:.3f}{which} is below 0.5: the test samples "
                               "flagged 1 score as less anomalous than those flagged 0. Is the flag inverted (1 must "
                               "mean anomaly), or are these anomalies ones the model finds normal?")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._scores(batch, batch_idx, "predict")[0]

    def on_predict_epoch_end(self) -> None:
        self._say_nonfinite("predict")

    @torch.no_grad()
    def score_dataset(self, loader: Any) -> tuple[Tensor, Tensor | None]:
        """``(scores, targets)`` of every sample of ``loader``, in dataset order: sorted by the dataset index where
        the batches carry one (the indexed loaders of lit_robust's datamodules, ``train_dataloader()`` included,
        shuffled or not), else in the loader's order. The model is put in eval mode, then restored. A float tensor
        ``[n, dim]`` of samples is scored as a loader over it (``targets`` ``None``), as :meth:`fit_threshold` takes
        one; a numpy array or a DataFrame is refused with the conversion to make, and data without a sample with a
        ``ValueError``.

        An anomaly newcomer scored the shuffled training loader and paired the scores with their own labels: AUROC
        0.49 for a true 0.94, without a word. A loader that shuffles batches without an index is warned about."""
        return self._score_all(loader, "score_dataset", "loader")

    @torch.no_grad()
    def _score_all(self, loader: Any, method: str, argument: str) -> tuple[Tensor, Tensor | None]:
        """:meth:`score_dataset` for ``method`` (its errors name ``method`` and its ``argument``)."""
        if isinstance(loader, Tensor):
            # scored as a loader of input-only batches (see `_scores`); iterated as it is, a tensor gave its rows one by
            # one, refused as "inputs of shape (3,)" with the advice to change `dim` (a PyOD user's decision_scores_)
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(loader), batch_size=4096)
        elif _rows_not_batches(loader):
            # a DataFrame was iterated by column name: "expects batches ..., got a int"
            raise TypeError(f"{type(self).__name__}.{method}: `{argument}` must be a DataLoader or a float32 tensor "
                            f"[n, {self._dim()}] of samples, got {type(loader).__module__}.{type(loader).__qualname__}"
                            f": convert it, e.g. `{method}(torch.as_tensor(features, dtype=torch.float32))`.")
        modes = enter_eval(self)
        scores, targets, indices = [], [], []
        self._start_counting_nonfinite()
        try:
            for i, batch in enumerate(loader):
                batch = self.transfer_batch_to_device(batch, self.device, 0) if self.device.type != "cpu" else batch
                s, b = self._scores(batch, i, "scoring")
                scores.append(s.cpu())
                if isinstance(b.target, Tensor):
                    targets.append(b.target.cpu())
                indices.append(b.index.cpu() if isinstance(b.index, Tensor) else None)
        finally:
            restore_modes(modes)
        self._say_nonfinite(method)
        if not scores:  # torch.cat's "expected a non-empty list of Tensors" named nothing
            raise ValueError(f"{type(self).__name__}.{method}: `{argument}` must hold at least one sample, got none "
                             "(an empty dataset, loader or tensor).")
        out, target = torch.cat(scores), (torch.cat(targets) if targets else None)
        if indices and all(ix is not None for ix in indices):
            order = torch.argsort(torch.cat(indices).flatten(), stable=True)
            return out[order], (None if target is None or len(target) != len(out) else target[order])
        if isinstance(getattr(loader, "sampler", None), torch.utils.data.RandomSampler):
            rank_zero_warn(f"{type(self).__name__}.{method}: the loader shuffles and its batches carry no dataset "
                           "index, so the scores are in a random order that nothing maps back to your samples: score "
                           "a loader with `shuffle=False`.")
        return out, target

    # -- yes/no decisions ---------------------------------------------------------------------------------------
    def _default_contamination(self) -> float:
        """The contamination the model trained with: a numeric ``drop_ratio`` > 0, or ``"auto"``'s estimate."""
        ratio = getattr(self, "drop_ratio", None)
        name = type(self).__name__
        if ratio == "auto":
            estimate = getattr(self, "estimated_corruption", None)
            if estimate is None:
                raise ValueError(f"`contamination` must be given: {name}(drop_ratio='auto') has no estimate yet (it is "
                                 "made during a fit's warm-up), got None.")
            return float(estimate)
        if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio > 0:
            return float(ratio)
        raise ValueError(f"`contamination` must be given (a number in [0, 0.5), the share of anomalies in the data "
                         f"you pass): {name} trained with drop_ratio={ratio!r}, which names none, got None.")

    def fit_threshold(self, data: Any, contamination: float | None = None) -> float:
        """Set :attr:`threshold` from the scores of ``data``, the training samples (or others drawn alike), of which
        a share ``contamination`` is taken to be anomalous (:func:`anomaly_threshold`), and return it.

        Args:
            data: a ``DataLoader`` (scored as by :meth:`score_dataset`; the shuffled training loader works) or a
                float tensor ``[n, dim]`` of samples.
            contamination: the share of anomalies in ``data``, in ``[0, 0.5)``; default: the model's own — a
                numeric ``drop_ratio`` > 0, or with ``drop_ratio="auto"`` the fit's estimate
                (:attr:`estimated_corruption`; 0 makes the threshold the largest training score, which flags
                almost nothing: that is warned about, pass ``contamination`` then).

        The model scores in eval mode, in this process (call it after ``trainer.fit``, not inside a DDP run). A
        checkpoint saved afterwards (``trainer.save_checkpoint``) keeps the threshold for ``load_from_checkpoint``;
        the ones ``ModelCheckpoint`` wrote during the fit predate it. RCA's score averages dropout passes: seed
        (``torch.manual_seed``) before both calls for repeatable decisions.
        """
        from_auto = contamination is None and getattr(self, "drop_ratio", None) == "auto"
        contamination = self._default_contamination() if contamination is None else check_ratio("contamination",
                                                                                                   contamination)
        if from_auto and contamination == 0.0:
            # RCA on a newcomer's breast-cancer rows (10 % malignant) then flagged 2 of 207 test rows, 100 anomalous
            rank_zero_warn(f"{type(self).__name__}.fit_threshold: `contamination` was not given, so it is the "
                           "`drop_ratio='auto'` estimate, 0: the threshold is the largest training score and flags "
                           "almost nothing. Pass the share of anomalies you expect in `data`, a number in [0, 0.5): "
                           "`fit_threshold(data, contamination=0.05)`.")
        threshold = anomaly_threshold(self._score_all(data, "fit_threshold", "data")[0], contamination)
        self.threshold, self.threshold_contamination = threshold, contamination
        return threshold

    def on_train_start(self) -> None:
        """Clear a :attr:`threshold` set before this fit: it was read off the scores of the model before the training
        that now changes them (an anomaly newcomer's RCA, fitted again, kept its old threshold, saved it in the new
        checkpoints and flagged 3 % of the test anomalies where a fresh one flagged 53 %)."""
        super().on_train_start()
        if self.threshold is None:
            return
        rank_zero_warn(f"{type(self).__name__}: the threshold {self.threshold:.6g} set by `fit_threshold` before this "
                       "fit is cleared: it was read off the scores of the model before this training, which changes "
                       "them. Call `fit_threshold` again after the fit (`trainer.predict` sets one at the model's "
                       "contamination where it can).")
        self.threshold = self.threshold_contamination = None

    def on_predict_start(self) -> None:
        """Without a :attr:`threshold`, set one as :meth:`fit_threshold` does at the model's own contamination, from
        the datamodule's training rows where there are both, so that ``predictions.csv`` can say yes or no (PyOD's
        ``predict``; a table newcomer found no way to a decision from ``lit-robust predict``)."""
        self._start_counting_nonfinite()  # this run's NaN/inf scores are said at its end
        if self.threshold is not None:
            return
        ratio = getattr(self, "drop_ratio", None)
        try:
            contamination = self._default_contamination()
        except ValueError:  # no rate to set it at: the scores alone
            return self._say_no_decision("`drop_ratio='auto'` has no estimate (a fit's warm-up makes it)"
                                         if ratio == "auto" else f"it trained with drop_ratio={ratio!r}, which names "
                                         "no share of anomalies")
        if ratio == "auto" and contamination == 0.0:
            # a threshold at the largest training score says "no" to almost every row (a PyOD newcomer's CLI run)
            return self._say_no_decision("`drop_ratio='auto'` estimated 0 anomalies in training, and a threshold at "
                                         "that rate, the largest training score, flags almost nothing")
        datamodule = getattr(self.trainer, "datamodule", None)
        train = getattr(datamodule, "train_dataloader", None)
        if not callable(train):
            return self._say_no_decision("no datamodule with training rows to set it on")
        try:
            loader = train()
        except Exception:  # a datamodule without training rows (or not set up for them): the scores alone
            return self._say_no_decision("the datamodule gave no training rows to set it on")
        threshold = self.fit_threshold(loader, contamination)
        rank_zero_info(f"{type(self).__name__}: threshold {threshold:.6g} set on the training rows' scores at the "
                       f"model's contamination {contamination:.2%} (`fit_threshold`); `predicted_anomaly` is 1 above "
                       "it. Call `fit_threshold` yourself for another rate or set of rows.")

    def _say_no_decision(self, reason: str) -> None:
        """One line where ``predictions.csv`` (a :class:`~lit_robust.PredictionWriter` in the Trainer) will hold the
        scores alone: why there is no ``predicted_anomaly`` column, and how to get one."""
        if not any(isinstance(cb, PredictionWriter) for cb in self.trainer.callbacks):
            return
        rank_zero_info(f"{type(self).__name__}: no threshold, so the predictions have no `predicted_anomaly` column: "
                       f"{reason}. Set one in Python with `model.fit_threshold(train_loader, contamination=...)` (the "
                       "share of anomalies in those rows, in [0, 0.5)), save a checkpoint after it "
                       "(`trainer.save_checkpoint`) and predict from that checkpoint.")

    def describe_predictions(self, table: dict[str, list]) -> dict[str, list]:
        """``predictions.csv`` (:class:`~lit_robust.PredictionWriter`) gains ``predicted_anomaly`` (1 where the
        score is above :attr:`threshold`, or NaN/inf, as :meth:`predict_anomaly`) once a threshold is set."""
        if self.threshold is None or "prediction" not in table:
            return table
        out: dict[str, list] = {}
        for column, values in table.items():
            out[column] = values
            if column == "prediction":
                out["predicted_anomaly"] = [int(not float(v) <= self.threshold) for v in values]
        return out

    def predict_anomaly(self, x: Tensor) -> Tensor:
        """``[B]`` booleans: True where the score of ``x`` (a float tensor) is above :attr:`threshold` — or NaN/inf,
        which rank as most anomalous. The scores are computed as by :meth:`anomaly_score`, without gradients."""
        if self.threshold is None:
            raise RuntimeError(f"{type(self).__name__}.predict_anomaly needs a threshold: call "
                               "`model.fit_threshold(train_loader)` after training (or load a checkpoint saved after it).")
        with torch.no_grad():
            scores = self.anomaly_score(x)
        return ~(scores <= self.threshold)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.threshold is not None:
            checkpoint["anomaly_threshold"] = {"threshold": self.threshold,
                                               "contamination": self.threshold_contamination}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # before Lightning copies the weights in: `load_from_checkpoint` builds float32 layers, so a detector trained
        # with precision="64-true" came back rounded to float32 and refused the float64 rows it was trained on (a
        # PyOD user's); inside a Trainer its precision decides, as for any module
        saved_dtypes = {v.dtype for v in (checkpoint.get("state_dict") or {}).values()
                        if isinstance(v, Tensor) and v.is_floating_point()}
        if self._trainer is None and saved_dtypes == {torch.float64}:
            self.double()
        saved = checkpoint.get("anomaly_threshold")  # absent from checkpoints saved before `fit_threshold`
        self.threshold = None if saved is None else float(saved["threshold"])
        self.threshold_contamination = None if saved is None else saved["contamination"]
