"""Project-level promises: set-up commands, Space configuration, dependency ranges, library boundaries."""

from __future__ import annotations

import re
from pathlib import Path

import sibnet
from sibnet.losses import LossConfig

ROOT = Path(__file__).resolve().parent.parent


def _front_matter() -> tuple[dict[str, str], str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    meta = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
    return meta, body


def test_readme_starts_with_the_two_setup_commands():
    _, body = _front_matter()
    first_block = body.strip().split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]


def test_space_front_matter():
    meta, _ = _front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    for key in ("sdk_version", "python_version", "suggested_hardware"):
        assert meta.get(key), key
    requirements = (ROOT / "requirements.txt").read_text()
    low = re.search(r"^gradio>=([\d.]+)", requirements, re.M).group(1)
    assert tuple(map(int, meta["sdk_version"].split("."))) >= tuple(map(int, low.split(".")))


def test_requirements_are_ranges_a_space_can_satisfy():
    reqs = {
        re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower(): line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for name in (
        "torch",
        "torchvision",
        "gradio",
        "grad-cam",
        "facenet-pytorch",
        "ultralytics",
        "matplotlib",
        "safetensors",
    ):
        assert name in reqs, name
    assert reqs["torch"].startswith("torch>=") and "==" not in reqs["torch"]
    assert reqs["facenet-pytorch"] == "facenet-pytorch==2.5.3"  # 2.6.0 pins torch<2.3 (DESIGN.md §4)
    assert re.match(r"gradio>=6\.(2\d|[3-9]\d)", reqs["gradio"])  # >= 6.20: earlier 6.x have advisories
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()


def test_makefile_and_ci():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo:", "test:", "bench:", "lint:"):
        assert target in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_library_never_imports_the_app_or_gradio():
    pattern = re.compile(r"^\s*(import gradio|from gradio|from demo|import demo)", re.M)
    offenders = [str(p) for p in (ROOT / "sibnet").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_paper_hyper_parameters_in_the_package():
    cfg = sibnet.create_model("sibnet").config
    assert (cfg.scm, cfg.icm, cfg.branch_heads) == ("gru", "gclf", True)
    assert cfg.scm_stages == (1, 2, 3, 4) and cfg.icm_stages == (2, 4)  # §3.1
    assert cfg.icm_expansion == 2  # dC = 2C (DESIGN.md §1)
    assert (cfg.input_size, cfg.resize, cfg.mean, cfg.std) == (224, 230, (0.5,) * 3, (0.5,) * 3)  # §4.2
    assert len(cfg.labels) == 26 and cfg.multi_label
    row = sibnet.TABLE2["baseline+S (GRU)+I (gclf)+B (LDL*+L1)"]
    assert (
        row.model == "sibnet"
        and row.loss == LossConfig(bcm="ldl*", bcm_loss="l1")
        and row.emotic_map == 35.41
    )
    assert sibnet.resolve_variant("baseline+B(LDL)").loss.bcm == "ldl"
    assert sibnet.resolve_variant("concat_bcm").loss == LossConfig(bcm="ldl*", bcm_loss="l1")
