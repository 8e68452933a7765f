"""Co-teaching / Co-PRL(L) around your own LightningModule: wrap it, train two copies that teach each other.

In every batch each copy keeps the samples it trusts most (smallest loss-layer gradient norm for
Co-PRL(L), smallest loss for Co-teaching) and the *other* copy takes its step on them (thesis Alg. 5).

    python examples/coteaching_noisy_labels.py               # ~1 minute on 2 CPU cores: Co-PRL(L), then the baseline
    python examples/coteaching_noisy_labels.py --rule spl    # Co-teaching
    python examples/coteaching_noisy_labels.py --fast        # a few seconds (used by the tests)
"""

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust import CoTeaching, DigitsDataModule, RobustMixin


class MyClassifier(RobustMixin, pl.LightningModule):  # 1. adopt the mixin
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):  # 2. one loss per sample, and the logits Co-PRL(L) scores
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def test_step(self, batch, batch_idx):
        index, x, y = batch[:3]
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def run(model: pl.LightningModule, epochs: int, seed: int = 0) -> float:
    # digits with 40% of the training labels flipped a -> a+1 (pairflip); the test split stays clean
    data = DigitsDataModule(clean_ratio=0.6, noise="systematic", batch_size=64, seed=seed)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, data)
    return trainer.test(model, data, verbose=False)[0]["test_acc"]  # CoTeaching evaluates network 1


def main(fast: bool = False, rule: str = "prl") -> dict:
    epochs = 3 if fast else 40
    pl.seed_everything(0, verbose=False)
    # 3. wrap the model: drop 40% of every batch once the kept fraction has ramped down over `warmup_epochs`
    co = CoTeaching(MyClassifier(), rule=rule, drop_ratio=0.4, warmup_epochs=1 if fast else 10)
    acc = run(co, epochs)
    last = co.history[-1]
    print(f"{'Co-PRL(L)' if rule == 'prl' else 'Co-teaching'} test accuracy {acc:.3f}; in the last epoch "
          f"{100 * last.dropped_corrupted_frac_1:.0f}% / {100 * last.dropped_corrupted_frac_2:.0f}% of the samples "
          f"networks 1 / 2 rejected had corrupted labels (vs {100 * last.corrupted_frac:.0f}% of all samples)")
    out = {"test_acc": acc, "history": co.history}
    if not fast:
        pl.seed_everything(0, verbose=False)
        out["baseline_acc"] = base = run(MyClassifier(), epochs)
        print(f"baseline (one network, no filter) test accuracy {base:.3f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--rule", choices=["prl", "spl"], default="prl")
    args = parser.parse_args()
    main(args.fast, args.rule)
