"""COCO-format annotation files: segments per image, validated before use.

Reads detection-format JSON: `instances_*.json`, `stuff_*.json`, or panoptic segments converted to COCO
format. Each annotation has an `image_id`, a `category_id` and a `segmentation` that is a list of
polygons, an uncompressed RLE (`counts` as a list) or a compressed RLE (`counts` as a string).
Malformed annotations are skipped, and each skip is returned as a problem message so the stage can
record it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from mask_gen.categories import CategoryTable


@dataclass
class Segment:
    annotation_id: int
    category_id: int
    iscrowd: bool
    rle: dict

    def decode(self) -> np.ndarray:
        """Decode the segment into an HxW bool array."""
        return mask_utils.decode(self.rle).astype(bool)


@dataclass
class ImageAnnotations:
    image_id: int
    file_name: str
    height: int
    width: int
    segments: list[Segment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class CocoAnnotations:
    """An annotation file indexed by image file name (without folders) and by image id."""

    def __init__(self, data: dict, source: str, categories: CategoryTable | None = None):
        self.source = source
        self.categories = CategoryTable.from_list(data.get("categories", []), isthing_from=categories)
        self.images: dict[int, dict] = {}
        self.by_file_name: dict[str, int] = {}
        self.problems: list[str] = []
        for image in data.get("images", []):
            self.images[image["id"]] = image
            self.by_file_name[PurePosixPath(image["file_name"]).name] = image["id"]
        self._annotations: dict[int, list[dict]] = defaultdict(list)
        for annotation in data.get("annotations", []):
            image_id = annotation.get("image_id")
            if image_id not in self.images:
                self.problems.append(
                    f"annotation {annotation.get('id')} refers to image {image_id!r}, which is not in `images`; skipped"
                )
                continue
            self._annotations[image_id].append(annotation)

    @classmethod
    def from_files(cls, paths: list[Path], categories: CategoryTable | None = None) -> "CocoAnnotations":
        """Read one or more COCO-format files about the same images (e.g. COCO-Stuff plus instances)."""
        merged = {"images": {}, "annotations": [], "categories": {}}
        for path in paths:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            for image in data.get("images", []):
                merged["images"].setdefault(image["id"], image)
            merged["annotations"] += data.get("annotations", [])
            for category in data.get("categories", []):
                merged["categories"].setdefault(category["id"], category)
        data = {"images": list(merged["images"].values()), "annotations": merged["annotations"], "categories": list(merged["categories"].values())}
        return cls(data, ", ".join(str(path) for path in paths), categories)

    def for_file(self, file_name: str) -> ImageAnnotations | None:
        """Segments of the image whose file name (folders ignored) is `file_name`, or None if not annotated."""
        image_id = self.by_file_name.get(PurePosixPath(file_name).name)
        if image_id is None:
            return None
        image = self.images[image_id]
        result = ImageAnnotations(image_id, image["file_name"], int(image["height"]), int(image["width"]))
        for annotation in self._annotations.get(image_id, []):
            rle, problem = to_rle(annotation, result.height, result.width)
            if problem:
                result.problems.append(f"annotation {annotation.get('id')} of image {image_id} {problem}; skipped")
                continue
            result.segments.append(
                Segment(
                    annotation_id=int(annotation.get("id", -1)),
                    category_id=int(annotation["category_id"]),
                    iscrowd=bool(annotation.get("iscrowd", 0)),
                    rle=rle,
                )
            )
        return result


def to_rle(annotation: dict, height: int, width: int) -> tuple[dict | None, str | None]:
    """Convert an annotation's segmentation to one compressed RLE, or return a problem description."""
    if not isinstance(annotation.get("category_id"), int):
        return None, f"has category_id {annotation.get('category_id')!r} (needs an integer)"
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        if not segmentation:
            return None, "has an empty polygon list"
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(isinstance(v, (int, float)) for v in polygon):
                return None, "has a polygon that is not a list of numbers"
            if len(polygon) < 6:
                return None, f"has a polygon with {len(polygon)} coordinates (needs at least 6)"
            if len(polygon) % 2:
                return None, f"has a polygon with an odd number of coordinates ({len(polygon)})"
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)), None
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = list(segmentation["size"])
        if size != [height, width]:
            return None, f"has an RLE of size {size} but the image is {[height, width]} (height, width)"
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width), None
        counts = segmentation["counts"]
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}, None
    return None, f"has a segmentation of unknown form ({type(segmentation).__name__})"
