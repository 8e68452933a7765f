"""Write what ``trainer.predict`` predicts into one CSV file, one row per sample (``lit-robust predict`` adds it)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lit_robust._backend import BasePredictionWriter, mismatch_advice, pl, rank_zero_info, rank_zero_warn
from lit_robust.data.indexed import unpack_batch
from lit_robust.report import PREDICTION_CLASS_COLUMNS, folder_error, with_sample_files, write_report
from lit_robust.selection import distributed

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Write the predictions of ``trainer.predict`` into ``predictions.csv``, one row per sample, sorted by index.

    ``lit-robust predict`` adds one to the Trainer (unless the config names a ``BasePredictionWriter`` of its own):
    LightningCLI drops the list ``trainer.predict`` returns, so this file is where the predictions end up.

    Columns:

    * ``index``: the sample's dataset index — the first element of an ``(index, input, target[, is_corrupted])``
      batch (every lit_robust datamodule's), else the index Lightning's sampler drew;
    * ``dataloader_idx``: only when there are several predict dataloaders (rows sort by it, then by index);
    * ``prediction`` for a ``[B]`` (or ``[B, 1]``) tensor — a class id (the ready-made classifiers' argmax),
      a score (the anomaly detectors'), a regression output — or ``prediction_0`` … ``prediction_{k-1}`` for
      ``[B, k]``;
    * ``target`` (or ``target_0`` …, as the prediction) when the batch has one: the third element of an indexed batch
      or the second of an ``(input, target)`` pair; left empty for batches without;
    * what the datamodule adds through its ``describe_predictions(table, loaders)`` method, when it has one and the
      predictions come from one loader: :class:`~lit_robust.TableDataModule` adds ``source_index`` (the row of your
      table), ``predicted_class`` / ``target_class`` (the class names) or, for a regression, ``predicted_<column>``
      and ``given_<column>`` in the table's units;
    * without such a method, for a loader over an ``IndexedDataset`` of files (torchvision's ``ImageFolder``):
      ``path``, each row's file, and ``predicted_class`` / ``target_class`` for class ids;
    * what the model adds through its own ``describe_predictions(table)``: an anomaly detector with a threshold
      (:meth:`~lit_robust.anomaly.AnomalyDetector.fit_threshold`, or the one it sets at predict from its
      training rows) adds ``predicted_anomaly``, 1 above it.

    Integers are written as integers, floats at full precision (the shortest text that reads back as the same value).

    Under DDP every rank keeps its own rows (Lightning's predict sampler gives each rank different samples, none
    repeated) and at the end of predict they are **gathered to rank 0, which writes the one file** — so the folder
    needs to be writable from rank 0 only.

    A ``predict_step`` returning anything else (a dict, a tuple, ``None``, a tensor of another shape, a width that
    changes between batches) or using ``dataloader_iter`` is not an error: no file is written, and one warning names
    what was returned. :attr:`path` is ``None`` then.

    Use it outside the CLI as any callback: ``pl.Trainer(callbacks=[PredictionWriter()]).predict(model, datamodule=dm)``,
    then read :attr:`path`.

    Args:
        dirpath: the file's folder (created if missing); default: the logger's folder (``trainer.log_dir``; the
            Trainer's ``default_root_dir`` without a logger).
        filename: the file's name.

    Attributes:
        path: the file written by the last ``predict`` (``None`` before, or when none was written).
        problem: why the last ``predict`` wrote no file (``None`` when it did).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        if dirpath is not None and (not isinstance(dirpath, (str, os.PathLike)) or not os.fspath(dirpath)):
            raise ValueError(f"`dirpath` must be a folder path (a non-empty str) or None, got {dirpath!r}.")
        if not isinstance(filename, str) or not filename.endswith(".csv") or os.path.basename(filename) != filename:
            raise ValueError(f"`filename` must be a file name ending in '.csv' (no folder: that is `dirpath`), got "
                             f"{filename!r}.")
        self.dirpath = dirpath
        self.filename = filename
        self.path: str | None = None
        self.problem: str | None = None
        self._batches: list[tuple[int, Tensor, Tensor, Tensor | None]] = []
        self._width: int | None = None

    # -- hooks --------------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        self.path, self.problem = None, None
        self._batches, self._width = [], None
        # Lightning's base class raises for a `predict_step(dataloader_iter)`; here that only means no file
        if "dataloader_iter" in _parameters(pl_module.predict_step):
            self.problem = "`predict_step` takes `dataloader_iter`, so the batches and their indices are unknown"
        # the other package's Trainer does not hand a writer of this one the batch indices
        self.problem = mismatch_advice(trainer, "the Trainer") or self.problem
        # the folder is checked before predicting: a `dirpath` under a file predicted every batch, then failed with a
        # bare NotADirectoryError (the folder is made here, as the report callbacks make theirs at setup)
        folder = self._folder(trainer)
        problem = folder_error(folder) if trainer.global_rank == 0 else None
        problem = trainer.strategy.broadcast(problem)
        if problem is not None:
            if self.dirpath is not None:
                raise ValueError(f"`dirpath` must be a folder {self.filename} can be written into, got {folder!r} "
                                 f"({problem}).")
            raise ValueError(f"{self.filename} goes into the logger's folder (`trainer.log_dir`) when `dirpath` is not "
                             f"given, and {folder!r} cannot be written ({problem}); pass `dirpath`.")

    def _folder(self, trainer: pl.Trainer) -> str:
        # `~` is the home folder, as in Lightning's `ModelCheckpoint(dirpath)`: `dirpath: ~/preds` wrote into `./~`
        return (os.path.expanduser(os.fspath(self.dirpath)) if self.dirpath is not None
                else (trainer.log_dir or trainer.default_root_dir))

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        if self.problem is not None:
            return
        index, target = _index_and_target(batch, batch_indices)
        if index is None:
            self.problem = (f"batch {batch_idx} carries no sample index (not an `(index, input, target)` batch) and "
                            "Lightning recorded none for its dataloader")
            return
        pred = _as_columns(prediction, len(index))
        if isinstance(pred, str):
            self.problem = f"`predict_step` returned {pred} for batch {batch_idx} of {len(index)} samples"
            return
        if self._width is None:
            self._width = pred.shape[1]
        elif pred.shape[1] != self._width:
            self.problem = (f"`predict_step` returned {pred.shape[1]} values per sample for batch {batch_idx}, "
                            f"{self._width} before")
            return
        tgt = _as_columns(target, len(index)) if target is not None else None
        self._batches.append((dataloader_idx, index, pred, tgt if isinstance(tgt, Tensor) else None))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # collectives: every rank reaches this hook once per `predict` (`trainer.log_dir` broadcasts rank 0's)
        folder = self._folder(trainer)
        parts = distributed.gather_objects((self.problem, self._width, self._batches), dst=0)
        self._batches = []
        if parts is None:  # not rank 0
            return
        problems = [p for p, _, _ in parts if p is not None]
        widths = {w for _, w, _ in parts if w is not None}
        if not problems and len(widths) > 1:
            problems = [f"`predict_step` returned {' or '.join(map(str, sorted(widths)))} values per sample on "
                        "different ranks"]
        if problems:
            self.problem = problems[0]
            rank_zero_warn(f"PredictionWriter: no {self.filename} written: {self.problem}. It writes one row per "
                           "sample from a `predict_step` that returns a tensor of shape [B] (class ids, scores) or "
                           "[B, k]; return one, or add your own `BasePredictionWriter` to `trainer.callbacks`.")
            return
        batches = [b for _, _, bs in parts for b in bs]
        if not batches:
            rank_zero_warn(f"PredictionWriter: no {self.filename} written: `predict` ran no batch.")
            return
        table = prediction_table(batches)
        decide = getattr(pl_module, "describe_predictions", None)
        if callable(decide):
            table = decide(table)  # the model's own words: an anomaly detector's decision at its threshold
        describe = getattr(getattr(trainer, "datamodule", None), "describe_predictions", None)
        if callable(describe) and "dataloader_idx" not in table:
            # the datamodule's own words for the rows (a TableDataModule: the row of the user's table, class names,
            # targets in the table's units); it returns the table unchanged where the loader is not its own
            table = describe(table, trainer.predict_dataloaders)
        elif "dataloader_idx" not in table:
            # an image folder in an IndexedDataset: each row's file and class names (an image-folder newcomer mapped
            # `index` by hand)
            loaders = trainer.predict_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) and len(loaders) == 1 else loaders
            table = with_sample_files(table, getattr(loader, "dataset", None),
                                      PREDICTION_CLASS_COLUMNS)
        # its float cells are text already (float32's shortest form): quoting text would only mark them as text
        self.path = write_report(table, os.path.join(folder, self.filename), quote_text=False)
        rows = sum(len(b[1]) for b in batches)
        rank_zero_info(f"PredictionWriter: {rows} predictions written to {self.path}")


def prediction_table(batches: Sequence[tuple[int, Tensor, Tensor, Tensor | None]]) -> dict[str, list[Any]]:
    """The CSV's columns from ``(dataloader_idx, index [B], prediction [B, k], target [B, q] or None)`` batches,
    rows sorted by ``(dataloader_idx, index)``.

    >>> t = prediction_table([(0, torch.tensor([3, 1]), torch.tensor([[7], [2]]), torch.tensor([[7], [0]])),
    ...                       (0, torch.tensor([0]), torch.tensor([[5]]), None)])
    >>> t["index"], t["prediction"], t["target"]
    ([0, 1, 3], [5, 2, 7], [None, 0, 7])
    >>> prediction_table([(0, torch.tensor([1, 0]), torch.tensor([[0.5, 0.25], [1.0, -2.0]]), None)])
    {'index': [0, 1], 'prediction_0': ['1.0', '0.5'], 'prediction_1': ['-2.0', '0.25']}
    """
    loaders = sorted({d for d, _, _, _ in batches})
    table: dict[str, list[Any]] = {"index": []}
    if len(loaders) > 1:
        table["dataloader_idx"] = []
    width = batches[0][2].shape[1]
    pred_names = ["prediction"] if width == 1 else [f"prediction_{j}" for j in range(width)]
    tgt_width = max((t.shape[1] for _, _, _, t in batches if t is not None), default=None)
    tgt_names = [] if tgt_width is None else ["target"] if tgt_width == 1 else [f"target_{j}" for j in range(tgt_width)]
    rows = []
    for d, index, pred, tgt in batches:
        p_cells = _cells(pred)
        t_cells = _cells(tgt) if tgt is not None and tgt.shape[1] == tgt_width else [[None] * len(tgt_names)] * len(index)
        rows += [(d, int(i), p, t) for i, p, t in zip(index.tolist(), p_cells, t_cells, strict=True)]
    rows.sort(key=lambda r: (r[0], r[1]))
    table.update({name: [] for name in pred_names + tgt_names})
    for d, i, p, t in rows:
        table["index"].append(i)
        if "dataloader_idx" in table:
            table["dataloader_idx"].append(d)
        for name, v in zip(pred_names, p, strict=True):
            table[name].append(v)
        for name, v in zip(tgt_names, t, strict=True):
            table[name].append(v)
    return table


def _cells(t: Tensor) -> list[list[Any]]:
    """Rows of ``t`` ([n, k]) as Python values: ints as ints, floats as their shortest round-trip text."""
    if t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()):
        return t.to(torch.int64).tolist()
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return [[str(v) for v in row] for row in t.to(dtype).numpy()]


def _parameters(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return set()


def _index_and_target(batch: Any, batch_indices: Sequence[int] | None) -> tuple[Tensor | None, Any]:
    """The batch's sample indices (its own, else those Lightning's sampler drew) and its target (or ``None``)."""
    try:
        b = unpack_batch(batch)
    except ValueError:
        b = None
    if b is not None:
        return b.index.detach().to("cpu", torch.int64), b.target
    target = batch[1] if isinstance(batch, (tuple, list)) and len(batch) == 2 else None
    if not batch_indices:
        return None, None
    return torch.as_tensor(list(batch_indices), dtype=torch.int64), target


def _as_columns(value: Any, n: int) -> Tensor | str:
    """``value`` as a CPU ``[n, k]`` tensor, or what it is (for the warning) when it is not a ``[n]``/``[n, k]``
    real tensor."""
    if not isinstance(value, Tensor):
        return "None" if value is None else f"a {type(value).__name__}"
    if value.ndim not in (1, 2) or value.shape[0] != n or value.is_complex():
        return f"a {'complex ' if value.is_complex() else ''}tensor of shape {tuple(value.shape)}"
    value = value.detach().cpu()
    return value.unsqueeze(1) if value.ndim == 1 else value
