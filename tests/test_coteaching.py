import copy
import math
import re
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, DistributedSampler

from lit_robust import CoTeaching, CoTeachingEpochRecord
from tests.conftest import BlobsData, TinyModel, tiny_trainer
from tests.test_scores import ce, ref_loss_layer_norms


class PlainSGD(TinyModel):
    """TinyModel with momentum-free SGD, so one step is ``w - lr * grad`` exactly."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class SpyCoTeaching(CoTeaching):
    """Records, per step, both networks' parameters before the step, the batch and the two keep-masks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = []

    def selections(self, batch, losses, outputs, drop_ratio):
        keep1, keep2 = super().selections(batch, losses, outputs, drop_ratio)
        self.steps.append(dict(
            p1=copy.deepcopy(self.net1.net.state_dict()), p2=copy.deepcopy(self.net2.net.state_dict()),
            batch=[t.clone() for t in batch], keep1=keep1.clone(), keep2=keep2.clone(), eps=drop_ratio))
        return keep1, keep2


def ref_keep(scores, index, k):
    """Slow reference: the k smallest (score, index) pairs."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), int(index[i])))
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep


def ref_scores(rule, net, x, y):
    return F.cross_entropy(net(x), y, reduction="none") if rule == "spl" else ref_loss_layer_norms(net(x), y, ce)


def sgd_step(net, params, x, y, keep, lr):
    """The parameters after one plain SGD step on the mean loss over ``keep``, computed independently."""
    net = copy.deepcopy(net)
    net.load_state_dict(params)
    losses = F.cross_entropy(net(x), y, reduction="none")
    loss = losses[keep].mean()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return {name: p.detach() - lr * g for (name, p), g in zip(net.named_parameters(), grads)}


def fit(tmp_path, model, max_epochs=2, data=None, seed=0, **kw):
    pl.seed_everything(seed, verbose=False)
    trainer = tiny_trainer(tmp_path, max_epochs, **kw)
    trainer.fit(model, data or BlobsData(n=96, batch_size=16))
    return trainer


@pytest.mark.parametrize("rule", ["spl", "prl"])
def test_each_network_trains_on_its_peers_trim(rule, tmp_path):
    # seeded before the model is built: an unseeded start made near-ties (reference vs library scores) possible
    pl.seed_everything(0, verbose=False)
    co = SpyCoTeaching(PlainSGD(lr=0.1), rule=rule, drop_ratio=0.3, warmup_epochs=1)
    fit(tmp_path, co, max_epochs=2)
    assert len(co.steps) == 12
    net = PlainSGD().net
    for i, step in enumerate(co.steps):
        index, x, y = step["batch"][:3]
        eps = 0.3 * min((i // 6) / 1, 1.0)
        assert step["eps"] == pytest.approx(eps)
        k = math.floor(round((1 - eps) * len(y), 9))
        for which, params in (("keep1", step["p1"]), ("keep2", step["p2"])):
            net.load_state_dict(params)
            expected = ref_keep(ref_scores(rule, net, x, y).detach(), index, k)
            assert torch.equal(step[which], expected), (i, which)
        if i + 1 < len(co.steps) and (i + 1) % 6:  # next step within the same epoch: check the exchange
            nxt = co.steps[i + 1]
            for params, keep, after in ((step["p1"], step["keep2"], nxt["p1"]), (step["p2"], step["keep1"], nxt["p2"])):
                want = sgd_step(net, params, x, y, keep, 0.1)
                for name, value in want.items():
                    torch.testing.assert_close(after[name], value, rtol=1e-5, atol=1e-6)
    # after warm-up the two networks disagree somewhere (they start from different initialisations)
    assert any(not torch.equal(s["keep1"], s["keep2"]) for s in co.steps[6:])


def test_networks_start_apart_and_seeded():
    a, b = CoTeaching(TinyModel(), seed=3), CoTeaching(TinyModel(), seed=3)
    w = lambda net: torch.cat([p.flatten() for p in net.parameters()])  # noqa: E731
    assert not torch.equal(w(a.net1), w(a.net2))
    assert torch.equal(w(a.net2), w(b.net2))
    assert not torch.equal(w(a.net2), w(CoTeaching(TinyModel(), seed=4).net2))


def test_a_model_built_under_the_peers_seed_still_gets_a_distinct_peer(monkeypatch):
    """``seed_everything(1)`` then ``CoTeaching(model, seed=1)``: re-drawing with 1 gives the model itself, and
    Co-teaching would run as one network's small-loss filter (a newcomer's runs equalled SPL's exactly)."""
    said: list[str] = []
    monkeypatch.setattr("lit_robust.models.coteaching.rank_zero_info", said.append)
    w = lambda net: torch.cat([p.flatten() for p in net.parameters()])  # noqa: E731
    pl.seed_everything(1, verbose=False)
    model = TinyModel()
    probe = copy.deepcopy(model)
    probe.reinitialize(1)
    assert torch.equal(w(probe), w(model))  # the coincidence itself
    co = CoTeaching(model, seed=1)
    assert not torch.equal(w(co.net1), w(co.net2)) and co._peer_seed == 2
    probe.reinitialize(2)
    assert torch.equal(w(co.net2), w(probe))  # deterministic: the next seed
    assert said == ["CoTeaching: the second network drawn with seed=1 started identical to the model given (built "
                    "under the same global seed); drawn with seed=2 instead."]
    pl.seed_everything(5, verbose=False)
    assert CoTeaching(TinyModel(), seed=1)._peer_seed == 1 and len(said) == 1  # no coincidence: unchanged


