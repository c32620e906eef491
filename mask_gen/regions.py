"""The Stuff and Background region rules.

Masks are HxW uint8 arrays, 255 = region to regenerate, 0 = keep.

- Stuff: the union of stuff regions (sky, grass, wall, ...) chosen, in a seeded order, so that the mask's
  area lands inside the recipe's window; the things (people, animals, objects) are cut out afterwards.
- Background: everything except the main object's silhouette, grown by a safety margin so the kept
  object stays whole.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np

from mask_gen.categories import CategoryTable
from mask_gen.coco import ImageAnnotations


@dataclass(frozen=True)
class StuffRule:
    """Stuff mask parameters.

    Attributes:
        area: the mask's allowed area as a fraction of the image, [min, max].
        min_region: stuff classes covering less than this fraction of the image are ignored.
        dilate_px: the union of stuff regions is grown by this many pixels before things are cut out.
        exclude_categories: stuff category ids never used.
    """

    area: tuple[float, float] = (0.1, 0.8)
    min_region: float = 0.01
    dilate_px: int = 0
    exclude_categories: tuple[int, ...] = ()


@dataclass(frozen=True)
class BackgroundRule:
    """Background mask parameters.

    Attributes:
        area: the mask's allowed area as a fraction of the image, [min, max].
        margin_px: the main object's silhouette is grown by this many pixels and kept.
        main_object: `largest` (the thing with most pixels) or a category name (`person`); the largest
            instance of that category is kept.
        include_crowd: whether crowd annotations (`iscrowd`, a group of objects) can be the main object.
    """

    area: tuple[float, float] = (0.3, 0.99)
    margin_px: int = 5
    main_object: str = "largest"
    include_crowd: bool = False


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
    """Grow a bool mask by `pixels` with an elliptical (disc) structuring element."""
    if pixels <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def bounding_box(mask: np.ndarray) -> list[int] | None:
    """[x, y, width, height] of the nonzero pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)]


def _finish(mask: np.ndarray, classes: list[dict], area: tuple[float, float], what: str) -> Region:
    ratio = float(mask.mean())
    low, high = area
    if not low <= ratio <= high:
        return Region(None, f"{what} covers {ratio:.1%} of the image, outside the recipe's area window [{low:.0%}, {high:.0%}]", classes, ratio)
    return Region((mask * 255).astype(np.uint8), None, classes, ratio, bounding_box(mask))


def stuff_region(annotations: ImageAnnotations, categories: CategoryTable, rule: StuffRule, seed: int) -> Region:
    """Build the Stuff mask of one image.

    Stuff classes are visited in an order drawn from `seed`; each joins the union if the finished mask
    (dilated, things cut out) stays at most `rule.area[1]`. The result must reach `rule.area[0]`.
    """
    height, width = annotations.height, annotations.width
    per_class: dict[int, np.ndarray] = defaultdict(lambda: np.zeros((height, width), dtype=bool))
    things = np.zeros((height, width), dtype=bool)
    for segment in annotations.segments:
        if categories.is_thing(segment.category_id):
            things |= segment.decode()
        elif categories.is_stuff(segment.category_id) and segment.category_id not in rule.exclude_categories:
            per_class[segment.category_id] |= segment.decode()

    candidates = [(cid, pixels) for cid, pixels in sorted(per_class.items()) if pixels.mean() >= rule.min_region]
    if not candidates:
        return Region(None, f"no stuff class covers at least {rule.min_region:.0%} of the image")

    order = np.random.default_rng(seed).permutation(len(candidates))
    union = np.zeros((height, width), dtype=bool)
    finished = union
    chosen = []
    for index in order:
        category_id, pixels = candidates[index]
        trial = dilate(union | pixels, rule.dilate_px) & ~things
        if trial.mean() <= rule.area[1]:
            union |= pixels
            finished = trial
            chosen.append({"id": category_id, "name": categories.name(category_id), "pixels": int(pixels.sum())})
    if not chosen:
        return Region(None, f"every stuff class alone exceeds the recipe's maximum area {rule.area[1]:.0%}")
    return _finish(finished, chosen, rule.area, "the union of stuff regions")


def background_region(annotations: ImageAnnotations, categories: CategoryTable, rule: BackgroundRule) -> Region:
    """Build the Background mask of one image: everything but the main object, grown by `rule.margin_px`."""
    instances = [
        segment
        for segment in annotations.segments
        if categories.is_thing(segment.category_id) and (rule.include_crowd or not segment.iscrowd)
    ]
    if rule.main_object != "largest":
        instances = [segment for segment in instances if categories.name(segment.category_id) == rule.main_object]
    if not instances:
        wanted = "thing" if rule.main_object == "largest" else f"instance of {rule.main_object!r}"
        return Region(None, f"no {wanted} to keep as the main object")

    decoded = [(segment, segment.decode()) for segment in instances]
    main, silhouette = max(decoded, key=lambda pair: (int(pair[1].sum()), -pair[0].annotation_id))
    kept = dilate(silhouette, rule.margin_px)
    described = [{"id": main.category_id, "name": categories.name(main.category_id), "pixels": int(silhouette.sum()), "annotation_id": main.annotation_id}]
    return _finish(~kept, described, rule.area, "the background")
