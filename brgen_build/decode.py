"""Decoding real photos into RGB arrays, with a record of every fix applied.

Photo archives are messy: ImageNet contains CMYK JPEGs and a PNG named `.JPEG`, COCO has grayscale photos,
and any archive can contain truncated or empty files. Every photo is decoded fully once. The result is always
an HxWx3 uint8 RGB array, and each change made on the way is listed in `fixes`, which goes into the
photo's manifest record.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# File extensions of each format Pillow reports, to notice a file whose name lies about its content.
_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "TIFF": {".tif", ".tiff"},
    "WEBP": {".webp"},
    "MPO": {".jpg", ".jpeg", ".mpo"},
}


class UnreadableImage(Exception):
    """The bytes are not a decodable image. The message gives the reason."""


@dataclass
class DecodedPhoto:
    array: np.ndarray
    format: str
    mode: str
    fixes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])


def decode_photo(data: bytes, name: str, max_pixels: int) -> DecodedPhoto:
    """Decode image bytes into RGB.

    Args:
        data: the file's bytes; the format is sniffed from them, not from `name`.
        name: the file's name, used to report a format that does not match the extension.
        max_pixels: photos with more pixels are rejected as possible decompression bombs.

    Raises:
        UnreadableImage: empty, truncated, unknown format, or larger than `max_pixels`.
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnreadableImage(f"not a recognised image format ({len(data)} bytes, starts with {data[:8].hex()})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(f"decompression bomb rejected by Pillow: {error}") from None

    width, height = image.size
    if width * height > max_pixels:
        raise UnreadableImage(f"{width}x{height} = {width * height} pixels exceeds the recipe's decode.max_pixels = {max_pixels}")

    fixes: list[str] = []
    file_format = image.format or "unknown"
    extension = PurePosixPath(name).suffix.lower()
    if extension and extension not in _EXTENSIONS.get(file_format, {extension}):
        fixes.append(f"format: named {extension} but the content is {file_format}")

    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"decoding failed: {error}") from None

    orientation = image.getexif().get(0x0112)
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
        fixes.append(f"exif_orientation: {orientation} applied")

    original_mode = image.mode
    array = _to_rgb(image, fixes)
    return DecodedPhoto(array=array, format=file_format, mode=original_mode, fixes=fixes)


def _to_rgb(image: Image.Image, fixes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)

    if mode == "CMYK":
        profile = image.info.get("icc_profile")
        if profile:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            fixes.append("mode: CMYK converted to sRGB through the embedded ICC profile")
        else:
            converted = image.convert("RGB")
            fixes.append("mode: CMYK converted to RGB without an ICC profile (R = 255 - C - K, likewise G, B)")
        return np.asarray(converted, dtype=np.uint8)

    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image).astype(np.float64)
        scale = 1.0 / 257.0 if mode != "F" and values.max(initial=0) > 255 else 1.0
        if mode == "F" and values.max(initial=0) <= 1.0:
            scale = 255.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        fixes.append(f"mode: {mode} scaled by {scale:.6g} to 8-bit gray, then RGB")
        return np.repeat(gray[:, :, None], 3, axis=2)

    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3]
        transparent = float(np.mean(alpha < 255))
        fixes.append(f"mode: {mode} converted to RGB, alpha dropped ({transparent:.1%} of pixels not opaque)")
        return np.asarray(rgba.convert("RGB"), dtype=np.uint8)

    fixes.append(f"mode: {mode} converted to RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
