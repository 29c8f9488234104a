"""The three-branch network (sibnet.models.network): inputs, map sizes, features then head."""

from __future__ import annotations

import pytest
import torch

import sibnet

SIZE = 64  # small inputs keep the suite fast; the architecture is size-agnostic above 32 px


def _inputs(batch: int = 2, size: int = SIZE) -> list[torch.Tensor]:
    return [torch.randn(batch, 3, size, size) for _ in range(3)]


def _small(name: str, **kw) -> sibnet.ContextEmotionNet:
    return sibnet.create_model(name, input_size=SIZE, resize=SIZE + 4, **kw)


def test_single_branch_models_use_only_their_input():
    model = _small("body").eval()
    face, body, scene = _inputs()
    with torch.no_grad():
        a = model(face, body, scene).logits
        b = model(torch.zeros_like(face), body, torch.zeros_like(scene)).logits
        c = model(face, torch.zeros_like(body), scene).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_bad_inputs_name_the_expected_shapes():
    model = _small("sibnet")
    face, body, scene = _inputs()
    with pytest.raises(ValueError, match=r"3 tensors \(face, body, scene\), each \(B, 3, 64, 64\); got 2"):
        model(face, body)
    with pytest.raises(ValueError, match=r"the scene input has shape \(2, 3, 70, 70\)"):
        model(face, body, torch.randn(2, 3, 70, 70))
    with pytest.raises(ValueError, match=r"the face input has shape \(3, 64, 64\)"):
        model(face[0], body, scene)
    with pytest.raises(ValueError, match="one batch size"):
        model(face, body, scene[:1])


def test_layer4_stride_sets_the_map_size():
    x = _inputs(1, 224)
    for stride, side in ((2, 7), (1, 14)):
        model = sibnet.create_model("concat", layer4_stride=stride).eval()
        with torch.no_grad():
            maps = model.forward_features(*x)
        assert [tuple(m.shape) for m in maps] == [(1, 512, side, side)] * 3


def test_forward_is_features_then_head():
    model = _small("sibnet").eval()
    x = _inputs()
    with torch.no_grad():
        full = model(*x)
        split = model.forward_head(model.forward_features(*x))
    assert torch.equal(full.logits, split.logits)
