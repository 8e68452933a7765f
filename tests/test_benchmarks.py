"""The benchmark scripts run end to end (``--smoke`` level) and end with one JSON line of headline figures."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests import _script_runner
from tests.conftest import REPO, SHARED_DATA

EXPECTED_RATIOS = {"itlm/scoring_pass_throughput", "itlm/scoring_pass_vs_no_grad_loop", "mixin/training_step",
                   "itlm/fit", "filter/prl_step", "filter/spl_step", "filter/prl_g_step",
                   "filter/prl_g_two_pass_step", "filter/prl_g_step_mlp", "filter/prl_g_step_wide_cnn",
                   "filter/prl_g_step_small_cnn",
                   "backdoor/adversarial_trigger_step", "data/indexed_loader_throughput",
                   "data/indexed_loader_vs_batched_tensor_loader", "data/itlm_fit_n1e4"}  # run in --smoke
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # the scripts import this checkout's lit_robust
HAS_OPACUS = importlib.util.find_spec("opacus") is not None  # the `bench` extra: the Opacus row runs only with it
if HAS_OPACUS:
    EXPECTED_RATIOS.add("filter/prl_g_vs_opacus")


@pytest.fixture(scope="module")
def smoke_runs() -> dict[str, subprocess.CompletedProcess]:
    """The scripts' ``--smoke`` modes, launched side by side (each uses one torch thread)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.fail(f"offline MNIST expected under {SHARED_DATA} (set LIT_ROBUST_DATA)")
    procs = {name: _script_runner.Launch([REPO / "benchmarks" / f"{name}.py", "--smoke", "--data-root", SHARED_DATA],
                                         cwd=REPO, env=ENV, repo=REPO)
             for name in ("itlm_mnist", "overhead", "batch_filters", "anomaly", "backdoor_mnist")}
    return {name: p.communicate(timeout=300) for name, p in procs.items()}


def _script(argv: list, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS`` from the repository root, its output captured: forked from a server that
    has imported torch and Lightning (:mod:`tests._script_runner`) instead of a fresh interpreter."""
    return _script_runner.run([REPO / "benchmarks" / argv[0], *argv[1:]], cwd=REPO, env=ENV if env is None else env,
                              repo=REPO, timeout=300)


def _smoke(name: str) -> subprocess.CompletedProcess:
    """One script's ``--smoke`` run, on its own (for the scripts not in :func:`smoke_runs`)."""
    return _script([f"{name}.py", "--smoke", "--data-root", SHARED_DATA])


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
    if HAS_OPACUS:  # the same per-sample gradient norms as Opacus's on the same model and batch
        assert 0 <= summary["opacus_norm_max_abs_diff"] <= 1e-3
    else:
        assert "filter/prl_g_vs_opacus`: not measured — Opacus is not installed" in smoke_runs["overhead"].stdout


def test_batch_filters_smoke_ends_with_headline_json(smoke_runs):
    run = smoke_runs["batch_filters"]
    summary = _last_json(run)
    assert summary["benchmark"] == "batch_filters" and summary["mode"] == "smoke"
    assert set(summary["classification"]["mnist_pairflip_45"]) == {"standard", "co_prl"}
    assert all(0.0 <= v <= 100.0 for v in summary["classification"]["mnist_pairflip_45"].values())
    assert set(summary["regression"]["signflip_40"]) == {"standard", "prl_g"}
    assert "| MNIST | pairflip 45 % |" in run.stdout and "| signflip 40 % |" in run.stdout


def test_anomaly_smoke_ends_with_headline_json(smoke_runs):
    summary = _last_json(smoke_runs["anomaly"])
    assert summary["benchmark"] == "anomaly" and summary["mode"] == "smoke"
    assert set(summary["moons"]["clustered"]) == {"RealNVP", "TrimRealNVP", "RobustRealNVP"}
    assert set(summary["mnist"]) == {"RobustRealNVP", "TrimRealNVP", "RealNVP", "RCA", "AE", "IsolationForest"}
    assert all(0.0 <= v["mean_auc"] <= 1.0 and 1.0 <= v["avg_rank"] <= 6.0 for v in summary["mnist"].values())
    assert set(summary["targets_met"]) == {"moons_clustered_robust_best", "mnist_robust_ge_realnvp", "mnist_rca_ge_ae",
                                           "mnist_robust_rank_le_iforest"}
    assert "| normal digit | RobustRealNVP |" in smoke_runs["anomaly"].stdout


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_itlm_mnist_rejects_bad_options():
    mod = _load("itlm_mnist")
    with pytest.raises(SystemExit, match=r"`--rows` entries must look like 'systematic:60' \(noise random or "
                       r"systematic, clean % in \(0, 100\]\), got 'noisy:60'"):
        mod.main(mod.BENCHMARK, ["--smoke", "--rows", "noisy:60"])
    with pytest.raises(SystemExit, match=r"`--protocol` must be one of \['authors', 'scaled'\], got 'paper'"):
        mod.main(mod.BENCHMARK, ["--smoke", "--protocol", "paper"])
    with pytest.raises(SystemExit, match=r"`--momentum` must be a number in \[0, 1\), got 1.5"):
        mod.main(mod.BENCHMARK, ["--smoke", "--momentum", "1.5"])
    with pytest.raises(SystemExit, match="`--restore-best` must be 0 or 1, got 2"):
        mod.main(mod.BENCHMARK, ["--smoke", "--restore-best", "2"])


def test_anomaly_rejects_bad_options():
    mod = _load("anomaly")
    with pytest.raises(SystemExit, match=r"`--digits` must be digits in \[0, 9\], got \[3, 12\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--digits", "3", "12"])
    with pytest.raises(SystemExit, match=r"`--parts` must be among \['moons', 'mnist'\], got \['moons', 'cifar'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--parts", "moons", "cifar"])


def test_seeds_refusal_says_where_the_seeds_are():
    """`anomaly.py --seeds 3` was refused with "its protocol has no seeds", though its two parts run 5 and 3 seeds:
    the refusal names each part's seeds and the value received."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    for name, words in (("anomaly", "each part of its protocol fixes its own seeds (moons [0, 1, 2, 3, 4]; mnist "
                                    "[0, 1, 2]); got --seeds [3]"),
                        ("overhead", "its protocol has no seeds; got --seeds [3]")):
        bench = harness.load_module(name).BENCHMARK
        args = bench.parser().parse_args(["--seeds", "3"])
        with pytest.raises(SystemExit, match=re.escape(f"`--seeds` is not an option of {name}: {words}")):
            bench.settings("full", args)


def test_anomaly_render_reprints_the_saved_run(capsys):
    mod = _load("anomaly")
    summary = mod.main(mod.BENCHMARK, ["--render", str(REPO / "benchmarks" / "results" / "anomaly.json")])
    assert summary["mode"] == "render" and set(summary["moons"]) == {"uniform", "clustered"}
    assert "| **average rank** |" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "default"), [("itlm_mnist", "itlm_mnist.json"), ("anomaly", "anomaly.json"),
                                                ("gan_mixture", "gan_mixture.json"),
                                                ("simclr_defence", "simclr_defence.json"),
                                                ("filter_auto_digits", "filter_auto_digits.json"),
                                                ("auto_warmup", "auto_warmup.json")])
def test_reproduce_line_names_the_json_its_command_wrote(name, default):
    """A newcomer's `itlm_mnist.py --quick --out X.md` printed "writes ... itlm_mnist.json" but wrote X.json."""
    mod = _load(name)
    saved = json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text())
    saved["meta"].pop("pre_harness", None)  # the committed runs' own words stay; a new run says what it wrote
    for mode, args, written in [("quick", " --quick --out runs/X.md", "runs/X.json"), ("full", " --out=Y.md", "Y.json"),
                                ("full", "", f"benchmarks/results/{default}"), ("quick", " --quick", None)]:
        saved["mode"], saved["meta"]["command"] = mode, f"python benchmarks/{name}.py{args}"
        line = next(x for x in mod.BENCHMARK.render(saved).splitlines() if x.startswith("Reproduce:"))
        if written is None:
            assert "printed only: `--out FILE.md` writes the table and the saved run beside it" in line, line
        else:  # filter_auto_digits' committed run too: its own `--render results/...` named no file from the root
            assert f"`{written}`" in line and f"`--render {written}`" in line, line
            assert default not in line.replace(written, ""), line


def test_corruption_rate_quick_reproduce_line_names_the_file_it_wrote():
    """`corruption_rate.py --quick --out DIR/X.md` said it wrote DIR/X.json, "copied to `benchmarks/results/` under
    this table's name": nothing was copied. Only a full run (a committed table written elsewhere) says so."""
    mod = _load("corruption_rate")
    saved = json.loads((REPO / "benchmarks" / "results" / "corruption_rate_prl_auto.json").read_text())
    committed = next(x for x in mod.BENCHMARK.render(saved).splitlines() if x.startswith("Reproduce:"))
    assert "copied to `benchmarks/results/`" in committed  # the committed table's own words stay
    assert "`--render benchmarks/results/corruption_rate_prl_auto.json`" in committed  # the copy, from the root
    saved["mode"], saved["meta"]["command"] = "quick", "python benchmarks/corruption_rate.py --quick --out runs/X.md"
    line = next(x for x in mod.BENCHMARK.render(saved).splitlines() if x.startswith("Reproduce:"))
    assert "copied" not in line and "`runs/X.json`" in line and "`--render runs/X.json`" in line, line


