"""Every error a user of the library can cause, in one module at the bottom of the house.

Each class names one kind of bad input or missing resource; its message names the file, field or limit at
fault and says how to proceed, so command lines print it as one ``error:`` line and the web app shows it as
is. Anything else is a bug and keeps its traceback. The classes subclass the built-in exception a caller
would catch anyway (``ValueError`` for bad data, ``RuntimeError`` for missing resources), so code written
against those keeps working.

This module imports nothing from the project: any module may import it without creating a circle.
"""

from __future__ import annotations


class ImageError(ValueError):
    """The input is not an image this library accepts; the message says why and what the limit is."""


class DatasetError(ValueError):
    """A dataset on disk is malformed: bad annotations, an unreadable image, an unknown class folder, an empty
    split, splits that coincide. The message always names the file or folder at fault."""


class UnreadableImages(DatasetError):
    """Images that cannot be decoded, refused because skipping was not asked for (``--strict``)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, in a refused format, or does not match its config."""


class LabelMismatchError(ValueError):
    """A checkpoint's label list differs from the dataset's."""


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but are neither cached nor downloadable."""


class DetectorUnavailable(RuntimeError):
    """A detector cannot be built (weights missing, not downloadable, unreadable, refused, or the package
    missing)."""


class WorkLimitExceeded(RuntimeError):
    """A request would take more work than a server allows (a time budget ran out)."""


class TrainingError(RuntimeError):
    """A run cannot proceed (diverged loss, incompatible resume state, too small a split)."""


class PublishError(RuntimeError):
    """Publishing cannot proceed: no token, a bad repo id, or the Hub refused (the message says which)."""


# What the command lines report as ``error: ...`` (exit 2) instead of a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    NotADirectoryError,
    ImageError,
    DatasetError,
    UnreadableImages,
    CheckpointError,
    LabelMismatchError,
    PretrainedWeightsUnavailable,
    DetectorUnavailable,
    TrainingError,
    WorkLimitExceeded,
    PublishError,
)


def error_message(err: BaseException) -> str:
    """A one-line message; errors re-raised from DataLoader workers carry the worker's traceback."""
    text = str(err).strip()
    if text.startswith("Caught ") and "\n" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(err).__name__
