r"""SimCLR pretraining on lightly (robust_dnn_thesis §5.4.3, Algorithm 7).

Algorithm 7 learns the representation :math:`h` without labels — SimCLR on the (poisoned) training images
together with an unlabeled augmentation set — so that its Lipschitz constant :math:`L_h` is controlled
without ever reading the poisoned labels; only a linear head, with :math:`\sigma_{\max} \le k`, is then fitted
to the labels with a noisy-label algorithm (:class:`~lit_robust.LinearProbe` with
:class:`~lit_robust.BatchFilter` and :class:`~lit_robust.SpectralNorm`). Proposition 2 bounds the poisoned risk
by :math:`L_h \sigma_{\max} \sqrt2 (2\tau + \epsilon\tau)` plus the clean terms.

Pieces:

* :func:`simclr_backbone` — torchvision ResNet-18/50 without its classifier, with the CIFAR stem option
  (``first_conv=False``: 3×3 stride-1 ``conv1``; ``maxpool1=False``: no max-pool; the names follow
  lightning-bolts, whose SimCLR checkpoints :func:`lit_robust.load_backbone` reads), or ``"cnn"``, a small
  three-block CNN for 28×28 grey images;
* :func:`random_views` — a batched, seeded tensor augmentation for small grey images (random resized crop,
  rotation, contrast/brightness jitter): one ``grid_sample`` per batch instead of PIL per sample;
* :class:`SimCLR` — the LightningModule: backbone, lightly's ``SimCLRProjectionHead`` and ``NTXentLoss`` (with
  ``gather_distributed=True`` when the Trainer runs on several processes, so negatives come from every rank).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust._backend import pl
from lit_robust._checks import check_bool, check_lr, check_number, check_pair
from lit_robust._hook_parts import guarantee_parts, run_part
from lit_robust._modes import evaluating
from lit_robust.callbacks._resume import random_state, restore_random_state_in_fit, warn_inexact_resume
from lit_robust.data.spec import DataSpec, check_fits_data, datamodule_spec, misfit

__all__ = ["SimCLR", "SmallCNN", "simclr_backbone", "random_views", "BackboneName", "BACKBONES"]

BackboneName = Literal["cnn", "resnet18", "resnet50"]
BACKBONES = ("cnn", "resnet18", "resnet50")


class SmallCNN(nn.Module):
    """Three conv blocks (``width``, ``2·width``, ``4·width`` channels; BatchNorm, ReLU; 2×2 max-pool after the
    first two), global average pooling: a ``4·width``-dimensional feature per image (MNIST-sized inputs)."""

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        w = width
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.block3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU())
        self.feature_dim = 4 * w

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        return self.block3(x).mean(dim=(2, 3))


def _lightly() -> tuple[type, type]:
    """lightly's ``(NTXentLoss, SimCLRProjectionHead)``, imported when a :class:`SimCLR` is built, so that the rest of
    lit_robust (the backbones, :func:`random_views`, :class:`~lit_robust.LinearProbe`) works without lightly."""
    try:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
    except ImportError as err:
        raise ImportError(f"`SimCLR` needs lightly for its projection head and NT-Xent loss ({err}); install it with "
                          "`pip install lightly`.") from err
    return NTXentLoss, SimCLRProjectionHead


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return value


def simclr_backbone(name: BackboneName = "cnn", in_channels: int = 1, width: int = 16, first_conv: bool = True,
                    maxpool1: bool = True) -> nn.Module:
    """The representation network :math:`h`: images ``[N, C, H, W]`` → features ``[N, feature_dim]``.

    Args:
        name: ``"cnn"`` (:class:`SmallCNN`), ``"resnet18"`` or ``"resnet50"`` (torchvision, ``fc`` removed).
        in_channels: image channels (ResNets: ``conv1`` is rebuilt when it is not 3).
        width: the first block's channels of ``"cnn"`` (ignored by the ResNets).
        first_conv: ResNets: ``True`` = ImageNet stem (7×7 stride-2 ``conv1``), ``False`` = CIFAR stem (3×3 stride 1).
        maxpool1: ResNets: keep the max-pool after ``conv1`` (``False`` for the CIFAR stem).

    The returned module has a ``feature_dim`` attribute and an ``arch`` dict of the arguments it was built with. ResNet parameter names are torchvision's, which are
    also those of lightning-bolts' SimCLR ``encoder`` (without its unused ``fc``).

    >>> simclr_backbone("cnn", width=8)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 32])
    """
    # `name` to a direct caller (it said `backbone`, the name SimCLR and LinearProbe give it, and check it by)
    check_backbone_name("name", name)
    in_channels = _check_positive_int("in_channels", in_channels)
    check_bool("first_conv", first_conv)
    check_bool("maxpool1", maxpool1)
    if name == "cnn":
        net = SmallCNN(in_channels, _check_positive_int("width", width))
        net.arch = {"backbone": name, "in_channels": in_channels, "width": width, "first_conv": first_conv,
                    "maxpool1": maxpool1}
        return net
    import torchvision.models as tvm

    net = getattr(tvm, name)(weights=None)
    if in_channels != 3 or not first_conv:
        net.conv1 = (nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False) if first_conv
                     else nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False))
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if not maxpool1:
        net.maxpool = nn.Identity()
    net.feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.arch = {"backbone": name, "in_channels": in_channels, "width": width, "first_conv": first_conv,
                "maxpool1": maxpool1}
    return net


def check_backbone_name(argument: str, name: Any) -> None:
    """A ``ValueError`` naming ``argument`` unless ``name`` is one of :data:`BACKBONES`."""
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"`{argument}` must be one of {BACKBONES}, got {name!r}.")


def own_backbone_dim(backbone: nn.Module, feature_dim: int | None) -> int:
    """The feature size of a user's own encoder: ``feature_dim`` if given, else the module's ``feature_dim``
    attribute (as :func:`simclr_backbone`'s have); one of them is needed to size the head that follows."""
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"`backbone` must be one of {BACKBONES} or your own encoder (an nn.Module mapping images to "
                         f"[N, feature_dim] features), got {backbone!r}.")
    dim = feature_dim if feature_dim is not None else getattr(backbone, "feature_dim", None)
    if dim is None:
        raise ValueError(f"`feature_dim` is needed with your own `backbone` ({type(backbone).__name__}): the size of "
                         "the features it returns per image, e.g. feature_dim=128 (or give the module a "
                         "`feature_dim` attribute).")
    return _check_positive_int("feature_dim", dim)


