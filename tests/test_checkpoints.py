"""Checkpoints: bit-exact round trips, strict matching, and refusal of everything else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sibnet
from sibnet import evaluate
from sibnet.checkpoints import FORMAT, FORMAT_VERSION, CheckpointError, load_model, read_config

REPO = Path(__file__).resolve().parents[1]

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


# --- issue 12: every broken or hostile config.json is one CheckpointError line ------------------------------


def _base_config() -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **sibnet.ModelConfig().to_dict()}


def _set(key, value):
    def mutate(meta: dict) -> str:
        meta[key] = value
        return json.dumps(meta)

    return mutate


def _text(replace_from: str, replace_to: str):
    def mutate(meta: dict) -> str:
        text = json.dumps(meta)
        assert replace_from in text
        return text.replace(replace_from, replace_to, 1)

    return mutate


def _nested(depth: int):
    def mutate(meta: dict) -> str:
        meta["extra"] = "HOLE"
        return json.dumps(meta).replace('"HOLE"', "[" * depth + "]" * depth)

    return mutate


# (case id, how the valid config is broken, what the one-line message must say)
BAD_CONFIGS = [
    (
        "format_version string",
        _set("format_version", "2"),
        r"format_version must be an integer .*a string \"2\"",
    ),
    ("format_version bool", _set("format_version", True), r"format_version must be an integer"),
    ("format_version newer", _set("format_version", FORMAT_VERSION + 1), r"upgrade sibnet"),
    ("format_version zero", _set("format_version", 0), r"format_version must be an integer from 1"),
    ("labels a number", _set("labels", 26), r"'labels' must be a list of strings, got a number 26"),
    ("labels mixed", _set("labels", ["Anger", 3]), r"'labels' must be a list of strings, got a list"),
    ("labels empty", _set("labels", []), r"labels must name at least one class"),
    (
        "input_size a string",
        _set("input_size", "224"),
        r"'input_size' must be an integer, got a string \"224\"",
    ),
    (
        "input_size a float",
        _set("input_size", 224.0),
        r"'input_size' must be an integer, got a number 224\.0",
    ),
    ("input_size absurd", _set("input_size", 10**6), r"'input_size' is 1000000, over the limit of 1024"),
    ("resize absurd", _set("resize", 10**5), r"'resize' is 100000, over the limit"),
    ("mean a dict", _set("mean", {"r": 0.5}), r"'mean' must be a list of 3 finite numbers, got an object"),
    ("mean two numbers", _set("mean", [0.5, 0.5]), r"'mean' must be a list of 3 finite numbers"),
    ("std with a string", _set("std", [0.5, 0.5, "x"]), r"'std' must be a list of 3 finite numbers"),
    ("multi_label a string", _set("multi_label", "yes"), r"'multi_label' must be a boolean"),
    (
        "layer4_stride a bool",
        _set("layer4_stride", True),
        r"'layer4_stride' must be an integer, got a boolean",
    ),
    ("scm a number", _set("scm", 3), r"'scm' must be a string or null"),
    ("scm_stages floats", _set("scm_stages", [1.5]), r"'scm_stages' must be a list of integers"),
    ("dropout a string", _set("dropout", "0.1"), r"'dropout' must be a finite number, got a string"),
    ("name null", _set("name", None), r"'name' must be a string, got null"),
    ("extra a list", _set("extra", []), r"'extra' must be an object, got a list"),
    ("training a string", _set("training", "bce"), r"'training' must be an object"),
    ("unknown key", _set("wings", 2), r"unknown model config keys 'wings' \("),
    ("unknown long key", _set("w" * 10_000, 2), r"unknown model config keys 'w{39}…' \("),
    (
        "name very long",
        _set("name", "x" * 10_000),
        r"'name' holds a 10000-character string, over the limit of 200",
    ),
    ("label very long", _set("labels", ["Anger", "y" * 500]), r"'labels' holds a 500-character string"),
    ("NaN", _text("0.5", "NaN"), r"'mean' must be a list of 3 finite numbers, got a list"),
    ("Infinity", _text("0.5", "-Infinity"), r"'mean' must be a list of 3 finite numbers"),
    ("integer of 5000 digits", _text("224", "9" * 5000), r"not valid JSON: .*digits"),
    ("nested 200,000 deep", _nested(200_000), r"nested too deeply"),
    ("nested 100 deep", _nested(100), r"nests 101 levels deep \(at most 16\)"),
    ("a list, not an object", lambda meta: "[]", r"not a SIB-Net checkpoint config"),
    ("not UTF-8", lambda meta: json.dumps(meta).replace("Anger", "\udcff", 1), r"not valid JSON: not UTF-8"),
    ("over 1 MiB", lambda meta: json.dumps(meta) + " " * (1 << 20), r"is over 1 MiB"),
    ("truncated", lambda meta: json.dumps(meta)[:-40], r"not valid JSON"),
]


def _write_bad(folder, mutate) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = mutate(_base_config())
    (folder / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    # Never read: every case must be refused from config.json alone, before any tensor is touched.
    (folder / "model.safetensors").write_bytes(b"weights that must not be read")
    return folder


def test_the_base_config_of_the_bad_cases_is_valid(tmp_path):
    # The cases below fail because of their one change, not because the config they start from is bad.
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_base_config()))
    config, training = read_config(path)
    assert config == sibnet.ModelConfig() and training == {}
    # Training notes are metadata, not the model: a NaN validation metric there does not make it unloadable.
    path.write_text(json.dumps({**_base_config(), "training": {"val_metric": {"value": float("nan")}}}))
    assert read_config(path)[1]["val_metric"]["value"] != read_config(path)[1]["val_metric"]["value"]
    assert len({case[0] for case in BAD_CONFIGS}) == len(BAD_CONFIGS)


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_checkpoint_error(tmp_path, mutate, message):
    folder = _write_bad(tmp_path / "ckpt", mutate)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    assert time.perf_counter() - start < 5
    text = str(info.value)
    assert re.search(message, text), text
    assert "\n" not in text and len(text) < 600
    assert str(folder / "config.json") in text


CLI_CASES = ["format_version string", "labels a number", "mean a dict", "nested 200,000 deep", "over 1 MiB"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_evaluate_prints_one_error_line_for_a_bad_config(tmp_path, capsys, case):
    mutate, message = next(c[1:] for c in BAD_CONFIGS if c[0] == case)
    folder = _write_bad(tmp_path / "ckpt", mutate)
    argv = ["--checkpoint", str(folder), "--dataset", "emotic", "--data-root", str(tmp_path / "data")]
    assert evaluate.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0])
    assert captured.out == ""


@pytest.mark.parametrize("case", CLI_CASES)
def test_demo_predict_prints_one_error_line_for_a_bad_config(tmp_path, capsys, case):
    from demo import predict
    from tests import _images

    mutate, message = next(c[1:] for c in BAD_CONFIGS if c[0] == case)
    weights = tmp_path / "weights"
    for key in ("sibnet", "concat", "attention"):
        _write_bad(weights / key, mutate)
    argv = [str(_images.photo_path("grace_hopper")), "--weights", str(weights), "--no-person-detector"]
    assert predict.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0])


@pytest.mark.parametrize("module", ["sibnet.evaluate", "demo.predict"])
def test_the_real_command_lines_print_no_traceback(tmp_path, module):
    # As a user runs them: a fresh interpreter, the 200,000-level config that used to end in RecursionError.
    mutate = next(c[1] for c in BAD_CONFIGS if c[0] == "nested 200,000 deep")
    weights = tmp_path / "weights"
    for key in ("sibnet", "concat", "attention"):
        _write_bad(weights / key, mutate)
    if module == "sibnet.evaluate":
        args = ["--checkpoint", str(weights / "sibnet"), "--dataset", "emotic", "--data-root", str(tmp_path)]
    else:
        from tests import _images

        args = [str(_images.photo_path("grace_hopper")), "--weights", str(weights), "--no-person-detector"]
    run = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "nested too deeply" in errors[0], run.stderr


def test_a_config_asking_for_a_giant_network_is_refused_before_allocating(tmp_path):
    # Right types, absurd size: "fused_hidden": 10**9 would allocate ~6 TB of weights. The shapes are checked
    # against the weights file's header on the meta device first, so this is a prompt mismatch error.
    _model("face").save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["fused_hidden"] = 10**9
    (tmp_path / "config.json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"wrong shape .*\(512, 512\) in the file, \(1000000000, 512\)"):
        load_model(tmp_path)
    assert time.perf_counter() - start < 5
