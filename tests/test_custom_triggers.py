"""Triggers as users bring them (patch/blend patterns, sizes, positions, plain functions), the backdoored
datamodules' `trigger=`, and BackdoorMetrics independent of where it stands relative to ITLM."""

import csv
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

import lit_robust as lr
from lit_robust.functional.backdoor import BlendTrigger, FunctionTrigger, PatchTrigger, as_trigger, poison
from tests.conftest import SHARED_DATA, BlobsData, TinyModel, tiny_trainer

LO, HI = -0.5, 2.0


def images(n=3, c=1, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LO + (HI - LO) * torch.rand(n, c, h, w, generator=g)


def reference_paste(x, patch, top, left):
    """Slow and obvious: write every patch pixel into every image and channel."""
    out = x.clone()
    ph, pw = patch.shape[-2:]
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    v = patch[i, j] if patch.ndim == 2 else patch[c if patch.shape[0] > 1 else 0, i, j]
                    out[n, c, top + i, left + j] = LO * (1 - float(v)) + HI * float(v)
    return out


# ------------------------------------------------------------------------------------------------ patch
@pytest.mark.parametrize(("position", "corner"), [
    ("bottom_right", (6, 5)), ("bottom_left", (6, 0)), ("top_left", (0, 0)), ("top_right", (0, 5)),
    ("center", (3, 2)), ((1, 4), (1, 4)),
])
def test_patch_with_any_pattern_and_position(position, corner):
    pattern = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.25, 0.0]])  # 2 x 3, not a checkerboard
    x = images()
    out = PatchTrigger(pattern=pattern, position=position, value_range=(LO, HI))(x)
    torch.testing.assert_close(out, reference_paste(x, pattern, *corner), rtol=0, atol=1e-6)


def test_patch_pattern_per_channel_and_resized_to_size():
    pattern = torch.stack([torch.zeros(2, 2), torch.ones(2, 2), torch.full((2, 2), 0.5)])  # [3, 2, 2]
    x = images(c=3)
    out = PatchTrigger(pattern=pattern, size=4, position="top_left", value_range=(LO, HI))(x)
    big = pattern.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # nearest neighbour, x2
    torch.testing.assert_close(out, reference_paste(x, big, 0, 0), rtol=0, atol=1e-6)


def test_default_patch_is_still_the_bottom_right_checkerboard():
    x = images(h=6, w=6)
    out = PatchTrigger(size=3, margin=1, value_range=(LO, HI))(x)
    board = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    assert torch.equal(out, reference_paste(x, board, 2, 2))  # exact: 0 and 1 map to exactly LO and HI


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pattern": torch.ones(2, 2, 2, 2)}, r"`pattern` must be a non-empty real tensor \[h, w\] or \[C, h, w\].*"
                                          r"got shape \(2, 2, 2, 2\)"),
    ({"pattern": [[0.0, 1.0]]}, r"`pattern` must be a non-empty real tensor.*got \[\[0.0, 1.0\]\] \(a list\)"),
    ({"pattern": torch.tensor([[0.0, 2.0]])}, r"`pattern` must hold intensities in \[0, 1\].*got values in \[0, 2\]"),
    ({"position": "middle"}, r"`position` must be one of 'bottom_right', .* or \(top, left\) with integers >= 0, "
                             r"got 'middle'"),
    ({"position": (-1, 0)}, r"`position` must be one of .* got \(-1, 0\)"),
    ({"size": (2, 0)}, r"`size` must be an integer >= 1 or a pair \(h, w\) of them, got \(2, 0\)"),
    ({"position": (0, 0), "margin": 1}, r"`margin` applies at a corner `position` only"),
])
def test_patch_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatchTrigger(**kwargs)


def test_patch_off_the_image_and_channel_mismatch():
    with pytest.raises(ValueError, match=r"`position` puts the 3×3 patch off the 8×8 image \(position=\(6, 0\): "
                                         r"top=6, left=0\); top must be in \[0, 5\] and left in \[0, 5\]"):
        PatchTrigger(position=(6, 0), value_range=(LO, HI))(images())
    with pytest.raises(ValueError, match="`pattern` has 2 channels but the images have 3"):
        PatchTrigger(pattern=torch.ones(2, 2, 2), value_range=(LO, HI))(images(c=3))
    # grey images: one allowed count, said once (a backdoor newcomer read "give it 1 or 1 channels")
    with pytest.raises(ValueError, match=r"^`pattern` has 3 channels but the images have 1; give it 1 channel, or "
                                         r"shape \[h, w\]\.$"):
        PatchTrigger(pattern=torch.ones(3, 2, 2), value_range=(LO, HI))(images(c=1))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("make", [lambda: PatchTrigger(pattern=torch.ones(3, 3), value_range=(0, 1)),
                                  lambda: PatchTrigger(value_range=(0, 1)),
                                  lambda: BlendTrigger(0.2, value_range=(0, 1))], ids=["patch", "default", "blend"])
