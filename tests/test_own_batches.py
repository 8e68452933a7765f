"""Batches of the user's own making (a sequence user's runs): a padding `collate_fn` and dict inputs through
`IndexedCollate`; the mistakes that trained silently or were pointed at the wrong fix (labels fourth, read as the
`is_corrupted` flags; a collate that drops the index; an IterableDataset under ITLM; dict samples; keep_ratio=0.3
meant as "drop 30 %")."""

from __future__ import annotations

import csv
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, IterableDataset

from lit_robust import ITLM, BatchFilter, IndexedCollate, IndexedDataset, RobustMixin, corrupt_labels, unpack_batch
from lit_robust._backend import pl
from tests.conftest import tiny_trainer

VOCAB, CLASSES = 40, 3


def sequences(n: int = 150, seed: int = 0):
    """Token sequences of lengths 2..11 whose tokens say the class (token % 3), labels 30 % flipped."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    lengths = torch.randint(2, 12, (n,), generator=g)
    seqs = [1 + CLASSES * torch.randint(0, (VOCAB - 1) // CLASSES, (int(k),), generator=g) + int(c)
            for k, c in zip(lengths, y)]
    noisy, corrupted = corrupt_labels(y, 0.7, "random", CLASSES, seed=seed)
    return list(zip(seqs, y.tolist())), noisy, corrupted


def pad_pairs(pairs):
    """A user's collate of `(tokens, label)` pairs: padded ids and a mask in a dict, and the labels."""
    ids = pad_sequence([t for t, _ in pairs], batch_first=True)
    return {"ids": ids, "mask": ids != 0}, torch.tensor([int(label) for _, label in pairs])


class TokenModel(RobustMixin, pl.LightningModule):
    """The loss and optimizer of the token models below; each has its own `forward` of its batches' input."""

    def per_sample_loss(self, batch):
        b = unpack_batch(batch)
        logits = self(b.input)
        return F.cross_entropy(logits, b.target, reduction="none"), logits

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class BagOfTokens(TokenModel):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8, padding_idx=0)
        self.out = nn.Linear(8, CLASSES)

    def forward(self, x):
        mask = x["mask"].unsqueeze(-1).float()
        return self.out((self.emb(x["ids"]) * mask).sum(1) / mask.sum(1))  # a mean over each sample's own tokens


def test_indexed_collate_makes_an_indexed_batch_from_a_collate_of_pairs():
    pairs, noisy, corrupted = sequences(6)
    data = IndexedDataset(pairs, targets=noisy, corrupted=corrupted)
    index, x, y, flags = IndexedCollate(pad_pairs)([data[4], data[1]])
    ref_x, _ = pad_pairs([pairs[4], pairs[1]])
    assert index.tolist() == [4, 1] and index.dtype == torch.int64
    assert torch.equal(x["ids"], ref_x["ids"]) and torch.equal(x["mask"], ref_x["mask"])
    assert y.tolist() == [int(noisy[4]), int(noisy[1])]  # the given (corrupted) labels, not the pairs' own
    assert flags.tolist() == [bool(corrupted[4]), bool(corrupted[1])] and flags.dtype == torch.bool
    again = pickle.loads(pickle.dumps(IndexedCollate(pad_pairs)))  # worker processes may need to pickle it
    assert again.collate_fn is pad_pairs


def test_indexed_collate_names_what_the_users_collate_returned():
    data = IndexedDataset(sequences(4)[0])

    def pad_three(p):
        x, y = pad_pairs(p)
        return x["ids"], x["mask"], y

    with pytest.raises(ValueError, match=r"`IndexedCollate`: `pad_three` must return a batch `\(input, target\)`, "
                                         r"got a tuple of 3 element\(s\)"):
        IndexedCollate(pad_three)([data[0], data[1]])
    with pytest.raises(TypeError, match="`collate_fn` must be a function"):
        IndexedCollate("pad")


