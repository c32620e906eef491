"""Checks of one real photo and every file made from it; verify runs them in worker processes.

A `PhotoTask` lists the real photo, its masks and its forgeries with the sha256 and size each manifest
recorded. `check_photo` reads every file once, hashes the bytes it read, decodes them fully from memory,
and compares the images with each other. Only the real photo, its masks and one forgery are decoded at a
time, so memory stays at a few images per worker whatever the size of the dataset.

Each finding is a `Problem` whose `check` names what failed:
  missing       a file the manifest lists does not exist
  read          the file exists but cannot be read
  sha256        the bytes differ from the manifest's hash (changed or damaged after writing)
  decode        the PNG does not decode fully (truncated or corrupt), or is not a PNG
  mode          a real photo or forgery is not 8-bit RGB, or a mask is not 8-bit single-channel
  dimensions    a file's width and height differ from its real photo's
  mask_values   a mask contains values other than 0 and 255 (a 0/1 mask reads as empty in IMDLBenCo)
  gt_mask       a forgery's Gt mask differs from the mask of its (real photo, kind)
  outside_mask  a forgery differs from its real photo outside its Gt mask
  changed_share for full regeneration: the share of pixels changed outside the mask differs from the record
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from brgen_build.catalog import FileRef

# Tolerance between a measured share and the recorded one: records round shares to 6 decimals.
SHARE_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class MaskTask:
    id: str
    kind: str
    file: FileRef


@dataclass(frozen=True, slots=True)
class ForgeryTask:
    id: str
    kind: str
    tp: FileRef
    gt: FileRef
    full_regeneration: bool = False
    changed_outside: float | None = None


@dataclass(frozen=True, slots=True)
class PhotoTask:
    """A real photo (`id`, its `au` file and recorded size) with the masks and forgeries made from it."""

    id: str
    au: FileRef
    width: int | None
    height: int | None
    masks: tuple[MaskTask, ...] = ()
    forgeries: tuple[ForgeryTask, ...] = ()


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    item: str
    file: str | None
    message: str

    def line(self) -> str:
        return f"{self.file or self.item}: {self.message}"


@dataclass
class PhotoResult:
    id: str
    problems: list[Problem] = field(default_factory=list)
    # ids of the items (real, masks, forgeries) with at least one problem
    invalid: set[str] = field(default_factory=set)
    files: int = 0
    bytes: int = 0


@contextmanager
def strict_decoding():
    """Make Pillow raise on truncated images, whatever another library set, for the duration of the block."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def decode_failure(error: Exception) -> str:
    """Return why Pillow failed to decode a file, worded to follow the file name and without the stream repr of Pillow's message."""
    if isinstance(error, UnidentifiedImageError):
        return "is not a PNG or any other image Pillow can read"
    return f"does not decode fully ({error or type(error).__name__})"


def read_and_hash(path: Path) -> tuple[bytes, str]:
    """Read a whole file and return its bytes with their sha256, so the file is read from disk once."""
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


