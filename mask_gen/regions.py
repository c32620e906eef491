"""The Stuff and Background region rules.

Masks are HxW uint8 arrays, 255 = region to regenerate, 0 = keep.

- Stuff: the union of stuff regions (sky, grass, wall, ...) chosen, in a seeded order, so that the mask's
  area lands inside the recipe's window. The things (people, animals, objects) are cut out afterwards.
- Background: everything except the main object's silhouette, grown by a safety margin so the kept
  object stays whole.

Unions, intersections and areas are computed on compressed RLE with pycocotools, so an image's segments
are decoded once, at the end, instead of once per segment and trial.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from mask_gen.categories import CategoryTable
from mask_gen.coco import ImageAnnotations, Segment

LARGEST = "largest"


@dataclass(frozen=True)
class StuffRule:
    """Stuff mask parameters.

    Attributes:
        area: the mask's allowed area as a fraction of the image, [min, max].
        min_region: stuff classes covering less than this fraction of the image are ignored.
        dilate_px: the union of stuff regions is grown by this many pixels before things are cut out.
        exclude_categories: stuff classes never used, by id or by name of the annotations' category table.
        include_categories: when not empty, only these stuff classes (ids or names) are used.
    """

    area: tuple[float, float] = (0.1, 0.8)
    min_region: float = 0.01
    dilate_px: int = 0
    exclude_categories: tuple[int | str, ...] = ()
    include_categories: tuple[int | str, ...] = ()


@dataclass(frozen=True)
class BackgroundRule:
    """Background mask parameters.

    Attributes:
        area: the mask's allowed area as a fraction of the image, [min, max].
        margin_px: the main object's silhouette is grown by this many pixels and kept.
        main_object: `("largest",)` keeps the thing instance with most pixels; category names
            (`("person", "dog")`) keep the largest instance of those categories.
        include_crowd: whether crowd annotations (`iscrowd`, a group of objects) can be the main object.
        min_object: the main object must cover at least this fraction of the image.
    """

    area: tuple[float, float] = (0.3, 0.99)
    margin_px: int = 5
    main_object: tuple[str, ...] = (LARGEST,)
    include_crowd: bool = False
    min_object: float = 0.0


@dataclass
class Region:
    """A mask with what went into it, or the reason there is none."""

    mask: np.ndarray | None
    reason: str | None = None
    classes: list[dict] = field(default_factory=list)
    area_ratio: float = 0.0
    bbox: list[int] | None = None

    def describe(self) -> dict:
        return {"classes": self.classes, "area_ratio": round(self.area_ratio, 6), "bbox": self.bbox}


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a bool mask by `pixels` with an elliptical (disc) structuring element.

    Only the bounding box of the mask, widened by `pixels`, is dilated: pixels farther away stay False.
    """
    if pixels <= 0:
        return mask
    box = bounding_box(mask)
    if box is None:
        return mask
    x, y, width, height = box
    top, left = max(0, y - pixels), max(0, x - pixels)
    bottom, right = min(mask.shape[0], y + height + pixels), min(mask.shape[1], x + width + pixels)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    grown = np.zeros_like(mask, dtype=bool)
    grown[top:bottom, left:right] = cv2.dilate(mask[top:bottom, left:right].view(np.uint8), kernel) > 0
    return grown


