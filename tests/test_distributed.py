"""Exact distributed selection: pure pieces vs slow references, simulated ranks, and real gloo ranks."""

from __future__ import annotations

import math
import os
import random
import struct
import traceback

import numpy as np
import pytest
import torch

from lit_robust.selection import distributed as D
from lit_robust.selection.radix import (
    digit_histogram,
    key_bits,
    kth_smallest_key,
    nonfinite_key,
    ordered_key,
    pass_schedule,
    radix_digit,
    select_bin,
)
from lit_robust.selection.rules import keep_count, per_class_trim_mask, rank_order, smallest_k_mask, trim_mask
from lit_robust.selection.samplers import SelectionSampler, ShardedSampler
from lit_robust.selection.sharded import SimulatedCollectives, first_occurrence_mask, sharded_smallest_k_masks
from tests.conftest import start_ranks

SPECIALS = [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1e-45, -1e-45, 3.4028234e38, -3.4028234e38,
            1.0, -1.0, 0.5]


# -- slow, obvious references ---------------------------------------------------------------------------------
def rank_value(s: float) -> tuple:
    """Python-side ranking value: finite scores by value (-0.0 == 0.0), every non-finite after them, tied."""
    return (0, s) if math.isfinite(s) else (1, 0.0)


def reference_masks(scores: list[torch.Tensor], index: list[torch.Tensor], k: int) -> list[list[bool]]:
    """Concatenate shards in rank order, keep first occurrences, sort (rank value, index) tuples in Python."""
    entries, seen = [], set()
    flat = [(r, p, s, i) for r, (ss, ii) in enumerate(zip(scores, index))
            for p, (s, i) in enumerate(zip(ss.tolist(), ii.tolist()))]
    for r, p, s, i in flat:
        if i in seen:
            continue
        seen.add(i)
        entries.append((rank_value(s), i, r, p))
    out = [[False] * len(ss) for ss in scores]
    for _, _, r, p in sorted(entries)[:k]:
        out[r][p] = True
    return out


def n_distinct(index: list[torch.Tensor]) -> int:
    return len({i for ii in index for i in ii.tolist()})


# -- radix pieces ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_ordered_key_sorts_like_the_ranking_rule(dtype):
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.tensor(SPECIALS, dtype=torch.float64), torch.randn(200, generator=g, dtype=torch.float64),
                        torch.randn(50, generator=g, dtype=torch.float64) * 1e-40,
                        torch.randn(50, generator=g, dtype=torch.float64).round()]).to(dtype)
    keys = ordered_key(values)
    assert keys.dtype == (torch.int64 if dtype == torch.float64 else torch.int32)
    vals, ks = values.tolist(), keys.tolist()
    for a in range(len(vals)):
        for b in range(len(vals)):
            ra, rb = rank_value(vals[a]), rank_value(vals[b])
            assert (ks[a] < ks[b]) == (ra < rb) and (ks[a] == ks[b]) == (ra == rb), (vals[a], vals[b])


def test_ordered_key_special_values():
    k32 = ordered_key(torch.tensor([-0.0, 0.0, math.nan, -math.inf, math.inf]))
    assert k32.tolist() == [0, 0, nonfinite_key(32), nonfinite_key(32), nonfinite_key(32)]
    # a NaN with the sign bit set and a custom payload is still "non-finite, last"
    neg_nan = torch.tensor([struct.unpack("<f", struct.pack("<I", 0xFFC00123))[0]])
    assert ordered_key(neg_nan).item() == nonfinite_key(32)
    assert ordered_key(torch.tensor([3.4028234e38])).item() < nonfinite_key(32)
    assert key_bits(torch.float64) == 64 and key_bits(torch.bfloat16) == 32
    with pytest.raises(ValueError, match=r"`bits` must be 32 or 64, got 16"):
        nonfinite_key(16)


