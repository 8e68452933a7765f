"""Fine-tuning a pretrained network under ITLM: frozen parameters are never re-drawn, and `reinit="restore"` starts
every round from the weights the fit started with (a fine-tuner's pretrained backbone was re-drawn at random at each
round start, without a word)."""

from dataclasses import asdict

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lit_robust import ITLM
from lit_robust.mixin import reset_parameters
from tests.conftest import BlobsData, TinyModel, tiny_trainer


class Pretrained(TinyModel):
    """TinyModel with a BatchNorm'd "backbone" (net[0..1]) and a head (net[3])."""

    def __init__(self, frozen: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
        if frozen:
            for p in self.net[:2].parameters():
                p.requires_grad = False

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr, momentum=0.9)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reset_parameters_keeps_frozen_parameters_and_their_modules_buffers():
    m = Pretrained(frozen=True)
    m.net[1].running_mean.fill_(0.5)  # a pretrained BatchNorm's statistics
    with torch.no_grad():
        m.net[1].weight.fill_(2.0)
    before = _state(m)
    reset_parameters(m, 3)
    after = _state(m)
    for k in before:
        kept = k.startswith(("net.0.", "net.1."))
        assert torch.equal(before[k], after[k]) == kept, k


def test_reset_parameters_keeps_the_frozen_parameter_of_a_partly_frozen_layer():
    layer = nn.Linear(4, 4)
    layer.bias.requires_grad = False
    with torch.no_grad():
        layer.bias.fill_(3.0)
    weight = layer.weight.detach().clone()
    reset_parameters(layer, 0)
    assert torch.equal(layer.bias, torch.full((4,), 3.0))
    assert not torch.equal(layer.weight, weight)


def test_a_frozen_layer_without_reset_parameters_is_not_refused():
    class Custom(nn.Module):  # a pretrained block of the user's own, kept fixed
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2), requires_grad=False)

    m = nn.Sequential(Custom(), nn.Linear(2, 2))
    reset_parameters(m, 0)
    assert torch.equal(m[0].w, torch.ones(2))
    m[0].w.requires_grad = True
    with pytest.raises(TypeError, match=r"cannot re-initialise \['Custom'\]"):
        reset_parameters(m, 0)


def _fit(root, itlm, model, callbacks=(), ckpt_path=None, **kw):
    trainer = tiny_trainer(root, sum(itlm.round_epochs), [itlm, *callbacks], **kw)
    trainer.fit(model, BlobsData(), ckpt_path=ckpt_path)
    return trainer


class RoundStarts(pl.Callback):
    """The module's state dict at each epoch start (after ITLM's round-start work: it runs first)."""

    def __init__(self):
        self.states = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.states.append(_state(pl_module))


def test_itlm_default_reinit_keeps_a_frozen_backbone(tmp_path):
    pl.seed_everything(0, verbose=False)
    model = Pretrained(frozen=True)
    backbone = [p.detach().clone() for p in model.net[:2].parameters()]
    spy = RoundStarts()
    _fit(tmp_path, ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False), model, [spy])
    # (the BatchNorm's running statistics move in train mode, as in any fit: not ITLM's doing)
    assert all(torch.equal(p, q) for p, q in zip(model.net[:2].parameters(), backbone))
    assert not torch.equal(spy.states[1]["net.3.weight"], spy.states[0]["net.3.weight"])  # the head was re-drawn


def test_reinit_restore_starts_every_round_from_the_fits_starting_weights(tmp_path):
    pl.seed_everything(0, verbose=False)
    model = Pretrained()
    start = _state(model)
    spy = RoundStarts()
    itlm = ITLM(keep_ratio=0.8, round_epochs=[2, 1, 1], reinit="restore", verbose=False, plot=False)
    _fit(tmp_path, itlm, model, [spy])
    assert _equal(spy.states[0], start)
    assert not _equal(spy.states[1], start)  # round 0's second epoch: trained on
    assert _equal(spy.states[2], start) and _equal(spy.states[3], start)  # rounds 1 and 2 start from the start
    assert not _equal(_state(model), start)


@pytest.mark.parametrize("resume_epoch", [0, 1])
def test_reinit_restore_resumes_as_uninterrupted(tmp_path, resume_epoch):
    def run(root, seed, ckpt_path=None):
        pl.seed_everything(seed, verbose=False)
        model = Pretrained()  # another seed: other starting weights, which the checkpoint's must replace
        itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], reinit="restore", verbose=False, plot=False)
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        _fit(root, itlm, model, [ckpt], ckpt_path=ckpt_path, enable_checkpointing=True)
        return model, itlm

    full_model, full = run(tmp_path / "a", 1)
    model, resumed = run(tmp_path / "b", 99, ckpt_path=tmp_path / "a" / f"epoch={resume_epoch}.ckpt")
    assert [asdict(r) for r in resumed.history] == [asdict(r) for r in full.history]
    assert _equal(_state(model), _state(full_model))


def test_reinit_names_its_allowed_values():
    with pytest.raises(ValueError, match=r"`reinit` must be True, False or 'restore', got 'random'"):
        ITLM(keep_ratio=0.8, round_epochs=[1, 1], reinit="random")
    with pytest.raises(ValueError, match=r"`reinit` must be True, False or 'restore', got 1"):
        ITLM(keep_ratio=0.8, round_epochs=[1, 1], reinit=1)


