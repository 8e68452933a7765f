import pytest
import pytorch_lightning as pl
import torch

from lit_robust import (
    DiabetesDataModule,
    MLPRegressor,
    MNISTLandmarksDataModule,
    SyntheticLinearDataModule,
    corrupt_targets,
)
from lit_robust.data import TARGET_CORRUPTIONS, ink_landmarks


def data(n=200, d=6, q=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, q, generator=g)


@pytest.mark.parametrize("kind", TARGET_CORRUPTIONS)
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.35, 1.0])
def test_exact_count_clean_rows_untouched_and_seeded(kind, rate):
    x, y = data()
    out, mask, kinds = corrupt_targets(x, y, rate, kind, seed=3)
    assert out.shape == y.shape and out.dtype == y.dtype
    assert int(mask.sum()) == round(rate * 200)
    assert torch.equal(out[~mask], y[~mask])
    assert torch.equal(kinds >= 0, mask)
    again = corrupt_targets(x, y, rate, kind, seed=3)
    assert torch.equal(out, again[0]) and torch.equal(mask, again[1])
    if 0 < rate < 1:
        assert not torch.equal(mask, corrupt_targets(x, y, rate, kind, seed=4)[1])


def test_each_corruption_is_what_it_says():
    x, y = data(n=400)
    out, m, _ = corrupt_targets(x, y, 0.5, "signflip", seed=0)
    assert torch.equal(out[m], -y[m])
    out, m, _ = corrupt_targets(x, y, 0.5, "uninoise", seed=0, uniform_bound=5.0)
    assert out[m].abs().max() <= 5.0 and out[m].std() > 2.5  # U[-5, 5] has std 2.89
    out, m, _ = corrupt_targets(x, y, 0.5, "pairflip", seed=0)
    # one fixed permutation of the coordinates, with no coordinate left in place
    perm = [int((out[m][:, j:j + 1] == y[m]).all(0).nonzero()) for j in range(4)]
    assert sorted(perm) == [0, 1, 2, 3] and all(p != j for j, p in enumerate(perm))
    out, m, _ = corrupt_targets(x, y, 0.5, "linadv", seed=0)
    # an exact (wrong) linear function of the features: least squares on the corrupted rows fits it exactly
    sol = torch.linalg.lstsq(x[m], out[m]).solution
    torch.testing.assert_close(x[m] @ sol, out[m], rtol=1e-4, atol=1e-4)
    assert (sol.abs() > 0).all()


def test_mixture_uses_all_four_kinds_and_each_row_is_its_kind():
    x, y = data(n=800)
    out, m, kinds = corrupt_targets(x, y, 0.5, "mixture", seed=1)
    assert set(kinds[m].tolist()) == {0, 1, 2, 3}
    assert torch.equal(out[kinds == 1], -y[kinds == 1])
    single = corrupt_targets(torch.zeros(50, 2), torch.randn(50), 0.6, "mixture", seed=0)[2]
    assert 3 not in single.tolist()  # no pairflip for one target dimension


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(rate=1.5), r"`rate` must be a number in \[0, 1\], got 1.5"),
        (dict(kind="flip"), r"`kind` must be one of \['linadv', .*got 'flip'"),
        (dict(uniform_bound=0.0), r"`uniform_bound` must be a number > 0, got 0.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    x, y = data()
    args = dict(rate=0.2, kind="signflip") | kwargs
    with pytest.raises(ValueError, match=message):
        corrupt_targets(x, y, **args)


def test_bad_shapes():
    with pytest.raises(ValueError, match="`targets` must be a floating-point tensor"):
        corrupt_targets(torch.zeros(4, 2), torch.arange(4), 0.5, "signflip")
    with pytest.raises(ValueError, match=r"`features` must have one row per target \(4\)"):
        corrupt_targets(torch.zeros(5, 2), torch.zeros(4), 0.5, "signflip")
    with pytest.raises(ValueError, match=r"`kind='pairflip'` .* needs targets of shape \[n, q\] with q >= 2"):
        corrupt_targets(torch.zeros(4, 2), torch.zeros(4), 0.5, "pairflip")


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((torch.zeros(0, 3), torch.zeros(0, 2)), {}, r"`targets` must hold at least one target, got an empty tensor of "
                                                 r"shape \(0, 2\)"),
    ((torch.zeros(0), torch.zeros(0)), {}, r"`targets` must hold at least one target, got an empty tensor"),
    (data(), dict(seed=1.5), r"`seed` must be an integer in \[-9223372036854775808, 18446744073709551615\], got 1.5"),
    (data(), dict(seed=2**64), r"`seed` must be an integer in .*, got 18446744073709551616"),
    (data(), dict(kind="uninoise", uniform_bound=float("inf")), r"`uniform_bound` must be a number > 0, got inf"),
])
def test_corrupt_targets_names_the_bad_argument_not_torch(args, kwargs, message):
    """Reviewer: empty targets raised torch's reshape error, seed=1.5 torch's "manual_seed expected a long", and
    uniform_bound=inf was taken (every uninoise target -inf); each is now an error naming the argument."""
    with pytest.raises(ValueError, match=message):
        corrupt_targets(*args, **(dict(rate=0.5, kind="signflip") | kwargs))


