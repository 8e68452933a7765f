"""The per-sample report: the pure table against a slow reference, the files, ITLM's and BatchFilter's reports
against what they did, resume == uninterrupted, DDP (gloo, 2 ranks), bad input."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import threading
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lit_robust import (
    ITLM,
    BatchFilter,
    CoTeaching,
    IndexedDataset,
    RobustMixin,
    estimate_corruption,
    estimate_corruption_from_predictions,
    estimate_corruption_from_spread,
    load_report,
    unpack_batch,
)
from lit_robust.report import (
    NO_LABEL,
    EpochScores,
    RoundScores,
    build_report,
    labels_from_outputs,
    scalar_targets,
    starved_classes_note,
    suspicion_order,
    unseen_note,
    values_from_outputs,
    write_report,
)
from lit_robust.selection.rules import trim_mask
from tests.conftest import BlobsData, TinyModel, blobs, ddp_cpu_strategy, fit_ranks, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ pure: the table
def reference_report(index, scores, kept, names, first_dropped, scored, known, given, predicted, corrupted,
                     posterior):
    """One sample at a time: a dict per row, then sorted by the documented key."""
    rows = []
    for i in range(len(index)):
        s = float(scores[i][-1])
        group = 2 if not scored[i] else (0 if not math.isfinite(s) else 1)
        row = {"index": index[i]}
        for j, name in enumerate(names):
            has = scored[i] if j == len(names) - 1 else known[i][j]
            row[name] = float(torch.tensor(scores[i][j], dtype=torch.float32)) if has else None
        row["kept"] = kept[i] if scored[i] else None
        row["first_dropped_round"] = first_dropped[i] if first_dropped[i] >= 0 else None
        row["clean_posterior"] = posterior.get(index[i])
        row["given_label"] = given[i] if given[i] != NO_LABEL else None
        row["predicted_label"] = predicted[i] if predicted[i] != NO_LABEL else None
        row["corrupted"] = None if corrupted[i] < 0 else bool(corrupted[i])
        rows.append(((group, -s if group == 1 else 0.0, index[i]), row))
    rows.sort(key=lambda kr: kr[0])
    return [dict(rank=r + 1, **row) for r, (_, row) in enumerate(rows)]


def as_rows(table):
    cols = list(table)
    return [dict(zip(cols, vals)) for vals in zip(*(table[c] for c in cols))]


def same(a, b):
    """Row equality with NaN == NaN and float32 rounding of the written scores."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-6 * max(1.0, abs(y))):
                return False
        elif x != y:
            return False
    return True


def test_build_report_matches_a_slow_reference():
    g = torch.Generator().manual_seed(0)
    n = 120
    index = torch.randperm(500, generator=g)[:n]
    scores = torch.rand(n, 3, generator=g).mul(4).round().div(4)  # many exact ties
    scores[:, -1] = torch.cat([torch.rand(90, generator=g), 3 + torch.rand(30, generator=g)])  # two modes
    scores[::17, -1] = math.nan
    scores[5, -1], scores[6, -1], scores[7, 1] = math.inf, -math.inf, math.nan
    scores[10:14, -1] = 0.5  # a tie
    scored = torch.rand(n, generator=g) > 0.1
    known = torch.rand(n, 3, generator=g) > 0.2
    kept = torch.rand(n, generator=g) > 0.3
    first = torch.randint(-1, 4, (n,), generator=g)
    given = torch.randint(0, 10, (n,), generator=g)
    given[::7] = NO_LABEL
    predicted = torch.randint(0, 10, (n,), generator=g)
    corrupted = torch.randint(-1, 2, (n,), generator=g).to(torch.int8)
    names = ["score_round_0", "score_round_1", "score_round_2"]
    with pytest.warns(RuntimeWarning, match="10 of 110 scores are NaN or infinite"):  # warned, counted corrupted
        table = build_report(index, scores, kept, score_columns=names, first_dropped=first, scored=scored,
                             score_known=known, given_label=given, predicted_label=predicted, corrupted=corrupted)
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        est = estimate_corruption(scores[scored, -1].double())
    posterior = dict(zip(index[scored].tolist(), est.clean_posterior.tolist()))
    expected = reference_report(index.tolist(), scores.tolist(), kept.tolist(), names, first.tolist(),
                                scored.tolist(), known.tolist(), given.tolist(), predicted.tolist(),
                                corrupted.tolist(), posterior)
    got = as_rows(table)
    assert list(table) == ["rank", "index", *names, "kept", "first_dropped_round", "clean_posterior", "given_label",
                           "predicted_label", "corrupted"]
    assert len(got) == n and all(same(a, b) for a, b in zip(got, expected)), next(
        (a, b) for a, b in zip(got, expected) if not same(a, b))
    assert est.two_components and 0.1 < est.rate < 0.45  # the posterior column means something here
    # the rows with a NaN/inf ranking score lead, by index; the unscored close the table
    lead = [r for r in got if r["score_round_2"] is not None and not math.isfinite(r["score_round_2"])]
    assert got[:len(lead)] == lead and [r["index"] for r in lead] == sorted(r["index"] for r in lead)
    assert all(r["score_round_2"] is None and r["kept"] is None for r in got[-int((~scored).sum()):])


def test_unlabelled_rows_rank_after_the_labelled_with_no_posterior():
    """A classifier's samples labelled -100 (``ignore_index``, loss 0) or -1 are no class: they rank after every
    labelled row (by index), their ``clean_posterior`` is empty, and the labelled rows' posteriors are the label
    estimator's without them. Before, the loss of 0 ranked them as the cleanest and the disagreement estimate gave
    them a posterior of 0 -- certainly corrupted."""
    g = torch.Generator().manual_seed(0)
    n = 300
    labels = torch.randint(0, 10, (n,), generator=g)
    predicted = labels.clone()
    predicted[:60] = (labels[:60] + 1) % 10
    scores = torch.rand(n, generator=g) + 2.0 * (predicted != labels)
    given = labels.clone()
    given[250:280], given[280:] = -100, -1
    scores[250:] = 0.0
    scored = torch.ones(n, dtype=torch.bool)
    scored[290:] = False
    table = build_report(torch.arange(n), scores, torch.ones(n, dtype=torch.bool), score_columns=["score_round_0"],
                         scored=scored, given_label=given, predicted_label=predicted, estimator="disagreement")
    rows = as_rows(table)
    assert [r["index"] for r in rows[250:290]] == list(range(250, 290))  # unlabelled and scored: after the labelled
    assert [r["index"] for r in rows[290:]] == list(range(290, 300))  # unscored: last
    assert all(r["clean_posterior"] is None for r in rows[250:])
    alone = estimate_corruption_from_predictions(scores[:250], labels[:250], predicted[:250])
    assert [r["clean_posterior"] for r in rows[:250]] == [float(alone.clean_posterior[r["index"]]) for r in rows[:250]]
    assert sorted(r["index"] for r in rows[:250]) == list(range(250))


def test_suspicion_order_and_labels():
    s = torch.tensor([0.5, 0.9, math.nan, 0.5, 0.1])
    assert suspicion_order(s, torch.tensor([3, 1, 7, 2, 0])).tolist() == [2, 1, 3, 0, 4]
    assert suspicion_order(s, torch.tensor([3, 1, 7, 2, 0]), torch.tensor([1, 1, 1, 0, 1]).bool()).tolist() == [
        2, 1, 0, 4, 3]
    y = torch.tensor([1, 0])
    assert labels_from_outputs(torch.tensor([[0.0, 2.0], [1.0, -1.0]]), y).tolist() == [1, 0]
    for outputs, target in [(torch.zeros(2, 1), y), (torch.zeros(2), y), (torch.zeros(2, 3), torch.zeros(2)),
                            (torch.zeros(2, 3), torch.zeros(2, 3)), (None, y), (torch.zeros(3, 2), y)]:
        assert labels_from_outputs(outputs, target) is None


def test_rows_the_file_shows_tied_are_in_index_order_for_float64_means(tmp_path):
    # Co-teaching's and RCA's score, (s1 + s2) / 2, is a float64 mean, ranked as such and written as float32: rows 1 and
    # 3 below differ by 2**-30, which the file rounds away, and came out as index 3 before index 1 under "ties by index"
    scores = torch.tensor([0.25, 1.0, 0.5, 1.0 + 2.0**-30, 2.0], dtype=torch.float64)
    acc = EpochScores(5)
    acc.start_epoch(0)
    acc.add(torch.tensor([3, 1, 4, 0, 2]), scores[[3, 1, 4, 0, 2]], torch.zeros(5, dtype=torch.bool))
    acc.flush(lambda t: t, lambda t: t)
    report = load_report(write_report(acc.table(), tmp_path / "r.csv"), as_frame=False)
    assert [(r["index"], r["score_last_epoch"]) for r in report] == [(4, 2.0), (1, 1.0), (3, 1.0), (2, 0.5),
                                                                     (0, 0.25)]
    # the same from build_report with a score of one's own (cleanlab's -log p in float64), and for any order given
    table = build_report(torch.tensor([3, 1, 0]), torch.tensor([1.0 + 2.0**-30, 1.0, 1.0 - 2.0**-30],
                                                               dtype=torch.float64),
                         torch.ones(3, dtype=torch.bool), score_columns=["score"], estimator=None)
    assert table["index"] == [0, 1, 3] and table["score"] == [1.0, 1.0, 1.0]


def test_bad_table_input():
    with pytest.raises(ValueError, match=r"`scores` must be \[n, R\] with n = 3 samples and R = "):
        build_report(torch.arange(3), torch.zeros(3, 2), torch.ones(3).bool(), score_columns=["a"])
    with pytest.raises(ValueError, match=r"`kept` must have shape \(3,\), got \(2,\)"):
        build_report(torch.arange(3), torch.zeros(3), torch.ones(2).bool(), score_columns=["a"])


# ------------------------------------------------------------------------------------------------ files
def small_table():
    return build_report(torch.tensor([4, 2, 9]), torch.tensor([0.1, math.nan, 2.5]), torch.tensor([True, False, True]),
                        score_columns=["score_last_epoch"], first_dropped=torch.tensor([-1, 3, 0]),
                        first_dropped_column="first_dropped_epoch", scored=torch.tensor([True, True, False]),
                        given_label=torch.tensor([1, NO_LABEL, 0]), predicted_label=None,
                        corrupted=torch.tensor([0, 1, -1], dtype=torch.int8), estimator=None)


EXPECTED_ROWS = [
    {"rank": 1, "index": 2, "score_last_epoch": math.nan, "kept": False, "first_dropped_epoch": 3,
     "clean_posterior": None, "given_label": None, "predicted_label": None, "corrupted": True},
    {"rank": 2, "index": 4, "score_last_epoch": 0.1, "kept": True, "first_dropped_epoch": None,
     "clean_posterior": None, "given_label": 1, "predicted_label": None, "corrupted": False},
    {"rank": 3, "index": 9, "score_last_epoch": None, "kept": None, "first_dropped_epoch": 0,
     "clean_posterior": None, "given_label": 0, "predicted_label": None, "corrupted": None},
]


def test_csv_round_trip_without_pandas(tmp_path, monkeypatch):
    path = write_report(small_table(), tmp_path / "r.csv")
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[1] == "1,2,nan,False,3,,,,True"
    assert lines[2] == "2,4,0.1,True,,,1,,False"  # float32 0.1 written as 0.1, not 0.10000000149011612
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    rows = load_report(path)
    assert all(same(a, b) for a, b in zip(rows, EXPECTED_ROWS)) and len(rows) == 3
    with pytest.raises(ImportError, match="`as_frame=True` needs pandas"):
        load_report(path, as_frame=True)


