import importlib
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.utilities.model_helpers import is_overridden

from lit_robust import (
    ITLM,
    RCA,
    ActivationClustering,
    AdversarialTrigger,
    BackdoorMetrics,
    BatchFilter,
    CoTeaching,
    SampleGrid,
    SpectralNorm,
    load_report,
)
from lit_robust.cli import main, model_callbacks, run
from tests import _script_runner
from tests.conftest import REPO, SHARED_DATA

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def shrink(cfg: dict, tmp_path: Path) -> dict:
    """Keep a config's structure and the user's defaults (progress bar, logger, checkpointing) but make it run in
    seconds: 1 epoch per round, small data, every file under ``tmp_path``."""
    trainer = cfg.setdefault("trainer", {})
    rounds = None
    for cb in trainer.get("callbacks") or []:
        args = cb.setdefault("init_args", {}) or {}
        cb["init_args"] = args
        if "round_epochs" in args:
            args["round_epochs"] = [1] * min(3, len(args["round_epochs"]))
            args["verbose"] = False
            rounds = args["round_epochs"]
        if "ActivationClustering" in cb["class_path"]:
            args["warmup_epochs"], args["verbose"] = 1, False  # one epoch on all, one on the unflagged samples
            rounds = [1, 1]
        elif "warmup_epochs" in args:
            args["warmup_epochs"] = 0  # one epoch: filter from the first step
        if "ModelCheckpoint" in cb["class_path"]:
            args["save_last"] = True
            if "dirpath" in args:
                args["dirpath"] = str(tmp_path / "checkpoints")
        if "dirpath" in args and "SampleGrid" in cb["class_path"]:
            args["dirpath"] = str(tmp_path / "grids")
    model_args = cfg.get("model", {}).get("init_args", {})
    if "warmup_epochs" in model_args:  # e.g. CoTeaching
        model_args["warmup_epochs"] = 0
    trainer["max_epochs"] = sum(rounds) if rounds else 1
    if any((cb.get("init_args") or {}).get("drop_ratio") == "auto" for cb in trainer.get("callbacks") or []):
        trainer["max_epochs"] = 2  # drop_ratio: auto estimates in epoch 0 and drops from epoch 1
    trainer.update(default_root_dir=str(tmp_path), accelerator="cpu", limit_val_batches=2)
    data = cfg.get("data", {}).get("init_args", {})
    if cfg.get("data", {}).get("class_path", "").endswith("TableDataModule"):
        # the table the config's comment says to write, made the way it says
        from tests.test_examples import load

        data["path"] = str(tmp_path / Path(data["path"]).name)
        example = "find_bad_targets_in_a_csv" if data.get("task") == "regression" else "find_bad_rows_in_a_csv"
        load(example).write_noisy_table(data["path"])
    if cfg.get("data", {}).get("class_path", "").endswith("ImageFolderDataModule"):
        # the folders the config's comment says to write, made the way it says (fewer images)
        from tests.test_examples import load

        made = tmp_path / Path(data["root"]).parent.name
        load("find_misfiled_images").write_image_folders(str(made), test=100, limit=300)
        data["root"], data["test_root"] = str(made / "train"), str(made / "test")
    elif "root" in data:
        data["root"] = str(SHARED_DATA)
    if "train_size" in data:
        data["train_size"], data["val_size"] = 300, 100
        if rounds and "batch_size" in data:
            # rounds of one epoch still learn (15 steps, not 3): a round whose model stays at chance is judged
            # collapsed, and `lit-robust fit` exits 1 when the last round collapsed
            data["batch_size"] = 20
    if "labeled_fraction" in data:  # SemiSupervisedBackdoorMNISTDataModule
        data.update(labeled_size=200, unlabeled_mnist=200, test_size=200)
        if data.get("unlabeled_fashion"):
            data["unlabeled_fashion"] = 100
    return cfg


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory) -> Path:
    """The checkpoint of a shrunk ``configs/simclr_pretrain.yaml`` run, for the configs that fine-tune on it."""
    tmp = tmp_path_factory.mktemp("simclr_pretrain")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "simclr_pretrain.yaml").read_text()), tmp)
    small = tmp / "simclr_pretrain.yaml"
    small.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(small)])
    last = tmp / "checkpoints" / "last.ckpt"
    assert last.is_file(), sorted(tmp.rglob("*.ckpt"))
    return last


def test_every_config_is_tested():
    assert {p.name for p in CONFIGS} >= {"itlm_mnist.yaml", "itlm_digits.yaml", "prl_mnist.yaml", "spl_mnist.yaml",
                                         "prl_g_mnist.yaml", "coteaching_mnist.yaml", "bootstrap_mnist.yaml",
                                         "prl_regression.yaml", "backdoor_patch_prl_at.yaml", "backdoor_blend_prl_at.yaml",
                                         "itlm_backdoor_watermark.yaml", "backdoor_patch_activation_clustering.yaml",
                                         "simclr_pretrain.yaml", "simclr_finetune_prl.yaml"}


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-robust"])


def _assert_acted(cb: Any, cli: Any) -> None:
    """What each configured callback leaves behind when it ran (not only that it was constructed)."""
    trainer = cli.trainer
    if isinstance(cb, ActivationClustering):
        # it clustered after the warm-up epoch and the second epoch trained on the unflagged samples
        assert len(cb.history) == 2 and cb.clusters is not None and cb.flagged is not None, cb.history
        assert cb.history[1].kept == cb.history[1].n - len(cb.flagged)
        assert sorted(cb.clusters.sizes) == list(range(10))
        rows = _report_rows(cb, trainer)  # `lit-robust fit` writes the clustering's report by default
        assert len(rows) == cb.history[1].n and sum(not r["kept"] for r in rows) == len(cb.flagged)
    elif isinstance(cb, ITLM):
        assert len(cb.history) == cb.num_rounds, cb.history
        assert any(r.kept < r.n for r in cb.history), cb.history  # a trimmed round, not plain training
        # `lit-robust fit` writes the per-sample report by default, into the logger's folder
        rows = _report_rows(cb, trainer)
        assert sorted(r["index"] for r in rows) == list(range(cb.history[-1].n))
        assert sum(r["kept"] for r in rows) == cb.history[-1].kept
    elif isinstance(cb, BatchFilter) and cb.drop_ratio == "auto":
        # it estimated (after epoch 0; in 2 shrunk epochs of 3 batches the estimate may well be 0: nothing dropped)
        assert len(cb.history) == 2 and all(r.estimated_corruption is not None for r in cb.history), cb.history
        assert cb.history[1].drop_ratio == min(cb.history[0].estimated_corruption, 0.49), cb.history
        rows = _report_rows(cb, trainer)
        assert len({r["index"] for r in rows}) == len(rows)
    elif isinstance(cb, BatchFilter):
        assert cb.history and sum(r.dropped for r in cb.history) > 0, cb.history
        rows = _report_rows(cb, trainer)
        assert len({r["index"] for r in rows}) == len(rows)
        assert sum(r["kept"] is False for r in rows) == cb.history[-1].dropped  # each sample once per epoch
    elif isinstance(cb, AdversarialTrigger):
        assert cb.last_perturbation is not None and cb.last_perturbation.abs().max() > 0
    elif isinstance(cb, BackdoorMetrics):
        assert any(k.startswith("backdoor/") for k in trainer.callback_metrics), list(trainer.callback_metrics)
    elif isinstance(cb, SpectralNorm):
        sigmas = cb.sigmas(cli.model)
        assert sigmas and all(s <= cb.k * (1 + 1e-4) for s in sigmas.values()), sigmas
    elif isinstance(cb, SampleGrid):
        assert cb.paths and all(Path(p).is_file() for p in cb.paths.values()), cb.paths
        if cb.dirpath is None:  # the default: beside the run's logs, as the GAN config's comment says
            assert {Path(p).parent for p in cb.paths.values()} == {Path(trainer.log_dir) / "samples"}, cb.paths
    elif isinstance(cb, ModelCheckpoint):
        assert cb.last_model_path and Path(cb.last_model_path).is_file()
    elif type(cb).__name__ == "_UnwrittenReportNote":  # CoTeaching's and RCA's: it speaks only when a fit stops
        assert cb.trained and cb.module is cli.model and cb.module.report_path is not None
    else:  # a new callback in a config needs its own check here
        raise AssertionError(f"no check of what {type(cb).__name__} does")


def _fails(tmp_path: Path, capsys: Any, config: str, argv: list[str]) -> str:
    """``lit-robust <argv[0]> --config <shrunk configs/config> <argv[1:]>``: asserts it ends with exit status 2 and
    no traceback; returns what it wrote on stderr."""
    small = tmp_path / config
    small.write_text(yaml.safe_dump(shrink(yaml.safe_load((REPO / "configs" / config).read_text()), tmp_path)))
    with pytest.raises(SystemExit) as done:
        main([argv[0], "--config", str(small), *argv[1:]])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


