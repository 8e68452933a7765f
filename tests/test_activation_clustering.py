"""Activation clustering: the pure rule against a slow reference, its degenerate inputs, and the callback."""

import json
import math
from dataclasses import asdict
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import ActivationClustering, IndexedDataset, activation_clusters, load_report
from lit_robust.functional.clustering import outsized_class, two_means
from tests.conftest import TinyModel, ddp_cpu_strategy, fit_ranks, tiny_trainer


# -- a slow, obvious reference ---------------------------------------------------------------------------------
def reference(features, labels, dims=10, min_silhouette=0.5, class_silhouette=0.6, min_class_size=20):
    """The same rule with covariance eigenvectors for the PCA and per-point Python loops for 2-means."""
    x, y = features.double(), labels.long()
    n = len(y)
    suspicious = [not bool(torch.isfinite(x[i]).all()) for i in range(n)]
    sil, smaller = {}, {}
    for c in sorted(set(y.tolist())):
        rows = [i for i in range(n) if y[i] == c and not suspicious[i]]
        sil[c] = 0.0
        if len(rows) < min_class_size:
            continue
        z = x[rows] - x[rows].mean(0)
        vals, vecs = torch.linalg.eigh(z.T @ z)  # ascending
        keep = [j for j in reversed(range(len(vals))) if vals[j] > vals[-1] * 1e-20][:dims]
        if vals[-1] <= 0 or not keep:
            continue
        axes = []
        for j in keep:
            v = vecs[:, j]
            big = max(range(len(v)), key=lambda k: (abs(float(v[k])), -k))
            axes.append(v if v[big] > 0 else -v)
        p = z @ torch.stack(axes, 1)
        assign = [1 if float(p[i, 0]) >= 0 else 0 for i in range(len(rows))]
        for _ in range(100):
            if len(set(assign)) < 2:
                break
            centres = [p[[i for i in range(len(rows)) if assign[i] == k]].mean(0) for k in (0, 1)]
            new = [1 if float(((p[i] - centres[1]) ** 2).sum()) < float(((p[i] - centres[0]) ** 2).sum()) else 0
                   for i in range(len(rows))]
            if len(set(new)) < 2 or new == assign:
                break
            assign = new
        if len(set(assign)) < 2:
            continue
        n1 = sum(assign)
        n0 = len(assign) - n1
        small = (1 if n1 < n0 else 0) if n0 != n1 else 1 - assign[0]
        centres = [p[[i for i in range(len(rows)) if assign[i] == k]].mean(0) for k in (0, 1)]
        total = 0.0
        for i in range(len(rows)):
            a = float((p[i] - centres[assign[i]]).norm())
            b = float((p[i] - centres[1 - assign[i]]).norm())
            total += (b - a) / max(a, b) if max(a, b) > 0 else 0.0
        sil[c] = total / len(rows)
        smaller[c] = [rows[i] for i in range(len(rows)) if assign[i] == small]
    values = sorted(sil.values())
    median = (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2 if values else 0.0
    for c, members in smaller.items():
        if median >= min_silhouette or sil[c] >= class_silhouette:
            for i in members:
                suspicious[i] = True
    return torch.tensor(suspicious), sil, median


def planted(seed, classes=3, per_class=60, poisoned=(0.2, 0.2, 0.2), dim=6, shift=5.0):
    """Per class a Gaussian, plus a shifted group (the "poison") of the given share of the class."""
    g = torch.Generator().manual_seed(seed)
    xs, ys, bad = [], [], []
    for c in range(classes):
        k = round(poisoned[c] * per_class)
        x = torch.randn(per_class, dim, generator=g) + 3.0 * c
        direction = torch.randn(dim, generator=g)
        x[:k] += shift * direction / direction.norm()
        xs.append(x)
        ys.append(torch.full((per_class,), c))
        bad.append(torch.arange(per_class) < k)
    perm = torch.randperm(classes * per_class, generator=g)
    return torch.cat(xs)[perm], torch.cat(ys)[perm], torch.cat(bad)[perm]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("poisoned", [(0.2, 0.3, 0.1), (0.0, 0.4, 0.0), (0.0, 0.0, 0.0)])
def test_matches_the_slow_reference(seed, poisoned):
    x, y, _ = planted(seed, poisoned=poisoned, shift=3.0 + seed)
    res = activation_clusters(x, y, dims=4)
    ref_mask, ref_sil, ref_median = reference(x, y, dims=4)
    assert torch.equal(res.suspicious, ref_mask)
    assert res.silhouette == pytest.approx(ref_sil, abs=1e-9)
    assert res.median_silhouette == pytest.approx(ref_median, abs=1e-12)
    assert sum(res.flagged.values()) == int(res.suspicious.sum())


def test_every_class_poisoned_flags_exactly_the_planted_groups():
    x, y, bad = planted(0, poisoned=(0.15, 0.25, 0.35), shift=8.0)
    res = activation_clusters(x, y)
    assert res.split_all and res.median_silhouette >= 0.5
    assert torch.equal(res.suspicious, bad)
    assert res.flagged == {0: 9, 1: 15, 2: 21} and res.sizes == {0: 60, 1: 60, 2: 60}
    # the score is positive exactly on the flagged samples
    assert torch.equal(res.score > 0, bad)


def test_unimodal_classes_are_not_split():
    x, y, _ = planted(1, poisoned=(0.0, 0.0, 0.0))
    res = activation_clusters(x, y)
    assert not res.split_all and res.median_silhouette < 0.5
    # the score still ranks each class's smaller cluster (positive) though none is flagged, as documented: a
    # newcomer filtered `cluster_score > 0` after docs that said "positive exactly for the flagged"
    assert not res.suspicious.any() and bool((res.score > 0).any())
    assert not res.suspicious.any() and set(res.flagged.values()) == {0}
    assert all("silhouette" in r for r in res.reasons.values())


def test_one_poisoned_class_is_split_on_its_own_silhouette():
    x, y, bad = planted(2, poisoned=(0.0, 0.3, 0.0), shift=10.0)
    res = activation_clusters(x, y)
    assert not res.split_all and res.silhouette[1] >= 0.6
    assert torch.equal(res.suspicious, bad)
    # without the per-class rule nothing is flagged
    assert not activation_clusters(x, y, class_silhouette=1.0).suspicious.any()


def test_equal_clusters_flag_the_one_without_the_first_sample():
    x = torch.tensor([[-1.0], [-1.1], [1.0], [1.1]] * 5)
    res = activation_clusters(x, torch.zeros(20, dtype=torch.long), min_silhouette=0.0)
    assert not res.suspicious[0] and int(res.suspicious.sum()) == 10
    assert torch.equal(res.suspicious, x[:, 0] * x[0, 0] < 0)


def test_result_does_not_depend_on_the_feature_basis():
    # the rule works on principal components: an orthogonal change of the feature basis changes nothing
    x, y, _ = planted(3, poisoned=(0.2, 0.3, 0.1))
    x = x.double()
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    a, b = activation_clusters(x, y), activation_clusters(x @ q, y)
    assert torch.equal(a.suspicious, b.suspicious)
    assert a.silhouette == pytest.approx(b.silhouette, abs=1e-9)


def test_non_finite_features_are_flagged_and_warned():
    x, y, bad = planted(0, poisoned=(0.2, 0.2, 0.2), shift=8.0)
    x[5, 2], x[7, 0] = math.nan, math.inf
    with pytest.warns(UserWarning, match="2 of 180 samples have NaN or infinite features"):
        res = activation_clusters(x, y)
    assert res.suspicious[5] and res.suspicious[7] and math.isinf(res.score[5]) and math.isinf(res.score[7])
    rest = torch.ones(180, dtype=torch.bool)
    rest[[5, 7]] = False
    assert torch.equal(res.suspicious[rest], bad[rest])


def test_degenerate_classes_are_not_split_and_say_why():
    x = torch.cat([torch.randn(10, 3), torch.ones(30, 3), torch.randn(30, 3)])
    y = torch.cat([torch.zeros(10), torch.ones(30), torch.full((30,), 2.0)]).long()
    res = activation_clusters(x, y, min_silhouette=0.0, class_silhouette=0.0)
    assert "10 samples with finite features (< min_class_size=20)" in res.reasons[0]
    assert res.reasons[1] == "all features equal"
    assert 2 not in res.reasons and res.flagged[2] > 0
    assert not res.suspicious[:40].any()
    empty = activation_clusters(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert empty.suspicious.shape == (0,) and empty.median_silhouette == 0.0


@pytest.mark.parametrize("kwargs, match", [
    ({"dims": 0}, r"`dims` must be an integer >= 1, got 0"),
    ({"min_silhouette": 1.5}, r"`min_silhouette` must be a number in \[0, 1\], got 1.5"),
    ({"class_silhouette": -0.1}, r"`class_silhouette` must be a number in \[0, 1\], got -0.1"),
    ({"min_class_size": 2}, r"`min_class_size` must be an integer >= 4, got 2"),
    ({"labels": torch.zeros(5)}, r"`labels` must hold integer class indices, got dtype torch.float32"),
    ({"labels": torch.zeros(4, dtype=torch.long)}, r"`labels` must be a tensor of shape \[5\]"),
    ({"features": torch.zeros(5)}, r"`features` must be a 2-D tensor \[n, d\], got \(5,\)"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = {"features": torch.zeros(5, 2), "labels": torch.zeros(5, dtype=torch.long), **kwargs}
    with pytest.raises(ValueError, match=match):
        activation_clusters(**args)


def test_two_means_stops_before_a_cluster_empties():
    assert two_means(torch.tensor([[1.0], [2.0], [3.0]])).tolist() == [1, 1, 1]  # one side only: no split
    with pytest.raises(ValueError, match="2-D"):
        two_means(torch.zeros(3))


# -- the callback --------------------------------------------------------------------------------------------
def poisoned_set(n_per_class=80, share=0.25, seed=0):
    """3 classes in 2-D; a quarter of each class is a far-away group (features apart, like a trigger's)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    y = torch.arange(3 * n_per_class) % 3
    x = centers[y] + 0.5 * torch.randn(len(y), 2, generator=g)
    bad = torch.rand(len(y), generator=g) < share
    x[bad] += torch.tensor([12.0, 12.0])
    return IndexedDataset(TensorDataset(x, y), corrupted=bad)


class Data(pl.LightningDataModule):
    def __init__(self, ds=None):
        super().__init__()
        self.ds = ds if ds is not None else poisoned_set()

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=32, shuffle=True)


def fit(tmp_path, ac, max_epochs, model=None, ckpt_path=None, callbacks=(), **kw):
    pl.seed_everything(0, verbose=False)
    model = model if model is not None else TinyModel()
    trainer = tiny_trainer(tmp_path, max_epochs, [ac, *callbacks], **kw)
    data = Data()
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, data, trainer


def test_callback_drops_the_flagged_cluster_and_trains_a_fresh_model_on_the_rest(tmp_path):
    ac = ActivationClustering(warmup_epochs=2, verbose=False)
    model, data, _ = fit(tmp_path, ac, 4)
    n = len(data.ds)
    # the flagged set is activation_clusters' on the warm-up model's last-layer input, in index order
    assert ac.flagged is not None and ac.clusters is not None
    assert torch.equal(ac.selection, (~ac.clusters.suspicious).nonzero().squeeze(1))
    assert ac.history[1].kept == n - len(ac.flagged)
    # the dropped samples are far more often the far-away ones than the data (measured: 43 of the 80 dropped,
    # 78 % of the 55 planted, which are 23 % of the data; a 16-unit network after 2 epochs)
    share = float(data.ds.corrupted.float().mean())
    rec = ac.history[1]
    assert rec.dropped_corrupted / (n - rec.kept) > 2 * share and rec.corrupted_recall > 0.7
    # round 0 (2 epochs of 8 batches) saw every sample; round 1 only the selection, each sample once per epoch
    assert len(torch.cat(model.seen[:16])) == 2 * n
    after = torch.cat(model.seen[16:])
    assert len(after) == 2 * rec.kept and set(after.tolist()) == set(ac.selection.tolist())


def test_at_its_defaults_it_warms_up_three_epochs_and_prints_its_rounds(tmp_path, capsys):
    """`ActivationClustering()` as the docs construct it: every other fit here sets `warmup_epochs` and `verbose`, and
    the CLI tests shrink the config's warm-up to 1, so the default warm-up (3 epochs on every sample) and the default
    round output never ran."""
    ac = ActivationClustering()
    model, data, _ = fit(tmp_path, ac, 4)
    n = len(data.ds)
    assert [(r.epochs, r.n) for r in ac.history] == [(3, n), (1, n)]
    assert ac.history[0].kept == n and ac.history[1].kept == n - len(ac.flagged) < n
    assert len(torch.cat(model.seen[:24])) == 3 * n  # the 3 warm-up epochs (8 batches each) saw every sample
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines to the terminal
    assert f"ActivationClustering round 0/1: 3 epochs on {n}/{n} samples" in out, out
    assert "ActivationClustering rounds" in out, out


def test_a_median_silhouette_close_to_the_threshold_is_warned_about(tmp_path):
    """A backdoor newcomer's runs read 0.495 and 0.467 against `min_silhouette` 0.5 and stopped a fraction of the
    poison; another seed read 0.532 and stopped it all. The log line read like a confident decision."""
    import warnings

    ac = ActivationClustering(warmup_epochs=1, verbose=False)
    fit(tmp_path, ac, 2)
    median = ac.clusters.median_silhouette
    for threshold, warned in ((median + 0.03, True), (median - 0.03, True), (median - 0.2, False)):
        ac = ActivationClustering(warmup_epochs=1, verbose=False, min_silhouette=round(threshold, 4),
                                  class_silhouette=max(0.6, round(threshold, 4)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(tmp_path, ac, 2)
        assert ac.clusters.median_silhouette == median  # the threshold decides, it does not change the features
        said = [str(w.message) for w in caught if "within 0.05 of `min_silhouette`" in str(w.message)]
        assert len(said) == int(warned), (threshold, said)
        if warned:
            side = "split every class" if threshold < median else "split only the classes above `class_silhouette`"
            assert said[0].startswith(f"ActivationClustering: the median class silhouette {median:.3f} is within "
                                      f"0.05 of `min_silhouette`={round(threshold, 4):g}, so the decision to {side} "
                                      "could go the other way"), said[0]


def test_a_class_left_whole_just_below_class_silhouette_is_warned_about(tmp_path):
    """A backdoor newcomer's 20 % patch into class 1 read 0.597 against `class_silhouette` 0.6 in three settings:
    nothing was flagged and the attack succeeded 99.5 %, without a word (the median's warning did not apply)."""
    import warnings

    ac = ActivationClustering(warmup_epochs=1, verbose=False)
    fit(tmp_path, ac, 2)
    sil = ac.clusters.silhouette
    top = max(sil, key=lambda c: (sil[c], -c))
    bar = min(0.99, sil[top] + 0.02)
    others = sorted(c for c, v in sil.items() if bar - 0.05 <= v < bar)  # the classes the warning must name
    for class_silhouette, warned in ((bar, True), (min(0.999, sil[top] + 0.3), False)):
        ac = ActivationClustering(warmup_epochs=1, verbose=False, min_silhouette=0.999,
                                  class_silhouette=round(class_silhouette, 4))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(tmp_path, ac, 2)
        assert not ac.clusters.split_all and not any(ac.clusters.flagged.values())
        said = [str(w.message) for w in caught if "left whole scored within 0.05 below" in str(w.message)]
        assert len(said) == int(warned), said
        if warned:
            assert f"`class_silhouette`={round(bar, 4):g} ({top}: {sil[top]:.3f}" in said[0], said
            assert said[0].count(": 0.") + said[0].count(": -0.") == len(others), (said, others)


def test_outsized_class_against_a_sorted_reference():
    import random
    import statistics

    def slow(sizes, ratio):
        if len(sizes) < 2:
            return None
        median = statistics.median(sizes.values())
        best = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        return (best[0], best[1], float(median)) if median > 0 and best[1] >= ratio * median else None

    rng = random.Random(0)
    cases = [({}, 1.5), ({3: 100}, 1.5), ({0: 0, 1: 0}, 1.5), ({0: 1072, 1: 560, 2: 558}, 1.5),
             ({0: 5, 1: 10, 2: 10}, 1.0)]  # a tie goes to the smaller class
    for _ in range(300):
        k = rng.randint(1, 12)
        cases.append(({rng.randint(0, 30): rng.randint(0, 50) for _ in range(k)}, rng.choice([1.0, 1.5, 2.0])))
    for sizes, ratio in cases:
        assert outsized_class(sizes, ratio) == slow(sizes, ratio), (sizes, ratio)
    assert outsized_class({0: 5, 1: 10, 2: 10}, 1.0) == (1, 10, 10.0)
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=rf"`ratio` must be a positive number, got {bad!r}\."):
            outsized_class({0: 1, 1: 2}, bad)


def _blobs_fit(tmp_path, where: torch.Tensor, y: torch.Tensor, class_silhouette: float) -> tuple[Any, list[str]]:
    """ActivationClustering after one warm-up epoch on 2-D blobs (sample i around centre ``where[i]``, labelled
    ``y[i]``); the callback and the warnings the fit gave."""
    import warnings

    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0], [0.0, 12.0]])
    ds = IndexedDataset(TensorDataset(centers[where] + 0.5 * torch.randn(len(y), 2, generator=g), y))
    ac = ActivationClustering(warmup_epochs=1, verbose=False, min_silhouette=0.99, class_silhouette=class_silhouette)
    pl.seed_everything(0, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [ac]).fit(TinyModel(), Data(ds))
    return ac, [str(w.message) for w in caught]


@pytest.mark.parametrize("sizes, warned", [((160, 60, 60), True), ((80, 80, 80), False)])
def test_nothing_flagged_beside_an_outsized_class_is_warned_about(tmp_path, sizes, warned):
    """A backdoor newcomer's all-to-one patch (8 % of MNIST into class 0, 1,072 samples against a median of about
    560) flagged nothing and said nothing; the class sizes were the sign."""
    y = torch.cat([torch.full((m,), c) for c, m in enumerate(sizes)])
    ac, caught = _blobs_fit(tmp_path, y, y, class_silhouette=0.99)
    assert ac.flagged.numel() == 0  # no class splits at these thresholds
    said = [m for m in caught if "flagged nothing" in m]
    if warned:
        assert said == ["ActivationClustering flagged nothing, but class 0 holds 160 training samples, 2.7x the median "
                        "class (60). An all-to-one backdoor moves its poison into one class, and activation clustering "
                        "did not find one at a small rate (docs/capabilities/backdoor.md, \"Recommended settings\"). "
                        "Unless your classes are this unbalanced by nature, look at the samples labelled 0."]
    else:
        assert said == []


class ConvThenOutput(TinyModel):
    """A CNN whose only linear layer is its output (like `backbone="cnn2"`): its features are the convolutions'."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Unflatten(1, (1, 1, 2)), nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(8, 3))


def test_features_of_a_cnn_whose_only_linear_layer_is_the_output_are_warned_about(tmp_path):
    """A backdoor newcomer's `--model.backbone cnn2` flagged 113 samples (attack success 43 %) without a word; the
    docs advise a network whose last hidden layer is linear."""
    import warnings

    for model, warned in ((ConvThenOutput(), True), (TinyModel(), False)):
        ac = ActivationClustering(warmup_epochs=1, verbose=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(tmp_path, ac, 2, model=model)
        said = [str(w.message) for w in caught if "is its output layer" in str(w.message)]
        assert len(said) == int(warned), said
        if warned:
            assert said[0].startswith("ActivationClustering: ConvThenOutput's only `nn.Linear` ('net.4') is its output "
                                      "layer, so the features clustered are its convolutions' flattened output")


def test_report_ranks_the_samples_by_their_cluster_score(tmp_path):
    """The per-sample report of the clustering (a newcomer of the backdoor defence found none: `lit-robust fit` users
    cannot reach `ac.flagged`): every sample once, deepest in a flagged cluster first, against a slow reference."""
    ac = ActivationClustering(warmup_epochs=2, verbose=False, report_dir=str(tmp_path / "rep"))
    _, data, _ = fit(tmp_path, ac, 4)
    assert ac.report_path == str(tmp_path / "rep" / "activation_clustering_report.csv")
    rows = load_report(ac.report_path, as_frame=False)
    score, flagged = ac.clusters.score.tolist(), set(ac.flagged.tolist())
    labels, truth = data.ds.dataset.tensors[1].tolist(), data.ds.corrupted.tolist()
    ref = sorted(range(len(score)), key=lambda i: (-score[i], i))  # no non-finite features here
    assert [r["index"] for r in rows] == ref and [r["rank"] for r in rows] == list(range(1, len(ref) + 1))
    for r in rows:
        i = r["index"]
        assert r["cluster_score"] == pytest.approx(score[i], rel=1e-6, abs=1e-7)
        assert r["kept"] == (i not in flagged) and r["first_dropped_round"] == (1 if i in flagged else None)
        assert r["given_label"] == labels[i] and r["corrupted"] == truth[i]
        assert r["clean_posterior"] is None and r["predicted_label"] is None
    assert {r["index"] for r in rows[:len(flagged)]} == flagged  # positive scores: exactly the flagged ones first


def test_features_are_the_last_linear_layers_input(tmp_path):
    ac = ActivationClustering(warmup_epochs=1, verbose=False)
    captured = {}

    class Spy(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                x = torch.stack([s[1] for s in trainer.datamodule.ds])
                with torch.no_grad():
                    captured["features"] = pl_module.net[:2](x)  # the input of net[2], the last nn.Linear
                captured["labels"] = torch.stack([s[2] for s in trainer.datamodule.ds])

    fit(tmp_path, ac, 2, callbacks=[Spy()])  # the Spy runs after ActivationClustering at each epoch end
    expected = activation_clusters(captured["features"], captured["labels"])
    assert torch.equal(ac.clusters.suspicious, expected.suspicious)


def test_layer_names_another_submodule(tmp_path):
    ac = ActivationClustering(warmup_epochs=1, layer="net.0", verbose=False)
    fit(tmp_path, ac, 2)
    assert ac.clusters.sizes == {0: 80, 1: 80, 2: 80}
    bad = ActivationClustering(warmup_epochs=1, layer="net.9", verbose=False)
    with pytest.raises(ValueError, match=r"`layer`='net.9' is not a submodule of TinyModel"):
        fit(tmp_path, bad, 2)


def test_nothing_flagged_keeps_the_warm_up_model(tmp_path):
    # (the toy's features have ~2 effective dimensions, where a Gaussian's split reaches a silhouette of ~0.46:
    # the thresholds are raised to 1 so that nothing is flagged)
    clean = Data(poisoned_set(share=0.0)).ds
    ac = ActivationClustering(warmup_epochs=1, min_silhouette=1.0, class_silhouette=1.0, verbose=False)
    weights = []

    class Spy(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            weights.append(pl_module.net[0].weight.detach().clone())

        def on_train_epoch_end(self, trainer, pl_module):
            weights.append(pl_module.net[0].weight.detach().clone())

    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 2, [ac, Spy()])
    trainer.fit(TinyModel(), Data(clean))
    assert len(ac.flagged) == 0 and ac.history[1].kept == 240
    assert torch.equal(weights[1], weights[2])  # epoch 1 starts from epoch 0's model: no re-draw


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    def run(root, ckpt_path=None):
        ac = ActivationClustering(warmup_epochs=2, verbose=False, report_dir=str(root / "rep"))
        ckpt = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        model, _, _ = fit(root, ac, 4, ckpt_path=ckpt_path, callbacks=[ckpt], enable_checkpointing=True)
        return model, ac

    full_model, full = run(tmp_path / "a")
    resumed_model, resumed = run(tmp_path / "b", ckpt_path=tmp_path / "a" / "epoch=2.ckpt")
    assert [asdict(r) for r in resumed.history] == [asdict(r) for r in full.history]
    assert torch.equal(resumed.selection, full.selection) and torch.equal(resumed.flagged, full.flagged)
    assert resumed.clusters.silhouette == full.clusters.silhouette
    assert torch.equal(resumed.clusters.suspicious, full.clusters.suspicious)
    for p, q in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)
    # the clustering happened before the checkpoint: its per-sample scores came through it into the same report
    report = "rep/activation_clustering_report.csv"
    assert (tmp_path / "b" / report).read_text() == (tmp_path / "a" / report).read_text()


def test_classes_below_min_class_size_are_warned_about_and_the_size_can_be_set(tmp_path):
    """A reviewer's 15 samples per class (30 % poisoned) were never clustered: `min_class_size=20` of the
    clustering could not be set from the callback, and nothing was flagged without a word."""
    import warnings

    def run(root, **kw):
        ac = ActivationClustering(warmup_epochs=1, verbose=False, **kw)
        pl.seed_everything(0, verbose=False)
        ds = poisoned_set(n_per_class=15, share=0.3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny_trainer(root, 2, [ac]).fit(TinyModel(), Data(ds))
        return ac, ds, [str(w.message) for w in caught if "`min_class_size`" in str(w.message)]

    ac, _, said = run(tmp_path / "a")
    assert ac.flagged.numel() == 0
    assert said == ["ActivationClustering: 3 of 3 classes have fewer than `min_class_size`=20 samples with finite "
                    "features (0: 15, 1: 15, 2: 15), so they were not clustered and none of their samples can be "
                    "flagged. Lower `min_class_size` (>= 4; a 2-means of a few samples splits at random) or train on "
                    "more samples per class."]
    ac, ds, said = run(tmp_path / "b", min_class_size=10)
    assert said == [] and ac.flagged.numel() > 0
    assert torch.equal(ac.flagged, ds.corrupted.nonzero().squeeze(1))  # the far-away groups, exactly


def test_a_resume_with_another_min_class_size_is_refused(tmp_path):
    """The clustering's thresholds decide what is flagged: a fit resumed before the clustering with another
    `min_class_size` (or silhouette threshold) would match neither set-up, so it is refused like ITLM's arguments."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "a", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    fit(tmp_path / "a", ActivationClustering(warmup_epochs=2, verbose=False), 3, callbacks=[ckpt],
        enable_checkpointing=True)
    with pytest.raises(ValueError, match=r"written by ActivationClustering with `min_class_size` 20 \(this fit: 10\)"):
        fit(tmp_path / "b", ActivationClustering(warmup_epochs=2, verbose=False, min_class_size=10), 3,
            ckpt_path=tmp_path / "a" / "epoch=0.ckpt")


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"`warmup_epochs` must be an integer >= 1, got 0"):
        ActivationClustering(warmup_epochs=0)
    with pytest.raises(ValueError, match=r"`min_silhouette` must be a number in \[0, 1\], got 2"):
        ActivationClustering(min_silhouette=2)
    with pytest.raises(ValueError, match=r"`layer` must be a submodule name"):
        ActivationClustering(layer="")
    with pytest.raises(ValueError, match=r"`min_class_size` must be an integer >= 4, got 3"):
        ActivationClustering(min_class_size=3)
    with pytest.raises(ValueError, match=r"needs the Trainer's `max_epochs` > 3 .* got max_epochs=3"):
        fit(tmp_path, ActivationClustering(warmup_epochs=3), 3)