def test_a_model_whose_reinitialize_draws_nothing_new_is_refused():
    class Fixed(TinyModel):
        def reinitialize(self, seed):
            pass

    with pytest.raises(ValueError, match=r"second network must start apart .* seeds 1\.\.9 gave the same parameters"):
        CoTeaching(Fixed(), seed=1)


def test_history_counts_corrupted_rejects(tmp_path):
    co = SpyCoTeaching(TinyModel(), rule="spl", drop_ratio=0.25, warmup_epochs=0)
    data = BlobsData(n=96, batch_size=16)
    fit(tmp_path, co, max_epochs=2, data=data)
    assert [r.epoch for r in co.history] == [0, 1]
    for epoch, rec in enumerate(co.history):
        steps = co.steps[epoch * 6:(epoch + 1) * 6]
        bad = torch.cat([s["batch"][3] for s in steps])
        d1 = ~torch.cat([s["keep1"] for s in steps])
        d2 = ~torch.cat([s["keep2"] for s in steps])
        assert isinstance(rec, CoTeachingEpochRecord)
        assert (rec.seen, rec.dropped_1, rec.dropped_2) == (96, int(d1.sum()), int(d2.sum())) == (96, 24, 24)
        assert rec.dropped_corrupted_frac_1 == pytest.approx(float((bad & d1).sum() / d1.sum()))
        assert rec.dropped_corrupted_frac_2 == pytest.approx(float((bad & d2).sum() / d2.sum()))
        assert rec.corrupted_frac == pytest.approx(float(bad.float().mean()))


def test_validation_and_test_use_network_one(tmp_path):
    co = CoTeaching(TinyModel(), drop_ratio=0.2)
    trainer = fit(tmp_path, co, max_epochs=1, data=BlobsData(n=96, batch_size=16, with_val=True))
    data = BlobsData(n=96)
    x, y = data.ds[:][1], data.ds[:][2]
    with torch.no_grad():
        want = F.cross_entropy(co.net1(x), y)
        other = F.cross_entropy(co.net2(x), y)
    assert float(trainer.callback_metrics["val_loss"]) == pytest.approx(float(want), rel=1e-5)
    assert float(want) != pytest.approx(float(other), rel=1e-3)
    assert torch.equal(co(x), co.net1(x))


class WithoutEvalSteps(TinyModel):
    validation_step = pl.LightningModule.validation_step  # TinyModel's own removed: a model with training only


def test_a_model_without_evaluation_steps_is_seen_as_one(tmp_path):
    # a precision newcomer's model had no `validation_step`: the wrapper's own made Lightning warn of one with no
    # `val_dataloader`, and `trainer.test` ran net1's missing `test_step` (a warning, no metric)
    co = CoTeaching(WithoutEvalSteps(), drop_ratio=0.2)
    loader = DataLoader(BlobsData(n=96).ds, batch_size=16)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(co, train_dataloaders=loader)
    assert not [w for w in caught if "validation_step" in str(w.message)]
    with pytest.raises(MisconfigurationException, match="No `test_step"):
        trainer.test(co, dataloaders=loader)
    # the wrapped model's own steps are still the ones used where it has them (test above)
    step = CoTeaching(TinyModel(), drop_ratio=0.2).validation_step
    assert step.func.__func__ is CoTeaching._delegate and step.args == ("validation_step",)


class WithStepLR(PlainSGD):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


def test_each_networks_scheduler_is_stepped(tmp_path):
    co = CoTeaching(WithStepLR(lr=0.1), drop_ratio=0.2)
    trainer = fit(tmp_path, co, max_epochs=3)
    lrs = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]
    assert lrs == pytest.approx([0.1 * 0.5 ** 3] * 2)