def _report_rows(cb: Any, trainer: Any) -> list[dict]:
    assert cb.report is True and cb.report_path is not None, "lit-robust fit turns the report on"
    assert Path(cb.report_path).parent == Path(trainer.log_dir), (cb.report_path, trainer.log_dir)
    return load_report(cb.report_path, as_frame=False)


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_runs_its_callbacks_then_evaluates_the_fitted_weights(config, tmp_path, request, one_torch_thread):
    """Through the CLI as users call it (progress bar, logger and checkpointing at their defaults): every
    callback the config names is on the Trainer and acted; `test --ckpt_path last` loads the fitted weights."""
    cfg = shrink(yaml.safe_load(config.read_text()), tmp_path)
    model_args = cfg.get("model", {}).get("init_args", {})
    if "backbone_checkpoint" in model_args:  # fine-tuning configs read a shrunk pretraining run's checkpoint
        model_args["backbone_checkpoint"] = str(request.getfixturevalue("simclr_checkpoint"))
    small = tmp_path / config.name
    small.write_text(yaml.safe_dump(cfg))
    fit = run(["fit", "--config", str(small)])
    callbacks = fit.trainer.callbacks
    assert any(isinstance(c, RichProgressBar) for c in callbacks)
    for entry in cfg["trainer"].get("callbacks") or []:
        # a short class_path (the configs' `ModelCheckpoint`) is one of Lightning's callbacks, of the package in use
        module, _, name = entry["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module) if module else pl.callbacks, name)
        mine = [c for c in callbacks if type(c) is cls]
        assert mine, f"{entry['class_path']} from the config is not on the Trainer: {callbacks}"
        for cb in mine:
            _assert_acted(cb, fit)
    for cb in model_callbacks(fit.model):  # what the model brings itself (RealNVP's trimming filter) acts too
        assert any(c is cb for c in callbacks), (cb, callbacks)
        _assert_acted(cb, fit)
    if isinstance(fit.model, (RCA, CoTeaching)):  # a module with its own report: on by default too
        rows = _report_rows(fit.model, fit.trainer)
        assert sorted(r["index"] for r in rows) == list(range(len(fit.trainer.train_dataloader.dataset)))
    fitted = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
    assert fitted
    if "backbone_checkpoint" in model_args:
        # the fine-tuning config leaves `freeze_backbone` at its default: the probe's backbone is the pretraining's,
        # weights and BatchNorm statistics alike, after the fit (a probe that trained it, or never loaded it, differs)
        pretrained = torch.load(model_args["backbone_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
        backbone = {k: v for k, v in pretrained.items() if k.startswith("backbone.")}
        assert backbone and all(torch.equal(fitted[k], v) for k, v in backbone.items())
    command = "test" if is_overridden("test_step", fit.model) else "validate"
    evaluated = run([command, "--config", str(small), "--ckpt_path", "last"])
    assert Path(evaluated.trainer.ckpt_path).parent.name == "checkpoints"  # the fit's, not an untrained model
    loaded = evaluated.model.state_dict()
    assert loaded.keys() == fitted.keys()
    for k, v in fitted.items():
        if k.endswith(".sigma") and ".parametrizations." in k:
            continue  # SpectralNorm's report of the last estimate, recomputed by every forward (also in eval)
        assert torch.equal(loaded[k].cpu(), v.cpu()), k


def test_eval_with_ckpt_path_last_and_no_earlier_fit_is_an_error(tmp_path, capsys):
    msg = _fails(tmp_path, capsys, "itlm_digits.yaml", ["test", "--ckpt_path", "last"])
    assert "`--ckpt_path last`: no checkpoint of an earlier fit" in msg and str(tmp_path) in msg


def test_ckpt_path_last_skips_the_checkpoints_of_other_configs_in_the_same_folder(tmp_path, capsys, one_torch_thread):
    """Every config in configs/ logs to ./lightning_logs: `test --config A --ckpt_path last` after fitting A then B
    must load A's weights, not B's newer ones (same model class, so loading them would not even fail)."""
    cfg_a = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg_b = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg_b["trainer"]["callbacks"] = [{"class_path": "lit_robust.BatchFilter", "init_args": {"rule": "prl", "drop_ratio": 0.3}},
                                     # B leaves a last.ckpt, A does not: A's fit was still the closest (a docs auditor)
                                     {"class_path": "ModelCheckpoint", "init_args": {"save_last": True}}]
    cfg_b["trainer"]["max_epochs"] = 1
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(cfg_a))
    b.write_text(yaml.safe_dump(cfg_b))
    fit_a = run(["fit", "--config", str(a)])
    run(["fit", "--config", str(b)])
    cfg_a["data"]["init_args"]["batch_size"] = 17  # how the data are loaded does not make another fit
    cfg_a["data"]["init_args"]["eval_batch_size"] = 500  # (a CLI newcomer's evaluation batch size did)
    a.write_text(yaml.safe_dump(cfg_a))
    evaluated = run(["test", "--config", str(a), "--ckpt_path", "last"])
    assert Path(evaluated.trainer.ckpt_path).parents[1] == Path(fit_a.trainer.log_dir)
    cfg_a["data"]["init_args"]["clean_ratio"] = 0.9  # other data: no fit of this config
    a.write_text(yaml.safe_dump(cfg_a))
    with pytest.raises(SystemExit):
        main(["test", "--config", str(a), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert "come from fits with another model, data, callbacks or seed" in err
    # the closest fit (A's, one key apart; B's differs in its callbacks too) and what differs: before, nothing said
    # which key stopped the match
    last_a = next(Path(fit_a.trainer.log_dir).glob("checkpoints/*.ckpt"))
    assert (f"the closest, {last_a}, differs in data.init_args.clean_ratio: 0.6 in that fit, 0.9 here: repeat that "
            "fit's values, or pass that file as `--ckpt_path`") in err, err


def test_fit_ckpt_path_last_after_a_changed_setting_says_it_starts_from_scratch_and_why(tmp_path, capsys,
                                                                                         one_torch_thread):
    """A regression newcomer changed `auto_margin` and ran `fit --ckpt_path last` to resume: it trained from scratch
    (Lightning's meaning of `last` in fit) and the only message was Lightning's "there is no last checkpoint available
    ... HINT: Set ModelCheckpoint(..., save_last=True)", false twice over. Now the closest fit and what differs."""
    import warnings

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = run(["fit", "--config", str(path)])
    capsys.readouterr()
    cfg["data"]["init_args"]["clean_ratio"] = 0.9
    path.write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run(["fit", "--config", str(path), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    last = next(Path(first.trainer.log_dir).glob("checkpoints/*.ckpt"))
    assert ("lit-robust fit: note: `--ckpt_path last` found no checkpoint of an earlier fit with this config, so this "
            "fit starts from scratch. The checkpoints found come from fits with another config; the closest, "
            f"{last}, differs in data.init_args.clean_ratio: 0.6 in that fit, 0.9 here") in err, err
    assert again.trainer.ckpt_path is None and again.trainer.log_dir != first.trainer.log_dir  # a fresh fit
    assert not [w for w in caught if "no last checkpoint available" in str(w.message)]


def test_the_closest_fit_of_other_callback_arguments_is_not_offered_as_a_file_to_resume(tmp_path, capsys,
                                                                                        one_torch_thread):
    """A resume newcomer's `fit --ckpt_path last` with another `keep_ratio` was told "repeat that fit's values, or pass
    that file as `--ckpt_path`"; the file was then refused (a resume needs the callbacks' arguments it was written
    with), and the refusal advised a Python call."""
    from lit_robust._lightning import RUN_ID_VARIABLE

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = run(["fit", "--config", str(path)])
    capsys.readouterr()
    run(["fit", "--config", str(path), "--ckpt_path", "last", "--trainer.callbacks.init_args.keep_ratio", "0.6"])
    err = capsys.readouterr().err
    last = next(Path(first.trainer.log_dir).glob("checkpoints/*.ckpt"))
    assert (f"the closest, {last}, differs in trainer.callbacks[0].init_args.keep_ratio: 0.55 in that fit, 0.6 here: "
            "repeat that fit's values to resume it (a resume needs the callbacks' arguments it was written with)") in err
    assert "pass that file" not in err, err
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--ckpt_path", str(last), "--trainer.callbacks.init_args.keep_ratio",
              "0.6"])
    err = capsys.readouterr().err
    assert ("Resume with those arguments (the fit's config.yaml beside its checkpoints holds them), or leave out "
            "`--ckpt_path` for a new fit.") in err and "load_from_checkpoint" not in err, err
    assert RUN_ID_VARIABLE not in os.environ  # the command's id goes with the command
    # `test` resumes nothing and takes the file as it is (a CLI newcomer's was told to repeat the values "to resume")
    with pytest.raises(SystemExit):
        main(["test", "--config", str(path), "--ckpt_path", "last", "--trainer.callbacks.init_args.keep_ratio", "0.65"])
    err = capsys.readouterr().err
    assert re.search(r"differs in trainer\.callbacks\[0\]\.init_args\.keep_ratio: 0\.(55|6) in that fit, 0\.65 here: "
                     r"repeat that fit's values, or pass that file as `--ckpt_path`", err) and "to resume it" not in err, err
    # nor under another seed: a resume keeps its fit's seed (a CLI newcomer passed the file and was refused)
    run(["fit", "--config", str(path), "--ckpt_path", "last", "--seed_everything", "3"])
    err = capsys.readouterr().err
    assert re.search(r"differs in seed_everything: \d+ in that fit, 3 here: repeat that fit's values to resume it \(a "
                     r"resume needs the seed it was written with\)", err) and "pass that file" not in err, err


def test_the_test_command_after_a_fit_whose_checkpoint_replaced_values_names_the_fitted_file(tmp_path, capsys,
                                                                                            one_torch_thread):
    """A modules newcomer resumed a file with `--model.drop_ratio 0.1`; the checkpoint's 'auto' replaced it (warned),
    and the printed `test ... --ckpt_path last` then found another fit of the command line's 0.1 and tested it."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"] = []
    cfg["trainer"]["max_epochs"] = 1
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = run(["fit", "--config", str(path)])
    ckpt = str(next(Path(first.trainer.log_dir).glob("checkpoints/*.ckpt")))
    capsys.readouterr()
    lr = cfg["model"]["init_args"]["lr"]
    with pytest.warns(UserWarning, match=rf"which replace the config's / command line's lr=0\.001 -> {lr}"):
        resumed = run(["fit", "--config", str(path), "--trainer.max_epochs", "2", "--model.init_args.lr", "0.001",
                       "--ckpt_path", ckpt])
    err = capsys.readouterr().err
    fitted = str(next(Path(resumed.trainer.log_dir).glob("checkpoints/*.ckpt")))
    assert f"the fitted model is {fitted}; test it on the test split with" in err, err
    assert err.rstrip().endswith(f"--ckpt_path {fitted}"), err


def test_a_blocked_report_in_a_report_dir_is_written_by_the_advised_command(tmp_path, capsys, one_torch_thread):
    """A newcomer's report file in their `report_dir` was blocked (a folder of its name): the warning advised `fit ...
    --ckpt_path last`, which, the fit being complete and the folder the user's own, ran nothing. It now advises the
    fitted checkpoint's file, and that writes the report."""
    import warnings

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"][0]["init_args"]["report_dir"] = str(tmp_path / "reports")
    blocked = tmp_path / "reports" / "itlm_report.csv"
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    blocked.mkdir(parents=True)  # there before the fit: refused at its start, before any training
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(path)])
    assert done.value.code == 2 and "(the report's own file " in capsys.readouterr().err
    blocked.rmdir()
    # made during the fit: the report cannot be written at its end
    cfg["trainer"]["callbacks"].append({"class_path": "tests.test_cli.BlocksTheReport",
                                        "init_args": {"path": str(blocked)}})
    path.write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", "--config", str(path)])
    said = [str(w.message) for w in caught if "could not be written" in str(w.message)]
    assert len(said) == 1 and ("run the same command with `--ckpt_path` set to the fit's checkpoint file (the fitted "
                               "model it names below)") in said[0], said
    fitted = capsys.readouterr().err.split("the fitted model is ", 1)[1].split(";", 1)[0]
    blocked.rmdir()
    main(["fit", "--config", str(path), "--ckpt_path", fitted])
    assert load_report(blocked, as_frame=False)  # written


def test_ckpt_path_last_notes_a_fit_that_trained_for_another_length(tmp_path, capsys, one_torch_thread):
    """A backdoor newcomer's `test --ckpt_path last` loaded a 2-epoch trial fit's weights over the 20-epoch fit its
    command line described (max_epochs is not part of a fit's identity: a resume may extend it) and took the trial's
    attack success for the defence's, without a word. The newest fit is still loaded; the note names the length and
    the newest fit that trained as long."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"] = [{"class_path": "lit_robust.BatchFilter", "init_args": {"rule": "prl", "drop_ratio": 0.3}}]
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    full = run(["fit", "--config", str(path), "--trainer.max_epochs", "2"])
    trial = run(["fit", "--config", str(path), "--trainer.max_epochs", "1"])
    capsys.readouterr()
    evaluated = run(["test", "--config", str(path), "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    err = capsys.readouterr().err
    loaded = evaluated.trainer.ckpt_path
    assert Path(loaded).parents[1] == Path(trial.trainer.log_dir)  # the newest, as before
    full_last = next(Path(full.trainer.log_dir).glob("checkpoints/*.ckpt"))
    assert (f"lit-robust test: note: `--ckpt_path last` loads the newest fit of this config, {loaded}, which trained "
            "for another length (trainer.max_epochs: 1 in that fit, 2 here). The newest that trained as long: "
            f"{full_last} (pass it as `--ckpt_path`).") in err, err
    # which checkpoint `last` is, said on every evaluation (a DDP newcomer's 1-process `test` loaded their 2-process
    # fit, another batch size, and nothing said which of the two fits it was)
    assert (f"lit-robust test: `--ckpt_path last` is {loaded} (the newest fit with this model, data, callbacks and "
            "seed; its batch size, strategy and devices may differ).") in err, err
    run(["test", "--config", str(path), "--trainer.max_epochs", "1", "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert "trained for another length" not in err and f"`--ckpt_path last` is {loaded} (" in err


class SigtermAfterFirstBatch(pl.Callback):
    """What Lightning's SIGTERM handler does (its signal connector's flag), after the first training batch: a real
    signal would kill a test worker where Lightning's handler is not installed."""

    def on_train_batch_end(self, trainer, *args):
        trainer._signal_connector.received_sigterm = True


class CtrlCAfterFirstBatch(pl.Callback):
    """Ctrl-C during training or testing: the KeyboardInterrupt Python raises in the running code."""

    def on_train_batch_end(self, trainer, *args):
        raise KeyboardInterrupt

    def on_test_batch_end(self, trainer, *args):
        raise KeyboardInterrupt


class CtrlCInSecondEpoch(pl.Callback):
    """Ctrl-C at the first batch of epoch 1, after epoch 0's checkpoint was written."""

    def on_train_batch_end(self, trainer, *args):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


class CtrlCAfterTraining(pl.Callback):
    """Ctrl-C after the last epoch, in the end-of-fit work (listed after ITLM: its report is written)."""

    def on_train_end(self, trainer, *args):
        raise KeyboardInterrupt


def test_the_clis_sigterm_handler_runs_no_collective(monkeypatch):
    """A DDP newcomer's `kill -TERM` to a two-process fit's group hung it in 6 of 9 runs: Lightning's handler
    broadcasts inside the signal handler, over whatever collective each process was in."""
    from lit_robust._lightning import sigterm_without_collectives

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    sigterm_without_collectives(trainer)

    def no_collective(*args, **kwargs):
        raise AssertionError("a collective inside the SIGTERM handler")

    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "broadcast", no_collective)
    monkeypatch.setattr(type(trainer), "world_size", property(lambda self: 2))
    forwarded = []
    monkeypatch.setattr(type(trainer.strategy), "launcher", property(lambda self: type("L", (), {
        "kill": staticmethod(forwarded.append)})()))
    trainer._signal_connector._sigterm_notifier_fn(signal.SIGTERM, None)
    trainer._signal_connector._sigterm_notifier_fn(signal.SIGTERM, None)
    assert trainer.received_sigterm and forwarded == [signal.SIGTERM]  # noted, forwarded to the processes once


class SigtermHandlerAfterFirstBatch(pl.Callback):
    """The SIGTERM handler the CLI's Trainer registers, called as a signal would (it must be lit_robust's)."""

    def on_train_batch_end(self, trainer, *args):
        handler = trainer._signal_connector._sigterm_notifier_fn
        # the message is a string: pytest 9.2 shows a bound method given as the message by its bare name
        assert getattr(handler, "__self__", None) is None, f"Lightning's {handler!r}"  # not its bound method
        handler(signal.SIGTERM, None)


class SigtermThenPeerGone(SigtermHandlerAfterFirstBatch):
    """Under DDP a process signalled a moment after the other fails in a collective, "Connection closed by peer"."""

    def on_train_batch_end(self, trainer, *args):
        super().on_train_batch_end(trainer, *args)
        raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:26285.")


class PeerGone(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:26285.")


def test_a_failure_without_a_sigterm_stays_a_failure(tmp_path, capsys, one_torch_thread):
    """After the SIGTERM'd run below in the same process, a failure is not taken for a stop."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    for callback in ("SigtermThenPeerGone", "PeerGone"):
        cfg["trainer"]["callbacks"] = [c for c in cfg["trainer"]["callbacks"] if "tests.test_cli" not in c["class_path"]]
        cfg["trainer"]["callbacks"].append({"class_path": f"tests.test_cli.{callback}"})
        path = tmp_path / f"{callback}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        if callback == "PeerGone":
            with pytest.raises(RuntimeError, match="Connection closed by peer"):
                main(["fit", "--config", str(path)])
        else:
            with pytest.raises(SystemExit) as stopped:
                main(["fit", "--config", str(path)])
            assert stopped.value.code == 143, capsys.readouterr().err


@pytest.mark.parametrize(("command", "callback", "said"), [
    # Lightning ends a fit that received SIGTERM with a SystemExit without a code: `lit-robust fit` exited 0 and said
    # nothing, so a scheduler requeueing failed jobs took a preempted fit for a finished one (a DDP newcomer)
    # (in epoch 0, before its checkpoint: a CLI newcomer's Ctrl-C there was told to resume from checkpoints that
    # did not exist)
    ("fit", "SigtermAfterFirstBatch", "lit-robust fit: stopped by SIGTERM; no checkpoint had been written yet, so "
                                      "there is nothing to resume: run the command again. Exit status 143"),
    ("fit", "SigtermHandlerAfterFirstBatch", "lit-robust fit: stopped by SIGTERM; no checkpoint had been written "
                                             "yet, so there is nothing to resume: run the command again. Exit status "
                                             "143"),
    ("fit", "SigtermThenPeerGone", "lit-robust fit: stopped by SIGTERM; no checkpoint had been written yet, so there "
                                   "is nothing to resume: run the command again. Exit status 143"),
    # Ctrl-C: Lightning's exit status 1, a failure's, and no word on resuming (an MLOps newcomer)
    ("fit", "CtrlCAfterFirstBatch", "lit-robust fit: stopped by Ctrl-C (SIGINT); no checkpoint had been written yet, "
                                    "so there is nothing to resume: run the command again. Exit status 130"),
    ("fit", "CtrlCInSecondEpoch", "lit-robust fit: stopped by Ctrl-C (SIGINT); the checkpoints written so far "
                                  "remain: resume with the same command and `--ckpt_path last`. Exit status 130"),
    # `test` writes no checkpoint: a release checker's Ctrl-C'd `test` was told they remain, and to resume
    ("test", "CtrlCAfterFirstBatch", "lit-robust test: stopped by Ctrl-C (SIGINT). Exit status 130"),
    # after the last epoch: a CLI user was told to resume, and the resume said the fit had run every epoch
    ("fit", "CtrlCAfterTraining", "lit-robust fit: stopped by Ctrl-C (SIGINT) after training: its 3 epochs had run "
                                  "and the checkpoints were written (resuming would train nothing), but the work at "
                                  "the end of a fit was cut short, so a callback's report or plot (ITLM's "
                                  "`itlm_scores.png`) may be missing; a new fit writes them. Exit status 130"),
], ids=["fit-sigterm", "fit-sigterm-handler", "fit-sigterm-then-peer-gone", "fit-ctrl-c", "fit-ctrl-c-epoch-1",
                                  "test-ctrl-c", "fit-ctrl-c-after-training"])
def test_a_stopped_run_exits_with_the_signals_status_and_says_what_remains(tmp_path, capsys, one_torch_thread,
                                                                          command, callback, said):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"].append({"class_path": f"tests.test_cli.{callback}"})
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:
            main([command, "--config", str(path)])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    err = capsys.readouterr().err
    assert stopped.value.code == int(said.rsplit(" ", 1)[-1]) and said in err, err
    assert ("--ckpt_path last" in err) == (callback == "CtrlCInSecondEpoch"), err
    if "nothing to resume" in said:  # and no empty version folder is left behind
        assert not [p for p in tmp_path.glob("**/version_*") if not any(p.iterdir())]


def test_fit_ckpt_path_last_of_a_finished_fit_says_it_trains_nothing_and_runs_nothing(tmp_path, capsys,
                                                                                       one_torch_thread):
    """A DDP newcomer's requeued `fit --ckpt_path last` found an earlier fit that had run all its epochs: it trained
    nothing, printed that fit's round table as if just trained and exited 0, without a word; said since, it still
    opened a new version folder with a config and a plot of the old rounds."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = run(["fit", "--config", str(path)])
    logs = Path(first.trainer.log_dir).parent
    before = sorted(p.name for p in logs.iterdir())
    capsys.readouterr()
    again = run(["fit", "--config", str(path), "--ckpt_path", "last"])
    captured = capsys.readouterr()
    epochs = cfg["trainer"]["max_epochs"]
    found = again.config_init["fit"]["ckpt_path"]
    assert Path(found).parents[1] == Path(first.trainer.log_dir)
    assert (f"lit-robust fit: note: `--ckpt_path last` found {found}, a fit that already ran its {epochs} epochs "
            f"(`max_epochs` {epochs}): nothing to train, so nothing runs and nothing is written.") in captured.err
    # ITLM's rounds add up to max_epochs: "raise `--trainer.max_epochs`" led a docs auditor into that error
    assert ("A fit with rounds (`round_epochs`) cannot be lengthened by a resume: for longer rounds start a new fit, "
            "without `--ckpt_path`.") in captured.err and "raise `--trainer.max_epochs`" not in captured.err
    assert sorted(p.name for p in logs.iterdir()) == before
    assert "round" not in captured.out.lower(), captured.out  # no round table of the old fit
    assert again.trainer.state.status == "initializing"  # trainer.fit never ran

    rounds = cfg["trainer"]["callbacks"][0]["init_args"]["round_epochs"]
    main(["fit", "--config", str(path), "--ckpt_path", "last", "--trainer.max_epochs", str(epochs + 1),
          "--trainer.callbacks.init_args.round_epochs", str([*rounds[:-1], rounds[-1] + 1])])
    assert len(list(logs.iterdir())) == len(before) + 1  # one epoch more: it trains


def test_fit_ckpt_path_last_of_a_fit_killed_inside_its_last_epoch_trains_the_rest_of_it(tmp_path, capsys,
                                                                                           one_torch_thread):
    """A preempted job's `last.ckpt` (`ModelCheckpoint(every_n_train_steps=...)`) written inside the fit's last epoch:
    `fit --ckpt_path last` read the checkpoint's `epoch` as a finished one, said "a fit that already ran its 3
    epochs: nothing to train", trained none of that epoch's remaining steps and exited 0."""
    import shutil

    from lit_robust.callbacks._resume import mid_epoch_checkpoint

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"].append({"class_path": "ModelCheckpoint", "init_args": {
        "every_n_train_steps": 4, "save_top_k": -1, "save_last": True, "filename": "{epoch}-{step}"}})
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = run(["fit", "--config", str(path)])
    folder = Path(first.trainer.log_dir) / "checkpoints"
    last_epoch = cfg["trainer"]["max_epochs"] - 1
    inside = [p for p in sorted(folder.glob(f"epoch={last_epoch}-*.ckpt"))
              if not mid_epoch_checkpoint(torch.load(p, weights_only=True)).last_batch]
    assert inside, sorted(folder.iterdir())
    shutil.copy(inside[0], folder / "last.ckpt")  # the job was killed after writing it
    capsys.readouterr()
    again = run(["fit", "--config", str(path), "--ckpt_path", "last"])
    assert "nothing to train" not in capsys.readouterr().err
    assert again.trainer.state.finished and again.trainer.global_step == first.trainer.global_step


class BlocksTheReport(pl.Callback):
    """Makes a folder at ``path`` after the first training epoch (where the report's file goes)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_end(self, *args):
        os.makedirs(self.path, exist_ok=True)


class StoppedInFinalValidation(pl.Callback):
    """A preemption in the final epoch's validation, after the step checkpoint of that epoch's last batch (armed by
    the test only: the resumed fit has the same callbacks, so the same config)."""

    armed = False

    def on_validation_epoch_end(self, trainer, *args):
        if self.armed and not trainer.sanity_checking and trainer.current_epoch == trainer.max_epochs - 1:
            raise RuntimeError("preempted in the final validation")


def test_fit_ckpt_path_last_of_a_fit_stopped_after_its_last_step_checkpoint_does_the_end_of_fit_work(
        tmp_path, capsys, monkeypatch, one_torch_thread):
    """A preempted job's `last.ckpt` of `every_n_train_steps`, written at the final epoch's last batch, before the
    final validation and the end-of-fit work (report off): `fit --ckpt_path last` said "a fit that already ran its 3
    epochs: nothing to train" and that work never ran. The same file ends a fit that did end: the CLI marks a fit
    that ran to its end in its folder."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"][0]["init_args"]["report"] = False
    cfg["trainer"]["callbacks"] += [
        {"class_path": "ModelCheckpoint", "init_args": {"every_n_train_steps": 1, "save_last": True}},
        {"class_path": "tests.test_cli.StoppedInFinalValidation"}]
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    epochs = cfg["trainer"]["max_epochs"]
    monkeypatch.setattr(StoppedInFinalValidation, "armed", True)
    with pytest.raises(RuntimeError, match="preempted in the final validation"):
        main(["fit", "--config", str(path)])
    stopped = tmp_path / "lightning_logs" / "version_0"
    assert not (stopped / "itlm_scores.png").exists() and not (stopped / "fit_ended.json").exists()
    monkeypatch.setattr(StoppedInFinalValidation, "armed", False)
    capsys.readouterr()

    again = run(["fit", "--config", str(path), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    found = stopped / "checkpoints" / "last.ckpt"
    assert (f"lit-robust fit: note: `--ckpt_path last` found {found}, written at the last batch of the fit's final "
            f"epoch ({epochs} of {epochs}), and its folder has no fit_ended.json, which a fit writes when it runs to "
            "its end (a fit of an earlier lit-robust wrote none): taken for a fit stopped before its end, "
            "this run trains nothing and does the end-of-fit work") in err, err
    assert "nothing to train" not in err, err
    assert again.trainer.state.finished and again.config_init["fit"]["ckpt_path"] == str(found)
    resumed = Path(again.trainer.log_dir)
    assert (resumed / "itlm_scores.png").is_file()  # ITLM's plot, written at the end of a fit
    assert json.loads((resumed / "fit_ended.json").read_text()) == {"global_step": again.trainer.global_step,
                                                                     "collapsed": None}

    capsys.readouterr()
    done = run(["fit", "--config", str(path), "--ckpt_path", "last"])  # that fit ended: nothing more to do
    assert (f"a fit that already ran its {epochs} epochs (`max_epochs` {epochs}): nothing to train"
            in capsys.readouterr().err)
    assert done.trainer.state.status == "initializing"
    from lit_robust.cli import RobustCLI

    # a ModelCheckpoint `dirpath` outside the run folder: whether that fit ended is not known (the note says so)
    elsewhere = tmp_path / "elsewhere.ckpt"
    elsewhere.write_bytes(found.read_bytes())
    assert [RobustCLI._end_of_fit_pending(str(p)) for p in (found, elsewhere)] == [True, None]
    (stopped / "fit_ended.json").write_text(json.dumps({"global_step": again.trainer.global_step}))
    assert RobustCLI._end_of_fit_pending(str(found)) is False


def test_fit_ckpt_path_last_writes_the_report_a_killed_fit_did_not_and_names_a_damaged_checkpoint(
        tmp_path, capsys, one_torch_thread):
    """A preemptible-cluster user's fit was killed after its last checkpoint and before its report: `fit --ckpt_path
    last` said "nothing to train ... nothing is written" and the report was gone for good. A checkpoint cut short by
    a kill ended the resume in "OSError: [Errno 22] Invalid argument" and a traceback."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = run(["fit", "--config", str(path)])
    report = Path(first.trainer.log_dir) / "itlm_report.csv"
    written = report.read_text()
    report.unlink()  # as if killed before the end of the fit
    capsys.readouterr()
    again = run(["fit", "--config", str(path), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    found = again.config_init["fit"]["ckpt_path"]
    assert (f"lit-robust fit: note: `--ckpt_path last` found {found}, a fit that already ran its "
            f"{cfg['trainer']['max_epochs']} epochs but stopped before writing the per-sample report of ITLM: this run "
            f"trains nothing and writes it into {first.trainer.log_dir}.") in err, err
    assert again.trainer.state.finished
    assert report.read_text() == written  # where the killed fit would have written it
    capsys.readouterr()
    run(["fit", "--config", str(path), "--ckpt_path", "last"])  # a reviewer's second resume wrote it once more
    assert "nothing to train, so nothing runs and nothing is written" in capsys.readouterr().err

    Path(found).write_bytes(Path(found).read_bytes()[:4000])  # cut short while written
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(path), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err, err
    assert (f"`--ckpt_path last` found {found}, but torch cannot read it (") in err and (
        "a fit stopped while writing it leaves such a file. Pass an earlier checkpoint of that fit as `--ckpt_path "
        "FILE`, or move the damaged file away and run again.") in err, err


def test_the_missing_report_check_reads_only_a_fits_own_folder_and_a_full_checkpoint_is_not_damaged(tmp_path):
    """A reviewer's findings: with a ModelCheckpoint `dirpath` outside the run folder a finished fit with its report
    was "resumed" again at every `--ckpt_path last`; a checkpoint holding a `Path` (readable, not weights only) was
    refused as damaged."""
    import pathlib
    from types import SimpleNamespace

    from lit_robust import ITLM
    from lit_robust.cli import RobustCLI

    itlm = ITLM(keep_ratio=0.8, round_epochs=[1], report=True)
    cli = SimpleNamespace(trainer=SimpleNamespace(callbacks=[itlm]), model=pl.LightningModule())
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert RobustCLI._missing_reports(cli, str(tmp_path / "ckpts" / "last.ckpt")) == []  # run folder unknown
    assert RobustCLI._missing_reports(cli, str(tmp_path / "run" / "checkpoints" / "last.ckpt")) == [itlm]
    (tmp_path / "run" / "filter_spl_report.csv").write_text("")  # another callback's report does not count
    assert RobustCLI._missing_reports(cli, str(tmp_path / "run" / "checkpoints" / "last.ckpt")) == [itlm]
    (tmp_path / "run" / "itlm_report.csv").write_text("")
    assert RobustCLI._missing_reports(cli, str(tmp_path / "run" / "checkpoints" / "last.ckpt")) == []

    full = tmp_path / "full.ckpt"
    torch.save({"epoch": 3, "state_dict": {}, "where": pathlib.Path("x")}, full)
    assert RobustCLI._epochs_done("last", str(full)) is None  # Lightning loads it (`--weights_only false`)
    torch.save({"epoch": 3, "state_dict": {}}, full)
    assert RobustCLI._epochs_done("last", str(full)) == 4  # no loop state: written at the end of epoch 3


def test_eval_without_ckpt_path_says_below_the_results_which_weights_they_were(tmp_path, capsys, one_torch_thread):
    """`lit-robust test --config X` without `--ckpt_path` evaluates the config's own (untrained) model, as
    LightningCLI does; the metrics are what a user reads, so the note must follow them, and name the last fit."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    main(["test", "--config", str(small)])
    err = capsys.readouterr().err
    assert err.rstrip().endswith("no earlier fit with this config was found: run `lit-robust fit` first, or pass a "
                                 "checkpoint file."), err[-400:]
    fit = run(["fit", "--config", str(small)])
    last = next(Path(fit.trainer.log_dir).rglob("*.ckpt"))
    capsys.readouterr()
    main(["test", "--config", str(small)])
    captured = capsys.readouterr()
    assert "test_acc" in captured.out  # the results, then the note
    note = (f"lit-robust test: note: no `--ckpt_path`: `test` runs on the model as the config builds it "
            f"(untrained unless it loads weights itself), not the last fit with this config ({last}): pass "
            "`--ckpt_path last` for that one.")
    lines = captured.err.rstrip().splitlines()
    assert lines[-1] == note, lines[-1]
    # said before the run in the same form (a newcomer got the first one as a `UserWarning` with a source line)
    assert lines.count(note) == 2 and "UserWarning" not in captured.err, captured.err[-800:]


@pytest.mark.parametrize("command", ["fit", "test"])
def test_ckpt_path_help_describes_what_lit_robust_does_with_last(command, capsys):
    from lit_robust.cli import CKPT_PATH_HELP

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    help_text = text[text.index("--ckpt_path CKPT_PATH", text.index("options:")):]
    assert " ".join(CKPT_PATH_HELP[command].split()) in help_text
    assert "previous ``trainer.fit`` call" not in help_text  # Lightning's wording, not what `last` means here


def test_sub_commands_are_described_in_whole_sentences(capsys):
    """Lightning lists each sub-command with the first docstring paragraph of its Trainer method, which a line
    break cut in `test` and `predict` ("... to make sure you never run on your"), and titles the method's arguments
    with the same text."""
    from lit_robust.cli import SUBCOMMAND_HELP

    with pytest.raises(SystemExit):
        main(["--help"])
    listed = " ".join(capsys.readouterr().out.split())
    for command, text in SUBCOMMAND_HELP.items():
        assert f"{command} {text}" in listed
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        flat = " ".join(out.split())
        assert flat.index(text) < flat.index("options:")  # the description, between the usage and the options
        assert f"Arguments of `{command}`:" in out
        assert "never run on your" not in out


def test_help_lists_demo_and_a_misspelt_command_is_one_line_with_the_closest(capsys):
    """A docs newcomer did not find `demo` in `lit-robust --help`; `lit-robust fitt` printed jsonargparse's usage, tip
    and "invalid choice" lines, without `demo` among the choices and without a suggestion."""
    from lit_robust.cli import DEMO_HELP

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: lit-robust [-h] [-c CONFIG] {demo,fit,validate,test,predict} ...")
    assert f"demo {DEMO_HELP.split(';')[0]}" in " ".join(out.split())  # (argparse may wrap inside `lit-robust`)
    for argv, says in ((["fitt"], "unknown command 'fitt' (did you mean 'fit'?)"),
                       (["demoo"], "unknown command 'demoo' (did you mean 'demo'?)"), (["xyz"], "unknown command 'xyz'"),
                       (["-c", "run.yaml", "fitt"], "unknown command 'fitt' (did you mean 'fit'?)"),  # an auditor's
                       ([], "a command is needed"), (["--config", "run.yaml"], "a command is needed"),
                       # jsonargparse's "expected "subcommand" to be one of {fit,validate,test,predict}": no `demo`
                       (["--print_config"], "a command is needed"),
                       (["--print_config=skip_default"], "a command is needed"),
                       (["--print_config", "skip_default"], "unknown command 'skip_default'")):  # flags take `=`
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        assert capsys.readouterr().err == (f"lit-robust: error: {says}; the commands are demo, fit, validate, test, "
                                           "predict (`lit-robust --help`).\n")
    # before the command, jsonargparse's skip_default dropped it: 'expected "subcommand" ..., but it was not provided'
    with pytest.raises(SystemExit) as done:
        main(["--print_config=skip_default", "test", "--config", "run.yaml"])
    assert done.value.code == 2
    assert capsys.readouterr().err == ("lit-robust: error: `--print_config=skip_default` before the command drops the "
                                       "command from the config it prints; put it after the command: `lit-robust test "
                                       "--config FILE --print_config=skip_default`.\n")


@pytest.mark.parametrize("argv", [["fit", "--trainer.callbacks.help", "lit_robust.ITLM"],
                                  ["fit", "--model.help", "lit_robust.LinearProbe"], ["fit", "--help"]])
def test_help_shows_the_docstrings_without_their_rest_markup(argv, capsys, monkeypatch):
    """`--model.help lit_robust.ITLM` printed ``keep_ratio`` and :class:`~lit_robust.X` as the docstrings spell them."""
    monkeypatch.setattr(sys, "argv", [os.path.join("site-packages", "lit_robust", "__main__.py")])  # python -m
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert len(out) > 500 and "``" not in out and not re.search(r":(class|func|meth|attr|math):`", out), out[:2000]
    # named as the command, not as the script that runs it (`python -m lit_robust`: "usage: __main__.py ...")
    assert out.startswith("usage: lit-robust "), out[:200]


@pytest.mark.parametrize("callback", ["lit_robust.ITLM", "lit_robust.BatchFilter"])
def test_help_shows_the_docstrings_math_in_unicode(callback, capsys):
    """A newcomer read `\\alpha \\in (0, 1]` and `\\hat\\varepsilon` in `--trainer.callbacks.help lit_robust.ITLM`."""
    with pytest.raises(SystemExit):
        main(["fit", "--trainer.callbacks.help", callback])
    out = capsys.readouterr().out
    assert not re.search(r"\\[A-Za-z]", out), re.findall(r".{30}\\[A-Za-z].{30}", out)
    assert ("`α ∈ (0, 1]`" if callback.endswith("ITLM") else "`ε ∈ [0, 0.5)`") in out


@pytest.mark.parametrize("model", ["lit_robust.SimCLR", "lit_robust.LinearProbe"])
def test_a_class_help_lists_a_few_of_the_modules_an_nn_module_argument_takes(model, capsys):
    """`--model.help lit_robust.SimCLR` ran to 728 lines: its `backbone` (a name or your own `nn.Module`) listed every
    torch module jsonargparse knows of."""
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", model])
    out = capsys.readouterr().out
    start = out.index("--model.backbone BACKBONE", out.index("--model.backbone.help"))  # past the usage lines
    backbone = " ".join(out[start:out.index("--model.in_channels", start)].split())
    assert "torch.nn.Module, torch.nn.Identity" in backbone, backbone  # the first few still shown
    assert re.search(r"and \d{3} more; any importable class path\)$", backbone), backbone
    assert len(out.splitlines()) < 100, len(out.splitlines())


def test_fit_help_lists_every_callback_and_datamodule_lit_robust_has(capsys):
    """The cut above is for lists no one reads; `fit --help`'s callbacks and datamodules are where users find ours,
    also in a project with many callbacks of its own (jsonargparse lists every subclass imported: in the full test
    suite, over 60 callbacks)."""
    many = [type(f"ProjectCallback{i}", (pl.Callback,), {}) for i in range(70)]  # noqa: F841 - imported, as a project's
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split()).replace(" ", "")
    for name in ("lit_robust.ITLM", "lit_robust.BatchFilter", "lit_robust.ActivationClustering",
                 "lit_robust.TableDataModule", "lit_robust.SemiSupervisedBackdoorMNISTDataModule"):
        assert name in out, name
    assert "more;anyimportableclasspath" in out  # the callbacks' list was cut, and ours kept


def test_class_path_may_name_a_module_of_the_working_folder(tmp_path, capsys, monkeypatch, one_torch_thread):
    """The user's own LightningModule in ./my_module.py, named as `my_module.Class`: the console script's
    sys.path starts at its own bin folder, so without the CLI's help this was `No module named 'my_module'`."""
    name = "lit_robust_cli_user_module_test"
    (tmp_path / f"{name}.py").write_text(
        "from lit_robust import ImageClassifier\n\n\nclass MyClassifier(ImageClassifier):\n    pass\n")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["model"]["class_path"] = f"{name}.MyClassifier"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        main(["fit", "--config", "mine.yaml"])
        assert type(sys.modules[name].MyClassifier) is type
        assert sys.path[-1] == str(tmp_path)  # appended: a file there never shadows an installed package
    finally:
        sys.modules.pop(name, None)
    assert "error" not in capsys.readouterr().err


def test_class_path_of_the_working_folder_with_the_config_elsewhere_under_python_c(tmp_path, capsys, monkeypatch):
    """`python -c "from lit_robust.cli import main; main()" fit --config ../configs/mine.yaml` (a notebook, the REPL)
    with `mymodel.py` in the current folder: `""` on `sys.path` meant the CLI added nothing, and jsonargparse reads
    a config's `class_path` from the config's folder, where `""` then points: "No module named 'mymodel'"."""
    name = "lit_robust_cli_user_module_python_c"
    (tmp_path / "work").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "work" / f"{name}.py").write_text(
        "from lit_robust import ImageClassifier\n\n\nclass MyClassifier(ImageClassifier):\n    pass\n")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["model"]["class_path"] = f"{name}.MyClassifier"
    (tmp_path / "configs" / "mine.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(sys, "path", ["", *(p for p in sys.path if p not in ("", ".", str(tmp_path / "work")))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", "../configs/mine.yaml", "--print_config"])
        assert done.value.code in (0, None) and f"class_path: {name}.MyClassifier" in capsys.readouterr().out
        assert sys.path[-1] == str(tmp_path / "work")
    finally:
        sys.modules.pop(name, None)


def test_a_users_module_nested_in_coteaching_keeps_its_own_hyperparameters(tmp_path, capsys, monkeypatch,
                                                                           one_torch_thread):
    """A newcomer's own module, wrapped by `CoTeaching` in a config, read `self.hparams.lr` in `configure_optimizers`:
    Lightning's CLI gave every LightningModule the model config builds the *wrapper's* hyper-parameters (AttributeError,
    a traceback). The nested module now gets its own, as in Python; the wrapper still gets the config's."""
    name = "lit_robust_cli_nested_module_test"
    (tmp_path / f"{name}.py").write_text(
        "import torch\nfrom lit_robust import ImageClassifier\n\nSEEN = []\n\n\nclass MyNet(ImageClassifier):\n"
        "    def __init__(self, my_lr: float = 0.01, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.save_hyperparameters()\n\n"
        "    def configure_optimizers(self):\n"
        "        SEEN.append(dict(self.hparams))\n"
        "        return torch.optim.SGD(self.parameters(), lr=self.hparams.my_lr)\n")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "coteaching_mnist.yaml").read_text()), tmp_path)
    cfg["model"]["init_args"]["model"] = {"class_path": f"{name}.MyNet",
                                          "init_args": {"my_lr": 0.02, "backbone": "mlp", "hidden": 16}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored afterwards
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        main(["fit", "--config", "mine.yaml"])
        seen = sys.modules[name].SEEN
    finally:
        sys.modules.pop(name, None)
    assert len(seen) == 2  # CoTeaching builds one optimizer per network from the module's configure_optimizers
    assert all(h["my_lr"] == 0.02 and h["hidden"] == 16 and "drop_ratio" not in h for h in seen)
    saved = yaml.safe_load(next(tmp_path.glob("lightning_logs/version_0/hparams.yaml")).read_text())
    assert saved["drop_ratio"] == 0.45 and saved["_instantiator"].endswith("cli.instantiate_module")  # as before
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("bug", [False, True], ids=["its-own-check", "a-bug-in-it"])
def test_a_users_own_class_rejecting_its_config_value_is_one_line(tmp_path, capsys, monkeypatch, bug):
    """A newcomer's datamodule checked its `dataset` argument with `raise ValueError(...)`: jsonargparse's Union report
    and a 75-line traceback, exit 1. A `raise` in the constructor of a configured module, datamodule or callback is
    the user's check of the config, as lit_robust's are; an error from deeper down (a bug) keeps its traceback."""
    name = f"lit_robust_cli_user_datamodule_test_{int(bug)}"  # one module per case: the CLI appends each folder
    body = ("        sorted(None)  # a bug, not a check\n" if bug else
            "        if dataset != 'digits':\n"
            "            raise ValueError(f\"`dataset` must be 'digits', got {dataset!r}.\")\n")
    (tmp_path / f"{name}.py").write_text(
        "from lit_robust import DigitsDataModule\n\n\nclass MyData(DigitsDataModule):\n"
        "    def __init__(self, dataset: str = 'digits', **kwargs):\n" + body + "        super().__init__(**kwargs)\n")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["data"] = {"class_path": f"{name}.MyData", "init_args": {"dataset": "boston"}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored afterwards
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        if bug:
            # its own traceback, ending at the bug (it ended on jsonargparse's Union report that wraps it)
            with pytest.raises(TypeError, match="'NoneType' object is not iterable") as raised:
                main(["fit", "--config", "mine.yaml"])
            assert raised.traceback[-1].name == "__init__" and raised.traceback[-1].path.name == f"{name}.py"
            return
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", "mine.yaml"])
    finally:
        sys.modules.pop(name, None)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert (f"lit-robust fit: error: data.init_args.dataset ({name}.MyData): `dataset` must be 'digits', got 'boston'.\n"
            in err), err
    assert "Traceback" not in err and "Union" not in err


@pytest.mark.parametrize(("key", "value", "says"), [
    ("--trainer.callbacks.init_args.keep_ratio", "half", "expected a number or 'auto', got 'half'"),
    ("--trainer.callbacks.init_args.keep_ratio", "70%", "expected a number or 'auto', got '70%'"),
    ("--trainer.callbacks.init_args.report", "maybe", "expected true or false or null, got 'maybe'"),
])
def test_a_value_of_no_allowed_type_is_one_line_naming_the_types(tmp_path, capsys, key, value, says):
    """`keep_ratio: half` was jsonargparse's seven lines of Union subtypes, one error per type and the value's
    `<class 'str'>` (a newcomer's run); now the key and one line of what it takes."""
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", key, value])
    name = key.rsplit(".", 1)[1]
    assert f'Parser key "{name}":\n  {says}\n' in err, err
    assert "Subtypes" not in err and "Given value type" not in err


def test_estimator_cleanlab_on_the_command_line_says_how_to_use_confident_learning(tmp_path, capsys):
    """The type hint refuses it before ITLM's own error could give the advice Python users get (a release check)."""
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", "--trainer.callbacks.init_args.keep_ratio", "auto",
                                                       "--trainer.callbacks.init_args.estimator", "cleanlab"])
    assert "Got value: cleanlab. Confident learning (cleanlab) needs out-of-sample probabilities" in err, err
    assert "`lit_robust.estimate_corruption_from_probs(probs, labels).rate`" in err
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", "--trainer.callbacks.init_args.keep_ratio", "auto",
                                                       "--trainer.callbacks.init_args.estimator", "kde"])
    assert "Got value: kde" in err and "Confident learning" not in err, err