def test_a_module_without_linear_layers_needs_layer(tmp_path):
    class Conv(TinyModel):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Unflatten(1, (2, 1)), nn.Conv1d(2, 3, 1), nn.Flatten())

    with pytest.raises(ValueError, match=r"Conv has no `nn.Linear`; pass `layer=`"):
        fit(tmp_path, ActivationClustering(warmup_epochs=1, verbose=False), 2, model=Conv())


def fit_refused(tmp_path, model, targets, error, match):
    """A one-epoch warm-up fit of ``model`` on 60 random 2-D inputs with ``targets``, expected to raise."""
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 2, [ActivationClustering(warmup_epochs=1, verbose=False)])
    with pytest.raises(error, match=match):
        trainer.fit(model, Data(IndexedDataset(TensorDataset(torch.randn(60, 2), targets))))


def test_targets_must_be_class_labels(tmp_path):
    from lit_robust import unpack_batch as unpack

    class Regress(TinyModel):
        def per_sample_loss(self, batch):
            b = unpack(batch)
            out = self(b.input)
            return ((out - b.target) ** 2).mean(1), out

    fit_refused(tmp_path, Regress(), torch.randn(60, 3), ValueError,
                r"needs integer class targets, one per sample .*the training batches have torch.float32 targets of "
                r"shape \(32, 3\)\.$")


