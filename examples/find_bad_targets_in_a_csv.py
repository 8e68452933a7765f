"""Find the corrupted targets of a regression table without knowing how many there are: `TableDataModule` reads the
table with `task="regression"`, `MLPRegressor` fits it under `ITLM(keep_ratio="auto")`, and the per-sample report
joins back to the table by row, with each row's given and predicted target in the table's units.

    python examples/find_bad_targets_in_a_csv.py               # a few seconds of CPU time
    python examples/find_bad_targets_in_a_csv.py --fast        # shorter rounds (used by the tests)
    python examples/find_bad_targets_in_a_csv.py --write diabetes_noisy.csv   # only write the example table,
    lit-robust fit --config configs/itlm_table_regression.yaml                # which this config reads

The table is scikit-learn's diabetes data (442 rows, 10 numeric columns) with its `progression` target shifted by
three standard deviations, up or down, on 20 % of the rows, and a `shifted` column saying which: your own table
will not have one; here it measures what the report found.
"""

import argparse
import os
import tempfile

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_diabetes

from lit_robust import ITLM, MLPRegressor, TableDataModule, load_report


def write_noisy_table(path: str, share: float = 0.2, seed: int = 0) -> pd.DataFrame:
    table = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    rng = np.random.default_rng(seed)
    shifted = rng.random(len(table)) < share
    table.loc[shifted, "progression"] += rng.choice([-3.0, 3.0], shifted.sum()) * table["progression"].std()
    table["shifted"] = shifted
    table.to_csv(path, index=False)
    return table


def main(fast: bool = False, folder: str | None = None) -> dict:
    torch.set_num_threads(1)
    folder = folder or tempfile.mkdtemp(prefix="lit_robust_targets_")
    os.makedirs(folder, exist_ok=True)  # `--folder out` may name a folder not made yet
    path = os.path.join(folder, "diabetes_noisy.csv")
    write_noisy_table(path)
    pl.seed_everything(0)
    # `corrupted` names the ground-truth column: only metrics and the report's `corrupted` column read it
    data = TableDataModule(path, target="progression", task="regression", corrupted="shifted", test_size=0.2)
    rounds = [10, 5] if fast else [10, 10, 10]
    itlm = ITLM(keep_ratio="auto", round_epochs=rounds, verbose=False, plot=False, report=True, report_dir=folder)
    trainer = pl.Trainer(max_epochs=sum(rounds), callbacks=[itlm], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    model = MLPRegressor()  # in_features is read from the table at setup
    trainer.fit(model, data)

    report = load_report(itlm.report_path)  # a DataFrame, most suspicious first
    # `source_index` is each training sample's row in the table; given_/predicted_progression are in its units
    print(report[["rank", "source_index", "given_progression", "predicted_progression", "corrupted"]].head(10))
    # ITLM re-estimates at every round on one regression target: the last round's estimate is what it dropped
    first, estimated = itlm.history[1].estimated_corruption, itlm.history[-1].estimated_corruption
    dropped = report[~report["kept"]]
    precision = float(dropped["corrupted"].mean()) if len(dropped) else float("nan")
    top = report.head(20)["corrupted"].mean()
    print(f"estimated corrupted: {100 * estimated:.1f}% at the last round, {100 * first:.1f}% at round 1 (truly "
          f"{100 * report['corrupted'].mean():.1f}%); "
          f"dropped rows: {len(dropped)}, of which shifted {100 * precision:.1f}%; top 20 rows shifted "
          f"{100 * top:.0f}%")
    return {"report": report, "estimated": estimated, "precision": precision, "top20": float(top)}


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