@pytest.mark.parametrize("callback", ["itlm", "prl"])
def test_padded_sequences_with_dict_inputs_train_under_itlm_and_a_filter(tmp_path, callback, one_torch_thread):
    pairs, noisy, corrupted = sequences()
    data = IndexedDataset(pairs, targets=noisy, corrupted=corrupted)
    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=IndexedCollate(pad_pairs))
    cb = (ITLM(keep_ratio=0.7, round_epochs=[3, 3], verbose=False, plot=False, report_dir=str(tmp_path))
          if callback == "itlm" else BatchFilter("prl", 0.3, report=True, report_dir=str(tmp_path)))
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 6, [cb]).fit(BagOfTokens(), loader)
    with open(cb.report_path, newline="") as f:
        report = list(csv.DictReader(f))
    assert len(report) == len(pairs)
    top = report[: int(corrupted.sum())]
    # the flipped labels rank first (tokens say the class): far above the 30 % of a random ranking
    assert sum(r["corrupted"] == "True" for r in top) / len(top) > 0.8
    assert {int(r["given_label"]) for r in report} == {0, 1, 2}


def offsets_collate(pairs):
    """EmbeddingBag's input: every token of the batch in one flat tensor and each sample's offset into it."""
    lengths = torch.tensor([len(t) for t, _ in pairs])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    return (torch.cat([t for t, _ in pairs]), offsets), torch.tensor([int(label) for _, label in pairs])


def time_first_collate(pairs):
    """A recurrent model's default layout: padded `[T, B]`, time steps first."""
    return pad_sequence([t for t, _ in pairs]), torch.tensor([int(label) for _, label in pairs])


class Bag(TokenModel):
    def __init__(self, time_first: bool = False):
        super().__init__()
        self.time_first = time_first
        self.emb = nn.EmbeddingBag(VOCAB, 8, mode="mean", padding_idx=0)
        self.out = nn.Linear(8, CLASSES)

    def forward(self, x):
        if self.time_first:  # [T, B] padded with 0: one bag per column
            return self.out(self.emb(x.t()))
        tokens, offsets = x
        return self.out(self.emb(tokens, offsets))


@pytest.mark.parametrize("layout", ["offsets", "time_first"])
def test_inputs_that_do_not_lead_with_one_row_per_sample_train_under_itlm(tmp_path, layout, one_torch_thread):
    """EmbeddingBag's `(flat_tokens, offsets)` and a `[T, B]` padding: an NLP newcomer's batches were refused as "the
    first element of a batch must be the 1-D integer sample index" (it was), since the batch size was read off the
    input's first tensor -- every token of the batch, or the time steps."""
    pairs, noisy, corrupted = sequences()
    collate = offsets_collate if layout == "offsets" else time_first_collate
    data = IndexedDataset(pairs, targets=noisy, corrupted=corrupted)
    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=IndexedCollate(collate))
    cb = ITLM(keep_ratio=0.7, round_epochs=[3, 3], verbose=False, plot=False, report_dir=str(tmp_path))
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 6, [cb]).fit(Bag(time_first=layout == "time_first"), loader)
    assert cb.history[-1].clean_precision > 0.8  # the flipped labels were found (30 % of a random choice)


def test_an_index_for_other_samples_than_the_target_is_named():
    index, tokens, offsets = torch.arange(4), torch.arange(20), torch.tensor([0, 5, 10, 15])
    assert unpack_batch([index, (tokens, offsets), torch.zeros(4, dtype=torch.long)]).index.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"`ITLM`: the batch's sample index holds 4 entries, but the batch holds 3 "
                                         r"\(its target's first dimension\) or 20 \(its input's first dimension\) "
                                         r"samples"):
        unpack_batch([index, (tokens, offsets), torch.zeros(3, dtype=torch.long)], "ITLM")
    # a target that is not a tensor: the input's first dimension counts, as before
    with pytest.raises(ValueError, match=r"index holds 4 entries, but the batch holds 20 \(its input's first "
                                         r"dimension\) samples"):
        unpack_batch([index, tokens, ["a", "b", "c", "d"]])
    # a target that leads with something else (a CTC loss's concatenated label sequences): the input's count does
    assert unpack_batch([index, torch.zeros(4, 7, 3), torch.arange(11)]).index.tolist() == [0, 1, 2, 3]


