"""PNG annotation files in a folder or a zip archive, found by file name.

COCO ships panoptic PNGs as `panoptic_train2017.zip` (members `panoptic_train2017/<id>.png`) and
COCO-Stuff label maps as `stuffthingmaps_trainval2017.zip` (members `train2017/<id>.png`), so both the
extracted folder and the archive are accepted. Files are looked up by name alone, folders ignored.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from brgen_build.errors import BrgenError


class PngStore:
    """Read PNG files by base name from a folder (searched recursively) or a zip archive."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if self.path.is_dir():
            for folder, _, files in os.walk(self.path):
                for file_name in files:
                    if file_name.lower().endswith(".png"):
                        self._members.setdefault(file_name, os.path.join(folder, file_name))
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            for info in self._zip.infolist():
                name = PurePosixPath(info.filename).name
                if not info.is_dir() and name.lower().endswith(".png"):
                    self._members.setdefault(name, info.filename)
        elif not self.path.exists():
            raise BrgenError(f"{what} {self.path} not found; fix the source's `annotation_masks` in the recipe")
        else:
            raise BrgenError(f"{what} {self.path} is neither a folder nor a zip archive of PNG files")

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, name: str) -> bool:
        return PurePosixPath(name).name in self._members

    def open(self, name: str) -> Image.Image:
        """Open the PNG called `name` (folders ignored); raises KeyError when there is none."""
        member = self._members[PurePosixPath(name).name]
        if self._zip is None:
            return Image.open(member)
        return Image.open(io.BytesIO(self._zip.read(member)))


def read_indices(image: Image.Image) -> np.ndarray | None:
    """Return the pixel values of an L or P image as an HxW uint8 array (palette indices, not colours).

    Returns None for other modes: an RGB rendering of a label map cannot be read back as labels.
    """
    if image.mode not in ("L", "P"):
        return None
    return np.asarray(image)