def test_overhead_rejects_bad_options():
    mod = _load("overhead")
    with pytest.raises(SystemExit, match=r"`--only` must name measurements among \[.*'mixin/training_step'.*got \['nope'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--only", "nope"])
    with pytest.raises(SystemExit, match="`--threads` must be an integer >= 1, got 0"):
        mod.main(mod.BENCHMARK, ["--smoke", "--synthetic", "--threads", "0"])
    with pytest.raises(SystemExit, match="`--data-root` must hold MNIST/raw .*got '/nonexistent'"):
        mod.main(mod.BENCHMARK, ["--smoke", "--data-root", "/nonexistent"])
    with pytest.raises(SystemExit, match=r"`--jobs` must be 1 for overhead \(pairs are timed in one process\), got 2"):
        mod.main(mod.BENCHMARK, ["--smoke", "--synthetic", "--only", "mixin/training_step", "--jobs", "2"])


def test_overhead_synthetic_data_and_device_plumbing(tmp_path, capsys):
    """`--synthetic` (no MNIST, no torchvision: what a bare GPU machine has) and the device fields of the output;
    `--device cuda` without CUDA is a clear error."""
    import torch

    mod = _load("overhead")
    out = tmp_path / "overhead.md"
    summary = mod.main(mod.BENCHMARK, ["--smoke", "--synthetic", "--only", "mixin/training_step", "--out", str(out)])
    assert summary["device"].startswith("cpu") and set(summary["median_ms"]) == {"mixin/training_step"}
    assert all(ms > 0 for ms in summary["median_ms"]["mixin/training_step"])
    assert "synthetic MNIST-shaped (random) images" in out.read_text() and "Device: cpu" in out.read_text()
    saved = json.loads(out.with_suffix(".json").read_text())  # the options travel with the saved run
    assert saved["settings"]["synthetic"] is True and saved["settings"]["only"] == ["mixin/training_step"]
    assert mod.render(saved) == out.read_text() and "--only mixin/training_step" in out.read_text()
    capsys.readouterr()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="`--device cuda` needs a CUDA device"):
            mod.main(mod.BENCHMARK, ["--smoke", "--synthetic", "--device", "cuda"])


def test_overhead_skipped_row_is_left_out(monkeypatch):
    """A row that cannot be measured (Opacus missing) is a note, not a row: the first GPU run printed the row before
    it again under the skipped row's name."""
    mod = _load("overhead")

    def measured(ctx, reps):
        return [(2.0, 1.0)] * reps

    def skipped(ctx, reps):
        raise mod.Skipped("Opacus is not installed")

    monkeypatch.setattr(mod, "MEASUREMENTS", [mod.Measurement("a", "measured", measured),
                                              mod.Measurement("b", "skipped", skipped)])
    ctx = SimpleNamespace(cache={})
    rows = mod.run_measurements(ctx, "smoke")
    assert [r["name"] for r in rows] == ["a"] and rows[0]["ratio"] == 2.0
    assert ctx.cache["notes"] == ["`b`: not measured — Opacus is not installed."]


def test_overhead_registry_has_the_issue_rows():
    mod = _load("overhead")
    rows = {m.name: (m.kind, m.target) for m in mod.MEASUREMENTS}
    assert rows == {"itlm/scoring_pass_throughput": ("throughput", 0.9),
                    "itlm/scoring_pass_vs_no_grad_loop": ("throughput", None),
                    "mixin/training_step": ("time", 1.02), "itlm/fit": ("time", 1.10),
                    "filter/prl_step": ("time", 1.05), "filter/spl_step": ("time", 1.05),
                    "filter/prl_g_step": ("time", 1.3), "filter/prl_g_two_pass_step": ("time", None),
                    "filter/prl_g_step_mlp": ("time", 1.3), "filter/prl_g_step_wide_cnn": ("time", 1.3),
                    "filter/prl_g_step_small_cnn": ("time", None),
                    "filter/prl_g_vs_opacus": ("time", None),
                    "backdoor/adversarial_trigger_step": ("time", 2.1),
                    "data/indexed_loader_throughput": ("throughput", 0.95),
                    "data/indexed_loader_vs_batched_tensor_loader": ("throughput", None),
                    "data/itlm_fit_n1e4": ("time", None), "data/itlm_fit_n1e5": ("time", None),
                    "data/itlm_fit_n1e6": ("time", None), "data/itlm_fit_per_sample_fetch_n1e5": ("time", None),
                    "data/itlm_fit_per_sample_fetch_n1e6": ("time", None)}
    # rows too long for a mode are not run there (0 repetitions); smoke runs EXPECTED_RATIOS
    assert {m.name for m in mod.MEASUREMENTS if m.reps["smoke"] > 0} == EXPECTED_RATIOS | {"filter/prl_g_vs_opacus"}
    assert all(m.reps["full"] > 0 for m in mod.MEASUREMENTS)


def test_gan_mixture_smoke_ends_with_headline_json():
    run = _script(["gan_mixture.py", "--smoke", "--data-root", SHARED_DATA], env=dict(os.environ))
    summary = _last_json(run)
    assert summary["benchmark"] == "gan_mixture" and summary["mode"] == "smoke"
    row = summary["rows"]["80"]
    assert row["clean_fraction"][0] == 80.0 and len(row["clean_fraction"]) == 2  # orig, then one ITLM selection
    assert 0.0 <= row["clean_fraction"][1] <= 100.0 and 0.0 <= row["generated_digit_share_last"] <= 100.0
    assert "| 80 % | ours | 80.00 (1 seed) |" in run.stdout  # the markdown table was printed (one seed: no ± 0.00)


def test_gan_mixture_rejects_bad_options():
    mod = _load("gan_mixture")
    with pytest.raises(SystemExit, match=r"`--rows` must be clean percentages in \(5, 100\], got \[3\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--rows", "3"])
    with pytest.raises(SystemExit, match="`--first-epochs` must be an integer >= 1, got 0"):
        mod.main(mod.BENCHMARK, ["--smoke", "--first-epochs", "0"])


def test_gan_mixture_quick_text_follows_its_out_folder_protocol_and_seeds():
    """A reviewer's `gan_mixture.py --quick --out X.md` said its grids were in `gan_mixture/`, "a GAN trained 5
    epochs" (quick round 0 is 4), "spread widely over seeds (46.2–46.2 %)" with one seed, "met in 0 of 0 rows", and
    its headline's `paper_last` paired the paper's iter-5 with its own iter-2. Rendered from the committed run's
    80 % seed-0 row cut to the quick protocol (no training)."""
    from dataclasses import asdict

    mod = _load("gan_mixture")
    saved = json.loads((REPO / "benchmarks" / "results" / "gan_mixture.json").read_text())
    run = next(r for r in saved["results"]["runs"] if r["clean"] == 80 and r["seed"] == 0)
    keep = mod.QUICK.rounds + 1  # orig / round 0, then iter-1, iter-2
    run.update({key: run[key][:keep] for key in ("round_epochs", "clean_fraction", "corrupted_dropped",
                                                 "generated_digit_share")},
               grids={str(k): f"runs/X/clean80_round{k}.png" for k in range(keep)})
    saved.update(mode="quick", settings={"protocol": asdict(mod.QUICK), "rows": [80], "seeds": [0]})
    saved["results"]["runs"] = [run]
    saved["meta"].pop("pre_harness", None)
    saved["meta"]["command"] = "python benchmarks/gan_mixture.py --quick --out runs/X.md"
    text = mod.BENCHMARK.render(saved)
    assert "(files in `runs/X/`)" in text and "gan_mixture/" not in text
    assert "a GAN trained 4 epochs on the mixture" in text and "trained 5 epochs" not in text
    share = run["generated_digit_share"][0]
    assert f"The judge's share after round 0 ({share:.1f} %) comes from one seed: no spread" in text
    assert "spread widely" not in text
    assert ("Target (iter-5 within 1 point of the paper's, or above): not judged, this run has 2 ITLM rounds, the "
            "paper's table 5. Per seed") in text and "of 0 rows" not in text
    assert "(paper, iter-2 − iter-1: " in text
    assert mod.BENCHMARK.headline(saved)["rows"]["80"]["paper_last"] == mod.PAPER_TABLE3[80][1]  # iter-2: 91.95


def test_backdoor_mnist_smoke_ends_with_headline_json(smoke_runs):
    summary = _last_json(smoke_runs["backdoor_mnist"])
    assert summary["benchmark"] == "backdoor_mnist" and summary["mode"] == "smoke"
    for method in ("standard", "prl", "prl_at"):
        for metric in ("clean", "poison"):
            assert 0.0 <= summary[f"patch_0.25_{method}_{metric}"] <= 100.0
    assert isinstance(summary["prl_at_target_met"], bool) and isinstance(summary["itlm_target_met"], bool)
    out = smoke_runs["backdoor_mnist"].stdout
    assert "| 0.25 |" in out and "| X, 1 → 2 |" in out  # both tables were printed


