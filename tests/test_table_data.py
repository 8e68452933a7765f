"""TableDataModule (a CSV/TSV/Parquet file or a DataFrame as splits) and MLPClassifier (which reads its shape from it)."""

import math
import re
import shlex
import statistics
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from lit_robust import ITLM, BatchFilter, MLPClassifier, MLPRegressor, RobustRealNVP, TableDataModule, load_report
from lit_robust.cli import main
from lit_robust.data.table import robust_scale

#: what a missing column's error adds: the training table sets the names (a newcomer mended the wrong file)
_NAMES_NOTE = (r" \(The names come from the training table as it reads now: if it was changed since the fit, mend "
               r"that one\.\)$")


def table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(n) + 1000,
        "a": rng.normal(size=n),
        "b": rng.normal(5.0, 3.0, size=n),
        "flag": rng.random(n) < 0.5,                # a boolean feature
        "const": np.full(n, 7.0),                   # a constant column: scale 1
        "kind": rng.choice(["cat", "dog", "ant"], size=n),
        "price": rng.normal(100.0, 20.0, size=n),
        "bad": rng.random(n) < 0.25,
    })


def quiet_trainer(**kwargs) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 2)
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", **kwargs)


def test_robust_scale_is_the_median_and_1_4826_mad_per_column_with_fallbacks():
    values = torch.tensor([[1.0, 3.0, 2.0], [2.0, 3.0, 2.0], [3.0, 3.0, 2.0], [4.0, 3.0, 9.0], [1000.0, 3.0, 2.0]])
    centre, scale = robust_scale(values)
    for j in range(3):
        col = values[:, j].tolist()
        med = statistics.median(col)
        mad = 1.4826 * statistics.median(abs(v - med) for v in col)
        sd = statistics.pstdev(col)
        assert centre[j] == pytest.approx(med)
        assert scale[j] == pytest.approx(mad if mad > 0 else (sd if sd > 0 else 1.0))
    assert scale[1] == 1.0 and scale[2] == pytest.approx(statistics.pstdev([2, 2, 2, 9, 2]))  # the fallbacks used
    c, s = robust_scale(values, "standard")
    assert torch.allclose(c, values.double().mean(0)) and s[0] == pytest.approx(statistics.pstdev(values[:, 0].tolist()))
    c, s = robust_scale(values, "none")
    assert c.tolist() == [0.0] * 3 and s.tolist() == [1.0] * 3
    with pytest.raises(ValueError, match=r"`scale` must be one of \['robust', 'standard', 'none'\], got 'minmax'"):
        robust_scale(values, "minmax")


def test_a_csv_becomes_scaled_classification_splits_that_remember_their_rows(tmp_path):
    frame = table()
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    dm = TableDataModule(str(path), target="kind", corrupted="bad", drop=["id", "price"], test_size=0.25, val_size=5)
    dm.setup()
    assert dm.classes == ["ant", "cat", "dog"] and dm.num_classes == 3
    assert dm.feature_names == ["a", "b", "flag", "const"] and dm.in_features == 4
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 5, 15)
    rows = torch.cat([dm.train_source_index, dm.val_source_index, dm.test_source_index])
    assert sorted(rows.tolist()) == list(range(60))  # every row once, by its position in the file
    train = frame.iloc[dm.train_source_index.numpy()]
    raw = torch.tensor(train[["a", "b", "flag", "const"]].to_numpy(dtype=float))
    for j in range(4):  # scaled with the training rows' median and 1.4826 MAD (constant column: scale 1)
        col = raw[:, j].tolist()
        med = statistics.median(col)
        mad = 1.4826 * statistics.median(abs(v - med) for v in col)
        scale = mad if mad > 0 else (statistics.pstdev(col) or 1.0)
        x = torch.stack([dm.train_set[i][1][j] for i in range(len(dm.train_set))])
        assert torch.allclose(x.double(), (raw[:, j] - med) / scale, atol=1e-5), j
    for i in (0, 7, 39):
        _, _, y, corrupted = dm.train_set[i]
        row = frame.iloc[int(dm.train_source_index[i])]
        assert dm.classes[int(y)] == row["kind"] and bool(corrupted) == bool(row["bad"])
    assert len(dm.test_set[0]) == 3  # the test split carries no flags
    # the same seed, the same split; another seed, another
    again = TableDataModule(frame=frame, target="kind", corrupted="bad", drop=["id", "price"], test_size=0.25,
                            val_size=5)
    again.setup()
    assert torch.equal(again.train_source_index, dm.train_source_index)
    other = TableDataModule(frame=frame, target="kind", drop=["id", "price"], test_size=0.25, val_size=5, seed=1)
    other.setup()
    assert not torch.equal(other.train_source_index, dm.train_source_index)


@pytest.mark.parametrize("suffix", [".tsv", ".parquet"])
def test_tsv_and_parquet_files_read_as_the_csv_does(tmp_path, suffix):
    frame = table()
    path = tmp_path / f"t{suffix}"
    frame.to_csv(path, sep="\t", index=False) if suffix == ".tsv" else frame.to_parquet(path)
    dm, ref = (TableDataModule(str(path), target="kind", features=["a", "b"]),
               TableDataModule(frame=frame, target="kind", features=["a", "b"]))
    dm.setup()
    ref.setup()
    assert torch.equal(dm.train_set.dataset.tensors[0], ref.train_set.dataset.tensors[0])
    assert torch.equal(dm.train_set.dataset.tensors[1], ref.train_set.dataset.tensors[1])


def test_regression_targets_are_scaled_robustly_and_unscale_back():
    frame = table()
    frame.loc[3, "price"] = 1e6  # one glitched target: the robust scale barely moves
    dm = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"])
    dm.setup()
    assert dm.out_features == 1 and dm.data_spec.target == "regression" and dm.num_classes is None
    y = dm.train_set.dataset.tensors[1]
    raw = torch.tensor(frame["price"].to_numpy()[dm.train_source_index.numpy()]).unsqueeze(1)
    assert torch.allclose(dm.unscale_targets(y), raw, rtol=1e-6)
    assert float(dm.target_scale[0]) < 40  # ~20 (the SD of the clean prices), not ~1e5
    two = TableDataModule(frame=frame, target=["price", "a"], task="regression", features=["b"])
    two.setup()
    assert two.out_features == 2 and two.train_set[0][2].shape == (2,)
    with pytest.raises(ValueError, match=r"`unscale_targets` is for task='regression'"):
        TableDataModule(frame=frame, target="kind").unscale_targets(torch.zeros(1))


def test_anomaly_tables_train_without_labels_or_test_against_the_known_ones():
    frame = table()
    dm = TableDataModule(frame=frame, task="anomaly", features=["a", "b"])
    dm.setup()
    assert len(dm.train_set) == 60 and dm.test_set is None and len(dm.train_set[0]) == 3
    with pytest.raises(ValueError, match=r"`test_size`=0.2: task='anomaly' without a `target` column"):
        TableDataModule(frame=frame, task="anomaly", features=["a", "b"], test_size=0.2).setup()
    labelled = TableDataModule(frame=frame, task="anomaly", target="bad", features=["a", "b"])
    labelled.setup()
    _, _, y, flag = labelled.train_set[0]
    assert bool(flag) == bool(y) == bool(frame["bad"].iloc[int(labelled.train_source_index[0])])
    assert len(labelled.test_set) == 12


def test_an_unlabelled_anomaly_table_has_no_test_split_and_the_cli_says_so_in_one_line(tmp_path, capsys, recwarn,
                                                                                       monkeypatch, one_torch_thread):
    """A CSV newcomer's `lit-robust test` of an unlabelled anomaly table: "AssertionError: call setup() first",
    a traceback and exit 1, where `predict` said what was missing."""
    monkeypatch.setattr(sys, "argv", ["lit-robust"])
    monkeypatch.chdir(tmp_path)
    table(60)[["a", "b"]].to_csv("machines.csv", index=False)
    common = ["--data", "lit_robust.TableDataModule", "--data.path", "machines.csv", "--data.task", "anomaly",
              "--model", "lit_robust.RobustRealNVP", "--model.dim", "2", "--model.hidden", "8",
              "--model.n_couplings", "2", "--trainer.max_epochs", "1", "--data.missing", "drop"]
    main(["fit", *common])
    # Lightning's note that the module's `on_before_batch_transfer` (a batch-type check) is used over the datamodule's:
    # an anomaly newcomer read it in every fit and predict with lit_robust's own model and datamodule
    assert not [w for w in recwarn if "on_before_batch_transfer" in str(w.message)]
    # the fit's last lines: its checkpoint, and the command that scores new rows (there is no test split to test on)
    said = capsys.readouterr().err.splitlines()
    head = next(i for i, line in enumerate(said) if line.startswith("lit-robust fit: the fitted model is "))
    assert said[head].endswith("; there is no test split to test it on: score new data with"), said[head]
    printed = said[head + 1].strip()
    assert printed.startswith("lit-robust predict --data lit_robust.TableDataModule") and printed.endswith(
        "--ckpt_path last --data.predict_path NEW_ROWS.csv"), printed
    for command in ("test", "predict"):
        with pytest.raises(SystemExit) as done:
            main([command, *common, "--ckpt_path", "last"])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 2, err
        nothing = "nothing to test: `test`" if command == "test" else "nothing to predict: `predict`"
        assert (f"TableDataModule has no test split, so there is {nothing} uses the test split. An anomaly table "
                "without a `target` column of known anomalies has nothing to test against: each training row's score "
                "is in the fit's per-sample report. New rows to score or predict go in `predict_path` "
                "(`--data.init_args.predict_path`).") in err
    # new rows, unlabelled: predicted, each with its row in that table
    new = table(9, seed=3)[["a", "b"]]
    new.loc[4, "a"] = np.nan
    new.to_csv("new.csv", index=False)
    main(shlex.split(printed.replace("NEW_ROWS.csv", "new.csv"))[1:])  # the command the fit printed, as printed
    rows = pd.read_csv(next(tmp_path.glob("lightning_logs/version_*/predictions.csv")))
    # RobustRealNVP's default drop_ratio names a rate: a threshold is set on the training rows, and each row decided
    assert list(rows.columns) == ["index", "source_index", "prediction", "predicted_anomaly"]
    assert rows["source_index"].tolist() == [0, 1, 2, 3, 5, 6, 7, 8] and rows["prediction"].notna().all()
    flagged, normal = rows[rows["predicted_anomaly"] == 1], rows[rows["predicted_anomaly"] == 0]
    assert len(flagged) + len(normal) == 8 and (flagged["prediction"].min() if len(flagged) else math.inf) > (
        normal["prediction"].max() if len(normal) else -math.inf)


@pytest.mark.parametrize(("name", "column"), [("itlm_table", "label"), ("itlm_table_regression", "price")])
def test_the_documented_csv_command_runs_on_a_table_of_ones_own(tmp_path, capsys, monkeypatch, one_torch_thread, name,
                                                                 column):
    """A docs reader ran the README's / cli.md's own-CSV line over `configs/itlm_table.yaml` on their table: the
    config's ground-truth column `corrupted: flipped` was not in it (exit 2). The documented line now says
    `--data.init_args.corrupted null`, and without it the error says so. The regression config's line alike."""
    from tests.conftest import REPO

    line = next(x for x in (REPO / "docs" / "cli.md").read_text().splitlines()
                if f"configs/{name}.yaml --data.init_args.path my.csv" in x)
    args = line.split("#")[0].split()[2:]  # after `lit-robust fit`
    assert line in (REPO / "README.md").read_text()
    assert args[args.index("--data.init_args.target") + 1] == column
    monkeypatch.setattr(sys, "argv", ["lit-robust"])
    monkeypatch.chdir(tmp_path)
    frame = table(120).rename(columns={"kind": "label"})[["a", "b", "price", "label"]]
    if name == "itlm_table_regression":
        frame = frame[["a", "b", "price"]]  # the number to predict, no class column
    frame.to_csv("my.csv", index=False)
    config = str(REPO / "configs" / f"{name}.yaml")
    # short, and still learning (one batch an epoch): `lit-robust fit` exits 1 when the final model predicts one class
    short = ["--trainer.max_epochs", "20", "--trainer.callbacks.init_args.round_epochs", "[10, 10]",
             "--model.init_args.lr", "0.05", "--trainer.enable_progress_bar", "false"]
    main(["fit", *[config if a == f"configs/{name}.yaml" else a for a in args], *short])
    report = load_report(next(tmp_path.glob("lightning_logs/version_*/itlm_report.csv")))
    assert len(report) == 96 and report["corrupted"].isna().all()  # no ground truth: unknown, not guessed
    if name == "itlm_table_regression":  # the given target in the table's units, joined by row
        assert np.allclose(report["given_price"], frame["price"].iloc[report["source_index"]], rtol=1e-5)
    without = [a for a in args if a not in ("--data.init_args.corrupted", "null")]
    with pytest.raises(SystemExit) as done:
        main(["fit", *[config if a == f"configs/{name}.yaml" else a for a in without], *short])
    assert done.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    truth = "flipped" if name == "itlm_table" else "shifted"
    assert (f"`corrupted` names column(s) ['{truth}'] that the table does not have; its columns are "
            f"{list(frame.columns)}. It is the ground truth of which rows are corrupted, known only for a table "
            "corrupted on purpose: leave it out for your own data (`--data.init_args.corrupted null` over a config "
            "that names one).") in err


