"""A compact, read-only view of a dataset root's manifests: real photos, masks and forgeries.

verify, export, report and status all need the same facts from the manifests: which items exist, their
status, split, source, kind and method, and the files they list. `Catalog.load` reads every stage once and
keeps only those facts in small slotted objects (about 0.5 KB per item, so 150,000 forgeries take well
under 100 MB), grouped per real photo so callers can stream the dataset photo by photo.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from brgen_build.layout import FORGERY_NAME, DatasetRoot
from brgen_build.manifest import FAILED, OK, SKIPPED, read_records
from brgen_build.recipe import SPLITS, Recipe

INPAINT_STAGE_PREFIX = "inpaint/"


@dataclass(frozen=True, slots=True)
class FileRef:
    """One file of a manifest record: `path` relative to the root, with its recorded sha256 and size."""

    path: str
    sha256: str
    bytes: int


@dataclass(slots=True)
class RealItem:
    id: str
    split: str
    source: str
    status: str
    reason: str | None
    au: FileRef | None
    width: int | None
    height: int | None
    member: str | None


@dataclass(slots=True)
class MaskItem:
    id: str
    split: str
    real: str
    kind: str
    source: str
    status: str
    reason: str | None
    mask: FileRef | None
    area_ratio: float | None


@dataclass(slots=True)
class ForgeryItem:
    """One forgery record; `changed_outside` is the recorded share of pixels changed outside the mask."""

    id: str
    split: str
    method: str
    token: str
    real: str
    kind: str
    source: str
    status: str
    reason: str | None
    tp: FileRef | None
    gt: FileRef | None
    seed: int | None
    prompt: str | None
    negative_prompt: str | None
    seconds: float | None
    full_regeneration: bool
    changed_outside: float | None


def _file_ref(record: dict, role: str) -> FileRef | None:
    entry = (record.get("files") or {}).get(role)
    if not isinstance(entry, dict) or "path" not in entry:
        return None
    return FileRef(entry["path"], entry.get("sha256", ""), int(entry.get("bytes", -1)))


def _source_of(real_id: str) -> str:
    return real_id.split("_", 1)[0]


def forgery_stage_methods(root: DatasetRoot) -> list[str]:
    """Names of the methods that have a manifest folder under `manifests/inpaint/`, sorted."""
    folder = root.manifest_dir("inpaint")
    if not folder.is_dir():
        return []
    return sorted(path.name for path in folder.iterdir() if path.is_dir())


@dataclass
class Catalog:
    """Every item of a dataset root, by id, with indexes from a real photo to its masks and forgeries."""

    reals: dict[str, RealItem] = field(default_factory=dict)
    masks: dict[str, MaskItem] = field(default_factory=dict)
    # method -> forgery id -> item
    forgeries: dict[str, dict[str, ForgeryItem]] = field(default_factory=dict)
    masks_by_real: dict[str, list[MaskItem]] = field(default_factory=lambda: defaultdict(list))
    forgeries_by_real: dict[str, list[ForgeryItem]] = field(default_factory=lambda: defaultdict(list))
    # stage -> records with status `skipped` or `failed`, as (id, status, reason)
    unfinished: dict[str, list[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(list))
    # stage -> the latest `finished_at` of its records
    last_finished: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: DatasetRoot, methods: list[str] | None = None) -> "Catalog":
        """Read the reals and masks manifests and the forgery manifests of `methods` (default: every method found)."""
        catalog = cls()
        for record in catalog._records(root, "reals"):
            catalog.reals[record["id"]] = RealItem(
                id=record["id"],
                split=record.get("split", "?"),
                source=record.get("source") or _source_of(record["id"]),
                status=record["status"],
                reason=record.get("reason"),
                au=_file_ref(record, "au"),
                width=record.get("width"),
                height=record.get("height"),
                member=record.get("member"),
            )
        for record in catalog._records(root, "masks"):
            kind, _, real = record["id"].partition("_")
            item = MaskItem(
                id=record["id"],
                split=record.get("split", "?"),
                real=record.get("real", real),
                kind=record.get("kind", kind),
                source=record.get("source") or _source_of(record.get("real", real)),
                status=record["status"],
                reason=record.get("reason"),
                mask=_file_ref(record, "mask"),
                area_ratio=record.get("area_ratio"),
            )
            catalog.masks[item.id] = item
            catalog.masks_by_real[item.real].append(item)
        for method in forgery_stage_methods(root) if methods is None else methods:
            catalog.forgeries[method] = {}
            for record in catalog._records(root, INPAINT_STAGE_PREFIX + method):
                item = _forgery_item(record, method)
                catalog.forgeries[method][item.id] = item
                catalog.forgeries_by_real[item.real].append(item)
        return catalog

    def _records(self, root: DatasetRoot, stage: str) -> list[dict]:
        records = list(read_records(root.manifest_dir(stage)).values())
        for record in records:
            if record["status"] in (SKIPPED, FAILED):
                self.unfinished[stage].append((record["id"], record["status"], record.get("reason") or ""))
            finished = record.get("finished_at", "")
            if finished > self.last_finished.get(stage, ""):
                self.last_finished[stage] = finished
        records.sort(key=lambda record: record["id"])
        return records

    def all_forgeries(self) -> list[ForgeryItem]:
        return [item for method in sorted(self.forgeries) for item in self.forgeries[method].values()]

    def ok_reals(self, split: str | None = None) -> list[RealItem]:
        return [item for item in self.reals.values() if item.status == OK and (split is None or item.split == split)]

    def ok_forgeries(self, split: str | None = None) -> list[ForgeryItem]:
        return [item for item in self.all_forgeries() if item.status == OK and (split is None or item.split == split)]


def _forgery_item(record: dict, method: str) -> ForgeryItem:
    """Build a ForgeryItem; failed records carry only id, split and reason, so the rest comes from the id."""
    match = FORGERY_NAME.match(record["id"])
    token = record.get("token") or (match.group("method") if match else "?")
    real = record.get("real") or (match.group("real") if match else "?")
    kind = record.get("kind") or (match.group("kind") if match else "?")
    seconds = record.get("seconds")
    changed = record.get("changed_outside_before_paste")
    return ForgeryItem(
        id=record["id"],
        split=record.get("split", "?"),
        method=record.get("method") or method,
        token=token,
        real=real,
        kind=kind,
        source=_source_of(real),
        status=record["status"],
        reason=record.get("reason"),
        tp=_file_ref(record, "tp"),
        gt=_file_ref(record, "gt"),
        seed=record.get("seed"),
        prompt=record.get("prompt"),
        negative_prompt=record.get("negative_prompt"),
        seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        full_regeneration=bool(record.get("full_regeneration")),
        changed_outside=float(changed) if isinstance(changed, (int, float)) else None,
    )


def expected_split_sizes(recipe: Recipe) -> dict[str, int] | None:
    """Return the real photos per split that the recipe requests, or None when the sources' contents decide it.

    Integer splits are counts. Fractional splits need a total: the sum of the sources' `count`, when every
    source sets one. Without it the number of photos depends on the archives and image lists.
    """
    from brgen_build.stages.reals import split_sizes

    counts = [source.count for source in recipe.sources]
    total = sum(counts) if all(count is not None for count in counts) else None
    integer_splits = all(float(value).is_integer() for value in recipe.splits.values())
    if integer_splits and (total is None or total == sum(recipe.splits.values())):
        return {name: int(recipe.splits[name]) for name in SPLITS}
    if total is None:
        return None
    return split_sizes(recipe.splits, total)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PATH_LIKE = re.compile(r"[^\s:,;]*[/\\][^\s:,;]*|[^\s:,;]+\.(?:png|jpe?g|json|tar|zip)\b", re.IGNORECASE)


def reason_pattern(reason: str) -> str:
    """Group similar skip and failure reasons: file paths become `<file>` and numbers become `N`."""
    text = _PATH_LIKE.sub("<file>", reason)
    return _NUMBER.sub("N", text)
