"""Small ready-made LightningModules that adopt :class:`~lit_robust.RobustMixin`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_robust.data.indexed import unpack_batch
from lit_robust.mixin import RobustMixin

__all__ = ["ImageClassifier", "LinearRegressor", "make_backbone"]


def make_backbone(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """``"cnn2"``: two conv layers + linear (the ITLM paper's MNIST model); ``"mlp"``: one hidden layer."""
    if name == "cnn2":
        feat = 32 * (image_size // 4) ** 2
        return nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(feat, num_classes),
        )
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 128), nn.ReLU(),
                             nn.Linear(128, num_classes))
    raise ValueError(f"`backbone` must be 'cnn2' or 'mlp', got {name!r}.")


class ImageClassifier(RobustMixin, pl.LightningModule):
    """Image classifier trained with per-sample cross-entropy.

    Args:
        backbone: ``"cnn2"`` or ``"mlp"``.
        num_classes / in_channels / image_size: input and output shape.
        lr / momentum / weight_decay: SGD settings.
        milestones / gamma: MultiStepLR schedule (epochs counted from the start of each ITLM round when
            the callback re-initialises optimizers).
    """

    def __init__(
        self,
        backbone: Literal["cnn2", "mlp"] = "cnn2",
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.2,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {lr}.")
        self.save_hyperparameters()
        self.net = make_backbone(backbone, in_channels, image_size, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        logits = self(b.input)
        return F.cross_entropy(logits, b.target, reduction="none"), logits

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        b = unpack_batch(batch)
        logits = self(b.input)
        self.val_acc(logits, b.target)
        self.log("val_loss", F.cross_entropy(logits, b.target))
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        b = unpack_batch(batch)
        self.test_acc(self(b.input), b.target)
        self.log("test_acc", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(unpack_batch(batch).input).argmax(-1)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if not hp.milestones:
            return opt
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(hp.milestones), gamma=hp.gamma)
        return {"optimizer": opt, "lr_scheduler": sched}


class LinearRegressor(RobustMixin, pl.LightningModule):
    """Linear model ``y = xᵀθ`` with per-sample squared loss (ITLM paper §6.1)."""

    def __init__(self, dim: int = 100, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def per_sample_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        b = unpack_batch(batch)
        pred = self(b.input)
        return ((pred - b.target) ** 2).flatten(1).mean(1), pred

    def test_step(self, batch: Any, batch_idx: int) -> None:
        b = unpack_batch(batch)
        self.log("test_mse", F.mse_loss(self(b.input), b.target))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
