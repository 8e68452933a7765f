"""Estimate the fraction of corrupted samples from per-sample scores.

A *score* is any per-sample number where larger means more suspicious: a training loss, a PRL(L)
gradient norm, ``-log p(x)`` of a flow, a reconstruction error. After a few epochs of training the
scores of clean samples form one low mode and those of corrupted samples a second, higher one; a
two-component 1-D mixture fitted to the scores gives

* ``rate``: the estimated corrupted fraction ``eps_hat``, and
* ``clean_posterior``: per sample, ``P(clean | score)``.

Two mixtures are offered (:func:`estimate_corruption`):

``"gmm"``
    Two Gaussians fitted by EM (float64) to ``t = log(s - min(s) + delta)`` with
    ``delta = 0.5 * q25(s - min(s))``. DivideMix (Li, Socher & Hoi, ICLR 2020, "DivideMix: Learning
    with Noisy Labels as Semi-supervised Learning") fits a GMM to min-max normalised CE losses; a GMM
    is affine-equivariant, so min-max normalising changes nothing, and the clean mode of losses is
    strongly right-skewed (exponential-like), which a second Gaussian then "explains" even when no
    sample is corrupted. The log with that offset makes exponential, Gamma(2) and half-normal clean
    modes roughly symmetric (sample skewness -0.0 / +0.0 / -0.3 at 200k draws, against +2.0 / +1.4 /
    +1.0 unlogged); ``delta`` is relative to the score scale, so the transform is scale-free.

``"bmm"``
    Two Beta distributions on min-max normalised scores, offset into the open interval (0, 1) by the
    same ``delta`` (see :func:`bmm_transform`; Arazo et al. clamp into ``[1e-4, 1 - 1e-4]`` instead), fitted by
    EM whose M-step is a weighted method of moments (Arazo, Ortego, Albert, O'Connor & McGuinness,
    ICML 2019, "Unsupervised label noise modeling and loss correction")::

        m_k = sum_i r_ik x_i / sum_i r_ik,   v_k = sum_i r_ik (x_i - m_k)^2 / sum_i r_ik
        alpha_k = m_k (m_k (1 - m_k) / v_k - 1),   beta_k = alpha_k (1 - m_k) / m_k

The EM for both (``k = 0`` the low "clean" component, ``k = 1`` the high one)::

    E: r_ik = pi_k f_k(x_i) / sum_j pi_j f_j(x_i)
    M: pi_k = mean_i r_ik;  gmm: mu_k, var_k = weighted mean and variance (+ a variance floor)

Starts (gmm). EM runs from three starts: the lower and upper halves of the sorted scores as the two components, then
the top quarter and the top eighth as the high one. The fit of highest likelihood is kept, a later start only where it
gains more than one nat (``_OTHER_START_MIN_GAIN``: a start that reaches the same optimum a hair higher changes
nothing). From the halves alone EM can stop in a worse optimum: where a model has fitted its clean samples, their
losses spread over orders of magnitude (1e-7 to 1e-1) and pile up at exact zeros, and EM split that clean spread in
two, with the corrupted samples (losses 2-20, 30 % of them) inside the "high" half. ITLM's later rounds, re-estimated
(``reestimate=True``) after a round trained on the selection, read 0 or 0.49 there in 5 of 8 runs; in 4 of them the
start from the top quarter reaches a fit 127-137 nats likelier that reads 0.30. On the cached scores of
``benchmarks/corruption_rate.py`` (628 estimates of the gmm and the disagreement estimator) the starts changed 16,
each closer to the truth: 9 of ITLM's later-round estimates on MNIST (0, or 43 % for 20 %) now within 1.5 points of
10-20 %, 3 on FashionMNIST with class-pair noise 0 -> 4.5-12.8 % for 30-40 %, two moons with 5-10 % uniform anomalies
0 -> 2.1-4.3 %. No estimate from the first scoring pass of a classifier moved. Of 6,000 synthetic draws, 4: three
with 10 % corrupted among log-normal clean scores read 10.0 (were 0.5-26.6) and one of 200 clean half-normal scores
read 14.4 (was 0). Three starts cost up to 4 times the time of one; the EM for two Gaussians (``_fit_gmm``) was then
rewritten on 1-D vectors: one estimate of all three on one CPU thread takes about 0.7 s on 60,000 clean scores and
16 s on 1,000,000, against 3.5 s and 92 s with the generic EM in the same run, and the estimates agree to 2e-15
(``benchmarks/estimator_speed.py``; the Beta mixture's EM, ``_fit_bmm``, likewise: 6-7x on clean scores).

Model selection -- clean data must give ``eps_hat ~ 0``, not 0.5. A second component is accepted only
if (a) its BIC is lower than that of the one-component fit (``BIC = -2 logL + p ln n``, p = 2 vs 5), (b)
its components are separated: Ashman's ``D = sqrt(2) |mu_1 - mu_0| / sqrt(var_0 + var_1) >= 2`` (gmm,
on the transformed scale; for bmm on the normalised scale with the Beta means and variances), and (c)
the high component has the higher mean, and (d) the high component is the minority (weight < 1/2):
like every trimming method here, the estimator assumes ``eps < 0.5``. Rule (d) is what rejects the
spurious split of a clean, log-transformed mode into a small low tail and a "high" bulk (measured on
clean exponential and half-normal scores, n = 4000: high weight ~0.8, Ashman D ~2.6). Otherwise ``rate`` is 0 for the finite scores and every
finite posterior is 1.

Squared errors (gmm only, ``squared_errors=True``). A regression's clean squared residuals (chi-square(1)-like,
dense at 0) pile up at the log's offset; EM from the halves takes that pile as the "low" component, so the "high"
one holds the clean bulk and the corrupted samples together, and rule (d) refuses it (measured: Diabetes with 20 %
of targets shifted by +-3 SD read 0 on 5 of 6 seeds at AUROC 0.98-1.00). With ``squared_errors=True``, where rule (d)
alone refuses the fit, EM is started again with the top quarter, then the top eighth, of the sorted scores as the
high component, and the fit of highest likelihood that passes every rule, with Ashman's ``D >= 2.5`` instead of 2
(more fits are searched), is taken (reason ``"two components (EM restarted from the top scores)"``). Diabetes: 6
of 6 seeds within 5 points (median error 3.4); clean synthetic scores (exponential, Gamma(2), half-normal; 200 and
500 of them; 240 + 480 draws) above 3 % as often as without it. It is opt-in because the same restart read clean
FashionMNIST's PRL(L) gradient norms (a classifier's scores, not squared errors) as 15 % corrupted: ITLM, and the
``drop_ratio="auto"`` of the owners that score by the loss (SPL, Co-teaching), turn it on for a regression with one
target per sample (:func:`lit_robust.data.spec.one_target_regression`). Since EM also starts from the top scores
(Starts, above), the restart is reached only where those starts' fits are not the likeliest: of 8 seeds of squared
residuals with 20 % of targets shifted by 4 SD, the plain gmm read 0 on 5 with EM from the halves, on 1 now.

Layers (``squared_errors=True``, where two components were taken). Glitches of several sizes sit in layers: the
gmm's high component takes the farthest (a regression's ×10 targets) and its clean one holds the nearer ones (+3 SD,
uniform values) beside the clean rows. The scores read clean (posterior >= 1/2) are fitted again, the same way, up
to twice more; a fit is taken as a further layer when it finds two components and reads at most a quarter of those
scores as corrupted, and each sample's posterior is the least of its levels'. Why a quarter: on the per-round scores
of ITLM ``"auto"`` in ``benchmarks/newcomer_regression.py`` and ``benchmarks/regression_restart.py`` (68 runs,
2026-12-06) the further layers found read 8.6-13.0 % of the scores left, 97.6-99.5 % of them glitched, while the
splits of the clean rows left read 41-50 % (Diabetes's squared residuals split about 50/50, two noise levels), 6-20 %
of them glitched. With layers, ITLM's last round read 15.6-29.2 % for the uniform, ×10 and +3 SD glitches in equal
shares at 25 % and 17.3-22.1 % at 30 % (7.7-9.7 % without), test R² 0.763 and 0.764 against 0.637 and 0.571 (0.755
and 0.739 at the true rate); no other run of the 68 changed but one round-0 estimate (×10 alone, 21.5 -> 22.4 % for
25 %). The reason then ends "then k more layers among the scores read clean"; the fit fields (``means``,
``weights``, ``ashman_d``, ...) stay the first fit's.

A posterior that falls as the score rises (both mixtures; :func:`monotone_posterior`). Outside the two means the
clean posterior of an accepted two-component fit is held to a running minimum (above the high mean) or maximum (below
the low mean): a mixture whose clean component is the wider one (on the gmm's log scale, usually) read its top scores
as clean again under scores it read as corrupted, and the rate did not count them. 163 of 228 two-component gmm fits
on the cached benchmark scores had such a rise (by up to 0.33); the estimates it moved rose by at most 1.45 points.

Far-out scores (both mixtures). A few scores far above the rest -- beyond Tukey's far-out fence ``q75 + 3 IQR`` of
the gmm's log scale, while they are at most 1 % of the finite scores -- are counted as corrupted (posterior 0) and
left out of the fit, as non-finite scores are (field ``far_out``). One diverged loss, or a regression target typed a
million times too large, had taken a component of its own: with 20 % of 1,000 scores corrupted, one score of 1e6
made the gmm read 0 (separation), one of 30 the bmm (clean scores U(0, 1), corrupted 3-4). A score inside the fence
is fitted as it is: with clean scores exponential (mean 0.1) and corrupted ones at 2-3, one score of 25-50 still
sets the bmm's min-max scale and makes it read 0 (60 and above lie beyond the fence; the gmm reads 20 % throughout).
More than 1 % beyond the fence are fitted with the rest: a
well-separated corrupted mode lies beyond it too (20 % of losses at 2-3 among clean ones below 0.1). On the cached
scores of ``benchmarks/corruption_rate.py`` (37 rows x 3 seeds, ITLM's later rounds too: 693 estimates of the gmm,
bmm and disagreement) the rule changed 17, by at most 0.6 points (two moons: 12 far-out scores of 2,000). Where that
fit to all the scores finds one component, the far-out ones (more than 1 %, fewer than the rest) are counted as
corrupted after all and the rest is fitted again, once (reason ``"<the rest's reason>, after k far-out scores were
counted as corrupted (the fit to all: <its reason>)"``): an untrained regression's squared errors on an energy table
with 8 % of its readings glitched to 9999, beside others glitched to 0 whose small errors made a wide low tail, had
read 0 (the low tail took the second component, D 1.0) and the model trained on the 9999s. On the 510 gmm estimates
of the benchmark's cached scores (seeds 0-2 and 10-12) it changed 13: clean MNIST landmarks 0 -> 1.2-1.9 %, two moons
with 10 % uniform anomalies 0 -> 2.0 % on one seed. Of 3,000 synthetic draws (exponential, Gamma(2) and
half-normal clean scores, 0-40 % corrupted, 200-5,000 scores) it changed none; of 3,000 with heavy-tailed
(log-normal) clean scores, 3 (200 scores, 5 % corrupted: 0 -> 1.5-3.5 %).

Rate: ``eps_hat = 1 - mean(clean_posterior)`` over all n samples, i.e. the mean posterior of the high
component over the finite scores fitted (equal to its EM weight at convergence), with non-finite and far-out scores
counted as corrupted: ``eps_hat = (nonfinite + far_out + eps_fitted * n_fitted) / n``.

Determinism: the scores are sorted before fitting, the starts are fixed splits of them (no RNG), and the
posteriors are mapped back to the input order, so the result depends only on the multiset of scores
(identical for any permutation, hence for any split across DDP ranks once gathered). The fit runs on one torch
thread, so that the sums' last bits do not depend on the thread count (which Lightning's DDP sets per process).

Classifiers have a second route, :func:`estimate_corruption_from_probs`: confident learning (Northcutt,
Jiang & Chuang, JAIR 2021, "Confident Learning: Estimating Uncertainty in Dataset Labels") on predicted
class probabilities, computed by the ``cleanlab`` library (optional extra: ``pip install
"lit-robust[cleanlab]"``). Its count is meant for *out-of-sample* probabilities (k-fold cross-validation);
probabilities of a model trained on the same samples (e.g. an ITLM scoring pass) under-count, because the
model has partly fitted the wrong labels (``benchmarks/corruption_rate.py`` measures both).

A third route uses the model's predicted labels, :func:`estimate_corruption_from_predictions`: the rate at which
predictions disagree with the given labels, corrected for the training error measured on the clean component of
the score mixture. It is the one of the three that sees class-pair (systematic) noise. A fourth,
:func:`estimate_corruption_from_class_floor`, reads the same disagreements class by class and takes a low quantile of
the per-class rates, for noise that hits every class at one rate. A fifth, :func:`estimate_corruption_from_interior`
(ITLM's default since 2026-12-07), is the third where the score mixture finds two components and, where it finds one,
counts the disagreements among each predicted class's most confident 40 %, away from the class boundaries.

Nothing here imports Lightning.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Literal, TypeVar

import torch
from torch import Tensor

from lit_robust._checks import check_has_values, check_int, check_number, real_scalar

__all__ = ["CorruptionEstimate", "estimate_corruption", "estimate_corruption_from_class_floor",
           "estimate_corruption_from_interior", "estimate_corruption_from_predictions",
           "estimate_corruption_from_probs", "estimate_corruption_from_spread", "estimate_from_labels",
           "disagreement_concentration", "interior_disagreement", "label_clean_posterior", "LABEL_ESTIMATORS"]

_METHODS = ("gmm", "bmm")
_FLOOR_SMALL_CLASS = 20  # classes of a smaller median size: the class floor reads low (warned)
# the estimators that read given and predicted labels; the last also the predicted class's probability
LABEL_ESTIMATORS = ("disagreement", "class_floor", "disagreement_or_interior", "floor_or_interior")
# `estimate_corruption_from_spread`: disagreements below this concentration on class pairs read as spread evenly
# over the classes (uniform noise), so the class floor is taken. The midpoint of the gap on the development seeds
# 10-12: uniform-noise rows 0.04-0.30, class-pair and pair-flip rows 0.42-0.76 (docs' corruption-rate record)
SPREAD_BAR = 0.35
# ... and only where the classes hold a median of this many samples or more: the least disagreeing of ten classes of
# ~150 reads low by chance (digits, 30 % random noise: 3.3-7.7 points low over 9 seeds; at ~600 a class, MNIST and
# FashionMNIST, within 2.5 points)
SPREAD_MIN_CLASS = 200
# `interior_disagreement`: the share of each predicted class that stands for its interior. 0.5 until 2026-12-08; 0.4
# was chosen on the development seeds 10-12 (23 rows of benchmarks/estimators_offline.py, `floor_or_interior_s*`):
# median error 1.54 points against 1.92 at 0.5, the same 18 rows within 5, clean data at most 2.1 % against 2.9 %
# (0.33 tied on both and reads lower still; the smaller change was taken). Seeds 3-5: 2.10 / 19 / 2.5 % (0.5: 2.18 /
# 19 / 3.8 %); seeds 0-2: 1.96 / 18 / 2.6 % (1.94 / 18 / 3.6 %). A smaller share leaves out more of a class's
# boundary, where a clean hard task's own confusions sit, and also more of the wrong labels the model has begun to fit
# (class-pair noise reads 1-2 points lower than at 0.5)
INTERIOR_SHARE = 0.4
#: the ``reason`` of :func:`estimate_corruption_from_predictions` when the loss mixture found one component, so that
#: the share of disagreeing labels is returned with no training error subtracted
UNCORRECTED_REASON = "disagreement (one component: no correction)"
_MIN_ASHMAN_D = 2.0
# `CorruptionEstimate.barely_separated`: a two-component gmm fit to m scores with Ashman's D below 2 + 8 / sqrt(m),
# about one standard deviation of D over clean skewed draws (docs' corruption-rate record of 2026-12-06)
_BARELY_SEPARATED_SLOPE = 8.0
_FAR_OUT_IQRS = 3.0  # Tukey's far-out fence (interquartile ranges above q75), on the gmm's log scale
_FAR_OUT_MAX_SHARE = 0.01  # left out of the fit only while they are this share of the scores or fewer
_BMM_LOW, _BMM_HIGH = torch.finfo(torch.float64).tiny, 1.0 - 2.0 ** -53  # the open interval (0, 1) in float64
# squared_errors=True, where rule (d) alone refuses a gmm fit: the fits EM made from the top quarter and eighth of the
# scores (_TOP_STARTS; module docstring), held to a stricter separation because more fits are searched
_RESTART_MIN_ASHMAN_D = 2.5
# gmm: EM also starts from the top quarter and eighth as the high component; the fit of highest likelihood is
# kept, a later start's only where it gains more than this many nats (module docstring: Starts)
_TOP_STARTS = (0.25, 0.125)
_OTHER_START_MIN_GAIN = 1.0
# squared_errors=True where two components were taken: up to this many more layers among the scores read clean, each
# read as at most this share of them (module docstring: Layers)
_MAX_LAYERS = 2
_LAYER_MAX_SHARE = 0.25
_F = TypeVar("_F", bound=Callable)


def _serial(fn: _F) -> _F:
    """Run ``fn`` on one intra-op thread (restored after). Torch splits a CPU reduction of 32k+ elements among its
    threads, and the sums' last bits then depend on how many there are: 300k scores gave a ``rate`` differing in
    the 16th digit on 1 and 2 threads. Lightning's DDP gives each process ``cores // processes`` threads, so the
    estimate -- documented identical for any world size -- was not, bit for bit. One thread makes it depend on the
    gathered scores alone (inputs below 32k elements were summed on one thread already: unchanged)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class CorruptionEstimate:
    """Result of :func:`estimate_corruption`.

    Attributes:
        rate: estimated corrupted fraction ``eps_hat`` in ``[0, 1]``: 1.0 when every score is non-finite, or from
            a label estimator when the finite-score samples all disagree with their predictions (disagreement: with
            a one-component score mixture; class floor: in every class up to its quantile); the callers clip it.
        clean_posterior: float64 tensor, ``P(clean | score)`` per sample, in the input order; 0 for
            non-finite scores. The label estimators' (:func:`estimate_corruption_from_predictions`,
            :func:`estimate_corruption_from_class_floor`) is :func:`label_clean_posterior`'s instead. Every
            estimator here keeps ``rate = 1 - mean(clean_posterior)`` (up to rounding), so
            ``sum(1 - clean_posterior)`` is the estimated number of corrupted samples -- except a class floor above
            the overall share of disagreeing samples (possible, not seen in the benchmarks), where the sum stops
            at that share.
        method: ``"gmm"`` or ``"bmm"``.
        n: number of scores.
        nonfinite: number of NaN/inf scores (counted as corrupted).
        two_components: whether the two-component model was selected (``False``: one mode, rate from
            the non-finite and far-out scores only).
        reason: why the result is what it is. The score mixtures: ``"two components"`` (rate = the high
            component's share); ``"one component (BIC)"`` (one Gaussian/Beta explains the scores as well);
            ``"one component (separation)"`` (the two fitted components overlap: Ashman's D < 2, or the "high"
            one is not higher); ``"one component (high component is the majority)"`` (the higher component holds
            half the samples or more, read as a skewed clean mode -- also what squared residuals of a regression
            often look like on the log scale, even where the corrupted ones score apart: see ``squared_errors``);
            ``"two components (EM restarted from the top scores)"`` (gmm with ``squared_errors=True``: the
            restart found a fit passing every rule); any of these followed by ``", after k far-out scores were
            counted as corrupted (the fit to all: ...)"`` (more than 1 % far out: module docstring); ``"all equal"``;
            ``"too few samples"``. The label estimators prefix theirs (``"disagreement (...)"``,
            ``"class floor (...)"``); cleanlab's is ``"confident learning"``.
        means, stds, weights: the fitted (low, high) components on the fitting scale (gmm: the
            log-transformed scores; bmm: the normalised scores), ``None`` when no fit was made.
        ashman_d: separation of the two fitted components, ``None`` when no fit was made.
        bic1, bic2: BIC of the one- and two-component fits, ``None`` when no fit was made.
        n_iter: EM iterations run; converged: whether EM met ``tol`` within ``max_iter``.
        far_out: number of finite scores left out of the fit as far out (beyond ``q75 + 3 IQR`` on the gmm's log
            scale: at most 1 % of the finite scores, or more where the fit to all of them found one component;
            module docstring) and counted as corrupted; 0 otherwise and for the label estimators' own counts.
        unlabelled: the label estimators and :func:`estimate_corruption_from_probs`: number of samples whose given
            label is negative -- no label, as ``F.cross_entropy(..., ignore_index=-100)`` or a semi-labelled set's -1
            mark them -- with a finite score (or finite probabilities). They are left out of the fit and the counts,
            their ``clean_posterior`` is 1 (no label that could be wrong), and ``rate`` is the estimated corrupted
            share of all ``n`` samples, which is what a trim drops; :attr:`rate_labelled` is the share among the
            labelled ones. 0 for the score mixtures.
    """

    rate: float
    clean_posterior: Tensor
    method: str
    n: int
    nonfinite: int
    two_components: bool
    reason: str
    means: tuple[float, float] | None = None
    stds: tuple[float, float] | None = None
    weights: tuple[float, float] | None = None
    ashman_d: float | None = None
    bic1: float | None = None
    bic2: float | None = None
    n_iter: int = 0
    converged: bool = False
    far_out: int = 0
    unlabelled: int = 0

    @property
    def rate_labelled(self) -> float:
        """The estimated corrupted share of the samples that carry a label (``n - unlabelled``): ``rate`` itself
        when none is unlabelled, 0 when none is labelled."""
        labelled = self.n - self.unlabelled
        return self.rate * self.n / labelled if labelled else 0.0

    @property
    def n_fitted(self) -> int:
        """How many scores the mixture was fitted to: ``n`` less the non-finite, far-out and unlabelled ones."""
        return self.n - self.nonfinite - self.far_out - self.unlabelled

    @property
    def barely_separated_below(self) -> float:
        """The separation under which :attr:`barely_separated` calls an accepted gmm fit barely separated:
        ``2 + 8 / sqrt(m)`` for ``m = n_fitted`` scores (2.57 at 200, 2.36 at 500, 2.10 at 6,000); ``inf`` for none."""
        m = self.n_fitted
        return _MIN_ASHMAN_D + _BARELY_SEPARATED_SLOPE / math.sqrt(m) if m > 0 else math.inf

    @property
    def barely_separated(self) -> bool:
        """Whether the gmm accepted two components (``reason`` ``"two components"``, or the squared-error restart's)
        whose Ashman's D is below :attr:`barely_separated_below`, ``2 + 8 / sqrt(m)`` for the ``m`` scores fitted
        (:attr:`n_fitted`). Nothing here changes the estimate: it says how much to trust it.

        Such a split is what clean skewed scores of a few hundred samples can produce (a known defect): 500 clean
        half-normal scores read 37-49 % on 8 of 40 seeds, with D 2.0-2.3 and a high weight 0.37-0.49. The bar is
        about one standard deviation of D over clean skewed draws (D's standard deviation times sqrt(m) measured
        5.1-11.6 for exponential, Gamma(2) and half-normal scores, 200-2,000 of them). Refusing such fits was
        measured and not adopted: it also refused right readings near D = 2 on 6,000 real warm-up scores (PRL(L)
        with the gmm: 42.3 % for 45 %, 29.0 % for 30 %), so a fit flagged here is often right, and a look at the
        top-ranked samples, or the rate passed by hand, decides. The docs' corruption-rate page has the figures.

        ``False`` for the bmm, for a one-component result, and for the label estimators
        (:func:`estimate_corruption_from_predictions`, :func:`estimate_corruption_from_class_floor`: ``reason``
        ``"disagreement (...)"``, ``"class floor (...)"``), which keep the mixture's fields but use its split only
        to correct the share of disagreeing labels for the training error: their rate is not the split's weight.
        """
        if self.method != "gmm" or not self.two_components or not self.reason.startswith("two components"):
            return False
        return self.ashman_d is not None and self.ashman_d < self.barely_separated_below