def test_csv_and_parquet_open_with_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    table = small_table()
    plain = pd.read_csv(write_report(table, tmp_path / "r.csv"))  # what a user does without lit_robust
    assert plain["index"].tolist() == [2, 4, 9] and plain["kept"].iloc[0] == False  # noqa: E712
    frame = load_report(tmp_path / "r.csv")
    assert str(frame["given_label"].dtype) == "Int64" and str(frame["kept"].dtype) == "boolean"
    assert frame["given_label"].isna().tolist() == [True, False, False]
    assert as_list(frame) == as_list(pd.DataFrame(EXPECTED_ROWS))
    pytest.importorskip("pyarrow")
    pq = load_report(write_report(table, tmp_path / "r.parquet"))
    assert as_list(pq) == as_list(frame) and list(pq.columns) == list(frame.columns)
    assert same(load_report(tmp_path / "r.parquet", as_frame=False)[1], EXPECTED_ROWS[1])


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_report_is_readable_as_any_file_written_there(tmp_path, suffix):
    """A newcomer's reports (and predictions.csv) were owner-only (0600, mkstemp's mode) beside 0644 files: a teammate
    on a shared box could not read the list of bad samples. The file gets 0666 less the umask, as `open` would."""
    import os

    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    old = os.umask(0o022)
    try:
        path = write_report(small_table(), tmp_path / f"r.{suffix}")
        os.umask(0o002)
        group = write_report(small_table(), tmp_path / f"g.{suffix}")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644 and os.stat(group).st_mode & 0o777 == 0o664


def as_list(frame):
    """A DataFrame's cells, with every missing value (None, NaN, pandas.NA) as None."""
    import pandas as pd

    return [[None if pd.isna(v) else v for v in row] for row in frame.astype(object).values.tolist()]


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match=r"`path` must end in one of \['.csv', '.parquet', '.pq'\]"):
        write_report(small_table(), tmp_path / "r.xlsx")
    with pytest.raises(FileNotFoundError, match="`path` must be an existing report file"):
        load_report(tmp_path / "missing.csv")
    # a missing run folder (no suffix): that it does not exist, not the suffix rule
    with pytest.raises(FileNotFoundError, match=r"`path` must be an existing report file or the folder holding it, "
                                                r"got '.*nonexist', which does not exist\."):
        load_report(tmp_path / "lightning_logs" / "nonexist")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"`path` must end in one of \['.csv', '.parquet', '.pq'\]"):
        load_report(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="`as_frame` must be True, False or None, got 'yes'"):
        load_report(tmp_path / "missing.csv", as_frame="yes")
    # the logger's root: its runs' folders hold the reports (a reports newcomer's first guess was told "none")
    logs = tmp_path / "lightning_logs"
    for version in (0, 1):
        write_report(small_table(), logs / f"version_{version}" / "itlm_report.csv")
    os.utime(logs / "version_0" / "itlm_report.csv", (1, 1))
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"got none; the folders in it hold 2 (the newest: 'version_1{os.sep}itlm_report.csv'): pass one of them, "
            f"or its run's folder in '{logs}'.")):
        load_report(logs)
    assert len(load_report(logs / "version_1", as_frame=False)) == len(load_report(logs / "version_0", as_frame=False))
    # a folder named like a report is none (a reviewer's was offered, then refused as "not an existing report file")
    (logs / "version_1" / "filter_spl_report.csv").mkdir()
    assert len(load_report(logs / "version_1", as_frame=False)) == len(load_report(logs / "version_0", as_frame=False))
    # the Trainer's `default_root_dir`, two levels up (a report newcomer's `--trainer.default_root_dir cli_wine`)
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"got none; the folders in it hold 2 (the newest: '{os.path.join('lightning_logs', 'version_1', 'itlm_report.csv')}"
            f"'): pass one of them, or its run's folder in '{tmp_path}'.")):
        load_report(tmp_path)


# ------------------------------------------------------------------------------------------------ pure: accumulators
def thread_reducers(world: int):
    """All-reduce among `world` threads (one per simulated rank)."""
    barrier, slots = threading.Barrier(world), [None] * world

    def reduce(rank, op, t):
        slots[rank] = t.clone()
        barrier.wait()
        out = functools.reduce(op, slots)
        barrier.wait()
        return out

    return [(functools.partial(reduce, r, torch.add), functools.partial(reduce, r, torch.maximum))
            for r in range(world)]


def flush_one_and_ranks(one: EpochScores, ranks: list[EpochScores]) -> None:
    """Flush ``one`` (a single process) and ``ranks`` (simulated ranks, one thread each, reducing together)."""
    one.flush(lambda t: t.clone(), lambda t: t.clone())
    reducers = thread_reducers(len(ranks))
    threads = [threading.Thread(target=r.flush, args=reducers[i]) for i, r in enumerate(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_epoch_scores_over_ranks_equal_one_process():
    g = torch.Generator().manual_seed(1)
    n, epochs = 50, 3
    given = torch.randint(0, 5, (n,), generator=g)
    truth = torch.rand(n, generator=g) < 0.3
    quarter = torch.randint(0, 8, (n,), generator=g).float() / 4  # sums in any order are exact
    one = EpochScores(n)
    ranks = [EpochScores(n) for _ in range(2)]
    for epoch in range(epochs):
        for s in (one, *ranks):
            s.start_epoch(epoch)
        perm = torch.randperm(n, generator=g)
        perm = torch.cat([perm, perm[:2]])  # a padding sampler repeats two samples
        for b, idx in enumerate(perm.split(8)):
            scores = quarter[idx] + epoch
            dropped = torch.rand(len(idx), generator=g) < 0.25
            pred = (given[idx] + epoch) % 5
            args = (idx, scores if b % 3 else None, dropped, pred, given[idx], truth[idx])
            one.add(*args)
            ranks[b % 2].add(*args)
        flush_one_and_ranks(one, ranks)
        for s in (one, *ranks):
            s.end_epoch(epoch)
    # padding repeats a sample within the epoch: its "last" prediction is the max over the ranks, so compare it
    # only where the sample was seen once
    t1, t2, t3 = one.table(), ranks[0].table(), ranks[1].table()
    assert t2 == t3
    for k in t1:
        if k != "predicted_label":
            assert t1[k] == t2[k] or all(same({"v": a}, {"v": b}) for a, b in zip(t1[k], t2[k])), k
    # against the obvious per-sample computation of the last epoch
    rows = {r["index"]: r for r in as_rows(t1)}
    assert len(rows) == n and all(r["given_label"] == int(given[i]) for i, r in rows.items())
    assert all(r["corrupted"] == bool(truth[i]) for i, r in rows.items())


def test_epoch_scores_reject_an_index_outside_the_training_set():
    s = EpochScores(4)
    s.start_epoch(0)
    s.add(torch.tensor([1, 7]), torch.tensor([0.5, 0.5]), torch.tensor([False, True]))
    with pytest.raises(ValueError, match=r"dataset indices in \[0, 4\).*1 training samples had an index outside"):
        s.flush(lambda t: t.clone(), lambda t: t.clone())


def test_round_scores_first_dropped_and_kept():
    r = RoundScores(5, 3)
    r.set_selection(1, torch.tensor([0, 1, 2]))
    r.set_selection(2, torch.tensor([0, 3]))  # 3 comes back, 1 and 2 leave
    assert r.first_dropped.tolist() == [-1, 2, 2, 1, 1] and r.kept().tolist() == [True, False, False, True, False]
    again = RoundScores.from_state_dict(r.state_dict())
    assert torch.equal(again.first_dropped, r.first_dropped) and torch.equal(again.selection, r.selection)


# ------------------------------------------------------------------------------------------------ ITLM
def fit(tmp_path, callbacks, max_epochs, model=None, data=None, seed=0, **kw):
    pl.seed_everything(seed, verbose=False)
    model, data = model or TinyModel(), data or BlobsData(with_val=kw.pop("with_val", False))
    ckpt_path = kw.pop("ckpt_path", None)
    trainer = tiny_trainer(tmp_path, max_epochs, callbacks, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, data, trainer


class StopAfterEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


@pytest.mark.parametrize("reinit", [True, False])
def test_itlm_report_of_a_fit_stopped_at_a_round_end_has_no_column_of_a_round_that_never_trained(tmp_path, reinit):
    # a power user's `trainer.should_stop` at round 0's end: the report had `score_round_1`, round 0's scores again
    itlm = ITLM(keep_ratio=0.7, round_epochs=[2, 2, 1], verbose=False, plot=True, plot_dir=str(tmp_path),
                report=True, report_dir=str(tmp_path / "rep"), reinit=reinit)
    model, data, _ = fit(tmp_path, [itlm, StopAfterEpoch(1)], 5)
    assert len(itlm.history) == 1
    rows = load_report(itlm.report_path, as_frame=False)
    assert [k for k in rows[0] if k.startswith("score_round_")] == ["score_round_0"]
    round0 = itlm.score_history[0]["scores"]
    assert [r["index"] for r in rows] == sorted(range(240), key=lambda i: (-float(round0[i]), i))
    # one round further, stopped inside it: that round's model trained, so its column is there
    model, data, _ = fit(tmp_path, [itlm, StopAfterEpoch(2)], 5)
    rows = load_report(itlm.report_path, as_frame=False)
    assert [k for k in rows[0] if k.startswith("score_round_")] == ["score_round_0", "score_round_1"]
    assert any(r["score_round_0"] != r["score_round_1"] for r in rows)


def test_itlm_report_holds_what_the_rounds_did(tmp_path):
    itlm = ITLM(keep_ratio=0.7, round_epochs=[2, 1, 1], verbose=False, plot=True, plot_dir=str(tmp_path),
                report=True, report_dir=str(tmp_path / "rep"))
    model, data, _ = fit(tmp_path, [itlm], 4)
    assert itlm.report_path == str(tmp_path / "rep" / "itlm_report.csv")
    rows = load_report(itlm.report_path, as_frame=False)
    n = 240
    assert sorted(r["index"] for r in rows) == list(range(n)) and [r["rank"] for r in rows] == list(range(1, n + 1))
    # scores of rounds 0 and 1: the scoring passes ITLM selected from (kept for its plot, dense)
    passes = [h["scores"] for h in itlm.score_history]
    by_index = {r["index"]: r for r in rows}
    for r in range(2):
        assert all(by_index[i][f"score_round_{r}"] == pytest.approx(float(passes[r][i]), rel=1e-6) for i in range(n))
    # the last column: the final model's loss, its argmax the prediction
    model.eval()
    with torch.no_grad():
        logits = model(data.ds.dataset.tensors[0])
        final = F.cross_entropy(logits, data.ds.targets, reduction="none")
    assert all(by_index[i]["score_round_2"] == pytest.approx(float(final[i]), rel=1e-5, abs=1e-6) for i in range(n))
    assert [r["index"] for r in rows] == sorted(range(n), key=lambda i: (-float(final[i]), i)) or all(
        rows[j]["score_round_2"] >= rows[j + 1]["score_round_2"] for j in range(n - 1))
    assert all(by_index[i]["predicted_label"] == int(logits[i].argmax()) for i in range(n))
    assert all(by_index[i]["given_label"] == int(data.ds.targets[i]) for i in range(n))
    assert all(by_index[i]["corrupted"] == bool(data.ds.corrupted[i]) for i in range(n))
    assert "given_target" not in rows[0] and "predicted_target" not in rows[0]  # class labels: no regression columns
    # kept: the last selection; first dropped: the first selection (trim of a pass) that left the sample out
    selections = [trim_mask(p, 0.7) for p in passes]
    assert all(by_index[i]["kept"] == bool(selections[-1][i]) for i in range(n))
    for i in range(n):
        out = [r + 1 for r, sel in enumerate(selections) if not sel[i]]
        assert by_index[i]["first_dropped_round"] == (out[0] if out else None)
    # ITLM's default estimator "floor_or_interior": its posterior, on the final scores, predictions and their
    # probabilities; it sums to its count
    assert itlm.estimator == "floor_or_interior"
    est = estimate_corruption_from_spread(final.double(), data.ds.targets, logits.argmax(1),
                                          torch.softmax(logits, 1).max(1).values)
    assert all(by_index[i]["clean_posterior"] == pytest.approx(float(est.clean_posterior[i]), abs=1e-9)
               for i in range(n))
    assert sum(1.0 - r["clean_posterior"] for r in rows) == pytest.approx(est.rate * n, abs=1e-6)
    top = rows[:72]  # as many as are corrupted: the report's head is what a user would look at
    assert sum(r["corrupted"] for r in top) / 72 > 0.9


@pytest.mark.parametrize("with_val", [False, True], ids=["ckpt-at-epoch-end", "ckpt-at-validation-end"])
def test_resumed_fit_writes_the_same_report(tmp_path, with_val):
    def run(root, ckpt_path=None):
        cbs = [ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], verbose=False, plot=False, report_dir=str(root)),
               BatchFilter("spl", drop_ratio=0.2, warmup_epochs=1, report_dir=str(root), restart_on_reinit=False),
               ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]
        fit(root, cbs, 3, enable_checkpointing=True, with_val=with_val, ckpt_path=ckpt_path,
            seed=1 if ckpt_path is None else 99)
        return [(root / name).read_text() for name in ("itlm_report.csv", "filter_spl_report.csv")]

    full = run(tmp_path / "a")
    resumed = run(tmp_path / "b", ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    assert resumed == full
    # from the last epoch's checkpoint: a fit stopped after it, while the reports were written at its end (a
    # reproducibility newcomer's SIGKILL in ITLM's final scoring pass), resumed, trains nothing: Lightning skips the
    # fit loop and its `on_train_end`, and the resumed fit wrote no report at all
    finished = run(tmp_path / "c", ckpt_path=tmp_path / "a" / "epoch=2.ckpt")
    assert finished == full
    first_dropped = [r["first_dropped_epoch"] for r in load_report(tmp_path / "a" / "filter_spl_report.csv",
                                                                    as_frame=False)]
    assert 1 in first_dropped and 2 in first_dropped  # drops from before the checkpoint came through it


def test_a_resume_of_a_finished_fit_says_it_trained_nothing(tmp_path, monkeypatch):
    """A resume newcomer's Python resume of a fit that had run to `max_epochs` printed Lightning's "`max_epochs`
    reached" and ITLM's round table as if a fit had run; nothing said that no batch was trained."""
    said: list[str] = []
    monkeypatch.setattr("lit_robust._lightning.rank_zero_info", said.append)

    def cbs(root):
        return [ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], verbose=False, plot=False, report_dir=str(root)),
                BatchFilter("spl", drop_ratio=0.2, warmup_epochs=1, report_dir=str(root), restart_on_reinit=False),
                ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]

    fit(tmp_path / "a", cbs(tmp_path / "a"), 3, enable_checkpointing=True)
    assert said == []
    fit(tmp_path / "b", cbs(tmp_path / "b"), 3, enable_checkpointing=True, ckpt_path=tmp_path / "a" / "epoch=1.ckpt")
    assert said == []  # it trained the last epoch
    fit(tmp_path / "c", cbs(tmp_path / "c"), 3, enable_checkpointing=True, ckpt_path=tmp_path / "a" / "epoch=2.ckpt")
    path = tmp_path / "a" / "epoch=2.ckpt"
    head = (f"this fit resumed {path}, whose fit had run every epoch to `max_epochs`=3, so it trained no batch: it "
            "finished that fit's end and wrote the report.")
    assert said == [f"ITLM: {head} A longer fit is a new one (no `ckpt_path`): the rounds fix `max_epochs`.",
                    f"BatchFilter: {head} Raise `max_epochs` to train on."], said


