"""A user's mistakes through `lit-robust fit`: each ends with exit status != 0, no traceback, and the key named.

Every case starts from a shipped config (shrunk to tiny data, progress bar left at its default) and makes one
mistake, in the YAML or as a command-line override, the way a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lit_robust.cli import main
from tests.conftest import REPO, SHARED_DATA

_DELETE = object()

# check_lr's message (the range as a float32's maximum, 3.4028234663852886e+38, read as noise)
_LR_RANGE = "`lr` must be a number > 0 (at most 3.4e+38, the largest float32)"


def _small(name: str, tmp_path: Path) -> dict:
    cfg = yaml.safe_load((REPO / "configs" / name).read_text())
    trainer = cfg["trainer"]
    trainer.update(default_root_dir=str(tmp_path), accelerator="cpu", logger=False, limit_val_batches=1,
                   limit_train_batches=2)
    trainer["callbacks"] = [c for c in trainer.get("callbacks") or [] if "ModelCheckpoint" not in c["class_path"]]
    trainer["enable_checkpointing"] = False
    for cb in trainer["callbacks"]:
        args = cb.get("init_args") or {}
        if "round_epochs" in args:
            args.update(round_epochs=[1, 1], verbose=False, plot=False)
        if "warmup_epochs" in args:
            args["warmup_epochs"] = 0
    rounds = next((c["init_args"]["round_epochs"] for c in trainer["callbacks"]
                   if "round_epochs" in (c.get("init_args") or {})), None)
    trainer["max_epochs"] = sum(rounds) if rounds else 1
    data = cfg.get("data", {}).get("init_args", {})
    if "root" in data:
        data["root"] = str(SHARED_DATA)
    if "train_size" in data:
        data["train_size"], data["val_size"] = 300, 100
    return cfg


def _refused_fit(cfg: dict, tmp_path: Path, capsys) -> tuple[Path, str]:
    """Write ``cfg`` and ``lit-robust fit`` it: the config's path and stderr, once the fit was refused as a user's
    mistake (exit status 2, no traceback)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    return path, err


