"""The CAM-inspection notebook runs headlessly, offline, on CPU, in this environment's Python.

The notebook is executed with nbclient in a ``python3`` kernel whose spec (in a temporary ``JUPYTER_PATH``, so
no user or system kernel spec can shadow it) starts ``sys.executable``; a cell prepended to the in-memory copy
checks that the kernel really runs this interpreter. The network stays off: the Hub, torch and ultralytics
offline switches are set, the YOLO weights point at a file that does not exist (so ultralytics never tries to
download them), no ``SIBNET_WEIGHTS*`` variable leaks in (the notebook must show its untrained notice), and
HTTP(S) proxies point at a closed local port so that any stray request fails at once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

from demo.cli import MODEL_WEIGHTS_ENV, WEIGHTS_ENV
from demo.results import UNTRAINED

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "cam_inspection.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CELL_TIMEOUT_S = 300  # generous: the whole notebook takes well under a minute on an idle 2-core CPU
MIN_PNGS = 6  # 9 on these photos: people, 2 branch strips, 4 Figure-5 grids, the method grid, the chart
KERNEL_CHECK = "__sibnet_kernel_check__"


def _read() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def test_committed_notebook_is_valid_and_stripped():
    nb = _read()
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has committed outputs; strip them"
        assert cell.execution_count is None, f"code cell {i} has an execution count; strip it"
        assert "execution" not in cell.metadata, f"code cell {i} has execution timings; strip them"
    # Imports stay within the project and its plotting/array stack.
    allowed = {"sibnet", "demo", "numpy", "matplotlib", "pathlib", "os", "sys", "importlib", "warnings"}
    for cell in code:
        for line in cell.source.splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] in allowed, f"unexpected import: {line.strip()}"


def _kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A python3 kernel spec running this interpreter, and an offline, CPU, untrained environment for it."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "SIBNET_OFFLINE": "1",
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "False",
        "MPLBACKEND": "Agg",
        "SIBNET_DEVICE": "cpu",
        "SIBNET_YOLO_WEIGHTS": str(tmp_path / "no-yolo" / "yolo11n.pt"),  # a path, not a name: no download
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "CUDA_VISIBLE_DEVICES": "",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("NO_PROXY", "no_proxy", WEIGHTS_ENV, *MODEL_WEIGHTS_ENV.values()):
        monkeypatch.delenv(name, raising=False)


def _text(outputs: list) -> str:
    parts = []
    for out in outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_notebook_executes_offline_on_cpu(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    _kernel_env(tmp_path, monkeypatch)
    nb = _read()
    check = nbformat.v4.new_code_cell(
        f"import sys\nprint({KERNEL_CHECK!r}, sys.executable, sys.prefix, sep='\\n')",
        id="kernel-check",
    )
    nb.cells.insert(0, check)

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        allow_errors=False,
        resources={"metadata": {"path": str(ROOT)}},  # cwd = repo root; the notebook finds it either way
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    ARTIFACTS.mkdir(exist_ok=True)
    nbformat.write(nb, ARTIFACTS / "cam_inspection.executed.ipynb")  # for a look at what it drew

    kernel = _text(nb.cells[0].outputs).split("\n")
    assert kernel[0] == KERNEL_CHECK
    assert kernel[1:3] == [sys.executable, sys.prefix], f"the kernel ran {kernel[1:3]}, not this interpreter"

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert all(c.execution_count is not None for c in code)
    printed = "".join(_text(c.outputs) for c in code)
    assert UNTRAINED in printed, "the untrained notice was not printed"
    assert "UNTRAINED WEIGHTS" in printed
    pngs = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= MIN_PNGS, f"{len(pngs)} PNG outputs, expected at least {MIN_PNGS}"
    print(f"notebook executed in {elapsed:.1f} s, {len(pngs)} PNG outputs")
