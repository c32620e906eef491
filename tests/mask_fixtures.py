"""Mask-stage runs, and the bundled sample's real annotations rewritten in the other COCO formats.

The sample ships panoptic-id RLE (`manifests/sample/annotations.json`) and panoptic PNGs
(`tests/data/coco-panoptic/`). From them these helpers write what COCO distributes for train2017:
`stuff_*.json` (one RLE per image and COCO-Stuff stuff class, plus class 183 "other" for thing pixels),
`instances_*.json` (polygons for single objects, uncompressed RLE for crowds) and stuffthingmaps label PNGs.
Merged panoptic classes (`tree-merged`) map to the COCO-Stuff class of the same stem (`tree`).
"""

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from brgen_build.engine import run_stage
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records
from brgen_build.stages.masks import MasksStage
from brgen_build.stages.reals import RealsStage
from conftest import SAMPLE_DIR, write_recipe
from mask_gen.categories import CategoryTable

PANOPTIC_DIR = Path(__file__).parent / "data" / "coco-panoptic"
PANOPTIC_TABLE = CategoryTable.bundled("coco_panoptic")
STUFF_TABLE = CategoryTable.bundled("coco_stuff")


def build_masks(folder: Path, data: dict, workers: int = 1):
    """Run reals and masks for a recipe mapping; return the root, the masks records and the summary."""
    root = DatasetRoot(folder / "root")
    recipe = root.load_recipe(write_recipe(folder, data))
    run_stage(RealsStage(root, recipe), progress=False)
    summary = run_stage(MasksStage(root, recipe, workers=workers), progress=False)
    return root, read_records(root.manifest_dir("masks")), summary


def sample_annotations() -> dict:
    return json.loads((SAMPLE_DIR / "annotations.json").read_text())


def coco_stuff_id(panoptic_id: int) -> int | None:
    """COCO-Stuff id of a panoptic category: the same id below 184, else the class named like the merged one."""
    if panoptic_id < 184:
        return panoptic_id
    stem = PANOPTIC_TABLE.name(panoptic_id).removesuffix("-merged")
    category = STUFF_TABLE.by_name(stem)
    return category.id if category else None


def decode(annotation: dict) -> np.ndarray:
    rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
    return mask_utils.decode(rle).astype(bool)


def compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def uncompressed(mask: np.ndarray) -> dict:
    """Uncompressed RLE as `instances_*.json` stores crowds: run lengths in column-major order, from 0s."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [contour.reshape(-1).astype(float).tolist() for contour in contours if len(contour) >= 3]


def write_stuff_and_instances(folder: Path) -> tuple[Path, Path]:
    """Write `stuff_sample.json` and `instances_sample.json` from the sample; return both paths."""
    data = sample_annotations()
    stuff, instances = [], []
    for image in data["images"]:
        own = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        other = np.zeros((image["height"], image["width"]), bool)
        per_class: dict[int, np.ndarray] = {}
        for annotation in own:
            mask = decode(annotation)
            if PANOPTIC_TABLE.is_thing(annotation["category_id"]):
                other |= mask
                segmentation = uncompressed(mask) if annotation["iscrowd"] else polygons(mask)
                instances.append({**annotation, "segmentation": segmentation})
            else:
                category_id = coco_stuff_id(annotation["category_id"])
                per_class[category_id] = per_class.get(category_id, np.zeros_like(mask)) | mask
        for category_id, mask in sorted(per_class.items()) + [(183, other)]:
            stuff.append({"id": len(stuff) + 1, "image_id": image["id"], "category_id": category_id, "iscrowd": 0, "segmentation": compressed(mask)})
    stuff_categories = [{"id": c.id, "name": c.name, "supercategory": "stuff"} for c in STUFF_TABLE.categories.values() if c.id >= 92]
    thing_categories = [c for c in data["categories"] if PANOPTIC_TABLE.is_thing(c["id"])]
    stuff_path = folder / "stuff_sample.json"
    instances_path = folder / "instances_sample.json"
    stuff_path.write_text(json.dumps({"images": data["images"], "annotations": stuff, "categories": stuff_categories}))
    instances_path.write_text(json.dumps({"images": data["images"], "annotations": instances, "categories": thing_categories}))
    return stuff_path, instances_path


def panoptic_segments(image_id: int) -> tuple[np.ndarray, list[dict]]:
    """Segment id map of one sample photo's panoptic PNG and its `segments_info`."""
    data = json.loads((PANOPTIC_DIR / "panoptic_examples.json").read_text())
    annotation = next(a for a in data["annotations"] if a["image_id"] == image_id)
    rgb = np.asarray(Image.open(PANOPTIC_DIR / "panoptic_png" / annotation["file_name"]).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], annotation["segments_info"]


def label_map(image_id: int) -> np.ndarray:
    """stuffthingmaps-style labels of one sample photo: COCO-Stuff id - 1, 255 where unlabeled."""
    ids, segments = panoptic_segments(image_id)
    labels = np.full(ids.shape, 255, np.uint8)
    for segment in segments:
        category_id = coco_stuff_id(segment["category_id"])
        if category_id is not None:
            labels[ids == segment["id"]] = category_id - 1
    return labels


def write_label_maps(folder: Path, mode: str = "P") -> Path:
    """Write the sample's label maps as palette PNGs (colours unlike the indices) or in `mode`."""
    folder.mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(0).integers(0, 256, size=768, dtype=np.uint8)
    for image_id in (142238, 439180):
        labels = label_map(image_id)
        height, width = labels.shape
        if mode == "P":
            image = Image.frombytes("P", (width, height), labels.tobytes())
            image.putpalette(palette.tobytes())
        else:
            image = Image.frombytes("L", (width, height), labels.tobytes()).convert(mode)
        image.save(folder / f"{image_id:012d}.png")
    return folder
