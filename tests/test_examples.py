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


def test_prl_example_runs_and_filters():
    out = load("prl_noisy_labels").main(fast=True)
    assert 0.0 <= out["test_acc"] <= 1.0
    first, *rest = out["history"]
    assert first.dropped == 0 and all(r.dropped > 0 for r in rest)  # one warm-up epoch, then filtering
    assert rest[-1].dropped_corrupted_frac > rest[-1].corrupted_frac  # the rejects are noisier than the data


def test_coteaching_example_runs_and_exchanges():
    out = load("coteaching_noisy_labels").main(fast=True)
    assert 0.0 <= out["test_acc"] <= 1.0
    first, *rest = out["history"]
    assert first.dropped_1 == first.dropped_2 == 0 and all(r.dropped_1 > 0 and r.dropped_2 > 0 for r in rest)
    assert rest[-1].dropped_corrupted_frac_1 > rest[-1].corrupted_frac


def test_regression_example_runs_and_filters():
    out = load("robust_regression").main(fast=True)
    assert out["test_r2"] <= 1.0
    last = out["history"][-1]
    assert last.dropped > 0 and last.dropped_corrupted_frac > last.corrupted_frac
