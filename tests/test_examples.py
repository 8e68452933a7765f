import importlib.util

import pytest
import torch

from tests.conftest import REPO


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_itlm_example_runs_and_selects():
    out = load("itlm_noisy_labels").main(fast=True)
    assert 0.0 <= out["test_acc"] <= 1.0
    # per_class: floor(0.55 * n_c) of each class, 711 in all (one trim over all classes: floor(0.55 * 1300) = 715)
    assert [r.kept for r in out["history"]][1:] == [711, 711]


def test_finetune_example_keeps_the_pretraining(one_torch_thread):
    out = load("itlm_finetune_pretrained").main(fast=True)
    assert 0.0 <= out["redrawn"] <= 1.0 and 0.0 <= out["restore"] <= 1.0
    assert out["restore"] > out["redrawn"]  # seed 0, --fast: 0.932 against 0.901


def test_find_bad_samples_example_ranks_mislabelled_samples_first(tmp_path, one_torch_thread):
    out = load("find_bad_samples").main(fast=True, report_dir=str(tmp_path))
    rows = out["rows"]
    assert len(rows) == 1300 and (tmp_path / "itlm_report.csv").is_file()
    assert out["truly_bad"] == sum(r["corrupted"] for r in rows) == 390  # 30% of 1,300
    # the head of the report is far noisier than the data set (30%); measured 100% in the top 20 (seed 0)
    assert out["precision"][20] >= 0.8 and out["precision"][out["truly_bad"]] > 0.6
    assert 0 < out["estimated"] < 1300
    # fixing the data: relabelling the top rows with the final model's prediction (fast mode, seed 0: labels 70.0 ->
    # 80.8 % correct; a retrained model 83.3 % on the test split against ITLM's final model's 73.0 %)
    assert out["label_accuracy"]["given"] == pytest.approx(0.7)
    assert out["label_accuracy"]["relabelled"] > out["label_accuracy"]["given"] + 0.05
    assert set(out["test_accuracy"]) == {"ITLM's final model", "retrained on fixed labels"}
    assert all(0.5 < acc <= 1 for acc in out["test_accuracy"].values())


def test_prl_example_runs_and_filters():
    out = load("prl_noisy_labels").main(fast=True)
    assert 0.0 <= out["test_acc"] <= 1.0
    first, *rest = out["history"]
    assert first.dropped == 0 and all(r.dropped > 0 for r in rest)  # one warm-up epoch, then filtering
    assert rest[-1].dropped_corrupted_frac > rest[-1].corrupted_frac  # the rejects are noisier than the data


def test_coteaching_example_runs_and_exchanges():
    out = load("coteaching_noisy_labels").main(fast=True)
    assert 0.0 <= out["test_acc"] <= 1.0
    first, *rest = out["history"]
    assert first.dropped_1 == first.dropped_2 == 0 and all(r.dropped_1 > 0 and r.dropped_2 > 0 for r in rest)
    assert rest[-1].dropped_corrupted_frac_1 > rest[-1].corrupted_frac


def test_regression_example_runs_and_filters():
    out = load("robust_regression").main(fast=True)
    assert out["test_r2"] <= 1.0
    last = out["history"][-1]
    assert last.dropped > 0 and last.dropped_corrupted_frac > last.corrupted_frac


def test_spectral_norm_example_bounds_the_layers(one_torch_thread):
    out = load("spectral_norm").main(fast=True)
    assert 0.0 <= out["test_acc"] <= 1.0
    assert out["sigmas"]["head"] <= 1.0 + 1e-5  # truncated: exact
    assert set(out["sigmas"]) == {"body.1", "body.3", "head"}
    # normalised: sigma = k * sigma / sigma_hat >= k (power iteration underestimates), converged to within 1%
    assert all(2.0 * (1 - 1e-4) <= out["sigmas"][n] <= 2.0 * 1.01 for n in ("body.1", "body.3"))


def test_anomaly_example_scores_and_trims(one_torch_thread):
    out = load("anomaly_detection").main(fast=True)
    assert set(out["auc"]) == {"RealNVP", "RobustRealNVP", "RCA"}
    assert all(0.0 <= auc <= 1.0 for auc in out["auc"].values())
    trimmed = out["trimmed"]
    assert trimmed.dropped > 0 and trimmed.dropped_corrupted_frac > 3 * trimmed.corrupted_frac
    flagged, truth = out["flagged"], out["is_anomaly"]
    assert flagged.dtype == torch.bool and flagged.shape == truth.shape
    hits = int((flagged & truth).sum())
    share = float(truth.float().mean())  # the test split is half anomalies
    assert hits / int(flagged.sum()) > (1 + share) / 2  # flagged: mostly anomalies (fast mode measured 448 of 457)


