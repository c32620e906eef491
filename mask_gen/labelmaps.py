"""COCO-Stuff label maps (`stuffthingmaps_trainval2017`): one 8-bit PNG per image.

A pixel contains the COCO-Stuff id minus one (0 = person, 181 = wood) and 255 for unlabeled. The files are
palette (P) or grayscale (L) PNGs and are read as indices: the palette colours are ignored. Label maps
have no instances, so each 8-connected component of a thing class counts as one instance (for the
Background rule's main object); each stuff class present is one segment.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from mask_gen.categories import COCO_STUFF_LAST, CategoryTable
from mask_gen.coco import ImageAnnotations, Segment
from mask_gen.panoptic import encode
from mask_gen.pngstore import PngStore, read_indices

UNLABELED_VALUE = 255


class LabelMapAnnotations:
    """A folder or zip of COCO-Stuff label PNGs, found by the photo's stem (`000000000009.png`)."""

    format = "stuffthingmaps"

    def __init__(self, path: Path, categories: CategoryTable | None = None):
        self.pngs = PngStore(path, "label map folder")
        self.source = str(path)
        self.categories = categories or CategoryTable.bundled("coco_stuff")
        self.problems: list[str] = []

    def for_file(self, file_name: str) -> ImageAnnotations | None:
        """Segments of the photo `file_name` from its label map, or None if there is no label map for it."""
        stem = PurePosixPath(file_name).stem
        png_name = f"{stem}.png"
        if png_name not in self.pngs:
            return None
        image_id = int(stem) if stem.isdigit() else stem
        with self.pngs.open(png_name) as png:
            labels = read_indices(png)
            mode, (width, height) = png.mode, png.size
        result = ImageAnnotations(image_id, png_name, height, width)
        if labels is None:
            result.error = (
                f"label map {png_name} is a {mode} image; stuffthingmaps PNGs hold class indices "
                "(mode L or P), so use the original files rather than a colour rendering"
            )
            return result

        values = np.unique(labels)
        invalid = [int(v) for v in values if COCO_STUFF_LAST <= v < UNLABELED_VALUE]
        if invalid:
            result.problems.append(
                f"label map {png_name} has values {invalid} outside 0-{COCO_STUFF_LAST - 1} and {UNLABELED_VALUE}; "
                "those pixels are treated as unlabeled"
            )
        for value in values:
            if value >= COCO_STUFF_LAST:
                continue
            category_id = int(value) + 1
            pixels = labels == value
            if self.categories.is_thing(category_id):
                result.segments += instances_of(pixels, category_id)
            else:
                result.segments.append(Segment(category_id, category_id, False, encode(pixels)))
        return result


def instances_of(pixels: np.ndarray, category_id: int) -> list[Segment]:
    """Split a thing class into one segment per 8-connected component, with ids category_id * 1000 + component."""
    count, components = cv2.connectedComponents(pixels.astype(np.uint8), connectivity=8)
    return [Segment(category_id * 1000 + index, category_id, False, encode(components == index)) for index in range(1, count)]