@pytest.mark.parametrize("bits", [32, 64])
def test_radix_digit_matches_unsigned_arithmetic(bits):
    g = random.Random(bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    keys = [lo, hi, 0, -1, 1] + [g.randint(lo, hi) for _ in range(300)]
    t = torch.tensor(keys, dtype=torch.int32 if bits == 32 else torch.int64)
    for shift, width in [(0, 1), (3, 5), (bits - 11, 11), (bits - 16, 16), (bits - 1, 1), (7, 16)]:
        want = [((x + (1 << (bits - 1))) >> shift) % (1 << width) for x in keys]
        assert radix_digit(t, shift, width, bits).tolist() == want
    with pytest.raises(ValueError, match=r"`width` must be in \[1, 16\], got 17"):
        radix_digit(t, 0, 17, bits)
    with pytest.raises(ValueError, match=rf"`shift` must be in \[0, {bits - 4}\].*got {bits}"):
        radix_digit(t, bits, 4, bits)


def test_select_bin_and_histogram_against_loops():
    g = random.Random(1)
    for _ in range(200):
        counts = [g.choice([0, 0, 1, 2, 5]) for _ in range(g.randint(1, 9))]
        if sum(counts) == 0:
            counts[0] = 1
        k = g.randint(1, sum(counts))
        running = 0
        for j, c in enumerate(counts):
            if running + c >= k:
                want = (j, k - running)
                break
            running += c
        assert select_bin(torch.tensor(counts), k) == want
    with pytest.raises(ValueError, match=r"`k` must be in \[1, 3\].*got 4"):
        select_bin(torch.tensor([1, 2]), 4)
    d = torch.tensor([3, 0, 3, 1], dtype=torch.int32)
    assert digit_histogram(d, 2).tolist() == [1, 1, 0, 2]
    assert digit_histogram(d[:0], 3).tolist() == [0] * 8


@pytest.mark.parametrize("bits_per_pass", [1, 3, 11, 16])
@pytest.mark.parametrize("bits", [32, 64])
def test_kth_smallest_key_matches_sorted(bits, bits_per_pass):
    g = torch.Generator().manual_seed(bits + bits_per_pass)
    keys = ordered_key(torch.cat([torch.randn(300, generator=g).round(), torch.tensor(SPECIALS)]).to(
        torch.float64 if bits == 64 else torch.float32))
    ref = sorted(keys.tolist())
    for k in [1, 2, 50, 150, len(ref) - 1, len(ref)]:
        assert kth_smallest_key(keys, k, bits, bits_per_pass) == ref[k - 1]
    assert sum(w for _, w in pass_schedule(bits, bits_per_pass)) == bits


def test_first_occurrence_mask_matches_reference():
    g = torch.Generator().manual_seed(2)
    for n in [0, 1, 2, 17, 200]:
        idx = torch.randint(0, max(n // 2, 1), (n,), generator=g)
        seen, want = set(), []
        for i in idx.tolist():
            want.append(i not in seen)
            seen.add(i)
        assert first_occurrence_mask(idx).tolist() == want


# -- simulated ranks -------------------------------------------------------------------------------------------
def make_scores(n: int, seed: int, kind: str, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "equal":
        return torch.full((n,), 0.5, dtype=dtype)
    s = torch.randn(n, generator=g, dtype=torch.float64)
    if kind == "ties":
        s = (s * 2).round() / 2
        s[torch.rand(n, generator=g) < 0.15] = 0.0
        s[torch.rand(n, generator=g) < 0.1] = -0.0
        bad = torch.rand(n, generator=g) < 0.2
        s[bad] = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)[
            torch.randint(0, 3, (int(bad.sum()),), generator=g)]
    return s.to(dtype)


def split(n: int, world: int, layout: str, seed: int) -> list[torch.Tensor]:
    """Dataset indices per rank: contiguous blocks, strided, shuffled, one empty rank, or padded with repeats."""
    g = torch.Generator().manual_seed(seed)
    if layout == "blocks":
        return [ShardedSampler(n, world, r).indices() for r in range(world)]
    if layout == "strided":
        perm = torch.randperm(n, generator=g)
        return [perm[r::world] for r in range(world)]
    if layout == "empty-rank":
        return [torch.arange(0)] + [t + 1000 for t in split(n, world - 1, "strided", seed)] if world > 1 else \
            [torch.arange(n)]
    if layout == "padded":  # DistributedSampler(drop_last=False): repeats the first samples at the end
        perm = torch.randperm(n, generator=g)
        total = -(-n // world) * world
        perm = torch.cat([perm, perm[: total - n]])
        return [perm[r:total:world] for r in range(world)]
    if layout == "local-repeats":  # repeats inside one rank and across ranks, in random places
        idx = torch.randint(0, max(n // 2, 1), (n,), generator=g)
        return list(torch.tensor_split(idx, world))
    raise AssertionError(layout)


def shard_scores(index: list[torch.Tensor], seed: int, kind: str, dtype=torch.float32) -> list[torch.Tensor]:
    """Scores as a function of the dataset index, so repeated indices carry the same score."""
    span = max((int(i.max()) for i in index if i.numel()), default=0) + 1
    table = make_scores(span, seed, kind, dtype)
    return [table[i] for i in index]


LAYOUTS = ["blocks", "strided", "empty-rank", "padded", "local-repeats"]


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["ties", "normal", "equal"])
def test_simulated_ranks_match_single_process_reference(world, layout, kind):
    for seed, n in enumerate([world, 23, 64, 301]):
        index = split(n, world, layout, seed)
        scores = shard_scores(index, seed, kind)
        u = n_distinct(index)
        if u < world:
            continue
        for k in sorted({0, 1, u // 3, u // 2, u - 1, u}):
            want = reference_masks(scores, index, k)
            for algorithm, bits, chunk in [("gather", 11, 1 << 18), ("histogram", 11, 7), ("histogram", 3, 1 << 18)]:
                comm = SimulatedCollectives(world)
                masks, info = sharded_smallest_k_masks(scores, index, k, comm, algorithm=algorithm,
                                                       bits_per_pass=bits, chunk_size=chunk)
                assert [m.tolist() for m in masks] == want, (algorithm, bits, n, k)
                assert info.k == k and info.n == u and sum(int(m.sum()) for m in masks) == k


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64])
def test_simulated_ranks_other_dtypes(dtype):
    index = split(97, 3, "strided", 5)
    scores = shard_scores(index, 5, "ties", torch.float64)
    scores = [s.nan_to_num(0.0).mul(7).round().to(dtype) if not dtype.is_floating_point else s.to(dtype)
              for s in scores]
    for k in [0, 13, 48, 97]:
        want = reference_masks(scores, index, k)
        for algorithm in ["gather", "histogram"]:
            masks, _ = sharded_smallest_k_masks(scores, index, k, SimulatedCollectives(3), algorithm=algorithm)
            assert [m.tolist() for m in masks] == want


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_wide_integer_scores_do_not_round_into_ties(dtype):
    """A reviewer's case: integer scores above 2**24 (counts, hashed ids) were ranked as float32, so 2**24 + 1 tied
    2**24 and the index, not the score, decided. They rank as float64 now, exactly, on every path."""
    base = 1 << 24
    values = [base + 3, base + 1, base + 2, base, base + 1, base + 5, base + 4]
    index = [torch.tensor([6, 0, 4, 2]), torch.tensor([1, 5, 3])]
    scores = [torch.tensor([values[i] for i in ii.tolist()], dtype=dtype) for ii in index]
    assert ordered_key(scores[0]).dtype == torch.int64 and key_bits(dtype) == 64
    assert key_bits(torch.int16) == 32 and key_bits(torch.bool) == 32
    for k in [1, 2, 3, 5]:
        want = reference_masks(scores, index, k)
        for algorithm in ["gather", "histogram"]:
            masks, _ = sharded_smallest_k_masks(scores, index, k, SimulatedCollectives(2), algorithm=algorithm)
            assert [m.tolist() for m in masks] == want, (algorithm, k)
    flat, flat_index = torch.cat(scores), torch.cat(index)
    assert flat_index[rank_order(flat, flat_index)].tolist() == [3, 1, 4, 2, 0, 6, 5]
    assert flat_index[trim_mask(flat, 2 / 7, flat_index)].tolist() == [1, 3]


def test_a_ratio_is_checked_in_the_meta_row_without_another_collective():
    """The diff reviewer's: checking a per-rank ratio cost one more all-gather per global selection (every training
    step under `scope="global"`, two for Co-teaching). A ratio's `k` travels in the meta row exchanged anyway; a plain
    function of n still gets the extra check."""
    from lit_robust.selection.sharded import RatioK

    class Counting(SimulatedCollectives):
        calls = 0

        def all_gather(self, tensors):
            Counting.calls += 1
            return super().all_gather(tensors)

    index = split(30, 2, "strided", 1)
    scores = shard_scores(index, 1, "ties", torch.float32)
    counts = {}
    for name, k in [("ratio", RatioK(lambda n: keep_count(n, 0.7), 0.7)), ("function", lambda n: keep_count(n, 0.7))]:
        Counting.calls = 0
        masks, _ = sharded_smallest_k_masks(scores, index, k, Counting(2), algorithm="gather")
        counts[name] = Counting.calls
        assert [m.tolist() for m in masks] == reference_masks(scores, index, keep_count(30, 0.7))
    assert counts["ratio"] == counts["function"] - 1
    # -0.0 is the ratio 0.0 (a reviewer's two ranks were refused: "ratio differs: [0.0, -0.0]")
    assert RatioK(lambda n: n, -0.0).bits == RatioK(lambda n: n, 0.0).bits


def test_one_shard_equals_smallest_k_mask_and_callable_k():
    s = make_scores(1000, 3, "ties")
    idx = torch.randperm(1000, generator=torch.Generator().manual_seed(3)) * 7 - 500
    for algorithm in ["gather", "histogram", "auto"]:
        (mask,), info = sharded_smallest_k_masks([s], [idx], lambda n: keep_count(n, 0.37), SimulatedCollectives(1),
                                                 algorithm=algorithm)
        assert torch.equal(mask, trim_mask(s, 0.37, idx))
    assert info.algorithm == "gather"  # auto picks gather for small n


def test_histogram_traffic_does_not_grow_with_n():
    sent = {}
    for n in [20_000, 200_000]:
        index = split(n, 4, "blocks", 0)
        scores = shard_scores(index, 0, "normal")
        k = n // 3
        comm = SimulatedCollectives(4)
        masks, info = sharded_smallest_k_masks(scores, index, k, comm, algorithm="histogram")
        assert sum(int(m.sum()) for m in masks) == k and info.dedupe == "disjoint"
        sent[n] = (info.bytes_sent, info.bytes_received)
        assert info.bytes_sent <= 7 * 8 + info.passes * (1 << 11) * 8 + 3 * 8
        gathered = sharded_smallest_k_masks(scores, index, k, SimulatedCollectives(4), algorithm="gather")[1]
        assert gathered.bytes_received >= 12 * n
    assert sent[20_000] == sent[200_000]


def test_simulated_bad_input():
    comm = SimulatedCollectives(2)
    s, i = [torch.rand(3), torch.rand(2)], [torch.arange(3), torch.arange(3, 6)]
    with pytest.raises(ValueError, match=r"rank 1: `index` must have one entry per score: its length must be in "
                                         r"\[2, 2\].*got 3"):
        sharded_smallest_k_masks(s, i, 1, comm)
    with pytest.raises(ValueError, match=r"`k` must be in \[0, 5\].*got 6"):
        sharded_smallest_k_masks([torch.rand(3), torch.rand(2)], [torch.arange(3), torch.arange(3, 5)], 6, comm)
    with pytest.raises(ValueError, match=r"`scores` must have one dtype on every rank"):
        sharded_smallest_k_masks([torch.rand(3), torch.rand(2).double()], [torch.arange(3), torch.arange(3, 5)], 1, comm)
    with pytest.raises(ValueError, match=r"`index` must be an integer tensor, got dtype torch.float32"):
        sharded_smallest_k_masks([torch.rand(3), torch.rand(2)], [torch.arange(3.0), torch.arange(3, 5)], 1, comm)
    with pytest.raises(ValueError, match=r"`algorithm` must be in \['auto', 'gather', 'histogram'\], got 'sort'"):
        sharded_smallest_k_masks(s, i, 1, comm, algorithm="sort")  # type: ignore[arg-type]



@pytest.mark.parametrize("algorithm", ["gather", "histogram"])
def test_fewer_distinct_samples_than_ranks_select_what_one_process_selects(algorithm):
    """It was refused ("at least one distinct sample per rank"), and so a DDP fit with `ITLM(per_class=True)` crashed
    at a class of one sample, which one process selects without a word (a reviewer's, 2 and 3 gloo ranks)."""
    for world, scores, index in ((2, [torch.tensor([0.4]), torch.tensor([])], [torch.tensor([7]), torch.tensor([])]),
                                 (3, [torch.tensor([0.9]), torch.tensor([0.9]), torch.tensor([0.1])],
                                  [torch.tensor([4]), torch.tensor([4]), torch.tensor([2])])):
        comm = SimulatedCollectives(world)
        for k in range(3):
            distinct = torch.cat(index).unique().numel()
            if k > distinct:
                continue
            masks = sharded_smallest_k_masks(scores, [i.long() for i in index], k, comm, algorithm=algorithm)[0]
            kept = sorted({int(i) for m, ix in zip(masks, index) for i in ix[m]})
            expected = [2, 4][:k] if world == 3 else [7][:k]
            assert kept == expected, (world, k, kept)
    per_class = [torch.tensor([0.5, 0.2]), torch.tensor([0.3])], [torch.arange(2), torch.tensor([2])]
    assert sum(int(m.sum()) for m in sharded_smallest_k_masks(*per_class, 1, SimulatedCollectives(2),
                                                              algorithm=algorithm)[0]) == 1

def test_device_is_checked_against_the_backend(monkeypatch):
    monkeypatch.setattr(D, "backend", lambda group=None: "nccl")
    with pytest.raises(ValueError, match=r"`scores` must be on a device in \['cuda'\] for the nccl process group, "
                                         r"got cpu"):
        D.check_device("scores", torch.zeros(3))
    monkeypatch.setattr(D, "backend", lambda group=None: "gloo")
    D.check_device("scores", torch.zeros(3))


def test_single_process_fallbacks():
    assert not D.is_distributed() and D.world_size() == 1 and D.rank() == 0
    t = torch.arange(5.0)
    assert [x.tolist() for x in D.all_gather_uneven(t)] == [t.tolist()]
    assert torch.equal(D.all_gather_cat(t), t) and torch.equal(D.all_reduce_sum(t), t) and torch.equal(D.broadcast(t), t)
    assert D.gather_objects({"rows": [1, 2]}) == [{"rows": [1, 2]}]
    with pytest.raises(ValueError, match=r"`dst` must be in \[0, 0\] without a process group, got 1"):
        D.gather_objects(None, dst=1)
    s = make_scores(50, 1, "ties")
    idx = torch.randperm(50)
    assert torch.equal(D.global_smallest_k_mask(s, idx, 17), smallest_k_mask(s, 17, idx))
    assert torch.equal(D.global_trim_mask(s, idx, 0.6, algorithm="histogram"), trim_mask(s, 0.6, idx))
    assert torch.equal(D.global_batch_keep_mask(s, idx, drop_ratio=0.3), trim_mask(s, 0.7, idx))
    with pytest.raises(ValueError, match=r"`drop_ratio` must be in \[0, 1\), got 1.0"):
        D.global_batch_keep_mask(s, idx, drop_ratio=1.0)
    with pytest.raises(ValueError, match=r"exactly one of `drop_ratio` and `k`"):
        D.global_batch_keep_mask(s, idx)
    # its arguments by their own names (the checks it shares with global_selection said `index` and `scores`)
    with pytest.raises(ValueError, match=r"^`local_index` must have one entry per score: its length must be in "
                                         r"\[50, 50\] \(the length of `local_scores` on this rank\), got 49\.$"):
        D.global_batch_keep_mask(s, idx[:49], drop_ratio=0.3)
    with pytest.raises(ValueError, match=r"^`local_index` must be an integer tensor, got dtype torch.float32\.$"):
        D.global_batch_keep_mask(s, idx.float(), drop_ratio=0.3)
    with pytest.raises(ValueError, match=r"^`local_scores` must have a real dtype in .*, got torch.complex64\.$"):
        D.global_batch_keep_mask(s.to(torch.complex64), idx, k=3)
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\], got 0"):
        D.global_trim_mask(s, idx, 0)


def test_sharded_sampler_covers_every_index_once():
    for n in [0, 1, 10, 11, 12]:
        for world in [1, 2, 3, 5]:
            parts = [list(ShardedSampler(n, world, r)) for r in range(world)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match=r"`rank` must be an integer in \[0, 1\], got 2"):
        ShardedSampler(5, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=r"`n` must be an integer >= 0, got -1"):
        ShardedSampler(-1, 1, 0)


@pytest.mark.parametrize("make, message", [
    (lambda: SelectionSampler(5.0, shuffle=False), r"`n` must be an integer >= 0, got 5.0\."),
    (lambda: SelectionSampler(5, selection=torch.tensor([0.5, 1.7])),
     r"`selection` must hold integer dataset indices, got dtype torch.float32\."),
    (lambda: SelectionSampler(5, selection=torch.tensor([1, 7])),
     r"`selection` indices must be in \[0, 4\] \(the dataset's length is 5\), got 7\."),
    (lambda: SelectionSampler(5, num_replicas=2, rank=True), r"`rank` must be an integer in \[0, 1\], got True"),
    (lambda: SelectionSampler(5, num_replicas=2.5, rank=0), r"`num_replicas` must be an integer >= 1, got 2.5\."),
    # the Python API sweep: seed=2.5 and seed=-1 shuffled with a seed nobody asked for, seed="7" failed in the first
    # epoch naming nothing, shuffle="no" (truthy) shuffled, selection="zzz" ended in torch's "invalid data type"
    (lambda: SelectionSampler(5, seed=2.5), r"`seed` must be an integer in \[0, 4294967295\], got 2.5\."),
    (lambda: SelectionSampler(5, seed=-1), r"`seed` must be an integer in \[0, 4294967295\], got -1\."),
    (lambda: SelectionSampler(5, seed="7"), r"`seed` must be an integer in \[0, 4294967295\], got '7' \(a str\)\."),
    (lambda: SelectionSampler(5, shuffle="no"), r"`shuffle` must be True or False, got 'no' \(a str\)\."),
    (lambda: SelectionSampler(5, selection="zzz"),
     r"`selection` must be a tensor or sequence of integer dataset indices, got str 'zzz'\."),
    (lambda: ShardedSampler(10, num_replicas=True, rank=0), r"`num_replicas` must be an integer >= 1, got True"),
    (lambda: ShardedSampler(10, num_replicas=2.0, rank=1), r"`num_replicas` must be an integer >= 1, got 2.0\."),
    (lambda: ShardedSampler(10, num_replicas=3, rank=1.5), r"`rank` must be an integer in \[0, 2\], got 1.5\."),
])
def test_samplers_take_integers_only_and_name_the_value(make, message):
    """A reviewer's `SelectionSampler(5.0)` yielded float indices, a float `selection` was truncated (0.5, 1.7 ->
    0, 1), `rank=True` / `num_replicas=True` passed as 1, and the out-of-range error named no value."""
    with pytest.raises(ValueError, match=message):
        make()
    assert list(SelectionSampler(np.int64(5), selection=np.array([3, 1]), shuffle=False)) == [1, 3]


# -- real ranks (gloo on CPU) ---------------------------------------------------------------------------------
def rank_cases(world: int) -> list[dict]:
    """Every rank builds the same list; rank r uses shard r."""
    cases = []
    for name, n, layout, kind, dtype in [
        ("uneven-ties-nan", 23, "blocks", "ties", torch.float32),
        ("strided-equal", 20, "strided", "equal", torch.float32),
        ("empty-rank", 17, "empty-rank", "ties", torch.float32),
        ("padded-repeats", 10, "padded", "ties", torch.float32),
        ("float64-strided", 31, "strided", "ties", torch.float64),
        ("large-blocks", 30_001, "blocks", "normal", torch.float32),
        ("large-ties-strided", 20_000, "strided", "ties", torch.float32),
    ]:
        index = split(n, world, layout, n)
        scores = shard_scores(index, n, kind, dtype)
        u = n_distinct(index)
        for k in sorted({0, 1, u // 2 - 1, u // 2, u}):
            cases.append(dict(name=f"{name}-k{k}", index=index, scores=scores, k=k))
    return cases


def per_class_labels(index: torch.Tensor) -> torch.Tensor:
    """Class labels as a function of the dataset index: classes 0, 1, 3 (none labelled 2), class 3 on few samples."""
    return torch.where(index % 11 == 0, 3, index % 2)


def _rank_main(r: int, world: int, init_file: str, out_dir: str) -> None:
    results: dict = {}
    torch.set_num_threads(1)  # W ranks share 2 cores; more threads only contend
    try:
        D.init_process_group("gloo", f"file://{init_file}", world, r, timeout_s=60)
        for case in rank_cases(world):
            for algorithm, bits in [("gather", 11), ("histogram", 11), ("histogram", 5), ("auto", 11)]:
                mask, info = D.global_selection(case["scores"][r], case["index"][r], case["k"], algorithm,
                                                bits_per_pass=bits)
                results[(case["name"], algorithm, bits)] = (mask.tolist(), info.algorithm, info.dedupe)
        # per-class trimming (ITLM(per_class=True)): classes absent from some ranks, an empty rank
        for layout in ("blocks", "strided", "empty-rank"):
            idx = split(37, world, layout, 5)
            sc = shard_scores(idx, 5, "ties")
            results[("per_class", layout)] = D.global_per_class_trim_mask(sc[r], idx[r], per_class_labels(idx[r]),
                                                                          0.6).tolist()
        # global batch filter over padded batches
        idx = split(10, world, "padded", 3)
        sc = shard_scores(idx, 3, "ties")
        results["batch"] = D.global_batch_keep_mask(sc[r], idx[r], drop_ratio=0.3).tolist()
        # helpers with a rank holding nothing
        rows = torch.arange(r * 2, dtype=torch.float32).reshape(r, 2) + 100 * r
        results["gather_uneven"] = [t.tolist() for t in D.all_gather_uneven(rows)]
        results["reduce"] = D.all_reduce_sum(torch.tensor([r, 1])).tolist()
        results["broadcast"] = D.broadcast(torch.tensor([r * 10]), src=world - 1).tolist()
        # bad input on one rank: every rank raises (no hang), and the group stays usable
        errors = {}
        good_s, good_i = torch.rand(4), torch.arange(4 * r, 4 * r + 4)
        for label, args in [
            ("lengths", (good_s, good_i[:3] if r == 1 else good_i, 2)),
            ("k-differs", (good_s, good_i, 2 + (r == 1))),
            ("world>n", (torch.rand(1 if r == 0 else 0), torch.arange(1 if r == 0 else 0), 2)),
            ("dtype", (good_s.double() if r == 1 else good_s, good_i, 2)),
            ("k-range", (good_s, good_i, 4 * world + 1)),
        ]:
            try:
                D.global_smallest_k_mask(*args, algorithm="histogram")
                errors[label] = "no error"
            except ValueError as e:
                errors[label] = str(e)
        # a ratio that differs between ranks resolves to another k on each: every rank raises (it kept 6 of 10)
        for label, call in [
            ("trim-ratio-differs", lambda: D.global_trim_mask(good_s, good_i, 0.4 if r == 1 else 0.7, "histogram")),
            ("batch-ratio-differs",
             lambda: D.global_batch_keep_mask(good_s, good_i, drop_ratio=0.6 if r == 1 else 0.3)),
            ("per-class-short-index", lambda: D.global_per_class_trim_mask(good_s, good_i[:3] if r == 1 else good_i,
                                                                           good_i % 2, 0.5)),
        ]:
            try:
                call()
                errors[label] = "no error"
            except ValueError as e:
                errors[label] = str(e)
        results["errors"] = errors
        # per class: a rank's float labels raise on every rank (the others hung in the collective); a rank with no
        # samples passes `torch.tensor([])` (float); a class of one sample among 2-3 ranks (it crashed)
        try:
            D.global_per_class_trim_mask(good_s, good_i, good_i.float() if r == 1 else good_i % 2, 0.5)
            results["per_class_bad"] = "no error"
        except ValueError as e:
            results["per_class_bad"] = str(e)
        s3, i3, l3 = torch.tensor([0.3, 0.1, 0.2]), torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1])
        results["per_class_small"] = (D.global_per_class_trim_mask(s3, i3, l3, 0.5).tolist() if r == 0 else
                                      D.global_per_class_trim_mask(torch.tensor([]), torch.tensor([], dtype=torch.long),
                                                                   torch.tensor([]), 0.5).tolist())
        results["alive"] = D.all_reduce_sum(torch.tensor([1])).tolist()
    except Exception:  # report instead of dying silently
        results["crash"] = traceback.format_exc()
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{r}.pt"))
        D.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"world{w}")
def gloo_run(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"gloo{world}")
    start_ranks(_rank_main, (world, str(out / "init"), str(out)), world)  # forked where safe
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r} crashed:\n{res['crash']}"
    return world, results


def test_gloo_selection_equals_single_process(gloo_run):
    world, results = gloo_run
    checked = 0
    for case in rank_cases(world):
        want = reference_masks(case["scores"], case["index"], case["k"])
        for algorithm, bits in [("gather", 11), ("histogram", 11), ("histogram", 5), ("auto", 11)]:
            got = [results[r][(case["name"], algorithm, bits)] for r in range(world)]
            assert [g[0] for g in got] == want, (case["name"], algorithm, bits)
            assert len({(g[1], g[2]) for g in got}) == 1  # every rank took the same path
            if algorithm == "histogram" and case["name"].startswith("large-blocks"):
                assert got[0][2] == "disjoint"
            if algorithm == "histogram" and "strided" in case["name"]:
                assert got[0][2] == "gather-index"
            checked += 1
    assert checked >= 100


def test_gloo_batch_filter_and_helpers(gloo_run):
    world, results = gloo_run
    idx = split(10, world, "padded", 3)
    sc = shard_scores(idx, 3, "ties")
    want = reference_masks(sc, idx, keep_count(10, 0.7))
    assert [results[r]["batch"] for r in range(world)] == want
    want_rows = [(torch.arange(r * 2, dtype=torch.float32).reshape(r, 2) + 100 * r).tolist() for r in range(world)]
    for r in range(world):
        assert results[r]["gather_uneven"] == want_rows
        assert results[r]["reduce"] == [sum(range(world)), world]
        assert results[r]["broadcast"] == [(world - 1) * 10]
        assert results[r]["alive"] == [world]


def test_gloo_per_class_trim_equals_single_process(gloo_run):
    world, results = gloo_run
    for layout in ("blocks", "strided", "empty-rank"):
        idx = split(37, world, layout, 5)
        sc = shard_scores(idx, 5, "ties")
        whole = per_class_trim_mask(torch.cat(sc), per_class_labels(torch.cat(idx)), 0.6, torch.cat(idx)).tolist()
        want, start = [], 0
        for part in idx:
            want.append(whole[start:start + part.numel()])
            start += part.numel()
        assert [results[r][("per_class", layout)] for r in range(world)] == want, layout
        assert sum(map(sum, want)) == sum(math.floor(0.6 * int((per_class_labels(torch.cat(idx)) == c).sum()))
                                          for c in (0, 1, 3))


def test_gloo_bad_input_raises_on_every_rank(gloo_run):
    world, results = gloo_run
    patterns = {
        "lengths": r"`index` must have one entry per score: its length must be in \[4, 4\].*got 3",
        "k-differs": r"`k` must be the same on every rank, got \[2, 3\]",
        "world>n": r"`k` must be in \[0, 1\] \(the global number of distinct samples\), got 2",  # 1 sample, 2+ ranks
        "dtype": r"`scores` must have one dtype on every rank",
        "k-range": rf"`k` must be in \[0, {4 * world}\].*got {4 * world + 1}",
        "trim-ratio-differs": r"`k` must be the same on every rank, but its ratio differs: \[0\.7, 0\.4.*\]",
        "batch-ratio-differs": r"`k` must be the same on every rank, but its ratio differs: \[0\.7, 0\.4.*\]",
        "per-class-short-index": r"`index`|another rank's `scores`, `index` or `labels` are bad",
    }
    import re

    for r in range(world):
        for label, pattern in patterns.items():
            assert re.search(pattern, results[r]["errors"][label]), (r, label, results[r]["errors"][label])
    own = "`labels` must be integer class labels, got dtype torch.float32."
    other = "another rank's `scores`, `index` or `labels` are bad (its error says why)."
    assert [results[r]["per_class_bad"] for r in range(world)] == [other] + [own] + [other] * (world - 2)
    # rank 0's 3 samples, the others none: what one process keeps (class 1's one sample keeps floor(0.5) = 0)
    assert results[0]["per_class_small"] == [False, True, False] and results[1]["per_class_small"] == []
    # the rank with the bad lengths reports its own message; the others say which rank it was
    assert results[1]["errors"]["lengths"].startswith("`index`")
    assert results[0]["errors"]["lengths"].startswith("rank 1: ")
    # a ratio differing per rank (0.7 and 0.4 kept 6 of 10, neither) and a short `index` of one rank under per-class
    # trimming (a bare IndexError on that rank while the others waited): the same kind of error on every rank
    assert results[1]["errors"]["per-class-short-index"].startswith("`index` must have one entry per score")
    ratios = [0.4 if r == 1 else 0.7 for r in range(world)]
    assert {results[r]["errors"]["trim-ratio-differs"] for r in range(world)} == {
        f"`k` must be the same on every rank, but its ratio differs: {ratios} (in rank order): pass the same "
        "`keep_ratio` / `drop_ratio` on every rank."}


def test_global_entry_points_take_numpy_and_0d_tensor_ratios_as_the_one_process_rules_do():
    """`trim_mask(s, np.float32(0.5))` worked; `global_trim_mask` said "`keep_ratio` must be in (0, 1], got
    np.float32(0.5)", a reviewer's contradiction."""

    s, i = torch.tensor([0.9, 0.1, 0.4, 0.3]), torch.arange(4)
    want = trim_mask(s, 0.5, i).tolist()
    for ratio in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5)):
        assert D.global_trim_mask(s, i, ratio).tolist() == want
        assert D.global_per_class_trim_mask(s, i, torch.zeros(4, dtype=torch.long), ratio).tolist() == want
        assert D.global_batch_keep_mask(s, i, drop_ratio=ratio).tolist() == want
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\], got 1.5"):
        D.global_trim_mask(s, i, np.float64(1.5))


