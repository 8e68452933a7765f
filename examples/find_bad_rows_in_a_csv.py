"""Find the mislabelled rows of a CSV file without knowing how many there are: `TableDataModule` reads the table,
`MLPClassifier` fits it under `ITLM(keep_ratio="auto")`, and the per-sample report joins back to the table by row.

    python examples/find_bad_rows_in_a_csv.py                      # about 15 s of CPU time
    python examples/find_bad_rows_in_a_csv.py --fast               # a few seconds (used by the tests)
    python examples/find_bad_rows_in_a_csv.py --write breast_cancer_noisy.csv   # only write the example table,
    lit-robust fit --config configs/itlm_table.yaml                # which this config reads

The table is scikit-learn's breast-cancer data (569 rows, 30 numeric columns) with its `diagnosis` column
("benign"/"malignant") flipped on 20 % of the rows, and a `flipped` column saying which: your own table will not
have one; here it measures what the report found.
"""

import argparse
import os
import tempfile

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_breast_cancer

from lit_robust import ITLM, MLPClassifier, TableDataModule, load_report


def write_noisy_table(path: str, flip: float = 0.2, seed: int = 0) -> pd.DataFrame:
    table = load_breast_cancer(as_frame=True).frame
    diagnosis = np.where(table.pop("target") == 1, "benign", "malignant")
    flipped = np.random.default_rng(seed).random(len(table)) < flip
    table["diagnosis"] = np.where(flipped, np.where(diagnosis == "benign", "malignant", "benign"), diagnosis)
    table["flipped"] = flipped
    table.to_csv(path, index=False)
    return table


def main(fast: bool = False, folder: str | None = None) -> dict:
    torch.set_num_threads(1)
    folder = folder or tempfile.mkdtemp(prefix="lit_robust_table_")
    os.makedirs(folder, exist_ok=True)  # `--folder out` may name a folder not made yet
    path = os.path.join(folder, "breast_cancer_noisy.csv")
    write_noisy_table(path)
    pl.seed_everything(0)
    # `corrupted` names the ground-truth column: only metrics and the report's `corrupted` column read it
    data = TableDataModule(path, target="diagnosis", corrupted="flipped", test_size=0.2)
    rounds = [3, 2, 2] if fast else [5, 5, 5, 5]
    # reinit=False trains on across rounds: short rounds re-initialised leave the final model one round's epochs
    # (configs/itlm_table.yaml says the same, with the figures)
    itlm = ITLM(keep_ratio="auto", round_epochs=rounds, reinit=False, verbose=False, plot=False, report=True,
                report_dir=folder)
    trainer = pl.Trainer(max_epochs=sum(rounds), callbacks=[itlm], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    model = MLPClassifier()  # in_features and num_classes are read from the table at setup
    trainer.fit(model, data)

    table = pd.read_csv(path)
    report = load_report(itlm.report_path)  # a DataFrame, most suspicious first
    # `source_index` is each training sample's row in the table: join the report back to it
    joined = report.merge(table, how="left", left_on="source_index", right_index=True)
    # given_class / predicted_class: the report's labels as the table names them
    print(joined[["rank", "source_index", "given_class", "predicted_class", "clean_posterior", "flipped"]].head(10))
    dropped = joined[~joined["kept"]]
    estimated = itlm.history[-1].estimated_corruption
    precision = float(dropped["flipped"].mean()) if len(dropped) else float("nan")
    recall = float(dropped["flipped"].sum() / joined["flipped"].sum())
    print(f"estimated corrupted: {100 * estimated:.1f}% (truly {100 * joined['flipped'].mean():.1f}%); "
          f"dropped rows: {len(dropped)}, of which flipped {100 * precision:.1f}%, flipped rows found "
          f"{100 * recall:.1f}%")
    test_acc = trainer.test(model, data, verbose=False)[0]["test_acc"]
    print(f"test accuracy on the held-out rows (flipped alike): {test_acc:.3f}")
    return {"report": joined, "estimated": estimated, "precision": precision, "recall": recall, "test_acc": test_acc,
            "model": model, "data": data}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--folder", default=None, help="where the table and the report go (default: a temporary one)")
    parser.add_argument("--write", metavar="CSV", default=None, help="only write the example table to CSV and stop")
    args = parser.parse_args()
    if args.write:
        write_noisy_table(args.write)
        print(f"wrote {args.write}")
    else:
        main(args.fast, args.folder)
