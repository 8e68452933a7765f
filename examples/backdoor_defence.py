"""PRL-AT against a backdoor on your own LightningModule (robust_dnn_thesis Algorithm 6).

25% of the MNIST training images carry a 3x3 checkerboard in the corner and the wrong label (a -> a+1).
BatchFilter("prl") leaves the least trustworthy quarter of every batch out of the loss; AdversarialTrigger
trains on x + c, c the small universal perturbation that most raises the loss of the samples PRL keeps;
BackdoorMetrics reports clean accuracy, poison accuracy (triggered test images vs their true labels) and the
attack success rate.

    python examples/backdoor_defence.py           # ~1 minute on 2 CPU cores: PRL-AT, then plain training
    python examples/backdoor_defence.py --fast    # a few seconds (used by the tests)
    python examples/backdoor_defence.py --data-root DIR   # DIR: the folder of MNIST/raw (default: shared/data beside the repository folder)
"""

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust import AdversarialTrigger, BackdoorMetrics, BackdoorMNISTDataModule, BatchFilter, RobustMixin

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # offline MNIST in torchvision's layout


class MyClassifier(RobustMixin, pl.LightningModule):  # 1. adopt the mixin
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):  # BackdoorMetrics calls the module on clean and on triggered images
        return self.net(x)

    def per_sample_loss(self, batch):  # 2. one loss per sample, and the logits PRL scores
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def test_step(self, batch, batch_idx):
        pass  # BackdoorMetrics measures the test set

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def train(defend: bool, fast: bool, root: str) -> dict:
    pl.seed_everything(0, verbose=False)
    data = BackdoorMNISTDataModule(root=root, attack="patch", poison_rate=0.25, train_size=1000 if fast else None)
    metrics = BackdoorMetrics()  # 3. trigger and attack come from the datamodule
    callbacks = [metrics]
    if defend:
        callbacks += [BatchFilter("prl", drop_ratio=0.25, warmup_epochs=1),
                      AdversarialTrigger(tau=0.05 / 0.3081)]  # 0.05 on [0, 1] pixels; value range from `data`
    trainer = pl.Trainer(max_epochs=2 if fast else 20, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_test_batches=1 if fast else 1.0)
    model = MyClassifier()
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    return metrics.results


def main(fast: bool = False, root: str = str(DATA)) -> dict:
    out = {"prl_at": train(True, fast, root)}
    if not fast:
        out["standard"] = train(False, fast, root)
    for name, res in out.items():
        t = res["test"]
        print(f"{name:>8}: clean accuracy {100 * t['clean_acc']:.1f}%, poison accuracy {100 * t['poison_acc']:.1f}%, "
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
