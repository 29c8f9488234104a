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

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