def test_a_regression_whose_final_model_diverged_exits_1(tmp_path, capsys, monkeypatch, one_torch_thread):
    """A CLI newcomer's regression config at `lr 5`: train losses of 1e10-1e13, an estimate of 0, a test R² of
    -3.7e11, and the fit exited 0. The final model's median miss on the training targets, against their median
    spread, says it did not learn; the config's own learning rate passes."""
    from tests.conftest import REPO

    monkeypatch.setattr(sys, "argv", ["lit-robust"])
    monkeypatch.chdir(tmp_path)
    table(120)[["a", "b", "price"]].to_csv("my.csv", index=False)
    args = ["fit", "--config", str(REPO / "configs" / "itlm_table_regression.yaml"), "--data.init_args.path", "my.csv",
            "--data.init_args.target", "price", "--data.init_args.corrupted", "null", "--trainer.max_epochs", "20",
            "--trainer.callbacks.init_args.round_epochs", "[10, 10]", "--trainer.enable_progress_bar", "false"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--model.init_args.lr", "5"])
    err = " ".join(capsys.readouterr().err.split())
    assert done.value.code == 1 and "lit-robust fit: error: the final model of ITLM misses the training targets by " \
        "a median of " in err and "it did not learn, though its last round was not judged collapsed" in err, err
    assert "(`--model.lr`; this fit's was 5: try 0.5)" in err
    main(args)  # the config's learning rate: it learns, exit 0
    assert "did not learn" not in capsys.readouterr().err


def test_a_table_without_a_test_split_says_how_to_have_one():
    dm = TableDataModule(frame=table(30), target="kind", features=["a"], test_size=0)
    dm.setup()
    with pytest.raises(NotImplementedError, match=r"TableDataModule has no test split, so there is nothing to test: "
                                                  r"`test` uses the test split\. Fit with `test_size` > 0 or a "
                                                  r"`test_path` table to have one\. New rows to score or predict go in "
                                                  r"`predict_path`"):
        dm.test_dataloader()


def test_a_column_that_looks_like_a_row_id_is_warned_about():
    frame = table(40)
    with pytest.warns(UserWarning, match=r"column\(s\) \['id'\] look like row ids \(whole numbers, a different one in "
                                         r"every row\) and are used as inputs; leave them out with `drop`"):
        TableDataModule(frame=frame, target="kind", features=["id", "a"]).setup()
    frame["row"] = np.random.default_rng(0).permutation(40)  # 0..39 shuffled, named anything
    frame["count"] = np.random.default_rng(1).integers(0, 5, 40)  # whole numbers that repeat: a feature
    with pytest.warns(UserWarning, match=r"\['row'\] look like row ids"):
        TableDataModule(frame=frame, target="kind", features=["row", "count", "a"]).setup()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TableDataModule(frame=frame, target="kind", features=["count", "a", "flag"]).setup()


def test_a_separate_test_table_is_scaled_with_the_training_rows_and_must_know_their_classes(tmp_path):
    frame = table()
    test = table(20, seed=1)
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], test_frame=test)
    dm.setup()
    assert len(dm.train_set) == 60 and len(dm.test_set) == 20
    expected = (torch.tensor(test[["a", "b"]].to_numpy()) - dm.feature_centre) / dm.feature_scale
    assert torch.allclose(dm.test_set.dataset.tensors[0], expected.float())
    test.loc[4, "kind"] = "eel"
    with pytest.raises(ValueError, match=r"`target` 'kind' of `test_frame` holds classes the training table does not "
                                         r"have: \['eel'\] \(training classes: \['ant', 'cat', 'dog'\]\)"):
        TableDataModule(frame=frame, target="kind", features=["a", "b"], test_frame=test).setup()


def test_missing_values_are_counted_per_column_or_dropped_with_a_warning():
    frame = table()
    frame.loc[[2, 9], "a"] = np.nan
    frame.loc[9, "b"] = np.inf
    with pytest.raises(ValueError, match=r"the table: 2 of 60 rows have a missing or infinite value in a used column "
                                         r"\('a' \(2\), 'b' \(1\)\), e.g. row 2\. Fill them, or pass `missing='drop'`"):
        TableDataModule(frame=frame, target="kind", features=["a", "b"]).setup()
    TableDataModule(frame=frame, target="kind", features=["price"], test_size=0).setup()  # unused columns: no matter
    frame["empty"] = np.nan  # `missing='drop'` then left no row, and the error blamed `test_size` (a reviewer's)
    with pytest.raises(ValueError, match=r"the table: column\(s\) \['empty'\] have no value in any of the 60 rows: "
                                         r"leave it out with `drop` \(e.g. `drop=\['empty'\]`\), or fill them\."):
        TableDataModule(frame=frame.drop(columns=["a", "b"]), target="kind").setup()
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], missing="drop", test_size=0)
    with pytest.warns(UserWarning, match=r"left out 2 of 60 rows of the table with a missing or infinite value"):
        dm.setup()
    assert sorted(dm.train_source_index.tolist()) == [i for i in range(60) if i not in (2, 9)]
    # in the rows to predict, the advice says that `missing` is one of the fit's settings: an anomaly newcomer's
    # `--data.missing drop` then found no fit for `--ckpt_path last`
    new = table(10, seed=1)
    new.loc[3, "a"] = np.nan
    with pytest.raises(ValueError, match=r"`predict_frame`: 1 of 10 rows .* Fill them, or pass `missing='drop'` to "
                                         r"leave those rows out \(it is one of the fit's settings: from a checkpoint, "
                                         r"pass the checkpoint file as `ckpt_path`, not `last`\)\."):
        TableDataModule(frame=table(), target="kind", features=["a", "b"], predict_frame=new).setup()


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "knd"}, r"`target` names column\(s\) \['knd'\] that the table does not have; its columns are \['id', "
                        r".*Did you mean 'kind'\?"),
    ({"target": "kind", "features": ["a", "kind"]}, r"`features` must not include the `target`, `corrupted` or `id_columns`"),
    # a number, not numpy's repr (`np.float64(...)`)
    ({"target": "price", "features": ["a"]}, r"`target` 'price' holds non-integer numbers \(e.g. \d+\.\d+\): for a numeric "
                          r"target to predict pass task='regression'"),
    ({"target": "kind", "task": "regression", "features": ["a"]}, r"`target` column\(s\) \['kind'\] do not hold "
                                                                   r"numbers"),
    ({"target": "kind", "features": ["a", "kind2"]}, r"`features` names column\(s\) \['kind2'\]"),
    ({"target": "price", "task": "regression"}, r"`features`: column\(s\) \['kind'\] do not hold numbers \('kind': "
                                                r"'.*' \(row 0\), '.*' \(row 1\), '.*' \(row 2\) and 57 more\)\. One-hot encode categories \(`pandas.get_dummies"
                                                r".*\(or with `id_columns`, for a column that names each row"),
    ({"target": "kind", "corrupted": "a", "features": ["b"]}, r"`corrupted` column 'a' must hold 0/1 \(or True/False\) "
                                                             r"flags, got values"),
    ({"target": "kind", "features": ["a"], "test_size": 0.6, "val_size": 0.4},
     r"`test_size` \+ `val_size` must leave training rows: 36 \+ 24 of the table's 60 usable rows"),
])
def test_a_table_that_does_not_fit_the_arguments_is_named_at_setup(kwargs, message):
    frame = table()
    with pytest.raises(ValueError, match=message):
        TableDataModule(frame=frame, **kwargs).setup()


def test_an_id_column_that_is_the_dataframes_index_is_named_so():
    """A pandas user's `id_columns="customer_id"` was the DataFrame's index: the message listed the columns only."""
    frame = table().set_index("id")
    with pytest.raises(ValueError, match=r"`id_columns` names column\(s\) \['id'\] .* 'id' is the DataFrame's index: "
                                         r"make it a column with `frame.reset_index\(\)`"):
        TableDataModule(frame=frame, target="kind", features=["a"], id_columns="id").setup()
    dm = TableDataModule(frame=frame.reset_index(), target="kind", features=["a"], id_columns="id", test_size=0)
    dm.setup()
    assert len(dm.train_source_index) == 60


def test_one_class_is_not_a_classification():
    frame = table()
    frame["only"] = "x"
    with pytest.raises(ValueError, match=r"`target` 'only' holds one class only \(\['x'\]\): a classifier needs at "
                                         r"least two"):
        TableDataModule(frame=frame, target="only", features=["a"]).setup()


@pytest.mark.parametrize("kwargs, message", [
    ({}, r"Give the table as `path` .* or, from Python, as `frame` .* exactly one of them; got path=None and "
         r"frame=None"),
    ({"path": "t.csv", "frame": "F"}, r"exactly one of them; got path='t.csv' and frame=a DataFrame"),
    ({"path": "t.csv"}, r"`target` \(the column to predict\) is required for task='classification'"),
    ({"path": "t.csv", "target": "y", "task": "ranking"}, r"`task` must be one of \['classification', 'regression', "
                                                          r"'anomaly'\], got 'ranking'"),
    ({"path": "t.csv", "target": ["y", "z"]}, r"`target` must be one column for task='classification', got \['y', "
                                              r"'z'\]. Several targets are a regression: pass task='regression'"),
    ({"path": "t.csv", "task": "anomaly", "corrupted": "c"}, r"`corrupted` is not used with task='anomaly': name the "
                                                             r"column of known anomalies as `target`"),
    ({"path": "t.csv", "target": "y", "features": ["a"], "drop": ["b"]}, r"Pass `features` .* or `drop` .*, not both"),
    ({"path": "t.csv", "target": "y", "scale": "minmax"}, r"`scale` must be one of \['robust', 'standard', 'none'\], "
                                                          r"got 'minmax'"),
    ({"path": "t.csv", "target": "y", "missing": "fill"}, r"`missing` must be 'error' or 'drop', got 'fill'"),
    ({"path": "t.csv", "target": "y", "test_path": "u.csv", "test_size": 0.1},
     r"`test_size` must be 0 or None with a test table \(`test_path`/`test_frame`\), got 0.1"),
    ({"path": "t.csv", "target": "y", "test_size": 1.5}, r"`test_size` must be a fraction in \[0, 1\) of the rows or "
                                                         r"a whole number of rows >= 0, got 1.5"),
    ({"path": "t.csv", "target": "y", "val_size": -1}, r"`val_size` must be a fraction in \[0, 1\) .* got -1"),
    ({"path": "t.csv", "target": "y", "batch_size": 0}, r"`batch_size` must be an integer >= 1, got 0"),
    ({"path": "t.csv", "target": 3}, r"`target` must be a column name or a list of column names, got 3"),
])
def test_arguments_are_checked_when_the_module_is_made(kwargs, message):
    if kwargs.get("frame") == "F":
        kwargs["frame"] = table()
    with pytest.raises(ValueError, match=message):
        TableDataModule(**kwargs)


def test_a_column_named_in_another_case_is_suggested(one_torch_thread):
    frame = pd.DataFrame({f"s{i}": np.arange(10.0) * i for i in range(1, 9)})
    with pytest.raises(ValueError, match=r"`features` names column\(s\) \['S2'\] that the table does not have; its "
                                         r"columns are \[.*\]\. Did you mean 's2'\?"):
        TableDataModule(frame=frame, task="anomaly", features=["s1", "S2"]).setup("fit")


def test_a_path_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"`path`='nothere.csv': no such file \(a relative path is read from "
                                                rf"the current folder, {tmp_path}\)"):
        TableDataModule("nothere.csv", target="y").setup()
    (tmp_path / "folder.csv").mkdir()  # a folder named like a file was "no such file" (a reviewer's)
    with pytest.raises(FileNotFoundError, match=r"`path`='folder.csv': a folder, not a file \(a relative path"):
        TableDataModule("folder.csv", target="y").setup()
    with pytest.raises(ValueError, match=r"`path` must end in one of \['.csv', '.parquet', '.pq', '.tab', '.tsv', "
                                         r"'.txt'\] \(it says how to read the file\), got 'data.xlsx'"):
        TableDataModule("data.xlsx", target="y").setup()
    with pytest.raises(ValueError, match=r"`frame` must be a pandas DataFrame, got a dict"):
        TableDataModule(frame={"a": [1]}, target="a")  # at construction, as every argument check
    # a string where a DataFrame goes is answered about the argument given, not about `test_path`
    with pytest.raises(ValueError, match=r"`test_frame` must be a pandas DataFrame \(or the path of a table ending in "
                                         r"one of \['.csv', .*\]\), got 'str'"):
        TableDataModule(frame=table(40), target="kind", test_frame="str")  # at construction (an auditor's)
    with pytest.raises(FileNotFoundError, match=r"`predict_frame`='new.csv': no such file"):
        TableDataModule(frame=table(40), target="kind", predict_frame="new.csv").setup("predict")


