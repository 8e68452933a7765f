"""Training data that streams (an IterableDataset yielding its own indices) or comes from several loaders, under the
per-batch filters: what works, and what is named when it cannot (a streaming user's findings)."""

import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, WeightedRandomSampler

from lit_robust import BatchFilter, load_report
from tests.conftest import BlobsData, TinyModel, blobs, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Stream(IterableDataset):
    """The rows of `blobs(n)` as `(index, x, y, corrupted)`; `index_of(i)` is what each row says its index is."""

    def __init__(self, n: int = 240, index_of=lambda i: i, sized: bool = True) -> None:
        self.ds, self.index_of, self.sized = blobs(n), index_of, sized

    def __iter__(self):
        for i in range(len(self.ds)):
            _, x, y, c = self.ds[i]
            yield self.index_of(i), x, y, c

    def __len__(self):
        if not self.sized:
            raise TypeError("a stream of unknown length")
        return len(self.ds)


def _fit(tmp_path, stream_or_loader, **kw):
    loader = (stream_or_loader if not isinstance(stream_or_loader, IterableDataset)
              else DataLoader(stream_or_loader, batch_size=32))
    cb = BatchFilter("prl", drop_ratio="auto", warmup_epochs=2, report=True, report_dir=str(tmp_path / "rep"), **kw)
    pl.seed_everything(0, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 3, [cb]).fit(TinyModel(), loader)
    return cb, [str(w.message) for w in caught]


def test_a_stream_with_unique_indices_and_a_length_gets_its_report_without_a_repeat_warning(tmp_path):
    cb, said = _fit(tmp_path, Stream())
    assert len(load_report(cb.report_path, as_frame=False)) == 240
    assert not [m for m in said if "more than once" in m]


def test_a_stream_that_repeats_indices_is_warned_about(tmp_path):
    """Shard-local indices (each shard counting from 0): no error, ε̂ 27.33 % for 20 %, report rows mixing five
    samples each, and a warning that blamed `limit_train_batches` or `drop_last`."""
    cb, said = _fit(tmp_path, Stream(index_of=lambda i: i % 60))
    repeated = [m for m in said if "more than once from the stream" in m]
    assert repeated == ["BatchFilter: epoch 0 saw 60 dataset indices more than once from the stream (IterableDataset): "
                        "each sample must carry an index of its own, unique in the data set. With DataLoader workers "
                        "each worker must yield its own share (split the shards by "
                        "`torch.utils.data.get_worker_info()`). A repeated index merges different samples in the "
                        "report and the `\"auto\"` estimate."]


def test_a_replacement_sampler_on_a_map_style_set_is_no_repeat(tmp_path):
    """A sample drawn twice by `WeightedRandomSampler` is the same sample: not warned about; the report's note on
    unscored rows names such a sampler."""
    data = BlobsData(n=240)
    sampler = WeightedRandomSampler(torch.ones(240), num_samples=240, replacement=True,
                                    generator=torch.Generator().manual_seed(0))
    cb, said = _fit(tmp_path, DataLoader(data.ds, batch_size=32, sampler=sampler))
    assert not [m for m in said if "more than once" in m]
    assert [m for m in said if "rows have no score" in m and "`WeightedRandomSampler`" in m]


def test_a_stream_without_a_length_and_several_loaders_are_named_for_the_report(tmp_path):
    with pytest.raises(ValueError, match=r"`BatchFilter\(report=True\)` needs the number of training samples, and the "
                                         r"stream Stream \(an IterableDataset\) has no `__len__`: give it one"):
        _fit(tmp_path, Stream(sized=False))
    data = BlobsData(n=240)
    loaders = {"a": DataLoader(data.ds, batch_size=32), "b": DataLoader(data.ds, batch_size=32)}
    with pytest.raises(ValueError, match=r"`BatchFilter\(report=True\)` needs one training dataloader, got several "
                                         r"\(dict\).*`torch.utils.data.ConcatDataset`"):
        _fit(tmp_path, loaders)


def test_a_stream_resumed_inside_an_epoch_is_not_taken_for_repeated_indices(tmp_path):
    """A reviewer's stream with unique indices, resumed from a checkpoint written inside epoch 1, was told it "saw 128
    dataset indices more than once": Lightning starts a stream again from its first sample, the restored sums count
    the replayed ones twice. That is the resume's doing, not the stream's."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=12, save_top_k=-1)
    cb = BatchFilter("prl", drop_ratio=0.2, report=True, report_dir=str(tmp_path / "rep"))
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 2, [cb, ckpt], enable_checkpointing=True).fit(TinyModel(), DataLoader(Stream(), batch_size=32))
    resumed = BatchFilter("prl", drop_ratio=0.2, report=True, report_dir=str(tmp_path / "rep2"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [resumed], enable_checkpointing=True).fit(
            TinyModel(), DataLoader(Stream(), batch_size=32), ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=12.ckpt"))
    assert [r.epoch for r in resumed.history] == [0, 1]
    assert not [w for w in caught if "more than once" in str(w.message)]
