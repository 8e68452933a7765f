import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lit_robust.mixin import RobustMixin, require_mixin, reset_parameters
from tests.conftest import TinyModel


class DropLargest:
    """A toy batch selector: drops the single largest loss."""

    def keep_mask(self, losses, batch, outputs, module):
        keep = torch.ones_like(losses, dtype=torch.bool)
        keep[losses.argmax()] = False
        return keep


def test_reduce_loss_without_selectors_is_the_mean():
    m = TinyModel()
    losses = torch.tensor([1.0, 2.0, 6.0])
    assert m.reduce_loss(losses) == pytest.approx(3.0)


def test_reduce_loss_with_selector_averages_kept_only_and_ignores_dropped_nan():
    m = TinyModel()
    m.add_batch_selector(DropLargest())
    batch = (torch.arange(3), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    assert m.reduce_loss(torch.tensor([1.0, 2.0, 6.0]), batch) == pytest.approx(1.5)
    losses = torch.tensor([1.0, float("nan"), 3.0], requires_grad=True)

    class DropNaN:
        def keep_mask(self, losses, batch, outputs, module):
            return ~torch.isnan(losses)

    m2 = TinyModel()
    m2.add_batch_selector(DropNaN())
    out = m2.reduce_loss(losses, batch)
    out.backward()
    assert out.item() == pytest.approx(2.0)
    assert torch.isfinite(losses.grad).all()


def test_reduce_loss_rejects_non_per_sample_losses():
    with pytest.raises(ValueError, match=r"one loss per sample \(shape \[batch_size\]\), got shape \(\)"):
        TinyModel().reduce_loss(torch.tensor(1.0))


def test_add_batch_selector_type_check():
    with pytest.raises(TypeError, match="must implement `keep_mask"):
        TinyModel().add_batch_selector(object())


def test_require_mixin_messages():
    import pytorch_lightning as pl

    class Plain(pl.LightningModule):
        pass

    with pytest.raises(TypeError, match="needs the LightningModule to adopt `lit_robust.RobustMixin`.*`Plain`"):
        require_mixin("ITLM", Plain())

    class NoLoss(RobustMixin, pl.LightningModule):
        pass

    with pytest.raises(TypeError, match="does not implement `per_sample_loss"):
        require_mixin("ITLM", NoLoss())


def test_reset_parameters_is_seeded_and_leaves_global_rng_alone():
    m = TinyModel()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    reset_parameters(m, 5)
    a = [p.clone() for p in m.parameters()]
    reset_parameters(m, 5)
    assert all(torch.equal(x, y) for x, y in zip(a, m.parameters()))
    assert torch.equal(torch.get_rng_state(), state)
    reset_parameters(m, 6)
    assert not torch.equal(a[0], next(m.parameters()))


def test_reset_parameters_names_modules_it_cannot_reset():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

    with pytest.raises(TypeError, match=r"cannot re-initialise \['Custom'\].*override `reinitialize"):
        reset_parameters(nn.Sequential(nn.Linear(2, 2), Custom()), 0)


def test_reset_parameters_redraws_a_stock_transformer():
    """`nn.MultiheadAttention` keeps its reset private (`_reset_parameters`): every stock transformer was refused
    (an NLP newcomer's encoder, after round 0 had trained)."""
    def make():
        torch.manual_seed(1)
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
        return nn.Sequential(nn.Embedding(20, 8), nn.TransformerEncoder(layer, num_layers=2,
                                                                        enable_nested_tensor=False))

    m = make()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    reset_parameters(m, 3)
    attention = m[1].layers[0].self_attn
    assert not torch.equal(attention.in_proj_weight, before["1.layers.0.self_attn.in_proj_weight"])
    assert torch.equal(attention.in_proj_bias, torch.zeros(24))  # what `_reset_parameters` draws for the bias
    again = make()
    reset_parameters(again, 3)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))


def test_itlm_refuses_a_model_it_cannot_redraw_before_training(tmp_path):
    """Said at fit start, not at round 1's start after round 0 has trained."""
    import pytorch_lightning as pl

    from lit_robust import ITLM
    from tests.conftest import BlobsData, TinyModel, tiny_trainer

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return x + self.w

    class Model(TinyModel):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 3), Custom())

    model = Model()
    with pytest.raises(TypeError, match=r"^ITLM re-draws the model at each round start \(reinit=True\): cannot "
                                        r"re-initialise \['Custom'\]"):
        tiny_trainer(tmp_path, 2, [ITLM(0.7, [1, 1], verbose=False, plot=False)]).fit(model, BlobsData())
    assert model.seen == []  # before any training step
    pl.seed_everything(0, verbose=False)  # reinit=False needs no re-draw
    tiny_trainer(tmp_path, 2, [ITLM(0.7, [1, 1], reinit=False, verbose=False, plot=False)]).fit(Model(), BlobsData())