def test_mlp_classifier_reads_its_shape_from_the_table_and_its_checkpoint_keeps_it(tmp_path, one_torch_thread):
    frame = table(80)
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b", "flag"], batch_size=16)
    model = MLPClassifier(hidden=8)
    assert model.net is None
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, dm)
    assert model.net[1].in_features == 3 and model.net[-1].out_features == 3
    assert (model.hparams.in_features, model.hparams.num_classes) == (3, 3)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = MLPClassifier.load_from_checkpoint(tmp_path / "m.ckpt")
    x = dm.test_set.dataset.tensors[0]
    assert torch.equal(loaded(x), model(x))
    assert 0.0 <= trainer.test(model, dm, verbose=False)[0]["test_acc"] <= 1.0


def test_mlp_classifier_without_a_datamodule_or_with_a_contradicting_shape_says_what_to_pass(one_torch_thread):
    frame = table(40)
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"])
    with pytest.raises(ValueError, match=r"`model.in_features`=5 does not fit `data`: TableDataModule yields vectors "
                                         r"of 2 features\. Set `model.in_features` to 2 \(or leave it out\)"):
        quiet_trainer().fit(MLPClassifier(in_features=5), dm)
    with pytest.raises(ValueError, match=r"`model.in_features`=5 does not fit `data`: TableDataModule yields vectors "
                                         r"of 2 features\. Set `model.in_features` to 2\.$"):
        quiet_trainer().fit(MLPClassifier(in_features=5, num_classes=3), dm)
    dm.setup()
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=8)
    with pytest.raises(ValueError, match=r"MLPClassifier: `in_features` and `num_classes` are read from the datamodule "
                                         r"when left at None \(got \{'in_features': None, 'num_classes': None\}\), but "
                                         r"there is no datamodule saying what it yields \(plain dataloaders\)\. Pass "
                                         r"both, e.g. MLPClassifier\(in_features=30, num_classes=2\)"):
        quiet_trainer().fit(MLPClassifier(), loader)
    with pytest.raises(RuntimeError, match=r"builds its layers at `setup`, from the datamodule"):
        MLPClassifier()(torch.zeros(1, 2))
    reg = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"])
    with pytest.raises(ValueError, match=r"`data`: TableDataModule yields float regression targets of 1 value\(s\) "
                                         r"per sample; use MLPRegressor"):  # not "pass both": no size fits
        quiet_trainer().fit(MLPClassifier(), reg)
    quiet_trainer(max_epochs=1).fit(MLPClassifier(in_features=2, num_classes=3), loader)  # given: plain loaders work


def test_a_regressor_and_a_detector_fit_a_table(one_torch_thread):
    frame = table(80)
    reg = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], batch_size=16)
    quiet_trainer(max_epochs=1).fit(MLPRegressor(in_features=2, out_features=1, hidden=8), reg)
    ad = TableDataModule(frame=frame, task="anomaly", target="bad", features=["a", "b"], batch_size=16)
    detector = RobustRealNVP(dim=2, hidden=8, n_couplings=2, drop_ratio=0.25)
    quiet_trainer(max_epochs=2).fit(detector, ad)
    assert 0.0 <= quiet_trainer().test(detector, ad, verbose=False)[0]["test_auroc"] <= 1.0


def test_the_report_joins_back_to_the_table_by_source_index(tmp_path, one_torch_thread):
    frame = table(120)
    frame["label"] = (frame["a"] > 0).astype(int)
    flip = frame.index % 5 == 0
    frame.loc[flip, "label"] = 1 - frame.loc[flip, "label"]
    dm = TableDataModule(frame=frame, target="label", features=["a", "b"], batch_size=16, test_size=20)
    itlm = ITLM(keep_ratio=0.8, round_epochs=[2, 2], verbose=False, plot=False, report=True, report_dir=str(tmp_path))
    quiet_trainer(max_epochs=4, callbacks=[itlm]).fit(MLPClassifier(hidden=16, lr=0.01), dm)
    report = load_report(itlm.report_path)
    assert len(report) == 100 and sorted(report["source_index"]) == sorted(dm.train_source_index.tolist())
    joined = report.merge(frame, how="left", left_on="source_index", right_index=True)
    assert (joined["given_label"] == joined["label"]).all()  # the report's label is the table's, row by row


def test_the_cli_reads_a_csv_and_names_a_misspelt_column(tmp_path, capsys, monkeypatch, one_torch_thread):
    monkeypatch.setattr(sys, "argv", ["lit-robust"])
    monkeypatch.chdir(tmp_path)
    frame = table(80)
    frame.to_csv("mine.csv", index=False)
    args = ["fit", "--data", "lit_robust.TableDataModule", "--data.path", "mine.csv", "--data.drop", "[id, bad]",
            "--model", "lit_robust.MLPClassifier", "--trainer.max_epochs", "1", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--data.target", "knd"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Did you mean 'kind'?" in err and "data.init_args.target" in err, err
    main([*args, "--data.target", "kind"])


def test_predictions_csv_names_the_table_rows_classes_and_units(tmp_path, one_torch_thread):
    """`lit-robust predict` on a table wrote class indices, scaled targets and test-split positions only."""
    from lit_robust import PredictionWriter

    frame = table(80)
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], batch_size=16, test_size=20)
    model = MLPClassifier(hidden=8)
    quiet_trainer(max_epochs=1).fit(model, dm)
    writer = PredictionWriter(dirpath=str(tmp_path / "cls"))
    quiet_trainer(callbacks=[writer]).predict(model, dm)
    rows = pd.read_csv(writer.path)
    assert list(rows.columns) == ["index", "source_index", "prediction", "target", "predicted_class", "target_class"]
    assert (rows["source_index"] == dm.test_source_index.numpy()[rows["index"]]).all()
    assert (rows["target_class"] == frame["kind"].iloc[rows["source_index"]].to_numpy()).all()  # the table's rows
    assert (rows["predicted_class"] == [dm.classes[i] for i in rows["prediction"]]).all()

    reg = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], batch_size=16,
                          test_size=20)
    regressor = MLPRegressor(in_features=2, out_features=1, hidden=8)
    quiet_trainer(max_epochs=1).fit(regressor, reg)
    writer = PredictionWriter(dirpath=str(tmp_path / "reg"))
    quiet_trainer(callbacks=[writer]).predict(regressor, reg)
    rows = pd.read_csv(writer.path)
    assert list(rows.columns) == ["index", "source_index", "prediction", "target", "predicted_price", "given_price"]
    assert np.allclose(rows["given_price"], frame["price"].iloc[rows["source_index"]], rtol=0, atol=1e-9)  # exact
    centre, scale = float(reg.target_centre[0]), float(reg.target_scale[0])
    assert np.allclose(rows["predicted_price"], rows["prediction"] * scale + centre, rtol=1e-6)

    other = torch.utils.data.DataLoader(dm.train_set, batch_size=16)  # not its test split: left as it is
    writer = PredictionWriter(dirpath=str(tmp_path / "own"))
    quiet_trainer(callbacks=[writer]).predict(model, other)
    assert list(pd.read_csv(writer.path).columns) == ["index", "prediction", "target"]
    assert dm.describe_predictions({"index": [0]}, [other]) == {"index": [0]}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_report_names_classes_and_regression_targets_in_the_tables_terms(tmp_path, fmt, one_torch_thread):
    frame = table(100)
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], batch_size=20, test_size=0)
    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False, report=True, report_dir=str(tmp_path),
                report_format=fmt)
    quiet_trainer(max_epochs=2, callbacks=[itlm]).fit(MLPClassifier(hidden=8), dm)
    for rows in (load_report(itlm.report_path), pd.DataFrame(load_report(itlm.report_path, as_frame=False))):
        assert (rows["given_class"] == frame["kind"].iloc[rows["source_index"]].to_numpy()).all()
        assert (rows["predicted_class"] == [dm.classes[i] for i in rows["predicted_label"]]).all()

    reg = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], batch_size=20,
                          test_size=0)
    spl = BatchFilter("spl", drop_ratio=0.2, report=True, report_dir=str(tmp_path / "reg"), report_format=fmt)
    quiet_trainer(max_epochs=1, callbacks=[spl]).fit(MLPRegressor(in_features=2, out_features=1, hidden=8), reg)
    rows = load_report(spl.report_path)
    assert np.allclose(rows["given_price"], frame["price"].iloc[rows["source_index"]], rtol=0, atol=1e-9)  # exact
    centre, scale = float(reg.target_centre[0]), float(reg.target_scale[0])
    assert np.allclose(rows["predicted_price"], rows["predicted_target"] * scale + centre, rtol=1e-6)
    # two targets: the report has no scaled target columns, but the table's values are known (a release check)
    two = TableDataModule(frame=frame, target=["price", "b"], task="regression", features=["a"], batch_size=20,
                          test_size=0)
    spl = BatchFilter("spl", drop_ratio=0.2, report=True, report_dir=str(tmp_path / "two"), report_format=fmt)
    quiet_trainer(max_epochs=1, callbacks=[spl]).fit(MLPRegressor(hidden=8), two)
    rows = load_report(spl.report_path)
    for column in ("price", "b"):
        assert np.allclose(rows[f"given_{column}"], frame[column].iloc[rows["source_index"]], rtol=0, atol=1e-9)
    assert "predicted_price" not in rows


def test_a_target_column_named_target_keeps_both_pairs_of_report_columns(tmp_path, one_torch_thread):
    """scikit-learn's `as_frame` names its target column "target": the report's `given_target` in the table's units
    replaced the scaled `given_target` (and `predicted_target` alike), so the scaled pair the docs describe was gone.
    The table's pair now gains " (table units)"."""
    frame = table(100).rename(columns={"price": "target"})
    reg = TableDataModule(frame=frame, target="target", task="regression", features=["a", "b"], batch_size=20,
                          test_size=0)
    spl = BatchFilter("spl", drop_ratio=0.2, report=True, report_dir=str(tmp_path))
    quiet_trainer(max_epochs=1, callbacks=[spl]).fit(MLPRegressor(in_features=2, out_features=1, hidden=8), reg)
    rows = load_report(spl.report_path)
    given = frame["target"].iloc[rows["source_index"]].to_numpy()
    assert np.allclose(rows["given_target (table units)"], given, rtol=0, atol=1e-9)
    centre, scale = float(reg.target_centre[0]), float(reg.target_scale[0])
    assert scale > 5 and np.allclose(rows["given_target"] * scale + centre, given, rtol=1e-5)  # the scaled pair
    assert np.allclose(rows["predicted_target (table units)"], rows["predicted_target"] * scale + centre, rtol=1e-6)


def test_a_regression_tables_test_errors_are_in_its_units_and_new_rows_raise_no_nan_target_warning(tmp_path,
                                                                                                     one_torch_thread):
    """A table newcomer read `test_mae 0.152` where predictions.csv gave 11.0 kWh (the scaled units), and predicting
    new rows without a target column warned that 50 of 50 samples had NaN targets, to drop or impute them."""
    import warnings

    frame = table(80)
    reg = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], batch_size=16,
                          test_size=20, predict_frame=table(9, seed=4)[["a", "b"]])
    regressor = MLPRegressor(hidden=8)
    with warnings.catch_warnings(record=True) as caught:  # the new rows are set up with the training rows
        warnings.simplefilter("always")
        quiet_trainer(max_epochs=1).fit(regressor, reg)
        predicted = quiet_trainer().predict(regressor, reg)
    assert sum(len(p) for p in predicted) == 9
    assert not [str(w.message) for w in caught if "NaN or infinite" in str(w.message)]
    _, x, y = reg.test_set[:]
    with torch.no_grad():
        err = (reg.unscale_targets(regressor.eval()(x)) - reg.unscale_targets(y)).flatten()
    given = frame["price"].iloc[reg.test_source_index.numpy()].to_numpy()
    assert np.allclose(reg.unscale_targets(y).flatten().numpy(), given, rtol=1e-6)  # the table's prices
    assert float(reg.target_scale[0]) > 5  # the table's units differ from the scaled ones
    out = quiet_trainer().test(regressor, reg, verbose=False)[0]
    assert out["test_mae"] == pytest.approx(float(err.abs().mean()), rel=1e-4)
    assert out["test_mse"] == pytest.approx(float((err ** 2).mean()), rel=1e-4)
    assert out["test_rmse"] == pytest.approx(float((err ** 2).mean()) ** 0.5, rel=1e-4)