def test_a_mistake_caught_at_setup_leaves_no_empty_version_folder(tmp_path, capsys):
    """Two newcomers found a trail of empty lightning_logs/version_N folders, one per failed try: the logger makes its
    folder before the callbacks' setup checks run."""
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", "--trainer.max_epochs", "99"])
    assert "`round_epochs` must add up to the Trainer's `max_epochs`" in err
    # the logger made its folders, and both are gone: the version folder and the `lightning_logs/` it left empty (a
    # release check's refused fit left that)
    assert not (tmp_path / "lightning_logs").exists() and tmp_path.is_dir()
    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)  # an earlier fit's folder stays, and so its parent
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", "--trainer.max_epochs", "99"])
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]


def test_only_rank_zero_removes_the_empty_log_folder_and_without_a_collective(tmp_path, monkeypatch):
    """Under DDP both ranks removed the same empty folder: a DDP newcomer's one-line error ended in rank 1's
    FileNotFoundError traceback; and `trainer.log_dir` is a broadcast, which rank 0 alone would wait in."""
    from types import SimpleNamespace

    from pytorch_lightning.loggers import CSVLogger

    from lit_robust.cli import _remove_empty_log_dir

    logger = CSVLogger(str(tmp_path), name="lightning_logs", version=0)
    folder = tmp_path / "lightning_logs" / "version_0"
    folder.mkdir(parents=True)
    (folder / "hparams.yaml").write_text("{}\n")

    class Trainer(SimpleNamespace):
        @property
        def log_dir(self):
            raise AssertionError("trainer.log_dir is a collective under DDP")

    _remove_empty_log_dir(SimpleNamespace(trainer=Trainer(loggers=[logger], logger=logger, is_global_zero=False,
                                                          default_root_dir=str(tmp_path))))
    assert folder.is_dir()  # rank 1 leaves it
    _remove_empty_log_dir(SimpleNamespace(trainer=Trainer(loggers=[logger], logger=logger, is_global_zero=True,
                                                          default_root_dir=str(tmp_path))))
    assert not folder.exists()


