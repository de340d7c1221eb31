"""mIoU by the Cityscapes protocol against scikit-learn's confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics.segmentation import (
    confusion_matrix,
    decode_confusion,
    encode_confusion,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")

K = 19


def _reference(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per-class IoU, mIoU and pixel accuracy from scikit-learn, written independently."""
    keep = gt.ravel() != 255
    y_true, y_pred = gt.ravel()[keep], pred.ravel()[keep]
    y_pred = np.where(y_pred < K, y_pred, K)  # "no class" as label K
    cm = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=list(range(K + 1)))
    ious = []
    for c in range(K):
        tp = cm[c, c]
        fn = cm[c, :].sum() - tp
        fp = cm[:K, c].sum() - tp
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    ious = np.array(ious)
    return ious, float(np.nanmean(ious)), float(np.trace(cm[:K, :K]) / cm[:K].sum())


def _random_maps(seed: int, shape=(64, 96)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, K, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255  # ignored pixels
    gt[np.isin(gt, [3, 16])] = 255  # classes absent from the ground truth
    pred = gt.copy()
    noise = rng.random(shape) < 0.3
    pred[noise] = rng.integers(0, K + 1, size=int(noise.sum()))  # K: the background channel
    pred[gt == 255] = rng.integers(0, K, size=int((gt == 255).sum()))
    pred[pred == 16] = 5  # class 16: absent and never predicted -> no IoU
    return gt, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn_with_ignore_and_absent_classes(seed):
    gt, pred = _random_maps(seed)
    cm = confusion_matrix(gt, pred, K)
    ref_ious, ref_miou, ref_acc = _reference(gt, pred)
    ious = iou_per_class(cm)
    assert np.array_equal(np.isnan(ious), np.isnan(ref_ious))
    assert np.isnan(ious[16])  # absent, never predicted
    assert ious[3] == 0.0  # absent from ground truth but predicted: a defined IoU of 0
    np.testing.assert_allclose(
        ious[~np.isnan(ious)], ref_ious[~np.isnan(ref_ious)], rtol=0, atol=1e-12
    )
    assert mean_iou(cm) == pytest.approx(ref_miou, abs=1e-12)
    assert pixel_accuracy(cm) == pytest.approx(ref_acc, abs=1e-12)


def test_set_level_matrix_is_the_sum_not_a_mean_of_images():
    maps = [_random_maps(seed) for seed in range(4)]
    total = sum(confusion_matrix(gt, pred, K) for gt, pred in maps)
    gt_all = np.concatenate([gt for gt, _ in maps])
    pred_all = np.concatenate([pred for _, pred in maps])
    assert np.array_equal(total, confusion_matrix(gt_all, pred_all, K))
    per_image = np.mean([mean_iou(confusion_matrix(gt, pred, K)) for gt, pred in maps])
    assert mean_iou(total) == pytest.approx(_reference(gt_all, pred_all)[1], abs=1e-12)
    assert mean_iou(total) != pytest.approx(per_image, abs=1e-6)


def test_perfect_prediction_and_round_trip_of_the_text_form():
    gt, _ = _random_maps(5)
    pred = np.where(gt == 255, 0, gt)
    cm = confusion_matrix(gt, pred, K)
    assert mean_iou(cm) == 1.0 and pixel_accuracy(cm) == 1.0
    assert np.array_equal(decode_confusion(encode_confusion(cm)), cm)


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), K)
    with pytest.raises(ValueError, match=r"outside 0\.\.18"):
        confusion_matrix(np.full((2, 2), 30, np.uint8), np.zeros((2, 2), np.uint8), K)
    assert math.isnan(mean_iou(np.zeros((K, K + 1), np.int64)))
