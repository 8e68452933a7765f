"""Count the wrong labels before training robustly: out-of-fold class probabilities (k-fold cross-validation of your
own model) into cleanlab's confident-learning count, then ITLM told that rate, beside ITLM's own `"auto"`.

    python examples/count_wrong_labels_with_cleanlab.py          # about 30 s of CPU time
    python examples/count_wrong_labels_with_cleanlab.py --fast   # a few seconds (used by the tests)

Needs cleanlab (`pip install "lit-robust[cleanlab]"`). Each sample's probabilities come from the fold's model that
did not train on it: a model's probabilities on its own training samples under-count the labels it has memorised.
"""

import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from lit_robust import ITLM, DigitsDataModule, RobustMixin, estimate_corruption_from_probs


class MyClassifier(RobustMixin, pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):
        index, x, y = batch[:3]
        logits = self(x)
        return F.cross_entropy(logits, y, reduction="none"), logits

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def quiet_trainer(epochs: int, callbacks=()) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, callbacks=list(callbacks), logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)


@torch.no_grad()
def out_of_fold_probs(train_set, num_classes: int, folds: int, epochs: int, seed: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``([n, num_classes], [n])``: each sample's probabilities from the model of the fold that held it out, and its
    given label as the batches carry it (an image folder's dataset holds no `.targets`: each label comes with its
    file)."""
    n = len(train_set)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    probs = torch.full((n, num_classes), float("nan"))
    labels = torch.full((n,), -1, dtype=torch.long)
    for f in range(folds):
        held, fit_on = order[f::folds], torch.cat([order[g::folds] for g in range(folds) if g != f])
        pl.seed_everything(seed + f)
        model = MyClassifier()
        with torch.enable_grad():
            quiet_trainer(epochs).fit(model, DataLoader(Subset(train_set, fit_on.tolist()), batch_size=64,
                                                        shuffle=True))
        model.eval()
        for index, x, y, *_ in DataLoader(Subset(train_set, held.tolist()), batch_size=256):
            probs[index] = model(x).softmax(1)  # IndexedDataset's index: the sample's position in train_set
            labels[index] = y
    return probs, labels


@torch.no_grad()
def accuracy(model: pl.LightningModule, data: DigitsDataModule) -> float:
    model.eval()
    return float(torch.cat([(model(x).argmax(1) == y).float() for _, x, y in data.test_dataloader()]).mean())


def main(fast: bool = False) -> dict:
    folds, epochs, rounds = (3, 4, [4, 2]) if fast else (5, 10, [10, 10, 10, 20])
    pl.seed_everything(0)
    # scikit-learn's digits, 30% of the 1,300 training labels replaced at random (ground truth kept, metrics only)
    data = DigitsDataModule(clean_ratio=0.7, noise="random", batch_size=64)
    data.setup("fit")
    train = data.train_set  # an IndexedDataset, as every lit_robust datamodule's (with `.corrupted`, the ground truth)
    probs, labels = out_of_fold_probs(train, 10, folds, epochs)
    counted = estimate_corruption_from_probs(probs, labels)
    truth = float(train.corrupted.float().mean())
    print(f"cleanlab on {folds}-fold probabilities: {100 * counted.rate:.1f}% of the labels wrong "
          f"(truly {100 * truth:.1f}%)")

    results = {}
    for name, keep in (("told the counted rate", 1.0 - counted.rate), ('"auto"', "auto")):
        pl.seed_everything(0)
        itlm = ITLM(keep_ratio=keep, round_epochs=rounds, verbose=False, plot=False)
        trainer = quiet_trainer(sum(rounds), [itlm])
        trainer.fit(MyClassifier(), data)
        estimate = itlm.history[-1].estimated_corruption
        results[name] = {"test_acc": accuracy(trainer.lightning_module, data), "estimate": estimate}
        said = "" if estimate is None else f" (its estimate {100 * estimate:.1f}%)"
        print(f"ITLM {name}{said}: test accuracy {100 * results[name]['test_acc']:.1f}%")
    return {"counted": counted.rate, "truth": truth, "probs": probs, "labels": labels, "itlm": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    main(parser.parse_args().fast)
