"""Batched fetching (`IndexedDataset.__getitems__`) against the per-sample path it replaces.

The reference is the same DataLoader over a view of the dataset that has no ``__getitems__``, so PyTorch
fetches sample by sample and ``default_collate`` collates: what every loader did before batched fetching.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset
from torch.utils.data._utils.collate import collate, default_collate, default_collate_fn_map

from lit_robust import ITLM, IndexedDataset
from lit_robust.data.indexed import _Sample, _SampleBatch
from lit_robust.selection.samplers import SelectionSampler, ShardedSampler
from tests.conftest import TinyModel, blobs, tiny_trainer


class PerSample(Dataset):
    """``ds`` without ``__getitems__``: the DataLoader fetches ``ds[i]`` one at a time."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def loader_pair(ds, seed=0, **kw):
    """(batched, per-sample) loaders with the same settings; shuffled ones draw the same order."""
    ref_sampler = kw.pop("sampler_ref", None)
    kw_ref = dict(kw)
    if kw.get("shuffle"):
        kw["generator"] = torch.Generator().manual_seed(seed)
        kw_ref["generator"] = torch.Generator().manual_seed(seed)
    if ref_sampler is not None:  # an identical sampler of its own keeps the two loaders' epochs aligned
        kw_ref["sampler"] = ref_sampler
    return DataLoader(ds, **kw), DataLoader(PerSample(ds), **kw_ref)


def assert_same_batch(got, want):
    assert type(got) is type(want) and len(got) == len(want)
    for g, w in zip(got, want):
        assert isinstance(g, torch.Tensor) and isinstance(w, torch.Tensor)
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g, w)


def assert_same_loaders(batched, reference):
    got, want = list(batched), list(reference)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert_same_batch(g, w)


def make(n=53, x_shape=(5,), x_dtype=torch.float32, y_kind="class", targets=False, corrupted=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, *x_shape, generator=g) * 10).to(x_dtype)
    y = {"class": torch.randint(0, 7, (n,), generator=g),
         "int32": torch.randint(0, 7, (n,), generator=g).to(torch.int32),
         "regression": torch.randn(n, 2, generator=g)}[y_kind]
    t = torch.randint(0, 7, (n,), generator=g) if targets else None
    c = torch.rand(n, generator=g) < 0.3 if corrupted else None
    return IndexedDataset(TensorDataset(x, y), targets=t, corrupted=c)


@pytest.mark.parametrize("x_shape,x_dtype", [((5,), torch.float32), ((1, 4, 4), torch.uint8), ((), torch.float64)])
@pytest.mark.parametrize("y_kind", ["class", "int32", "regression"])
@pytest.mark.parametrize("targets,corrupted", [(False, False), (True, True), (False, True)])
def test_loader_batches_equal_per_sample_batches(x_shape, x_dtype, y_kind, targets, corrupted):
    ds = make(x_shape=x_shape, x_dtype=x_dtype, y_kind=y_kind, targets=targets, corrupted=corrupted)
    assert isinstance(ds.__getitems__([3, 1]), _SampleBatch)  # the batched path is the one under test
    for kw in (dict(batch_size=8), dict(batch_size=8, shuffle=True), dict(batch_size=10, drop_last=True),
               dict(batch_size=100, shuffle=True)):
        assert_same_loaders(*loader_pair(ds, **kw))
    first = next(iter(DataLoader(ds, batch_size=4)))
    assert len(first) == 3 + corrupted and first[0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("selection", [None, [0, 2, 3, 7, 11, 12, 30, 31, 40, 52]])
@pytest.mark.parametrize("world", [1, 3])
def test_itlm_selection_sampler_batches(shuffle, selection, world):
    ds = make(targets=True)
    for rank in range(world):
        s = [SelectionSampler(len(ds), None if selection is None else torch.tensor(selection), shuffle=shuffle,
                              seed=4, num_replicas=world, rank=rank) for _ in range(2)]
        for epoch in (0, 1):
            s[0].set_epoch(epoch), s[1].set_epoch(epoch)
            assert_same_loaders(*loader_pair(ds, batch_size=4, sampler=s[0], sampler_ref=s[1]))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_scoring_pass_sharded_sampler_batches(world):
    ds = make(n=61)
    for rank in range(world):
        s = ShardedSampler(len(ds), num_replicas=world, rank=rank)
        assert_same_loaders(*loader_pair(ds, batch_size=16, sampler=s, sampler_ref=s))


@pytest.mark.parametrize("shuffle", [False, True])
def test_ddp_distributed_sampler_batches(shuffle):
    ds = make(n=50, targets=True)
    for rank in range(3):
        s = [DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=shuffle, seed=7) for _ in range(2)]
        for epoch in (0, 1):
            s[0].set_epoch(epoch), s[1].set_epoch(epoch)
            assert_same_loaders(*loader_pair(ds, batch_size=6, sampler=s[0], sampler_ref=s[1]))


