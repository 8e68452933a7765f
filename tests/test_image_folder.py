"""ImageFolderDataModule: a folder of images per class as training / validation / test splits, through the Python
API and `lit-robust fit` / `predict`."""

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from lit_robust import ITLM, ImageClassifier, ImageFolderDataModule, PredictionWriter, load_report
from lit_robust.cli import main
from tests.conftest import tiny_trainer


def _folder(root: Path, per_class: int = 6, classes=("cat", "dog", "emu"), size=(6, 5), mode="L", seed=0) -> Path:
    """``root/<class>/<k>.png``: class c's images are bright in the c-th band of rows (easy to learn), with noise."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = rng.integers(0, 60, (h, w)).astype(np.uint8)
            img[c * h // len(classes):(c + 1) * h // len(classes)] += 180
            pil = Image.fromarray(img, mode="L")
            (pil.convert("RGB") if mode == "RGB" else pil).save(root / name / f"{k:02d}.png")
    return root


def test_setup_reads_classes_channels_and_size_and_splits_in_folder_order(tmp_path):
    dm = ImageFolderDataModule(str(_folder(tmp_path / "train")), val_size=3, test_size=0.2, seed=1)
    dm.setup("fit")
    assert dm.classes == ["cat", "dog", "emu"] and dm.num_classes == 3
    assert dm.in_channels == 1 and dm.image_size == (5, 6)  # PIL's size is (w, h)
    n_train, n_val, n_test = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert (n_test, n_val, n_train) == (4, 3, 11)  # round(0.2 × 18) = 4, then 3 of the other 14
    positions = dm.train_source_index.tolist()
    assert positions == sorted(positions) and len(set(positions)) == n_train
    i, x, y = dm.train_set[0]
    assert (i, tuple(x.shape), y) == (0, (1, 5, 6), positions[0] // 6)  # 6 files a class, folder order
    spec = dm.data_spec
    assert spec.input_shape == (1, 5, 6) and spec.num_classes == 3
    # normalised on the training images: each channel's mean 0 and std 1 over them (all 11 are read: < 512)
    xs = torch.stack([dm.train_set[k][1] for k in range(n_train)])
    assert abs(float(xs.mean())) < 1e-5 and float(xs.std()) == pytest.approx(1.0, abs=1e-4)


def test_rgb_files_give_three_channels_unless_asked_for_one_and_image_size_resizes(tmp_path):
    root = str(_folder(tmp_path / "rgb", mode="RGB"))
    dm = ImageFolderDataModule(root, image_size=4, normalize=False)
    dm.setup("fit")
    x = dm.train_set[0][1]
    assert dm.in_channels == 3 and tuple(x.shape) == (3, 4, 4) and 0 <= float(x.min()) and float(x.max()) <= 1
    grey = ImageFolderDataModule(root, channels=1)
    grey.setup("fit")
    assert tuple(grey.train_set[0][1].shape) == (1, 5, 6)


def test_augmented_training_reads_differ_but_the_scoring_loader_reads_the_plain_images(tmp_path):
    dm = ImageFolderDataModule(str(_folder(tmp_path / "train")), augment="crop_flip", normalize=False)
    dm.setup("fit")
    torch.manual_seed(0)
    reads = [dm.train_set[0][1] for _ in range(8)]
    assert any(not torch.equal(reads[0], r) for r in reads[1:])
    scoring = dm.scoring_dataloader().dataset
    plain = [scoring[0][1] for _ in range(3)]
    assert all(torch.equal(plain[0], p) for p in plain)
    idx, _, labels = next(iter(dm.scoring_dataloader()))
    assert idx.tolist() == list(range(18)) and labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6


@pytest.mark.parametrize("kwargs, error, words", [
    ({"root": "missing"}, FileNotFoundError, ["`root`='missing' is not a folder"]),
    ({"root": None}, ValueError, ["`root` must be a folder's path, got None"]),
    ({"channels": 2}, ValueError, ["`channels` must be 1 (grayscale), 3 (RGB) or None", "got 2"]),
    ({"augment": "flip"}, ValueError, ["`augment` must be one of ['none', 'crop', 'crop_flip'], got 'flip'"]),
    ({"test_size": 1.5}, ValueError, ["`test_size` must be a fraction in [0, 1) of the images", "got 1.5"]),
    ({"val_size": 18}, ValueError, ["`val_size`=18 images is not fewer than the 18 images of `root`"]),
    ({"test_root": "t", "test_size": 0.1}, ValueError, ["`test_size` must be 0 with a `test_root` folder, got 0.1"]),
    ({"image_size": 0}, ValueError, ["image_size", "0"]),
    ({"normalize": "yes"}, ValueError, ["`normalize` must be True (each channel's mean and standard deviation), "
                                        "False (pixels in [0, 1]) or 'symmetric' (pixels in [-1, 1], for a GAN), "
                                        "got 'yes'"]),
])
def test_bad_arguments_are_named_with_the_value_received(tmp_path, kwargs, error, words):
    _folder(tmp_path / "train")
    args = {"root": str(tmp_path / "train"), **kwargs}
    with pytest.raises(error) as info:
        ImageFolderDataModule(**args).setup("fit")
    assert all(w in str(info.value) for w in words), str(info.value)


def test_folders_that_are_not_a_class_layout_are_said_so(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(flat / "a.png")
    with pytest.raises(ValueError, match=r"`root`=.* must hold one sub-folder per class"):
        ImageFolderDataModule(str(flat)).setup("fit")
    one = _folder(tmp_path / "one", classes=("cat",), size=(6, 6))
    dm = ImageFolderDataModule(str(one))  # one sub-folder: a GAN's images; a classifier says it needs two
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"`model`=ImageClassifier is a classifier, but `data`: ImageFolderDataModule "
                                         r"yields labels of 1 class \(one class sub-folder under `root`: put each "
                                         r"class's images in a sub-folder of its own\); a classifier needs at least 2"):
        ImageClassifier(num_classes=2, in_channels=dm.in_channels, image_size=dm.image_size[0]).check_data(dm.data_spec)
    # MLPClassifier, its sizes read from the data, said so too (it met torchmetrics' "Expected argument num_classes to
    # be an integer larger than 1", an auditor's)
    from lit_robust import MLPClassifier

    with pytest.raises(ValueError, match=r"`model`=MLPClassifier is a classifier, but `data`: ImageFolderDataModule "
                                         r"yields labels of 1 class"):
        tiny_trainer(tmp_path, 1).fit(MLPClassifier(), ImageFolderDataModule(str(one), val_size=0, test_size=0))
    other = _folder(tmp_path / "other", classes=("cat", "dog", "fox"))
    with pytest.raises(ValueError, match=r"`test_root`=.* has the class sub-folders \['cat', 'dog', 'fox'\], but "
                                         r"`root` has \['cat', 'dog', 'emu'\]"):
        ImageFolderDataModule(str(_folder(tmp_path / "train")), test_root=str(other)).setup("fit")


def test_itlm_report_and_predictions_name_each_file(tmp_path, one_torch_thread):
    """Through the Python API: the report's `path` is each training image's file and its folder the given class;
    two files put in the wrong folder rank first; `predictions.csv` of `predict_root` names every new file."""
    root = _folder(tmp_path / "train", per_class=12)
    for name, wrong in (("cat/00.png", "dog/wrong_cat.png"), ("emu/00.png", "cat/wrong_emu.png")):
        (root / name).rename(root / wrong)
    new = tmp_path / "new" / "sub"
    new.mkdir(parents=True)
    for k in (3, 5):
        (new / f"d{k}.png").write_bytes((root / "dog" / f"{k:02d}.png").read_bytes())
    pl.seed_everything(0)
    data = ImageFolderDataModule(str(root), predict_root=str(tmp_path / "new"), batch_size=8)
    itlm = ITLM(keep_ratio=0.9, round_epochs=[8, 8], verbose=False, plot=False, report=True, report_dir=str(tmp_path))
    model = ImageClassifier("mlp", num_classes=3, in_channels=1, image_size=6, optimizer="adam", lr=0.01)
    trainer = pl.Trainer(max_epochs=16, callbacks=[itlm], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"`model.image_size`=6 does not fit .*The model needs square images: set "
                                         r"`data.image_size` \(e.g. to 6\) to resize them"):
        trainer.fit(model, data)
    data = ImageFolderDataModule(str(root), image_size=6, predict_root=str(tmp_path / "new"), batch_size=8)
    trainer.fit(model, data)
    report = load_report(itlm.report_path)
    assert len(report) == 36
    assert (report["path"].map(lambda p: Path(p).parent.name) == report["given_class"]).all()
    assert set(report["path"].head(2).map(lambda p: Path(p).name)) == {"wrong_cat.png", "wrong_emu.png"}
    writer = PredictionWriter(str(tmp_path / "pred"))
    pl.Trainer(callbacks=[writer], logger=False, enable_progress_bar=False).predict(model, data)
    rows = pd.read_csv(writer.path)
    assert list(rows.columns) == ["index", "path", "prediction", "predicted_class"]  # no placeholder target
    assert [Path(p).name for p in rows["path"]] == ["d3.png", "d5.png"] and (rows["predicted_class"] == "dog").all()


def test_cli_fits_a_folder_and_predicts_new_images(tmp_path, monkeypatch, capsys, one_torch_thread):
    root = _folder(tmp_path / "train", per_class=8, size=(6, 6))
    monkeypatch.chdir(tmp_path)
    args = ["--model", "ImageClassifier", "--model.backbone", "mlp", "--model.num_classes", "3",
            "--model.image_size", "6", "--data", "ImageFolderDataModule", "--data.root", str(root),
            "--data.test_size", "0.25", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks+=ITLM", "--trainer.callbacks.keep_ratio", "0.8",
            "--trainer.callbacks.round_epochs", "[1, 1]"]
    main(["fit", *args])
    report = sorted(tmp_path.glob("lightning_logs/version_0/itlm_report.csv"))
    assert report and len(load_report(report[0])) == 18  # 24 images less a quarter held out for testing
    new = tmp_path / "new"
    new.mkdir()
    (new / "a.png").write_bytes((root / "emu" / "03.png").read_bytes())
    main(["predict", *args, "--data.predict_root", str(new), "--ckpt_path", "last"])
    (written,) = tmp_path.glob("lightning_logs/version_1/predictions.csv")
    rows = pd.read_csv(written)
    assert list(rows.columns) == ["index", "path", "prediction", "predicted_class"] and rows["path"][0].endswith("a.png")
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model", "ImageClassifier", "--model.backbone", "mlp", "--model.num_classes", "3", "--data",
              "ImageFolderDataModule", "--data.root", str(root), "--trainer.max_epochs", "1"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "`model.image_size`=28 does not fit" in err and "Set `model.image_size` to 6" in err
    # or the data's side: a newcomer's photos of 24-64 px were read at the first file's 60 px, and they wanted 32
    assert "Or set `data.image_size` to 28 to read the images at the model's size." in err


def test_checkpoints_carry_the_classes_and_statistics_a_later_predict_reads_with(tmp_path, one_torch_thread):
    """A user moves files out of the folder after training (the report's misfiled ones): `predict` from the
    checkpoint reads the images with the training statistics, not the changed folder's; a folder of other classes is
    refused with both lists."""
    root = _folder(tmp_path / "train", per_class=8, size=(6, 6))
    pl.seed_everything(0)
    model = ImageClassifier("mlp", num_classes=3, in_channels=1, image_size=6)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    data = ImageFolderDataModule(str(root), test_size=6)
    trainer.fit(model, data)
    ckpt = tmp_path / "fitted.ckpt"
    trainer.save_checkpoint(ckpt)
    kwargs = {"logger": False, "enable_progress_bar": False}
    before = torch.cat(pl.Trainer(**kwargs).predict(model, data))
    trained_stats = (data.mean, data.std)
    for k in range(4):  # four bright training images of one class leave: the folder's statistics change
        (root / "emu" / f"{k:02d}.png").unlink()
    moved = ImageFolderDataModule(str(root), test_size=6)
    moved.setup("predict")
    assert (moved.mean, moved.std) != trained_stats
    after = torch.cat(pl.Trainer(**kwargs).predict(model, moved, ckpt_path=str(ckpt)))
    assert (moved.mean, moved.std) == trained_stats
    # each test file read by hand and normalised with the training statistics gives the same predictions
    files = [moved.test_set.dataset.dataset.samples[i][0] for i in moved.test_set.dataset.indices]
    x = torch.stack([torch.tensor(np.asarray(Image.open(f)), dtype=torch.float32)[None] / 255 for f in files])
    x = (x - trained_stats[0][0]) / trained_stats[1][0]
    model.eval()
    with torch.no_grad():
        assert torch.equal(after, model(x).argmax(1))
    assert before.shape == after.shape
    other = _folder(tmp_path / "other", per_class=8, size=(6, 6), classes=("ant", "bee", "cow"))
    with pytest.raises(ValueError, match=r"trained on the classes \['cat', 'dog', 'emu'\], but `root`=.* has the "
                                         r"class sub-folders \['ant', 'bee', 'cow'\]"):
        pl.Trainer(**kwargs).predict(model, ImageFolderDataModule(str(other), test_size=6), ckpt_path=str(ckpt))


def test_a_broken_first_file_is_named_by_its_path(tmp_path):
    """An auditor's 40-byte PNG, first in its folder: PIL's bare "cannot identify image file" came out of the check
    IndexedDataset makes of the first item, without the sample; the datamodule says which file sets the size."""
    from torchvision import datasets, transforms

    from lit_robust import IndexedDataset

    root = _folder(tmp_path / "train")
    broken = root / "cat" / "00.png"
    broken.write_bytes(broken.read_bytes()[:40])
    folder = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
    with pytest.raises(OSError, match=rf"sample 0 \({broken}\) of the data set could not be read: cannot identify"):
        IndexedDataset(folder)
    with pytest.raises(OSError, match=rf"The first image of `root`, {broken}, could not be read .* Move it away, or "
                                      r"pass `image_size` and `channels`"):
        ImageFolderDataModule(str(root)).setup("fit")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
@pytest.mark.parametrize("normalize", [True, False])
def test_a_damaged_image_anywhere_in_the_folder_is_named_by_its_path(tmp_path, damage, normalize):
    """A newcomer's truncated JPEG (its first 200 bytes) opened, then failed to decode with PIL's bare `Truncated File
    Read`: in the statistics pass of `setup` (normalize=True) or mid-training (normalize=False), the file unnamed; an
    empty .jpg likewise, unless it came first. Every read names the file now."""
    from PIL import Image

    root = _folder(tmp_path / "train")
    good = tmp_path / "whole.jpg"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(good, quality=95)
    bad = root / "dog" / "zz_damaged.jpg"
    bad.write_bytes(good.read_bytes()[:200] if damage == "truncated" else b"")
    dm = ImageFolderDataModule(str(root), normalize=normalize, batch_size=4, test_size=0, val_size=0)
    message = rf"the image file {re.escape(str(bad))} could not be read \(.*\): move it out of the folder"
    with pytest.raises(OSError, match=message):
        dm.setup("fit")
        for _ in dm.train_dataloader():
            pass
    if not normalize:  # setup read one file only; ITLM's scoring pass names it as well
        with pytest.raises(OSError, match=message):
            for _ in dm.scoring_dataloader():
                pass


def test_images_of_mixed_sizes_are_said_to_be_read_at_the_first_ones(tmp_path, monkeypatch):
    """An image-folder newcomer's photos of 24-64 px were read at the first file's 60 px without a word."""
    import lit_robust.data.image_folder as image_folder

    said = []
    monkeypatch.setattr(image_folder, "rank_zero_info", said.append)
    root = _folder(tmp_path / "train")  # 6 wide, 5 high
    Image.new("L", (9, 4)).save(root / "dog" / "zz_wide.png")
    ImageFolderDataModule(str(root), test_size=0, val_size=0).setup("fit")
    (line,) = said
    assert line.startswith("ImageFolderDataModule: the training images differ in size (width 6-9, height 4-5 px among "
                           "those sampled); all are read at the first one's 6×5 (width × height). Pass `image_size` to "
                           "choose the size. Most are 6×5 (")
    # the odd file named (a newcomer's one 32×32 image among 1,199 of 28×28 was not)
    assert line.endswith(" sampled); the others include 'zz_wide.png'."), line
    said.clear()
    ImageFolderDataModule(str(root), test_size=0, val_size=0, image_size=6).setup("fit")  # chosen: nothing to say
    ImageFolderDataModule(str(_folder(tmp_path / "same"))).setup("fit")  # one size: nothing to say
    assert said == []


def test_a_root_one_level_above_the_class_folders_is_warned_about(tmp_path):
    """An image-folder CLI user pointed `root` at `photos` (holding train/, test/, new/) and trained on those three
    "classes" with no word about it."""
    _folder(tmp_path / "photos" / "train")
    _folder(tmp_path / "photos" / "test", per_class=2)
    with pytest.warns(UserWarning, match=r"no image of `root`=.*photos' lies directly in a class folder: the classes "
                                         r"are its sub-folders \['test', 'train'\], each holding folders \(\['cat', "
                                         r"'dog', 'emu'\]\)\. If those are your classes, point `root` one level down, "
                                         r"e\.g\. '.*photos/train'\.$"):  # train/, not test/ (the first in order)
        ImageFolderDataModule(str(tmp_path / "photos")).setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right root: no warning
        ImageFolderDataModule(str(tmp_path / "photos" / "train")).setup("fit")


def test_a_gan_trains_on_one_folder_of_images_scaled_to_its_generators_range(tmp_path, one_torch_thread):
    """A GAN user's own images through the CLI's datamodule: one sub-folder (no classes), pixels in [-1, 1] like
    the generator's tanh with normalize='symmetric'; ITLM ranks them by -log D(x)."""
    from lit_robust import DCGAN

    root = tmp_path / "imgs"
    (root / "all").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(12):  # dark backgrounds, bright strokes: grey levels over 0-255
        Image.fromarray(rng.integers(0, 256, (8, 8)).astype(np.uint8), mode="L").save(root / "all" / f"{k:02d}.png")
    dm = ImageFolderDataModule(str(root), normalize="symmetric", batch_size=6)
    dm.setup("fit")
    x = torch.cat([b[1] for b in dm.scoring_dataloader()])
    assert x.shape == (12, 1, 8, 8) and dm.mean is None
    plain = ImageFolderDataModule(str(root), normalize=False)
    plain.setup("fit")
    assert torch.allclose(x, 2 * torch.cat([b[1] for b in plain.scoring_dataloader()]) - 1)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    itlm = ITLM(keep_ratio=0.75, round_epochs=[1, 1], verbose=False, plot=False, report=False)
    gan = DCGAN(latent_dim=4, channels=1, image_size=8, g_width=4, d_width=4)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="DCGAN: the first batch")  # in range: no word about it
        pl.Trainer(max_epochs=2, callbacks=[itlm], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False).fit(gan, dm)
    assert len(itlm.selection) == 9
    # the same images in [0, 1] (the datamodule's normalize=False) are said not to fit the generator's range
    gan = DCGAN(latent_dim=4, channels=1, image_size=8, g_width=4, d_width=4)
    with pytest.warns(UserWarning, match=r"DCGAN: the first batch of training images ranges over \[0(\.\d+)?, 1\], "
                                         r"but the generator draws images in \[-1, 1\] \(tanh\)\. Scale the real "
                                         r"images to \[-1, 1\]: `ImageFolderDataModule\(normalize='symmetric'\)`"):
        pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False).fit(gan, ImageFolderDataModule(str(root), normalize=False, batch_size=6))