def test_a_report_that_cannot_be_written_at_the_end_is_a_warning_and_a_resume_writes_it(tmp_path):
    """A report newcomer's report file was blocked by a folder of its name: after every epoch had run, ITLM and
    BatchFilter ended the fit in a raw `IsADirectoryError`, and ITLM advised `trainer.fit` again, which trains nothing.
    Now each warns, naming the file and the OS error, and the fit ends; a resume from its last checkpoint writes the
    same reports."""
    def cbs(root):
        return [ITLM(keep_ratio=0.6, round_epochs=[1, 1, 1], verbose=False, plot=False, report_dir=str(root)),
                BatchFilter("spl", drop_ratio=0.2, warmup_epochs=1, report_dir=str(root), restart_on_reinit=False),
                ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]

    names = ("itlm_report.csv", "filter_spl_report.csv")
    fit(tmp_path / "a", cbs(tmp_path / "a"), 3, enable_checkpointing=True)
    full = [(tmp_path / "a" / name).read_text() for name in names]
    blocked = tmp_path / "b"

    class Block(pl.Callback):  # the folders appear during the fit: one there at setup is refused (test below)
        def on_train_epoch_end(self, trainer, pl_module):
            for name in names:
                (blocked / name).mkdir(parents=True, exist_ok=True)

    pl.seed_everything(0, verbose=False)
    callbacks = cbs(blocked)
    trainer = tiny_trainer(blocked, 3, [*callbacks, Block()], enable_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyModel(), BlobsData())
    said = [str(w.message) for w in caught if "could not be written" in str(w.message)]
    assert trainer.current_epoch == 3 and [s.split(":")[0] for s in said] == ["ITLM", "BatchFilter"], said
    assert said[0].startswith(f"ITLM: the per-sample report could not be written to {blocked / names[0]} "
                              "(IsADirectoryError: "), said[0]
    assert said[0].endswith("The fit itself ran to its end. To write the report, free that path (or pass another "
                            "`report_dir`) and resume from the fit's last checkpoint with a new Trainer "
                            "(`ckpt_path=...`): it trains nothing more and writes the report."), said[0]
    assert callbacks[0].report_path is None and callbacks[1].report_path is None
    assert not any("stopped" in str(w.message) for w in caught)  # no advice for a fit stopped early
    for name in names:
        (blocked / name).rmdir()
    fit(blocked, cbs(blocked), 3, enable_checkpointing=True, ckpt_path=blocked / "epoch=2.ckpt", seed=99)
    assert [(blocked / name).read_text() for name in names] == full


def test_a_folder_where_the_report_goes_is_refused_before_training(tmp_path):
    """A report newcomer's `report_dir` held a folder named `itlm_report.csv`: the fit was told that it held "a
    per-sample report from an earlier fit", trained to its end, and lost its report (with checkpointing off, the
    advised resume had no checkpoint). It is now refused at setup, as an unwritable `report_dir` is."""
    for cb, name in ((ITLM(keep_ratio=0.6, round_epochs=[1, 1], verbose=False, plot=False, report_dir=str(tmp_path)),
                      "itlm_report.csv"),
                     (BatchFilter("spl", drop_ratio=0.2, warmup_epochs=1, report_dir=str(tmp_path)),
                      "filter_spl_report.csv")):
        (tmp_path / name).mkdir()
        trainer = tiny_trainer(tmp_path, 2, [cb])
        with pytest.raises(ValueError, match=re.escape(
                f"`report_dir` must be a folder the report can be written into, got {str(tmp_path)!r} (the "
                f"report's own file {str(tmp_path / name)!r} is a folder there).")):
            trainer.fit(TinyModel(), BlobsData())
        assert trainer.global_step == 0


# ------------------------------------------------------------------------------------------------ BatchFilter
def test_batch_filter_report_is_the_last_epochs_mean_score_and_drops(tmp_path):
    bf = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1, report=True, report_dir=str(tmp_path))
    seen = []  # (epoch, index, score, dropped, prediction) of every recorded batch
    original = bf.keep_mask

    def spy(losses, batch, outputs, module):
        mask = original(losses, batch, outputs, module)
        ib = unpack_batch(batch)
        scores = bf.scores(losses, batch, outputs, module)
        for i, s, m, p in zip(ib.index.tolist(), scores.tolist(), mask.tolist(), outputs.argmax(1).tolist()):
            seen.append((bf._trainer.current_epoch, i, s, not m, p))
        return mask

    bf.keep_mask = spy
    fit(tmp_path, [bf], 3)
    rows = {r["index"]: r for r in load_report(bf.report_path, as_frame=False)}
    assert bf.report_path == str(tmp_path / "filter_prl_report.csv") and len(rows) == 240
    for i, row in rows.items():
        mine = [t for t in seen if t[1] == i]
        last = [t for t in mine if t[0] == 2]
        assert row["score_last_epoch"] == pytest.approx(sum(t[2] for t in last) / len(last), rel=1e-6)
        assert row["kept"] == (not any(t[3] for t in last))
        dropped_in = [t[0] for t in mine if t[3]]
        assert row["first_dropped_epoch"] == (min(dropped_in) if dropped_in else None)
        assert row["predicted_label"] == last[-1][4]
    assert sum(not r["kept"] for r in rows.values()) == bf.history[-1].dropped


def test_a_filter_report_with_rows_the_last_epoch_did_not_see_says_so(tmp_path):
    """A power user's `limit_train_batches=0.8` left 1,200 of 6,000 rows without a score, `kept` or prediction, and
    per-class figures over the report covered the seen rows only, without a word. 240 samples / 32: 8 batches, 6 run."""
    bf = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1, report=True, report_dir=str(tmp_path))
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(tmp_path, 2, [bf], limit_train_batches=6)
    with pytest.warns(UserWarning, match=r"BatchFilter: the per-sample report .*filter_prl_report.csv: 48 of its 240 "
                                         r"rows have no score: the last epoch did not see those samples "
                                         r"\(`limit_train_batches`.*report.kept.notna\(\)"):
        trainer.fit(TinyModel(), BlobsData())
    rows = load_report(bf.report_path, as_frame=False)
    assert sum(r["score_last_epoch"] is None for r in rows) == 48
    bf = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1, report=True, report_dir=str(tmp_path / "all"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [bf]).fit(TinyModel(), BlobsData())
    assert not [w for w in record if "have no score" in str(w.message)]


def _epoch_of_scores(acc: EpochScores, epoch: int, index: list[int], score: float, cut=None) -> None:
    acc.start_epoch(epoch)
    idx = torch.tensor(index)
    acc.add(idx, torch.full((len(index),), score) + idx, idx % 2 == epoch % 2, predicted=idx % 3)
    acc.flush(lambda t: t, lambda t: t)
    acc.end_epoch(epoch, cut)


def test_the_filters_report_note_says_both_readings_of_a_class_dropped_at_many_times_the_overall_rate():
    """A reviewer: the filter "starves" a class it kept 24 of 30 of, "against 99% overall" (the drop-rate rule spoke
    in the kept-share words); labels flipped into a class put its drops there too."""
    note = starved_classes_note({"kept": [True] * 200 + [False] * 6 + [True] * 24 + [True] * 270,
                                 "given_label": [0] * 200 + [1] * 30 + [2] * 270})
    assert note == ("its last epoch dropped 6 of the 30 labelled 1 (20%, 17 times the overall 1.2%): either labels "
                    "were flipped into that class (then these are the rows to drop), or its right labels sit on hard "
                    "or rare samples that score high (then the trim starves it: a smaller `drop_ratio`, or ITLM with "
                    "`per_class=True`, keeps more of it). The per-sample report's dropped rows with that given label "
                    "tell which."), note
    few = starved_classes_note({"kept": [True] * 200 + [False] * 25 + [True] * 5, "given_label": [0] * 200 + [1] * 30})
    assert few.startswith("its last epoch kept 5 of the 30 labelled 1, against 89% overall: a rare, hard"), few


