"""docs/capabilities/backdoor.md says what the code does and quotes the committed benchmark files.

A user checking the page claim by claim found: the warning for a flagged part of an outsized class given at 1.5×
the median class size where the callback waits for 1.8×; the shipped activation-clustering config's warm-up given as
"about 140 steps" where it takes 120; `backbone="lenet"` described as two hidden layers of 256, which only
`hidden=256, hidden_layers=2` give (the defaults: one of 128); and three ranges off the tables they quote. These tests
recompute each from the source, the config or the committed tables; the precision page's list of the compat
matrix's modules is checked against its cases. Nothing trains.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import warnings
from types import SimpleNamespace

import yaml

from tests.conftest import REPO

PAGE = REPO / "docs" / "capabilities" / "backdoor.md"
RESULTS = REPO / "benchmarks" / "results"


def _text() -> str:
    return " ".join(PAGE.read_text(encoding="utf-8").split())  # one space for every line break: prose is wrapped


def _warned(size: int, flagged_any: bool) -> list[str]:
    """What ActivationClustering warns of a class of `size` among nine classes of 100 (median 100)."""
    from lit_robust import ActivationClustering

    sizes = {c: 100 for c in range(9)} | {9: size}
    res = SimpleNamespace(sizes=sizes, flagged={c: (10 if flagged_any else 0) for c in sizes})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ActivationClustering()._warn_of_an_outsized_class(SimpleNamespace(datamodule=None), res, flagged_any)
    return [str(w.message) for w in caught]


def test_the_outsized_class_warnings_start_where_the_page_says():
    from lit_robust.callbacks.activation_clustering import OUTSIZED_CLASS, POISON_MAJORITY_CLASS

    text = _text()
    assert f"flags part of a class at least {POISON_MAJORITY_CLASS:g}× the median class size" in text
    assert f"one class holds {OUTSIZED_CLASS:g}× the median class size or more, the callback warns" in text
    # part flagged: a class 1.6x the median is not warned about, one 1.9x is
    assert _warned(160, flagged_any=True) == []
    assert any("may be" in m or "clean part" in m for m in _warned(190, flagged_any=True))
    # nothing flagged: from 1.5x
    assert _warned(140, flagged_any=False) == []
    assert any("flagged nothing" in m for m in _warned(150, flagged_any=False))


def test_the_shipped_configs_warm_up_step_count_is_the_pages():
    cfg = yaml.safe_load((REPO / "configs" / "backdoor_patch_activation_clustering.yaml").read_text(encoding="utf-8"))
    data = cfg["data"]["init_args"]
    (ac,) = [c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("ActivationClustering")]
    # train_size is the training pool (val_size is drawn beside it) and the loader keeps the last, smaller batch
    per_epoch = math.ceil(data["train_size"] / data["batch_size"])
    epochs = ac["init_args"]["warmup_epochs"]
    assert f"The shipped config takes {per_epoch * epochs} ({epochs} epochs of {per_epoch} batches)" in _text()


def test_the_lenet_backbone_of_the_benchmark_is_named_with_its_widths():
    from torch import nn

    from lit_robust import ImageClassifier

    def hidden(model) -> list[int]:
        linears = [m for m in model.net.modules() if isinstance(m, nn.Linear)]
        return [m.out_features for m in linears[:-1]]

    assert hidden(ImageClassifier(backbone="lenet", hidden=256, hidden_layers=2)) == [256, 256]
    assert hidden(ImageClassifier(backbone="lenet")) == [128]
    text = _text()
    assert '(`backbone="lenet", hidden=256, hidden_layers=2`: cnn2\'s two convolutions, then two hidden ReLU layers' \
           " of 256, then the output layer — the defaults give one of 128;" in text


def _cell_means(dataset: str, method: str, setting: str, metric: str) -> dict[tuple[str, float], float]:
    rows = json.loads((RESULTS / "backdoor_margin.json").read_text(encoding="utf-8"))["results"]["rows"]
    cells: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        if r["dataset"] == dataset and r["method"] == method and r["setting"] == setting:
            cells.setdefault((r["attack"], r["eps"]), []).append(r[metric])
    return {k: statistics.mean(v) for k, v in cells.items()}


def test_the_ranges_quoted_from_the_margin_table_are_its_figures():
    text = _text()
    std = [v for (_, eps), v in _cell_means("fashion", "standard", "eps", "clean").items() if 0 < eps <= 0.35]
    assert f"82 % at 0.35 (Standard's clean accuracy: {min(std):.1f}–{max(std):.1f} %)" in text
    prl = [v for (_, eps), v in _cell_means("mnist", "prl", "eps+0.2", "poison").items() if eps <= 0.25]
    assert f"reaches {min(prl):.0f}–{max(prl):.0f} % at ε ≤ 0.25" in text


def test_the_thesis_blend_prl_at_range_is_the_tables():
    table = (RESULTS / "backdoor_mnist.md").read_text(encoding="utf-8")
    section = table.split("### blend: poison accuracy", 1)[1].split("###", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| ε"))
    col = [c.strip() for c in header.strip("|").split("|")].index("PRL-AT")
    thesis = [float(re.search(r"\(([\d.]+)\)", [c.strip() for c in line.strip("|").split("|")][col])[1])
              for line in section.splitlines() if re.match(r"\| 0\.\d", line)]
    assert len(thesis) == 4
    assert f"under the blend attack PRL-AT 15–29 % (thesis {min(thesis):.0f}–{max(thesis):.0f} %)" in _text()


def test_the_precision_page_lists_every_cell_of_the_matrix():
    """precision-compile.md listed the matrix's modules without ActivationClustering, which it fits in every cell."""
    from tests.test_compat_matrix import CASES

    page = " ".join((REPO / "docs" / "capabilities" / "precision-compile.md").read_text(encoding="utf-8").split())
    listed = page.split("`tests/test_compat_matrix.py` fits every callback and ready-made module (", 1)[1]
    listed = listed.split(") in `32-true`", 1)[0]
    names = {"itlm": "ITLM", "activation_clustering": "ActivationClustering", "filter_prl": "the three filters",
             "filter_spl": "the three filters", "filter_prl_g": "the three filters", "coteaching": "Co-PRL(L)",
             "adversarial_trigger": "AdversarialTrigger", "spectral_normalize": "SpectralNorm in both modes",
             "spectral_truncate": "SpectralNorm in both modes", "backdoor_metrics": "BackdoorMetrics",
             "dcgan_itlm_sample_grid": "DCGAN with ITLM and SampleGrid", "robust_realnvp": "RobustRealNVP",
             "rca": "RCA", "simclr": "SimCLR", "linear_probe": "LinearProbe"}
    assert set(CASES) == set(names), "a new matrix case: name it here and on the page"
    assert [n for n in dict.fromkeys(names.values()) if n not in listed] == []
