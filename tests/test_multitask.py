"""A multi-task model (one trunk, two heads, targets `{"digit": y, "ink": v}`): the report's label columns and the
label estimators read the part `label_key` names, and PRL(L) takes a callable loss over a dict of targets and of
outputs (a multi-task user got empty label columns without a word, and `targets must be a tensor, got dict`)."""

import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_robust import ITLM, BatchFilter, IndexedDataset, RobustMixin, load_report, unpack_batch
from lit_robust.functional.scores import loss_layer_scores, prl_l_scores
from tests.conftest import blobs, tiny_trainer


def _two_head_loss(o, t):
    return F.cross_entropy(o["digit"], t["digit"], reduction="none") + F.mse_loss(o["ink"], t["ink"], reduction="none")


def test_prl_scores_over_several_heads_match_per_sample_autograd():
    g = torch.Generator().manual_seed(0)
    out = {"digit": torch.randn(6, 4, generator=g), "ink": torch.randn(6, generator=g)}
    tgt = {"digit": torch.randint(0, 4, (6,), generator=g), "ink": torch.randn(6, generator=g)}
    got = prl_l_scores(out, tgt, _two_head_loss)
    for i in range(6):  # slow reference: one sample at a time, the gradient over both heads' outputs
        a = out["digit"][i:i + 1].clone().requires_grad_(True)
        b = out["ink"][i:i + 1].clone().requires_grad_(True)
        loss = _two_head_loss({"digit": a, "ink": b}, {"digit": tgt["digit"][i:i + 1], "ink": tgt["ink"][i:i + 1]})
        ga, gb = torch.autograd.grad(loss.sum(), [a, b])
        assert got[i].item() == pytest.approx(torch.cat([ga.flatten(), gb.flatten()]).norm().item(), rel=1e-6)
    as_tuple = prl_l_scores((out["digit"], out["ink"]), tgt,
                            lambda o, t: _two_head_loss({"digit": o[0], "ink": o[1]}, t))
    assert torch.allclose(as_tuple, got)
    assert not out["digit"].requires_grad  # the outputs are not touched


def test_prl_with_targets_of_several_parts_needs_a_callable_and_says_so():
    logits = torch.randn(3, 4)
    tgt = {"digit": torch.tensor([0, 1, 2]), "ink": torch.zeros(3)}
    got = prl_l_scores(logits, tgt, lambda o, t: F.cross_entropy(o, t["digit"], reduction="none"))
    assert torch.allclose(got, prl_l_scores(logits, tgt["digit"], "ce"))
    with pytest.raises(ValueError, match=r"`targets` must be a tensor for loss='ce', got dict; for targets of several "
                                         r"parts \(a dict or tuple\) pass a callable"):
        prl_l_scores(logits, tgt, "ce")
    with pytest.raises(ValueError, match=r"got outputs of type dict\. PRL measures the gradient of one loss .* pass a "
                                         r"callable `loss\(outputs, targets\) -> \[B\]` taking the dict or tuple"):
        loss_layer_scores("prl", torch.zeros(3), {"digit": logits}, tgt)


class TwoHeads(Dataset):
    """Blobs with a second, clean target per sample (the "ink")."""

    def __init__(self):
        self.base = blobs()

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        _, x, y, _ = self.base[i]
        return x, {"digit": y, "ink": x.sum()}


class MultiTask(RobustMixin, pl.LightningModule):
    label_key = "digit"

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(2, 16), nn.ReLU())
        self.a, self.b = nn.Linear(16, 3), nn.Linear(16, 1)

    def per_sample_loss(self, batch):
        b = unpack_batch(batch)
        h = self.trunk(b.input)
        out = {"digit": self.a(h), "ink": self.b(h).squeeze(-1)}
        return _two_head_loss(out, b.target), out

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _data():
    ds = TwoHeads()
    return ds, DataLoader(IndexedDataset(ds, corrupted=ds.base.corrupted), batch_size=32, shuffle=True)