def test_labels_fourth_in_a_batch_are_not_read_as_corruption_flags(tmp_path, one_torch_thread):
    """`(index, ids, mask, y)`: ITLM trained, read the mask as the target and the labels as the flags, and its round
    table said 19.6 % clean precision for a selection 91.8 % clean."""
    pairs, noisy, _ = sequences()

    def flat(samples):
        index, x, y = IndexedCollate(pad_pairs)(samples)
        return index, x["ids"], x["mask"], y

    class Flat(BagOfTokens):
        def per_sample_loss(self, batch):
            _, ids, mask, y = batch
            logits = self({"ids": ids, "mask": mask})
            return F.cross_entropy(logits, y, reduction="none"), logits

    loader = DataLoader(IndexedDataset(pairs, targets=noisy), batch_size=32, collate_fn=flat)
    itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False)
    with pytest.raises(ValueError, match=r"`ITLM`: the 4th element of a batch is the ground-truth `is_corrupted` "
                                         r"flag \(0/1 or boolean\), but it holds \[2\]: is it the target\?"):
        tiny_trainer(tmp_path, 2, [itlm]).fit(Flat(), loader)


def test_float_flags_are_named_on_every_batch():
    with pytest.raises(ValueError, match=r"the 4th element of a batch is the ground-truth `is_corrupted` flag, one "
                                         r"boolean per sample \(shape \(2,\)\), got a tensor of dtype torch.float32"):
        unpack_batch((torch.tensor([0, 1]), torch.zeros(2, 3), torch.tensor([1, 0]), torch.tensor([0.5, 0.2])))
    flags = torch.tensor([1, 0], dtype=torch.uint8)  # 0/1 integers stay accepted
    assert unpack_batch((torch.tensor([0, 1]), torch.zeros(2, 3), torch.tensor([1, 0]), flags)).corrupted is flags


def test_a_collate_that_drops_the_index_is_pointed_at_the_collate():
    with pytest.raises(ValueError, match=r"got a tuple of length 2\. Wrap the training dataset in "
                                         r"`lit_robust.IndexedDataset`.*A `collate_fn` of your own receives those "
                                         r"samples.*`lit_robust.IndexedCollate\(your_collate_fn\)`"):
        unpack_batch(pad_pairs(sequences(4)[0]), owner="ITLM")


def test_itlm_on_an_iterable_dataset_says_it_needs_a_map_style_one(tmp_path):
    """The error said to build the loader with `shuffle=True`, which PyTorch refuses for an IterableDataset."""
    pairs, noisy, _ = sequences(40)
    indexed = IndexedDataset(pairs, targets=noisy)

    class Stream(IterableDataset):
        def __iter__(self):
            return (indexed[i] for i in range(len(indexed)))

    loader = DataLoader(Stream(), batch_size=16, collate_fn=IndexedCollate(pad_pairs))
    with pytest.raises(ValueError, match=r"ITLM selects samples by their index each round, so it needs a map-style "
                                         r"training set .* reads an IterableDataset \(`Stream`\).*`BatchFilter`"):
        tiny_trainer(tmp_path, 2, [ITLM(keep_ratio=0.7, round_epochs=[1, 1], plot=False)]).fit(BagOfTokens(), loader)


def test_dict_samples_get_an_example_of_pairs():
    records = [{"input_ids": [5, 6], "label": 1}, {"input_ids": [7], "label": 0}]
    with pytest.raises(ValueError, match=r"its first item is a dict with keys \['input_ids', 'label'\]; pass the key "
                                         r"of its target, `IndexedDataset\(dataset, target_key='label'\)` .* or give "
                                         r"IndexedDataset a dataset whose items are pairs, e.g. "
                                         r"`\[\(s\['input_ids'\], s\['label'\]\) for s in records\]`"):
        IndexedDataset(records)