@pytest.mark.parametrize("model", [MLPClassifier(in_features=2, num_classes=2), MLPClassifier(),
                                   MLPRegressor(in_features=2, out_features=1), MLPRegressor()])
def test_a_supervised_model_on_an_anomaly_table_says_to_train_an_anomaly_model(model):
    """A table newcomer followed `Pass both, e.g. MLPClassifier(in_features=30, num_classes=2)` for an unlabelled
    anomaly table, and it trained silently on the all-zero placeholder flags."""
    wants = "class labels" if isinstance(model, MLPClassifier) else "regression targets"
    task = "classification" if isinstance(model, MLPClassifier) else "regression"
    with pytest.raises(ValueError, match=rf"`model`={type(model).__name__} learns {wants}, but `data`: TableDataModule "
                                         r"is an anomaly detection set \(0/1 anomaly flags as targets, placeholders "
                                         r"where the rows are unlabelled\): train an anomaly model on it "
                                         rf".*`TableDataModule\(task='{task}', target=\.\.\.\)`"):
        quiet_trainer(max_epochs=1).fit(model, TableDataModule(frame=table(40), task="anomaly", features=["a", "b"]))


@pytest.mark.parametrize(("model", "task", "says"), [
    (MLPClassifier(), "regression", r"`model`=MLPClassifier is a classifier, but `data`: TableDataModule yields float "
                                    r"regression targets of 1 value\(s\) per sample; use MLPRegressor, or a datamodule "
                                    r"with class labels \(e.g. TableDataModule\(task='classification'\)\)\.$"),
    (MLPRegressor(), "classification", r"`model`=MLPRegressor is a regressor, but `data`: TableDataModule yields labels "
                                       r"of 3 classes; use MLPClassifier, or a datamodule of float targets \(e.g. "
                                       r"TableDataModule\(task='regression'\)\)\.$")])
def test_a_model_of_the_other_kind_is_told_which_model_fits_the_table(model, task, says):
    """A lab newcomer's MLPClassifier on a regression table was told to "pass both, e.g. MLPClassifier(in_features=30,
    num_classes=2)", which cannot help."""
    target = "price" if task == "regression" else "kind"
    with pytest.raises(ValueError, match=says):
        quiet_trainer(max_epochs=1).fit(model, TableDataModule(frame=table(40), target=target, task=task,
                                                               features=["a", "b"]))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_id_columns_are_no_inputs_and_name_each_row_of_the_report_and_predictions(tmp_path, fmt, one_torch_thread):
    """A table newcomer joined every output back on `source_index` to see their `machine_id`: the report could not
    carry it."""
    from lit_robust import PredictionWriter

    frame = table(80).assign(name=[f"m{i:03d}" for i in range(80)], day=pd.date_range("2026-01-01", periods=80))
    dm = TableDataModule(frame=frame, target="kind", drop=["bad", "price", "const", "flag"], id_columns=["id", "name",
                         "day"], batch_size=16, test_size=20, predict_frame=frame.iloc[:5][["a", "b", "name"]])
    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False, report=True, report_dir=str(tmp_path),
                report_format=fmt)
    model = MLPClassifier(hidden=8)
    quiet_trainer(max_epochs=2, callbacks=[itlm]).fit(model, dm)
    assert dm.feature_names == ["a", "b"]  # `id`, `name`, `day` are no inputs (and `id` no longer warned about)
    rows = load_report(itlm.report_path)
    assert list(rows.columns[:5]) == ["rank", "index", "source_index", "id", "name"]
    assert (rows["id"] == frame["id"].iloc[rows["source_index"]].to_numpy()).all()
    assert (rows["name"] == frame["name"].iloc[rows["source_index"]].to_numpy()).all()
    assert rows["day"].tolist() == [str(d) for d in frame["day"].iloc[rows["source_index"]]]  # dates as text
    for loader, source, want in ((dm.test_dataloader(), frame, ["id", "name", "day"]),
                                 (dm.predict_dataloader(), frame.iloc[:5], ["name"])):  # the ids each table has
        described = dm.describe_predictions({"index": [0, 2, 1], "prediction": [0, 1, 0]}, [loader])
        assert list(described)[:2 + len(want)] == ["index", "source_index", *want]
        assert described["name"] == source["name"].iloc[described["source_index"]].tolist()
    writer = PredictionWriter(dirpath=str(tmp_path / "p"))
    quiet_trainer(callbacks=[writer]).predict(model, dm)  # the new rows
    assert pd.read_csv(writer.path)["name"].tolist() == [f"m{i:03d}" for i in range(5)]
    with pytest.raises(ValueError, match=r"`id_columns`.*'nmae'"):
        TableDataModule(frame=frame, target="kind", id_columns="nmae").setup()
    with pytest.raises(ValueError, match=r"`features` must not include the `target`, `corrupted` or `id_columns` "
                                         r"column\(s\), got \['a'\]"):
        TableDataModule(frame=frame, target="kind", features=["a", "b"], id_columns=["a"]).setup()
    # not "No input column is left: ... `target`, `corrupted`, `drop` and `id_columns` took them all"
    with pytest.raises(ValueError, match=r"`features` must name at least one column of the table, or be None .* got "
                                         r"\[\]"):
        TableDataModule(frame=frame, target="kind", features=[])  # at construction (an auditor's)


def test_a_separate_test_tables_given_targets_are_its_own_values():
    """`given_<column>` of a `test_frame`'s predictions comes from that table, by its own row positions."""
    frame, test = table(60), table(12, seed=7)
    test.loc[3, "a"] = np.nan  # an unusable row: the others keep their positions
    reg = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], test_size=0,
                          test_frame=test, missing="drop")
    reg.setup()
    described = reg.describe_predictions({"index": [0, 4, 2], "prediction": [0.0, 0.0, 0.0], "target": [0.0] * 3},
                                         [reg.test_dataloader()])
    assert described["source_index"] == [0, 5, 2]
    assert described["given_price"] == test["price"].iloc[[0, 5, 2]].tolist()


def test_new_rows_to_predict_need_no_label_and_keep_their_row_numbers(tmp_path, one_torch_thread):
    """A CSV newcomer could predict new rows only by adding a fake label column to them."""
    from lit_robust import PredictionWriter

    frame = table(80)
    new = table(7, seed=5)[["b", "a"]]  # no `kind` column, other column order
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], batch_size=16, predict_frame=new)
    model = MLPClassifier(hidden=8)
    quiet_trainer(max_epochs=1).fit(model, dm)
    writer = PredictionWriter(dirpath=str(tmp_path))
    out = quiet_trainer(callbacks=[writer]).predict(model, dm)
    rows = pd.read_csv(writer.path)
    assert list(rows.columns) == ["index", "source_index", "prediction", "predicted_class"]
    assert rows["source_index"].tolist() == list(range(7))
    x = (torch.tensor(new[["a", "b"]].to_numpy()) - dm.feature_centre) / dm.feature_scale  # training rows' scaling
    assert torch.equal(torch.cat(out), model(x.float()).argmax(1))
    assert (rows["predicted_class"] == [dm.classes[i] for i in rows["prediction"]]).all()
    with pytest.raises(ValueError, match=r"`predict_frame` lacks column\(s\) \['b'\] of the training table \(it needs "
                                         r"\['a', 'b'\]\); its columns are \['a'\]\." + _NAMES_NOTE):
        TableDataModule(frame=frame, target="kind", features=["a", "b"], predict_frame=new[["a"]]).setup()
    # a column spelt otherwise only in case is named (a regression newcomer's test table had `KWH` for `kwh`); a
    # column the training table needs is never offered
    with pytest.raises(ValueError, match=r"`predict_frame` lacks column\(s\) \['b'\] of the training table \(it needs "
                                         r"\['a', 'b'\]\); its columns are \['a', 'B'\]\. Did you mean 'B' for 'b'\?"
                                         + _NAMES_NOTE):
        TableDataModule(frame=frame, target="kind", features=["a", "b"],
                        predict_frame=new[["a", "b"]].rename(columns={"b": "B"})).setup()
    with pytest.raises(ValueError, match=r"its columns are \['a', 'A'\]\." + _NAMES_NOTE):  # 'A' is no hint for 'b'
        TableDataModule(frame=frame, target="kind", features=["a", "b"],
                        predict_frame=new[["a", "b"]].rename(columns={"b": "A"})).setup()
    with pytest.raises(ValueError, match=r"Give the table to predict as `predict_path` or `predict_frame`, not both"):
        TableDataModule(frame=frame, target="kind", predict_path="x.csv", predict_frame=new)


def test_transform_gives_new_rows_as_the_model_saw_the_training_rows(tmp_path, one_torch_thread):
    """An anomaly newcomer passed raw DataFrame values to `predict_anomaly` after a TableDataModule fit: all 207 rows
    flagged, no word. `transform` scales new rows as the training rows were, one input per row, in order."""
    from lit_robust import PredictionWriter

    frame = table(80)
    new = table(7, seed=5)[["b", "kind", "a"]]  # another column order, a target column it ignores
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], batch_size=16, predict_frame=new[["a", "b"]])
    with pytest.raises(RuntimeError, match=r"call `setup\(\)` first"):
        dm.transform(new)
    model = MLPClassifier(hidden=8)
    quiet_trainer(max_epochs=1).fit(model, dm)
    x = dm.transform(new)
    assert x.dtype == torch.float32 and x.shape == (7, 2)
    # the same inputs the predict route builds from the same rows
    assert torch.equal(x, dm.predict_set.dataset.tensors[0])
    writer = PredictionWriter(dirpath=str(tmp_path))
    out = quiet_trainer(callbacks=[writer]).predict(model, dm)
    assert torch.equal(torch.cat(out), model(x).argmax(1))
    with pytest.raises(ValueError, match=r"`frame` lacks column\(s\) \['b'\] of the training table"):
        dm.transform(new[["a"]])
    holes = new.copy()
    holes.loc[holes.index[3], "a"] = float("nan")
    with pytest.raises(ValueError, match=r"`frame`: 1 of 7 rows have a missing or infinite value in a feature column, "
                                         r"e.g. row 3"):
        dm.transform(holes)
    with pytest.raises(ValueError, match=r"`frame` must be a pandas DataFrame, got a ndarray"):
        dm.transform(new.to_numpy())
    words = new.astype({"a": str})
    words.loc[words.index[2], "a"] = "n/a"
    with pytest.raises(ValueError, match=r"`frame`: column\(s\) \['a'\] do not hold numbers \('a': 'n/a' \(row 2\)\)"):
        dm.transform(words)


def test_mlp_regressor_reads_its_shape_from_the_table_too(tmp_path, one_torch_thread):
    """A CSV newcomer met MLPRegressor's MNIST defaults (784 in, 10 out) one error per run."""
    frame = table(60)
    dm = TableDataModule(frame=frame, target=["price", "b"], task="regression", features=["a", "flag"], batch_size=20)
    model = MLPRegressor(hidden=8, hidden_layers=1)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, dm)
    assert (model.hparams.in_features, model.hparams.out_features) == (2, 2) and model.net[1].in_features == 2
    trainer.save_checkpoint(tmp_path / "r.ckpt")
    x = dm.test_set.dataset.tensors[0]
    assert torch.equal(MLPRegressor.load_from_checkpoint(tmp_path / "r.ckpt")(x), model(x))
    with pytest.raises(ValueError, match=r"`model.out_features`=1 does not fit `data`: TableDataModule yields float "
                                         r"regression targets of 2 value\(s\) per sample\. Set `model.out_features` to 2 "
                                         r"\(or leave it out\)"):
        quiet_trainer().fit(MLPRegressor(out_features=1), dm)
    with pytest.raises(ValueError, match=r"MLPRegressor: `in_features` and `out_features` are read from the datamodule "
                                         r"when left at None .* Pass both, e.g. MLPRegressor\(in_features=10, "
                                         r"out_features=1\)"):
        quiet_trainer().fit(MLPRegressor(), torch.utils.data.DataLoader(dm.train_set, batch_size=8))


