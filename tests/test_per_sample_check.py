"""`check_per_sample_scores`: a score that depends on the rest of its batch is caught; per-sample ones pass."""

import math

import pytest
import torch

from lit_robust.mixin import check_per_sample_scores, per_sample_mismatch


def slow_mismatch(again, scores, rtol):
    """The rule written out sample by sample."""
    finite = [float(v) for v in scores if math.isfinite(float(v))]
    spread = max(finite) - min(finite) if finite else 0.0
    out = []
    for a, b in zip(again.tolist(), scores.tolist()):
        if math.isfinite(a) and math.isfinite(b):
            out.append(abs(a - b) > rtol * (abs(b) + spread))
        elif math.isnan(a) and math.isnan(b):
            out.append(False)
        else:
            out.append(not (math.isinf(a) and a == b))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_mismatch_matches_the_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(12, generator=g) * 10 ** float(torch.randint(-3, 3, (), generator=g))
    specials = torch.tensor([math.nan, math.inf, -math.inf, 0.0])
    scores[torch.randint(0, 12, (3,), generator=g)] = specials[torch.randint(0, 4, (3,), generator=g)]
    again = scores[:6].clone()
    noise = torch.randn(6, generator=g).double() * 10 ** float(torch.randint(-6, 0, (), generator=g))
    again = (again.double() + noise).float()
    again[torch.randint(0, 6, (1,), generator=g)] = specials[torch.randint(0, 4, (1,), generator=g)]
    for rtol in (1e-3, 1e-1):
        assert per_sample_mismatch(again, scores, rtol).tolist() == slow_mismatch(again, scores, rtol)


def _batch(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.arange(n), torch.randn(n, 5, generator=g), torch.zeros(n, dtype=torch.long)


def per_sample(batch):
    return (batch[1] ** 2).sum(1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("name", "fn"), [
    ("centred on the batch", lambda b: per_sample(b) - per_sample(b).mean()),
    ("batch mean broadcast", lambda b: per_sample(b).mean().expand(b[1].shape[0])),
    ("normalised by the batch", lambda b: per_sample(b) / per_sample(b).sum()),
    ("rank within the batch", lambda b: per_sample(b).argsort().argsort().float()),
])
def test_batch_dependent_scores_are_caught(name, fn, seed):
    batch = _batch(seed=seed)
    with pytest.raises(ValueError, match=r"`ITLM`: `sample_scores` must score each sample on its own, but the first "
                                         r"(16|2) samples of a batch of 40"):
        check_per_sample_scores("ITLM", fn, batch, fn(batch))


def test_per_sample_scores_pass_also_with_nan_inf_and_dict_inputs():
    batch = _batch()

    def with_specials(b):
        s = per_sample(b)
        return torch.where(b[0] % 5 == 0, torch.full_like(s, math.nan), torch.where(b[0] % 7 == 0, math.inf, s))

    check_per_sample_scores("ITLM", with_specials, batch, with_specials(batch))
    as_dict = (batch[0], {"x": batch[1], "meta": [batch[1][:, :1]]}, batch[2])
    fn = lambda b: (b[1]["x"] ** 2).sum(1) + b[1]["meta"][0][:, 0]  # noqa: E731
    check_per_sample_scores("ITLM", fn, as_dict, fn(as_dict))


def test_what_is_not_checked():
    calls = []

    def centred(b):
        calls.append(len(b[0]))
        return per_sample(b) - per_sample(b).mean()

    one = _batch(n=1)
    check_per_sample_scores("ITLM", centred, one, centred(one))  # one sample: nothing to compare
    odd = (torch.arange(4), torch.randn(4, 2), "not batched")  # cannot be cut: skipped, not guessed
    check_per_sample_scores("ITLM", centred, odd, centred(_batch(n=4)))
    assert calls == [1, 4]


def test_a_sub_batch_of_the_wrong_shape_is_reported():
    def squeezes(b):
        return per_sample(b).reshape(-1, 1).squeeze() if len(b[0]) > 2 else per_sample(b)[:1]

    batch = _batch()
    with pytest.raises(ValueError, match=r"returned shape \(1,\) for a batch of 2 samples; it must return one score "
                                         r"per sample \(shape \(2,\)\)"):
        check_per_sample_scores("ITLM", squeezes, batch, squeezes(batch))


class _Losses:
    """A module whose ``per_sample_loss`` is one of a newcomer's mistakes (or right, with ``mode="ok"``)."""

    @staticmethod
    def make(mode: str):
        import pytorch_lightning as pl
        import torch.nn.functional as F

        from lit_robust import RobustMixin

        class Module(RobustMixin, pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))

            def per_sample_loss(self, batch):
                logits = self.net(batch[1])
                losses = F.cross_entropy(logits, batch[2], reduction="none")
                if mode == "mean":  # the batch mean broadcast to every sample: every kept subset has the same mean
                    losses = losses.mean().expand(len(losses))
                elif mode == "double":
                    losses = torch.cat([losses, losses])
                elif mode == "one_tuple":
                    return (losses,)
                elif mode == "integer":
                    return (logits.argmax(1) != batch[2]).long(), logits  # the 0/1 errors, not a loss
                return losses, logits

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Module()


