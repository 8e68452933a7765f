"""MixedImagesDataModule: exact mixture, truthful origin flags, unlabeled samples, seeded, clear errors."""

import pytest
import torch

from lit_robust import MixedImagesDataModule
from lit_robust.data.mixture import load_images


@pytest.fixture(scope="module")
def sources(shared_data_module):
    return {name: load_images(name, str(shared_data_module)) for name in ("mnist", "fashion_mnist")}


@pytest.fixture(scope="module")
def shared_data_module():
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.fail(f"offline MNIST/FashionMNIST expected under {SHARED_DATA} (set LIT_ROBUST_DATA)")
    return SHARED_DATA


def _contains(pool: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """For each image, whether it is one of ``pool``'s images (exact pixels)."""
    keys = {bytes(p.numpy().tobytes()) for p in pool}
    return torch.tensor([bytes(i.numpy().tobytes()) in keys for i in images])


@pytest.mark.parametrize("clean_ratio", [0.9, 0.6])
def test_mixture_counts_origin_flags_and_layout(shared_data_module, sources, clean_ratio):
    dm = MixedImagesDataModule(root=str(shared_data_module), clean_ratio=clean_ratio, train_size=200, val_size=50,
                               seed=3)
    dm.setup("fit")
    ts, vs = dm.train_set, dm.val_set
    assert len(ts) == 200 and len(vs) == 50
    assert int(ts.corrupted.sum()) == round(200 * (1 - clean_ratio)) and int(vs.corrupted.sum()) == round(50 * (1 - clean_ratio))
    index, x, target, is_bad = ts[7]
    assert index == 7 and x.shape == (1, 28, 28) and int(target) == 0 and bool(is_bad) == bool(ts.corrupted[7])
    images, targets = ts.dataset.tensors
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0 and not targets.any()  # unlabeled
    raw = torch.round((images[:, 0] + 1.0) * 127.5).to(torch.uint8)
    # every image flagged bad is a FashionMNIST image and every other one an MNIST digit
    assert _contains(sources["fashion_mnist"], raw[ts.corrupted]).all()
    assert _contains(sources["mnist"], raw[~ts.corrupted]).all()
    assert not _contains(sources["mnist"], raw[ts.corrupted]).any()
    # clean and bad are interleaved, not in two blocks
    assert 0 < int(ts.corrupted[:100].sum()) < int(ts.corrupted.sum())
    # the scoring loader: everything, fixed order
    first = next(iter(dm.scoring_dataloader()))
    assert first[0].tolist() == list(range(len(first[0])))


def test_mixture_is_seeded(shared_data_module):
    def draw(seed):
        dm = MixedImagesDataModule(root=str(shared_data_module), clean_ratio=0.8, train_size=100, seed=seed)
        dm.setup()
        return dm.train_set.dataset.tensors[0], dm.train_set.corrupted

    (a, fa), (b, fb), (c, _) = draw(0), draw(0), draw(1)
    assert torch.equal(a, b) and torch.equal(fa, fb) and not torch.equal(a, c)


def test_swapped_roles(shared_data_module, sources):
    dm = MixedImagesDataModule(root=str(shared_data_module), clean_ratio=0.75, train_size=40, clean="fashion_mnist",
                               bad="mnist")
    dm.setup()
    raw = torch.round((dm.train_set.dataset.tensors[0][:, 0] + 1.0) * 127.5).to(torch.uint8)
    assert _contains(sources["mnist"], raw[dm.train_set.corrupted]).all() and int(dm.train_set.corrupted.sum()) == 10


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(clean_ratio=0.0), r"`clean_ratio` must be in \(0, 1\], got 0.0"),
    (dict(clean_ratio=1.2), r"`clean_ratio` must be in \(0, 1\], got 1.2"),
    (dict(train_size=0), "`train_size` must be an integer >= 1, got 0"),
    (dict(val_size=-1), "`val_size` must be an integer >= 0, got -1"),
    (dict(clean="cifar"), r"`clean` must be one of \['mnist', 'fashion_mnist'\], got 'cifar'"),
    (dict(clean="mnist", bad="mnist"), "`clean` and `bad` must name different datasets, got 'mnist' for both"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixedImagesDataModule(**kwargs)


def test_not_enough_clean_images(shared_data_module):
    dm = MixedImagesDataModule(root=str(shared_data_module), clean_ratio=0.9, train_size=7000)
    with pytest.raises(ValueError, match=r"need 6300 mnist images, but .* holds 6000"):
        dm.setup()


def test_missing_root_names_the_fix(tmp_path):
    dm = MixedImagesDataModule(root=str(tmp_path), train_size=10)
    with pytest.raises(RuntimeError, match=r"MNIST not found under `root`=.*pass `download=True`"):
        dm.setup()