def test_a_two_target_regression_logs_each_targets_errors_in_its_own_units(one_torch_thread):
    """A release check's two-target table (kWh and degrees): `test_mae` averaged the two units. Each named target now
    gets its own R², RMSE and MAE, against a reference computed from the model's predictions by hand."""
    frame = table(80)
    two = TableDataModule(frame=frame, target=["price", "b"], task="regression", features=["a"], batch_size=16,
                          test_size=20)
    regressor = MLPRegressor(hidden=8)
    quiet_trainer(max_epochs=1).fit(regressor, two)
    out = quiet_trainer().test(regressor, two, verbose=False)[0]
    _, x, y = two.test_set[:]
    with torch.no_grad():
        pred, given = two.unscale_targets(regressor.eval()(x)), two.unscale_targets(y)
    err = (pred - given).reshape(-1, 2)
    given = given.reshape(-1, 2)
    for j, name in enumerate(["price", "b"]):
        assert out[f"test_mae/{name}"] == pytest.approx(float(err[:, j].abs().mean()), rel=1e-4)
        assert out[f"test_rmse/{name}"] == pytest.approx(float((err[:, j] ** 2).mean()) ** 0.5, rel=1e-4)
        r2 = 1 - float((err[:, j] ** 2).sum()) / float(((given[:, j] - given[:, j].mean()) ** 2).sum())
        assert out[f"test_r2/{name}"] == pytest.approx(r2, rel=1e-4, abs=1e-5)
    assert out["test_mae"] == pytest.approx(float(err.abs().mean()), rel=1e-4)  # the average over both, as before
    assert abs(out["test_mae/price"] - out["test_mae/b"]) > 1  # the two units differ: the average hid it
    # one target: no per-target keys
    one = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], batch_size=16,
                          test_size=20)
    single = MLPRegressor(hidden=8)
    quiet_trainer(max_epochs=1).fit(single, one)
    assert not [k for k in quiet_trainer().test(single, one, verbose=False)[0] if "/" in k]


def test_a_regression_target_with_a_few_text_cells_names_them_and_how_to_drop_them():
    """A regression newcomer's 2,000 float targets with one typo ('broken' in row 7) were told neither the cell nor
    the row, and to pass task='classification'. A column of labels still gets that advice."""
    frame = table()
    frame["price"] = frame["price"].round(2).astype(object)
    frame.loc[7, "price"] = "broken"
    with pytest.raises(ValueError, match=re.escape(
            "`target` column(s) ['price'] do not hold numbers ('price': 'broken' (row 7)): most cells are numbers: "
            "correct those cells, or empty them (`pandas.to_numeric(column, errors='coerce')`) and pass "
            "`missing='drop'`.")):
        TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"]).setup()
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce")
    dm = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], missing="drop",
                         test_size=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup()
    assert len(dm.train_set) == len(frame) - 1  # the advice works
    with pytest.raises(ValueError, match=r"do not hold numbers \('kind': 'dog' \(row 0\).*\): a regression predicts "
                                         r"numbers \(for labels pass task='classification'\)\."):
        TableDataModule(frame=table(), target="kind", task="regression", features=["a", "b"]).setup()


def test_a_regression_target_with_missing_and_text_cells_names_both_at_once(tmp_path):
    """A regression newcomer's target with 'n/a' (read as missing) and '151 mg': the first fit named only the missing
    cells, and after `missing='drop'` the next failed on '151 mg'. Both are named by the first error now."""
    frame = table()
    frame["price"] = frame["price"].round(2).astype(object)
    frame.loc[[3, 9], "price"] = "n/a"
    frame.loc[40, "price"] = "151 mg"
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as err:
        TableDataModule(path=str(tmp_path / "t.csv"), target="price", task="regression", features=["a", "b"]).setup()
    said = str(err.value)
    assert said.startswith("the table: 2 of ") and "('price' (2)), e.g. row 3" in said, said
    assert said.endswith("The `target` column(s) ['price'] also hold cells that are not numbers ('price': '151 mg' "
                         "(row 40)): a regression predicts numbers, so correct those cells as well (or empty them: "
                         "`pandas.to_numeric(column, errors='coerce')`)."), said
    # only missing cells, or a classification's text labels: nothing added
    frame.loc[40, "price"] = 1.5
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"to leave those rows out\. pandas read the cells 'n/a' \(2 in 'price'\) as "
                                         r"missing.*rename those cells in the file\.$"):
        TableDataModule(path=str(tmp_path / "t.csv"), target="price", task="regression", features=["a", "b"]).setup()


def test_a_class_of_a_few_rows_beside_large_ones_is_named_at_setup():
    """A newcomer's two rows labelled "benigm" beside 300 "benign" became a third class without a word; so did an 11
    among 0 and 1. A class of one row among most-single-row classes keeps its own warning (a row id as the target)."""
    frame = table(n=400)
    frame["label"] = np.where(frame["a"] > 0, "benign", "malignant").astype(object)
    frame.loc[[5, 9], "label"] = "benigm"
    with pytest.warns(UserWarning, match=re.escape(
            "TableDataModule: `target` 'label' holds the class(es) 'benigm' (2 rows, like 'benign') beside classes of "
            "up to ")) as record:
        TableDataModule(frame=frame, target="label", features=["a", "b"]).setup()
    assert "each is a class of its own (3 classes)" in str(record[0].message)
    frame.loc[[5, 9], "label"] = "benign"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two large classes: nothing said
        TableDataModule(frame=frame, target="label", features=["a", "b"]).setup()
    frame.loc[:3, "label"] = "rare"  # 4 rows: more than a handful
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TableDataModule(frame=frame, target="label", features=["a", "b"]).setup()
    # a reviewer's three misspellings of a row each were asked "is it a row id?"; a case twin is said once, by its own
    frame.loc[[1, 2, 3], "label"] = ["benigm", "bengin", "malingant"]
    frame.loc[4, "label"] = "Benign"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TableDataModule(frame=frame, target="label", features=["a", "b"]).setup()
    said = [str(w.message) for w in caught]
    assert [m.split(" holds ")[1][:24] for m in said] == ["labels that differ only ", "the class(es) 'bengin' ("], said
    assert "'malingant' (1 row, like 'malignant')" in said[1] and "'Benign'" not in said[1], said


def test_a_constant_regression_target_is_refused(tmp_path):
    """A regression newcomer's export wrote 100.0 in every row of the target: ITLM estimated 0 %, the report called
    every row clean and the test R² was -0.47, without a word. A classifier's one class is refused; so is this."""
    frame = table()
    frame["price"] = 100.0
    with pytest.raises(ValueError, match=re.escape(
            "`target` 'price' holds one value in every training row (100): a regression has nothing to learn from "
            "it. Is it the column to predict?")):
        TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"]).setup()
    frame.loc[0, "price"] = 101.0  # one other value, in the training rows or not, is the user's to judge
    dm = TableDataModule(frame=frame, target="price", task="regression", features=["a", "b"], test_size=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup()
    assert len(dm.train_set) == len(frame)


def test_numbers_written_as_text_are_quoted_by_their_bad_cells_and_an_empty_csv_is_named(tmp_path):
    """A hurried CLI user's column with 'n/a' in row 5 and '12,5' in row 17 was reported by its first cell, a good
    17.99; their 0-byte CSV ended in pandas' EmptyDataError traceback."""
    frame = table()
    frame["a"] = frame["a"].round(2).astype(str)
    frame.loc[5, "a"], frame.loc[17, "a"] = "n/a", "12,5"
    with pytest.raises(ValueError, match=r"column\(s\) \['a'\] do not hold numbers \('a': 'n/a' \(row 5\), '12,5' "
                                         r"\(row 17\)\)\."):
        TableDataModule(frame=frame, target="kind", features=["a", "b"]).setup()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"`path`='.*empty.csv' is empty: a table needs a header row"):
        TableDataModule(path=str(empty), target="kind").setup()
    # a header row alone: an auditor's was told "column(s) ['a', 'b'] do not hold numbers ()"
    header = tmp_path / "header.csv"
    header.write_text("a,b,kind\n")
    with pytest.raises(ValueError, match=r"`path`='.*header.csv' has no rows, only the columns \['a', 'b', 'kind'\]: a "
                                         r"table needs at least one row"):
        TableDataModule(path=str(header), target="kind").setup()
    with pytest.raises(ValueError, match=r"`frame` has no rows, only the columns"):
        TableDataModule(frame=frame.iloc[:0], target="kind").setup()
    # a regression newcomer's header of 9 columns was shown 8, its target left out without a word
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"s{i}" for i in range(24)) + ",kwh\n")
    with pytest.raises(ValueError, match=r"only the columns \['s0', .*'s19'\] and 5 more: a table needs at least one "
                                         r"row"):
        TableDataModule(path=str(wide), target="kwh", task="regression").setup()


def test_a_target_of_one_row_per_class_is_warned_about():
    """A newcomer named an id column as the target: 2,000 classes for 2,000 rows, trained without a word (and "auto"
    read 99.2 %). Most classes a single row is warned about at setup; an ordinary label column is not."""
    frame = table()
    with pytest.warns(UserWarning, match=r"`target` 'id' holds 60 classes for 60 rows, 60 of them a single row: a "
                                         r"classifier cannot learn a class from one row\. Is it a row id"):
        TableDataModule(frame=frame, target="id", features=["a", "b"]).setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TableDataModule(frame=frame, target="kind", features=["a", "b"]).setup()


@pytest.mark.parametrize("flag", ["ints", "bools", "floats"])
def test_a_zero_one_column_among_an_anomaly_tables_inputs_is_warned_about(flag):
    """An anomaly newcomer forgot `target` and their `is_anomaly` column went into the flow as an input: the ground
    truth leaked without a word. A 0/1 (or True/False) input of an anomaly table without `target` is warned about;
    named as `target`, or a column of other numbers, it is not."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"s0": rng.normal(size=80), "s1": rng.normal(size=80), "n": rng.integers(0, 3, 80)})
    bad = rng.random(80) < 0.1
    frame["is_anomaly"] = {"ints": bad.astype(int), "bools": bad, "floats": bad.astype(float)}[flag]
    with pytest.warns(UserWarning, match=r"column\(s\) \['is_anomaly'\] hold only 0 and 1 and are used as inputs of the "
                                         r"anomaly detector\. If one flags the known anomalies, name it `target`"):
        TableDataModule(frame=frame, task="anomaly").setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TableDataModule(frame=frame, task="anomaly", target="is_anomaly").setup()
        TableDataModule(frame=frame.drop(columns="is_anomaly"), task="anomaly").setup()
        # many 0/1 columns are binary inputs (a newcomer's digits pixels were warned about), unless named like a flag
        pixels = frame.drop(columns="is_anomaly").assign(**{f"p{i}": rng.integers(0, 2, 80) for i in range(5)})
        TableDataModule(frame=pixels, task="anomaly").setup()
    with pytest.warns(UserWarning, match=r"column\(s\) \['is_anomaly'\] hold only 0 and 1"):
        TableDataModule(frame=pixels.assign(is_anomaly=frame["is_anomaly"]), task="anomaly").setup()


def _ids_in_report(dm: TableDataModule, column: str) -> list:
    """The `column` id of each training row, as the report gets it, in table order."""
    dm.setup("fit")
    n = len(dm.train_source_index)
    ids = dm.describe_report({"index": list(range(n))})[column]
    return [v for _, v in sorted(zip(dm.train_source_index.tolist(), ids))]


def test_id_columns_of_a_csv_are_read_as_text(tmp_path):
    """Reviewer: ids "000".."029" of a CSV appeared in the report as 0..29 (and the id "NA" as missing): pandas read
    the id column as numbers. An empty cell is still a missing id; the other columns keep pandas' reading."""
    frame = table(8).assign(cust=[f"{i:03d}" for i in range(7)] + ["NA"])
    frame.loc[3, "cust"] = None
    frame.to_csv(tmp_path / "t.csv", index=False)
    dm = TableDataModule(path=str(tmp_path / "t.csv"), target="kind", features=["a", "b"], id_columns="cust",
                         test_size=0)
    assert _ids_in_report(dm, "cust") == ["000", "001", "002", None, "004", "005", "006", "NA"]


def test_a_missing_id_of_a_frame_is_missing_not_text():
    """Reviewer: a missing id became the text "nan" (a float NaN) or "<NA>" (pandas' NA of an Int64 column)."""
    frame = table(6).assign(cust=pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
                            name=["a", np.nan, "c", "d", "e", "f"])
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], id_columns=["cust", "name"], test_size=0)
    assert _ids_in_report(dm, "cust") == [1, None, 3, 4, 5, 6]
    assert _ids_in_report(dm, "name") == ["a", None, "c", "d", "e", "f"]