class EpochSeededBlobs(BlobsData):
    """Shuffles by (seed, epoch) — Lightning calls ``set_epoch`` — so a resumed run sees the same batches."""

    def train_dataloader(self):
        sampler = DistributedSampler(self.ds, num_replicas=1, rank=0, shuffle=True, seed=0)
        return DataLoader(self.ds, batch_size=self.batch_size, sampler=sampler)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    def run(path, epochs, ckpt=None, cb=()):
        pl.seed_everything(0, verbose=False)
        co = CoTeaching(TinyModel(), rule="prl", drop_ratio=0.3, warmup_epochs=2, report_dir=str(path))
        trainer = tiny_trainer(path, epochs, callbacks=list(cb), enable_checkpointing=bool(cb))
        trainer.fit(co, EpochSeededBlobs(n=96, batch_size=16), ckpt_path=ckpt)
        return co

    full = run(tmp_path / "full", 4)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, every_n_epochs=1)
    run(tmp_path / "part", 2, cb=[ck])
    resumed = run(tmp_path / "resumed", 4, ckpt=str(tmp_path / "ck" / "epoch=1-step=24.ckpt"))
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.history == full.history
    # the per-sample report too: its first-dropped epochs from before the checkpoint came through it
    report = (tmp_path / "resumed" / "coteaching_report.csv").read_text()
    assert report == (tmp_path / "full" / "coteaching_report.csv").read_text()
    from lit_robust import load_report

    rows = load_report(tmp_path / "resumed" / "coteaching_report.csv", as_frame=False)
    assert 1 in {r["first_dropped_epoch"] for r in rows}  # epoch 1 was trained before the checkpoint