def _refused_cli(config: str, tmp_path: Path, capsys, *args: str) -> str:
    """``lit-robust fit`` of the small ``config`` with the command-line ``args``: its stdout and stderr, once the fit
    was refused as a user's mistake (exit status 2, no traceback)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_small(config, tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), *args])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text, text
    return text


def _set(cfg: dict, path: str, value: Any) -> None:
    """``_set(cfg, "trainer.callbacks[0].init_args.keep_ratio", 1.5)``; ``_DELETE`` removes the key."""
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    node = cfg
    for k in keys[:-1]:
        node = node[k] if isinstance(k, int) else node.setdefault(k, {})
    if value is _DELETE:
        del node[keys[-1]]
    elif isinstance(node, list) and keys[-1] == len(node):
        node.append(value)
    else:
        node[keys[-1]] = value


DIGITS = "itlm_digits.yaml"
PRL = "prl_mnist.yaml"
PATCH = "backdoor_patch_prl_at.yaml"
MOONS = "robust_realnvp_moons.yaml"
REG = "prl_regression.yaml"
COT = "coteaching_mnist.yaml"
RCA = "rca_mnist.yaml"
FINETUNE = "simclr_finetune_prl.yaml"
SIMCLR = "simclr_pretrain.yaml"
CB0, CB1 = "trainer.callbacks[0].init_args", "trainer.callbacks[1].init_args"
M, D = "model.init_args", "data.init_args"

# (id, config, YAML edits, command-line overrides, what the message must name)
CASES = [
    # ITLM
    ("itlm-keep-ratio-above-1", DIGITS, {f"{CB0}.keep_ratio": 1.5}, [], "keep_ratio"),
    ("itlm-keep-ratio-zero", DIGITS, {}, ["--trainer.callbacks.init_args.keep_ratio", "0"], "keep_ratio"),
    ("itlm-keep-ratio-text", DIGITS, {f"{CB0}.keep_ratio": "half"}, [], "keep_ratio"),
    # a hurried CLI user's `"auto "` read "expected a number or 'auto', got 'auto'": the space was dropped
    ("itlm-keep-ratio-auto-with-a-space", DIGITS, {f"{CB0}.keep_ratio": "auto "}, [],
     "expected a number or 'auto', got 'auto ' (did you mean 'auto'?)"),
    ("itlm-keep-ratio-auto-in-capitals", DIGITS, {}, ["--trainer.callbacks.init_args.keep_ratio", "AUTO"],
     "got 'AUTO' (did you mean 'auto'?)"),
    ("itlm-round-epochs-zero", DIGITS, {f"{CB0}.round_epochs": [0, 2]}, [], "round_epochs"),
    ("itlm-round-epochs-scalar", DIGITS, {f"{CB0}.round_epochs": 6}, [], "round_epochs"),
    # a CLI user's `round_epochs 2,2` got "Expected a <class 'collections.abc.Sequence'>" and no word of brackets
    ("itlm-round-epochs-without-brackets", DIGITS, {}, ["--trainer.callbacks.init_args.round_epochs", "2,2"],
     "Got value: 2,2. A list is written in brackets, e.g. [2,2] (on the command line quoted: '[2,2]')."),
    ("itlm-round-epochs-scalar-says-brackets", DIGITS, {f"{CB0}.round_epochs": 6}, [],
     "Got value: 6. A list is written in brackets, e.g. [6]"),
    ("itlm-round-epochs-vs-max-epochs", DIGITS, {}, ["--trainer.max_epochs", "5"], "round_epochs"),
    ("itlm-unknown-argument", DIGITS, {f"{CB0}.keep_ration": 0.5}, [], "keep_ration"),
    ("itlm-monitor-never-logged", DIGITS, {f"{CB0}.monitor": "val_accuracy"}, [], "monitor"),
    ("itlm-keeps-nothing", DIGITS, {f"{CB0}.keep_ratio": 0.001, "data.init_args.train_size": 100}, [], "keep_ratio"),
    ("itlm-unknown-on-collapse", DIGITS, {f"{CB0}.on_collapse": "ignore"}, [], "on_collapse"),
    ("itlm-verbose-text", DIGITS, {f"{CB0}.verbose": "loud"}, [], "verbose"),
    ("itlm-unknown-estimator-override", DIGITS, {}, ["--trainer.callbacks.init_args.estimator", "foo"], "estimator"),
    ("itlm-report-dir-not-writable", DIGITS, {f"{CB0}.report_dir": "/dev/null/reports"}, [], "report_dir"),
    ("itlm-report-log-dir-not-writable", DIGITS, {"trainer.default_root_dir": "/dev/null/runs"}, [], "report_dir"),
    ("unknown-callback-class", DIGITS, {"trainer.callbacks[0].class_path": "lit_robust.ITLMM"}, [], "ITLMM"),
    # BatchFilter / AdversarialTrigger / SpectralNorm
    ("filter-drop-ratio-above-half", PRL, {f"{CB0}.drop_ratio": 0.6}, [], "drop_ratio"),
    ("filter-drop-ratio-negative", PRL, {f"{CB0}.drop_ratio": -0.1}, [], "drop_ratio"),
    ("filter-drop-ratio-auto-typo", PRL, {f"{CB0}.drop_ratio": "Auto"}, [], "drop_ratio"),
    ("filter-auto-unknown-estimator", PRL, {f"{CB0}.drop_ratio": "auto", f"{CB0}.estimator": "kde"}, [], "estimator"),
    # the key named is the argument given, not the first of the three the message lists (it was `estimator`)
    ("filter-reestimate-without-auto", PRL, {f"{CB0}.reestimate": True}, [],
     "callbacks[0].init_args.reestimate (lit_robust.BatchFilter): `reestimate`, `estimator`"),
    ("itlm-auto-margin-without-auto", DIGITS, {f"{CB0}.auto_margin": 0.1}, [],
     "callbacks[0].init_args.auto_margin (lit_robust.ITLM): `auto_margin`, `estimator`"),
    ("filter-unknown-rule", PRL, {f"{CB0}.rule": "prll"}, [], "rule"),
    ("filter-unknown-scope", PRL, {f"{CB0}.scope": "world"}, [], "scope"),
    ("filter-negative-warmup", PRL, {f"{CB0}.warmup_epochs": -1}, [], "warmup_epochs"),
    # the default is None (3 epochs with "auto"): the message names it among the allowed values
    ("filter-auto-negative-warmup", PRL, {f"{CB0}.drop_ratio": "auto", f"{CB0}.warmup_epochs": -2}, [],
     "`warmup_epochs` must be an integer >= 0 or None (the default: 3 epochs with drop_ratio='auto', 0 with a number)"),
    ("filter-unknown-loss", PRL, {f"{CB0}.loss": "hinge"}, [], "loss"),
    ("filter-unknown-report-format", PRL, {f"{CB0}.report_format": "xlsx"}, [], "report_format"),
    ("trigger-negative-tau", PATCH, {f"{CB1}.tau": -0.1}, [], "tau"),
    ("trigger-unknown-filter-in", PATCH, {f"{CB1}.filter_in": "middle"}, [], "filter_in"),
    ("trigger-bad-value-range", PATCH, {f"{CB1}.value_range": "pixels"}, [], "value_range"),
    ("spectral-k-zero", FINETUNE, {f"{CB1}.k": 0.0}, [], "k"),
    ("spectral-unknown-mode", FINETUNE, {f"{CB1}.mode": "squash"}, [], "mode"),
    # models
    ("model-unknown-backbone", PRL, {f"{M}.backbone": "resnet99"}, [], "backbone"),
    ("model-negative-lr", PRL, {f"{M}.lr": -0.1}, [], "lr"),
    ("model-lr-text", PRL, {}, ["--model.init_args.lr", "fast"], "lr"),
    # a finite `lr` beyond float32's range ended in torch's "cannot be converted to type float without overflow"
    # traceback from the first optimizer step
    *((f"model-lr-beyond-float32-{cls}", config, {f"{M}.lr": 1.7e308}, [],
       f"model.init_args.lr (lit_robust.{cls}): {_LR_RANGE}, got 1.7e+308.")
      for config, cls in ((PRL, "ImageClassifier"), (REG, "MLPRegressor"), (MOONS, "RobustRealNVP"), (RCA, "RCA"),
                          (SIMCLR, "SimCLR"), (FINETUNE, "LinearProbe"))),
    ("model-unknown-argument", PRL, {f"{M}.learning_rate": 0.1}, [], "learning_rate"),
    ("model-unknown-class", PRL, {"model.class_path": "lit_robust.ImageClassifer"}, [], "ImageClassifer"),
    ("model-image-size-vs-data", PRL, {f"{M}.backbone": "mlp", f"{M}.image_size": 8}, [], "image_size"),
    ("model-classes-vs-data", PRL, {f"{M}.num_classes": 5}, [], "num_classes"),
    ("model-momentum-above-1", PRL, {f"{M}.momentum": 1.5}, [], "momentum"),
    ("model-milestones-scalar", PRL, {f"{M}.milestones": 5}, [], "milestones"),
    ("model-negative-weight-decay", PATCH, {f"{M}.weight_decay": -0.01}, [], "weight_decay"),
    ("model-unknown-optimizer", PATCH, {f"{M}.optimizer": "adamw2"}, [], "optimizer"),
    ("regressor-in-features-vs-data", REG, {f"{M}.in_features": 100}, [], "in_features"),
    ("regressor-out-features-vs-data", REG, {f"{M}.out_features": 3}, [], "out_features"),
    ("coteaching-drop-ratio", COT, {f"{M}.drop_ratio": 0.7}, [], "drop_ratio"),
    ("coteaching-unknown-rule", COT, {f"{M}.rule": "co"}, [], "rule"),
    ("flow-dim-vs-data", MOONS, {f"{M}.dim": 3}, [], "dim"),
    ("flow-drop-ratio", MOONS, {f"{M}.drop_ratio": 0.9}, [], "drop_ratio"),
    ("flow-negative-k", MOONS, {f"{M}.k": -1.0}, [], "k"),
    ("rca-dim-vs-pca", RCA, {f"{M}.dim": 16}, [], "dim"),
    ("simclr-negative-temperature", SIMCLR, {f"{M}.temperature": -0.5}, [], "temperature"),
    ("probe-missing-backbone-file", FINETUNE, {f"{M}.backbone_checkpoint": "no/such/file.ckpt"}, [],
     "backbone_checkpoint"),
    # data
    ("data-clean-ratio-above-1", PRL, {f"{D}.clean_ratio": 1.5}, [], "clean_ratio"),
    ("data-unknown-noise", PRL, {f"{D}.noise": "gaussian"}, [], "noise"),
    ("data-missing-root", PRL, {f"{D}.root": "/no/such/folder"}, [], "root"),
    ("data-train-size-zero", PRL, {f"{D}.train_size": 0}, [], "train_size"),
    ("data-val-size-too-big", PRL, {f"{D}.val_size": 100000}, [], "val_size"),
    ("data-batch-size-zero", PRL, {f"{D}.batch_size": 0}, [], "batch_size"),
    ("data-val-size-takes-whole-pool", DIGITS, {f"{D}.val_size": 1300}, [], "val_size"),
    ("data-no-labelled-sample", SIMCLR, {f"{D}.labeled_fraction": 0.00001}, [], "labeled_fraction"),
    ("backdoor-metrics-on-data-without-attack", PRL, {"trainer.callbacks[1]": {
        "class_path": "lit_robust.BackdoorMetrics", "init_args": {"target": "datamodule"}}}, [], "trigger"),
    ("data-unknown-attack", PATCH, {f"{D}.attack": "sticker"}, [], "attack"),
    ("data-poison-rate-above-1", PATCH, {f"{D}.poison_rate": 1.2}, [], "poison_rate"),
    ("data-contamination-negative", MOONS, {f"{D}.contamination": -0.1}, [], "contamination"),
    ("data-unknown-corruption", REG, {f"{D}.corruption": "flip"}, [], "corruption"),
    ("data-unknown-argument", PRL, {f"{D}.trainsize": 300}, [], "trainsize"),
    # trainer and Lightning's own callbacks
    ("trainer-negative-max-epochs", PRL, {}, ["--trainer.max_epochs", "-3"], "max_epochs"),
    ("trainer-unknown-key", PRL, {"trainer.max_epoch": 3}, [], "max_epoch"),
    ("callback-override-misspelt", PRL, {}, ["--trainer.callbacks.init_args.drop_rato", "0.3"],
     "the last callback of the list, lit_robust.BatchFilter, takes no `drop_rato`: did you mean 'drop_ratio'? BatchFilter takes"),
    # Lightning's own checks while the Trainer is built (a newcomer got 35-line tracebacks, exit 1)
    ("trainer-strategy-misspelt", PRL, {}, ["--trainer.strategy", "dpp"], "trainer.strategy: You selected an invalid strategy name"),
    # a hurried CLI user tried to pick ITLM out of a list closed by a ModelCheckpoint: "did you mean
    # --trainer.callbacks.help?" and a 15-line Union report
    ("callback-picked-by-index", DIGITS, {"trainer.callbacks[1]": {
        "class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}},
     ["--trainer.callbacks[0].init_args.round_epochs", "[1,1]"],
     "--trainer.callbacks[0].init_args.round_epochs: the command line cannot pick a callback of the list by its "
     "position; `--trainer.callbacks.init_args.X` sets `X` of the last callback"),
    ("callback-picked-by-dotted-index", DIGITS, {"trainer.callbacks[1]": {
        "class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}},
     ["--trainer.callbacks.0.init_args.round_epochs", "[1,1]"],
     "--trainer.callbacks.0.init_args.round_epochs: the command line cannot pick a callback of the list by its "
     "position"),
    ("trainer-strategy-suggested", PRL, {}, ["--trainer.strategy", "ddp_spwn"], "(did you mean 'ddp_spawn'?)"),
    ("trainer-accelerator-suggested", PRL, {}, ["--trainer.accelerator", "cpuu"], "(did you mean 'cpu'?)"),
    ("trainer-devices-text", PRL, {}, ["--trainer.devices", "two"], "trainer.devices: `devices` selected with `CPUAccelerator`"),
    ("trainer-abbreviated-key-override", PRL, {}, ["--trainer.max_epoch", "3"], "unrecognized arguments: --trainer.max_epoch"),
    ("checkpoint-monitor-never-logged", PRL,
     {"trainer.enable_checkpointing": True, "trainer.callbacks[1]": {
         "class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"monitor": "val_los"}}}, [],
     "val_los"),
    # ITLM logs `itlm/*` when a round ends: Lightning stopped the fit at round 0's first validation, asking whether
    # the module logs the key (an MLOps newcomer)
    ("checkpoint-monitors-an-itlm-metric", DIGITS,
     {"trainer.enable_checkpointing": True, "trainer.callbacks[1]": {
         "class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"monitor": "itlm/clean_precision"}}},
     [], "`ModelCheckpoint(monitor='itlm/clean_precision')`: ITLM logs its `itlm/*` metrics once per round, in the "
         "epoch the round ends"),
    ("early-stopping-monitors-an-itlm-metric", DIGITS, {"trainer.callbacks[1]": {
        "class_path": "pytorch_lightning.callbacks.EarlyStopping", "init_args": {"monitor": "itlm/kept"}}},
     [], "`EarlyStopping(monitor='itlm/kept')`: ITLM logs its `itlm/*` metrics once per round"),
    # EarlyStopping's monitor typo raised a RuntimeError, a traceback (ModelCheckpoint's is one line; a reviewer's)
    ("early-stopping-monitor-never-logged", PRL, {"trainer.callbacks[1]": {
        "class_path": "pytorch_lightning.callbacks.EarlyStopping", "init_args": {"monitor": "val_accuracy"}}},
     [], "trainer.callbacks[1] (pytorch_lightning.callbacks.EarlyStopping): Early stopping conditioned on metric "
         "`val_accuracy` which is not available"),
    # `limit_train_batches 0` skips the fit loop: ITLM's report ended in an AssertionError traceback (a reviewer's)
    ("limit-train-batches-zero", DIGITS, {}, ["--trainer.limit_train_batches", "0"],
     "`limit_train_batches` must be > 0 (a number of batches, or a fraction of each epoch's), got 0"),
    # a class entry written without `class_path`, or with its arguments beside it (jsonargparse reported an attempt
    # at Lightning's base class: "Option 'lr' is not accepted")
    ("model-without-class-path", PRL, {"model": {"lr": 0.1}}, [], "`model:` needs `class_path:`"),
    ("data-arguments-beside-class-path", PRL, {"data.batch_size": 32}, [],
     "`data:` sets 'batch_size' beside `class_path: lit_robust.MNISTDataModule`; a class's arguments go one level "
     "down, under `init_args:`"),
    ("callback-without-class-path", PRL, {"trainer.callbacks[0]": {"drop_ratio": 0.3}}, [],
     "a callback of `trainer.callbacks` needs `class_path:`, the class to build (e.g. `lit_robust.BatchFilter`"),
    # misspelt names in the YAML get the suggestion the command line gets (an NLP newcomer's m04-m06, m18)
    ("callback-class-path-misspelt", PRL, {"trainer.callbacks[0].class_path": "lit_robust.BatchFiltr"}, [],
     "module 'lit_robust' has no attribute 'BatchFiltr' (did you mean 'lit_robust.BatchFilter'?)"),
    ("model-class-path-misspelt", PRL, {"model.class_path": "lit_robust.ImageClasifier"}, [],
     "(did you mean 'lit_robust.ImageClassifier'?)"),
    ("trainer-key-misspelt-in-yaml", PRL, {"trainer.max_epoch": 3}, [],
     "does not accept option 'trainer.max_epoch' (did you mean trainer.max_epochs?)"),
    # under `--print_config` the key is checked by the top parser, by its group: the hint was lost (a CLI newcomer's)
    ("trainer-key-misspelt-in-yaml-print-config", PRL, {"trainer.max_epoch": 3}, ["--print_config"],
     "Group 'trainer' does not accept option 'max_epoch' (did you mean trainer.max_epochs?)"),
    ("missing-config-file", PRL, {}, ["--config", "no_such_config.yaml"], "no_such_config.yaml"),
    ("fit-ckpt-path-missing-file", PRL, {}, ["--ckpt_path", "no_such.ckpt"], "ckpt_path"),
    ("no-data-section", PRL, {"data": _DELETE}, [],
     "the config has no `data:` section: name a LightningDataModule, e.g. `data: {class_path: "
     "lit_robust.MNISTDataModule, init_args: {...}}` (or `--data lit_robust.MNISTDataModule` on the command line)"),
    ("no-model-section", PRL, {"model": _DELETE}, [], "the config has no `model:` section: name a LightningModule"),
    # RobustRealNVP's unwritable `report_dir` lacked the `model.init_args.report_dir (...)` prefix RCA's has: the
    # trimming filter the module adds itself raises it, and it is no config entry
    *((f"unwritable-report-dir-{cls}", config, {f"{M}.report_dir": "/dev/null/reports"}, [],
       f"lit-robust fit: error: model.init_args.report_dir (lit_robust.{cls}): `report_dir` must be a folder the "
       "report can be written into, got '/dev/null/reports'")
      for config, cls in ((MOONS, "RobustRealNVP"), (RCA, "RCA"))),
    # Lightning's own error inside a fit was named `model (lit_robust.RobustRealNVP)`: the model holds the running
    # Trainer, which the fallback for a callback an entry holds took for the entry's own
    ("lightning-error-inside-the-fit", MOONS, {"trainer.limit_train_batches": 0.0001}, [],
     "lit-robust fit: error: trainer.limit_train_batches: You requested to check 0.0001"),
    # without ITLM (whose own check is one line), Lightning's ValueError from its fit loop's data set-up was a traceback
    ("val-check-interval-above-the-batches", MOONS, {"trainer.val_check_interval": 1000}, [],
     "lit-robust fit: error: trainer.val_check_interval:  `val_check_interval` (1000) must be less than or equal"),
]


def test_table_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-robust"])


@pytest.mark.parametrize(("config", "edits", "overrides", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config_ends_cleanly(tmp_path, capsys, config, edits, overrides, named, one_torch_thread):
    cfg = _small(config, tmp_path)
    for path, value in edits.items():
        _set(cfg, path, value)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_info:  # any other exception is a traceback for the user
        main(["fit", "--config", str(bad), *overrides])
    out = capsys.readouterr()
    text = out.out + out.err
    assert exit_info.value.code not in (0, None), text
    assert "Traceback" not in text, text
    assert named in text, text


@pytest.mark.parametrize("kind", ["yaml", "garbage", "empty", "plain_dict"])
@pytest.mark.parametrize("command", ["fit", "test"])
def test_a_ckpt_path_that_is_no_checkpoint_is_one_line(tmp_path, capsys, kind, command):
    """An auditor's `--ckpt_path` to the config itself, a garbage or empty file, or a `torch.save`d dict: 24-line
    tracebacks ending in torch's advice to load with `weights_only=False` (which runs what the file holds)."""
    import torch

    bad = tmp_path / f"{kind}.ckpt"
    if kind == "yaml":
        bad.write_text("trainer:\n  max_epochs: 2\n")
    elif kind == "garbage":
        bad.write_bytes(bytes(range(256)) * 2)
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        torch.save({"a": 1}, bad)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(_small(PRL, tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(config), "--ckpt_path", str(bad)])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text and "weights_only" not in text, text
    expected = ("is not a Lightning checkpoint: it holds a dict with keys ['a'], with no `state_dict`"
                if kind == "plain_dict" else "is not a checkpoint file (torch could not read it: " +
                {"yaml": "not a file written by `torch.save`", "garbage": "Unsupported", "empty": "the file is empty"}[kind])
    assert f"`--ckpt_path {bad}` {expected}" in text, text