@pytest.mark.parametrize("owner", ["itlm", "prl"])
def test_label_key_fills_the_reports_label_columns(tmp_path, owner, monkeypatch):
    said = []
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    pl.seed_everything(0, verbose=False)
    ds, loader = _data()
    cb = (ITLM(keep_ratio="auto", round_epochs=[2, 2], report=True, report_dir=str(tmp_path), plot=False)
          if owner == "itlm" else BatchFilter("prl", 0.3, warmup_epochs=1, loss=_two_head_loss, report=True,
                                              report_dir=str(tmp_path)))
    tiny_trainer(tmp_path, 4, [cb]).fit(MultiTask(), loader)
    report = load_report(cb.report_path)
    assert report.given_label.notna().all() and report.predicted_label.notna().all()
    noisy = {int(i): int(ds.base.targets[i]) for i in range(len(ds))}
    assert all(int(r.given_label) == noisy[int(r.index)] for r in report.itertuples())
    if owner == "itlm":  # the default "disagreement" estimate ran (no fall-back to gmm)
        assert cb.history[1].estimated_corruption is not None and not [m for m in said if "needs integer" in m]


def test_without_label_key_the_note_names_it(tmp_path, monkeypatch):
    class NoKey(MultiTask):
        label_key = None

    _, loader = _data()
    said = []
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    itlm = ITLM(keep_ratio="auto", round_epochs=[2, 2], plot=False, report_dir=str(tmp_path))
    tiny_trainer(tmp_path, 4, [itlm]).fit(NoKey(), loader)
    assert any("needs integer targets" in m and "for targets of several parts set the module's `label_key`" in m
               for m in said), said
    assert load_report(itlm.report_path).given_label.isna().all()


@pytest.mark.parametrize("targets", [[(1, 0.5), (2, 0.1), (0, 0.3)], [(0, 1), (1, 0.5), (2, 0.3)],
                                     {"digit": [1, 2, 0], "ink": [0.5, 0.1, 0.3]}],
                         ids=["tuples", "tuples-first-all-int", "dict"])
def test_indexed_dataset_refuses_targets_of_several_parts_and_says_where_they_go(targets):
    """`targets=list(zip(digit, ink))` became float [N, 2] targets (the digit 0.0, 1.0, ...) without a word; a dict
    was told to use LabelEncoder."""
    from torch.utils.data import TensorDataset

    ds = TensorDataset(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"`targets` replaces one target per sample: .* let the dataset return them as "
                                         r"each sample's target .* set `label_key`"):
        IndexedDataset(ds, targets=targets)
    rows = IndexedDataset(ds, targets=[(0.1, 0.2)] * 3)  # rows of floats: several regression targets, as before
    assert torch.allclose(rows[0][2], torch.tensor([0.1, 0.2]))
    # a JSON or CSV row writes 0 for 0.0, a box a 0 coordinate: lists are rows of numbers (a reviewer's were refused)
    assert IndexedDataset(ds, targets=[[0, 1.5], [2.25, 3], [1.0, 0.5]])[0][2].tolist() == [0.0, 1.5]


@pytest.mark.parametrize("pair", [lambda: (np.int64(1), np.float32(0.5)), lambda: (torch.tensor(1), torch.tensor(0.5))],
                         ids=["numpy", "tensor"])
def test_zipped_label_and_value_scalars_of_numpy_or_torch_are_refused_too(pair):
    from torch.utils.data import TensorDataset

    with pytest.raises(ValueError, match=r"`targets` replaces one target per sample"):
        IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.zeros(3)), targets=[pair()] * 3)


