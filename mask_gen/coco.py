"""COCO detection-format annotation files: segments per image, validated before use.

Reads `stuff_*2017.json` (COCO-Stuff: one compressed RLE per image and stuff class, plus class 183
"other" covering every thing pixel), `instances_*2017.json` (polygons, and uncompressed RLE for crowd
regions), or any file in the same format. Each annotation has an `image_id`, a `category_id` and a
`segmentation` that is a list of polygons, an uncompressed RLE (`counts` as a list) or a compressed RLE
(`counts` as a string).

Malformed entries are skipped one by one, each with a problem message. Problems of one image go to
`ImageAnnotations.problems`, which the stage stores in the mask's record. Problems of the file as a whole
(annotations of images missing from `images`, id type mismatches) go to `CocoAnnotations.problems`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from brgen_build.errors import BrgenError
from mask_gen.categories import CategoryTable


@dataclass
class Segment:
    """One region of one image: `rle` is a compressed RLE (`counts` as bytes) of the image's size."""

    annotation_id: int
    category_id: int
    iscrowd: bool
    rle: dict

    def decode(self) -> np.ndarray:
        """Decode the segment into an HxW bool array."""
        return mask_utils.decode(self.rle).view(bool)

    @property
    def area(self) -> int:
        return int(mask_utils.area(self.rle))


