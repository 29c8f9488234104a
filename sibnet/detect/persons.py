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
- ``YOLO_AUTOINSTALL=False``, always (a user's setting is overridden, because this is a security property,
  not a preference): ultralytics never runs ``pip install`` inside this process. This matters beyond YOLO
  itself: importing ultralytics replaces ``PIL.Image.open`` process-wide (``ultralytics/utils/patches.py``)
  with a wrapper that, for any file Pillow cannot identify, calls ``check_requirements("pi-heif")``, i.e.
  would pip-install a package because a user uploaded a text file. ``YOLO_OFFLINE`` already blocks that
  install; this keeps it blocked when a user turns ``YOLO_OFFLINE`` off.
- ``ULTRALYTICS_SAFE_LOAD=1``, always, for the same reason (see below).

Where weights come from, and why no code in them ever runs:

- An explicit path (anything with a folder part: ``/models/people.pt``, ``./yolo11n.pt``, ``~/w.pt``) is
  used as given.
- A bare official name (``yolo11n.pt``, ``yolo11n``) is looked up **only** in ``<cache>/weights/`` and, when
  downloads are allowed, downloaded there (ultralytics would otherwise take a file of that name from the
  current working directory first, and download into it). A file of that name in the working directory is
  never used: whoever can drop a ``yolo11n.pt`` into the folder a user starts the CLI or the app from must
  not get to choose the weights. A bare name that is not an official one is a path relative to the working
  directory (``--yolo-weights best.pt``), which the user typed.
