r"""Autoencoder anomaly detectors: a plain autoencoder and RCA (thesis ch. 2, Alg. 1).

RCA trains two autoencoders :math:`\mathcal A_1, \mathcal A_2`. On every minibatch :math:`S` each one
(dropout off) ranks the samples by reconstruction error and keeps its :math:`\lfloor\beta |S|\rfloor`
smallest (:func:`lit_robust.selection.rules.smallest_k_mask`, ties by dataset index); :math:`\mathcal A_1` is
then updated on :math:`\mathcal A_2`'s selection and :math:`\mathcal A_2` on :math:`\mathcal A_1`'s (dropout
:math:`r` on). :math:`\beta` decays linearly from 1 to :math:`1-\varepsilon`. The test score of a sample is
the mean over :math:`v` dropout passes of :math:`(e_1 + e_2)/2`, its reconstruction errors under both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_robust._backend import rank_zero_warn
from lit_robust._checks import _is_int, check_int, check_lr, check_number
from lit_robust._lightning import epoch_cut, epoch_part, mark_restored
from lit_robust.anomaly.base import AnomalyDetector, check_finite, check_input, check_input_dim
from lit_robust.callbacks._report_file import EpochReport, ModuleReport, check_report_args
from lit_robust.callbacks._resume import (
    check_resume_arguments_in_fit,
    random_state,
    restore_random_state_in_fit,
    warn_cut_epoch_in_fit,
)
from lit_robust.callbacks.batch_filter import (
    planned_epochs,
    refuse_sparse_monitors,
    sparse_metrics,
    warmup_outlasts_fit,
    warn_early_stopping_in_warmup,
    warn_ended_in_warmup,
)
from lit_robust.data.indexed import unpack_batch
from lit_robust.data.spec import DataSpec
from lit_robust.mixin import RobustMixin
from lit_robust.report import ReportFormat
from lit_robust.selection import distributed
from lit_robust.selection.auto_drop import (
    REPORT_RANKS,
    AutoDropRatio,
    Estimator,
    auto_for,
    check_auto_args,
    check_warmup_epochs,
    kept_on_a_fit_that_goes_on,
    resolved_warmup,
    say_reestimated,
)
from lit_robust.selection.rules import keep_count, smallest_k_mask

__all__ = ["AutoEncoder", "RCA", "rca_keep_ratio", "rca_exchange_masks", "reconstruction_error", "MLPAutoEncoder"]


def reconstruction_error(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-sample mean squared reconstruction error, shape ``[B]``."""
    return ((x_hat - x) ** 2).flatten(1).mean(dim=1)


def rca_keep_ratio(epoch: int, drop_ratio: float, warmup_epochs: int) -> float:
    r"""Thesis Alg. 1's :math:`\beta` in the 0-based ``epoch``: :math:`\max(1 - t\varepsilon/T, 1-\varepsilon)`.

    Alg. 1 subtracts :math:`\varepsilon/(\alpha\cdot\text{max\_epoch})` after every epoch, i.e.
    ``warmup_epochs`` :math:`T = \alpha\cdot\text{max\_epoch}`; ``warmup_epochs=0`` keeps :math:`1-\varepsilon`
    from the start.

    >>> [round(rca_keep_ratio(t, 0.1, 4), 3) for t in (0, 2, 4, 9)]
    [1.0, 0.95, 0.9, 0.9]
    """
    if warmup_epochs == 0:
        return 1.0 - drop_ratio
    return 1.0 - drop_ratio * min(epoch / warmup_epochs, 1.0)


