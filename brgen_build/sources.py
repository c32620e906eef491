"""Photo containers: a folder, a zip archive or a tar archive of images.

Every container lists its regular files as `Member`s (`members`) and reads a chosen set of them in the
order they are stored (`read_members`), so that an archive is read front to back once. Tar archives live
in `brgen_build.tar_source`; ImageNet's tar of per-synset tars is read without extracting the inner tars.

Member paths are the names stored in the container, with forward slashes. They come from untrusted
archives and may be absolute or contain `..`. brgen only compares them with image-list entries and
derives photo ids from them (checked by `brgen_build.stages.reals.photo_id`); it never creates a file
under a member's name.
"""

from __future__ import annotations

import logging
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Protocol

from brgen_build.errors import BrgenError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jfif"}


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def normalize_path(path: str) -> str:
    """Drop empty and `.` components, so `./a//b.jpg` and `/a/b.jpg` both become `a/b.jpg`; `..` stays."""
    return "/".join(part for part in path.replace("\\", "/").split("/") if part not in ("", "."))


@dataclass(frozen=True)
class Member:
    """One regular file in a container.

    `path` is the name stored in the container. A file inside an inner tar of a tar archive has
    `inner_tar` set to the inner tar's path and `path` = `<inner_tar>/<name in the inner tar>`.
    `offset` locates the file: the local header offset in a zip, the header offset in a tar's
    (decompressed) byte stream. `base` is where the inner tar's data starts in that stream, else 0.
    """

    path: str
    size: int
    offset: int = 0
    base: int = 0
    inner_tar: str = ""

    @property
    def logical_path(self) -> str:
        """The path as it would be after extracting every archive: `n01440764.tar/x.JPEG` -> `n01440764/x.JPEG`."""
        if self.inner_tar:
            name = self.path[len(self.inner_tar) + 1 :]
            return normalize_path(f"{self.inner_tar[: -len('.tar')]}/{name}")
        return normalize_path(self.path)


class MemberUnreadable(Exception):
    """The member's bytes cannot be read (bad CRC, unsupported compression): a problem of this file only."""


class ContainerReadError(Exception):
    """Reading the container failed (I/O error, truncated archive): worth retrying once the container is fixed."""


class Container(Protocol):
    path: Path

    def members(self) -> Iterator[Member]:
        """Yield every regular file, in no particular order."""

    def read_members(self, members: Iterable[Member]) -> Iterator[tuple[Member, bytes | Exception]]:
        """Yield each requested member with its bytes, or with a MemberUnreadable or ContainerReadError."""

    def close(self) -> None: ...


class FolderContainer:
    """A folder of photos, walked recursively.

    Symbolic links to files are followed when reading. Links to folders are not walked, because they could
    form cycles. File names that are not valid UTF-8 are skipped with a warning, because a manifest record
    could not store them.
    """

    def __init__(self, path: Path):
        self.path = path

    def members(self) -> Iterator[Member]:
        undecodable = 0
        for folder, _, files in os.walk(self.path):
            for file_name in sorted(files):
                path = Path(folder) / file_name
                relative = path.relative_to(self.path).as_posix()
                try:
                    relative.encode("utf-8")
                except UnicodeEncodeError:
                    undecodable += 1
                    continue
                try:
                    info = path.stat()
                except OSError:  # a dangling symbolic link
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield Member(relative, info.st_size)
        if undecodable:
            logger.warning("reals: %s: %d file name(s) that are not valid UTF-8 were ignored", self.path, undecodable)

    def lookup(self, relative: str) -> Member | None:
        """Return the member at a relative path without walking the folder, or None if no regular file is there."""
        path = self.path / relative
        try:
            info = path.stat()
        except (OSError, ValueError):
            return None
        return Member(relative, info.st_size) if stat.S_ISREG(info.st_mode) else None

    def read_members(self, members: Iterable[Member]) -> Iterator[tuple[Member, bytes | Exception]]:
        for member in sorted(members, key=lambda member: member.path):
            try:
                yield member, (self.path / member.path).read_bytes()
            except OSError as error:
                yield member, ContainerReadError(f"cannot read {self.path / member.path}: {error.strerror or error}")

    def close(self) -> None:
        pass


def _is_zip_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


class ZipContainer:
    """A zip archive such as COCO's `train2017.zip`, read without extracting it.

    Symbolic-link entries are not listed. zipfile keeps the central directory in memory, about half a
    kilobyte per entry (an estimate).
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise BrgenError(f"{path} is not a readable zip archive ({error}); check the download") from None
        self._infos = {}
        for info in self._zip.infolist():
            if not info.is_dir() and not _is_zip_symlink(info):
                self._infos.setdefault(info.filename, info)

    def members(self) -> Iterator[Member]:
        for name, info in self._infos.items():
            yield Member(name, info.file_size, info.header_offset)

    def read_members(self, members: Iterable[Member]) -> Iterator[tuple[Member, bytes | Exception]]:
        for member in sorted(members, key=lambda member: member.offset):
            try:
                yield member, self._zip.read(self._infos[member.path])
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as error:
                yield member, MemberUnreadable(f"{type(error).__name__}: {error}")
            except OSError as error:
                yield member, ContainerReadError(f"cannot read {self.path}: {error.strerror or error}")

    def close(self) -> None:
        self._zip.close()


def open_container(path: Path, index_folder: Path | None = None) -> Container:
    """Open a folder, zip or tar of photos named by a recipe source's `images`.

    `index_folder` is where the member index of a tar archive is cached between runs.
    """
    from brgen_build.tar_source import TarContainer, is_tar_archive

    if path.is_dir():
        return FolderContainer(path)
    if not path.exists():
        raise BrgenError(f"photo source {path} not found; fix `images` of this source in the recipe")
    if path.is_file() and zipfile.is_zipfile(path):
        return ZipContainer(path)
    if path.is_file() and is_tar_archive(path):
        return TarContainer(path, index_folder)
    raise BrgenError(
        f"photo source {path} is neither a folder, a zip nor a tar archive; give the extracted folder or the archive"
    )