def as_tensor(name: str, x: object) -> Tensor:
    """``x`` as a tensor: a tensor as it is, a NumPy array or pandas Series (anything with ``__array__``: what
    scikit-learn's ``cross_val_predict`` and cleanlab hand over; a cleanlab user's arrays were refused) converted;
    anything else refused naming the argument."""
    if isinstance(x, Tensor):
        check_has_values(name, x)
        if x.layout != torch.strided:
            # a sparse tensor (its absent entries are zeros) ended in torch's "Could not run 'aten::ne.Scalar' with
            # arguments from the 'SparseCPU' backend", naming no argument: its dense values
            return x.to_dense()
        return x
    if hasattr(x, "__array__") and not isinstance(x, (str, bytes)):
        import numpy as np

        array = np.asarray(x)
        if array.dtype.kind in "biuf":
            if array.dtype.kind == "f" and array.dtype.type not in (np.float16, np.float32, np.float64):
                # numpy's longdouble, which torch does not take ("can't convert np.ndarray of type
                # numpy.longdouble"): the estimators compute in float64 anyway
                array = array.astype(np.float64)
            if not array.flags.writeable or not array.dtype.isnative:
                # a pandas Series under copy-on-write reads as a read-only array (torch warns of it), and torch
                # refuses a non-native byte order: a native copy for both (the caller's array is never written)
                array = array.astype(array.dtype.newbyteorder("="), copy=True)
            # reshaped: `ascontiguousarray` makes a 0-d array (a NumPy scalar) 1-D, which read as one sample where a
            # 0-d tensor is refused
            return torch.from_numpy(np.ascontiguousarray(array).reshape(array.shape))
        hint = ("; class names? map them to the column indices 0..K-1 of the probabilities, e.g. "
                "`pandas.Categorical(names, categories=classes).codes`") if name in ("labels", "predicted") else ""
        raise ValueError(f"`{name}` must hold real numbers, got an array of dtype {array.dtype}{hint}.")
    raise ValueError(f"`{name}` must be a torch.Tensor or a NumPy array, got {type(x).__name__}.")


