"""Stage `reals`: select the real photos, assign splits, decode each once and write `<split>/Au/<id>.png`.

Selection per source (see `brgen_build.selection`): the entries of the image list if the recipe gives
one, else every photo in the container, then a seeded sample of `count` if `count` is set. A listed
photo that is not in the container gets a `skipped` record with `"missing": true`. When more than
`max_missing` listed photos are missing, the stage writes those records, extracts nothing and fails.

Splits are assigned by ranking all selected photo ids, missing ones included, by a hash of the recipe
seed and the id. So a photo's split depends only on the seed and the set of ids, never on listing order
or shards. A split list in the recipe fixes the split of the photos it names.

Photos are read in the order the container stores them. A tar archive is read front to back once per
run (see `brgen_build.tar_source`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

from brgen_build.decode import UnreadableImage, decode_photo
from brgen_build.engine import Item, Stage, StageSummary
from brgen_build.errors import BrgenError
from brgen_build.files import sha256_bytes, write_png
from brgen_build.layout import DatasetRoot, real_id
from brgen_build.manifest import FAILED, OK, SKIPPED, read_records
from brgen_build.recipe import SPLITS, Recipe, SourceSpec
from brgen_build.seeding import stable_hash
from brgen_build.selection import Selection, is_release_id, read_image_list, read_split_list, select_photos
from brgen_build.sources import (
    Container,
    ContainerReadError,
    FolderContainer,
    Member,
    MemberUnreadable,
    normalize_path,
    open_container,
)

logger = logging.getLogger(__name__)

# Maximum photo stem length in UTF-8 bytes. Forgery file names add up to about 40 bytes to the id, and
# most file systems allow 255 bytes per file name.
MAX_STEM_BYTES = 150
MISSING_NAMES_IN_SUMMARY = 10
# Maximum file size of a photo within decode.max_pixels: 8 bytes per pixel (16-bit RGBA, uncompressed)
# plus room for metadata such as EXIF and ICC profiles. Larger members are skipped without being read.
BYTES_PER_PIXEL = 8
METADATA_BYTES = 1 << 20


def split_sizes(splits: dict[str, float], total: int) -> dict[str, int]:
    """Photo counts per split for `total` photos.

    Counts that sum to `total` are used as they are; otherwise (fractions, or fewer photos found than the
    recipe requests) they are scaled to `total` by the largest-remainder method.
    """
    if sum(splits.values()) == total and all(float(v).is_integer() for v in splits.values()):
        return {name: int(value) for name, value in splits.items()}
    weight = sum(splits.values())
    exact = {name: total * value / weight for name, value in splits.items()}
    sizes = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (-(exact[name] - sizes[name]), SPLITS.index(name)))
    for name in by_remainder[: total - sum(sizes.values())]:
        sizes[name] += 1
    return sizes


def assign_splits(ids: Iterable[str], splits: dict[str, float], seed: int, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Return the split name of every photo id.

    The result depends only on the set of ids, the split sizes, the seed and `fixed` (id -> split, from a
    split list). Fixed photos keep their split and count towards its size. The other photos fill what is
    left of each split, in the order of a hash of the seed and the id.
    """
    id_set = set(ids)
    fixed = {photo: split for photo, split in (fixed or {}).items() if photo in id_set}
    targets = split_sizes(splits, len(id_set))
    fixed_counts = Counter(fixed.values())
    remaining = {name: max(0, targets[name] - fixed_counts[name]) for name in SPLITS}
    if sum(remaining.values()) == 0:
        remaining = dict(splits)

    ranked = sorted(id_set - fixed.keys(), key=lambda photo: (stable_hash(seed, "split", photo), photo))
    sizes = split_sizes(remaining, len(ranked))
    assignment, start = dict(fixed), 0
    for name in SPLITS:
        for photo in ranked[start : start + sizes[name]]:
            assignment[photo] = name
        start += sizes[name]
    return assignment


def planned_split_counts(recipe: Recipe, ids: Iterable[str]) -> dict[str, int]:
    """Return how many of these photo ids the recipe puts in each split, split list included."""
    fixed = read_split_list(recipe.split_list) if recipe.split_list is not None else {}
    counts = Counter(assign_splits(ids, recipe.splits, recipe.seed, fixed).values())
    return {name: counts[name] for name in SPLITS}


def is_safe_stem(stem: str) -> bool:
    """Return whether a stem can be part of a file name in one folder: no separator, no control character.

    Stems come from archive member names, which an archive can choose freely (`../../x`, `/etc/x`).
    """
    return (
        0 < len(stem.encode("utf-8", "replace")) <= MAX_STEM_BYTES
        and not stem.startswith(".")
        and "/" not in stem
        and "\\" not in stem
        and stem.isprintable()
    )


