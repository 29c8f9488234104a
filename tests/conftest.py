"""Test-wide settings: offline, deterministic, CPU.

Every test runs with the network off for the libraries that would reach it (Hugging Face Hub, ultralytics,
gradio analytics, the ImageNet weight probe); a test that exercises one of those paths sets it up itself.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SIBNET_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
# OpenMP threads that spin while waiting make small CPU ops ~100x slower whenever another process competes
# for the two cores (measured: a 0.2 ms convolution took 30 ms); passive waiting costs nothing when alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TORCH_HOME", os.path.join(tempfile.gettempdir(), "sibnet-tests-torch-home"))
# Under pytest-xdist (``make test`` runs ``-n 2``) the workers share the cores: each gets its share of threads,
# set before torch starts its pools. Measured on 2 cores: the CAER planted-cue training takes 89 s on 2
# threads and 133 s on 1, so two 1-thread workers finish two such tests in 133 s where one worker takes 178 s,
# and the many small tests, bound by Python overhead, run twice as fast.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import pytest  # noqa: E402 - after the thread settings above, which torch reads at import
import torch  # noqa: E402

if _WORKERS > 1:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The longest tests, longest first (seconds on 2 cores, one worker), so xdist's round-robin start hands them
# to alternate workers instead of leaving one worker with several of them at the end of the run.
LONGEST_FIRST = (
    "tests/test_planted_cue.py::test_sibnet_learns_planted_cues_emotic_format",  # 160 s
    "tests/test_cam_faithfulness.py::",  # 158 s
    "tests/test_planted_cue.py::test_sibnet_learns_planted_cues_caer_format",  # 122 s
    "tests/test_ddp.py::",  # 2 × 20 s
    "tests/test_notebook.py::",  # 19 s
    "tests/test_browser.py::",  # 3 × 10 s
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _rank(item: pytest.Item) -> int:
    return next(
        (i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST)
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the rest keep their order, the same on every worker
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