def test_backdoor_mnist_margin_smoke_resumes_and_ends_with_headline_json(tmp_path):
    """Two invocations fill one store: the second runs only the cells the first (``--max-runs 2``) left."""
    out = tmp_path / "margin.md"

    def margin(*extra: str) -> subprocess.CompletedProcess:
        return _script(["backdoor_mnist.py", "--margin", "--smoke", "--data-root", SHARED_DATA, "--out", out, *extra])

    first = margin("--max-runs", "2")
    assert _last_json(first)["runs"] == 2 and "margin axis: 0 cells stored, 2 to run" in first.stdout
    run = margin()
    assert "margin axis: 2 cells stored, 8 to run" in run.stdout
    summary = _last_json(run)
    assert summary["benchmark"] == "backdoor_mnist" and summary["mode"] == "smoke" and summary["part"] == "margin"
    # Standard, PRL ε+0.2, ITLM ε+0.2, PRL auto, ITLM+PRL (restarted warm-up), ITLM+PRL-AT, ITLM auto (disagreement),
    # activation clustering; and Standard and activation clustering on clean data (ε = 0)
    assert summary["runs"] == 10
    for config in ("prl_eps+0.2", "itlm_eps+0.2", "prl_auto", "itlm_prl_eps+0.1", "itlm_prl_at_eps+0.1",
                   "itlm_auto_dis", "ac_w1"):
        assert 0.0 <= summary[f"mnist_{config}_min_poison"] <= 100.0
    assert isinstance(summary["mnist_target_met_by"], list)
    assert "| PRL drop = ε + 0.2 |" in run.stdout and "| ITLM+PRL (1 − α = ε + 0.1, PRL drops ε) |" in run.stdout
    assert "| ITLM+PRL-AT (1 − α = ε + 0.1, PRL-AT drops ε) |" in run.stdout
    assert "### MNIST: clean data (ε = 0, nothing poisoned)" in run.stdout
    assert "| Activation clustering (1-epoch warm-up, no ε) | " in run.stdout
    saved = json.loads(out.with_suffix(".json").read_text())
    assert len(saved["results"]["rows"]) == 10
    flagged = [r["flagged"] for r in saved["results"]["rows"] if r["method"] == "ac"]
    assert len(flagged) == 2 and all(0.0 <= f < 1.0 for f in flagged)
    estimates = {(r["method"], r["setting"]): r["estimate"] for r in saved["results"]["rows"]}
    assert 0.0 <= estimates[("itlm", "auto_dis")] <= 0.5  # recorded from ITLM's disagreement estimate
    assert "| ITLM 1 − α = auto, disagreement | " in run.stdout and "partial" not in saved["meta"]
    assert saved["results"]["wall_s"] >= sum(r["wall_s"] for r in saved["results"]["rows"])  # both invocations
    assert _load("backdoor_mnist").BENCHMARK.render(saved) == out.read_text()


def test_backdoor_mnist_rejects_bad_options():
    bench = _load("backdoor_mnist")
    with pytest.raises(SystemExit, match=r"`--max-runs` must be an integer >= 0 and goes with `--margin`, got -1$"):
        bench.main(bench.BENCHMARK, ["--smoke", "--margin", "--max-runs", "-1"])
    with pytest.raises(SystemExit, match=r"`--max-runs` .* got 3 without --margin"):
        bench.main(bench.BENCHMARK, ["--smoke", "--max-runs", "3"])
    with pytest.raises(SystemExit, match=r"`--margin` runs its own grid .*: drop --seeds, --no-watermark"):
        bench.main(bench.BENCHMARK, ["--smoke", "--margin", "--seeds", "1", "--no-watermark"])
    with pytest.raises(SystemExit, match="`--reuse-table` is for full mode only, got it with --quick"):
        bench.main(bench.BENCHMARK, ["--quick", "--reuse-table"])
    with pytest.raises(SystemExit, match="a full run with changed settings needs `--out`"):
        bench.main(bench.BENCHMARK, ["--methods", "prl"])


def test_backdoor_mnist_reuse_table_reads_the_committed_rows():
    """``--reuse-table`` takes part 1 from the committed saved run (no training here: no watermark rows asked for)."""
    import argparse
    from dataclasses import replace

    bench = _load("backdoor_mnist")
    args = argparse.Namespace(reuse_table=True, quick=False, smoke=False, data_root=str(SHARED_DATA))
    out = bench.execute_table(replace(bench.FULL, watermarks=()), args, jobs=2)
    committed = json.loads(bench.TABLE_RUN.read_text())["results"]
    assert out["table"] == committed["table"] and out["watermark"] == []
    assert out["table_reused"]["wall_s"] == pytest.approx(committed["table_reused"]["wall_s"])  # same rows, same jobs


def test_backdoor_mnist_margin_rates():
    bench = _load("backdoor_mnist")
    assert bench.margin_rate(0.25, "eps") == pytest.approx(0.25)
    assert bench.margin_rate(0.25, "eps+0.2") == pytest.approx(0.45) and bench.margin_rate(0.25, "auto+0.1") == "auto"
    assert bench.margin_of("auto+0.1") == pytest.approx(0.1) and bench.margin_of("eps") == 0.0
    assert bench.margin_rate(0.25, "auto_dis") == "auto" and bench.margin_of("auto_dis") == 0.0
    assert bench.setting_label("itlm", "auto_dis") == "ITLM 1 − α = auto, disagreement"
    assert bench.setting_label("itlm", "auto") == "ITLM 1 − α = auto"  # the gmm rows keep their label
    assert bench.setting_label("itlm_prl_at", "eps+0.1") == "ITLM+PRL-AT (1 − α = ε + 0.1, PRL-AT drops ε)"


def test_backdoor_mnist_margin_thesis_reach_verdicts():
    """Each thesis PRL entry above 85 % is called reached (some row's mean within 2 points), not reached, or not
    reached and above Standard's own clean accuracy; entries at or below 85 % are not listed."""
    bench = _load("backdoor_mnist")

    def row(attack, eps, method, setting, seed, poison, clean=90.0):
        return {"dataset": "mnist", "attack": attack, "eps": eps, "method": method, "setting": setting,
                "seed": seed, "poison": poison, "clean": clean}

    rows = [row("patch", 0.15, "standard", "eps", 0, 1.0, clean=95.0),  # thesis 98.0 -> asks 96.0 > 95.0
            row("patch", 0.15, "prl", "eps+0.2", 0, 93.0), row("patch", 0.15, "prl", "eps+0.2", 1, 95.0),
            row("patch", 0.25, "standard", "eps", 0, 1.0, clean=95.0),  # thesis 89.9 -> asks 87.9
            row("patch", 0.25, "prl_at", "eps+0.2", 0, 87.0), row("patch", 0.25, "prl_at", "eps+0.2", 1, 89.0),
            row("patch", 0.25, "prl", "eps", 0, 30.0),
            row("blend", 0.15, "standard", "eps", 0, 1.0, clean=97.0),  # thesis 96.8 -> asks 94.8 < 97.0
            row("blend", 0.15, "prl", "eps", 0, 90.0),
            row("blend", 0.35, "standard", "eps", 0, 1.0, clean=97.0)]  # thesis 78.8: not listed
    lines = bench._thesis_reach(rows, ("patch", "blend"), [0.15, 0.25, 0.35])
    items = [x for x in lines if x.startswith("- ")]
    assert len(items) == 3
    assert items[0].startswith("- patch ε = 0.15") and "best row PRL drop = ε + 0.2, 94.0" in items[0]
    assert items[0].endswith("not reached, and above Standard's own clean accuracy here.")
    assert items[1].startswith("- patch ε = 0.25") and "PRL-AT drop = ε + 0.2, 88.0" in items[1]
    assert items[1].endswith("— reached.")
    assert items[2].startswith("- blend ε = 0.15") and items[2].endswith("— not reached.")
    assert bench._thesis_reach([r for r in rows if r["method"] != "standard"], ("patch",), [0.15]) == []


def test_backdoor_mnist_margin_disagreement_is_itlms_only():
    bench = _load("backdoor_mnist")
    task = {"settings": bench.MARGIN_SMOKE, "root": str(SHARED_DATA), "dataset": "mnist", "attack": "patch",
            "eps": 0.25, "method": "prl", "setting": "auto_dis", "seed": 0}
    with pytest.raises(ValueError, match="setting 'auto_dis' .* is ITLM's only, got method 'prl'"):
        bench.run_margin(task)


def test_simclr_defence_smoke_ends_with_headline_json():
    run = _smoke("simclr_defence")
    summary = _last_json(run)
    assert summary["benchmark"] == "simclr_defence" and summary["mode"] == "smoke"
    row = summary["rows"]["patch_0.35"]
    assert set(row) == {"standard", "prl_at", "prl_simclr", "prl_simclr_sn"}
    assert all(0.0 <= v[m] <= 100.0 for v in row.values() for m in ("clean", "poison"))
    assert summary["throughput_ratio"] > 0 and set(summary["targets_met"]) == {"pretrain_throughput_ge_0.9"}
    assert summary["pretrain"]["runs"] == 1 and summary["pretrain"]["images_per_s"] > 0
    assert "| patch | poison | 0.35 |" in run.stdout  # the markdown table was printed


def test_simclr_defence_rejects_bad_arguments():
    mod = _load("simclr_defence")
    with pytest.raises(SystemExit, match=r"`--eps` must be poison rates in \(0, 0.5\), got \[0.6\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--eps", "0.6"])
    with pytest.raises(SystemExit, match=r"`--jobs` must be 1 or 2 \(the machine has 2 shared cores\), got 4"):
        mod.main(mod.BENCHMARK, ["--smoke", "--jobs", "4"])
    with pytest.raises(SystemExit, match=r"`--attacks` must be among \['patch', 'blend'\], got \['wanet'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--attacks", "patch", "wanet"])


