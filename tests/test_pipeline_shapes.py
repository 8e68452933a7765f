"""Training pipelines that are not the tutorials' tidy `(x, y)` set (a newcomer's data pipeline run): streams, extra
fields per sample, dict samples, concatenated indexed sets, random augmentation, plain evaluation batches."""

import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, IterableDataset, TensorDataset

import lit_robust
from lit_robust import ITLM, BatchFilter, IndexedDataset, unpack_batch, unpack_eval_batch
from lit_robust.data.indexed import reads_differ
from tests.conftest import TinyModel, blobs, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Stream(IterableDataset):
    def __len__(self):
        return 4

    def __iter__(self):
        return iter([(torch.zeros(2), 0)] * 4)


def test_wrapping_a_stream_says_it_cannot_be_indexed_and_what_works():
    # before: torch's "Subclasses of Dataset should implement `__getitem__`"
    with pytest.raises(TypeError, match=r"a stream \(IterableDataset\) cannot be indexed: make it yield `\(index, "
                                        r"input, target.*BatchFilter"):
        IndexedDataset(_Stream())


def test_samples_with_an_extra_field_are_told_where_the_field_can_go():
    triples = [(torch.zeros(2), 0, "id-7")] * 3  # a list of tuples
    with pytest.raises(ValueError, match=r"a tuple of 3 element\(s\).*\(\(x, extra\), y\)"):
        IndexedDataset(triples)
    with pytest.raises(ValueError) as err:  # a tensor item is not "more per sample": no such advice
        IndexedDataset([torch.zeros(5)] * 3)
    assert "extra" not in str(err.value)


def test_an_evaluation_batch_may_be_a_plain_pair_through_either_helper():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    for b in (unpack_batch((x, y), evaluation=True), unpack_eval_batch([x, y]), lit_robust.unpack_eval_batch((x, y))):
        assert b.index is None and b.input is x and b.target is y
    with pytest.raises(ValueError, match="expects batches"):  # a training batch still needs its indices
        unpack_batch((x, y))


def test_a_dict_batch_names_dict_samples_before_several_loaders():
    with pytest.raises(ValueError, match=r"If your samples are dicts, wrap the dataset as `lit_robust\.IndexedDataset\("
                                         r"dataset, target_key='label'\)`.*\(s\['image'\], s\['label'\]\).*several training"):
        unpack_batch({"image": torch.zeros(2, 2), "label": torch.zeros(2)}, owner="BatchFilter")
    with pytest.raises(ValueError, match=r"target_key='labels'"):  # the key guessed from the batch's
        unpack_batch({"input_ids": torch.zeros(2, 2), "labels": torch.zeros(2)}, owner="BatchFilter")
    with pytest.raises(ValueError) as err:  # an evaluation batch: no training loaders to speak of
        unpack_batch({"image": torch.zeros(2, 2)}, evaluation=True)
    assert "batch that is a dict" in str(err.value) and "several" not in str(err.value)


@pytest.mark.parametrize("make", [
    lambda d: BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1, report=True, report_dir=d),
    lambda d: ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=False),
    lambda d: BatchFilter("prl", drop_ratio="auto", warmup_epochs=1),  # no report: the estimate's mean per index
])
def test_a_concatenation_of_indexed_sets_is_refused_before_training(tmp_path, make):
    """Each part numbers its samples from 0: a newcomer's PRL report mixed two sets' rows under one index, silently
    (2,500 of 6,000 rows empty); ITLM said so only at its first scoring pass; a filter's `"auto"` without a report
    read 34.4 % where the one-numbered set read 26.5 %, unsaid."""
    data = ConcatDataset([blobs(60, seed=0), blobs(60, seed=1)])
    model = TinyModel()
    with pytest.raises(ValueError, match=r"a `ConcatDataset` of `IndexedDataset`s.*IndexedDataset\(ConcatDataset"):
        tiny_trainer(tmp_path, 2, [make(tmp_path)]).fit(model, DataLoader(data, batch_size=32))
    assert model.seen == []  # nothing trained