def test_a_command_whose_data_give_no_batch_says_so(tmp_path, capsys, one_torch_thread):
    """An auditor's `validate --data.init_args.val_size 0` exited 0 after its checkpoint notes, with no word that
    nothing was validated."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(_small(DIGITS, tmp_path)))
    main(["validate", "--config", str(config), "--data.init_args.val_size", "0"])
    assert ("lit-robust validate: note: the data gave no validation batches (its `val_size` of 0, say), so nothing "
            "ran and no metric was computed.") in capsys.readouterr().err
    main(["validate", "--config", str(config)])
    assert "nothing ran" not in capsys.readouterr().err


def test_a_tab_in_the_yaml_is_named(tmp_path, capsys):
    """A tab indenting a key read "found character that cannot start any token", nothing about tabs."""
    bad = tmp_path / "tab.yaml"
    bad.write_text("trainer:\n\tmax_epochs: 2\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(bad)])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert "line 2, column 1" in text and "(a tab? YAML indents with spaces only)" in text


@pytest.mark.parametrize(("content", "named"), [
    (b"PK\x03\x04archive/data.pkl\x80\x02", "byte 20 (0x80) is not UTF-8. It looks like a checkpoint: pass it as "
                                             "`--ckpt_path`"),
    ("trainer:\n  max_epochs: 1\n".encode("utf-16"), "byte 0 (0xff) is not UTF-8. It is UTF-16: save it as UTF-8"),
    ("# r\xe9sum\xe9\ntrainer:\n  max_epochs: 1\n".encode("cp1252"), "byte 3 (0xe9) is not UTF-8."),
])
def test_a_config_that_is_no_utf8_text_is_one_line(tmp_path, capsys, content, named):
    """A checkpoint given as `--config`, a YAML saved as UTF-16 (Notepad) or cp1252 ended in a UnicodeDecodeError
    traceback (a reviewer's)."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(bad)])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert f"lit-robust fit: error: `--config` must be a YAML or JSON file in UTF-8 text, got '{bad}', whose " in text
    assert named in text


@pytest.mark.parametrize("command", ["fit", "test"])
def test_a_ckpt_path_that_is_a_folder_is_named_so(tmp_path, capsys, command):
    """`--ckpt_path adir`, a folder, read "'adir' does not exist" (a reviewer's)."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(_small(PRL, tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(config), "--ckpt_path", str(tmp_path)])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert f"`--ckpt_path` must be an existing checkpoint file, `last` or `best`; '{tmp_path}' is a folder." in text


def test_a_log_folder_that_cannot_be_made_and_a_missing_gpu_name_their_trainer_argument(tmp_path, capsys):
    """`--trainer.default_root_dir` under a file read "[Errno 20] Not a directory: ...", and `--trainer.accelerator gpu`
    on a machine without one "No supported gpu backend found!": neither named the argument (a reviewer's)."""
    import torch

    (tmp_path / "afile").write_text("x")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**_small(PRL, tmp_path), "trainer": {**_small(PRL, tmp_path)["trainer"],
                                                                          "logger": True}}))
    cases = [(["--trainer.default_root_dir", str(tmp_path / "afile" / "logs")],
              f"trainer.default_root_dir: must be a folder that can be created and written into, got "
              f"'{tmp_path / 'afile' / 'logs'}': [Errno 20] Not a directory")]
    try:  # a folder that exists and cannot be written, even by root: /sys, mounted read-only (PermissionError)
        os.makedirs("/sys/lit_robust_probe")
    except PermissionError:
        # a CLI user's read-only mount ended in a 40-line traceback (only missing folders were one line)
        cases.append((["--trainer.default_root_dir", "/sys/x"],
                      "trainer.default_root_dir: must be a folder that can be created and written into, got '/sys/x': "
                      "[Errno "))
    except OSError:
        pass
    if not torch.cuda.is_available():
        cases.append((["--trainer.accelerator", "gpu"],
                      "trainer.accelerator: No supported gpu backend found! torch finds no GPU on this machine: use "
                      "`--trainer.accelerator cpu`"))
    for extra, named in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config), *extra])
        text = "".join(capsys.readouterr())
        assert exit_info.value.code == 2 and "Traceback" not in text and named in text, text


