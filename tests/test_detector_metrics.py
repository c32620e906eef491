"""Detector metrics against values computed by hand on small arrays."""

import numpy as np
import pytest
import torch

from detector.metrics import MetricAccumulator, average_precision, binary_auc, image_metrics, pixel_metrics

# Pixel probabilities and mask of a 2x3 image. Thresholded at > 0.5: TP (0,0), (0,1); FP (1,1); FN (1,0).
PROBABILITIES = np.array([[0.9, 0.6, 0.2], [0.4, 0.7, 0.1]])
MASK = np.array([[1, 1, 0], [1, 0, 0]])


def test_pixel_f1_by_hand():
    assert pixel_metrics(PROBABILITIES, MASK)["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_pixel_iou_by_hand():
    assert pixel_metrics(PROBABILITIES, MASK)["iou"] == pytest.approx(2 / 4)


def test_pixel_auc_by_hand():
    # Forged pixels 0.9, 0.6, 0.4 against clean pixels 0.2, 0.7, 0.1: 3 + 2 + 2 of 9 pairs ordered right.
    assert pixel_metrics(PROBABILITIES, MASK)["auc"] == pytest.approx(7 / 9)


def test_threshold_is_strict():
    metrics = pixel_metrics(np.array([0.5, 0.5]), np.array([1, 0]))
    assert metrics["f1"] == 0.0


def test_auc_counts_ties_half():
    # Positives 0.5, 0.8 against negatives 0.5, 0.2: (0.5 + 1) + (1 + 1) of 4 pairs.
    assert binary_auc(np.array([0.5, 0.5, 0.2, 0.8]), np.array([1, 0, 0, 1])) == pytest.approx(3.5 / 4)


def test_auc_undefined_with_one_class():
    assert binary_auc(np.array([0.1, 0.9]), np.array([0, 0])) is None


def test_average_precision_by_hand():
    # Ranked 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-): recall 1/2 at precision 1, recall 1 at precision 2/3.
    assert average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_average_precision_ties_share_a_threshold():
    # 0.8 (+) and 0.8 (-) are one threshold: precision 1/2 at recall 1/2, then 2/3 at recall 1.
    assert average_precision(np.array([0.8, 0.8, 0.3]), np.array([1, 0, 1])) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_average_precision_undefined_without_positives():
    assert average_precision(np.array([0.3, 0.6]), np.array([0, 0])) is None


def test_image_metrics_by_hand():
    # Predicted > 0.5: 1, 1, 0, 0, 1 against labels 1, 0, 1, 0, 1: TP 2, FP 1, FN 1, TN 1.
    metrics = image_metrics(np.array([0.9, 0.6, 0.3, 0.2, 0.55]), np.array([1, 0, 1, 0, 1]))
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["f1"] == pytest.approx(4 / 6)
    # Positives 0.9, 0.3, 0.55 against negatives 0.6, 0.2: 2 + 1 + 1 of 6 pairs.
    assert metrics["auc"] == pytest.approx(4 / 6)
    # Ranked 0.9 (+), 0.6 (-), 0.55 (+), 0.3 (+), 0.2 (-): recall steps 1/3 each at precision 1, 2/3, 3/4.
    assert metrics["ap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_image_f1_undefined_on_authentic_set_without_alarms():
    metrics = image_metrics(np.array([0.1, 0.2]), np.array([0, 0]))
    assert metrics["accuracy"] == 1.0
    assert metrics["f1"] is None


def test_accumulator_averages_forged_images_only():
    accumulator = MetricAccumulator()
    probabilities = torch.tensor(np.stack([PROBABILITIES, np.full((2, 3), 0.9)]), dtype=torch.float32)[:, None]
    masks = torch.tensor(np.stack([MASK, np.zeros((2, 3))]), dtype=torch.uint8)[:, None]
    accumulator.add(probabilities, masks, torch.tensor([0.9, 0.6]), torch.tensor([1.0, 0.0]), torch.tensor([0, 1]))
    result = accumulator.result()
    assert result["images"] == 2
    assert result["forged_images"] == 1
    assert result["pixel_f1"] == pytest.approx(2 / 3)
    assert result["pixel_auc"] == pytest.approx(7 / 9)
    assert result["image_accuracy"] == pytest.approx(1 / 2)


def test_accumulator_merges_shards_by_index():
    shards = []
    for indices in ([0, 2], [1]):
        accumulator = MetricAccumulator()
        count = len(indices)
        accumulator.add(torch.full((count, 1, 2, 3), 0.1), torch.zeros(count, 1, 2, 3), torch.tensor([0.1 * (i + 1) for i in indices]),
                        torch.tensor([float(i == 2) for i in indices]), torch.tensor(indices))
        shards.append(accumulator.state())
    merged = MetricAccumulator()
    merged.merge(shards)
    assert merged.indices == [0, 1, 2]
    assert merged.scores == pytest.approx([0.1, 0.2, 0.3])
    assert merged.result()["image_auc"] == 1.0
    assert merged.result()["pixel_f1"] is None
