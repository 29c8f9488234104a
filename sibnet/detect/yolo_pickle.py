"""Gate 1 of the YOLO weights' safe loading (see :mod:`sibnet.detect.persons`): what a checkpoint's pickle
would build, read from its opcodes without unpickling it and without importing ultralytics.
"""

from __future__ import annotations

import zipfile
from pathlib import Path


def _one_line(text: object, limit: int) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# Globals beyond torch's own weights_only set that official Ultralytics detection/segmentation/pose
# checkpoints and ultralytics-trained ones reference (ultralytics.nn.tasks._SafeLoad._build lists the same):
_ALLOWED_GLOBALS = frozenset(
    {
        "builtins.getattr",  # Detect.forward & co.; ultralytics' safe loader narrows it to nn.Module attributes
        "numpy.dtype",
        "numpy.core.multiarray.scalar",  # numpy scalars in train_metrics, under numpy 1 and 2 names
        "numpy._core.multiarray.scalar",
        "ultralytics.utils.IterableSimpleNamespace",  # the model's args
        "ultralytics.yolo.utils.IterableSimpleNamespace",  # its pre-8.0.44 path
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pathlib._local.PosixPath",
        "pathlib._local.WindowsPath",
    }
)
# Modules whose *classes* a checkpoint may name; ultralytics then admits only nn.Module subclasses (or, for
# the loss/tal helpers, classes defined there), so a function such as ``tasks.torch_safe_load`` stays out.
_CLASS_PACKAGES = ("torch.nn.modules", "ultralytics.nn.modules")
_CLASS_MODULES = frozenset(
    {
        "ultralytics.nn.tasks",
        "ultralytics.nn.distill_model",
        "ultralytics.utils.loss",
        "ultralytics.utils.tal",
    }
)
MAX_PICKLE_BYTES = 16 * 2**20  # yolo11n's pickle is 0.13 MB; tensors live in records of their own


def _allowed_global(name: str) -> bool:
    if name in _ALLOWED_GLOBALS or name.startswith("numpy.dtypes."):
        return True
    module, _, attr = name.rpartition(".")
    in_class_module = module in _CLASS_MODULES or any(
        module == pkg or module.rpartition(".")[0] == pkg for pkg in _CLASS_PACKAGES
    )
    return in_class_module and attr.isidentifier() and attr[:1].isupper()  # a class name, not a function


def why_refused(path: Path) -> str | None:
    """Why a checkpoint's pickle must not be loaded, or None: not an uncompressed ``torch.save`` zip, an
    oversized pickle, or a global an Ultralytics checkpoint does not name (the first few named).

    Reads the archive's directory and the pickle's opcodes; nothing is unpickled and ultralytics is not
    imported. The real guarantee is gate 2 (``torch.load(weights_only=True)`` in ultralytics' safe mode);
    this one does not depend on ultralytics' internals, gives a precise message, and costs no import.
    """
    import torch

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return f"not a checkpoint written by torch.save (not a zip archive: {_one_line(err, 80)})"
    # torch.save writes every record uncompressed; a deflated one could be a zip bomb, and is not torch's.
    pickles = [e for e in entries if e.filename.endswith("/data.pkl")]
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or len(pickles) != 1:
        return "not a checkpoint written by torch.save (unexpected archive layout)"
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        return f"its pickle is {pickles[0].file_size / 2**20:.0f} MB, over {MAX_PICKLE_BYTES >> 20} MB"
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # noqa: BLE001 - a malformed or unusual pickle: refusing is the safe answer
        return f"its pickle cannot be checked ({type(err).__name__}: {_one_line(err, 120)})"
    bad = sorted(name for name in names if not _allowed_global(name))
    if bad:
        shown = ", ".join(_one_line(name, 60) for name in bad[:3]) + (", ..." if len(bad) > 3 else "")
        return f"it would build {shown}, which no Ultralytics checkpoint contains: loading it could run code, so it was not loaded"
    return None
