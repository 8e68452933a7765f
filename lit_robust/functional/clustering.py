r"""Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by Activation
Clustering", 2018): the poisoned samples of a class form their own cluster in the network's hidden features.

For every given label :math:`c`, the features of the samples labelled :math:`c` are centred, projected on their
first ``dims`` principal components and split in two by 2-means. A poisoned sample carries the features of its
true class plus the trigger's, so it sits apart from the clean samples of the label it was given, and under an
attack that poisons less than half of a class it is in the smaller cluster. Whether a class is poisoned at all is
read from how well its split separates (the simplified silhouette): every class gives up its smaller cluster when
the median class separates well (an attack on every class), else only the classes that separate very well (an
attack on a few). The rule needs no corrupted fraction. See :func:`activation_clusters` for the thresholds and
what they were chosen on, ``benchmarks/results/backdoor_margin.md`` for what the rule achieved.

Pure tensor code (no Lightning); :class:`lit_robust.ActivationClustering` is the callback.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lit_robust._checks import _is_real, check_has_values, check_int, check_number

__all__ = ["ActivationClusters", "activation_clusters", "outsized_class", "two_means"]


@dataclass
class ActivationClusters:
    """The result of :func:`activation_clusters`.

    Attributes:
        suspicious: ``[n]`` bool, True for the samples of each class's smaller cluster and for samples with
            non-finite features.
        score: ``[n]`` float64 in [-1, 1]: :math:`(d_{kept} - d_{flagged}) / \\max(d_{kept}, d_{flagged})`, the
            distances of the sample's projected features to the two cluster centres of its class -- positive
            for the samples of their class's smaller cluster, larger = deeper in it, whether or not that cluster
            was flagged (``suspicious`` says which were); ``inf`` for non-finite features; 0 in a class that
            could not be split (too few samples, equal features, one cluster).
        silhouette: per class (given label), the mean simplified silhouette of the split, :math:`(b - a) /
            \\max(a, b)` with :math:`a`, :math:`b` the distances to the own and the other centre (0: no split).
        flagged: per class, the number of flagged samples (non-finite ones not counted).
        sizes: per class, the number of samples with finite features.
        reasons: per class whose smaller cluster is not flagged, why (too few samples, all features equal, one
            cluster, silhouette below the thresholds).
        median_silhouette: the median of ``silhouette`` over the classes (0 without classes).
        split_all: ``median_silhouette >= min_silhouette``: every class that could be split was.
    """

    suspicious: Tensor
    score: Tensor
    silhouette: dict[int, float] = field(default_factory=dict)
    flagged: dict[int, int] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    median_silhouette: float = 0.0
    split_all: bool = False


def two_means(points: Tensor, max_iter: int = 100) -> Tensor:
    """Deterministic 2-means (Lloyd) on the rows of ``points`` ``[m, q]``; returns the cluster (0/1) of each row.

    Initialisation: the sign of the first coordinate (``points[:, 0] >= 0`` is cluster 1) -- on principal
    component projections, a split across the direction of largest variance. A point equally far from both
    centres joins cluster 0. Stops when no assignment changes, after ``max_iter`` updates, or when a cluster
    empties (the assignment before that update is returned).

    >>> two_means(torch.tensor([[-2.0], [-1.0], [1.0], [5.0], [6.0]])).tolist()
    [0, 0, 0, 1, 1]
    """
    if points.dim() != 2 or points.shape[1] == 0:  # no coordinate: no first one to start from
        raise ValueError(f"`points` must be a 2-D tensor [m, q] with q >= 1, got shape {tuple(points.shape)}.")
    check_int("max_iter", max_iter, 1)
    assign = (points[:, 0] >= 0).long()
    for _ in range(max_iter):
        counts = torch.bincount(assign, minlength=2)
        if bool((counts == 0).any()):
            break
        centres = torch.stack([points[assign == k].mean(0) for k in range(2)])
        d = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
        new = (d[:, 1] < d[:, 0]).long()
        if bool((torch.bincount(new, minlength=2) == 0).any()) or torch.equal(new, assign):
            break
        assign = new
    return assign


def _principal_projection(z: Tensor, dims: int) -> Tensor | None:
    """``z`` (centred, float64) on its first ``dims`` principal axes, each axis signed so that its largest
    loading (first on ties) is positive; ``None`` when ``z`` has no variance."""
    _, s, vh = torch.linalg.svd(z, full_matrices=False)
    tol = s.max() * max(z.shape) * torch.finfo(z.dtype).eps if s.numel() else 0.0
    rank = int((s > tol).sum())
    if rank == 0:
        return None
    v = vh[: min(dims, rank)]
    pivot = v.abs().argmax(dim=1)
    signs = torch.sign(v.gather(1, pivot[:, None]))
    return z @ (v * signs).T


def activation_clusters(features: Tensor, labels: Tensor, dims: int = 10, min_silhouette: float = 0.5,
                        class_silhouette: float = 0.6, min_class_size: int = 20,
                        max_iter: int = 100) -> ActivationClusters:
    """Flag the smaller 2-means cluster of the classes whose hidden features split apart (activation clustering).

    Per given label (ascending), over that class's samples in the order given: centre the features (float64),
    project them on the first ``dims`` principal components (fewer when the features have lower rank), split the
    projections with :func:`two_means` and take the smaller cluster (of two equal ones, the one without the
    class's first sample). How well the split separates is its simplified silhouette, the mean over the class of
    :math:`(b - a)/\\max(a, b)`, :math:`a` and :math:`b` the distances to the own and the other centre. Then the
    smaller cluster is flagged

    * in every split class when the median silhouette over the classes is at least ``min_silhouette`` (an attack
      that poisons every class, e.g. a → a + 1), else
    * in the classes whose own silhouette is at least ``class_silhouette`` (an attack on a few classes).

    Chosen on the backdoored MNIST / FashionMNIST of ``benchmarks/backdoor_mnist.py`` (6,000 images, MLP
    784-256x2-10 after 3 epochs, seeds 0-1; the features: the last layer's input): on clean data the median was
    0.31-0.33 (MNIST) and 0.45-0.46 (FashionMNIST), no class above 0.55; with 15-35 % of every class poisoned the
    median was 0.55-0.74. The split of one Gaussian class has a silhouette of 0.66 in 1 dimension, 0.46 in 2, 0.24
    in 5 and 0.13 in 10 (2,000 samples): the defaults assume features of more than a few effective dimensions,
    and a task whose clean classes separate better than FashionMNIST's needs higher thresholds -- check
    ``silhouette`` on data you trust.

    The result depends only on the rows and their order: pass them in dataset index order (the callback gathers
    them so under DDP) and it is the same for any split over processes. Samples with a NaN/inf feature are
    flagged (score ``inf``) and left out of the clustering, with a warning; a class with fewer than
    ``min_class_size`` finite samples, or whose features are all equal, or whose 2-means ends with one cluster,
    is not split (``reasons`` says why; its silhouette counts as 0 in the median).

    Args:
        features: ``[n, d]`` hidden features, e.g. the input of a classifier's last linear layer.
        labels: ``[n]`` integer given labels.
        dims: principal components kept (Chen et al.: 10).
        min_silhouette: the median class silhouette at or above which every class is split, in [0, 1].
        class_silhouette: below that median, the silhouette at or above which a class is split, in [0, 1].
        min_class_size: classes with fewer finite samples are not split (>= 4).
        max_iter: 2-means updates at most.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> clean = torch.randn(80, 5, generator=g)
        >>> poisoned = torch.randn(20, 5, generator=g) + 6.0   # a fifth of the class, far away
        >>> res = activation_clusters(torch.cat([clean, poisoned]), torch.zeros(100, dtype=torch.long))
        >>> res.suspicious[80:].all().item(), res.suspicious[:80].any().item(), round(res.silhouette[0], 2)
        (True, False, 0.84)
    """
    if not isinstance(features, Tensor) or features.dim() != 2:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"`features` must be a 2-D tensor [n, d], got {got}.")
    if not isinstance(labels, Tensor) or labels.shape != features.shape[:1]:
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"`labels` must be a tensor of shape [{features.shape[0]}] (one label per row of "
                         f"`features`), got {got}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"`labels` must hold integer class indices, got dtype {labels.dtype}.")
    check_has_values("features", features)
    check_has_values("labels", labels)
    # the package's checks: numpy numbers count, as everywhere else (np.int64(10) dims was refused)
    dims = check_int("dims", dims, 1)
    min_silhouette = check_number("min_silhouette", min_silhouette, 0, 1)
    class_silhouette = check_number("class_silhouette", class_silhouette, 0, 1)
    min_class_size = check_int("min_class_size", min_class_size, 4)
    max_iter = check_int("max_iter", max_iter, 1)
    x = features.detach().to(device="cpu", dtype=torch.float64)
    y = labels.detach().to("cpu").long()
    n = x.shape[0]
    finite = torch.isfinite(x).all(dim=1) if x.shape[1] else torch.ones(n, dtype=torch.bool)
    score = torch.zeros(n, dtype=torch.float64)
    score[~finite] = math.inf
    bad = int((~finite).sum())
    if bad:
        warnings.warn(f"activation_clusters: {bad} of {n} samples have NaN or infinite features; they are flagged as "
                      "suspicious and left out of the clustering.", stacklevel=2)
    out = ActivationClusters(suspicious=~finite, score=score)
    smaller: dict[int, Tensor] = {}  # class -> dataset rows of its smaller cluster
    for c in torch.unique(y).tolist():
        rows = ((y == c) & finite).nonzero().squeeze(1)
        m = int(rows.numel())
        out.sizes[c], out.flagged[c], out.silhouette[c] = m, 0, 0.0
        if m < min_class_size:
            out.reasons[c] = f"{m} samples with finite features (< min_class_size={min_class_size})"
            continue
        z = x[rows]
        p = _principal_projection(z - z.mean(0), dims)
        if p is None:
            out.reasons[c] = "all features equal"
            continue
        assign = two_means(p, max_iter)
        counts = torch.bincount(assign, minlength=2)
        if bool((counts == 0).any()):
            out.reasons[c] = "2-means found one cluster"
            continue
        small = int(counts[1] < counts[0]) if counts[0] != counts[1] else 1 - int(assign[0])
        d = torch.cdist(p, torch.stack([p[assign == k].mean(0) for k in range(2)]))
        own = d.gather(1, assign[:, None]).squeeze(1)
        other = d.gather(1, (1 - assign)[:, None]).squeeze(1)
        out.silhouette[c] = float(_ratio(other - own, torch.maximum(own, other)).mean())
        d_flag, d_keep = d[:, small], d[:, 1 - small]
        score[rows] = _ratio(d_keep - d_flag, torch.maximum(d_flag, d_keep))
        smaller[c] = rows[assign == small]
    sil = sorted(out.silhouette.values())
    out.median_silhouette = (sil[(len(sil) - 1) // 2] + sil[len(sil) // 2]) / 2 if sil else 0.0
    out.split_all = out.median_silhouette >= min_silhouette
    for c, rows in smaller.items():
        if out.split_all or out.silhouette[c] >= class_silhouette:
            out.suspicious[rows] = True
            out.flagged[c] = int(rows.numel())
        else:
            out.reasons[c] = (f"silhouette {out.silhouette[c]:.3g} < class_silhouette={class_silhouette} and median "
                              f"{out.median_silhouette:.3g} < min_silhouette={min_silhouette}")
    return out


def outsized_class(sizes: dict[int, int], ratio: float = 1.5) -> tuple[int, int, float] | None:
    """``(class, size, median size)`` of the largest class when it holds at least ``ratio`` times the median class
    size (the median of ``sizes.values()``, the mean of the two middle ones for an even count), else ``None``; ties
    go to the smaller class. An all-to-one backdoor moves its poison into one class, and activation clustering
    does not find it at a small rate: this is the sign a defender still sees. Fewer than two classes: ``None``."""
    if not _is_real(ratio) or ratio <= 0 or not math.isfinite(ratio):  # "x" raised a bare TypeError
        raise ValueError(f"`ratio` must be a positive number, got {ratio!r}.")
    if len(sizes) < 2:
        return None
    counts = sorted(sizes.values())
    median = (counts[(len(counts) - 1) // 2] + counts[len(counts) // 2]) / 2
    big = min(sizes, key=lambda c: (-sizes[c], c))
    return (big, sizes[big], median) if median > 0 and sizes[big] >= ratio * median else None


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
