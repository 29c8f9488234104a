"""Label sets of the two benchmarks (paper §4.1).

EMOTIC has 26 discrete categories (multi-label, sigmoid scores, mAP); CAER-S has 7 classes (single label,
accuracy). The order below is the order of the logits. A checkpoint stores its own label list, so a model
trained on another label set loads and displays correctly. Which dataset uses which list (and whether it is
multi-label) is the dataset registry's business: :func:`sibnet.data.registry.get_dataset`.
"""

EMOTIC_CATEGORIES: tuple[str, ...] = (
    "Affection",
    "Anger",
    "Annoyance",
    "Anticipation",
    "Aversion",
    "Confidence",
    "Disapproval",
    "Disconnection",
    "Disquietment",
    "Doubt/Confusion",
    "Embarrassment",
    "Engagement",
    "Esteem",
    "Excitement",
    "Fatigue",
    "Fear",
    "Happiness",
    "Pain",
    "Peace",
    "Pleasure",
    "Sadness",
    "Sensitivity",
    "Suffering",
    "Surprise",
    "Sympathy",
    "Yearning",
)

CAER_CLASSES: tuple[str, ...] = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")

# CAER-S folders name some classes differently across releases and splits (e.g. `Angry` in one split,
# `Anger` in another). Every alias maps to the canonical name above; matching is case-insensitive.
CAER_ALIASES: dict[str, str] = {
    "angry": "Anger",
    "anger": "Anger",
    "disgust": "Disgust",
    "disgusted": "Disgust",
    "fear": "Fear",
    "fearful": "Fear",
    "happy": "Happy",
    "happiness": "Happy",
    "neutral": "Neutral",
    "sad": "Sad",
    "sadness": "Sad",
    "surprise": "Surprise",
    "surprised": "Surprise",
}


def canonical_caer_class(folder_name: str) -> str:
    """Map a CAER-S class folder name to its canonical class.

    Args:
        folder_name: the folder's name, e.g. ``"Angry"``.

    Returns:
        The canonical class name from ``CAER_CLASSES``.

    Raises:
        ValueError: the name is not a known class or alias; the message lists the valid ones.
    """
    key = folder_name.strip().lower()
    if key not in CAER_ALIASES:
        valid = ", ".join(sorted({*CAER_CLASSES, *(a.capitalize() for a in CAER_ALIASES)}))
        raise ValueError(f"unknown CAER-S class folder {folder_name!r}; expected one of: {valid}")
    return CAER_ALIASES[key]