def test_numpy_floats_are_rates_as_they_are_clean_ratios():
    """Reviewer: np.float32 was taken as `corrupt_labels`' clean_ratio but rejected as `corrupt_targets`' rate."""
    import numpy as np

    x, y = data(n=10)
    _, mask, _ = corrupt_targets(x, y, np.float32(0.7), "signflip", seed=3)
    assert torch.equal(mask, corrupt_targets(x, y, 0.7, "signflip", seed=3)[1]) and int(mask.sum()) == 7


def test_ink_landmarks_against_a_loop():
    img = torch.zeros(2, 4, 4)
    img[0, 0, 0], img[0, 3, 3] = 1.0, 3.0
    img[1, 1, 2] = 2.0
    lm = ink_landmarks(img)
    c = lambda i: (i + 0.5) / 4  # noqa: E731
    # image 0: whole-image centroid weighted 1:3, quadrant TL at (0,0), TR empty (centre), BL empty, BR at (3,3)
    want0 = [(c(0) + 3 * c(3)) / 4, (c(0) + 3 * c(3)) / 4, c(0), c(0), 0.25, 0.75, 0.75, 0.25, c(3), c(3)]
    torch.testing.assert_close(lm[0], torch.tensor(want0))
    assert lm[1, :2].tolist() == pytest.approx([c(1), c(2)])


def test_mnist_landmarks_module(shared_data):
    dm = MNISTLandmarksDataModule(root=str(shared_data), corruption="mixture", corrupt_ratio=0.3, train_size=500)
    dm.setup()
    assert (dm.in_features, dm.out_features, len(dm.train_set)) == (784, 10, 500)
    assert int(dm.train_set.corrupted.sum()) == 150
    clean = ~dm.train_set.corrupted
    y = torch.stack([dm.train_set[i][2] for i in range(500)])
    torch.testing.assert_close(y[clean], dm.clean_train_targets[clean])
    test_y = torch.stack([dm.test_set[i][2] for i in range(100)])
    assert test_y.abs().max() < 10  # standardised with the training statistics


def test_diabetes_and_synthetic_modules():
    dm = DiabetesDataModule(corruption="uninoise", corrupt_ratio=0.2, seed=1)
    dm.setup()
    assert (dm.in_features, dm.out_features, len(dm.train_set), len(dm.test_set)) == (10, 1, 350, 92)
    assert int(dm.train_set.corrupted.sum()) == 70
    with pytest.raises(ValueError, match="pairflip"):
        DiabetesDataModule(corruption="pairflip").setup()
    s = SyntheticLinearDataModule(n=300, dim=5, q=3, corruption="linadv", corrupt_ratio=0.1)
    s.setup()
    assert (s.in_features, s.out_features, int(s.train_set.corrupted.sum())) == (5, 3, 30)
    with pytest.raises(ValueError, match=r"`corruption` must be one of .*got 'noise'"):
        SyntheticLinearDataModule(corruption="noise")
    with pytest.raises(ValueError, match=r"`corrupt_ratio` must be in \[0.0, 1.0\], got 2"):
        SyntheticLinearDataModule(corrupt_ratio=2)


def test_one_training_sample_gives_finite_standardised_targets():
    """Reviewer: the targets were standardised with `y.std(0)`, NaN for one sample: every target, training and test,
    was NaN. A column without spread keeps its scale (divided by 1)."""
    dm = DiabetesDataModule(train_size=1, seed=0)
    dm.setup()
    assert dm.train_set[0][2].tolist() == [0.0] and dm.target_std.tolist() == [1.0]
    y_test = torch.stack([dm.test_set[i][2] for i in range(len(dm.test_set))])
    assert bool(torch.isfinite(y_test).all())


def test_mlp_regressor_fits_clean_synthetic_data(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = SyntheticLinearDataModule(n=1000, dim=8, q=3, corrupt_ratio=0.0, batch_size=100)
    model = MLPRegressor(in_features=8, out_features=3, hidden=64, lr=3e-3)
    trainer = pl.Trainer(max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    r2 = trainer.test(model, dm, verbose=False)[0]["test_r2"]
    assert r2 > 0.95
    with pytest.raises(ValueError, match=r"`loss` must be 'mse' or 'huber', got 'l1'"):
        MLPRegressor(loss="l1")
