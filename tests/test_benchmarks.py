"""The benchmark scripts run end to end (``--smoke`` level) and end with one JSON line of headline figures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

EXPECTED_RATIOS = {"itlm/scoring_pass_throughput", "itlm/scoring_pass_vs_no_grad_loop", "mixin/training_step",
                   "itlm/fit"}


@pytest.fixture(scope="module")
def smoke_runs() -> dict[str, subprocess.CompletedProcess]:
    """Both scripts' ``--smoke`` modes, launched side by side (each uses one torch thread)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.fail(f"offline MNIST expected under {SHARED_DATA} (set LIT_ROBUST_DATA)")
    procs = {
        name: subprocess.Popen([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--smoke",
                                "--data-root", str(SHARED_DATA)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for name in ("itlm_mnist", "overhead")
    }
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


def _last_json(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert lines, run.stderr[-3000:]
    return json.loads(lines[-1])


def test_itlm_mnist_smoke_ends_with_headline_json(smoke_runs):
    summary = _last_json(smoke_runs["itlm_mnist"])
    assert summary["benchmark"] == "itlm_mnist" and summary["mode"] == "smoke"
    row = summary["rows"]["systematic_70"]
    assert set(row) == {"baseline", "itlm", "oracle"}
    assert all(0.0 <= v <= 100.0 for v in row.values())
    assert "| systematic | 70 % |" in smoke_runs["itlm_mnist"].stdout  # the markdown table was printed


def test_overhead_smoke_ends_with_ratios_json(smoke_runs):
    summary = _last_json(smoke_runs["overhead"])
    assert summary["benchmark"] == "overhead" and summary["mode"] == "smoke"
    assert set(summary["ratios"]) == EXPECTED_RATIOS
    assert all(r > 0 for r in summary["ratios"].values())
    assert set(summary["targets_met"]) == EXPECTED_RATIOS


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_itlm_mnist_rejects_bad_rows():
    with pytest.raises(SystemExit, match="`--rows` entries must look like 'systematic:60', got 'noisy:60'"):
        _load("itlm_mnist").main(["--smoke", "--rows", "noisy:60"])


def test_overhead_rejects_unknown_measurement():
    with pytest.raises(SystemExit, match="`--only` must name measurements among"):
        _load("overhead").main(["--smoke", "--only", "nope"])


def test_overhead_registry_has_the_issue_2_rows():
    mod = _load("overhead")
    rows = {m.name: (m.kind, m.target) for m in mod.MEASUREMENTS}
    assert rows == {"itlm/scoring_pass_throughput": ("throughput", 0.9),
                    "itlm/scoring_pass_vs_no_grad_loop": ("throughput", None),
                    "mixin/training_step": ("time", 1.02), "itlm/fit": ("time", 1.10)}


def test_gan_mixture_smoke_ends_with_headline_json():
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gan_mixture.py"), "--smoke", "--data-root",
                          str(SHARED_DATA)], capture_output=True, text=True, cwd=REPO, timeout=300)
    summary = _last_json(run)
    assert summary["benchmark"] == "gan_mixture" and summary["mode"] == "smoke"
    row = summary["rows"]["80"]
    assert row["clean_fraction"][0] == 80.0 and len(row["clean_fraction"]) == 2  # orig, then one ITLM selection
    assert 0.0 <= row["clean_fraction"][1] <= 100.0 and 0.0 <= row["generated_digit_share_last"] <= 100.0
    assert "| 80 % | ours | 80.00 ± 0.00 |" in run.stdout  # the markdown table was printed


def test_gan_mixture_rejects_bad_rows():
    with pytest.raises(SystemExit, match=r"`--rows` must be clean percentages in \(5, 100\], got \[3\]"):
        _load("gan_mixture").main(["--smoke", "--rows", "3"])
