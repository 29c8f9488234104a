"""ImageNet ResNet-18 weights for the branch trunks (sibnet.models.backbone), offline."""

from __future__ import annotations

import pytest
import torch

import sibnet
from sibnet.models.backbone import PretrainedWeightsUnavailable


def test_pretrained_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SIBNET_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable, match="TORCH_HOME") as err:
        sibnet.create_model("face", pretrained=True)
    assert "pretrained=False" in str(err.value)


def test_pretrained_unreachable_network_fails_fast(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("SIBNET_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs.get("timeout"))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(PretrainedWeightsUnavailable, match="cannot be downloaded"):
        sibnet.create_model("face", pretrained=True)
    assert calls and calls[0] is not None and calls[0] <= 10  # a bounded probe, never an unbounded wait


def test_pretrained_loads_from_torch_cache(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = resnet18(weights=None)
    with torch.no_grad():
        ref.conv1.weight.fill_(0.125)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / "resnet18-f37072fd.pth")
    model = sibnet.create_model("concat", pretrained=True)
    for trunk in model.branches:
        assert torch.equal(trunk.stem[0].weight, ref.conv1.weight)
        assert torch.equal(trunk.layers[3][1].conv2.weight, ref.layer4[1].conv2.weight)
