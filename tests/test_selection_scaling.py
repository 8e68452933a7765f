"""The selection-scaling benchmark runs end to end (``--smoke``) and ends with one JSON line of headline figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_selection_scaling_smoke_ends_with_headline_json():
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "selection_scaling.py"), "--smoke"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    summary = json.loads(lines[-1])
    assert summary["benchmark"] == "selection_scaling" and summary["mode"] == "smoke"
    assert summary["all_exact"] is True  # every histogram mask equalled the gather mask
    assert summary["hist_bytes_independent_of_n"] is True
    assert summary["gather_bytes_received_at_n_max"] >= 12 * summary["n_max"]
    assert "| normal | 1e+06 | 64 |" in run.stdout  # the markdown table was printed
