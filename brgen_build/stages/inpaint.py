"""Stage `inpaint/<method>`: one forgery per mask, `<split>/Tp/<Method>_<Kind>_<id>.png` and its `Gt` mask.

The method receives the real photo and the mask, and the real photo is then pasted back outside the mask, so a
forgery equals its real photo bit for bit there. The record keeps the seed, the method's settings and
checkpoint, the time taken and the share of pixels the method changed outside the mask before paste-back.
"""

from __future__ import annotations

import logging
from itertools import groupby

import numpy as np

from brgen_build.engine import Item, Stage
from brgen_build.errors import BrgenError
from brgen_build.files import read_png, write_png
from brgen_build.layout import DatasetRoot, forgery_id
from brgen_build.manifest import OK, read_records
from brgen_build.recipe import Recipe
from brgen_build.seeding import derive_seed
from inpainters import registry
from inpainters.base import Inpainter, InpaintRequest
from inpainters.common import binarize_mask, changed_share, paste_back

logger = logging.getLogger(__name__)


def stage_name(method: str) -> str:
    return f"inpaint/{method}"


def build_inpainter(recipe: Recipe, method: str, overrides: dict | None = None) -> Inpainter:
    """Create method `method` with the recipe's parameters, updated by command-line `overrides`."""
    params = {**recipe.method_params(method), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return registry.get(method)(params)


def render_forgeries(inpainter: Inpainter, requests: list[InpaintRequest]) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Inpaint a batch and paste each real photo back outside its mask.

    Returns, per request, the forgery (HxWx3 uint8), the hole (HxW bool) and the facts to record: the
    method's own `info`, the share of pixels it changed outside the mask before paste-back and the share
    changed inside.
    """
    rendered = []
    for request, result in zip(requests, inpainter.inpaint(requests)):
        if result.image.shape != request.image.shape:
            raise ValueError(f"{inpainter.name} returned {result.image.shape} for a {request.image.shape} photo")
        hole, _ = binarize_mask(request.mask)
        forgery = paste_back(request.image, result.image, hole)
        facts = {
            **result.info,
            "changed_outside_before_paste": round(changed_share(request.image, result.image, ~hole), 6),
            "changed_inside": round(changed_share(request.image, forgery, hole), 6),
        }
        rendered.append((forgery, hole, facts))
    return rendered


class InpaintStage(Stage):
    def __init__(self, root: DatasetRoot, recipe: Recipe, inpainter: Inpainter):
        super().__init__(root)
        self.recipe = recipe
        self.inpainter = inpainter
        self.name = stage_name(inpainter.name)
        self.batch_size = inpainter.batch_size
        self._checkpoint: dict = {}

    def plan(self) -> list[Item]:
        masks = read_records(self.root.manifest_dir("masks"))
        if not masks:
            raise BrgenError(f"{self.root.path} has no masks recorded yet; run `brgen build --stage masks` first")
        items = []
        for mask in sorted(masks.values(), key=lambda record: record["id"]):
            if mask["status"] == OK and mask["kind"] in self.recipe.masks.kinds:
                items.append(Item(forgery_id(self.inpainter.token, mask["kind"], mask["real"]), mask["split"], mask))
        return items

    def prepare(self, pending: list[Item]) -> None:
        self.inpainter.check()
        self.inpainter.load()
        self._checkpoint = self.inpainter.checkpoint()
        self._reals = read_records(self.root.manifest_dir("reals"))

    def batches(self, pending: list[Item]):
        """Batches of items whose photos share a size inside the model (`Inpainter.batch_key`), so batched models need no extra padding."""
        def size(item: Item) -> tuple[int, int]:
            real = self._reals[item.payload["real"]]
            return self.inpainter.batch_key(real["height"], real["width"])

        for _, group in groupby(sorted(pending, key=lambda item: (size(item), item.id)), key=size):
            group = list(group)
            for start in range(0, len(group), self.batch_size):
                yield group[start : start + self.batch_size]

    def process(self, batch: list[Item]) -> list[dict]:
        requests = []
        for item in batch:
            mask_record = item.payload
            real = self._reals[mask_record["real"]]
            requests.append(
                InpaintRequest(
                    name=item.id,
                    image=read_png(self.root.absolute(real["files"]["au"]["path"])),
                    mask=read_png(self.root.absolute(mask_record["files"]["mask"]["path"])),
                    seed=derive_seed(self.recipe.seed, self.inpainter.name, item.id),
                    region=mask_record,
                )
            )

        records = []
        for item, request, (forgery, hole, facts) in zip(batch, requests, render_forgeries(self.inpainter, requests)):
            tp_path = self.root.tp(item.split, item.id)
            gt_path = self.root.gt(item.split, item.id)
            tp_entry = write_png(tp_path, forgery)
            gt_entry = write_png(gt_path, (hole * 255).astype("uint8"))
            records.append(
                {
                    "id": item.id,
                    "split": item.split,
                    "status": OK,
                    "method": self.inpainter.name,
                    "token": self.inpainter.token,
                    "real": item.payload["real"],
                    "kind": item.payload["kind"],
                    "seed": request.seed,
                    "checkpoint": self._checkpoint,
                    "settings": self.inpainter.settings(),
                    **facts,
                    "device": self.inpainter.device,
                    "batch_size": len(batch),
                    "full_regeneration": False,
                    "files": {
                        "tp": {"path": self.root.relative(tp_path), **tp_entry},
                        "gt": {"path": self.root.relative(gt_path), **gt_entry},
                    },
                }
            )
        return records
