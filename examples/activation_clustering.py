"""A backdoor defence that needs no poison rate: activation clustering on your own LightningModule.

A quarter of the MNIST training images carry a 3x3 checkerboard in the corner and the wrong label (a -> a+1); the
defender does not know how many. ActivationClustering trains 3 epochs on everything, splits each class's
penultimate features in two, drops the smaller cluster where the classes split apart, and trains a re-drawn
model on the rest. BackdoorMetrics reports clean accuracy, poison accuracy (triggered test images vs their true
labels) and the attack success rate.

    python examples/activation_clustering.py           # ~1 minute on 2 CPU cores: the defence, then plain training
    python examples/activation_clustering.py --fast    # a few seconds (used by the tests)
    python examples/activation_clustering.py --data-root DIR   # DIR: the folder of MNIST/raw (default: shared/data beside the repository folder)

Printed by the full run (seed 0, 6,000 images; 2026-12-05, one torch thread): the defence flagged 1,636 of them,
among them all 1,500 poisoned ones (median class silhouette 0.61); clean accuracy 94.2 %, poison accuracy 94.0 %,
attack success 0.5 %. Plain training: 94.8 / 1.0 / 92.7 %. With two threads the defence's clean accuracy read 94.1 %.
"""

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust import ActivationClustering, BackdoorMetrics, BackdoorMNISTDataModule, RobustMixin

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # offline MNIST in torchvision's layout


class MyClassifier(RobustMixin, pl.LightningModule):  # 1. adopt the mixin
    def __init__(self) -> None:
        super().__init__()
        # the input of the last nn.Linear (256 features) is what ActivationClustering clusters
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):  # 2. one loss per sample
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def test_step(self, batch, batch_idx):
        pass  # BackdoorMetrics measures the test set

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def train(defend: bool, fast: bool, root: str) -> dict:
    pl.seed_everything(0, verbose=False)
    data = BackdoorMNISTDataModule(root=root, attack="patch", poison_rate=0.25, train_size=1200 if fast else None)
    metrics = BackdoorMetrics()
    defence = ActivationClustering(warmup_epochs=1 if fast else 3)  # 3. no poison rate to give
    trainer = pl.Trainer(max_epochs=2 if fast else 20, callbacks=[metrics, defence] if defend else [metrics],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_test_batches=1 if fast else 1.0)
    model = MyClassifier()
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    out = {"test": metrics.results["test"]}
    if defend:
        bad = data.train_set.corrupted
        out.update(flagged=defence.flagged, poisoned=int(bad.sum()), flagged_poisoned=int(bad[defence.flagged].sum()),
                   n=len(bad), clusters=defence.clusters)
        print(f"flagged {len(defence.flagged)} of {len(bad)} training images, {out['flagged_poisoned']} of them "
              f"poisoned (of {out['poisoned']}); median class silhouette {defence.clusters.median_silhouette:.2f}")
    return out


def main(fast: bool = False, root: str = str(DATA)) -> dict:
    out = {"activation clustering": train(True, fast, root)}
    if not fast:
        out["standard"] = train(False, fast, root)
    for name, res in out.items():
        t = res["test"]
        print(f"{name:>21}: clean accuracy {100 * t['clean_acc']:.1f}%, poison accuracy {100 * t['poison_acc']:.1f}%, "
              f"attack success {100 * t['asr']:.1f}%")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--data-root", default=str(DATA), help="folder holding MNIST/raw")
    args = parser.parse_args()
    missing = [d for d in ['MNIST'] if not (Path(args.data_root) / d / "raw").is_dir()]
    if missing:  # one line, not the datamodule's traceback after Lightning has started
        parser.error(f"--data-root {args.data_root}: no {' or '.join(d + '/raw' for d in missing)} there; pass the "
                     "folder that holds MNIST/raw (torchvision's layout)")
    main(args.fast, args.data_root)
