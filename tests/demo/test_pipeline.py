"""The analysis pipeline end to end on real photos (offline, untrained weights), its weights and bad input."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import sibnet
from demo.cli import analyzer_from_args, analyzer_settings
from demo.pipeline import NO_PERSON, UNTRAINED, Analyzer
from sibnet.boxes import iou, scale_box
from sibnet.checkpoints import CheckpointError
from sibnet.distributed import resolve_device
from sibnet.errors import WorkLimitExceeded
from sibnet.io import ImageError
from tests import _images


@pytest.mark.parametrize("name", _images.PHOTOS)
def test_real_photos_end_to_end(analyzer, name):
    result = analyzer.analyze(_images.photo_path(name))
    expected = _images.EXPECTED_FACES[name]
    assert len(result.people) == expected
    assert [p.id for p in result.people] == list(range(expected))
    centres = [(p.body_box[0] + p.body_box[2]) / 2 for p in result.people]
    assert centres == sorted(centres)  # left to right
    assert all(p.face_source == "mtcnn" and p.body_source == "estimated" for p in result.people)
    assert any(UNTRAINED in n for n in result.notices)
    assert any("bodies are estimated" in n or "estimated from faces" in n for n in result.notices)
    assert not result.trained
    assert set(result.predictions) == {"concat", "attention", "sibnet"}
    for key, pred in result.predictions.items():
        assert pred.scores.shape == (expected, 26)
        assert ((pred.scores > 0) & (pred.scores < 1)).all()
        assert len(result.maps[key]) == expected
        for pid, pmaps in result.maps[key].items():
            assert set(pmaps.maps) == {"face", "body", "scene"}
            assert all(m.shape == (224, 224) and m.min() >= 0 and m.max() <= 1 for m in pmaps.maps.values())
            assert pmaps.target == result.targets[pid]
    for pid in range(expected):  # default target: SIB-Net's top emotion, per person
        assert result.targets[pid] == int(np.argmax(result.predictions["sibnet"].scores[pid]))
    assert all(
        k in result.timings
        for k in ("intake", "detect faces", "masking", "forward sibnet", "cam sibnet", "total")
    )
    summary = json.loads(json.dumps(result.to_json()))
    assert len(summary["people"]) == expected
    assert set(summary["people"][0]["models"]) == {"concat", "attention", "sibnet"}
    assert summary["trained"] is False and summary["device"] == "cpu"


def test_all_people_go_through_each_model_as_one_batch(analyzer, monkeypatch):
    calls: dict[str, list[int]] = {}
    for key, entry in analyzer.models.items():
        original = entry.fast.features  # the prepared backbone (sibnet.inference) the analyzer runs

        def counting(*inputs, _key=key, _orig=original):
            calls.setdefault(_key, []).append(inputs[0].shape[0])
            return _orig(*inputs)

        monkeypatch.setattr(entry.fast, "features", counting)
    result = analyzer.analyze(_images.photo_path("zidane"))
    assert calls == {key: [len(result.people)] for key in ("concat", "attention", "sibnet")}
    # explain() reuses the backbone pass: no further forward_features call.
    again = analyzer.explain(result, target="Anger", method="layercam")
    assert calls == {key: [len(result.people)] for key in ("concat", "attention", "sibnet")}
    anger = analyzer.labels.index("Anger")
    assert set(again.targets.values()) == {anger} and again.method == "layercam"
    assert not np.allclose(again.maps["sibnet"][0].maps["face"], result.maps["sibnet"][0].maps["face"])
    assert again.predictions is result.predictions


def test_attributions_add_up_follow_the_target_and_are_computed_once(analyzer, monkeypatch):
    """Issue 15 in the pipeline: every model, every person; efficient; re-targeting costs no model call."""
    result = analyzer.analyze(_images.photo_path("zidane"))
    assert (
        result.attributions == {} and "attribution" not in result.to_json()["people"][0]["models"]["sibnet"]
    )
    attributed = analyzer.attribute(result)
    assert set(attributed.attributions) == {"concat", "attention", "sibnet"}
    for key, pred in attributed.predictions.items():
        for p in attributed.people:
            a = attributed.attribution(key, p.id)
            target = attributed.targets[p.id]
            assert a["target"] == attributed.labels[target]
            assert sum(a["values"].values()) == pytest.approx(a["score_all"] - a["score_none"], abs=1e-4)
            # "all branches shown" is the prediction the app shows; "none" is the same for every person
            assert a["score_all"] == pytest.approx(float(pred.scores[p.id, target]), abs=1e-4)
            assert (
                a["coalitions"]["face+body+scene"] == a["score_all"]
                and a["coalitions"]["none"] == a["score_none"]
            )
        nothing = attributed.attributions[key].probabilities[:, 0]  # (people, classes) with every input blank
        np.testing.assert_allclose(nothing, np.broadcast_to(nothing[:1], nothing.shape), atol=1e-5)
    # another target: the attributions are re-read for it, no backbone and no attribution pass again
    calls = []
    for entry in analyzer.models.values():
        monkeypatch.setattr(entry.fast, "features", lambda *a, _c=calls: _c.append(1))
    monkeypatch.setattr("demo.pipeline.branch_attributions", lambda *a, **k: calls.append(2))
    anger = analyzer.labels.index("Anger")
    again = analyzer.explain(attributed, target="Anger")
    assert calls == [] and again.attribution("sibnet", 0)["target"] == "Anger"
    assert again.attributions["sibnet"].probabilities[0, -1, anger] == pytest.approx(
        float(again.predictions["sibnet"].scores[0, anger]), abs=1e-4
    )
    assert analyzer.attribute(again).attributions == again.attributions and calls == []
    data = json.loads(json.dumps(again.to_json(), allow_nan=False))
    assert data["people"][1]["models"]["attention"]["attribution"]["target"] == "Anger"


def test_explain_one_person_and_bad_requests(analyzer):
    result = analyzer.analyze(_images.photo_path("zidane"), person=1, target="Happiness")
    assert set(result.maps["sibnet"]) == {1}
    assert result.target_name(1) == "Happiness"
    with pytest.raises(ValueError, match=r"person 2 out of range: this photo has 2 people \(0-1\)"):
        analyzer.explain(result, person=2)
    with pytest.raises(ValueError, match="valid labels: Affection"):
        analyzer.explain(result, target="Joy")
    with pytest.raises(ValueError, match="valid methods"):
        analyzer.explain(result, method="magic")
    with pytest.raises(ValueError, match="out of range"):
        analyzer.analyze(_images.photo_path("grace_hopper"), person=3)


def test_large_photo_is_bounded_and_reported_in_original_pixels(analyzer):
    small = _images.photo_rgb("grace_hopper")
    big = np.asarray(
        Image.fromarray(small).resize((small.shape[1] * 3, small.shape[0] * 3), Image.Resampling.BICUBIC)
    )
    ref = analyzer.analyze(small)
    result = analyzer.analyze(big)
    assert result.original_size == (big.shape[1], big.shape[0])
    assert max(result.image.shape[:2]) == 1280 and result.scale == pytest.approx(big.shape[0] / 1280)
    assert any("analysed at" in n for n in result.notices)
    # the same face, found at the bounded size, reported in the big photo's pixels
    face = result.to_json()["people"][0]["face_box"]
    assert iou(face, scale_box(ref.people[0].face_box, 3)) > 0.85
    assert face == pytest.approx(scale_box(result.people[0].face_box, result.scale), abs=0.1)
    projected = result.maps["sibnet"][0].projected()
    h, w = big.shape[:2]  # the scene tensor is the 224 centre crop of the photo resized to 230
    assert scale_box(projected["scene"].box, result.scale) == pytest.approx(
        (3 / 230 * w, 3 / 230 * h, 227 / 230 * w, 227 / 230 * h), abs=1
    )
    # model_inputs gives the very batches the models ran on, and rebuilding them from the analysis (boxes in
    # the analysed image's pixels) gives the same tensors
    inputs = analyzer.model_inputs(result)
    kept = analyzer.features(result)
    rebuilt = analyzer._batches(analyzer._triples(result.image, result.people, {}))
    for key, entry in analyzer.models.items():
        for got, built in zip(inputs[key], rebuilt[entry.model.config.transform]):
            torch.testing.assert_close(got, built)
        for got, cached in zip(entry.fast.features(*inputs[key]), kept[key]):
            torch.testing.assert_close(got, cached)


def test_no_face_and_no_person_is_said_plainly(analyzer):
    rng = np.random.default_rng(0)
    noise = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    result = analyzer.analyze(noise)
    assert result.people == ()
    assert NO_PERSON in result.notices
    assert result.to_json()["people"] == []
    with pytest.raises(ValueError, match="no person"):
        analyzer.analyze(noise, person=0)


def _bad_inputs() -> dict[str, tuple[bytes, str]]:
    cmyk = Image.fromarray(_images.photo_rgb("grace_hopper")).convert("CMYK")
    return {
        "corrupt": (_images.corrupt_bytes(), "cannot read"),
        "truncated": (_images.truncated_jpeg(), "truncated"),
        "zero-byte": (b"", "empty"),
        "text": (b"hello, this is not a photo\n", "text"),
        "pdf": (_images.minimal_pdf(), "PDF"),
        "svg": (_images.svg_image(), "SVG"),
        "1x1": (_images.encode(Image.new("RGB", (1, 1)), "PNG"), "at least 32 pixels"),
        "huge header": (_images.png_header(100_000, 100_000), "too large"),
    } | {"cmyk": (_images.encode(cmyk, "JPEG"), "")}


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_inputs_get_clear_messages(analyzer, case):
    data, message = _bad_inputs()[case]
    if not message:  # accepted: converted, analysed
        result = analyzer.analyze(data)
        assert len(result.people) == 1
        return
    with pytest.raises(ImageError) as err:
        analyzer.analyze(data)
    assert message.lower() in str(err.value).lower(), str(err.value)
    # ... and the analyzer still works afterwards
    assert len(analyzer.analyze(_images.photo_path("grace_hopper")).people) == 1


def test_animated_gif_and_16_bit_png(analyzer):
    frames = [Image.fromarray(_images.photo_rgb("grace_hopper")), Image.new("RGB", (600, 512), (30, 30, 30))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = analyzer.analyze(buf.getvalue())
    assert any("first frame" in n for n in result.notices)
    assert len(result.people) == 1
    gray16 = (_images.photo_rgb("astronaut").mean(axis=2) * 257).astype(np.uint16)
    png = io.BytesIO()
    Image.fromarray(gray16).save(png, format="PNG")
    assert Image.open(io.BytesIO(png.getvalue())).mode.startswith("I")
    assert len(analyzer.analyze(png.getvalue()).people) == 1


# --- weights ---


def _save_three(root, labels, size=64, **kw):
    for key in ("sibnet", "concat", "attention"):
        sibnet.create_model(key, labels=labels, input_size=size, resize=size + 4, **kw).save_pretrained(
            root / key
        )


def test_trained_weights_folder_sets_labels_and_clears_the_notice(tmp_path, analyzer):
    _save_three(tmp_path, sibnet.CAER_CLASSES, multi_label=False)
    trained = Analyzer(tmp_path, face_detector=analyzer.face_detector, person_detector=False)
    assert trained.trained and trained.labels == sibnet.CAER_CLASSES
    result = trained.analyze(_images.photo_path("grace_hopper"))
    assert not any(UNTRAINED in n for n in result.notices)
    assert result.trained and result.to_json()["trained"] is True
    probs = result.predictions["sibnet"].scores
    assert probs.shape == (1, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # softmax for single-label checkpoints
    assert result.maps["concat"][0].maps["face"].shape == (64, 64)
    assert result.predictions["sibnet"].source == str(tmp_path / "sibnet")


def test_env_var_weights_and_missing_subfolder(tmp_path, monkeypatch, analyzer):
    _save_three(tmp_path, sibnet.EMOTIC_CATEGORIES)
    (tmp_path / "attention" / "model.safetensors").unlink()
    (tmp_path / "attention" / "config.json").unlink()
    (tmp_path / "attention").rmdir()
    monkeypatch.setenv("SIBNET_WEIGHTS", str(tmp_path))
    partial = analyzer_from_args(
        None,
        face_detector=analyzer.face_detector,
        person_detector=False,
        untrained_overrides={"input_size": 64, "resize": 68},
    )
    assert partial.models["sibnet"].trained and partial.models["concat"].trained
    assert not partial.models["attention"].trained
    assert any("has no attention/ checkpoint" in n for n in partial.load_notices)
    assert any(UNTRAINED in n and "Attention" in n for n in partial.load_notices)


def test_checkpoints_with_different_label_sets_are_refused(tmp_path, analyzer):
    _save_three(tmp_path, sibnet.EMOTIC_CATEGORIES)
    sibnet.create_model("attention", num_classes=7, input_size=64, resize=68).save_pretrained(
        tmp_path / "caer_att"
    )
    with pytest.raises(CheckpointError, match="share one label set"):
        Analyzer(
            tmp_path,
            attention=tmp_path / "caer_att",
            face_detector=analyzer.face_detector,
            person_detector=False,
        )


def test_bad_weights_are_an_error_not_untrained(tmp_path, analyzer):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        Analyzer(sibnet=tmp_path / "missing", face_detector=analyzer.face_detector, person_detector=False)


def test_device_choice(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("SIBNET_DEVICE", "cpu")
    assert analyzer_settings(None)["device"] == "cpu"  # the variable, read by the command-line layer
    args = argparse.Namespace(device="cuda:1")
    assert analyzer_settings(args)["device"] == "cuda:1"  # a flag wins over its variable
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


class _Given:
    """A detector that 'finds' the boxes it was given (the dataset's own), whatever the image."""

    def __init__(self, detections):
        self.detections = detections

    def detect(self, rgb):
        return list(self.detections)


def test_a_non_default_input_recipe_is_the_same_in_the_dataset_and_the_pipeline(tmp_path, caer_root):
    from sibnet.data.caer import CaerDataset
    from sibnet.data.masking import InputTransform, batch_triples
    from sibnet.detect import FaceDetection, PersonDetection

    recipe = dict(input_size=48, resize=56, mean=(0.40, 0.45, 0.50), std=(0.20, 0.25, 0.30))
    for key in ("sibnet", "concat", "attention"):
        model = sibnet.create_model(key, labels=sibnet.CAER_CLASSES, multi_label=False, **recipe)
        model.save_pretrained(tmp_path / key)
    loaded = sibnet.load_model(tmp_path / "sibnet")
    transform = loaded.config.transform  # declared by the checkpoint's config.json
    assert transform == InputTransform(48, 56, (0.40, 0.45, 0.50), (0.20, 0.25, 0.30)) != InputTransform()
    dataset = CaerDataset(caer_root, "test", transform=transform)
    record = dataset.records[0]
    triple = dataset.triple(0)
    analyzer = Analyzer(
        tmp_path,
        face_detector=_Given([FaceDetection(record.face_box, 0.99, np.zeros((5, 2), np.float32))]),
        person_detector=_Given([PersonDetection(record.body_box, 0.9)]),
    )
    analysis = analyzer.analyze(record.path)
    assert len(analysis.people) == 1 and analysis.scale == 1.0
    served = analyzer.model_inputs(analysis)
    for key in ("sibnet", "concat", "attention"):
        for got, want in zip(served[key], batch_triples([triple])):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    # ... and the default recipe would have served other pixels.
    default = InputTransform(48, 56)(analysis.image, record.face_box, record.body_box)
    assert not torch.allclose(default.face, triple.face)


def test_weights_that_resolve_to_no_checkpoint_are_an_error(tmp_path, analyzer):
    sibnet.create_model("sibnet", input_size=64, resize=68).save_pretrained(tmp_path / "one")
    (tmp_path / "empty").mkdir()
    kw = {"face_detector": analyzer.face_detector, "person_detector": False}
    with pytest.raises(CheckpointError, match=r"single checkpoint.*--sibnet-weights"):
        Analyzer(tmp_path / "one", **kw)
    with pytest.raises(CheckpointError, match="holds none of the checkpoint folders"):
        Analyzer(tmp_path / "empty", **kw)


def test_non_finite_scores_are_refused(tmp_path, analyzer):
    for key in ("sibnet", "concat", "attention"):
        model = sibnet.create_model(key, input_size=64, resize=68)
        if key == "concat":
            with torch.no_grad():
                next(iter(model.head.parameters())).fill_(float("nan"))
        model.save_pretrained(tmp_path / key)
    broken = Analyzer(tmp_path, face_detector=analyzer.face_detector, person_detector=False)
    with pytest.raises(CheckpointError, match="Concatenation model produced invalid scores"):
        broken.analyze(_images.photo_path("grace_hopper"))


def test_a_crowd_is_bounded_to_the_largest_faces(analyzer):
    from demo.pipeline import MAX_PEOPLE

    result = analyzer.analyze(_images.crowd(10))
    assert len(result.people) == MAX_PEOPLE
    assert [p.id for p in result.people] == list(range(MAX_PEOPLE))
    centres = [(p.face_box[0] + p.face_box[2]) / 2 for p in result.people]
    assert any("4 more people were found but not analysed" in n for n in result.notices)
    assert len(result.maps["sibnet"]) == MAX_PEOPLE and len(centres) == MAX_PEOPLE


def test_the_time_budget_stops_a_slow_analysis(analyzer):
    import time as _time

    class Slow:
        def detect(self, rgb):
            _time.sleep(0.3)
            return analyzer.face_detector.detect(rgb)

    slow = Analyzer(
        face_detector=Slow(), person_detector=False, untrained_overrides={"input_size": 64, "resize": 68}
    )
    with pytest.raises(WorkLimitExceeded, match="takes too long to analyse"):
        slow.analyze(_images.photo_path("grace_hopper"), budget_s=0.1)
    assert len(slow.analyze(_images.photo_path("grace_hopper"), budget_s=60).people) == 1