def test_a_filter_report_whose_last_epoch_a_stop_cut_shows_the_whole_epoch_before():
    """A power user's `max_steps` stopped inside an epoch and 880 of 1,200 report rows were empty: the report shows
    the last whole epoch instead, as a fit stopped at its end would (a checkpoint carries it); a stop inside the first
    epoch still shows the part it trained."""
    whole, cut = EpochScores(6), EpochScores(6)
    for acc in (whole, cut):
        _epoch_of_scores(acc, 0, [0, 1, 2, 3, 4, 5], 10.0)
        _epoch_of_scores(acc, 1, [5, 4, 3, 2, 1, 0], 20.0)
    expected = whole.table()
    _epoch_of_scores(cut, 2, [0, 1], 30.0, cut=(1, 3))  # two of six samples seen, and sample 0 first dropped
    assert cut.shows_last_whole and cut.shown_epoch == 1 and cut.epoch == 2
    assert cut.table() == expected and expected["score_last_epoch"][0] == 25.0  # sample 5: 20 + 5 in epoch 1
    assert EpochScores.from_state_dict(cut.state_dict()).table() == expected
    # a whole last epoch is what it shows; a cut first epoch, its part
    _epoch_of_scores(cut, 3, [0, 1, 2, 3, 4, 5], 40.0)
    assert not cut.shows_last_whole and cut.shown_epoch == 3 and cut.table()["score_last_epoch"][0] == 45.0
    first = EpochScores(6)
    _epoch_of_scores(first, 0, [0, 1], 10.0, cut=(1, 3))
    assert first.shown_epoch == 0 and sum(s is None for s in first.table()["kept"]) == 4
    # a checkpoint from before the whole epoch was kept reads as the last epoch's
    old = {k: v for k, v in cut.state_dict().items() if k not in ("cut", "whole", "last_whole", "last_whole_epoch")}
    assert EpochScores.from_state_dict(old).shown_epoch == 3


def test_a_filter_fit_stopped_inside_an_epoch_writes_the_report_of_one_stopped_at_its_start(tmp_path, monkeypatch):
    """240 samples / 32: 8 batches an epoch. `max_steps=19` stops after 3 batches of epoch 2; its report is the one
    a fit stopped by `max_steps=16` at epoch 1's end writes, byte for byte, and it says so."""
    files, said = [], []
    monkeypatch.setattr("lit_robust.callbacks._report_file.rank_zero_info", said.append)
    for steps in (16, 19):
        bf = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=1, report=True, report_dir=str(tmp_path / str(steps)))
        pl.seed_everything(0, verbose=False)
        trainer = tiny_trainer(tmp_path, 3, [bf], max_steps=steps)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(TinyModel(), BlobsData())
        assert not [w for w in caught if "have no score" in str(w.message)]
        files.append(open(bf.report_path).read())
        assert bf._report.state.shown_epoch == 1 and (bf._report.state.epoch, bf._report.state.cut) == (
            (1, None) if steps == 16 else (2, (3, 8)))
    assert files[0] == files[1]
    assert [t for t in said if "the last whole one" in t] == [
        "BatchFilter: a stop ended epoch 2 after 3 of its 8 batches, so the report shows epoch 1, the last whole one "
        "(its scores, kept and predictions; `first_dropped_epoch` up to it)."]
    assert sum(1 for line in files[1].splitlines()[1:] if line.split(",")[3] == "False") > 0  # some dropped in it


def test_a_filter_report_of_a_module_that_never_reduces_says_why_it_is_empty(tmp_path):
    """A power user's `training_step` of their own never called `reduce_loss`: the report's 6,000 rows were all
    empty, and the line that names the missing samples should not blame `limit_train_batches`."""

    class MeanNotReduced(TinyModel):
        def training_step(self, batch, batch_idx):
            return self.per_sample_loss(batch)[0].mean()

    bf = BatchFilter("prl", drop_ratio=0.3, report=True, report_dir=str(tmp_path))
    with pytest.warns(UserWarning, match=r"no row has a score: the filter scored no sample in the last epoch. Does "
                                         r"the module's `training_step` pass its per-sample losses to "
                                         r"`self.reduce_loss\(losses, batch, outputs\)`\?"):
        tiny_trainer(tmp_path, 1, [bf]).fit(MeanNotReduced(), BlobsData())


def test_warmup_epoch_still_gets_scores_and_prl_g_scores_its_last_epoch(tmp_path):
    bf = BatchFilter("prl_g", drop_ratio=0.0, report_dir=str(tmp_path))  # drops nothing, ever
    fit(tmp_path, [bf], 2)
    rows = load_report(bf.report_path, as_frame=False)
    assert all(r["kept"] and r["first_dropped_epoch"] is None for r in rows)
    assert all(r["score_last_epoch"] > 0 for r in rows)  # the per-sample gradient norms of the last epoch


# ------------------------------------------------------------------------------------------------ switches, errors
def test_report_is_off_by_default_and_on_with_a_folder_or_parquet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    off = ITLM(0.7, [1, 1], verbose=False, plot=False)
    fit(tmp_path, [off], 2)
    assert off.report is None and off.report_path is None and not list(tmp_path.rglob("*report*"))
    pytest.importorskip("pyarrow")
    on = BatchFilter("spl", 0.2, report_dir=str(tmp_path / "pq"), report_format="parquet")
    fit(tmp_path, [on], 1)
    assert on.report_path.endswith("filter_spl_report.parquet") and len(load_report(on.report_path)) == 240


def test_report_without_report_dir_goes_into_the_loggers_folder(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    itlm = ITLM(0.7, [1], verbose=False, plot=False, report=True)
    fit(tmp_path, [itlm], 1, logger=CSVLogger(tmp_path))
    assert itlm.report_path == str(tmp_path / "lightning_logs" / "version_0" / "itlm_report.csv")


@pytest.mark.parametrize("which", ["report_dir", "log_dir"])
def test_unwritable_folder_is_an_error_before_training(tmp_path, which):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    model = TinyModel()
    if which == "report_dir":
        cb = BatchFilter("spl", 0.2, report_dir=str(blocker / "reports"))
        match = rf"`report_dir` must be a folder the report can be written into, got '{blocker}/reports' \(\w+Error"
        kw = {}
    else:
        cb = ITLM(0.7, [1], verbose=False, plot=False, report=True)
        match = rf"logger's folder \(`trainer.log_dir`\).*'{blocker}/root' cannot be written.*pass `report_dir`"
        kw = {"default_root_dir": blocker / "root"}
    pl.seed_everything(0, verbose=False)
    trainer = tiny_trainer(kw.pop("default_root_dir", tmp_path), 1, [cb])
    with pytest.raises(ValueError, match=match):
        trainer.fit(model, BlobsData())
    assert model.seen == []  # raised at setup, before a single training step


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"report": "yes"}, r"`report` must be True, False or None .*got 'yes'"),
    ({"report": 1}, r"`report` must be True, False or None .*got 1"),
    ({"report_format": "xlsx"}, r"`report_format` must be one of \['csv', 'parquet'\], got 'xlsx'"),
    ({"report_dir": ""}, r"`report_dir` must be a folder path .*got ''"),
    ({"report_dir": 3}, r"`report_dir` must be a folder path .*got 3"),
    ({"report": False, "report_dir": "out"}, r"`report_dir` only applies with a report: got report_dir='out' with "
                                             r"report=False"),
])
@pytest.mark.parametrize("cls", ["ITLM", "BatchFilter"])
def test_bad_report_arguments(cls, kwargs, match):
    make = (lambda **kw: ITLM(0.7, [1], **kw)) if cls == "ITLM" else (lambda **kw: BatchFilter("spl", 0.2, **kw))
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_parquet_without_pyarrow_is_an_error_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match="`report_format` 'parquet' needs pyarrow, which is not installed"):
        ITLM(0.7, [1], report=True, report_format="parquet")


def test_a_module_with_its_own_scores_has_no_prediction_unless_it_says(tmp_path):
    class OwnScores(TinyModel):
        def sample_scores(self, batch):
            return super().sample_scores(batch) * 2

    class OwnLabels(OwnScores):
        def predicted_labels(self, batch):
            return torch.zeros_like(unpack_batch(batch).index)

    for model, expected in ((OwnScores(), {None}), (OwnLabels(), {0})):
        itlm = ITLM(0.7, [1], verbose=False, plot=False, report_dir=str(tmp_path / type(model).__name__))
        fit(tmp_path, [itlm], 1, model=model)
        assert {r["predicted_label"] for r in load_report(itlm.report_path, as_frame=False)} == expected


# ------------------------------------------------------------------------------------------------ DDP
class Oracle(TinyModel):
    """Scores and outputs from fixed blob centres (plus 0 x the network, so it trains): the report does not depend
    on how the world size changed training."""

    def per_sample_loss(self, batch):
        b = unpack_batch(batch)
        centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]], device=b.input.device)
        logits = -((b.input[:, None, :] - centers) ** 2).sum(-1) + 0.0 * self(b.input)
        return F.cross_entropy(logits, b.target, reduction="none"), logits


class OddBlobs(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.ds = blobs(241)

    def train_dataloader(self):
        return DataLoader(self.ds, batch_size=16, shuffle=True)


def report_fit(root, devices):
    def make():
        cbs = [ITLM(0.7, [1, 1], verbose=False, plot=False, report_dir=str(root)),
               BatchFilter("spl", 0.25, report_dir=str(root))]
        kw = {"strategy": ddp_cpu_strategy()} if devices > 1 else {}
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=devices, callbacks=cbs, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             deterministic=True, **kw)
        return trainer, Oracle(), OddBlobs()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_ranks(make)  # retried once if a rank dies of a signal in torch's teardown
    return [load_report(root / f, as_frame=False) for f in ("itlm_report.csv", "filter_spl_report.csv")]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_report_has_each_sample_once_and_equals_one_process(tmp_path):
    one_itlm, one_filter = report_fit(tmp_path / "ws1", 1)
    two_itlm, two_filter = report_fit(tmp_path / "ws2", 2)  # 241 samples: uneven shards, one padded repeat
    assert sorted(r["index"] for r in two_itlm) == list(range(241)) == sorted(r["index"] for r in two_filter)
    assert two_itlm == one_itlm  # scores, selection, labels, posterior: all independent of the world size
    # the filter's batches differ with the world size, its oracle scores do not: the last epoch saw the samples
    # ITLM kept, each with its oracle score
    drop = {"kept", "first_dropped_epoch", "rank", "clean_posterior"}
    strip = sorted((tuple((k, v) for k, v in r.items() if k not in drop) for r in two_filter), key=str)
    assert strip == sorted((tuple((k, v) for k, v in r.items() if k not in drop) for r in one_filter), key=str)
    assert sum(r["score_last_epoch"] is not None for r in two_filter) == math.floor(0.7 * 241)
    assert json.dumps(two_filter[0]) and all(r["given_label"] is not None for r in two_filter)