@pytest.mark.parametrize(("mode", "message"), [
    ("mean", r"`BatchFilter`: `per_sample_loss` must score each sample on its own, but the first 16 samples of a batch "
             r"of 32 got different scores"),
    ("double", r"`BatchFilter`: `per_sample_loss` must return one loss per sample \(shape \(32,\)\), got \(64,\)"),
])
def test_batch_filter_checks_per_sample_loss_before_the_first_step(tmp_path, mode, message):
    """A cleanlab user's broadcast batch mean trained silently under BatchFilter (the filter filtered nothing); `[2B]`
    losses ended in a raw shape error from the mixin."""
    from lit_robust import BatchFilter
    from tests.conftest import BlobsData, tiny_trainer

    trainer = tiny_trainer(tmp_path, 1, [BatchFilter("prl", drop_ratio=0.3)])
    with pytest.raises(ValueError, match=message):
        trainer.fit(_Losses.make(mode), BlobsData())
    assert trainer.global_step == 0


@pytest.mark.parametrize(("mode", "message"), [
    ("one_tuple", r"`per_sample_loss` must return the per-sample losses or a pair `\(losses, outputs\)`, got a tuple "
                  r"of 1 element\(s\) \(a trailing comma\?\)"),
    ("integer", r"`per_sample_loss` must return floating-point losses .*got dtype torch.int64"),
])
@pytest.mark.parametrize("owner", [None, "ITLM", "BatchFilter"])
def test_a_loss_output_of_the_wrong_form_is_named(tmp_path, mode, message, owner):
    """An auditor's `return (losses,)` ended in "not enough values to unpack (expected 2, got 1)" inside the mixin,
    and integer losses in torch's "mean(): could not infer output dtype"."""
    from lit_robust import ITLM, BatchFilter
    from tests.conftest import BlobsData, tiny_trainer

    callbacks = {None: [], "ITLM": [ITLM(keep_ratio=0.7, round_epochs=[1], verbose=False, plot=False)],
                 "BatchFilter": [BatchFilter("prl", drop_ratio=0.3)]}[owner]
    with pytest.raises(ValueError, match=message):
        tiny_trainer(tmp_path, 1, callbacks).fit(_Losses.make(mode), BlobsData())


def test_the_first_batch_check_leaves_training_as_it_was(tmp_path):
    """In eval mode (dropout off) and with the random state untouched: the same weights as without the check, and
    the model back in training mode; `check_per_sample=False` turns it off."""
    import pytorch_lightning as pl

    from lit_robust import BatchFilter
    from tests.conftest import BlobsData, tiny_trainer

    weights = []
    for check in (True, False):
        pl.seed_everything(0, verbose=False)
        model = _Losses.make("ok")
        tiny_trainer(tmp_path, 2, [BatchFilter("prl", drop_ratio=0.3, check_per_sample=check)]).fit(model, BlobsData())
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 1, [BatchFilter("prl", drop_ratio=0.3, check_per_sample=False)]).fit(
        _Losses.make("mean"), BlobsData())  # trains: the user said so