class _Jittered(Dataset):
    """Random augmentation in `__getitem__`, as a training transform does."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x + 0.3 * torch.randn_like(x), y


def _two_blob_pairs(n=120):
    ds = blobs(n)
    return TensorDataset(torch.stack([ds[i][1] for i in range(n)]), ds.targets)


def test_reads_differ_sees_augmentation_and_leaves_the_random_state_as_it_was():
    jittered = IndexedDataset(_Jittered(_two_blob_pairs()))  # (its own check reads item 0 once)
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    assert reads_differ(jittered)
    assert torch.equal(torch.rand(3), want)  # training draws what it would have drawn without the check
    assert not reads_differ(blobs(30))
    assert not reads_differ(_Stream())  # cannot be read by position: nothing to say
    # a NaN feature read twice is the same sample (a regression newcomer's was taken for an augmentation)
    x = torch.randn(5, 3)
    x[0, 1] = float("nan")
    assert not reads_differ(IndexedDataset(TensorDataset(x, torch.randn(5))))
    assert not reads_differ([(x[0].numpy(), 1.0)])  # numpy inputs alike
    assert reads_differ(_NaNThenNumber())  # a NaN against a number still differs


class _NaNThenNumber(torch.utils.data.Dataset):
    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 1

    def __getitem__(self, i):
        self.reads += 1
        return torch.tensor([float("nan") if self.reads % 2 else 1.0]), 0


@pytest.mark.parametrize("scoring_loader", [None, "plain", "augmented"])
def test_itlm_says_when_its_scoring_pass_reads_augmented_samples(tmp_path, scoring_loader, recwarn):
    """A newcomer's random shifts in `__getitem__`: the selection was 91.7 % clean, 95.1 % with a
    `scoring_dataloader()` without them, and ITLM said nothing. An image-folder newcomer's own scoring loader kept
    the training transform: nothing was said either (top-631 precision 0.75 against 0.82)."""
    pairs = _two_blob_pairs()
    train = IndexedDataset(_Jittered(pairs))

    class Model(TinyModel):
        if scoring_loader is not None:
            def scoring_dataloader(self):
                return DataLoader(train if scoring_loader == "augmented" else IndexedDataset(pairs), batch_size=64)

    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 2, [ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False)]).fit(
        Model(), DataLoader(train, batch_size=32, shuffle=True))
    said = [str(w.message) for w in recwarn if "two reads of" in str(w.message)]
    if scoring_loader == "plain":
        assert said == []
    elif scoring_loader is None:
        assert len(said) == 1 and said[0].startswith("ITLM: two reads of sample 0 of the training set, which the scoring pass reads") and "Define `scoring_dataloader()`" in said[0]
    else:
        assert said == [said[0]] and said[0].startswith(
            "ITLM: two reads of sample 0 of `scoring_dataloader()` of your module gave different inputs")
        assert said[0].endswith("Give its dataset the evaluation transform.")


def test_a_scoring_loader_without_indices_is_named_not_the_training_set(tmp_path):
    """An image-folder newcomer's `scoring_dataloader()` over a plain dataset was told to wrap the training set,
    which they had wrapped."""
    pairs = _two_blob_pairs()

    class Model(TinyModel):
        def scoring_dataloader(self):
            return DataLoader(pairs, batch_size=64)

    with pytest.raises(ValueError, match=r"^ITLM: `scoring_dataloader\(\)` of your module: lit_robust expects batches "
                                         r"`\(index, input, target\[, is_corrupted\]\)`, got a list of length 2\. Its "
                                         r"dataset must hold the training samples wrapped in `lit_robust.IndexedDataset`"):
        tiny_trainer(tmp_path, 2, [ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False)]).fit(
            Model(), DataLoader(IndexedDataset(pairs), batch_size=32))


def test_a_list_of_indexed_batches_is_named_as_several_loaders():
    """A release check: BatchFilter with a list of two training loaders was told to wrap its (wrapped) data set."""
    one = (torch.arange(4), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got a list of length 2\. With a list of several training DataLoaders "
                                         r"Lightning passes one batch per loader.*ConcatDataset"):
        unpack_batch([one, one], owner="BatchFilter")


def test_nonfinite_inputs_or_targets_are_named_when_the_dataset_is_wrapped():
    """A regression newcomer's one NaN feature made every ITLM round's loss NaN ("collapsed") and the CLI fit ended
    with exit status 0; nothing named the row."""
    import warnings

    from lit_robust.data.indexed import nonfinite_rows

    x, y = torch.randn(10, 3), torch.randn(10)
    x[0, 1], x[6, 2] = float("nan"), float("-inf")
    y[7] = float("inf")
    assert nonfinite_rows(x).tolist() == [i for i in range(10) if not all(map(math.isfinite, x[i].tolist()))] == [0, 6]
    assert nonfinite_rows(torch.arange(4)) is None and nonfinite_rows([1.0, float("nan")]) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        IndexedDataset(TensorDataset(x, y))
        IndexedDataset(TensorDataset(x.nan_to_num(), y), targets=y.nan_to_num(posinf=0.0))  # clean: nothing said
    said = [str(w.message) for w in caught if "NaN or infinite" in str(w.message)]
    assert said == [
        "IndexedDataset: 2 of 10 samples have NaN or infinite inputs (at [0, 6]): one such sample makes its batch's "
        "loss, and the model, NaN, even where a selection would drop it. Drop or impute them before training, e.g. "
        "keep the rows where `torch.isfinite(t).reshape(len(t), -1).all(1)`.",
        "IndexedDataset: 1 of 10 samples have NaN or infinite targets (at [7]): one such sample makes its batch's "
        "loss, and the model, NaN, even where a selection would drop it. Drop or impute them before training, e.g. "
        "keep the rows where `torch.isfinite(t).reshape(len(t), -1).all(1)`."]
    assert all(w.filename == __file__ for w in caught if "NaN or infinite" in str(w.message))  # the user's line


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_filter_on_a_loader_in_order_is_told_to_shuffle(tmp_path, shuffle):
    """A data-pipeline newcomer's class-sorted digits under `shuffle=False`: each batch held one or two given labels,
    `"auto"` read 99.4 % and the clip warning's advice (a longer warm-up) read 98.6 %; the loader went unnamed."""
    data = blobs(90)
    order = torch.argsort(data.targets, stable=True).tolist()  # sorted by class, as an image folder lists its files
    sorted_set = IndexedDataset(torch.utils.data.Subset(data.dataset, order), targets=data.targets[order])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 1, [BatchFilter("spl", drop_ratio=0.2)]).fit(
            TinyModel(), DataLoader(sorted_set, batch_size=30, shuffle=shuffle))
    said = [str(w.message) for w in record if "draws its samples in order" in str(w.message)]
    assert len(said) == (not shuffle), said
    if said:
        assert said[0].startswith("BatchFilter: the training loader draws its samples in order (`shuffle=False`)")
        assert said[0].endswith("Build the training loader with `shuffle=True`.")


