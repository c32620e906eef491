"""Compare a rebuilt dataset with an official BR-Gen download (`brgen verify --against RELEASE_DIR`).

The release is indexed by file name, wherever its `Au/`, `Tp/` and `Gt/` folders sit (per split, or a
subset such as `BRGen-Stuff-Val/`), so any unpacked download works. Its real photos are also named in
`RealImage/<source>/<source>_image_list.txt`. The comparison reports:
- coverage: how many release forgery names (per method token and kind), real photo names and image-list
  entries the rebuild has, with examples of the names it lacks;
- mask agreement: for every (kind, real photo) with a rebuilt mask and a release Gt mask, the IoU of the two
  (white = forged; a release mask is read as IMDLBenCo reads it, the channel mean above 127.5), per kind.
Coverage and IoU are reported, not judged: a partial rebuild is a valid use. Release files that do not
decode are problems.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from brgen_build.catalog import Catalog
from brgen_build.errors import BrgenError
from brgen_build.layout import FORGERY_NAME
from brgen_build.manifest import OK
from brgen_build.photo_checks import decode_failure, strict_decoding
from brgen_build.workers import worker_pool

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
EXAMPLES = 10


@dataclass
class ReleaseIndex:
    """File names of a release download: stems (no extension, Gt without `_mask`) to paths."""

    au: dict[str, Path] = field(default_factory=dict)
    tp: dict[str, Path] = field(default_factory=dict)
    gt: dict[str, Path] = field(default_factory=dict)
    # source folder name under RealImage/ -> entries of its image list
    image_lists: dict[str, list[str]] = field(default_factory=dict)
    duplicates: int = 0


def index_release(release: Path) -> ReleaseIndex:
    """Index every Au, Tp and Gt image and every `*_image_list.txt` below `release`."""
    index = ReleaseIndex()
    for folder, _, files in os.walk(release):
        part = os.path.basename(folder)
        for name in files:
            path = Path(folder) / name
            if name.endswith("_image_list.txt"):
                index.image_lists[path.parent.name] = _read_list(path)
                continue
            stem, extension = os.path.splitext(name)
            if extension.lower() not in IMAGE_EXTENSIONS or part not in ("Au", "Tp", "Gt"):
                continue
            if part == "Gt":
                stem = stem.removesuffix("_mask")
            target = {"Au": index.au, "Tp": index.tp, "Gt": index.gt}[part]
            if stem in target:
                index.duplicates += 1
                continue
            target[stem] = path
    if not (index.au or index.tp or index.gt or index.image_lists):
        raise BrgenError(
            f"{release}: no Au/, Tp/ or Gt/ folder and no RealImage/*_image_list.txt found; "
            "pass the folder of an unpacked BR-Gen download to --against"
        )
    return index


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def binary_mask(path: Path) -> np.ndarray:
    """Read a mask as IMDLBenCo does: RGB, channel mean above 127.5 is forged."""
    with strict_decoding(), Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return array.mean(axis=2) > 127.5


def mask_iou(pair: tuple[str, str]) -> tuple[float | None, str | None]:
    """IoU of two mask files; returns (IoU, None), or (None, why) when they cannot be compared."""
    rebuilt_path, release_path = pair
    try:
        rebuilt = binary_mask(Path(rebuilt_path))
    except Exception as error:  # a damaged file is a finding, reported with its path
        return None, f"the rebuilt mask {rebuilt_path} {decode_failure(error)}"
    try:
        released = binary_mask(Path(release_path))
    except Exception as error:
        return None, f"the release mask {decode_failure(error)}"
    if rebuilt.shape != released.shape:
        return None, f"size: rebuilt {rebuilt.shape[1]}x{rebuilt.shape[0]}, release {released.shape[1]}x{released.shape[0]}"
    union = int(np.count_nonzero(rebuilt | released))
    if union == 0:
        return 1.0, None
    return int(np.count_nonzero(rebuilt & released)) / union, None


def _coverage(release_names: set[str], rebuilt_names: set[str]) -> dict:
    covered = release_names & rebuilt_names
    return {
        "release": len(release_names),
        "covered": len(covered),
        "missing_examples": sorted(release_names - rebuilt_names)[:EXAMPLES],
        "rebuild_only": len(rebuilt_names - release_names),
    }


def _forgery_coverage(index: ReleaseIndex, catalog: Catalog) -> dict:
    rebuilt = {item.id for item in catalog.all_forgeries() if item.status == OK}
    table: dict[str, Counter] = defaultdict(Counter)
    for name in index.tp:
        match = FORGERY_NAME.match(name)
        group = f"{match.group('method')} {match.group('kind')}" if match else "unparsed"
        table[group]["release"] += 1
        table[group]["covered"] += name in rebuilt
    result = _coverage(set(index.tp), rebuilt)
    result["by_method_kind"] = {group: dict(counter) for group, counter in sorted(table.items())}
    return result


def _real_coverage(index: ReleaseIndex, catalog: Catalog) -> dict:
    names = set(index.au)
    for name in index.tp:
        match = FORGERY_NAME.match(name)
        if match:
            names.add(match.group("real"))
    return _coverage(names, {item.id for item in catalog.reals.values() if item.status == OK})


def _image_list_coverage(index: ReleaseIndex, catalog: Catalog) -> dict:
    """Per RealImage list: entries whose file name matches the file name of a rebuilt photo's source member."""
    rebuilt = defaultdict(set)
    for item in catalog.reals.values():
        if item.status == OK and item.member:
            rebuilt[item.source.lower()].add(PurePosixPath(item.member).name)
            rebuilt["*"].add(PurePosixPath(item.member).name)
    result = {}
    for source, entries in sorted(index.image_lists.items()):
        names = {PurePosixPath(entry).name for entry in entries}
        result[source] = _coverage(names, rebuilt.get(source.lower(), rebuilt["*"]))
    return result


