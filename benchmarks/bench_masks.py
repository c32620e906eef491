"""Masks per second: the masks stage against a plain per-annotation baseline, in one run.

The annotations are synthetic but shaped like COCO's: each image copies one of the two bundled photos'
real annotations (50 segments, 7 of them stuff) and moves every segment by a random shift and scale.
Thing instances are written as polygons (uncompressed RLE for crowds), as `instances_*.json` stores them,
and stuff as compressed RLE, as `stuff_*.json` does. Both pipelines build the same two masks per image:

- Stuff: every stuff region, things cut out (area window [0, 1], so the seeded choice keeps every class);
- Background: everything but the largest non-crowd thing grown by 5 pixels.

Baseline: pycocotools `COCO.annToMask` for every annotation, numpy unions, `PIL.Image.save` to a file.
brgen: `MasksStage` through `run_stage` (RLE unions with pycocotools, one decode per mask, PNG level 1,
a process pool, atomic writes and the JSON Lines manifest), on a reals manifest that lists the images.
The masks of both pipelines are compared pixel by pixel before the ratio is printed.

Reading the annotation file is left out of both timings (`COCO(...)` for the baseline, the stage's reader
for brgen): it happens once per run, while the masks of a full dataset take hours. The pool's start is timed.

Run: python benchmarks/bench_masks.py [--images 300] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brgen_build.engine import run_stage  # noqa: E402
from brgen_build.files import read_png  # noqa: E402
from brgen_build.layout import DatasetRoot  # noqa: E402
from brgen_build.manifest import ManifestWriter  # noqa: E402
from brgen_build.stages.masks import MasksStage  # noqa: E402
from manifests import data_path  # noqa: E402
from mask_gen.categories import CategoryTable  # noqa: E402

PANOPTIC = CategoryTable.bundled("coco_panoptic")
MARGIN_PX = 5


def jitter(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move a bool mask by up to 20 pixels and scale it by 0.9-1.1 around the image centre."""
    height, width = mask.shape
    scale = rng.uniform(0.9, 1.1)
    shift_x, shift_y = rng.integers(-20, 21, size=2)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, scale)
    matrix[:, 2] += (shift_x, shift_y)
    return cv2.warpAffine(mask.astype(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST) > 0


def polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [contour.reshape(-1).astype(float).tolist() for contour in contours if len(contour) >= 3]


def uncompressed(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] + counts) if flat[0] else counts}


def synthesize(images: int, seed: int) -> dict:
    """Build a COCO detection-format dataset of `images` jittered copies of the sample's annotations."""
    sample = json.loads(data_path("sample", "annotations.json").read_text())
    rng = np.random.default_rng(seed)
    bases = []
    for image in sample["images"]:
        own = [a for a in sample["annotations"] if a["image_id"] == image["id"]]
        decoded = [(a, mask_utils.decode(dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())).astype(bool)) for a in own]
        bases.append((image, decoded))
    data = {"images": [], "annotations": [], "categories": sample["categories"]}
    for number in range(images):
        image, decoded = bases[number % len(bases)]
        image_id = 1_000_000 + number
        data["images"].append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": image["height"], "width": image["width"]})
        for annotation, mask in decoded:
            moved = jitter(mask, rng)
            if not moved.any():
                continue
            if not PANOPTIC.is_thing(annotation["category_id"]):
                rle = mask_utils.encode(np.asfortranarray(moved.astype(np.uint8)))
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            elif annotation["iscrowd"]:
                segmentation = uncompressed(moved)
            else:
                segmentation = polygons(moved)
                if not segmentation:
                    continue
            data["annotations"].append(
                {"id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": annotation["category_id"],
                 "iscrowd": annotation["iscrowd"], "segmentation": segmentation}
            )
    return data


def baseline(coco: COCO, out: Path) -> int:
    """Build every mask with one annToMask per annotation, numpy unions and PIL saves; return the mask count."""
    written = 0
    for image_id in sorted(coco.imgs):
        image = coco.imgs[image_id]
        stuff = np.zeros((image["height"], image["width"]), bool)
        things = np.zeros_like(stuff)
        largest, largest_pixels = None, -1
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(annotation).astype(bool)
            if PANOPTIC.is_thing(annotation["category_id"]):
                things |= mask
                pixels = int(mask.sum())
                if not annotation["iscrowd"] and pixels > largest_pixels:
                    largest, largest_pixels = mask, pixels
            else:
                stuff |= mask
        stem = Path(image["file_name"]).stem
        Image.fromarray(((stuff & ~things) * 255).astype(np.uint8)).save(out / f"Stuff_{stem}.png")
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MARGIN_PX + 1, 2 * MARGIN_PX + 1))
        kept = cv2.dilate(largest.astype(np.uint8), kernel) > 0
        Image.fromarray(((~kept) * 255).astype(np.uint8)).save(out / f"Background_{stem}.png")
        written += 2
    return written