def check_dim_needs_own_backbone(owner: str, backbone: object, feature_dim: int | None) -> None:
    """``feature_dim`` is read only with your own encoder. A checkpoint of a model with one records its
    ``feature_dim`` but not the module (left out of the hyper-parameters), so loading it without the module lands
    here -- where torch's list of missing keys used to."""
    if feature_dim is not None and not isinstance(backbone, nn.Module):
        raise ValueError(f"`feature_dim` is read only with your own `backbone` (an nn.Module), got "
                         f"feature_dim={feature_dim!r} with backbone={backbone!r}. A checkpoint of a {owner} trained "
                         "with your own encoder records its feature_dim but not the module: pass the module again, "
                         f"e.g. `{owner}.load_from_checkpoint(path, backbone=MyEncoder())` or, on the command line, "
                         "`--model.backbone mymodule.MyEncoder` (its weights come from the checkpoint).")


def check_own_backbone_dim(backbone: nn.Module, feature_dim: int, spec: DataSpec) -> None:
    """For your own encoder (no ``arch``), raise unless it maps ``spec``'s inputs to ``[N, feature_dim]`` (one
    forward of two zero inputs, in eval mode): an auditor's wrong `feature_dim` ended in a size mismatch traceback."""
    if getattr(backbone, "arch", None) is not None or not spec.input_shape:
        return
    name = type(backbone).__name__
    try:
        with evaluating(backbone), torch.no_grad():
            out = backbone(torch.zeros(2, *spec.input_shape,
                                       device=next(backbone.parameters(), torch.zeros(0)).device))
    except RuntimeError as exc:
        # the data's inputs do not go through the encoder (an image newcomer's grey encoder on a colour folder: a
        # 78-line traceback out of this check, "expected input[2, 3, 28, 28] to have 1 channels"); its message names
        # the mismatch, `--debug` the traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"`model.backbone`={name} does not fit `data`: {spec.source} yields {spec.inputs()}, on which "
                         f"your backbone failed ({first}). Give the data the inputs your encoder was built for "
                         "(where the datamodule takes them: `data.channels`, `data.image_size`), or an encoder for "
                         "these.") from None
    shape = tuple(out.shape[1:]) if isinstance(out, Tensor) else None
    if shape != (feature_dim,):
        fix = (f"Set `model.feature_dim` to {shape[0]}." if shape is not None and len(shape) == 1 else
               f"Your backbone {name} must return [N, feature_dim] features (flatten them).")
        raise misfit("feature_dim", feature_dim, spec, f"{spec.inputs()}, which your backbone {name} maps to "
                     + (f"features of shape {shape}" if shape is not None else f"a {type(out).__name__}"), fix)


