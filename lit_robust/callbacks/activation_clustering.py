"""Activation clustering as a Lightning callback: train a few epochs on everything, cluster each class's hidden
features, drop the suspicious clusters and train a fresh model on the rest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from lit_robust._backend import pl, rank_zero_info, rank_zero_warn
from lit_robust._checks import check_int
from lit_robust._lightning import evaluation_batches
from lit_robust._modes import enter_eval, restore_modes
from lit_robust.callbacks._report_file import written_on_rank_zero
from lit_robust.callbacks.itlm import ITLM, OnCollapse, RoundRecord
from lit_robust.data.indexed import unpack_batch
from lit_robust.functional.clustering import ActivationClusters, activation_clusters, outsized_class
from lit_robust.mixin import require_mixin
from lit_robust.report import (
    ReportFormat,
    build_report,
    class_label,
    datamodule_classes,
    integer_labels,
    label_part,
    replaced_note,
    write_training_report,
)
from lit_robust.selection import distributed

__all__ = ["ActivationClustering"]


# how close the median class silhouette may come to `min_silhouette` before the decision is warned about as a
# coin toss (the same attack read 0.495 and 0.532 with two seeds in a newcomer's runs)
NEAR_THRESHOLD = 0.05
# a class this many times the median class size is named when nothing was flagged (MNIST's largest class is 1.14x)
OUTSIZED_CLASS = 1.5
# a class this many times the median one may hold more poison than clean samples: its flagged part may be the clean one
POISON_MAJORITY_CLASS = 1.8

class ActivationClustering(ITLM):
    """Backdoor defence by activation clustering (Chen et al. 2018), without the poisoned fraction.

    The fit has two rounds (the machinery of :class:`~lit_robust.ITLM`): ``warmup_epochs`` on every sample; then
    one pass over the training set records each sample's hidden features (the input of the module's last
    ``nn.Linear``, or the output of ``layer``), :func:`~lit_robust.activation_clusters` flags the smaller 2-means
    cluster of the classes that split apart, and the rest of the fit (``max_epochs - warmup_epochs``) trains on the
    unflagged samples -- with ``reinit=True`` (default) a re-drawn model, so that nothing the warm-up learned
    from the poison stays (when nothing is flagged the warm-up model trains on, as in plain training). Which samples were flagged: :attr:`flagged`; the clustering: :attr:`clusters`.

    Measured (``benchmarks/backdoor_mnist.py --margin``, ``results/backdoor_margin.md``): see the README's backdoor
    section for the figures and when a loss-based filter is the better choice. Costs one extra forward pass over
    the training set and an SVD per class. Under DDP the features of every sample are all-gathered to every rank
    (``n x d`` floats; e.g. 6,000 x 256 = 6 MB) and every rank clusters the same rows in index order, so the
    selection is the same for any number of processes.

    The module must adopt :class:`~lit_robust.RobustMixin` (the feature pass runs its ``sample_scores``), the
    training set must yield ``(index, input, target[, is_corrupted])`` with integer class targets, and the
    Trainer's ``max_epochs`` must exceed ``warmup_epochs``. The score plot of ITLM is not written; the per-sample
    report (``report``) is the clustering's: ``activation_clustering_report.csv``, one row per training sample,
    ranked by ``cluster_score`` (:attr:`ActivationClusters.score`: positive for the samples of their class's
    smaller cluster, larger = deeper in it, in the classes left unsplit too; ``inf`` for non-finite features,
    ranked first), with ``kept`` (False exactly for the flagged: filter on it, not on the score), ``first_dropped_round`` (1 for the flagged), ``given_label`` and the ground truth when the batches
    carry it (its ``clean_posterior`` and ``predicted_label`` columns are empty: there is no rate estimate, and no
    prediction is made). When nothing is flagged but one class holds at least 1.5x the median class size, that is
    warned about (the sign of an all-to-one backdoor, which the rule does not find at a small rate). With
    ``torch.compile(model)`` the feature pass runs the module's own (eager) ``forward``: a graph compiled earlier,
    e.g. by a validation loop, would run without the feature hook.

    Args:
        warmup_epochs: epochs on every sample before the clustering (the features of a model trained 2 epochs
            mixed a clean cluster with the poison in one of 10 MNIST classes at seed 1, 3 epochs did not).
        layer: name (as in ``module.named_modules()``) of the submodule whose output are the features, flattened
            per sample; ``None``: the input of the last ``nn.Linear`` of the module (a classifier's penultimate
            activations).
        dims: principal components of the features kept before the 2-means clustering (Chen et al.: 10;
            :func:`~lit_robust.activation_clusters`).
        min_silhouette: the median class silhouette at or above which every class is split (flagged), in [0, 1].
        class_silhouette: below that median, the silhouette at or above which a class is still split, in [0, 1].
        min_class_size: classes with fewer samples (with finite features) are not clustered, so none of theirs is
            flagged (a 2-means of a few points splits at random); >= 4, default 20. Such classes are warned about.
        reinit: after the clustering, train a re-drawn model (default) instead of continuing the warm-up model, so
            that nothing it learned from the poison stays (as :class:`~lit_robust.ITLM`'s ``reinit``).
        seed: seeds the per-epoch shuffling of the selection and the re-initialisation; ``None`` (default): the
            global seed of ``seed_everything``.
        shuffle: shuffle the selection each epoch.
        monitor: metric from ``trainer.callback_metrics`` reported per round (default: every ``val*`` metric).
        verbose: print one line after each round and the round table at fit end.
        on_collapse: ``"keep"`` (default), ``"warn"`` or ``"raise"`` when a round's model did not learn (a
            non-finite or unmoved loss, chance accuracy): as :class:`~lit_robust.ITLM`'s ``on_collapse``.
        report: write the per-sample report ``activation_clustering_report.csv`` (see above) at the end of
            training; ``None`` (default): on when ``report_dir`` is given or under ``lit-robust fit``. Its path is
            :attr:`report_path`.
        report_dir: the report's folder (created if missing); default: the logger's folder (``trainer.log_dir``).
        report_format: ``"csv"`` (default) or ``"parquet"`` (needs pyarrow).

    Examples:
        >>> ac = ActivationClustering(warmup_epochs=3)   # with pl.Trainer(max_epochs=20, callbacks=[ac])
        >>> ac.warmup_epochs, ac.clusters is None
        (3, True)
    """

    _title = "ActivationClustering"
    _keeps_its_keep_ratio = False  # it keeps what the clustering leaves, not `keep_ratio` (1.0)
    _report_name = "activation_clustering_report"

    def __init__(
        self,
        warmup_epochs: int = 3,
        layer: str | None = None,
        dims: int = 10,
        min_silhouette: float = 0.5,
        class_silhouette: float = 0.6,
        min_class_size: int = 20,
        reinit: bool = True,
        seed: int | None = None,
        shuffle: bool = True,
        monitor: str | None = None,
        verbose: bool = True,
        on_collapse: OnCollapse = "keep",
        report: bool | None = None,
        report_dir: str | None = None,
        report_format: ReportFormat = "csv",
    ) -> None:
        warmup_epochs = check_int("warmup_epochs", warmup_epochs, 1)
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise ValueError(f"`layer` must be a submodule name (a non-empty string) or None, got {layer!r}.")
        # the same checks as the clustering itself, before any training
        activation_clusters(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), dims=dims,
                            min_silhouette=min_silhouette, class_silhouette=class_silhouette,
                            min_class_size=min_class_size)
        # round 1's length comes from the Trainer's max_epochs at setup
        super().__init__(keep_ratio=1.0, round_epochs=[warmup_epochs, 1], initial_round_on_all=True, reinit=reinit,
                         seed=seed, shuffle=shuffle, monitor=monitor, verbose=verbose, plot=False,
                         check_per_sample=False, on_collapse=on_collapse, report=report, report_dir=report_dir,
                         report_format=report_format)
        self.warmup_epochs = warmup_epochs
        self.layer = layer
        self.dims = int(dims)  # np.int64(10) would read "np.int64(10)" in the state key, and refuse a resume
        self.min_silhouette = float(min_silhouette)
        self.class_silhouette = float(class_silhouette)
        self.min_class_size = int(min_class_size)

    def _reset_fit_state(self) -> None:
        super()._reset_fit_state()
        #: the clustering of the last feature pass (``None`` before it; a resumed fit restores the summary
        #: fields, not the per-sample tensors)
        self.clusters: ActivationClusters | None = None
        #: sorted dataset indices flagged as suspicious (``None`` before the clustering)
        self.flagged: Tensor | None = None
        self._given: Tensor | None = None  # the given labels and ground truth, in dataset order, for the report
        self._truth: Tensor | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(warmup_epochs=self.warmup_epochs, layer=self.layer, dims=self.dims)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            total = trainer.max_epochs
            if total is None or total <= self.warmup_epochs:
                raise ValueError(f"`ActivationClustering(warmup_epochs={self.warmup_epochs})` needs the Trainer's "
                                 f"`max_epochs` > {self.warmup_epochs} (the epochs after the clustering), got "
                                 f"max_epochs={total}.")
            self.round_epochs = [self.warmup_epochs, total - self.warmup_epochs]
        super().setup(trainer, pl_module, stage)

    # -- the selection ---------------------------------------------------------------------------------
    def _select(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round_: int) -> None:
        index, feats, labels, corrupted = self._feature_pass(trainer, pl_module)
        n = self._n
        assert n is not None
        dev = feats.device
        has_truth = corrupted is not None
        if distributed.world_size() > 1:
            has_truth = bool(distributed.all_reduce_sum(torch.tensor([int(has_truth)], device=dev)).item()
                             == distributed.world_size())
            index = distributed.all_gather_cat(index)
            feats = distributed.all_gather_cat(feats)
            labels = distributed.all_gather_cat(labels)
            corrupted = distributed.all_gather_cat(corrupted.to(torch.uint8)).bool() if has_truth else None
        index, feats, labels = index.cpu(), feats.cpu(), labels.cpu()
        if index.numel() != n or not torch.equal(torch.sort(index).values, torch.arange(n)):
            raise ValueError(f"the feature pass must visit each of the {n} training samples once; it visited "
                             f"{index.numel()} (indices {index.min().item() if index.numel() else None}.."
                             f"{index.max().item() if index.numel() else None}).")
        order = torch.argsort(index)
        res = activation_clusters(feats[order], labels[order], dims=self.dims, min_silhouette=self.min_silhouette,
                                  class_silhouette=self.class_silhouette, min_class_size=self.min_class_size)
        keep = ~res.suspicious
        if not bool(keep.any()):
            raise ValueError("activation clustering flagged every training sample (all features non-finite?); "
                             "nothing is left to train on.")
        selection = keep.nonzero().squeeze(1)
        self.clusters, self.flagged = res, res.suspicious.nonzero().squeeze(1)
        # what the report shows besides the clustering, in dataset order (identical on every rank)
        self._given = labels[order].clone()
        self._truth = corrupted[order].cpu().bool().clone() if has_truth else None
        finite = torch.isfinite(res.score)
        rec = RoundRecord(round=round_, epochs=self.round_epochs[round_], kept=int(selection.numel()), n=n,
                          nonfinite_scores=int((~finite).sum()),
                          mean_kept_score=_mean(res.score[keep & finite]),
                          mean_dropped_score=_mean(res.score[~keep & finite]))
        if has_truth:
            bad = corrupted[order].cpu()
            kept_bad, total_bad = int((keep & bad).sum()), int(bad.sum())
            rec.clean_precision = (rec.kept - kept_bad) / rec.kept
            rec.corrupted_recall = (total_bad - kept_bad) / total_bad if total_bad else None
            rec.dropped_corrupted = total_bad - kept_bad
        if self.verbose:
            how = (f"median class silhouette {res.median_silhouette:.3f} >= {self.min_silhouette}: every class split"
                   if res.split_all else
                   f"median class silhouette {res.median_silhouette:.3f} < {self.min_silhouette}: only classes with "
                   f"silhouette >= {self.class_silhouette} split")
            rank_zero_info(f"ActivationClustering: {how}; flagged {n - rec.kept} of {n} samples "
                           f"(per class: {res.flagged}).")
        if abs(res.median_silhouette - self.min_silhouette) < NEAR_THRESHOLD:
            # a backdoor newcomer's runs at 0.495 and 0.467 flagged a fraction of the poison (attack success 60 and
            # 70 %); the same attack with another seed read 0.532 and split every class (0.65 %)
            side = "split every class" if res.split_all else "split only the classes above `class_silhouette`"
            rank_zero_warn(f"ActivationClustering: the median class silhouette {res.median_silhouette:.3f} is within "
                           f"{NEAR_THRESHOLD} of `min_silhouette`={self.min_silhouette:g}, so the decision to {side} "
                           "could go the other way with another seed or warm-up. Check what was flagged (per class: "
                           f"{res.flagged}), e.g. fit again with another seed or a longer warm-up and compare.")
        elif not res.split_all:
            self._warn_of_classes_near_the_bar(trainer, res)
        self._warn_of_small_classes(trainer, res)
        self._warn_of_an_outsized_class(trainer, res, flagged_any=rec.kept < n)
        self._adopt_selection(round_, selection, rec)

    def _warn_of_classes_near_the_bar(self, trainer: pl.Trainer, res: ActivationClusters) -> None:
        """Where only classes at or above ``class_silhouette`` are split: warn of the classes left whole within
        :data:`NEAR_THRESHOLD` below it (a backdoor newcomer's 20 % patch into one class read 0.597 against 0.6 in
        three settings, nothing was flagged and the attack succeeded 99.5 %; at 0.55, 89 of its 90 were flagged)."""
        near = {c: v for c, v in res.silhouette.items()
                if not res.flagged.get(c) and self.class_silhouette - NEAR_THRESHOLD <= v < self.class_silhouette}
        if not near:
            return
        names = datamodule_classes(trainer)
        listed = ", ".join(f"{class_label(c, names)}: {v:.3f}" for c, v in sorted(near.items(), key=lambda cv: -cv[1]))
        rank_zero_warn(f"ActivationClustering: {len(near)} class{'' if len(near) == 1 else 'es'} left whole scored "
                       f"within {NEAR_THRESHOLD} below `class_silhouette`={self.class_silhouette:g} ({listed}), so "
                       "the decision not to split them could go the other way with another seed or warm-up. A backdoor "
                       "into one class shows as that class's split alone: check it, e.g. with a lower "
                       "`class_silhouette` (its flagged samples are then in the report).")

    def _warn_of_small_classes(self, trainer: pl.Trainer, res: ActivationClusters) -> None:
        """Classes below ``min_class_size`` are never split: say so (a reviewer's 15 samples per class flagged nothing
        of 30 % poison, without a word)."""
        small = {c: m for c, m in res.sizes.items() if m < self.min_class_size}
        if not small:
            return
        names = datamodule_classes(trainer)
        listed = ", ".join(f"{class_label(c, names)}: {m}" for c, m in sorted(small.items()))
        rank_zero_warn(f"ActivationClustering: {len(small)} of {len(res.sizes)} classes have fewer than "
                       f"`min_class_size`={self.min_class_size} samples with finite features ({listed}), so they were "
                       "not clustered and none of their samples can be flagged. Lower `min_class_size` (>= 4; a "
                       "2-means of a few samples splits at random) or train on more samples per class.")

    def resume_arguments(self) -> dict[str, Any]:
        """ITLM's, and the clustering's thresholds: a fit resumed before the clustering with others would flag other
        samples (checked at restore; checkpoints written without them pass)."""
        return {**super().resume_arguments(), "min_silhouette": self.min_silhouette,
                "class_silhouette": self.class_silhouette, "min_class_size": self.min_class_size}

    def _warn_of_an_outsized_class(self, trainer: pl.Trainer, res: Any, flagged_any: bool) -> None:
        """A class at least 1.5x the median class size, the sign of an all-to-one backdoor: warned about when nothing
        was flagged (a backdoor newcomer's 8 % patch into class 0, 1,072 samples against a median of about 560, went
        unflagged, silently), and when part of it was (a backdoor user's 10 % poison was 601 of class 0's 1,193: the
        smaller cluster, the one flagged, was the clean zeros, clean accuracy 0.971 -> 0.832, without a word)."""
        big = outsized_class(res.sizes, OUTSIZED_CLASS)
        if big is None or (flagged_any and res.flagged.get(big[0], 0) == 0):
            return
        c, size, median = big
        name = class_label(c, datamodule_classes(trainer))
        if flagged_any and size >= POISON_MAJORITY_CLASS * median:
            # the poison can outnumber the class's clean samples only when the class is about twice a typical one
            # (a reviewer: at 1.5x every found 8 % backdoor would be warned about)
            rank_zero_warn(f"ActivationClustering flagged {res.flagged[c]} of the {size} samples labelled {name}, a "
                           f"class {size / median:.1f}x the median class ({median:g}). If it is an all-to-one "
                           "backdoor's target and the poison is more than half of it, the smaller cluster, the one "
                           "flagged, is the clean part. Look at a few flagged and a few kept samples of the class "
                           "(the report's `cluster_score` ranks them) before you trust the selection.")
        elif not flagged_any:
            rank_zero_warn(f"ActivationClustering flagged nothing, but class {name} holds {size} training samples, "
                           f"{size / median:.1f}x the median class ({median:g}). An all-to-one backdoor moves its "
                           "poison into one class, and activation clustering did not find one at a small rate "
                           "(docs/capabilities/backdoor.md, \"Recommended settings\"). Unless your classes are this "
                           f"unbalanced by nature, look at the samples labelled {name}.")

    def _end_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule, log: bool = True) -> None:
        super()._end_round(trainer, pl_module, log)
        if self.flagged is not None and self.flagged.numel() == 0:
            self._reinit_pending = False  # nothing dropped: the warm-up model trains on, as plain training would

    def _feature_layer(self, pl_module: pl.LightningModule) -> tuple[str, nn.Module, bool]:
        """``(name, module, take_input)``: where the features are read."""
        named = dict(pl_module.named_modules())
        if self.layer is not None:
            if self.layer not in named:
                raise ValueError(f"`layer`={self.layer!r} is not a submodule of {type(pl_module).__name__}; its "
                                 f"submodules include {sorted(k for k in named if k)[:12]}.")
            return self.layer, named[self.layer], False
        linears = [(k, m) for k, m in named.items() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(pl_module).__name__} has no `nn.Linear`; pass `layer=` the name of the submodule "
                             "whose output are the features.")
        convs = [m for m in named.values() if isinstance(m, nn.modules.conv._ConvNd)]
        if len(linears) == 1 and convs and "one linear" not in self._said:
            # the docs advise against it, but nothing said so at run time: a backdoor newcomer's `backbone: cnn2`
            # flagged 113 samples, attack success 43 % (the benchmark's cnn2: poison accuracy 6-30 %)
            self._said.add("one linear")
            rank_zero_warn(f"ActivationClustering: {type(pl_module).__name__}'s only `nn.Linear` ({linears[-1][0]!r}) "
                           "is its output layer, so the features clustered are its convolutions' flattened output, "
                           "which follow the images' shapes more than a trigger: on such a CNN the rule did not "
                           "defend in the benchmark. Use a network whose last hidden layer is linear (e.g. "
                           "`ImageClassifier(backbone='lenet')`), or pass `layer=`.")
        return linears[-1][0], linears[-1][1], True

    def _feature_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """This rank's ``(index, features [m, d], given labels, is_corrupted or None)``."""
        module = require_mixin("ActivationClustering", pl_module)
        name, layer, take_input = self._feature_layer(pl_module)
        captured: list[Tensor] = []

        def pre_hook(_m: nn.Module, args: tuple) -> None:
            captured.append(args[0])

        def hook(_m: nn.Module, _args: tuple, output: Any) -> None:
            captured.append(output)

        handle = layer.register_forward_pre_hook(pre_hook) if take_input else layer.register_forward_hook(hook)
        loader = self._scoring_loader(trainer, pl_module)
        modes = enter_eval(pl_module)
        idx, feats, given, flags = [], [], [], []
        what = f"the {'input' if take_input else 'output'} of `{name}`"
        try:
            with torch.no_grad(), _eager_forward(pl_module), closing(evaluation_batches(trainer, loader)) as batches:
                for batch in batches:
                    ib = unpack_batch(batch)
                    t = label_part(ib.target, pl_module)
                    y = integer_labels(t)
                    if y is None:
                        got = (f"{t.dtype} targets of shape {tuple(t.shape)}" if isinstance(t, Tensor)
                               else f"targets of type {type(t).__name__}")
                        fix = (" (class labels held as floats? cast them with `.long()` in your dataset)"
                               if isinstance(t, Tensor) and t.is_floating_point() and t.ndim == 1 else "")
                        raise ValueError("ActivationClustering needs integer class targets, one per sample (it "
                                         f"clusters each class's features); the training batches have {got}{fix}."
                                         + ("" if isinstance(t, Tensor) else " For targets of several parts set the "
                                            "module's `label_key`."))
                    captured.clear()
                    module.sample_scores(batch)
                    b = ib.index.shape[0]
                    if len(captured) != 1 or not isinstance(captured[0], Tensor) or captured[0].shape[:1] != (b,):
                        got = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in captured]
                        raise ValueError(f"ActivationClustering reads {what} as the features: it must run once per "
                                         f"batch on a tensor of {b} rows, got {len(captured)} call(s) with {got}. "
                                         "Pass `layer=` a submodule that does (a submodule compiled on its own runs "
                                         "no hooks: name one outside it).")
                    feats.append(captured[0].detach().reshape(b, -1).float())
                    idx.append(ib.index)
                    given.append(y)
                    if ib.corrupted is not None:
                        flags.append(ib.corrupted.bool())
        finally:
            handle.remove()
            restore_modes(modes)
        if not idx:
            raise ValueError("the feature pass's loader yielded no batches.")
        corrupted = torch.cat(flags) if len(flags) == len(idx) else None
        return torch.cat(idx), torch.cat(feats), torch.cat(given).long(), corrupted

    def _write_report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The clustering's per-sample report (see the class docstring), written by rank 0; its path on every rank
        once written (the clustering is the same on every rank, so is whether there is one)."""
        res = self.clusters
        if res is None or self._given is None:
            return  # the fit ended before the clustering: nothing to report
        assert self._report_target is not None
        target = self._report_target

        def write() -> str:
            flagged = res.suspicious
            table = build_report(torch.arange(flagged.numel()), res.score, ~flagged, score_columns=["cluster_score"],
                                 first_dropped=torch.where(flagged, 1, -1), given_label=self._given,
                                 corrupted=self._truth, estimator=None)
            replaced = replaced_note(target)
            path = write_training_report(table, target, trainer)
            rank_zero_info(f"ActivationClustering: per-sample report written to {path}{replaced}")
            return path

        self.report_path = written_on_rank_zero(trainer, target, write, "ActivationClustering")

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        res = self.clusters
        state["clusters"] = None if res is None else {
            "silhouette": res.silhouette, "flagged": res.flagged, "sizes": res.sizes, "reasons": res.reasons,
            "median_silhouette": res.median_silhouette, "split_all": res.split_all}
        state["flagged"] = self.flagged
        # the report's per-sample part (a resumed fit writes the same report)
        state["report_rows"] = None if res is None or self._given is None else {
            "score": res.score.clone(), "given": self._given.clone(), "truth": self._truth}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not getattr(self, "_restore_state", True):
            return  # an evaluation from a checkpoint (see ITLM.on_load_checkpoint)
        super().load_state_dict(state_dict)
        summary = state_dict.get("clusters")
        self.flagged = state_dict.get("flagged")
        if summary is None or self._n is None:
            self.clusters = None
            return
        suspicious = torch.zeros(self._n, dtype=torch.bool)
        if self.flagged is not None:
            suspicious[self.flagged] = True
        rows = state_dict.get("report_rows")  # absent from checkpoints before the report: NaN marks scores unknown
        score = torch.full((self._n,), float("nan"), dtype=torch.float64) if rows is None else rows["score"].clone()
        self._given = None if rows is None else rows["given"].clone()
        self._truth = None if rows is None else rows["truth"]
        self.clusters = ActivationClusters(suspicious=suspicious, score=score, **summary)


@contextmanager
def _eager_forward(module: pl.LightningModule) -> Iterator[None]:
    """Run the module's own ``forward`` while inside: a LightningModule compiled with ``torch.compile(model)`` has
    its forward replaced by the compiled one (Lightning's ``from_compiled``), and a compiled graph cached before the
    feature hook was registered would run without it."""
    ctx = getattr(module, "_compiler_ctx", None)
    original = ctx.get("original_forward") if isinstance(ctx, dict) else None
    if original is None:
        yield
        return
    compiled = module.__dict__.get("forward")
    module.forward = original  # type: ignore[method-assign]
    try:
        yield
    finally:
        if compiled is None:
            del module.forward
        else:
            module.forward = compiled  # type: ignore[method-assign]


def _mean(t: Tensor) -> float | None:
    return float(t.mean()) if t.numel() else None