def test_class_labels_held_as_floats_are_told_to_be_cast(tmp_path):
    """A newcomer's float labels passed the warm-up (their own loss cast them) and then read "the training batches
    have none"."""

    class CastsLabels(TinyModel):
        def per_sample_loss(self, batch):
            index, x, y = batch
            logits = self(x)
            return torch.nn.functional.cross_entropy(logits, y.long(), reduction="none"), logits

    fit_refused(tmp_path, CastsLabels(), (torch.arange(60) % 3).float(), ValueError,
                r"have torch.float32 targets of shape \(32,\) \(class labels held as floats\? cast them with "
                r"`.long\(\)` in your dataset\)")


def test_a_module_without_the_mixin_is_named_with_the_callback_in_use(tmp_path):
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 3)

        def training_step(self, batch, batch_idx):
            return self.net(batch[1]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    fit_refused(tmp_path, Plain(), torch.arange(60) % 3, TypeError,
                r"^`ActivationClustering` needs the LightningModule to adopt")


# -- DDP: every rank clusters the gathered features in index order -------------------------------------------------
class OddPoisoned(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.ds = poisoned_set(n_per_class=80)
        self.ds = torch.utils.data.Subset(self.ds, range(239))  # an odd size: uneven shards

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=16, shuffle=True)


class RecordEveryRank(pl.Callback):
    """After the clustering (ActivationClustering runs first), recompute it on this rank without any dist call."""

    def __init__(self, ac, out):
        self.ac, self.out = ac, out

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch != 0:
            return
        ds = trainer.datamodule.ds
        x = torch.stack([ds[i][1] for i in range(len(ds))])
        y = torch.stack([ds[i][2] for i in range(len(ds))])
        with torch.no_grad():
            expected = activation_clusters(pl_module.net[:2](x), y)
        with open(f"{self.out}.{trainer.global_rank}", "w") as f:
            json.dump({"selection": self.ac.selection.tolist(), "flagged": self.ac.flagged.tolist(),
                       "expected": (~expected.suspicious).nonzero().squeeze(1).tolist()}, f)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("world", [2, 3])
def test_ddp_every_rank_selects_what_one_process_computes(tmp_path, world):
    out = str(tmp_path / "rec")

    def make():
        ac = ActivationClustering(warmup_epochs=1, verbose=False)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=world, strategy=ddp_cpu_strategy(),
                             callbacks=[ac, RecordEveryRank(ac, out)], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, deterministic=True)
        return trainer, TinyModel(), OddPoisoned()

    fit_ranks(make)
    ranks = [json.load(open(f"{out}.{r}")) for r in range(world)]
    assert all(r == ranks[0] for r in ranks)
    assert ranks[0]["selection"] == ranks[0]["expected"]
    assert len(ranks[0]["selection"]) + len(ranks[0]["flagged"]) == 239 and ranks[0]["flagged"]


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_the_feature_pass_runs_in_the_trainers_precision(tmp_path, precision):
    """The feature pass feeds the batches as validation does: float32 inputs to a `bf16-true` model crashed ITLM's
    scoring pass, which the clustering's pass shares (a performance newcomer)."""
    ac = ActivationClustering(warmup_epochs=1, verbose=False)
    fit(tmp_path, ac, 2, precision=precision)
    assert ac.flagged is not None and len(ac.history) == 2


