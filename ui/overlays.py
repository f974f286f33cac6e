"""``gr.AnnotatedImage`` values: the organ overlay, the model's uncertainty, and TP/FP/FN against ground truth.

The component has no opacity setting; it uses each annotation's mask value as alpha, so every
annotation here is ``mask × opacity``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from model import labels
from model.truth import confusion

#: Organ choices as the page shows them, and each one's overlay colour.
ORGAN_CHOICES = [labels.DISPLAY_NAMES[o] for o in labels.ORGANS]
COLOR_MAP = {labels.DISPLAY_NAMES[o]: labels.COLOURS[o] for o in labels.ORGANS}
#: The slice tab's confidence overlay: its legend name and colour.
UNCERTAINTY_LABEL = "Uncertain (1 − |2p − 1|)"
SLICE_COLOR_MAP = {**COLOR_MAP, UNCERTAINTY_LABEL: "#ffff00"}
#: Names and colours of the comparison overlay (true positive, false positive, false negative).
CONFUSION_COLOURS: dict[str, str] = {
    "True positive": "#ffd400",
    "False positive": "#ff00ff",
    "False negative": "#00e5ff",
}


def _alpha(opacity: float) -> float:
    return float(np.clip(opacity, 0.0, 1.0))


def organ_annotations(organ_masks: np.ndarray, opacity: float = 0.5,
                      visible: Iterable[str] = labels.ORGANS) -> list[tuple[np.ndarray, str]]:
    """One ``(mask (H, W) float32, display name)`` per visible organ of ``(O, H, W) bool`` masks.

    Every visible organ is listed, even when empty, so the legend always shows all three.
    """
    alpha = _alpha(opacity)
    return [(organ_masks[i].astype(np.float32) * alpha, labels.DISPLAY_NAMES[organ])
            for i, organ in enumerate(labels.ORGANS) if organ in visible]


def uncertainty_annotation(uncertainty: np.ndarray, opacity: float = 0.5) -> tuple[np.ndarray, str]:
    """The model's uncertainty ``(H, W)`` in 0..1 (:func:`model.review.uncertainty_map`) as a yellow layer."""
    return uncertainty * _alpha(opacity), UNCERTAINTY_LABEL


def confusion_annotations(organ_masks: np.ndarray, truth: np.ndarray, opacity: float = 0.5,
                          visible: Iterable[str] = labels.ORGANS) -> list[tuple[np.ndarray, str]]:
    """One annotation per :data:`CONFUSION_COLOURS` name from :func:`model.truth.confusion`."""
    alpha = _alpha(opacity)
    return [(m.astype(np.float32) * alpha, name)
            for m, name in zip(confusion(organ_masks, truth, visible), CONFUSION_COLOURS)]
