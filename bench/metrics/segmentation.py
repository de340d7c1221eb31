"""Semantic segmentation scores by the Cityscapes protocol.

One confusion matrix is accumulated over every pixel of a whole set (never averaged per
image); pixels whose ground truth is 255 are ignored. IoU of a class is
TP / (TP + FP + FN); the mean IoU is over the classes whose union is not empty (a class that
is neither in the ground truth nor predicted anywhere has no IoU and is left out, as
cityscapesScripts and mmsegmentation do).

The matrix has one extra column for predictions that are no class (a model's background
channel, or 255): such a pixel is a miss (FN) for its true class and a false positive for none.

>>> import numpy as np
>>> gt = np.array([[0, 0, 1, 255]], np.uint8); pred = np.array([[0, 1, 1, 0]], np.uint8)
>>> cm = confusion_matrix(gt, pred, 2)
>>> cm.tolist()
[[1, 1, 0], [0, 1, 0]]
>>> [round(v, 3) for v in iou_per_class(cm)]
[0.5, 0.5]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IGNORE = 255
Confusion = npt.NDArray[np.int64]


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> Confusion:
    """(K, K+1) counts: row = true class, column = predicted class, last column = no class.

    Pixels with ``gt`` == 255 are skipped; predictions outside 0..K-1 land in the last column.

    Raises:
        ValueError: the two maps differ in shape, or ``gt`` has values other than 0..K-1, 255.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"label map {gt.shape} and prediction {pred.shape} differ in shape")
    gt = gt.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    keep = gt != IGNORE
    gt, pred = gt[keep], pred[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise ValueError(f"ground truth has values outside 0..{num_classes - 1} and {IGNORE}")
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def iou_per_class(cm: Confusion) -> npt.NDArray[np.float64]:
    """IoU of each class; NaN for a class with an empty union (absent and never predicted)."""
    k = cm.shape[0]
    tp = np.diag(cm[:, :k]).astype(np.float64)
    union = cm.sum(axis=1) + cm[:, :k].sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: Confusion) -> float:
    """Mean of the defined per-class IoUs; NaN when no class is defined."""
    ious = iou_per_class(cm)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(cm: Confusion) -> float:
    """Correctly labelled pixels over all non-ignored pixels."""
    total = cm.sum()
    return float(np.trace(cm[:, : cm.shape[0]]) / total) if total else float("nan")


def encode_confusion(cm: Confusion) -> str:
    """A compact text form for CSV cells: ``K:i,j,n;i,j,n;...`` of the non-zero entries."""
    rows, cols = np.nonzero(cm)
    cells = ";".join(
        f"{i},{j},{cm[i, j]}" for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
    )
    return f"{cm.shape[0]}:{cells}"


def decode_confusion(text: str) -> Confusion:
    """Inverse of ``encode_confusion``."""
    size, _, cells = text.partition(":")
    k = int(size)
    cm = np.zeros((k, k + 1), dtype=np.int64)
    for cell in filter(None, cells.split(";")):
        i, j, n = (int(v) for v in cell.split(","))
        cm[i, j] = n
    return cm