def test_dict_samples_with_their_target_key_train_with_a_padding_collate(tmp_path):
    """Hugging Face's samples, `{"input_ids", "attention_mask", "labels"}`: an NLP newcomer rewrote their dataset to
    pairs. `target_key` takes the label out of each dict; the padding collate sees `(inputs, label)` pairs."""
    g = torch.Generator().manual_seed(0)
    records = []
    for i in range(96):
        length = int(torch.randint(2, 9, (1,), generator=g))
        records.append({"input_ids": torch.randint(1, 30, (length,), generator=g), "labels": i % 2})
    data = IndexedDataset(records, target_key="labels", corrupted=torch.arange(96) % 10 == 0)
    index, inputs, label, flag = data[3]
    assert (index, set(inputs), label, bool(flag)) == (3, {"input_ids"}, 1, False)
    assert torch.equal(inputs["input_ids"], records[3]["input_ids"])

    def pad(pairs):  # a user's padding collate of (dict, label) pairs
        return pad_pairs([(x["input_ids"], y) for x, y in pairs])

    loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=IndexedCollate(pad))
    itlm = ITLM(keep_ratio=0.9, round_epochs=[1, 1], verbose=False, plot=False)
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 2, [itlm]).fit(BagOfTokens(), loader)
    assert itlm.history[-1].kept == 86 and itlm.history[-1].clean_precision is not None
    with pytest.raises(ValueError, match=r"`target_key` must be a key of every sample, got 'label', but item 0 has "
                                         r"keys \['input_ids', 'labels'\]"):
        IndexedDataset(records, target_key="label")
    with pytest.raises(TypeError, match=r"`target_key` must be the key of the target in each dict sample"):
        IndexedDataset(records, target_key=0)


def test_a_keep_ratio_under_one_half_is_warned_as_the_share_kept():
    with pytest.warns(UserWarning, match=r"`keep_ratio`=0.3 keeps 30% of the training samples each round and drops "
                                         r"70%: it is the share kept \(to drop 30%, pass keep_ratio=0.7\)"):
        ITLM(keep_ratio=0.3, round_epochs=[1, 1])


def test_the_messages_for_a_sequence_users_other_mistakes_point_at_the_fix():
    """A flat 5-tuple batch, `drop_ratio=0.7` meant as "keep 70 %", and an IterableDataset given to IndexedDataset
    (a second sequence newcomer): each message now says what to do instead."""
    flat = (torch.arange(2), torch.zeros(2, 3).long(), torch.ones(2, 3), torch.tensor([1, 0]), torch.tensor([0, 0]),)
    with pytest.raises(ValueError, match=r"got a tuple of length 5\. Several inputs go in one tuple or dict, e\.g\. "
                                         r"`\(index, \(ids, mask\), target\)`"):
        unpack_batch(flat)
    with pytest.raises(ValueError, match=r"`drop_ratio` must be in \[0, 0\.5\), got 0\.7\. Pass `allow_large_drop="
                                         r"True` .* It is the share dropped: to keep 70%, pass drop_ratio=0\.3\."):
        BatchFilter("prl", 0.7)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(TypeError, match=r"a stream \(IterableDataset\) cannot be indexed: make it yield `\(index, "
                                        r"input, target\[, is_corrupted\]\)` itself.*works with the per-batch filters"):
        IndexedDataset(Stream())