class ReadsTheReports(pl.Callback):
    """At fit end on every rank: can this rank read each report through its callback's `report_path`?"""

    def __init__(self, root, owners):
        self.root, self.owners = str(root), owners

    def on_fit_end(self, trainer, pl_module):
        import os

        rows = [len(load_report(o.report_path, as_frame=False)) if o.report_path else None for o in self.owners]
        with open(os.path.join(self.root, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(rows, f)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_rank_reads_the_report_through_report_path(tmp_path):
    """Under DDP the README's `load_report(finder.report_path)` failed on rank 1, whose `report_path` was None (a DDP
    newcomer): every rank gets the path once rank 0 has written the file."""
    def make():
        cbs = [ITLM(0.7, [1, 1], verbose=False, plot=False, report_dir=str(tmp_path)),
               BatchFilter("spl", 0.25, report_dir=str(tmp_path))]
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy=ddp_cpu_strategy(),
                             callbacks=[*cbs, ReadsTheReports(tmp_path, cbs)], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer, Oracle(), OddBlobs()

    fit_ranks(make)
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == [[241, 241], [241, 241]]


@pytest.mark.parametrize("owner", ["itlm", "filter"])
def test_the_report_says_where_each_sample_sits_in_the_data_set_the_datamodule_read(tmp_path, owner):
    """A newcomer looked up FashionMNIST(root)[index] for the report's top rows and saw other images: the built-in
    datamodules draw and shuffle their training split. `source_index` is the position in the data set `load` read."""
    import pytorch_lightning as pl

    from lit_robust import DigitsDataModule, ImageClassifier
    from tests.conftest import tiny_trainer

    dm = DigitsDataModule(clean_ratio=0.7, train_size=300, val_size=0, batch_size=64)
    cb = (ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=True, report_dir=tmp_path)
          if owner == "itlm" else BatchFilter("prl", drop_ratio=0.3, report=True, report_dir=tmp_path))
    pl.seed_everything(0, verbose=False)
    tiny_trainer(tmp_path, 2, [cb]).fit(ImageClassifier(backbone="mlp", image_size=8), dm)
    rows = load_report(cb.report_path, as_frame=False)
    assert list(rows[0])[:3] == ["rank", "index", "source_index"]
    from sklearn.datasets import load_digits

    digits = load_digits()  # the data set as read: images and clean labels in its own order (all 1,797 rows)
    x = (torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0 - 0.3) / 0.4
    y = torch.as_tensor(digits.target)
    for r in rows:
        sample = dm.train_set[r["index"]]
        assert torch.equal(x[r["source_index"]], sample[1])
        assert int(y[r["source_index"]]) == int(dm.clean_train_targets[r["index"]])
    assert sorted(r["source_index"] for r in rows) != list(range(300))  # a draw, not the first 300
    # without a datamodule that knows it: no such column
    cb2 = BatchFilter("prl", drop_ratio=0.3, report=True, report_dir=tmp_path / "plain")
    tiny_trainer(tmp_path, 1, [cb2]).fit(ImageClassifier(backbone="mlp", image_size=8), dm.train_dataloader())
    assert "source_index" not in load_report(cb2.report_path, as_frame=False)[0]


def test_a_tiny_fit_at_a_fixed_ratio_writes_its_report_without_the_estimators_warning(tmp_path):
    """15 samples, keep_ratio 0.7: the report's posterior cannot fit a mixture; a newcomer got the estimator's
    warning about `min_samples` (no callback argument) from a fit that asked for no estimate."""
    import pytorch_lightning as pl

    from tests.conftest import BlobsData, TinyModel, tiny_trainer

    itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=True, report_dir=tmp_path)
    pl.seed_everything(0, verbose=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [itlm]).fit(TinyModel(), BlobsData(n=15))
    assert not [w for w in record if "min_samples" in str(w.message)], [str(w.message) for w in record]
    rows = load_report(itlm.report_path, as_frame=False)
    assert len(rows) == 15 and all(r["clean_posterior"] == 1.0 for r in rows)


def test_load_report_takes_the_run_folder_and_rejects_a_file_that_is_no_report(tmp_path):
    """A newcomer gave `load_report` a run folder ("must end in .csv") and `metrics.csv` (silently a frame of metrics)."""
    from lit_robust.report import write_report

    table = {"rank": [1, 2], "index": [1, 0], "score_last_epoch": [0.9, 0.1], "kept": [False, True]}
    path = write_report(table, tmp_path / "filter_prl_report.csv")
    (tmp_path / "metrics.csv").write_text("epoch,step,train_loss\n0,10,1.5\n")
    (tmp_path / "predictions.csv").write_text("index,predicted_label\n0,3\n")
    assert load_report(tmp_path, as_frame=False) == load_report(path, as_frame=False)
    assert [r["index"] for r in load_report(tmp_path, as_frame=False)] == [1, 0]
    with pytest.raises(ValueError, match=r"`path` must be a per-sample report \(with `rank` and `index` columns\), "
                                         r"but .*metrics.csv' has columns \['epoch', 'step', 'train_loss'\]"):
        load_report(tmp_path / "metrics.csv")
    write_report(table, tmp_path / "itlm_report.csv")
    with pytest.raises(ValueError, match=r"it must hold one per-sample report .* got 2: "
                                                r"\['filter_prl_report.csv', 'itlm_report.csv'\]; pass one of them"):
        load_report(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"got none in"):
        load_report(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)
    # an auditor's: `load_report(None)` (os.stat's TypeError), a `.parquet` that is none (pyarrow's ArrowInvalid)
    with pytest.raises(TypeError, match=r"`path` must be the report file or the folder holding it \(a str or path\), "
                                        r"got NoneType: did the fit write no report"):
        load_report(None)
    pytest.importorskip("pyarrow")
    (tmp_path / "fake.parquet").write_text("rank,index\n1,0\n")
    with pytest.raises(ValueError, match=r"`path` must be a per-sample report, but .*fake.parquet' is not a Parquet "
                                         r"file pyarrow can read"):
        load_report(tmp_path / "fake.parquet")


# ------------------------------------------------------------------------------------------------ regression targets
def test_scalar_targets_and_values_from_outputs():
    y = torch.tensor([[0.5], [2.0]])
    assert scalar_targets(y).tolist() == [0.5, 2.0] and scalar_targets(y[:, 0]).tolist() == [0.5, 2.0]
    assert values_from_outputs(torch.tensor([1.0, 3.0]), y).tolist() == [1.0, 3.0]
    assert values_from_outputs(torch.tensor([[1.0], [3.0]]), y[:, 0]).tolist() == [1.0, 3.0]
    for target in (torch.tensor([1, 0]), torch.zeros(2, 3), torch.zeros(2, 1, 1), [0.5, 2.0], torch.tensor([True, False])):
        assert scalar_targets(target) is None and values_from_outputs(torch.zeros(2), target) is None
    for outputs in (torch.zeros(2, 2), torch.zeros(3), torch.zeros(2, dtype=torch.long), None, torch.zeros(2, 1, 1)):
        assert values_from_outputs(outputs, y) is None


def test_regression_columns_follow_their_rows():
    g = torch.Generator().manual_seed(3)
    n = 40
    index = torch.randperm(90, generator=g)[:n]
    scores = torch.rand(n, generator=g)
    target, predicted = torch.randn(n, generator=g), torch.randn(n, generator=g).double()
    target[::5], predicted[::7] = math.nan, math.nan  # unknown
    table = build_report(index, scores, torch.ones(n, dtype=torch.bool), score_columns=["s"], given_target=target,
                         predicted_target=predicted, estimator=None)
    assert list(table)[-3:] == ["corrupted", "given_target", "predicted_target"]
    by_index = {r["index"]: r for r in as_rows(table)}
    for i in range(n):
        row = by_index[int(index[i])]
        for col, t in (("given_target", target), ("predicted_target", predicted)):
            if math.isnan(t[i]):
                assert row[col] is None
            else:  # written as the shortest decimal of the float32 value
                assert torch.tensor(row[col], dtype=torch.float32) == t[i].float(), (i, col)
    only = build_report(index, scores, torch.ones(n, dtype=torch.bool), score_columns=["s"], given_target=target,
                        estimator=None)
    assert all(v is None for v in only["predicted_target"]) and only["given_target"] == table["given_target"]


def test_epoch_scores_regression_values_over_ranks_and_through_a_checkpoint():
    g = torch.Generator().manual_seed(4)
    n = 30
    target = torch.randint(-8, 8, (n,), generator=g).float() / 4  # exact in any order of summation
    one, ranks = EpochScores(n), [EpochScores(n) for _ in range(2)]
    for s in (one, *ranks):
        s.start_epoch(0)
    perm = torch.randperm(n, generator=g)
    for b, idx in enumerate(perm.split(7)):
        pred = target[idx] + 1.0 if b != 2 else None  # one batch without predictions (outputs of another shape)
        args = (idx, target[idx], torch.zeros(len(idx), dtype=torch.bool))
        kw = {"given_target": target[idx], "predicted_target": pred}
        one.add(*args, **kw)
        ranks[b % 2].add(*args, **kw)
    flush_one_and_ranks(one, ranks)
    t1 = one.table()
    assert ranks[0].table() == t1 == ranks[1].table()
    no_pred = set(perm.split(7)[2].tolist())
    for r in as_rows(t1):
        assert r["given_target"] == float(target[r["index"]])
        assert r["predicted_target"] == (None if r["index"] in no_pred else float(target[r["index"]]) + 1.0)
    assert EpochScores.from_state_dict(one.state_dict()).table() == t1
    old = {k: v for k, v in one.state_dict().items() if k not in ("values", "local_values")}  # an older checkpoint
    assert "given_target" not in EpochScores.from_state_dict(old).table()