def test_a_regressions_broadcast_output_is_named():
    """A newcomer's [B, 1] outputs against [B] targets: the squared error was a [B, B] table averaged per row, and
    the message spoke only of a batch statistic or a layer that mixes samples."""
    g = torch.Generator().manual_seed(0)
    batch = (torch.arange(40), torch.randn(40, 5, generator=g), torch.randn(40, generator=g))

    def broadcast(b):
        out = b[1].sum(1, keepdim=True)  # [B, 1]
        return ((out - b[2]) ** 2).mean(1)  # [B, 1] - [B] -> [B, B]

    with pytest.raises(ValueError, match=r"so does, for a regression, an output of shape \[B, 1\] against targets of "
                                         r"shape \[B\] \(here \(40,\)\): `\(output - target\) \*\* 2` broadcasts to "
                                         r"\[B, B\]; reshape one to the other's shape\. If the difference"):
        check_per_sample_scores("BatchFilter", broadcast, batch, broadcast(batch))
    labels = (batch[0], batch[1], torch.zeros(40, dtype=torch.long))  # class labels: no regression hint
    with pytest.raises(ValueError, match=r"a layer that mixes samples does this\. If the difference"):
        check_per_sample_scores("ITLM", lambda b: per_sample(b) - per_sample(b).mean(), labels,
                                per_sample(labels) - per_sample(labels).mean())


def test_a_namedtuple_batch_is_checked_field_by_field():
    """Reviewer: namedtuple batches (a Dataset returning `S(index, x, y)`) crashed the per-sample check with a
    TypeError from `type(batch)(generator)`; the head of the batch is a namedtuple again, and a mixing score is
    caught."""
    from collections import namedtuple

    S = namedtuple("S", "index x y")
    batch = S(torch.arange(8), torch.arange(8.0), torch.zeros(8))
    seen = []

    def per_sample(b):
        seen.append(type(b))
        return b.x * 2

    check_per_sample_scores("BatchFilter", per_sample, batch, per_sample(batch))
    assert seen == [S, S, S]
    with pytest.raises(ValueError, match="must score each sample on its own"):
        check_per_sample_scores("BatchFilter", lambda b: b.x - b.x.mean(), batch, batch.x - batch.x.mean())


def _sequence_first_batch(b=8, seed=0):
    """`(index, (ids [T, B], lengths), y)` padded sequence first, the longest text as long as the batch (T == B)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, b + 1, (b,), generator=g)
    lengths[0] = b
    ids = torch.randint(1, 20, (b, b), generator=g) * (torch.arange(b)[:, None] < lengths[None, :])
    return torch.arange(b), (ids, lengths), torch.randint(0, 3, (b,), generator=g)


def test_sequence_first_batches_whose_length_equals_the_batch_size_are_not_cut_along_time():
    """A sequence-first `[T, B]` padding with T == B was cut along time by the check, and the user's model (a packed
    GRU) failed inside torch ("start (232) + length (8) exceeds dimension size") before the first step; a model
    pooling over time returned B scores for the cut and was told it returns the wrong shape."""
    torch.manual_seed(0)
    emb, gru = torch.nn.Embedding(20, 4), torch.nn.GRU(4, 3)

    def packed_gru(b):  # the last hidden state of each text, read from the packed sequence
        ids, lengths = b[1]
        packed = torch.nn.utils.rnn.pack_padded_sequence(emb(ids), lengths, enforce_sorted=False)
        return gru(packed)[1][-1].sum(1)

    def pooled_over_time(b):
        return emb(b[1][0]).mean(0).sum(1)

    batch = _sequence_first_batch()
    for fn in (packed_gru, pooled_over_time):
        check_per_sample_scores("ITLM", fn, batch, fn(batch))


def test_a_batch_statistic_is_still_caught_when_the_batch_size_appears_twice():
    """The sequence-first allowance only skips cuts the model cannot score: a batch-first `[B, T]` input with T == B
    still has its batch-centred scores caught."""
    index, (ids, _), y = _sequence_first_batch()
    batch = (index, ids.T.float(), y)

    def centred(b):
        s = (b[1] ** 2).sum(1)
        return s - s.mean()

    with pytest.raises(ValueError, match=r"`ITLM`: `sample_scores` must score each sample on its own, but the first 4 "
                                         r"samples of a batch of 8"):
        check_per_sample_scores("ITLM", centred, batch, centred(batch))