_MIXED_UP = (" (an array there: are the arguments in this function's order? The label estimators take "
             "(scores, labels, predicted), the interior one (scores, labels, predicted, confidence)).")


def _short(value: object) -> str:
    """``repr(value)`` and a full stop, or the type and shape of an array and why one may stand there (a tensor's
    repr ran over many lines)."""
    shape = getattr(value, "shape", None)
    return f"a `{type(value).__name__}` of shape {tuple(shape)}{_MIXED_UP}" if shape is not None else f"{value!r}."


def not_integer_labels(arg: str, t: Tensor) -> str:
    """The refusal of class labels that are not integers, with what to do: floats that hold whole numbers (a
    NumPy float or pandas nullable column; its missing values NaN) are cast, a missing label marked -100."""
    message = f"`{arg}` must hold integer class indices, got dtype {t.dtype}"
    if t.is_floating_point() and t.numel():
        v = t.detach().cpu().double()
        missing = int(torch.isnan(v).sum())
        if bool((v[~torch.isnan(v)] == v[~torch.isnan(v)].round()).all()):
            message += (": class labels stored as floats (e.g. 3.0); cast them to integers (`.long()`, NumPy "
                        "`.astype(int)`)")
            if missing:
                message += (f", after marking the {missing} missing ones (NaN, pandas' <NA>) -100: a row without a "
                            "label is left out of the count")
    return message + "."


@_serial
def estimate_corruption(
    scores: Tensor,
    method: Literal["gmm", "bmm"] = "gmm",
    *,
    max_iter: int = 500,
    tol: float = 1e-8,
    min_samples: int = 20,
    squared_errors: bool = False,
) -> CorruptionEstimate:
    """Estimate the corrupted fraction of ``scores`` (larger = more suspicious) with a 2-component mixture.

    See the module docstring for the transforms, the EM formulas, model selection and references.

    Args:
        scores: 1-D tensor, one score per sample. NaN/inf entries are counted as corrupted, and so are a few
            scores far above the rest (``far_out``; module docstring). Built for the in-sample losses of a model
            part-way through training (ITLM's scoring pass): out-of-fold losses read far off without a warning (a
            newcomer's 5-fold ``LogisticRegression`` on digits: 0 % for 10 % flipped, 25-31 % for 20 %, 34-38 % for
            30 %; cleanlab's count on the same probabilities 11.5-13.0, 19.3-20.1 and 28.8-32.3 %: use
            :func:`estimate_corruption_from_probs` on out-of-fold probabilities).
        method: ``"gmm"`` (Gaussian mixture on log-shifted scores) or ``"bmm"`` (Beta mixture on
            min-max normalised scores).
        max_iter: maximum EM iterations (>= 1).
        tol: stop when the mean log-likelihood per sample changes by less than this (>= 0).
        min_samples: with fewer finite scores no mixture is fitted: the finite part counts as clean
            and a warning says so (>= 2). Empty ``scores`` give ``rate`` 0 (reason ``"too few samples"``) without
            a warning, as every estimator here: there is nothing to estimate.
        squared_errors: the scores are a regression's squared residuals (gmm only): where the only rule refusing
            the second component is that it holds the majority, EM restarts from the top scores, and where two
            components are taken the scores read clean are searched for further layers (module docstring).
            Leave it off for other scores: on a classifier's PRL(L) gradient norms it read clean data as 15 %
            corrupted.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> clean = torch.empty(1600, dtype=torch.float64).exponential_(10.0, generator=g)
        >>> noisy = 2.0 + 0.5 * torch.randn(400, dtype=torch.float64, generator=g).abs()
        >>> est = estimate_corruption(torch.cat([clean, noisy]))
        >>> round(est.rate, 2), est.two_components
        (0.2, True)
        >>> estimate_corruption(clean).rate
        0.0
    """
    if not isinstance(method, str) or method not in _METHODS:
        # an array in its place (`estimate_corruption(loss, labels)`) ended in numpy's "truth value of an array ...
        # is ambiguous", naming no argument
        raise ValueError(f"`method` must be 'gmm' or 'bmm', got {_short(method)}")
    scores = as_tensor("scores", scores)
    if scores.ndim != 1:
        raise ValueError(f"`scores` must be a 1-D tensor with one score per sample, got shape {tuple(scores.shape)}.")
    # numpy integers too (`min_samples=np.int64(20)` was refused as "must be an integer")
    max_iter = check_int("max_iter", max_iter, 1)
    # a finite one: tol=inf stopped EM after one iteration, "converged" (a bimodal set: rate 0.0 for 0.19)
    check_number("tol", tol, 0)
    min_samples = check_int("min_samples", min_samples, 2)
    if not isinstance(squared_errors, bool):
        raise ValueError(f"`squared_errors` must be True or False, got {squared_errors!r}.")
    if squared_errors and method != "gmm":
        raise ValueError(f"`squared_errors=True` is the gmm's restart: `method` must be 'gmm' with it, got {method!r}.")
    if scores.is_complex():
        raise ValueError(f"`scores` must be real, got dtype {scores.dtype}.")

    s = scores.detach().to(device="cpu", dtype=torch.float64)
    n = s.numel()
    finite = torch.isfinite(s)
    n_bad = n - int(finite.sum().item())
    if n_bad:
        warnings.warn(f"estimate_corruption: {n_bad} of {n} scores are NaN or infinite; they count as corrupted "
                      "and are left out of the fit.", RuntimeWarning, stacklevel=3)  # 3: past `_serial`
    xs, order = torch.sort(s[finite], stable=True)
    m = xs.numel()

    def result(post_sorted: Tensor, reason: str, two: bool, **kw) -> CorruptionEstimate:
        post = torch.zeros(n, dtype=torch.float64)
        fin_post = torch.empty(m, dtype=torch.float64)
        fin_post[order] = post_sorted
        post[finite] = fin_post
        # sum over the sorted posteriors: order-independent
        rate = (n_bad + (m - float(post_sorted.sum().item()))) / n if n else 0.0
        return CorruptionEstimate(rate=max(0.0, rate), clean_posterior=post, method=method, n=n, nonfinite=n_bad,
                                  two_components=two, reason=reason, **kw)

    ones = torch.ones(m, dtype=torch.float64)
    if m < min_samples:
        if n:
            # worded for a callback's user too ("auto" on a tiny set), who passes no `min_samples`
            warnings.warn(f"estimate_corruption: only {m} finite scores, fewer than the {min_samples} a mixture needs "
                          "(its `min_samples`): none is fitted and the finite scores count as clean (an estimate of "
                          "0 for them).", RuntimeWarning, stacklevel=3)  # 3: past `_serial`
        return result(ones, "too few samples", False)
    post, reason, two, kw = _mixture_on_sorted(xs, method, max_iter, tol, min_samples, squared_errors)
    if squared_errors and two:
        post, layers = _further_layers(xs, post, max_iter, tol, min_samples)
        if layers:
            reason = f"{reason}, then {layers} more layer{'s' if layers > 1 else ''} among the scores read clean"
    return result(post, reason, two, **kw)


def _further_layers(xs: Tensor, post: Tensor, max_iter: int, tol: float, min_samples: int) -> tuple[Tensor, int]:
    """Squared errors (module docstring: Layers): the clean posterior of the sorted scores ``xs`` after looking for up
    to ``_MAX_LAYERS`` more corrupted layers among the scores read clean (``post >= 1/2``), each one a gmm fit with the
    squared-error restart that takes two components and reads at most ``_LAYER_MAX_SHARE`` of those scores as
    corrupted; and how many layers were taken. A sample's posterior is the least of its levels'."""
    post = post.clone()
    layers = 0
    for _ in range(_MAX_LAYERS):
        keep = post >= 0.5
        if int(keep.sum().item()) < min_samples:
            break
        sub, _, two, _ = _mixture_on_sorted(xs[keep], "gmm", max_iter, tol, min_samples, True)
        if not two or 1.0 - float(sub.mean().item()) > _LAYER_MAX_SHARE:
            break
        post[keep] = torch.minimum(post[keep], sub)
        layers += 1
    return post, layers


def _mixture_on_sorted(xs: Tensor, method: str, max_iter: int, tol: float, min_samples: int, squared_errors: bool,
                       refit_without_far_out: bool = True) -> tuple[Tensor, str, bool, dict]:
    """:func:`estimate_corruption` on its ``m >= min_samples`` sorted finite scores ``xs``: the clean posterior of
    each (sorted), the reason, whether two components were taken, and the :class:`CorruptionEstimate` fit fields.
    ``refit_without_far_out``: where more than 1 % of the scores lie beyond the far-out fence and the fit to all of
    them finds one component, count those as corrupted and fit the rest (once: the refit does not do it again)."""
    m = xs.numel()
    ones = torch.ones(m, dtype=torch.float64)
    if xs[0] == xs[-1]:
        return ones, "all equal", False, {}
    if not math.isfinite(float(xs[-1] - xs[0])):
        # the span overflows float64 (scores near +-1e308): both transforms are scale-free, so rescale first
        xs = xs / xs.abs().max()
    # a few far-out scores (one diverged loss, a target typed 1e6 times too large) count as corrupted and are left
    # out of the fit: one such score took a component and the estimate read 0. Only a few (at most 1 %): a
    # well-separated corrupted mode lies beyond the fence too, and must be fitted (but see the refit below)
    beyond = far = far_out(xs)
    if far > _FAR_OUT_MAX_SHARE * m or m - far < min_samples or xs[0] == xs[m - far - 1]:
        far = 0
    m_fit = m - far

    def fitted(post: Tensor) -> Tensor:
        return torch.cat([post, post.new_zeros(far)]) if far else post

    x_fit = xs[:m_fit]
    top_fits: list[dict] = []
    if method == "gmm":
        x = gmm_transform(x_fit)
        fit = _fit_gmm(x, _quantile_init(x), max_iter, tol)
        # EM from the halves can stop in a worse optimum (module docstring: Starts); the squared-error restart below
        # chooses among the same fits from the top
        top_fits = [_fit_gmm(x, _top_split_init(m_fit, share), max_iter, tol) for share in _TOP_STARTS]
        for alt in top_fits:
            if alt["loglik"] > fit["loglik"] + _OTHER_START_MIN_GAIN:
                fit = alt
        ll1 = _normal_loglik(x, x.mean(), x.var(correction=0)).sum().item()
    else:
        x = bmm_transform(x_fit)
        fit = _fit_bmm(x, _quantile_init(x), max_iter, tol)
        a1, b1 = _beta_moments(float(x.mean().item()), float(x.var(correction=0).item()))
        ll1 = _beta_logpdf(x, a1, b1).sum().item()

    bic1 = -2.0 * ll1 + 2.0 * math.log(m_fit)
    info = dict(_fit_info(fit, bic1, m_fit), far_out=far)
    mu, w = fit["means"], fit["weights"]
    if not info["bic2"] < bic1:
        refusal = "one component (BIC)"
    elif not (info["ashman_d"] >= _MIN_ASHMAN_D and mu[1] > mu[0]):
        refusal = "one component (separation)"
    elif not w[1] < w[0]:
        again = _restart_from_the_top(top_fits, bic1, m_fit) if squared_errors else None
        if again is not None:
            return (fitted(monotone_posterior(again, x)), "two components (EM restarted from the top scores)", True,
                    dict(_fit_info(again, bic1, m_fit), far_out=far))
        refusal = "one component (high component is the majority)"
    else:
        return fitted(monotone_posterior(fit, x)), "two components", True, info
    rest = m - beyond
    if refit_without_far_out and not far and beyond and beyond < rest and rest >= min_samples:
        # more than 1 % beyond the fence, and no second component in the fit to all: the far-out scores were not a
        # mode EM could take (a wide low tail took the second component), so count them as corrupted, as a few
        # are, and fit the rest. Glitched meter readings of 9999 (8 % of the rows) beside zeros and +150 read 0
        post, reason, two, kw = _mixture_on_sorted(xs[:rest], method, max_iter, tol, min_samples, squared_errors,
                                                   refit_without_far_out=False)
        reason = f"{reason}, after {beyond} far-out scores were counted as corrupted (the fit to all: {refusal})"
        return torch.cat([post, post.new_zeros(beyond)]), reason, two, dict(kw, far_out=beyond + kw.get("far_out", 0))
    return fitted(ones[:m_fit]), refusal, False, info


