"""Shared steps of every method: padding to a size multiple, resizing, mask binarisation and paste-back."""

from __future__ import annotations

import cv2
import numpy as np


def binarize_mask(mask: np.ndarray, threshold: int = 127) -> tuple[np.ndarray, int]:
    """Return a bool hole mask (True = regenerate) and the number of pixels that were neither 0 nor 255.

    A mask that went through JPEG or resizing has grey edges; values above `threshold` count as hole.
    """
    off_values = int(np.count_nonzero((mask != 0) & (mask != 255)))
    return mask > threshold, off_values


def pad_to_multiple(array: np.ndarray, multiple: int, mode: str = "reflect") -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the bottom and right of an HxW[xC] array so both sides are multiples of `multiple`.

    Returns the padded array and the original (height, width) to crop back to. `reflect` mirrors the
    image without repeating the edge pixel; sides shorter than the padding fall back to `symmetric`.
    """
    height, width = array.shape[:2]
    pad_height = (-height) % multiple
    pad_width = (-width) % multiple
    if pad_height == 0 and pad_width == 0:
        return array, (height, width)
    if mode == "reflect" and (pad_height >= height or pad_width >= width):
        mode = "symmetric"
    padding = [(0, pad_height), (0, pad_width)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding, mode=mode), (height, width)


def pad_to_square(array: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the bottom and right of an HxW[xC] array by reflection to a square whose side is a multiple of `multiple`.

    The side is the smallest multiple not below the longer side. Returns the padded array and the original
    (height, width) to crop back to. numpy repeats the reflection when the padding exceeds a side.
    """
    height, width = array.shape[:2]
    side = -(-max(height, width) // multiple) * multiple
    padding = [(0, side - height), (0, side - width)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding, mode="reflect"), (height, width)



def pad_batch(method: str, masks_and_images: list[tuple[np.ndarray, np.ndarray]], pad) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], list[int]]:
    """Binarize each mask, pad each image and hole with `pad`, and stack them into one batch.

    Args:
        method: the method's name, for the error message.
        masks_and_images: (mask HxW uint8, image HxWx3 uint8) per request.
        pad: `pad_to_multiple` or `pad_to_square` with its size multiple bound.

    Returns:
        Images [B,H,W,3] uint8, holes [B,H,W] bool, each request's original (height, width), and each mask's
        count of values that were neither 0 nor 255.

    Raises:
        ValueError: the padded sizes differ, so the requests cannot share a batch.
    """
    images, holes, sizes, off_counts = [], [], [], []
    for mask, image in masks_and_images:
        hole, off_values = binarize_mask(mask)
        padded, size = pad(image)
        images.append(padded)
        holes.append(pad(hole)[0])
        sizes.append(size)
        off_counts.append(off_values)

    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"{method}: a batch must share one padded size, got {sorted(shapes)}")
    return np.stack(images), np.stack(holes), sizes, off_counts

def paste_back(real: np.ndarray, generated: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Take generated pixels inside the hole and real pixels everywhere else (a hard paste, no feathering)."""
    if generated.shape != real.shape:
        raise ValueError(f"generated image {generated.shape} and real photo {real.shape} differ in shape")
    return np.where(hole[:, :, None], generated, real)


def changed_share(real: np.ndarray, other: np.ndarray, region: np.ndarray) -> float:
    """Fraction of the pixels in `region` (bool HxW) where `other` differs from `real` in any channel."""
    count = int(region.sum())
    if count == 0:
        return 0.0
    changed = np.any(real != other, axis=2) & region
    return float(changed.sum()) / count


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 uint8 image to `size` = (height, width): area averaging to shrink, bicubic to enlarge."""
    height, width = image.shape[:2]
    if (height, width) == tuple(size):
        return image
    shrinking = size[0] * size[1] < height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (size[1], size[0]), interpolation=interpolation)


def resize_hole(hole: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool HxW hole mask to `size` = (height, width); a pixel touched by the hole stays hole.

    Keeping every touched pixel makes the model's hole cover the whole native hole after resizing back,
    so paste-back never takes unregenerated pixels from inside the mask.
    """
    if hole.shape == tuple(size):
        return hole
    coverage = cv2.resize(hole.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return coverage > 0