@pytest.mark.parametrize("command", ["fit", "test"])
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_everything_out_of_range_is_one_line(tmp_path, capsys, command, seed):
    """`--seed_everything -1` (or 2**32) passed the parser and ended in Lightning's 30-line traceback, "-1 is not in
    bounds, numpy accepts from 0 to 4294967295", raised inside LightningCLI's constructor (a CLI sweep's)."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(_small(DIGITS, tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(config), "--seed_everything", seed])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text, text
    assert (f"lit-robust {command}: error: `seed_everything` must be true, false or an integer in [0, 4294967295] "
            f"(the range Lightning's `seed_everything` takes), got {seed}.") in text, text


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("accumulate_grad_batches", "0", "an integer >= 1 (the batches whose gradients make one optimizer step)"),
    ("accumulate_grad_batches", "-1", "an integer >= 1 (the batches whose gradients make one optimizer step)"),
    ("gradient_clip_val", "-1", "a finite number >= 0, or null (0 and null clip nothing)"),
    ("gradient_clip_val", ".inf", "a finite number >= 0, or null (0 and null clip nothing)"),
    ("val_check_interval", "0",
     "an integer >= 1 (training batches), a float in [0.0, 1.0] (that fraction of each epoch), or a duration"),
    ("check_val_every_n_epoch", "0", "an integer >= 1, or null (validation every `val_check_interval` batches)"),
    ("check_val_every_n_epoch", "-1", "an integer >= 1, or null (validation every `val_check_interval` batches)"),
    ("log_every_n_steps", "-1", "an integer >= 0, or null (0 logs no training step)"),
    ("num_sanity_val_steps", "-2", "an integer >= 0, -1 (every validation batch), or null"),
    ("min_epochs", "-5", "an integer >= 0, or null"),
    ("min_steps", "-5", "an integer >= 0, or null"),
])
def test_a_trainer_number_lightning_does_not_check_is_one_line(tmp_path, capsys, key, value, allowed):
    """`--trainer.accumulate_grad_batches 0` ended the first step in a traceback ("ZeroDivisionError: integer modulo
    by zero"); `-1`, and a `gradient_clip_val` of -1 (which Lightning skips: no clipping), were taken without a word
    (a CLI sweep's). So were `val_check_interval 0` and `check_val_every_n_epoch 0` (the same ZeroDivisionError),
    `check_val_every_n_epoch -1`, `log_every_n_steps -1` (logged every step), `num_sanity_val_steps -2` (no sanity
    check) and a negative `min_epochs`/`min_steps` (a second sweep's)."""
    text = _refused_cli(DIGITS, tmp_path, capsys, f"--trainer.{key}", value)
    shown = {".inf": "inf"}.get(value, value)
    assert f"lit-robust fit: error: trainer.{key}: `{key}` must be {allowed}, got {shown}." in text, text
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(("key", "value", "said"), [
    ("devices", "0", "trainer.devices: `Trainer(devices='0')` value is not a valid input using cpu accelerator."),
    ("max_time", "abc", "trainer.max_time: `Timer(duration='abc')` is not a valid duration."),
])
def test_lightnings_refusal_of_a_trainer_value_names_the_argument(tmp_path, capsys, key, value, said):
    """`--trainer.max_time abc` was refused as "`Timer(duration='abc')` is not a valid duration", naming no argument
    the user typed, and `--trainer.devices 0` named it only inside "`Trainer(devices='0')`" (a second CLI sweep's)."""
    text = _refused_cli(DIGITS, tmp_path, capsys, f"--trainer.{key}", value)
    assert f"lit-robust fit: error: {said}" in text, text


_KEEP = "trainer.callbacks.init_args.keep_ratio (lit_robust.ITLM): `keep_ratio` must be in (0, 1], got {} (or 'auto'"


@pytest.mark.parametrize(("config", "key", "value", "said"), [
    (DIGITS, "model.init_args.lr", "nan", f"model.init_args.lr (lit_robust.ImageClassifier): {_LR_RANGE}, got nan."),
    (DIGITS, "model.init_args.lr", "inf", f"model.init_args.lr (lit_robust.ImageClassifier): {_LR_RANGE}, got inf."),
    (DIGITS, "model.init_args.lr", "-inf",
     f"model.init_args.lr (lit_robust.ImageClassifier): {_LR_RANGE}, got -inf."),
    (DIGITS, "model.init_args.lr", "abc",
     f"model.init_args.lr (lit_robust.ImageClassifier): {_LR_RANGE}, got 'abc' (a str)."),
    (DIGITS, "model.init_args.weight_decay", "-1e-4", "model.init_args.weight_decay (lit_robust.ImageClassifier): "
     "`weight_decay` must be a number >= 0, got -0.0001."),
    (DIGITS, "trainer.callbacks.init_args.keep_ratio", "nan", _KEEP.format("nan")),
    (DIGITS, "trainer.callbacks.init_args.keep_ratio", "-inf", _KEEP.format("-inf")),
    (DIGITS, "trainer.callbacks.init_args.auto_margin", "inf",
     "trainer.callbacks.init_args.auto_margin (lit_robust.ITLM): `auto_margin` must be in [0, 0.5), got inf."),
    (PRL, "trainer.callbacks.init_args.drop_ratio", "nan",
     "trainer.callbacks.init_args.drop_ratio (lit_robust.BatchFilter): `drop_ratio` must be in [0, 0.5), got nan."),
    (COT, "model.init_args.drop_ratio", "inf",
     "model.init_args.drop_ratio (lit_robust.CoTeaching): `drop_ratio` must be in [0, 0.5), got inf."),
    (DIGITS, "trainer.gradient_clip_val", "nan",
     "trainer.gradient_clip_val: `gradient_clip_val` must be a finite number >= 0, or null (0 and null clip nothing), "
     "got nan."),
    # the class nested in CoTeaching's `model`: it named `model.init_args.lr`, not the key typed (a review's)
    (COT, "model.init_args.model.init_args.lr", "nan",
     f"model.init_args.model.init_args.lr (lit_robust.ImageClassifier): {_LR_RANGE}, got nan."),
    # integer arguments said "Expected a <class 'int'>. Got value: nan" over four lines, the range unsaid (a review's)
    (DIGITS, "data.init_args.val_size", "nan",
     "data.init_args.val_size (lit_robust.DigitsDataModule): `val_size` must be an integer >= 0, got nan."),
    (DIGITS, "data.init_args.batch_size", "2.5",
     "data.init_args.batch_size (lit_robust.DigitsDataModule): `batch_size` must be an integer >= 1, got 2.5."),
    (COT, "model.init_args.model.init_args.hidden", "2.5",
     "model.init_args.model.init_args.hidden (lit_robust.ImageClassifier): `hidden` must be an integer >= 1, got 2.5."),
    (DIGITS, "trainer.check_val_every_n_epoch", "nan", "trainer.check_val_every_n_epoch: `check_val_every_n_epoch` "
     "must be an integer >= 1, or null (validation every `val_check_interval` batches), got nan."),
    (DIGITS, "trainer.max_epochs", "2.5", "trainer.max_epochs: `max_epochs` must be an integer or null, got '2.5'."),
])
def test_a_number_that_is_nan_inf_or_text_is_refused_with_the_arguments_range(tmp_path, capsys, config, key, value,
                                                                               said):
    """`--model.init_args.lr nan` said "Expected a <class 'float'>. Got value: nan" (jsonargparse's YAML reads nan and
    inf as text), `keep_ratio nan` "expected a number or 'auto', got 'nan'", and `lr -inf` or `weight_decay -1e-4`
    "argument --model: expected one argument" (argparse took the value for an option): now the class's own check
    says the argument, its range and the value (a second CLI sweep's)."""
    text = _refused_cli(config, tmp_path, capsys, f"--{key}", value)
    assert f"error: {said}" in text, text
    assert "<class " not in text and "expected one argument" not in text and "Parser key" not in text, text


def test_a_fraction_inside_a_list_of_integers_is_not_said_as_the_whole_argument(tmp_path, capsys):
    """`round_epochs [1.5, 0.5]` is refused by jsonargparse one item at a time: the class's own check would say "got
    1.5" for a list the user typed whole, so the item's own refusal, naming it, stays."""
    text = _refused_cli(DIGITS, tmp_path, capsys, "--trainer.callbacks.init_args.round_epochs", "[1.5, 0.5]")
    assert 'Parser key "round_epochs"' in text and "Got value: 1.5" in text and "got 1.5." not in text, text


@pytest.mark.parametrize(("low", "high"), [("min_epochs", "max_epochs"), ("min_steps", "max_steps")])
def test_a_minimum_above_the_maximum_is_one_line(tmp_path, capsys, low, high):
    """`--trainer.min_epochs 5 --trainer.max_epochs 2` trained 2 epochs without a word: the maximum wins in
    Lightning's loop (a second CLI sweep's)."""
    text = _refused_cli(DIGITS, tmp_path, capsys, f"--trainer.{low}", "5", f"--trainer.{high}", "2")
    assert (f"lit-robust fit: error: trainer.{low}: `{low}` must be at most `{high}` (2; the fit stops there), "
            "got 5.") in text, text


def test_a_root_folder_that_is_no_folder_is_named_under_fast_dev_run(tmp_path, capsys, one_torch_thread):
    """Under `fast_dev_run` no log folder is made first: `--trainer.default_root_dir` under a file failed in the
    config's ModelCheckpoint's `setup`, and the message named `trainer.callbacks[1] (ModelCheckpoint)`, not the
    argument that was wrong (a CLI sweep's)."""
    (tmp_path / "afile").write_text("x")
    cfg = _small(PRL, tmp_path)
    # the shipped config's own ModelCheckpoint, which `_small` drops: it is the one that met the bad root
    cfg["trainer"].update(enable_checkpointing=True, logger=True)
    cfg["trainer"]["callbacks"].append({"class_path": "ModelCheckpoint", "init_args": {"save_last": True}})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    root = tmp_path / "afile" / "logs"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--trainer.fast_dev_run", "true", "--trainer.default_root_dir",
              str(root)])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text, text
    assert (f"lit-robust fit: error: trainer.default_root_dir: must be a folder that can be created and written into, "
            f"got '{root}': [Errno 20] Not a directory") in text, text
    assert "ModelCheckpoint" not in text, text


def test_parser_errors_name_the_command_and_an_empty_or_misplaced_config(tmp_path, capsys):
    """A reviewer's three: every parser error began "usage: lit-robust [-h] [-c CONFIG] {demo,fit,...} ... [options]
    fit" and its tip said to run that line with `--help`; an empty `--config` read "Unexpected config: "; and
    `lit-robust --config X fit` read "Option 'model...' is not accepted before subcommand 'fit'", nothing more."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(_small(PRL, tmp_path)))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    cases = [(["fit", "--nope"], "error: unrecognized arguments: --nope"),
             (["fit", "--config", str(empty)], f"error: --config {str(empty)!r} is empty: a config is a YAML mapping "
                                               "of `model:`, `data:` and `trainer:`"),
             (["--config", str(config), "fit"], "A `--config` before the command is read as a file of commands (`fit:` "
                                                "at its top); a config of `model:`, `data:` and `trainer:` goes after "
                                                "it: `lit-robust fit --config FILE`.")]
    for argv, named in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err and named in err, err
        assert "{demo," not in err and "[options]" not in err, err
        if argv[0] == "fit":
            assert err.startswith("usage: lit-robust fit [--config CONFIG]")
            assert "tip: For details of accepted options run: lit-robust fit --help\n" in err


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_printed(capsys, flag):
    """`lit-robust --version` said "a command is needed" (a reviewer's)."""
    from lit_robust import __version__

    main([flag])
    assert capsys.readouterr().out == f"lit-robust {__version__}\n"

@pytest.mark.parametrize("key", ["trainer.callbacks", "model"])
def test_arguments_beside_class_path_in_a_second_config_are_named(tmp_path, capsys, key):
    """A GAN newcomer changed ITLM's keep_ratio in a second `--config` written `{class_path: lit_robust.ITLM,
    keep_ratio: 0.65}`; merged onto the first config's entry it read "Option 'class_path' is not accepted"."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_small(PRL, tmp_path)))
    cfg = yaml.safe_load(base.read_text())
    if key == "model":
        second = {"model": {"class_path": cfg["model"]["class_path"], "lr": 0.01}}
        name = cfg["model"]["class_path"]
    else:
        entry = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("BatchFilter"))
        second = {"trainer": {"callbacks": [{"class_path": entry["class_path"], "drop_ratio": 0.2}]}}
        name = entry["class_path"]
    stacked = tmp_path / "second.yaml"
    stacked.write_text(yaml.safe_dump(second))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(base), "--config", str(stacked)])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert f"an entry sets its arguments beside `class_path: {name}` (on the command line, or in a second " \
           f"`--config`?): a class's arguments go one level down, under `init_args:`" in text, text
    assert "Option 'class_path' is not accepted" not in text


def test_arguments_beside_class_path_on_the_command_line_name_that_entry(tmp_path, capsys):
    """A CLI newcomer's `--trainer.callbacks '[{"class_path": "lit_robust.BatchFilter", "drop_ratio": 0.3}]'` over
    the digits config was merged onto its ITLM entry, and the slip was said to be beside `class_path:
    lit_robust.ITLM`, the config's own, well-written entry."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_small(DIGITS, tmp_path)))
    assert yaml.safe_load(base.read_text())["trainer"]["callbacks"][0]["class_path"].endswith("ITLM")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(base), "--trainer.callbacks",
              '[{"class_path": "lit_robust.BatchFilter", "drop_ratio": 0.3}]'])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert "Problem with given class_path 'lit_robust.BatchFilter':" in text, text
    assert "beside `class_path: lit_robust.BatchFilter` (on the command line" in text, text
    assert "ITLM" not in text.partition("error:")[2], text