def test_reset_parameters_redraws_parametrised_layers_like_plain_ones():
    """A spectrally normalised model re-initialises its unconstrained weights exactly as the plain model would."""
    from torch import nn

    from lit_robust.functional.spectral import apply_spectral_norm
    from lit_robust.mixin import reset_parameters

    def make():
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))

    sn = make()
    apply_spectral_norm(sn, k=1.0)
    before = sn[0].parametrizations.weight.original.clone()
    reset_parameters(sn, 7)
    plain = make()
    reset_parameters(plain, 7)
    assert not torch.equal(before, sn[0].parametrizations.weight.original)
    assert torch.equal(plain[0].weight, sn[0].parametrizations.weight.original)
    assert torch.equal(plain[3].weight, sn[3].parametrizations.weight.original)
    assert torch.equal(plain[0].bias, sn[0].bias) and torch.equal(plain[3].bias, sn[3].bias)
    assert type(sn[0]).__name__ == "ParametrizedConv2d" and sn[0].weight.shape == (3, 1, 3, 3)  # still constrained


def test_a_compiled_fit_with_a_ramping_filter_compiles_the_same_graphs_for_2_and_6_epochs(tmp_path):
    # A newcomer's compiled PRL fit hit dynamo's recompile limit and ran ~48x slower than eager: the mixin's step
    # tested `batch_idx == 0` and traced into the filter's epoch schedule and Lightning's `log`, so every batch
    # number and warm-up epoch was a new graph (16 graphs for 2 epochs, 20 for 6). The graphs now depend on neither.
    from lit_robust import BatchFilter
    from tests.conftest import BlobsData, MixinStep, graphs_compiled_over

    two, six = (graphs_compiled_over(tmp_path, MixinStep, BlobsData(n=256), epochs,
                                     [BatchFilter("prl", 0.3, warmup_epochs=5)]) for epochs in (2, 6))
    assert two == six, (two, six)


@pytest.mark.parametrize("package", ["pytorch_lightning", "lightning.pytorch"])
def test_the_mixin_after_lightning_module_is_named_at_class_definition(package):
    """`class M(L.LightningModule, RobustMixin)` skipped the mixin's `__init__` and `training_step`: a newcomer got
    Lightning's "No `training_step()` method defined" (exit 2 under lit-robust, a traceback under their own CLI)."""
    import importlib

    module = importlib.import_module(package).LightningModule
    with pytest.raises(TypeError, match=r"`WrongOrder` has `LightningModule` before `RobustMixin` among its bases, so "
                                        r"Lightning's `training_step` and `__init__` hide the mixin's. Put the mixin "
                                        r"first: `class WrongOrder\(RobustMixin, LightningModule\)`"):
        type("WrongOrder", (module, RobustMixin), {})
    right = type("RightOrder", (RobustMixin, module), {})
    type("Subclass", (right,), {})  # a subclass of a module built right is fine


def test_a_training_step_the_mixin_hides_is_named_at_class_definition(recwarn):
    """`class Robust(RobustMixin, MyModule)`, MyModule with its own `training_step`: the mixin's wins, and a dict-batch
    newcomer's counter in theirs read 0 calls after a whole ITLM fit, with no warning. Defining `training_step` in the
    class (theirs calling `reduce_loss`, or the mixin's named) is the choice made, and says nothing."""
    import warnings

    class MyModule(pl.LightningModule):
        def training_step(self, batch, batch_idx):
            raise AssertionError("hidden")

    with pytest.warns(UserWarning, match=r"^`Robust` takes `training_step` from RobustMixin, so `MyModule\.training_step` "
                                         r"never runs .* define `training_step` in `Robust` and hand the per-sample "
                                         r"losses to `self\.reduce_loss\(losses, batch, outputs\)` there .* write "
                                         r"`training_step = RobustMixin\.training_step` in `Robust`\.$") as caught:
        robust = type("Robust", (RobustMixin, MyModule), {})
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the class statement
    assert robust.training_step is RobustMixin.training_step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        type("Sub", (robust,), {})  # said once, where the mixin is adopted
        type("Named", (RobustMixin, MyModule), {"training_step": RobustMixin.training_step})
        type("Own", (RobustMixin, MyModule), {"training_step": lambda self, batch, batch_idx: None})
        type("Plain", (RobustMixin, pl.LightningModule), {})  # Lightning's own stub hides nothing