def test_a_flagged_part_of_an_outsized_class_is_warned_about(tmp_path):
    """A backdoor user's 10 % all-to-one poison was 601 of class 0's 1,193 samples: the smaller cluster, the one
    flagged, was the clean zeros (clean accuracy 0.971 -> 0.832), without a word."""
    sizes = (100, 60, 60)  # and 70 more labelled 0 around a fourth centre: class 0 is two blobs
    y = torch.cat([torch.full((m,), c) for c, m in enumerate(sizes)] + [torch.zeros(70, dtype=torch.long)])
    where = torch.cat([torch.full((m,), c) for c, m in enumerate(sizes)] + [torch.full((70,), 3)])
    ac, caught = _blobs_fit(tmp_path, where, y, class_silhouette=0.7)
    assert ac.clusters.flagged[0] > 0 and ac.clusters.flagged[1] == ac.clusters.flagged[2] == 0
    said = [m for m in caught if "the smaller cluster, the one flagged, is the clean part" in m]
    assert said == [f"ActivationClustering flagged {ac.clusters.flagged[0]} of the 170 samples labelled 0, a class "
                    "2.8x "
                    "the median class (60). If it is an all-to-one backdoor's target and the poison is more than half "
                    "of it, the smaller cluster, the one flagged, is the clean part. Look at a few flagged and a few "
                    "kept samples of the class (the report's `cluster_score` ranks them) before you trust the "
                    "selection."]


