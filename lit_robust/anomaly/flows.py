r"""Real NVP density estimation for anomaly detection, with the RobustRealNVP switches (thesis ch. 3).

One module, three methods of thesis §3.5:

==================  ===================  =====================
method              ``drop_ratio``       ``spectral_norm``
==================  ===================  =====================
Real NVP            0                    False
TrimRealNVP         :math:`\varepsilon`  False
RobustRealNVP       :math:`\varepsilon`  True
==================  ===================  =====================

Training minimises :math:`-\log \hat p(x)`; with ``drop_ratio`` :math:`\varepsilon > 0` every batch drops its
:math:`\varepsilon`-fraction of lowest-density points (thesis Alg. 2) — SPL on the loss :math:`-\log\hat p`,
done by :class:`lit_robust.BatchFilter` (``rule="spl"``), which the module adds to the Trainer itself. With
``spectral_norm=True`` every Linear layer of the coupling networks :math:`s` and :math:`t` is normalised to
:math:`k`-Lipschitz (:func:`lit_robust.apply_spectral_norm`, thesis §3.4.3–3.4.4). The anomaly score is
:math:`-\log \hat p(x)`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_robust._backend import Callback, TrainerFn
from lit_robust._checks import _is_int, check_bool, check_int, check_lr, check_number
from lit_robust.anomaly.base import AnomalyDetector, check_finite, check_input, check_input_dim
from lit_robust.callbacks._report_file import check_report_args, report_enabled
from lit_robust.callbacks.batch_filter import BatchFilter
from lit_robust.data.indexed import unpack_batch, unpack_eval_batch
from lit_robust.data.spec import DataSpec
from lit_robust.functional.spectral import _check_iterations, _check_k, apply_spectral_norm, held_power_iteration
from lit_robust.mixin import RobustMixin
from lit_robust.report import ReportFormat
from lit_robust.selection.auto_drop import Estimator, check_auto_args, check_warmup_epochs

__all__ = ["RealNVP", "RobustRealNVP", "AffineCoupling"]


def _mlp(dim: int, hidden: int, layers: int, last: nn.Module | None) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    mods.append(nn.Linear(width, dim))
    if last is not None:
        mods.append(last)
    return nn.Sequential(*mods)


class AffineCoupling(nn.Module):
    r"""Real NVP affine coupling (Dinh et al. 2017; thesis eq. 3.2), data :math:`\to` latent direction.

    With a binary ``mask`` :math:`m`: :math:`z = m x + (1-m)\,(x \odot e^{s(mx)} + t(mx))`,
    :math:`\log|\det J| = \sum_j (1-m_j)\,s_j(mx)`. :math:`s` ends in ``tanh`` (thesis §3.4.4), so each
    coupling scales a coordinate by at most :math:`e`.
    """

    def __init__(self, mask: Tensor, hidden: int, layers: int) -> None:
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.float())
        self.s = _mlp(dim, hidden, layers, nn.Tanh())
        self.t = _mlp(dim, hidden, layers, None)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.mask
        xm = x * m
        s = self.s(xm) * (1 - m)
        t = self.t(xm) * (1 - m)
        z = xm + (1 - m) * (x * torch.exp(s) + t)
        return z, s.sum(dim=1)

    def inverse(self, z: Tensor) -> Tensor:
        m = self.mask
        zm = z * m
        s = self.s(zm) * (1 - m)
        t = self.t(zm) * (1 - m)
        return zm + (1 - m) * (z - t) * torch.exp(-s)


class RealNVP(RobustMixin, AnomalyDetector):
    r"""Real NVP on vectors (``[B, dim]``) as an unsupervised anomaly detector: score = :math:`-\log \hat p(x)`.

    See the module docstring for the three methods its switches give (Real NVP, TrimRealNVP, RobustRealNVP).

    Batches are ``(index, x, target[, is_anomaly])``; the target is ignored in training (unsupervised) and is
    the 0/1 anomaly label in ``test_step`` (ROC-AUC, logged as ``test_auroc``).

    Args:
        dim: input dimension (>= 2); ``None`` (default): the datamodule's number of features, read at ``setup``
            (plain dataloaders: pass it).
        n_couplings: affine couplings; their masks alternate between the two halves of the coordinates.
        hidden: width of the :math:`s`/:math:`t` networks.
        layers: the number of hidden layers of each :math:`s`/:math:`t` network.
        drop_ratio: :math:`\varepsilon \in [0, 0.5)`, the fraction of every batch dropped (lowest density), or
            ``"auto"``: estimated from the training :math:`-\log\hat p` during warm-up by the module's
            :class:`~lit_robust.BatchFilter` (:mod:`lit_robust.selection.auto_drop`: epoch 0 drops nothing; logged as
            ``filter/estimated_corruption``, kept in ``batch_filter.history`` and in checkpoints).
        warmup_epochs: the dropped fraction ramps from 0 to ``drop_ratio`` over these epochs
            (:class:`~lit_robust.BatchFilter`'s schedule); 0 drops it from the first step. ``None`` (default): 0 with
            a numeric ``drop_ratio``, 3 with ``"auto"`` (an explicit 0 or 1 with ``"auto"`` fixes the estimate from a
            model trained one epoch: warned).
        spectral_norm: normalise every Linear layer of :math:`s` and :math:`t` to ``k``-Lipschitz.
        k: the per-layer Lipschitz bound (> 0).
        n_power_iterations: power iterations per training step and layer (the estimate :math:`\hat\sigma` lags
            behind fast-changing weights; see :mod:`lit_robust.functional.spectral`).
        lr: Adam's learning rate.
        weight_decay: Adam's L2 penalty (0: none).
        estimator: how ``drop_ratio="auto"`` estimates :math:`\varepsilon` from the training :math:`-\log\hat p`: a
            score mixture, ``"gmm"`` (default, Gaussian) or ``"bmm"`` (Beta) (:func:`~lit_robust.estimate_corruption`;
            there are no labels here). Not used with a number as ``drop_ratio``.
        auto_margin: :math:`m \in [0, 0.5)` dropped on top of the estimate (``drop_ratio="auto"`` only; default 0).
        reestimate: re-estimate at the end of every epoch, not only in warm-up (``drop_ratio="auto"`` only); the
            latest positive estimate is in force while more than half of the epochs' estimates are positive, else 0.
        report: write the per-sample report of the module's trimming filter, as in
            :class:`~lit_robust.BatchFilter` (``filter_spl_report.csv``: every training sample ranked by its mean
            :math:`-\log\hat p` over the last epoch, most anomalous first; ``given_label`` is the datamodule's
            training target, 0 for the anomaly datamodules); ``None``: on under ``lit-robust fit`` or with
            ``report_dir``. Needs ``drop_ratio`` > 0 or ``"auto"`` (without trimming there is no filter; rank the
            samples with :meth:`score_dataset`).
        report_dir: the report's folder (created if missing); default: the logger's folder (``trainer.log_dir``).
        report_format: ``"csv"`` (default) or ``"parquet"`` (needs pyarrow).

    The trimming is the module's own :class:`~lit_robust.BatchFilter` (``rule="spl"``, kept in
    :attr:`batch_filter`, with its per-epoch ``history`` of dropped samples), returned by
    ``configure_callbacks``; Lightning lets it replace any other ``BatchFilter`` given to the Trainer.

    A training batch whose :math:`-\log\hat p` holds NaN/inf raises ``FloatingPointError`` naming the batch
    index and the samples' dataset indices (the selection would otherwise silently drop NaNs first).
    """

    report_targets = False  # the training targets are placeholders: the report has no label columns

    def __init__(self, dim: int | None = None, n_couplings: int = 6, hidden: int = 64, layers: int = 2,
                 drop_ratio: float | Literal["auto"] = 0.0, warmup_epochs: int | None = None,
                 spectral_norm: bool = False,
                 k: float = 1.0, n_power_iterations: int = 1, lr: float = 1e-3, weight_decay: float = 0.0,
                 estimator: Estimator = "gmm", auto_margin: float = 0.0, reestimate: bool = False,
                 report: bool | None = None, report_dir: str | None = None, report_format: ReportFormat = "csv"
                 ) -> None:
        super().__init__()
        # numpy integers count, as in `lit_robust._checks.check_int`, and are saved as Python ints: a numpy integer in
        # `hparams` makes a checkpoint unreadable weights-only
        if dim is not None and (not _is_int(dim) or dim < 2):
            raise ValueError(f"`dim` must be an integer >= 2 (Real NVP splits the coordinates) or None (read from the "
                             f"datamodule at `setup`), got {dim!r}.")
        dim = None if dim is None else int(dim)
        n_couplings, hidden, layers = (check_int(name, v, 1) for name, v in (
            ("n_couplings", n_couplings), ("hidden", hidden), ("layers", layers)))
        self._drop_ratio = check_auto_args(drop_ratio, estimator, auto_margin, reestimate, False, high=0.5)
        warmup_epochs = check_warmup_epochs(warmup_epochs)  # None: the filter's default (3 with "auto", else 0)
        self.k = _check_k(k)
        # checked even with spectral_norm=False: it is saved with the model
        n_power_iterations = _check_iterations(n_power_iterations)
        check_lr(lr)
        check_number("weight_decay", weight_decay, 0)
        check_bool("spectral_norm", spectral_norm)
        self.save_hyperparameters()
        # `save_hyperparameters` reads the arguments of the most derived constructor (RobustRealNVP's, unconverted)
        self.hparams.update(dim=dim, n_couplings=n_couplings, hidden=hidden, layers=layers, warmup_epochs=warmup_epochs,
                            n_power_iterations=n_power_iterations)
        self.couplings: nn.ModuleList | None = None
        self.spectral_layers: list[str] = []
        self._build_if_sized()
        check_report_args(report, report_dir, report_format)
        self.batch_filter: BatchFilter | None = None
        if self._drop_ratio != 0:
            self.batch_filter = self._trimming_filter(self._drop_ratio)
        elif report_enabled(report, report_dir):
            asked = "`report`" if report_dir is None else f"`report_dir`={report_dir!r} (a report)"
            raise ValueError(f"{asked} needs the module's trimming filter: drop_ratio > 0 or 'auto', got drop_ratio="
                             f"{drop_ratio!r} (rank the samples of a plain fit with `score_dataset`).")

    def _trimming_filter(self, drop_ratio: float | Literal["auto"]) -> BatchFilter:
        """The module's ``BatchFilter("spl")`` at ``drop_ratio`` (> 0 or ``"auto"``), from the other arguments."""
        hp = self.hparams
        reporting = {"report": hp.report, "report_dir": hp.report_dir, "report_format": hp.report_format}
        if drop_ratio == "auto":
            # its construction warns of a short warm-up as "BatchFilter: ...", a filter the user never made: said
            # again in this module's name
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                bf = BatchFilter("spl", drop_ratio="auto", warmup_epochs=hp.warmup_epochs, estimator=hp.estimator,
                                 auto_margin=hp.auto_margin, reestimate=hp.reestimate, **reporting)
            for w in said:
                message = str(w.message)
                if message.startswith("BatchFilter: "):
                    message = f"{type(self).__name__}: {message[len('BatchFilter: '):]}"
                warnings.warn(message, w.category, stacklevel=3)
        else:
            bf = BatchFilter("spl", drop_ratio=drop_ratio, warmup_epochs=hp.warmup_epochs, **reporting)
        # its notes speak for this module (an anomaly newcomer on the CLI read "BatchFilter: ..." for a filter they
        # had never configured)
        for part in (bf, bf._auto, bf._report):
            if part is not None:
                part.owner = type(self).__name__
        return bf

    @property
    def drop_ratio(self) -> float | Literal["auto"]:
        """:math:`\\varepsilon` of the trimming (``"auto"``: estimated in the fit). Setting it re-checks it and hands
        it to the trimming filter (built if the module had none; :math:`\\varepsilon = 0` keeps a filter that
        drops nothing), for the next fit and :meth:`fit_threshold`'s default, and records it in ``hparams`` for the
        checkpoints, as ``RCA.drop_ratio``: a notebook user's ``flow.drop_ratio = 0.3`` trained at the
        constructor's 0.1 while ``fit_threshold`` used 0.3."""
        return self._drop_ratio

    @drop_ratio.setter
    def drop_ratio(self, value: Any) -> None:
        hp = self.hparams
        value = check_auto_args(value, hp.estimator, hp.auto_margin, hp.reestimate, False, high=0.5)
        if self.batch_filter is not None:
            self.batch_filter.drop_ratio = value  # checked and applied at the filter's setup of the next fit
            if value == "auto":  # a filter built for a number has the filter's estimator, not this module's
                bf = self.batch_filter
                bf.estimator, bf.auto_margin, bf.reestimate = hp.estimator, hp.auto_margin, hp.reestimate
        elif value != 0:
            self.batch_filter = self._trimming_filter(value)
        self._drop_ratio = hp["drop_ratio"] = value

    def _build(self, dim: int) -> None:
        if dim < 2:
            raise ValueError(f"{type(self).__name__}: the datamodule yields {dim} feature per sample, but Real NVP "
                             "splits the coordinates: it needs at least 2.")
        hp = self.hparams
        first = torch.zeros(dim)
        first[: dim // 2] = 1
        masks = [first if i % 2 == 0 else 1 - first for i in range(hp.n_couplings)]
        self.couplings = nn.ModuleList(AffineCoupling(m, hp.hidden, hp.layers) for m in masks)
        if hp.spectral_norm:
            self.spectral_layers = apply_spectral_norm(self.couplings, k=hp.k, types=nn.Linear,
                                                       n_power_iterations=hp.n_power_iterations)

    @property
    def report_path(self) -> str | None:
        """The per-sample report the last fit wrote (its trimming filter's, ``batch_filter.report_path``; ``None``
        without one), as ``RCA.report_path`` and ``CoTeaching.report_path``."""
        return None if self.batch_filter is None else self.batch_filter.report_path

    @property
    def estimated_corruption(self) -> float | None:
        """``drop_ratio="auto"``: the trimming filter's latest estimate (``None`` before the first one and with a
        numeric ratio), as ``RCA.estimated_corruption``."""
        return None if self.batch_filter is None else self.batch_filter.estimated_corruption

    # -- density ------------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log|det J|)`` of the map data -> latent."""
        self._require_built()
        log_det = x.new_zeros(x.shape[0])
        z = x
        for c in self.couplings:
            z, ld = c(z)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log \hat p(x) = \log \mathcal N(f(x); 0, I) + \log|\det \partial f/\partial x|`."""
        self._require_built()
        check_input(f"{type(self).__name__}(dim={self.hparams.dim})", x, self.hparams.dim,
                    self.couplings[0].mask.dtype, flat=True)
        z, log_det = self(x)
        log_base = -0.5 * (z**2).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        return log_base + log_det

    def layer_sigmas(self) -> list[float]:
        """Exact (SVD) spectral norms of the coupling networks' effective Linear weights, without side effects."""
        self._require_built()
        with held_power_iteration(self):  # else reading a normalised weight in training mode would advance it
            return [float(torch.linalg.matrix_norm(m.weight.detach(), ord=2)) for m in self.couplings.modules()
                    if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        self._require_built()
        z = torch.randn(n, self.hparams.dim, device=self.device)
        for c in reversed(self.couplings):
            z = c.inverse(z)
        return z

    def anomaly_score(self, x: Tensor) -> Tensor:
        """:math:`-\\log \\hat p(x)` per sample (higher = more anomalous). It reads the model without changing it,
        in either mode: the spectral norms' power iteration advances in training forwards only
        (:func:`~lit_robust.functional.spectral.held_power_iteration`); an anomaly newcomer scoring straight after
        ``fit``, the module still in training mode, saw each call move the scores. Gradients flow as through any
        forward: score under ``torch.no_grad()``, or with :meth:`score_dataset`, when you need none."""
        with held_power_iteration(self):
            return -self.log_prob(x)

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless the datamodule yields vectors of ``dim`` features."""
        check_input_dim(spec, self.couplings[0].mask.numel(), flatten=False)

    # -- training -----------------------------------------------------------------------------------------------
    def per_sample_loss(self, batch: Any) -> Tensor:
        return -self.log_prob(unpack_batch(batch).input)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        losses = self.per_sample_loss(batch)
        check_finite("log-density", losses, batch_idx, unpack_batch(batch).index, "training")
        loss = self.reduce_loss(losses, batch)
        self.log("train_nll", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """``val_nll``, the mean :math:`-\\log\\hat p` of the validation samples, and ``val_auroc`` where the
        batches carry the is-anomaly flag (:class:`~lit_robust.anomaly.base.AnomalyDetector`); several validation
        loaders: one of each per loader (``/dataloader_idx_k``)."""
        b = unpack_eval_batch(self._with_no_target(batch))
        losses = -self.log_prob(b.input)
        check_finite("log-density", losses, batch_idx, b.index, "validation")
        self.log("val_nll", losses.mean(), sync_dist=True)
        self._update_val_auroc(losses, b, dataloader_idx)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # `load_from_checkpoint` (no Trainer) restores no callback, nor does `trainer.predict/test/validate(...,
        # ckpt_path=...)`: the module's own filter gets what the fit found (its history and "auto" estimate), as RCA
        # keeps its own (`lit-robust predict` of an "auto" flow found no estimate, so no threshold, and said nothing);
        # a resumed fit restores it as a callback
        fitting = self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING
        if self.batch_filter is not None and not fitting:
            state = (checkpoint.get("callbacks") or {}).get(self.batch_filter.state_key)
            if state is not None:
                self.batch_filter.load_outcome(state)

    def configure_callbacks(self) -> list[Callback]:
        if self.hparams["drop_ratio"] != self._drop_ratio:
            # `flow.hparams.drop_ratio = 0.3` (what a checkpoint saves, beside `warmup_epochs` below) was shown but not
            # used: set as the attribute is, checked and handed to the trimming filter (built if there was none)
            self.drop_ratio = self.hparams["drop_ratio"]
        if self.batch_filter is None:
            return []
        # the warm-up in `hparams`, as it is now, as RCA reads its own: a notebook user's
        # `flow.hparams.warmup_epochs = 4` (what a checkpoint saves) was not what the filter, built with the
        # constructor's value, ramped over; checked at the filter's fit setup, which comes after
        self.batch_filter.warmup_epochs = self.hparams.warmup_epochs
        trainer = self._trainer
        if trainer is not None and any(cb is self.batch_filter for cb in trainer.callbacks):
            return []  # attached by an earlier stage of this trainer (fit before test): nothing to replace
        return [self.batch_filter]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class RobustRealNVP(RealNVP):
    r"""RealNVP with the thesis' defaults switched on: ``drop_ratio=0.1`` and ``spectral_norm=True``."""

    def __init__(self, dim: int | None = None, n_couplings: int = 6, hidden: int = 64, layers: int = 2,
                 drop_ratio: float | Literal["auto"] = 0.1, warmup_epochs: int | None = None,
                 spectral_norm: bool = True,
                 k: float = 1.0, n_power_iterations: int = 1, lr: float = 1e-3, weight_decay: float = 0.0,
                 estimator: Estimator = "gmm", auto_margin: float = 0.0, reestimate: bool = False,
                 report: bool | None = None, report_dir: str | None = None, report_format: ReportFormat = "csv"
                 ) -> None:
        super().__init__(dim, n_couplings, hidden, layers, drop_ratio, warmup_epochs, spectral_norm, k,
                         n_power_iterations, lr, weight_decay, estimator, auto_margin, reestimate, report, report_dir,
                         report_format)