def test_backdoor_dynamics_smoke_traces_every_epoch():
    run = _smoke("backdoor_dynamics")
    summary = _last_json(run)
    assert summary["benchmark"] == "backdoor_dynamics" and summary["mode"] == "smoke"
    for method in ("prl", "prl_at"):
        figures = summary[f"small CNN, no warm-up / {method}"]
        assert 0.0 <= figures["last_poison"] <= figures["max_poison"] <= 100.0
        assert 0.0 <= figures["last_dropped_precision"] <= 100.0  # no warm-up: the filter drops from epoch 0
    rows = [line for line in run.stdout.splitlines() if line.startswith("| small CNN, no warm-up |")]
    assert len(rows) == 2 and all(row.split(" | ")[3].count("→") == 1 for row in rows)  # 2 epochs traced


def test_filter_auto_digits_quick_ends_with_headline_json():
    summary = _last_json(_smoke("filter_auto_digits"))
    assert summary["benchmark"] == "filter_auto_digits" and summary["mode"] == "smoke"
    row = summary["rows"]["random"]
    assert len(row["eps_hat"]) == 1 and 0.0 <= row["eps_hat"][0] < 0.5
    assert 0.0 <= row["mean_abs_err_points"] <= 50.0


def test_filter_auto_cnn_smoke_ends_with_headline_json():
    """A newcomer's own CNN on FashionMNIST under the filters' "auto" (the estimate 47-49 % for 25 %): the smoke run
    trains plain and SPL auto on the same seed and reports the estimate and the difference to plain training."""
    run = _smoke("filter_auto_cnn")
    summary = _last_json(run)
    assert summary["benchmark"] == "filter_auto_cnn" and summary["mode"] == "smoke" and summary["seeds"] == [0]
    assert 0.0 < summary["plain"]["acc_pct"] <= 100.0
    auto = summary["spl_auto"]
    assert len(auto["eps_hat_pct"]) == 1 and 0.0 <= auto["eps_hat_pct"][0] <= 100.0
    assert abs(auto["minus_plain_pts"] - (auto["acc_pct"] - summary["plain"]["acc_pct"])) <= 0.011
    assert "| spl_auto | 0 |" in run.stdout


def test_auto_warmup_smoke_ends_with_headline_json():
    """The measurement behind the default warm-up of `drop_ratio="auto"` (3 epochs, was 0) was a scratch script
    outside the repository: its smoke run (digits 30 %, seed 0, both warm-ups) ends with the headline JSON, and the
    old warm-up's estimate is the clipped one."""
    run = _smoke("auto_warmup")
    summary = _last_json(run)
    assert summary["benchmark"] == "auto_warmup" and summary["mode"] == "smoke"
    row = summary["rows"]["digits30"]
    assert set(row) == {"default", "zero"} and row["default"]["n"] == row["zero"]["n"] == 1
    assert 0.0 < row["default"]["eps_hat"] < 49.0 and row["default"]["clipped"] == 0
    assert row["zero"]["eps_hat"] >= 49.0 and row["zero"]["clipped"] == 1
    assert "| digits30 | None (3) | 1 | 30.0 |" in run.stdout and "| digits30 | 0 | 1 | 30.0 |" in run.stdout


def test_auto_warmup_rejects_bad_options():
    mod = _load("auto_warmup")
    with pytest.raises(SystemExit, match=r"`--coteach-seeds` must be integers >= 0, got \[-1\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--coteach-seeds", "-1"])


def test_batch_filter_per_class_smoke_ends_with_headline_json():
    run = _smoke("batch_filter_per_class")
    summary = _last_json(run)
    assert summary["benchmark"] == "batch_filter_per_class" and summary["mode"] == "smoke"
    assert summary["rows"] == 1 and list(summary["per_class_minus_one_ranking_points"]) == ["systematic 40"]
    assert "| systematic | 40 |" in run.stdout


def test_itlm_finetune_smoke_ends_with_headline_json():
    run = _smoke("itlm_finetune")
    summary = _last_json(run)
    assert summary["benchmark"] == "itlm_finetune" and summary["mode"] == "smoke"
    assert len(summary["test_acc"]) == 11 and all(0 <= a <= 100 for a in summary["test_acc"].values())
    # the table's "frozen backbone kept" column: kept by ITLM's default now, re-drawn by the emulated old default
    assert re.search(r"\| frozen backbone: ITLM reinit=True \|[^\n]*\| yes \| – \|\n", run.stdout)
    assert re.search(r"\| frozen backbone: ITLM re-drawing it \(before the fix\) \|[^\n]*\| no \| – \|\n", run.stdout)


def test_regression_restart_smoke_ends_with_headline_json():
    """One Diabetes seed, 20 % of the targets shifted, rounds [2, 1]: both arms estimate, the table has its row."""
    run = _smoke("regression_restart")
    summary = _last_json(run)
    assert summary["benchmark"] == "regression_restart" and summary["mode"] == "smoke"
    assert summary["noisy_runs"] == 1 and summary["clean_runs"] == 0
    assert set(summary["mean_r2"]) == {"auto", "auto, restart off", "auto, first kept", "true rate", "SPL auto",
                                       "SPL auto, restart off", "SPL auto, fixed", "plain"}
    assert summary["spl_noisy_median_err_pts"] is not None
    assert re.search(r"\| Diabetes \| ±3 SD shift \| 20\.1 \|( \d+\.\d \|){6}", run.stdout)


def test_newcomer_tables_smoke_ends_with_headline_json():
    """make_classification 30 % (plain, ITLM auto, PRL auto), digits rounds [2, 2], the energy table at ε 35 %: every
    part prints its table and the headline names what the README quotes from it."""
    run = _smoke("newcomer_tables")
    summary = _last_json(run)
    assert summary["benchmark"] == "newcomer_tables" and summary["mode"] == "smoke"
    assert summary["mc_auto_runs"] == 2 and 0 <= float(summary["mc_itlm_auroc"]) <= 1
    assert set(summary["digits_acc"]) == {"[2, 2]", "plain"}
    assert set(summary["energy_rmse"]["25"]) == {"0.35", "auto", "auto, first kept", "auto+0.1"}
    row = re.search(r"\| 30 % \| 0 \| (\d\.\d{3}) \| \d+\.\d / (\d\.\d{3}) \| \d+\.\d / (\d\.\d{3}) \|", run.stdout)
    plain, itlm, prl = (float(v) for v in row.groups())
    # the count README quotes ("all 24 auto runs below plain training") is the table's, not a bound that always holds
    assert summary["mc_auto_runs_above_plain"] == (itlm > plain) + (prl > plain), (row.group(0), summary)
    # "auto", "auto" keeping round 1's estimate, "auto" with auto_margin=0.1: round 1's estimate → the last round's
    auto_cell = r"\d+\.\d\d \(ε̂ \d+\.\d → \d+\.\d\)"
    assert re.search(rf"\| 25 % \| 0 \| ε 35 %: \d+\.\d\d \| {auto_cell} \| {auto_cell} \| {auto_cell} \|", run.stdout)


def test_newcomer_tables_itlm_auto_runs_itlms_default_estimator():
    """"ITLM auto" runs ITLM's default estimator and the saved settings say which (`itlm_default`); a run saved before
    the field existed says its table was measured with "disagreement", the default then."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import newcomer_tables

    from lit_robust.callbacks.itlm import DEFAULT_ESTIMATOR

    assert newcomer_tables.Protocol().itlm_default == DEFAULT_ESTIMATOR
    assert newcomer_tables.ITLM_ESTIMATOR["ITLM auto"] is None  # ITLM's own default, not named


def test_newcomer_regression_smoke_ends_with_headline_json():
    """Friedman1 (500 rows) with 25 % of its targets glitched three ways, rounds [2, 1]: ITLM auto's estimate, its
    reason and the true-rate arm reach the headline, and both tables print their row."""
    run = _smoke("newcomer_regression")
    summary = _last_json(run)
    assert summary["benchmark"] == "newcomer_regression" and summary["mode"] == "smoke" and summary["runs"] == 1
    case = summary["cases"]["2 uniform+x10+plus3sd 25"]
    assert len(case["eps_hat_pct"]) == 1 and 0 <= case["eps_hat_pct"][0] < 50 and case["reason"]
    assert set(case) >= {"auto rmse", "auto, first kept rmse", "true rate rmse", "auto r2", "true rate r2"}
    assert len(case["last_eps_hat_pct"]) == 1
    assert re.search(r"\| 2 \| uniform values, ×10, \+3 SD \(equal shares\) \| 25 % \| 0 \| \d+\.\d \|", run.stdout)
    # 400 training rows, 100 glitched: 34 / 33 / 33 of them in each kind, read in the datamodule's own row order
    assert "| uniform values 8.5; ×10 8.2; +3 SD 8.2 |" in run.stdout


def test_injected_labels_smoke_ends_with_headline_json():
    """One digits row (30 % random noise), 1 epoch, none and 5 % planted: every estimator reaches the headline and the
    table prints the row with the planted samples' disagreement."""
    run = _smoke("injected_labels")
    summary = _last_json(run)
    assert summary["benchmark"] == "injected_labels" and summary["mode"] == "smoke" and summary["rows"] == 1
    assert set(summary["estimators"]) == {"disagreement (none planted)", "class_floor (none planted)",
                                          "disagreement (5 % planted)", "class_floor (5 % planted)",
                                          "planted (5 % planted)", "max(planted, class_floor) (5 % planted)"}
    for figures in summary["estimators"].values():
        assert 0 <= figures["median_err_pts"] <= 100 and figures["median_err_pts_systematic"] is None
    assert re.search(r"\| digits \| random \| 30 \|( \d+\.\d / \d+\.\d \|){6} \d+\.\d \|", run.stdout)


