"""Photo containers: a folder or a zip archive of images, read member by member.

Member names are paths relative to the container, with forward slashes.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

from brgen_build.errors import BrgenError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jfif"}


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


class FolderContainer:
    def __init__(self, path: Path):
        self.path = path

    def members(self) -> list[str]:
        names = []
        for folder, _, files in os.walk(self.path):
            for file_name in files:
                if is_image_name(file_name):
                    names.append((Path(folder) / file_name).relative_to(self.path).as_posix())
        return sorted(names)

    def read(self, member: str) -> bytes:
        return (self.path / member).read_bytes()

    def close(self) -> None:
        pass


class ZipContainer:
    """A zip archive such as COCO's `train2017.zip`; members are read without extracting the archive."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise BrgenError(f"{path} is not a readable zip archive ({error}); check the download") from None
        self._names = {info.filename: info for info in self._zip.infolist() if not info.is_dir()}

    def members(self) -> list[str]:
        return sorted(name for name in self._names if is_image_name(name))

    def read(self, member: str) -> bytes:
        return self._zip.read(self._names[member])

    def close(self) -> None:
        self._zip.close()


def open_container(path: Path) -> FolderContainer | ZipContainer:
    """Open a folder or a zip of photos named by a recipe source's `images`."""
    if path.is_dir():
        return FolderContainer(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return ZipContainer(path)
    if not path.exists():
        raise BrgenError(f"photo source {path} not found; fix `images` of this source in the recipe")
    raise BrgenError(f"photo source {path} is neither a folder nor a zip archive; give the extracted folder or the zip")