class _PhotoChecker:
    def __init__(self, root: Path, task: PhotoTask):
        self.root = root
        self.task = task
        self.result = PhotoResult(task.id)

    def problem(self, check: str, item: str, file: str | None, message: str) -> None:
        self.result.problems.append(Problem(check, item, file, message))
        self.result.invalid.add(item)

    def load(self, item: str, ref: FileRef) -> Image.Image | None:
        """Read, hash and fully decode one file; return the decoded image, or None if it cannot be used."""
        try:
            data, digest = read_and_hash(self.root / ref.path)
        except FileNotFoundError:
            self.problem("missing", item, ref.path, "missing; the manifest lists it")
            return None
        except OSError as error:
            self.problem("read", item, ref.path, f"cannot be read: {error.strerror or error}")
            return None
        self.result.files += 1
        self.result.bytes += len(data)
        if digest != ref.sha256:
            self.problem(
                "sha256", item, ref.path,
                f"sha256 {digest[:16]}... differs from the manifest's {ref.sha256[:16]}... "
                f"({len(data)} bytes, manifest {ref.bytes}); the file was changed or damaged after it was written",
            )
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as error:  # any decoder failure is a finding about this file, not a crash
            self.problem("decode", item, ref.path, decode_failure(error))
            return None
        if image.format != "PNG":
            self.problem("decode", item, ref.path, f"is a {image.format} file, not a PNG")
        return image

    def check_size(self, item: str, ref: FileRef, image: Image.Image, size: tuple[int, int], what: str) -> bool:
        if image.size == size:
            return True
        self.problem("dimensions", item, ref.path, f"is {image.width}x{image.height} but {what} is {size[0]}x{size[1]}")
        return False

    def check_mask(self, item: str, ref: FileRef, image: Image.Image, size: tuple[int, int]) -> np.ndarray | None:
        """Check a mask's mode, size and values; return it as an HxW uint8 array when it is valid."""
        if image.mode != "L":
            self.problem("mode", item, ref.path, f"mask mode is {image.mode}; masks must be 8-bit single-channel (L)")
            return None
        if not self.check_size(item, ref, image, size, "its real photo"):
            return None
        histogram = image.histogram()
        if any(histogram[1:255]):
            values = [value for value, count in enumerate(histogram) if count][:8]
            self.problem(
                "mask_values", item, ref.path,
                f"mask values {values} are not only 0 and 255 (a 0/1 mask reads as empty in IMDLBenCo); "
                "masks must be 0 = keep, 255 = regenerated",
            )
            return None
        return np.asarray(image)

    def run(self) -> PhotoResult:
        task = self.task
        real = self.check_real()

        masks: dict[str, np.ndarray] = {}
        for mask in task.masks:
            image = self.load(mask.id, mask.file)
            if image is not None and real is not None:
                array = self.check_mask(mask.id, mask.file, image, (real.shape[1], real.shape[0]))
                if array is not None:
                    masks[mask.kind] = array

        for forgery in task.forgeries:
            self.check_forgery(forgery, real, masks.get(forgery.kind))
        return self.result

    def check_real(self) -> np.ndarray | None:
        """Check the real photo's mode and recorded size; return it as an HxWx3 uint8 array when it is valid."""
        task = self.task
        real = self.load(task.id, task.au)
        if real is None:
            return None
        if real.mode != "RGB":
            self.problem("mode", task.id, task.au.path, f"real photo mode is {real.mode}; real photos must be 8-bit RGB")
            return None
        if task.width is not None and not self.check_size(task.id, task.au, real, (task.width, task.height), "its record"):
            return None
        return np.asarray(real)

    def check_forgery(self, forgery: ForgeryTask, real: np.ndarray | None, mask: np.ndarray | None) -> None:
        tp = self.load(forgery.id, forgery.tp)
        gt = self.load(forgery.id, forgery.gt)
        if tp is None or gt is None or real is None:
            return
        size = (real.shape[1], real.shape[0])
        if tp.mode != "RGB":
            self.problem("mode", forgery.id, forgery.tp.path, f"forgery mode is {tp.mode}; forgeries must be 8-bit RGB")
            return
        if not self.check_size(forgery.id, forgery.tp, tp, size, "its real photo"):
            return
        gt_array = self.check_mask(forgery.id, forgery.gt, gt, size)
        if gt_array is None:
            return
        if mask is not None and not forgery.full_regeneration and not np.array_equal(gt_array, mask):
            differing = int(np.count_nonzero(gt_array != mask))
            self.problem("gt_mask", forgery.id, forgery.gt.path, f"differs from the {forgery.kind} mask of {self.task.id} in {differing} pixel(s)")

        outside = gt_array == 0
        changed = np.any(np.asarray(tp) != real, axis=2) & outside
        count = int(np.count_nonzero(changed))
        if not forgery.full_regeneration:
            if count:
                y, x = np.argwhere(changed)[0]
                self.problem(
                    "outside_mask", forgery.id, forgery.tp.path,
                    f"{count} pixel(s) outside the Gt mask differ from the real photo (first at x={x}, y={y})",
                )
            return
        share = count / max(int(np.count_nonzero(outside)), 1)
        if forgery.changed_outside is None:
            self.problem("changed_share", forgery.id, forgery.tp.path, "record marks full regeneration but has no `changed_outside_before_paste`")
        elif abs(share - forgery.changed_outside) > SHARE_TOLERANCE:
            self.problem(
                "changed_share", forgery.id, forgery.tp.path,
                f"{share:.6f} of the pixels outside the mask differ from the real photo, the record says {forgery.changed_outside:.6f}",
            )


def check_photo(root: str, task: PhotoTask) -> PhotoResult:
    """Run every check on one real photo and the files made from it (safe to call in a worker process)."""
    with strict_decoding():
        return _PhotoChecker(Path(root), task).run()