def test_loading_a_checkpoint_without_the_model_or_into_the_model_says_how(tmp_path):
    # a notebook newcomer: `CoTeaching.load_from_checkpoint(p)` -> "missing 1 required positional argument: 'model'",
    # `MLP.load_from_checkpoint(p)` -> a RuntimeError listing every net1.* and net2.* key
    co = CoTeaching(TinyModel(), drop_ratio=0.2)
    trainer = fit(tmp_path, co, max_epochs=1)
    path = tmp_path / "co.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(TypeError, match=r"pass it to load one too: `CoTeaching.load_from_checkpoint\(path, model="):
        CoTeaching.load_from_checkpoint(path)
    with pytest.raises(ValueError, match=r"TinyModel.load_from_checkpoint: this is a checkpoint of `CoTeaching`.*"
                                         r"model=TinyModel\(...\)\)` and take its `.net1`"):
        TinyModel.load_from_checkpoint(path)
    loaded = CoTeaching.load_from_checkpoint(path, model=TinyModel())  # the way the docs give
    for a, b in zip(co.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    # a checkpoint of the model itself still loads into it
    plain = TinyModel()
    plain_trainer = fit(tmp_path / "plain", plain, max_epochs=1)
    plain_trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    reloaded = TinyModel.load_from_checkpoint(tmp_path / "tiny.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), reloaded.state_dict().values()))


@pytest.mark.parametrize("rule", ["spl", "prl"])
def test_report_is_the_last_epochs_mean_score_of_both_networks(rule, tmp_path):
    """The per-sample report (a newcomer's `lit-robust fit` of a Co-teaching config wrote none): every sample once,
    ranked by the mean of the two networks' scores in the last epoch, kept = in both networks' trusted sets, net1's
    prediction -- against a reference recomputed from the recorded parameters and batches."""
    from lit_robust import load_report

    co = SpyCoTeaching(PlainSGD(), rule=rule, drop_ratio=0.25, warmup_epochs=1, report_dir=str(tmp_path))
    fit(tmp_path, co, max_epochs=2)  # 96 samples in batches of 16: steps 6-11 are the last epoch
    rows = load_report(co.report_path, as_frame=False)
    assert co.report_path == str(tmp_path / "coteaching_report.csv")
    ref = {}
    first_dropped = {}
    for step_no, st in enumerate(co.steps):
        index, x, y = st["batch"][:3]
        for i, (k1, k2) in zip(index.tolist(), zip(st["keep1"].tolist(), st["keep2"].tolist())):
            if not (k1 and k2):
                first_dropped.setdefault(i, step_no // 6)
        if step_no < 6:
            continue
        nets = []
        for key in ("p1", "p2"):
            net = copy.deepcopy(co.net1.net)
            net.load_state_dict(st[key])
            nets.append(net)
        s1, s2 = (ref_scores(rule, net, x, y).detach() for net in nets)
        predicted = nets[0](x).argmax(1)
        for j, i in enumerate(index.tolist()):
            ref[i] = dict(score=0.5 * (float(s1[j]) + float(s2[j])), kept=bool(st["keep1"][j] and st["keep2"][j]),
                          predicted=int(predicted[j]), given=int(y[j]), corrupted=bool(st["batch"][3][j]))
    assert [r["index"] for r in rows] == sorted(ref, key=lambda i: (-ref[i]["score"], i))
    for row in rows:
        want = ref[row["index"]]
        assert row["score_last_epoch"] == pytest.approx(want["score"], rel=1e-5, abs=1e-7)
        assert (row["kept"], row["predicted_label"], row["given_label"], row["corrupted"]) == \
            (want["kept"], want["predicted"], want["given"], want["corrupted"])
        assert row["first_dropped_epoch"] == first_dropped.get(row["index"])
    assert sum(not r["kept"] for r in rows) > 0 and min(first_dropped.values()) == 1  # epoch 0 drops nothing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(drop_ratio=0.5), r"`drop_ratio` must be in \[0, 0.5\), got 0.5.*allow_large_drop"),
        (dict(drop_ratio=-0.1), r"`drop_ratio` must be in \[0, 0.5\), got -0.1"),
        (dict(drop_ratio=1.0, allow_large_drop=True), r"\[0, 1\) with `allow_large_drop=True`, got 1.0"),
        (dict(rule="prl_g"), r"`rule` must be 'spl' \(Co-teaching\) or 'prl' \(Co-PRL\(L\)\), got 'prl_g'"),
        (dict(warmup_epochs=-1), r"`warmup_epochs` must be an integer >= 0 or None \(.*\), got -1"),
        (dict(scope="world"), r"`scope` must be 'local' or 'global', got 'world'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CoTeaching(TinyModel(), **kwargs)


def test_large_drop_needs_opt_in():
    assert CoTeaching(TinyModel(), drop_ratio=0.6, allow_large_drop=True).drop_ratio == 0.6


def test_model_without_mixin_is_refused():
    class Plain(pl.LightningModule):
        pass

    with pytest.raises(TypeError, match="adopt `lit_robust.RobustMixin`"):
        CoTeaching(Plain())


def test_a_class_or_a_compiled_module_is_refused_with_the_fix():
    """A newcomer's `CoTeaching(torch.compile(model))` was told to write `class OptimizedModule(RobustMixin, ...)`."""
    with pytest.raises(TypeError, match=r"needs a module instance, got the class `TinyModel` itself: pass `TinyModel"):
        CoTeaching(TinyModel)
    with pytest.raises(TypeError, match=r"got a `torch.compile`d module: .* `torch.compile\(CoTeaching\(model\)\)`"):
        CoTeaching(torch.compile(TinyModel()))


class TwoOptimizers(TinyModel):
    def configure_optimizers(self):
        return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters())]


def test_model_with_two_optimizers_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"`net1.configure_optimizers\(\)` to return one optimizer"):
        fit(tmp_path, CoTeaching(TwoOptimizers()), max_epochs=1)


def test_tiny_last_batch_is_kept_whole_with_one_warning(tmp_path):
    co = SpyCoTeaching(TinyModel(), drop_ratio=0.3)
    with pytest.warns(UserWarning, match="too small to drop") as rec:
        fit(tmp_path, co, max_epochs=2, data=BlobsData(n=97, batch_size=16))
    assert sum("too small" in str(w.message) for w in rec) == 1
    last = [s for s in co.steps if s["keep1"].numel() == 1]
    assert len(last) == 2 and all(bool(s["keep1"].all() and s["keep2"].all()) for s in last)


def test_a_fit_shorter_than_the_warmup_is_warned_about(tmp_path):
    """coteaching_mnist.yaml (warmup_epochs 5) with `--trainer.max_epochs 1` was plain training of two networks."""
    co = CoTeaching(TinyModel(), rule="spl", drop_ratio=0.25, warmup_epochs=5)
    with pytest.warns(UserWarning, match=r"CoTeaching: the Trainer's `max_epochs`=2 ends the fit before .* drops at "
                                         r"most 0.05 of each batch"):
        fit(tmp_path, co, max_epochs=2)
    assert [r.dropped_1 for r in co.history] == [0, 6]  # epoch 1: 16 - floor(0.95 * 16) = 1 in each of 6 batches


def test_a_compiled_fit_compiles_the_same_graphs_for_2_and_6_warmup_epochs(tmp_path):
    # as RobustMixin's step: the epoch schedule, the bookkeeping and the logging stay out of the compiled graph
    # (before: 30 graphs for 2 epochs, 37 for 6 -- a recompile per warm-up epoch, up to dynamo's limit)
    from tests.conftest import MixinStep, graphs_compiled_over

    def make():
        return CoTeaching(MixinStep(), rule="prl", drop_ratio=0.3, warmup_epochs=5)

    two, six = (graphs_compiled_over(tmp_path, make, BlobsData(n=256), epochs) for epochs in (2, 6))
    assert two == six, (two, six)
    # the two optimizers' steps stay out too: traced, they guarded on each optimizer object (12 graphs here; a compile
    # user's Co-teaching fit recompiled 18 times, 9 since)
    assert six <= 6, six


def test_report_under_ddp_has_every_sample_once(tmp_path):
    """Two gloo ranks, an odd set (one rank gets a padded repeat): the one file, rank 0's, has every training sample
    once, scored by the rank that saw it, with its given label and ground truth."""
    from lit_robust import load_report
    from tests.conftest import ddp_cpu_strategy, fit_ranks

    data = BlobsData(n=99, batch_size=16)

    def make():
        model = CoTeaching(TinyModel(), rule="prl", drop_ratio=0.3, warmup_epochs=0, report_dir=str(tmp_path))
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(), logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             deterministic=True)
        return trainer, model, data

    fit_ranks(make)
    rows = sorted(load_report(tmp_path / "coteaching_report.csv", as_frame=False), key=lambda r: r["index"])
    assert [r["index"] for r in rows] == list(range(99))
    assert all(r["score_last_epoch"] is not None and r["predicted_label"] is not None for r in rows)
    assert [r["given_label"] for r in rows] == data.ds.targets.tolist()
    assert [r["corrupted"] for r in rows] == data.ds.corrupted.tolist()
    assert 0 < sum(not r["kept"] for r in rows) < 99