def test_ids_that_name_two_rows_are_warned_about_with_their_rows():
    """A data-cleaning newcomer's CSV gave one id to two rows: the report named both rows by it, without a word, and
    the row they fixed by the id was not the one the report meant. Rows whose ids are all missing are not repeats;
    two id columns count together; a column that repeats in most rows (a machine's name: context) is no id gone
    wrong; long groups are cut short (a reviewer's warning ran to 894,177 characters)."""
    cust = [f"c{i}" for i in range(20)]
    cust[3] = cust[7] = "c1"
    cust[9] = "c8"
    cust[4] = cust[5] = None
    frame = table(20).assign(cust=cust, shop=["x"] * 4 + ["y", "z"] + ["x"] * 3 + ["y"] + ["x"] * 10)
    with pytest.warns(UserWarning, match=r"`id_columns` \['cust'\] do not tell the rows of the table apart: 5 rows "
                      r"share their id with another row \(rows 1, 3, 7 \('c1'\); rows 8, 9 \('c8'\); rows counted "
                      r"from 0\)") as seen:
        TableDataModule(frame=frame, target="kind", features=["a", "b"], id_columns="cust", test_size=0).setup()
    assert "rows 4, 5" not in str(seen[0].message) and len(seen) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ("c8", "x") and ("c8", "y") are two rows, and so are the missing ids
        TableDataModule(frame=frame.drop(index=[3, 7]), target="kind", features=["a", "b"],
                        id_columns=["cust", "shop"], test_size=0).setup()
        TableDataModule(frame=frame, target="kind", features=["a", "b"], id_columns="shop", test_size=0).setup()
    many = frame.assign(cust=["c0"] * 6 + cust[6:])
    with pytest.warns(UserWarning, match=r"rows 0, 1, 2, 3, \.\.\. \(6 rows\) \('c0'\)"):
        TableDataModule(frame=many, target="kind", features=["a", "b"], id_columns="cust", test_size=0).setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ids pandas cannot compare (a reviewer's lists) set up as before, unwarned
        TableDataModule(frame=frame.assign(cust=[[1, 2]] * 20), target="kind", features=["a", "b"],
                        id_columns="cust", test_size=0).setup()
    new = table(8, seed=4).assign(cust=["n1", "n1", "n2", "n3", "n4", "n5", "n6", "n7"])[["a", "b", "cust"]]
    with pytest.warns(UserWarning, match=r"do not tell the rows of `predict_frame` apart: 2 rows .*rows 0, 1 \('n1'\)"):
        TableDataModule(frame=frame.drop(index=[3, 7, 9]), target="kind", features=["a", "b"], id_columns="cust",
                        test_size=0, predict_frame=new).setup("predict")


def test_numpy_integer_ids_are_numbers_in_the_report():
    """pandas < 2 lists an Int64 id column as numpy integers, which the report wrote as the text "1" (the test above
    failed at the declared pandas minimum 1.5); an object column of numpy integers shows the same on any pandas."""
    frame = table(4).assign(cust=pd.Series([np.int64(1), None, np.int64(3), np.int64(4)], dtype=object))
    dm = TableDataModule(frame=frame, target="kind", features=["a", "b"], id_columns=["cust"], test_size=0)
    ids = _ids_in_report(dm, "cust")
    assert ids == [1, None, 3, 4] and all(type(v) is int for v in ids if v is not None)


@pytest.mark.parametrize("task,column", [("classification", "bad"), ("anomaly", "bad")])
def test_missing_drop_leaves_out_rows_whose_flag_is_empty(task, column):
    """`missing="drop"` with an empty cell in the `corrupted` column (or an anomaly `target` of 0/1 flags) leaves that
    row out, as for any used column; the whole column's flags, NaN included, were refused ("must hold 0/1 flags")."""
    frame = table(20)[["a", "b", "kind", "bad"]].astype({"bad": float})
    frame.loc[3, "bad"] = np.nan
    kw = dict(target="kind", corrupted="bad") if task == "classification" else dict(target="bad", task="anomaly")
    with pytest.warns(UserWarning, match="left out 1 of 20 rows"):
        dm = TableDataModule(frame=frame, features=["a", "b"], missing="drop", test_size=0, **kw)
        dm.setup()
    rows = dm.train_source_index
    assert sorted(rows.tolist()) == [r for r in range(20) if r != 3]
    assert dm.train_set.corrupted.tolist() == frame["bad"].to_numpy()[rows.numpy()].astype(bool).tolist()


def test_a_frame_of_integer_column_names_is_read_by_their_names_as_text():
    """`pandas.DataFrame(array)` names its columns 0 .. d-1; `target="2"` (names are text, as a CSV's header) was
    pandas' bare `KeyError: '0'`."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(12, 2)))
    frame[2] = [0, 1] * 6
    dm = TableDataModule(frame=frame, target="2", test_size=0)
    dm.setup()
    assert dm.feature_names == ["0", "1"] and dm.in_features == 2 and dm.num_classes == 2
    assert list(frame.columns) == [0, 1, 2]  # the caller's frame is left as it is
    assert dm.transform(frame).shape == (12, 2)


@pytest.mark.parametrize("names,twice", [(["a", "a", "kind"], "a"), (["a", "kind", "kind"], "kind")])
def test_duplicated_column_names_are_refused_naming_them(names, twice):
    """Two columns of one name (an input or the target) failed inside numpy or pandas ("The truth value of a Series is
    ambiguous"); the error names the column."""
    frame = table(12)[["a", "b", "kind"]]
    frame.columns = names
    with pytest.raises(ValueError, match=rf"`frame` has several columns named \['{twice}'\]"):
        TableDataModule(frame=frame, target="kind", test_size=0).setup()
    # one not read is no matter
    frame = table(12)[["a", "b", "price", "kind"]]
    frame.columns = ["a", "a", "price", "kind"]
    TableDataModule(frame=frame, target="kind", drop=["a"], test_size=0).setup()


def test_split_sizes_take_numpy_numbers():
    """`test_size=np.int64(3)` (a count computed with numpy) and `val_size=np.float32(0.25)` were refused as "must be
    a fraction in [0, 1) ... or a whole number", though the other arguments' checks take numpy numbers."""
    dm = TableDataModule(frame=table(20), target="kind", features=["a"], test_size=np.int64(3),
                         val_size=np.float32(0.25))
    dm.setup()
    assert (len(dm.test_set), len(dm.val_set), len(dm.train_set)) == (3, 5, 12)
    with pytest.raises(ValueError, match=r"`val_size` must be a fraction in \[0, 1\).*got (np.float64\()?1.5"):
        TableDataModule(frame=table(20), target="kind", val_size=np.float64(1.5))


def test_held_out_counts_given_on_the_command_line_are_counts_not_refused_fractions(tmp_path):
    """`lit-robust fit --data.init_args.val_size 2` was refused ("must be a fraction in [0, 1) of the rows or a whole
    number of rows >= 0, got 2.0"): jsonargparse reads a count given to `val_size: float | int` as a float, so a
    number of validation rows could not be given from the CLI or a config at all."""
    from jsonargparse import ArgumentParser

    path = tmp_path / "t.csv"
    table(30).to_csv(path, index=False)
    parser = ArgumentParser()
    parser.add_class_arguments(TableDataModule, "data")
    cfg = parser.parse_args(["--data.path", str(path), "--data.target", "kind", "--data.features", "[a, b]",
                             "--data.val_size", "2", "--data.test_size", "3"])
    assert cfg.data.val_size == 2.0 and isinstance(cfg.data.val_size, float)  # what the CLI hands the datamodule
    dm = parser.instantiate_classes(cfg).data
    dm.setup("fit")
    assert (len(dm.val_set), len(dm.test_set), len(dm.train_set)) == (2, 3, 25)


def test_complex_columns_are_refused_not_cut_to_their_real_part():
    """A complex feature (or regression target) column was taken as numeric and read as float64, which kept its real
    part and dropped the imaginary one with numpy's ComplexWarning only."""
    df = table(20)
    df["z"] = df["a"] + 1j * df["b"]
    with pytest.raises(ValueError, match=r"^`features`: column\(s\) \['z'\] hold complex numbers, and a model reads "
                                         r"real ones: split each into two columns"):
        TableDataModule(frame=df, target="kind", features=["a", "z"]).setup()
    with pytest.raises(ValueError, match=r"^`target` column\(s\) \['z'\] hold complex numbers"):
        TableDataModule(frame=df, target="z", task="regression", features=["a"]).setup()


def test_labels_that_print_the_same_are_refused():
    """`kind` holding both 1 and "1" (numbers and text in one column) became two classes that every output printed
    as "1"."""
    df = table(20)
    df["kind"] = [1, "1"] * 10
    with pytest.raises(ValueError, match=r"^`target` 'kind' holds labels that read the same but differ in type: 1 "
                                         r"\(int\), '1' \(str\): make them one type"):
        TableDataModule(frame=df, target="kind", features=["a"]).setup()


def test_an_integer_label_column_with_a_gap_keeps_integer_class_names(tmp_path):
    """pandas reads an integer label column with an empty cell as float64: with `missing="drop"` its classes were
    0.0 and 1.0, named "0.0" and "1.0" in the reports and predictions."""
    df = table(20)[["a", "b"]]
    df["label"] = [0, 1] * 10
    path = tmp_path / "gap.csv"
    df.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0] + ","  # row 3's label left empty
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="left out 1 of 20 rows"):
        dm = TableDataModule(path=str(path), target="label", missing="drop", test_size=0)
        dm.setup()
    assert dm.classes == [0, 1] and [type(c) for c in dm.classes] == [int, int]
    assert dm.describe_report({"index": [0, 1], "given_label": [0, 1]})["given_class"] == ["0", "1"]


@pytest.mark.parametrize("written", ["all", "one"])
def test_integer_labels_written_as_floats_keep_integer_class_names(tmp_path, written):
    """A lab export wrote its cultivar codes 1, 2, 5 as "1.0", "2.0", "5.0" (all of them, or one cell among
    integers): the classes were 1.0, 2.0, 5.0, named "5.0" in the report, where the table meant 5."""
    df = table(30)[["a", "b"]]
    df["cultivar"] = [1, 2, 5] * 10
    path = tmp_path / "export.csv"
    df.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    for i in range(1, len(lines)) if written == "all" else [3]:
        lines[i] += ".0"
    path.write_text("\n".join(lines) + "\n")
    dm = TableDataModule(path=str(path), target="cultivar", test_size=0)
    dm.setup()
    assert dm.classes == [1, 2, 5] and [type(c) for c in dm.classes] == [int, int, int]
    assert dm.describe_report({"index": [0, 2], "given_label": [0, 2]})["given_class"] == ["1", "5"]


def test_a_csv_that_is_not_utf8_is_named_with_the_fix_not_a_decode_traceback(tmp_path):
    """A spreadsheet's Latin-1 export (`größe`) ended in pandas' `UnicodeDecodeError: 'utf-8' codec can't decode byte
    0xf6 in position 2`, a traceback under `lit-robust fit` too, naming neither the argument nor the file."""
    frame = pd.DataFrame({"größe": [1.0, 2.0, 3.0, 4.0], "label": ["chat", "chien", "chat", "chien"]})
    frame.to_csv(tmp_path / "latin.csv", index=False, encoding="latin-1")
    for argument, kwargs in (("path", {"path": str(tmp_path / "latin.csv")}),
                             ("test_path", {"frame": frame, "test_path": str(tmp_path / "latin.csv")})):
        with pytest.raises(ValueError, match=rf"^`{argument}`='.*latin\.csv' is not UTF-8 text "
                                             r"\(byte 0xf6 at position 2\): save it as UTF-8 .*encoding='latin-1'"):
            TableDataModule(target="label", test_size=None if argument == "path" else 0, **kwargs).setup()
    frame.to_csv(tmp_path / "utf8.csv", index=False, encoding="utf-8-sig")  # UTF-8 with a BOM reads as it is
    dm = TableDataModule(str(tmp_path / "utf8.csv"), target="label", test_size=0)
    dm.setup()
    assert dm.feature_names == ["größe"] and dm.classes == ["chat", "chien"]


@pytest.mark.parametrize("suffix, sep, other", [(".csv", ";", ";"), (".tsv", ",", ","), (".csv", "|", "|")])
def test_a_table_separated_by_another_character_is_named_not_read_as_one_column(tmp_path, suffix, sep, other):
    """A European spreadsheet's `;`-separated CSV read as the one column 'a;b;label', and the error said `target`
    was not a column, "Did you mean 'a;b;label'?"; now the file's separator is named, with the way to convert it."""
    path = tmp_path / f"t{suffix}"
    pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6], "label": ["x", "y", "x"]}).to_csv(path, index=False, sep=sep)
    reads = "comma" if suffix == ".csv" else "tab"
    with pytest.raises(ValueError, match=re.escape(
            f"`path`={str(path)!r} reads as one column, {f'a{sep}b{sep}label'!r}: its values look separated by "
            f"{other!r}, and a {suffix} file is read as {reads}-separated. Save it {reads}-separated (pandas: "
            f"`pd.read_csv(path, sep={other!r})")):
        TableDataModule(str(path), target="label").setup()
    pd.DataFrame({"a;b": [1.0, 2.0, 3.0], "c": [1.0, 2.0, 3.0], "label": ["x", "y", "x"]}).to_csv(
        tmp_path / "ok.csv", index=False)  # a column name with `;` in a table of several columns is fine
    dm = TableDataModule(str(tmp_path / "ok.csv"), target="label", test_size=0)
    dm.setup()
    assert dm.feature_names == ["a;b", "c"]