def test_channels_last_images_are_named(make, channels):
    """A newcomer's [N, 28, 28, 3] images: a 3x3 patch was stamped down a whole column (1,008 values), silently;
    with one channel the message spoke of a 28×1 image."""
    with pytest.raises(ValueError, match=rf"`images` of shape \(2, 28, 28, {channels}\) look channels-last "
                                         r"\(\[N, H, W, C\]\); the triggers take \[N, C, H, W\]: pass "
                                         r"`images.permute\(0, 3, 1, 2\)`"):
        make()(torch.rand(2, 28, 28, channels))
    assert make()(torch.rand(2, channels, 28, 28)).shape == (2, channels, 28, 28)  # the same images, channels first


# ------------------------------------------------------------------------------------------------ blend
def test_blend_with_any_pattern():
    g = torch.Generator().manual_seed(1)
    pattern = torch.rand(8, 8, generator=g)
    x = images(c=2)
    out = BlendTrigger(alpha=0.3, pattern=pattern, value_range=(LO, HI))(x)
    expected = ((1 - 0.3) * x + 0.3 * (LO * (1 - pattern) + HI * pattern)).clamp(LO, HI)
    torch.testing.assert_close(out, expected)


def test_default_blend_unchanged():
    x = images()
    t = (LO + HI) / 2 + (HI - LO) / 2 * torch.randn((1, 8, 8), generator=torch.Generator().manual_seed(4))
    assert torch.equal(BlendTrigger(alpha=0.2, seed=4, value_range=(LO, HI))(x),
                       ((1 - 0.2) * x + 0.2 * t).clamp(LO, HI))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: BlendTrigger(alpha=1.5), r"`alpha` must be in \(0, 1\], got 1.5"),
    (lambda: BlendTrigger(alpha=-0.1), r"`alpha` must be in \(0, 1\], got -0.1"),
    (lambda: BlendTrigger(pattern=torch.ones(5, 5), value_range=(LO, HI))(images()),
     r"`pattern` is 5×5 but the images are 8×8"),
    (lambda: BlendTrigger(pattern=-torch.ones(8, 8)), r"`pattern` must hold intensities in \[0, 1\]"),
])
def test_blend_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------------------------------ functions
def test_a_plain_function_is_a_trigger():
    def stripe(x):
        out = x.clone()
        out[..., 0, :] = HI
        return out

    t = as_trigger(stripe)
    assert isinstance(t, FunctionTrigger) and "stripe" in repr(t)
    x = images()
    assert torch.equal(t(x), stripe(x))
    assert as_trigger(t) is t
    # poison takes one directly
    y = torch.zeros(3, dtype=torch.long)
    px, py, mask = poison(x, y, stripe, rate=1.0, num_classes=2)
    assert bool(mask.all()) and torch.equal(px, stripe(x)) and bool((py == 1).all())
    # with the data's range the result is clipped into it
    assert float(as_trigger(lambda v: v + 10.0, (LO, HI))(x).max()) == HI