def _mask_pairs(index: ReleaseIndex, catalog: Catalog, root_path: Path) -> dict[str, list[tuple[str, str, str]]]:
    """Per kind: (mask id, rebuilt mask path, release Gt path) for each (kind, real photo) present in both."""
    release_gt: dict[tuple[str, str], Path] = {}
    for name in sorted(index.gt):
        match = FORGERY_NAME.match(name)
        if match:
            release_gt.setdefault((match.group("kind"), match.group("real")), index.gt[name])
    pairs = defaultdict(list)
    for mask in catalog.masks.values():
        release_path = release_gt.get((mask.kind, mask.real))
        if mask.status == OK and mask.mask is not None and release_path is not None:
            pairs[mask.kind].append((mask.id, str(root_path / mask.mask.path), str(release_path)))
    return pairs


def compare_release(root, catalog: Catalog, release: Path, workers: int = 1) -> dict:
    """Compare the rebuild with a release download; returns a JSON-ready dict with a `problems` list."""
    index = index_release(Path(release))
    problems = []
    iou = {}
    pairs_by_kind = _mask_pairs(index, catalog, root.path)
    for kind, pairs in sorted(pairs_by_kind.items()):
        outcomes = _run_iou([(rebuilt, released) for _, rebuilt, released in pairs], workers)
        values, size_mismatches = [], 0
        for (mask, _, released), (value, why) in zip(pairs, outcomes):
            if value is not None:
                values.append(value)
            elif why.startswith("size"):
                size_mismatches += 1
            else:
                problems.append({"check": "release", "item": mask, "file": released, "message": f"cannot compare with {released}: {why}"})
        iou[kind] = _iou_summary(values, size_mismatches)
    return {
        "release": str(release),
        "duplicate_names": index.duplicates,
        "forgeries": _forgery_coverage(index, catalog),
        "reals": _real_coverage(index, catalog),
        "image_lists": _image_list_coverage(index, catalog),
        "mask_iou": iou,
        "problems": problems,
    }


def _run_iou(pairs: list[tuple[str, str]], workers: int) -> list:
    if workers == 1 or len(pairs) < 2:
        return [mask_iou(pair) for pair in pairs]
    with worker_pool(workers) as pool:
        return pool.map(mask_iou, pairs, chunksize=max(1, len(pairs) // (workers * 8)))


def _iou_summary(values: list[float], size_mismatches: int) -> dict:
    if not values:
        return {"pairs": 0, "size_mismatches": size_mismatches}
    array = np.asarray(values)
    return {
        "pairs": len(values),
        "size_mismatches": size_mismatches,
        "mean": round(float(array.mean()), 4),
        "median": round(float(np.median(array)), 4),
        "min": round(float(array.min()), 4),
        "share_at_least_0.9": round(float(np.mean(array >= 0.9)), 4),
    }


def summary_lines(against: dict) -> list[str]:
    """Human-readable lines of a comparison, for verify's summary."""
    lines = [f"against {against['release']}:"]
    for what in ("forgeries", "reals"):
        coverage = against[what]
        lines.append(f"  {what}: {coverage['covered']} of {coverage['release']} release names rebuilt, {coverage['rebuild_only']} rebuilt names not in the release")
        if coverage["missing_examples"]:
            lines.append(f"    not rebuilt, e.g. {', '.join(coverage['missing_examples'][:5])}")
    for group, counter in against["forgeries"].get("by_method_kind", {}).items():
        lines.append(f"    {group}: {counter.get('covered', 0)} of {counter['release']}")
    for source, coverage in against["image_lists"].items():
        lines.append(f"  image list {source}: {coverage['covered']} of {coverage['release']} photos rebuilt")
    for kind, summary in against["mask_iou"].items():
        if summary["pairs"]:
            lines.append(
                f"  {kind} mask IoU over {summary['pairs']} photo(s): mean {summary['mean']}, median {summary['median']}, "
                f"min {summary['min']}, {summary['share_at_least_0.9']:.0%} at least 0.9; {summary['size_mismatches']} size mismatch(es)"
            )
        else:
            lines.append(f"  {kind} masks: no photo in both with comparable sizes ({summary['size_mismatches']} size mismatch(es))")
    if against["duplicate_names"]:
        lines.append(f"  {against['duplicate_names']} file name(s) appear more than once in the release; the first was used")
    return lines
