"""The unified `lightning` package: lit_robust builds on `lightning.pytorch` in a process that imported `lightning`
(or with LIT_ROBUST_LIGHTNING=lightning), so its ready-made modules, datamodules, CoTeaching, PredictionWriter and
CLI work with `L.Trainer` and `lightning.pytorch` callbacks. A newcomer who writes `import lightning as L` got
"`model` must be a `LightningModule`" for ImageClassifier, a CoTeaching that logged nothing, no predictions.csv and
a CLI that refused their classes. Where the packages are mixed, the error says so and how to switch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from lit_robust import CoTeaching, PredictionWriter
from lit_robust._backend import ENV_VAR, choose_backend
from lit_robust.cli import main
from tests.conftest import REPO
from tests.test_cli import shrink

lightning = pytest.importorskip("lightning")

BOTH = {"lightning", "pytorch_lightning"}

# a user's own module on the unified package, importable by the CLI from its working folder
USER_MODULE = textwrap.dedent("""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from lit_robust import RobustMixin


    class UnifiedClassifier(RobustMixin, L.LightningModule):
        def __init__(self, lr: float = 0.05):
            super().__init__()
            self.lr = lr
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

        def forward(self, x):
            return self.net(x)

        def per_sample_loss(self, batch):
            index, x, y = batch[:3]
            logits = self(x)
            return F.cross_entropy(logits, y, reduction="none"), logits

        def test_step(self, batch, batch_idx):
            x, y = batch[-2:]
            self.log("test_acc", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)
