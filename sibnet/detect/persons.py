"""Person (body) detection with an Ultralytics YOLO model, COCO class 0 only.

SIB-Net's body branch needs a person box for each face (paper §3.1, Eq. 3); CAER-S ships none, so the
paper's pipeline takes them from a YOLO detector (§4.2). This wraps Ultralytics' ``YOLO`` and returns
float boxes clipped to the image. Ultralytics is imported in the constructor, never at import of this
module, and is configured first (:func:`configure_ultralytics_env`):

- ``YOLO_CONFIG_DIR`` (set only if the user has not set it) points at a project-local folder,
  ``<repo>/.cache/ultralytics`` (the repo being the folder above the ``sibnet`` package, recognised by its
  ``pyproject.toml``), or a private temp folder when that is not writable or the package is installed.
  Ultralytics writes its ``settings.json`` there instead of ``~/.config/Ultralytics``.
- ``YOLO_OFFLINE=1`` (again only if unset). In ultralytics 8.4 this makes ``ultralytics.utils.is_online()``
  return False without its DNS probe, which switches off everything gated on ``ONLINE``: the usage
  analytics (``utils/events.py``), Sentry crash reports, the PyPI update check and the automatic
  ``pip install`` of missing requirements (``checks.check_requirements``). It does *not* block weight
  downloads: ``safe_download`` still fetches named weights from GitHub when the network is there. After a
  failed first attempt it asks ``is_online()`` whether to retry; the answer is now no, so a download that
  cannot succeed (no network, GitHub blocked) fails at once instead of retrying for up to 35 s. The cost
  online is that a transient download error is not retried.
- ``YOLO_AUTOINSTALL=False`` (only if unset): ultralytics never runs ``pip install`` inside this process.
  This matters beyond YOLO itself: importing ultralytics replaces ``PIL.Image.open`` process-wide
  (``ultralytics/utils/patches.py``) with a wrapper that, for any file Pillow cannot identify, calls
  ``check_requirements("pi-heif")``, i.e. would pip-install a package because a user uploaded a text file.
  ``YOLO_OFFLINE`` already blocks that install; this keeps it blocked when a user turns ``YOLO_OFFLINE`` off.

Where weights come from: ultralytics downloads an official name such as ``"yolo11n.pt"`` to that
*relative* path, i.e. into the current working directory. To keep downloads out of wherever the user
happens to run from, a bare official name is resolved here to ``<cache>/weights/<name>`` (an existing file
of that name in the working directory is still used first, as ultralytics would) and that absolute path is
passed to ``YOLO``, which downloads to exactly there.

Weights that cannot be obtained raise :class:`DetectorUnavailable`, whose message says how to proceed;
callers then run without a person detector and estimate bodies from faces (``sibnet.detect.pairing``).
"""

from __future__ import annotations

import getpass
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sibnet.boxes import Box, clip_box, is_empty
from sibnet.errors import DetectorUnavailable
from sibnet.io import require_rgb

DEFAULT_WEIGHTS = "yolo11n.pt"  # the smallest YOLO11 detector: 2.6 M parameters, COCO box mAP 39.5
WEIGHTS_ENV = "SIBNET_YOLO_WEIGHTS"  # overrides DEFAULT_WEIGHTS when no weights are passed
# Minimum box confidence. Ultralytics' default of 0.25 favours recall (it is tuned for mAP); here every
# box becomes a person that the three models analyse, shown with an estimated face when MTCNN finds none
# in it, so a spurious box costs more than a missed one (a missed body is estimated from its face).
PERSON_MIN_CONF = 0.5
# NMS IoU: Ultralytics' default. People standing close overlap heavily; a lower value merges them.
PERSON_NMS_IOU = 0.7
PERSON_IMGSZ = 640  # the input size the YOLO11 COCO weights were trained at
COCO_PERSON = 0
WEIGHTS_URL = "https://github.com/ultralytics/assets/releases"


@dataclass(frozen=True)
class PersonDetection:
    """One person box found by YOLO.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the analysed image, clipped to it.
        score: the box's confidence.
    """

    box: Box
    score: float


