"""`brgen verify`: check a dataset root against its recipe and manifests; nothing is changed.

Checks, per stage record with status `ok`:
- every listed file exists, has the recorded sha256 and decodes fully;
- real photos are RGB; masks and Gt masks are single-channel with only 0 and 255;
- Au, mask, Tp and Gt of one item have the same size;
- a forgery equals its real photo outside its Gt mask (unless the record marks full regeneration).
Completeness: every item the recipe implies has a record; `skipped` records (with their reasons) are
counted apart from missing items. Files in the release folders that no record lists are reported as orphans.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brgen_build.files import read_png, sha256_file
from brgen_build.layout import DatasetRoot, FORGERY_NAME, forgery_id, mask_id
from brgen_build.manifest import OK, SKIPPED, read_records
from brgen_build.recipe import SPLITS, Recipe
from brgen_build.stages.inpaint import stage_name
from brgen_build.stages.reals import planned_split_counts
from inpainters import registry


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # (split, kind or "-", method or "-") -> Counter(expected, found, skipped, missing)
    counts: dict[tuple[str, str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "skipped": self.skipped,
            "counts": [
                {"split": split, "kind": kind, "method": method, **counter}
                for (split, kind, method), counter in sorted(self.counts.items())
            ],
        }

    def summary(self) -> str:
        lines = [f"{'split':<6} {'kind':<11} {'method':<13} {'expected':>8} {'found':>7} {'skipped':>7} {'missing':>7}"]
        for (split, kind, method), counter in sorted(self.counts.items()):
            lines.append(
                f"{split:<6} {kind:<11} {method:<13} {counter['expected']:>8} {counter['found']:>7} {counter['skipped']:>7} {counter['missing']:>7}"
            )
        if self.skipped:
            lines.append(f"{len(self.skipped)} item(s) skipped with a recorded reason:")
            lines += [f"  {line}" for line in self.skipped]
        if self.problems:
            lines.append(f"FAILED: {len(self.problems)} problem(s):")
            lines += [f"  {line}" for line in self.problems]
        else:
            lines.append("OK: every expected file is present, decodes and is consistent")
        return "\n".join(lines)


class Verifier:
    def __init__(self, root: DatasetRoot, recipe: Recipe, methods: list[str] | None = None):
        self.root = root
        self.recipe = recipe
        self.methods = list(recipe.methods) if methods is None else methods
        self.report = VerifyReport()
        self.listed: set[Path] = set()

    def run(self) -> VerifyReport:
        reals = read_records(self.root.manifest_dir("reals"))
        masks = read_records(self.root.manifest_dir("masks"))
        real_shapes = self._check_reals(reals)
        self._check_masks(reals, masks, real_shapes)
        for method in registry.names():
            records = read_records(self.root.manifest_dir(stage_name(method)))
            if method in self.methods:
                self._check_forgeries(method, masks, records, real_shapes)
            else:
                self._list_files(records)
        self._check_orphans()
        return self.report

    def _problem(self, message: str) -> None:
        self.report.problems.append(message)

    def _list_files(self, records: dict[str, dict]) -> None:
        for record in records.values():
            if record["status"] == OK:
                for entry in record.get("files", {}).values():
                    self.listed.add(self.root.absolute(entry["path"]))

    def _load(self, record: dict, role: str) -> np.ndarray | None:
        """Decode one file of a record after checking it exists and matches its hash; None on a problem."""
        entry = record.get("files", {}).get(role)
        if entry is None:
            self._problem(f"{record['id']}: record lists no `{role}` file")
            return None
        path = self.root.absolute(entry["path"])
        self.listed.add(path)
        if not path.is_file():
            self._problem(f"{entry['path']}: missing (listed in the {record.get('stage', '?')} manifest)")
            return None
        if sha256_file(path) != entry["sha256"]:
            self._problem(f"{entry['path']}: sha256 differs from the manifest's; the file was changed or damaged")
            return None
        try:
            return read_png(path)
        except Exception as error:  # any decoder failure is a finding, not a crash
            self._problem(f"{entry['path']}: does not decode ({type(error).__name__}: {error})")
            return None

    def _check_binary_mask(self, path: str, mask: np.ndarray, shape: tuple[int, int]) -> bool:
        if mask.ndim != 2:
            self._problem(f"{path}: mask has {mask.shape[2]} channels; masks must be single-channel")
            return False
        if mask.shape != shape:
            self._problem(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its photo is {shape[1]}x{shape[0]}")
            return False
        values = np.unique(mask)
        if not set(values.tolist()) <= {0, 255}:
            self._problem(f"{path}: mask values {values[:8].tolist()} are not only 0 and 255")
            return False
        return True

    def _check_reals(self, reals: dict[str, dict]) -> dict[str, tuple[int, int]]:
        """Check every real photo; return the (height, width) of each one that is valid."""
        shapes = {}
        planned = {record["id"]: record for record in reals.values()}
        sizes = planned_split_counts(self.recipe, planned)
        for split in SPLITS:
            if sizes[split] == 0:
                continue
            counter = self.report.counts[(split, "-", "-")]
            counter["expected"] += sizes[split]
        for record in reals.values():
            counter = self.report.counts[(record["split"], "-", "-")]
            if record["status"] == SKIPPED:
                counter["skipped"] += 1
                self.report.skipped.append(f"{record['id']}: {record['reason']}")
                continue
            if record["status"] != OK:
                counter["missing"] += 1
                self._problem(f"{record['id']}: reals stage failed: {record['reason']}")
                continue
            image = self._load(record, "au")
            if image is None:
                counter["missing"] += 1
                continue
            if image.ndim != 3:
                self._problem(f"{record['files']['au']['path']}: real photo is not RGB")
            shapes[record["id"]] = image.shape[:2]
            counter["found"] += 1
        for split in SPLITS:
            counter = self.report.counts.get((split, "-", "-"))
            if counter and counter["found"] + counter["skipped"] + counter["missing"] < counter["expected"]:
                absent = counter["expected"] - counter["found"] - counter["skipped"] - counter["missing"]
                counter["missing"] += absent
                self._problem(f"{split}: {absent} real photo(s) the recipe asks for have no record; run `brgen build --stage reals`")
        return shapes

    def _check_masks(self, reals: dict[str, dict], masks: dict[str, dict], real_shapes: dict) -> None:
        for real in reals.values():
            if real["status"] != OK:
                continue
            for kind in self.recipe.masks.kinds:
                counter = self.report.counts[(real["split"], kind, "-")]
                counter["expected"] += 1
                record = masks.get(mask_id(kind, real["id"]))
                if record is None or record["status"] not in (OK, SKIPPED):
                    counter["missing"] += 1
                    why = "no record" if record is None else f"failed: {record['reason']}"
                    self._problem(f"{mask_id(kind, real['id'])}: mask {why}; run `brgen build --stage masks`")
                    continue
                if record["status"] == SKIPPED:
                    counter["skipped"] += 1
                    self.report.skipped.append(f"{record['id']}: {record['reason']}")
                    continue
                mask = self._load(record, "mask")
                if mask is None or real["id"] not in real_shapes:
                    counter["missing"] += 1
                    continue
                if self._check_binary_mask(record["files"]["mask"]["path"], mask, real_shapes[real["id"]]):
                    counter["found"] += 1
                else:
                    counter["missing"] += 1

    def _check_forgeries(self, method: str, masks: dict[str, dict], records: dict[str, dict], real_shapes: dict) -> None:
        token = registry.get(method).token
        expected_ids = set()
        for mask in masks.values():
            if mask["status"] != OK or mask["kind"] not in self.recipe.masks.kinds:
                continue
            forgery = forgery_id(token, mask["kind"], mask["real"])
            expected_ids.add(forgery)
            counter = self.report.counts[(mask["split"], mask["kind"], method)]
            counter["expected"] += 1
            record = records.get(forgery)
            if record is None or record["status"] not in (OK, SKIPPED):
                counter["missing"] += 1
                why = "no record" if record is None else f"failed: {record['reason']}"
                self._problem(f"{forgery}: forgery {why}; run `brgen inpaint --method {method}`")
                continue
            if record["status"] == SKIPPED:
                counter["skipped"] += 1
                self.report.skipped.append(f"{forgery}: {record['reason']}")
                continue
            if self._check_forgery(record, mask, real_shapes):
                counter["found"] += 1
            else:
                counter["missing"] += 1
        for forgery in sorted(set(records) - expected_ids):
            if records[forgery]["status"] == OK:
                self._list_files({forgery: records[forgery]})
                self._problem(f"{forgery}: forgery record without an ok mask; its mask was removed or skipped since")

    def _check_forgery(self, record: dict, mask: dict, real_shapes: dict) -> bool:
        tp = self._load(record, "tp")
        gt = self._load(record, "gt")
        if tp is None or gt is None or mask["real"] not in real_shapes:
            return False
        shape = real_shapes[mask["real"]]
        tp_path, gt_path = record["files"]["tp"]["path"], record["files"]["gt"]["path"]
        if tp.ndim != 3 or tp.shape[:2] != shape:
            self._problem(f"{tp_path}: forgery is {tp.shape[1]}x{tp.shape[0]} but its real photo is {shape[1]}x{shape[0]}")
            return False
        if not self._check_binary_mask(gt_path, gt, shape):
            return False
        if not record.get("full_regeneration"):
            real = read_png(self.root.au(record["split"], mask["real"]))
            outside = (gt == 0) & np.any(tp != real, axis=2)
            if outside.any():
                self._problem(f"{tp_path}: {int(outside.sum())} pixel(s) outside the Gt mask differ from the real photo")
                return False
        return True

    def _check_orphans(self) -> None:
        folders = [self.root.path / split / part for split in SPLITS for part in ("Au", "Tp", "Gt")]
        folders += [self.root.path / "masks" / split for split in SPLITS]
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".tmp-"):
                    continue
                if path not in self.listed:
                    self._problem(f"{self.root.relative(path)}: file listed in no manifest record (orphan)")
                elif folder.name == "Tp" and not FORGERY_NAME.match(path.stem):
                    self._problem(f"{self.root.relative(path)}: name does not follow {{Method}}_{{Kind}}_{{Source}}_{{stem}}.png")


def verify(root: DatasetRoot, recipe: Recipe, methods: list[str] | None = None) -> VerifyReport:
    return Verifier(root, recipe, methods).run()


def report_json(report: VerifyReport) -> str:
    return json.dumps(report.to_json(), indent=2)
