"""Face detection with MTCNN (facenet-pytorch), the detector the paper's pipeline uses for face boxes (§4.2).

SIB-Net's face branch needs one face box per person; EMOTIC ships person boxes only and CAER-S ships no
boxes, so faces come from MTCNN (Zhang et al., 2016). This wraps facenet-pytorch's implementation, whose
P-Net/R-Net/O-Net weights ship inside the wheel, so it works offline. The model is built in the
constructor, never when this module is imported.

How it runs (:meth:`FaceDetector.detect`): facenet-pytorch's three networks and weights, and its cascade step
by step (``detect_face`` of facenet-pytorch 2.5.3: the same pyramid, thresholds, box regression, NMS), with
three changes that take one face on a typical photo (grace_hopper.jpg, 512 × 600) from ~120 ms to ~40 ms
on 2 shared CPU cores (with the fixed 20 px minimum: 68 ms, the same boxes as the library to 1e-4 px):

- **The pyramid fitted to the analysed size.** MTCNN looks for faces down to ``min_face_size`` pixels; its
  pyramid starts at ``12 / min_face_size`` of the image, so the cost of its finest levels and the number of
  candidates they produce grow with the image over that size. The smallest face searched is
  ``max(MIN_FACE_SIZE, MIN_FACE_FRACTION × the image's short side)`` with the fraction 1/16
  (:func:`search_min_face`): 20 px up to a 320 px short side, 32 px on a 512 px portrait, 45 px on 720p,
  80 px at the demo's 1280 px limit. A face under 1/16 of the short side is a speck for a 224 × 224 face
  branch, and MTCNN still finds faces down to about half the searched size: bus.jpg's 33 px faces (1/25 of
  its 810 px side) are found with a 51 px minimum (measured: still found at 68 px, boxes moved at 81 px,
  lost at 101 px). ``min_face_fraction=0`` restores the fixed minimum (what a dataset's box cache may want).
- **Channels-last networks**: oneDNN's layout for the small convolutions and PReLU/max-pool passes (~30 %
  faster, the same boxes).
- **Resampling from one integral image.** facenet-pytorch resizes every pyramid level and every R-Net/O-Net
  candidate with its own ``interpolate(mode="area")`` call (200-500 calls per photo, most of the time); here
  the same area averages (``adaptive_avg_pool2d``'s windows) are summed from one integral image of the photo
  (``cv2.integral``), each level and each stage's candidates in one batched gather: exact integer sums and
  one division, so the values the networks see are the library's.

Two quirks of facenet-pytorch 2.5.3 no longer matter: on numpy 2 its ``detect`` returns ``dtype=object``
arrays, and it raises on images whose short side is below ``min_face_size`` (no faces are returned here).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from sibnet.boxes import Box, clip_box, is_empty
from sibnet.io import require_rgb

# O-Net's face probability below which a detection is dropped. MTCNN's own stage thresholds
# (0.6, 0.7, 0.7) let through hands, ears and patterned cloth with probabilities of 0.7-0.85; on zidane.jpg
# two such false faces score 0.78 and 0.76, while the real faces on the four test photos all score > 0.997.
# A false face costs more than a missed one: a missed face is estimated from the body box (and flagged),
# a false one becomes a person of its own.
FACE_MIN_PROB = 0.90
# Smallest face MTCNN searches for, in pixels (facenet-pytorch's default). The image pyramid's cost grows
# as this shrinks, and a face under 20 px carries little for a 224 × 224 face branch.
MIN_FACE_SIZE = 20
# ... and at least this fraction of the image's short side (see the module docstring). Measured on the four
# test photos (2 shared cores, with the other two changes): grace_hopper 68 ms with 20 px, 51 ms with 1/20,
# 40 ms with 1/16, 33 ms with 1/14; 1/16 finds the faces of the 20 px search on all four (IoU >= 0.87 with
# its boxes), 1/10 moved bus.jpg's boxes and 1/8 lost its faces.
MIN_FACE_FRACTION = 1 / 16
# MTCNN's stage thresholds and pyramid factor (facenet-pytorch's defaults, the paper's values).
_THRESHOLDS = (0.6, 0.7, 0.7)
_FACTOR = 0.709


def search_min_face(
    width: int, height: int, min_face_size: int = MIN_FACE_SIZE, fraction: float = MIN_FACE_FRACTION
) -> int:
    """The smallest face, in pixels, searched in a ``width × height`` image: ``max(min_face_size, fraction ×
    short side)``, rounded."""
    return max(int(min_face_size), round(fraction * min(width, height)))


@dataclass(frozen=True)
class FaceDetection:
    """One face found by MTCNN.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the analysed image, clipped to it.
        prob: O-Net's face probability.
        landmarks: ``(5, 2)`` float32 ``(x, y)`` of the eyes, nose and mouth corners (left eye, right eye,
            nose, left mouth corner, right mouth corner, as seen in the image); not clipped.
    """

    box: Box
    prob: float
    landmarks: np.ndarray = field(compare=False, repr=False)


class FaceDetector:
    """MTCNN face detector; one instance serves many threads (calls are serialised by a lock).

    Args:
        device: torch device for the three networks (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        min_prob: drop detections whose probability is below this (see ``FACE_MIN_PROB``).
        min_face_size: the smallest face, in pixels, MTCNN ever looks for.
        min_face_fraction: ... and at least this fraction of the image's short side (:func:`search_min_face`;
            0 for a fixed ``min_face_size``).
    """

    def __init__(
        self,
        device: str = "cpu",
        min_prob: float = FACE_MIN_PROB,
        min_face_size: int = MIN_FACE_SIZE,
        min_face_fraction: float = MIN_FACE_FRACTION,
    ):
        # Imported here so that importing sibnet.detect stays cheap (facenet-pytorch pulls in torch models).
        import torch
        from facenet_pytorch import MTCNN

        self.device = device
        self.min_prob = float(min_prob)
        self.min_face_size = int(min_face_size)
        self.min_face_fraction = float(min_face_fraction)
        if self.min_face_size < 12 or not 0 <= self.min_face_fraction < 1:
            raise ValueError(
                f"min_face_size must be >= 12 (P-Net's window) and min_face_fraction in [0, 1), got "
                f"{min_face_size} and {min_face_fraction}"
            )
        # Only the three networks (and their weights, shipped in the wheel) are used; the cascade is run by
        # :meth:`_cascade`.
        mtcnn = MTCNN(keep_all=True, post_process=False, select_largest=False, device=device)
        mtcnn.eval().requires_grad_(False)
        self._nets = [
            net.to(memory_format=torch.channels_last) for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet)
        ]
        self._device = torch.device(device)
        # The networks are shared state; concurrent forward passes from web requests are serialised.
        self._lock = threading.Lock()

    def search_size(self, width: int, height: int) -> int:
        """The smallest face searched in a ``width × height`` image (see :func:`search_min_face`)."""
        return search_min_face(width, height, self.min_face_size, self.min_face_fraction)

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Find the faces in an image.

        Args:
            rgb: ``H x W x 3`` uint8 RGB image.

        Returns:
            The faces with probability at least ``min_prob`` and a non-empty box, most probable first.

        Raises:
            ValueError: ``rgb`` is not an ``H x W x 3`` uint8 array.
        """
        require_rgb(rgb)
        height, width = rgb.shape[:2]
        minsize = self.search_size(width, height)
        if min(height, width) < minsize:
            return []  # no pyramid level fits
        with self._lock:
            boxes, points = self._cascade(rgb, minsize)
        faces = []
        for row, landmarks in zip(boxes, points):
            clipped = clip_box(row[:4], width, height)
            prob = float(row[4])
            if prob >= self.min_prob and not is_empty(clipped):
                faces.append(FaceDetection(box=clipped, prob=prob, landmarks=landmarks.copy()))
        faces.sort(key=lambda f: -f.prob)  # stable: the cascade's own order among equal probabilities
        return faces

    def _cascade(self, rgb: np.ndarray, minsize: int) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's three stages on one image: ``(N, 5)`` float64 boxes + probability, ``(N, 5, 2)`` landmarks.

        facenet-pytorch 2.5.3's ``detect_face`` for one image, step by step, except for how the pyramid and
        the candidate crops are resampled (:func:`_pyramid_level`, :func:`_area_crops`: the same values).
        """
        import torch
        from facenet_pytorch.models.utils.detect_face import (
            batched_nms_numpy,
            bbreg,
            generateBoundingBox,
            pad,
            rerec,
        )
        from torchvision.ops.boxes import batched_nms

        pnet, rnet, onet = self._nets
        dev = self._device
        with torch.no_grad():
            rgb = np.ascontiguousarray(rgb)
            h, w = rgb.shape[:2]
            integral = _integral_image(rgb, dev)

            # Stage 1: P-Net over the pyramid, NMS per scale, then over all scales.
            scales, scale, side = [], 12.0 / minsize, min(h, w) * 12.0 / minsize
            while side >= 12:
                scales.append(scale)
                scale, side = scale * _FACTOR, side * _FACTOR
            per_scale = []
            for scale in scales:
                level = _pyramid_level(integral, h, w, int(h * scale + 1), int(w * scale + 1))
                reg, probs = pnet((level - 127.5) * 0.0078125)
                found, inds = generateBoundingBox(reg, probs[:, 1], scale, _THRESHOLDS[0])
                per_scale.append(found[batched_nms(found[:, :4], found[:, 4], inds, 0.5)])
            boxes = torch.cat(per_scale, dim=0)
            zeros = torch.zeros(len(boxes), dtype=torch.long, device=dev)
            boxes = boxes[batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.7)]
            regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            boxes = torch.stack(
                [
                    boxes[:, 0] + boxes[:, 5] * regw,
                    boxes[:, 1] + boxes[:, 6] * regh,
                    boxes[:, 2] + boxes[:, 7] * regw,
                    boxes[:, 3] + boxes[:, 8] * regh,
                    boxes[:, 4],
                ]
            ).permute(1, 0)
            boxes = rerec(boxes)

            # Stage 2: R-Net on 24 × 24 crops of the candidates.
            if len(boxes) > 0:
                crops, boxes = _area_crops(integral, boxes, w, h, 24, pad)
                reg, probs = rnet(crops)
                score = probs[:, 1]
                keep = score > _THRESHOLDS[1]
                boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
                mv = reg[keep]
                zeros = torch.zeros(len(boxes), dtype=torch.long, device=dev)
                pick = batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.7)
                boxes = rerec(bbreg(boxes[pick], mv[pick]))

            # Stage 3: O-Net on 48 × 48 crops: probabilities, final boxes, landmarks.
            points = torch.zeros(0, 5, 2, device=dev)
            if len(boxes) > 0:
                crops, boxes = _area_crops(integral, boxes, w, h, 48, pad)
                reg, marks, probs = onet(crops)
                score = probs[:, 1]
                keep = score > _THRESHOLDS[2]
                marks = marks[keep].permute(1, 0)  # (10, N)
                boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
                mv = reg[keep]
                w_i = boxes[:, 2] - boxes[:, 0] + 1
                h_i = boxes[:, 3] - boxes[:, 1] + 1
                points_x = w_i.repeat(5, 1) * marks[:5, :] + boxes[:, 0].repeat(5, 1) - 1
                points_y = h_i.repeat(5, 1) * marks[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
                points = torch.stack((points_x, points_y)).permute(2, 1, 0)
                boxes = bbreg(boxes, mv)
                zeros = torch.zeros(len(boxes), dtype=torch.long, device=dev)
                pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], zeros, 0.7, "Min")
                boxes, points = boxes[pick], points[pick]
        boxes = boxes.cpu().numpy().astype(np.float64).reshape(-1, 5)
        return boxes, points.cpu().numpy().astype(np.float32).reshape(-1, 5, 2)


def _integral_image(rgb: np.ndarray, device):
    """(H+1, W+1, 3) sums of ``rgb`` (H, W, 3) uint8 over [0, y) × [0, x), exact: int32 (float64 beyond
    2³¹ / 255 pixels)."""
    import cv2
    import torch

    h, w = rgb.shape[:2]
    depth = cv2.CV_32S if 255 * h * w < 2**31 else cv2.CV_64F
    return torch.from_numpy(cv2.integral(rgb, sdepth=depth)).to(device)


def _windows(start, stop, size: int):
    """``adaptive_avg_pool2d``'s windows: output i of ``size`` averages [start + floor(i·n/size),
    start + ceil((i+1)·n/size)) for ``n = stop - start`` (tensors of starts and stops, one per crop)."""
    import torch

    i = torch.arange(size, device=start.device)
    n = (stop - start)[:, None]
    return start[:, None] + (i * n) // size, start[:, None] - ((-(i + 1) * n) // size)


def _area_average(integral, r0, r1, c0, c1):
    """Means over the windows rows [r0, r1) × columns [c0, c1) (each (N, k)) as (N, 3, kr, kc) float32."""
    r0, r1, c0, c1 = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
    sums = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]  # (N, kr, kc, 3)
    counts = ((r1 - r0) * (c1 - c0)).unsqueeze(-1)
    return (sums.double() / counts).float().permute(0, 3, 1, 2)  # channels-last in memory


def _pyramid_level(integral, height: int, width: int, out_h: int, out_w: int):
    """The image area-resampled to ``out_h × out_w`` (``interpolate(mode="area")``), (1, 3, out_h, out_w)."""
    import torch

    zero = torch.zeros(1, dtype=torch.long, device=integral.device)
    r0, r1 = _windows(zero, zero + height, out_h)
    c0, c1 = _windows(zero, zero + width, out_w)
    return _area_average(integral, r0, r1, c0, c1)


def _area_crops(integral, boxes, width: int, height: int, size: int, pad):
    """Every candidate's crop, area-resampled to ``size × size`` and normalised as MTCNN feeds its networks.

    facenet-pytorch crops rows ``[y - 1, ey)`` and columns ``[x - 1, ex)`` of the boxes ``pad`` clips to the
    image, and resizes each crop with ``interpolate(mode="area")``, i.e. ``adaptive_avg_pool2d``: output
    pixel i averages input rows ``[floor(i·n/size), ceil((i+1)·n/size))``. The same windows are summed here
    from the integral image, for all crops at once (exact integer sums, one division per value). Boxes whose
    clipped crop is empty are dropped (facenet-pytorch would misalign its crops and boxes on them).

    Returns:
        ``(crops, boxes)``: (N, 3, size, size) float32 (channels-last in memory) and the boxes kept.
    """
    import torch

    y, ey, x, ex = (
        torch.as_tensor(v, device=integral.device, dtype=torch.long) for v in pad(boxes, width, height)
    )
    valid = (ey > y - 1) & (ex > x - 1)
    if not bool(valid.all()):
        y, ey, x, ex, boxes = y[valid], ey[valid], x[valid], ex[valid], boxes[valid.to(boxes.device)]
    r0, r1 = _windows(y - 1, ey, size)
    c0, c1 = _windows(x - 1, ex, size)
    crops = _area_average(integral, r0, r1, c0, c1)
    return (crops - 127.5) * 0.0078125, boxes