def cache_dir() -> Path:
    """The folder for Ultralytics' settings and downloaded weights (created if missing).

    ``<repo>/.cache/ultralytics`` in a source checkout (git-ignored), else a private folder in the temp dir.
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        local = root / ".cache" / "ultralytics"
        try:
            local.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        else:
            if os.access(local, os.W_OK):
                return local
    user = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    fallback = Path(tempfile.gettempdir()) / f"sibnet-ultralytics-{user}"
    fallback.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid") and fallback.stat().st_uid != os.getuid():
        # Someone else's folder under the shared temp dir: never load weights or settings from it.
        return Path(tempfile.mkdtemp(prefix="sibnet-ultralytics-"))
    return fallback


def configure_ultralytics_env() -> None:
    """Set ``YOLO_CONFIG_DIR``, ``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL`` (unless set) before importing ultralytics.

    Ultralytics reads both once, when ``ultralytics.utils`` is first imported; any module that imports
    ultralytics should call this first. Calling it afterwards changes nothing.
    """
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = str(cache_dir())
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")


class PersonDetector:
    """YOLO person detector; one instance serves many threads (calls are serialised by a lock).

    Args:
        weights: a path to a YOLO checkpoint, an official Ultralytics name (``"yolo11n.pt"``, downloaded
            on first use to ``cache_dir() / "weights"``), or an already-built ultralytics model (anything
            with ``predict`` and ``names``). None: ``$SIBNET_YOLO_WEIGHTS``, else ``DEFAULT_WEIGHTS``.
        device: torch device for inference.
        conf: minimum box confidence (see ``PERSON_MIN_CONF``).
        iou: NMS IoU threshold.
        imgsz: the inference size YOLO letterboxes the image to.

    Raises:
        DetectorUnavailable: ultralytics is missing, or the weights cannot be found, downloaded or read,
            or they are not a box detector. The message says how to proceed.
    """

    def __init__(
        self,
        weights: str | os.PathLike | Any | None = None,
        device: str = "cpu",
        conf: float = PERSON_MIN_CONF,
        iou: float = PERSON_NMS_IOU,
        imgsz: int = PERSON_IMGSZ,
    ):
        self.device = device
        self.conf = float(conf)
        self.iou = float(iou)
        self.imgsz = int(imgsz)
        if weights is None:
            weights = os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS
        if isinstance(weights, (str, os.PathLike)):
            self.weights = os.fspath(weights)
            self._model = _load_yolo(self.weights)
        else:
            if not hasattr(weights, "predict"):
                raise TypeError(
                    f"weights must be a path, a name or an ultralytics model, got {type(weights).__name__}"
                )
            self.weights = None
            self._model = weights
        task = getattr(self._model, "task", "detect")
        if task not in ("detect", "segment", "pose"):
            raise DetectorUnavailable(
                f"the YOLO model {self.weights or ''} is a {task!r} model, not a box detector; "
                f"use a detection model such as {DEFAULT_WEIGHTS}"
            )
        names = dict(getattr(self._model, "names", {}) or {})
        # COCO models name class 0 "person"; a model without names (built from a .yaml) uses COCO order.
        self.person_class = next((int(k) for k, v in names.items() if str(v) == "person"), COCO_PERSON)
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[PersonDetection]:
        """Find the people in an image.

        Args:
            rgb: ``H x W x 3`` uint8 RGB image.

        Returns:
            Person boxes with confidence at least ``conf`` and a non-empty box, most confident first.

        Raises:
            ValueError: ``rgb`` is not an ``H x W x 3`` uint8 array.
        """
        require_rgb(rgb)
        height, width = rgb.shape[:2]
        # Ultralytics takes numpy images as OpenCV does, in BGR order.
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with self._lock:
            results = self._model.predict(
                bgr,
                conf=self.conf,
                iou=self.iou,
                classes=[self.person_class],
                imgsz=self.imgsz,
                device=self.device,
                verbose=False,
            )
        boxes = results[0].boxes
        xyxy = _numpy(boxes.xyxy).astype(np.float64).reshape(-1, 4)
        scores = _numpy(boxes.conf).astype(np.float64).reshape(-1)
        classes = _numpy(boxes.cls).reshape(-1)
        people = []
        for box, score, cls in zip(xyxy, scores, classes):
            if int(cls) != self.person_class or score < self.conf:
                continue  # `classes=` already filters; this keeps any model object honest
            clipped = clip_box(box, width, height)
            if not is_empty(clipped):
                people.append(PersonDetection(box=clipped, score=float(score)))
        people.sort(key=lambda p: -p.score)
        return people


def _numpy(values: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _how_to_proceed(name: str) -> str:
    target = cache_dir() / "weights" / Path(name).name
    return (
        f"To use the person detector, download {Path(name).name} from {WEIGHTS_URL} on a machine with "
        f"network access and either put it at {target}, pass its path (PersonDetector(weights=...)), or set "
        f"{WEIGHTS_ENV}=/path/to/{Path(name).name}. Without it, body boxes are estimated from the faces."
    )


def _downloads_disabled() -> str:
    """The environment variable that forbids network access (SIBNET_OFFLINE, HF_HUB_OFFLINE), or "".

    ``YOLO_OFFLINE`` is not one of them: it only silences ultralytics' own online checks (see above).
    """
    for var in ("SIBNET_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}=1"
    return ""


def _load_yolo(weights: str) -> Any:
    """Build ``ultralytics.YOLO`` from a path or an official name, downloading official names to the cache."""
    if Path(weights).suffix.lower() in (".yaml", ".yml"):
        raise DetectorUnavailable(
            f"{weights} is a model architecture, which builds an untrained network that finds nothing; "
            f"pass trained weights instead (e.g. {DEFAULT_WEIGHTS})"
        )
    configure_ultralytics_env()
    try:
        from ultralytics import YOLO
        from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES
    except ImportError as err:
        raise DetectorUnavailable(
            f"the person detector needs the ultralytics package ({err}); install it with "
            "`pip install ultralytics`. Without it, body boxes are estimated from the faces."
        ) from err

    path = Path(weights).expanduser()
    if path.is_file():
        source = str(path)
    elif path.name == weights and (weights in GITHUB_ASSETS_NAMES or f"{weights}.pt" in GITHUB_ASSETS_NAMES):
        name = weights if weights in GITHUB_ASSETS_NAMES else f"{weights}.pt"
        source = str(cache_dir() / "weights" / name)  # used if there, downloaded to there if not
        if not Path(source).is_file() and _downloads_disabled():
            raise DetectorUnavailable(
                f"YOLO weights {name} are not cached at {source} and downloads are off "
                f"({_downloads_disabled()}). {_how_to_proceed(weights)}"
            )
    else:
        raise DetectorUnavailable(
            f"YOLO weights not found: no such file {weights!r}. {_how_to_proceed(weights)}"
        )
    try:
        return YOLO(source)
    except Exception as err:  # any failure to build means no detector; the cause is chained
        raise DetectorUnavailable(
            f"cannot load YOLO weights {weights!r} ({type(err).__name__}: {err}). {_how_to_proceed(weights)}"
        ) from err