@pytest.mark.parametrize("missing", ["error", "drop"])
def test_cells_pandas_reads_as_missing_are_named_with_how_to_keep_them(tmp_path, missing):
    """A target column whose class is "NA" (North America) is read by pandas as missing: the error counted missing
    values and said nothing of why. It names those cells and how to keep them; what is read is unchanged."""
    import warnings

    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{i % 5},{i % 7},{['EU', 'NA', 'ASIA'][i % 3]}\n" for i in range(40)))
    hint = (r"pandas read the cells 'NA' \(13 in 'label'\) as missing \(its default NA words\); to keep them as "
            r"values, read the file with `pandas.read_csv\(path, keep_default_na=False, na_values=\[''\]\)` and pass "
            r"the DataFrame as `frame`, or rename those cells in the file\.")
    dm = TableDataModule(path=str(path), target="label", test_size=10, missing=missing)
    if missing == "error":
        with pytest.raises(ValueError, match=r"13 of 40 rows have a missing .* to leave those rows out\. " + hint):
            dm.setup()
        return
    with pytest.warns(UserWarning, match=r"left out 13 of 40 rows .*`source_index`\)\. " + hint):
        dm.setup()
    assert dm.classes == ["ASIA", "EU"]  # what is read is unchanged
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = TableDataModule(frame=frame, target="label", test_size=10)
        kept.setup()
    assert kept.classes == ["ASIA", "EU", "NA"]  # the way the message gives keeps the class


def test_labels_that_differ_only_in_case_or_spaces_are_warned_about(tmp_path):
    """A lab export's "Benign" and "malignant " beside "benign" and "malignant" became four classes without a word."""
    df = table(20)[["a", "b"]]
    df["diagnosis"] = ["benign", "malignant"] * 10
    df.loc[[3, 8], "diagnosis"] = ["Benign", "malignant "]
    path = tmp_path / "export.csv"
    df.to_csv(path, index=False)
    dm = TableDataModule(str(path), target="diagnosis")
    with pytest.warns(UserWarning, match=r"`target` 'diagnosis' holds labels that differ only in case or surrounding "
                                         r"spaces \('Benign' / 'benign'; 'malignant' / 'malignant '\): each is a class "
                                         r"of its own \(4 classes\)"):
        dm.setup()
    assert dm.classes == ["Benign", "benign", "malignant", "malignant "]  # warned, not changed


def test_distinct_labels_are_not_warned_about(recwarn):
    df = table(20)[["a", "b", "kind"]]
    TableDataModule(frame=df, target="kind").setup()
    assert not [w for w in recwarn if "differ only in case" in str(w.message)]


def test_regression_targets_a_million_times_off_are_warned_about(recwarn):
    """A lab export's sentinel 999999 and a value typed a million times too large went into training without a word:
    squared, their errors outweighed the whole table's, ITLM judged every round collapsed ("check the learning rate")
    and trimmed nothing. A sentinel of -999 among values of about 100 ± 20 is left to ITLM (it ranks such rows first)."""
    df = table(60)
    df.loc[[4, 9], "price"] = [999999.0, 100.0e6]
    df.loc[11, "price"] = -999.0
    with pytest.warns(UserWarning, match=r"^TableDataModule: `target` 'price' holds 2 value\(s\) more than 1000 robust "
                                         r"standard deviations \([0-9.]+\) from its median \([0-9.]+\): 100000000 "
                                         r"\(row 9\), 999999 \(row 4\)\. A sentinel .* Empty those cells and pass "
                                         r"`missing='drop'`"):
        TableDataModule(frame=df, target="price", task="regression", features=["a", "b"]).setup()
    df.loc[[4, 9], "price"] = 100.0
    recwarn.clear()
    TableDataModule(frame=df, target="price", task="regression", features=["a", "b"]).setup()
    assert not [w for w in recwarn if "robust standard deviations" in str(w.message)]


def given_twice(n: int = 40) -> pd.DataFrame:
    """``table(n)`` with rows 3 and 7 given again as they are (rows n, n + 1) and row 5 again with another `kind`
    (row n + 2)."""
    df = table(n)[["a", "b", "kind"]]
    again = df.loc[[3, 7, 5]].copy()
    again.loc[5, "kind"] = {"cat": "dog", "dog": "ant", "ant": "cat"}[df.loc[5, "kind"]]
    return pd.concat([df, again], ignore_index=True)


def test_first_of_equal_rows_matches_a_pairwise_scan():
    """The hashed duplicate finder against the obvious O(n²) scan: the first row equal to each row, -0.0 read as 0."""
    from lit_robust.data.table import _first_of_equal_rows

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(200, 3)).astype(float)  # few distinct rows: many repeats
    x[rng.random(200) < 0.3, 0] *= -1.0  # -0.0 beside 0.0
    expected = [next(j for j in range(200) if np.array_equal(x[j], x[i])) for i in range(200)]
    assert _first_of_equal_rows(x).tolist() == expected


def test_rows_given_twice_are_counted_named_split_across_and_conflicting_labels_named():
    """An export with rows given twice went in without a word: each copy counted twice in training, copies drawn into
    the test split beside their twin raised the test score, and a row given again with another label (one of the two
    wrong) was not named. The warning counts them, names the first, counts the held-out rows that have a training
    row's inputs, and names the groups whose labels differ; the table is used as it is."""
    df = given_twice(40)
    dm = TableDataModule(frame=df, target="kind", features=["a", "b"], test_size=0.3, seed=1)
    with pytest.warns(UserWarning) as seen:
        dm.setup()
    said = [str(w.message) for w in seen if "TableDataModule" in str(w.message)]
    assert len(said) == 2, said
    assert re.search(r"^TableDataModule: 3 of the table's 43 rows repeat the inputs of an earlier row exactly, 2 of "
                     r"them with the same `target` too \(each copy counts again in training\): row 40 = row 3, "
                     r"row 41 = row 7, row 42 = row 5 \(rows as the report's `source_index` counts them\)\.", said[0])
    # the held-out rows whose inputs a training row has, counted the obvious way
    train, test = set(dm.train_source_index.tolist()), dm.test_source_index.tolist()
    twins = {3: 40, 40: 3, 7: 41, 41: 7, 5: 42, 42: 5}
    leaked = sum(1 for r in test if twins.get(r) in train)
    assert 0 < leaked < 3  # the seed draws a pair across the split and keeps another together
    assert f" {leaked} held-out row(s) (test {leaked}) have the inputs of a training row" in said[0]
    assert "pass `duplicates='drop'`" in said[0]
    kinds = (df.loc[5, "kind"], df.loc[42, "kind"])
    assert re.search(rf"^TableDataModule: 1 group\(s\) of rows have the same inputs but different `target` 'kind': "
                     rf"rows 5 / 42 \('{kinds[0]}' / '{kinds[1]}'\)\. Where the inputs fix the target, at most one of "
                     r"each group's is right: the per-sample report marks", said[1])
    assert len(dm.train_set) + len(dm.test_set) == 43  # nothing left out
    # the report's rows: each training row of a group names the group's first row; the conflicting ones say so
    table_ = dm.describe_report({"index": list(range(len(dm.train_set)))})
    rows = dm.train_source_index.tolist()
    group = {3: 3, 40: 3, 7: 7, 41: 7, 5: 5, 42: 5}
    assert table_["duplicate_group"] == [group.get(r) for r in rows]
    assert table_["conflicting_target"] == [r in (5, 42) for r in rows]


def test_the_reports_duplicate_columns_read_back_as_integers_and_flags(tmp_path):
    from lit_robust.report import write_report

    dm = TableDataModule(frame=given_twice(40), target="kind", features=["a", "b"], test_size=0)
    with pytest.warns(UserWarning, match="repeat the inputs"):
        dm.setup()
    rows = dm.train_source_index.tolist()
    index = [rows.index(r) for r in (0, 5, 42, 7)]  # the training samples of table rows 0, 5, 42 and 7
    path = write_report(dm.describe_report({"rank": [1, 2, 3, 4], "index": index}), tmp_path / "r.csv",
                        dm.train_source_index)
    report = load_report(path)
    assert report["source_index"].tolist() == [0, 5, 42, 7]
    assert report["duplicate_group"].dtype == "Int64" and report["conflicting_target"].dtype == "boolean"
    assert report["duplicate_group"].isna().tolist() == [True, False, False, False]
    assert report["duplicate_group"].tolist()[1:] == [5, 5, 7]
    assert report["conflicting_target"].tolist() == [False, True, True, False]


def test_a_table_without_repeated_rows_is_not_warned_about_nor_marked(recwarn):
    dm = TableDataModule(frame=table(40)[["a", "b", "kind"]], target="kind", test_size=0.3)
    dm.setup()
    assert not [w for w in recwarn if "repeat" in str(w.message) or "same inputs" in str(w.message)]
    assert "duplicate_group" not in dm.describe_report({"index": [0, 1]})


def test_duplicates_drop_leaves_out_exact_copies_only_and_keeps_row_numbers():
    dm = TableDataModule(frame=given_twice(40), target="kind", features=["a", "b"], test_size=0.3, seed=1,
                         duplicates="drop")
    with pytest.warns(UserWarning) as seen:
        dm.setup()
    said = [str(w.message) for w in seen if "TableDataModule" in str(w.message)]
    assert said[0].startswith("TableDataModule: left out 2 of 43 rows of the table that repeat an earlier row exactly, "
                              "inputs and `target` alike (row 40 = row 3, row 41 = row 7; `duplicates='drop'`)")
    assert re.search(r"^TableDataModule: 1 of the table's 41 rows repeat the inputs of an earlier row exactly, each "
                     r"with another `target`.*: row 42 = row 5 ", said[1])
    assert "pass `duplicates='drop'`" not in said[1]
    used = sorted([*dm.train_source_index.tolist(), *dm.test_source_index.tolist()])
    assert used == [r for r in range(43) if r not in (40, 41)]  # the copies out, the conflicting row kept


@pytest.mark.parametrize("value", ["remove", True, None])
def test_duplicates_must_be_keep_or_drop(value):
    with pytest.raises(ValueError, match=rf"^`duplicates` must be 'keep' or 'drop', got {re.escape(repr(value))}\.$"):
        TableDataModule(frame=table(20), target="kind", duplicates=value)


def test_a_regressions_conflicting_targets_are_named_in_its_units(recwarn):
    df = table(30)[["a", "b", "price"]]
    df = pd.concat([df, df.loc[[4]].assign(price=df.loc[4, "price"] + 100.0)], ignore_index=True)
    dm = TableDataModule(frame=df, target="price", task="regression", test_size=0)
    with pytest.warns(UserWarning, match=rf"rows 4 / 30 \({df.loc[4, 'price']:.10g} / {df.loc[30, 'price']:.10g}\)"):
        dm.setup()



