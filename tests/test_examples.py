import importlib.util

from tests.conftest import REPO


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_itlm_example_runs_and_selects():
    out = load("itlm_noisy_labels").main(fast=True)
    assert 0.0 <= out["test_acc"] <= 1.0
    assert [r.kept for r in out["history"]][1:] == [715, 715]  # floor(0.55 * 1300)