def _fitted_small_digits(tmp_path, capsys, monkeypatch) -> Path:
    """A checkpoint of the shrunk `itlm_digits.yaml` fitted in `tmp_path` (the current folder), its output cleared."""
    monkeypatch.chdir(tmp_path)
    small = tmp_path / "itlm_digits.yaml"
    small.write_text(yaml.safe_dump(shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()),
                                           tmp_path)))
    main(["fit", "--config", str(small)])
    capsys.readouterr()
    return next(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))


def test_a_resume_with_another_callback_seed_is_one_line_and_leaves_no_version_folder(tmp_path, capsys, monkeypatch):
    """A newcomer resumed a CLI fit with another ITLM `seed`: accepted without a word (the run matched neither
    set-up); a refused resume also left a `version_N` folder holding a lone `config.yaml`."""
    ckpt = _fitted_small_digits(tmp_path, capsys, monkeypatch)
    err = _fails(tmp_path, capsys, "itlm_digits.yaml",
                 ["fit", "--trainer.callbacks.init_args.seed", "5", "--ckpt_path", str(ckpt)])
    assert "the checkpoint was written by ITLM with `seed` 0 (this fit: 5)" in err, err
    assert len(err.strip().splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]


def test_a_resume_of_a_file_under_another_seed_everything_is_refused(tmp_path, capsys, monkeypatch):
    """A preemptible-cluster user's `fit --seed_everything 1 --ckpt_path FILE` resumed the seed-0 fit into a folder
    whose config.yaml says 1; `test --seed_everything 1 --ckpt_path last` then tested it as seed 1's."""
    ckpt = _fitted_small_digits(tmp_path, capsys, monkeypatch)
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", "--seed_everything", "1", "--ckpt_path", str(ckpt)])
    assert (f"`--ckpt_path {ckpt}` resumes a fit with `seed_everything` 0, but this run's is 1: the resume continues "
            "that fit (lit_robust's callbacks restore its random state), while this run's folder would record 1. "
            "Pass `--seed_everything 0` to resume that fit, or leave out `--ckpt_path` for a new fit with seed 1.") \
        in " ".join(err.split()), err
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]


@pytest.mark.parametrize("saved, now", [(1, False), (False, 1), (0, False), (0, 0), (None, 1)])
def test_a_seed_of_false_or_none_is_no_seed_to_compare_on_resume(monkeypatch, saved, now):
    """A reviewer's `seed_everything: false` was compared as the integer 0 (`isinstance(False, int)`)."""
    from types import SimpleNamespace

    from lit_robust import cli

    monkeypatch.setattr(cli, "_saved_fit_signature", lambda ckpt: {"seed_everything": saved})
    stand_in = SimpleNamespace(_fit_signature=lambda subcommand: {"seed_everything": now})
    cli.RobustCLI._refuse_another_seed(stand_in, "x.ckpt")  # none of these is refused
    monkeypatch.setattr(cli, "_saved_fit_signature", lambda ckpt: {"seed_everything": 2})
    with pytest.raises(cli.UserInputError, match=r"resumes a fit with `seed_everything` 2, but this run's is 3"):
        cli.RobustCLI._refuse_another_seed(SimpleNamespace(_fit_signature=lambda s: {"seed_everything": 3}), "x")


def test_a_callback_override_that_reaches_a_checkpoint_says_which_callback_it_went_to(tmp_path, capsys):
    """`--trainer.callbacks.init_args.drop_ratio 0.7` on a backdoor config (a ModelCheckpoint last) was jsonargparse's
    Union report of ModelCheckpoint, Callback and None (a newcomer's run); now one line naming where it went."""
    err = _fails(tmp_path, capsys, "backdoor_patch_prl_at.yaml", ["fit", "--trainer.callbacks.init_args.drop_ratio", "0.7"])
    assert ('Parser key "trainer.callbacks":\n  --trainer.callbacks.init_args.drop_ratio 0.7 goes to the last callback '
            "of the list, pytorch_lightning.callbacks.ModelCheckpoint, which takes no `drop_ratio` (jsonargparse's "
            "rule); to set `drop_ratio` of another callback, edit a copy of the config (or list that callback last).\n"
            ) in err, err
    assert "Subtypes" not in err and "NestedArg" not in err


def test_ckpt_path_written_by_another_configured_class_is_one_line(tmp_path, capsys):
    """`lit-robust test --config simclr_finetune_prl.yaml --ckpt_path <the pretraining stage's checkpoint>`: LightningCLI
    quietly built the checkpoint's class (SimCLR) instead of the config's and ended with "No test_step() method
    defined" (a newcomer's run); docs/cli.md promises one line."""
    ckpt = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "lit_robust.SimCLR", "width": 16}}, ckpt)
    err = _fails(tmp_path, capsys, "simclr_finetune_prl.yaml", ["test", "--ckpt_path", str(ckpt)])
    assert (f"`--ckpt_path {ckpt}` was written by a fit of lit_robust.SimCLR, but the config's model is "
            "lit_robust.LinearProbe: is it a checkpoint of another model") in err, err
    assert len(err.strip().splitlines()) == 2


def test_a_probe_checkpoint_of_your_own_encoder_without_the_encoder_is_one_line_saying_how(tmp_path, capsys):
    """A probe fitted on one's own encoder (`--model.backbone mymodule.MyEncoder`) records its feature size but not the
    module; `lit-robust test --ckpt_path` of it without `--model.backbone` ended in torch's missing keys."""
    ckpt = tmp_path / "probe.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"feature_dim": 24, "num_classes": 10}}, ckpt)
    err = _fails(tmp_path, capsys, "simclr_finetune_prl.yaml", ["test", "--ckpt_path", str(ckpt)])
    assert ("`feature_dim` is read only with your own `backbone` (an nn.Module), got feature_dim=24 with "
            "backbone=None.") in err, err
    assert "on the command line, `--model.backbone mymodule.MyEncoder`" in err, err
    assert len(err.strip().splitlines()) == 2


def test_an_error_on_a_model_rebuilt_from_another_fits_checkpoint_names_the_rebuild(tmp_path, capsys):
    """A CLI newcomer's `test --config itlm_digits.yaml --ckpt_path <an MNIST fit's checkpoint>` said "Set
    `model.image_size` to 8" (their config's value): the checkpoint's 28 had replaced it, named only in a warning."""
    ckpt = tmp_path / "mnist.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": "cnn2", "image_size": 28}}, ckpt)
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["test", "--ckpt_path", str(ckpt)])
    assert "Set `model.image_size` to 8" in err, err
    assert ("(the model was rebuilt from the hyper-parameters saved in `--ckpt_path`, which replaced the config's "
            "backbone='mlp' -> 'cnn2', image_size=8 -> 28: is it a checkpoint of another fit?)") in err, err


def test_a_config_file_without_config_is_told_where_it_goes(capsys):
    """`lit-robust fit itlm_digits.yaml` (a CLI newcomer forgot `--config`): "unrecognized arguments" and no hint."""
    with pytest.raises(SystemExit) as done:
        main(["fit", "itlm_digits.yaml"])
    assert done.value.code == 2
    assert ("unrecognized arguments: itlm_digits.yaml (a config file goes after `--config`: --config "
            "itlm_digits.yaml)") in capsys.readouterr().err


def test_ckpt_path_of_another_model_is_one_line(tmp_path, capsys):
    """`--ckpt_path` of a module that saved no hyper-parameters (a user's own) into another model: torch's load
    error was a traceback with exit status 1."""
    import torch.nn as nn

    class Other(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 2)

    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": Other().state_dict(), "pytorch-lightning_version": pl.__version__,
                "epoch": 0, "global_step": 0, "loops": {}, "callbacks": {}, "optimizer_states": [],
                "lr_schedulers": []}, ckpt)
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as err:
        main(["test", "--config", str(small), "--ckpt_path", str(ckpt)])
    assert err.value.code == 2
    msg = capsys.readouterr().err
    assert "`--ckpt_path`: the checkpoint does not fit the config's model: Error(s) in loading state_dict" in msg
    assert "Traceback" not in msg and len(msg.strip().splitlines()) == 2


def test_eval_with_ckpt_path_best_reads_the_fits_record(tmp_path, one_torch_thread):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"].append({"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                        "init_args": {"monitor": "val_acc", "mode": "max", "save_last": True}})
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    fit = run(["fit", "--config", str(small)])
    best = next(c for c in fit.trainer.callbacks if isinstance(c, ModelCheckpoint)).best_model_path
    evaluated = run(["test", "--config", str(small), "--ckpt_path", "best"])
    assert evaluated.trainer.ckpt_path == best and Path(best).name != "last.ckpt"


def test_progress_bar_off_keeps_the_callbacks(tmp_path, one_torch_thread):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["enable_progress_bar"] = False
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    fit = run(["fit", "--config", str(small)])
    assert not any(isinstance(c, RichProgressBar) for c in fit.trainer.callbacks)
    itlm = next(c for c in fit.trainer.callbacks if isinstance(c, ITLM))
    assert len(itlm.history) == itlm.num_rounds


def test_report_false_in_the_config_turns_the_default_report_off(tmp_path, one_torch_thread):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"][0]["init_args"]["report"] = False
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    fit = run(["fit", "--config", str(small)])
    itlm = next(c for c in fit.trainer.callbacks if isinstance(c, ITLM))
    assert itlm.report is False and itlm.report_path is None and not list(tmp_path.rglob("*report*"))


def test_no_args_warning_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"][0]["init_args"]["keep_ratio"] = 1.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(sys, "argv", ["lit-robust", "fit", "--config", str(bad)])
    with pytest.raises(SystemExit):
        main()  # reads sys.argv as the console script does
    err = capsys.readouterr().err
    assert "args parameter is intended" not in err and "trainer.callbacks[0].init_args.keep_ratio" in err
    with pytest.raises(ValueError, match="keep_ratio"):  # --debug: the exception itself, with its traceback
        main(["fit", "--config", str(bad), "--debug"])


def test_demo_prints_table_and_json(capsys):
    main(["demo", "--seeds", "0", "--early-rounds", "1", "--early-epochs", "1", "--final-epochs", "1"])
    out = capsys.readouterr().out
    assert "baseline" in out and "ITLM" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary) >= {"baseline_acc", "itlm_acc", "clean_precision", "wall_s"}
    assert 0.0 <= summary["itlm_acc"] <= 1.0 and 0.5 <= summary["clean_precision"] <= 1.0
    # the third run, ITLM told nothing about the rate (40 % systematic noise by default)
    assert "ITLM auto" in out and "ε̂" in out
    assert 0.0 <= summary["itlm_auto_acc"] <= 1.0 and 0.0 <= summary["estimated_corruption"] < 1.0


def test_demo_at_its_defaults_prints_the_readmes_figures(capsys):
    """`lit-robust demo` as the README's first line runs it, no flag (every other demo test shrinks it): the figures
    the README quotes are the ones it prints. ITLM's figures held on every host measured; the baseline reads
    58.1-58.7 % from one host to another (said beside it). When the demo changes, re-measure the README."""
    main(["demo"])
    out = capsys.readouterr().out
    got = json.loads(out.strip().splitlines()[-1])
    text = (REPO / "README.md").read_text()
    m = re.search(r"Measured [0-9-]+: ([0-9.]+)% \(baseline; ([0-9.]+)–([0-9.]+)% from one host to another\) vs "
                  r"([0-9.]+)% \(ITLM\), ITLM's last\s+selection ([0-9.]+)% clean .*?ITLM auto ([0-9.]+)% with an "
                  r"estimated corruption of ([0-9.]+)% \(true 40%\)", text, re.S)
    assert m, "README's demo paragraph no longer has the sentence this test reads"
    base, low, high, itlm, selection, auto, eps = (float(v) for v in m.groups())
    assert low <= base <= high
    assert low - 0.05 <= 100 * got["baseline_acc"] <= high + 0.05, (got, "re-measure README's demo figures")
    for key, quoted in (("itlm_acc", itlm), ("clean_precision", selection), ("itlm_auto_acc", auto),
                        ("estimated_corruption", eps)):
        assert round(100 * got[key], 1) == quoted, (key, got[key], quoted, "re-measure README's demo figures")
    assert got["seeds"] == [0, 1, 2] and got["per_class"] is False


