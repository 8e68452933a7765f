"""The estimator-speed benchmark runs end to end (``--smoke``): the 1-D EMs (gmm and bmm) and the generic EM give the
same estimates, and the run ends with one JSON line of headline figures."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests import _script_runner

REPO = Path(__file__).resolve().parents[1]


def test_estimator_speed_smoke_ends_with_headline_json():
    run = _script_runner.run([REPO / "benchmarks" / "estimator_speed.py", "--smoke"], cwd=REPO,
                             env=dict(os.environ), repo=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads([line for line in run.stdout.splitlines() if line.strip()][-1])
    assert summary["benchmark"] == "estimator_speed" and summary["mode"] == "smoke"
    assert summary["same_output"] is True and summary["max_rate_diff"] <= 1e-12
    assert set(summary["ratio"]) == {f"{m}-2000-{k}" for m in ("gmm", "bmm") for k in ("clean", "noisy")}
    assert summary["ratio_min"] > 0
    assert "| gmm | 2,000 | clean |" in run.stdout and "| bmm | 2,000 | noisy |" in run.stdout  # the table


def test_estimator_speed_times_in_one_process():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    mod = harness.load_module("estimator_speed")
    with pytest.raises(SystemExit, match=r"`--jobs` must be 1 for estimator_speed .*got 2"):
        harness.main(mod.BENCHMARK, ["--smoke", "--jobs", "2"])
