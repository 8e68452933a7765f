"""Find the images filed in the wrong class folder without knowing how many there are: `ImageFolderDataModule`
reads a folder of images (one sub-folder per class), `ImageClassifier` fits it under `ITLM(keep_ratio="auto")`,
and the per-sample report names each suspicious file.

    python examples/find_misfiled_images.py                        # about 30 s of CPU time
    python examples/find_misfiled_images.py --fast                 # a few seconds (used by the tests)
    python examples/find_misfiled_images.py --write digit_folders   # only write the example folders, e.g. for
                                                                   # lit-robust fit --config configs/itlm_image_folder.yaml

The folders hold scikit-learn's 8×8 digits as PNG files, `train/<digit>/` and `test/<digit>/`, with 20 % of the
training files put in another digit's folder. Each file's name says its true digit (`..._true3.png`): yours will
not; here it measures what the report found.
"""

import argparse
import os
import tempfile

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from sklearn.datasets import load_digits

from lit_robust import ITLM, ImageClassifier, ImageFolderDataModule, load_report


def write_image_folders(folder: str, misfiled: float = 0.2, test: int = 397, seed: int = 0,
                        limit: int | None = None) -> int:
    """``folder/train/<digit>/*.png`` (``misfiled`` of them in a wrong digit's folder) and ``folder/test/<digit>/``
    (the last ``test`` images, correctly filed); returns the number of misfiled training files."""
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    n = len(images) if limit is None else min(limit + test, len(images))
    rng = np.random.default_rng(seed)
    wrong = 0
    for i in range(n):
        truth = int(digits.target[i])
        split = "test" if i >= n - test else "train"
        label = truth
        if split == "train" and rng.random() < misfiled:
            label = (truth + int(rng.integers(1, 10))) % 10
            wrong += 1
        os.makedirs(os.path.join(folder, split, str(label)), exist_ok=True)
        Image.fromarray(images[i], mode="L").save(os.path.join(folder, split, str(label), f"{i:04d}_true{truth}.png"))
    return wrong


def main(fast: bool = False, folder: str | None = None) -> dict:
    torch.set_num_threads(1)
    folder = folder or tempfile.mkdtemp(prefix="lit_robust_images_")
    write_image_folders(folder, limit=600 if fast else None)
    pl.seed_everything(0)
    data = ImageFolderDataModule(os.path.join(folder, "train"), test_root=os.path.join(folder, "test"), batch_size=64)
    rounds = [5, 5] if fast else [10, 10, 10]
    itlm = ITLM(keep_ratio="auto", round_epochs=rounds, verbose=False, plot=False, report=True, report_dir=folder)
    trainer = pl.Trainer(max_epochs=sum(rounds), callbacks=[itlm], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    model = ImageClassifier("mlp", num_classes=10, in_channels=1, image_size=8, lr=0.05)
    trainer.fit(model, data)

    report = load_report(itlm.report_path)  # a DataFrame, most suspicious first; `path` is each image's file
    print(report[["rank", "path", "given_class", "predicted_class", "kept"]].head(10).to_string(index=False))
    # (pandas reads the folder names "0" … "9" of `given_class` back as numbers: compare them as text)
    misfiled = report["path"].map(lambda p: os.path.basename(p).split("_true")[1][:-4]) != report["given_class"].astype(str)
    dropped = ~report["kept"]
    estimated = itlm.history[-1].estimated_corruption
    top = int(misfiled.sum())
    precision = float(misfiled[:top].mean())
    print(f"estimated corrupted: {100 * estimated:.1f}% (truly {100 * misfiled.mean():.1f}%); the top {top} files of "
          f"the report: {100 * precision:.1f}% misfiled; dropped files: {int(dropped.sum())}, of which misfiled "
          f"{100 * misfiled[dropped].mean():.1f}%")
    test_acc = trainer.test(model, data, verbose=False)[0]["test_acc"]
    print(f"test accuracy on the correctly filed test folder: {test_acc:.3f}")
    return {"report": report, "misfiled": misfiled, "estimated": estimated, "precision": precision,
            "test_acc": test_acc}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--folder", default=None, help="where the images and the report go (default: a temporary one)")
    parser.add_argument("--write", metavar="FOLDER", default=None, help="only write the example folders and stop")
    args = parser.parse_args()
    if args.write:
        print(f"wrote {args.write}/train ({write_image_folders(args.write)} files misfiled) and {args.write}/test")
    else:
        main(args.fast, args.folder)