def test_images_are_read_once_and_kept_while_they_fit_in_memory(tmp_path, monkeypatch):
    """A newcomer's 6,000 PNGs trained 9x slower than the same images as tensors: every epoch decoded and converted
    every file again. Without augmentation or workers, each image is read once and kept (the same values)."""
    import lit_robust.data.image_folder as image_folder

    root = _folder(tmp_path / "train")
    dm = ImageFolderDataModule(str(root), val_size=3, test_root=str(_folder(tmp_path / "test", per_class=2)))
    dm.setup("fit")
    folder = dm.train_set.dataset.dataset
    assert isinstance(folder, image_folder._KeptImages) and dm.val_set.dataset.dataset is folder  # one reading
    reads = []
    read = folder.loader
    monkeypatch.setattr(folder.reading, "loader", lambda path: reads.append(path) or read(path))
    first = [dm.train_set[i][1] for i in range(len(dm.train_set))]
    read_first = len(reads)  # (setup may have read one already)
    again = [dm.train_set[i][1] for i in range(len(dm.train_set))]
    assert 0 < read_first == len(reads) == len(set(reads)) <= len(dm.train_set)  # the second pass read no file
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    again[0].add_(1.0)  # a caller's in-place change does not reach the kept image
    kept = len(folder._kept)
    assert torch.equal(folder[torch.tensor(0)][0], folder[0][0]) and len(folder._kept) == kept  # a tensor index too
    assert torch.equal(dm.train_set[0][1], first[0])
    monkeypatch.setattr(image_folder, "_KEEP_BYTES", 0)  # too large to keep: read as before, the same values
    plain = ImageFolderDataModule(str(root), val_size=3)
    plain.setup("fit")
    assert not isinstance(plain.train_set.dataset.dataset, image_folder._KeptImages)
    assert all(torch.equal(plain.train_set[i][1], first[i]) for i in range(len(first)))
    assert isinstance(dm.test_set.dataset, image_folder._KeptImages)
    # a checkpoint's other normalisation forgets the kept images: read again with the new statistics
    state = dm.state_dict()
    state["mean"], state["std"] = [0.0], [1.0]
    dm.load_state_dict(state)
    assert len(folder._kept) == 0 and not torch.equal(dm.train_set[0][1], first[0])
    # workers (each would keep its own copy) or augmentation (each read differs) keep nothing
    for kwargs in ({"num_workers": 1}, {"augment": "crop"}):
        other = ImageFolderDataModule(str(root), **kwargs)
        other.setup("fit")
        assert not isinstance(other.train_set.dataset.dataset, image_folder._KeptImages), kwargs