class _CompiledByAssignment(TinyModel):
    """`self.net = torch.compile(self.net)`: the pattern docs/capabilities/precision-compile.md warns about."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.compile(self.net, backend="eager")


@pytest.mark.parametrize("saved, loaded", [(_CompiledByAssignment, TinyModel), (TinyModel, _CompiledByAssignment)])
def test_a_checkpoint_loads_across_a_submodule_compiled_by_assignment(tmp_path, saved, loaded, one_torch_thread):
    """A precision-and-compile newcomer's `load_from_checkpoint` and resume into the uncompiled module failed on
    torch's "Unexpected key(s) net._orig_mod...": the keys are matched without `_orig_mod.` now, both ways."""
    from tests.conftest import BlobsData, tiny_trainer

    pl.seed_everything(0, verbose=False)
    model = saved()
    trainer = tiny_trainer(tmp_path, 1, [], limit_train_batches=2)
    trainer.fit(model, BlobsData())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    assert any("_orig_mod." in k for k in torch.load(path, weights_only=False)["state_dict"]) == (
        saved is _CompiledByAssignment)
    back = loaded.load_from_checkpoint(path)
    x = torch.randn(5, 2)
    torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    resumed = loaded()  # and a resume from it (two more batches)
    tiny_trainer(tmp_path, 2, [], limit_train_batches=2).fit(resumed, BlobsData(), ckpt_path=str(path))


def test_reduce_loss_without_batch_under_an_active_selector_names_the_missing_argument(tmp_path):
    """Reviewer: a `training_step` returning `self.reduce_loss(losses)` under a BatchFilter was told its batches were
    `NoneType` and to wrap the data set in IndexedDataset; it is the `batch` argument that is missing."""
    from lit_robust import BatchFilter
    from tests.conftest import blobs, tiny_trainer

    class NoBatch(TinyModel):
        def training_step(self, batch, batch_idx):
            return self.reduce_loss(self.per_sample_loss(batch)[0])

    with pytest.raises(ValueError, match=r"`reduce_loss` needs `batch` \(and `outputs`\) when a batch selector is "
                                         r"active \(BatchFilter\).*got batch=None"):
        tiny_trainer(tmp_path, 1, [BatchFilter("prl", 0.25, report=False)]).fit(
            NoBatch(), torch.utils.data.DataLoader(blobs(32), batch_size=16))
    m = TinyModel()  # without a selector the batch is not needed
    assert m.reduce_loss(torch.tensor([1.0, 3.0])) == pytest.approx(2.0)

    class DropTopLoss:  # a user's selector of the losses alone (the public protocol): no batch needed (the diff
        def keep_mask(self, losses, batch, outputs, module):  # reviewer's: it was refused too)
            return losses < losses.max()

    m.add_batch_selector(DropTopLoss())
    assert m.reduce_loss(torch.tensor([1.0, 3.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("affine", [True, False])
def test_reinitialize_resets_the_running_statistics_of_every_trainable_norm_layer(affine):
    """Reviewer: re-initialisation kept the running statistics of `BatchNorm1d(affine=False)` (no parameters, so no
    owner to reset), and ITLM's fresh model of a round went on with the old model's `num_batches_tracked`."""

    class BN(TinyModel):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4, affine=affine), nn.Linear(4, 3))
            self.inorm = nn.InstanceNorm1d(4, affine=affine, track_running_stats=True)

    m = BN().train()
    for _ in range(3):
        m.net(torch.randn(8, 2) * 3 + 2)
        m.inorm(torch.randn(8, 4, 5) * 3 + 2)
    m.reinitialize(0)
    for norm in (m.net[1], m.inorm):
        assert int(norm.num_batches_tracked) == 0
        assert torch.equal(norm.running_mean, torch.zeros(4)) and torch.equal(norm.running_var, torch.ones(4))


def test_reinitialize_keeps_the_statistics_of_a_parameter_free_norm_layer_in_a_frozen_submodule():
    """The docstring's rule for a frozen backbone (its buffers are kept) holds for its parameter-free norm layers too,
    while the same layer in the trainable head starts afresh."""

    class Frozen(TinyModel):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4, affine=False)).requires_grad_(False)
            self.head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, affine=False), nn.Linear(4, 3))

    m = Frozen().train()
    m.head(m.backbone(torch.randn(8, 2) + 2))
    kept = m.backbone[1].running_mean.clone()
    m.reinitialize(0)
    assert torch.equal(m.backbone[1].running_mean, kept) and int(m.backbone[1].num_batches_tracked) == 1
    assert int(m.head[1].num_batches_tracked) == 0


def test_predicted_labels_reads_the_outputs_of_a_list_return():
    """Reviewer: `per_sample_loss` returning the list `[losses, outputs]` (accepted everywhere else) gave
    `predicted_labels` None, as if there were no outputs."""

    class ListReturn(TinyModel):
        def per_sample_loss(self, batch):
            return list(super().per_sample_loss(batch))

    torch.manual_seed(0)
    m = ListReturn()
    batch = (torch.arange(5), torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1]))
    assert torch.equal(m.predicted_labels(batch), m(batch[1]).argmax(1))
