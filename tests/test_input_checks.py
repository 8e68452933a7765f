"""Issue 14: inputs that used to end in an obscure error (or in silence) get a message naming the argument,
the allowed range and the value received."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from lit_robust import SimCLR
from lit_robust.backbone_checkpoint import load_backbone, read_weights_only


# -- damaged checkpoints (lit_robust/backbone_checkpoint.py) ------------------------------------------------------
@pytest.fixture
def saved_checkpoint(tmp_path):
    path = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}}, path)
    return path


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "cut short"),
    ("empty", "the file is empty"),
    ("random", "neither a zip archive nor a pickle stream"),
    ("truncated_legacy", "Error"),
])
def test_damaged_checkpoint_is_reported_as_damaged(tmp_path, saved_checkpoint, damage, reason):
    path = tmp_path / "damaged.ckpt"
    if damage == "truncated":
        data = saved_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "random":
        path.write_bytes(bytes(torch.randint(0, 256, (512,), generator=torch.Generator().manual_seed(0)).tolist()))
    else:  # torch's legacy (non-zip) format, cut in half
        torch.save({"w": torch.zeros(100)}, path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"`backbone_checkpoint` file .*damaged.ckpt' is damaged or not a checkpoint "
                                         rf"\(.*{reason}") as err:
        load_backbone(path, argument="backbone_checkpoint")
    assert "weights-only" not in str(err.value) and "trusted environment" not in str(err.value)


def test_intact_checkpoints_still_load(tmp_path, saved_checkpoint):
    assert load_backbone(saved_checkpoint).feature_dim == 16
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_weights_only(legacy)["w"], torch.ones(3))


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_readable_file_needing_unpickling_gets_the_weights_only_explanation(tmp_path, how):
    marker, path = tmp_path / "ran", tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.zeros(2)}, "x": _RunsCode(str(marker))}
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match=r"cannot be read as a weights-only checkpoint .*trusted environment") as err:
        read_weights_only(path, "backbone_checkpoint")
    assert "damaged" not in str(err.value)
    assert not marker.exists() and not os.path.exists("ran")