@pytest.mark.parametrize("who", ["itlm", "prl", "coteaching"])
def test_a_collate_of_pairs_left_unwrapped_is_named_before_the_first_batch(tmp_path, who):
    """An NLP newcomer gave their `(tokens, label)` padding collate to a loader over an `IndexedDataset` without
    `IndexedCollate`: the first batch stopped in their collate with "too many values to unpack (expected 2)", no word
    of lit_robust's."""
    pairs, noisy, _ = sequences(40)
    loader = DataLoader(IndexedDataset(pairs, targets=noisy), batch_size=8, collate_fn=offsets_collate)
    model, callbacks = Bag(), []
    if who == "itlm":
        callbacks = [ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False, report=False)]
    elif who == "prl":
        callbacks = [BatchFilter("prl", 0.2)]
    else:
        from lit_robust import CoTeaching
        model = CoTeaching(Bag(), drop_ratio=0.2)
    owner = {"itlm": "ITLM", "prl": "BatchFilter", "coteaching": "CoTeaching"}[who]
    with pytest.raises(ValueError, match=rf"`{owner}`: the training DataLoader's `collate_fn` \(`offsets_collate`\) "
                                         r"failed on the first samples of its `IndexedDataset` \(ValueError: too many "
                                         r"values to unpack.*`lit_robust.IndexedCollate\(offsets_collate\)`"):
        tiny_trainer(tmp_path, 2, callbacks).fit(model, loader)


class ByLength(torch.utils.data.Sampler):
    """Length bucketing, the NLP habit: batches of samples of similar length."""

    def __init__(self, pairs, batch_size):
        self.order, self.batch_size = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0])), batch_size

    def __iter__(self):
        return iter([self.order[i:i + self.batch_size] for i in range(0, len(self.order), self.batch_size)])

    def __len__(self):
        return -(-len(self.order) // self.batch_size)


def test_a_bucketing_batch_sampler_is_refused_by_itlm_and_kept_by_a_filter(tmp_path, one_torch_thread):
    pairs, noisy, corrupted = sequences()
    data = IndexedDataset(pairs, targets=noisy, corrupted=corrupted)
    loader = DataLoader(data, batch_sampler=ByLength(pairs, 32), collate_fn=IndexedCollate(offsets_collate))
    itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=False)
    with pytest.raises(ValueError, match=r"ITLM draws each round's samples through a sampler of its own, so the "
                                         r"training loader, built with a custom `batch_sampler` \(`ByLength`\), "
                                         r"cannot be kept: .*a per-batch filter \(`BatchFilter`, `CoTeaching`\)"):
        tiny_trainer(tmp_path, 2, [itlm]).fit(Bag(), loader)
    prl = BatchFilter("prl", 0.3, warmup_epochs=1)
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 2, [prl]).fit(Bag(), loader)
    assert prl.history[-1].dropped > 0  # it filtered inside the bucketed batches


def hf_records(n: int = 150, seed: int = 0):
    """Hugging Face-style records: dicts of `input_ids` and `attention_mask` with the label inside."""
    pairs, noisy, corrupted = sequences(n, seed)
    records = [{"input_ids": t, "attention_mask": torch.ones_like(t), "label": int(y)} for (t, _), y in zip(pairs, noisy)]
    return records, corrupted


def pad_records(records):
    """DataCollatorWithPadding's way: records with `labels` in, one dict batch with `labels` out."""
    ids = pad_sequence([r["input_ids"] for r in records], batch_first=True)
    mask = pad_sequence([r["attention_mask"] for r in records], batch_first=True)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in records])}


class HFStyle(BagOfTokens):
    """Its input is the dict batch of `input_ids` and `attention_mask`."""

    def forward(self, x):
        return super().forward({"ids": x["input_ids"], "mask": x["attention_mask"]})


@pytest.mark.parametrize("callback", ["itlm", "prl"])
def test_a_collate_of_dict_records_trains_with_its_target_key(tmp_path, callback, one_torch_thread):
    """An HF-style newcomer's collate of dict records (the label inside, `labels` out) fitted no `(input, target)`
    pairs: they wrote an adapter. `IndexedCollate(collate, target_key="labels")` takes it as it is."""
    records, corrupted = hf_records()
    data = IndexedDataset(records, target_key="label", corrupted=corrupted)
    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=IndexedCollate(pad_records, target_key="labels"))
    index, x, y, flags = next(iter(loader))
    assert sorted(x) == ["attention_mask", "input_ids"] and y.dtype == torch.long and flags.dtype == torch.bool
    cb = (ITLM(keep_ratio="auto", round_epochs=[3, 3], verbose=False, plot=False, report_dir=str(tmp_path))
          if callback == "itlm" else BatchFilter("prl", 0.3, warmup_epochs=2, report=True, report_dir=str(tmp_path)))
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 6, [cb]).fit(HFStyle(), loader)
    with open(cb.report_path, newline="") as f:
        report = list(csv.DictReader(f))
    top = report[: int(corrupted.sum())]
    assert sum(r["corrupted"] == "True" for r in top) / len(top) > 0.8  # 30 % for a random ranking


