"""COCO panoptic annotations: `panoptic_*2017.json` plus one PNG per image.

The JSON lists, per image, the PNG's `file_name` and its `segments_info` (segment `id`, `category_id`,
`iscrowd`). In the PNG, a pixel's segment id is R + 256 G + 256^2 B; 0 is unlabeled. Categories carry
`isthing`, and stuff uses the panoptic ids (merged classes 184-200 among them).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from mask_gen.categories import CategoryTable
from mask_gen.coco import ImageAnnotations, Segment, check_image_reference, empty_image_annotations, index_images, load_json
from mask_gen.pngstore import PngStore


def segment_ids(rgb: np.ndarray) -> np.ndarray:
    """Panoptic segment ids of an HxWx3 uint8 PNG array: R + 256 G + 256^2 B, as uint32."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def encode(mask: np.ndarray) -> dict:
    """Compressed RLE of an HxW bool mask."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


class PanopticAnnotations:
    """A panoptic JSON with its PNG folder or zip, indexed by image file name (folders ignored)."""

    format = "panoptic"

    def __init__(self, json_path: Path, png_path: Path, categories: CategoryTable | None = None):
        data = load_json(json_path, "panoptic annotation file")
        self.source = str(json_path)
        self.pngs = PngStore(png_path, "panoptic PNG folder")
        self.problems: list[str] = []
        listed = [entry for entry in data.get("categories", []) if isinstance(entry, dict) and "id" in entry]
        self.categories = CategoryTable.from_list(listed, isthing_from=categories, name="coco_panoptic")
        self.images = index_images(data.get("images", []), self.problems)
        self.by_file_name = {PurePosixPath(image["file_name"]).name: image_id for image_id, image in self.images.items()}
        self._annotations: dict[int, dict] = {}
        for position, annotation in enumerate(data.get("annotations", [])):
            if not isinstance(annotation, dict):
                self.problems.append(f"annotations[{position}] is not an object; skipped")
                continue
            owner = f"panoptic annotation {annotation.get('file_name', position)!r}"
            problem = check_image_reference(owner, annotation.get("image_id"), self.images)
            if problem is None and not isinstance(annotation.get("segments_info"), list):
                problem = f"{owner} has no `segments_info` list; skipped"
            if problem is None and not isinstance(annotation.get("file_name"), str):
                problem = f"{owner} has no PNG `file_name`; skipped"
            if problem:
                self.problems.append(problem)
                continue
            self._annotations[annotation["image_id"]] = annotation

    def for_file(self, file_name: str) -> ImageAnnotations | None:
        """Segments of the image whose file name is `file_name`, or None if the JSON does not list it."""
        result = empty_image_annotations(self.images, self.by_file_name, file_name)
        if result is None:
            return None
        image_id = result.image_id
        annotation = self._annotations.get(image_id)
        if annotation is None:
            result.error = f"image {image_id} has no entry in the panoptic `annotations` of {self.source}"
            return result
        png_name = annotation["file_name"]
        if png_name not in self.pngs:
            result.error = f"panoptic PNG {png_name} of image {image_id} not found in {self.pngs.path}"
            return result
        with self.pngs.open(png_name) as png:
            rgb = np.asarray(png.convert("RGB"))
        if rgb.shape[:2] != (result.height, result.width):
            result.error = (
                f"panoptic PNG {png_name} is {rgb.shape[1]}x{rgb.shape[0]} but image {image_id} is "
                f"{result.width}x{result.height}"
            )
            return result
        self._add_segments(result, annotation["segments_info"], segment_ids(rgb))
        return result

    def _add_segments(self, result: ImageAnnotations, segments_info: list, ids: np.ndarray) -> None:
        present, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(ids.shape)
        position_of = {int(value): index for index, value in enumerate(present)}
        listed = set()
        for info in segments_info:
            segment_id, category_id = info.get("id"), info.get("category_id")
            owner = f"segment {segment_id!r} of image {result.image_id}"
            if isinstance(segment_id, bool) or not isinstance(segment_id, int):
                result.problems.append(f"{owner} has a non-integer id; skipped")
                continue
            if isinstance(category_id, bool) or not isinstance(category_id, int):
                result.problems.append(f"{owner} has category_id {category_id!r} ({type(category_id).__name__}; needs an integer); skipped")
                continue
            if category_id not in self.categories.categories:
                result.problems.append(f"{owner} has category_id {category_id}, which is not in `categories`; skipped")
                continue
            listed.add(segment_id)
            if segment_id not in position_of:
                result.problems.append(f"{owner} does not occur in its PNG; skipped")
                continue
            mask = inverse == position_of[segment_id]
            result.segments.append(Segment(segment_id, category_id, bool(info.get("iscrowd", 0)), encode(mask)))
        unlisted = sorted(set(position_of) - listed - {0})
        if unlisted:
            shown = ", ".join(str(value) for value in unlisted[:5])
            result.problems.append(f"the PNG of image {result.image_id} has segment ids that `segments_info` does not list ({shown}); treated as unlabeled")


def default_png_path(json_path: Path) -> Path:
    """Return where COCO puts the PNGs of `panoptic_train2017.json`: the folder, else the zip, of that stem beside it."""
    folder = json_path.with_suffix("")
    archive = json_path.with_suffix(".zip")
    return folder if folder.exists() or not archive.exists() else archive