def test_global_k_takes_numpy_integers_and_names_k_when_it_overflows():
    """A reviewer's `k=np.int64(2)` was refused while numpy ratios were taken, and `k=2**70` failed with "Overflow
    when unpacking long long" instead of naming `k`."""

    s, i = torch.tensor([0.9, 0.1, 0.4, 0.3]), torch.arange(4)
    want = smallest_k_mask(s, 2, i).tolist()
    for k in (np.int64(2), np.int32(2)):
        assert D.global_smallest_k_mask(s, i, k).tolist() == want
        assert D.global_batch_keep_mask(s, i, k=k).tolist() == want
    assert D.global_trim_mask(s, i, 0.5).tolist() == want  # a ratio resolved to k, checked against the other ranks
    with pytest.raises(ValueError, match=r"`k` must be in \[0, n\] \(the global number of distinct samples\), got "
                                         rf"{2**70}\."):
        D.global_smallest_k_mask(s, i, 2**70)


def test_parts_to_restore_in_one_process_takes_every_saved_part_and_an_older_checkpoints_rank_0s():
    """A checkpoint keeps every rank's part of a running state (rank 0's in its own fields, the others' beside): a fit
    resumed on one process restores all of them (a 2-rank checkpoint's rank 1 part was lost), one written in one
    process its own, and one written before the other ranks' were saved (``None``) rank 0's."""
    assert D.other_ranks_parts("mine") == []
    assert D.parts_to_restore("r0", ["r1", "r2"]) == ["r0", "r1", "r2"]
    assert D.parts_to_restore("r0", []) == ["r0"]
    assert D.parts_to_restore("r0", None) == ["r0"]