def test_injected_labels_ratio_is_the_smallest_tail_ratio_of_a_slow_reference():
    """``planted_ratio`` against a loop over every threshold written out: the smallest P(score > t | others) /
    P(score > t | planted) over the planted scores' quantiles 0, 0.02, ..., 0.8, capped at 1."""
    mod = _load("injected_labels")
    rng = np.random.default_rng(0)
    for n_clean, n_noisy, n_planted in ((900, 100, 50), (1000, 0, 40), (300, 300, 30)):
        scores = np.concatenate([rng.exponential(0.3, n_clean), 2.0 + rng.exponential(1.0, n_noisy),
                                 2.0 + rng.exponential(1.0, n_planted)])
        planted = np.arange(scores.size) >= n_clean + n_noisy
        ratios = []
        for i in range(41):
            t = np.quantile(scores[planted], i / 50)
            ref = sum(1 for v in scores[planted] if v > t) / n_planted
            rest = sum(1 for v in scores[~planted] if v > t) / (n_clean + n_noisy)
            if ref > 0:
                ratios.append(rest / ref)
        expected = min([1.0, *ratios])
        assert mod.planted_ratio(scores, planted) == pytest.approx(expected, abs=1e-12)
        # the noisy share is read closely where the planted scores share the noisy ones' distribution
        assert abs(mod.planted_ratio(scores, planted) - n_noisy / (n_clean + n_noisy)) < 0.08


def test_the_per_class_quota_candidate_drops_the_batch_count_shared_by_largest_remainder():
    """The rejected candidate does what its table says: against a slow reference, drop counts per class that add up
    to the batch's and differ from the exact shares by less than one; in each class its highest (score, index)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    mod = harness.load_module("batch_filter_per_class")
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(1, 60, (1,), generator=g))
        labels = torch.randint(0, 4, (n,), generator=g)
        scores = torch.randint(0, 5, (n,), generator=g).double()  # ties: broken by index
        index = torch.randperm(1000, generator=g)[:n]
        keep = int(torch.randint(0, n + 1, (1,), generator=g))
        mask = mod.per_class_batch_mask(scores, labels, index, keep)
        assert int(mask.sum()) == keep
        for c in labels.unique().tolist():
            members = (labels == c).nonzero().flatten().tolist()
            dropped = [i for i in members if not mask[i]]
            assert abs(len(dropped) - len(members) * (n - keep) / n) < 1
            worst = sorted(members, key=lambda i: (float(scores[i]), int(index[i])))[len(members) - len(dropped):]
            assert sorted(dropped) == sorted(worst)


def test_itlm_reinit_smoke_runs_both_arms_and_its_headline_is_the_table(tmp_path):
    out = tmp_path / "r.md"
    summary = _last_json(_script(["itlm_reinit.py", "--smoke", "--digits-round-epochs", "2", "--out", str(out)]))
    assert summary["benchmark"] == "itlm_reinit" and summary["mode"] == "smoke"
    assert summary["rows_true"] == summary["rows_auto"] == 1
    saved = json.loads(out.with_suffix(".json").read_text())
    runs = {r["variant"]: r for r in saved["results"]}
    assert set(runs) == {"plain", "true reinit", "true keep", "auto reinit", "auto keep"}
    assert [runs[v]["reinit"] for v in ("true reinit", "true keep", "auto reinit", "auto keep")] == [
        True, False, True, False]
    assert runs["true keep"]["eps_hat"] is None and 0.0 <= runs["auto keep"]["eps_hat"] < 0.5
    expect = round(100 * (runs["true keep"]["acc"] - runs["true reinit"]["acc"]), 2)
    assert summary["keep_minus_reinit_true_pts"] == expect
    assert f"| {expect:+.1f} |" in out.read_text()
    assert {r["epochs"] for r in saved["results"]} == {4}  # 2 rounds of --digits-round-epochs 2
    bad = _script(["itlm_reinit.py", "--smoke", "--round-epochs", "0"])
    assert bad.returncode != 0 and "`--round-epochs` must be an integer >= 1, got 0" in bad.stderr


def test_itlm_table_config_smoke_reads_the_config_and_runs_its_three_arms(tmp_path):
    """The settings come from configs/itlm_table.yaml itself; both ITLM arms share round 0 (one estimate) and differ
    only in ``reinit``; the headline is the table's."""
    import yaml

    out = tmp_path / "t.md"
    summary = _last_json(_script(["itlm_table_config.py", "--smoke", "--out", str(out)]))
    assert summary["benchmark"] == "itlm_table_config" and summary["mode"] == "smoke" and summary["rows"] == 1
    saved = json.loads(out.with_suffix(".json").read_text())
    cfg = yaml.safe_load((REPO / "configs" / "itlm_table.yaml").read_text())
    (itlm,) = cfg["trainer"]["callbacks"]
    assert saved["settings"]["config"]["itlm"] == itlm["init_args"]
    assert saved["settings"]["config"]["max_epochs"] == cfg["trainer"]["max_epochs"]
    assert summary["config_reinit"] == itlm["init_args"].get("reinit", True)
    assert summary["regression_rows"] == 1  # diabetes, 20 % of the training targets set to 999
    for kind, table in (("flipped", "wine"), ("sentinel", "diabetes")):
        runs = {r["arm"]: r for r in saved["results"] if r["kind"] == kind}
        assert set(runs) == {"plain", "reinit", "keep"} and {r["table"] for r in runs.values()} == {table}
        assert (runs["reinit"]["reinit"], runs["keep"]["reinit"]) == (True, False)
        assert runs["reinit"]["eps_hat"] == runs["keep"]["eps_hat"] and 0.0 <= runs["keep"]["eps_hat"] < 0.5
        assert runs["keep"]["true_eps"] == pytest.approx(0.2, abs=0.01)  # 20 % of the training rows
    runs = {r["arm"]: r for r in saved["results"] if r["kind"] == "flipped"}
    expect = round(100 * (runs["keep"]["acc"] - runs["reinit"]["acc"]), 2)
    assert summary["keep_minus_reinit_pts"] == expect and f"| {expect:+.1f} |" in out.read_text()
    # the regression rows score R²: plain training on 999-glitched targets is far below 0
    runs = {r["arm"]: r for r in saved["results"] if r["kind"] == "sentinel"}
    assert runs["plain"]["acc"] < 0 < runs["reinit"]["acc"] and f"| {runs['plain']['acc']:.3f} |" in out.read_text()


def test_adversarial_trigger_profile_smoke_ends_with_headline_json():
    run = _smoke("adversarial_trigger_profile")
    summary = _last_json(run)
    assert summary["benchmark"] == "adversarial_trigger_profile" and summary["mode"] == "smoke"
    assert summary["ratios"]["plain_step"] == 1.0 and all(r > 0 for r in summary["ratios"].values())
    assert {"inner_backward_autograd", "inner_backward_input_gradient", "at_step_before", "at_step_now"} <= set(
        summary["ratios"])
    assert summary["at_step_before_over_now"] > 0 and list(summary["grid_native_over_onednn"]) == ["1x16x5x1x28x100"]
    assert "| whole PRL-AT step, now (`input_gradient`) |" in run.stdout  # the markdown table was printed


def test_adversarial_trigger_profile_rejects_bad_options(tmp_path):
    mod = _load("adversarial_trigger_profile")
    with pytest.raises(SystemExit, match="`--data-root` must hold MNIST/raw, got '.*'"):
        mod.main(mod.BENCHMARK, ["--smoke", "--data-root", str(tmp_path)])  # a folder, but without MNIST/raw
    with pytest.raises(SystemExit, match=r"`--jobs` must be 1 for adversarial_trigger_profile .*got 2"):
        mod.main(mod.BENCHMARK, ["--smoke", "--data-root", str(SHARED_DATA), "--jobs", "2"])


def test_corruption_rate_smoke_ends_with_headline_json():
    run = _smoke("corruption_rate")
    summary = _last_json(run)
    assert summary["benchmark"] == "corruption_rate" and summary["mode"] == "smoke"
    assert summary["rows"] == 3 and summary["cleanlab_rows"] == 1
    assert 0.0 <= summary["median_abs_err_pts"] <= 100.0 and 0.0 <= summary["share_rows_err_le_5pts"] <= 1.0
    assert set(summary["targets_met"]) == {"median_err_le_3", "err_le_5_in_90pct_rows", "clean_eps_hat_le_3",
                                           "itlm_auto_within_1pt_in_80pct_rows",
                                           "ahead_of_cleanlab_in_more_rows_at_lower_time"}
    assert "| MNIST 6k | random | 30 |" in run.stdout and "| two moons | clustered | 10 |" in run.stdout
    # the regression/anomaly rows' own table: the score's AUROC for the true flag and the gmm's decision, per seed
    # and the product's own estimate (RealNVP auto / ITLM auto in a normal fit), its error and its T / r0
    sep = [line for line in run.stdout.splitlines() if line.startswith("| two moons | clustered | 10 |")][-1]
    auroc, reason, product, product_err, per_seed, warmup = sep.strip("| ").split(" | ")[-6:]
    assert 0.0 <= float(auroc) <= 1.0 and reason.startswith(("one component", "two components", "all equal"))
    assert 0.0 <= float(product) <= 50.0 and float(product_err) == pytest.approx(abs(float(product) - 10.0), abs=0.51)
    assert float(per_seed) == pytest.approx(float(product), abs=0.051) and warmup == "1"  # smoke: 1 epoch, T = 1
    assert 0.0 <= summary["product"]["median_abs_err_pts"] <= 100.0 and summary["product"]["rows"] == 2