def test_a_batch_filter_beside_coteaching_is_told_they_do_not_combine(tmp_path):
    """A power user's BatchFilter on a Co-teaching Trainer was told to write `class CoTeaching(RobustMixin, ...)`."""
    from lit_robust import BatchFilter

    trainer = tiny_trainer(tmp_path, 1, [BatchFilter("prl", drop_ratio=0.3)])
    with pytest.raises(TypeError, match=r"^`BatchFilter` does not combine with `CoTeaching`, which filters each batch "
                                        r"itself: set its `rule`, `drop_ratio` and `warmup_epochs` instead\.$"):
        trainer.fit(CoTeaching(TinyModel(), drop_ratio=0.2), BlobsData())


class SeededBlobs(BlobsData):
    def __init__(self, seed: int = 0) -> None:
        super().__init__(n=96, batch_size=16)
        self.save_hyperparameters()  # as most datamodules do


def test_a_datamodule_with_its_own_seed_hyperparameter_fits_with_a_logger(tmp_path):
    """A regression user's datamodule saved `seed=0`; CoTeaching saved its `seed=1`, and with a logger attached
    Lightning refused the fit ("Error while merging hparams: the keys ['seed'] are present in both ...")."""
    from pytorch_lightning.loggers import CSVLogger

    model = CoTeaching(PlainSGD(), drop_ratio=0.2, seed=1)
    trainer = fit(tmp_path, model, max_epochs=1, data=SeededBlobs(seed=0), logger=CSVLogger(tmp_path))
    assert trainer.current_epoch == 1 and trainer.datamodule.hparams.seed == 0


def test_a_models_own_training_step_is_said_to_be_unused(tmp_path):
    """A manual-optimisation researcher's `training_step` (with its gradient clipping) ran 0 times under CoTeaching
    without a word: CoTeaching trains both networks from `per_sample_loss`."""
    import warnings

    from lit_robust import ImageClassifier, RobustMixin

    class OwnStep(TinyModel):
        def training_step(self, batch, batch_idx):
            raise AssertionError("never called")

    class AssignsTheMixins(TinyModel):
        training_step = RobustMixin.training_step

    co = CoTeaching(OwnStep())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 1, limit_train_batches=1).validate(co, BlobsData(with_val=True))
    assert not [w for w in caught if "is not called" in str(w.message)]  # nothing trains in a validate run
    with pytest.warns(UserWarning, match=r"CoTeaching: `.*OwnStep\.training_step` is not called: CoTeaching trains "
                                         r"its two copies of the model itself, each from `per_sample_loss`"):
        tiny_trainer(tmp_path, 1, limit_train_batches=1).fit(co, BlobsData())
    from lit_robust.models.coteaching import _say_own_training_step_unused

    for quiet in (ImageClassifier("mlp", num_classes=3, in_channels=1, image_size=2), AssignsTheMixins()):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the package's models, and a class that takes the mixin's step
            _say_own_training_step_unused(quiet)
    with pytest.warns(UserWarning, match="is not called"):
        _say_own_training_step_unused(OwnStep())


def _co_checkpoint_run(path, epochs, ckpt=None, save=False, **changed):
    """A seeded CoTeaching "auto" fit (warm-up 3 epochs) on 96 blobs, from `ckpt` if given; `save`: a checkpoint of
    every epoch in `path / "ck"`."""
    args = {"rule": "spl", "drop_ratio": "auto", "warmup_epochs": 3, **changed}
    pl.seed_everything(0, verbose=False)
    co = CoTeaching(TinyModel(), **args)
    cb = [ModelCheckpoint(dirpath=path / "ck", save_top_k=-1, every_n_epochs=1, filename="{epoch}")] if save else []
    tiny_trainer(path, epochs, callbacks=cb, enable_checkpointing=save).fit(co, BlobsData(n=96, batch_size=16),
                                                                            ckpt_path=ckpt)
    return co


