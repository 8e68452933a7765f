"""ITLM: Iterative Trimmed Loss Minimization as a Lightning callback."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lit_robust import distributed
from lit_robust._lightning import TrainLoaderPatch, resolve_loader, with_sampler
from lit_robust.data.indexed import IndexedDataset, unpack_batch
from lit_robust.mixin import RobustMixin, check_per_sample_scores, require_mixin
from lit_robust.samplers import SelectionSampler, ShardedSampler
from lit_robust.selection import keep_count, scatter_scores

__all__ = ["ITLM", "RoundRecord"]


@dataclass
class RoundRecord:
    """What one ITLM round trained on and how it ended."""

    round: int
    epochs: int
    kept: int
    n: int
    clean_precision: float | None = None  # fraction of the kept samples that are clean
    corrupted_recall: float | None = None  # fraction of the corrupted samples that were dropped
    dropped_corrupted: int | None = None  # corrupted samples among the dropped ones
    mean_kept_score: float | None = None
    mean_dropped_score: float | None = None
    nonfinite_scores: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. the monitored validation metric at round end


class ITLM(Callback):
    r"""Iterative Trimmed Loss Minimization (Shen & Sanghavi, ICML 2019, Algorithms 1–2).

    Training runs in rounds. Before round :math:`t \ge 1` every training sample is scored by the
    model of round :math:`t-1` (eval mode, no grad), and round :math:`t` trains only on

    .. math:: S_t = \arg\min_{|S| = \lfloor \alpha n \rfloor} \sum_{i \in S} f_{\theta_{t-1}}(s_i),

    ranked by ``(score, index)``; NaN/inf scores rank last (dropped first) and are warned about.
    Rounds can be short (early-stopped) and then long, e.g. ``round_epochs=[10, 10, 10, 10, 80]``;
    their sum must equal the Trainer's ``max_epochs``. With ``reinit=True`` the model, optimizers and
    LR schedulers are re-created at every round start (the paper's choice for DNNs, App. B(c)).

    The module must adopt :class:`~lit_robust.RobustMixin` (its ``sample_scores`` is the score) and
    the training set must yield ``(index, input, target[, is_corrupted])``, e.g. through
    :class:`~lit_robust.IndexedDataset`. The scoring pass uses the datamodule's (or module's)
    ``scoring_dataloader()`` when defined — the training set in a fixed order with the evaluation
    transform — and otherwise the training loader's dataset without shuffling.

    Args:
        keep_ratio: :math:`\alpha \in (0, 1]`, the fraction of samples kept each round.
        round_epochs: epochs of each round; ``sum(round_epochs) == Trainer(max_epochs=...)``.
        initial_round_on_all: round 0 trains on every sample (Algorithm 1's optional initialisation);
            if ``False`` round 0 already trains on the selection scored by the untrained model.
        reinit: re-initialise model, optimizers and LR schedulers at the start of rounds ``t >= 1``
            (model re-drawn by :meth:`RobustMixin.reinitialize` with seed ``seed + t``).
        seed: seeds the per-epoch shuffling of the selection and the re-initialisations.
        shuffle: shuffle the selection each epoch.
        monitor: metric from ``trainer.callback_metrics`` reported per round (default: every ``val*`` metric).
        verbose: print one line after each round and the whole round table at fit end.
        plot: write ``itlm_scores.png`` (score histograms of clean vs corrupted samples per round) at fit
            end, when ground truth is known, into ``plot_dir`` or else the logger's directory (no logger and
            no ``plot_dir``: no file).
        plot_dir: folder for the plot (a ``str`` or ``os.PathLike``).
        check_per_sample: on the first scoring batch of a fit, score the batch's first samples again on
            their own and raise if their scores change (a score that is not per-sample, e.g. a batch mean
            broadcast to every sample); turn off for scores that are random by design.

    Example:
        >>> itlm = ITLM(keep_ratio=0.65, round_epochs=[5, 5, 5, 5, 20])
        >>> itlm.num_rounds
        5
    """

    def __init__(
        self,
        keep_ratio: float,
        round_epochs: Sequence[int],
        initial_round_on_all: bool = True,
        reinit: bool = True,
        seed: int = 0,
        shuffle: bool = True,
        monitor: str | None = None,
        verbose: bool = True,
        plot: bool = True,
        plot_dir: str | None = None,
        check_per_sample: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"`keep_ratio` must be in (0, 1], got {keep_ratio!r}.")
        given = round_epochs
        round_epochs = list(given) if isinstance(given, Iterable) and not isinstance(given, (str, bytes)) else []
        if not round_epochs or not all(isinstance(e, Integral) and not isinstance(e, bool) and e >= 1
                                       for e in round_epochs):
            raise ValueError(f"`round_epochs` must be a non-empty list of integers >= 1, got {given!r}.")
        for name, value in (("initial_round_on_all", initial_round_on_all), ("reinit", reinit), ("shuffle", shuffle),
                            ("verbose", verbose), ("plot", plot), ("check_per_sample", check_per_sample)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be True or False, got {value!r}.")
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise TypeError(f"`seed` must be an integer, got {seed!r}.")
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise TypeError(f"`monitor` must be a metric name (a non-empty string) or None, got {monitor!r}.")
        if plot_dir is not None and not isinstance(plot_dir, (str, os.PathLike)):
            raise TypeError(f"`plot_dir` must be a folder path (str or os.PathLike) or None, got {plot_dir!r}.")
        self.keep_ratio = float(keep_ratio)
        self.round_epochs = [int(e) for e in round_epochs]
        self.initial_round_on_all = initial_round_on_all
        self.reinit = reinit
        self.seed = int(seed)
        self.shuffle = shuffle
        self.monitor = monitor
        self.verbose = verbose
        self.plot = plot
        self.plot_dir = plot_dir
        self.plot_path: str | None = None
        self.check_per_sample = check_per_sample
        self._checked_per_sample = False  # the check runs once per fit (an extra forward of a few samples)
        starts = [0]
        for e in round_epochs:
            starts.append(starts[-1] + e)
        self._round_starts = starts
        # running state (all of it is checkpointed)
        self._round = 0
        self._selection: Tensor | None = None  # kept indices of the current round; None = all
        self._selection_made = False  # a selection exists for `_round`
        self._reinit_pending = False
        self._n: int | None = None
        self._current: RoundRecord | None = None
        self.history: list[RoundRecord] = []
        # per scoring pass: round, dense scores, corrupted flags (CPU). Filled only when `plot=True`, because
        # under DDP it needs every score gathered on every rank (O(n) traffic); `history` is always filled.
        self.score_history: list[dict[str, Any]] = []
        # fit-time helpers (not state)
        self._patch: TrainLoaderPatch | None = None
        self._sampler: SelectionSampler | None = None

    # -- public helpers ------------------------------------------------------------------------
    @property
    def num_rounds(self) -> int:
        return len(self.round_epochs)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(keep_ratio=self.keep_ratio, round_epochs=self.round_epochs)

    @property
    def current_round(self) -> int:
        return self._round

    @property
    def selection(self) -> Tensor | None:
        """Sorted dataset indices the current round trains on (``None`` = all samples)."""
        return self._selection

    def round_of_epoch(self, epoch: int) -> int:
        for r in range(self.num_rounds):
            if epoch < self._round_starts[r + 1]:
                return r
        return self.num_rounds - 1

    # -- setup -----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        require_mixin("ITLM", pl_module)
        self._checked_per_sample = False
        total = sum(self.round_epochs)
        if trainer.max_epochs != total:
            raise ValueError(
                f"`round_epochs` must add up to the Trainer's `max_epochs`: sum({self.round_epochs}) = {total}, "
                f"but max_epochs = {trainer.max_epochs}. Set `Trainer(max_epochs={total})` or change `round_epochs`."
            )
        self._sampler = SelectionSampler(0, shuffle=self.shuffle, seed=self.seed,
                                         num_replicas=trainer.world_size, rank=trainer.global_rank)
        self._patch = TrainLoaderPatch(trainer, self._make_train_loader)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._patch is not None:
            self._patch.undo()
            self._patch = None

    def _make_train_loader(self, original: Any) -> DataLoader:
        loader = resolve_loader(original)
        _check_indexed(loader.dataset)
        n = len(loader.dataset)
        if self._n is not None and n != self._n:
            raise ValueError(f"the training set changed size between rounds ({self._n} -> {n}).")
        if n == 0:
            raise ValueError("ITLM needs a non-empty training set: the training dataloader's dataset has 0 samples.")
        if keep_count(n, self.keep_ratio) == 0:
            raise ValueError(
                f"`keep_ratio` must keep at least one of the {n} training samples: floor({self.keep_ratio} * {n}) = 0. "
                f"Use `keep_ratio` >= 1/{n} = {1 / n:.4g}, got {self.keep_ratio!r}."
            )
        self._n = n
        assert self._sampler is not None
        self._sampler.n = n
        self._sampler.set_selection(self._selection)
        self._train_loader = loader
        return with_sampler(loader, self._sampler)

    # -- round logic -----------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch_round = self.round_of_epoch(trainer.current_epoch)
        if self._current is None:
            n = self._n or 0
            self._current = RoundRecord(round=self._round, epochs=self.round_epochs[self._round], kept=n, n=n)
            corrupted = getattr(getattr(self, "_train_loader", None), "dataset", None)
            corrupted = getattr(corrupted, "corrupted", None)
            if corrupted is not None and n:
                self._current.clean_precision = 1.0 - float(corrupted.float().mean())
                self._current.corrupted_recall = 0.0
                self._current.dropped_corrupted = 0
        if epoch_round == 0 and not self.initial_round_on_all and not self._selection_made:
            # Algorithm 1 without the optional initialisation: select with the untrained model
            self._select(trainer, pl_module, round_=0)
            self._patch.request_reload()
        elif epoch_round != self._round:
            # resumed from a checkpoint written after round `self._round` ended but before its scoring pass
            self._select(trainer, pl_module, round_=epoch_round)
            self._reinit_pending = self.reinit
            self._patch.request_reload()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._reinit_pending:
            self._reinitialize(trainer, pl_module)
            self._reinit_pending = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch + 1 != self._round_starts[self._round + 1]:
            return
        self._finish_round(trainer)
        if self._round + 1 < self.num_rounds:
            self._select(trainer, pl_module, round_=self._round + 1)
            self._reinit_pending = self.reinit
            self._patch.request_reload()
            rec = self._current
            for key, value in (("itlm/round", rec.round), ("itlm/kept", rec.kept),
                               ("itlm/clean_precision", rec.clean_precision),
                               ("itlm/corrupted_recall", rec.corrupted_recall),
                               ("itlm/mean_kept_score", rec.mean_kept_score),
                               ("itlm/mean_dropped_score", rec.mean_dropped_score)):
                if value is not None:
                    # identical on every rank, so averaging over ranks is exact
                    pl_module.log(key, float(value), on_epoch=True, on_step=False, sync_dist=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.verbose and self.history:
            _print_round_table(self.history, self.monitor)
        if self.plot and self.score_history and self.score_history[0].get("corrupted") is not None:
            self._save_plot(trainer)

    # -- pieces ------------------------------------------------------------------------------------
    def _finish_round(self, trainer: pl.Trainer) -> None:
        rec = self._current
        assert rec is not None
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if (self.monitor is None and k.startswith("val")) or k == self.monitor}
        rec.metrics = metrics
        self.history.append(rec)
        if self.verbose:
            _print_round_line(rec, self.num_rounds)

    def _select(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round_: int) -> None:
        """Score, select and summarise. Under DDP every rank calls this; each scores its own shard."""
        index, scores, corrupted = self.score_training_set(trainer, pl_module)
        n = self._n
        assert n is not None
        dev = scores.device
        if distributed.world_size() == 1:
            # one process: check that every sample was scored exactly once (any scoring loader)
            scores = scatter_scores(n, index, scores)
            if corrupted is not None:
                dense = torch.zeros(n, dtype=torch.bool, device=dev)
                dense[index] = corrupted.to(dev)
                corrupted = dense
            index = torch.arange(n, device=dev)
        else:
            scored = int(distributed.all_reduce_sum(torch.tensor([index.numel()], device=dev)).item())
            if scored != n:
                raise ValueError(f"the scoring pass visited {scored} samples over all ranks, expected {n}.")
        # exact global trimmed set: (score, index) order, non-finite last — identical for any world size
        mask = distributed.global_trim_mask(scores, index, self.keep_ratio)
        selection = torch.sort(distributed.all_gather_cat(index[mask]).cpu()).values
        finite = torch.isfinite(scores)
        bad = corrupted.to(dev) if corrupted is not None else torch.zeros_like(mask)
        stats = torch.stack([
            (~finite).sum(), (mask & bad).sum(), bad.sum(),
            torch.where(mask & finite, scores, 0).sum(), (mask & finite).sum(),
            torch.where(~mask & finite, scores, 0).sum(), (~mask & finite).sum(),
        ]).double()
        nonfinite, kept_bad, total_bad, s_kept, c_kept, s_drop, c_drop = distributed.all_reduce_sum(stats).tolist()
        if nonfinite:
            rank_zero_warn(f"ITLM round {round_}: {int(nonfinite)} of {n} scores are NaN or infinite; they rank as "
                           "worst and are dropped first.")
        kept = int(selection.numel())
        rec = RoundRecord(round=round_, epochs=self.round_epochs[round_], kept=kept, n=n,
                          nonfinite_scores=int(nonfinite),
                          mean_kept_score=s_kept / c_kept if c_kept else None,
                          mean_dropped_score=s_drop / c_drop if c_drop else None)
        has_truth = corrupted is not None
        if distributed.world_size() > 1:
            has_truth = bool(distributed.all_reduce_sum(torch.tensor([int(has_truth)], device=dev)).item()
                             == distributed.world_size())
        if has_truth:
            rec.clean_precision = (kept - kept_bad) / kept if kept else None
            rec.corrupted_recall = (total_bad - kept_bad) / total_bad if total_bad else None
            rec.dropped_corrupted = int(total_bad - kept_bad)
        if self.plot:
            # the histograms need every score: gathered only when a plot is wanted
            all_index = distributed.all_gather_cat(index)
            dense = torch.full((n,), float("nan"))
            dense[all_index.cpu()] = distributed.all_gather_cat(scores.float()).cpu()
            truth = None
            if has_truth:
                truth = torch.zeros(n, dtype=torch.bool)
                truth[all_index.cpu()] = distributed.all_gather_cat(bad.to(torch.uint8)).cpu().bool()
            self.score_history.append({"round": round_, "scores": dense, "corrupted": truth})
        self._selection = selection
        self._selection_made = True
        self._round = round_
        self._current = rec
        if self._sampler is not None:
            self._sampler.set_selection(selection)

    def score_training_set(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                           ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Score every training sample once: returns ``(index, score, is_corrupted or None)``.

        Under DDP each rank scores its own contiguous block of the training set (no padding, so no
        sample is scored twice) and returns only that block.
        """
        module = require_mixin("ITLM", pl_module)
        loader = self._scoring_loader(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        idx, scores, flags = [], [], []
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = trainer.strategy.batch_to_device(batch)
                    ib = unpack_batch(batch)
                    s = module.sample_scores(batch)
                    if not isinstance(s, Tensor) or s.shape != ib.index.shape:
                        got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
                        raise ValueError(f"`sample_scores` must return one score per sample (shape "
                                         f"{tuple(ib.index.shape)}), got {got}. Use `reduction='none'` and "
                                         "flatten a `[B, 1]` output (e.g. a discriminator's logits).")
                    if self.check_per_sample and not self._checked_per_sample:
                        check_per_sample_scores("ITLM", module.sample_scores, batch, s)
                        self._checked_per_sample = True
                    idx.append(ib.index)
                    scores.append(s.detach().float())
                    if ib.corrupted is not None:
                        flags.append(ib.corrupted.bool())
        finally:
            pl_module.train(was_training)
        if not idx:
            raise ValueError("the scoring loader yielded no batches.")
        corrupted = torch.cat(flags) if len(flags) == len(idx) else None
        return torch.cat(idx), torch.cat(scores), corrupted

    def _scoring_loader(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> DataLoader:
        loader = None
        for owner in (trainer.datamodule, pl_module):
            fn = getattr(owner, "scoring_dataloader", None) if owner is not None else None
            if callable(fn):
                loader = fn()
                break
        if loader is None:
            loader = getattr(self, "_train_loader", None)
            if loader is None:
                raise RuntimeError("ITLM has not seen the training dataloader yet.")
        if loader.batch_size is None:
            raise ValueError("the scoring dataloader must use `batch_size=` (not a custom `batch_sampler`).")
        # fixed order; under DDP each rank takes one contiguous, unpadded block
        sampler = ShardedSampler(len(loader.dataset), num_replicas=trainer.world_size, rank=trainer.global_rank)
        return with_sampler(loader, sampler, drop_last=False)

    def _reinitialize(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module: RobustMixin = pl_module  # type: ignore[assignment]
        module.reinitialize(self.seed + self._round)
        trainer.strategy.setup_optimizers(trainer)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self._round,
            "selection": self._selection,
            "selection_made": self._selection_made,
            "reinit_pending": self._reinit_pending,
            "n": self._n,
            "current": None if self._current is None else asdict(self._current),
            "history": [asdict(r) for r in self.history],
            "score_history": self.score_history,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._round = state_dict["round"]
        self._selection = state_dict["selection"]
        self._selection_made = state_dict["selection_made"]
        self._reinit_pending = state_dict["reinit_pending"]
        self._n = state_dict["n"]
        self._current = None if state_dict["current"] is None else RoundRecord(**state_dict["current"])
        self.history = [RoundRecord(**r) for r in state_dict["history"]]
        self.score_history = state_dict["score_history"]

    @rank_zero_only
    def _save_plot(self, trainer: pl.Trainer) -> None:
        from lit_robust.reporting import plot_score_histograms

        folder = self.plot_dir or (trainer.log_dir if trainer.logger is not None else None)
        if folder is None:
            rank_zero_info("ITLM: no score plot written (`plot=True`, but no logger and no `plot_dir`).")
            return
        self.plot_path = plot_score_histograms(self.score_history, folder, "itlm_scores.png")


def _check_indexed(dataset: Any) -> None:
    if isinstance(dataset, IndexedDataset):
        return
    try:
        sample = dataset[0]
    except Exception:  # iterable or exotic datasets: checked on the first batch instead
        return
    ok = isinstance(sample, (tuple, list)) and len(sample) in (3, 4) and _is_int_like(sample[0]) and int(sample[0]) == 0
    if not ok:
        raise ValueError(
            f"ITLM needs a training set whose samples are `(index, input, target[, is_corrupted])`; "
            f"`{type(dataset).__name__}` returns something else for item 0. Wrap it in `lit_robust.IndexedDataset`."
        )


def _is_int_like(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, Tensor) and x.ndim == 0 and not x.is_floating_point() and x.dtype != torch.bool


@rank_zero_only
def _print_round_line(rec: RoundRecord, num_rounds: int) -> None:
    from rich.console import Console

    from lit_robust.reporting import round_line

    Console().print(round_line(rec, num_rounds), highlight=False, soft_wrap=True)


@rank_zero_only
def _print_round_table(history: list[RoundRecord], monitor: str | None) -> None:
    from rich.console import Console

    from lit_robust.reporting import round_table

    Console().print(round_table(history, monitor))
