"""Training augmentations of the published NFA-ViT run, with NumPy and OpenCV.

The published run used albumentations with IMDLBenCo's copy-move and inpainting transforms, in this order:
random scale 0.8-1.2; copy-move (p=0.1); inpainting (p=0.1); horizontal and vertical flips (p=0.5 each);
brightness and contrast +-0.1 (always); JPEG quality 70-100 (p=0.2); a random multiple of 90 degrees
(p=0.5); Gaussian blur with a 3, 5 or 7 pixel kernel (p=0.2).

Images are HxWx3 uint8 RGB, masks HxW uint8 with 1 = forged. Every random choice comes from the generator
passed in, so an item's augmentation depends only on its seed. Copy-move and inpainting forge a rectangle
and mark it in the mask, which can turn an authentic image into a forgery.
"""

from __future__ import annotations

import cv2
import numpy as np

SCALE_LIMIT = 0.2
COPY_MOVE_P = 0.1
INPAINTING_P = 0.1
FLIP_P = 0.5
BRIGHTNESS_LIMIT = 0.1
CONTRAST_LIMIT = 0.1
JPEG_P = 0.2
JPEG_QUALITY = (70, 100)
ROTATE_P = 0.5
BLUR_P = 0.2
BLUR_KERNELS = (3, 5, 7)
# Side of a copy-move or inpainting rectangle, as a share of the image side (IMDLBenCo's defaults).
WINDOW_MIN, WINDOW_MAX = 0.05, 0.8
INPAINT_RADIUS = 3


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply the training augmentations and return the new image and mask (both contiguous)."""
    image, mask = random_scale(image, mask, rng.uniform(1 - SCALE_LIMIT, 1 + SCALE_LIMIT))
    if rng.random() < COPY_MOVE_P:
        image, mask = copy_move(image, mask, rng)
    if rng.random() < INPAINTING_P:
        image, mask = inpaint_rectangle(image, mask, rng)
    if rng.random() < FLIP_P:
        image, mask = cv2.flip(image, 1), cv2.flip(mask, 1)
    if rng.random() < FLIP_P:
        image, mask = cv2.flip(image, 0), cv2.flip(mask, 0)
    image = brightness_contrast(image, rng.uniform(-BRIGHTNESS_LIMIT, BRIGHTNESS_LIMIT), rng.uniform(-CONTRAST_LIMIT, CONTRAST_LIMIT))
    if rng.random() < JPEG_P:
        image = jpeg_roundtrip(image, int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    if rng.random() < ROTATE_P:
        turns = int(rng.integers(0, 4))
        if turns:
            image, mask = rotate(image, turns), rotate(mask, turns)
    if rng.random() < BLUR_P:
        kernel = int(rng.choice(BLUR_KERNELS))
        image = cv2.GaussianBlur(np.ascontiguousarray(image), (kernel, kernel), 0)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def rotate(array: np.ndarray, turns: int) -> np.ndarray:
    """Rotate by `turns` (1 to 3) quarter turns counter-clockwise, as np.rot90 does, with OpenCV's faster copy."""
    codes = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}
    return cv2.rotate(np.ascontiguousarray(array), codes[turns])


def random_scale(image: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize by `scale`: the image bilinearly, the mask by nearest neighbour."""
    height, width = mask.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)


def random_window(height: int, width: int, rng: np.random.Generator, size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Return (top, left, window height, window width) of a random rectangle inside the image.

    Each side is drawn from [5 %, 80 %) of the image side unless `size` fixes it.
    """
    if size is None:
        size = (_random_side(height, rng), _random_side(width, rng))
    window_height, window_width = min(size[0], height), min(size[1], width)
    top = int(rng.integers(0, height - window_height + 1))
    left = int(rng.integers(0, width - window_width + 1))
    return top, left, window_height, window_width


def _random_side(side: int, rng: np.random.Generator) -> int:
    low = max(1, int(side * WINDOW_MIN))
    high = max(low + 1, int(side * WINDOW_MAX))
    return int(rng.integers(low, high))


def copy_move(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Copy a random rectangle of the image to another random place and mark the destination as forged."""
    height, width = mask.shape
    source_top, source_left, window_height, window_width = random_window(height, width, rng)
    top, left, _, _ = random_window(height, width, rng, (window_height, window_width))
    image, mask = image.copy(), mask.copy()
    image[top : top + window_height, left : left + window_width] = image[source_top : source_top + window_height, source_left : source_left + window_width].copy()
    mask[top : top + window_height, left : left + window_width] = 1
    return image, mask


def inpaint_rectangle(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fill a random rectangle with OpenCV inpainting (Telea or Navier-Stokes, even odds) and mark it as forged."""
    height, width = mask.shape
    top, left, window_height, window_width = random_window(height, width, rng)
    method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS

    # Pixels farther than the inpainting radius from the hole do not affect the result, so OpenCV gets
    # only the rectangle and a margin around it: the same output, faster for small rectangles.
    margin = INPAINT_RADIUS + 1
    crop_top, crop_left = max(0, top - margin), max(0, left - margin)
    crop_bottom, crop_right = min(height, top + window_height + margin), min(width, left + window_width + margin)
    hole = np.zeros((crop_bottom - crop_top, crop_right - crop_left), np.uint8)
    hole[top - crop_top : top - crop_top + window_height, left - crop_left : left - crop_left + window_width] = 1
    image = np.array(image)
    image[crop_top:crop_bottom, crop_left:crop_right] = cv2.inpaint(np.ascontiguousarray(image[crop_top:crop_bottom, crop_left:crop_right]), hole, INPAINT_RADIUS, method)

    mask = mask.copy()
    mask[top : top + window_height, left : left + window_width] = 1
    return image, mask


def brightness_contrast(image: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """Return image * (1 + contrast) + brightness * 255, rounded and clipped to uint8."""
    table = np.clip(np.rint(np.arange(256) * (1.0 + contrast) + brightness * 255.0), 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(image), table)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an RGB image as JPEG at `quality` (0-100) and decode it again."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {image.shape} image as JPEG")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