def _a_logger_whose_package_is_missing() -> str | None:
    import importlib.util

    needs = {"WandbLogger": "wandb", "CometLogger": "comet_ml", "NeptuneLogger": "neptune", "MLFlowLogger": "mlflow"}
    return next((cls for cls, package in needs.items() if importlib.util.find_spec(package) is None), None)


def test_a_logger_list_with_a_package_missing_is_named(tmp_path, capsys):
    """A release checker's `logger: [CSVLogger, WandbLogger]` still ended in 72 lines: jsonargparse keeps Lightning's
    message only as text there."""
    logger = _a_logger_whose_package_is_missing()
    if logger is None:
        pytest.skip("every logger package is installed here")
    cfg = _small(PRL, tmp_path)
    cfg["trainer"]["logger"] = [{"class_path": "CSVLogger", "init_args": {"save_dir": str(tmp_path)}},
                                {"class_path": logger}]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path)])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text, text
    assert f"error: `pytorch_lightning.loggers.{logger}`: Requirement '" in text and "pip install" in text, text


def test_a_logger_whose_package_is_missing_is_named(tmp_path, capsys):
    """`--trainer.logger WandbLogger` without wandb installed ended in jsonargparse's 70-line Union report, exit 1
    (an MLOps newcomer): Lightning's own message and pip hint are the whole error now, under the logger's key."""
    logger = _a_logger_whose_package_is_missing()
    if logger is None:
        pytest.skip("every logger package is installed here")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_small(PRL, tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(cfg), "--trainer.logger", logger])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text, text
    assert f"error: trainer.logger (pytorch_lightning.loggers.{logger}): Requirement '" in text, text
    assert "not met" in text and "pip install" in text, text