def test_demo_sums_up_the_starved_class_warnings_in_one_line_and_shows_the_others():
    """16 multi-line warnings above the demo's table read as a failure to a docs newcomer: the ones saying that one
    trim starved a digit become one line under the table; any other warning is shown as usual."""
    import warnings

    from lit_robust.demo import _starved_class_warnings

    starved = ("ITLM round 2: the selection keeps 0 of 133 labelled 2, against 55% overall: one trim can starve ... "
               "`ITLM(per_class=True)` keeps the same share of every class.")
    # and the "auto kept more than are clean" warning of a seed, new this stop, printed raw above the demo's table
    under = ("ITLM round 1: `keep_ratio='auto'` (estimate 35.18 %) keeps 842 of 1300 samples, more than the 780 "
             "(60.0%) the ground truth flags as clean: the selection is at most 92.6% clean. The estimate is low: ...")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(starved, stacklevel=1)
        warnings.warn(under, stacklevel=1)
        warnings.warn("something else entirely", stacklevel=1)
    with pytest.warns(UserWarning) as shown:
        assert _starved_class_warnings(caught) == (
            ["ITLM round 2: the selection keeps 0 of 133 labelled 2"],
            ["ITLM round 1: `keep_ratio='auto'` (estimate 35.18 %) keeps 842 of 1300 samples, more than the 780 "
             "(60.0%) the ground truth flags as clean"])
    assert [str(w.message) for w in shown] == ["something else entirely"]


def test_demo_no_auto_skips_the_auto_run(capsys):
    main(["demo", "--seeds", "0", "--early-rounds", "1", "--early-epochs", "1", "--final-epochs", "1", "--no-auto"])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert "ITLM auto" not in out and "itlm_auto_acc" not in summary and "itlm_acc" in summary
    assert "diverged" not in out  # a sound run's output is as it was


@pytest.mark.parametrize("auto", [False, True])
def test_demo_says_a_diverged_run_and_names_the_lr(capsys, auto):
    """`lit-robust demo --lr 1e30` ended at 9.5 % accuracy with every weight NaN, and the demo said nothing about it.
    With the auto run (the default) the diverged fit made no estimate, and the table's row ended in a TypeError."""
    main(["demo", "--seeds", "0", "--early-rounds", "1", "--early-epochs", "1", "--final-epochs", "1", "--lr", "1e30",
          *([] if auto else ["--no-auto"])])
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # rich wraps the line at the console's width
    runs = 3 if auto else 2
    assert f"{runs} of {runs} runs diverged" in flat and "--lr 1e+30 is too large" in flat and "smaller --lr" in flat
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["diverged_runs"] == runs
    if auto:
        assert summary["estimated_corruption"] is None and "(estimated corruption none, true 40%)" in flat


def test_demo_at_chance_names_the_lr_not_the_class_pair_noise(capsys):
    """`lit-robust demo --lr 100` trained to chance with finite weights: the summary blamed class-pair noise for the
    starved digits and advised `--per-class`, which does not help (a newcomer's first hour)."""
    main(["demo", "--seeds", "0", "--no-auto", "--lr", "100"])
    flat = " ".join(capsys.readouterr().out.split())
    # the figure itself is a diverged run's: 9.7 % on one host, 8.9 % on another
    assert re.search(r"The plain model scored at chance on 1 of 1 seeds \(\d+\.\d%; a guess among 10 digits: 10%\)",
                     flat), flat
    assert "--lr 100 is likely too large for this MLP" in flat
    assert "--per-class" not in flat and "runs diverged" not in flat


def test_demo_per_class_trims_each_class_in_both_itlm_runs(capsys, monkeypatch):
    """``--per-class``: the README's per-class figure for the demo's own runs is one flag away (a reproducer could
    not re-run it)."""
    import lit_robust.demo as demo

    made = []

    class Recording(demo.ITLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(demo, "ITLM", Recording)
    main(["demo", "--seeds", "0", "--early-rounds", "1", "--early-epochs", "1", "--final-epochs", "1", "--per-class"])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["per_class"] is True and "ITLM per class α=0.55" in out and "per_class=True" in out
    assert [(m.keep_ratio, m.per_class) for m in made] == [(0.55, True), ("auto", True)]
    # each class keeps floor(0.55 n_c) of its given labels
    labels = made[0]._train_loader.dataset.targets
    kept = torch.bincount(labels[made[0].selection], minlength=10)
    assert kept.tolist() == [int(0.55 * c) for c in torch.bincount(labels, minlength=10).tolist()]


def test_module_entry_point_help():
    # `python -m lit_robust --help`, forked from a server that has imported torch (tests/_script_runner.py)
    out = _script_runner.run(["-m", "lit_robust", "--help"], cwd=os.getcwd(), env=dict(os.environ), repo=REPO,
                             timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fit" in out.stdout and "test" in out.stdout
    # a project on the unified package finds the switch in --help (a newcomer found it only in an error message)
    assert "LIT_ROBUST_LIGHTNING=lightning" in " ".join(out.stdout.split())


@pytest.mark.parametrize(
    ("config", "arg", "value", "message"),
    [
        ("itlm_digits.yaml", "keep_ratio", 1.5, "`keep_ratio` must be in (0, 1], got 1.5"),
        ("prl_mnist.yaml", "drop_ratio", 0.6, "`drop_ratio` must be in [0, 0.5), got 0.6"),
        ("backdoor_patch_prl_at.yaml", "tau", -0.1, "`tau` (the perturbation limit, ||c||_inf <= tau) must be a finite "
                                                    "number >= 0, got -0.1"),
    ],
)
def test_cli_rejects_bad_callback_argument(tmp_path, capsys, config, arg, value, message):
    cfg = shrink(yaml.safe_load((REPO / "configs" / config).read_text()), tmp_path)
    cb = next(c for c in cfg["trainer"]["callbacks"] if arg in c.get("init_args", {}))
    cb["init_args"][arg] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    # depending on jsonargparse's error handler the constructor's error is raised or printed before exiting
    with pytest.raises((ValueError, SystemExit)) as err:
        main(["fit", "--config", str(bad)])
    assert message in str(err.value) + capsys.readouterr().err


def test_finetune_config_without_backbone_checkpoint_file_says_so(tmp_path, capsys, monkeypatch):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "simclr_finetune_prl.yaml").read_text()), tmp_path)
    cfg["model"]["init_args"]["backbone_checkpoint"] = "checkpoints/simclr_mnist/last.ckpt"  # the config's own
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)  # a fresh folder, the pretraining never run there (a SimCLR newcomer's first try)
    with pytest.raises((FileNotFoundError, ValueError, SystemExit)) as err:
        main(["fit", "--config", str(bad)])
    said = str(err.value) + capsys.readouterr().err
    assert "`backbone_checkpoint` must be an existing checkpoint file" in said
    assert (f"(no such file; a relative path is read from the current folder, {tmp_path}: has the run that writes it, "
            "e.g. the pretraining, finished?)") in said


@pytest.mark.parametrize(("flags", "named"), [
    (["--clean-ratio", "1.5"], "--clean-ratio"),
    (["--keep-ratio", "0"], "--keep-ratio"),
    (["--early-rounds", "0"], "--early-rounds"),  # would make the "ITLM" run plain training
    (["--final-epochs", "0"], "--final-epochs"),
    (["--lr", "-1"], "--lr"),
    (["--seeds", "-1"], "--seeds"),
    (["--seeds", "4294967296"], "--seeds"),  # beyond seed_everything's range: Lightning's traceback after the header
    (["--seeds", "0", "0"], "--seeds"),  # averaged one run twice as if a mean over two seeds
    (["--lr", "inf"], "--lr"),  # refused by the model only, as `lr`, after the header
    (["--lr", "1.7e308"], "--lr"),  # finite, beyond float32: torch's overflow traceback in the first step
    (["--early-rounds", "99999999999999999999"], "--early-rounds"),  # an OverflowError traceback listing the rounds
    (["--noise", "gaussian"], "--noise"),
])
def test_demo_rejects_bad_flags_before_training(capsys, flags, named):
    """Every bad flag is named, in one line, before anything runs (no header, no traceback)."""
    with pytest.raises(SystemExit) as err:
        main(["demo", *flags])
    assert err.value.code == 2
    out = capsys.readouterr()
    msg = out.err
    assert f"argument {named}" in msg and "Traceback" not in msg and "lit-robust demo" not in out.out


@pytest.mark.parametrize(("flags", "said"), [
    # a CLI newcomer's: "invalid float value: 'auto'", no range, and no word that the third run is "auto"
    (["--keep-ratio", "auto"], "argument --keep-ratio: must be a number in (0, 1], got 'auto' (the demo's third run "
                               "is ITLM with keep_ratio='auto' already; --no-auto skips it)"),
    (["--keep-ratio", "half"], "argument --keep-ratio: must be a number in (0, 1], got 'half'\n"),
    (["--per_class"], "unrecognized arguments: --per_class (did you mean --per-class?)"),
])
def test_demo_flag_mistakes_say_what_was_meant(capsys, flags, said):
    with pytest.raises(SystemExit) as err:
        main(["demo", *flags])
    assert err.value.code == 2
    assert said in capsys.readouterr().err


def test_the_error_shown_in_the_cli_page_is_the_one_printed(capsys, monkeypatch):
    """docs/cli.md quotes one command and its error line: run it and compare, so the page cannot drift."""
    block = (REPO / "docs" / "cli.md").read_text().split("```text\n", 1)[1].split("```", 1)[0].strip().splitlines()
    command = block[0]
    # Lightning's "Seed set to 0" goes through its logger, whose stderr handler was bound before capsys
    expected = [line for line in block[1:] if not line.startswith("Seed set to ")]
    assert command.startswith("$ lit-robust ") and len(expected) == 2 and len(block) == 4
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        main(command.split()[2:])
    assert [line for line in capsys.readouterr().err.splitlines() if not line.startswith("Seed set to ")] == expected


def test_ckpt_file_hyperparameters_replacing_the_command_line_are_named(tmp_path, capsys, one_torch_thread):
    """LightningCLI rebuilds the model from a checkpoint file's saved hyper-parameters, over `--model.*`: say so."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    fit = run(["fit", "--config", str(small)])
    ckpt = str(sorted(Path(fit.trainer.log_dir).rglob("*.ckpt"))[-1])
    lr = cfg["model"]["init_args"]["lr"]
    with pytest.warns(UserWarning, match=rf"rebuilt from the hyper-parameters saved in the checkpoint .*lr=0\.001 -> "
                                         rf"{lr}"):
        run(["test", "--config", str(small), "--ckpt_path", ckpt, "--model.init_args.lr", "0.001"])


def test_a_misspelt_key_is_answered_with_the_closest_name(tmp_path, capsys):
    # two newcomers' typos (`drop_rato` in a YAML, `--trainer.max_epoch`) got no hint of the valid names
    cfg = shrink(yaml.safe_load((REPO / "configs" / "prl_mnist.yaml").read_text()), tmp_path)
    filt = cfg["trainer"]["callbacks"][0]["init_args"]
    filt["drop_rato"] = filt.pop("drop_ratio")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(tmp_path / "typo.yaml")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert ("Option 'drop_rato' is not accepted: did you mean 'drop_ratio'? BatchFilter takes allow_large_drop, "
            "auto_margin, check_per_sample, drop_ratio, estimator,") in err, err
    err = _fails(tmp_path, capsys, "robust_realnvp_moons.yaml", ["fit", "--model.init_args.drop_ration", "0.1"])
    assert "Option 'drop_ration' is not accepted: did you mean 'drop_ratio'? RobustRealNVP takes " in err, err
    err = _fails(tmp_path, capsys, "prl_mnist.yaml", ["fit", "--trainer.max_epoch", "3"])
    assert err.rstrip().endswith("unrecognized arguments: --trainer.max_epoch 3 (did you mean --trainer.max_epochs?)")
    # one misspelt part of a longer key: the rest kept as written (it read "did you mean --trainer.callbacks.help?")
    err = _fails(tmp_path, capsys, "prl_mnist.yaml", ["fit", "--trainer.callback.init_args.drop_ratio", "0.2"])
    assert err.rstrip().endswith("unrecognized arguments: --trainer.callback.init_args.drop_ratio 0.2 (did you mean "
                                 "--trainer.callbacks.init_args.drop_ratio?)"), err
    # `init_arg` for `init_args`: said once, with the key meant (it read "(did you mean --keep_ratio?)" twice)
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", "--trainer.callbacks.init_arg.keep_ratio", "0.5"])
    assert err.rstrip().endswith("unrecognized arguments: --init_arg.keep_ratio=0.5 (did you mean init_args.keep_ratio? "
                                 "A class's arguments go under `init_args`)"), err
    assert err.count("did you mean") == 1, err
    err = _fails(tmp_path, capsys, "prl_mnist.yaml", ["fit", "--no_such_thing", "3"])
    assert err.rstrip().endswith("unrecognized arguments: --no_such_thing 3"), err  # nothing close: no guess


def test_suggest_option_leaves_a_class_it_cannot_import_alone():
    from lit_robust.cli import suggest_option

    msg = "Problem with given class_path 'nowhere.Thing':\n  Option 'x' is not accepted"
    assert suggest_option(msg) == msg


def test_a_checkpoint_saved_from_python_loads_into_the_cli_and_another_models_is_one_line(tmp_path, capsys,
                                                                                          one_torch_thread):
    # a newcomer could not continue an API fit with the CLI ("Option 'latent_dim' is not accepted" against
    # LightningModule: the checkpoint's hyper-parameters name no class), and another model's checkpoint got
    # jsonargparse's Union report instead of what was wrong
    import pytorch_lightning as pl

    from lit_robust import DCGAN, DigitsDataModule, ImageClassifier

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    small = tmp_path / "digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    pl.seed_everything(0, verbose=False)
    model, data = ImageClassifier(**cfg["model"]["init_args"]), DigitsDataModule(**cfg["data"]["init_args"])
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "api.ckpt")
    expected = trainer.test(model, data, verbose=False)[0]["test_acc"]
    cli = run(["test", "--config", str(small), "--ckpt_path", str(tmp_path / "api.ckpt")])
    assert cli.trainer.callback_metrics["test_acc"].item() == pytest.approx(expected, abs=1e-6)

    gan = pl.Trainer(logger=False, enable_checkpointing=False, max_epochs=0, accelerator="cpu",
                     default_root_dir=tmp_path)
    gan.strategy.connect(DCGAN(latent_dim=8))
    gan.save_checkpoint(tmp_path / "gan.ckpt")
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["test", "--ckpt_path", str(tmp_path / "gan.ckpt")])
    assert (f"`--ckpt_path {tmp_path / 'gan.ckpt'}`: the hyper-parameters saved in it (beta1, beta2, channels, "
            "d_width, g_width, image_size, latent_dim, lr, num_fixed, seed) do not fit the config's model "
            "lit_robust.ImageClassifier (Option ") in err, err
    assert err.rstrip().splitlines()[-2].endswith("is it a checkpoint of another model?"), err


def test_overrides_written_before_config_apply_after_it(tmp_path, one_torch_thread):
    """A regression user wrote `--trainer.callbacks.init_args.warmup_epochs 1 --config my.yaml`: jsonargparse applied
    it before the config existed (a 13-line NestedArg report). Every `--config` is now read first, so the overrides
    win wherever they stand."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "prl_regression.yaml").read_text()), tmp_path)
    cfg["trainer"]["max_epochs"] = 2
    small = tmp_path / "reg.yaml"
    small.write_text(yaml.safe_dump(cfg))
    cli = run(["fit", "--trainer.callbacks.init_args.warmup_epochs", "1", "--trainer.max_epochs", "1",
               "--config", str(small), "--trainer.enable_progress_bar", "false"])
    f = next(c for c in cli.trainer.callbacks if type(c).__name__ == "BatchFilter")
    assert f.warmup_epochs == 1 and cli.trainer.max_epochs == 1