@pytest.mark.parametrize("channels", [None, 3])
def test_16_bit_32_bit_and_float_images_are_scaled_to_0_1_by_their_range_not_clipped(tmp_path, channels):
    """Reviewer: 16-bit PNGs (PIL mode I;16), 32-bit integer (I) and float (F) TIFFs went through `convert("RGB")`,
    which clips them to 0 or 255: every pixel of a 16-bit folder read as 1.0. I;16 and I are divided by 65,535 and F
    is taken as [0, 1], at full precision, as one grey channel (three equal ones with `channels=3`)."""
    values = {("a", 0): np.array([[0, 1000], [30000, 65535]], np.uint16),
              ("a", 1): np.array([[0, 7], [60000, 65535]], np.int32),  # mode I
              ("b", 0): np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)}  # mode F
    for (c, k), v in values.items():
        (tmp_path / "deep" / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(v).save(tmp_path / "deep" / c / f"{k}.{'png' if v.dtype == np.uint16 else 'tif'}")
    assert [Image.open(p).mode for p in sorted((tmp_path / "deep").rglob("*.*"))] == ["I;16", "I", "F"]
    dm = ImageFolderDataModule(str(tmp_path / "deep"), normalize=False, channels=channels)
    dm.setup("fit")
    assert dm.in_channels == (channels or 1)  # 16-bit grey is grey
    for i, v in enumerate(values.values()):
        x = dm.train_set[i][1]
        want = torch.from_numpy(v.astype(np.float64) / (1.0 if v.dtype == np.float32 else 65535.0)).float()
        assert x.shape == (dm.in_channels, 2, 2) and all(torch.allclose(ch, want, atol=1e-6) for ch in x), (i, x)


def test_a_float_image_outside_0_1_is_named_not_clipped(tmp_path):
    """Reviewer: a float TIFF with pixels in [0, 60] was clipped without a word; such a file is named, with its range
    and the fix."""
    root = _folder(tmp_path / "train")
    bad = root / "dog" / "zz_float.tif"
    Image.fromarray(np.array([[0.0, 60.0]], np.float32)).save(bad)
    with pytest.raises(ValueError, match=rf"the image file {re.escape(str(bad))} is a float image \(PIL mode F\) with "
                                         r"pixel values from 0 to 60, outside the \[0, 1\] it is read from"):
        ImageFolderDataModule(str(root)).setup("fit")


def test_a_test_folder_with_an_empty_class_folder_is_read_as_the_mismatch_error_advises(tmp_path, monkeypatch):
    """Reviewer: a `test_root` missing a class was told "Give both folders the same class sub-folders (an empty one is
    fine)", and the empty folder then failed (torchvision's ImageFolder rejects empty class folders). It is read now
    (allow_empty, torchvision >= 0.18); older torchvision is not promised it; a test folder of empty ones is said."""
    import lit_robust.data.image_folder as image_folder

    root = str(_folder(tmp_path / "train"))
    test = _folder(tmp_path / "test", per_class=2, classes=("cat", "emu"))
    with pytest.raises(ValueError, match=r"has the class sub-folders \['cat', 'emu'\], but `root` has \['cat', 'dog', "
                                         r"'emu'\]: the labels would not mean the same classes\. Add an empty folder "
                                         r"\['dog'\] to `test_root`\.$"):
        ImageFolderDataModule(root, test_root=str(test)).setup("fit")
    (test / "dog").mkdir()  # as advised
    dm = ImageFolderDataModule(root, test_root=str(test))
    dm.setup("fit")
    assert [y for _, _, y in dm.test_set] == [0, 0, 2, 2]  # "emu" keeps label 2
    for name in ("cat", "emu"):
        for f in (test / name).iterdir():
            f.unlink()
    with pytest.raises(ValueError, match=r"`test_root`=.* holds no images \(its class sub-folders are all empty\)"):
        ImageFolderDataModule(root, test_root=str(test)).setup("fit")
    monkeypatch.setattr(image_folder, "_allows_empty_class_folders", lambda: False)  # torchvision < 0.18
    two = _folder(tmp_path / "test2", per_class=2, classes=("cat", "emu"))
    with pytest.raises(ValueError, match=r"Add \['dog'\] to `test_root`, each with an image or more \(an empty one "
                                         r"needs torchvision >= 0.18\)\.$"):
        ImageFolderDataModule(root, test_root=str(two)).setup("fit")
    # a class the training folder lacks: an empty training folder would fail next (an image newcomer followed "an
    # empty one is fine" there)
    monkeypatch.undo()
    extra = _folder(tmp_path / "test3", per_class=2, classes=("cat", "dog", "emu", "fox"))
    with pytest.raises(ValueError, match=r"The model cannot learn \['fox'\] without training images: add images of it to "
                                         r"`root`, or move \['fox'\] out of `test_root`\.$"):
        ImageFolderDataModule(root, test_root=str(extra)).setup("fit")


@pytest.mark.parametrize("kwargs, words", [
    ({"test_size": 0.02}, "`test_size`=0.02 of the 18 images of `root` rounds to 0 images: pass a fraction >= 0.0556 "
                          "or a number of images (e.g. `test_size=1`), or 0 for no such split."),
    ({"test_size": 4, "val_size": 0.03}, "`val_size`=0.03 of the 14 images of `root` left after the test images rounds "
                                         "to 0 images: pass a fraction >= 0.0714"),
])
def test_a_held_out_fraction_that_rounds_to_no_image_is_an_error_at_setup(tmp_path, kwargs, words):
    """Reviewer: `test_size=0.01` of a small folder rounded to 0 images and silently dropped the test split; `test`
    later advised "Fit with `test_size` > 0", which the user had done."""
    with pytest.raises(ValueError) as info:
        ImageFolderDataModule(str(_folder(tmp_path / "train")), **kwargs).setup("fit")
    assert words in str(info.value), str(info.value)
    dm = ImageFolderDataModule(str(tmp_path / "train"), test_size=0.0556, val_size=0.0714)  # the least that hold one
    dm.setup("fit")
    assert (len(dm.test_set), len(dm.val_set)) == (1, 1)


def test_size_and_channels_come_from_the_folders_first_image_even_when_it_is_held_out(tmp_path):
    """Reviewer: the docstring said "the first training image", the code read the folder's first file (an RGB file
    held out as the test image made grey training images read as RGB). The folder's first file it is — the same
    reading whatever `seed` holds out — and the docstring says so."""
    root = _folder(tmp_path / "train")  # grey, 6×5
    Image.new("RGB", (6, 5), (200, 10, 10)).save(root / "cat" / "00.png")  # the folder's first file
    for seed in range(4):
        dm = ImageFolderDataModule(str(root), test_size=1, seed=seed)
        dm.setup("fit")
        assert (dm.in_channels, dm.image_size) == (3, (5, 6))
        if dm.test_set.dataset.indices == [0]:
            break
    assert dm.test_set.dataset.indices == [0]  # held out, and still the one read
    doc = " ".join(ImageFolderDataModule.__doc__.split())
    assert ("to the size of the folder's first image, ``ImageFolder(root).samples[0]``, whether or not it is held out"
            in doc)
    assert "first training image" not in doc


def test_held_out_counts_given_on_the_command_line_are_counts_not_refused_fractions(tmp_path):
    """`lit-robust fit --data.init_args.test_size 2 --data.init_args.val_size 3` was refused ("must be a fraction in
    [0, 1) ... or a whole number of images >= 0, got 2.0"): jsonargparse reads a count given to a `float | int` as a
    float, so a count of held-out images could not be given from the CLI or a config at all."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(ImageFolderDataModule, "data")
    cfg = parser.parse_args(["--data.root", str(_folder(tmp_path / "train")), "--data.test_size", "2",
                             "--data.val_size", "3"])
    assert (cfg.data.test_size, cfg.data.val_size) == (2.0, 3.0)  # what the CLI hands the datamodule
    dm = parser.instantiate_classes(cfg).data
    dm.setup("fit")
    assert (len(dm.test_set), len(dm.val_set), len(dm.train_set)) == (2, 3, 13)
    with pytest.raises(ValueError, match=r"`test_size` must be a fraction in \[0, 1\) of the images or a whole number "
                                         r"of images >= 0, got 2.5\."):
        ImageFolderDataModule(str(tmp_path / "train"), test_size=2.5)


@pytest.mark.parametrize("argument", ["root", "test_root", "predict_root"])
def test_a_file_given_as_the_folder_is_said_to_be_a_file(tmp_path, argument):
    """`root='/etc/passwd'` (a file, e.g. a zip of the images) was said to be no folder because it "does not exist"."""
    folder = tmp_path / "photos"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(folder / cls / "a.png")
    archive = tmp_path / "photos.zip"
    archive.write_bytes(b"PK")
    args = {"root": str(folder), argument: str(archive)}
    with pytest.raises(FileNotFoundError, match=rf"^`{argument}`='{re.escape(str(archive))}' is not a folder: "
                                                rf"{re.escape(str(archive))} is a file\.$"):
        ImageFolderDataModule(**args).setup("fit")


def test_grey_and_colour_images_mixed_are_said_and_the_misfit_offers_the_data_side(tmp_path):
    """An image newcomer's colour folder with one grey file sorted first was read as grey, without a word; the model's
    `in_channels=3` then got "Set `model.in_channels` to 1" alone, where the other mismatch also offers `data.channels`."""
    from lit_robust import ImageClassifier

    root = _folder(tmp_path / "train", mode="RGB")
    Image.open(root / "cat" / "00.png").convert("L").save(root / "cat" / "00.png")  # the first file, grey
    dm = ImageFolderDataModule(str(root), test_size=0)
    with pytest.warns(UserWarning, match=r"^ImageFolderDataModule: the training images are grayscale and colour \(1 and "
                                         r"17 of the 18 sampled\); all are read as the first one, grayscale, the colour "
                                         r"ones too \(e\.g\. '01\.png', '02\.png', '03\.png'\)\. Pass `channels` \(3 for "
                                         r"colour, 1 for grayscale\) to choose\.$"):
        dm.setup("fit")
    assert dm.in_channels == 1
    with pytest.raises(ValueError, match=r"Set `model.in_channels` to 1\. Or set `data.channels` to 3 to read the images "
                                         r"in colour \(the folder's first image, which sets the channels, is grayscale\)"):
        ImageClassifier(backbone="mlp", num_classes=3, in_channels=3, image_size=dm.image_size[0]).check_data(dm.data_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageFolderDataModule(str(root), test_size=0, channels=3).setup("fit")  # chosen: nothing to say


def test_files_of_a_type_not_read_are_named(tmp_path):
    """An image newcomer's 15 .gif photos of a 200-file folder were left out of training, and of the report of
    suspicious files, without a word. Hidden files pass unsaid."""
    root = _folder(tmp_path / "train")
    Image.open(root / "dog" / "00.png").save(root / "dog" / "photo.gif")
    (root / "cat" / "notes.txt").write_text("x")
    (root / "cat" / ".DS_Store").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"^ImageFolderDataModule: 2 file\(s\) in the class folders of `root`=.* are not "
                                         r"read, not being of an image type torchvision reads \(1 \.gif, 1 \.txt; e\.g\. "
                                         r"'cat/notes\.txt', 'dog/photo\.gif'\): they are neither trained on nor in the "
                                         r"report\. Convert the images among them \(to \.png or \.jpg\) to include them\.$"):
        ImageFolderDataModule(str(root), test_size=0).setup("fit")


def test_a_class_with_no_or_few_training_images_is_warned_about(tmp_path):
    """An image newcomer's class of one image went, for some seeds, into the `test_size` split, and a model of five
    outputs trained on four classes without a word."""
    root = _folder(tmp_path / "train", per_class=6)
    for f in sorted((root / "emu").iterdir())[1:]:
        f.unlink()  # emu: one image
    with pytest.warns(UserWarning, match=r"^ImageFolderDataModule: class\(es\) emu \(1\) have fewer than 3: the model can "
                                         r"hardly learn them"):
        ImageFolderDataModule(str(root), test_size=0).setup("fit")
    seed = next(s for s in range(50) if 12 in _held_out(root, s))  # emu's one image is position 12
    with pytest.warns(UserWarning, match=r"^ImageFolderDataModule: class\(es\) \['emu'\] have no training image: their "
                                         r"images all went to the held-out splits, drawn at random, not per class"):
        ImageFolderDataModule(str(root), test_size=0.3, seed=seed).setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageFolderDataModule(str(_folder(tmp_path / "even")), test_size=0).setup("fit")


def _held_out(root, seed):
    dm = ImageFolderDataModule(str(root), test_size=0.3, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    return set(range(13)) - set(dm.train_source_index.tolist())
