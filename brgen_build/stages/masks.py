"""Stage `masks`: one mask per (real photo, kind) at `masks/<split>/<Kind>_<id>.png`.

Regions come from the source's annotations (the recipe's `annotation_format`: COCO detection JSON, COCO
panoptic JSON + PNGs, or COCO-Stuff label PNGs), or, for sources without annotations, from the recipe's
`masks.segmenter`. A photo with no usable region for a kind, or with neither, gets a `skipped` record with
the reason. Malformed annotations are skipped one by one and listed under `problems` in the mask's record.
Problems of an annotation file as a whole go to `manifests/masks/problems-<source>.json`.

The region rules and PNG encoding run in a process pool (`masks.workers`), since they are CPU-bound and
independent per mask; files and records are written by the main process.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

from brgen_build.engine import Item, Stage
from brgen_build.errors import BrgenError
from brgen_build.files import atomic_write_bytes, encode_png, read_png, sha256_bytes
from brgen_build.layout import DatasetRoot, mask_id
from brgen_build.manifest import OK, SKIPPED, read_records
from brgen_build.recipe import MaskRules, Recipe, SourceSpec
from brgen_build.seeding import derive_seed
from mask_gen.categories import CategoryTable
from mask_gen.coco import CocoAnnotations, ImageAnnotations
from mask_gen.labelmaps import LabelMapAnnotations
from mask_gen.panoptic import PanopticAnnotations, default_png_path
from mask_gen.regions import background_region, stuff_region

logger = logging.getLogger(__name__)

# Masks per pool task list: large enough to amortise inter-process transfer, small enough to show progress.
BATCH_SIZE = 64
MAX_DEFAULT_WORKERS = 8


@dataclass
class RenderTask:
    """Inputs of one mask for a worker process: the image's segments, the rules and the seed."""

    kind: str
    annotations: ImageAnnotations
    categories: CategoryTable
    rules: MaskRules
    seed: int


def render_mask(task: RenderTask) -> dict:
    """Apply the region rule of `task.kind` and encode the mask; runs in a worker process.

    Returns the region's record fields, plus `png` (bytes) when there is a mask or `reason` when not.
    """
    if task.kind == "Stuff":
        region = stuff_region(task.annotations, task.categories, task.rules.stuff, task.seed)
    else:
        region = background_region(task.annotations, task.categories, task.rules.background)
    result = region.describe()
    if region.mask is None:
        result["reason"] = region.reason
    else:
        result["png"] = encode_png(region.mask)
    return result