def monotone_posterior(fit: dict, x: Tensor) -> Tensor:
    """The clean posterior of a two-component fit to the sorted (transformed) scores ``x``, made non-increasing in the
    score outside the two means: above the high component's mean a score is at most as likely clean as any score
    between that mean and it (a running minimum), below the low component's mean at least as likely clean as any score
    between it and that mean (a running maximum). Between the means the gmm's own posterior already falls (its
    log-odds is a quadratic in ``x`` rising at both means, so its vertex lies outside them); the bmm's did on all 138
    two-component fits to the cached benchmark scores.

    Why: a mixture's posterior need not fall as the score rises. Where the clean component is the wider one (on the
    gmm's log scale it often is), its tail outweighs the narrow high component's again far above the high mean, and the
    top scores read clean (1.0) while the ones below them read corrupted; where the high component is the wider one,
    the lowest scores read corrupted. Every rule here takes a larger score as more suspicious, and so does the report's
    ranking: a posterior that rises again contradicts both."""
    post = fit["resp"][:, 0].clone()
    mu0, mu1 = fit["means"]
    hi = int(torch.searchsorted(x, torch.tensor(mu1, dtype=x.dtype)).item())  # first score >= the high mean
    if hi < post.numel():
        post[hi:] = torch.cummin(post[hi:], 0).values
    lo = int(torch.searchsorted(x, torch.tensor(mu0, dtype=x.dtype), right=True).item())  # scores <= the low mean
    if lo > 0:
        post[:lo] = torch.cummax(post[:lo].flip(0), 0).values.flip(0)
    return post


def _fit_info(fit: dict, bic1: float, m: int) -> dict:
    """The :class:`CorruptionEstimate` fields of a two-component fit to ``m`` scores."""
    mu, var, w = fit["means"], fit["vars"], fit["weights"]
    d = math.sqrt(2.0) * abs(mu[1] - mu[0]) / math.sqrt(var[0] + var[1]) if var[0] + var[1] > 0 else math.inf
    return dict(means=(mu[0], mu[1]), stds=(math.sqrt(var[0]), math.sqrt(var[1])), weights=(w[0], w[1]),
                ashman_d=d, bic1=bic1, bic2=-2.0 * fit["loglik"] + 5.0 * math.log(m), n_iter=fit["n_iter"],
                converged=fit["converged"])


def _restart_from_the_top(fits: list[dict], bic1: float, m: int) -> dict | None:
    """Of the gmm fits to ``m`` scores that EM started from their top quarter and top eighth as the high component
    (``_TOP_STARTS``), the one of highest likelihood that passes every rule -- BIC, Ashman's D >= 2.5, the high
    component higher and the minority -- or ``None`` (the first of equal likelihoods: deterministic)."""
    best = None
    for fit in fits:
        info = _fit_info(fit, bic1, m)
        (mu0, mu1), (w0, w1) = info["means"], info["weights"]
        passes = info["bic2"] < bic1 and info["ashman_d"] >= _RESTART_MIN_ASHMAN_D and mu1 > mu0 and w1 < w0
        if passes and (best is None or fit["loglik"] > best["loglik"]):
            best = fit
    return best


def far_out(xs: Tensor) -> int:
    """How many of the sorted finite scores ``xs`` lie beyond Tukey's far-out fence on the gmm's scale: above
    ``q75 + 3 (q75 - q25)`` of :func:`gmm_transform` (``xs``) -- the top ones, since the transform is increasing.
    0 where that interquartile range is 0 (half the scores or more at one value: no fence to draw)."""
    t = gmm_transform(xs)
    q25, q75 = torch.quantile(t, torch.tensor([0.25, 0.75], dtype=t.dtype)).tolist()
    if not q75 > q25:
        return 0
    return int((t > q75 + _FAR_OUT_IQRS * (q75 - q25)).sum().item())


def gmm_transform(xs: Tensor) -> Tensor:
    """``log(s - min(s) + delta)`` with ``delta = 0.5 * q25`` of the positive ``s - min(s)``."""
    z = xs - xs.min()
    return torch.log(z + _offset(z))


def _offset(z: Tensor) -> float:
    """``0.5 * q25`` of the positive ``z``: a spike of scores at the minimum (losses that underflowed to 0)
    then sits just below the clean mode instead of far to its left."""
    pos = z[z > 0]
    return 0.5 * float(torch.quantile(pos, 0.25).item())


def bmm_transform(xs: Tensor) -> Tensor:
    """``(z + delta) / (max z + 2 delta)`` with ``z = s - min(s)`` and ``delta`` as in :func:`gmm_transform`.

    Arazo et al. clamp min-max normalised losses into ``[1e-4, 1 - 1e-4]``; a spike of scores at the
    minimum (losses that underflowed to 0) then sits at ``1e-4``, far from the clean mode, and the EM splits
    the spike off (measured: 10-30 % exact zeros among 80 % clean -> eps_hat 0 instead of 0.2). The
    scale-relative offset keeps the spike next to the clean mode (eps_hat 0.2 for 0-30 % zeros)."""
    z = xs - xs.min()
    delta = _offset(z)
    # kept inside the open interval where ``delta`` is below the rounding of ``max z`` (one score 1e15 times the
    # lower quartile's): the top score normalised to exactly 1, the Beta log-density was infinite, and the fit's
    # means, variances and BIC were NaN, reported as "one component (BIC)"
    return ((z + delta) / (z.max() + 2.0 * delta)).clamp(_BMM_LOW, _BMM_HIGH)


def _quantile_init(x: Tensor) -> Tensor:
    """Initial responsibilities: the lower half of the sorted scores to component 0, the upper to 1."""
    m = x.numel()
    r = torch.zeros(m, 2, dtype=torch.float64)
    half = m // 2
    r[:half, 0] = 1.0
    r[half:, 1] = 1.0
    return r


def _top_split_init(m: int, share: float) -> Tensor:
    """Initial responsibilities: the top ``share`` of the ``m`` sorted scores (at least one) to component 1, the rest
    to component 0."""
    r = torch.zeros(m, 2, dtype=torch.float64)
    cut = m - max(1, round(share * m))
    r[:cut, 0] = 1.0
    r[cut:, 1] = 1.0
    return r


def _var_floor(x: Tensor) -> float:
    return 1e-6 * float(x.var(correction=0).item()) + 1e-12


def _normal_loglik(x: Tensor, mu, var) -> Tensor:
    return -0.5 * (math.log(2.0 * math.pi) + torch.log(torch.as_tensor(var, dtype=torch.float64))
                   + (x - mu) ** 2 / var)


def _fit_gmm(x: Tensor, resp: Tensor, max_iter: int, tol: float) -> dict:
    """EM for two 1-D Gaussians from the responsibilities ``resp`` (m x 2), as the generic EM ran it
    (``generic_fit_gmm`` in ``benchmarks/estimator_speed.py``; the same iterations, stopping rules and outputs),
    written for two components on 1-D vectors: an estimate runs three of these fits and they were its whole cost (a
    million scores: 64 ms an iteration, 350-550 iterations a fit).

    * E-step: the log-odds of the high component is a quadratic in ``x``, ``a = log(w1 N1 / (w0 N0))``, so
      ``r1 = sigmoid(a)``, ``r0 = sigmoid(-a)`` (each computed, not ``1 - r``: a posterior of 1e-20 stays 1e-20) and
      ``log(w0 N0 + w1 N1) = log(w0 N0) - logsigmoid(-a)``.
    * M-step: the weighted sums ``n_k``, ``sum r_k x`` and ``sum r_k x^2`` (dot products); ``var_k = E_k[x^2] -
      mu_k^2``, on ``x`` centred by its mean (a shift changes no responsibility and no likelihood; it keeps that
      difference from cancelling), plus the variance floor.
    ``tests/test_estimation.py`` holds it to a plain-Python EM to 1e-9."""
    floor = _var_floor(x)
    m = x.numel()
    shift = x.mean()
    xc = x - shift
    xc2 = xc * xc
    sum_xc, sum_xc2 = float(xc.sum().item()), float(xc2.sum().item())
    r0, r1 = resp[:, 0].contiguous(), resp[:, 1].contiguous()
    a = torch.empty_like(xc)
    prev = ll = -math.inf
    converged = False
    it = 0
    w = mu = var = None
    for it in range(1, max_iter + 1):  # noqa: B007 - it is reported
        # M-step
        n = (float(r0.sum().item()), float(r1.sum().item()))
        # an emptied component (every responsibility 0) gets a NaN mean and variance, as 0/0 gives the generic EM
        mu = [float(torch.dot(r, xc).item()) / nk if nk > 0 else math.nan for r, nk in zip((r0, r1), n)]
        var = [float(torch.dot(r, xc2).item()) / nk - mk * mk + floor if nk > 0 else math.nan
               for r, nk, mk in zip((r0, r1), n, mu)]
        w = [nk / m for nk in n]
        if min(w) <= 1e-12:  # a component emptied: the one-component fit is the answer
            break
        # E-step: log(w_k N_k(x)) = c_k - (x - mu_k)^2 / (2 var_k)
        c = [math.log(wk) - 0.5 * (math.log(2.0 * math.pi) + math.log(vk)) for wk, vk in zip(w, var)]
        q = [-0.5 / vk for vk in var]  # the quadratic's coefficients of each log-density, in x
        c2 = q[1] - q[0]
        c1 = -2.0 * (q[1] * mu[1] - q[0] * mu[0])
        c0 = c[1] - c[0] + q[1] * mu[1] * mu[1] - q[0] * mu[0] * mu[0]
        torch.mul(xc2, c2, out=a).add_(xc, alpha=c1).add_(c0)
        r1 = torch.sigmoid(a)
        neg = a.neg()
        r0 = torch.sigmoid(neg)
        log_low = m * c[0] + q[0] * (sum_xc2 - 2.0 * mu[0] * sum_xc + m * mu[0] * mu[0])  # sum_i log(w0 N0(x_i))
        ll = log_low - float(torch.nn.functional.logsigmoid(neg).sum().item())
        if abs(ll - prev) <= tol * m:
            converged = True
            break
        prev = ll
    return {"means": [mk + float(shift) for mk in mu], "vars": var, "weights": w,
            "resp": torch.stack([r0, r1], dim=1), "loglik": ll, "n_iter": it, "converged": converged}


def _beta_moments(mean: float, var: float) -> tuple[float, float]:
    """Method-of-moments Beta parameters ``(a, b)`` of that mean and variance; the variance is capped below
    ``mean (1 - mean)``. On floats: the EM calls it twice an iteration."""
    var = min(var, mean * (1.0 - mean) * (1.0 - 1e-6))
    common = mean * (1.0 - mean) / var - 1.0
    return mean * common, (1.0 - mean) * common


def _beta_logpdf(x: Tensor, a: float, b: float) -> Tensor:
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return (a - 1.0) * torch.log(x) + (b - 1.0) * torch.log1p(-x) + log_norm