def test_corruption_rate_prl_only_smoke_compares_the_filters_estimators(tmp_path):
    """``--methods`` among the PRL columns only: no ITLM, one table of PRL true / auto gmm / auto disagreement."""
    out = tmp_path / "prl.md"
    run = _script(["corruption_rate.py", "--smoke", "--data-root", SHARED_DATA, "--groups", "cls", "--methods",
                   "prl_true", "prl_auto", "prl_auto_dis", "prl_auto_floor", "--out", out])
    summary = _last_json(run)
    assert summary["rows"] == 1 and set(summary) >= {"gmm", "disagreement", "class_floor"}
    for name in ("gmm", "disagreement", "class_floor"):
        h = summary[name]
        assert h["prl_auto_ge_true_minus_1_share"] in (0.0, 1.0) and 0.0 <= h["median_abs_err_pts"] <= 100.0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["settings"]["methods"] == ["prl_true", "prl_auto", "prl_auto_dis", "prl_auto_floor"]
    (res,) = saved["results"]
    assert "itlm_auto" not in res and "ours" not in res  # ITLM did not run
    assert all(0.0 <= res[f"{m}_est"] < 1.0 for m in ("prl_auto", "prl_auto_dis", "prl_auto_floor"))
    text = out.read_text()
    assert "| MNIST 6k | random | 30 |" in text and "| disagreement |" in text and "| class_floor |" in text


def test_corruption_rate_class_floor_smoke_reports_its_estimate_and_accuracy(tmp_path):
    """``--methods itlm_auto_floor itlm_true``: ITLM auto with estimator='class_floor', its first estimate (the
    library function on the round-0 model's in-sample predictions) and its section of the table."""
    out = tmp_path / "floor.md"
    run = _script(["corruption_rate.py", "--smoke", "--data-root", SHARED_DATA, "--groups", "cls", "--methods",
                   "itlm_auto_floor", "itlm_true", "--out", out])
    f = _last_json(run)["class_floor"]
    assert f["rows"] == 1 and f["max_clean_eps_hat_pct"] is None and f["itlm_auto_ge_true_minus_1_share"] in (0.0, 1.0)
    (res,) = json.loads(out.with_suffix(".json").read_text())["results"]
    assert 0.0 <= res["floor"] < 1.0 and res["itlm_floor_estimates"][0] == pytest.approx(res["floor"], abs=0.02)
    assert f["median_abs_err_pts"] == pytest.approx(100 * abs(res["floor"] - res["true_eps"]), abs=0.01)
    text = out.read_text()
    assert "`estimator='class_floor'`" in text and "| MNIST 6k | random | 30 |" in text


def test_corruption_rate_class_dependent_rows_flip_pairs_among_five_classes_only():
    mod = _load("corruption_rate")
    from lit_robust import IndexedDataset

    y = torch.arange(1000) % 10
    ds = IndexedDataset(torch.utils.data.TensorDataset(torch.zeros(1000, 2), y.clone()))
    mod._flip_pairs_in_5_classes(ds, 0.2, seed=0)
    assert int(ds.corrupted.sum()) == 200 and bool((ds.targets != y).eq(ds.corrupted).all())
    assert bool((ds.targets[ds.corrupted] == (y[ds.corrupted] + 1) % 5).all()) and bool((y[ds.corrupted] < 5).all())
    rows = mod.rows_for(replace(mod.FULL, groups=("cls",), class_dependent=True))
    assert [(r["data"], r["eps"]) for r in rows if r["kind"] == mod.PAIRS5] == [("mnist", 20), ("fashion", 20)]
    assert not any(r["kind"] == mod.PAIRS5 for r in mod.rows_for(replace(mod.FULL, groups=("cls",))))


def test_corruption_rate_ab_reestimate_runs_both_arms_with_the_named_estimator(tmp_path):
    """``--ab-reestimate --ab-estimator disagreement_or_interior``: both arms estimate with the interior estimator, so their
    first estimate is the interior estimate of the round-0 model (the same seed trains the same round 0), and the table
    names that estimator."""
    out = tmp_path / "re.md"
    run = _script(["corruption_rate.py", "--smoke", "--ab-reestimate", "--ab-estimator", "disagreement_or_interior",
                   "--data-root", SHARED_DATA, "--out", out])
    results = json.loads(out.with_suffix(".json").read_text())["results"]
    assert len(results) == 10 and {r["row"]["data"] for r in results} == {"digits"}  # 5 rows x 2 arms, seed 100
    for every, first in zip(results[::2], results[1::2]):
        assert (every["reestimate"], first["reestimate"]) == (True, False) and every["row"] == first["row"]
        for arm in (every, first):
            assert arm["itlm_auto_estimates"][0] == pytest.approx(arm["interior"], abs=0.005)
        assert every["itlm_auto_estimates"][0] == first["itlm_auto_estimates"][0]
    assert "Both arms estimate with `estimator='disagreement_or_interior'`" in out.read_text()
    assert set(_last_json(run)) >= {"every_round", "first_positive"}


def test_corruption_rate_rejects_bad_arguments():
    mod = _load("corruption_rate")
    with pytest.raises(SystemExit, match=r"`--methods` must be among \['itlm_auto', .*got \['nope'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--methods", "nope"])
    with pytest.raises(SystemExit, match=r"`--groups` must be among \['cls', 'reg', 'ad'\], got \['cls2'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--groups", "cls", "cls2"])
    with pytest.raises(SystemExit, match=r"`--data` must be among \['mnist', .*got \['svhn'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--data", "svhn"])
    with pytest.raises(SystemExit, match=r"`--data` must be among \['mnist', 'fashion', 'digits'\], got \['moons'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--ab-reestimate", "--data", "moons"])
    with pytest.raises(SystemExit, match="`--ab-reestimate` runs ITLM auto on label-noise rows only: `--with-60k`"):
        mod.main(mod.BENCHMARK, ["--smoke", "--ab-reestimate", "--with-60k"])
    with pytest.raises(SystemExit, match="`--ab-estimator` chooses the estimator of `--ab-reestimate`'s arms: pass "
                                         "`--ab-reestimate`, got --ab-estimator disagreement"):
        mod.main(mod.BENCHMARK, ["--smoke", "--ab-estimator", "disagreement"])
    with pytest.raises(SystemExit, match=r"PRL-only run of the classification rows: pass `--groups cls`, got "
                                         r"\['cls', 'reg', 'ad'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--methods", "prl_true", "prl_auto_dis"])


def test_batch_filters_rejects_bad_options():
    mod = _load("batch_filters")
    with pytest.raises(SystemExit, match=r"`--methods` must be among \['standard', .*got \['prl_refit'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--methods", "prl", "prl_refit"])
    with pytest.raises(SystemExit, match="`--cls-epochs` must be an integer >= 1, got 0"):
        mod.main(mod.BENCHMARK, ["--smoke", "--cls-epochs", "0"])
    with pytest.raises(SystemExit, match="`--reg-lr` must be a float > 0, got nan"):
        mod.main(mod.BENCHMARK, ["--smoke", "--reg-lr", "nan"])


def test_estimators_offline_rejects_a_cache_without_npz(tmp_path):
    mod = _load("estimators_offline")
    with pytest.raises(SystemExit, match="`--cache` must be a folder of .npz files .*got '.*empty' \\(none found\\)"):
        mod.main(mod.BENCHMARK, ["--cache", str(tmp_path / "empty")])
    np_file = tmp_path / "full" / "cls-mnist-random-30-s0.npz"
    np_file.parent.mkdir()
    np_file.write_bytes(b"")
    with pytest.raises(SystemExit, match="`--cache` with --smoke must be an empty or new folder"):
        mod.main(mod.BENCHMARK, ["--smoke", "--cache", str(np_file.parent)])


def test_itlm_mnist_authors_protocol_full_mode_writes_its_own_table():
    """`--protocol authors` in full mode goes to results/itlm_mnist_authors.md, never over the scaled table."""
    mod = _load("itlm_mnist")
    args = mod.BENCHMARK.parser().parse_args(["--protocol", "authors", "--rows", "systematic:60"])
    settings = mod.BENCHMARK.settings("full", args)
    assert settings.protocol == mod.AUTHORS and settings.rows == (("systematic", 60),)
    assert args.out == str(REPO / "benchmarks" / "results" / "itlm_mnist_authors.md")
    harness = sys.modules["harness"]  # imported by the script
    assert harness.output_path("itlm_mnist", args) == REPO / "benchmarks" / "results" / "itlm_mnist_authors.md"
    args = mod.BENCHMARK.parser().parse_args(["--quick", "--protocol", "authors"])
    assert mod.BENCHMARK.settings("quick", args).protocol.epochs == 3 and args.out is None
    assert harness.mode_of(args) == "quick" and harness.output_path("itlm_mnist", args) is None


