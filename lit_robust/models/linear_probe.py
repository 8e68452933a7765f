r"""A linear head on a frozen pretrained backbone: the supervised half of robust_dnn_thesis Algorithm 7."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_robust._backend import pl, rank_zero_info
from lit_robust._checks import check_bool, check_int, check_lr, check_number
from lit_robust._lightning import with_sampler
from lit_robust.data.indexed import unpack_batch, unpack_eval_batch
from lit_robust.data.spec import DataSpec, check_eval_labels, check_fits_data
from lit_robust.mixin import RobustMixin, reset_parameters
from lit_robust.models.backbone_checkpoint import load_backbone
from lit_robust.models.simclr import (
    BackboneName,
    backbone_in_channels,
    check_backbone_name,
    check_dim_needs_own_backbone,
    check_own_backbone_dim,
    own_backbone_dim,
    simclr_backbone,
)
from lit_robust.models.supervised import check_classifier_data, loader_metric
from lit_robust.selection import distributed
from lit_robust.selection.samplers import ShardedSampler

__all__ = ["LinearProbe"]


class LinearProbe(RobustMixin, pl.LightningModule):
    r"""A linear head :math:`q` on a frozen representation :math:`h` (e.g. SimCLR's backbone): :math:`f = q \circ h`.

    :math:`h` is frozen and :math:`q(z) = Wz + b` is the only part fitted to the (possibly poisoned) labels.

    Algorithm 7 (thesis §5.4.3): add ``BatchFilter("prl", drop_ratio=ε)`` (the noisy-label algorithm
    :math:`\mathcal A`; its per-sample loss comes from :meth:`per_sample_loss`) and
    ``SpectralNorm(k, modules="head", mode="truncate")`` (after every step :math:`\sigma_{\max}(W) \le k`) to the
    Trainer's callbacks. Proposition 2 then bounds the poisoned risk through :math:`L_h \sigma_{\max}`.

    The backbone is read from ``backbone_checkpoint`` (:func:`lit_robust.load_backbone`: this project's SimCLR or
    LinearProbe checkpoints, lightning-bolts SimCLR checkpoints, or a plain state dict — weights-only), or, without
    a checkpoint, freshly initialised (useful for tests; a random frozen backbone is a random-features baseline,
    which a fit says at its start).
    The architecture arguments default to what the checkpoint says. A probe's own checkpoint holds its backbone's
    weights, so it loads (``load_from_checkpoint``) when the file its ``backbone_checkpoint`` names is gone, damaged
    or re-written with another architecture; given every architecture argument, such a file's error is raised at
    the first forward pass instead, unless a checkpoint of this probe supplied the weights.

    With ``freeze_backbone=True`` (default) the backbone has ``requires_grad=False`` and stays in eval mode
    (BatchNorm uses its pretrained statistics) even while the module trains; gradients with respect to the
    *input* still flow through it (input-perturbation callbacks work). :meth:`reinitialize` re-draws the head only.

    ``standardize=True`` (default, frozen backbone only) standardises every feature by its mean and standard
    deviation over the training set (each sample once, on any number of DDP processes), computed once without
    labels at the start of the first fit (and kept in the state dict): the head then sees unit-scale features, so a
    bound :math:`\sigma_{\max}(W) \le k` means the same for any backbone. The standardisation is part of :math:`h`
    (it uses no labels).

    Validation and test log the accuracy as ``val_acc`` / ``test_acc`` (several validation or test loaders: one value
    per loader, Lightning adds ``/dataloader_idx_k``).

    Args:
        backbone_checkpoint: path of the backbone's checkpoint, or ``None``.
        backbone: ``"cnn"``, ``"resnet18"`` or ``"resnet50"`` (:func:`lit_robust.simclr_backbone`), or your own
            encoder (an ``nn.Module`` mapping images to ``[N, feature_dim]``; on the command line its
            ``class_path``, any importable class: the list ``--help`` shows is every module class it knows of, not
            a list of encoders); ``None`` = the checkpoint's, else ``"cnn"``. Your own encoder gets the checkpoint's
            backbone weights (strictly); it is left out of the hyper-parameters, so pass it again to
            ``LinearProbe.load_from_checkpoint(path, backbone=MyEncoder())``.
        in_channels: image channels (:func:`lit_robust.simclr_backbone`); ``None`` = from the checkpoint, else 1.
        width: the first block's channels of ``"cnn"``; ``None`` = from the checkpoint, else 16.
        first_conv: ResNets: ImageNet stem (``True``) or CIFAR stem (``False``); ``None`` = from the checkpoint,
            else ``True``.
        maxpool1: ResNets: keep the max-pool after ``conv1``; ``None`` = from the checkpoint, else ``True``.
        feature_dim: the size of your own encoder's features (default: its ``feature_dim`` attribute).
        num_classes: outputs of the head.
        lr: learning rate of the head's optimiser.
        weight_decay: L2 penalty of the head's optimiser (0: none).
        optimizer: the head's optimiser: ``"adam"`` or ``"sgd"`` (with momentum 0.9).
        freeze_backbone: ``False`` fine-tunes the backbone too (not Algorithm 7).
        standardize: standardise the features with training-set statistics (frozen backbone only).
    """

    def __init__(
        self,
        backbone_checkpoint: str | None = None,
        backbone: BackboneName | nn.Module | None = None,
        in_channels: int | None = None,
        width: int | None = None,
        first_conv: bool | None = None,
        maxpool1: bool | None = None,
        num_classes: int = 10,
        feature_dim: int | None = None,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        optimizer: Literal["adam", "sgd"] = "adam",
        freeze_backbone: bool = True,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        num_classes = check_int("num_classes", num_classes, 2)  # a NumPy integer too, as the other models
        check_lr(lr)
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"`optimizer` must be 'adam' or 'sgd', got {optimizer!r}.")
        check_number("weight_decay", weight_decay, 0)
        check_bool("freeze_backbone", freeze_backbone)
        check_bool("standardize", standardize)
        if backbone_checkpoint is not None and not isinstance(backbone_checkpoint, (str, os.PathLike)):
            raise TypeError(f"`backbone_checkpoint` must be a file path or None, got {type(backbone_checkpoint).__name__}"
                            f" {backbone_checkpoint!r}.")
        if backbone_checkpoint is not None:
            # a str in the hyper-parameters: a `pathlib.Path` there made this probe's checkpoints unreadable
            # weights-only ("Unsupported global: pathlib.PosixPath"), by `load_backbone` too
            backbone_checkpoint = os.fspath(backbone_checkpoint)
        check_dim_needs_own_backbone("LinearProbe", backbone, feature_dim)
        own = backbone is not None and not isinstance(backbone, str)
        if isinstance(backbone, str):
            check_backbone_name("backbone", backbone)
        feat = own_backbone_dim(backbone, feature_dim) if own else None
        # your own encoder stays out of the hyper-parameters (a module there is pickled into every checkpoint); its
        # feature size goes in, the checkpoint's sign that one is needed to load it
        self.save_hyperparameters(ignore=["backbone"] if own else None)
        if own:
            self.hparams["feature_dim"] = feat
        arch = (backbone, in_channels, width, first_conv, maxpool1)
        #: the backbone file named but absent (or unusable, see below), the architecture known: its weights must come
        #: from a checkpoint of this probe (:meth:`on_load_checkpoint`) before :meth:`features` runs; None otherwise
        self._backbone_pending: str | None = None
        #: why the file named could not be read, raised by :meth:`features` in place of "no such file"
        self._backbone_error: Exception | None = None
        if (backbone_checkpoint is not None and (own or all(a is not None for a in arch))
                and not os.path.exists(backbone_checkpoint)):
            # a probe rebuilt from its own checkpoint (`load_from_checkpoint`, `lit-robust test --ckpt_path`): its
            # hyper-parameters name the pretraining file and the architecture, its state dict holds the backbone's
            # weights. A newcomer who had moved the pretraining checkpoint could not load the probe at all.
            net = backbone if own else simclr_backbone(*arch)  # type: ignore[arg-type]
            self._backbone_pending = os.fspath(backbone_checkpoint)
        elif backbone_checkpoint is not None:
            try:
                net = load_backbone(backbone_checkpoint, backbone, in_channels, width, first_conv, maxpool1,
                                    argument="backbone_checkpoint")
            except ValueError as err:
                if own or not all(a is not None for a in arch):
                    raise
                # every architecture argument given: a probe rebuilt from its own checkpoint, whose state dict holds
                # the backbone's weights. The pretraining file it names was re-written since (the pretraining config
                # overwrites its last.ckpt; another `width` was "another architecture") or damaged: that made the
                # probe's own checkpoint unloadable. The error waits for `features`, unless that checkpoint loads.
                net = simclr_backbone(*arch)  # type: ignore[arg-type]
                self._backbone_pending, self._backbone_error = os.fspath(backbone_checkpoint), err
            except FileNotFoundError as err:
                # `lit-robust test --ckpt_path last` builds the probe from the config before it finds the checkpoint
                # (a release check): only a file given as `--ckpt_path` brings the saved architecture in time
                raise FileNotFoundError(
                    f"{err} A fine-tuned probe's own checkpoint holds its backbone: to evaluate one whose pretraining "
                    "file is gone, pass that checkpoint's file as `--ckpt_path path/to/probe.ckpt` (`last` and `best` "
                    "are looked up after the model is built) or use `LinearProbe.load_from_checkpoint(path)`.") from None
        elif own:
            net = backbone
        else:
            # `is None`, not `or`: `in_channels=0` and `width=0` were silently built as 1 and 16 channels
            net = simclr_backbone("cnn" if backbone is None else backbone, 1 if in_channels is None else in_channels,
                                  16 if width is None else width, True if first_conv is None else first_conv,
                                  True if maxpool1 is None else maxpool1)
        # the architecture actually built goes into the hyper-parameters (and so into this module's checkpoints)
        self.hparams.update({k: v for k, v in (getattr(net, "arch", None) or {}).items() if k in self.hparams})
        feat = feat if own else net.feature_dim
        self.backbone = net
        self.head = nn.Linear(feat, num_classes)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.standardize = standardize and freeze_backbone
        #: a shipped backbone built here with random weights (no `backbone_checkpoint`): said at fit start when frozen
        self._random_backbone = backbone_checkpoint is None and not own
        # behaviour reads `settings`, not `hparams`: a plain LightningCLI gives a module nested in another (e.g.
        # inside CoTeaching) the outer module's config as its hparams
        self.settings = SimpleNamespace(num_classes=num_classes, lr=lr, weight_decay=weight_decay, optimizer=optimizer)
        self.register_buffer("feature_mean", torch.zeros(feat))
        self.register_buffer("feature_std", torch.ones(feat))
        self.register_buffer("standardized", torch.tensor(False))
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_more = nn.ModuleList()  # the validation loaders after the first, one metric each, on demand
        self.test_acc = nn.ModuleList()  # one metric per test loader, created on demand

    def setup(self, stage: str) -> None:
        check_fits_data(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # the mixin's: the random state of a resumed fit
        # the backbone's weights come with the checkpoint's state dict
        self._backbone_pending, self._backbone_error = None, None

    def _missing_backbone(self) -> None:
        if self._backbone_error is not None:
            raise self._backbone_error
        path = self._backbone_pending
        where = "" if os.path.isabs(path) else f"; a relative path is read from the current folder, {os.getcwd()}"
        raise FileNotFoundError(
            f"`backbone_checkpoint` must be an existing checkpoint file, got {path!r} (no such file{where}). A probe's "
            "own checkpoint holds its backbone's weights: `LinearProbe.load_from_checkpoint(path)`, or `--ckpt_path` "
            "/ `ckpt_path=` of that checkpoint, needs no backbone file.")

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless the datamodule yields labels of at most ``num_classes`` classes on images with the backbone's
        ``in_channels``."""
        check_own_backbone_dim(self.backbone, self.head.in_features, spec)
        check_classifier_data(spec, "LinearProbe", self.head.out_features, backbone_in_channels(self.backbone))

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # pretrained BatchNorm statistics stay fixed
        return self

    def features(self, x: Tensor) -> Tensor:
        """The representation :math:`h(x)` (standardised once the statistics are known)."""
        if self._backbone_pending is not None:  # never the untrained backbone in place of a missing file's
            self._missing_backbone()
        z = self.backbone(x)
        if self.standardize and bool(self.standardized):
            z = (z - self.feature_mean) / self.feature_std
        return z

    def on_train_start(self) -> None:
        if self._random_backbone and self.freeze_backbone:
            # a newcomer's `LinearProbe(num_classes=10)` (the checkpoint forgotten) trained a head on a random frozen
            # CNN without a word: Algorithm 7 without its pretraining
            rank_zero_info("LinearProbe: no `backbone_checkpoint`, so the frozen backbone keeps the random weights it "
                           "was built with (a random-features baseline, unless you loaded weights into it yourself). "
                           "For Algorithm 7, pass the pretraining's checkpoint: `backbone_checkpoint=` (or "
                           "`--model.backbone_checkpoint`).")
        if self.standardize and not bool(self.standardized):
            self.fit_feature_statistics(_each_sample_once(self.trainer))
        super().on_train_start()  # RobustMixin's: a resume from inside an epoch is warned about

    @torch.no_grad()
    def fit_feature_statistics(self, loader: Any) -> None:
        """Mean and standard deviation of the backbone's features over ``loader`` (summed over every DDP rank;
        call on every rank), stored in ``feature_mean`` / ``feature_std``. In a fit, ``loader`` visits each training
        sample once: under DDP every rank reads one contiguous, unpadded block of the training set, so the
        statistics do not depend on the number of processes."""
        total = torch.zeros(2 * self.feature_mean.numel() + 1, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(loader):
            x = unpack_batch(batch).input.to(self.device)
            if i == 0:  # your own encoder on plain dataloaders: its features must fit the head
                check_own_backbone_dim(self.backbone, self.head.in_features,
                                       DataSpec("the training data", tuple(int(d) for d in x.shape[1:]), "none"))
            z = self.backbone(x).double()
            total += torch.cat([z.sum(0), (z * z).sum(0), z.new_tensor([z.shape[0]])])
        total = distributed.all_reduce_sum(total)
        d, n = self.feature_mean.numel(), float(total[-1])
        if n < 2:
            raise ValueError(f"LinearProbe(standardize=True) needs at least 2 training samples, got {int(n)}.")
        mean = total[:d] / n
        var = (total[d:2 * d] / n - mean * mean).clamp(min=0.0) * n / (n - 1)
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(var.sqrt().float().clamp(min=1e-6))
        self.standardized.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        logits = self(b.input)
        return F.cross_entropy(logits, b.target, reduction="none"), logits

    def reinitialize(self, seed: int) -> None:
        """Re-draw the head only (the pretrained backbone is the point of the module) when the backbone is frozen;
        with ``freeze_backbone=False`` every parameter (for ITLM, ``reinit="restore"`` keeps the pretrained
        backbone: each round starts from the weights the fit started with)."""
        if self.freeze_backbone:
            reset_parameters(self.head, seed)
        else:
            super().reinitialize(seed)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        b = unpack_eval_batch(batch)
        logits = self(b.input)
        check_eval_labels("LinearProbe", "validation", b.target, logits.shape[0], self.settings.num_classes)
        metric, name = loader_metric(self, "val_acc", "val_acc_more", dataloader_idx,
                                     lambda: MulticlassAccuracy(self.settings.num_classes, average="micro"))
        metric(logits, b.target)
        self.log("val_loss", F.cross_entropy(logits, b.target), sync_dist=True)
        self.log("val_acc", metric, metric_attribute=name, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        b = unpack_eval_batch(batch)
        while len(self.test_acc) <= dataloader_idx:
            self.test_acc.append(MulticlassAccuracy(self.settings.num_classes, average="micro").to(self.device))
        metric = self.test_acc[dataloader_idx]
        logits = self(b.input)
        check_eval_labels("LinearProbe", "test", b.target, logits.shape[0], self.settings.num_classes)
        metric(logits, b.target)
        self.log("test_acc", metric, metric_attribute=f"test_acc.{dataloader_idx}")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The predicted class of each sample (``lit-robust predict`` writes them to ``predictions.csv``)."""
        return self(unpack_eval_batch(batch).input).argmax(-1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.settings
        if hp.optimizer == "sgd":
            return torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)


def _each_sample_once(trainer: Any) -> Any:
    """The training loader for the feature statistics: each sample of its dataset once, split into unpadded blocks
    among the ranks (:class:`~lit_robust.selection.samplers.ShardedSampler`). Lightning's ``DistributedSampler``
    repeats samples to even out the ranks, which counted them twice (a reviewer's 5 samples on 2 ranks: other
    statistics than on one). A loader whose samples cannot be addressed by index (an iterable dataset, a custom
    ``batch_sampler``) is read as the training loop reads it."""
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    if (not isinstance(loader, torch.utils.data.DataLoader) or loader.batch_size is None
            or isinstance(dataset, torch.utils.data.IterableDataset)):
        return loader
    sampler = ShardedSampler(len(dataset), num_replicas=trainer.world_size, rank=trainer.global_rank)
    # a generator of its own: the pass leaves the global one (the fit's shuffles and dropout) where it was
    return with_sampler(loader, sampler, drop_last=False, generator=torch.Generator().manual_seed(0))
