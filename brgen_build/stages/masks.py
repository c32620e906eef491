"""Stage `masks`: one mask per (real photo, kind) at `masks/<split>/<Kind>_<id>.png`.

Regions come from the source's annotations (the recipe's `annotation_format`: COCO detection JSON, COCO
panoptic JSON + PNGs, or COCO-Stuff label PNGs), or, for sources without annotations, from the recipe's
`masks.segmenter`. A photo with no usable region for a kind, or with neither, gets a `skipped` record with
the reason. Malformed annotations are skipped one by one and listed under `problems` in the mask's record.
Problems of an annotation file as a whole go to `manifests/masks/problems-<source>.json`.

The region rules and PNG encoding run in a process pool (`masks.workers`), since they are CPU-bound and
independent per mask. Workers write the mask PNGs; the main process writes the records.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from brgen_build.engine import Item, Stage, StageSummary
from brgen_build.errors import BrgenError
from brgen_build.files import atomic_write_bytes, encode_mask_png, read_png, sha256_bytes
from brgen_build.layout import DatasetRoot, mask_id
from brgen_build.manifest import OK, SKIPPED, read_records
from brgen_build.recipe import MaskRules, Recipe, SourceSpec
from brgen_build.seeding import derive_seed
from brgen_build.workers import usable_cpus
from mask_gen.categories import CategoryTable
from mask_gen.coco import CocoAnnotations, ImageAnnotations, PendingImage
from mask_gen.labelmaps import LabelMapAnnotations
from mask_gen.panoptic import PanopticAnnotations, default_png_path
from mask_gen.regions import background_region, stuff_region

logger = logging.getLogger(__name__)

# Maximum masks per batch: large enough to amortise inter-process transfer, the wait for the slowest worker and
# the manifest's fsync, small enough to show progress every few seconds.
BATCH_SIZE = 512
MAX_DEFAULT_WORKERS = 8


@dataclass
class MaskJob:
    """One mask of a photo: its kind, its seed and where its PNG goes."""

    kind: str
    seed: int
    path: Path


@dataclass
class PhotoTask:
    """Inputs of one photo's masks for a worker process: its segments (raw or converted), the rules and the masks."""

    annotations: ImageAnnotations | PendingImage
    categories: CategoryTable
    rules: MaskRules
    masks: list[MaskJob]


@dataclass
class StartedBatch:
    """A batch whose photos are resolved: records so far, render tasks, and the pool's pending results."""

    records: dict[str, dict]
    tasks: list[tuple[list[Item], PhotoTask]]
    results: Iterator[tuple[dict, list[dict]]] | None


def render_masks(task: PhotoTask) -> tuple[dict, list[dict]]:
    """Convert the photo's annotations, apply each mask's region rule, then encode and write the PNGs.

    Runs in a worker process. Returns the record fields shared by the photo's masks and, per mask, the
    region's fields plus `written` ({sha256, bytes}) when there is a mask or `reason` when not. PNGs are
    written without fsync: the record's sha256 lets the engine redo a mask that a power loss damaged.
    """
    image = task.annotations.load() if isinstance(task.annotations, PendingImage) else task.annotations
    shared = {"annotation_image_id": image.image_id, "problems": image.problems}
    results = []
    for job in task.masks:
        if job.kind == "Stuff":
            region = stuff_region(image, task.categories, task.rules.stuff, job.seed)
        else:
            region = background_region(image, task.categories, task.rules.background)
        result = region.describe()
        if region.mask is None:
            result["reason"] = region.reason
        else:
            png = encode_mask_png(region.mask)
            atomic_write_bytes(job.path, png, durable=False)
            result["written"] = {"sha256": sha256_bytes(png), "bytes": len(png)}
        results.append(result)
    return shared, results


