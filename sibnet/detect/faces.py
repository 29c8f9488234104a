"""Face detection with MTCNN (facenet-pytorch), the detector the paper's pipeline uses for face boxes (§4.2).

SIB-Net's face branch needs one face box per person; EMOTIC ships person boxes only and CAER-S ships no
boxes, so faces come from MTCNN (Zhang et al., 2016). This wraps facenet-pytorch's implementation, whose
P-Net/R-Net/O-Net weights ship inside the wheel, so it works offline. The model is built in the
constructor, never when this module is imported.

Two quirks of facenet-pytorch 2.5.3 are handled here: on numpy 2 it returns boxes, probabilities and
landmarks as ``dtype=object`` arrays (cast to float), and it raises on images whose short side is below
``min_face_size`` (nothing to find there, so no faces are returned).
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
        min_face_size: the smallest face, in pixels, MTCNN looks for.
    """

    def __init__(
        self, device: str = "cpu", min_prob: float = FACE_MIN_PROB, min_face_size: int = MIN_FACE_SIZE
    ):
        # Imported here so that importing sibnet.detect stays cheap (facenet-pytorch pulls in torch models).
        from facenet_pytorch import MTCNN

        self.device = device
        self.min_prob = float(min_prob)
        self.min_face_size = int(min_face_size)
        # keep_all: every face, not only the best; post_process is about the crops MTCNN can return, unused
        # here; select_largest=False orders detections by probability rather than by size.
        self._mtcnn = MTCNN(
            keep_all=True,
            post_process=False,
            select_largest=False,
            min_face_size=self.min_face_size,
            device=device,
        )
        # The networks are shared state; concurrent forward passes from web requests are serialised.
        self._lock = threading.Lock()

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
        if min(height, width) < self.min_face_size:
            return []  # no pyramid level fits; facenet-pytorch would raise on an empty torch.cat
        with self._lock:
            boxes, probs, points = self._mtcnn.detect(np.ascontiguousarray(rgb), landmarks=True)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
        faces = []
        for box, prob, landmarks in zip(boxes, probs, points):
            clipped = clip_box(box, width, height)
            if prob >= self.min_prob and not is_empty(clipped):
                faces.append(FaceDetection(box=clipped, prob=float(prob), landmarks=landmarks.copy()))
        return faces