def test_subsets_on_either_side():
    base = make(n=40, targets=True)
    picked = [5, 3, 39, 0, 17, 18, 22, 8]
    # a Subset of an IndexedDataset (e.g. a fixed training subset): the index stays the full set's
    outer = Subset(base, picked)
    assert isinstance(outer.__getitems__([0, 1]), _SampleBatch)
    batched, ref = loader_pair(outer, batch_size=3, shuffle=True)
    assert_same_loaders(batched, ref)
    assert sorted(torch.cat([b[0] for b in batched]).tolist()) == sorted(picked)
    # an IndexedDataset over (nested) Subsets of a TensorDataset, with list or tensor indices
    x, y = torch.randn(40, 3), torch.arange(40)
    for inner in (Subset(TensorDataset(x, y), picked), Subset(TensorDataset(x, y), torch.tensor(picked)),
                  Subset(Subset(TensorDataset(x, y), list(range(39, -1, -1))), picked)):
        ds = IndexedDataset(inner, corrupted=torch.arange(8) % 2 == 0)
        assert isinstance(ds.__getitems__([0, 1]), _SampleBatch)
        assert_same_loaders(*loader_pair(ds, batch_size=3, shuffle=True))


class OwnGetitems(Dataset):
    """A dataset with its own batched fetch (it records each call)."""

    def __init__(self, n):
        self.x, self.y, self.calls = torch.randn(n, 2), torch.arange(n) % 3, []

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, indices):
        self.calls.append(list(indices))
        return [(self.x[i], self.y[i]) for i in indices]


def test_wrapped_dataset_with_its_own_getitems_is_fetched_once_per_batch():
    base = OwnGetitems(20)
    ds = IndexedDataset(base, targets=torch.arange(20) + 10, corrupted=torch.arange(20) > 15)
    batched, ref = loader_pair(ds, batch_size=6, shuffle=True)
    base.calls.clear()
    assert_same_loaders(batched, ref)
    assert [len(c) for c in base.calls] == [6, 6, 6, 2]


def test_other_datasets_fall_back_to_per_sample_fetching():
    pairs = [(torch.full((2,), float(i)), i % 3) for i in range(11)]  # a list is a map-style dataset too
    ds = IndexedDataset(pairs, corrupted=torch.arange(11) % 4 == 0)
    assert type(ds.__getitems__([1, 2])) is list
    assert_same_loaders(*loader_pair(ds, batch_size=4, shuffle=True))

    class Shifted(TensorDataset):  # an overridden __getitem__ is never bypassed
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x + 1, y

    ds = IndexedDataset(Shifted(torch.zeros(9, 2), torch.arange(9)))
    assert type(ds.__getitems__([1, 2])) is list
    batch = next(iter(DataLoader(ds, batch_size=9)))
    assert torch.equal(batch[1], torch.ones(9, 2))

    class Doubled(IndexedDataset):  # nor is a subclass's own __getitem__
        def __getitem__(self, i):
            i, x, y = super().__getitem__(i)
            return i, 2 * x, y

    ds = Doubled(TensorDataset(torch.ones(5, 2), torch.arange(5)))
    assert torch.equal(next(iter(DataLoader(ds, batch_size=5)))[1], torch.full((5, 2), 2.0))

    x3 = TensorDataset(torch.zeros(4, 1), torch.arange(4), torch.arange(4))  # not a pair: rejected as before
    with pytest.raises(ValueError, match="must yield `\\(input, target\\)` pairs"):
        IndexedDataset(x3)


def test_items_equal_per_sample_items():
    ds = make(n=12, targets=True)
    items = ds.__getitems__([4, 0, 11, 4])
    assert len(items) == 4
    for got, i in zip(items, [4, 0, 11, 4]):
        want = ds[i]
        assert isinstance(got, tuple) and len(got) == 4 and got[0] == i and type(got[0]) is int
        for g, w in zip(got[1:], want[1:]):
            assert g.dtype == w.dtype and torch.equal(g, w)
    assert [s[0] for s in items[1:3]] == [0, 11] and items[-1][0] == 4
    assert list(ds.__getitems__([])) == []


def test_index_forms_match_per_sample_indexing():
    ds = make(n=12, corrupted=True)
    ref = lambda idx: default_collate([ds[i] for i in idx])  # noqa: E731
    for idx in ([np.int64(3), np.int64(5)], [-1, 0, -12], (2, 2, 2), range(4, 8),
                [torch.tensor(3), torch.tensor(-1)]):
        assert isinstance(ds.__getitems__(idx), _SampleBatch)
        assert_same_batch(default_collate(ds.__getitems__(idx)), ref(idx))
    idx = torch.tensor([5, -2, 0], dtype=torch.int32)  # a tensor of indices: its items are 0-dim tensors
    assert_same_batch(default_collate(ds.__getitems__(idx)), ref(idx))
    for bad in ([3, 12], [-13, 0]):  # out of range, as for ds[i]
        with pytest.raises(IndexError):
            ds.__getitems__(bad)
        with pytest.raises(IndexError):
            [ds[i] for i in bad]
    with pytest.raises(IndexError, match="only integers"):  # not integers: fetched per sample, which refuses them
        ds.__getitems__([1.0, 2.0])
    # Subsets with int32 or negative inner indices
    x, y = torch.randn(10, 2), torch.arange(10)
    for inner in (torch.tensor([9, -1, 0, 4], dtype=torch.int32), [9, -1, 0, 4], np.array([9, -1, 0, 4])):
        sub = IndexedDataset(Subset(TensorDataset(x, y), inner))
        assert isinstance(sub.__getitems__([0, 1]), _SampleBatch)
        assert_same_loaders(*loader_pair(sub, batch_size=3, shuffle=True))


