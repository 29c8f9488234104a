"""A stand-in for ultralytics' YOLO, shared by the detection tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


class StubYOLO:
    """Stands in for ``ultralytics.YOLO``: returns fixed boxes and records how it was called."""

    task = "detect"

    def __init__(self, xyxy, conf, cls, names=None):
        self.names = names if names is not None else {0: "person", 1: "bicycle", 2: "car"}
        self._boxes = SimpleNamespace(
            xyxy=np.asarray(xyxy, np.float32), conf=np.asarray(conf, np.float32), cls=np.asarray(cls)
        )
        self.calls: list = []

    def predict(self, source, **kwargs):
        self.calls.append((source, kwargs))
        return [SimpleNamespace(boxes=self._boxes)]