class EvalBackbone(Pretrained):
    """A fine-tuner's frozen backbone, kept in eval mode from each epoch start; records its mode at every step."""

    def __init__(self):
        super().__init__(frozen=True)
        self.backbone_modes = []

    def on_train_epoch_start(self):
        self.net[:2].eval()

    def training_step(self, batch, batch_idx):
        self.backbone_modes.append(self.net[1].training)
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("owner", ["itlm", "filter"])
def test_the_first_step_check_puts_back_each_submodules_own_mode(tmp_path, owner):
    """The check ran the module in eval mode and then `train(True)` on all of it: a frozen backbone's BatchNorm
    trained (its statistics moved) for the rest of epoch 0."""
    from lit_robust import BatchFilter

    model = EvalBackbone()
    cb = (ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False) if owner == "itlm"
          else BatchFilter("spl", 0.2, warmup_epochs=0))
    tiny_trainer(tmp_path, 2, [cb]).fit(model, BlobsData())
    assert model.backbone_modes and not any(model.backbone_modes)
    assert model.net[3].training  # the rest of the module trains


def test_a_scoring_pass_puts_back_each_submodules_own_mode():
    from lit_robust._modes import evaluating

    m = Pretrained()
    m.net[1].eval()
    with evaluating(m):
        assert not any(x.training for x in m.modules())
    assert m.training and m.net[0].training and not m.net[1].training


def test_backbone_finetuning_beside_the_round_restarts_is_warned_about(tmp_path):
    from pytorch_lightning.callbacks import BackboneFinetuning

    class WithBackbone(Pretrained):
        def __init__(self):
            super().__init__()
            self.backbone = self.net[:2]

    for reinit, redrawn in ((True, True), ("restore", False)):
        itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], reinit=reinit, verbose=False, plot=False)
        with pytest.warns(UserWarning, match=r"ITLM: `BackboneFinetuning` unfreezes the backbone .* the backbone's "
                                             r"group and learning rate are lost" + (", and the unfrozen" if redrawn
                                                                                    else r"\. Pass")):
            tiny_trainer(tmp_path, 2, [BackboneFinetuning(unfreeze_backbone_at_epoch=1), itlm]).fit(
                WithBackbone(), BlobsData())


def test_a_linear_probe_fine_tuning_its_backbone_is_warned_about_the_redraw(tmp_path):
    import warnings

    from lit_robust import LinearProbe

    def fit(freeze, reinit):
        pl.seed_everything(0, verbose=False)
        probe = LinearProbe(backbone=nn.Sequential(nn.Linear(2, 8), nn.ReLU()), feature_dim=8, num_classes=3,
                            freeze_backbone=freeze)
        itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], reinit=reinit, verbose=False, plot=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny_trainer(tmp_path, 2, [itlm]).fit(probe, BlobsData())
        return [str(w.message) for w in caught if "LinearProbe fine-tunes its backbone" in str(w.message)]

    said = fit(False, True)
    assert len(said) == 1 and "Pass `ITLM(reinit='restore')`" in said[0]
    assert fit(False, "restore") == [] and fit(True, True) == []


def test_reinit_restore_copies_the_weights_after_the_modules_own_train_start(tmp_path):
    """A LinearProbe computes its feature statistics in its own `on_train_start`, which Lightning calls after the
    callbacks': a copy taken in ITLM's put back zeros, ones and `standardized=False` at every round start."""
    from lit_robust import LinearProbe

    pl.seed_everything(0, verbose=False)
    probe = LinearProbe(backbone=nn.Sequential(nn.Linear(2, 8), nn.ReLU()), feature_dim=8, num_classes=3)
    spy = RoundStarts()
    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1, 1], reinit="restore", verbose=False, plot=False)
    _fit(tmp_path, itlm, probe, [spy])
    assert [bool(s["standardized"]) for s in spy.states] == [True, True, True]
    assert all(torch.equal(s["feature_mean"], spy.states[0]["feature_mean"]) for s in spy.states)
    assert bool(probe.standardized) and not torch.equal(probe.feature_mean, torch.zeros(8))


def test_reinit_restore_refuses_lazy_layers_not_initialised_at_the_start(tmp_path):
    class Lazy(TinyModel):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 3))

    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], reinit="restore", verbose=False, plot=False)
    with pytest.raises(ValueError, match=r"ITLM\(reinit='restore'\) copies the weights the fit starts with, but "
                                         r"net.0.weight, net.0.bias are not initialised yet \(lazy layers\): run one "
                                         r"forward on an example batch before `fit`"):
        _fit(tmp_path, itlm, Lazy())
    model = Lazy()
    model(torch.zeros(1, 2))  # initialised: fine
    _fit(tmp_path, ITLM(keep_ratio=0.8, round_epochs=[1, 1], reinit="restore", verbose=False, plot=False), model)


def test_a_layer_unfrozen_after_setup_without_reset_parameters_is_named_by_itlm(tmp_path):
    """The set-up check skips frozen layers (they are kept); one unfrozen since failed at the round start with a
    bare `cannot re-initialise`."""
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3), requires_grad=False)

        def forward(self, x):
            return x * self.w

    class Model(TinyModel):
        def __init__(self):
            super().__init__()
            self.scale = Scale()

        def forward(self, x):
            return self.scale(self.net(x))

    class Unfreeze(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            pl_module.scale.w.requires_grad = True

    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False)
    with pytest.raises(TypeError, match=r"^ITLM re-draws the model at each round start \(reinit=True\): cannot "
                                        r"re-initialise \['Scale'\]"):
        _fit(tmp_path, itlm, Model(), [Unfreeze()])
