"""Checkpoints: bit-exact round trips, strict matching, and refusal of everything else."""

from __future__ import annotations

import json
import time

import pytest
import torch

import sibnet
from sibnet.checkpoints import CheckpointError, load_model

SIZE = 64


def _model(name: str = "sibnet", **kw) -> sibnet.ContextEmotionNet:
    model = sibnet.create_model(name, input_size=SIZE, resize=SIZE + 4, **kw)
    with torch.no_grad():  # non-default BN statistics, so buffers are part of the round trip
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("name", ["sibnet", "attention", "face", "concat_icm_clf"])
def test_round_trip_is_bit_exact(tmp_path, name):
    model = _model(name, layer4_stride=1)
    model.save_pretrained(tmp_path / name, training={"loss": "bce", "seed": 3})
    loaded = load_model(tmp_path / name)
    assert loaded.config == model.config
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = [torch.randn(2, 3, SIZE, SIZE) for _ in range(3)]
    with torch.no_grad():
        assert torch.equal(model(*x).logits, loaded(*x).logits)
    assert loaded.training_info == {"loss": "bce", "seed": 3}


def test_config_json_is_self_describing(tmp_path):
    model = _model("concat", num_classes=7)
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["name"] == "concat"
    assert meta["labels"] == list(sibnet.CAER_CLASSES)
    assert meta["multi_label"] is False
    assert (meta["input_size"], meta["resize"], meta["mean"], meta["std"]) == (
        SIZE,
        SIZE + 4,
        [0.5] * 3,
        [0.5] * 3,
    )
    assert (tmp_path / "model.safetensors").is_file()


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load_model(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        load_model(empty)
    _model("face").save_pretrained(tmp_path / "noconf")
    (tmp_path / "noconf" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        load_model(tmp_path / "noconf")


def test_truncated_weights_are_refused(tmp_path):
    _model("face").save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(tmp_path)


def test_wrong_label_count_is_refused(tmp_path):
    _model("concat", num_classes=7).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["labels"] = list(sibnet.EMOTIC_CATEGORIES)
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match=r"wrong shape .* 26 labels.*\(7, 512\) in the file, \(26, 512\) expected"
    ):
        load_model(tmp_path)


def test_wrong_architecture_is_refused(tmp_path):
    _model("concat").save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["name"], meta["scm"], meta["icm"], meta["branch_heads"] = "sibnet", "gru", "gclf", True
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"do not match architecture 'sibnet'.*missing keys"):
        load_model(tmp_path)


def test_bad_config_json(tmp_path):
    _model("face").save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "sibnet-checkpoint", "name": "resnet50"}))
    with pytest.raises(CheckpointError, match="unknown model 'resnet50'"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "sibnet-checkpoint", "wings": 2}))
    with pytest.raises(CheckpointError, match="unknown model config keys"):
        load_model(tmp_path)


def test_pickles_are_never_unpickled(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be called on user checkpoints")

    monkeypatch.setattr(torch, "load", forbidden)
    state = {"w": torch.zeros(1)}
    folder = tmp_path / "pickled"
    folder.mkdir()
    with open(folder / "pytorch_model.bin", "wb") as f:
        torch.save(state, f)
    with pytest.raises(CheckpointError, match="pickle checkpoints are refused"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="is a pickle file"):
        load_model(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="is a pickle file"):
        load_model(str(folder / "pytorch_model.bin"))


def test_hub_id_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache") as err:
        load_model("someone/sibnet-emotic", cache_dir=tmp_path, local_files_only=True)
    assert time.perf_counter() - start < 5
    assert "local folder" in str(err.value)


def test_hub_id_reads_the_hub_cache(tmp_path, monkeypatch):
    """A Hub id resolves through huggingface_hub's cache layout (populated here by hand, no network)."""

    model = _model("face")
    repo_dir = tmp_path / "models--someone--sibnet-demo"
    commit = "a" * 40
    snap = repo_dir / "snapshots" / commit / "face"
    model.save_pretrained(snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    loaded = load_model("someone/sibnet-demo", subfolder="face", cache_dir=tmp_path, local_files_only=True)
    assert loaded.checkpoint_source == "hub:someone/sibnet-demo/face"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
