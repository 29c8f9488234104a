"""sibnet.inference: the prepared copy computes what the model computes (fp32 exactly, bf16 harmlessly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sibnet
from sibnet import inference
from sibnet.cam import branch_cams
from sibnet.checkpoints import load_model
from sibnet.data.caer import CaerDataset
from sibnet.inference import CPUFeatures, InferenceModel, prepare, resolve_precision

SIZE = 64
VARIANTS = ("concat", "attention", "sibnet")


def _model(name: str, **kw) -> sibnet.ContextEmotionNet:
    """A small model whose BatchNorms have non-trivial statistics (so folding them is tested)."""
    torch.manual_seed(0)
    model = sibnet.create_model(name, input_size=SIZE, resize=SIZE + 4, layer4_stride=1, **kw).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)  # ICM's zero-init BN too
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def _inputs(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, SIZE, SIZE, generator=g) for _ in range(3)]


def _bf16_or_skip(model: torch.nn.Module) -> InferenceModel:
    try:
        return prepare(model, "cpu", "bf16")
    except ValueError as err:
        pytest.skip(f"this CPU cannot run bf16 ({err}); fp32 is what it serves")


# --- float32: the same numbers as the model ---


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("fuse", [True, False])
def test_fp32_prepared_equals_plain_forward(name, fuse):
    model = _model(name)
    prepared = prepare(model, "cpu", "fp32", fuse=fuse)
    assert prepared.precision == "fp32" and prepared.dtype == torch.float32
    for batch in (1, 3):
        x = _inputs(batch, seed=batch)
        with torch.no_grad():
            expected = model.forward_features(*x)
            expected_logits = model(*x).logits
        got = prepared.features(*x)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.dtype == torch.float32 and g.is_contiguous() and g.shape == e.shape
            # BN folding and oneDNN's summation order: float rounding only
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))
        torch.testing.assert_close(prepared(*x).logits, expected_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_bf16_prepared_is_close_on_a_random_model(name):
    model = _model(name)
    prepared = _bf16_or_skip(model)
    x = _inputs(2)
    with torch.no_grad():
        expected = model.forward_features(*x)
    for g, e in zip(prepared.features(*x), expected):
        assert g.dtype == torch.float32  # maps come back float32 for the head and the CAMs
        rel = float((g - e).abs().max() / e.abs().max())
        assert rel < 0.05, rel  # bf16 keeps 8 bits of mantissa: ~0.4 % per op
        corr = np.corrcoef(g.flatten().numpy(), e.flatten().numpy())[0, 1]
        assert corr > 0.999, corr


def test_inputs_in_any_layout_and_dtype_give_the_same_maps():
    model = _model("sibnet")
    prepared = prepare(model, "cpu", "fp32")
    x = _inputs(2)
    plain = prepared.features(*x)
    other = prepared.features(*(t.double().contiguous(memory_format=torch.channels_last) for t in x))
    for a, b in zip(plain, other):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_original_model_is_not_changed():
    model = _model("sibnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {k: (p, p.dtype, p.stride(), p.requires_grad) for k, p in model.named_parameters()}
    for precision in ("fp32", "auto"):
        prepared = prepare(model, "cpu", precision)
        prepared(*_inputs(1))
        assert prepared.model is model and prepared.config is model.config
    assert not model.training
    after = dict(model.named_parameters())
    assert after.keys() == params.keys()
    for k, (p, dtype, stride, grad) in params.items():
        assert after[k] is p and p.dtype == dtype and p.stride() == stride and p.requires_grad == grad
        assert p.grad is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(type(m).__name__.startswith("Fused") for m in model.modules())
    # the original still computes what it computed
    x = _inputs(2)
    with torch.no_grad():
        fresh = _model("sibnet")
        torch.testing.assert_close(model(*x).logits, fresh(*x).logits, rtol=0, atol=0)


def test_head_is_the_originals_and_cams_on_prepared_maps_are_exact():
    """Predictions and CAMs read the same float32 maps through the same head: the CAM's target logit is the
    predicted logit, to the bit."""
    model = _model("sibnet")
    prepared = prepare(model, "cpu", "auto")
    x = _inputs(2)
    maps = prepared.features(*x)
    out = prepared.head(maps)
    targets = out.logits.argmax(1).tolist()
    cams = branch_cams(model, None, targets, "gradcam", features=maps)
    np.testing.assert_array_equal(cams.target_logits, out.logits[[0, 1], targets].numpy())


def test_head_refuses_a_model_in_train_mode():
    model = _model("concat", dropout=0.5)
    prepared = prepare(model, "cpu", "fp32")
    maps = prepared.features(*_inputs(1))
    model.train()
    with pytest.raises(ValueError, match="eval"):
        prepared.head(maps)
    model.eval()
    prepared.head(maps)


def test_describe_and_repr_say_what_runs():
    prepared = prepare(_model("concat"), "cpu", "fp32")
    assert "fp32" in prepared.describe() and "channels-last" in prepared.describe()
    assert "Concat" in repr(prepared) or "concat" in repr(prepared).lower()
    assert inference.cpu_features().summary()


# --- the precision rule ---


def _features(flags: tuple[str, ...], onednn_bf16: bool = True) -> CPUFeatures:
    return CPUFeatures("test CPU", "x86_64", "AVX512", flags, True, onednn_bf16, 2)


def test_auto_is_bf16_only_with_native_bf16(monkeypatch):
    monkeypatch.setattr(inference, "_onednn_bf16", lambda: True)
    monkeypatch.setattr(inference, "cpu_features", lambda: _features(("avx2", "avx512_f")))
    assert resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 is slower than fp32
    assert prepare(_model("concat"), "cpu", "auto").precision == "fp32"
    monkeypatch.setattr(inference, "cpu_features", lambda: _features(("avx512_f", "avx512_bf16")))
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(inference, "cpu_features", lambda: _features(("amx_bf16",)))
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"  # fp32 whenever asked


def test_auto_is_fp32_where_onednn_has_no_bf16(monkeypatch):
    monkeypatch.setattr(inference, "_onednn_bf16", lambda: False)
    monkeypatch.setattr(inference, "cpu_features", lambda: _features(("avx512_bf16",), onednn_bf16=False))
    assert resolve_precision("auto", "cpu") == "fp32"


def test_bf16_is_refused_where_unsupported(monkeypatch):
    monkeypatch.setattr(inference, "_onednn_bf16", lambda: False)
    with pytest.raises(ValueError, match=r"bf16 is not supported on cpu.*fp32"):
        resolve_precision("bf16", "cpu")
    with pytest.raises(ValueError, match="bf16 is not supported"):
        prepare(_model("concat"), "cpu", "bf16")
    with pytest.raises(ValueError, match="bf16 is not supported on mps"):
        resolve_precision("bf16", "mps")
    assert resolve_precision("auto", "mps") == "fp32"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16 is not supported on cuda"):
            resolve_precision("bf16", "cuda")
        assert resolve_precision("auto", "cuda") == "fp32"


def test_emulated_bf16_is_allowed_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(inference, "_onednn_bf16", lambda: True)
    monkeypatch.setattr(inference, "cpu_features", lambda: _features(("avx512_f",)))
    with caplog.at_level("WARNING", logger="sibnet.inference"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    assert "emulated" in caplog.text


@pytest.mark.parametrize("bad", ["fp16", "BF16", "float32", "", "int8"])
def test_unknown_precisions_are_refused(bad):
    with pytest.raises(ValueError, match=r"unknown precision .*valid: auto, bf16, fp32"):
        resolve_precision(bad)
    with pytest.raises(ValueError, match="unknown precision"):
        prepare(_model("concat"), "cpu", bad)


# --- reduced precision on a trained model (the planted-cue SIB-Net, conftest.planted_caer) ---


def _held_out(planted_caer, model):
    test = CaerDataset(planted_caer.root, "test", transform=model.config.transform)
    return [test.triple(i).as_batch() for i in range(len(test))]


def _scores(model, runner, items):
    """Softmax scores (what the demo shows for CAER-S), top-1 classes and the final maps of every item."""
    scores, tops, feats = [], [], []
    for x in items:
        maps = runner(x)
        with torch.no_grad():
            logits = model.forward_head(maps).logits
        scores.append(torch.softmax(logits, dim=-1)[0].numpy())
        tops.append(int(logits.argmax()))
        feats.append(maps)
    return np.stack(scores), tops, feats


@pytest.mark.slow
def test_planted_fp32_prepared_equals_plain(planted_caer):
    model = load_model(planted_caer.checkpoint)
    prepared = prepare(model, "cpu", "fp32")
    items = _held_out(planted_caer, model)[:20]
    for x in items:
        with torch.no_grad():
            expected = model(*x).logits
        torch.testing.assert_close(prepared(*x).logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_planted_bf16_is_harmless(planted_caer):
    """bf16 against fp32 on the held-out items of a trained model: the issue's three bounds."""
    model = load_model(planted_caer.checkpoint)
    bf16 = _bf16_or_skip(model)
    items = _held_out(planted_caer, model)
    assert len(items) >= 50

    def plain(x):
        with torch.no_grad():
            return tuple(model.forward_features(*x))

    ref_scores, ref_top, ref_maps = _scores(model, plain, items)
    got_scores, got_top, got_maps = _scores(model, lambda x: bf16.features(*x), items)

    same_top = float(np.mean(np.asarray(ref_top) == np.asarray(got_top)))
    max_delta = float(np.abs(ref_scores - got_scores).max())
    pearson = []
    for ref, got, target in zip(ref_maps, got_maps, ref_top):
        a = branch_cams(model, None, [target], "gradcam", features=ref).maps[0]
        b = branch_cams(model, None, [target], "gradcam", features=got).maps[0]
        for branch in range(a.shape[0]):
            if a[branch].std() < 1e-6 and b[branch].std() < 1e-6:
                pearson.append(1.0)  # both flat (Grad-CAM's ReLU removed everything): identical
            else:
                pearson.append(float(np.corrcoef(a[branch].ravel(), b[branch].ravel())[0, 1]))
    report = f"top-1 same {same_top:.3f}, max |Δ score| {max_delta:.4f}, min Pearson {min(pearson):.4f}"
    assert same_top >= 0.99, report
    assert max_delta <= 0.02, report
    assert min(pearson) >= 0.98, report
    # the model learned the cues, so this says something about a trained network
    labels = [rec.label for rec in CaerDataset(planted_caer.root, "test").records]
    accuracy = float(np.mean(np.asarray(got_top) == np.asarray(labels)))
    assert accuracy >= 0.8, (accuracy, report)
    print(report, f"accuracy {accuracy:.3f} on {len(items)} items")