def default_workers() -> int:
    """Worker processes when the recipe sets none: the CPUs this process may use, at most 8."""
    return max(1, min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def load_annotations(source: SourceSpec):
    """Open a source's annotations in the format its recipe entry names; None for a source without any."""
    if not source.annotations:
        return None
    table = CategoryTable.from_file(source.categories) if source.categories else None
    if source.annotation_format == "panoptic":
        json_path = source.annotations[0]
        return PanopticAnnotations(json_path, source.annotation_masks or default_png_path(json_path), table)
    if source.annotation_format == "stuffthingmaps":
        return LabelMapAnnotations(source.annotations[0], table)
    return CocoAnnotations.from_files(list(source.annotations), table)


class MasksStage(Stage):
    name = "masks"
    batch_size = BATCH_SIZE

    def __init__(self, root: DatasetRoot, recipe: Recipe, workers: int | None = None):
        super().__init__(root)
        self.recipe = recipe
        self.workers = workers or recipe.masks.workers or default_workers()
        self._annotations: dict[str, object] = {}
        self._segmenter = None
        self._pool: ProcessPoolExecutor | None = None

    def plan(self) -> list[Item]:
        reals = read_records(self.root.manifest_dir("reals"))
        items = []
        for real in sorted(reals.values(), key=lambda record: record["id"]):
            if real["status"] != OK:
                continue
            for kind in self.recipe.masks.kinds:
                items.append(Item(mask_id(kind, real["id"]), real["split"], (real, kind)))
        return items

    def prepare(self, pending: list[Item]) -> None:
        """Open every annotation source and load the segmenter before the first mask, so that a wrong path
        fails at once with its name instead of after hours of work."""
        tokens = sorted({item.payload[0]["source"] for item in pending})
        for token in tokens:
            self.annotations(token)
        needs_segmenter = any(self._annotations[token] is None for token in tokens)
        if needs_segmenter and self.recipe.masks.segmenter is not None:
            from mask_gen.segmenters import load_segmenter

            self._segmenter = load_segmenter(self.recipe.masks.segmenter)
        if self.workers > 1 and len(pending) > self.batch_size:
            # forkserver: workers do not inherit the parent's threads (torch, tqdm) or loaded models.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))

    def annotations(self, token: str):
        if token not in self._annotations:
            try:
                source = self.recipe.source(token)
            except KeyError:
                raise BrgenError(f"masks: the reals manifest names source {token!r}, which the recipe does not list") from None
            annotations = load_annotations(source)
            if annotations is not None and annotations.problems:
                self._record_file_problems(token, annotations)
            self._annotations[token] = annotations
        return self._annotations[token]

    def _record_file_problems(self, token: str, annotations) -> None:
        path = self.root.manifest_dir(self.name) / f"problems-{token}.json"
        report = {"source": token, "annotations": annotations.source, "format": annotations.format, "problems": annotations.problems}
        atomic_write_bytes(path, json.dumps(report, indent=1).encode("utf-8"))
        logger.warning(
            "masks: %s: %d annotation(s) skipped (first: %s); all listed in %s",
            annotations.source, len(annotations.problems), annotations.problems[0], path,
        )

    def process(self, batch: list[Item]) -> list[dict]:
        records: list[dict] = []
        tasks: list[tuple[int, RenderTask]] = []
        for item, (record, image, categories) in zip(batch, self._resolve(batch)):
            records.append(record)
            if image is not None:
                real, kind = item.payload
                seed = derive_seed(self.recipe.seed, f"mask-{kind}", real["id"])
                record.update({"seed": seed, "annotation_image_id": image.image_id, "problems": image.problems})
                tasks.append((len(records) - 1, RenderTask(kind, image, categories, self.recipe.masks, seed)))

        rendered = self._render([task for _, task in tasks])
        for (position, _), result in zip(tasks, rendered):
            record = records[position]
            png = result.pop("png", None)
            record.update(result)
            if png is None:
                record["status"] = SKIPPED
                continue
            path = self.root.mask(record["split"], record["kind"], record["real"])
            atomic_write_bytes(path, png)
            record.update({"status": OK, "files": {"mask": {"path": self.root.relative(path), "sha256": sha256_bytes(png), "bytes": len(png)}}})
        return records

    def _render(self, tasks: list[RenderTask]) -> list[dict]:
        if self._pool is None or len(tasks) < 2:
            return [render_mask(task) for task in tasks]
        chunk = max(1, len(tasks) // (4 * self.workers))
        return list(self._pool.map(render_mask, tasks, chunksize=chunk))

    def _resolve(self, batch: list[Item]) -> list[tuple[dict, ImageAnnotations | None, CategoryTable | None]]:
        """Find each item's segments: (record so far, segments or None when skipped, their category table)."""
        resolved = []
        to_segment: list[tuple[int, dict]] = []
        for item in batch:
            real, kind = item.payload
            record = {"id": item.id, "split": item.split, "real": real["id"], "kind": kind, "source": real["source"]}
            annotations = self.annotations(real["source"])
            if annotations is None:
                if self._segmenter is None:
                    reason = f"source {real['source']} has no `annotations` and the recipe sets no `masks.segmenter`"
                    resolved.append(({**record, "status": SKIPPED, "reason": reason}, None, None))
                else:
                    to_segment.append((len(resolved), real))
                    resolved.append((record, None, None))
                continue
            record["annotation_format"] = annotations.format
            image = annotations.for_file(real["member"])
            reason = self._unusable(annotations, image, real)
            if reason:
                problems = image.problems if image is not None else []
                resolved.append(({**record, "status": SKIPPED, "reason": reason, "problems": problems}, None, None))
                continue
            resolved.append((record, image, annotations.categories))
        if to_segment:
            self._segment(resolved, to_segment)
        return resolved

    @staticmethod
    def _unusable(annotations, image: ImageAnnotations | None, real: dict) -> str | None:
        if image is None:
            return f"{PurePosixPath(real['member']).name} has no entry in {annotations.source}"
        if image.error:
            return image.error
        if (image.height, image.width) != (real["height"], real["width"]):
            return f"annotations are {image.width}x{image.height} but the photo is {real['width']}x{real['height']}"
        return None

    def _segment(self, resolved: list, to_segment: list[tuple[int, dict]]) -> None:
        """Run the segmenter on the photos of sources without annotations, a model batch at a time."""
        segmenter = self._segmenter
        size = segmenter.spec.batch_size
        for start in range(0, len(to_segment), size):
            chunk = to_segment[start : start + size]
            photos = [read_png(self.root.absolute(real["files"]["au"]["path"])) for _, real in chunk]
            for (position, real), image in zip(chunk, segmenter.segment(photos, [real["id"] for _, real in chunk])):
                record = resolved[position][0]
                record["segmenter"] = segmenter.describe()
                resolved[position] = (record, image, segmenter.categories)

    def finish(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