def test_rows_that_repeat_inputs_with_other_targets_only_are_not_called_copies(recwarn):
    """Every repeated row had another target: the warning said "0 of them with the same `target` too (each copy counts
    again in training)" of rows that are no copies."""
    df = table(30)[["a", "b", "price"]]
    df = pd.concat([df, df.loc[[4]].assign(price=df.loc[4, "price"] + 100.0)], ignore_index=True)
    TableDataModule(frame=df, target="price", task="regression", test_size=0).setup()
    said = [str(w.message) for w in recwarn if "repeat the inputs" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("TableDataModule: 1 of the table's 31 rows repeat the inputs of an "
                                                 "earlier row exactly, each with another `target`: row 30 = row 4 ")


def test_duplicates_drop_of_a_table_without_target_does_not_speak_of_targets(recwarn):
    """An unlabelled table's copies were said to repeat an earlier row "inputs and `target` alike"."""
    df = table(20)[["a", "b"]]
    df = pd.concat([df, df.loc[[1]]], ignore_index=True)
    TableDataModule(frame=df, task="anomaly", test_size=0, duplicates="drop").setup()
    said = [str(w.message) for w in recwarn if "left out" in str(w.message)]
    assert said == ["TableDataModule: left out 1 of 21 rows of the table that repeat an earlier row exactly (row 20 = "
                    "row 1; `duplicates='drop'`); the first of each is kept, and every row keeps its row number "
                    "(`source_index`)."], said

def test_test_table_rows_that_are_training_rows_are_warned_about():
    df = table(40)[["a", "b", "kind"]]
    test = pd.concat([table(10, seed=1)[["a", "b", "kind"]], df.loc[[2, 9]]], ignore_index=True)
    dm = TableDataModule(frame=df, target="kind", test_frame=test)
    with pytest.warns(UserWarning, match=r"^TableDataModule: 2 of the 12 rows of `test_frame` have the inputs of a "
                                         r"training row exactly \(its rows 10, 11\): where the model was fitted on "
                                         r"the training table as it reads now, their scores count rows it trained on"):
        dm.setup()


def test_the_cli_names_a_bad_duplicates_value_in_one_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-robust"])
    monkeypatch.chdir(tmp_path)
    table(40).to_csv("mine.csv", index=False)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--data", "lit_robust.TableDataModule", "--data.path", "mine.csv", "--data.target", "kind",
              "--data.duplicates", "remove", "--model", "lit_robust.MLPClassifier"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert re.search(r"duplicates.*\n.*Literal\['keep', 'drop'\]\. Got value: remove", err), err


def test_the_readmes_rows_given_twice_under_the_table_config_rank_first_and_are_dropped(tmp_path, monkeypatch,
                                                                                        one_torch_thread):
    """README: breast cancer with 3 % of its rows given twice and 1 % again with the other diagnosis, under
    `configs/itlm_table.yaml` with its defaults. Measured (2026-12-07, `reinit: false`): 5 of the 118 held-out rows have
    a training row's inputs; the 6 relabelled copies all land among the 474 training rows, rank 1, 2, 3, 4, 5 and 7
    in the report, and "auto" drops them all (`reinit: true`, the config's setting before: ranks 1-5 and 13, the
    7th kept)."""
    from sklearn.datasets import load_breast_cancer

    from tests.conftest import REPO

    monkeypatch.setattr(sys, "argv", ["lit-robust"])
    monkeypatch.chdir(tmp_path)
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    n = len(frame)
    picked = np.random.default_rng(0).choice(n, size=round(0.03 * n) + round(0.01 * n), replace=False)
    again = frame.iloc[picked[:round(0.03 * n)]]
    relabelled = frame.iloc[picked[round(0.03 * n):]].copy()
    relabelled["diagnosis"] = np.where(relabelled["diagnosis"] == "benign", "malignant", "benign")
    pd.concat([frame, again, relabelled], ignore_index=True).to_csv("twice.csv", index=False)
    copies = list(range(n + len(again), n + len(again) + len(relabelled)))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        main(["fit", "--config", str(REPO / "configs" / "itlm_table.yaml"), "--data.init_args.path", "twice.csv",
              "--data.init_args.corrupted", "null", "--trainer.enable_progress_bar", "false"])
    assert any("5 held-out row(s) (test 5) have the inputs of a training row" in str(w.message) for w in said)
    report = load_report(next(tmp_path.glob("lightning_logs/version_*/itlm_report.csv")))
    assert len(report) == 474
    rows = report.set_index("source_index").loc[copies]
    assert rows["conflicting_target"].all() and not rows["kept"].any()
    assert sorted(rows["rank"]) == [1, 2, 3, 4, 5, 7]


def test_a_checkpoint_keeps_the_training_scaling_when_the_table_has_changed(tmp_path, one_torch_thread):
    """An anomaly newcomer appended rows to their training CSV and predicted new rows from the same checkpoint: the
    datamodule re-fitted its scaling on the rows it read, and the same new rows' scores moved by a median 22 %
    without a word. The checkpoint now holds the scaling (and the columns and classes), and `predict` from it scales
    every row as the model's training rows were, with a warning that the table has changed."""
    from lit_robust import RealNVP

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(260, 3)) * [1.0, 4.0, 0.5] + [0.0, 10.0, -2.0], columns=list("xyz"))
    train, grown, new = frame.iloc[:120], frame.iloc[:200], frame.iloc[200:]
    pl.seed_everything(0, verbose=False)
    dm = TableDataModule(frame=train, task="anomaly", predict_frame=new)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(RealNVP(3, n_couplings=2, hidden=8, drop_ratio=0.05), dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    assert set(torch.load(ckpt, weights_only=False)["TableDataModule"]) == {"features", "feature_centre",
                                                                           "feature_scale", "table_digest"}

    def predicted(table: pd.DataFrame) -> tuple[torch.Tensor, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = quiet_trainer().predict(RealNVP.load_from_checkpoint(ckpt),
                                          TableDataModule(frame=table, task="anomaly", predict_frame=new),
                                          ckpt_path=ckpt)
        return torch.cat(out), [str(w.message) for w in caught if "another scaling" in str(w.message)]

    same, said_same = predicted(train)
    moved, said_moved = predicted(grown)
    assert said_same == [] and len(said_moved) == 1
    assert said_moved[0].startswith("TableDataModule: the training rows read now give another scaling than the "
                                    "checkpoint's model was trained with (3 of 3 columns' median or spread differ")
    torch.testing.assert_close(moved, same, rtol=1e-5, atol=1e-4)
    # another table's columns or classes are refused, not scaled
    other = TableDataModule(frame=grown.rename(columns={"z": "w"}), task="anomaly")
    other.setup("predict")
    with pytest.raises(ValueError, match=r"trained on the input columns \['x', 'y', 'z'\], but the table read now "
                                         r"gives \['x', 'y', 'w'\]"):
        other.load_state_dict(torch.load(ckpt, weights_only=False)["TableDataModule"])


@pytest.mark.parametrize("label_column", ["absent", "empty"])
def test_an_unlabelled_anomaly_table_trains_and_a_labelled_test_table_tests(label_column, one_torch_thread):
    """An anomaly newcomer's unlabelled training CSV and labelled test CSV: `target="is_anomaly"` was refused (the
    training table lacked the column; left empty it counted as missing values, and `missing='drop'` dropped every
    row), and without `target` the test table had nothing to test by."""
    from lit_robust import RealNVP

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc"))
    flags = rng.random(300) < 0.1
    frame.loc[flags, "a"] += 6.0
    train, test = frame.iloc[:200].copy(), frame.iloc[200:].assign(is_anomaly=flags[200:].astype(int))
    if label_column == "empty":
        train["is_anomaly"] = np.nan
    dm = TableDataModule(frame=train, test_frame=test, target="is_anomaly", task="anomaly")
    dm.setup()
    assert dm.feature_names == ["a", "b", "c"] and dm.target_names == ["is_anomaly"]
    assert len(dm.train_set) == 200 and dm.train_set.corrupted is None and len(dm.test_set) == 100
    assert dm.test_set.dataset.tensors[1].tolist() == flags[200:].astype(int).tolist()
    pl.seed_everything(0, verbose=False)
    trainer = quiet_trainer(max_epochs=2)
    model = RealNVP(3, n_couplings=2, hidden=8, drop_ratio=0.1)
    trainer.fit(model, dm)
    assert trainer.test(model, dm, verbose=False)[0]["test_auroc"] > 0.9
    # neither table has the column: the training table's error names it, as before
    with pytest.raises(ValueError, match=r"`target` names column\(s\) \['is_anomaly'\] that the table does not have"):
        TableDataModule(frame=train.drop(columns=["is_anomaly"], errors="ignore"), target="is_anomaly", task="anomaly",
                        test_frame=test.drop(columns=["is_anomaly"])).setup()


def test_a_test_split_drawn_again_from_a_changed_table_is_warned_about(tmp_path, one_torch_thread):
    """A newcomer appended 20 rows to their training CSV and ran `test` from the checkpoint: the `test_size` split was
    drawn again from the rows read, 30 of its 40 rows had been training rows, and test accuracy read 0.725 for 0.667,
    with the scaling warning alone. The checkpoint holds a digest of the table's rows; another table with a split of
    its own is warned about. The same table, or a fixed test table, is not."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(140, 3)), columns=list("xyz")).assign(label=rng.integers(0, 2, 140))
    pl.seed_everything(0, verbose=False)
    dm = TableDataModule(frame=frame.iloc[:120], target="label", test_size=0.2)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(MLPClassifier(), dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)

    def said(table: pd.DataFrame, **kwargs) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_trainer().test(MLPClassifier.load_from_checkpoint(ckpt),
                                 TableDataModule(frame=table, target="label", **kwargs), ckpt_path=ckpt, verbose=False)
        return [str(w.message) for w in caught if "drawn again" in str(w.message)]

    assert said(frame.iloc[:120], test_size=0.2) == []
    grown = said(frame, test_size=0.2)
    assert len(grown) == 1 and grown[0].startswith("TableDataModule: the table differs from the one the checkpoint's "
                                                   "model was fitted on (rows added, removed, changed or reordered)")
    assert len(said(frame.iloc[:120].iloc[::-1], test_size=0.2)) == 1  # the same rows reordered: another split
    assert said(frame, test_size=0, test_frame=frame.iloc[120:]) == []  # a fixed test table


def test_a_regression_checkpoint_keeps_the_target_scaling_of_its_training_rows(tmp_path, one_torch_thread):
    """The target scaling is the checkpoint's too: predictions of the same new rows, in the table's units, do not move
    when training rows are appended (their targets' median and spread move), and the held-out targets are re-scaled
    with the inputs."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(220, 2))
    frame = pd.DataFrame(x, columns=["u", "v"]).assign(y=3 * x[:, 0] - x[:, 1] + 50 + rng.normal(size=220))
    grown = pd.concat([frame.iloc[:150], frame.iloc[150:200].assign(y=frame["y"].iloc[150:200] + 40)])
    new = frame.iloc[200:].drop(columns="y")
    pl.seed_everything(0, verbose=False)
    dm = TableDataModule(frame=frame.iloc[:150], target="y", task="regression", test_size=0)
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(MLPRegressor(), dm)
    ckpt = tmp_path / "r.ckpt"
    trainer.save_checkpoint(ckpt)

    def predicted(table: pd.DataFrame) -> torch.Tensor:
        data = TableDataModule(frame=table, target="y", task="regression", test_size=0, predict_frame=new)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = torch.cat(quiet_trainer().predict(MLPRegressor.load_from_checkpoint(ckpt), data, ckpt_path=ckpt))
        return data.unscale_targets(out)

    torch.testing.assert_close(predicted(grown), predicted(frame.iloc[:150]), rtol=1e-5, atol=1e-4)


def test_a_refusal_through_the_cli_from_a_checkpoint_file_does_not_call_the_read_shape_a_replacement(tmp_path, capsys,
                                                                                                   one_torch_thread):
    """A newcomer's `test --ckpt_path FILE` on a training CSV with a renamed column was refused rightly, but the message
    ended "which replaced the config's in_features=None -> 13, num_classes=None -> 3: is it a checkpoint of another
    fit?". The config leaves those `None` to be read from the table: the checkpoint's values are that reading of the
    same fit, not a replacement. The renamed column is still refused."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=list("xyz")).assign(label=rng.integers(0, 2, 60))
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.rename(columns={"z": "w"}).to_csv(tmp_path / "renamed.csv", index=False)
    config = tmp_path / "table.yaml"
    config.write_text(f"seed_everything: 0\ntrainer:\n  max_epochs: 1\n  accelerator: cpu\n  devices: 1\n"
                      f"  enable_progress_bar: false\n  default_root_dir: {tmp_path}\n"
                      f"model:\n  class_path: lit_robust.MLPClassifier\n  init_args:\n    hidden: 8\n"
                      f"data:\n  class_path: lit_robust.TableDataModule\n  init_args:\n    path: {tmp_path / 'train.csv'}\n"
                      f"    target: label\n    test_size: 0.2\n")
    main(["fit", "--config", str(config)])
    ckpt = sorted(tmp_path.rglob("*.ckpt"))[-1]
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["test", "--config", str(config), "--data.init_args.path", str(tmp_path / "renamed.csv"),
              "--ckpt_path", str(ckpt)])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert "trained on the input columns ['x', 'y', 'z'], but the table read now gives ['x', 'y', 'w']" in err, err
    assert "replaced the config's" not in err and "in_features=None" not in err, err


def test_a_fit_resumed_on_a_table_whose_labels_changed_says_so(tmp_path):
    """A CLI newcomer edited labels in the training CSV and resumed the fit: accepted without a word (a changed row
    count is refused, changed inputs change the scaling, which is warned of). The same table resumes silently."""
    from lit_robust import MLPClassifier

    frame = table(80)

    def fit(labels: pd.Series, ckpt_path=None, epochs: int = 2) -> list[str]:
        pl.seed_everything(0, verbose=False)
        dm = TableDataModule(frame=frame.assign(kind=labels), target="kind", features=["a", "b"], test_size=0)
        trainer = quiet_trainer(max_epochs=epochs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(MLPClassifier(hidden=8), dm, ckpt_path=ckpt_path)
        if ckpt_path is None:
            trainer.save_checkpoint(tmp_path / "m.ckpt")
        return [str(w.message) for w in caught if "differs from the one the checkpoint" in str(w.message)]

    assert fit(frame["kind"]) == []
    assert fit(frame["kind"], tmp_path / "m.ckpt", epochs=3) == []
    edited = frame["kind"].copy()
    edited.iloc[:5] = "ant"
    said = fit(edited, tmp_path / "m.ckpt", epochs=3)
    assert len(said) == 1 and said[0].startswith("TableDataModule: the training table differs from the one the "
                                                 "checkpoint's fit read (rows changed or reordered"), said
