"""Stage `reals`: select the real photos, assign splits, decode each once and write `<split>/Au/<id>.png`.

Selection per source: the image list if the recipe gives one, else every photo in the container, then a
seeded sample of `count` photos if `count` is set. Splits are assigned by ranking all selected photo ids
by a hash of the recipe seed and the id, so a photo's split never depends on listing order or shards.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from brgen_build.decode import UnreadableImage, decode_photo
from brgen_build.engine import Item, Stage
from brgen_build.errors import BrgenError
from brgen_build.files import write_png
from brgen_build.layout import DatasetRoot, real_id
from brgen_build.manifest import OK, SKIPPED
from brgen_build.recipe import SPLITS, Recipe, SourceSpec
from brgen_build.seeding import stable_hash
from brgen_build.sources import open_container

logger = logging.getLogger(__name__)


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


def assign_splits(ids: list[str], splits: dict[str, float], seed: int) -> dict[str, str]:
    """Split name of every photo id; depends only on the set of ids, the split sizes and the seed."""
    ranked = sorted(set(ids), key=lambda photo: (stable_hash(seed, "split", photo), photo))
    sizes = split_sizes(splits, len(ranked))
    assignment, start = {}, 0
    for name in SPLITS:
        for photo in ranked[start : start + sizes[name]]:
            assignment[photo] = name
        start += sizes[name]
    return assignment


def select_members(source: SourceSpec, members: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Select the members of one source; return them and the image-list entries that were not found."""
    missing: list[str] = []
    if source.image_list is not None:
        by_name = {PurePosixPath(member).name: member for member in members}
        by_path = set(members)
        wanted = [line.strip() for line in source.image_list.read_text(encoding="utf-8").splitlines() if line.strip()]
        selected = []
        for entry in wanted:
            if entry in by_path:
                selected.append(entry)
            elif PurePosixPath(entry).name in by_name:
                selected.append(by_name[PurePosixPath(entry).name])
            else:
                missing.append(entry)
        members = selected
    if source.count is not None:
        members = sorted(members, key=lambda member: (stable_hash(seed, "select", source.token, member), member))[: source.count]
    return sorted(members), missing


class RealsStage(Stage):
    name = "reals"

    def __init__(self, root: DatasetRoot, recipe: Recipe):
        super().__init__(root)
        self.recipe = recipe
        self.containers = {}
        self.missing: dict[str, list[str]] = {}

    def plan(self) -> list[Item]:
        selected: dict[str, tuple[SourceSpec, str]] = {}
        for source in self.recipe.sources:
            container = self.containers.get(source.token) or open_container(source.images)
            self.containers[source.token] = container
            members, missing = select_members(source, container.members(), self.recipe.seed)
            self.missing[source.token] = missing
            for entry in missing:
                logger.warning("reals: %s: %s is listed in %s but not found in %s", source.token, entry, source.image_list, source.images)
            for member in members:
                photo = real_id(source.token, source.format_stem(member))
                if photo in selected:
                    other = selected[photo][1]
                    raise BrgenError(
                        f"reals: {member} and {other} of source {source.token} both get the id {photo}; "
                        "set the source's `stem` rule to '{path}' so ids include the folder"
                    )
                selected[photo] = (source, member)
        splits = assign_splits(list(selected), self.recipe.splits, self.recipe.seed)
        return [Item(photo, splits[photo], selected[photo]) for photo in sorted(selected)]

    def process(self, batch: list[Item]) -> list[dict]:
        return [self._process_one(item) for item in batch]

    def _process_one(self, item: Item) -> dict:
        source, member = item.payload
        record = {"id": item.id, "split": item.split, "source": source.token, "member": member, "container": str(source.images)}
        try:
            data = self.containers[source.token].read(member)
            photo = decode_photo(data, member, self.recipe.max_pixels)
        except UnreadableImage as error:
            return {**record, "status": SKIPPED, "reason": f"{source.images}: {member}: {error}"}
        path = self.root.au(item.split, item.id)
        entry = write_png(path, photo.array)
        return {
            **record,
            "status": OK,
            "width": photo.width,
            "height": photo.height,
            "format": photo.format,
            "mode": photo.mode,
            "fixes": photo.fixes,
            "files": {"au": {"path": self.root.relative(path), **entry}},
        }
