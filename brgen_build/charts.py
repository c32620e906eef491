"""Figures for `brgen report`, drawn with Pillow: contact sheets, histograms and bar charts.

Pillow keeps the core install light (no plotting library). Text uses Pillow's built-in scalable font,
which needs Pillow 10.1 or newer built with FreeType (PyPI wheels are); otherwise a small bitmap font.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (34, 34, 34)
FRAME = (200, 200, 200)
BAR = (52, 101, 164)
PADDING = 8


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: a fixed-size bitmap font
        return ImageFont.load_default()


def text_width(text: str, size: int) -> int:
    left, _, right, _ = font(size).getbbox(text)
    return int(right - left)


def thumbnail(image: Image.Image, width: int) -> Image.Image:
    """Return an RGB copy of `image` scaled to `width` pixels wide, keeping its aspect ratio."""
    height = max(1, round(image.height * width / image.width))
    return image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], column_titles: list[str], width: int = 256) -> Image.Image:
    """Draw rows of images side by side, each row with a caption above it and a title above each column.

    Every image is scaled to `width` pixels wide; a row is as tall as its tallest image.
    """
    columns = len(column_titles)
    caption_height, title_height = 18, 22
    scaled = [(caption, [thumbnail(image, width) for image in images]) for caption, images in rows]
    heights = [max(image.height for image in images) for _, images in scaled]
    sheet = Image.new("RGB", (PADDING + columns * (width + PADDING), title_height + sum(heights) + len(rows) * (caption_height + PADDING) + PADDING), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, title in enumerate(column_titles):
        draw.text((PADDING + index * (width + PADDING), 4), title, fill=INK, font=font(14))
    top = title_height
    for (caption, images), height in zip(scaled, heights):
        draw.text((PADDING, top + 2), _fit(caption, columns * (width + PADDING), 12), fill=INK, font=font(12))
        top += caption_height
        for index, image in enumerate(images):
            left = PADDING + index * (width + PADDING)
            sheet.paste(image, (left, top))
            # A frame, so white mask regions stay visible on the white page.
            draw.rectangle((left - 1, top - 1, left + image.width, top + image.height), outline=FRAME)
        top += height + PADDING
    return sheet


def _fit(text: str, width: int, size: int) -> str:
    """Cut `text` with an ellipsis so it fits in `width` pixels."""
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "...", size) > width:
        text = text[:-1]
    return text + "..."


def histogram(title: str, values: list[float], bins: int = 20, width: int = 520, height: int = 170) -> Image.Image:
    """Draw a histogram of shares in 0..1 (shown as 0-100 %), with the count of the fullest bin on the y axis."""
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((PADDING, 4), title, fill=INK, font=font(13))
    left, right, top, bottom = 44, width - 24, 26, height - 22
    peak = int(counts.max()) if counts.size and counts.max() > 0 else 1
    draw.line((left, top, left, bottom), fill=INK)
    draw.line((left, bottom, right, bottom), fill=INK)
    draw.text((4, top - 2), str(peak), fill=INK, font=font(11))
    draw.text((4, bottom - 12), "0", fill=INK, font=font(11))
    bar_width = (right - left) / bins
    for index, count in enumerate(counts):
        if count:
            x0 = left + index * bar_width + 1
            y0 = bottom - (bottom - top) * count / peak
            draw.rectangle((x0, y0, x0 + bar_width - 2, bottom - 1), fill=BAR)
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + share * (right - left)
        draw.line((x, bottom, x, bottom + 3), fill=INK)
        label = f"{share:.0%}"
        draw.text((x - text_width(label, 11) / 2, bottom + 5), label, fill=INK, font=font(11))
    return image


def bar_chart(title: str, rows: list[tuple[str, float]], unit: str, width: int = 520) -> Image.Image:
    """Draw horizontal bars, one per (label, value), with the value and `unit` printed after each bar."""
    row_height = 24
    height = 30 + row_height * max(1, len(rows)) + PADDING
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((PADDING, 4), title, fill=INK, font=font(13))
    label_width = max([text_width(label, 12) for label, _ in rows] + [40]) + 2 * PADDING
    value_width = 90
    peak = max([value for _, value in rows] + [1e-12])
    for index, (label, value) in enumerate(rows):
        y = 30 + index * row_height
        draw.text((PADDING, y + 4), label, fill=INK, font=font(12))
        length = (width - label_width - value_width) * value / peak
        draw.rectangle((label_width, y + 3, label_width + max(length, 1), y + row_height - 5), fill=BAR)
        draw.text((label_width + length + 6, y + 4), f"{value:.3g} {unit}", fill=INK, font=font(12))
    return image


def stack(images: list[Image.Image]) -> Image.Image:
    """Stack images one below the other on a white background."""
    width = max(image.width for image in images)
    sheet = Image.new("RGB", (width, sum(image.height for image in images)), BACKGROUND)
    top = 0
    for image in images:
        sheet.paste(image, (0, top))
        top += image.height
    return sheet
