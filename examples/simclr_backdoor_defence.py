"""A backdoor defence without trusting the labels for the representation (robust_dnn_thesis Algorithm 7).

Only 20% of the MNIST training digits have labels, and 35% of those are poisoned: a 3x3 checkerboard in the
corner and the label a -> a+1. We

1. pretrain SimCLR (no labels) on the labelled images, triggers included, plus clean unlabeled MNIST and
   FashionMNIST images;
2. fit only a linear head on the frozen backbone, with PRL(L) dropping the 35% most suspicious samples of every
   batch and the head's largest singular value truncated to 1 after every step;
3. compare with a small CNN of our own trained end-to-end on the same poisoned labels.

"Poison accuracy" is the accuracy on triggered test images against their true labels.

    python examples/simclr_backdoor_defence.py          # a few minutes on 2 CPU cores
    python examples/simclr_backdoor_defence.py --fast   # a few seconds (used by the tests)
"""

import argparse
import os
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust import BatchFilter, LinearProbe, SemiSupervisedBackdoorMNISTDataModule, SimCLR, SpectralNorm

ROOT = os.environ.get("LIT_ROBUST_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


class SmallCNN(pl.LightningModule):
    """The undefended baseline: trained end-to-end on the poisoned labels."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(32 * 7 * 7, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        index, x, y = batch[:3]
        return F.cross_entropy(self(x), y)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        index, x, y = batch[:3]
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def trainer(epochs: int, callbacks=(), **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, callbacks=list(callbacks), logger=False, enable_progress_bar=False,
                      enable_model_summary=False, **kwargs)


def accuracies(t: pl.Trainer, model, data) -> dict:
    clean, poisoned = t.test(model, data, verbose=False)
    return {"clean_acc": clean["test_acc/dataloader_idx_0"], "poison_acc": poisoned["test_acc/dataloader_idx_1"]}


def main(fast: bool = False, root: str = ROOT, out_dir: str | None = None) -> dict:
    pl.seed_everything(0, verbose=False)
    eps = 0.35
    sizes = dict(labeled_size=300, unlabeled_mnist=300, unlabeled_fashion=100, test_size=500) if fast else \
        dict(labeled_fraction=0.2, unlabeled_fashion=2000)
    data = dict(root=root, attack="patch", poison_rate=eps, **sizes)
    out_dir = out_dir or tempfile.mkdtemp()

    # 1. SimCLR on [X_eps, X_aug]: the Lightning checkpoint is what the head's backbone is read from
    pretrain = trainer(1 if fast else 15, default_root_dir=out_dir, enable_checkpointing=False)
    pretrain.fit(SimCLR(width=16, temperature=0.2), SemiSupervisedBackdoorMNISTDataModule(mode="pretrain",
                                                                                         batch_size=256, **data))
    ckpt = os.path.join(out_dir, "simclr.ckpt")
    pretrain.save_checkpoint(ckpt)

    # 2. linear head on the frozen backbone: PRL(L) + sigma_max(head) <= 1
    finetune_data = SemiSupervisedBackdoorMNISTDataModule(mode="finetune", batch_size=64, **data)
    prl = BatchFilter("prl", drop_ratio=eps, warmup_epochs=1 if fast else 5)
    sn = SpectralNorm(k=1.0, modules="head", mode="truncate")
    head = LinearProbe(backbone_checkpoint=ckpt, lr=1e-2)
    t = trainer(2 if fast else 30, callbacks=[prl, sn], enable_checkpointing=False)
    t.fit(head, finetune_data)
    defended = accuracies(t, head, finetune_data)

    # 3. the undefended baseline on the same labels
    t = trainer(2 if fast else 30, enable_checkpointing=False)
    baseline = SmallCNN()
    t.fit(baseline, finetune_data)
    standard = accuracies(t, baseline, finetune_data)

    sigma = float(torch.linalg.matrix_norm(head.head.weight.detach(), 2))
    print(f"standard:      clean {standard['clean_acc']:.3f}, poison {standard['poison_acc']:.3f}")
    print(f"PRL-SimCLR-SN: clean {defended['clean_acc']:.3f}, poison {defended['poison_acc']:.3f} "
          f"(sigma_max(head) = {sigma:.3f}; the last epoch's rejects were "
          f"{prl.history[-1].dropped_corrupted_frac:.0%} poisoned, the data {prl.history[-1].corrupted_frac:.0%})")
    return {"standard": standard, "defended": defended, "sigma_max": sigma, "history": prl.history,
            "checkpoint": ckpt}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--data-root", "--root", default=ROOT, dest="data_root",
                        help="folder holding MNIST/raw and FashionMNIST/raw")
    args = parser.parse_args()
    missing = [d for d in ['MNIST', 'FashionMNIST'] if not (Path(args.data_root) / d / "raw").is_dir()]
    if missing:  # one line, not the datamodule's traceback after Lightning has started
        parser.error(f"--data-root {args.data_root}: no {' or '.join(d + '/raw' for d in missing)} there; pass the "
                     "folder that holds MNIST/raw and FashionMNIST/raw (torchvision's layout)")
    main(args.fast, args.data_root)