def test_numpy_settings_count_and_degenerate_inputs_are_named():
    """`dims=np.int64(3)` and `min_silhouette=np.float32(0.5)` were refused ("must be an integer >= 1, got
    np.int64(3)"), unlike every other check of the package; `two_means` of points without a coordinate raised a bare
    IndexError and `outsized_class(sizes, "x")` a bare TypeError."""
    import numpy as np

    x, y = planted(0)[:2]
    res = activation_clusters(x, y, dims=np.int64(3), min_silhouette=np.float32(0.5), min_class_size=np.int64(20))
    same = activation_clusters(x, y, dims=3, min_silhouette=0.5)
    assert torch.equal(res.suspicious, same.suspicious) and res.silhouette == same.silhouette
    ac = ActivationClustering(warmup_epochs=np.int64(2), dims=np.int64(3))
    assert type(ac.warmup_epochs) is int and type(ac.dims) is int and "np." not in ac.state_key
    with pytest.raises(ValueError, match=r"`points` must be a 2-D tensor \[m, q\] with q >= 1, got shape \(3, 0\)"):
        two_means(torch.zeros(3, 0))
    with pytest.raises(ValueError, match=r"`ratio` must be a positive number, got 'x'"):
        outsized_class({0: 1, 1: 2}, "x")