@dataclass
class ImageAnnotations:
    """The segments of one image. `error` is the reason when the image has no usable annotation at all."""

    image_id: int | str
    file_name: str
    height: int
    width: int
    segments: list[Segment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None


def load_json(path: Path, what: str) -> dict:
    """Read an annotation JSON file, or raise a BrgenError that names it."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise BrgenError(f"{what} {path} not found; fix the source's `annotations` in the recipe") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BrgenError(f"{what} {path} is not valid JSON ({error}); download it again") from None
    if not isinstance(data, dict):
        raise BrgenError(f"{what} {path} must contain a JSON object with `images` and `annotations`, got {type(data).__name__}")
    return data


def index_images(images: list, problems: list[str]) -> dict[int, dict]:
    """Index `images` entries by id; entries without an integer id, a size or a file name become problems."""
    indexed = {}
    for position, image in enumerate(images):
        if not isinstance(image, dict):
            problems.append(f"images[{position}] is not an object; skipped")
            continue
        image_id = image.get("id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            problems.append(f"images[{position}] has id {image_id!r} ({type(image_id).__name__}; needs an integer); skipped")
            continue
        size = (image.get("height"), image.get("width"))
        if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in size):
            problems.append(f"image {image_id} has height, width {size!r} (needs positive integers); skipped")
            continue
        if not isinstance(image.get("file_name"), str):
            problems.append(f"image {image_id} has no `file_name`; skipped")
            continue
        previous = indexed.get(image_id)
        if previous is not None and (previous["height"], previous["width"]) != size:
            problems.append(f"image {image_id} is listed twice with different sizes; the first entry is used")
            continue
        indexed.setdefault(image_id, image)
    return indexed


def empty_image_annotations(images: dict[int, dict], by_file_name: dict[str, int], file_name: str) -> ImageAnnotations | None:
    """Start the annotations of the image called `file_name` (folders ignored); None when `images` lacks it."""
    image_id = by_file_name.get(PurePosixPath(file_name).name)
    if image_id is None:
        return None
    image = images[image_id]
    return ImageAnnotations(image_id, image["file_name"], int(image["height"]), int(image["width"]))


def check_image_reference(owner: str, image_id: object, images: dict[int, dict]) -> str | None:
    """Describe why `image_id` of an annotation cannot be used, or return None when it names an image."""
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        hint = ""
        if isinstance(image_id, str) and image_id.strip().isdigit() and int(image_id) in images:
            hint = f"; image {int(image_id)} exists, so write the id as a number"
        return f"{owner} has image_id {image_id!r} ({type(image_id).__name__}; image ids are integers){hint}; skipped"
    if image_id not in images:
        return f"{owner} refers to image {image_id}, which is not in `images`; skipped"
    return None


class CocoAnnotations:
    """A detection-format annotation file indexed by image file name (without folders) and by image id."""

    format = "coco"

    def __init__(self, data: dict, source: str, categories: CategoryTable | None = None):
        self.source = source
        self.problems: list[str] = []
        listed_categories = [entry for entry in data.get("categories", []) if isinstance(entry, dict) and "id" in entry]
        self.category_ids = {entry["id"] for entry in listed_categories}
        listed = CategoryTable.from_list(listed_categories, isthing_from=categories)
        if categories is None:
            self.categories = listed
        else:
            self.categories = CategoryTable({**categories.categories, **listed.categories}, categories.table_name)
        self.images = index_images(data.get("images", []), self.problems)
        self.by_file_name = {PurePosixPath(image["file_name"]).name: image_id for image_id, image in self.images.items()}
        self._annotations: dict[int, list[dict]] = defaultdict(list)
        for position, annotation in enumerate(data.get("annotations", [])):
            if not isinstance(annotation, dict):
                self.problems.append(f"annotations[{position}] is not an object; skipped")
                continue
            problem = check_image_reference(f"annotation {annotation.get('id', position)}", annotation.get("image_id"), self.images)
            if problem:
                self.problems.append(problem)
                continue
            self._annotations[annotation["image_id"]].append(annotation)

    @classmethod
    def from_files(cls, paths: list[Path], categories: CategoryTable | None = None) -> "CocoAnnotations":
        """Read one or more COCO-format files about the same images (e.g. COCO-Stuff plus instances)."""
        merged = {"images": [], "annotations": [], "categories": {}}
        for path in paths:
            data = load_json(path, "annotation file")
            absent = [key for key in ("images", "annotations") if not isinstance(data.get(key), list)]
            if absent:
                raise BrgenError(
                    f"annotation file {path} has no {' or '.join(f'`{key}` list' for key in absent)}, so it is not in COCO "
                    "detection format; give COCO-Stuff or instances JSON, or set the source's `annotation_format`"
                )
            merged["images"] += data.get("images", [])
            merged["annotations"] += data.get("annotations", [])
            for category in data.get("categories", []):
                if isinstance(category, dict) and "id" in category:
                    merged["categories"].setdefault(category["id"], category)
        merged["categories"] = list(merged["categories"].values())
        return cls(merged, ", ".join(str(path) for path in paths), categories)

    def pending(self, file_name: str) -> "PendingImage | None":
        """Return the raw annotations of the image called `file_name` (folders ignored), or None if not annotated.

        Converting them (`PendingImage.load`) is the costly part, so a stage can run it in a worker process.
        """
        empty = empty_image_annotations(self.images, self.by_file_name, file_name)
        if empty is None:
            return None
        return PendingImage(empty, self._annotations.get(empty.image_id, []), self.category_ids)

    def for_file(self, file_name: str) -> ImageAnnotations | None:
        """Segments of the image whose file name (folders ignored) is `file_name`, or None if not annotated."""
        pending = self.pending(file_name)
        return None if pending is None else pending.load()


@dataclass
class PendingImage:
    """One image's raw COCO annotations, not yet validated and converted to RLE."""

    empty: ImageAnnotations
    annotations: list[dict]
    category_ids: set[int]

    @property
    def image_id(self) -> int:
        return self.empty.image_id

    @property
    def height(self) -> int:
        return self.empty.height

    @property
    def width(self) -> int:
        return self.empty.width

    def load(self) -> ImageAnnotations:
        """Validate and convert every annotation; malformed ones become problems of the result."""
        result = ImageAnnotations(self.empty.image_id, self.empty.file_name, self.height, self.width)
        for annotation in self.annotations:
            rle, problem = to_rle(annotation, result.height, result.width, self.category_ids)
            if problem:
                result.problems.append(f"annotation {annotation.get('id')} of image {result.image_id} {problem}; skipped")
                continue
            result.segments.append(
                Segment(
                    annotation_id=int(annotation.get("id", -1)),
                    category_id=annotation["category_id"],
                    iscrowd=bool(annotation.get("iscrowd", 0)),
                    rle=rle,
                )
            )
        return result


def to_rle(annotation: dict, height: int, width: int, category_ids: set[int] | None = None) -> tuple[dict | None, str | None]:
    """Convert an annotation's segmentation to one compressed RLE, or return a problem description."""
    category_id = annotation.get("category_id")
    if isinstance(category_id, bool) or not isinstance(category_id, int):
        return None, f"has category_id {category_id!r} ({type(category_id).__name__}; needs an integer)"
    if category_ids and category_id not in category_ids:
        return None, f"has category_id {category_id}, which is not in `categories`"
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        return polygons_to_rle(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        return rle_to_compressed(segmentation, height, width)
    return None, f"has a segmentation of unknown form ({type(segmentation).__name__})"


def polygons_to_rle(polygons: list, height: int, width: int) -> tuple[dict | None, str | None]:
    if not polygons:
        return None, "has an empty polygon list"
    for polygon in polygons:
        if not isinstance(polygon, list) or not is_number_list(polygon):
            return None, "has a polygon that is not a list of numbers"
        if len(polygon) < 6:
            return None, f"has a polygon with {len(polygon)} coordinates (needs at least 6)"
        if len(polygon) % 2:
            return None, f"has a polygon with an odd number of coordinates ({len(polygon)})"
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)), None


def is_number_list(values: list) -> bool:
    """Tell whether every value is an int or a float (not a bool, a string or a nested list)."""
    try:
        array = np.asarray(values)
    except ValueError:
        return False
    return array.ndim == 1 and array.dtype.kind in "if"


def rle_to_compressed(segmentation: dict, height: int, width: int) -> tuple[dict | None, str | None]:
    size = segmentation["size"]
    if not isinstance(size, list) or list(size) != [height, width]:
        return None, f"has an RLE of size {size} but the image is {[height, width]} (height, width)"
    counts = segmentation["counts"]
    if isinstance(counts, list):
        runs = np.asarray(counts) if counts else np.zeros(0, np.int64)
        if runs.ndim != 1 or runs.dtype.kind not in "iu" or (runs < 0).any():
            return None, "has RLE counts that are not non-negative integers"
        if int(runs.sum()) != height * width:
            return None, f"has RLE counts that sum to {int(runs.sum())} but the image has {height * width} pixels"
        return mask_utils.frPyObjects(segmentation, height, width), None
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    if not isinstance(counts, bytes):
        return None, f"has RLE counts of type {type(counts).__name__} (needs a list or a string)"
    return {"size": [height, width], "counts": counts}, None