class LinearRegressor(RobustMixin, pl.LightningModule):
    """One linear layer on 3 features, squared error per sample; ``lr=0`` keeps the weights as they start."""

    def __init__(self, lr: float = 0.0) -> None:
        super().__init__()
        self.net, self.lr = torch.nn.Linear(3, 1), lr

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, batch):
        b = unpack_batch(batch)
        pred = self(b.input)
        return ((pred - b.target) ** 2).reshape(-1), pred

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@pytest.mark.parametrize("owner", ["itlm", "filter"])
def test_a_regression_report_has_each_samples_target_and_prediction(tmp_path, owner):
    """A newcomer with a regression joined targets and predictions to the report by hand: it has them now."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(90, 3, generator=g)
    y = x.sum(1, keepdim=True) + torch.where(torch.arange(90)[:, None] % 4 == 0, 5.0, 0.0)
    ds = IndexedDataset(TensorDataset(x, y))
    cb = (ITLM(0.75, [1, 1], verbose=False, plot=False, report_dir=str(tmp_path)) if owner == "itlm"
          else BatchFilter("prl", 0.25, report_dir=str(tmp_path)))
    model = LinearRegressor()
    fit(tmp_path, [cb], 2, model=model, data=DataLoader(ds, batch_size=16, shuffle=True))
    rows = load_report(cb.report_path, as_frame=False)
    with torch.no_grad():
        pred = model(x).reshape(-1)  # lr = 0: the final model is the model of every forward
    assert len(rows) == 90
    for r in rows:
        assert r["given_target"] == pytest.approx(float(y[r["index"]]), rel=1e-6)
        assert r["predicted_target"] == pytest.approx(float(pred[r["index"]]), rel=1e-5, abs=1e-6)
    assert load_report(cb.report_path)["predicted_target"].dtype == "float64"


def test_rank_zero_writes_and_every_rank_passes_the_barrier_even_when_the_write_fails():
    """Every rank waits at a barrier until rank 0 has written the report (so that `report_path` can be read on any
    rank); a failing write must not leave the other ranks waiting for a rank 0 that has stopped: it is raised after
    the barrier. A file that cannot be written (an OSError) is a warning and `None` on every rank: rank 0's outcome is
    broadcast."""
    from types import SimpleNamespace

    from lit_robust.callbacks._report_file import written_on_rank_zero

    def trainer(rank, log, rank_zeros_outcome=None):
        def broadcast(value):
            log.append("broadcast")
            return value if rank == 0 else rank_zeros_outcome

        return SimpleNamespace(global_rank=rank, strategy=SimpleNamespace(barrier=lambda name: log.append("barrier"),
                                                                          broadcast=broadcast))

    def failing(kind):
        def write():
            raise kind("No space left on device")
        return write

    log: list[str] = []
    assert written_on_rank_zero(trainer(0, log), "t.csv", lambda: log.append("write") or "/abs/t.csv",
                                "ITLM") == "/abs/t.csv"
    assert log == ["write", "barrier", "broadcast"]
    log.clear()
    assert written_on_rank_zero(trainer(1, log), "t.csv", lambda: log.append("write") or "x", "ITLM") == "t.csv"
    assert log == ["barrier", "broadcast"]  # only rank 0 writes
    log.clear()
    with pytest.raises(RuntimeError, match="No space left on device"):  # a bug is raised, after the barrier
        written_on_rank_zero(trainer(0, log), "t.csv", failing(RuntimeError), "ITLM")
    assert log == ["barrier", "broadcast"]  # the other ranks' collectives are met
    log.clear()
    with pytest.warns(UserWarning, match=r"^ITLM: the per-sample report could not be written to t\.csv \(OSError: No "
                                         r"space left on device\)\. The fit itself ran to its end\."):
        assert written_on_rank_zero(trainer(0, log), "t.csv", failing(OSError), "ITLM") is None
    assert log == ["barrier", "broadcast"]
    assert written_on_rank_zero(trainer(1, [], "OSError: No space left on device"), "t.csv", failing(OSError),
                                "ITLM") is None  # rank 1 learns that it was not written


def test_posterior_note_only_when_every_scored_row_reads_one():
    from lit_robust.report import posterior_note

    ones = {"clean_posterior": [1.0] * 25 + [None, math.nan]}
    assert "counts 0 bad samples" in posterior_note(ones)
    assert posterior_note({"clean_posterior": [1.0] * 24 + [0.99]}) is None
    assert posterior_note({"clean_posterior": [1.0] * 19}) is None  # too few rows to say anything
    assert posterior_note({"clean_posterior": [None] * 30}) is None


def test_itlm_says_when_the_reports_posterior_counts_nothing(tmp_path, monkeypatch):
    """A plain-PyTorch newcomer's `per_sample_loss` returned the losses alone: the loss mixture found one component
    in the final scores, `clean_posterior` read 1.0 on all 6,000 rows, and nothing said so."""
    import lit_robust.callbacks.itlm as itlm_module
    from tests.conftest import TinyModel, tiny_trainer

    class LossesOnly(TinyModel):
        def per_sample_loss(self, batch):
            return super().per_sample_loss(batch)[0]

    said = []
    monkeypatch.setattr(itlm_module, "rank_zero_info", said.append)
    clean = blobs(240, clean_ratio=1.0)
    pl.seed_everything(0, verbose=False)
    itlm = ITLM(keep_ratio=0.9, round_epochs=[2, 4], verbose=False, plot=False, report_dir=str(tmp_path / "r"))
    tiny_trainer(tmp_path, 6, [itlm]).fit(LossesOnly(), DataLoader(clean, batch_size=32, shuffle=True))
    rows = load_report(itlm.report_path, as_frame=False)
    assert all(r["clean_posterior"] == 1.0 for r in rows)
    written = [m for m in said if "per-sample report written" in m]
    assert len(written) == 1 and written[0].endswith("cut it at a count you trust (the fit's estimate, or your own).")


def test_a_training_set_read_from_files_names_each_rows_file_through_subsets():
    """An image-folder newcomer acted on `index` after moving files and mapped 1,850 of 2,000 rows onto other files:
    `sample_files` gives the file of each index an `IndexedDataset` yields, through `Subset`s below it (which remap
    the index) and wrappers above it (which do not)."""
    from torch.utils.data import Subset

    from lit_robust import IndexedDataset
    from lit_robust.report import sample_files, with_sample_files

    class Folder(torch.utils.data.Dataset):  # what torchvision's ImageFolder holds
        samples = [(f"root/{'ab'[i % 2]}/{i}.png", i % 2) for i in range(6)]
        classes = ["a", "b"]

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.zeros(1), self.samples[i][1]

    assert sample_files(IndexedDataset(Folder())) == ([p for p, _ in Folder.samples], ["a", "b"])
    below = IndexedDataset(Subset(Subset(Folder(), [5, 3, 1, 0]), [2, 0]))  # index 0 -> 1 -> file 1; 1 -> 0 -> 5
    assert sample_files(below)[0] == ["root/b/1.png", "root/b/5.png"]
    above = Subset(IndexedDataset(Folder()), [4, 2])  # yields the IndexedDataset's own indices 4 and 2
    assert sample_files(above)[0] == [p for p, _ in Folder.samples]
    assert [above[j][0] for j in range(2)] == [4, 2]
    assert sample_files(IndexedDataset(torch.utils.data.TensorDataset(torch.zeros(3, 1), torch.zeros(3)))) is None
    table = {"rank": [1, 2], "index": [3, 0], "given_label": [1, 0], "predicted_label": [0, None]}
    assert with_sample_files(table, IndexedDataset(Folder())) == {
        "rank": [1, 2], "index": [3, 0], "path": ["root/b/3.png", "root/a/0.png"], "given_label": [1, 0],
        "predicted_label": [0, None], "given_class": ["b", "a"], "predicted_class": ["a", None]}
    assert with_sample_files({"index": [7]}, IndexedDataset(Folder())) == {"index": [7]}  # not this data set's indices


def test_a_file_that_cannot_be_read_is_named_with_its_sample(tmp_path):
    """An image-folder newcomer's truncated PNG stopped the fit with PIL's `OSError: image file is truncated` and no
    file name; the error now names the sample and its file (the same exception type, the original chained)."""
    torchvision = pytest.importorskip("torchvision")
    from PIL import Image

    from lit_robust import IndexedDataset

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8), 100).save(tmp_path / name / "0.png")
    bad = tmp_path / "b" / "0.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated
    data = IndexedDataset(torchvision.datasets.ImageFolder(str(tmp_path)))
    assert data[0][0] == 0
    with pytest.raises(OSError, match=rf"sample 1 \({re.escape(str(bad))}\) of the data set could not be read: ") as err:
        data[1]
    assert isinstance(err.value.__cause__, OSError)
    with pytest.raises(OSError, match=r"sample 1 \("):
        next(iter(torch.utils.data.DataLoader(data, batch_size=2)))


def test_a_subset_training_set_gets_its_source_index_from_the_subsets(tmp_path, one_torch_thread):
    """A Lightning user's own data: a chosen subset of a data set, then `random_split` — the report's `index` is the
    position in the split; `source_index` is the position in the data set under both Subsets (no datamodule)."""
    from torch.utils.data import Subset, random_split

    noisy = blobs(300)
    full = TensorDataset(noisy.dataset.tensors[0], noisy.targets)
    chosen = Subset(full, list(range(299, -1, -3)))  # 100 samples, backwards
    train, _ = random_split(chosen, [80, 20], generator=torch.Generator().manual_seed(0))
    indexed = IndexedDataset(train)
    itlm = ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=True,
                report_dir=str(tmp_path))
    tiny_trainer(tmp_path, 2, [itlm]).fit(TinyModel(), DataLoader(indexed, batch_size=16, shuffle=True))
    rows = load_report(itlm.report_path, as_frame=False)
    assert len(rows) == 80
    for r in rows:  # slow reference: the two index maps applied by hand
        assert r["source_index"] == chosen.indices[train.indices[r["index"]]]
        assert int(full[r["source_index"]][1]) == r["given_label"]


def test_starved_classes_note_names_the_classes_a_filter_kept_under_half_the_overall_share():
    """An imbalanced-data newcomer's SPL filter kept 17.7 % of the rows labelled 5 against 75 % overall, without a
    word (ITLM says so of its selections)."""
    from lit_robust.report import starved_classes_note

    given = [0] * 60 + [1] * 20 + [2] * 8  # class 2: too few rows to judge
    kept = [True] * 54 + [False] * 6 + [True] * 3 + [False] * 17 + [False] * 8
    note = starved_classes_note({"given_label": given, "kept": kept})
    overall = sum(kept) / len(kept)  # 57 of 88
    assert 3 < 0.5 * overall * 20 and 54 >= 0.5 * overall * 60
    assert note.startswith(f"its last epoch kept 3 of the 20 labelled 1, against {overall:.0%} overall: a rare, hard "
                           "or confusable class's samples score high.")
    assert "labelled 2" not in note and "labelled 0" not in note
    assert starved_classes_note({"given_label": given, "kept": [True] * 88}) is None
    assert starved_classes_note({"given_label": [None] * 5, "kept": [True] * 5}) is None  # no labels (regression)
    assert starved_classes_note({"kept": kept}) is None


@pytest.mark.parametrize("report", [True, False])
def test_a_filter_that_drops_most_of_a_class_says_so_at_fit_end(tmp_path, report):
    """Also without a report: a newcomer's Adam-trained PRL kept 0 of the 102 samples labelled 3 (test accuracy 0 on
    that digit), and only `report=True` said so."""
    class ClassTwoHigh(TinyModel):  # every sample labelled 2 scores above the rest: SPL drops them first
        def per_sample_loss(self, batch):
            losses, logits = super().per_sample_loss(batch)
            return losses + 10.0 * (batch[2] == 2).float(), logits

    bf = BatchFilter("spl", drop_ratio=0.3, report=report, report_dir=str(tmp_path) if report else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [bf]).fit(ClassTwoHigh(), BlobsData())
    said = [str(w.message) for w in caught if "labelled 2, against" in str(w.message)]
    assert len(said) == 1, said  # once: by the report where there is one, else by the counts
    last = bf.history[-1]
    kept = last.kept_by_class[2]
    assert re.match(rf"BatchFilter: its last epoch kept {kept} of the {last.seen_by_class[2]} labelled 2, against 69% "
                    "overall", said[0]), said
    assert ("`report=True` lists the samples" in said[0]) == (not report)
    if report:  # the counts and the report's rows tell the same
        rows = load_report(bf.report_path, as_frame=False)
        assert sum(1 for r in rows if r["given_label"] == 2 and r["kept"]) == kept
    # a filter that cannot starve a class says nothing of them: on clean labels it drops 10 %, at most 24 of a class's
    # 80 (30 %, 3 times the overall rate; kept 70 % against 90 %)
    bf = BatchFilter("spl", drop_ratio=0.1, report=report, report_dir=str(tmp_path / "even") if report else None)
    data = BlobsData()
    data.ds = blobs(240, clean_ratio=1.0)
    pl.seed_everything(0, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [bf]).fit(TinyModel(), data)
    assert bf.history[-1].kept_by_class is not None
    assert not [w for w in caught if "labelled" in str(w.message)], [str(w.message) for w in caught]


@pytest.mark.parametrize("report", [True, False])
def test_coteaching_that_drops_most_of_a_class_says_so_at_fit_end(tmp_path, report):
    class ClassTwoHigh(TinyModel):  # every sample labelled 2 scores above the rest: both networks reject them first
        def per_sample_loss(self, batch):
            losses, logits = super().per_sample_loss(batch)
            return losses + 10.0 * (batch[2] == 2).float(), logits

    model = CoTeaching(ClassTwoHigh(), drop_ratio=0.3, report=report, report_dir=str(tmp_path) if report else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2).fit(model, BlobsData())
    said = [str(w.message) for w in caught if "labelled 2, against" in str(w.message)]
    last = model.history[-1]
    assert last.seen_by_class == torch.bincount(BlobsData().ds.targets).tolist()
    assert len(said) == 1 and said[0].startswith(f"CoTeaching: its last epoch kept {last.kept_by_class[2]} of the "
                                                 f"{last.seen_by_class[2]} labelled 2, against"), said
    if report:  # the counts are the report's `kept` (kept by both networks)
        rows = load_report(model.report_path, as_frame=False)
        assert [sum(1 for r in rows if r["given_label"] == c and r["kept"]) for c in range(3)] == last.kept_by_class


class FolderlessLogger(pl.loggers.Logger):
    """A team's logger writing elsewhere (a database, a service): Lightning's `save_dir` None, so no `log_dir`."""

    name, version = "team", "run-7"

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, *args, **kwargs):
        pass


@pytest.mark.parametrize("owner", ["itlm", "prl"])
def test_a_logger_without_a_folder_puts_the_report_in_the_default_root_dir(tmp_path, owner, monkeypatch):
    # it crashed the fit at setup: `os.makedirs(None)` in the report's folder check
    cb = (ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, report=True) if owner == "itlm"
          else BatchFilter("prl", drop_ratio=0.2, report=True))
    said = []
    monkeypatch.setattr("lit_robust.callbacks.itlm.rank_zero_info", said.append)
    _, _, trainer = fit(tmp_path / "root", [cb], 2, logger=FolderlessLogger())
    assert trainer.log_dir is None
    assert cb.report_path == os.path.join(str(tmp_path / "root"), os.path.basename(cb.report_path))
    assert len(load_report(cb.report_path, as_frame=False)) == 240
    if owner == "itlm":  # its plot has no folder: said as such, not as "there is no logger"
        assert any("no score plot written: the logger (FolderlessLogger) has no folder" in t for t in said)


@pytest.mark.parametrize("owner", ["itlm", "prl"])
def test_a_report_that_replaces_an_earlier_fits_file_says_so(tmp_path, owner, monkeypatch):
    # a user's two fits with logger=False in one folder: the second replaced the first's report without a word
    said = []
    module = "lit_robust.callbacks.itlm" if owner == "itlm" else "lit_robust.callbacks._report_file"
    monkeypatch.setattr(f"{module}.rank_zero_info", said.append)
    warned = []
    monkeypatch.setattr("lit_robust.callbacks._report_file.rank_zero_warn", lambda m, *a, **k: warned[-1].append(m))
    for _ in range(2):
        cb = (ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=True,
                   report_dir=str(tmp_path / "rep")) if owner == "itlm"
              else BatchFilter("prl", drop_ratio=0.2, report=True, report_dir=str(tmp_path / "rep")))
        warned.append([])
        fit(tmp_path, [cb], 2)
    warned = [[m for m in fit_warned if "from an earlier fit, which this fit's report" in m] for fit_warned in warned]
    lines = [t for t in said if "per-sample report written to" in t]
    assert len(lines) == 2
    assert "replacing the file there" not in lines[0] and "replacing the file there" in lines[1]
    # ... and the second fit says so as it starts, as Lightning does of a checkpoint folder that is not empty
    assert warned[0] == [] and len(warned[1]) == 1
    assert os.path.join(str(tmp_path / "rep"), os.path.basename(cb.report_path)) in warned[1][0]
    assert "give each fit a `report_dir` of its own to keep both" in warned[1][0]
    # a fit resumed from its checkpoint replaces its own earlier part's report: no warning
    make = (lambda: ITLM(keep_ratio=0.7, round_epochs=[1, 2], verbose=False, plot=False, report=True,
                         report_dir=str(tmp_path / "rep"))) if owner == "itlm" else (
        lambda: BatchFilter("prl", drop_ratio=0.2, report=True, report_dir=str(tmp_path / "rep")))
    fit(tmp_path / "a", [make(), StopAfterEpoch(0)], 3, enable_checkpointing=True)
    assert os.path.exists(cb.report_path)
    ckpt = next((tmp_path / "a").rglob("*.ckpt"))
    warned = [[]]
    fit(tmp_path / "a", [make()], 3, ckpt_path=str(ckpt))
    assert [m for m in warned[0] if "from an earlier fit" in m] == []


@pytest.mark.parametrize("owner", ["itlm", "prl"])
def test_a_report_beside_an_earlier_fits_other_format_says_which_is_this_fits(tmp_path, owner, monkeypatch):
    # a user's csv fit, then a parquet fit in one `report_dir`: the old .csv stayed beside the new .parquet without a
    # word, and `load_report(folder)` refused the pair without saying which one the last fit wrote
    pytest.importorskip("pyarrow")
    said = []
    module = "lit_robust.callbacks.itlm" if owner == "itlm" else "lit_robust.callbacks._report_file"
    monkeypatch.setattr(f"{module}.rank_zero_info", said.append)
    folder = tmp_path / "rep"
    for fmt in ("csv", "parquet", "parquet"):
        cb = (ITLM(keep_ratio=0.7, round_epochs=[1, 1], verbose=False, plot=False, report=True,
                   report_dir=str(folder), report_format=fmt) if owner == "itlm"
              else BatchFilter("prl", drop_ratio=0.2, report=True, report_dir=str(folder), report_format=fmt))
        fit(tmp_path, [cb], 2)
    stem = "itlm_report" if owner == "itlm" else "filter_prl_report"
    lines = [t for t in said if "per-sample report written to" in t]
    assert len(lines) == 3
    assert "beside it" not in lines[0]
    assert f"{stem}.parquet (the {stem}.csv beside it is from an earlier fit, not this one)" in lines[1]
    assert "replacing the file there" in lines[2] and f"the {stem}.csv beside it is from an earlier fit" in lines[2]
    os.utime(folder / f"{stem}.csv", (1, 1))  # the parquet is newer whatever the file system's clock resolution
    with pytest.raises(ValueError, match=rf"got 2: .*; pass one of them \(the newest: '{stem}.parquet'\)"):
        load_report(folder)


def test_starved_classes_note_counts_every_scored_row_and_names_negative_integer_targets():
    """A regression newcomer's integer targets (`(y * 10).round().long()`): the note read "against 71% overall",
    the share of the non-negative ones, while the filter had kept 79.7 %, and spoke of classes only."""
    from lit_robust.report import starved_classes_note

    given = [-5] * 40 + [0] * 60 + [1] * 20
    kept = [True] * 40 + [True] * 50 + [False] * 10 + [True] * 2 + [False] * 18
    note = starved_classes_note({"given_label": given, "kept": kept})
    assert f"against {92 / 120:.0%} overall" in note and "kept 2 of the 20 labelled 1" in note
    assert note.endswith("(Integer targets are read as class labels, and some here are negative: if they are "
                         "regression targets, cast them to float.)")
    assert "cast them to float" not in starved_classes_note({"given_label": given[40:], "kept": kept[40:]})


def test_build_report_refuses_an_unknown_estimator_and_float_labels():
    """A plain-loop user's `estimator="Disagreement"` gave every row P(clean) 1.0; `given_label=y + 0.5` was
    truncated to integers without a word (the estimators refuse both)."""
    from lit_robust.report import build_report

    index, scores, kept = torch.arange(4), torch.tensor([0.1, 0.9, 0.3, 0.2]), torch.tensor([True, False, True, True])
    labels = torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"`estimator` must be one of 'gmm', 'bmm', 'disagreement', 'class_floor', "
                                         r"'disagreement_or_interior', 'floor_or_interior' or None, got 'Disagreement'"):
        build_report(index, scores, kept, score_columns=["s"], given_label=labels, predicted_label=labels,
                     estimator="Disagreement")
    with pytest.raises(ValueError, match=r"`given_label` must hold integer class indices, got dtype torch.float32\."):
        build_report(index, scores, kept, score_columns=["s"], given_label=labels + 0.5, estimator=None)
    with pytest.raises(ValueError, match=r"`index` must hold 4 distinct integer dataset indices, got dtype torch.int64 "
                                         r"with 1 distinct values"):
        build_report(torch.zeros(4, dtype=torch.long), scores, kept, score_columns=["s"])
    assert len(build_report(index, scores, kept, score_columns=["s"], given_label=labels)["rank"]) == 4


def _text_table():
    table = build_report(torch.arange(4), torch.tensor([0.5, 0.1, 0.3, 2.0]), torch.ones(4, dtype=torch.bool),
                         score_columns=["score_last_epoch"], given_label=torch.tensor([0, 2, 1, 0]),
                         predicted_label=torch.tensor([0, 2, 0, 0]))
    order = table["index"]
    table["given_class"] = [["0", "1", "None"][g] for g in table["given_label"]]  # image folders 0/, 1/, None/
    table["cust"] = [["007", "NA", "1", "A1"][i] for i in order]  # a datamodule's text id column
    table["num"] = [[10, 11, 12, 13][i] for i in order]  # a numeric id column
    table["code"] = [str(i + 1) for i in order]  # text ids that read as numbers: the writer quotes them
    return table


def test_csv_report_reads_text_columns_as_text_like_parquet(tmp_path):
    """Reviewer: with class folders `0/`, `1/`, `None/` a CSV report gave `given_class` float64 [0.0, nan, 1.0]
    where Parquet gave the names, and ids "007" came back as 7 (pandas' defaults: numbers, NA words)."""
    pd = pytest.importorskip("pandas")
    frame = load_report(write_report(_text_table(), tmp_path / "r.csv"))
    assert frame.sort_values("index")["given_class"].tolist() == ["0", "None", "1", "0"]
    assert frame.sort_values("index")["cust"].tolist() == ["007", "NA", "1", "A1"]
    assert frame.sort_values("index")["code"].tolist() == ["1", "2", "3", "4"]
    assert frame["num"].dtype == "int64" and frame["score_last_epoch"].dtype == "float64"
    pytest.importorskip("pyarrow")
    pd.testing.assert_frame_equal(frame, load_report(write_report(_text_table(), tmp_path / "r.parquet")))


def test_csv_report_as_dicts_reads_unknown_text_and_int_columns(tmp_path, monkeypatch):
    """Reviewer: `load_report(as_frame=False)` failed (`could not convert string to float: 'A1'`) on an id column
    of names, and read numeric ids as floats where the frame gives ints; without pandas too."""
    path = write_report(_text_table(), tmp_path / "r.csv")
    rows = sorted(load_report(path, as_frame=False), key=lambda r: r["index"])
    assert [r["cust"] for r in rows] == ["007", "NA", "1", "A1"]
    assert [r["num"] for r in rows] == [10, 11, 12, 13] and all(type(r["num"]) is int for r in rows)
    assert [r["code"] for r in rows] == ["1", "2", "3", "4"]
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert sorted(load_report(path), key=lambda r: r["index"]) == rows
    pytest.importorskip("pyarrow")
    assert load_report(write_report(_text_table(), tmp_path / "r.parquet"), as_frame=False) == load_report(path)


def test_a_report_written_before_text_was_quoted_reads_its_columns_as_pandas_does(tmp_path):
    """Files of earlier versions have no quotes: an unknown column is text where a cell is no number, else numbers
    (ids "007" then read as 7, as `pandas.read_csv` reads them), the same with and without pandas."""
    pd = pytest.importorskip("pandas")
    (tmp_path / "old_report.csv").write_text("rank,index,score,cust,n\n1,0,0.5,A1,007\n2,1,0.25,NA,3\n",
                                             encoding="utf-8")
    rows = load_report(tmp_path / "old_report.csv", as_frame=False)
    assert [(r["cust"], r["n"], r["score"]) for r in rows] == [("A1", 7, 0.5), ("NA", 3, 0.25)]
    frame = load_report(tmp_path / "old_report.csv")
    assert frame.cust.tolist() == ["A1", "NA"] and frame.n.tolist() == [7, 3] and isinstance(frame, pd.DataFrame)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_missing_id_is_missing_not_the_text_nan(tmp_path, suffix):
    """Reviewer: a missing id value (pandas' NaN in a text column) became the text "nan" in Parquet while CSV read
    an empty cell."""
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    table = _text_table()
    table["cust"] = ["a", float("nan"), None, "b"]
    rows = load_report(write_report(table, tmp_path / f"r.{suffix}"), as_frame=False)
    assert [r["cust"] for r in rows] == ["a", None, None, "b"]


def test_report_files_are_utf8_whatever_the_locale(tmp_path):
    """Reviewer: under LC_ALL=C a class named "café" raised UnicodeEncodeError at the fit's end (the locale's
    encoding); the report is written and read as UTF-8."""
    import subprocess
    code = ("import sys, torch; from lit_robust.report import build_report, write_report, load_report\n"
            "t = build_report(torch.arange(2), torch.tensor([1., 2.]), torch.ones(2, dtype=torch.bool), "
            "score_columns=['s'])\n"
            "t['given_class'] = ['caf\\u00e9', '\\u65e5\\u672c']\n"  # escaped: the command line is ASCII too
            "r = load_report(write_report(t, sys.argv[1]), as_frame=False)\n"
            "assert [x['given_class'] for x in r] == ['caf\\u00e9', '\\u65e5\\u672c'], ascii(r)\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code, str(tmp_path / "r.csv")], env=env,
                         capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "r.csv").read_text(encoding="utf-8").count("café") == 1


def test_unseen_rows_are_counted_by_kept_not_by_a_nan_score():
    """Reviewer: a sample whose loss was NaN (ranked first, dropped) was reported as "not seen by the last epoch",
    and the advice `report[report.score_last_epoch.notna()]` dropped it; unseen rows are those without `kept`."""
    table = {"score_last_epoch": [math.nan, 2.0, 1.0], "kept": [False, True, True]}
    assert unseen_note(table) is None
    note = unseen_note({"score_last_epoch": [math.nan, 2.0, None], "kept": [False, True, None]})
    assert note.startswith("1 of its 3 rows have no score") and "report[report.kept.notna()]" in note


def test_a_csv_report_over_the_scanned_mib_keeps_its_quoted_text_ids(tmp_path, monkeypatch):
    """A reviewer's 30,000 rows with a column empty throughout (nothing dropped): the scan of the first MiB ended inside
    a quoted id at some widths and gave up, and every column was read by its cells: ids "0000000005" came back as 5
    (9 of 20 widths). The scan is bounded to that MiB (here 2,000 characters), and a cell it cuts is left
    undecided."""
    import lit_robust.report as report_module

    monkeypatch.setattr(report_module, "_SCANNED", 2000)
    n = 300
    for width in range(6, 16):
        table = {"rank": list(range(1, n + 1)), "index": list(range(n)), "score": [0.5] * n,
                 "first_dropped_round": [None] * n, "sample_id": [f"{i:0{width}d}" for i in range(n)]}
        path = write_report(table, tmp_path / f"wide{width}.csv")
        assert os.path.getsize(path) > 2000
        rows = load_report(path, as_frame=False)
        assert [r["sample_id"] for r in rows[:3]] == [f"{i:0{width}d}" for i in range(3)], width
        frame = load_report(path)
        assert frame.sample_id.iloc[5] == f"{5:0{width}d}" and frame.first_dropped_round.isna().all(), width


def test_subset_source_index_reads_negative_subset_indices_from_the_end():
    """`Subset(ds, [-1, 0, -2])` yields ds's rows n-1, 0, n-2 (Python's indexing), but the report's `source_index` said
    -1, 0, -2, which name no row of the user's data set."""
    from torch.utils.data import Subset

    from lit_robust.report import subset_source_index

    base = TensorDataset(torch.arange(5.0).unsqueeze(1), torch.arange(5))
    ds = IndexedDataset(Subset(base, [-1, 0, -2]))
    assert [int(ds[i][2]) for i in range(3)] == [4, 0, 3]
    assert subset_source_index(ds).tolist() == [4, 0, 3]
    nested = IndexedDataset(Subset(Subset(base, [-1, 1, 2]), [0, -1]))
    assert [int(nested[i][2]) for i in range(2)] == subset_source_index(nested).tolist() == [4, 2]


def test_report_dir_plot_dir_and_load_report_read_a_leading_tilde_as_the_home_folder(tmp_path, monkeypatch):
    """`report_dir="~/reports"` (a config's `report_dir: ~/reports`) wrote the report into a folder named `~` under the
    current one, where Lightning's `default_root_dir` and `ModelCheckpoint(dirpath)` read `~` as the home folder;
    `plot_dir` likewise, and `load_report("~/...")` said the file did not exist."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, report_dir="~/reports", plot_dir="~/plots")
    fit(tmp_path, [itlm], 2)
    assert itlm.report_path == str(home / "reports" / "itlm_report.csv") and os.path.isfile(itlm.report_path)
    assert itlm.plot_path == str(home / "plots" / "itlm_scores.png") and os.path.isfile(itlm.plot_path)
    assert not (cwd / "~").exists()
    assert len(load_report("~/reports/itlm_report.csv")) == len(load_report(itlm.report_path)) > 0


def test_a_plot_dir_that_cannot_be_written_is_an_error_at_setup_not_after_training(tmp_path):
    """`ITLM(plot_dir=<a file>)` trained every round, then failed the fit at its end with a bare `FileExistsError`
    from `os.makedirs` (`report_dir` was checked at setup, `plot_dir` was not)."""
    (tmp_path / "a_file").write_text("")
    itlm = ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot_dir=str(tmp_path / "a_file"))
    with pytest.raises(ValueError, match=r"`plot_dir` must be a folder a file can be written into, got '.*a_file' "
                                         r"\(FileExistsError"):
        _, _, trainer = fit(tmp_path, [itlm], 2)
    off = ITLM(keep_ratio=0.8, round_epochs=[1, 1], verbose=False, plot=False, plot_dir=str(tmp_path / "a_file"))
    _, _, trainer = fit(tmp_path, [off], 2)  # no plot: the folder is not used, so not checked
    assert trainer.current_epoch == 2 and off.plot_path is None



def test_epoch_scores_local_parts_put_back_one_ranks_sums_as_they_were_and_merge_several_as_a_flush():
    """A checkpoint keeps every rank's unflushed sums (a 2-rank fit resumed inside an epoch lost rank 1's): a part put
    back on its own rank is the sums as they were; several merged (another world size) flush to both ranks' totals."""
    a, b = EpochScores(5), EpochScores(5)
    a.add(torch.tensor([0, 3]), torch.tensor([0.25, 1.5]), torch.tensor([False, True]), given=torch.tensor([1, 2]))
    b.add(torch.tensor([3, 4]), torch.tensor([2.0, -0.5]), torch.tensor([True, False]), given=torch.tensor([2, 0]))
    parts = [a.local_part(), b.local_part()]
    assert parts[0]["cols"].tolist() == [0, 3]
    back = EpochScores(5)
    back.set_local_parts([parts[1]])
    assert torch.equal(back.local_sums, b.local_sums) and torch.equal(back.local_labels, b.local_labels)
    merged = EpochScores(5)
    merged.set_local_parts(parts)
    merged.flush(lambda t: t, lambda t: t)
    assert merged.sums[:, 3].tolist() == [3.5, 2.0, 2.0, 2.0]  # score sum, times scored, times dropped, visits
    assert merged.labels[1].tolist() == [2, 0, 0, 3, 1, 0]  # given labels + 1
    merged.set_local_parts([])
    assert not merged.local_sums.any() and not merged.local_labels.any()