def prepare_root(folder: Path, annotation_path: Path, data: dict, workers: int) -> DatasetRoot:
    """Make a dataset root whose reals manifest lists the synthetic images, with a recipe for the two masks."""
    recipe = {
        "name": "bench-masks",
        "seed": 0,
        "sources": [{"token": "COCO", "kind": "coco", "images": str(folder), "annotations": str(annotation_path),
                     "categories": str(data_path("categories", "coco_panoptic.json"))}],
        "splits": {"train": 1, "test": 0, "val": 0},
        "masks": {
            "workers": workers,
            "stuff": {"area": [0.0, 1.0], "min_region": 0.0, "dilate_px": 0},
            "background": {"area": [0.0, 1.0], "margin_px": MARGIN_PX, "main_object": "largest"},
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    root = DatasetRoot(folder / "root")
    root.load_recipe(recipe_path)
    with ManifestWriter(root.manifest_dir("reals") / "shard-0-of-1.jsonl") as writer:
        for image in data["images"]:
            stem = Path(image["file_name"]).stem
            writer.append({"id": f"COCO_{stem}", "split": "train", "status": "ok", "source": "COCO", "member": image["file_name"],
                           "height": image["height"], "width": image["width"]})
    return root


def loaded_stage(root: DatasetRoot, workers: int) -> MasksStage:
    """Make a masks stage whose annotation file is already read, as `COCO(...)` is for the baseline."""
    stage = MasksStage(root, root.load_recipe(None), workers=workers)
    stage.annotations("COCO")
    return stage


def brgen_masks(stage: MasksStage) -> int:
    summary = run_stage(stage, progress=False)
    if summary.counts["ok"] != summary.planned:
        raise SystemExit(f"masks stage did not finish every mask: {summary.line()}")
    return summary.counts["ok"]


def check_equal(baseline_dir: Path, root: DatasetRoot, data: dict, every: int) -> int:
    """Compare the two pipelines' masks for every `every`-th image; return how many masks were compared."""
    compared = 0
    for image in data["images"][::every]:
        stem = Path(image["file_name"]).stem
        for kind in ("Stuff", "Background"):
            expected = np.asarray(Image.open(baseline_dir / f"{kind}_{stem}.png"))
            actual = read_png(root.mask("train", kind, f"COCO_{stem}"))
            if not np.array_equal(expected, actual):
                raise SystemExit(f"{kind} mask of image {stem} differs between the baseline and brgen")
            compared += 1
    return compared


def spin(iterations: int) -> float:
    started = time.perf_counter()
    total = 0
    for value in range(iterations):
        total += value * value
    return time.perf_counter() - started


def effective_cores(workers: int) -> float:
    """Estimate how many cores this run gets: one pure-Python loop alone, then `workers` copies at once."""
    iterations = 5_000_000
    alone = spin(iterations)
    with ProcessPoolExecutor(workers) as pool:
        started = time.perf_counter()
        list(pool.map(spin, [iterations] * workers))
        together = time.perf_counter() - started
    return workers * alone / together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="synthetic images (two masks each); default 300")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the masks stage; default 2")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each pipeline; the median ratio counts; default 3")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-masks-"))
    try:
        data = synthesize(arguments.images, arguments.seed)
        annotation_path = folder / "instances_and_stuff.json"
        annotation_path.write_text(json.dumps(data))
        baseline_dir = folder / "baseline"
        baseline_dir.mkdir()
        print(f"{len(data['images'])} images, {len(data['annotations'])} annotations, {os.cpu_count()} CPUs, "
              f"effective cores for {arguments.workers} processes before the runs: {effective_cores(arguments.workers):.2f}")

        # Each repeat runs the baseline and then brgen, and the ratio is taken within the repeat, so load from
        # other processes on a shared machine changes both sides of a ratio alike. The median ratio counts.
        worker_counts = sorted({1, arguments.workers})
        baseline_seconds, brgen_seconds = [], {workers: [] for workers in worker_counts}
        for repeat in range(arguments.repeats):
            shutil.rmtree(baseline_dir)
            baseline_dir.mkdir()
            coco = COCO(str(annotation_path))
            started = time.perf_counter()
            baseline_count = baseline(coco, baseline_dir)
            baseline_seconds.append(time.perf_counter() - started)
            for workers in worker_counts:
                root = prepare_root(folder / f"run-{repeat}-workers-{workers}", annotation_path, data, workers)
                stage = loaded_stage(root, workers)
                started = time.perf_counter()
                count = brgen_masks(stage)
                brgen_seconds[workers].append(time.perf_counter() - started)

        print(f"baseline (annToMask per annotation, numpy, PIL save): {baseline_count} masks; "
              f"runs {', '.join(f'{t:.2f}' for t in baseline_seconds)} s; median {baseline_count / statistics.median(baseline_seconds):.1f} masks/s")
        for workers, seconds in brgen_seconds.items():
            ratios = [base / own for base, own in zip(baseline_seconds, seconds)]
            print(f"brgen masks stage, {workers} worker(s): {count} masks; runs {', '.join(f'{t:.2f}' for t in seconds)} s; "
                  f"median {count / statistics.median(seconds):.1f} masks/s; ratio to the baseline per repeat "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f}x")
        print(f"effective cores after the runs: {effective_cores(arguments.workers):.2f}")
        compared = check_equal(baseline_dir, root, data, every=7)
        print(f"identical masks: {compared} of {compared} compared")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