def default_workers() -> int:
    """Worker processes when the recipe sets none: the CPUs this process may use, at most 8."""
    return min(MAX_DEFAULT_WORKERS, usable_cpus())


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
    # Fewer pending masks than this render in the main process: starting the pool would take longer.
    pool_threshold = 256

    def __init__(self, root: DatasetRoot, recipe: Recipe, workers: int | None = None):
        super().__init__(root)
        self.recipe = recipe
        self.workers = workers or recipe.masks.workers or default_workers()
        self._annotations: dict[str, object] = {}
        self._segmenter = None
        self._pool: ProcessPoolExecutor | None = None
        self._started: dict[str, StartedBatch] = {}
        self._following: dict[str, list[Item]] = {}

    def plan(self) -> list[Item]:
        reals = read_records(self.root.manifest_dir("reals"))
        if not reals:
            raise BrgenError(f"{self.root.path} has no real photos recorded yet; run `brgen build --stage reals` first")
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
        self.batch_size = self.choose_batch_size(len(pending))
        tokens = sorted({item.payload[0]["source"] for item in pending})
        for token in tokens:
            self.annotations(token)
        needs_segmenter = any(self._annotations[token] is None for token in tokens)
        if needs_segmenter and self.recipe.masks.segmenter is not None:
            from mask_gen.segmenters import load_segmenter

            self._segmenter = load_segmenter(self.recipe.masks.segmenter)
        if self.workers > 1 and len(pending) >= self.pool_threshold:
            # forkserver: workers do not inherit the parent's threads (torch, tqdm) or loaded models. The
            # server imports this module once, so each worker starts without importing it again.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)

    def choose_batch_size(self, pending: int) -> int:
        """Size batches so that each worker gets about four per run, up to BATCH_SIZE masks.

        Small runs thus record their progress photo by photo. A batch always contains whole photos, because
        the items of one photo are adjacent in the plan.
        """
        kinds = len(self.recipe.masks.kinds)
        return max(kinds, min(BATCH_SIZE, pending // (4 * self.workers)) // kinds * kinds)

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

    def batches(self, pending: list[Item]) -> Iterable[list[Item]]:
        batches = list(super().batches(pending))
        self._following = {batch[0].id: following for batch, following in zip(batches, batches[1:])}
        return batches

    def process(self, batch: list[Item]) -> list[dict]:
        """Finish this batch's masks; with a worker pool, first queue the next batch's, so workers never idle."""
        started = self._started.pop(batch[0].id, None) or self._start(batch)
        following = self._following.get(batch[0].id)
        if self._pool is not None and following is not None and following[0].id not in self._started:
            self._started[following[0].id] = self._start(following)
        return self._finish(batch, started)

    def _start(self, batch: list[Item]) -> StartedBatch:
        """Resolve the batch's photos to render tasks and, with a pool, queue them on the workers."""
        records = {}
        photos: dict[str, tuple[dict, list[Item]]] = {}
        for item in batch:
            real, kind = item.payload
            records[item.id] = {"id": item.id, "split": item.split, "real": real["id"], "kind": kind, "source": real["source"]}
            photos.setdefault(real["id"], (real, []))[1].append(item)

        tasks: list[tuple[list[Item], PhotoTask]] = []
        to_segment: list[tuple[dict, list[Item]]] = []
        for real, items in photos.values():
            annotations = self.annotations(real["source"])
            if annotations is None and self._segmenter is not None:
                to_segment.append((real, items))
                continue
            if annotations is None:
                reason = f"source {real['source']} has no `annotations` and the recipe sets no `masks.segmenter`"
                self._skip(records, items, reason)
                continue
            image = annotations.pending(real["member"]) if hasattr(annotations, "pending") else annotations.for_file(real["member"])
            for item in items:
                records[item.id]["annotation_format"] = annotations.format
            reason = self._unusable(annotations, image, real)
            if reason:
                self._skip(records, items, reason, getattr(image, "problems", []))
                continue
            tasks.append((items, PhotoTask(image, annotations.categories, self.recipe.masks, self._jobs(items))))
        if to_segment:
            tasks += self._segment(to_segment, records)

        results = None
        if self._pool is not None and len(tasks) >= 2:
            chunk = max(1, len(tasks) // (2 * self.workers))
            results = self._pool.map(render_masks, [task for _, task in tasks], chunksize=chunk)
        return StartedBatch(records, tasks, results)

    def _finish(self, batch: list[Item], started: StartedBatch) -> list[dict]:
        """Wait for the batch's masks (or render them here without a pool) and complete the records."""
        records, tasks = started.records, started.tasks
        rendered = list(started.results) if started.results is not None else [render_masks(task) for _, task in tasks]
        for (items, _), (shared, results) in zip(tasks, rendered):
            for item, job, result in zip(items, self._jobs(items), results):
                record = records[item.id]
                record.update({"seed": job.seed, **shared})
                written = result.pop("written", None)
                record.update(result)
                if written is None:
                    record["status"] = SKIPPED
                else:
                    relative = job.path.relative_to(self.root.path).as_posix()
                    record.update({"status": OK, "files": {"mask": {"path": relative, **written}}})
        return [records[item.id] for item in batch]

    def _jobs(self, items: list[Item]) -> list[MaskJob]:
        jobs = []
        for item in items:
            real, kind = item.payload
            jobs.append(MaskJob(kind, derive_seed(self.recipe.seed, f"mask-{kind}", real["id"]), self.root.mask(item.split, kind, real["id"])))
        return jobs

    @staticmethod
    def _skip(records: dict[str, dict], items: list[Item], reason: str, problems: list[str] | None = None) -> None:
        for item in items:
            records[item.id].update({"status": SKIPPED, "reason": reason, "problems": problems or []})

    @staticmethod
    def _unusable(annotations, image: ImageAnnotations | PendingImage | None, real: dict) -> str | None:
        if image is None:
            return f"{PurePosixPath(real['member']).name} has no entry in {annotations.source}"
        if getattr(image, "error", None):
            return image.error
        if (image.height, image.width) != (real["height"], real["width"]):
            return f"annotations are {image.width}x{image.height} but the photo is {real['width']}x{real['height']}"
        return None

    def _segment(self, photos: list[tuple[dict, list[Item]]], records: dict[str, dict]) -> list[tuple[list[Item], PhotoTask]]:
        """Run the segmenter on the photos of sources without annotations, a model batch at a time.

        Only photos of one size share a batch: padding a smaller photo changes the model's outputs, and a
        mask must not depend on which photos happened to be its neighbours.
        """
        segmenter = self._segmenter
        by_size: dict[tuple[int, int], list[tuple[dict, list[Item]]]] = {}
        for real, items in photos:
            by_size.setdefault((real["height"], real["width"]), []).append((real, items))
        chunks = []
        for group in by_size.values():
            chunks += [group[start : start + segmenter.spec.batch_size] for start in range(0, len(group), segmenter.spec.batch_size)]
        tasks = []
        for chunk in chunks:
            arrays = [read_png(self.root.absolute(real["files"]["au"]["path"])) for real, _ in chunk]
            for (real, items), image in zip(chunk, segmenter.segment(arrays, [real["id"] for real, _ in chunk])):
                for item in items:
                    records[item.id]["segmenter"] = segmenter.describe()
                tasks.append((items, PhotoTask(image, segmenter.categories, self.recipe.masks, self._jobs(items))))
        return tasks

    def finish(self, summary: StageSummary) -> None:
        # The engine skips finish when a BrgenError stops the run; the workers then end with this process.
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