def test_functions_without_type_hints_are_accepted_by_their_import_path(tmp_path, capsys, monkeypatch):
    """A backdoor user's `trigger: mymodel.white_patch` and a segmentation user's `loss: segmodel.pixel_ce` (plain
    functions, no type hints) were refused: jsonargparse wants a function's return annotation to match the argument's
    (the docs told them to add type hints). The arguments now ask for a function of any return type."""
    (tmp_path / "mymodel_unannotated.py").write_text(
        "import torch.nn.functional as F\n"
        "def white_patch(x):\n    x = x.clone()\n    x[..., -3:, -3:] = 1.0\n    return x\n"
        "def loss(o, t):\n    return F.cross_entropy(o, t, reduction='none')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _small(PATCH, tmp_path)
    _set(cfg, f"{D}.trigger", "mymodel_unannotated.white_patch")
    _set(cfg, f"{D}.attack", None)
    _set(cfg, f"{CB0}.loss", "mymodel_unannotated.loss")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(good)])
    out = capsys.readouterr()
    assert "train_loss" in out.out and "Traceback" not in out.err  # it trained


@pytest.mark.parametrize(("path", "reason"), [("mymodel_typo.lsos", "module 'mymodel_typo' has no attribute 'lsos'"),
                                              ("no_such_module.loss", "No module named 'no_such_module'")])