def test_a_dataframe_of_a_label_and_a_value_column_is_warned_about_and_one_kind_of_columns_taken_quietly():
    """`targets=df[["digit", "ink"]]` became float [N, 2] targets (the digit 3 read as 3.0) without a word. Refusing
    it would refuse regression targets of counts beside prices, so it is a warning naming the integer column."""
    pd = pytest.importorskip("pandas")
    from torch.utils.data import TensorDataset

    ds = TensorDataset(torch.zeros(3, 2), torch.zeros(3))
    df = pd.DataFrame({"digit": [1, 2, 0], "ink": [0.5, 0.1, 0.3]}, index=[10, 11, 12])
    with pytest.warns(UserWarning, match=r"`targets` has integer or boolean column\(s\) \[.digit.\] beside float ones: "
                                         r"all are read as float regression targets, shape \[3, 2\]\. If 'digit' "
                                         r"holds class labels.* set `label_key`"):
        mixed = IndexedDataset(ds, targets=df)
    assert mixed.targets.dtype == torch.float64 and mixed[0][2].tolist() == [1.0, 0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        floats = IndexedDataset(ds, targets=df[["ink", "ink"]])  # several regression targets, as before
        assert IndexedDataset(ds, targets=df[["digit"]]).targets.tolist() == [1, 2, 0]
    assert floats.targets.dtype == torch.float64 and floats[0][2].tolist() == [0.5, 0.5]


def test_prl_over_heads_keeps_a_namedtuples_type_and_passes_integer_parts_through():
    from collections import namedtuple

    Out = namedtuple("Out", ["digit", "ink", "pred"])
    logits, ink = torch.randn(4, 3), torch.randn(4)
    tgt = {"digit": torch.tensor([0, 1, 2, 0]), "ink": torch.zeros(4)}
    seen = []

    def loss(o, t):
        seen.append((type(o), o.pred.dtype))
        return _two_head_loss({"digit": o.digit, "ink": o.ink}, t)

    got = prl_l_scores(Out(logits, ink, logits.argmax(1)), tgt, loss)
    assert seen == [(Out, torch.int64)]
    assert torch.allclose(got, prl_l_scores({"digit": logits, "ink": ink}, tgt, _two_head_loss))
    with pytest.raises(ValueError, match=r"infers its loss layer from tensor targets, got dict: .* pass a callable"):
        loss_layer_scores("prl", torch.zeros(4), logits, tgt)


def test_a_label_key_the_targets_lack_is_named_at_the_first_batch(tmp_path):
    class Wrong(MultiTask):
        label_key = "label"

    _, loader = _data()
    with pytest.raises(ValueError, match=r"`label_key`='label' of Wrong is not among its targets' keys or positions "
                                         r"\['digit', 'ink'\]"):
        tiny_trainer(tmp_path, 1, []).fit(Wrong(), loader)


def test_a_wrong_label_key_under_an_own_training_step_is_named_by_itlm_at_the_first_batch(tmp_path):
    class OwnStep(MultiTask):
        label_key = "label"
        trained = 0

        def training_step(self, batch, batch_idx):
            losses, outputs = self.per_sample_loss(batch)
            OwnStep.trained += 1
            return self.reduce_loss(losses, batch, outputs)

    _, loader = _data()
    itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], plot=False)
    with pytest.raises(ValueError, match=r"`label_key`='label' of OwnStep is not among"):
        tiny_trainer(tmp_path, 2, [itlm]).fit(OwnStep(), loader)
    assert OwnStep.trained == 0


def test_per_class_and_a_single_head_score_read_the_label_key(tmp_path, monkeypatch):
    """`ITLM(per_class=True)` refused a multi-task model at its first batch, and scoring by one head
    (`sample_scores`) left `predicted_label` empty and the estimate on the gmm."""
    class ScoreByDigit(MultiTask):
        def sample_scores(self, batch):
            b = unpack_batch(batch)
            return F.cross_entropy(self.a(self.trunk(b.input)), b.target["digit"], reduction="none")

    said = []
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    pl.seed_everything(0, verbose=False)
    _, loader = _data()
    itlm = ITLM(keep_ratio="auto", round_epochs=[2, 2], per_class=True, report_dir=str(tmp_path), plot=False)
    tiny_trainer(tmp_path, 4, [itlm]).fit(ScoreByDigit(), loader)
    report = load_report(itlm.report_path)
    assert report.given_label.notna().all() and report.predicted_label.notna().all()
    assert not [m for m in said if "needs integer" in m]


def test_tuple_targets_with_a_position_fill_the_filters_report(tmp_path):
    class Pair(TwoHeads):
        def __getitem__(self, i):
            x, t = super().__getitem__(i)
            return x, (t["digit"], t["ink"])

    class TupleTask(MultiTask):
        label_key = 0

        def per_sample_loss(self, batch):
            b = unpack_batch(batch)
            h = self.trunk(b.input)
            out = (self.a(h), self.b(h).squeeze(-1))
            y, v = b.target
            return F.cross_entropy(out[0], y, reduction="none") + F.mse_loss(out[1], v, reduction="none"), out

    pl.seed_everything(0, verbose=False)
    ds = Pair()
    f = BatchFilter("spl", "auto", warmup_epochs=1, report=True, report_dir=str(tmp_path))
    tiny_trainer(tmp_path, 3, [f]).fit(TupleTask(), DataLoader(IndexedDataset(ds), batch_size=32, shuffle=True))
    report = load_report(f.report_path)
    assert report.given_label.notna().all() and report.predicted_label.notna().all()