def test_a_stream_of_pairs_is_told_to_yield_its_indices_not_to_wrap_it(tmp_path):
    """A data-pipeline newcomer's stream of `(x, y)` was told to wrap it in `IndexedDataset`, which refuses streams;
    only then did they read the stream's advice."""
    data = blobs(64)

    class Pairs(IterableDataset):
        def __iter__(self):
            return iter([(data[i][1], data[i][2]) for i in range(64)])

    with pytest.raises(ValueError, match=r"`BatchFilter`: the training set is a stream \(IterableDataset\), whose "
                                         r"batches must carry each sample's index: make it yield `\(index, input, "
                                         r"target\[, is_corrupted\]\)` itself.*cannot index a stream\. Got: lit_robust "
                                         r"expects batches .*got a list of length 2\.$"):
        tiny_trainer(tmp_path, 1, [BatchFilter("spl", drop_ratio=0.2)]).fit(TinyModel(),
                                                                           DataLoader(Pairs(), batch_size=16))


def test_index_clashes_are_found_under_a_subset_and_one_part_is_none():
    """A reviewer's `Subset(ConcatDataset([a, b]))` of two indexed parts went unrefused (the check looked at the top
    level only), and a one-part `ConcatDataset`, whose indices cannot clash, was refused."""
    from lit_robust.data.indexed import check_one_index_space

    with pytest.raises(ValueError, match=r"a `ConcatDataset` of `IndexedDataset`s"):
        check_one_index_space(torch.utils.data.Subset(ConcatDataset([blobs(6), blobs(6, seed=1)]), [0, 7]), "ITLM")
    check_one_index_space(ConcatDataset([blobs(6)]), "ITLM")  # one part: nothing to clash


def test_a_custom_batch_sampler_is_not_said_to_draw_in_order():
    """A reviewer's shuffling `batch_sampler` was told to pass `shuffle=True`, which DataLoader refuses beside it."""
    from lit_robust._lightning import draws_in_order

    class Shuffled(torch.utils.data.Sampler):
        def __iter__(self):
            return iter([[3, 1], [0, 2]])

        def __len__(self):
            return 2

    data = blobs(4)
    assert not draws_in_order(DataLoader(data, batch_sampler=Shuffled()))
    assert draws_in_order(DataLoader(data, batch_size=2)) and not draws_in_order(DataLoader(data, batch_size=2,
                                                                                            shuffle=True))


def test_a_stream_of_dicts_is_told_to_yield_its_indices_too(tmp_path):
    """The stream advice reached a stream of `(x, y)` pairs only: one of dicts was still told
    `IndexedDataset(dataset, target_key=...)`, which then failed on the stream's missing `len`."""
    data = blobs(32)

    class Dicts(IterableDataset):
        def __iter__(self):
            return iter([{"x": data[i][1], "label": data[i][2]} for i in range(32)])

    with pytest.raises(ValueError, match=r"`BatchFilter`: the training set is a stream \(IterableDataset\).*cannot "
                                         r"index a stream\. Got: "):
        tiny_trainer(tmp_path, 1, [BatchFilter("spl", drop_ratio=0.2)]).fit(TinyModel(),
                                                                           DataLoader(Dicts(), batch_size=16))