def test_a_function_that_writes_into_its_input_leaves_the_callers_images_clean():
    """A backdoor newcomer's `images[..., :3, :3] = v; return images` wrote the trigger into the clean test split
    through `poison_test_set` (`BackdoorMNISTDataModule.poisoned_test_set()`), and every later test ran on triggered
    images: a function gets a copy."""
    from lit_robust.functional.backdoor import poison_test_set

    def white_corner(x):
        x[..., 0:3, 0:3] = HI
        return x

    x, y = images(), torch.tensor([0, 1, 0])
    before = x.clone()
    triggered, labels, attack = poison_test_set(x, y, white_corner, num_classes=2)
    assert torch.equal(x, before)  # the caller's images are untouched
    assert bool((triggered[..., 0:3, 0:3] == HI).all()) and torch.equal(triggered[..., 3:, 3:], before[..., 3:, 3:])
    assert torch.equal(labels, y) and torch.equal(attack, (y + 1) % 2)
    # the same for a `Trigger` subclass of one's own (a newcomer's check of the functions' fix)
    from lit_robust.functional.backdoor import Trigger

    class Corner(Trigger):
        def apply(self, v):
            v[..., 0:3, 0:3] = self.value_range[1]
            return v

    triggered, _, _ = poison_test_set(x, y, Corner(value_range=(LO, HI)), num_classes=2)
    assert torch.equal(x, before) and bool((triggered[..., 0:3, 0:3] == HI).all())


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: as_trigger(3), TypeError, r"`trigger` must be a lit_robust.functional.backdoor.Trigger or a function "
                                       r"`images -> images`, got 3 \(a int\)"),
    (lambda: as_trigger(lambda v: v[:, :, :2])(images()), ValueError,
     r"must return a floating-point batch of the input's shape \(3, 1, 8, 8\), got shape \(3, 1, 2, 8\)"),
    (lambda: as_trigger(PatchTrigger(value_range=(0.0, 1.0)), (LO, HI)), ValueError,
     r"`trigger` was built for `value_range` \(0, 1\) but the images lie in \(-0.5, 2\)"),
    (lambda: lr.BackdoorMetrics(trigger="patch"), TypeError, "`trigger` must be a lit_robust.functional.backdoor.Trigger"),
])
def test_bad_triggers(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_unset_range_takes_the_datas():
    t = as_trigger(PatchTrigger(pattern=torch.ones(2, 2)), (LO, HI))
    assert t.value_range == (LO, HI)
    assert float(t(images()).max()) == HI


# ------------------------------------------------------------------------------------------------ datamodules
def test_datamodule_takes_a_trigger(shared_data):
    pattern = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # a 1 x 4 bar, top-left
    dm = lr.BackdoorMNISTDataModule(root=str(shared_data), trigger=PatchTrigger(pattern=pattern, position=(0, 0)),
                                    poison_rate=0.2, train_size=200, seed=3)
    assert dm.attack == "custom" and dm.trigger.value_range == dm.value_range
    assert "PatchTrigger" in repr(dm.trigger) and "position=(0, 0)" in repr(dm.trigger)
    dm.setup("fit")
    flags = dm.train_set.corrupted
    x = dm.train_set.dataset.tensors[0]
    lo, hi = dm.value_range
    bar = torch.tensor([hi, lo, lo, hi])
    assert int(flags.sum()) == 40
    assert torch.allclose(x[flags][:, 0, 0, :4], bar.expand(40, 4))
    tx, _, _ = dm.poisoned_test_set()
    assert torch.allclose(tx[:, 0, 0, :4], bar.expand(len(tx), 4))


def test_datamodule_takes_a_function(shared_data):
    dm = lr.BackdoorFashionMNISTDataModule(root=str(shared_data), trigger=lambda v: v.flip(-1), train_size=100)
    assert dm.attack == "custom" and isinstance(dm.trigger, FunctionTrigger)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"attack": "blend", "trigger": lambda v: v}, ValueError, "pass `attack` .* or `trigger` .*, not both"),
    ({"trigger": 5}, TypeError, r"`trigger` must be a lit_robust.functional.backdoor.Trigger or a function"),
    ({"trigger": PatchTrigger(value_range=(0.0, 1.0))}, ValueError, r"built for `value_range` \(0, 1\)"),
])
def test_datamodule_bad_trigger(kwargs, error, message):
    with pytest.raises(error, match=message):
        lr.BackdoorMNISTDataModule(root=str(SHARED_DATA), **kwargs)