@pytest.mark.parametrize("changed", [{"warmup_epochs": 2}, {"auto_margin": 0.1}, {"reestimate": True},
                                     {"drop_ratio": 0.3}, {"rule": "prl"}])
def test_resuming_with_other_schedule_arguments_is_an_error_naming_them(tmp_path, changed):
    """A reviewer's CoTeaching resumed with another `warmup_epochs`, `auto_margin` or `reestimate` was accepted without
    a word and ramped the old estimates on the new schedule, a run equal to neither; BatchFilter refuses the same."""
    import re

    _co_checkpoint_run(tmp_path / "first", 2, save=True)
    (name, value), = changed.items()
    was = {"warmup_epochs": 3, "auto_margin": 0.0, "reestimate": None, "drop_ratio": "auto", "rule": "spl"}[name]
    note = (", `None` being the default: re-estimate on one regression target only; pass `reestimate=None` to resume "
            "this checkpoint") if name == "reestimate" else ""
    with pytest.raises(ValueError, match=re.escape(f"the checkpoint was written by CoTeaching with `{name}` {was!r} "
                                                   f"(this fit: {value!r}{note}): a resumed fit needs the CoTeaching "
                                                   "arguments it was written with")) as refused:
        _co_checkpoint_run(tmp_path / "other", 3, ckpt=str(tmp_path / "first" / "ck" / "epoch=1.ckpt"), **changed)
    # the module that holds the state, with its `model=` (a modules newcomer was told of `MyModel.load_from_checkpoint`)
    assert str(refused.value).endswith("e.g. `CoTeaching.load_from_checkpoint(path, model=MyModel())`.")