def _fit_bmm(x: Tensor, resp: Tensor, max_iter: int, tol: float) -> dict:
    """EM for two Beta distributions (M-step: the weighted method of moments, Arazo et al.) from the responsibilities
    ``resp`` (m x 2), as the generic EM ran it (``generic_fit_bmm`` in ``benchmarks/estimator_speed.py``; the same
    iterations, stopping rules and outputs), written for two components on 1-D vectors as :func:`_fit_gmm` is: on
    clean scores it runs up to ``max_iter`` iterations, 1.8 s on 60,000 scores with the generic EM.

    * E-step: the log-odds of the high component is linear in ``log x`` and ``log(1 - x)`` (computed once):
      ``A = log(w1 f1 / (w0 f0)) = (a1 - a0) log x + (b1 - b0) log(1 - x) + const``; ``r1 = sigmoid(A)``,
      ``r0 = sigmoid(-A)``, ``log(w0 f0 + w1 f1) = log(w0 f0) - logsigmoid(-A)``, and ``sum_i log(w0 f0(x_i))`` is
      closed-form in ``sum log x`` and ``sum log(1 - x)``.
    * M-step: ``n_k``, ``sum r_k x`` and ``sum r_k x^2`` as dot products, on ``x`` centred by its mean (as in
      :func:`_fit_gmm`), then the Beta's parameters from that mean and variance (plus the variance floor).
    ``tests/test_estimation.py`` holds it to a plain-Python EM and whole estimates to the generic EM."""
    floor = _var_floor(x)
    m = x.numel()
    shift = float(x.mean().item())
    xc = x - shift
    xc2 = xc * xc
    lx, l1x = torch.log(x), torch.log1p(-x)
    sum_lx, sum_l1x = float(lx.sum().item()), float(l1x.sum().item())
    r0, r1 = resp[:, 0].contiguous(), resp[:, 1].contiguous()
    a_odds = torch.empty_like(x)
    prev = ll = -math.inf
    converged = False
    it = 0
    w = ab = None
    for it in range(1, max_iter + 1):  # noqa: B007 - it is reported
        # M-step: weighted mean and variance of each component, then the Beta of those moments
        n = (float(r0.sum().item()), float(r1.sum().item()))
        ab = []
        for r, nk in zip((r0, r1), n):
            if nk > 0:
                mc = float(torch.dot(r, xc).item()) / nk
                ab.append(_beta_moments(mc + shift, float(torch.dot(r, xc2).item()) / nk - mc * mc + floor))
            else:  # an emptied component: NaN parameters, as 0/0 gives the generic EM
                ab.append((math.nan, math.nan))
        w = [nk / m for nk in n]
        if min(w) <= 1e-12:  # a component emptied: the one-component fit is the answer
            break
        # E-step: log(w_k f_k(x)) = (a_k - 1) log x + (b_k - 1) log(1 - x) + c_k
        c = [math.log(wk) + math.lgamma(ak + bk) - math.lgamma(ak) - math.lgamma(bk) for wk, (ak, bk) in zip(w, ab)]
        (a0, b0), (a1, b1) = ab
        torch.mul(lx, a1 - a0, out=a_odds).add_(l1x, alpha=b1 - b0).add_(c[1] - c[0])
        r1 = torch.sigmoid(a_odds)
        neg = a_odds.neg()
        r0 = torch.sigmoid(neg)
        log_low = m * c[0] + (a0 - 1.0) * sum_lx + (b0 - 1.0) * sum_l1x  # sum_i log(w0 f0(x_i))
        ll = log_low - float(torch.nn.functional.logsigmoid(neg).sum().item())
        if abs(ll - prev) <= tol * m:
            converged = True
            break
        prev = ll
    means = [ak / (ak + bk) for ak, bk in ab]
    variances = [ak * bk / ((ak + bk) ** 2 * (ak + bk + 1.0)) for ak, bk in ab]
    return {"means": means, "vars": variances, "weights": w, "resp": torch.stack([r0, r1], dim=1), "loglik": ll,
            "n_iter": it, "converged": converged}


