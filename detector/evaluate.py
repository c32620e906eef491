"""Evaluation of NFA-ViT on named validation sets, in one process or split across torchrun processes.

Each process scores every world_size-th image of a set. Rank 0 gathers the per-image results and computes
the metrics (see `detector.metrics`) once, so no image is counted twice.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import torch
from torch.utils.data import Subset
from tqdm import tqdm

from detector.checkpoint import load_model
from detector.data import ForgeryDataset, Sample, make_loader, normalize, read_dataset_specs
from detector.distributed import Runtime, start, stop
from detector.files import write_json, write_text
from detector.metrics import THRESHOLD, MetricAccumulator
from detector.model import NFAViT

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    ("images", "images"),
    ("forged_images", "forged"),
    ("pixel_f1", "pixel F1"),
    ("pixel_iou", "pixel IoU"),
    ("pixel_auc", "pixel AUC"),
    ("image_accuracy", "image acc"),
    ("image_auc", "image AUC"),
    ("image_ap", "image AP"),
    ("image_f1", "image F1"),
)


def evaluate(
    model: NFAViT,
    datasets: dict[str, list[Sample]],
    runtime: Runtime,
    batch_size: int,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    """Score `model` on each named dataset and return {name: metrics} in every process."""
    was_training = model.training
    model.eval()
    results = {}
    for name, samples in datasets.items():
        dataset = ForgeryDataset(samples, model.config.image_size)
        shard = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
        loader = make_loader(shard, batch_size, workers, pin_memory=runtime.device.type == "cuda")
        accumulator = MetricAccumulator()
        with torch.inference_mode(), runtime.autocast():
            for batch in tqdm(loader, desc=f"eval {name}", unit="batch", disable=not (progress and runtime.is_main), leave=False):
                output = model(normalize(batch["image"].to(runtime.device, non_blocking=True)))
                accumulator.add(
                    torch.sigmoid(output.segmentation.float()),
                    batch["mask"],
                    torch.sigmoid(output.classification.float()),
                    batch["label"],
                    batch["index"],
                )
        states = runtime.gather(accumulator.state())
        if runtime.is_main:
            accumulator.merge(states)
            results[name] = accumulator.result()
            logger.info("%s: %s", name, format_row(results[name]))
    model.train(was_training)
    return runtime.broadcast(results)


def format_value(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def format_row(metrics: dict) -> str:
    return ", ".join(f"{title} {format_value(metrics[key])}" for key, title in TABLE_COLUMNS)


def format_table(results: dict[str, dict]) -> str:
    """Return the results as a Markdown table, one row per dataset; '-' marks an undefined metric."""
    header = "| dataset | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in TABLE_COLUMNS) + " |"
    rows = [f"| {name} | " + " | ".join(format_value(metrics[key]) for key, _ in TABLE_COLUMNS) + " |" for name, metrics in results.items()]
    return "\n".join([header, rule, *rows]) + "\n"


def run_evaluation(
    checkpoint: str | Path,
    dataset_specs: list[str],
    output: str | Path,
    batch_size: int = 16,
    workers: int = 4,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> dict[str, dict]:
    """Evaluate a checkpoint on named datasets and write `metrics.json` and `metrics.md` into `output`.

    Returns {dataset name: metrics}. Under torchrun every process takes part and rank 0 writes the files.
    """
    runtime = start(device, precision)
    try:
        datasets = read_dataset_specs(dataset_specs)
        model, source = load_model(checkpoint)
        model.to(runtime.device)
        results = evaluate(model, datasets, runtime, batch_size, workers, progress)
        if runtime.is_main:
            output = Path(output)
            report = {
                "checkpoint": source,
                "image_size": model.config.image_size,
                "threshold": THRESHOLD,
                "world_size": runtime.world_size,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "datasets": results,
            }
            write_json(output / "metrics.json", report)
            write_text(output / "metrics.md", format_table(results))
        return results
    finally:
        stop()