def test_a_checkpoint_without_saved_arguments_still_resumes(tmp_path):
    """Checkpoints written before CoTeaching saved its schedule arguments carry none: nothing to compare, they load;
    the report arguments (output only) may change on a resume."""
    _co_checkpoint_run(tmp_path / "first", 2, save=True)
    path = tmp_path / "first" / "ck" / "epoch=1.ckpt"
    _co_checkpoint_run(tmp_path / "report", 3, ckpt=str(path), report=False)
    ckpt = torch.load(path, weights_only=False)
    del ckpt["co_teaching"]["arguments"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    co = _co_checkpoint_run(tmp_path / "old", 3, ckpt=str(tmp_path / "old.ckpt"), warmup_epochs=2)
    assert [r.epoch for r in co.history] == [0, 1, 2]


@pytest.mark.parametrize("seed", [2**64, 2**32, -1])
def test_a_seed_outside_the_shared_range_is_named(seed):
    """`CoTeaching(seed=2**64)` (`--model.init_args.seed` on the CLI) ended in torch's bare "Overflow when unpacking
    long long" traceback, naming no argument; `seed=-1` was taken where ITLM and `--seed_everything` refuse it."""
    with pytest.raises(ValueError, match=rf"^`seed` must be an integer in \[0, 4294967295\], got {seed}\.$"):
        CoTeaching(TinyModel(), seed=seed)
    assert CoTeaching(TinyModel(), seed=2**32 - 1).net2 is not None  # the largest seed, and the ones tried after it


def test_a_model_without_parameters_yet_is_named_as_such():
    """`CoTeaching(model=MLPClassifier())` (its shape read from the data at setup) was refused with "re-drawing it
    with seeds 1..9 gave the same parameters each time: make the model's `reinitialize(seed)` draw fresh parameters",
    which blamed the model's re-initialisation: the model had no parameters to draw yet."""
    from lit_robust import MLPClassifier

    with pytest.raises(ValueError, match=r"^`model` \(MLPClassifier\) has no parameters yet: CoTeaching copies it .*"
                                         r"MLPClassifier\(in_features=\.\.\., num_classes=\.\.\.\)"):
        CoTeaching(MLPClassifier())
    assert CoTeaching(MLPClassifier(in_features=4, num_classes=3)).net2 is not None


def test_drop_ratio_and_warmup_set_in_hparams_are_the_ones_the_fit_uses(tmp_path):
    """`co.hparams.warmup_epochs = 4` (what RCA and the flows read, what a checkpoint saves) was overwritten at setup by
    the constructor's 0, without a word: the attributes and `hparams` are now one value."""
    co = CoTeaching(TinyModel(), rule="spl", drop_ratio=0.2, warmup_epochs=0)
    co.hparams.warmup_epochs, co.hparams.drop_ratio = 2, 0.4
    assert (co.warmup_epochs, co.drop_ratio) == (2, 0.4)
    fit(tmp_path, co, max_epochs=3)
    assert [r.drop_ratio for r in co.history] == [0.0, 0.2, 0.4]  # epsilon * min(t / 2, 1), not 0.2 from epoch 0
    assert (co.hparams.warmup_epochs, co.hparams.drop_ratio) == (2, 0.4)
    co.warmup_epochs, co.drop_ratio = 1, 0.25  # the attribute API sets the same value
    assert (co.hparams.warmup_epochs, co.hparams.drop_ratio) == (1, 0.25)
    co.hparams.warmup_epochs = -1  # still checked at the next fit's setup, as the constructor's argument
    with pytest.raises(ValueError, match=r"`warmup_epochs` must be an integer >= 0 or None \(.*\), got -1"):
        fit(tmp_path / "bad", co, max_epochs=1)


def test_load_from_checkpoint_warmup_override_survives_a_later_hparams_edit(tmp_path):
    co = CoTeaching(TinyModel(), rule="spl", drop_ratio=0.2, warmup_epochs=0)
    trainer = fit(tmp_path, co, max_epochs=1)
    trainer.save_checkpoint(tmp_path / "co.ckpt")
    loaded = CoTeaching.load_from_checkpoint(tmp_path / "co.ckpt", model=TinyModel(), warmup_epochs=2,
                                             weights_only=False)
    assert (loaded.warmup_epochs, loaded.hparams.warmup_epochs) == (2, 2)
    loaded.hparams.warmup_epochs = 4
    fit(tmp_path / "again", loaded, max_epochs=2)
    assert loaded.warmup_epochs == 4 and [r.drop_ratio for r in loaded.history] == [0.0, 0.05]


@pytest.mark.parametrize(("stop", "said_before", "said_after"), [
    ("early_stopping", True, "after epoch 1 of 6"),  # checks at epochs 0, 1: no improvement by 10 at epoch 1
    ("max_steps", False, "after epoch 0 of 6"),  # 6 steps an epoch: 4 stop inside epoch 0
    (None, False, None),
])
def test_a_fit_stopped_inside_the_warm_up_is_warned_about_as_the_filter_does(tmp_path, stop, said_before, said_after):
    """A Lightning user's `EarlyStopping(patience=0)` ended an "auto" Co-teaching fit after epoch 1 of its 3-epoch
    warm-up: BatchFilter warned before training and at its end, CoTeaching said nothing (its report and estimate were
    those of a filter that had not dropped yet)."""
    from pytorch_lightning.callbacks import EarlyStopping

    co = CoTeaching(TinyModel(), drop_ratio="auto", warmup_epochs=3, report=True)
    kw = {"callbacks": [EarlyStopping("val_loss", patience=0, min_delta=10.0)]} if stop == "early_stopping" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, co, max_epochs=6, data=BlobsData(n=96, batch_size=16, with_val=True),
            max_steps=4 if stop == "max_steps" else -1, **kw)
    said = [str(w.message) for w in caught if str(w.message).startswith("CoTeaching:")]
    before = [m for m in said if "can stop the fit before the filter drops" in m]
    after = [m for m in said if "inside the warm-up" in m]
    assert before == ([
        "CoTeaching: `EarlyStopping(monitor='val_loss', patience=0)` can stop the fit before the filter drops at full "
        "strength: it ramps up over the first 3 epochs (3 validation checks), dropping nothing in epoch 0. On a "
        "validation split with corrupted labels the loss often rises while the model still improves on the clean "
        "samples. Give it a patience of at least 3, or monitor a validation accuracy."] if said_before else []), said
    last = co.history[-1]
    assert after == ([
        f"CoTeaching: the fit ended {said_after}, inside the warm-up (full drop ratio from epoch 3 on): something "
        "other than `max_epochs` stopped it (EarlyStopping, `max_steps`, `max_time`), so the filter never dropped its "
        f"full share (epoch {last.epoch}: {last.drop_ratio:.3g})."] if said_after else []), said
    assert len(co.history) == {"early_stopping": 2, "max_steps": 1, None: 6}[stop]


def test_max_steps_is_said_to_count_two_a_batch(tmp_path, monkeypatch):
    """A Lightning user's `max_steps=40` trained 20 batches: Lightning counts both networks' optimizer steps, and only
    the docs said so."""
    said: list[str] = []
    monkeypatch.setattr("lit_robust.models.coteaching.rank_zero_info", said.append)
    co = CoTeaching(TinyModel(), drop_ratio=0.2, warmup_epochs=0)
    fit(tmp_path, co, max_epochs=6, data=BlobsData(n=96, batch_size=16), max_steps=8)
    assert co.trainer.global_step == 8 and co.history[-1].seen == 4 * 16  # 4 batches of epoch 0
    assert [m for m in said if "max_steps" in m] == [
        "CoTeaching: `max_steps`=8 counts both networks' optimizer steps, two a batch: this fit trains at most 4 batches "
        "(`trainer.global_step` counts two a batch too)."]
    said.clear()  # an odd count ends after the batch that crosses it (a reviewer's 41 trained 21 batches)
    co = CoTeaching(TinyModel(), drop_ratio=0.2, warmup_epochs=0)
    fit(tmp_path, co, max_epochs=6, data=BlobsData(n=96, batch_size=16), max_steps=7)
    assert co.history[-1].seen == 4 * 16 and "this fit trains at most 4 batches" in said[-1], said
    said.clear()
    fit(tmp_path, CoTeaching(TinyModel(), drop_ratio=0.2, warmup_epochs=0), max_epochs=1,
        data=BlobsData(n=96, batch_size=16))
    assert not [m for m in said if "max_steps" in m]