""")


@pytest.mark.parametrize(("environ", "imported", "installed", "chosen"), [
    ({}, ["torch", "lightning"], BOTH, "lightning"),             # `import lightning as L` came first
    ({}, ["lightning", "pytorch_lightning"], BOTH, "lightning"),  # ... then a pytorch_lightning callback (a newcomer)
    ({}, ["pytorch_lightning", "lightning"], BOTH, "pytorch_lightning"),
    ({}, [], BOTH, "pytorch_lightning"),                          # lit_robust's own dependency
    ({}, [], {"lightning"}, "lightning"),
    ({ENV_VAR: "lightning"}, ["pytorch_lightning"], BOTH, "lightning"),
    ({ENV_VAR: " pytorch_lightning "}, ["lightning"], BOTH, "pytorch_lightning"),
])
def test_the_lightning_package_is_chosen_by_the_variable_then_by_what_was_imported(environ, imported, installed,
                                                                                   chosen):
    assert choose_backend(environ, imported, installed) == chosen


def test_a_bad_choice_names_the_variable_the_allowed_values_and_the_value():
    with pytest.raises(ImportError, match=r"LIT_ROBUST_LIGHTNING must be one of \['lightning', 'pytorch_lightning'\]"
                                          r".*got 'lightning.pytorch'"):
        choose_backend({ENV_VAR: "lightning.pytorch"}, [], BOTH)
    with pytest.raises(ImportError, match="'lightning' is not installed"):
        choose_backend({ENV_VAR: "lightning"}, [], {"pytorch_lightning"})


def _python(code: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    full = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    full.update(PYTHONPATH=os.pathsep.join([str(REPO), str(cwd)]), OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_after_import_lightning_the_ready_made_parts_work_with_its_trainer(tmp_path):
    """A script that starts with `import lightning as L`: ImageClassifier + DigitsDataModule + ITLM, CoTeaching
    around the user's own module (its `test_acc` logged), PredictionWriter's file, all on `L.Trainer`."""
    (tmp_path / "unified_user.py").write_text(USER_MODULE)
    out = _python(textwrap.dedent("""
        import lightning as L
        import torch
        torch.set_num_threads(1)
        import lit_robust
        from lit_robust._backend import LIGHTNING
        from torch.utils.data import DataLoader, TensorDataset
        from unified_user import UnifiedClassifier
        print("backend", LIGHTNING)

        def trainer(**kw):
            return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, **kw)

        L.seed_everything(0)
        data = lit_robust.DigitsDataModule(clean_ratio=0.7, val_size=0, batch_size=64)
        model = lit_robust.ImageClassifier(backbone="mlp", image_size=8)
        itlm = lit_robust.ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False)
        t = trainer(max_epochs=2, callbacks=[itlm])
        t.fit(model, data)
        print("itlm rounds", len(itlm.history), "kept", itlm.history[-1].kept)
        print("image test", sorted(t.test(model, data, verbose=False)[0]))

        co = lit_robust.CoTeaching(UnifiedClassifier(), rule="prl", drop_ratio=0.3)
        t = trainer(max_epochs=1)
        t.fit(co, data)
        print("coteaching test", sorted(t.test(co, data, verbose=False)[0]))

        writer = lit_robust.PredictionWriter(dirpath="preds")
        t = trainer(callbacks=[writer])
        x, y = data.test_set.dataset.tensors
        t.predict(model, DataLoader(TensorDataset(x, y), batch_size=128))
        print("predictions", sum(1 for _ in open(writer.path)) - 1, "of", len(x))
    """), tmp_path)
    assert "backend lightning" in out
    assert "itlm rounds 2 kept 910" in out  # floor(0.7 * 1300) samples in round 1
    assert "image test ['test_acc']" in out
    assert "coteaching test ['test_acc']" in out  # logged nothing ([{}]) before
    assert "predictions 497 of 497" in out


def test_the_cli_takes_lightning_classes_when_told_to(tmp_path):
    """`LIT_ROBUST_LIGHTNING=lightning lit-robust fit` with a `lightning`-based model and lightning.pytorch's own
    ModelCheckpoint in the config (both were refused: 'expected pytorch_lightning... LightningModule')."""
    (tmp_path / "unified_user.py").write_text(USER_MODULE)
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["model"] = {"class_path": "unified_user.UnifiedClassifier"}
    cfg["trainer"]["callbacks"].append({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                        "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}})
    (tmp_path / "unified.yaml").write_text(yaml.safe_dump(cfg))
    out = _python("from lit_robust.cli import main; main(['fit', '--config', 'unified.yaml'])", tmp_path,
                  env={ENV_VAR: "lightning"})
    assert "ITLM: per-sample report written to" in out, out
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_coteaching_refuses_a_module_of_the_other_lightning_package(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "unified_user_ct.py").write_text(USER_MODULE)
    from unified_user_ct import UnifiedClassifier  # noqa: PLC0415 - written by the test

    with pytest.raises(TypeError, match=r"`CoTeaching`: `model` is `lightning`'s, but lit_robust was imported on "
                                        r"`pytorch_lightning`.*set LIT_ROBUST_LIGHTNING=lightning"):
        CoTeaching(UnifiedClassifier())


def test_a_prediction_writer_on_the_other_packages_trainer_says_why_it_writes_nothing(tmp_path):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from lit_robust import ImageClassifier

    class Plain(lightning.LightningModule):  # a module of the Trainer's own package: Lightning accepts it
        def __init__(self):
            super().__init__()
            self.net = ImageClassifier(backbone="mlp", image_size=8)

        def predict_step(self, batch, batch_idx):
            return self.net(batch[0]).argmax(1)

    trainer = lightning.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                                callbacks=[PredictionWriter(dirpath=str(tmp_path))])
    with pytest.warns(UserWarning, match="no predictions.csv written: the Trainer is `lightning`'s"):
        trainer.predict(Plain(), DataLoader(TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4).long())))
    assert not (tmp_path / "predictions.csv").exists()


def test_the_cli_says_when_a_config_names_a_class_of_the_other_package(tmp_path, capsys):
    cfg = shrink(yaml.safe_load((REPO / "configs" / "itlm_digits.yaml").read_text()), tmp_path)
    cfg["trainer"]["callbacks"].append({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint"})
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(tmp_path / "mixed.yaml")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "`ModelCheckpoint` is `lightning`'s, but lit_robust was imported on `pytorch_lightning`" in err, err
    assert "Run `LIT_ROBUST_LIGHTNING=lightning lit-robust ...`" in err and "a short `class_path`" in err
    assert err.count("classes do not mix") == 1


@pytest.mark.parametrize("how", ["script", "module", "lit_robust.cli"])
def test_a_mistyped_variable_ends_the_cli_in_one_line(tmp_path, how):
    """The console script imports lit_robust before `main` runs: the choice's error was a 15-line traceback; so was
    `python -m lit_robust`'s (a CLI newcomer's), whose `sys.argv[0]` is still "-m" while the package imports."""
    script = Path(sys.executable).with_name("lit-robust")
    if how == "script" and not script.is_file():
        pytest.skip("no lit-robust console script beside this Python")
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    command = ([str(script)] if how == "script" else
               [sys.executable, "-m", "lit_robust" if how == "module" else "lit_robust.cli"])
    done = subprocess.run([*command, "fit", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**env, ENV_VAR: "lighting", "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip() == ("lit-robust: error: the environment variable LIT_ROBUST_LIGHTNING must be one of "
                                   "['lightning', 'pytorch_lightning'] (the Lightning package lit_robust builds on), "
                                   "got 'lighting'."), done.stderr


def test_a_callback_of_the_other_package_on_the_trainer_is_warned_about(tmp_path):
    """A `pytorch_lightning` ModelCheckpoint on an `L.Trainer` (or the reverse) is not Lightning's checkpoint
    callback: it adds its own, and `ckpt_path="best"` tested the last epoch's weights, silently (a newcomer)."""
    from lit_robust import ITLM
    from tests.conftest import BlobsData, MixinStep, tiny_trainer

    other = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=str(tmp_path))
    itlm = ITLM(keep_ratio=0.7, round_epochs=[1], verbose=False, plot=False)
    # the Trainer is lit_robust's package: the callback is the stray one, so the fix is its import (a newcomer told to
    # import the other package first broke a script whose every other class was that package's)
    with pytest.warns(UserWarning, match=r"the callback `ModelCheckpoint` is `lightning`'s, while the Trainer and "
                                         r"lit_robust are `pytorch_lightning`'s: Lightning runs its hooks but does not know it for one of its own"
                                         r".*Import it from `pytorch_lightning` \(e.g. `from pytorch_lightning."
                                         r"callbacks import ModelCheckpoint`\)"):
        tiny_trainer(tmp_path, 1, [itlm, other]).fit(MixinStep(), BlobsData())

    class Stray(lightning.pytorch.Callback):  # the user's own: no such import exists, its base class is the fix
        pass

    itlm = ITLM(keep_ratio=0.7, round_epochs=[1], verbose=False, plot=False)
    with pytest.warns(UserWarning, match=r"the callback `Stray` is `lightning`'s, .* one of its own .*\. Build `Stray` "
                                         r"on `pytorch_lightning.Callback`\.$"):
        tiny_trainer(tmp_path, 1, [itlm, Stray()]).fit(MixinStep(), BlobsData())