def test_gan_example_runs_trims_and_saves_grids(tmp_path, one_torch_thread, monkeypatch):
    import lit_robust.callbacks.itlm as itlm_module
    from tests.conftest import SHARED_DATA

    infos = []
    monkeypatch.setattr(itlm_module, "rank_zero_info", infos.append)
    out = load("gan_mixed_images").main(fast=True, root=str(SHARED_DATA), out_dir=str(tmp_path))
    # a release check: the shipped GAN set off ITLM's "returned no loss" note, which a GAN cannot act on
    assert not [m for m in infos if "returned no loss" in m]
    first, second = out["history"]
    assert first.kept == 600 and abs(first.clean_precision - 0.7) < 1e-6
    assert second.kept == 390  # floor(0.65 * 600)
    assert second.clean_precision > 0.7  # the discriminator's trimmed set is cleaner than the mixture
    assert sorted(out["grids"]) == [0, 1] and all((tmp_path / f"round{r}.png").is_file() for r in (0, 1))


def test_backdoor_example_runs_and_measures():
    out = load("backdoor_defence").main(fast=True)
    res = out["prl_at"]
    assert set(res["test"]) == {"clean_acc", "poison_acc", "asr"}
    assert all(0.0 <= v <= 1.0 for v in res["test"].values())
    # PRL dropped a quarter of each batch; its rejects hold more poisoned samples than the 25% of the data
    assert res["dropped"]["precision"] > 0.25


def test_simclr_backdoor_example_pretrains_and_fits_a_bounded_head(tmp_path, one_torch_thread):
    import torch

    from lit_robust import load_backbone
    from tests.conftest import SHARED_DATA

    out = load("simclr_backdoor_defence").main(fast=True, root=str(SHARED_DATA), out_dir=str(tmp_path))
    for accs in (out["standard"], out["defended"]):
        assert set(accs) == {"clean_acc", "poison_acc"} and all(0.0 <= v <= 1.0 for v in accs.values())
    assert out["sigma_max"] <= 1.0 + 1e-5  # the head was truncated after every step
    first, second = out["history"]
    assert first.dropped == 0 and second.dropped > 0  # one warm-up epoch, then PRL drops 35% of each batch
    assert second.corrupted_frac == 0.35
    assert isinstance(load_backbone(out["checkpoint"]), torch.nn.Module)  # the saved pretraining run is loadable


def test_custom_trigger_example_poisons_with_both_triggers_and_measures(one_torch_thread):
    out = load("custom_trigger").main(fast=True)
    assert set(out) == {"plus patch", "stripe function"}
    for res in out.values():
        assert res["attack"] == "custom"
        assert set(res["test"]) == {"clean_acc", "poison_acc", "asr"}
        assert all(0.0 <= v <= 1.0 for v in res["test"].values())
        assert 0.0 <= res["dropped"]["recall"] <= 1.0
    assert "PatchTrigger" in out["plus patch"]["trigger"] and "position=(2, 2)" in out["plus patch"]["trigger"]
    assert "stripe" in out["stripe function"]["trigger"]


def test_activation_clustering_example_flags_mostly_poisoned_images(one_torch_thread):
    out = load("activation_clustering").main(fast=True)
    res = out["activation clustering"]
    assert set(res["test"]) == {"clean_acc", "poison_acc", "asr"}
    assert all(0.0 <= v <= 1.0 for v in res["test"].values())
    assert res["n"] == 1200 and res["poisoned"] == 300
    # one warm-up epoch: a few classes split apart already, and what they dropped is mostly poison (25 % of the data)
    assert len(res["flagged"]) > 0 and res["flagged_poisoned"] / len(res["flagged"]) > 0.5


def test_find_bad_rows_in_a_csv_example_flags_the_flipped_rows(tmp_path, one_torch_thread):
    # `--folder out` names a folder not made yet (a docs reader's run stopped in pandas' OSError before the fix)
    tmp_path = tmp_path / "out"
    out = load("find_bad_rows_in_a_csv").main(fast=True, folder=str(tmp_path))
    report = out["report"]
    assert len(report) == 455 and (tmp_path / "itlm_report.csv").is_file()  # 569 rows less the 20 % held out
    assert (report["given_class"] == report["diagnosis"]).all()  # joined by row, in the table's words
    assert 0 < out["estimated"] < 0.5
    # the rows ITLM dropped are mostly the flipped ones (20 % of the table); measured 0.96 on the full run (seed 0)
    assert out["precision"] > 0.5 and 0.0 <= out["test_acc"] <= 1.0