def test_custom_collate_fns_see_the_samples():
    ds = make(n=16, targets=True)
    seen = []
    loader = DataLoader(ds, batch_size=5, collate_fn=lambda b: seen.append([tuple(s) for s in b]) or len(b))
    assert list(loader) == [5, 5, 5, 1]
    flat = [s for b in seen for s in b]
    assert [s[0] for s in flat] == list(range(16))
    for s in flat:
        assert all(torch.equal(a, b) for a, b in zip(s[1:], ds[s[0]][1:]))
    # a collate map derived from the default one, with its own tensor rule, is honoured (no shortcut)
    my_map = {**default_collate_fn_map, torch.Tensor: lambda b, *, collate_fn_map: torch.stack(b) * 0}
    out = collate(ds.__getitems__([0, 1, 2]), collate_fn_map=my_map)
    assert out[0].tolist() == [0, 1, 2] and not out[1].any() and not out[2].any()
    my_map = {**default_collate_fn_map, int: lambda b, *, collate_fn_map: torch.tensor(b) + 100}
    assert collate(ds.__getitems__([0, 1, 2]), collate_fn_map=my_map)[0].tolist() == [100, 101, 102]
    # a plain list of the samples (e.g. filtered by a user's collate_fn) collates like tuples
    items = ds.__getitems__([6, 2, 9])
    assert all(isinstance(s, _Sample) for s in items)
    assert_same_batch(default_collate([items[0], items[2]]), default_collate([ds[6], ds[9]]))
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([items[0], _Sample(items[1][:3])])


def test_worker_processes_give_the_same_batches():
    ds = make(n=40, targets=True)
    assert_same_loaders(*loader_pair(ds, batch_size=7, shuffle=True, num_workers=2))


def test_itlm_fit_is_identical_with_batched_and_per_sample_fetching(tmp_path):
    def run(wrap):
        pl.seed_everything(0, verbose=False)
        ds = blobs(180)
        model = TinyModel()
        itlm = ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], verbose=False, plot=False)
        loader = DataLoader(wrap(ds), batch_size=32, shuffle=True)
        tiny_trainer(tmp_path, 3, [itlm]).fit(model, loader)
        return itlm.selection, torch.cat(model.seen), [p.detach().clone() for p in model.parameters()]

    fetched = []

    class Spy(IndexedDataset):  # counts the batched fetches (and keeps the fast path: __getitem__ is inherited)
        def __getitems__(self, indices):
            out = super().__getitems__(indices)
            fetched.append((len(indices), type(out)))
            return out

    sel_b, seen_b, params_b = run(lambda d: Spy(d.dataset, targets=d.targets, corrupted=d.corrupted))
    # every training batch (6 + 4 + 4 of them) and every scoring batch (2 passes x 6) was fetched in one go
    assert len(fetched) == 26 and all(t is _SampleBatch for _, t in fetched)
    assert sum(k for k, _ in fetched) == 180 + 2 * 108 + 2 * 180
    sel_p, seen_p, params_p = run(PerSample)
    assert torch.equal(sel_b, sel_p) and torch.equal(seen_b, seen_p)
    assert len(seen_b) == 180 + 2 * 108
    assert all(torch.equal(a, b) for a, b in zip(params_b, params_p))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resident_tensors_and_pinned_batches():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, generator=g), torch.randint(0, 4, (30,), generator=g)
    flags = torch.rand(30, generator=g) < 0.5
    on_gpu = IndexedDataset(TensorDataset(x.cuda(), y.cuda()), corrupted=flags)  # flags stay on the CPU
    assert isinstance(on_gpu.__getitems__([0, 1]), _SampleBatch)
    batched, ref = loader_pair(on_gpu, batch_size=8, shuffle=True)
    assert_same_loaders(batched, ref)
    assert [t.device.type for t in next(iter(batched))] == ["cpu", "cuda", "cuda", "cpu"]
    batched, ref = loader_pair(IndexedDataset(TensorDataset(x, y), corrupted=flags), batch_size=8, shuffle=True,
                               pin_memory=True)
    assert_same_loaders(batched, ref)
    assert all(t.is_pinned() for t in next(iter(batched)))
