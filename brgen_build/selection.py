"""Selection of the photos the reals stage takes from a source: an image list, a seeded sample, or every photo.

An image list has one entry per line; blank lines and lines starting with `#` are ignored. An entry is
one of:
- a release id such as `ImageNet_n06359193_84719` or `COCO_000000000520`: the source's token, `_`, and
  a file stem. It matches the photo whose id it is under the source's `stem` rule, else a photo with
  that file stem (so `COCO_000000000520` still finds `000000000520.jpg` under an 11-digit rule);
- a bare file name such as `000000000520.jpg`;
- a path such as `train2017/000000000520.jpg`. It matches a member whose path is equal to it or ends
  with it. Inner tars count as folders, so `n01440764/n01440764_10026.JPEG` matches the member
  `n01440764.tar/n01440764_10026.JPEG` of ImageNet's nested tar.
An exact path match wins over a match of the end of a path. An entry that still matches several
photos is an error, because taking either one could build a different dataset than the list describes.

Selection streams over the container's members and keeps only what it selects, so memory grows with
the number of selected photos, not with the size of the archive.
"""

from __future__ import annotations

import heapq
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from brgen_build.errors import BrgenError
from brgen_build.recipe import SPLITS, SourceSpec
from brgen_build.seeding import stable_hash
from brgen_build.sources import Member, is_image_name, normalize_path

logger = logging.getLogger(__name__)

EXACT, SUFFIX = 0, 1


@dataclass
class Selected:
    """One selected photo: found (`member` set) or listed but not found (`member` None)."""

    id: str
    member: Member | None
    entry: str | None = None


@dataclass
class Selection:
    """The photos selected from one source, with counts for the stage summary."""

    photos: list[Selected] = field(default_factory=list)
    listed: int = 0
    ignored: Counter = field(default_factory=Counter)

    @property
    def missing(self) -> list[Selected]:
        return [photo for photo in self.photos if photo.member is None]