@pytest.mark.parametrize("package", ["lightning", "pytorch_lightning"])
def test_a_datamodule_of_the_other_package_taken_for_a_loader_says_so(package):
    """`import lit_robust` before `import lightning`: Lightning took a datamodule not of its own package for a
    dataloader, and lit_robust's error said only "needs ... a torch DataLoader, got DigitsDataModule" (a newcomer; a
    release check: also for lit_robust's own datamodule under the other package's Trainer)."""
    import pytorch_lightning

    from lit_robust._lightning import resolve_loader

    base = lightning.pytorch.LightningDataModule if package == "lightning" else pytorch_lightning.LightningDataModule

    class Data(base):
        pass

    other = "pytorch_lightning" if package == "lightning" else "lightning"
    root = "lightning.pytorch" if other == "lightning" else other
    # the user's own datamodule: the fix is its base class, whichever way round (a release checker was told to import
    # `lightning` first, which changed nothing where the Trainer was `pytorch_lightning`'s)
    with pytest.raises(TypeError, match=rf"a torch DataLoader, got Data\. `Data` is a LightningDataModule of "
                                        rf"`{package}` and the Trainer is `{other}`'s, whose classes do not mix: "
                                        rf"Lightning took it for a dataloader\. To fix it, build `Data` on "
                                        rf"`{root}\.LightningDataModule`, the Trainer's package\."):
        resolve_loader(Data())
    with pytest.raises(TypeError) as err:  # not a datamodule: nothing about packages
        resolve_loader(object())
    assert "packages" not in str(err.value)


def test_a_datamodule_of_the_other_package_is_named_without_any_lit_robust_callback(tmp_path):
    """Without ITLM (whose loader check names the mix-up) a release checker's `L.Trainer` with lit_robust's
    `pytorch_lightning` datamodule and a `BatchFilter` or no callback ended in Lightning's bare "An invalid
    dataloader was passed to Trainer.fit(train_dataloaders=...)"; the mixin's `on_fit_start` says why."""
    import torch.nn.functional as F

    from lit_robust import RobustMixin, unpack_batch
    from tests.conftest import BlobsData

    class Unified(RobustMixin, lightning.pytorch.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 3)

        def per_sample_loss(self, batch):
            b = unpack_batch(batch)
            logits = self.net(b.input)
            return F.cross_entropy(logits, b.target, reduction="none"), logits

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = lightning.pytorch.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                                        enable_progress_bar=False, enable_model_summary=False,
                                        default_root_dir=tmp_path)
    with pytest.raises(TypeError, match=r"^`trainer.fit` got BlobsData as its data\. `BlobsData` is a "
                                        r"LightningDataModule of `pytorch_lightning` and the Trainer is `lightning`'s"):
        trainer.fit(Unified(), BlobsData())
    # lit_robust's own datamodule: the fix is which package lit_robust builds on
    from lit_robust import DigitsDataModule
    from lit_robust._lightning import resolve_loader

    with pytest.raises(TypeError, match=r"To fix it, make lit_robust build on the Trainer's package: import "
                                        r"`lightning` before lit_robust .* or set LIT_ROBUST_LIGHTNING=lightning\."):
        resolve_loader(DigitsDataModule())
    lightning_trainer = lightning.pytorch.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                                                  enable_progress_bar=False, enable_model_summary=False,
                                                  default_root_dir=tmp_path)
    lightning_trainer.fit(Unified(), torch.utils.data.DataLoader(BlobsData().ds, batch_size=32))  # a loader: fine
