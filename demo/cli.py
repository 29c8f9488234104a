"""Command-line options shared by ``app.py``, ``demo.predict`` and ``demo.explain``: where the weights and the
detectors come from and which device runs them."""

from __future__ import annotations

import argparse
import logging
import sys

from demo.pipeline import DEVICE_ENV, MODEL_WEIGHTS_ENV, MODELS, REVISION_ENV, WEIGHTS_ENV, Analyzer
from sibnet.cam import CAM_METHODS


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


def analyzer_from_args(args: argparse.Namespace) -> Analyzer:
    return Analyzer(
        args.weights,
        sibnet=args.sibnet_weights,
        concat=args.concat_weights,
        attention=args.attention_weights,
        device=args.device,
        revision=args.revision,
        yolo_weights=args.yolo_weights,
        person_detector=False if args.no_person_detector else None,
    )


def target_arg(value: str) -> str | None:
    return None if value.strip().lower() == "top" else value


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
