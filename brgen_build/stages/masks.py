"""Stage `masks`: one mask per (real photo, kind) at `masks/<split>/<Kind>_<id>.png`.

Regions come from the source's COCO-format annotations through `mask_gen`. A photo with no usable region
for a kind, or without annotations, gets a `skipped` record with the reason. Malformed annotations are
skipped one by one and listed under `problems` in the mask's record.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from brgen_build.engine import Item, Stage
from brgen_build.files import write_png
from brgen_build.layout import DatasetRoot, mask_id
from brgen_build.manifest import OK, SKIPPED, read_records
from brgen_build.recipe import Recipe
from brgen_build.seeding import derive_seed
from mask_gen.categories import CategoryTable
from mask_gen.coco import CocoAnnotations
from mask_gen.regions import background_region, stuff_region

logger = logging.getLogger(__name__)


class MasksStage(Stage):
    name = "masks"

    def __init__(self, root: DatasetRoot, recipe: Recipe):
        super().__init__(root)
        self.recipe = recipe
        self._annotations: dict[str, CocoAnnotations | None] = {}

    def plan(self) -> list[Item]:
        reals = read_records(self.root.manifest_dir("reals"))
        items = []
        for real in sorted(reals.values(), key=lambda record: record["id"]):
            if real["status"] != OK:
                continue
            for kind in self.recipe.masks.kinds:
                items.append(Item(mask_id(kind, real["id"]), real["split"], (real, kind)))
        return items

    def annotations(self, token: str) -> CocoAnnotations | None:
        if token not in self._annotations:
            source = self.recipe.source(token)
            if not source.annotations:
                self._annotations[token] = None
            else:
                table = CategoryTable.from_file(source.categories) if source.categories else None
                annotations = CocoAnnotations.from_files(list(source.annotations), table)
                for problem in annotations.problems:
                    logger.warning("masks: %s: %s", annotations.source, problem)
                self._annotations[token] = annotations
        return self._annotations[token]

    def process(self, batch: list[Item]) -> list[dict]:
        return [self._process_one(item) for item in batch]

    def _process_one(self, item: Item) -> dict:
        real, kind = item.payload
        record = {"id": item.id, "split": item.split, "real": real["id"], "kind": kind, "source": real["source"]}
        annotations = self.annotations(real["source"])
        if annotations is None:
            return {**record, "status": SKIPPED, "reason": f"source {real['source']} has no `annotations` in the recipe"}
        image = annotations.for_file(real["member"])
        if image is None:
            return {**record, "status": SKIPPED, "reason": f"{PurePosixPath(real['member']).name} has no entry in {annotations.source}"}
        if (image.height, image.width) != (real["height"], real["width"]):
            return {
                **record,
                "status": SKIPPED,
                "reason": f"annotations are {image.width}x{image.height} but the photo is {real['width']}x{real['height']}",
            }
        for problem in image.problems:
            logger.warning("masks: %s: %s", annotations.source, problem)

        seed = derive_seed(self.recipe.seed, f"mask-{kind}", real["id"])
        if kind == "Stuff":
            region = stuff_region(image, annotations.categories, self.recipe.masks.stuff, seed)
        else:
            region = background_region(image, annotations.categories, self.recipe.masks.background)
        record.update({"seed": seed, "annotation_image_id": image.image_id, "problems": image.problems, **region.describe()})
        if region.mask is None:
            return {**record, "status": SKIPPED, "reason": region.reason}

        path = self.root.mask(item.split, kind, real["id"])
        entry = write_png(path, region.mask)
        return {**record, "status": OK, "files": {"mask": {"path": self.root.relative(path), **entry}}}

