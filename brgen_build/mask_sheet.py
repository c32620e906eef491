"""Contact sheet of region masks: real photos with their Stuff and Background masks overlaid.

One row per photo and one tile per mask kind. A tile shows the photo scaled to the tile width, the mask
region tinted and outlined, and a caption with the kind, the area ratio and the chosen classes. Photos
come from the masks manifest (records with status `ok`), drawn by a seed so that the same sheet can be
made again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from brgen_build.errors import BrgenError
from brgen_build.files import atomic_write_bytes, encode_png, read_png
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import OK, read_records

TINT = np.array([255, 40, 40], dtype=np.float32)
OUTLINE = (255, 255, 0)
CAPTION_LINES = 3
LINE_HEIGHT = 12


@dataclass(frozen=True)
class SheetSettings:
    """Contact sheet layout: photos per sheet, tile width in pixels, tint opacity, seed of the photo choice."""

    count: int = 12
    tile_width: int = 320
    opacity: float = 0.45
    seed: int = 0
    split: str | None = None


def overlay(photo: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    """Tint an HxWx3 RGB photo where the HxW mask is 255 and outline the region; return a new array."""
    region = mask == 255
    tinted = photo.astype(np.float32)
    tinted[region] = (1 - opacity) * tinted[region] + opacity * TINT
    result = tinted.round().astype(np.uint8)
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(photo.shape[:2]) / 300))
    cv2.drawContours(result, contours, -1, OUTLINE, thickness)
    return result


def caption(record: dict) -> list[str]:
    """Caption lines of one mask tile: id, kind and area, then the class names."""
    names = ", ".join(entry["name"] for entry in record.get("classes", []))
    return [record["real"], f"{record['kind']}: {record['area_ratio']:.1%} of the image", names or "-"]


def tile(root: DatasetRoot, real: dict, record: dict | None, width: int, opacity: float, font) -> Image.Image:
    """Draw one tile: the photo with the mask overlaid (or the skip reason) above its caption."""
    photo = read_png(root.absolute(real["files"]["au"]["path"]))
    lines = [real["id"], "no mask", (record or {}).get("reason") or "not built yet"]
    if record is not None and record["status"] == OK:
        photo = overlay(photo, read_png(root.absolute(record["files"]["mask"]["path"])), opacity)
        lines = caption(record)
    height = round(photo.shape[0] * width / photo.shape[1])
    image = Image.fromarray(photo).resize((width, height), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height + CAPTION_LINES * LINE_HEIGHT + 4), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(lines[:CAPTION_LINES]):
        draw.text((2, height + 2 + number * LINE_HEIGHT), fit_text(draw, line, width - 4, font), fill="black", font=font)
    return canvas


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """Shorten `text` with an ellipsis until it fits `width` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def choose_photos(reals: dict[str, dict], masks: dict[str, dict], settings: SheetSettings) -> list[dict]:
    """Photos with at least one finished mask (of `settings.split`, if set), a seeded sample of `settings.count`."""
    with_masks = {record["real"] for record in masks.values() if record["status"] == OK}
    candidates = sorted(
        (real for real in reals.values() if real["id"] in with_masks and (settings.split is None or real["split"] == settings.split)),
        key=lambda real: real["id"],
    )
    chosen = random.Random(settings.seed).sample(candidates, min(settings.count, len(candidates)))
    return sorted(chosen, key=lambda real: real["id"])


def build_contact_sheet(root: DatasetRoot, kinds: tuple[str, ...], out: Path, settings: SheetSettings) -> tuple[Path, int]:
    """Write the contact sheet PNG to `out`; return its path and the number of photos on it.

    Raises:
        BrgenError: the root has no finished masks (run `brgen build --stage masks` first).
    """
    reals = read_records(root.manifest_dir("reals"))
    masks = read_records(root.manifest_dir("masks"))
    photos = choose_photos(reals, masks, settings)
    if not photos:
        where = f" in split {settings.split}" if settings.split else ""
        raise BrgenError(f"{root.path} has no finished masks{where}; run `brgen build --stage masks --root {root.path}` first")

    font = ImageFont.load_default()
    rows = []
    for real in photos:
        tiles = [tile(root, real, masks.get(f"{kind}_{real['id']}"), settings.tile_width, settings.opacity, font) for kind in kinds]
        rows.append(tiles)
    row_heights = [max(image.height for image in row) for row in rows]
    sheet = Image.new("RGB", (settings.tile_width * len(kinds), sum(row_heights)), "white")
    top = 0
    for row, height in zip(rows, row_heights):
        for column, image in enumerate(row):
            sheet.paste(image, (column * settings.tile_width, top))
        top += height
    atomic_write_bytes(out, encode_png(np.asarray(sheet)))
    return out, len(photos)