class _EpochMetric(PlainSGD):
    """A power user's pattern: add up in `validation_step`, log and reset in the epoch hooks; a training hook too."""

    def __init__(self):
        super().__init__()
        self.calls, self.correct, self.count = [], 0, 0

    def on_validation_epoch_start(self):
        self.calls.append("val_start")
        self.correct = self.count = 0

    def validation_step(self, batch, batch_idx):
        _, x, y = batch[:3]
        self.correct += int((self(x).argmax(1) == y).sum())
        self.count += len(y)

    def on_validation_epoch_end(self):
        self.calls.append("val_end")
        self.log("val_acc_epoch", self.correct / self.count)

    def on_train_epoch_end(self):
        self.calls.append("train_epoch_end")


def test_the_wrapped_models_evaluation_epoch_hooks_run_and_its_training_hooks_are_said_unused(tmp_path):
    """CoTeaching passed on `validation_step` alone: the wrapped model's `on_validation_epoch_end`, which logged the
    accuracy its steps added up, never ran (no metric, the counts going on across epochs), and its training hooks were
    skipped without a word (a power user's)."""
    inner = _EpochMetric()
    co = CoTeaching(inner, drop_ratio=0.2, warmup_epochs=0)
    trainer = tiny_trainer(tmp_path, 2, num_sanity_val_steps=0)
    data = BlobsData(with_val=True)
    with pytest.warns(UserWarning, match=r"CoTeaching: _EpochMetric's `on_train_epoch_end` is not called: CoTeaching "
                                         r"runs the training of its two copies itself"):
        trainer.fit(co, datamodule=data)
    assert inner.calls == ["val_start", "val_end"] * 2
    assert inner.count == 240  # reset at each epoch's start: one epoch's validation samples
    assert trainer.callback_metrics["val_acc_epoch"] == pytest.approx(inner.correct / 240)


@pytest.mark.parametrize(("monitor", "drop_ratio"), [("coteach/dropped_corrupted_frac_2", "auto"),
                                                 ("coteach/estimated_corruption", 0.2),
                                                 ("coteach/estimated_corruption", "auto")])
def test_a_monitor_on_a_coteaching_figure_logged_in_some_epochs_is_refused_before_training(tmp_path, monitor,
                                                                                            drop_ratio):
    """`ModelCheckpoint(monitor="coteach/dropped_corrupted_frac_2")` ended in Lightning's "Did you call log(...)?"
    after epoch 0, which drops nothing (BatchFilter refused its own such keys; CoTeaching did not). The estimate is
    logged from epoch 0's end under "auto" (a monitor on it works), never with a fixed `drop_ratio`."""
    cb = ModelCheckpoint(dirpath=tmp_path, monitor=monitor)
    model = CoTeaching(TinyModel(), drop_ratio=drop_ratio)
    trainer = tiny_trainer(tmp_path, 3, [cb], enable_checkpointing=True)
    if monitor.endswith("estimated_corruption") and drop_ratio == "auto":
        trainer.fit(model, BlobsData(with_val=True))
        assert trainer.current_epoch == 3 and cb.best_model_path
        return
    with pytest.raises(ValueError, match=re.escape(f"`ModelCheckpoint(monitor={monitor!r})`: CoTeaching logs "
                                                   f"`{monitor}` only ")):
        trainer.fit(model, BlobsData(with_val=True))
    assert model.trainer.global_step == 0


def test_stochastic_weight_averaging_is_refused_with_its_reason(tmp_path):
    """A Trainer-flags newcomer met Lightning's "SWA currently works with 1 `optimizer`" having written one."""
    from pytorch_lightning.callbacks import StochasticWeightAveraging

    with pytest.raises(ValueError, match=r"CoTeaching trains two networks, each with its own optimizer \(two copies "
                                         r"of yours\), and Lightning's `StochasticWeightAveraging` works with one"):
        fit(tmp_path, CoTeaching(TinyModel(), drop_ratio=0.2),
            callbacks=[StochasticWeightAveraging(swa_lrs=0.01)])
