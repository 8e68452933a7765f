"""Backbone checkpoints: this project's SimCLR, lightning-bolts SimCLR (from the recorded layout), bad files."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from lit_robust import LinearProbe, SimCLR, load_backbone, simclr_backbone
from lit_robust.models.backbone_checkpoint import backbone_state_dict
from tests.conftest import REPO

LAYOUT = json.loads((REPO / "tests" / "fixtures" / "bolts_simclr_layout.json").read_text())


def fake_bolts_checkpoint(arch: str, first_conv: bool, maxpool1: bool, seed: int = 0) -> dict:
    """A Lightning checkpoint of a bolts SimCLR as the recorded layout describes it: random tensors of the recorded
    shapes and dtypes, its hyper-parameters, and the other top-level entries Lightning writes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (shape, dtype) in LAYOUT["layouts"][f"{arch}/first_conv={first_conv}"].items():
        dt = getattr(torch, dtype)
        sd[key] = torch.randn(shape, generator=g).to(dt) if dt.is_floating_point else torch.randint(0, 9, shape,
                                                                                                     generator=g)
    return {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.9.5", "state_dict": sd,
            "optimizer_states": [], "lr_schedulers": [],
            "hyper_parameters": {"gpus": 1, "num_samples": 50000, "batch_size": 256, "dataset": "cifar10",
                                 "arch": arch, "hidden_mlp": LAYOUT["hidden_mlp"][arch], "feat_dim": 128,
                                 "first_conv": first_conv, "maxpool1": maxpool1, "temperature": 0.1}}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize(("first_conv", "maxpool1"), [(True, True), (False, False), (True, False)])
def test_bolts_checkpoint_loads_into_our_backbone(tmp_path, arch, first_conv, maxpool1):
    ckpt = fake_bolts_checkpoint(arch, first_conv, maxpool1)
    path = tmp_path / "bolts.ckpt"
    torch.save(ckpt, path)
    net = load_backbone(path)
    ours = net.state_dict()
    expected = {k[len("encoder."):]: v for k, v in ckpt["state_dict"].items()
                if k.startswith("encoder.") and not k.startswith("encoder.fc.")}
    assert set(ours) == set(expected)
    assert all(torch.equal(ours[k], expected[k]) for k in expected)  # every tensor landed under its own name
    assert net.feature_dim == LAYOUT["hidden_mlp"][arch]
    assert net.conv1.kernel_size == ((7, 7) if first_conv else (3, 3))
    assert isinstance(net.maxpool, torch.nn.MaxPool2d) == maxpool1
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, LAYOUT["hidden_mlp"][arch])


def test_bolts_layout_reports_arch_and_drops_classifier_and_projection():
    found = backbone_state_dict(fake_bolts_checkpoint("resnet18", False, False))
    assert found.layout == "bolts"
    assert found.arch == {"backbone": "resnet18", "in_channels": 3, "first_conv": False, "maxpool1": False}
    assert not any(k.startswith(("fc.", "projection.", "encoder.")) for k in found)


def test_bolts_checkpoint_conflicting_architecture_argument_is_an_error(tmp_path):
    path = tmp_path / "bolts.ckpt"
    torch.save(fake_bolts_checkpoint("resnet18", False, False), path)
    with pytest.raises(ValueError, match=r"`first_conv`=True but the checkpoint says False"):
        load_backbone(path, first_conv=True)


def test_bolts_checkpoint_without_hyper_parameters_uses_arguments(tmp_path):
    ckpt = fake_bolts_checkpoint("resnet18", False, True)
    path = tmp_path / "bare.ckpt"
    torch.save({"state_dict": ckpt["state_dict"]}, path)
    with pytest.raises(ValueError, match=r"does not fit the backbone backbone='resnet50'.*missing keys.*"
                                         r"layer1.0.conv3.weight"):
        load_backbone(path)  # bolts' default arch is resnet50
    net = load_backbone(path, backbone="resnet18", first_conv=False)
    assert net.conv1.kernel_size == (3, 3)


def test_our_simclr_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SimCLR(width=4, projection_dim=8)
    path = tmp_path / "ours.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    net = load_backbone(path)
    x = torch.randn(3, 1, 28, 28)
    model.eval(), net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), model.backbone(x))
    probe = LinearProbe(str(path), num_classes=10)
    assert all(torch.equal(a, b) for a, b in zip(probe.backbone.state_dict().values(),
                                                 model.backbone.state_dict().values()))
    assert not any(p.requires_grad for p in probe.backbone.parameters())


def test_plain_state_dict_of_a_resnet(tmp_path):
    net = simclr_backbone("resnet18", 1, first_conv=False, maxpool1=False)
    path = tmp_path / "plain.pt"
    torch.save(net.state_dict(), path)
    loaded = load_backbone(path, backbone="resnet18", in_channels=1, first_conv=False, maxpool1=False)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))