@pytest.mark.parametrize("per_class", [False, True])
def test_itlm_auto_with_ignore_index_labels_leaves_them_out(tmp_path, per_class):
    """A module whose ``F.cross_entropy`` ignores the -100 labels of 24 of 240 samples (loss 0): ITLM's ``"auto"``
    estimate is the disagreement estimate of the 216 labelled samples, over all 240, they are kept, and the report
    ranks them after the labelled rows with no ``clean_posterior``. ``per_class=True`` had stopped at round 0's end
    on "`labels` must be class labels >= 0, got -100"."""
    data = BlobsData()
    data.ds.targets[:24] = -100
    itlm = ITLM(keep_ratio="auto", round_epochs=[3, 1], per_class=per_class, verbose=False, plot=False, report=True,
                report_dir=str(tmp_path / "rep"))
    fit(tmp_path, [itlm], 4, data=data)
    rows = load_report(itlm.report_path, as_frame=False)
    assert [r["index"] for r in rows[216:]] == list(range(24))
    assert all(r["clean_posterior"] is None and r["kept"] for r in rows[216:])
    assert all(r["clean_posterior"] is not None and r["given_label"] >= 0 for r in rows[:216])
    est = itlm.history[1].estimated_corruption
    bad = int(data.ds.corrupted[24:].sum())  # the labelled samples' wrong labels
    assert 0 < est * 240 < 216 and abs(est * 240 - bad) < 0.15 * bad  # counted among the labelled, not -100 as a class
    assert set(range(24)) <= set(itlm.selection.tolist())