def rca_exchange_masks(errors_1: Tensor, errors_2: Tensor, keep_ratio: float,
                       index: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""RCA's sample exchange (Alg. 1, lines 3–4): the masks that train :math:`\mathcal A_1` and :math:`\mathcal A_2`.

    :math:`\mathcal A_1` trains on :math:`c_2`, the :math:`\lfloor\beta B\rfloor` smallest errors of
    :math:`\mathcal A_2`, and vice versa; ranking by ``(error, index)``, NaN last; at least one sample is kept.

    >>> m1, m2 = rca_exchange_masks(torch.tensor([0.1, 5.0, 0.2]), torch.tensor([3.0, 0.1, 0.2]), 2 / 3)
    >>> m1.tolist(), m2.tolist()
    ([False, True, True], [True, False, True])
    """
    n = errors_1.numel()
    if errors_2.numel() != n:
        raise ValueError(f"`errors_2` must have one error per sample of `errors_1` (both autoencoders score the same "
                         f"batch), {n} entries, got {errors_2.numel()}.")
    k = max(keep_count(n, keep_ratio), 1) if n else 0
    c1 = smallest_k_mask(errors_1, k, index)
    c2 = smallest_k_mask(errors_2, k, index)
    return c2, c1


class MLPAutoEncoder(nn.Module):
    """Fully connected autoencoder ``dim -> hidden -> latent -> hidden -> dim`` with dropout after each hidden layer."""

    def __init__(self, dim: int, hidden: int = 128, latent: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                                     nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                                     nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x.flatten(1))).view_as(x)


@contextmanager
def _dropout(module: nn.Module, active: bool) -> Iterator[None]:
    """Switch only the dropout layers of ``module`` on or off, restoring their modes afterwards."""
    drops = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in drops]
    for m in drops:
        m.train(active)
    try:
        yield
    finally:
        for m, mode in zip(drops, modes):
            m.train(mode)


def _check_arch(dim: Any, hidden: Any, latent: Any, dropout: Any) -> tuple[int | None, int, int]:
    """``(dim, hidden, latent)`` as Python ints: numpy integers count, as in :func:`~lit_robust._checks.check_int`,
    and go into ``hparams`` as ints (a numpy integer there makes a checkpoint unreadable weights-only)."""
    if dim is not None and (not _is_int(dim) or dim < 1):
        raise ValueError(f"`dim` must be an integer >= 1 or None (read from the datamodule at `setup`), got {dim!r}.")
    hidden, latent = check_int("hidden", hidden, 1), check_int("latent", latent, 1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
    return (None if dim is None else int(dim)), hidden, latent


def _check_optim(lr: Any, weight_decay: Any) -> None:
    check_lr(lr)
    check_number("weight_decay", weight_decay, 0)


class AutoEncoder(RobustMixin, AnomalyDetector):
    """A plain autoencoder detector: trained on every sample, score = reconstruction error (dropout off).

    It adopts :class:`~lit_robust.RobustMixin` (loss = reconstruction error), so per-batch filters such as
    ``BatchFilter("spl", ...)`` apply to it as to any module.

    Args:
        dim: the number of input values (``dim -> hidden -> latent -> hidden -> dim``); ``None`` (default): the
            datamodule's number of input values, read at ``setup`` (plain dataloaders: pass it).
        hidden: width of the hidden layers.
        latent: size of the code (bottleneck).
        dropout: dropout rate after each hidden layer in training, in [0, 1) (default 0: none); off when scoring.
        lr: Adam's learning rate.
        weight_decay: Adam's L2 penalty (0: none).
    """

    def __init__(self, dim: int | None = None, hidden: int = 128, latent: int = 16, dropout: float = 0.0,
                 lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        dim, hidden, latent = _check_arch(dim, hidden, latent, dropout)  # plain ints for `save_hyperparameters`
        _check_optim(lr, weight_decay)
        self.save_hyperparameters()
        self.net: MLPAutoEncoder | None = None
        self._build_if_sized()

    def _build(self, dim: int) -> None:
        hp = self.hparams
        self.net = MLPAutoEncoder(dim, hp.hidden, hp.latent, hp.dropout)

    def per_sample_loss(self, batch: Any) -> Tensor:
        x = unpack_batch(batch).input
        self._check_input(x)
        return reconstruction_error(self.net(x), x)

    def _check_input(self, x: Tensor) -> None:
        self._require_built()
        check_input(f"AutoEncoder(dim={self.hparams.dim})", x, self.hparams.dim, self.net.encoder[0].weight.dtype,
                    flat=False)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        losses = self.per_sample_loss(batch)
        check_finite("reconstruction error", losses, batch_idx, unpack_batch(batch).index, "training")
        loss = self.reduce_loss(losses, batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless the datamodule's inputs have ``dim`` values (flattened)."""
        check_input_dim(spec, self.net.encoder[0].in_features, flatten=True)

    def anomaly_score(self, x: Tensor) -> Tensor:
        self._check_input(x)
        with _dropout(self.net, False):
            return reconstruction_error(self.net(x), x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class RCA(ModuleReport, AnomalyDetector):
    r"""Robust Collaborative Autoencoders (thesis Alg. 1): two autoencoders trained on each other's best-fit samples.

    See the module docstring for the algorithm.

    Args:
        dim: the number of input values of the two :class:`MLPAutoEncoder` (independent initialisations,
            ``dim -> hidden -> latent -> hidden -> dim``); ``None`` (default): the datamodule's number of input
            values, read at ``setup`` (plain dataloaders: pass it).
        hidden: width of the autoencoders' hidden layers.
        latent: size of the autoencoders' code (bottleneck).
        drop_ratio: :math:`\varepsilon \in [0, 0.5)`, the assumed anomaly ratio; :math:`\beta \to 1-\varepsilon`.
            Or ``"auto"``: :math:`\varepsilon` is estimated from the training reconstruction errors during warm-up
            as by :class:`~lit_robust.BatchFilter` (:mod:`lit_robust.selection.auto_drop`: epoch 0 keeps every sample;
            the median of the warm-up epochs' estimates; a sample's score is :math:`(e_1 + e_2)/2`, dropout off,
            averaged over the epoch), gathered over the DDP ranks; logged as ``rca/estimated_corruption`` and
            kept in :attr:`estimated_corruption` and in checkpoints.
        warmup_epochs: epochs over which :math:`\beta` decays from 1 (:func:`rca_keep_ratio`); ``None`` (default):
            0 with a numeric ``drop_ratio``, 3 with ``"auto"`` (an explicit 0 or 1 with ``"auto"`` fixes the estimate
            from a model trained one epoch: warned).
        dropout: :math:`r \in [0, 1)`, used in the training updates and the test ensemble.
        test_passes: :math:`v \ge 1` dropout passes averaged at test time (one pass if ``dropout == 0``).
        lr: Adam's learning rate, over both autoencoders (Adam is per coordinate, so one optimizer over the two
            disjoint parameter sets equals one optimizer each).
        weight_decay: Adam's L2 penalty (0: none).
        estimator: how ``drop_ratio="auto"`` estimates :math:`\varepsilon` from the reconstruction errors: a score
            mixture, ``"gmm"`` (default, Gaussian) or ``"bmm"`` (Beta) (:func:`~lit_robust.estimate_corruption`; there
            are no labels here). Not used with a number as ``drop_ratio``.
        auto_margin: :math:`m \in [0, 0.5)` added to the estimate (``drop_ratio="auto"`` only; default 0).
        reestimate: re-estimate at the end of every epoch, not only in warm-up (``drop_ratio="auto"`` only); the
            latest positive estimate is in force while more than half of the epochs' estimates are positive, else 0.
        report: write the per-sample report (:mod:`lit_robust.report`), as a :class:`~lit_robust.BatchFilter`
            does: ``<folder>/rca_report.csv`` at the end of training, one row per training sample, most anomalous
            first; ``score_last_epoch`` is the mean over the last epoch of the exchange's score
            :math:`(e_1 + e_2)/2` (dropout off), ``kept`` says no batch of the last epoch left the sample out of
            either update, ``clean_posterior`` is ``estimator``'s mixture on those scores, and ``corrupted`` the
            ground truth when the batches carry it. ``None`` (default): on when ``report_dir`` is given or under
            ``lit-robust fit``; the path is :attr:`report_path`.
        report_dir: the report's folder (created if missing); default: the logger's folder (``trainer.log_dir``).
        report_format: ``"csv"`` (default) or ``"parquet"`` (needs pyarrow).

    Logged per epoch: ``rca/keep_ratio``; with ground truth in the batches, ``rca/dropped_anomaly_frac`` — the
    share of anomalies among the samples left out of the exchange.
    """

    def __init__(self, dim: int | None = None, hidden: int = 128, latent: int = 16,
                 drop_ratio: float | Literal["auto"] = 0.1,
                 warmup_epochs: int | None = None, dropout: float = 0.2, test_passes: int = 10, lr: float = 1e-3,
                 weight_decay: float = 0.0, estimator: Estimator = "gmm", auto_margin: float = 0.0,
                 reestimate: bool = False, report: bool | None = None, report_dir: str | None = None,
                 report_format: ReportFormat = "csv") -> None:
        super().__init__()
        dim, hidden, latent = _check_arch(dim, hidden, latent, dropout)  # plain ints for `save_hyperparameters`
        _check_optim(lr, weight_decay)
        check_report_args(report, report_dir, report_format)
        # checked before `save_hyperparameters` records it: `drop_ratio` lives in `hparams` only (the property)
        drop_ratio = check_auto_args(drop_ratio, estimator, auto_margin, reestimate, False, high=0.5)
        warmup_epochs = check_warmup_epochs(warmup_epochs)
        self._auto: AutoDropRatio | None = auto_for(None, "RCA", drop_ratio, estimator, auto_margin, reestimate,
                                                    resolved_warmup(warmup_epochs, drop_ratio),
                                                    ranked_by=REPORT_RANKS)
        test_passes = check_int("test_passes", test_passes, 1)
        self.save_hyperparameters()
        # attributes, not only hyperparameters: `lit-robust fit` turns a `report` left at None on
        self.report, self.report_dir, self.report_format = report, report_dir, report_format
        self.report_path: str | None = None  # the report written by the last fit
        self._report = EpochReport("RCA", "rca_report")
        # this epoch's [samples left out of an update, anomalies among them, batches with ground truth], this rank's
        self._drop_counts: Tensor | None = None
        self.ae1: MLPAutoEncoder | None = None
        self.ae2: MLPAutoEncoder | None = None
        self._build_if_sized()

    def _build(self, dim: int) -> None:
        hp = self.hparams
        self.ae1 = MLPAutoEncoder(dim, hp.hidden, hp.latent, hp.dropout)
        self.ae2 = MLPAutoEncoder(dim, hp.hidden, hp.latent, hp.dropout)

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless the datamodule's inputs have ``dim`` values (flattened)."""
        check_input_dim(spec, self.ae1.encoder[0].in_features, flatten=True)

    def keep_ratio_at(self, epoch: int) -> float:
        """:math:`\beta` of the 0-based ``epoch`` (with ``"auto"``: from the current estimate, 1 before the first)."""
        if self._auto is not None:
            return 1.0 - self._auto.drop_ratio_at(epoch)
        return rca_keep_ratio(epoch, self.drop_ratio, self._warmup)

    @property
    def drop_ratio(self) -> float | Literal["auto"]:
        """:math:`\\varepsilon` (or ``"auto"``), read from ``hparams["drop_ratio"]``: the attribute and
        ``hparams.drop_ratio`` (what a checkpoint saves) are one value, checked at the next fit's setup, as
        ``hparams.warmup_epochs`` (before, a value set in ``hparams`` was overwritten at setup without a word)."""
        return self.hparams["drop_ratio"]

    @drop_ratio.setter
    def drop_ratio(self, value: float | Literal["auto"]) -> None:
        self.hparams["drop_ratio"] = value

    @property
    def _warmup(self) -> int:
        """``hparams.warmup_epochs`` as the schedule uses it (``None``: 3 with ``"auto"``, else 0), read afresh at
        every use: a notebook user may set ``drop_ratio`` or ``hparams.warmup_epochs`` between fits."""
        return resolved_warmup(self.hparams.warmup_epochs, self.drop_ratio)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self._last_epoch_ended: int | None = None
        short = None if stage != "fit" or self._trainer is None else warmup_outlasts_fit(
            self.drop_ratio, self.hparams.warmup_epochs, planned_epochs(self._trainer))
        if short is not None:  # as BatchFilter and CoTeaching say: the fit would end before beta reaches 1 - eps
            rank_zero_warn(f"RCA: {short}")
        if stage == "fit" and self._trainer is not None:
            refuse_sparse_monitors(self._trainer, "RCA", sparse_metrics(self._trainer,
                ("rca/dropped_anomaly_frac",), "rca/estimated_corruption", self.drop_ratio, flag="anomaly"),
                history=None)  # RCA keeps no history of its epochs
            self.setup_report()

    def _apply_arguments(self, goes_on: bool = False) -> None:
        """At fit setup: ``drop_ratio`` and ``hparams.warmup_epochs`` (and the ``"auto"`` ones in ``hparams``) as they
        are now, checked and applied (a notebook user's `rca.drop_ratio = 0.1` on a module fitted before with ``"auto"``
        was ignored); on a fit that goes on, changed ``"auto"`` arguments are refused."""
        hp = self.hparams
        self.drop_ratio = check_auto_args(self.drop_ratio, hp.estimator, hp.auto_margin, hp.reestimate, False, high=0.5)
        check_warmup_epochs(hp.warmup_epochs)
        new = auto_for(self._auto, "RCA", self.drop_ratio, hp.estimator, hp.auto_margin, hp.reestimate,
                       self._warmup, ranked_by=REPORT_RANKS)
        self._auto = kept_on_a_fit_that_goes_on(self._auto, new, "RCA", goes_on)

    def resume_arguments(self) -> dict[str, Any]:
        """The arguments that shape the exchange's schedule; a checkpoint holds them and a resumed fit must have the
        same (checked at restore, as :class:`~lit_robust.BatchFilter`'s are)."""
        hp = self.hparams
        # the warm-up in use, not the argument: a checkpoint of a numeric ratio's default 0 resumes with `None`
        return {"drop_ratio": self.drop_ratio, "warmup_epochs": self._warmup, "estimator": hp.estimator,
                "auto_margin": hp.auto_margin, "reestimate": hp.reestimate}

    @property
    def estimated_corruption(self) -> float | None:
        """``drop_ratio="auto"``: the latest estimate (``None`` before the first one and with a numeric ratio)."""
        return None if self._auto is None else self._auto.estimate

    def _check_input(self, x: Tensor) -> None:
        self._require_built()
        check_input(f"RCA(dim={self.hparams.dim})", x, self.hparams.dim, self.ae1.encoder[0].weight.dtype, flat=False)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        b = unpack_batch(batch)
        x = b.input
        self._check_input(x)
        with torch.no_grad(), _dropout(self, False):  # Alg. 1 line 3: forward with dropout = 0
            e1 = reconstruction_error(self.ae1(x), x)
            e2 = reconstruction_error(self.ae2(x), x)
        train1, train2 = self._exchange(b, e1, e2, batch_idx)
        loss1 = reconstruction_error(self.ae1(x[train1]), x[train1]).mean()
        loss2 = reconstruction_error(self.ae2(x[train2]), x[train2]).mean()
        loss = loss1 + loss2
        self._log_step(loss, b, train1, train2)
        return loss

    # Opaque to torch.compile, as RobustMixin's step: they read the epoch, the schedule, the bookkeeping and the
    # logger, which dynamo would guard on and recompile the step for at every epoch of the warm-up.
    @torch.compiler.disable
    def _exchange(self, b: Any, e1: Tensor, e2: Tensor, batch_idx: int) -> tuple[Tensor, Tensor]:
        """Each autoencoder's training samples of this batch (Alg. 1 lines 4-5), with the "auto" scores and the
        report's sums recorded."""
        check_finite("reconstruction error", torch.cat([e1, e2]), batch_idx, torch.cat([b.index, b.index]),
                     "training")
        index = b.index.to(e1.device)
        collect = self._auto is not None and self._auto.collects(self.current_epoch)
        score = 0.5 * (e1.double() + e2.double()) if collect or self._report.active else None  # only when used
        if collect:
            self._auto.add(index, score)
        train1, train2 = rca_exchange_masks(e1, e2, self.keep_ratio_at(self.current_epoch), index)
        if self._report.active:
            self._report.add(index, score, ~(train1 & train2), corrupted=b.corrupted)
        return train1, train2

    @torch.compiler.disable
    def _log_step(self, loss: Tensor, b: Any, train1: Tensor, train2: Tensor) -> None:
        self.log("train_loss", loss, prog_bar=True)
        # the epoch's figures are counted here and logged at epoch end, summed over the ranks there: logged from the
        # step with `sync_dist=True`, the progress bar's epoch-end read on rank 0 all-reduced them while the other
        # ranks were in the report's collective (a 2-process `lit-robust fit` of configs/rca_mnist.yaml hung there)
        if b.corrupted is None:
            return
        bad = b.corrupted.to(device=train1.device, dtype=torch.bool)
        dropped = ~(train1 & train2)  # left out of at least one update
        counts = torch.stack([dropped.sum(), (bad & dropped).sum(), torch.ones((), dtype=torch.int64,
                                                                                  device=dropped.device)])
        self._drop_counts = counts if self._drop_counts is None else self._drop_counts + counts

    def on_train_start(self) -> None:
        super().on_train_start()
        # as BatchFilter and CoTeaching: an EarlyStopping that may stop inside the warm-up is said before training
        warn_early_stopping_in_warmup("RCA", self.trainer, self._warmup, self._auto is not None, self.drop_ratio)

    def on_train_end(self) -> None:
        self._close_skipped_epoch()  # (its epoch is the last ended before it is read)
        last = self.__dict__.get("_last_epoch_ended")
        # a Lightning user's EarlyStopping ended an "auto" RCA fit after epoch 1 of its 3-epoch warm-up, silently
        warn_ended_in_warmup("RCA", self.trainer, None if last is None else (last, 1.0 - self.keep_ratio_at(last)),
                             self._warmup, self._auto is not None)
        say_reestimated(self._auto)
        super().on_train_end()  # the report

    def on_train_epoch_end(self) -> None:
        self._epoch_end(self.current_epoch)

    def _epoch_end(self, epoch: int, log: bool = True) -> None:
        self._last_epoch_ended = epoch  # this fit's (reset at each fit's setup)
        self._report.end_epoch(epoch, self.trainer if log else None)  # a collective, before an epoch-end checkpoint
        self._short_epoch = epoch_cut(self.trainer) if log else None  # said when a fit resumes from its end
        counts = self._drop_counts if self._drop_counts is not None else torch.zeros(3, dtype=torch.int64,
                                                                                     device=self.device)
        self._drop_counts = None
        dropped, bad, with_truth = (int(v) for v in distributed.all_reduce_sum(counts).tolist())  # every rank
        if log:
            self.log("rca/keep_ratio", self.keep_ratio_at(epoch), on_step=False, on_epoch=True, sync_dist=True)
            if with_truth and dropped:
                self.log("rca/dropped_anomaly_frac", bad / dropped, on_step=False, on_epoch=True, sync_dist=True)
        if self._auto is None:
            return
        # a collective: every rank, every epoch (one closed at train start, skipped by Lightning, was whole)
        self._auto.end_epoch(epoch, self.device, epoch_part(self.trainer) if log else None)
        if log and self._auto.estimate is not None:
            # identical on every rank
            self.log("rca/estimated_corruption", self._auto.estimate, on_step=False, on_epoch=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._auto is not None:
            checkpoint["rca_auto_drop"] = self._auto.state_dict()
        checkpoint["rca_report"] = self._report.state_dict()
        checkpoint["rca_random_state"] = random_state()
        checkpoint["rca_arguments"] = self.resume_arguments()
        checkpoint["rca_short_epoch"] = getattr(self, "_short_epoch", None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # before anything is restored; absent from older checkpoints
        check_resume_arguments_in_fit(self, {"arguments": checkpoint.get("rca_arguments")})
        super().on_load_checkpoint(checkpoint)
        mark_restored(self)  # (outside a fit too: each fit's setup clears it)
        self._note_skipped_epoch_end(checkpoint)
        warn_cut_epoch_in_fit(self, checkpoint.get("rca_short_epoch"))
        if self._auto is not None and "rca_auto_drop" in checkpoint:
            self._auto.load_state_dict(checkpoint["rca_auto_drop"])
        self._report.load_state_dict(checkpoint.get("rca_report"))  # absent from checkpoints before the report
        restore_random_state_in_fit(self, checkpoint.get("rca_random_state"))

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Mean over ``test_passes`` dropout passes of the two autoencoders' mean error (Alg. 1, testing phase)."""
        self._check_input(x)
        passes = self.hparams.test_passes if self.hparams.dropout > 0 else 1
        total = x.new_zeros(x.shape[0])
        with _dropout(self, self.hparams.dropout > 0):
            for _ in range(passes):
                total += 0.5 * (reconstruction_error(self.ae1(x), x) + reconstruction_error(self.ae2(x), x))
        return total / passes

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