def test_wrong_architecture_lists_missing_unexpected_and_shapes(tmp_path):
    path = tmp_path / "cnn.ckpt"
    torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}},
               path)
    with pytest.raises(ValueError, match=r"`width`=8 but the checkpoint says 4"):
        load_backbone(path, width=8)
    torch.save({"state_dict": SimCLR(width=4).state_dict()}, path)  # no hyper-parameters: width defaults to 16
    with pytest.raises(ValueError) as err:
        load_backbone(path)
    msg = str(err.value)
    assert "(lit_robust layout) does not fit the backbone backbone='cnn', in_channels=1, width=16" in msg
    assert "shape mismatches: ['block1.0.bias: checkpoint (4,) vs model (16,)'" in msg
    with pytest.raises(ValueError) as err:
        load_backbone(path, backbone="resnet18")
    assert "missing keys: ['bn1.bias'" in str(err.value) and "unexpected keys: ['block1.0.bias'" in str(err.value)


def test_missing_file_and_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`backbone_checkpoint` must be an existing checkpoint file, got "
                                                r"'.*nope.ckpt' \(no such file: has the run that writes it, "
                                                r"e.g. the pretraining, finished\?\)"):
        LinearProbe(str(tmp_path / "nope.ckpt"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="is damaged or not a checkpoint"):
        load_backbone(junk)
    torch.save({"epoch": 1}, junk)
    with pytest.raises(ValueError, match="holds no state dict"):
        load_backbone(junk)


class _Payload:
    """Unpickling this would create a marker file (stands for arbitrary code run by a malicious pickle)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickled_objects_are_refused_without_running_them(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"x": _Payload(str(marker))}}
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"cannot be read as a weights-only checkpoint .*no code stored in the file "
                                         r"runs"):
        load_backbone(path)
    with pytest.raises(ValueError, match="weights-only"):
        LinearProbe(str(path))
    assert not marker.exists() and not os.path.exists(os.path.join(os.getcwd(), "pwned"))
    # the marker mechanism is real: an unrestricted unpickle would have created it
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()


def test_linear_probe_checkpoint_records_the_backbone_it_read(tmp_path):
    torch.manual_seed(0)
    simclr = SimCLR(width=8, projection_dim=8)
    src = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": simclr.state_dict(), "hyper_parameters": dict(simclr.hparams)}, src)
    probe = LinearProbe(str(src))
    assert probe.hparams.width == 8 and probe.hparams.backbone == "cnn"  # resolved from the file, not defaults
    again = tmp_path / "probe.ckpt"
    torch.save({"state_dict": probe.state_dict(), "hyper_parameters": dict(probe.hparams)}, again)
    assert load_backbone(again).feature_dim == 32  # a LinearProbe checkpoint serves as a backbone source too


def test_resnet_only_arguments_beside_a_cnn_checkpoint_are_no_conflict(tmp_path):
    """A SimCLR user's `LinearProbe(backbone_checkpoint=<cnn ckpt>, first_conv=False)` was refused as "trained with
    another architecture", for an argument the docstring says the cnn does not use."""
    path = tmp_path / "simclr.ckpt"
    model = SimCLR(width=4)  # its saved hyper-parameters hold the resnet stem's defaults too
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    assert model.hparams["first_conv"] is True and model.hparams["maxpool1"] is True
    assert load_backbone(path, first_conv=False, maxpool1=False).feature_dim == 16
    with pytest.raises(ValueError, match=r"another architecture: `width`=8 but the checkpoint says 4"):
        load_backbone(path, width=8, first_conv=False)


def test_width_beside_a_resnet_checkpoint_is_no_conflict(tmp_path):
    """A reviewer's `load_backbone(resnet_ckpt, width=99)` was refused as "trained with another architecture", for an
    argument the ResNets do not use; the resnet arguments still conflict."""
    path = tmp_path / "simclr.ckpt"
    model = SimCLR(backbone="resnet18", width=4, in_channels=1, first_conv=False, maxpool1=False)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    net = load_backbone(path, width=99).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), model.backbone.eval()(x))
    with pytest.raises(ValueError, match=r"another architecture: `maxpool1`=True but the checkpoint says False"):
        load_backbone(path, width=99, maxpool1=True)


def test_a_probe_given_a_path_object_writes_checkpoints_that_read_weights_only(tmp_path):
    """`LinearProbe(backbone_checkpoint=pathlib.Path(...))` kept the Path in its hyper-parameters, so its own
    checkpoints were refused by `load_backbone` (and any `torch.load(..., weights_only=True)`): "Unsupported global:
    pathlib.PosixPath"."""
    torch.save({"state_dict": SimCLR(width=4).state_dict(), "hyper_parameters": {"backbone": "cnn", "width": 4}},
               tmp_path / "simclr.ckpt")
    probe = LinearProbe(backbone_checkpoint=tmp_path / "simclr.ckpt", num_classes=3)
    assert probe.hparams.backbone_checkpoint == str(tmp_path / "simclr.ckpt")
    torch.save({"state_dict": probe.state_dict(), "hyper_parameters": dict(probe.hparams)}, tmp_path / "probe.ckpt")
    again = load_backbone(tmp_path / "probe.ckpt")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in probe.backbone.state_dict().items())