def read_image_list(path: Path) -> list[str]:
    """Return the entries of an image list in file order, without duplicates."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BrgenError(f"image list {path} not found; fix `image_list` of this source in the recipe") from None
    except UnicodeDecodeError as error:
        raise BrgenError(f"image list {path} is not UTF-8 text ({error}); give one file name or id per line") from None
    entries: dict[str, None] = {}
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.setdefault(entry, None)
    return list(entries)


def is_release_id(source: SourceSpec, entry: str) -> bool:
    """Return whether a list entry is a release id of this source (`COCO_000000000520`) rather than a file name."""
    return entry.startswith(f"{source.token}_") and "/" not in entry and not is_image_name(entry)


def member_keys(member: Member) -> list[tuple[str, int]]:
    """List the list-entry spellings that name this member: its whole path (exact) and each path ending."""
    keys = []
    for path in dict.fromkeys((normalize_path(member.path), member.logical_path)):
        parts = path.split("/")
        keys.append((path, EXACT))
        keys += [("/".join(parts[start:]), SUFFIX) for start in range(1, len(parts))]
    return keys


class _ListMatcher:
    """Match the entries of one image list against a stream of members."""

    def __init__(self, source: SourceSpec, entries: list[str]):
        self.source = source
        self.entries = entries
        self.by_path: dict[str, int] = {}
        self.by_id: dict[str, int] = {}
        self.by_stem: dict[str, int] = {}
        for index, entry in enumerate(entries):
            if is_release_id(source, entry):
                self.by_id.setdefault(entry_id(source, entry), index)
                self.by_stem.setdefault(entry[len(source.token) + 1 :], index)
            else:
                self.by_path.setdefault(normalize_path(entry), index)
        # entry index -> (rank, members at that rank)
        self.matches: dict[int, tuple[int, list[tuple[Member, str]]]] = {}

    def offer(self, member: Member, photo: str) -> None:
        candidates = [(self.by_id[photo], EXACT)] if photo in self.by_id else []
        stem = PurePosixPath(member.path).stem
        if stem in self.by_stem:
            candidates.append((self.by_stem[stem], SUFFIX))
        candidates += [(self.by_path[key], rank) for key, rank in member_keys(member) if key in self.by_path]
        for index, rank in candidates:
            best = self.matches.get(index)
            if best is None or rank < best[0]:
                self.matches[index] = (rank, [(member, photo)])
            elif rank == best[0] and all(other.path != member.path for other, _ in best[1]):
                best[1].append((member, photo))

    def result(self, list_path: Path) -> list[Selected]:
        photos = []
        for index, entry in enumerate(self.entries):
            if index not in self.matches:
                photos.append(Selected(entry_id(self.source, entry), None, entry))
                continue
            found = self.matches[index][1]
            if len(found) > 1:
                names = ", ".join(sorted(member.path for member, _ in found)[:3])
                raise BrgenError(
                    f"{list_path}: entry {entry!r} matches {len(found)} photos of {self.source.images} ({names}); "
                    "write the entry as a longer path or as a release id"
                )
            member, photo = found[0]
            photos.append(Selected(photo, member, entry))
        return photos


def select_photos(
    source: SourceSpec, members: Iterable[Member], seed: int, photo_id: Callable[[Member], str | None]
) -> Selection:
    """Select the photos of one source.

    With an image list, each entry becomes a photo, found or missing; with `count` as well, a seeded
    sample of `count` entries is kept. Without a list, every member with an image extension is a
    candidate, and `count` keeps a seeded sample of them. `photo_id` returns a member's id, or None
    for a member whose name gives no usable id (it is then ignored).
    """
    selection = Selection()
    matcher = None
    if source.image_list is not None:
        entries = read_image_list(source.image_list)
        selection.listed = len(entries)
        matcher = _ListMatcher(source, entries)

    candidates: list[Selected] = []
    for member in members:
        if matcher is None and not is_image_name(member.path):
            continue
        photo = photo_id(member)
        if photo is None:
            selection.ignored["name unusable as a photo id"] += 1
            continue
        if matcher is not None:
            matcher.offer(member, photo)
        else:
            candidates.append(Selected(photo, member))
            if source.count is not None and len(candidates) > 2 * source.count:
                candidates = _sample(candidates, source, seed)

    if matcher is not None:
        candidates = matcher.result(source.image_list)
    if source.count is not None:
        if len(candidates) < source.count:
            logger.warning("reals: %s: `count` is %d but only %d photos are available; taking all", source.token, source.count, len(candidates))
        candidates = _sample(candidates, source, seed)
    selection.photos = _without_duplicates(candidates, source)
    return selection


def _sample(candidates: list[Selected], source: SourceSpec, seed: int) -> list[Selected]:
    """Keep the `count` photos with the smallest hash of (seed, token, id): the same sample in any order."""
    return heapq.nsmallest(source.count, candidates, key=lambda photo: (stable_hash(seed, "select", source.token, photo.id), photo.id))


def _without_duplicates(photos: list[Selected], source: SourceSpec) -> list[Selected]:
    """Keep one photo per id, preferring a found one; two different members with one id are an error."""
    by_id: dict[str, Selected] = {}
    for photo in photos:
        other = by_id.get(photo.id)
        if other is None or other.member is None:
            by_id[photo.id] = photo if photo.member is not None or other is None else other
            continue
        if photo.member is None or photo.member.path == other.member.path:
            continue  # another list entry for a photo already found
        raise BrgenError(
            f"reals: {photo.member.path} and {other.member.path} of source {source.token} both get the id {photo.id}; "
            "set the source's `stem` rule to '{path}' so ids include the folder"
        )
    return sorted(by_id.values(), key=lambda photo: photo.id)


def entry_id(source: SourceSpec, entry: str) -> str:
    """Return the photo id a list entry names under the source's stem rule (the entry itself if the rule does not apply)."""
    # A release id carries a stem without extension; a dummy one keeps dots inside the stem.
    path = entry[len(source.token) + 1 :] + ".jpg" if is_release_id(source, entry) else normalize_path(entry)
    try:
        return f"{source.token}_{source.format_stem(path)}"
    except BrgenError:
        return entry if is_release_id(source, entry) else f"{source.token}_{PurePosixPath(path).stem}"


_SPLIT_LINE = re.compile(r"^(?P<id>\S+)\s+(?P<split>\S+)$")


def read_split_list(path: Path) -> dict[str, str]:
    """Read a split list: one `ID SPLIT` pair per line, e.g. `COCO_000000000520 test`.

    `ID` may also be an `Au` file name such as `COCO_000000000520.png`. Blank lines and lines starting
    with `#` are ignored.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise BrgenError(f"split list {path} not found; fix `split_list` in the recipe") from None
    splits: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _SPLIT_LINE.match(text)
        if not match or match["split"] not in SPLITS:
            raise BrgenError(f"{path}:{number}: expected `ID SPLIT` with SPLIT one of {', '.join(SPLITS)}, got {text!r}")
        photo = match["id"].removesuffix(".png")
        if splits.setdefault(photo, match["split"]) != match["split"]:
            raise BrgenError(f"{path}:{number}: {photo} is listed for both {splits[photo]} and {match['split']}")
    return splits