def test_a_function_path_that_does_not_import_is_named_with_the_reason(tmp_path, capsys, monkeypatch, path, reason):
    """The segmentation user's message read "expected 'ce', 'mse' or collections.abc.Callable[[torch.Tensor,
    torch.Tensor] or torch.Tensor or null", and dropped why the path did not do."""
    (tmp_path / "mymodel_typo.py").write_text("def loss(o, t):\n    return o\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _small(PATCH, tmp_path)
    _set(cfg, f"{CB0}.loss", path)
    err = _refused_fit(cfg, tmp_path, capsys)[1]
    assert (f"expected 'ce', 'mse' or a function (its import path, e.g. mymodule.my_function) or null, got {path!r} "
            f"(as a function: {reason}") in err
    assert err.count("is looked up in the current folder") == (1 if "No module" in reason else 0)


def test_a_message_is_said_by_the_first_process_of_a_command_only(tmp_path, monkeypatch):
    """Under DDP each process meets the same config mistake; the first to say a message says it, the others keep
    quiet, and a message only one process meets is still said."""
    from lit_robust import cli

    monkeypatch.setattr(cli.tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv(cli.RUN_ID_VARIABLE, "run-a")
    assert cli.first_process_to_say("error: x") and cli.first_process_to_say("error: x")  # one process: always
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cli.first_process_to_say("error: x")
    assert not cli.first_process_to_say("error: x")  # another process of the same command
    assert cli.first_process_to_say("error: y")  # another message
    monkeypatch.setenv(cli.RUN_ID_VARIABLE, "run-b")
    assert cli.first_process_to_say("error: x")  # another command
    markers = sorted(tmp_path.glob("lit-robust-said-*"))
    assert len(markers) == 3 and all(m.stat().st_mode & 0o777 == 0o600 for m in markers)
    # nothing can tell when a command's last process has spoken: its markers go when a later command finds them
    # older than an hour (a reviewer found them left in /tmp, one per failing DDP command)
    old = time.time() - 2 * 3600
    for m in markers[:2]:
        os.utime(m, (old, old))
    assert cli.first_process_to_say("error: z")
    assert not markers[0].exists() and not markers[1].exists() and markers[2].exists()
    assert len(list(tmp_path.glob("lit-robust-said-*"))) == 2  # run-b's two


def test_torchrun_launches_with_one_run_id_are_told_apart(tmp_path, monkeypatch):
    """A fixed `--rdzv-id` (or a job id) gives every torchrun launch the same TORCHELASTIC_RUN_ID: the second
    launch's error went unsaid by every process. The agent's pid, the processes' parent, tells launches apart."""
    from lit_robust import cli

    seen = []
    monkeypatch.setattr(cli, "run", lambda argv: seen.append(os.environ[cli.RUN_ID_VARIABLE]))
    monkeypatch.delenv(cli.RUN_ID_VARIABLE, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    for parent in (101, 202):
        monkeypatch.setattr(cli.os, "getppid", lambda parent=parent: parent)
        main(["fit"])
    assert seen == ["torchrun-job42-101", "torchrun-job42-202"]
    assert cli.RUN_ID_VARIABLE not in os.environ


def test_each_command_in_one_process_has_its_own_id(tmp_path, capsys, monkeypatch):
    """A notebook (or these tests) running the same wrong command twice in one process read the error twice: the
    second command must not take the first's marker for its own."""
    from lit_robust import cli

    monkeypatch.setattr(cli.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")  # left behind by an earlier DDP fit in this process
    monkeypatch.delenv(cli.RUN_ID_VARIABLE, raising=False)
    cfg = _small("itlm_digits.yaml", tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    for _ in range(2):
        with pytest.raises(SystemExit):
            main(["fit", "--config", str(bad), "--trainer.max_epochs", "5"])
        assert capsys.readouterr().err.count("must add up to the Trainer's `max_epochs`") == 1
        assert cli.RUN_ID_VARIABLE not in os.environ


@pytest.mark.skipif(sys.platform == "win32", reason="gloo DDP subprocesses")
def test_a_ddp_fit_says_a_config_mistake_once(tmp_path):
    """A DDP newcomer's 2-process CPU fit printed each config mistake twice, once per process."""
    cfg = _small("itlm_digits.yaml", tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "lit_robust", "fit", "--config", str(bad), "--trainer.strategy", "ddp",
                          "--trainer.devices", "2", "--trainer.max_epochs", "5"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    text = run.stdout + run.stderr
    assert run.returncode == 2, text
    assert "Starting with 2 processes" in text, text  # the mistake is met after both processes started
    assert text.count("must add up to the Trainer's `max_epochs`") == 1, text
    assert "Traceback" not in text, text


@pytest.mark.parametrize("how", ["second config", "command line", "appended"])
def test_callbacks_a_later_list_replaces_are_named(tmp_path, capsys, how, one_torch_thread):
    """A list replaces a list: a second `--config` with its own `trainer.callbacks`, or `--trainer.callbacks X`, dropped
    the first config's ITLM and the fit ran plain training, exit 0, without a word (a reviewer's). `callbacks+:`
    appends, and is not named. (`limit_train_batches 0` ends the command at setup, after the note.)"""
    first = tmp_path / "itlm.yaml"
    first.write_text(yaml.safe_dump(_small(DIGITS, tmp_path)))
    filter_entry = {"class_path": "lit_robust.BatchFilter", "init_args": {"rule": "prl", "drop_ratio": 0.2}}
    second = tmp_path / "filter.yaml"
    second.write_text(yaml.safe_dump({"trainer": {("callbacks+" if how == "appended" else "callbacks"):
                                                  [filter_entry] if how != "appended" else filter_entry}}))
    extra = (["--config", str(second)] if how != "command line" else
             ["--trainer.callbacks", "lit_robust.BatchFilter", "--trainer.callbacks.rule", "prl",
              "--trainer.callbacks.drop_ratio", "0.2"])
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(first), *extra, "--trainer.limit_train_batches", "0"])
    err = capsys.readouterr().err
    note = (f"lit-robust fit: note: `trainer.callbacks` of {first} (ITLM) were replaced by a later `--config` or "
            "`--trainer.callbacks`, so they do not run. To add callbacks to a config's list write `callbacks+:`")
    assert (note in err) == (how != "appended"), err
    assert "`limit_train_batches` must be > 0" in err


@pytest.mark.parametrize(("content", "named"), [
    (b"# every line commented out\n", "is empty (comments only)"),
    (b"\xef\xbb\xbf", "is empty"),  # a Windows editor's "empty" UTF-8 file: a BOM alone
    (b"- trainer:\n    max_epochs: 2\n- model: null\n", "holds a list, not a mapping of keys"),
    (b"just a sentence\n", "holds a single value (str), not a mapping of keys"),
])
def test_a_config_that_is_no_mapping_is_named(tmp_path, capsys, content, named):
    """A second `--config` of comments only, a BOM alone, a list or a scalar read "Unexpected config: " and the file's
    text (a list dumped the whole file), naming no file; only an empty file was named."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(_small(PRL, tmp_path)))
    other = tmp_path / "other.yaml"
    other.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--config", str(other)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert f"error: --config {str(other)!r} {named}: a config is a YAML mapping of `model:`" in err, err
    assert "Unexpected config" not in err and "max_epochs: 2" not in err, err


def test_a_key_set_twice_in_a_config_is_named(tmp_path, capsys):
    """A config that sets a key twice (`lr: 0.1` and, below it, `lr: 5.0`) ran with the last value without a word
    (PyYAML's rule): the fit must stop before it starts, naming the file, the key and both lines."""
    text = yaml.safe_dump(_small(PRL, tmp_path), sort_keys=False).replace("    lr: 0.1\n", "    lr: 0.1\n    lr: 5.0\n")
    config = tmp_path / "cfg.yaml"
    config.write_text(text)
    first = text.splitlines().index("    lr: 0.1") + 1
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert (f"error: --config {str(config)!r} sets 'model.init_args.lr' twice, on lines {first} and {first + 1}: YAML "
            "would keep the last value without a word" in err), err
    assert not list(tmp_path.glob("**/*.ckpt")), "nothing may run"


@pytest.mark.parametrize("text, expected", [
    ("a:\n  1: x\n  '1': y\n", []),  # two keys: int 1 and str '1' (refused as one set twice)
    ("a:\n  true: x\n  True: y\n", [("a.True", 2, 3)]),  # one key: PyYAML kept the last silently
    ("a:\n  1: x\n  0x1: y\n", [("a.0x1", 2, 3)]),
    ("a:\n  ~: x\n  null: y\n", [("a.null", 2, 3)]),
])
def test_duplicate_keys_compares_the_keys_yaml_builds(text, expected):
    """The check compared each key's text, not the key PyYAML builds: `1` beside `'1'` (two keys of the dict) stopped
    a valid config as "sets 'a.1' twice", while `true`/`True`, `1`/`0x1` and `~`/`null` (one key, its first value
    dropped without a word) passed."""
    from lit_robust.cli import duplicate_keys

    assert duplicate_keys(text) == expected


def test_a_key_set_twice_in_config_text_on_the_command_line_is_named(capsys):
    """`--config '{trainer: {max_epochs: 1, max_epochs: 2}}'` (jsonargparse reads text that names no file as the
    config itself) ran with the last value without a word: only files were checked."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "{trainer: {max_epochs: 1, max_epochs: 2}}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert ("error: --config '{trainer: {max_epochs: 1, max_epochs: 2}}' sets 'trainer.max_epochs' twice, on lines 1 "
            "and 1: YAML would keep the last value without a word" in err), err


@pytest.mark.parametrize("given", ["nested", "callback", "command line"])
def test_a_key_set_twice_in_a_settings_file_a_config_names_is_named(tmp_path, capsys, monkeypatch, given):
    """`model: model.yaml` (jsonargparse reads the file from the config's folder), a callback entry naming a file and
    `--model model.yaml`: a key set twice in that file ran with the last value without a word; only the
    `--config` files themselves were checked."""
    cfg = _small(PRL, tmp_path)
    if given == "callback":
        entry, key, where = cfg["trainer"]["callbacks"][0], "trainer.callbacks[0].class_path", "sub/cb.yaml"
        cfg["trainer"]["callbacks"][0] = where
    else:
        entry, key, where = cfg["model"], "model.class_path", "sub/model.yaml"
        cfg["model"] = where
    (tmp_path / "sub").mkdir()
    (tmp_path / where).write_text(yaml.safe_dump(entry, sort_keys=False).replace(
        "class_path:", "class_path: x\nclass_path:", 1))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path / "sub")  # the settings file is read from the config's folder, not the current one
    if given == "command line":
        argv, named = ["fit", "--config", str(config), "--model", "model.yaml"], "--model"
        cfg["model"] = entry
        config.write_text(yaml.safe_dump(cfg))
        where = "model.yaml"
    else:
        argv, named = ["fit", "--config", str(config)], f"--config {str(config)!r}"
        where = str(tmp_path / where)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert (f"error: {where!r} (named by {named}) sets {key!r} twice, on lines 1 and 2: YAML would keep the last "
            "value without a word" in err), err


def test_a_key_set_twice_in_a_config_on_standard_input_is_named(tmp_path, capsys, monkeypatch):
    """`--config -` (jsonargparse reads the config from standard input) ran with a key's last value without a
    word; a config on standard input without one is still read by jsonargparse after the check has read it."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("trainer:\n  max_epochs: 1\n  max_epochs: 2\n"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "-"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert "error: --config '-' sets 'trainer.max_epochs' twice, on lines 2 and 3" in err, err
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(_small(PRL, tmp_path))))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "-", "--print_config"])
    assert exit_info.value.code == 0 and "lit_robust.BatchFilter" in capsys.readouterr().out


@pytest.mark.parametrize("name, config, range_", [
    ("keep_ratio", "itlm_digits.yaml", r"must be in (0, 1], got None (or 'auto'"),
    ("drop_ratio", PRL, "must be a number in [0, 0.5), got None. Or pass drop_ratio='auto'"),
])
def test_a_required_ratio_given_as_null_is_named(tmp_path, capsys, name, config, range_):
    """`keep_ratio: null` (ITLM) or `drop_ratio: null` (BatchFilter) read "the following arguments are required:
    keep_ratio", as if the config had left it out: the error must say it is null and what the argument allows."""
    cfg = _small(config, tmp_path)
    cfg["trainer"]["callbacks"][0]["init_args"][name] = None
    path, err = _refused_fit(cfg, tmp_path, capsys)
    assert "arguments are required" not in err, err
    cls = cfg["trainer"]["callbacks"][0]["class_path"]
    assert (f"error: trainer.callbacks[0]: `{name}` of `class_path: {cls}` is null in --config {str(path)!r}, and it "
            f"has no default: `{name}` {range_}" in err), err


@pytest.mark.parametrize("where", ["model", "callback"])
def test_an_empty_init_args_is_named(tmp_path, capsys, where):
    """`init_args:` with every line under it commented out (YAML reads null) read "'NoneType' object has no attribute
    'keys'", for a callback of a list inside 17 lines of jsonargparse's Union report."""
    cfg = _small(PRL, tmp_path)
    if where == "model":
        cfg["model"]["init_args"], key, cls = None, "model", "lit_robust.ImageClassifier"
    else:
        cfg["trainer"]["callbacks"].append({"class_path": "ModelCheckpoint", "init_args": None})
        key, cls = f"trainer.callbacks[{len(cfg['trainer']['callbacks']) - 1}]", "ModelCheckpoint"
    config, err = _refused_fit(cfg, tmp_path, capsys)
    assert "NoneType" not in err, err
    assert (f"error: {key}: `init_args:` of `class_path: {cls}` in --config {str(config)!r} is empty (null: every "
            "line under it commented out?)" in err), err


def test_a_missing_settings_file_named_in_a_config_says_where_it_was_looked_for(tmp_path, capsys, monkeypatch):
    """`model: model.yaml` (a file of the entry's settings) that is not beside the config read "No module named
    'model'" and a hint that the current folder was searched; jsonargparse reads that path from the config's folder."""
    cfg = _small(PRL, tmp_path)
    cfg["model"] = "model.yaml"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "sub/cfg.yaml"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and "No module named" not in err, err
    assert ("'model.yaml' reads as a file of this entry's settings, which jsonargparse looks for beside the config "
            f"that names it, in {tmp_path / 'sub'}: there is no such file there" in err), err


def test_a_users_class_is_named_by_a_path_that_imports(tmp_path, capsys, monkeypatch):
    """A newcomer's `class_path: yourpkg.fmnist.FashionDM` was named `yourpkg.FashionDM` in the one-line error (the
    top-level package and the class name), a path that does not import; Lightning's classes likewise
    (`pytorch_lightning.EarlyStopping`). The label is now the shortest path that imports the class."""
    (tmp_path / "newcomer_pkg").mkdir()
    (tmp_path / "newcomer_pkg" / "__init__.py").write_text("")
    (tmp_path / "newcomer_pkg" / "data.py").write_text(
        "import pytorch_lightning as pl\n"
        "class MyData(pl.LightningDataModule):\n"
        "    def __init__(self, n_train: int = 10):\n"
        "        super().__init__()\n"
        "        if n_train < 1:\n"
        "            raise ValueError(f'`n_train` must be >= 1, got {n_train}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _small(DIGITS, tmp_path)
    cfg["data"] = {"class_path": "newcomer_pkg.data.MyData", "init_args": {"n_train": -5}}
    err = _refused_fit(cfg, tmp_path, capsys)[1]
    assert "error: data.init_args.n_train (newcomer_pkg.data.MyData): `n_train` must be >= 1, got -5" in err, err


def test_a_filters_error_inside_the_models_step_names_the_filters_argument(tmp_path, capsys):
    """The model's training step runs the filter's scoring: a CLI newcomer's `--trainer.callbacks.init_args.loss ce`
    on the regression config was named `model.init_args.loss (lit_robust.MLPRegressor)`, whose loss was already
    'mse' (the outermost object of the traceback was taken, not the innermost)."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_small(REG, tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(base), "--trainer.callbacks.init_args.loss", "ce"])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    error = text.partition("error:")[2]
    assert error.lstrip().startswith("trainer.callbacks[0].init_args.loss (lit_robust.BatchFilter): `loss='ce'`"), text
    assert "model.init_args" not in error, text


def test_a_name_the_argument_does_not_take_lists_the_names(tmp_path, capsys):
    """SimCLR's `backbone` takes "cnn", "resnet18", "resnet50" or a module: a CLI newcomer's `--model.init_args.backbone
    resnet34` was told "`class_path: resnet34` names no Module", a `class_path` they never wrote, with no names."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_small("simclr_pretrain.yaml", tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(base), "--model.init_args.backbone", "resnet34"])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert "'resnet34' is not one of the names it takes ('cnn', 'resnet18', 'resnet50'); or a class of the expected " \
           "kind (Module), written as `class_path: my_module.MyClass`." in text, text
    assert "class_path: resnet34" not in text, text


def test_an_inline_list_that_does_not_parse_says_so(tmp_path, capsys):
    """A CLI newcomer's inline callback list with one `}` missing got ten lines of "Expected a path", "Unexpected
    import path format", none of them saying the value was not valid YAML."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_small(DIGITS, tmp_path)))
    value = '[{"class_path": "lit_robust.BatchFilter", "init_args": {"drop_ratio": 0.3}]'
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(base), "--trainer.callbacks", value])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert ('Parser key "trainer.callbacks": the value is not valid YAML or JSON (expected \',\' or \'}\', but got '
            f"']' at character 75; a bracket or brace missing?), so it was read as a string: {value}") in text, text
    assert "Unexpected import path format" not in text, text


def test_a_checkpoint_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    """A CLI newcomer's `ModelCheckpoint` `dirpath` under a file failed at the first save, after an epoch had
    trained, with the OS error alone."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_small(DIGITS, tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(base), "--trainer.enable_checkpointing", "true",
              "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(blocker / "ck")])
    text = "".join(capsys.readouterr())
    assert exit_info.value.code == 2 and "Traceback" not in text
    assert (f"`dirpath` of ModelCheckpoint must be a folder it can write its checkpoints to, got "
            f"'{blocker / 'ck'}' (Not a directory).") in text, text
    assert "Epoch 0" not in text and not (tmp_path / "lightning_logs").exists()


def test_the_arguments_a_class_takes_follow_its_parents_only_through_kwargs():
    """A backdoor newcomer's `--data.init_args.clean_ratio 0.5` was refused, then told "did you mean 'clean_ratio'?"
    beside a list of accepted arguments holding it: `MNISTDataModule` takes it, `BackdoorMNISTDataModule`, its
    subclass without `**kwargs`, does not."""
    from lit_robust.cli import _parameters
    from lit_robust.data import BackdoorMNISTDataModule, MNISTDataModule

    assert {"clean_ratio", "noise"} <= _parameters(MNISTDataModule)
    assert not {"clean_ratio", "noise"} & _parameters(BackdoorMNISTDataModule)
    assert {"poison_rate", "trigger", "root"} <= _parameters(BackdoorMNISTDataModule)

    class Mine(BackdoorMNISTDataModule):
        def __init__(self, extra: int = 1, **kwargs):
            super().__init__(**kwargs)

    assert _parameters(Mine) == _parameters(BackdoorMNISTDataModule) | {"extra"}


def test_a_misspelt_trigger_function_gets_its_hint_once(tmp_path, capsys, monkeypatch):
    """`trigger: mytrig.white_pach` for the user's `mytrig.white_patch`: the hint came twice, "(did you mean
    'mytrig.white_patch'?) (did you mean 'mytrig.white_patch'?)" (a backdoor newcomer's config)."""
    (tmp_path / "mytrig_hint_once.py").write_text("def white_patch(images):\n    return images\n")
    (tmp_path / "bad.yaml").write_text(
        "data:\n  class_path: lit_robust.BackdoorMNISTDataModule\n  init_args:\n    attack: null\n"
        "    trigger: mytrig_hint_once.white_pach\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit):
        main(["fit", "--config", "bad.yaml"])
    err = capsys.readouterr().err
    assert err.count("(did you mean 'mytrig_hint_once.white_patch'?)") == 1, err


def test_a_class_swapped_on_the_command_line_names_the_arguments_it_keeps_from_the_config(tmp_path, capsys):
    """`--data lit_robust.TableDataModule` on a config of another datamodule kept its `val_size` (1000 for MNIST
    landmarks: half of a regression newcomer's table went to validation); `--model LinearProbe` on the image config
    kept its `lr` (an image newcomer's). jsonargparse carries the arguments the new class takes too, without a word."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(100, 3)), columns=list("abc")).assign(y=rng.integers(0, 2, 100))
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs" / "itlm_digits.yaml"), "--data", "lit_robust.TableDataModule",
              "--data.path", str(tmp_path / "t.csv"), "--data.target", "y", "--data.init_args.batch_size", "16",
              "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert ("note: `data` is TableDataModule here, in place of the config's DigitsDataModule, and it keeps the "
            "config's `val_size`=100.0 (jsonargparse carries over the arguments the new class takes too). Give them "
            "on the command line (`--data.init_args.NAME VALUE`) for other values.") in err, err
    assert "`batch_size`" not in err.split("note: `data`")[1].split("\n")[0]  # given on the command line


_CTRL_C_WHILE_STARTING = """
import os, signal, sys, time
sys.argv[0] = {argv0!r}
import lit_robust  # the package's first line puts the handler in place in a `lit-robust` command
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C while the CLI's imports run
time.sleep(5)
print("not reached", flush=True)
"""


@pytest.mark.parametrize("argv0", ["/usr/local/bin/lit-robust", "script.py"])
def test_ctrl_c_while_a_lit_robust_command_starts_is_one_line(argv0):
    """A CLI user's Ctrl-C in the seconds the imports take printed Python's 30-line KeyboardInterrupt traceback
    through the import machinery. In a `lit-robust` command it is one line and exit status 130; anywhere else
    (a user's script importing lit_robust) Python's own handler stays."""
    out = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_STARTING.format(argv0=argv0)], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    if argv0.endswith("lit-robust"):
        assert (out.returncode, out.stdout, out.stderr) == (
            130, "False\n", "lit-robust: interrupted (Ctrl-C) while starting; nothing ran.\n"), out
    else:
        assert out.stdout == "True\n" and "KeyboardInterrupt" in out.stderr and out.returncode != 0, out


def test_the_cli_puts_pythons_ctrl_c_back_when_it_starts(monkeypatch):
    """From `main` on, a Ctrl-C is the CLI's to say (a fit stopped by it says where it stopped)."""
    import signal

    from lit_robust import _startup

    monkeypatch.setattr(sys, "argv", ["lit-robust", "--version"])
    previous = signal.signal(signal.SIGINT, _startup._interrupted_while_starting)
    try:
        main(["--version"])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert _startup.in_a_lit_robust_command()
    finally:
        signal.signal(signal.SIGINT, previous)
