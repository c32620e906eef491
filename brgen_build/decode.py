"""Decoding real photos into RGB arrays, with a record of every fix applied.

Photo archives are messy: ImageNet contains CMYK JPEGs and a PNG named `.JPEG`, COCO has grayscale photos,
and any archive can contain truncated or empty files. Every photo is decoded fully once. The result is always
an HxWx3 uint8 RGB array, and each change made on the way is listed in `fixes`, which goes into the
photo's manifest record.

Conventions:
- 16 bits per channel become 8 by keeping the high byte (`v >> 8`), as libpng's `png_set_strip_16` does
  and as Pillow already does for 16-bit RGB PNGs.
- CMYK becomes sRGB through the embedded ICC profile when there is one, else by
  R = (255 - C) * (255 - K) / 255 (likewise G with M, B with Y), rounded.
- The ICC profile of an RGB or grayscale photo is not applied: pixel values stay as stored, as most
  image loaders (OpenCV, Pillow's `convert`) leave them. The profile's description goes into the record.
"""

from __future__ import annotations

import io
import struct
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
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# Pillow raises several exception types for malformed EXIF blocks.
_EXIF_ERRORS = (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error, UnicodeDecodeError)


class UnreadableImage(Exception):
    """The bytes are not a decodable image. The message gives the reason."""


@dataclass
class DecodedPhoto:
    array: np.ndarray
    format: str
    mode: str
    fixes: list[str] = field(default_factory=list)
    icc_profile: str | None = None

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
        UnreadableImage: empty, truncated, unknown format, unsupported pixel type, or larger than `max_pixels`.
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
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"decoding failed: {error}") from None

    width, height = image.size
    if width * height > max_pixels:
        raise UnreadableImage(f"{width}x{height} = {width * height} pixels exceeds the recipe's decode.max_pixels = {max_pixels}")

    fixes: list[str] = []
    file_format = image.format or "unknown"
    extension = PurePosixPath(name).suffix.lower()
    if extension and extension not in _EXTENSIONS.get(file_format, {extension}):
        fixes.append(f"format: named {extension} but the content is {file_format}")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        fixes.append(f"frames: {frames} frames, the first one used")
    sixteen_bit = _has_sixteen_bit_channels(image)

    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"decoding failed: {error}") from None

    image = _apply_orientation(image, fixes)
    original_mode = image.mode
    if sixteen_bit and original_mode in ("RGB", "RGBA"):
        fixes.append("depth: 16 bits per channel reduced to 8 (high byte kept)")
    profile = image.info.get("icc_profile")
    try:
        array = _to_rgb(image, fixes, sixteen_bit)
    except (ValueError, OSError) as error:
        raise UnreadableImage(f"cannot convert mode {original_mode} to RGB: {error}") from None
    return DecodedPhoto(array=array, format=file_format, mode=original_mode, fixes=fixes, icc_profile=_describe_profile(profile))


def _has_sixteen_bit_channels(image: Image.Image) -> bool:
    """Return whether the undecoded tiles store 16 bits per channel (read before `load`, which clears them)."""
    for tile in image.tile:
        args = tile[3]
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _apply_orientation(image: Image.Image, fixes: list[str]) -> Image.Image:
    try:
        orientation = image.getexif().get(0x0112)
    except _EXIF_ERRORS as error:
        fixes.append(f"exif: unreadable EXIF block ignored ({type(error).__name__})")
        return image
    if orientation not in range(2, 9):
        return image
    fixes.append(f"exif_orientation: {orientation} applied")
    return ImageOps.exif_transpose(image)


def _describe_profile(profile: bytes | None) -> str | None:
    if not profile:
        return None
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip() or "unnamed profile"
    except (ImageCms.PyCMSError, OSError, ValueError):
        return f"unreadable profile ({len(profile)} bytes)"


def _to_rgb(image: Image.Image, fixes: list[str], sixteen_bit: bool) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode == "CMYK":
        return _cmyk_to_rgb(image, fixes)

    # Older Pillow versions open 16-bit gray PNGs as mode I, and their tiles still record 16 bits.
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and sixteen_bit):
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray = (values >> 8).astype(np.uint8)
        fixes.append(f"mode: {mode} (16-bit gray) reduced to 8 bits (high byte kept), then RGB")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise ValueError(f"{kind} pixels have no agreed mapping to 8-bit photos; convert the file to 8 or 16 bits")

    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3]
        transparent = float(np.mean(alpha < 255))
        fixes.append(f"mode: {mode} converted to RGB, alpha dropped ({transparent:.1%} of pixels not opaque)")
        return np.asarray(rgba.convert("RGB"), dtype=np.uint8)

    fixes.append(f"mode: {mode} converted to RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _cmyk_to_rgb(image: Image.Image, fixes: list[str]) -> np.ndarray:
    cmyk = np.asarray(image, dtype=np.uint8)
    if image.format == "JPEG" and "adobe" not in image.info:
        # Pillow reads every CMYK JPEG as Adobe's inverted CMYK. Without Adobe's APP14 marker the
        # file stores plain CMYK, so Pillow's inversion is undone.
        cmyk = 255 - cmyk
        fixes.append("cmyk: JPEG without Adobe marker read as plain (not inverted) CMYK")

    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            plain = Image.frombytes("CMYK", image.size, np.ascontiguousarray(cmyk).tobytes())
            converted = ImageCms.profileToProfile(plain, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            fixes.append("mode: CMYK converted to sRGB through the embedded ICC profile")
            return np.asarray(converted, dtype=np.uint8)
        except (ImageCms.PyCMSError, OSError) as error:
            fixes.append(f"cmyk: embedded ICC profile unusable ({error}); converted without it")

    values = cmyk.astype(np.uint32)
    white = 255 - values[:, :, 3:4]
    rgb = ((255 - values[:, :, :3]) * white + 127) // 255
    fixes.append("mode: CMYK converted to RGB without an ICC profile (R = (255 - C) * (255 - K) / 255, likewise G, B)")
    return rgb.astype(np.uint8)