def bounding_box(mask: np.ndarray) -> list[int] | None:
    """[x, y, width, height] of the nonzero pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)]


def union(rles: list[dict]) -> dict:
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles, intersect=False)


def area_outside(rle: dict, things: dict | None) -> int:
    """Pixels of `rle` that no thing covers."""
    inside = 0 if things is None else int(mask_utils.area(mask_utils.merge([rle, things], intersect=True)))
    return int(mask_utils.area(rle)) - inside


def _finish(mask: np.ndarray, classes: list[dict], area: tuple[float, float], what: str) -> Region:
    """Check the area window and turn a bool or 0/1 uint8 mask into the 0/255 mask of a Region."""
    ratio = np.count_nonzero(mask) / mask.size
    low, high = area
    if not low <= ratio <= high:
        return Region(None, f"{what} covers {ratio:.1%} of the image, outside the recipe's area window [{low:.0%}, {high:.0%}]", classes, ratio)
    return Region(np.multiply(mask, 255, dtype=np.uint8), None, classes, ratio, bounding_box(mask))


def _resolve(references: tuple[int | str, ...], categories: CategoryTable) -> set[int]:
    return {resolved for reference in references if (resolved := categories.resolve(reference)) is not None}


def stuff_classes(annotations: ImageAnnotations, categories: CategoryTable, rule: StuffRule) -> tuple[dict[int, dict], dict | None]:
    """Union RLE of each usable stuff class, and the union RLE of every thing pixel (None without things)."""
    excluded = _resolve(rule.exclude_categories, categories)
    included = _resolve(rule.include_categories, categories)
    per_class: dict[int, list[dict]] = defaultdict(list)
    things = []
    for segment in annotations.segments:
        category_id = segment.category_id
        if categories.covers_things(category_id):
            things.append(segment.rle)
        elif categories.is_stuff(category_id) and category_id not in excluded and (not included or category_id in included):
            per_class[category_id].append(segment.rle)
    return {category_id: union(rles) for category_id, rles in sorted(per_class.items())}, (union(things) if things else None)


def stuff_region(annotations: ImageAnnotations, categories: CategoryTable, rule: StuffRule, seed: int) -> Region:
    """Build the Stuff mask of one image.

    Stuff classes are visited in an order drawn from `seed`. Each joins the union if the finished mask
    (dilated, things cut out) stays at most `rule.area[1]`. The result must reach `rule.area[0]`.
    """
    height, width = annotations.height, annotations.width
    total = height * width
    per_class, things = stuff_classes(annotations, categories, rule)
    candidates = [(category_id, rle, int(mask_utils.area(rle))) for category_id, rle in per_class.items()]
    candidates = [candidate for candidate in candidates if candidate[2] / total >= rule.min_region]
    if not candidates:
        return Region(None, f"no stuff class covers at least {rule.min_region:.0%} of the image")

    things_mask = None
    if rule.dilate_px > 0 and things is not None:
        things_mask = mask_utils.decode(things)
    order = np.random.default_rng(seed).permutation(len(candidates))
    chosen_union = None
    chosen = []
    for index in order:
        category_id, rle, pixels = candidates[index]
        trial = rle if chosen_union is None else union([chosen_union, rle])
        if rule.dilate_px > 0:
            grown = dilate(mask_utils.decode(trial).view(bool), rule.dilate_px)
            kept = np.count_nonzero(grown) if things_mask is None else np.count_nonzero(grown & ~things_mask.view(bool))
        else:
            kept = area_outside(trial, things)
        if kept / total <= rule.area[1]:
            chosen_union = trial
            chosen.append({"id": category_id, "name": categories.name(category_id), "pixels": pixels})
    if not chosen:
        return Region(None, f"every stuff class alone exceeds the recipe's maximum area {rule.area[1]:.0%}")

    # pycocotools decodes to 0/1 uint8, which numpy can view as bool without a copy.
    mask = dilate(mask_utils.decode(chosen_union).view(bool), rule.dilate_px)
    if things_mask is not None:
        mask &= ~things_mask.view(bool)
    elif things is not None:
        # Without dilation only the things inside the union matter, and often there are none to decode.
        overlap = mask_utils.merge([chosen_union, things], intersect=True)
        if mask_utils.area(overlap):
            mask &= ~mask_utils.decode(overlap).view(bool)
    return _finish(mask, chosen, rule.area, "the union of stuff regions")


def main_object_candidates(annotations: ImageAnnotations, categories: CategoryTable, rule: BackgroundRule) -> list[Segment]:
    """Thing instances that may be kept as the main object under `rule`."""
    instances = [
        segment
        for segment in annotations.segments
        if categories.is_thing(segment.category_id) and (rule.include_crowd or not segment.iscrowd)
    ]
    if LARGEST not in rule.main_object:
        instances = [segment for segment in instances if categories.name(segment.category_id) in rule.main_object]
    return instances


def background_region(annotations: ImageAnnotations, categories: CategoryTable, rule: BackgroundRule) -> Region:
    """Build the Background mask of one image: everything but the main object, grown by `rule.margin_px`."""
    instances = main_object_candidates(annotations, categories, rule)
    if not instances:
        expected = "thing" if LARGEST in rule.main_object else f"instance of {' or '.join(repr(name) for name in rule.main_object)}"
        return Region(None, f"no {expected} to keep as the main object")

    areas = [(segment.area, segment) for segment in instances]
    pixels, main = max(areas, key=lambda pair: (pair[0], -pair[1].annotation_id))
    total = annotations.height * annotations.width
    described = [{"id": main.category_id, "name": categories.name(main.category_id), "pixels": pixels, "annotation_id": main.annotation_id}]
    if pixels / total < rule.min_object:
        return Region(None, f"the main object covers {pixels / total:.1%} of the image, less than the recipe's min_object {rule.min_object:.0%}", described)
    kept = dilate(main.decode(), rule.margin_px)
    return _finish(~kept, described, rule.area, "the background")