def estimate_corruption_from_probs(
    probs: Tensor,
    labels: Tensor,
    method: Literal["cleanlab"] = "cleanlab",
    *,
    min_samples: int = 20,
) -> CorruptionEstimate:
    """Estimate the fraction of wrong labels from predicted class probabilities by confident learning.

    ``cleanlab.filter.find_label_issues(labels, probs, filter_by="confident_learning")`` flags the samples
    in the off-diagonal of the confident joint; ``rate`` is the flagged fraction (the same count as
    ``cleanlab.count.num_label_issues(labels, probs)``), ``clean_posterior`` is 0 for a flagged sample and 1
    otherwise. Use out-of-sample probabilities (cross-validated): a model's probabilities on its own
    training samples under-count the wrong labels it has memorised.

    Rows with a NaN/inf probability count as corrupted (warned) and are left out of the count; with fewer
    than ``min_samples`` finite rows nothing is counted (warned) and the finite rows count as clean.

    Args:
        probs: ``[n, K]`` predicted class probabilities (rows sum to 1 within ``1e-3``, or 4 machine epsilons of
            their dtype where that is more: a bfloat16 softmax), ``K >= 2``: a tensor or a NumPy array (e.g.
            scikit-learn's ``cross_val_predict(..., method="predict_proba")``).
        labels: ``[n]`` given (possibly wrong) integer labels in ``[0, K)`` (a tensor, NumPy array or pandas Series);
            a negative label (``ignore_index=-100``, a semi-labelled set's -1) marks a row without one: left out of
            the count, its ``clean_posterior`` 1, and counted in ``unlabelled`` (``rate`` is the share of all rows).
        method: ``"cleanlab"`` (the only one; needs ``pip install "lit-robust[cleanlab]"``).
        min_samples: least number of finite rows to count on (>= 2).

    Raises:
        ImportError: cleanlab is not installed.

    Examples:
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]] * 10)
        >>> labels = torch.tensor([0, 0, 1, 1] * 9 + [1, 1, 0, 0])   # the last 4 labels are swapped
        >>> estimate_corruption_from_probs(probs, labels).rate  # needs cleanlab
        0.1
    """
    if not isinstance(method, str) or method != "cleanlab":
        raise ValueError(f"`method` must be 'cleanlab', got {_short(method)}")
    probs, labels = as_tensor("probs", probs), as_tensor("labels", labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"`probs` must be a [n, K] tensor of class probabilities with K >= 2, got shape "
                         f"{tuple(probs.shape)}.")
    if labels.ndim != 1 or labels.numel() != probs.shape[0]:
        raise ValueError(f"`labels` must be a 1-D tensor with one label per row of `probs` ({probs.shape[0]}), got "
                         f"shape {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(not_integer_labels("labels", labels))
    if probs.is_complex():
        # torch's cast to float64 dropped the imaginary part with a warning of its own, and the count went on
        raise ValueError(f"`probs` must be real, got dtype {probs.dtype}.")
    min_samples = check_int("min_samples", min_samples, 2)
    n, k = probs.shape
    # unsigned labels (uint16/32/64) have no min/max in torch ("min_all" not implemented for 'UInt16'): as int64
    lab = labels.to(torch.int64) if labels.dtype in (torch.uint16, torch.uint32, torch.uint64) else labels
    if n and int(lab.max()) >= k:
        raise ValueError(f"`labels` must be in [0, {k - 1}] (one column of `probs` per class; a negative label marks an "
                         f"unlabelled row), got values in [{int(lab.min())}, {int(lab.max())}].")
    p = probs.detach().to(device="cpu", dtype=torch.float64)
    finite = torch.isfinite(p).all(1)
    free = _unlabelled(finite, labels)
    if bool(free.any()):
        # rows without a label (ignore_index=-100, -1): left out of the count, as the label estimators leave them
        return _with_unlabelled(estimate_corruption_from_probs(probs[~free], labels[~free], method,
                                                               min_samples=min_samples), ~free)
    # a softmax in bfloat16 (8-bit mantissa) sums to 1 only within ~3e-3 (measured up to 2.7e-3): such probabilities
    # were refused and told to apply the softmax they came from; the rows are renormalised below anyway
    row_tol = max(1e-3, 4.0 * torch.finfo(probs.dtype).eps) if probs.is_floating_point() else 1e-3
    if bool(finite.any()):
        pf = p[finite]
        if float(pf.min()) < -1e-6:
            raise ValueError("`probs` must hold class probabilities (entries >= 0, rows summing to 1), got a negative "
                             f"entry ({float(pf.min()):.4g}): logits or log-probabilities? Apply softmax to logits, "
                             "exp to log-probabilities.")
        if float((pf.sum(1) - 1.0).abs().max()) > row_tol:
            # the advice was softmax whatever the rows held: a user who applied it to percentages counted 32.6 %
            # where their probabilities (divided by 100) read 19.3 %
            worst = float(pf.sum(1)[(pf.sum(1) - 1.0).abs().argmax()])
            raise ValueError("`probs` must hold class probabilities (entries >= 0, rows summing to 1), got a row "
                             f"summing to {worst:.4g}: divide each row by its sum (percentages: by 100). Softmax "
                             "is for logits, which can be negative; it would change these rows' proportions.")
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("estimate_corruption_from_probs(method='cleanlab') needs cleanlab: "
                          "pip install \"lit-robust[cleanlab]\" (or pip install cleanlab).") from err
    n_bad = n - int(finite.sum())
    if n_bad:
        warnings.warn(f"estimate_corruption_from_probs: {n_bad} of {n} probability rows hold NaN or inf; they "
                      "count as corrupted and are left out of the count.", RuntimeWarning, stacklevel=2)
    post = torch.zeros(n, dtype=torch.float64)
    m = n - n_bad
    if m < min_samples:
        if n:
            warnings.warn(f"estimate_corruption_from_probs: only {m} finite rows, fewer than the {min_samples} it needs "
                          "(its `min_samples`): nothing is counted and the finite rows count as clean.", RuntimeWarning,
                          stacklevel=2)
        post[finite] = 1.0
        rate = n_bad / n if n else 0.0
        return CorruptionEstimate(rate=rate, clean_posterior=post, method=method, n=n, nonfinite=n_bad,
                                  two_components=False, reason="too few samples")
    pf = (p[finite].clamp(min=0.0) / p[finite].clamp(min=0.0).sum(1, keepdim=True)).numpy()
    y = labels.detach().cpu()[finite].long().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes without (confident) samples
        issues = find_label_issues(y, pf, filter_by="confident_learning")
    issues_t = torch.as_tensor(issues, dtype=torch.bool)
    post[finite] = (~issues_t).double()
    flagged = int(issues_t.sum())
    return CorruptionEstimate(rate=(n_bad + flagged) / n, clean_posterior=post, method=method, n=n, nonfinite=n_bad,
                              two_components=flagged > 0, reason="confident learning")


@_serial
def estimate_corruption_from_predictions(
    scores: Tensor,
    labels: Tensor,
    predicted: Tensor,
    method: Literal["gmm", "bmm"] = "gmm",
    *,
    min_samples: int = 20,
) -> CorruptionEstimate:
    r"""Estimate the fraction of wrong labels from where a classifier disagrees with them, corrected for its
    training error, which is estimated on the clean component of the score mixture.

    Model: a sample with a wrong label disagrees with the model's prediction (the model, trained on a clean
    majority, predicts the true class), a clean sample disagrees with probability :math:`e_c` (the training error
    on clean samples). The disagreement rate is then :math:`d = \varepsilon + (1 - \varepsilon) e_c`, so

    .. math::
        \hat\varepsilon = \max\Big(0, \frac{d - \hat e_c}{1 - \hat e_c}\Big), \qquad
        \hat e_c = \frac{\sum_i \pi_i [\hat y_i \ne y_i]}{\sum_i \pi_i},

    with :math:`\pi_i` the clean posterior of :func:`estimate_corruption` (``method``) on ``scores``. When that
    mixture finds a single component (``two_components=False``) training error and noise cannot be told apart and
    :math:`\hat e_c = 0`: :math:`\hat\varepsilon = d`, the disagreement rate itself. When the clean component
    disagrees everywhere (:math:`\hat e_c = 1`, a model that predicts no label it was given) the ratio is 0/0 and the
    estimate is 0: such a model tells noise from nothing.

    Why: under class-pair (systematic) noise the loss of a wrongly labelled sample is only moderately higher
    than a clean one's (the model splits its probability between the pair), the loss mixture is not bimodal and
    :func:`estimate_corruption` returns 0 or a spurious rate, while the prediction still disagrees with the label.
    Measured offline (``benchmarks/estimators_offline.py`` on the cached runs of ``benchmarks/corruption_rate.py``,
    in-sample predictions of the model trained on every sample, 3 seeds): on the 12 MNIST and digits rows it was
    chosen on, median error 2.4 points (loss mixture: 2.9), 92 % of rows within 5 points (58 %), every
    systematic-noise row within 7 points (loss mixture: 19-40); on the 9 FashionMNIST rows it was checked on,
    median 7.8 points (16.0). Its weakness: on clean data it returns the training error when the mixture finds
    one component (clean FashionMNIST 6k: 13 %, against 0 for the loss mixture).

    Inputs: the losses and predictions of the model on the samples it trained on (in-sample), part-way through
    training, as ITLM's scoring pass reads them. Two other inputs read badly, without a warning (a newcomer's
    scikit-learn runs on digits, 3 seeds): out-of-fold predictions keep the model's own cross-validation error in
    the count (10 % and 20 % flipped read 18.8 % and 22.6 %; in-sample 9.1 % and 19.8 %; for out-of-fold
    probabilities use :func:`estimate_corruption_from_probs`), and a model that has memorised its labels (99.8 %
    training accuracy on 20 % flipped) disagrees with almost none of them: every estimator here read 0.0-0.2 %
    (19.0-19.5 % after 20 iterations).

    Determinism: the sums run over the samples sorted by (score, disagreement), so the result depends only on
    the multiset of (score, disagreement) pairs -- identical for any split across DDP ranks once gathered.

    Args:
        scores: 1-D tensor, one score per sample (larger = more suspicious, e.g. the loss). NaN/inf entries
            count as corrupted (warned), as in :func:`estimate_corruption`.
        labels: ``[n]`` given (possibly wrong) integer labels. A negative label marks a sample without one
            (``F.cross_entropy(..., ignore_index=-100)``, a semi-labelled set's -1): with a finite score it is
            left out of the fit and the counts, its ``clean_posterior`` is 1, ``unlabelled`` counts it and
            ``rate`` is the share of all ``n`` samples (:attr:`CorruptionEstimate.rate_labelled`: of the
            labelled ones). It had counted as a class of its own, always disagreeing.
        predicted: ``[n]`` the model's predicted labels (e.g. the argmax of its outputs).
        method: the mixture for :math:`\hat e_c`: ``"gmm"`` or ``"bmm"``.
        min_samples: with fewer finite scores nothing is fitted or counted (warned) and the finite part counts
            as clean (>= 2).

    Returns:
        A :class:`CorruptionEstimate` whose ``clean_posterior`` is :func:`label_clean_posterior`'s (1 where the
            prediction agrees with the label, ``1 - eps/d`` where it does not, so that ``rate = 1 -
            mean(clean_posterior)``), whose other fields (``two_components``, ``means``, ...) are the mixture's, and
            whose ``reason`` starts with ``"disagreement"``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.randint(0, 10, (2000,), generator=g)
        >>> predicted = labels.clone()
        >>> predicted[:400] = (labels[:400] + 1) % 10     # 20 % of the labels disagree with the model
        >>> scores = torch.rand(2000, generator=g) + 2.0 * (predicted != labels)
        >>> round(estimate_corruption_from_predictions(scores, labels, predicted).rate, 2)
        0.19
    """
    scores, labels, predicted = (as_tensor(arg, t) for arg, t in (("scores", scores), ("labels", labels),
                                                                 ("predicted", predicted)))
    keep = _labelled_or_nonfinite(scores, labels, predicted)
    if keep is not None:
        return _with_unlabelled(estimate_corruption_from_predictions(
            scores[keep], labels[keep], predicted[keep], method, min_samples=min_samples), keep)
    fit, done = _label_fit(scores, labels, predicted, method, min_samples, "disagreement")
    if done:
        return fit
    n = fit.n
    s = scores.detach().to(device="cpu", dtype=torch.float64)
    finite = torch.isfinite(s)
    dis = (labels.detach().cpu().long() != predicted.detach().cpu().long())[finite].to(torch.float64)
    post = fit.clean_posterior[finite]
    sf = s[finite]
    # sort by (score, disagreement): the sums below then see one fixed sequence for a given multiset
    order = torch.argsort(dis, stable=True)
    order = order[torch.argsort(sf[order], stable=True)]
    dis, post = dis[order], post[order]
    m = dis.numel()
    d = float(dis.sum().item()) / m
    e_c = 0.0
    if fit.two_components:
        e_c = float((post * dis).sum().item()) / float(post.sum().item())
    rate_finite = 0.0 if e_c >= 1.0 else max(0.0, (d - e_c) / (1.0 - e_c))
    rate = (fit.nonfinite + rate_finite * m) / n
    reason = "disagreement (training error from the clean component)" if fit.two_components else UNCORRECTED_REASON
    return replace(fit, rate=rate, reason=reason,
                   clean_posterior=label_clean_posterior(scores, labels, predicted, rate_finite))


def estimate_corruption_from_class_floor(
    scores: Tensor,
    labels: Tensor,
    predicted: Tensor,
    method: Literal["gmm", "bmm"] = "gmm",
    *,
    quantile: float = 0.1,
    min_samples: int = 20,
) -> CorruptionEstimate:
    r"""Estimate the fraction of wrong labels as a low quantile of the per-class rates at which a classifier's
    predictions disagree with the given labels.

    For each given class :math:`c` with :math:`n_c` samples, :math:`d_c = \#\{i : y_i = c, \hat y_i \ne c\} / n_c`;
    the estimate is the ``quantile`` of :math:`(d_c)_c` (linear interpolation between order statistics, as
    ``torch.quantile``). Model: :math:`d_c = \varepsilon_c + (1 - \varepsilon_c)\, e_c`, with :math:`e_c` the
    model's own error on class :math:`c`. When every class is corrupted at one rate :math:`\varepsilon` (labels
    flipped uniformly at random over the samples, random or class-pair), the easiest classes have
    :math:`e_c \approx 0` and show :math:`\varepsilon`, while :func:`estimate_corruption_from_predictions` adds the
    average error of the hard ones (clean FashionMNIST: 13 %).

    **Assumption you must be able to make**: one corruption rate for every class. If only some classes are
    corrupted (human label noise concentrated on a few confusable pairs), the low quantile reads the clean classes'
    error and the estimate is about 0 -- by construction; nothing in the predictions can tell a hard class from a
    corrupted one. It also under-counts when the model has fitted the wrong labels of some classes (in-sample, 20-40 %
    class-pair noise on MNIST: 7-24 points low).

    Measured offline (``benchmarks/estimators_offline.py``, in-sample predictions of the model trained on every
    sample, the 21 classification rows of ``benchmarks/corruption_rate.py``, quantile 0.1): development seeds 10-12
    median error 1.95 points, 16 of 21 rows within 5, clean data at most 1.95 % (disagreement: 2.82, 14, 13.3 %);
    seeds 0-2 1.42 points, 16 of 21, 2.42 % (disagreement: 2.89, 14, 13.1 %); 9 seeds 1.90 points (3.03). It is
    closer than cleanlab's count on 5-fold cross-validated probabilities in 16 of the 21 rows (cleanlab closer in 5),
    at 1/3.5 of its time (``corruption_rate_floor_cleanlab.md``). ``ITLM(keep_ratio="auto")`` with it was at most 1
    point below ITLM at the true rate in 16 of 21 rows over 9 seeds (disagreement: 14;
    ``corruption_rate_itlm_9seeds.md``), PRL(L) auto in 17 (16; ``corruption_rate_prl_9seeds.md``).
    But those rows corrupt every class at one rate, this estimator's own assumption; with noise in 5 of 10 classes
    only it read 0.8-3.8 % for a true 20 % (``benchmarks/results/corruption_rate_class_dependent.md``): hence opt-in.

    **Small classes**: a class of few samples often shows no disagreement by chance (20 % wrong labels: a class of 5
    has none with probability 0.8**5 = 0.33), so the low quantile reads low: 200 classes of about 5 samples, 20 %
    wrong labels and a perfect model read 0. When the classes hold a median of fewer than 20 samples this is warned
    about and said in ``reason``; :func:`estimate_corruption_from_predictions` has no such limit.

    Classes are the distinct values of ``labels`` among the finite-score samples; a class with fewer than 2 samples
    is left out of the quantile (none with 2: only the non-finite scores count, warned). With fewer than
    ``min_samples`` finite scores nothing is counted (warned).
    ``clean_posterior`` is :func:`label_clean_posterior`'s, as in :func:`estimate_corruption_from_predictions`;
    NaN/inf scores count as corrupted (warned).

    Args:
        scores: 1-D tensor, one score per sample (larger = more suspicious); used for the posterior and to find
            non-finite samples.
        labels: ``[n]`` given (possibly wrong) integer labels. A negative label marks a sample without one
            (``F.cross_entropy(..., ignore_index=-100)``, a semi-labelled set's -1): with a finite score it is
            left out of the fit and the counts, its ``clean_posterior`` is 1, ``unlabelled`` counts it and
            ``rate`` is the share of all ``n`` samples (:attr:`CorruptionEstimate.rate_labelled`: of the
            labelled ones). It had counted as a class of its own, always disagreeing.
        predicted: ``[n]`` the model's predicted labels.
        method: the score mixture that decides the degenerate cases (too few or no finite scores), as in
            :func:`estimate_corruption_from_predictions`: ``"gmm"`` or ``"bmm"``.
        quantile: which quantile of the per-class rates, in ``[0, 0.5]`` (0: the least disagreeing class).
        min_samples: least number of finite scores to count on (>= 2).

    Returns:
        A :class:`CorruptionEstimate` whose ``reason`` starts with ``"class floor"``.

    Examples:
        >>> labels = torch.arange(1000) % 10
        >>> predicted = labels.clone()
        >>> predicted[labels == 6] = 0                # class 6 is hard: the model never gets it right
        >>> predicted[:200] = (labels[:200] + 1) % 10  # 20 % of the labels, in every class, are wrong
        >>> scores = (predicted != labels).double() + torch.linspace(0, 0.1, 1000, dtype=torch.float64)
        >>> round(estimate_corruption_from_class_floor(scores, labels, predicted).rate, 3)
        0.2
        >>> round(estimate_corruption_from_predictions(scores, labels, predicted).rate, 3)  # adds class 6's error
        0.28
    """
    # a NumPy float32 or a 0-d tensor too (`np.float32(0.1)` was refused as "must be a number")
    quantile = check_number("quantile", real_scalar(quantile), 0, 0.5)
    scores, labels, predicted = (as_tensor(arg, t) for arg, t in (("scores", scores), ("labels", labels),
                                                                 ("predicted", predicted)))
    keep = _labelled_or_nonfinite(scores, labels, predicted)
    if keep is not None:
        return _with_unlabelled(estimate_corruption_from_class_floor(
            scores[keep], labels[keep], predicted[keep], method, quantile=quantile, min_samples=min_samples), keep)
    fit, done = _label_fit(scores, labels, predicted, method, min_samples, "class floor")
    if done:
        return fit
    n = fit.n
    finite = torch.isfinite(scores.detach().to(device="cpu", dtype=torch.float64))
    y = labels.detach().cpu().long()[finite]
    wrong = (predicted.detach().cpu().long()[finite] != y).to(torch.float64)
    classes, inverse = torch.unique(y, sorted=True, return_inverse=True)
    counts = torch.zeros(classes.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(wrong))
    misses = torch.zeros(classes.numel(), dtype=torch.float64).index_add_(0, inverse, wrong)
    used = counts >= 2
    if not bool(used.any()):
        # said as the small classes are below: every label disagreeing read 0 without a word
        warnings.warn("estimate_corruption_from_class_floor: no class holds 2 samples with a finite score, so no "
                      "class rate can be read and only the NaN/inf scores count as corrupted "
                      f"({100 * fit.nonfinite / n:.2f} %). Use the estimator 'disagreement' "
                      "(estimate_corruption_from_predictions) for many small classes.", stacklevel=2)
        return replace(fit, rate=fit.nonfinite / n, reason="class floor (no class with 2 samples)",
                       clean_posterior=label_clean_posterior(scores, labels, predicted, 0.0))
    rates = misses[used] / counts[used]
    rate_finite = float(torch.quantile(rates, float(quantile)).item())
    m = int(finite.sum().item())
    rate = (fit.nonfinite + rate_finite * m) / n
    reason = f"class floor (quantile {quantile:g} of {int(used.sum())} class rates)"
    median = float(counts[used].median().item())
    if median < _FLOOR_SMALL_CLASS:
        # 200 classes of ~5 samples read 0 for 20 % wrong labels: many small classes show no disagreement by chance
        reason = reason[:-1] + f"; classes of median {median:g} samples: reads low)"
        warnings.warn(f"estimate_corruption_from_class_floor: the classes hold a median of {median:g} samples, fewer "
                      f"than {_FLOOR_SMALL_CLASS}: a class of so few often shows no disagreement by chance, so the "
                      f"low quantile reads low ({100 * rate:.2f} %). Use the estimator 'disagreement' "
                      "(estimate_corruption_from_predictions) for many small classes.", stacklevel=2)
    return replace(fit, rate=rate, reason=reason,
                   clean_posterior=label_clean_posterior(scores, labels, predicted, rate_finite))


def interior_disagreement(labels: Tensor, predicted: Tensor, confidence: Tensor,
                          share: float = INTERIOR_SHARE) -> float:
    r"""The share of given labels that disagree with the prediction away from the class boundaries (pure).

    For each predicted class :math:`c` with :math:`m_c` samples, its :math:`\lceil \text{share}\cdot m_c\rceil`
    samples of highest ``confidence`` (the model's probability of :math:`c`) stand for the class's interior; the
    share :math:`r_c` of them whose given label is not :math:`c` is the class's rate, and the rates are combined by
    class size: :math:`\sum_c r_c\, m_c / \sum_c m_c`. Ties in ``confidence`` put the samples that agree first, so
    the result depends only on the multiset of (label, predicted, confidence) triples -- the same for any order or
    split across DDP ranks once gathered. A NaN confidence ranks last.

    Why: a model's own confusions sit at its class boundaries, so on clean data the interior disagrees about never,
    however hard the task; a wrong label far from the boundary still disagrees.

    >>> labels = torch.tensor([0, 0, 1, 0, 1, 1, 0, 1])
    >>> predicted = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    >>> confidence = torch.tensor([0.9, 0.8, 0.95, 0.6, 0.9, 0.8, 0.55, 0.7])
    >>> interior_disagreement(labels, predicted, confidence)   # class 0's top 2 hold one wrong label, class 1's none
    0.25
    """
    labels, predicted, confidence = (as_tensor(arg, t) for arg, t in (("labels", labels), ("predicted", predicted),
                                                                     ("confidence", confidence)))
    share = check_number("share", real_scalar(share), 0, 1, low_open=True)
    if confidence.ndim != 1 or not confidence.is_floating_point():
        raise ValueError(f"`confidence` must be a 1-D floating tensor, one value per sample, got shape "
                         f"{tuple(confidence.shape)} and dtype {confidence.dtype}.")
    for arg, t in (("labels", labels), ("predicted", predicted)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.shape != confidence.shape:
            raise ValueError(f"`{arg}` must hold one integer class index per sample, shape "
                             f"{tuple(confidence.shape)} as `confidence`, got shape {tuple(t.shape)} and dtype "
                             f"{t.dtype}.")
    m = labels.numel()
    if m == 0:
        return 0.0
    y, p = labels.detach().cpu().long(), predicted.detach().cpu().long()
    conf = torch.nan_to_num(confidence.detach().cpu().double(), nan=-math.inf)
    wrong = (y != p).long()
    # order: predicted class, then confidence highest first, then agreeing first
    order = torch.argsort(wrong, stable=True)
    order = order[torch.argsort(-conf[order], stable=True)]
    order = order[torch.argsort(p[order], stable=True)]
    _, sizes = torch.unique_consecutive(p[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    total = 0.0
    for start, size in zip(starts.tolist(), sizes.tolist()):
        top = max(1, math.ceil(share * size))
        total += float(wrong[order[start:start + top]].sum().item()) / top * size
    return total / m


def estimate_corruption_from_interior(
    scores: Tensor,
    labels: Tensor,
    predicted: Tensor,
    confidence: Tensor,
    method: Literal["gmm", "bmm"] = "gmm",
    *,
    share: float = INTERIOR_SHARE,
    min_samples: int = 20,
) -> CorruptionEstimate:
    r"""Estimate the fraction of wrong labels as :func:`estimate_corruption_from_predictions` does, except where
    the score mixture finds one component: there, from the disagreements away from the class boundaries
    (:func:`interior_disagreement`, the most confidently predicted ``share`` of each predicted class).

    Why: where the losses form one group, the disagreement estimate can subtract no training error and returns the
    share of labels the model disagrees with -- on clean data of a hard task, its own error (clean FashionMNIST 6k:
    13 %). A model's own confusions sit at its class boundaries; the interior count reads about 0 there.

    Measured offline (``benchmarks/estimators_offline.py``, ``disagreement_or_interior``; in-sample probabilities
    of the model trained on every sample, the 21 classification rows of ``benchmarks/corruption_rate.py`` and two
    rows of pair flips in 5 classes): seeds 10-12 median error 2.80 points, 18 of 23 rows within 5, clean data at
    most 2.9 % (disagreement: 2.81, 15, 13.3 %); seeds 0-2 2.98, 17, 3.7 %. Its cost: in-sample, a model that fits
    the wrong labels lowers their probability of the true class and they leave the interior -- class-pair noise at
    40 % read 10.5 (MNIST) and 16.2 (digits) points low, against 3.3 and 6.6 for the disagreement estimate. ITLM with
    it on 9 seeds (``benchmarks/results/corruption_rate_interior_9seeds.md``, its round-0 model's estimate): median
    error 3.06 points (disagreement 3.02), 18 of 21 rows within 5 (15), clean data at most 3.5 % (12.9 %), ITLM auto
    at most 1 point below ITLM at the true rate in 17 of 21 rows (16).

    Args:
        scores, labels, predicted, method, min_samples: as in :func:`estimate_corruption_from_predictions` (a
            negative label: no label, left out and counted clean).
        confidence: ``[n]`` the model's probability of its predicted class per sample (e.g.
            ``softmax(logits).max(1).values``); only its order within each predicted class matters.
        share: the share of each predicted class that stands for its interior, in ``(0, 1]`` (0.5 until 2026-12-08; the
            figures above were measured at 0.5, those of 0.4 are in ``INTERIOR_SHARE``'s comment).

    Returns:
        A :class:`CorruptionEstimate`: the disagreement estimate where ``two_components``; else one whose ``reason``
        starts with ``"interior"``, whose ``clean_posterior`` is :func:`label_clean_posterior`'s for its rate.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.randint(0, 4, (2000,), generator=g)
        >>> predicted = labels.clone()
        >>> hard = torch.rand(2000, generator=g) < 0.2     # clean labels, but the model misses 20 % of them ...
        >>> predicted[hard] = (labels[hard] + 1) % 4
        >>> confidence = torch.where(hard, 0.4, 0.9)        # ... near its class boundaries
        >>> scores = torch.empty(2000).exponential_(generator=g)   # and the losses form one group
        >>> round(estimate_corruption_from_predictions(scores, labels, predicted).rate, 2)
        0.2
        >>> estimate_corruption_from_interior(scores, labels, predicted, confidence).rate
        0.0
    """
    share = check_number("share", real_scalar(share), 0, 1, low_open=True)
    scores, labels, predicted, confidence = (as_tensor(arg, t) for arg, t in (
        ("scores", scores), ("labels", labels), ("predicted", predicted), ("confidence", confidence)))
    if confidence.shape != scores.shape or not confidence.is_floating_point():
        raise ValueError(f"`confidence` must be a floating tensor of the shape of `scores` {tuple(scores.shape)}, "
                         f"got shape {tuple(confidence.shape)} and dtype {confidence.dtype}.")
    keep = _labelled_or_nonfinite(scores, labels, predicted)
    if keep is not None:
        return _with_unlabelled(estimate_corruption_from_interior(
            scores[keep], labels[keep], predicted[keep], confidence[keep], method, share=share,
            min_samples=min_samples), keep)
    est = estimate_corruption_from_predictions(scores, labels, predicted, method, min_samples=min_samples)
    if est.reason != UNCORRECTED_REASON:  # two components, or nothing to count
        return est
    finite = torch.isfinite(scores.detach().to(device="cpu", dtype=torch.float64))
    rate_finite = interior_disagreement(labels[finite], predicted[finite], confidence[finite], share)
    m = int(finite.sum().item())
    rate = (est.nonfinite + rate_finite * m) / est.n
    return replace(est, rate=rate, reason=f"interior (one component: the most confident {share:g} of each predicted "
                                          "class)",
                   clean_posterior=label_clean_posterior(scores, labels, predicted, rate_finite))


def disagreement_concentration(labels: Tensor, predicted: Tensor) -> float | None:
    r"""How concentrated a classifier's disagreements with the given labels are on class pairs (pure).

    Among the samples whose prediction differs from their given label, grouped by predicted class :math:`c`, let
    :math:`t_c` be the count of the most common given label. With :math:`D` disagreements over :math:`K` classes
    (the distinct classes among ``labels`` and ``predicted``), the concentration is

    .. math:: \frac{\sum_c t_c / D - 1/(K-1)}{1 - 1/(K-1)},

    0 when the disagreements of every predicted class spread evenly over the :math:`K - 1` other labels, 1 when they
    all fall on one label. Labels flipped uniformly at random spread (about 0.04-0.30 on the benchmark's MNIST,
    FashionMNIST and digits rows); class-pair flips and a model's own confusions of look-alike classes concentrate
    (0.42-0.76 for pair noise, 0.32-0.54 for clean MNIST and FashionMNIST). Returns ``None`` with fewer than 3
    classes or no disagreement: nothing to read. Negative labels (unlabelled) are left out.

    >>> labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    >>> interior = torch.tensor([0, 1, 2, 1, 2, 0, 2, 0, 1])   # each wrong prediction meets a different label
    >>> disagreement_concentration(labels, interior)
    0.0
    >>> disagreement_concentration(labels, (labels + 1) % 3)    # every class taken for the next one
    1.0
    """
    labels, predicted = as_tensor("labels", labels), as_tensor("predicted", predicted)
    for arg, t in (("labels", labels), ("predicted", predicted)):
        if t.ndim != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"`{arg}` must be a 1-D tensor of integer class indices, got shape {tuple(t.shape)} "
                             f"and dtype {t.dtype}.")
    if labels.shape != predicted.shape:
        raise ValueError(f"`labels` and `predicted` must have one value per sample each, got shapes "
                         f"{tuple(labels.shape)} and {tuple(predicted.shape)}.")
    y, p = labels.detach().cpu().long(), predicted.detach().cpu().long()
    keep = y >= 0
    y, p = y[keep], p[keep]
    k = int(torch.unique(torch.cat([y, p])).numel())
    wrong = y != p
    total = int(wrong.sum().item())
    if k < 3 or total == 0:
        return None
    # count (predicted, given) pairs of the disagreements; the largest count of each predicted class
    pairs, counts = torch.unique(torch.stack([p[wrong], y[wrong]]), dim=1, return_counts=True)
    top = torch.zeros(int(pairs[0].max().item()) + 1, dtype=torch.long).scatter_reduce_(
        0, pairs[0], counts, reduce="amax")
    share = float(top.sum().item()) / total
    even = 1.0 / (k - 1)
    return (share - even) / (1.0 - even)


def estimate_corruption_from_spread(
    scores: Tensor,
    labels: Tensor,
    predicted: Tensor,
    confidence: Tensor,
    method: Literal["gmm", "bmm"] = "gmm",
    *,
    bar: float = SPREAD_BAR,
    min_class: int = SPREAD_MIN_CLASS,
    min_samples: int = 20,
) -> CorruptionEstimate:
    r"""Estimate the fraction of wrong labels by the class floor where the losses form two groups and the
    disagreements spread evenly over the classes, else as :func:`estimate_corruption_from_interior` does (the
    ``"floor_or_interior"`` estimator).

    :func:`estimate_corruption_from_class_floor` assumes one corruption rate for every class; labels flipped
    uniformly at random satisfy it, and then a model's disagreements spread over all the other classes. Class-pair
    noise, noise in some classes only, and a clean hard task's own confusions concentrate on a few pairs instead,
    where the floor reads the clean classes' error. So: the loss mixture finds two components (the wrong labels
    stand out in the losses) and :func:`disagreement_concentration` is below ``bar`` -> the class floor; otherwise
    (one component, a concentration at or above ``bar``, fewer than 3 classes, no disagreement, or classes of a
    median size below ``min_class``, where the least disagreeing class reads low by chance) -> the interior
    estimator. One component is what a clean hard task shows, and its own confusions can spread too where the
    classes are few and alike (three overlapping Gaussian blobs, clean: concentration 0.07, class floor 19 %,
    interior 5.7 %): so there the floor is never read.

    Why: in-sample, the disagreement estimate under-reads uniform noise at high rates (the model fits part of the
    wrong labels: MNIST 45 % read 40.6 %) and adds a hard task's own errors at low ones (FashionMNIST 10 %: 22.6 %);
    the class floor reads both within 2.5 points. Measured offline (``benchmarks/estimators_offline.py``,
    ``floor_or_interior_c0.35``; the 21 classification rows of ``benchmarks/corruption_rate.py`` and two rows of
    pair flips in 5 classes, in-sample probabilities of the model trained on every sample; median error / rows
    within 5 points / largest clean estimate): seeds 10-12 (``bar`` chosen on them) 1.92 / 18 of 23 / 2.9 %,
    against ``"disagreement_or_interior"``'s 2.81 / 18 / 2.9 %; seeds 3-5 2.18 / 19 / 3.8 % against 3.54 / 19 /
    3.8 %; seeds 0-2 1.94 / 18 / 3.6 % against 2.98 / 17 / 3.6 %. ``min_class`` and the two-component condition
    were added after all nine seeds had been read, ``min_class`` for digits (about 144 samples a class), where the
    class floor read 30 % random noise 3.3-7.7 points low (the least disagreeing of ten small classes is low by
    chance), the condition for the clean blobs above; neither moved a median by more than 0.15 points. These figures
    read the interior from half of each class; with its 40 % since 2026-12-08, ``INTERIOR_SHARE``'s comment.

    Args:
        scores, labels, predicted, confidence, method, min_samples: as in
            :func:`estimate_corruption_from_interior` (whose interior share is its default, 0.4).
        bar: the concentration at or above which the disagreements count as concentrated, in ``[0, 1]``.
        min_class: the least median class size (samples per given class) at which the class floor is read, >= 2.

    Returns:
        A :class:`CorruptionEstimate` whose ``reason`` ends with the concentration read and the choice made.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.randint(0, 10, (3000,), generator=g)
        >>> predicted = labels.clone()
        >>> predicted[labels == 3] = 5                       # a class the model never gets (its own error)
        >>> flip = torch.rand(3000, generator=g) < 0.3       # 30 % of the labels drawn again among the others
        >>> labels[flip] = (labels[flip] + torch.randint(1, 10, (int(flip.sum()),), generator=g)) % 10
        >>> confidence = torch.full((3000,), 0.9)
        >>> scores = (labels != predicted).double() + torch.rand(3000, generator=g, dtype=torch.float64)
        >>> est = estimate_corruption_from_spread(scores, labels, predicted, confidence)
        >>> round(est.rate, 1), est.reason
        (0.3, 'class floor (quantile 0.1 of 10 class rates; disagreements spread: 0.24 < 0.35)')
    """
    bar = check_number("bar", real_scalar(bar), 0, 1)
    if isinstance(min_class, bool) or not isinstance(min_class, int) or min_class < 2:
        raise ValueError(f"`min_class` must be an integer >= 2, got {min_class!r}.")
    scores, labels, predicted, confidence = (as_tensor(arg, t) for arg, t in (
        ("scores", scores), ("labels", labels), ("predicted", predicted), ("confidence", confidence)))
    interior = estimate_corruption_from_interior(scores, labels, predicted, confidence, method,
                                                 min_samples=min_samples)
    if scores.ndim != 1 or labels.shape != scores.shape or predicted.shape != scores.shape:
        return interior  # the interior estimator's checks passed an odd shape: take its reading as it is
    finite = torch.isfinite(scores.detach().to(device="cpu", dtype=torch.float64))
    conc = disagreement_concentration(labels[finite], predicted[finite])
    y = labels.detach().cpu().long()[finite]
    sizes = torch.unique(y[y >= 0], return_counts=True)[1]
    median = float(sizes.double().median().item()) if sizes.numel() else 0.0
    small = median < min_class
    if conc is None or conc >= bar or small or not interior.two_components:
        # how many disagreements the concentration was read from: a clean-wine newcomer read "1.00 >= 0.35" of 2
        lab, pred = labels.detach().cpu().long()[finite], predicted.detach().cpu().long()[finite]
        count = int(((lab != pred) & (lab >= 0)).sum().item())
        why = ("no concentration to read" if conc is None else
               f"disagreements concentrated on class pairs: {conc:.2f} >= {bar:g}, of {count} disagreement"
               f"{'' if count == 1 else 's'}" if conc >= bar else
               f"classes of median {median:g} samples" if small else
               f"disagreements spread ({conc:.2f}), but the losses form one group")
        return replace(interior, reason=_append_reason(interior.reason, why))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its small-class warning cannot apply: small classes take the interior
        floor = estimate_corruption_from_class_floor(scores, labels, predicted, method, min_samples=min_samples)
    if floor.reason.startswith("class floor"):
        return replace(floor, reason=_append_reason(floor.reason, f"disagreements spread: {conc:.2f} < {bar:g}"))
    return replace(interior, reason=_append_reason(interior.reason, "the class floor read nothing"))


def _append_reason(reason: str, why: str) -> str:
    return f"{reason[:-1]}; {why})" if reason.endswith(")") else f"{reason} ({why})"


def estimate_from_labels(estimator: str, scores: Tensor, given: Tensor, predicted: Tensor,
                         confidence: Tensor | None = None) -> CorruptionEstimate:
    """The estimate of a label estimator (:data:`LABEL_ESTIMATORS`) on per-sample scores, given and predicted labels
    (pure): ``"disagreement"`` -- :func:`estimate_corruption_from_predictions`; ``"class_floor"`` --
    :func:`estimate_corruption_from_class_floor`; ``"disagreement_or_interior"`` --
    :func:`estimate_corruption_from_interior`, which also needs ``confidence`` (the predicted class's probability)."""
    if estimator == "disagreement":
        return estimate_corruption_from_predictions(scores, given, predicted)
    if estimator == "class_floor":
        return estimate_corruption_from_class_floor(scores, given, predicted)
    if estimator == "disagreement_or_interior":
        if confidence is None:
            raise ValueError("`confidence` (the predicted class's probability per sample) is needed by the estimator "
                             "'disagreement_or_interior', got None.")
        return estimate_corruption_from_interior(scores, given, predicted, confidence)
    if estimator == "floor_or_interior":
        if confidence is None:
            raise ValueError("`confidence` (the predicted class's probability per sample) is needed by the estimator "
                             "'floor_or_interior', got None.")
        return estimate_corruption_from_spread(scores, given, predicted, confidence)
    raise ValueError(f"`estimator` must be one of {list(LABEL_ESTIMATORS)} here, got {estimator!r}.")


def label_clean_posterior(scores: Tensor, labels: Tensor, predicted: Tensor, rate_finite: float) -> Tensor:
    r"""The clean posterior that goes with a label estimator's rate (pure): what the disagreement model says of
    each sample, given that a share ``rate_finite`` of the finite-score samples is corrupted.

    The model of :func:`estimate_corruption_from_predictions`: a wrong label always disagrees with the prediction,
    a clean one sometimes does. Of the samples that disagree (a share :math:`d` of the finite ones) a fraction
    :math:`\min(1, \hat\varepsilon_f / d)` are then corrupted, and none of those that agree:

    .. math::
        P(\text{clean}_i) = \begin{cases} 0 & s_i \text{ NaN/inf} \\
        1 - \min(1, \hat\varepsilon_f / d) & \hat y_i \ne y_i \\ 1 & \text{otherwise,} \end{cases}

    (a sample with a negative label and a finite score -- unlabelled, e.g. ``ignore_index=-100`` -- gets 1 and is
    not one of the finite ones counted here), so that
    :math:`\sum_i (1 - P(\text{clean}_i)) = \text{nonfinite} + \hat\varepsilon_f\, n_f`, the estimated
    count (exactly, when :math:`\hat\varepsilon_f \le d`, as the disagreement estimate always is). The model
    has nothing more to tell the disagreeing samples apart: rank them by their score (the report does).
    Elementwise, so independent of the samples' order.

    Args:
        scores: 1-D tensor (or NumPy array, as ``labels`` and ``predicted``); NaN/inf entries get 0.
        labels, predicted: ``[n]`` integer labels.
        rate_finite: the estimated corrupted share of the labelled finite-score samples, in ``[0, 1]`` (else
            refused).

    Returns:
        ``[n]`` float64 posteriors in ``[0, 1]``, in the input order.
    """
    # checked as the estimators check theirs: NumPy arrays ended in "'numpy.ndarray' object has no attribute
    # 'detach'", a length mismatch in torch's "The size of tensor a (199) must match ...", and a NaN or "0.1" rate
    # was taken (NaN as 0) without a word
    scores, labels, predicted = (as_tensor(arg, t) for arg, t in (("scores", scores), ("labels", labels),
                                                                 ("predicted", predicted)))
    if scores.ndim != 1 or scores.is_complex():
        raise ValueError(f"`scores` must be a 1-D real tensor with one score per sample, got shape "
                         f"{tuple(scores.shape)} and dtype {scores.dtype}.")
    _check_labels(scores, labels, predicted)
    rate_finite = check_number("rate_finite", real_scalar(rate_finite), 0, 1)
    finite = torch.isfinite(scores.detach().to(device="cpu", dtype=torch.float64))
    counted = finite & ~_unlabelled(finite, labels)
    wrong = (labels.detach().cpu().long() != predicted.detach().cpu().long()) & counted
    m = int(counted.sum().item())
    d = int(wrong.sum().item()) / m if m else 0.0
    share = 0.0 if d == 0.0 else min(1.0, max(0.0, float(rate_finite)) / d)
    post = torch.ones(finite.numel(), dtype=torch.float64)
    post[wrong] = 1.0 - share
    post[~finite] = 0.0
    return post


def _label_fit(scores: Tensor, labels: Tensor, predicted: Tensor, method: str, min_samples: int, name: str
               ) -> tuple[CorruptionEstimate, bool]:
    """The label estimators' argument checks and score mixture: ``(fit, done)``, ``done`` (the fit, its reason
    prefixed by ``name``, is the answer) when there is nothing to count -- no sample, too few, or none finite."""
    _check_labels(scores, labels, predicted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = estimate_corruption(scores, method, min_samples=min_samples)
    if caught:
        # said as `estimate_corruption`'s, at a line in this file: named now by the function the user called, at
        # their line (a newcomer's `estimate_corruption_from_predictions` warned "estimate_corruption: only 10 ...")
        public, level = _caller_outside()
        for w in caught:
            message = str(w.message)
            if public and message.startswith("estimate_corruption: "):
                message = f"{public}: {message[len('estimate_corruption: '):]}"
            warnings.warn(message, w.category, stacklevel=level)
    if fit.n == 0 or fit.reason == "too few samples" or fit.nonfinite == fit.n:
        return replace(fit, reason=f"{name} ({fit.reason})"), True
    return fit, False


def _caller_outside() -> tuple[str | None, int]:
    """``(name, stacklevel)`` for a warning raised in the caller of this function: the outermost public estimator of
    this module on the stack (``estimate_corruption_from_...``), and the level of the first frame outside it."""
    frame, level, public = sys._getframe(2), 2, None
    while frame is not None and frame.f_code.co_filename == __file__:
        if frame.f_code.co_name.startswith("estimate_corruption_from"):
            public = frame.f_code.co_name
        frame, level = frame.f_back, level + 1
    return public, level


def _check_labels(scores: Tensor, labels: Tensor, predicted: Tensor) -> None:
    """``labels`` and ``predicted``: integer tensors of the shape of ``scores``, else a ``ValueError`` naming them."""
    for arg, t in (("labels", labels), ("predicted", predicted)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(not_integer_labels(arg, t))
    if labels.shape != scores.shape or predicted.shape != scores.shape:
        raise ValueError(f"`labels` and `predicted` must have the shape of `scores` {tuple(scores.shape)}, got "
                         f"{tuple(labels.shape)} and {tuple(predicted.shape)}.")


def _unlabelled(finite: Tensor, labels: Tensor) -> Tensor:
    """``[n]`` booleans: a negative given label (no label: ``ignore_index=-100``, a semi-labelled set's -1) where
    ``finite`` (the sample's score or probabilities are finite); unsigned labels have none."""
    if not labels.is_signed():
        return torch.zeros_like(finite)
    return (labels.detach().cpu() < 0) & finite


def _labelled_or_nonfinite(scores: Tensor, labels: Tensor, predicted: Tensor) -> Tensor | None:
    """The label estimators' samples to count when some are unlabelled (:func:`_unlabelled`), else ``None`` (also
    for arguments the estimator refuses: its own checks name them)."""
    _check_labels(scores, labels, predicted)
    if scores.ndim != 1 or scores.is_complex():
        return None
    free = _unlabelled(torch.isfinite(scores.detach().to(device="cpu", dtype=torch.float64)), labels)
    return ~free if bool(free.any()) else None


def _with_unlabelled(est: CorruptionEstimate, keep: Tensor) -> CorruptionEstimate:
    """``est`` of the samples ``keep`` marks, over all ``keep.numel()`` samples: the others unlabelled (clean
    posterior 1, not counted), the rate the same number of corrupted samples over all of them."""
    n = keep.numel()
    post = torch.ones(n, dtype=torch.float64)
    post[keep.to(post.device)] = est.clean_posterior
    unlabelled = n - est.n
    rate = est.rate * est.n / n
    return replace(est, rate=rate, clean_posterior=post, n=n, unlabelled=unlabelled,
                   reason=(f"{est.reason[:-1]}; {unlabelled} unlabelled left out)" if est.reason.endswith(")") else
                           f"{est.reason} ({unlabelled} unlabelled left out)"))