def test_itlm_mnist_authors_protocol_smoke():
    """`--protocol authors` builds the authors' tanh LeNet (bounded outputs) and runs a round through ITLM."""
    mod = _load("itlm_mnist")
    summary = mod.main(mod.BENCHMARK, ["--smoke", "--protocol", "authors"])
    assert summary["benchmark"] == "itlm_mnist" and summary["epochs_per_round"] == 1
    accs = summary["rows"]["systematic_70"]
    assert all(0.0 <= accs[k] <= 100.0 for k in ("baseline", "itlm", "oracle"))


def test_offline_candidates_for_squared_errors_read_the_split_the_gmm_refuses():
    """Issue 15's Diabetes case in miniature: squared residuals, 80 % ~ N(0, 1)^2 and 20 % ~ (4 + N(0, 1))^2. The gmm
    refuses these by rule (d) on some seeds (a narrow pile at the offset becomes the "low" component); the restart
    candidate then reads a rate near the truth, and where the gmm accepts it adds nothing. Both candidates stay
    estimates in [0, 1] and read clean squared residuals as (near) clean."""
    from lit_robust import estimate_corruption

    mod = _load("estimators_offline")
    refused = 0
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        s = torch.cat([torch.randn(280, dtype=torch.float64, generator=g) ** 2,
                       (4.0 + torch.randn(70, dtype=torch.float64, generator=g)) ** 2])
        d = {"scores": s.numpy()}
        est = estimate_corruption(s, "gmm")
        restart = mod._gmm_minority_restart(d)
        if est.reason == "one component (high component is the majority)":
            refused += 1
            assert 0.1 <= restart <= 0.3, (seed, restart)
        else:
            assert restart == est.rate
        assert 0.0 <= mod._gmm_sqrt(d) <= 1.0
    assert refused >= 1  # the defect the candidates are measured against is still there
    residuals = torch.randn(2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    clean = {"scores": (residuals**2).numpy()}
    assert mod._gmm_minority_restart(clean) <= 0.03 and mod._gmm_sqrt(clean) <= 0.03


def test_offline_flip_tail_reads_the_rate_where_the_wrong_labels_were_not_learnt():
    """The candidate's own assumption met: each sample's true class has probability 0.9 and the rest is spread at
    random, so a wrong label's loss follows exactly the simulated law; the tail ratio then reads the corrupted share
    (and 0 on clean labels). On a trained model's in-sample probabilities it does not (the docs' record)."""
    mod = _load("estimators_offline")
    rng = np.random.default_rng(0)
    n, k = 4000, 10
    true = rng.integers(0, k, n)
    rest = rng.dirichlet(np.ones(k - 1), n) * 0.1
    probs = np.empty((n, k))
    for i in range(n):
        probs[i] = np.insert(rest[i], true[i], 0.9)
    labels = true.copy()
    bad = rng.random(n) < 0.3
    labels[bad] = (true[bad] + rng.integers(1, k, bad.sum())) % k
    eps = float(bad.mean())
    assert abs(mod._flip_tail({"probs": probs, "labels": labels}) - eps) < 0.01
    assert mod._flip_tail({"probs": probs, "labels": true}) == 0.0
    assert mod._flip_tail({"scores": probs[:, 0]}) is None  # no labels: not applicable


def test_corruption_rate_cache_feeds_the_offline_estimator_comparison(tmp_path):
    """``estimators_offline.py --smoke`` writes a tiny cache with corruption_rate's rows (its ``--cache`` path) and
    compares the estimators on it; full mode then reads that cache and saves its table beside it."""
    import numpy as np

    cache = tmp_path / "cache"

    def run(*argv):
        return _script(["estimators_offline.py", *argv, "--data-root", SHARED_DATA])

    summary = _last_json(run("--smoke", "--cache", str(cache)))
    cls = np.load(cache / "cls-mnist-random-30-s0.npz")
    assert set(cls.files) == {"scores", "corrupted", "probs", "labels", "later"}
    n = cls["scores"].shape[0]
    assert cls["probs"].shape == (n, 10) and cls["labels"].shape == (n,) and cls["later"].shape[1] == n
    assert abs(cls["corrupted"].mean() - 0.3) < 0.01
    assert set(np.load(cache / "ad-moons-clustered-10-s0.npz").files) == {"scores", "corrupted"}
    assert summary["benchmark"] == "estimators_offline" and summary["mode"] == "smoke"
    assert summary["files"] == 2 and summary["rows"] == 2
    assert summary["disagreement"]["choose"]["rows"] == 1 and summary["gmm"]["check"]["rows"] == 1
    assert 0 <= summary["gmm"]["all"]["median_abs_err_pts"] <= 100
    off = run("--cache", str(cache))  # full mode: no training, the table goes beside the cache
    again = _last_json(off)
    assert again["mode"] == "full" and {k: v for k, v in again.items() if k not in ("mode", "wall_s")} == {
        k: v for k, v in summary.items() if k not in ("mode", "wall_s")}
    assert "| cls-mnist-random-30 | choose |" in off.stdout
    table = cache / "estimators_offline.md"
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    assert harness.render_saved(table.with_suffix(".json")) == table.read_text()

def test_the_cache_keeps_its_arrays_when_the_folds_add_theirs(tmp_path):
    """The cleanlab column's out-of-fold probabilities are written into the row's file after the in-sample arrays."""
    import torch

    mod = _load("corruption_rate")
    task = {"cache_dir": str(tmp_path), "row": {"group": "cls", "data": "mnist", "kind": "random", "eps": 30},
            "seed": 0}
    g = torch.Generator().manual_seed(0)
    scores, corrupted = torch.rand(6, dtype=torch.float64, generator=g), torch.tensor([1, 0, 0, 1, 0, 0]).bool()
    probs, cv = (torch.softmax(torch.randn(6, 3, generator=g), 1) for _ in range(2))
    mod._save_cache(task, scores=scores, corrupted=corrupted, probs=probs, labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    mod._save_cache(task, scores=scores, corrupted=corrupted, cv_probs=cv)
    saved = np.load(mod.cache_path(tmp_path, task["row"], 0))
    assert set(saved.files) == {"scores", "corrupted", "probs", "labels", "cv_probs"}
    assert np.array_equal(saved["probs"], probs.numpy()) and np.array_equal(saved["cv_probs"], cv.numpy())
    assert saved["labels"].tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_the_interior_candidate_is_the_estimators_rule(share):
    """``interior_q*`` reads the cached probabilities with the product's rule (``interior_disagreement``, tested against
    a slow reference in tests/test_estimation_interior.py): per predicted class, its ``share`` most confidently
    predicted samples, the rate of their labels that differ, weighted by the class's size."""
    from lit_robust.functional.estimation import interior_disagreement

    mod = _load("estimators_offline")
    rng = np.random.default_rng(0)
    probs = np.round(rng.dirichlet(np.ones(4), size=300), 1).astype(np.float32)  # rounded: ties occur
    labels = rng.integers(0, 4, 300)
    got = mod._interior(share)({"probs": probs, "labels": labels})
    p = torch.from_numpy(probs)
    assert got == interior_disagreement(torch.from_numpy(labels), p.argmax(1), p.max(1).values, share)
    if share == 1.0:  # the whole class: the share of disagreeing labels
        assert got == pytest.approx(float((probs.argmax(1) != labels).mean()))
    assert mod._interior(share, "cv_probs")({"probs": probs, "labels": labels}) is None


def test_estimators_offline_quick_writes_its_own_cache_where_there_is_none(tmp_path, monkeypatch):
    """A reviewer's bare `estimators_offline.py --quick` stopped on the missing benchmarks/cache: every other script's
    --quick is self-contained. With no cache there it writes one with corruption_rate's quick rows; a folder named
    with `--cache` must still hold the files."""
    from argparse import Namespace

    mod = _load("estimators_offline")
    monkeypatch.setattr(mod, "HERE", tmp_path)  # no benchmarks/cache
    args = Namespace(cache=None, quick=True, smoke=False, out=None)
    assert mod.configure(mod.FULL, args) == mod.QUICK and mod.QUICK.write_cache and mod.QUICK.protocol == "QUICK"
    with pytest.raises(SystemExit, match="must be a folder of .npz files"):
        mod.configure(mod.FULL, Namespace(cache=str(tmp_path), quick=True, smoke=False, out=None))


def test_disagreement_or_floor_candidate_switches_on_the_mixture():
    """The offline candidate ``disagreement_or_floor``: the disagreement estimate where the loss mixture finds two
    components, the 10th percentile of the per-class disagreement rates where it finds one."""
    import numpy as np

    from lit_robust import estimate_corruption_from_predictions

    est = _load("estimators_offline").estimators()["disagreement_or_floor"]
    rng = np.random.default_rng(0)
    n, k = 2000, 4
    labels = np.arange(n) % k
    pred = labels.copy()
    flip = ((labels == 0) & (np.arange(n) < 800)) | ((labels == 1) & (np.arange(n) < 400))
    pred[flip] = (labels[flip] + 1) % k  # class 0: 40 % disagree, class 1: 20 %, classes 2-3: none
    probs = np.eye(k)[pred] * 0.9 + 0.025
    two = {"scores": rng.random(n) + 5.0 * (pred != labels), "probs": probs, "labels": labels}
    ref = estimate_corruption_from_predictions(torch.from_numpy(two["scores"]), torch.from_numpy(labels),
                                               torch.from_numpy(pred))
    assert ref.two_components and est(two) == ref.rate
    one = dict(two, scores=rng.normal(1.0, 0.1, n))  # one mode: the disagreement would be the raw 15 %
    assert not estimate_corruption_from_predictions(torch.from_numpy(one["scores"]), torch.from_numpy(labels),
                                                    torch.from_numpy(pred)).two_components
    assert (pred != labels).mean() == 0.15 and est(one) == 0.0  # the floor: classes 2 and 3 disagree nowhere
    every = np.arange(n) % 5 == 0  # now every class disagrees on a fifth of its samples at least
    pred[every] = (labels[every] + 2) % k
    rates = [float((pred[labels == c] != c).mean()) for c in range(k)]
    assert min(rates) > 0.05 and est(dict(one, probs=np.eye(k)[pred])) == pytest.approx(np.quantile(rates, 0.1))


def test_itlm_per_class_smoke_ends_with_headline_json():
    summary = _last_json(_smoke("itlm_per_class"))
    assert summary["benchmark"] == "itlm_per_class" and summary["mode"] == "smoke"
    assert set(summary["pairs 20"]) == {"plain", "true", "true per_class", "auto", "auto per_class"}
    assert summary["pairs 20"]["true per_class"]["min_class_kept"] >= 79.0  # every class keeps ~80 % (floors)
    assert set(summary["per_class_minus_one_trim_points"]["random 20"]) == {"true", "auto"}


def test_itlm_per_class_backdoor_smoke_ends_with_headline_json():
    """One trim vs per_class under a single-target watermark: both columns, each with its ASR and dropped share."""
    summary = _last_json(_smoke("itlm_per_class_backdoor"))
    assert summary["benchmark"] == "itlm_per_class_backdoor" and summary["mode"] == "smoke"
    row = summary["X 1 → 2"]
    assert set(row) == {"one_trim", "per_class"}
    assert all(0 <= v["asr"] <= 100 and 0 <= v["dropped_poisoned"] <= 100 for v in row.values())


def test_itlm_per_class_backdoor_seeds_option_sets_the_runs_seeds():
    """`--seeds` was accepted and silently ignored: the script's only runs take `wm_seeds`, so `--quick --seeds 4 5`
    ran seed 0 (and its table said so). The option now names the watermark runs' seeds."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import harness

    bench = harness.load_module("itlm_per_class_backdoor").BENCHMARK
    for argv, seeds in ((["--quick", "--seeds", "4", "5"], [4, 5]), (["--quick"], [0]), ([], [0, 1, 2])):
        args = bench.parser().parse_args(argv)
        settings = bench.settings(harness.mode_of(args), args)
        assert sorted({t["seed"] for t in bench.tasks(settings, args)}) == seeds
        assert list(settings.wm_seeds) == seeds


def test_itlm_per_class_rejects_bad_options():
    mod = _load("itlm_per_class")
    with pytest.raises(SystemExit, match=r"`--round-epochs` must be two or more integers >= 1, got \[4\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--round-epochs", "4"])
    with pytest.raises(SystemExit, match=r"`--hidden` must be an integer >= 1, got 0"):
        mod.main(mod.BENCHMARK, ["--smoke", "--hidden", "0"])
    with pytest.raises(SystemExit, match=r"`--rates` must each be in \(0, 0.5\), got \[0.2, 0.5\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--rates", "0.2", "0.5"])
    with pytest.raises(SystemExit, match=r"`--kinds` must be among \['systematic', 'random', 'clean'\] with --data "
                                         r"mnist, got \['pairs'\]"):
        mod.main(mod.BENCHMARK, ["--smoke", "--data", "mnist", "--kinds", "pairs"])


def test_itlm_per_class_plain_last_round_trains_as_long_as_itlms_final_model(tmp_path):
    """A researcher: ITLM was compared with plain training of the rounds' summed epochs, while its final model trains
    only the last round's. ``--plain-last-round 1`` adds plain training of that length, and the table compares them."""
    mod = _load("itlm_per_class")
    out = tmp_path / "pc.md"
    summary = mod.main(mod.BENCHMARK, ["--smoke", "--data", "digits", "--kinds", "random", "--rates", "0.2",
                                       "--round-epochs", "1", "2", "--plain-last-round", "1", "--out", str(out)])
    assert set(summary["itlm_minus_plain_last_round_points"]["random 20"]) == {"true", "true per_class", "auto",
                                                                              "auto per_class"}
    saved = json.loads(out.with_suffix(".json").read_text())
    epochs = {r["variant"]: r["epochs"] for r in saved["results"]}
    assert epochs["plain"] == 3 and epochs["plain last round"] == 2 and saved["settings"]["plain_last_round"] is True
    text = out.read_text()
    assert "| random | 20 | plain last round |" in text and "ITLM against plain training of equal length" in text


def test_itlm_per_class_runs_other_data_at_several_rates(tmp_path):
    """``--data digits --rates``: one row per noise and rate (clean once), each with its own true keep_ratio."""
    mod = _load("itlm_per_class")
    out = tmp_path / "pc.md"
    summary = mod.main(mod.BENCHMARK, ["--smoke", "--data", "digits", "--kinds", "random", "clean", "--rates", "0.1",
                                       "0.3", "--round-epochs", "1", "1", "--out", str(out)])
    assert set(summary["per_class_minus_one_trim_points"]) == {"random 10", "random 30", "clean 0"}
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["settings"]["data"] == "digits" and saved["settings"]["batch_size"] == 64
    rows = {(r["kind"], r["rate"]) for r in saved["results"]}
    assert rows == {("random", 0.1), ("random", 0.3), ("clean", 0.0)}
    kept = {r["rate"]: r["kept"] for r in saved["results"] if r["variant"] == "true"}
    assert kept == {0.1: 1170, 0.3: 910}  # (1 - rate) of digits' 1,300 training images
    text = out.read_text()
    assert "# ITLM: one trim vs `per_class=True` (digits 1300" in text and "| random | 30 | true |" in text


def test_newcomer_images_smoke_ends_with_headline_json():
    """The README's image-folder and relabel-loop newcomer figures were measured with scripts never committed: their
    re-measurement's smoke run (300 PNGs, two arms; a relabel loop of one fix step) ends with the headline JSON."""
    run = _smoke("newcomer_images")
    summary = _last_json(run)
    assert summary["benchmark"] == "newcomer_images" and summary["mode"] == "smoke"
    assert set(summary["folders_mean_test_acc"]) == {"plain", "auto, class_floor"}
    assert all(0.0 <= a <= 1.0 for a in summary["folders_mean_test_acc"].values())
    assert len(summary["folders_eps_hat_pct"]["auto, class_floor"]) == 1
    # 25 % of 300 wrong, fewer after the fix step, none in the last state (every label right)
    wrong = summary["loop_mean_wrong_pct"]
    assert len(wrong) == 3 and wrong[0] == 25.0 and wrong[0] > wrong[1] and wrong[2] == 0.0
    assert all(len(v) == 3 and all(0.0 <= e <= 100.0 for e in v) for v in summary["loop_mean_eps_hat"].values())
    assert re.search(r"\| 0 \| 2 \(all right\) \| 0 \| 0\.0 \|", run.stdout)


def test_newcomer_images_flips_stay_within_their_look_alike_group():
    """The exact count moves, each to another class of its own group; Trouser, Dress and Bag are never touched."""
    mod = _load("newcomer_images")
    labels = torch.arange(10).repeat(100)
    noisy = mod.lookalike_flips(labels, 279, seed=3)
    moved = (noisy != labels).nonzero().flatten()
    assert len(moved) == 279
    group = {c: g for g in mod.GROUPS for c in g}
    assert all(int(noisy[i]) in group[int(labels[i])] for i in moved)
    assert not set(labels[moved].tolist()) & {1, 3, 8}
    assert torch.equal(noisy, mod.lookalike_flips(labels, 279, seed=3))  # seeded


@pytest.mark.parametrize("kind", ["uniform", "pairs", "clean"])
def test_the_shipped_floor_or_interior_candidate_is_the_products_estimator(kind):
    """``floor_or_interior`` in estimators_offline.py (how the default was chosen: the concentration of the
    disagreements computed from the confusion matrix, the class floor by NumPy) reads the same rate as the product's
    ``estimate_corruption_from_spread`` on cached-style data: uniform flips (the floor), pair flips (the interior)
    and clean labels with a model's own scattered errors."""
    from lit_robust import estimate_corruption_from_spread

    mod = _load("estimators_offline")
    rng = np.random.default_rng(1)
    n, k = 4000, 10
    truth = rng.integers(0, k, n)
    flip = rng.random(n) < (0.0 if kind == "clean" else 0.3)
    labels = truth.copy()
    labels[flip] = (truth[flip] + (rng.integers(1, k, flip.sum()) if kind == "uniform" else 1)) % k
    probs = rng.dirichlet(np.ones(k), size=n).astype(np.float64) * 0.3
    probs[np.arange(n), truth] += 0.7  # the model predicts the truth, but for a few of its own errors
    own = rng.random(n) < 0.03
    probs[own] = probs[own][:, ::-1]
    scores = -np.log(probs[np.arange(n), labels] / probs.sum(1))
    d = {"probs": probs, "labels": labels, "scores": scores}
    p = torch.from_numpy(probs)
    est = estimate_corruption_from_spread(torch.from_numpy(scores), torch.from_numpy(labels), p.argmax(1),
                                          p.max(1).values)
    assert mod.estimators()["floor_or_interior"](d) == pytest.approx(est.rate, abs=1e-12)
    assert est.reason.startswith("class floor") == (kind == "uniform"), est.reason
