"""Every committed benchmark table is exactly its saved run rendered again (``benchmarks/harness.py``).

A table in ``benchmarks/results/`` is only ever written as ``render(saved)``; these tests re-render each saved
``.json`` with its script and compare byte for byte, so a table cannot drift from the figures it was made from,
and a script's markdown cannot change without its committed tables being re-rendered (or re-run).
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO

RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))
import harness  # noqa: E402

TABLES = sorted(RESULTS.glob("*.md"))


@pytest.mark.parametrize("table", TABLES, ids=[t.stem for t in TABLES])
def test_committed_table_is_its_saved_run_rendered(table):
    saved_path = table.with_suffix(".json")
    assert saved_path.is_file(), f"{table.name} has no saved run beside it ({saved_path.name})"
    saved = json.loads(saved_path.read_text())
    assert set(saved) >= {"benchmark", "mode", "settings", "results", "meta"}, sorted(saved)
    assert (REPO / "benchmarks" / f"{saved['benchmark']}.py").is_file()
    assert harness.render_saved(saved_path) == table.read_text()


def test_render_refuses_a_run_of_another_script(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "anomaly", "meta": {"wall_s": 1.0}}))
    mod = harness.load_module("filter_auto_digits")
    with pytest.raises(SystemExit, match="`--render` must be a saved run of filter_auto_digits, got one of 'anomaly'"):
        harness.main(mod.BENCHMARK, ["--render", str(other)])
    with pytest.raises(SystemExit, match="`--render` must be a saved run .*no such file"):
        harness.main(mod.BENCHMARK, ["--render", str(tmp_path / "missing.json")])


def test_bad_options_name_the_option():
    mod = harness.load_module("filter_auto_digits")
    with pytest.raises(SystemExit, match="`--jobs` must be >= 1, got 0"):
        harness.main(mod.BENCHMARK, ["--smoke", "--jobs", "0"])
    with pytest.raises(SystemExit, match=r"`--seeds` must be integers >= 0, got \[-1\]"):
        harness.main(mod.BENCHMARK, ["--smoke", "--seeds", "-1"])


def test_a_run_renders_to_the_same_bytes_from_its_saved_json(tmp_path, monkeypatch):
    """The harness path end to end on a toy protocol: run, save, render from the JSON, compare."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class P:
        seeds: tuple[int, ...] = (0, 1)
        scale: float = 0.5

    def render(saved):
        rows = [[r["seed"], f"{r['value']:.3f}"] for r in saved["results"]]
        return "\n".join(["# toy", *harness.md_table(["seed", "value"], rows), "", saved["meta"]["command"], ""])

    bench = harness.Benchmark(name="toy", doc="A toy.", modes={"full": P(), "quick": P(), "smoke": P(seeds=(3,))},
                              tasks=lambda p, a: [{"seed": s, "scale": p.scale} for s in p.seeds],
                              run=lambda t: {"seed": t["seed"], "value": t["scale"] * t["seed"] + 1 / 3},
                              render=render, headline=lambda s: {"n": len(s["results"])}, data=False)
    out = tmp_path / "toy.md"
    summary = harness.main(bench, ["--seeds", "4", "5", "6", "--jobs", "1", "--out", str(out)])
    assert summary["mode"] == "full" and summary["n"] == 3
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["settings"] == {"seeds": [4, 5, 6], "scale": 0.5}
    assert [r["value"] for r in saved["results"]] == [0.5 * s + 1 / 3 for s in (4, 5, 6)]
    assert render(saved) == out.read_text()
    assert "| 5 | 2.833 |" in out.read_text() and "--seeds 4 5 6" in out.read_text()
    again = harness.main(bench, ["--render", str(out.with_suffix(".json"))])
    assert again == {"benchmark": "toy", "mode": "render", "n": 3, "wall_s": saved["meta"]["wall_s"]}
    with pytest.raises(SystemExit, match="`--seeds` is not an option of toy2"):
        harness.main(dataclasses.replace(bench, name="toy2", modes={m: object() for m in harness.MODES}),
                     ["--seeds", "1"])