# ------------------------------------------------------------------------------------------------ metrics order
def dropped_rows(tmp_path, order, with_filter):
    itlm = lr.ITLM(keep_ratio=0.7, round_epochs=[2, 2], verbose=False, plot=False)
    named = {"itlm": itlm, "metrics": lr.BackdoorMetrics(trigger=lambda v: v, target=None, num_classes=3)}
    if with_filter:
        named["filter"] = lr.BatchFilter("prl", drop_ratio=0.2)
    callbacks = [named[k] for k in order if k in named]
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 4, callbacks, logger=CSVLogger(tmp_path, name="log"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyModel(lr=0.05), BlobsData(n=240, batch_size=32))
    with open(trainer.logger.log_dir + "/metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("backdoor/dropped_recall")]
    return [(int(r["epoch"]), float(r["backdoor/dropped_precision"] or "nan"), float(r["backdoor/dropped_recall"]))
            for r in rows], itlm, named.get("filter")


@pytest.mark.parametrize("with_filter", [False, True], ids=["itlm", "itlm+filter"])
def test_backdoor_metrics_do_not_depend_on_callback_order(tmp_path, with_filter):
    first, itlm, f = dropped_rows(tmp_path / "a", ("metrics", "filter", "itlm"), with_filter)
    last, _, _ = dropped_rows(tmp_path / "b", ("itlm", "filter", "metrics"), with_filter)
    assert [r[0] for r in first] == [0, 1, 2, 3]
    assert [(e, round(p, 12) if p == p else "nan", round(q, 12)) for e, p, q in first] == \
        [(e, round(p, 12) if p == p else "nan", round(q, 12)) for e, p, q in last]
    # epochs 2-3 report round 1's selection (not round 0's, which dropped nothing)
    r1 = itlm.history[1]
    for epoch, precision, recall in first[2:]:
        if f is None:
            assert recall == pytest.approx(r1.corrupted_recall)
            assert precision == pytest.approx(r1.dropped_corrupted / (r1.n - r1.kept))
        else:  # ITLM's and the filter's drops add up
            fr = f.history[epoch]
            dropped = r1.n - r1.kept + fr.dropped
            poisoned_dropped = r1.dropped_corrupted + fr.corrupted_dropped
            assert precision == pytest.approx(poisoned_dropped / dropped)
            assert recall == pytest.approx(poisoned_dropped / (r1.dropped_corrupted + fr.corrupted_seen))
    assert first[2][2] > 0.3  # round 1 dropped a good share of the noisy labels
    if f is None:
        assert math.isnan(first[0][1]) and first[0][2] == 0.0  # round 0 trains on everything


class _BackdooredThreeClasses(pl.LightningModule):
    """Predicts the label written into pixel (0, 0), shifted a -> a+1 (mod 3) where pixel (1, 1) carries the trigger:
    a backdoor that works every time."""

    def forward(self, x):
        label = x[:, 0, 0, 0].round().long()
        pred = torch.where(x[:, 0, 1, 1] > 0.5, (label + 1) % 3, label)
        return torch.nn.functional.one_hot(pred, 3).float()

    def test_step(self, batch, batch_idx):
        pass


def _three_class_images():
    """30 images whose pixel (0, 0) holds their label (3 classes), and the trigger that sets pixel (1, 1)."""
    y = torch.arange(30) % 3
    x = torch.zeros(30, 1, 2, 2)
    x[:, 0, 0, 0] = y.float()

    def mark(v):
        v[:, 0, 1, 1] = 1.0
        return v

    return x, y, mark


def _backdoor_test(tmp_path, module, **kwargs):
    """`BackdoorMetrics(trigger=mark, target=None, **kwargs)` over a test of ``module`` on the three-class images."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y, mark = _three_class_images()
    metrics = lr.BackdoorMetrics(trigger=mark, target=None, **kwargs)
    loader = DataLoader(TensorDataset(torch.arange(30), x, y), batch_size=8)
    tiny_trainer(tmp_path, 1, [metrics]).test(module, loader, verbose=False)
    return metrics.results["test"]


def test_backdoor_metrics_without_a_datamodule_read_the_classes_off_the_outputs(tmp_path):
    """A backdoor newcomer's 3-class a -> a+1 attack, which worked every time, read 67 % attack success: without a
    datamodule the class count defaulted to 10, and (2 + 1) mod 10 is no class. The outputs' width tells."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y, mark = _three_class_images()

    def asr(**kwargs):
        return _backdoor_test(tmp_path, _BackdooredThreeClasses(), **kwargs)

    assert asr() == {"clean_acc": 1.0, "poison_acc": 0.0, "asr": 1.0}
    assert asr(num_classes=3)["asr"] == 1.0
    assert asr(num_classes=10)["asr"] == pytest.approx(20 / 30)  # told 10 classes, it counts as told
    with pytest.raises(ValueError, match=r"`target` must be a class in \[0, 2\], got 5"):
        asr_single = lr.BackdoorMetrics(trigger=mark, target=5)
        tiny_trainer(tmp_path, 1, [asr_single]).test(
            _BackdooredThreeClasses(), DataLoader(TensorDataset(torch.arange(30), x, y), batch_size=8), verbose=False)


class _NoForward(_BackdooredThreeClasses):
    """The same backdoored classifier behind a `net` attribute, with no `forward` of its own (a newcomer's)."""

    def __init__(self):
        super().__init__()
        self.net = _BackdooredThreeClasses()

    forward = pl.LightningModule.forward


class _TupleOut(_BackdooredThreeClasses):
    def forward(self, x):
        return super().forward(x), x.flatten(1)


def test_backdoor_metrics_refuse_a_module_without_forward_or_logits_in_one_line(tmp_path):
    """A module without `forward` got torch's "missing the required forward function" at the first evaluation batch,
    a forward returning a tuple `argmax` of a tuple: neither named `BackdoorMetrics` or its `predict`."""

    def run(module, **kwargs):
        return _backdoor_test(tmp_path, module, **kwargs)

    with pytest.raises(ValueError, match=r"_NoForward defines no `forward`; pass `predict=`"):
        run(_NoForward())
    assert run(_NoForward(), predict=lambda m, v: m.net(v))["asr"] == 1.0  # the advice works
    with pytest.raises(ValueError, match=r"needs \[batch, classes\] logits from the module's `forward\(images\)`, "
                                         r"got a tuple for a batch of 8 images"):
        run(_TupleOut())
    with pytest.raises(ValueError, match=r"from `predict\(module, images\)`, got a tensor of shape \(8,\)"):
        run(_TupleOut(), predict=lambda m, v: m(v)[0].argmax(-1))
    assert run(_TupleOut(), predict=lambda m, v: m(v)[0])["asr"] == 1.0