def test_find_bad_targets_in_a_csv_example_flags_the_shifted_targets(tmp_path, one_torch_thread):
    import numpy as np
    import pandas as pd

    tmp_path = tmp_path / "out"  # a folder not made yet, as `--folder out` may name
    out = load("find_bad_targets_in_a_csv").main(fast=True, folder=str(tmp_path))
    report = out["report"]
    assert len(report) == 354 and (tmp_path / "itlm_report.csv").is_file()  # 442 rows less the 20 % held out
    table = pd.read_csv(tmp_path / "diabetes_noisy.csv")
    # joined by row, in the table's units (float32 in the report)
    np.testing.assert_allclose(report["given_progression"], table["progression"].iloc[report["source_index"]],
                               rtol=1e-5)
    # measured (seed 0, the full run): 15.4 % at the last round (15.3 % at round 1) for 18.1 %, the 55 dropped rows all
    # shifted, the top 20 all shifted
    assert 0.10 <= out["estimated"] <= 0.25
    assert out["precision"] > 0.9 and out["top20"] >= 0.9


def test_find_misfiled_images_example_names_the_misfiled_files(tmp_path, one_torch_thread):
    out = load("find_misfiled_images").main(fast=True, folder=str(tmp_path))
    report, misfiled = out["report"], out["misfiled"]
    assert len(report) == 600 and (tmp_path / "itlm_report.csv").is_file()
    # each row's file is in its given class's folder, and the truth in its name is what the example wrote
    assert (report["path"].map(lambda p: p.split("/")[-2]) == report["given_class"].astype(str)).all()
    assert misfiled.sum() == 121  # 20 % of 600, drawn with seed 0
    # measured (seed 0): estimate 19.1 % for 20.2 %, top 121 files 97.5 % misfiled, test accuracy 0.894
    assert 0.1 < out["estimated"] < 0.3 and out["precision"] > 0.8 and out["test_acc"] > 0.7


def test_count_wrong_labels_with_cleanlab_example_counts_on_out_of_fold_probabilities(one_torch_thread):
    pytest.importorskip("cleanlab")
    out = load("count_wrong_labels_with_cleanlab").main(fast=True)
    probs = out["probs"]
    assert probs.shape == (1300, 10) and torch.isfinite(probs).all()  # every sample predicted by one held-out model
    assert torch.allclose(probs.sum(1), torch.ones(1300), atol=1e-5)
    from lit_robust import DigitsDataModule

    data = DigitsDataModule(clean_ratio=0.7, noise="random")  # the example's data: its labels read off the batches
    data.setup("fit")
    assert torch.equal(out["labels"], data.train_set.targets)
    assert out["truth"] == pytest.approx(0.3)
    # fast mode, seed 0: 27.0 % counted for 30 %; the default run (5 folds of 10 epochs): 26.3 %
    assert 0.2 < out["counted"] < 0.4
    assert set(out["itlm"]) == {"told the counted rate", '"auto"'}
    assert out["itlm"]["told the counted rate"]["estimate"] is None and 0 < out["itlm"]['"auto"']["estimate"] < 0.5
    assert all(0.5 < r["test_acc"] <= 1 for r in out["itlm"].values())


@pytest.mark.parametrize(("example", "config", "key"), [("find_bad_rows_in_a_csv", "itlm_table", "path"),
                                                        ("find_bad_targets_in_a_csv", "itlm_table_regression", "path"),
                                                        ("find_misfiled_images", "itlm_image_folder", "root")])
def test_an_examples_write_line_writes_what_its_config_reads(example, config, key):
    """The docstring's `--write X` step before `lit-robust fit --config configs/<config>.yaml` writes the file or
    folder that config reads: `find_bad_rows_in_a_csv.py --write noisy.csv` wrote a table `itlm_table.yaml` does not
    read, and the fit then stopped at "`path`='breast_cancer_noisy.csv': no such file"."""
    import ast
    import re

    import yaml

    doc = ast.get_docstring(ast.parse((REPO / "examples" / f"{example}.py").read_text(encoding="utf-8")))
    (written,) = re.findall(rf"python examples/{example}\.py --write (\S+)", doc)
    assert f"configs/{config}.yaml" in doc
    read = yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())["data"]["init_args"][key]
    assert read == written or read.startswith(f"{written}/"), (written, read)
