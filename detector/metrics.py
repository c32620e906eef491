"""Forgery localisation and detection metrics, with IMDLBenCo's definitions.

Pixel level, per image, at the network's input resolution: F1 and IoU of the prediction thresholded at
`> 0.5`, and the ROC AUC of the pixel probabilities. Each is averaged over the images that have a forged
pixel. IMDLBenCo averages over all images and scores an image without forged pixels as 0, so the two
agree on sets of forgeries, such as BR-Gen's stuff, background, diffusion and GAN validation sets.

Image level, over all images, from the detection probability: accuracy and F1 at `> 0.5`, ROC AUC, and
average precision (the step-wise sum over thresholds, as scikit-learn's `average_precision_score`).

A metric without a defined value (an AUC on a set with one class, pixel metrics on a set of authentic
images) is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

THRESHOLD = 0.5


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Return the ROC AUC of `scores` against binary `labels`, ties counting one half; None with one class.

    Counts, for every positive, the negatives scored below it plus half of those scored equal, by binary
    search in the sorted negative scores: O(n log n) without a full argsort.
    """
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    positives = np.sort(scores[labels])
    negatives = np.sort(scores[~labels])
    if positives.size == 0 or negatives.size == 0:
        return None
    below = np.searchsorted(negatives, positives, side="left").sum(dtype=np.int64)
    at_or_below = np.searchsorted(negatives, positives, side="right").sum(dtype=np.int64)
    return float(below + at_or_below) / 2.0 / (positives.size * negatives.size)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Return the average precision, the sum over thresholds of (R_n - R_n-1) * P_n; None without positives."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    positives = labels.sum()
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # One threshold per distinct score: the last position of each run of equal scores.
    last_of_run = np.flatnonzero(np.diff(scores, append=-np.inf) != 0)
    true_positives = np.cumsum(labels)[last_of_run]
    precision = true_positives / (last_of_run + 1)
    recall = true_positives / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def f1_score(true_positives: int, false_positives: int, false_negatives: int) -> float | None:
    denominator = 2 * true_positives + false_positives + false_negatives
    return None if denominator == 0 else 2 * true_positives / denominator


def pixel_metrics(probabilities: np.ndarray, mask: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float | None]:
    """Return F1, IoU and AUC of one image's pixel probabilities against its mask (1 = forged)."""
    probabilities = np.asarray(probabilities).ravel()
    truth = np.asarray(mask).ravel().astype(bool)
    predicted = probabilities > threshold
    true_positives = int(np.count_nonzero(predicted & truth))
    false_positives = int(np.count_nonzero(predicted & ~truth))
    false_negatives = int(np.count_nonzero(~predicted & truth))
    union = true_positives + false_positives + false_negatives
    return {
        "f1": f1_score(true_positives, false_positives, false_negatives),
        "iou": None if union == 0 else true_positives / union,
        "auc": binary_auc(probabilities, truth),
    }


def image_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float | None]:
    """Return accuracy, F1, AUC and average precision of per-image probabilities against labels (1 = forged)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    predicted = scores > threshold
    true_positives = int(np.count_nonzero(predicted & labels))
    false_positives = int(np.count_nonzero(predicted & ~labels))
    false_negatives = int(np.count_nonzero(~predicted & labels))
    return {
        "accuracy": float(np.mean(predicted == labels)) if labels.size else None,
        "f1": f1_score(true_positives, false_positives, false_negatives),
        "auc": binary_auc(scores, labels),
        "ap": average_precision(scores, labels),
    }


@dataclass
class MetricAccumulator:
    """Collects per-image results batch by batch; `result()` returns the metrics of everything added.

    Only per-image numbers are kept, so the state of each process of a distributed evaluation is small
    enough to gather (`state`, `merge`).
    """

    threshold: float = THRESHOLD
    pixel: list[dict[str, float | None]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)

    def add(self, probabilities: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        """Add a batch: pixel probabilities and masks [B,1,H,W], image probabilities and labels [B], dataset indices [B]."""
        probabilities = probabilities.float().cpu().numpy()
        masks = masks.cpu().numpy()
        for probability_map, mask in zip(probabilities, masks):
            self.pixel.append(pixel_metrics(probability_map, mask, self.threshold) if mask.any() else {})
        self.scores += scores.float().cpu().tolist()
        self.labels += labels.float().cpu().tolist()
        self.indices += indices.cpu().tolist()

    def state(self) -> dict:
        return {"pixel": self.pixel, "scores": self.scores, "labels": self.labels, "indices": self.indices}

    def merge(self, states: list[dict]) -> None:
        """Replace the contents by the union of several states, one row per dataset index."""
        rows = {}
        for state in states:
            for index, pixel, score, label in zip(state["indices"], state["pixel"], state["scores"], state["labels"]):
                rows[index] = (pixel, score, label)
        self.indices = sorted(rows)
        self.pixel = [rows[index][0] for index in self.indices]
        self.scores = [rows[index][1] for index in self.indices]
        self.labels = [rows[index][2] for index in self.indices]

    def result(self) -> dict[str, float | int | None]:
        forged = [row for row in self.pixel if row]
        metrics: dict[str, float | int | None] = {"images": len(self.scores), "forged_images": len(forged)}
        for name in ("f1", "iou", "auc"):
            values = [row[name] for row in forged if row[name] is not None]
            metrics[f"pixel_{name}"] = sum(values) / len(values) if values else None
        image = image_metrics(np.array(self.scores), np.array(self.labels), self.threshold)
        metrics.update({f"image_{name}": value for name, value in image.items()})
        return metrics
