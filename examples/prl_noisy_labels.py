"""PRL(L) on your own LightningModule: adopt RobustMixin, return (losses, logits), add one callback.

Inside every batch the 30% of samples with the largest loss-layer gradient norm
||softmax(logits) - onehot(label)|| are left out of the loss (prl_paper.txt Alg. 3).

    python examples/prl_noisy_labels.py                 # ~1.5 minutes on 2 CPU cores: PRL(L), then the baseline
    python examples/prl_noisy_labels.py --rule spl      # or prl_g
    python examples/prl_noisy_labels.py --fast          # a few seconds (used by the tests)
"""

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import lit_robust
from lit_robust import BatchFilter, DigitsDataModule, RobustMixin


class MyClassifier(RobustMixin, pl.LightningModule):  # 1. adopt the mixin
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):  # 2. one loss per sample, and the logits PRL(L) scores
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    # training_step comes from RobustMixin: reduce_loss averages the losses the filter keeps

    def test_step(self, batch, batch_idx):
        index, x, y = batch[:3]
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def train(epochs: int, callbacks: list, seed: int = 0) -> float:
    pl.seed_everything(seed, verbose=False)
    # digits with 30% of the training labels replaced at random; the test split stays clean
    data = DigitsDataModule(clean_ratio=0.7, noise="random", batch_size=64, seed=seed)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    model = MyClassifier()
    trainer.fit(model, data)
    return trainer.test(model, data, verbose=False)[0]["test_acc"]


def main(fast: bool = False, rule: str = "prl") -> dict:
    epochs = 3 if fast else 40
    # 3. drop 30% of every batch once the kept fraction has ramped down from 100% over `warmup_epochs`
    prl = BatchFilter(rule, drop_ratio=0.3, warmup_epochs=1 if fast else 5)
    acc = train(epochs, [prl])
    last = prl.history[-1]
    print(f"lit_robust {lit_robust.__version__}: {rule} test accuracy {acc:.3f}; in the last epoch "
          f"{100 * last.dropped_corrupted_frac:.0f}% of the dropped samples had corrupted labels "
          f"(vs {100 * last.corrupted_frac:.0f}% of all samples)")
    out = {"test_acc": acc, "history": prl.history}
    if not fast:
        out["baseline_acc"] = base = train(epochs, [])
        print(f"baseline (no filter) test accuracy {base:.3f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--rule", choices=["prl", "spl", "prl_g"], default="prl")
    args = parser.parse_args()
    main(args.fast, args.rule)
