"""The command-line layer shared by ``app.py``, ``demo.predict``, ``demo.explain`` and the notebook: where the
weights and the detectors come from (flags, then environment variables), which device runs them, logging.

This is the only place the demo reads its environment variables; :class:`demo.pipeline.Analyzer` takes
explicit sources.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from demo.pipeline import MODELS, Analyzer
from sibnet.cam import CAM_METHODS
from sibnet.inference import PRECISIONS

WEIGHTS_ENV = "SIBNET_WEIGHTS"  # folder or Hub repo id holding sibnet/, concat/, attention/
MODEL_WEIGHTS_ENV = {key: f"SIBNET_WEIGHTS_{key.upper()}" for key in MODELS}  # one checkpoint per model
REVISION_ENV = "SIBNET_WEIGHTS_REVISION"
DEVICE_ENV = "SIBNET_DEVICE"
PRECISION_ENV = "SIBNET_PRECISION"


def add_analyzer_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models and detectors")
    group.add_argument(
        "--weights",
        default=None,
        help=f"folder or Hub repo id holding sibnet/, concat/ and attention/ checkpoints (env {WEIGHTS_ENV}); "
        "without weights the models run untrained and every output says so",
    )
    for key, title in MODELS.items():
        group.add_argument(
            f"--{key}-weights",
            dest=f"{key}_weights",
            default=None,
            help=f"checkpoint of the {title} model alone (env {MODEL_WEIGHTS_ENV[key]})",
        )
    group.add_argument("--revision", default=None, help=f"Hub revision of the weights (env {REVISION_ENV})")
    group.add_argument(
        "--device",
        default=None,
        help=f"cpu, cuda, cuda:1... (env {DEVICE_ENV}; default: cuda when available)",
    )
    group.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help=f"backbone precision (env {PRECISION_ENV}; default auto: bf16 where the CPU or GPU computes it "
        "natively, else fp32); heads and maps are fp32 always",
    )
    group.add_argument(
        "--yolo-weights", default=None, help="YOLO person-detector weights (env SIBNET_YOLO_WEIGHTS)"
    )
    group.add_argument(
        "--no-person-detector", action="store_true", help="estimate bodies from faces, skip YOLO"
    )


def add_cam_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", default="gradcam", choices=list(CAM_METHODS), help="CAM method (default gradcam)"
    )
    parser.add_argument(
        "--target",
        default="top",
        help="target emotion of the maps: 'top' (SIB-Net's top emotion) or a label name",
    )


def analyzer_settings(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The :class:`Analyzer` keyword arguments the flags ask for, each missing flag taken from its variable."""
    env = os.environ if environ is None else environ

    def pick(flag: str, variable: str) -> str | None:
        value = getattr(args, flag, None) if args is not None else None
        return value or env.get(variable) or None

    settings: dict[str, Any] = {
        "weights": pick("weights", WEIGHTS_ENV),
        "revision": pick("revision", REVISION_ENV),
        "device": pick("device", DEVICE_ENV),
        "precision": pick("precision", PRECISION_ENV) or "auto",
        "yolo_weights": getattr(args, "yolo_weights", None),
    }
    for key in MODELS:
        settings[key] = pick(f"{key}_weights", MODEL_WEIGHTS_ENV[key])
    if getattr(args, "no_person_detector", False):
        settings["person_detector"] = False
    return settings


def analyzer_from_args(args: argparse.Namespace | None = None, **overrides: Any) -> Analyzer:
    """The analyzer the flags (then the environment) describe; ``overrides`` win (tests, the notebook)."""
    return Analyzer(**{**analyzer_settings(args), **overrides})


def target_arg(value: str) -> str | None:
    return None if value.strip().lower() == "top" else value


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def photo_cli_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser skeleton of the photo command lines: ``-v``, the CAM options and the analyzer options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log loading and timings")
    add_cam_args(parser)
    add_analyzer_args(parser)
    return parser
