"""Every argument of every public model and callback, given values of the wrong kind or out of any sensible range
through the Python API, is either accepted or refused with an error that names it (the CLI's type checks do not
guard the Python API).

A sweep like this found `DCGAN(lr="0.01")` raising `'>' not supported between instances of 'str' and 'int'`,
`DCGAN(seed=0.5)` torch's `manual_seed expected a long`, and the same for `SimCLR`, `LinearProbe` and the
classifiers' `bootstrap_beta`; and among the public functions `trim_mask(-1, 0.5)` raising `'int' object has no
attribute 'numel'`, `keep_count(10, "0.5")` and `corrupt_labels(y, 0.7, seed=0.5)` Python's or torch's own errors.
Datamodules are checked in their own tests (they read files at `setup`).
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

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


def _function_arguments() -> dict[str, dict]:
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(100, generator=g), torch.arange(100) % 4
    predicted = (labels + (torch.arange(100) % 7 == 0)) % 4
    return {
        "corrupt_labels": dict(targets=torch.arange(100) % 10, clean_ratio=0.7),
        "bootstrap_loss": dict(logits=torch.zeros(4, 3), targets=torch.tensor([0, 1, 2, 0])),
        "keep_count": dict(n=10, keep_ratio=0.5),
        "global_smallest_k_mask": dict(scores=scores[:10], index=torch.arange(10), k=3),  # one process: no group
        "global_trim_mask": dict(scores=scores[:10], index=torch.arange(10), keep_ratio=0.5),
        "global_batch_keep_mask": dict(local_scores=scores[:10], local_index=torch.arange(10), drop_ratio=0.2),
        "rank_order": dict(scores=scores[:10]),
        "smallest_k_mask": dict(scores=scores[:10], k=3),
        "trim_mask": dict(scores=scores[:10], keep_ratio=0.5),
        "truncate_spectral_norm": dict(weight=torch.randn(4, 4, generator=g), k=1.0),
        "roc_auc": dict(scores=scores[:10], is_anomaly=torch.tensor([0, 1] * 5)),
        "anomaly_threshold": dict(scores=scores[:10], contamination=0.1),
        "random_views": dict(images=torch.zeros(2, 1, 8, 8)),
        "estimate_corruption": dict(scores=scores),
        "estimate_corruption_from_predictions": dict(scores=scores, labels=labels, predicted=predicted),
        "estimate_corruption_from_class_floor": dict(scores=scores, labels=labels, predicted=predicted),
        "activation_clusters": dict(features=torch.randn(100, 5, generator=g), labels=torch.arange(100) % 2),
    }


@pytest.mark.parametrize("name", sorted(_function_arguments()))
def test_each_argument_of_a_public_function_is_accepted_or_refused_by_name(name, one_torch_thread):
    fn, valid = getattr(L, name), _function_arguments()[name]
    fn(**valid)
    unnamed = []
    for arg in inspect.signature(fn).parameters:
        for value in BAD:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn(**{**valid, arg: value})
            except (ValueError, TypeError) as e:
                if f"`{arg}`" not in str(e) and f"`{arg}=" not in str(e):
                    unnamed.append(f"{arg}={value!r}: {type(e).__name__}: {str(e)[:160]}")
            except Exception as e:  # noqa: BLE001 - any other error type is the finding
                unnamed.append(f"{arg}={value!r}: {type(e).__name__}: {str(e)[:160]}")
    if name == "corrupt_labels":  # labels [0] hold one class: said of the number of classes read off them
        unnamed = [u for u in unnamed if not u.startswith("targets=[0]: ValueError: `num_classes` must be >= 2")]
    assert not unnamed, "\n".join(unnamed)


def test_length_mismatches_say_the_length_allowed():
    """Five length checks named both arguments and both lengths ("got 2 scores for 3 labels") but not which one is
    wrong nor the length it must have; each now says the argument, the length allowed and the one received."""
    from lit_robust.anomaly import rca_exchange_masks, roc_auc
    from lit_robust.functional.scores import prl_l_scores
    from lit_robust.report import suspicion_order

    three, two = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0, 1])
    cases = [
        (lambda: roc_auc(three, two),
         r"^`is_anomaly` must have one label per score, 3 entries \(as `scores`\), got 2\.$"),
        (lambda: rca_exchange_masks(three, three[:2], 0.5),
         r"^`errors_2` must have one error per sample of `errors_1` .*, 3 entries, got 2\.$"),
        (lambda: suspicion_order(three, two), r"^`index` must have one entry per score, shape \(3,\) \(as `scores`\), "
                                              r"got \(2,\)\.$"),
        (lambda: suspicion_order(three.reshape(3, 1), torch.arange(3)),
         r"^`scores` must be 1-D .*, got shape \(3, 1\)"),
        (lambda: prl_l_scores(torch.zeros(4, 2), torch.zeros(4), "mse"),
         r"^`loss='mse'` needs `targets` .*, 4 rows of 2 \(e\.g\. shape \(4, 2\), as `outputs`\), got shape \(4,\)\.$"),
    ]
    for call, says in cases:
        with pytest.raises(ValueError, match=says):
            call()