def backbone_in_channels(backbone: nn.Module) -> int | None:
    """The image channels a backbone was built for (:func:`simclr_backbone`'s ``arch``), ``None`` for your own."""
    return (getattr(backbone, "arch", None) or {}).get("in_channels")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def random_views(images: Tensor, crop_scale: tuple[float, float] = (0.5, 1.0),
                 aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3), max_rotation: float = 15.0, jitter: float = 0.4,
                 generator: torch.Generator | None = None) -> Tensor:
    r"""One random view of every image of a batch ``[N, C, H, W]``, drawn independently per image.

    Each image gets a random resized crop — area fraction :math:`s \sim U(\text{crop\_scale})`, aspect ratio
    :math:`r` log-uniform in ``aspect_ratio``, crop size :math:`(\sqrt{s r}, \sqrt{s / r})` of the image's width and
    height (capped at 1), placed uniformly inside the image — rotated by :math:`\theta \sim U(\pm
    \text{max\_rotation})` degrees and resized back to :math:`H \times W` (one bilinear ``grid_sample``, edge pixels
    repeated outside the image); then :math:`x' = a\,x + b\,\text{std}(x)`, :math:`a \sim U(1 \pm \text{jitter})`,
    :math:`b \sim U(\pm \text{jitter})` per image (the grey analogue of SimCLR's colour jitter).

    With ``crop_scale=(1, 1)``, ``aspect_ratio=(1, 1)``, ``max_rotation=0`` and ``jitter=0`` it returns the
    images unchanged. ``generator`` (on the images' device) makes the views reproducible.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a floating-point batch [N, C, H, W], got {got}.")
    if images.numel() == 0:  # torch's affine_grid said "Expected non-zero, positive output size", naming no argument
        raise ValueError(f"`images` must hold at least one image with C, H, W >= 1, got shape {tuple(images.shape)}.")
    lo, hi = check_pair("crop_scale", crop_scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"`crop_scale` must be (low, high) with 0 < low <= high <= 1, got {crop_scale!r}.")
    rlo, rhi = check_pair("aspect_ratio", aspect_ratio)
    if not 0.0 < rlo <= rhi:
        raise ValueError(f"`aspect_ratio` must be (low, high) with 0 < low <= high, got {aspect_ratio!r}.")
    check_number("max_rotation", max_rotation, 0, 180)  # degrees
    check_number("jitter", jitter, 0, 1, high_open=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be a torch.Generator or None, got {generator!r}.")
    n, dev, dt = images.shape[0], images.device, images.dtype
    s = _uniform(n, lo, hi, generator, dev)
    r = torch.exp(_uniform(n, math.log(rlo), math.log(rhi), generator, dev))
    w = torch.sqrt(s * r).clamp(max=1.0)  # crop width / image width
    h = torch.sqrt(s / r).clamp(max=1.0)
    cx = (1 - w) * _uniform(n, -1.0, 1.0, generator, dev)  # crop centre in [-1, 1] coordinates
    cy = (1 - h) * _uniform(n, -1.0, 1.0, generator, dev)
    th = torch.deg2rad(_uniform(n, -max_rotation, max_rotation, generator, dev))
    cos, sin = torch.cos(th), torch.sin(th)
    theta = torch.stack([torch.stack([w * cos, -h * sin, cx], 1), torch.stack([w * sin, h * cos, cy], 1)], 1)
    grid = F.affine_grid(theta.to(dt), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        a = _uniform(n, 1 - jitter, 1 + jitter, generator, dev).to(dt).view(n, 1, 1, 1)
        b = _uniform(n, -jitter, jitter, generator, dev).to(dt).view(n, 1, 1, 1)
        std = out.flatten(1).std(dim=1).view(n, 1, 1, 1)
        out = a * out + b * std
    return out


def batch_images(batch: Any) -> Tensor | tuple[Tensor, Tensor]:
    """The images of a batch: ``(index, input, target[, flag])`` (:class:`~lit_robust.IndexedDataset`),
    ``(input, target)`` or a bare tensor; ``input`` may be two precomputed views ``[v1, v2]``."""
    x = batch[1] if isinstance(batch, (tuple, list)) and len(batch) in (3, 4) else (
        batch[0] if isinstance(batch, (tuple, list)) else batch)
    if isinstance(x, (tuple, list)):
        if len(x) != 2 or not all(isinstance(v, Tensor) for v in x):
            raise ValueError(f"SimCLR: precomputed views must be two image tensors [v1, v2], got {len(x)} items.")
        return x[0], x[1]
    if not isinstance(x, Tensor):
        raise ValueError(f"SimCLR: a batch must carry images ([N, C, H, W] or two views), got {type(x).__name__}.")
    return x


class SimCLR(pl.LightningModule):
    r"""SimCLR (Chen et al. 2020) on lightly: two random views per image, backbone, projection head, NT-Xent.

    The loss is lightly's ``NTXentLoss(temperature)``: for the :math:`2N` projections :math:`z` of a batch,
    :math:`\ell_{i,j} = -\log \frac{\exp(\cos(z_i, z_j)/T)}{\sum_{k \ne i} \exp(\cos(z_i, z_k)/T)}` averaged over the
    positive pairs. Under DDP (``trainer.world_size > 1``) the loss gathers the projections of every rank
    (``gather_distributed=True``), so each sample's negatives are the global batch.

    A batch carries images (``(index, image, target[, flag])``, ``(image, target)`` or a tensor): the two views
    are drawn on the batch's device by :func:`random_views` (``augment="grey"``). A dataset that already yields
    two views (e.g. with lightly's ``SimCLRTransform``) sets ``augment="none"``; its input is ``[v1, v2]``.
    Labels are never read.

    After fitting, ``module.backbone`` is the representation :math:`h`; a checkpoint of this module is read by
    :func:`lit_robust.load_backbone` / :class:`lit_robust.LinearProbe`. Its checkpoints also carry the process's
    random state (in one process), so a fit resumed from an epoch-end checkpoint draws the views the uninterrupted
    fit drew and ends with its weights.

    Args:
        backbone: ``"cnn"`` (default, a small CNN), ``"resnet18"`` or ``"resnet50"`` (:func:`simclr_backbone`), or
            your own encoder, an ``nn.Module`` mapping images to ``[N, feature_dim]`` features (the other
            architecture arguments are then not used); it is left out of the hyper-parameters, so pass it again to
            ``SimCLR.load_from_checkpoint(path, backbone=MyEncoder())``. From a config: ``backbone: {class_path:
            mymodel.MyEncoder}``.
        in_channels: image channels (ResNets: ``conv1`` is rebuilt when it is not 3).
        width: the first block's channels of ``"cnn"`` (not used by the ResNets).
        first_conv: ResNets: ``True`` (default) = ImageNet stem (7×7 stride-2 ``conv1``), ``False`` = CIFAR stem
            (3×3 stride 1). Not used by ``"cnn"``.
        maxpool1: ResNets: keep the max-pool after ``conv1`` (``False`` for the CIFAR stem). Not used by ``"cnn"``.
        feature_dim: the size of your own encoder's features (default: its ``feature_dim`` attribute).
        projection_dim: output size of the projection head.
        hidden_dim: hidden size of the projection head; ``None`` (default): the backbone's feature size.
        temperature: NT-Xent temperature :math:`T > 0`.
        lr: AdamW's learning rate.
        weight_decay: AdamW's weight decay (0: none).
        augment: ``"grey"`` (built-in batched views) or ``"none"`` (the batches carry two views).
        crop_scale: ``(low, high)``, the range of the random crops' area fraction, ``0 < low <= high <= 1``
            (:func:`random_views`).
        max_rotation: the views' random rotation, at most this many degrees either way (0: none).
        jitter: the views' brightness/contrast jitter, in [0, 1) (0: none).
    """

    def __init__(
        self,
        backbone: BackboneName | nn.Module = "cnn",
        in_channels: int = 1,
        width: int = 16,
        first_conv: bool = True,
        maxpool1: bool = True,
        feature_dim: int | None = None,
        projection_dim: int = 64,
        hidden_dim: int | None = None,
        temperature: float = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        augment: Literal["grey", "none"] = "grey",
        crop_scale: tuple[float, float] = (0.5, 1.0),
        max_rotation: float = 15.0,
        jitter: float = 0.4,
    ) -> None:
        super().__init__()
        check_number("temperature", temperature, 0, low_open=True)
        check_lr(lr)
        if augment not in ("grey", "none"):
            raise ValueError(f"`augment` must be 'grey' or 'none', got {augment!r}.")
        _check_positive_int("projection_dim", projection_dim)
        if hidden_dim is not None:  # 0 used to fall back silently to the feature size
            _check_positive_int("hidden_dim", hidden_dim)
        check_number("weight_decay", weight_decay, 0)
        crop_scale = check_pair("crop_scale", crop_scale, "(low, high) with 0 < low <= high <= 1")
        # validate the augmentation settings once, here, rather than at the first step
        random_views(torch.zeros(1, 1, 4, 4), crop_scale, max_rotation=max_rotation, jitter=jitter)
        NTXentLoss, SimCLRProjectionHead = _lightly()
        check_dim_needs_own_backbone("SimCLR", backbone, feature_dim)
        if isinstance(backbone, str):
            check_backbone_name("backbone", backbone)
            self.save_hyperparameters()
            self.backbone = simclr_backbone(backbone, in_channels, width, first_conv, maxpool1)
            feat = self.backbone.feature_dim
        else:  # your own encoder: a module in the hyper-parameters would be pickled into every checkpoint twice
            feat = own_backbone_dim(backbone, feature_dim)
            self.save_hyperparameters(ignore=["backbone"])
            self.hparams["feature_dim"] = feat  # the checkpoint's sign of an own encoder (also one sized by attribute)
            self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feat, hidden_dim or feat, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        run_part(self, SimCLR._simclr_on_save_checkpoint, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        run_part(self, SimCLR._simclr_on_load_checkpoint, checkpoint)

    # SimCLR's part of its three hooks, run once per call even where a subclass's own hook skips `super()` (as
    # Lightning's docs write them): such a subclass's resumed pretraining drew other views (`__init_subclass__`)
    def _simclr_on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the views are drawn from the global generators, which Lightning does not save: without them a resumed
        # pretraining drew other crops and ended with other weights (a reviewer's: up to 0.0045 apart)
        checkpoint["simclr_random_state"] = random_state()

    def _simclr_on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_random_state_in_fit(self, checkpoint.get("simclr_random_state"))  # absent from older checkpoints
        # your own encoder, another one's weights: the keys that do not fit, before torch's list of them (an auditor
        # loaded a checkpoint with a different encoder class and got "Error(s) in loading state_dict")
        if getattr(self.backbone, "arch", None) is None:
            from lit_robust.models.backbone_checkpoint import OWN_ENCODER_FIX, backbone_state_dict, check_weights_fit

            check_weights_fit(self.backbone, backbone_state_dict(checkpoint), "The checkpoint's backbone",
                              f"your backbone {type(self.backbone).__name__}", OWN_ENCODER_FIX)

    def check_data(self, spec: DataSpec) -> None:
        """Raise unless the datamodule yields images with the backbone's ``in_channels`` (labels are not read)."""
        check_own_backbone_dim(self.backbone, self.projection_head.layers[0].in_features, spec)
        c = backbone_in_channels(self.backbone)
        if c is not None and (len(spec.input_shape) != 3 or spec.input_shape[0] != c):
            raise misfit("in_channels", c, spec, spec.inputs(), f"Set `model.in_channels` to {spec.input_shape[0]}."
                         if len(spec.input_shape) == 3 else "SimCLR needs [C, H, W] images.")

    def setup(self, stage: str) -> None:
        check_fits_data(self)
        # negatives from every rank under DDP (lightly gathers with its own autograd-aware all-gather)
        gather = self.trainer is not None and self.trainer.world_size > 1
        self.criterion = _lightly()[0](temperature=self.hparams.temperature, gather_distributed=gather)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        guarantee_parts(cls, SimCLR, {"on_train_start": SimCLR._simclr_on_train_start,
                                      "on_save_checkpoint": SimCLR._simclr_on_save_checkpoint,
                                      "on_load_checkpoint": SimCLR._simclr_on_load_checkpoint})

    def on_train_start(self) -> None:
        run_part(self, SimCLR._simclr_on_train_start)

    def _simclr_on_train_start(self) -> None:
        # a pretraining resumed from a checkpoint written inside an epoch (`every_n_train_steps`) drew other batches and
        # views from there on, said by Lightning's generic note only, while the docs promise an exact resume
        warn_inexact_resume(self.trainer, type(self).__name__)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # your own encoder on plain dataloaders: the first batch says what the images are (a datamodule's spec was
        # checked at setup)
        if batch_idx == 0 and getattr(self.backbone, "arch", None) is None and datamodule_spec(self._trainer) is None:
            x = batch_images(batch)
            x = x[0] if isinstance(x, tuple) else x
            check_own_backbone_dim(self.backbone, self.projection_head.layers[0].in_features,
                                   DataSpec("the first training batch", tuple(int(d) for d in x.shape[1:]), "none"))

    def forward(self, x: Tensor) -> Tensor:
        """The representation :math:`h(x)` (backbone features, no projection)."""
        return self.backbone(x)

    def views(self, batch: Any) -> tuple[Tensor, Tensor]:
        x = batch_images(batch)
        if isinstance(x, tuple):
            return x
        if self.hparams.augment == "none":
            raise ValueError("SimCLR(augment='none') needs batches of two views `[v1, v2]`; got one image tensor. "
                             "Use augment='grey' or a dataset transform that returns two views.")
        hp = self.hparams
        args = dict(crop_scale=tuple(hp.crop_scale), max_rotation=hp.max_rotation, jitter=hp.jitter)
        return random_views(x, **args), random_views(x, **args)

    def contrastive_loss(self, v1: Tensor, v2: Tensor) -> Tensor:
        """NT-Xent of the two views' projections (one backbone pass over both views)."""
        z = self.projection_head(self.backbone(torch.cat([v1, v2])))
        z1, z2 = z.chunk(2)
        return self.criterion(z1, z2)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.contrastive_loss(*self.views(batch))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """``val_loss``, the contrastive loss of the batch's two views (several validation loaders: one value each,
        Lightning adds ``/dataloader_idx_k``; a Lightning user's list of two loaders got Lightning's "no
        `dataloader_idx` argument" error)."""
        self.log("val_loss", self.contrastive_loss(*self.views(batch)), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
