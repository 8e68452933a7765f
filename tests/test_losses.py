import math

import pytest
import torch
import torch.nn.functional as F

from lit_robust.functional.losses import bootstrap_loss


def slow_bootstrap(logits, targets, beta, kind):
    """The formula one sample and one class at a time."""
    out = []
    for i in range(logits.shape[0]):
        z = logits[i]
        denom = sum(torch.exp(z[c]) for c in range(len(z)))
        p = [torch.exp(z[c]) / denom for c in range(len(z))]
        if targets.ndim == 1:
            y = [1.0 if c == int(targets[i]) else 0.0 for c in range(len(z))]
        else:
            y = [targets[i, c] for c in range(len(z))]
        if kind == "soft":
            pred = p
        else:
            top = max(range(len(z)), key=lambda c: float(z[c].detach()))
            pred = [1.0 if c == top else 0.0 for c in range(len(z))]
        out.append(-sum((beta * y[c] + (1 - beta) * pred[c]) * torch.log(p[c]) for c in range(len(z))))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("beta", [0.0, 0.8, 0.95, 1.0])
def test_bootstrap_matches_slow_reference_values_and_gradients(kind, beta):
    g = torch.Generator().manual_seed(0)
    logits = (2 * torch.randn(6, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, 4, (6,), generator=g)
    got = bootstrap_loss(logits, y, beta=beta, kind=kind)
    ref = slow_bootstrap(logits, y, beta, kind)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-10)


def test_bootstrap_with_probability_targets_and_beta_one_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits, soft = torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g).softmax(1)
    torch.testing.assert_close(bootstrap_loss(logits, soft, beta=0.7), slow_bootstrap(logits, soft, 0.7, "soft"))
    y = soft.argmax(1)
    torch.testing.assert_close(bootstrap_loss(logits, y, beta=1.0), F.cross_entropy(logits, y, reduction="none"))


@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("beta", [0.8, 1.0])
def test_bootstrap_with_a_masked_class_is_finite(kind, beta):
    """A class masked with a logit of -inf made bootstrap_loss NaN (0 * log 0), beta=1 too, though documented as plain
    cross-entropy (reviewer's t11): the masked class contributes nothing, to the loss and to the gradient, so the
    loss and gradient equal those over the other classes, and beta=1 equals F.cross_entropy."""
    g = torch.Generator().manual_seed(4)
    rest = torch.randn(4, 3, generator=g)
    logits = torch.cat([torch.full((4, 1), float("-inf")), rest], 1).requires_grad_(True)
    y = torch.tensor([1, 2, 3, 1])
    got = bootstrap_loss(logits, y, beta, kind)
    rest = rest.clone().requires_grad_(True)
    want = bootstrap_loss(rest, y - 1, beta, kind)
    torch.testing.assert_close(got, want)
    if beta == 1.0:
        torch.testing.assert_close(got, F.cross_entropy(logits, y, reduction="none"))
    (g_got,) = torch.autograd.grad(got.sum(), logits)
    (g_want,) = torch.autograd.grad(want.sum(), rest)
    assert torch.equal(g_got[:, 0], torch.zeros(4))
    torch.testing.assert_close(g_got[:, 1:], g_want)


def test_bootstrap_detached_prediction_is_cross_entropy_with_a_fixed_mixed_target():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (4,), generator=g)
    loss = bootstrap_loss(logits, y, beta=0.6, detach_prediction=True)
    target = (0.6 * F.one_hot(y, 5) + 0.4 * logits.softmax(1)).detach()
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    # d/dz of -sum_c t_c log softmax(z)_c = softmax(z) - t   (t sums to one)
    torch.testing.assert_close(grad, logits.softmax(1).detach() - target)


def test_bootstrap_bad_input_messages():
    logits, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"`beta` must be in \[0, 1\], got 1.5"):
        bootstrap_loss(logits, y, beta=1.5)
    with pytest.raises(ValueError, match=r"`kind` must be 'soft' or 'hard', got 'medium'"):
        bootstrap_loss(logits, y, kind="medium")
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\], got values in \[0, 3\]"):
        bootstrap_loss(logits, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"class indices of shape \[2\] or probabilities of shape \[2, 3\]"):
        bootstrap_loss(logits, torch.zeros(2))
    with pytest.raises(ValueError, match=r"`logits` must have shape \[batch, classes\], got \(3,\)"):
        bootstrap_loss(torch.zeros(3), y)
    assert math.isfinite(float(bootstrap_loss(logits, y).sum()))


def test_classifiers_name_a_bootstrap_beta_of_the_wrong_type():
    """Not Python's `'<=' not supported between instances of 'float' and 'str'`."""
    from lit_robust import ImageClassifier, MLPClassifier

    for cls in (ImageClassifier, MLPClassifier):
        with pytest.raises(ValueError, match=r"`bootstrap_beta` must be a number in \[0, 1\], got '0.9'"):
            cls(bootstrap_beta="0.9")
        with pytest.raises(ValueError, match=r"`bootstrap_beta` must be a number in \[0, 1\], got 1.5"):
            cls(bootstrap_beta=1.5)


def test_image_classifier_bootstrap_option_and_adam():
    from lit_robust import ImageClassifier

    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    batch = (torch.arange(6), x, y)
    model = ImageClassifier(backbone="mlp", image_size=8, hidden=32, hidden_layers=2, loss="bootstrap_hard",
                            bootstrap_beta=0.8, optimizer="adam", lr=1e-3)
    losses, logits = model.per_sample_loss(batch)
    torch.testing.assert_close(losses, bootstrap_loss(logits, y, 0.8, "hard"))
    assert sum(isinstance(m, torch.nn.Linear) for m in model.net) == 3
    assert isinstance(model.configure_optimizers(), torch.optim.Adam)
    with pytest.raises(ValueError, match=r"`loss` must be 'ce', 'bootstrap_soft' or 'bootstrap_hard', got 'mae'"):
        ImageClassifier(loss="mae")