def test_a_collate_of_dict_records_without_its_target_key_is_named(tmp_path):
    """Wrapped as `IndexedCollate(collate)` (the advice for a collate of pairs), it died in the first epoch in the
    user's collate ("tuple indices must be integers or slices, not str"), no word of lit_robust's."""
    records, _ = hf_records(40)
    loader = DataLoader(IndexedDataset(records, target_key="label"), batch_size=8,
                        collate_fn=IndexedCollate(pad_records))
    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False, report=False)
    with pytest.raises(ValueError, match=r"`ITLM`: the training DataLoader's `IndexedCollate\(pad_records\)` failed on "
                                         r"the first samples .*\(TypeError: .*it hands `pad_records` `\(input, "
                                         r"target\)` pairs, .*pass `IndexedCollate\(pad_records, target_key='labels'\)`"):
        tiny_trainer(tmp_path, 2, [itlm]).fit(HFStyle(), loader)
    loader = DataLoader(IndexedDataset(records, target_key="label"), batch_size=8,
                        collate_fn=IndexedCollate(pad_records, target_key="label"))  # the records' key, not the batch's
    with pytest.raises(ValueError, match=r"`BatchFilter`: .*failed on the first samples .*\(KeyError: 'labels'\): it "
                                         r"hands `pad_records` dict records with the target under 'label'. If `pad_records` "
                                         r"collates `\(input, target\)` pairs, leave `target_key` out; if it reads "
                                         r"the label under another key, pass that one"):
        tiny_trainer(tmp_path, 2, [BatchFilter("prl", 0.2)]).fit(HFStyle(), loader)
    with pytest.raises(TypeError, match=r"`target_key` must be the key of the target in your collate's dict batch"):
        IndexedCollate(pad_records, target_key=1)
    # left unwrapped: both wrappings are named, the records' one with its `target_key`
    loader = DataLoader(IndexedDataset(records, target_key="label"), batch_size=8, collate_fn=pad_records)
    with pytest.raises(ValueError, match=r"goes in `lit_robust.IndexedCollate\(pad_records\)`, .*; one of dict records "
                                         r"with the label inside \(Hugging Face's style\) in "
                                         r"`lit_robust.IndexedCollate\(pad_records, target_key='labels'\)`"):
        tiny_trainer(tmp_path, 2, [BatchFilter("prl", 0.2)]).fit(HFStyle(), loader)


def test_a_collate_returning_a_dict_batch_is_told_its_own_label_key():
    """`IndexedCollate` told a collate returning `{"input_ids", "attention_mask", "label"}` to pass
    `target_key='labels'`, a key its batch does not hold; the advice now names `'label'` and the way that needs no
    dict records: return `(batch, batch.pop('label'))`."""
    def pad_to_dict(pairs):
        ids = pad_sequence([t for t, _ in pairs], batch_first=True)
        return {"input_ids": ids, "attention_mask": ids != 0, "label": torch.tensor([y for _, y in pairs])}

    data = IndexedDataset([(torch.tensor([5, 6, 7]), 1), (torch.tensor([8]), 0)])
    with pytest.raises(ValueError, match=r"return `\(batch, batch\.pop\('label'\)\)` from `pad_to_dict`, or, .*"
                                         r"`IndexedCollate\(your_fn, target_key='label'\)`") as err:
        IndexedCollate(pad_to_dict)([data[0], data[1]])
    assert "'labels'" not in str(err.value)