def test_warmup_epochs_null_is_accepted_and_dumped_as_given(tmp_path, one_torch_thread):
    """`warmup_epochs: null` (the default since "auto" warms up 3 epochs by default) is accepted from a config; the
    config the fit saves keeps `null`, and the filter runs the "auto" warm-up of 3 epochs."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "prl_regression.yaml").read_text()), tmp_path)
    cb = cfg["trainer"]["callbacks"][0]["init_args"]
    cb.update(drop_ratio="auto", warmup_epochs=None)
    cfg["trainer"]["max_epochs"] = 1
    small = tmp_path / "reg.yaml"
    small.write_text(yaml.safe_dump(cfg))
    cli = run(["fit", "--config", str(small), "--trainer.enable_progress_bar", "false"])
    f = next(c for c in cli.trainer.callbacks if type(c).__name__ == "BatchFilter")
    assert f.warmup_epochs is None and f._auto.warmup_epochs == 3
    saved = yaml.safe_load(Path(cli.trainer.log_dir, "config.yaml").read_text())
    assert next(c for c in saved["trainer"]["callbacks"] if c["class_path"].endswith("BatchFilter")
                )["init_args"]["warmup_epochs"] is None


def test_the_fit_signature_holds_the_seed_and_counts_none_as_unset():
    """An anomaly newcomer's `test --seed_everything 0 --ckpt_path last` after fits with seeds 0, 1, 2 loaded the
    seed-2 fit, silently; adding an optional argument (default None) to their datamodule made every earlier fit
    "differ in data.init_args.predict_csv: '(unset)' in that fit, None here", which no override could repeat."""
    from lit_robust.cli import fit_signature, signature_differences

    base = {"seed_everything": 0, "model": {"class_path": "M", "init_args": {"lr": 0.1}},
            "data": {"class_path": "D", "init_args": {"csv": "a.csv"}}, "trainer": {"callbacks": None}}
    other_seed = {**base, "seed_everything": 2}
    assert fit_signature(base) != fit_signature(other_seed)
    assert signature_differences(fit_signature(base), fit_signature(other_seed)) == [
        "seed_everything: 2 in that fit, 0 here"]
    # an argument one fit leaves out: its default, not the string '(unset)' (a newcomer's `reestimate: null`)
    assert signature_differences({"model": {"init_args": {"lr": 0.1}}}, {"model": {"init_args": {}}}) == [
        "model.init_args.lr: unset (the default) in that fit, 0.1 here"]
    newer = {**base, "data": {"class_path": "D", "init_args": {"csv": "a.csv", "predict_csv": None}}}
    assert fit_signature(newer) == fit_signature(base)
    # the file a `predict` scores is not part of the fit (an anomaly newcomer's "score tomorrow's file")
    tomorrow = {**base, "data": {"class_path": "D", "init_args": {"csv": "a.csv", "predict_csv": "new.csv",
                                                                  "num_workers": 2}}}
    assert fit_signature(tomorrow) == fit_signature(base)
    other_data = {**base, "data": {"class_path": "D", "init_args": {"csv": "b.csv"}}}
    assert signature_differences(fit_signature(base), fit_signature(other_data)) == [
        "data.init_args.csv: 'b.csv' in that fit, 'a.csv' here"]
    # `root` says where a fixed data set's files lie (MNIST's), but an image folder's `root` is its data: a folder
    # newcomer's relabelled copy, `fit --data.init_args.root fixed --ckpt_path last`, "found" the first folder's
    # finished fit and trained nothing
    mnist = [{**base, "data": {"class_path": "lit_robust.MNISTDataModule", "init_args": {"root": r}}} for r in "ab"]
    assert fit_signature(mnist[0]) == fit_signature(mnist[1])
    folders = [{**base, "data": {"class_path": "lit_robust.ImageFolderDataModule",
                                 "init_args": {"root": r, "batch_size": b}}} for r, b in (("mine", 32), ("fixed", 64))]
    assert signature_differences(fit_signature(folders[0]), fit_signature(folders[1])) == [
        "data.init_args.root: 'fixed' in that fit, 'mine' here"]
    # only a datamodule that declares its `root` a download cache leaves it out: a user's own datamodule (or one that
    # cannot be imported) whose `root` is their data counts it, as the image folder does
    for class_path in ("tests.test_cli._OwnFolderData", "no_such_module.Data", "D"):
        own = [{**base, "data": {"class_path": class_path, "init_args": {"root": r}}} for r in ("mine", "fixed")]
        assert signature_differences(fit_signature(own[0]), fit_signature(own[1])) == [
            "data.init_args.root: 'fixed' in that fit, 'mine' here"], class_path
    for name in ("FashionMNISTDataModule", "BackdoorMNISTDataModule", "MNISTLandmarksDataModule",
                 "MixedImagesDataModule", "SemiSupervisedBackdoorMNISTDataModule"):
        cached = [{**base, "data": {"class_path": f"lit_robust.{name}", "init_args": {"root": r}}} for r in "ab"]
        assert fit_signature(cached[0]) == fit_signature(cached[1]), name


class _OwnFolderData:
    """A user's datamodule whose `root` is their data (no `root_is_a_download_cache`)."""

    def __init__(self, root: str) -> None:
        self.root = root



def test_a_fit_from_before_the_default_warm_up_became_none_is_the_same_fit_when_its_schedule_is():
    """`warmup_epochs`'s default became `None` (0 with a number, 3 with "auto"): the `config.yaml` of a
    `robust_realnvp_moons.yaml` fit made before reads `warmup_epochs: 0`, today's dump `null`, and `fit --ckpt_path
    last` of that preempted fit started from scratch ("differs in model.init_args.warmup_epochs: 0 in that fit,
    '(unset)' here"). The signature compares the warm-up in use: the same for a number, not for "auto"."""
    from lit_robust.cli import fit_signature, signature_differences

    def config(drop_ratio, warmup):
        flt = {"class_path": "lit_robust.BatchFilter", "init_args": {"rule": "prl", "drop_ratio": drop_ratio,
                                                                     "warmup_epochs": warmup}}
        model = {"class_path": "lit_robust.RobustRealNVP", "init_args": {"drop_ratio": drop_ratio,
                                                                          "warmup_epochs": warmup}}
        return {"seed_everything": 0, "model": model, "trainer": {"callbacks": [flt]}}

    assert fit_signature(config(0.05, 0)) == fit_signature(config(0.05, None))
    assert fit_signature(config("auto", 3)) == fit_signature(config("auto", None))
    assert signature_differences(fit_signature(config("auto", None)), fit_signature(config("auto", 0)))[:1] == [
        "model.init_args.warmup_epochs: 0 in that fit, 3 here"]
    # a `warmup_epochs` without a `drop_ratio` beside it (ActivationClustering's) is compared as written
    other = {"trainer": {"callbacks": [{"class_path": "A", "init_args": {"warmup_epochs": None}}]}}
    assert fit_signature(other) != fit_signature({"trainer": {"callbacks": [{"class_path": "A",
                                                                             "init_args": {"warmup_epochs": 0}}]}})

def test_a_configured_optimizer_and_scheduler_are_made_anew_at_every_itlm_round(tmp_path, one_torch_thread):
    """LightningCLI builds `--optimizer`/`--lr_scheduler` once and returns the same objects from every
    `configure_optimizers` call: ITLM's re-drawn rounds kept the whole fit's Adam moments and a StepLR 20 epochs deep
    by the last round (a CLI newcomer's learning rate 2.4e-6, test accuracy 0.441). Now each round starts them
    afresh, as a module's own `configure_optimizers` does."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = run(["fit", "--config", str(tmp_path / "c.yaml"), "--optimizer", "Adam", "--optimizer.lr", "0.003",
               "--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "1", "--lr_scheduler.gamma", "0.5"])
    trainer, model = cli.trainer, cli.model
    assert cfg["trainer"]["max_epochs"] == 3  # three one-epoch rounds
    opt = trainer.optimizers[0]
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 0.003
    steps = {int(s["step"]) for s in opt.state.values()}
    assert steps == {trainer.num_training_batches}, (steps, trainer.global_step)  # the last round's steps only
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.003 * 0.5)  # one epoch deep
    first, second = model.configure_optimizers(), model.configure_optimizers()
    assert first[0][0] is not second[0][0] and first[1][0] is not second[1][0]
    assert first[0][0].param_groups[0]["params"] == list(model.parameters())


def test_a_configured_optimizer_for_a_module_with_two_is_one_line(tmp_path, capsys):
    """Co-teaching under `--optimizer Adam` ended in "TypeError: cannot unpack non-iterable LightningAdam object"
    (a CLI newcomer): it trains two networks with an optimizer each."""
    err = _fails(tmp_path, capsys, "coteaching_mnist.yaml", ["fit", "--optimizer", "Adam"])
    assert ("`optimizer:` (`--optimizer`) replaces the module's `configure_optimizers` with one optimizer, but "
            "CoTeaching trains two networks, each with its own optimizer from the wrapped module's "
            "`configure_optimizers`: set the optimizer there") in err, err
    err = _fails(tmp_path, capsys, "itlm_gan_mixture.yaml", ["fit", "--optimizer", "Adam"])
    assert "but DCGAN trains a discriminator and a generator with an Adam each: set `model.init_args.lr`" in err, err


def test_a_class_name_in_another_case_a_misspelt_section_and_init_arg_get_a_suggestion(tmp_path, capsys):
    """A CLI newcomer's `lit_robust.Itlm` got no suggestion where `lit_robust.ITLN` did, `modle:` none where
    `max_epoch` did, and `init_arg:` was read as an argument of the class."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"][0]["class_path"] = "lit_robust.Itlm"
    (tmp_path / "case.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(tmp_path / "case.yaml")])
    assert "module 'lit_robust' has no attribute 'Itlm' (did you mean 'lit_robust.ITLM'?)" in capsys.readouterr().err
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["modle"] = cfg.pop("model")
    (tmp_path / "modle.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(tmp_path / "modle.yaml")])
    err = capsys.readouterr().err.rstrip()
    assert err.endswith("(did you mean model.init_args.backbone?)") and "does not accept option 'modle." in err, err
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    itlm = cfg["trainer"]["callbacks"][0]
    itlm["init_arg"] = itlm.pop("init_args")
    (tmp_path / "init_arg.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(tmp_path / "init_arg.yaml")])
    assert ("a callback of `trainer.callbacks` has `init_arg:` beside `class_path: lit_robust.ITLM`: did you mean "
            "`init_args:`?") in capsys.readouterr().err


@pytest.mark.parametrize(("key", "given", "listed"), [
    ("model", "lit_robust.NoSuchModel", "(lit_robust's models: AutoEncoder, CoTeaching, DCGAN, ImageClassifier,"),
    ("data", "lit_robust.NoSuchData", "(lit_robust's datamodules: BackdoorFashionMNISTDataModule,"),
])
def test_a_class_path_close_to_no_class_lists_the_classes_that_key_takes(tmp_path, capsys, key, given, listed):
    """`--data.class_path lit_robust.NoSuchData` said only "module 'lit_robust' has no attribute 'NoSuchData'":
    the key and the value, not what it may name."""
    err = _fails(tmp_path, capsys, "itlm_digits.yaml", ["fit", f"--{key}.class_path", given])
    assert f"has no attribute '{given.rpartition('.')[2]}' {listed}" in err, err
    assert "or a class of your own by its module, `my_module.MyClass`)" in err
    kinds = err.partition(listed)[2].partition(";")[0]
    assert ("ITLM" in kinds) is False and ("MNISTDataModule" in kinds) is (key == "data"), kinds


@pytest.mark.parametrize(("slip", "said"), [
    ("model under trainer", "does not accept option 'trainer.model.init_args.backbone' (`model:` is indented under "
                            "`trainer:`; it belongs at the top level of the config, as `model.init_args.backbone`)"),
    ("init_args at the top", "does not accept option 'init_args.backbone' (`init_args:` is at the top level of the "
                             "config; it belongs one level below a class entry's `class_path:`, e.g. under `model:` "
                             "or `data:`)"),
])
def test_an_indentation_slip_that_is_valid_yaml_is_named(tmp_path, capsys, slip, said):
    """A CLI user's `model:` indented under `trainer:` read "(did you mean trainer.overfit_batches?)", and `init_args:`
    dedented to the top level got no hint at all."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    if slip == "model under trainer":
        cfg["trainer"]["model"] = cfg.pop("model")
    else:
        cfg["init_args"] = cfg["model"].pop("init_args")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(tmp_path / "a.yaml")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and said in err and "did you mean" not in err, err


@pytest.mark.parametrize(("where", "given", "said"), [
    ("callback", "ModelCheckPoint", "Parser key \"trainer.callbacks\":\n  `class_path: ModelCheckPoint` names no Callback "
                                    "known by that name: did you mean `ModelCheckpoint` (`pytorch_lightning.callbacks."
                                    "model_checkpoint.ModelCheckpoint`)?"),
    ("callback", "ITML", "`class_path: ITML` names no Callback known by that name: did you mean `ITLM` "
                         "(`lit_robust.callbacks.itlm.ITLM`)?"),
    ("model", "ImageClasifier", "Parser key \"model\":\n  `class_path: ImageClasifier` names no LightningModule known by "
                                "that name: did you mean `ImageClassifier` (`lit_robust.models.supervised."
                                "ImageClassifier`)?"),
    ("model", "Zebra", "`class_path: Zebra` names no LightningModule known by that name. A short name works"),
])
def test_a_misspelt_short_class_name_is_named_with_the_class_meant(tmp_path, capsys, where, given, said):
    """A CLI user's `class_path: ModelCheckPoint` (and `ITML`) in the callbacks list got "expected list[Callback] or
    Callback or null, got <the whole list>": neither the entry nor the class meant."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    if where == "callback":
        cfg["trainer"]["callbacks"].append({"class_path": given, "init_args": {"save_last": True}})
    else:
        cfg["model"]["class_path"] = given
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(tmp_path / "a.yaml")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and said in err and "Traceback" not in err, err


@pytest.mark.parametrize(("args", "said"), [
    (["--trainer.callbacks+=lit_robust.ImageClassifier"],
     "Parser key \"trainer.callbacks\":\n  lit_robust.ImageClassifier is not a Callback: it is a model (a "
     "LightningModule), named under `model:` (`--model lit_robust.ImageClassifier`)."),
    (["--trainer.callbacks+=lit_robust.DigitsDataModule"],
     "lit_robust.DigitsDataModule is not a Callback: it is a datamodule, named under `data:` (`--data "
     "lit_robust.DigitsDataModule`)."),
    (["--model", "lit_robust.ITLM"],
     "Parser key \"model\":\n  lit_robust.ITLM is not a LightningModule: it is a callback, listed under "
     "`trainer.callbacks:` (`--trainer.callbacks+=lit_robust.ITLM`)."),
    (["--trainer.callbacks+=torch.nn.Linear"], "Parser key \"trainer.callbacks\":\n  torch.nn.Linear is not a Callback."),
    # the other Lightning package's callback is one, of that package (a reviewer's was called "not a Callback")
    (["--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping"],
     "Parser key \"trainer.callbacks\":\n  `EarlyStopping` is `lightning`'s, but lit_robust was imported on "
     "`pytorch_lightning` in this process"),
])
def test_a_class_of_another_kind_is_named_as_what_it_is(tmp_path, capsys, args, said):
    """A CLI newcomer's `--trainer.callbacks+=lit_robust.ImageClassifier` got jsonargparse's Union report, which said
    the class was "either not accessible or invalid"."""
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(path), *args])
    err = capsys.readouterr().err
    assert done.value.code == 2 and said in err and "not accessible" not in err and "Subtypes" not in err, err


def test_callbacks_written_as_a_mapping_of_names_are_told_to_be_a_list(tmp_path, capsys):
    """A CLI newcomer's `callbacks:` as `itlm: {class_path: ...}` entries was told that "a callback" needs
    `class_path:`, which each had."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"] = {"itlm": cfg["trainer"]["callbacks"][0], "ckpt": {"class_path": "ModelCheckpoint"}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(tmp_path / "a.yaml")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and ("`trainer.callbacks:` is a YAML list, one `- class_path: ...` item per callback; "
                                     "got a mapping of names (itlm, ckpt): write each as a list item, without its "
                                     "name.") in err, err


def test_a_module_beside_the_config_in_another_folder_is_pointed_at(tmp_path, capsys, monkeypatch):
    """A CLI user's `lit-robust fit --config project/my.yaml`, run from the folder above, got the bare "No module named
    'mymodels'": the module is looked up in the folder the command starts in (jsonargparse parses the config inside
    its own folder, so that is not the folder to name)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodels_beside.py").write_text("raise AssertionError('not imported from here')\n")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["model"] = {"class_path": "mymodels_beside.DigitsCNN"}
    (project / "my.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI appends the folder it starts in
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", "project/my.yaml"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and (
        f"No module named 'mymodels_beside' (a `class_path`'s module is looked up in the current folder, {tmp_path}, "
        f"and on PYTHONPATH; `mymodels_beside` is beside the config, in {project}: run from there, or put "
        f"`PYTHONPATH={project}` before the command)") in err, err


class MissingFileData(pl.LightningDataModule):
    """A user's own datamodule: checks its path in `__init__` (`check=True`) or opens it in `setup`."""

    def __init__(self, path: str = "nowhere/train.npz", check: bool = False) -> None:
        super().__init__()
        if check and not os.path.exists(path):
            raise FileNotFoundError(f"data path {path!r} does not exist")
        self.path = path

    def setup(self, stage: str) -> None:
        import numpy as np

        np.load(self.path)


