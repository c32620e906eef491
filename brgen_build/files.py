"""Atomic file writes and hashing.

A stage never leaves a half-written file under its final name: data goes to a temporary file in the same
folder, is flushed to disk, and is then renamed over the target. A crash leaves at most a `.tmp-*` file,
which the next run ignores and overwrites.

A write with `durable=False` skips the fsync. A process crash still leaves the old file or the new one, but
after a power loss the renamed file may be empty. Stages use it only for files whose manifest record
stores a sha256, because the engine redoes an item whose file does not match its record.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from brgen_build.errors import BrgenError

TEMPORARY_PREFIX = ".tmp-"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file, fsync (unless `durable` is False) and rename.

    Raises:
        BrgenError: the folder is read-only or the disk is full; no partial file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise BrgenError(f"cannot write {path}: {error.strerror or error}; free disk space or fix the folder's permissions") from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode an HxW (grayscale) or HxWx3 (RGB) uint8 array as PNG bytes.

    Level 1 is zlib's fastest setting: files are about 10 % larger than at the default level 6 and
    encode several times faster, which matters at 150,000 forgeries.
    """
    if array.dtype != np.uint8:
        raise ValueError(f"PNG arrays must be uint8, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"PNG arrays must be HxW or HxWx3, got shape {array.shape}")
    image = Image.fromarray(np.ascontiguousarray(array))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode an HxW uint8 mask (0 and 255) as a single-channel 8-bit PNG.

    OpenCV with zlib level 1, the RLE strategy and no row filter. On the sample photo 142238's Stuff mask
    (640x427) this took 0.4-0.6 ms of CPU against 2.1-2.5 ms for `encode_png`, and wrote 5,266 bytes
    against 6,737 (OpenCV 5.1, Pillow 13.0, the 2-core development machine).
    """
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"masks must be HxW uint8 arrays, got {mask.dtype} of shape {mask.shape}")
    parameters = [
        cv2.IMWRITE_PNG_COMPRESSION, 1,
        cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
        cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
    ]
    ok, encoded = cv2.imencode(".png", mask, parameters)
    if not ok:
        raise ValueError(f"OpenCV could not encode a mask of shape {mask.shape} as PNG")
    return encoded.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray) -> dict:
    """Write an array as PNG atomically and return the file entry of a manifest record."""
    data = encode_png(array)
    atomic_write_bytes(path, data)
    return {"sha256": sha256_bytes(data), "bytes": len(data)}


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Decode a PNG fully into an array (HxW for L, HxWx3 for RGB)."""
    with Image.open(path) as image:
        image.load()
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)
