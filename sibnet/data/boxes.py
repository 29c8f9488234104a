"""The face and body boxes the datasets lack, detected once and cached (paper §4.2, DESIGN.md §1).

EMOTIC ships a body box per annotated person but no face box; CAER-S ships no boxes at all. The paper used
OpenFace and OpenPose; this project uses MTCNN for faces and YOLO for persons (DESIGN.md §1). Running
them on every epoch would dominate training time, so this module runs them once and writes a cache that
:class:`~sibnet.data.emotic.EmoticDataset` and :class:`~sibnet.data.caer.CaerDataset` read::

    python -m sibnet.data.boxes --dataset emotic --data-root DIR [--out FILE] [--device cpu] [--limit N]

What is detected:

- **EMOTIC**, per annotated person: MTCNN inside the person box (the box is cropped, small crops are
  upscaled so the short side is at least :data:`MIN_CROP_SIDE` px, because MTCNN finds no face under 20 px;
  faces are mapped back to image pixels). The face kept is the most probable one whose centre lies in the
  top half of the body box (where a head is), else the most probable one. No face → the face is estimated
  from the body's top (``sibnet.boxes.estimate_face_from_body``), ``face_source: "estimated"``.
- **CAER-S**, per frame: MTCNN faces and YOLO persons on the whole frame, paired by
  :func:`sibnet.detect.pair_people`. The principal person (CAER-S labels one per frame) is the one whose
  detected face has the largest ``area x probability``; without any detected face, the most confident
  body (its face estimated). YOLO weights unavailable (always offline) → every body is estimated from its
  face, said once in the summary. No face and no person → the documented :func:`central_boxes`
  (``"central"``).

The cache format and its reader are :mod:`sibnet.data.boxcache`; this module only builds it.

Resuming: lines are appended and flushed one by one; a restarted run skips every key already in the file
(unreadable images included: delete their lines to retry) and drops a half-written last line left by a
killed run. ``--limit N`` stops after N new items. A key written twice: the last line wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sibnet.boxes import (
    Box,
    box_area,
    clip_box,
    estimate_body_from_face,
    estimate_face_from_body,
    is_empty,
)
from sibnet.data.boxcache import BoxJob, cache_line, default_cache_path, write_cache_header
from sibnet.data.masking import pixel_bounds
from sibnet.data.registry import get_dataset, list_datasets
from sibnet.errors import DatasetError

log = logging.getLogger(__name__)

# MTCNN looks for faces of at least 20 px; a body crop whose short side is under MIN_CROP_SIDE is upscaled
# (by at most MAX_UPSCALE) before detection so a small person's face reaches that size.
MIN_CROP_SIDE = 112
MAX_UPSCALE = 4.0
# The central fallback of a CAER-S frame with neither a face nor a person: CAER-S frames are TV-show shots
# framed on the speaking character, so a face is most likely centred horizontally in the upper half. A
# square face of side CENTRAL_FACE_SIDE x the frame height, centred horizontally, its centre at
# CENTRAL_FACE_CENTRE_Y x the height; the body estimated from it (sibnet.boxes proportions).
CENTRAL_FACE_SIDE = 0.3
CENTRAL_FACE_CENTRE_Y = 0.35


def central_boxes(width: int, height: int) -> tuple[Box, Box]:
    """The documented ``(face, body)`` fallback of a frame with no face and no person (see module constants)."""
    side = CENTRAL_FACE_SIDE * height
    cx, cy = width / 2, CENTRAL_FACE_CENTRE_Y * height
    face = (
        max(cx - side / 2, 0.0),
        max(cy - side / 2, 0.0),
        min(cx + side / 2, width),
        min(cy + side / 2, height),
    )
    return face, estimate_body_from_face(face, width, height)


# ----------------------------------------------------------------------------------------------------------
# Building the cache


@dataclass
class BoxCacheSummary:
    """What a :func:`build_box_cache` run did (the CLI prints :meth:`format`)."""

    dataset: str
    out: Path
    total: int = 0  # items (EMOTIC persons, CAER-S frames) the data root lists
    already_done: int = 0  # skipped: already in the cache
    processed: int = 0  # new items written by this run
    remaining: int = 0  # not processed because of --limit
    faces_detected: int = 0
    faces_estimated: int = 0  # no face found: estimated from the body's top
    central: int = 0  # CAER-S: no face and no person, the central boxes
    bodies_annotated: int = 0
    bodies_detected: int = 0
    bodies_estimated: int = 0  # no person box: estimated from the face
    empty_bodies: int = 0  # EMOTIC: annotated body box empty after clipping (no face searched)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["out"] = str(self.out)
        d["unreadable"] = [list(u) for u in self.unreadable]
        return d

    def format(self) -> str:
        unit = get_dataset(self.dataset).items_unit
        lines = [
            f"box cache {self.out} ({self.dataset}): {self.total} {unit} listed, {self.already_done} already "
            f"cached, {self.processed} processed now, {self.remaining} left (--limit) in {self.seconds:.1f} s",
            f"  faces: {self.faces_detected} detected, {self.faces_estimated} estimated from the body top, "
            f"{self.central} central fallback",
            f"  bodies: {self.bodies_annotated} annotated, {self.bodies_detected} detected, "
            f"{self.bodies_estimated} estimated from the face"
            + (f", {self.empty_bodies} empty annotated boxes" if self.empty_bodies else ""),
        ]
        lines += [f"  note: {n}" for n in self.notices]
        if self.unreadable:
            lines.append(f"  unreadable images: {len(self.unreadable)}")
            lines += [f"    {image}: {reason}" for image, reason in self.unreadable[:20]]
            if len(self.unreadable) > 20:
                lines.append(f"    ... and {len(self.unreadable) - 20} more")
        return "\n".join(lines)


def _open_cache(out: Path, dataset: str) -> tuple[set[str], Any]:
    """Open the cache for appending: return the keys already done and the file (header written if new)."""
    done: set[str] = set()
    if out.is_file() and out.stat().st_size > 0:
        with out.open("rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                # A run killed mid-line: drop the partial line so the next one starts cleanly.
                keep = data.rfind(b"\n") + 1
                f.seek(keep)
                f.truncate()
                data = data[:keep]
        for line in data.decode("utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "sibnet_box_cache" in item and item.get("dataset") != dataset:
                raise DatasetError(f"box cache {out} is for dataset {item.get('dataset')!r}, not {dataset!r}")
            if "key" in item:
                done.add(item["key"])
        f = out.open("a", encoding="utf-8")
        if not data:
            write_cache_header(f, dataset)
        return done, f
    out.parent.mkdir(parents=True, exist_ok=True)
    f = out.open("w", encoding="utf-8")
    write_cache_header(f, dataset)
    f.flush()
    return done, f


def _face_in_body(detector: Any, rgb: np.ndarray, body: Box) -> tuple[Box, float] | None:
    """The best MTCNN face inside a body box, in image pixels (see the module docstring), or None."""
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = pixel_bounds(body, width, height)
    crop = rgb[y1:y2, x1:x2]
    ch, cw = crop.shape[:2]
    scale = min(MIN_CROP_SIDE / min(ch, cw), MAX_UPSCALE)
    sx = sy = 1.0
    if scale > 1.0:
        new_w, new_h = max(round(cw * scale), 1), max(round(ch * scale), 1)
        crop = np.asarray(Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.BILINEAR))
        sx, sy = new_w / cw, new_h / ch
    faces = detector.detect(np.ascontiguousarray(crop))
    if not faces:
        return None
    mapped = [
        ((x1 + f.box[0] / sx, y1 + f.box[1] / sy, x1 + f.box[2] / sx, y1 + f.box[3] / sy), float(f.prob))
        for f in faces
    ]
    mid = (y1 + y2) / 2
    upper = [m for m in mapped if (m[0][1] + m[0][3]) / 2 < mid]
    return max(upper or mapped, key=lambda m: m[1])


def _principal_person(people: Sequence[Any]) -> Any | None:
    """CAER-S's one labelled person: the detected face with the largest area x probability, else the most
    confident (then largest) body."""
    detected = [p for p in people if p.face_source != "estimated"]
    if detected:
        return max(detected, key=lambda p: box_area(p.face_box) * (p.face_prob or 0.0))
    if people:
        return max(people, key=lambda p: ((p.body_score or 0.0), box_area(p.body_box)))
    return None


def _image_parts(job: BoxJob) -> tuple[str, str]:
    folder, _, filename = job.image.rpartition("/")
    return folder, filename


def _iter_by_image(jobs: Iterable[BoxJob]) -> Iterator[tuple[Path, str, list[BoxJob]]]:
    """Group consecutive jobs by image so each image is decoded once."""
    groups: dict[Path, list[BoxJob]] = {}
    for job in jobs:
        groups.setdefault(job.path, []).append(job)
    for path, group in groups.items():
        yield path, group[0].image, group


def build_box_cache(
    dataset: str,
    data_root: str | Path,
    *,
    out: str | Path | None = None,
    device: str = "cpu",
    limit: int | None = None,
    face_detector: Any | None = None,
    person_detector: Any | None = None,
    use_persons: bool = True,
    annotations: str | Path | None = None,
    progress: bool = True,
) -> BoxCacheSummary:
    """Detect the missing boxes of a dataset once and append them to the cache (resumable).

    Args:
        dataset: a registered dataset name (:func:`sibnet.data.registry.list_datasets`).
        data_root: the dataset folder.
        out: the cache file; None → :func:`default_cache_path`.
        device: torch device of the detectors built here.
        limit: process at most this many new items (EMOTIC persons, CAER-S frames), then stop.
        face_detector: anything with ``detect(rgb) -> [FaceDetection]``; None → ``sibnet.detect.FaceDetector``.
        person_detector: anything with ``detect(rgb) -> [PersonDetection]`` (CAER-S only); None → a
            ``sibnet.detect.PersonDetector``, or bodies estimated from faces if its weights are unavailable.
        use_persons: False → no person detector at all (bodies estimated from faces).
        annotations: EMOTIC annotations (file or folder) if not in ``data_root``.
        progress: show a tqdm progress bar.

    Returns:
        The run's :class:`BoxCacheSummary`.

    Raises:
        FileNotFoundError: the data root or its annotations/images folders are missing.
    """
    from tqdm import tqdm

    # The same decoder as the datasets (raw pixel order), so cached boxes match what they read.
    from sibnet.data.base import read_rgb

    spec = get_dataset(dataset)
    started = time.perf_counter()
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"data root {data_root} does not exist or is not a folder")
    out_path = Path(out) if out is not None else default_cache_path(data_root, dataset)
    jobs, notices = spec.box_jobs(data_root, annotations)
    summary = BoxCacheSummary(dataset=dataset, out=out_path, total=len(jobs), notices=notices)

    done, f = _open_cache(out_path, dataset)
    try:
        pending = [j for j in jobs if j.key not in done]
        if pending and spec.box_detection == "face_in_body":
            # A cache built from the other EMOTIC layout: its keys hold the .mat's raw boxes or mat2py's
            # clipped ones; such a person is done already (sibnet.data.boxcache.EmoticCacheIndex).
            from sibnet.data.boxcache import EmoticCacheIndex, read_box_cache

            index = EmoticCacheIndex(read_box_cache(out_path, dataset))
            pending = [j for j in pending if index.key_for(*_image_parts(j), j.body, j.size) is None]
        summary.already_done = len(jobs) - len(pending)
        if limit is not None:
            summary.remaining = max(len(pending) - limit, 0)
            pending = pending[: max(limit, 0)]
        if not pending:
            return summary
        if face_detector is None:
            from sibnet.detect import FaceDetector

            face_detector = FaceDetector(device=device)
        persons = None
        if spec.box_detection == "principal_person":
            persons = person_detector
            if persons is None and use_persons:
                from sibnet.detect import DetectorUnavailable, PersonDetector

                try:
                    persons = PersonDetector(device=device)
                except DetectorUnavailable as err:
                    summary.notices.append(f"person detector unavailable, bodies estimated from faces: {err}")
            elif persons is None:
                summary.notices.append("person detection off: bodies estimated from faces")

        bar = tqdm(total=len(pending), unit=spec.item_unit, disable=not progress)
        for path, image, group in _iter_by_image(pending):
            try:
                rgb = read_rgb(path)
            except (OSError, DatasetError) as err:
                summary.unreadable.append((image, str(err)))
                for job in group:
                    f.write(
                        cache_line(
                            job.key,
                            image,
                            face=None,
                            face_source=None,
                            body=job.body,
                            body_source="annotation" if job.body else None,
                            status="unreadable",
                            error=str(err),
                        )
                    )
            else:
                for job in group:
                    if spec.box_detection == "face_in_body":
                        f.write(_face_in_body_line(job, rgb, face_detector, summary))
                    else:
                        f.write(_principal_person_line(job, rgb, face_detector, persons, summary))
            f.flush()
            summary.processed += len(group)
            bar.update(len(group))
        bar.close()
    finally:
        f.close()
        summary.seconds = time.perf_counter() - started
    return summary


def _face_in_body_line(job: BoxJob, rgb: np.ndarray, detector: Any, summary: BoxCacheSummary) -> str:
    height, width = rgb.shape[:2]
    assert job.body is not None
    summary.bodies_annotated += 1
    kw = dict(body=job.body, body_source="annotation", size=(width, height))
    if is_empty(clip_box(job.body, width, height)):
        summary.empty_bodies += 1
        return cache_line(job.key, job.image, face=None, face_source=None, **kw)
    best = _face_in_body(detector, rgb, job.body)
    if best is None:
        summary.faces_estimated += 1
        face = estimate_face_from_body(job.body, width, height)
        return cache_line(job.key, job.image, face=face, face_source="estimated", **kw)
    summary.faces_detected += 1
    return cache_line(job.key, job.image, face=best[0], face_source="mtcnn", face_prob=best[1], **kw)


def _principal_person_line(
    job: BoxJob, rgb: np.ndarray, faces: Any, persons: Any | None, summary: BoxCacheSummary
) -> str:
    from sibnet.detect import pair_people

    height, width = rgb.shape[:2]
    people = pair_people(faces.detect(rgb), persons.detect(rgb) if persons is not None else [], width, height)
    best = _principal_person(people)
    if best is None:
        summary.central += 1
        face, body = central_boxes(width, height)
        return cache_line(
            job.key, job.image, face=face, face_source="central", body=body, body_source="central"
        )
    if best.face_source == "estimated":
        summary.faces_estimated += 1
    else:
        summary.faces_detected += 1
    if best.body_source == "estimated":
        summary.bodies_estimated += 1
    else:
        summary.bodies_detected += 1
    return cache_line(
        job.key,
        job.image,
        face=best.face_box,
        face_source=best.face_source,
        face_prob=best.face_prob,
        body=best.body_box,
        body_source=best.body_source,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build (or resume) a dataset's box cache and print the summary."""
    parser = argparse.ArgumentParser(
        prog="python -m sibnet.data.boxes",
        description="Detect the face (MTCNN) and body (YOLO) boxes a dataset lacks, once, into a resumable cache.",
    )
    parser.add_argument("--dataset", required=True, choices=list_datasets())
    parser.add_argument("--data-root", required=True, type=Path, help="the dataset folder")
    parser.add_argument(
        "--out", type=Path, default=None, help="cache file (default <data-root>/sibnet_boxes_<dataset>.jsonl)"
    )
    parser.add_argument("--device", default="cpu", help="torch device of the detectors (cpu, cuda, cuda:1)")
    parser.add_argument("--limit", type=int, default=None, help="process at most N new items, then stop")
    parser.add_argument(
        "--annotations", type=Path, default=None, help="EMOTIC annotations if not in --data-root"
    )
    parser.add_argument(
        "--no-persons", action="store_true", help="CAER-S: no YOLO, bodies estimated from faces"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = build_box_cache(
            args.dataset,
            args.data_root,
            out=args.out,
            device=args.device,
            limit=args.limit,
            use_persons=not args.no_persons,
            annotations=args.annotations,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
