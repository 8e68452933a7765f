"""Every argument of every public model and callback, given values of the wrong kind or out of any sensible range
through the Python API, is either accepted or refused with an error that names it (the CLI's type checks do not
guard the Python API).

A sweep like this found `DCGAN(lr="0.01")` raising `'>' not supported between instances of 'str' and 'int'`,
`DCGAN(seed=0.5)` torch's `manual_seed expected a long`, and the same for `SimCLR`, `LinearProbe` and the
classifiers' `bootstrap_beta`. Datamodules are checked in their own tests (they read files at `setup`).
"""

from __future__ import annotations

import inspect
import warnings

import pytest

import lit_robust as L

BAD = [-1, 0.5, 1e9, float("nan"), float("inf"), "zzz", "", None, [], [0], True, {}]
CLASSES = ["ITLM", "ActivationClustering", "BatchFilter", "CoTeaching", "ImageClassifier", "MLPClassifier", "DCGAN",
           "SampleGrid", "PredictionWriter", "LinearRegressor", "MLPRegressor", "SpectralNorm", "RealNVP",
           "RobustRealNVP", "RCA", "AutoEncoder", "AdversarialTrigger", "SimCLR", "LinearProbe"]
REQUIRED = {"ITLM": {"keep_ratio": 0.8, "round_epochs": [1, 1]}, "BatchFilter": {"rule": "prl", "drop_ratio": 0.2},
            "AdversarialTrigger": {"tau": 0.1}}


def _valid(name: str) -> dict:
    kwargs = dict(REQUIRED.get(name, {}))
    if name == "CoTeaching":
        kwargs["model"] = L.ImageClassifier(backbone="mlp", image_size=8)
    return kwargs


@pytest.mark.parametrize("name", CLASSES)
def test_each_argument_is_accepted_or_refused_by_name(name, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)  # `report_dir`="zzz" and the like must not write into the repository
    cls = getattr(L, name)
    cls(**_valid(name))  # the valid call the sweep starts from
    unnamed = []
    for arg, par in inspect.signature(cls).parameters.items():
        if par.kind in (par.VAR_KEYWORD, par.VAR_POSITIONAL) or arg == "model":
            continue
        for value in BAD:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cls(**{**_valid(name), arg: value})
            except (ValueError, TypeError, FileNotFoundError) as e:
                if f"`{arg}`" not in str(e) and f"`{arg}=" not in str(e):
                    unnamed.append(f"{arg}={value!r}: {type(e).__name__}: {str(e)[:160]}")
            except Exception as e:  # noqa: BLE001 - any other error type is the finding
                unnamed.append(f"{arg}={value!r}: {type(e).__name__}: {str(e)[:160]}")
    assert not unnamed, "\n".join(unnamed)