@pytest.mark.parametrize(("check", "said"), [
    (True, "lit-robust fit: error: data (tests.test_cli.MissingFileData): data path 'nowhere/train.npz' does not "
           "exist"),
    (False, "lit-robust fit: error: data (tests.test_cli.MissingFileData): [Errno 2] No such file or directory: "
            "'nowhere/train.npz' (a relative path is read from the current folder, {tmp_path})"),
])
def test_a_missing_data_file_of_a_users_datamodule_is_one_line(tmp_path, capsys, monkeypatch, check, said):
    """A CLI user's own datamodule: `raise FileNotFoundError` in its `__init__` ended in a 31-line traceback (the same
    check as a ValueError got one line), and a file missing in `setup` in 44 lines."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["data"] = {"class_path": "tests.test_cli.MissingFileData", "init_args": {"check": check}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", "a.yaml"])
    err = capsys.readouterr().err
    said = said.format(tmp_path=os.getcwd())
    assert done.value.code == 2 and said in err and "Traceback" not in err, err


def test_ckpt_path_last_passes_over_a_fit_made_in_python_in_the_same_logs(tmp_path, capsys, one_torch_thread):
    """A docs reader's notebook fit (plain training, no config recorded) in the same `lightning_logs`: `test
    --ckpt_path last` tested it and called it "the newest fit with this model, data, callbacks and seed", and `fit
    --ckpt_path last` resumed ITLM from its weights. `last` takes only fits whose config is known and the same."""
    from lit_robust import DigitsDataModule, ImageClassifier

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pl.seed_everything(0)
    pl.Trainer(default_root_dir=str(tmp_path), max_epochs=1, limit_train_batches=2, limit_val_batches=0,
               enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").fit(
        ImageClassifier(backbone="mlp", image_size=8), DigitsDataModule(clean_ratio=0.6, noise="systematic"))
    (python_fit,) = (tmp_path / "lightning_logs").glob("version_0/checkpoints/*.ckpt")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["test", "--config", str(path), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and (f"{python_fit} was written by a fit outside `lit-robust fit` (no config recorded: "
                                     "a fit in Python, say), which `last` does not take; pass a file's path as "
                                     "`--ckpt_path` to use one.") in err, err
    assert "come from fits with another model" not in err  # there is no other CLI fit to compare with
    fresh = run(["fit", "--config", str(path), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert fresh.trainer.ckpt_path is None and "starts from scratch" in err and str(python_fit) in err, err
    tested = run(["test", "--config", str(path), "--ckpt_path", "last"])  # now the CLI's own fit
    assert "lit_robust_fit_config" in torch.load(tested.trainer.ckpt_path, weights_only=True)


def test_ckpt_path_last_tells_the_fits_apart_in_a_shared_checkpoint_dirpath(tmp_path, capsys, one_torch_thread):
    """A CLI newcomer's configs shared `ModelCheckpoint(dirpath=./my_ckpts)`: `test --config A --ckpt_path last`
    loaded B's newer `last-v1.ckpt` (test accuracy 0.093 against 0.930), and a never-run config's `fit --ckpt_path
    last` found B's finished fit and trained nothing, exit 0. No config.yaml sits beside such files: each checkpoint
    now carries its fit's config."""
    import warnings

    def config(clean_ratio: float, name: str) -> Path:
        cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
        cfg["trainer"]["callbacks"].append({"class_path": "ModelCheckpoint",
                                            "init_args": {"dirpath": str(tmp_path / "my_ckpts"), "save_last": True}})
        cfg["data"]["init_args"]["clean_ratio"] = clean_ratio
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    a, b, c = config(0.6, "a"), config(0.8, "b"), config(0.7, "c")
    fit_a = run(["fit", "--config", str(a)])
    run(["fit", "--config", str(b)])
    lasts = sorted(p.name for p in (tmp_path / "my_ckpts").glob("last*.ckpt"))
    assert lasts == ["last-v1.ckpt", "last.ckpt"]  # B's is the newer
    evaluated = run(["test", "--config", str(a), "--ckpt_path", "last"])
    assert Path(evaluated.trainer.ckpt_path).name == "last.ckpt"
    assert torch.load(evaluated.trainer.ckpt_path, weights_only=True)["lit_robust_fit_config"]["data"]["init_args"][
        "clean_ratio"] == 0.6
    capsys.readouterr()
    fresh = run(["fit", "--config", str(c), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert "found no checkpoint of an earlier fit with this config, so this fit starts from scratch" in err, err
    # and it does: Lightning, given `last`, took B's `last-v1.ckpt` in the shared folder, trained nothing and wrote
    # B's report as this fit's (a release auditor)
    assert fresh.trainer.ckpt_path is None and "Restoring states" not in err
    newest = max((tmp_path / "my_ckpts").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert torch.load(newest, weights_only=True)["lit_robust_fit_config"]["data"]["init_args"]["clean_ratio"] == 0.7
    # the record is no callback state: the file loads into a Trainer of one's own without Lightning's warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(
            fit_a.model, fit_a.datamodule, ckpt_path=str(tmp_path / "my_ckpts" / "last.ckpt"), verbose=False)
    said = [str(w.message) for w in caught if "callbacks used to create the checkpoint" in str(w.message)]
    assert said and "ITLM" in said[0] and "ConfigInCheckpoint" not in said[0], said  # the fit's own are named


def test_loader_workers_killed_by_sigterm_end_the_run_as_a_preemption(monkeypatch, capsys):
    """SIGTERM to the whole process group (SLURM, `timeout`) kills the loader workers first: a reproducibility
    newcomer's `prl_mnist.yaml` with `num_workers: 2` ended in PyTorch's RuntimeError, two tracebacks and exit status
    1, not the preemption's line and 143; with ITLM Python printed "Exception ignored in: ..." above that line."""
    import lit_robust.cli as cli

    def killed(argv):
        try:
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")
        except RuntimeError as exc:
            raise ValueError("wrapped by a loop") from exc

    monkeypatch.setattr(cli, "run", killed)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # main() wraps it; put it back afterwards
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", "any.yaml"])
    assert done.value.code == 143
    assert capsys.readouterr().err == ("lit-robust fit: stopped by SIGTERM; the checkpoints written so far remain: "
                                       "resume with the same command and `--ckpt_path last`. Exit status 143, as for a "
                                       "process killed by SIGTERM.\n")
    # the same error raised where Python cannot raise it (in logging's lock release) is not printed; others are
    said = []
    hook = cli._quiet_about_terminated_workers(lambda u: said.append(str(u.exc_value)))
    assert cli._quiet_about_terminated_workers(hook) is hook  # wrapped once, however often main() runs
    unraisable = type("U", (), {})
    for message in ("DataLoader worker (pid 7) is killed by signal: Terminated. ", "another failure"):
        u = unraisable()
        u.exc_value = RuntimeError(message)
        hook(u)
    assert said == ["another failure"]
    monkeypatch.setattr(cli, "run", lambda argv: (_ for _ in ()).throw(
        RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. ")))
    with pytest.raises(RuntimeError, match="Killed"):  # a worker killed otherwise is a failure, as before
        main(["fit", "--config", "any.yaml"])


def failed_digits_fit(tmp_path: Path, capsys, *args: str) -> tuple[Path, str]:
    """`lit-robust fit` of the shrunk `configs/itlm_digits.yaml` (written to ``tmp_path/a.yaml``), which must exit 1:
    that config's path and what the fit wrote on stderr."""
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(path), *args])
    assert done.value.code == 1
    return path, capsys.readouterr().err


def test_a_fit_whose_last_itlm_round_collapsed_exits_1(tmp_path, capsys, monkeypatch, one_torch_thread):
    """The fitted model is the last round's: a photo-folder newcomer's CNN learned in three rounds and collapsed in
    the last, and 3 of their 7 fits exited 0 with a model testing at 0.200 on 5 classes. Only the last round is
    judged collapsed here (the judgement itself is tested with ITLM), so the exit follows the history alone."""
    import lit_robust.callbacks.itlm as itlm_module

    judged = []

    def last_round_only(*args, **kwargs):
        judged.append(len(judged))
        return ["`val_acc` = 0.1 is at chance (<= 0.145 for 10 classes)"] if len(judged) == 3 else []

    monkeypatch.setattr(itlm_module, "collapse_reasons", last_round_only)
    _, err = failed_digits_fit(tmp_path, capsys)
    assert len(judged) == 3
    assert ("lit-robust fit: error: the last round of ITLM (round 2) collapsed: its model did not learn, though "
            "rounds 0, 1 did (the warnings above say why), so the fitted model is not usable.") in err, err
    assert "(`round_epochs`)" in err and "lit-robust fit: the fitted model is" not in err  # no "test it" advice
    assert list(tmp_path.glob("**/itlm_report.csv")) and list(tmp_path.glob("**/*.ckpt"))  # nothing lost


def test_a_fit_whose_final_model_predicts_one_class_exits_1(tmp_path, capsys, monkeypatch, one_torch_thread):
    """No round judged collapsed, yet the final model names one class for nearly every sample: a folder newcomer's 4
    fits at learning rates 0.1-0.5 exited 0 with models testing at 0.200 (a loss falling from a spike to ln(5)
    passes the loss test, and they had no validation split). The report's check is made to fire here (it is tested
    with the report); the exit follows it alone."""
    import lit_robust.callbacks.itlm as itlm_module

    monkeypatch.setattr(itlm_module, "collapse_reasons", lambda *a, **k: [])
    monkeypatch.setattr(itlm_module, "one_class_predicted", lambda given, predicted: (3, int(given.numel()),
                                                                                      int(given.numel())))
    path, err = failed_digits_fit(tmp_path, capsys)
    assert ("lit-robust fit: error: the final model of ITLM predicts class 3 for 1200 of the 1200 training samples, "
            "whose labels spread over several classes: it did not learn, though its last round was not judged "
            "collapsed") in err, err
    assert "(`--model.lr`; this fit's was 0.05: try 0.005)" in err and "lit-robust fit: the fitted model is" not in err
    assert list(tmp_path.glob("**/itlm_report.csv"))  # nothing lost
    monkeypatch.undo()  # a fit whose model learned: exit 0, and the flag is cleared for the next fit
    fitted = run(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "ok")])
    assert next(cb for cb in fitted.trainer.callbacks if isinstance(cb, ITLM)).final_one_class is None


def test_a_fit_whose_every_itlm_round_collapsed_exits_1_and_says_so(tmp_path, capsys, one_torch_thread):
    """A fit at learning rate 80 collapsed in 6 of 6 rounds (val_acc 0.11-0.13 on digits) and exited 0: the warnings
    had scrolled away and a pipeline would test and ship the model. One round that learned is enough to exit 0."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, err = failed_digits_fit(tmp_path, capsys, "--model.lr", "80")
    said = " ".join(str(w.message) for w in caught)
    assert ("lit-robust fit: error: every round of ITLM (3 of 3) collapsed: its model did not learn (the warnings "
            "above say why)") in err, err
    assert "(`--model.lr`; this fit's was 80: try 8)" in err  # the rate the user passed, named
    # the final model's rarely predicted classes are blamed on the collapse, not on `per_class` or short rounds
    assert "its last round collapsed (the warning above)" in said and "a last round too short?" not in said
    assert list(tmp_path.glob("**/itlm_report.csv")) and list(tmp_path.glob("**/*.ckpt"))  # nothing lost
    fitted = run(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "ok")])  # the config's lr
    assert not all(rec.collapsed for rec in next(cb for cb in fitted.trainer.callbacks if isinstance(cb, ITLM)).history)
    assert "every round" not in capsys.readouterr().err


def test_a_collapse_under_limit_train_batches_names_the_limit_not_the_learning_rate(tmp_path, capsys, monkeypatch,
                                                                                       one_torch_thread):
    """A CLI newcomer's quick check (`--trainer.limit_train_batches 2`) collapsed and was told to try a learning rate
    ten times lower, which would have made it worse: the two steps an epoch came from the limit."""
    import lit_robust.callbacks.itlm as itlm_module

    monkeypatch.setattr(itlm_module, "collapse_reasons", lambda *a, **k: ["judged here"])
    _, err = failed_digits_fit(tmp_path, capsys, "--trainer.limit_train_batches", "1")
    assert ("every round of ITLM (3 of 3) collapsed: its model did not learn (the warnings above say why), so the "
            "fitted model is not usable. `--trainer.limit_train_batches` 1 leaves 1 optimizer step an epoch, too few "
            "to learn in: a quick check's setting, where this is expected; leave it out (or raise it) to train a "
            "usable model.") in err, err
    assert "--model.lr" not in err
    # a limit that leaves more steps is not the cause named (an adversarial reviewer's 0.9 at lr 20: 17 steps an epoch)
    (tmp_path / "more").mkdir()
    _, err = failed_digits_fit(tmp_path / "more", capsys, "--trainer.limit_train_batches", "0.9")
    assert "limit_train_batches" not in err and "(`--model.lr`; this fit's was" in err, err


def test_a_fit_ends_with_the_checkpoint_and_the_test_command_that_finds_it(tmp_path, capsys, monkeypatch,
                                                                             one_torch_thread):
    """A hurried CLI user's filter fits ended on "`Trainer.fit` stopped" and a report path: no checkpoint path and no
    word of `test --ckpt_path last`. The printed command, run as printed, tests the fitted weights."""
    import shlex

    cfg = shrink(yaml.safe_load((REPO / "configs" / "prl_mnist.yaml").read_text()), tmp_path)
    path = tmp_path / "a b.yaml"  # a space: the command is quoted for the shell
    path.write_text(yaml.safe_dump(cfg))
    fitted = run(["fit", "--config", str(path), "--model.init_args.lr", "0.05"])
    err = capsys.readouterr().err
    last = str(next(Path(fitted.trainer.log_dir).glob("checkpoints/last.ckpt")))
    assert f"lit-robust fit: the fitted model is {last}; test it on the test split with\n" in err, err
    command = err.split("test it on the test split with\n", 1)[1].splitlines()[0].strip()
    assert command == f"lit-robust test --config {shlex.quote(str(path))} --model.init_args.lr 0.05 --ckpt_path last"
    tested = run(shlex.split(command)[1:])
    assert tested.trainer.ckpt_path == last
    # no command where it would fail: a model without a test_step (a GAN), data without a test split
    from types import SimpleNamespace

    import lit_robust.cli as cli

    class NoTestStep(pl.LightningModule):
        pass

    class WithTestStep(pl.LightningModule):
        def test_step(self, batch, batch_idx):
            pass

    monkeypatch.setattr(cli, "find_last_checkpoint", lambda trainer: ("x.ckpt", []))
    trainer = SimpleNamespace(interrupted=False, is_global_zero=True)
    for model, split, said in ((WithTestStep(), [1], True), (NoTestStep(), [1], False), (WithTestStep(), [], False)):
        capsys.readouterr()
        cli.RobustCLI._say_next_step(SimpleNamespace(trainer=trainer, model=model, _given_argv=["fit"],
                                                     datamodule=SimpleNamespace(test_dataloader=lambda s=split: s)))
        assert ("the fitted model is x.ckpt; test it" in capsys.readouterr().err) is said
    # a model with nothing to test still gets its checkpoint's path; a SimCLR pretraining the way on (a SimCLR user
    # found the checkpoint the fine-tuning needs with `ls`)
    from lit_robust import SimCLR

    for model, line in ((NoTestStep(), "lit-robust fit: the fitted model is x.ckpt.\n"),
                        (SimCLR(), "lit-robust fit: the fitted model is x.ckpt; fine-tune on it with "
                                   "`--model.backbone_checkpoint x.ckpt`.\n")):
        cli.RobustCLI._say_next_step(SimpleNamespace(trainer=trainer, model=model, _given_argv=["fit"], datamodule=None))
        assert capsys.readouterr().err == line


def test_a_yaml_syntax_error_names_its_file(tmp_path, capsys):
    """A hurried CLI user's wrongly indented `lr:` read 'mapping values are not allowed ... in "<unicode string>"':
    with two `--config` files they could not tell which."""
    bad = tmp_path / "mine.yaml"
    bad.write_text("trainer:\n  max_epochs: 2\n    lr: 3\n")
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(REPO / "configs" / "itlm_digits.yaml"), "--config", str(bad)])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert f"in {str(bad)!r}, line 3, column 7" in err and "<unicode string>" not in err, err
    # ... and shows the lines, the one above included: the slip is there as often as on the line named
    assert f"{str(bad)!r} lines 2-3 (YAML nests by indentation" in err
    assert "      2 |   max_epochs: 2\n      3 |     lr: 3\n" + " " * 16 + "^\n" in err, err  # under its colon


def test_a_key_indented_one_level_too_little_is_shown_with_the_line_above(tmp_path, capsys):
    # PyYAML names the line after the slip ("mapping values are not allowed" at `devices:`); a tab gets named too
    for text, shown in (("trainer:\nmax_epochs: 2\n  devices: 1\n", "      2 | max_epochs: 2\n      3 |   devices: 1"),
                        # an unclosed quote runs to the end of the file: the caret goes under the quote
                        ("trainer:\n  max_epochs: \"3\n", "      2 |   max_epochs: \"3\n" + " " * 24 + "^\n"),
                        ("trainer:\n  max_epochs: 2\n\tdevices: 1\n", "      3 | <tab>devices: 1\n" + " " * 10 + "^\n")):
        bad = tmp_path / "slip.yaml"
        bad.write_text(text)
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", str(bad)])
        err = capsys.readouterr().err
        assert done.value.code == 2 and "Traceback" not in err
        assert shown in err, err


def test_more_cpu_processes_than_cores_get_a_note(capsys, monkeypatch):
    """A hurried CLI user's `--trainer.devices 3` on a 2-core machine started 3 gloo processes without a word and read
    another val_acc than one process."""
    from types import SimpleNamespace

    from pytorch_lightning.accelerators import CPUAccelerator

    from lit_robust.cli import _note_more_processes_than_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for devices, said in ((3, True), (2, False), (1, False)):
        _note_more_processes_than_cores(SimpleNamespace(num_devices=devices, num_nodes=1, is_global_zero=True,
                                                        accelerator=CPUAccelerator()))
        err = capsys.readouterr().err
        assert ("lit-robust: note: 3 processes on 2 CPU cores (`--trainer.devices` 3): slower than one process here"
                in err) is said, err


def test_the_cli_drops_lightnings_cloud_tips(tmp_path, monkeypatch, one_torch_thread):
    """An unlabelled-data newcomer found each command's estimate and report path buried under Lightning's two
    "💡 Tip: ... try installing litlogger / litmodels" lines (logged by `rank_zero_info`); the CLI drops them. Whether
    Lightning says them at all depends on what ran before in this process (log level, rank), so the filter is checked
    on a tip logged here."""
    import logging

    from lit_robust import cli

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")  # where Lightning's rank_zero_info logs
    for f in [f for f in log.filters if isinstance(f, cli._NoCloudTips)]:  # installed by an earlier CLI test
        log.removeFilter(f)
    handler = Collect()
    log.addHandler(handler)
    top = logging.getLogger("pytorch_lightning")  # `lit-robust demo` in this process set it to ERROR: info unsaid
    level = top.level
    top.setLevel(logging.INFO)
    try:
        log.info("💡 Tip: try installing something")
        assert seen == ["💡 Tip: try installing something"]  # said, before the CLI ran
        seen.clear()
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["lit-robust"])
        main(["fit", "--data", "lit_robust.DigitsDataModule", "--data.train_size", "200", "--data.val_size", "0",
              "--model", "lit_robust.ImageClassifier", "--model.backbone", "mlp", "--model.image_size", "8",
              "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"])
        assert not any(m.startswith("💡 Tip") for m in seen), seen
        log.info("💡 Tip: try installing something")
        log.info("an info line of Lightning's own")
        assert seen[-1:] == ["an info line of Lightning's own"] and not any(m.startswith("💡 Tip") for m in seen)
    finally:
        log.removeHandler(handler)
        top.setLevel(level)


def test_overrides_written_before_a_short_config_option_apply_after_it(tmp_path, capsys):
    """`lit-robust fit --trainer.max_epochs 2 -c my.yaml`: `config_first` moved `--config` files only, so the short
    form `-c` (LightningCLI's, listed by `--help`) stayed after the override and the config's `max_epochs: 30`
    silently replaced it."""
    from lit_robust.cli import config_first

    assert config_first(["fit", "--trainer.max_epochs", "2", "-c", "a.yaml", "-c=b.yaml", "-cc.yaml"]) == [
        "fit", "-c", "a.yaml", "-c=b.yaml", "-cc.yaml", "--trainer.max_epochs", "2"]
    with pytest.raises(SystemExit) as exc:  # the parsed config, as `--print_config` shows it
        run(["fit", "--trainer.max_epochs", "2", "-c", str(REPO / "configs" / "itlm_digits.yaml"), "--print_config"])
    assert exc.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["max_epochs"] == 2


def test_the_cli_builds_its_parser_on_a_lightning_without_the_parser_class_argument(monkeypatch, capsys):
    """`LightningCLI(parser_class=...)` is newer than pytorch-lightning 2.5 (pyproject allows 2.1): passing it made
    every `lit-robust` command a TypeError there. The parser is made in `RobustCLI.init_parser` instead."""
    import lit_robust.cli as cli

    original = cli.LightningCLI.__init__

    def without_parser_class(self, *args, **kwargs):  # an older LightningCLI's signature
        if "parser_class" in kwargs:
            raise TypeError("LightningCLI.__init__() got an unexpected keyword argument 'parser_class'")
        original(self, *args, **kwargs)

    monkeypatch.setattr(cli.LightningCLI, "__init__", without_parser_class)
    with pytest.raises(SystemExit) as exit_:
        run(["fit", "--help"])
    assert exit_.value.code == 0 and "lit-robust fit" in capsys.readouterr().out
    assert isinstance(cli.RobustCLI.init_parser(cli.RobustCLI.__new__(cli.RobustCLI)), cli.RobustArgumentParser)


@pytest.mark.parametrize("own_base", ["robust", "lightning"])
def test_a_robust_cli_subclass_keeps_its_own_parser_class(own_base):
    """Making the parser in `RobustCLI.init_parser` dropped a user's `RobustCLI(parser_class=MyParser)` without a
    word (Lightning >= 2.5 takes the argument): the user's class is used, with RobustArgumentParser's behaviour."""
    import lit_robust.cli as cli
    from lit_robust._backend import import_submodule

    base = cli.RobustArgumentParser if own_base == "robust" else import_submodule("cli").LightningArgumentParser

    class MyParser(base):
        made = 0

        def __init__(self, *args, **kwargs):
            MyParser.made += 1
            super().__init__(*args, **kwargs)

    robust = cli.RobustCLI.__new__(cli.RobustCLI)
    robust.parser_class = MyParser
    parser = robust.init_parser()
    assert MyParser.made == 1 and isinstance(parser, MyParser) and isinstance(parser, cli.RobustArgumentParser)
    robust.parser_class = import_submodule("cli").LightningArgumentParser  # Lightning's default: lit-robust's own
    assert type(robust.init_parser()) is cli.RobustArgumentParser


def test_the_fit_end_mark_is_written_by_rank_zero_without_a_collective(tmp_path):
    """Every 2-process `lit-robust fit --trainer.strategy ddp` ran to its end, then rank 0 alone read `trainer.log_dir`
    (a broadcast) after rank 1 had returned: gloo's 'Connection closed by peer' traceback and exit status 1."""
    from pytorch_lightning.loggers import CSVLogger

    from lit_robust.cli import FIT_END_MARK, _FitEndMark

    trainer = pl.Trainer(logger=CSVLogger(tmp_path), enable_progress_bar=False, enable_checkpointing=False)

    def no_collective(*args, **kwargs):
        raise AssertionError("a collective on rank 0 alone: the other ranks are not in it")

    trainer.strategy.broadcast = no_collective
    _FitEndMark().on_fit_end(trainer, None)
    mark = Path(trainer.loggers[0].log_dir) / FIT_END_MARK
    assert json.loads(mark.read_text()) == {"global_step": 0, "collapsed": None}


@pytest.mark.timeout(300)
@pytest.mark.skipif(sys.platform == "win32", reason="gloo DDP subprocesses")
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_a_two_process_fit_of_a_shipped_config_ends_then_tests_its_last_checkpoint(tmp_path, strategy):
    """The path a multi-GPU user takes, on CPU: `lit-robust fit --trainer.strategy ddp --trainer.devices 2` of a
    shipped config on its defaults (progress bar, logger, checkpoint), then `lit-robust test --ckpt_path last` in one
    process. The fit crashed after its last epoch in a gloo traceback of rank 0's, exit status 1. With `ddp_spawn`
    (docs/capabilities/distributed.md names both) it crashed at once: the CLI's SIGTERM handler, a closure set on
    the Trainer, could not be pickled for the spawned processes."""
    import subprocess

    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    small = tmp_path / "itlm_digits.yaml"
    small.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))

    def lit_robust(*args):
        done = subprocess.run([sys.executable, "-m", "lit_robust", *args, "--config", str(small)], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=240)
        text = done.stdout + done.stderr
        assert done.returncode == 0 and "Traceback" not in text, text
        return text

    # another fit's `last.ckpt` in an earlier version folder: under `ddp_spawn` "the fitted model is" named it, this
    # process's ModelCheckpoint having no folder of its own (a newcomer's table fit was told of an MNIST fit's file)
    decoy = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    decoy.parent.mkdir(parents=True)
    decoy.write_bytes(b"")
    fitted = lit_robust("fit", "--trainer.strategy", strategy, "--trainer.devices", "2")
    assert "Starting with 2 processes" in fitted and fitted.count("per-sample report written to") == 1, fitted
    run_dir = tmp_path / "lightning_logs" / "version_1"
    assert json.loads((run_dir / "fit_ended.json").read_text())["collapsed"] is None
    assert f"the fitted model is {run_dir / 'checkpoints'}{os.sep}" in fitted and str(decoy) not in fitted, fitted
    decoy.unlink()  # not a checkpoint `test --ckpt_path last` could read
    rows = load_report(run_dir / "itlm_report.csv", as_frame=False)
    assert sorted(r["index"] for r in rows) == list(range(len(rows)))  # every training sample once
    if strategy == "ddp":
        assert "test_acc" in lit_robust("test", "--ckpt_path", "last")
    else:  # the printed command keeps the strategy; this process saw none of the test batches (one test run: the
        # suite's longest test, and `ddp` tests in one process above)
        tested = lit_robust("test", "--ckpt_path", "last", "--trainer.strategy", strategy, "--trainer.devices", "2")
        assert "test_acc" in tested and "gave no test batches" not in tested, tested
        assert "test it on the test split with" in fitted, fitted


def test_under_ddp_spawn_the_collapse_verdict_is_read_off_the_fit_end_mark(tmp_path, capsys):
    """Under `ddp_spawn` this process's ITLM is a copy that never ran: a fit whose every round collapsed (a newcomer's
    learning rate 80) exited 0, where one process and `ddp` exit 1. Rank 0 of the fit writes the verdict into the
    fit-end mark, and the CLI reads it there."""
    from types import SimpleNamespace

    from pytorch_lightning.loggers import CSVLogger

    from lit_robust.cli import FIT_END_MARK, RobustCLI

    trainer = pl.Trainer(strategy="ddp_spawn", devices=2, accelerator="cpu", logger=CSVLogger(tmp_path),
                         enable_progress_bar=False, enable_checkpointing=False)
    folder = Path(trainer.loggers[0].log_dir)
    folder.mkdir(parents=True)
    cli = SimpleNamespace(trainer=trainer, model=None)
    (folder / FIT_END_MARK).write_text(json.dumps({"global_step": 60, "collapsed": None}))
    RobustCLI._fail_if_the_final_model_collapsed(cli)  # a fit that learned: nothing
    said = "lit-robust fit: error: every round of ITLM (3 of 3) collapsed: its model did not learn ...\n"
    (folder / FIT_END_MARK).write_text(json.dumps({"global_step": 60, "collapsed": said}))
    with pytest.raises(SystemExit) as done:
        RobustCLI._fail_if_the_final_model_collapsed(cli)
    assert done.value.code == 1 and capsys.readouterr().err == said


def test_a_users_mistake_checked_in_a_spawned_process_is_one_line():
    """`lit-robust fit --trainer.strategy ddp_spawn` with `max_epochs` short of ITLM's rounds: the check raises in the
    processes torch starts, and torch hands back the text of its traceback (`ProcessRaisedException`): two tracebacks
    and exit status 1, where `ddp` gives one line. A bug raised elsewhere keeps its traceback."""
    import traceback

    from torch.multiprocessing.spawn import ProcessRaisedException

    from lit_robust import ITLM
    from lit_robust.cli import error_of_a_spawned_process

    def raised_in_a_process(fn) -> ProcessRaisedException:
        try:
            fn()
        except Exception:  # noqa: BLE001 - formatted as torch's `_wrap` does in the started process
            text = traceback.format_exc()
        return ProcessRaisedException(f"\n\n-- Process 0 terminated with the following error:\n{text}", 0, 1234)

    from tests.conftest import TinyModel

    trainer = pl.Trainer(max_epochs=12, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    check = raised_in_a_process(lambda: ITLM(0.7, round_epochs=[2, 2, 20]).setup(trainer, TinyModel(), "fit"))
    assert error_of_a_spawned_process(ValueError("not from a started process")) is None
    err = error_of_a_spawned_process(check)
    assert err is not None and str(err).startswith("`round_epochs` must add up to the Trainer's `max_epochs`: "
                                                   "sum([2, 2, 20]) = 24, but max_epochs = 12."), check
    assert error_of_a_spawned_process(raised_in_a_process(lambda: 1 / 0)) is None  # a bug, not a check
    # the line names the config key `ddp` names: the started process's ITLM is a copy, matched by the frames' code
    # to the config's ITLM (it read `trainer.max_epochs: ...`)
    from types import SimpleNamespace

    from lit_robust.cli import describe

    cli = SimpleNamespace(subcommand="fit", config_init={"fit": {"trainer": {"callbacks": [
        SimpleNamespace(), ITLM(0.7, round_epochs=[2, 2, 20])]}}}, config=None)
    assert describe(cli, err).startswith("trainer.callbacks[1].init_args.round_epochs (lit_robust.ITLM): `round_epochs` "
                                         "must add up to the Trainer's `max_epochs`")
    cli.config_init["fit"]["trainer"]["callbacks"].pop()  # no ITLM in the config: the message's own argument
    assert describe(cli, err).startswith("trainer.max_epochs: `round_epochs` must add up")


def test_a_config_without_seed_everything_is_seeded_with_zero(tmp_path, one_torch_thread):
    """`lit-robust fit` seeds a config that leaves `seed_everything` out with 0 (`seed_everything_default`): every
    shipped config sets it, so the default never ran. Two fits of such a config train the same weights, and the run
    folder's config.yaml records the seed (with the default set to `False`, the weights differ)."""
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    del cfg["seed_everything"]
    cfg["trainer"].update(callbacks=[], max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    small = tmp_path / "no_seed.yaml"
    small.write_text(yaml.safe_dump(cfg))
    fits = [run(["fit", "--config", str(small)]) for _ in range(2)]
    weights = [{k: v.detach().clone() for k, v in f.model.state_dict().items()} for f in fits]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for f in fits:
        saved = yaml.safe_load((Path(f.trainer.log_dir) / "config.yaml").read_text())
        assert saved["seed_everything"] == 0, saved["seed_everything"]


def test_the_printed_test_command_keeps_the_lightning_variable(monkeypatch):
    """A unified-package newcomer's fit needed `LIT_ROBUST_LIGHTNING=lightning`; the `lit-robust test ...` it printed
    left the variable out, and run as printed it was refused."""
    from lit_robust.cli import test_command

    monkeypatch.delenv("LIT_ROBUST_LIGHTNING", raising=False)
    assert test_command(["fit", "--config", "c.yaml"]) == "lit-robust test --config c.yaml --ckpt_path last"
    monkeypatch.setenv("LIT_ROBUST_LIGHTNING", "lightning")
    assert test_command(["fit", "--config", "c.yaml"]) == ("LIT_ROBUST_LIGHTNING=lightning lit-robust test --config "
                                                           "c.yaml --ckpt_path last")


@pytest.mark.parametrize(("config", "command"), [
    ("itlm_table.yaml", "python examples/find_bad_rows_in_a_csv.py --write breast_cancer_noisy.csv"),
    ("itlm_image_folder.yaml", "python examples/find_misfiled_images.py --write digit_folders"),
])
def test_a_missing_file_that_the_configs_comment_writes_names_the_command(tmp_path, monkeypatch, capsys, config,
                                                                          command):
    """`lit-robust fit --config configs/itlm_table.yaml` from a fresh folder said "no such file" of the table that the
    config's own comment makes with `--write` (a newcomer's first hour)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(REPO / "configs" / config)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"(a relative path is read from the current folder, {tmp_path}) (the config's comment writes it: " \
           f"`{command}`).\n" in err


def _sleep_long():
    import time

    time.sleep(60)


def test_a_sigterm_to_a_ddp_spawn_command_reaches_its_started_processes_and_ends_the_wait():
    """`kill -TERM` of `lit-robust fit --trainer.strategy ddp_spawn` ended the command with 143 at once and left its
    two processes training to the end as orphans (a DDP newcomer's). Forwarded, they stop; and since Lightning ends
    their fits with a SystemExit (exit status 0), this process raises the stop itself instead of waiting for ever for
    their results."""
    import multiprocessing
    import os
    import signal

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lit_robust._lightning import forward_sigterm_to_started_processes, sigterm_noted

    child = multiprocessing.get_context("spawn").Process(target=_sleep_long)
    child.start()
    before = signal.getsignal(signal.SIGTERM)
    restore = forward_sigterm_to_started_processes()
    try:
        with pytest.raises(SIGTERMException):
            os.kill(os.getpid(), signal.SIGTERM)
            child.join(30)  # the handler runs at the latest here; it joins the child itself
        assert child.exitcode == -signal.SIGTERM and sigterm_noted()
    finally:
        restore()
        if child.is_alive():
            child.kill()
    assert signal.getsignal(signal.SIGTERM) is before  # put back after the command


def test_a_stop_before_any_checkpoint_of_a_resumed_fit_keeps_the_resume_advice(tmp_path):
    """The "nothing to resume" line is for a fit that wrote no checkpoint; a fit resumed from one (`--ckpt_path`)
    still has it, and `--ckpt_path last` finds it again: told to run the command again, a user would start afresh."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    from lit_robust.cli import _checkpoints_written

    empty = ModelCheckpoint(dirpath=tmp_path / "none")
    assert _checkpoints_written(SimpleNamespace(trainer=SimpleNamespace(ckpt_path=None, callbacks=[empty]))) is False
    assert _checkpoints_written(SimpleNamespace(trainer=SimpleNamespace(ckpt_path="a.ckpt", callbacks=[empty]))) is None
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "epoch=0.ckpt").write_bytes(b"")
    written = ModelCheckpoint(dirpath=tmp_path / "some")
    assert _checkpoints_written(SimpleNamespace(trainer=SimpleNamespace(ckpt_path=None, callbacks=[written]))) is True
    assert _checkpoints_written(None) is None
