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