- Only ``.pt`` checkpoints are accepted. A ``.pt`` file is a pickle, and ultralytics loads it with
  ``torch.load(weights_only=False)`` unless its safe-load mode is on, so a planted file would run its code
  (issue 12). Here every file goes through two independent gates before ultralytics builds a model from it:
  (1) :func:`_refuse_pickled_code` reads the pickle's opcodes without executing them
  (``torch.serialization.get_unsafe_globals_in_checkpoint``) and refuses any global outside what an
  Ultralytics detection checkpoint references (torch and ultralytics ``nn.Module`` classes, numpy scalars,
  paths, ultralytics' config namespace), any archive that is not an uncompressed ``torch.save`` zip, and
  an oversized pickle; (2) ultralytics itself loads in its safe mode (``ULTRALYTICS_SAFE_LOAD``:
  ``torch.load(weights_only=True)`` against an allow-list of its own model classes, layer activations built
  without ``eval``), which this module switches on before ultralytics is imported and enforces again after
  (:func:`_import_ultralytics`). An ultralytics without that mode is refused rather than used unsafely.

  The cost: checkpoints holding anything else are refused even when genuine, e.g. YOLO-World (it pickles
  a CLIP text model), classification models (torchvision transforms), files from other trainers
  (``torch.save`` of arbitrary objects) and the pre-2020 non-zip format. Official detection, segmentation
  and pose weights and models trained with ``ultralytics`` (``model.save``, the trainer's ``best.pt``) load.

Ultralytics is imported only when there is a file to load or a download to try: a missing or refused file
(and a missing default while downloads are off) is decided before it, so that case costs no import (about
2 s, and the ``PIL.Image.open`` patch) and the app starts faster.

Weights that cannot be obtained or are refused raise :class:`DetectorUnavailable`, whose message (one line)
says how to proceed; callers then run without a person detector and estimate bodies from faces
(``sibnet.detect.pairing``).
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
from sibnet.detect.yolo_pickle import why_refused
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
    """Set ultralytics' environment before it is imported: config dir, offline, no auto-install, safe load.

    ``YOLO_CONFIG_DIR`` and ``YOLO_OFFLINE`` are defaults a user may override; ``YOLO_AUTOINSTALL=False``
    and ``ULTRALYTICS_SAFE_LOAD=1`` are forced, because they keep code from being installed or unpickled.
    Ultralytics reads all four once, when ``ultralytics.utils`` is first imported; any module that imports
    ultralytics should call this first. Calling it afterwards changes nothing by itself, which is why
    :func:`_import_ultralytics` also sets the two forced ones on the imported modules.
    """
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = str(cache_dir())
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"


class PersonDetector:
    """YOLO person detector; one instance serves many threads (calls are serialised by a lock).

    Args:
        weights: a path to a YOLO ``.pt`` checkpoint, an official Ultralytics name (``"yolo11n.pt"``,
            looked up only in ``cache_dir() / "weights"`` and downloaded there on first use, never taken
            from the working directory), or an already-built ultralytics model (anything with ``predict``
            and ``names``; trusted as given). None: ``$SIBNET_YOLO_WEIGHTS``, else ``DEFAULT_WEIGHTS``.
            Files are loaded without running pickled code (see the module docstring).
        device: torch device for inference.
        conf: minimum box confidence (see ``PERSON_MIN_CONF``).
        iou: NMS IoU threshold.
        imgsz: the inference size YOLO letterboxes the image to.

    Raises:
        DetectorUnavailable: ultralytics is missing or has no safe-load mode, or the weights cannot be
            found, downloaded or read, or they are refused (they would run code, or are not an Ultralytics
            checkpoint), or they are not a box detector. The one-line message says how to proceed.
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


def _one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace (ultralytics' and torch's messages span lines) and cap the length."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- which file: resolution without importing ultralytics ---------------------------------------------------


def _is_official(name: str) -> bool:
    """Whether ``name`` is one of the weights ultralytics publishes (and would download).

    The default is known without importing ultralytics, so a missing default costs no import; any other
    name needs ultralytics' own list, which is only asked when there is a file or a download at stake.
    """
    if name == DEFAULT_WEIGHTS:
        return True
    _import_ultralytics()
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return name in GITHUB_ASSETS_NAMES


def _resolve(weights: str) -> tuple[Path, bool]:
    """The file ``weights`` names, and whether it still has to be downloaded (an official name, not cached).

    Raises:
        DetectorUnavailable: no such file, a refused format, or an official name that is not cached while
            downloads are off. Decided without importing ultralytics unless a file exists to load.
    """
    if not weights.strip():
        raise DetectorUnavailable(f"YOLO weights: empty name. {_how_to_proceed(DEFAULT_WEIGHTS)}")
    if Path(weights).suffix.lower() in (".yaml", ".yml"):
        raise DetectorUnavailable(
            f"{weights} is a model architecture, which builds an untrained network that finds nothing; "
            f"pass trained weights instead (e.g. {DEFAULT_WEIGHTS})"
        )
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    bare = not any(sep in weights for sep in separators) and not weights.startswith("~")
    if not bare:  # an explicit path: used as given
        path = Path(weights).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "no such file"
            raise DetectorUnavailable(
                f"YOLO weights not found: {what} {weights!r}. {_how_to_proceed(weights)}"
            )
        _require_pt(path, weights)
        return path.resolve(), False
    name = weights if Path(weights).suffix else f"{weights}.pt"  # ultralytics' "yolo11n" means yolo11n.pt
    _require_pt(Path(name), weights)
    cached = cache_dir() / "weights" / name
    if cached.is_file():
        return cached, False
    here = Path(name)
    # A bare name with a file in the working directory is the user's own file, unless it is an official
    # name: those come only from the cache (a planted yolo11n.pt must not be picked up; DESIGN §4).
    if here.is_file() and not _is_official(name):
        return here.resolve(), False
    ignored = (
        f" (the {name} in the working folder is not used: official names are looked up only in the "
        f"project cache; pass ./{name} to use that file)"
        if here.is_file()
        else ""
    )
    if _downloads_disabled():
        raise DetectorUnavailable(
            f"YOLO weights not found: no such file {name!r} in the project cache ({cached}){ignored}, and "
            f"downloads are off ({_downloads_disabled()}). {_how_to_proceed(name)}"
        )
    if _is_official(name):
        return cached, True
    raise DetectorUnavailable(
        f"YOLO weights not found: no such file {name!r} (not in the working folder, not in the project "
        f"cache {cached}, and not an official Ultralytics name). {_how_to_proceed(DEFAULT_WEIGHTS)}"
    )


def _require_pt(path: Path, shown: str) -> None:
    # Exported formats (.onnx, .torchscript, .engine, OpenVINO folders...) each have their own loader and
    # runtime, none of them audited here; TorchScript in particular is code. Only the checkpoint format,
    # whose safe loading is checked twice below, is accepted.
    if path.suffix.lower() != ".pt":
        raise DetectorUnavailable(
            f"YOLO weights {shown!r}: only Ultralytics .pt checkpoints are accepted (loaded without running "
            f"pickled code), not {path.suffix or 'a file without suffix'!r}. {_how_to_proceed(DEFAULT_WEIGHTS)}"
        )


# --- gate 1: what the pickle would build, read without running it (sibnet.detect.yolo_pickle) ---------


def _refuse_pickled_code(path: Path, shown: str) -> None:
    """Gate 1 (:func:`sibnet.detect.yolo_pickle.why_refused`): refuse a checkpoint whose pickle names anything
    an Ultralytics checkpoint does not, read without unpickling and without importing ultralytics.

    Raises:
        DetectorUnavailable: the reason, with how to proceed.
    """
    why = why_refused(path)
    if why is not None:
        raise DetectorUnavailable(
            f"cannot load YOLO weights {shown!r}: {why}. Only Ultralytics .pt checkpoints are loaded, and "
            f"without running pickled code. {_how_to_proceed(DEFAULT_WEIGHTS)}"
        )


# --- gate 2: ultralytics in its safe mode ------------------------------------------------------------------


def _import_ultralytics() -> Any:
    """Import ultralytics with safe loading on and auto-install off, and return its ``YOLO`` class.

    Raises:
        DetectorUnavailable: ultralytics is missing, or it has no safe-load mode (such a version would
            unpickle the file with ``weights_only=False``; it is refused, not used).
    """
    configure_ultralytics_env()
    try:
        import ultralytics
        import ultralytics.utils as ul_utils
        from ultralytics import YOLO
        from ultralytics.nn import tasks
        from ultralytics.utils import checks
    except ImportError as err:
        raise DetectorUnavailable(
            f"the person detector needs the ultralytics package ({err}); install it with "
            "`pip install ultralytics`. Without it, body boxes are estimated from the faces."
        ) from err
    safe_load = getattr(tasks, "_SafeLoad", None)
    if safe_load is None or not hasattr(tasks, "SAFE_LOAD") or not getattr(safe_load, "SUPPORTED", False):
        raise DetectorUnavailable(
            f"ultralytics {getattr(ultralytics, '__version__', '?')} cannot load weights without running "
            "pickled code (it has no ULTRALYTICS_SAFE_LOAD mode, or torch is older than 2.6); upgrade with "
            "`pip install -U ultralytics torch`. Without it, body boxes are estimated from the faces."
        )
    # Ultralytics reads its environment once, at first import. Something may have imported it before
    # configure_ultralytics_env ran (a user's script, a notebook), so set the flags where they are read:
    # torch_safe_load and _SafeLoad.restricted consult tasks.SAFE_LOAD, check_requirements checks.AUTOINSTALL.
    ul_utils.SAFE_LOAD = tasks.SAFE_LOAD = True
    ul_utils.AUTOINSTALL = checks.AUTOINSTALL = False
    return YOLO


def _download(target: Path, name: str) -> Path:
    """Download the official ``name`` to ``target`` (in the cache) through ultralytics; the file's path."""
    _import_ultralytics()
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        got = Path(attempt_download_asset(str(target))).resolve()
    except Exception as err:  # any failure (no network, GitHub blocked, short file) means no detector
        raise DetectorUnavailable(
            f"cannot load YOLO weights {name!r} ({type(err).__name__}: {_one_line(err)}). {_how_to_proceed(name)}"
        ) from err
    if not got.is_file() or not got.is_relative_to(target.parent.resolve()):
        raise DetectorUnavailable(
            f"cannot load YOLO weights {name!r}: the download failed. {_how_to_proceed(name)}"
        )
    return got


def _load_yolo(weights: str) -> Any:
    """Build ``ultralytics.YOLO`` from a path or an official name, never running code from the file."""
    path, download = _resolve(weights)
    if download:
        path = _download(path, weights)
    _refuse_pickled_code(path, weights)
    yolo = _import_ultralytics()
    try:
        return yolo(str(path))
    except Exception as err:  # any failure to build means no detector; the cause is chained
        # The advice names the official file to fetch: this one when it came from the cache, else the default.
        official = path.name if path.parent == cache_dir() / "weights" else DEFAULT_WEIGHTS
        raise DetectorUnavailable(
            f"cannot load YOLO weights {weights!r} ({type(err).__name__}: {_one_line(err)}). "
            f"{_how_to_proceed(official)}"
        ) from err