def test_class_count_step_matches_a_count_by_hand():
    from lit_robust.report import class_count_step

    g = torch.Generator().manual_seed(0)
    for slots in (1, 3, 7):
        labels = torch.randint(-2, slots + 2, (50,), generator=g)  # some below 0 and above the slots: counted nowhere
        kept = torch.rand(50, generator=g) < 0.6
        seen_ref = [sum(1 for y in labels.tolist() if y == c) for c in range(slots)]
        kept_ref = [sum(1 for y, k in zip(labels.tolist(), kept.tolist()) if y == c and k) for c in range(slots)]
        assert class_count_step(labels, kept, slots).tolist() == seen_ref + kept_ref
    assert class_count_step(torch.rand(4), torch.ones(4, dtype=torch.bool), 3) is None  # regression targets
    assert class_count_step(torch.tensor([0, 1]), torch.ones(3, dtype=torch.bool), 3) is None  # not one per entry
    assert class_count_step(torch.tensor([0, 1]), torch.ones(2, dtype=torch.bool), 0) is None  # no slots


def test_counted_classes_note_says_what_the_reports_note_says_of_the_same_rows():
    from lit_robust.report import counted_classes_note, starved_classes_note

    given = [0] * 60 + [1] * 20 + [2] * 8 + [None] * 12  # 12 rows of no label: in the overall share
    kept = [True] * 54 + [False] * 6 + [True] * 3 + [False] * 17 + [False] * 8 + [True] * 10 + [False] * 2
    seen_by_class, kept_by_class = [60, 20, 8], [54, 3, 0]
    note = counted_classes_note(seen_by_class, kept_by_class, seen=100, dropped=100 - sum(kept))
    assert note == starved_classes_note({"given_label": given, "kept": kept}) and "3 of the 20 labelled 1" in note
    assert counted_classes_note([60, 20], [54, 18], seen=80, dropped=8) is None


def test_a_filter_counts_classes_from_the_batches_of_a_data_set_without_targets(tmp_path):
    """A `random_split` / `Subset` of a data set (the README's DataModule pattern) holds no `targets` of its own: a
    reviewer's filter kept 0 of 91 samples labelled 6 of such a split and said so only with `report=True`."""
    from torch.utils.data import Subset, TensorDataset

    class ClassTwoHigh(TinyModel):
        def per_sample_loss(self, batch):
            losses, logits = super().per_sample_loss(batch)
            return losses + 10.0 * (batch[2] == 2).float(), logits

    base = blobs(240)
    data = BlobsData()
    data.ds = IndexedDataset(Subset(TensorDataset(base.dataset.tensors[0], base.targets), range(240)))
    bf = BatchFilter("spl", drop_ratio=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [bf]).fit(ClassTwoHigh(), data)
    assert bf.history[-1].seen_by_class == torch.bincount(base.targets).tolist()
    assert [w for w in caught if "labelled 2, against" in str(w.message)]


def test_a_regression_with_integer_targets_is_not_counted_by_class(tmp_path):
    """Integer targets beside one output are a regression's values, not classes: a reviewer's filter warned that
    it "starves" the samples labelled 9 of an under-fitted regressor of the digit's value."""
    from torch.utils.data import TensorDataset

    class IntegerRegression(RobustMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def per_sample_loss(self, batch):
            b = unpack_batch(batch)
            out = self.net(b.input).squeeze(-1)
            return (out - b.target.float()) ** 2, out

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 2, generator=g)
    data = BlobsData()
    data.ds = IndexedDataset(TensorDataset(x, (x[:, 0] > 1).long() * 9))  # values 0 and 9; the 9s score high
    bf = BatchFilter("spl", drop_ratio=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, 2, [bf]).fit(IntegerRegression(), data)
    assert bf.history[-1].seen_by_class is None and bf.history[-1].seen == 240
    assert not [w for w in caught if "labelled" in str(w.message)]


def test_batch_class_labels_never_stops_a_fit():
    """The count by class goes beside the fit: targets without the module's `label_key` count nowhere, they do not
    raise (the report, which reads them, names the keys there are)."""
    from lit_robust.report import batch_class_labels

    class Module:
        label_key = "digit"

    outputs = {"digit": torch.zeros(3, 4)}
    assert batch_class_labels(outputs, {"ink": torch.rand(3)}, Module()) == (None, 0)
    labels, classes = batch_class_labels(outputs, {"digit": torch.tensor([0, 3, 1])}, Module())
    assert labels.tolist() == [0, 3, 1] and classes == 4