def photo_id(source: SourceSpec, member: Member) -> str | None:
    """Return the id of a member's photo, or None if its name gives no safe id under the source's stem rule."""
    try:
        stem = source.format_stem(member.logical_path)
    except BrgenError:
        return None
    return real_id(source.token, stem) if is_safe_stem(stem) else None


@dataclass(frozen=True)
class Photo:
    """Payload of a planned item: the photo's source and member. `member` is None for a listed photo that was not found."""

    source: SourceSpec
    member: Member | None
    entry: str | None


class RealsStage(Stage):
    name = "reals"

    def __init__(self, root: DatasetRoot, recipe: Recipe):
        super().__init__(root)
        self.recipe = recipe
        self.containers: dict[str, Container] = {}
        self.selections: dict[str, Selection] = {}
        self.missing_recorded = 0

    # Planning

    def plan(self) -> list[Item]:
        photos: dict[str, Photo] = {}
        for source in self.recipe.sources:
            container = self.containers.get(source.token) or open_container(source.images, self.root.cache_dir(self.name))
            self.containers[source.token] = container
            selection = select_photos(source, self._candidate_members(source, container), self.recipe.seed, lambda m: photo_id(source, m))
            self.selections[source.token] = selection
            for photo in selection.photos:
                photos[photo.id] = Photo(source, photo.member, photo.entry)
            for reason, count in selection.ignored.items():
                logger.warning("reals: %s: %d member(s) of %s ignored: %s", source.token, count, source.images, reason)

        fixed = read_split_list(self.recipe.split_list) if self.recipe.split_list is not None else {}
        unknown = len(fixed.keys() - photos.keys())
        if unknown:
            logger.warning("reals: %d id(s) of the split list %s are not selected photos; ignored", unknown, self.recipe.split_list)
        splits = assign_splits(photos, self.recipe.splits, self.recipe.seed, fixed)
        self._check_splits_unchanged(splits)
        return [Item(photo, splits[photo], photos[photo]) for photo in sorted(photos)]

    def _candidate_members(self, source: SourceSpec, container: Container) -> Iterable[Member]:
        """Return the members to select from. A folder whose image list has only plain paths is not walked."""
        if isinstance(container, FolderContainer) and source.image_list is not None:
            entries = read_image_list(source.image_list)
            paths = [normalize_path(entry) for entry in entries]
            plain = all(path and ".." not in path.split("/") for path in paths)
            if plain and not any(is_release_id(source, entry) for entry in entries):
                found = [container.lookup(path) for path in paths]
                if all(member is not None for member in found):
                    return found
        return container.members()

    def _check_splits_unchanged(self, splits: dict[str, str]) -> None:
        changed = []
        for record in read_records(self.root.manifest_dir(self.name)).values():
            planned = splits.get(record["id"])
            if record["status"] == OK and planned is not None and planned != record["split"]:
                changed.append(f"{record['id']} ({record['split']} -> {planned})")
        if changed:
            raise BrgenError(
                f"reals: the split of {len(changed)} extracted photo(s) would change, e.g. {', '.join(changed[:3])}, because the "
                "selected photos, `splits` or the split list changed since they were extracted. Restore them, or build into a new --root"
            )

    def is_finished(self, item: Item, record: dict | None) -> bool:
        if record is not None and record.get("missing") and item.payload.member is not None:
            return False  # listed as missing before, found now
        return super().is_finished(item, record)

    def _over_limit(self) -> list[str]:
        problems = []
        for source in self.recipe.sources:
            selection = self.selections.get(source.token)
            if selection is None or not selection.listed:
                continue
            missing = selection.missing
            limit = source.missing_limit(selection.listed)
            if len(missing) > limit:
                examples = ", ".join(repr(photo.entry) for photo in missing[:5])
                problems.append(
                    f"{len(missing)} of the {selection.listed} photos listed in {source.image_list} are not in {source.images} "
                    f"(max_missing: {source.max_missing}), e.g. {examples}"
                )
        return problems

    # Reading

    def batches(self, pending: list[Item]) -> Iterator[list[Item]]:
        """Yield missing photos first, then each source's photos in the order its container stores them."""
        missing = [Item(item.id, item.split, (item.payload, None)) for item in pending if item.payload.member is None]
        for start in range(0, len(missing), 256):
            yield missing[start : start + 256]
        if self._over_limit():
            return  # finish() raises, so nothing is extracted from a container that lacks too many photos

        by_source: dict[str, list[Item]] = defaultdict(list)
        for item in pending:
            if item.payload.member is not None:
                by_source[item.payload.source.token].append(item)
        for source in self.recipe.sources:
            items = by_source.get(source.token, [])
            if items:
                yield from self._read_source(source, items)

    def _read_source(self, source: SourceSpec, items: list[Item]) -> Iterator[list[Item]]:
        max_bytes = BYTES_PER_PIXEL * self.recipe.max_pixels + METADATA_BYTES
        by_member = {}
        for item in items:
            size = item.payload.member.size
            if size > max_bytes:
                reason = MemberUnreadable(f"{size} bytes, more than a photo within decode.max_pixels needs ({max_bytes} bytes)")
                yield [Item(item.id, item.split, (item.payload, reason))]
            else:
                by_member[item.payload.member] = item
        unread = dict(by_member)
        try:
            for member, data in self.containers[source.token].read_members(list(by_member)):
                item = unread.pop(member)
                yield [Item(item.id, item.split, (item.payload, data))]
        except (OSError, EOFError) as error:
            reason = ContainerReadError(f"cannot read {source.images}: {error}")
            for item in unread.values():
                yield [Item(item.id, item.split, (item.payload, reason))]

    # Processing

    def process(self, batch: list[Item]) -> list[dict]:
        return [self._process_one(item) for item in batch]

    def _process_one(self, item: Item) -> dict:
        photo, data = item.payload
        source, member = photo.source, photo.member
        record = {
            "id": item.id,
            "split": item.split,
            "source": source.token,
            "member": member.path if member is not None else None,
            "container": str(source.images),
        }
        if photo.entry is not None:
            record["list_entry"] = photo.entry
        if member is None:
            self.missing_recorded += 1
            reason = f"{photo.entry!r} of the image list {source.image_list} not found in {source.images}"
            return {**record, "status": SKIPPED, "missing": True, "reason": reason}
        if isinstance(data, ContainerReadError):
            return {**record, "status": FAILED, "reason": str(data)}
        if isinstance(data, MemberUnreadable):
            return {**record, "status": SKIPPED, "reason": f"{source.images}: {member.path}: {data}"}

        record.update({"source_bytes": len(data), "source_sha256": sha256_bytes(data)})
        try:
            decoded = decode_photo(data, member.path, self.recipe.max_pixels)
        except UnreadableImage as error:
            return {**record, "status": SKIPPED, "reason": f"{source.images}: {member.path}: {error}"}
        path = self.root.au(item.split, item.id)
        entry = write_png(path, decoded.array)
        return {
            **record,
            "status": OK,
            "width": decoded.width,
            "height": decoded.height,
            "format": decoded.format,
            "mode": decoded.mode,
            "icc_profile": decoded.icc_profile,
            "fixes": decoded.fixes,
            "files": {"au": {"path": self.root.relative(path), **entry}},
        }

    # Reporting

    def progress_counts(self, summary: StageSummary) -> dict[str, int]:
        return {
            "found": summary.counts[OK],
            "missing": self.missing_recorded,
            "unreadable": summary.counts[SKIPPED] - self.missing_recorded,
            "failed": summary.counts[FAILED],
        }

    def finish(self, summary: StageSummary) -> None:
        for container in self.containers.values():
            container.close()
        self.containers.clear()
        for source in self.recipe.sources:
            selection = self.selections.get(source.token)
            if selection is None:
                continue
            if not selection.listed:
                summary.notes.append(f"{source.token}: {len(selection.photos)} photo(s) selected from {source.images}")
                continue
            missing = selection.missing
            found = len(selection.photos) - len(missing)
            summary.notes.append(
                f"{source.token}: {selection.listed} listed in {source.image_list}, "
                f"{found} found and {len(missing)} missing in {source.images} (all shards)"
            )
            if missing:
                shown = ", ".join(photo.entry for photo in missing[:MISSING_NAMES_IN_SUMMARY])
                more = f" and {len(missing) - MISSING_NAMES_IN_SUMMARY} more" if len(missing) > MISSING_NAMES_IN_SUMMARY else ""
                summary.notes.append(f"{source.token}: missing: {shown}{more}; each has a record with \"missing\": true")
        problems = self._over_limit()
        if problems:
            raise BrgenError(
                "reals: " + "; ".join(problems) + ". No photo is extracted while too many are missing: check `images` of the source, or raise its `max_missing`"
            )
