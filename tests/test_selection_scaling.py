"""The selection-scaling benchmark runs end to end (``--smoke``) and ends with one JSON line of headline figures."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests import _script_runner

REPO = Path(__file__).resolve().parents[1]


def test_selection_scaling_smoke_ends_with_headline_json():
    # forked from a server that has imported torch (tests/_script_runner.py), not a fresh interpreter
    run = _script_runner.run([REPO / "benchmarks" / "selection_scaling.py", "--smoke"], cwd=REPO,
                             env=dict(os.environ), repo=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    summary = json.loads(lines[-1])
    assert summary["benchmark"] == "selection_scaling" and summary["mode"] == "smoke"
    assert summary["all_exact"] is True  # every histogram mask equalled the gather mask
    assert summary["hist_bytes_independent_of_n"] is True
    assert summary["gather_bytes_received_at_n_max"] >= 12 * summary["n_max"]
    assert "| normal | 1e+06 | 64 |" in run.stdout  # the markdown table was printed


def test_selection_scaling_rejects_bad_options():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    mod = harness.load_module("selection_scaling")
    with pytest.raises(SystemExit, match=r"`--n-max` must be a size >= 1e\+05 \(this mode's smallest n\), got 10"):
        harness.main(mod.BENCHMARK, ["--smoke", "--n-max", "10"])
    with pytest.raises(SystemExit, match="`--threads` must be an integer >= 1, got 0"):
        harness.main(mod.BENCHMARK, ["--smoke", "--threads", "0"])
    with pytest.raises(SystemExit, match=r"`--jobs` must be 1 for selection_scaling .*got 2"):
        harness.main(mod.BENCHMARK, ["--smoke", "--jobs", "2"])


def test_selection_scaling_n_max_drops_sizes_and_says_so(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    mod = harness.load_module("selection_scaling")
    out = tmp_path / "s.md"
    summary = harness.main(mod.BENCHMARK, ["--smoke", "--n-max", "1e5", "--out", str(out)])
    assert summary["n_max"] == 10**5 and summary["all_exact"] is True
    assert "sizes [1000000] skipped by `--n-max 1e+05`." in out.read_text()
    assert harness.render_saved(out.with_suffix(".json")) == out.read_text()
    capsys.readouterr()


def test_selection_scaling_bound_counts_the_meta_row_the_selection_sends():
    """The meta row grew from 7 to 8 int64 (2026-12-05) but the benchmark's per-rank byte bound and its text kept
    56 bytes: the bound sat 8 bytes under what a selection running every pass sends. Both follow the row now; the
    committed run (saved before) still renders its 56."""
    from lit_robust.selection.radix import pass_schedule
    from lit_robust.selection.sharded import _META

    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    mod = harness.load_module("selection_scaling")
    row = dict(world=2, dist="normal", n=10**6, hist_sent=41024, ratio=1.0, gather_received=None, exact=None,
               kept_ok=True, hist_s=0.1, kth_s=0.1, topk_s=None, gather_s=None)
    summary = mod.summarise([row], [10**6], mod.QUICK)
    passes = pass_schedule(32, mod.QUICK.bits_per_pass) + pass_schedule(64, mod.QUICK.bits_per_pass)
    assert summary["meta_row_bytes"] == 8 * _META == 64
    assert summary["hist_bytes_sent_bound"] == 8 * _META + 8 + 24 + sum(8 << w for _, w in passes)
    saved = json.loads((REPO / "benchmarks" / "results" / "selection_scaling.json").read_text())
    assert "one 56-byte metadata row" in mod.BENCHMARK.render(saved)
    saved["results"]["summary"].update(summary)
    assert "one 64-byte metadata row" in mod.BENCHMARK.render(saved)
