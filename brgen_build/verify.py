"""`brgen verify`: check a dataset root against its recipe and manifests; nothing is changed.

Completeness: every item the recipe implies has a record. Real photos per split and per source are
compared with the recipe's counts where it fixes them. Fewer records than requested is a problem, and fewer
usable (ok) photos a warning. Every ok real photo needs one mask per kind, and
every ok mask needs one forgery per checked method. The table counts, per split, source, kind and method, the
items expected, found (an ok record), skipped (a recorded reason), missing (no record, or a failed one) and
invalid (found, but a file check below failed).

Integrity and consistency run per real photo in worker processes (see `photo_checks`): every listed file
exists, has the recorded sha256 and decodes fully; sizes match; masks are single-channel 0/255; a forgery's
Gt equals its mask and the forgery equals the real photo outside it. Records must name their files as
the release does, and files in the release folders that no record lists are orphans.
`--against` compares the rebuild with an official download (see `release_compare`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from brgen_build.catalog import Catalog, ForgeryItem, expected_split_sizes
from brgen_build.files import TEMPORARY_PREFIX
from brgen_build.layout import FORGERY_NAME, DatasetRoot, forgery_id, mask_id
from brgen_build.manifest import OK, SKIPPED
from brgen_build.photo_checks import ForgeryTask, MaskTask, PhotoResult, PhotoTask, Problem, check_photo
from brgen_build.recipe import MASK_KINDS, SPLITS, Recipe
from brgen_build.stages.reals import planned_split_counts
from brgen_build.workers import worker_pool

logger = logging.getLogger(__name__)

NO_KIND = "-"
NO_METHOD = "-"
COLUMNS = ("expected", "found", "skipped", "missing", "invalid")
# Lines printed per check in the human summary; the JSON report lists every problem.
SUMMARY_LINES_PER_CHECK = 20


@dataclass
class VerifyReport:
    root: str = ""
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # (split, source, kind, method) -> Counter over COLUMNS
    counts: dict[tuple[str, str, str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    # what the recipe fixes, as rows {"scope", "name", "expected", "records", "ok", "skipped"}
    recipe_counts: list[dict] = field(default_factory=list)
    files_checked: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0
    against: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add_problem(self, check: str, item: str, file: str | None, message: str) -> None:
        self.problems.append(Problem(check, item, file, message))

    def problems_by_check(self) -> dict[str, list[Problem]]:
        grouped: dict[str, list[Problem]] = defaultdict(list)
        for problem in self.problems:
            grouped[problem.check].append(problem)
        return dict(sorted(grouped.items()))

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "root": self.root,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "seconds": round(self.seconds, 3),
            "counts": [
                {"split": split, "source": source, "kind": kind, "method": method, **{column: counter[column] for column in COLUMNS}}
                for (split, source, kind, method), counter in sorted(self.counts.items())
            ],
            "recipe": self.recipe_counts,
            "problems": [
                {"check": problem.check, "item": problem.item, "file": problem.file, "message": problem.message}
                for problem in self.problems
            ],
            "skipped": self.skipped,
            "warnings": self.warnings,
            "against": self.against,
        }

    def summary(self) -> str:
        header = f"{'split':<6} {'source':<9} {'kind':<11} {'method':<13}" + "".join(f" {column:>8}" for column in COLUMNS)
        lines = [header]
        for (split, source, kind, method), counter in sorted(self.counts.items(), key=_row_order):
            lines.append(f"{split:<6} {source:<9} {kind:<11} {method:<13}" + "".join(f" {counter[column]:>8}" for column in COLUMNS))
        for row in self.recipe_counts:
            lines.append(
                f"recipe: {row['scope']} {row['name']}: {row['expected']} real photo(s) requested, {row['records']} recorded, "
                f"{row['ok']} usable ({row['skipped']} skipped)"
            )
        lines.append(f"checked {self.files_checked} file(s), {self.bytes_checked / 1e6:.1f} MB in {self.seconds:.1f} s")
        if self.skipped:
            lines.append(f"{len(self.skipped)} item(s) skipped with a recorded reason:")
            lines += [f"  {line}" for line in self.skipped[:SUMMARY_LINES_PER_CHECK]]
            if len(self.skipped) > SUMMARY_LINES_PER_CHECK:
                lines.append(f"  ... and {len(self.skipped) - SUMMARY_LINES_PER_CHECK} more (--json lists all)")
        lines += [f"warning: {line}" for line in self.warnings]
        if self.against is not None:
            from brgen_build.release_compare import summary_lines

            lines += summary_lines(self.against)
        if not self.problems:
            lines.append("OK: every expected file is present, decodes and is consistent")
            return "\n".join(lines)
        lines.append(f"FAILED: {len(self.problems)} problem(s):")
        for check, problems in self.problems_by_check().items():
            lines.append(f"  {check}: {len(problems)}")
            lines += [f"    {problem.line()}" for problem in problems[:SUMMARY_LINES_PER_CHECK]]
            if len(problems) > SUMMARY_LINES_PER_CHECK:
                lines.append(f"    ... and {len(problems) - SUMMARY_LINES_PER_CHECK} more (--json lists all)")
        return "\n".join(lines)


def _row_order(entry: tuple) -> tuple:
    (split, source, kind, method), _ = entry
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split, source, kind != NO_KIND, kind, method != NO_METHOD, method)


class Verifier:
    """Plan the checks from the manifests, run them photo by photo, and collect a VerifyReport.

    Args:
        methods: methods whose forgeries must be complete and are checked (default: the recipe's). Files
            of other methods' records are only counted as listed, so they are not reported as orphans.
        workers: processes that read, hash and decode files; 1 checks in this process.
        against: an official BR-Gen download to compare with.
    """

    def __init__(self, root: DatasetRoot, recipe: Recipe, methods: list[str] | None = None, workers: int = 1,
                 against: Path | None = None, progress: bool = False):
        self.root = root
        self.recipe = recipe
        self.methods = list(recipe.methods) if methods is None else list(methods)
        self.workers = max(1, workers)
        self.against = against
        self.progress = progress
        self.report = VerifyReport(root=str(root.path))
        self.listed: set[str] = set()
        # item id -> its row in the counts table, for items found (an ok record)
        self.row_of: dict[str, tuple[str, str, str, str]] = {}

    def run(self) -> VerifyReport:
        started = time.perf_counter()
        catalog = Catalog.load(self.root)
        for method in self.methods:
            catalog.forgeries.setdefault(method, {})
        self._check_recipe_counts(catalog)
        tasks = self._plan(catalog)
        for result in self._results(tasks):
            self._collect(result)
        self._check_tree()
        if self.against is not None:
            from brgen_build.release_compare import compare_release

            self.report.against = compare_release(self.root, catalog, self.against, self.workers)
            for problem in self.report.against.pop("problems"):
                self.report.add_problem(**problem)
        self.report.seconds = time.perf_counter() - started
        return self.report

    # Completeness: walk the manifests and count, planning one task per real photo.

    def _count(self, row: tuple[str, str, str, str], column: str, item: str | None = None) -> None:
        self.report.counts[row][column] += 1
        if column == "found" and item is not None:
            self.row_of[item] = row

    def _check_recipe_counts(self, catalog: Catalog) -> None:
        expected = expected_split_sizes(self.recipe)
        if self.recipe.split_list is not None:
            expected = planned_split_counts(self.recipe, catalog.reals)
        if expected is not None:
            statuses = _statuses_by(catalog, "split")
            for split in SPLITS:
                row = self._add_recipe_row("split", split, expected[split], statuses[split])
                if row["records"] < expected[split]:
                    self.report.add_problem(
                        "recipe", split, None,
                        f"the recipe requests {expected[split]} real photo(s) in {split} but the reals manifest has "
                        f"{row['records']}; run `brgen build --stage reals` (it logs photos listed but absent from a source)",
                    )
        statuses = _statuses_by(catalog, "source")
        for source in self.recipe.sources:
            if source.count is None:
                continue
            row = self._add_recipe_row("source", source.token, source.count, statuses[source.token])
            if row["records"] < source.count:
                self.report.add_problem(
                    "recipe", source.token, None,
                    f"the recipe requests {source.count} real photo(s) from {source.token} but the reals manifest has {row['records']}",
                )

    def _add_recipe_row(self, scope: str, name: str, expected: int, statuses: Counter) -> dict:
        """Add a row of `recipe_counts`, and a warning when fewer usable (ok) real photos than requested remain.

        Skipped photos are a warning, not a problem: each has a recorded reason, and the reals stage assigns
        splits before it decodes, so it never replaces an unreadable photo by another one.
        """
        row = {"scope": scope, "name": name, "expected": expected, "records": sum(statuses.values()),
               "ok": statuses[OK], "skipped": statuses[SKIPPED]}
        self.report.recipe_counts.append(row)
        if row["ok"] < expected:
            self.report.warnings.append(
                f"{scope} {name}: {row['ok']} usable real photo(s), fewer than the {expected} the recipe requests: "
                f"{row['skipped']} of its {row['records']} record(s) are skipped with a recorded reason, "
                "and skipped photos are not replaced by others"
            )
        return row

    def _record_outcome(self, row: tuple, item: str, status: str | None, reason: str | None, stage: str, fix: str) -> bool:
        """Count a record's status in `row`; return True when the item was found (status ok)."""
        self._count(row, "expected")
        if status == OK:
            self._count(row, "found", item)
            return True
        if status == SKIPPED:
            self._count(row, "skipped")
            self.report.skipped.append(f"{item}: {reason}")
            return False
        self._count(row, "missing")
        why = "has no record" if status is None else f"failed: {reason}"
        self.report.add_problem("incomplete", item, None, f"{stage} {why}; run `{fix}`")
        return False

    def _check_path(self, item: str, recorded: str, expected: Path) -> None:
        expected_relative = expected.relative_to(self.root.path).as_posix()
        if recorded != expected_relative:
            self.report.add_problem("name", item, recorded, f"record names its file {recorded}, the release layout names it {expected_relative}")

    def _plan(self, catalog: Catalog) -> list[PhotoTask]:
        for method, items in catalog.forgeries.items():
            for item in items.values():
                if item.status == OK:
                    self.listed.update(ref.path for ref in (item.tp, item.gt) if ref is not None)
        for item in catalog.masks.values():
            if item.status == OK and item.mask is not None:
                self.listed.add(item.mask.path)

        tasks = []
        claimed: set[str] = set()
        for real in catalog.reals.values():
            row = (real.split, real.source, NO_KIND, NO_METHOD)
            if not self._record_outcome(row, real.id, real.status, real.reason, "real photo", "brgen build --stage reals"):
                continue
            if real.au is None:
                self.report.add_problem("record", real.id, None, "ok record lists no `au` file")
                continue
            self.listed.add(real.au.path)
            self._check_path(real.id, real.au.path, self.root.au(real.split, real.id))
            masks, forgeries = self._plan_photo(catalog, real.id, real.split, real.source, claimed)
            tasks.append(PhotoTask(real.id, real.au, real.width, real.height, tuple(masks), tuple(forgeries)))

        for method in self.methods:
            for item in catalog.forgeries[method].values():
                if item.status == OK and item.id not in claimed:
                    self.report.add_problem("record", item.id, item.tp.path if item.tp else None,
                                            "ok forgery record without an ok mask; its mask was removed or skipped since")
        return tasks

    def _plan_photo(self, catalog: Catalog, real: str, split: str, source: str, claimed: set[str]) -> tuple[list[MaskTask], list[ForgeryTask]]:
        masks, forgeries = [], []
        for kind in self.recipe.masks.kinds:
            mask = catalog.masks.get(mask_id(kind, real))
            row = (split, source, kind, NO_METHOD)
            found = self._record_outcome(row, mask_id(kind, real), mask.status if mask else None, mask.reason if mask else None,
                                         "mask", "brgen build --stage masks")
            if not found:
                continue
            if mask.mask is None:
                self.report.add_problem("record", mask.id, None, "ok record lists no `mask` file")
                continue
            self._check_path(mask.id, mask.mask.path, self.root.mask(split, kind, real))
            masks.append(MaskTask(mask.id, kind, mask.mask))
            for method in self.methods:
                forgery = self._find_forgery(catalog, method, kind, real)
                identifier = forgery.id if forgery else forgery_id(self._token(catalog, method), kind, real)
                claimed.add(identifier)
                found = self._record_outcome((split, source, kind, method), identifier, forgery.status if forgery else None,
                                             forgery.reason if forgery else None, "forgery", f"brgen inpaint --method {method}")
                if not found:
                    continue
                if forgery.tp is None or forgery.gt is None:
                    self.report.add_problem("record", forgery.id, None, "ok record lists no `tp` or no `gt` file")
                    continue
                self._check_path(forgery.id, forgery.tp.path, self.root.tp(split, forgery.id))
                self._check_path(forgery.id, forgery.gt.path, self.root.gt(split, forgery.id))
                forgeries.append(ForgeryTask(forgery.id, kind, forgery.tp, forgery.gt, forgery.full_regeneration, forgery.changed_outside))
        return masks, forgeries

    def _token(self, catalog: Catalog, method: str) -> str:
        for item in catalog.forgeries[method].values():
            return item.token
        from inpainters import registry

        return registry.get(method).token

    def _find_forgery(self, catalog: Catalog, method: str, kind: str, real: str) -> ForgeryItem | None:
        return catalog.forgeries[method].get(forgery_id(self._token(catalog, method), kind, real))

    # Integrity and consistency: the photo checks, in this process or a pool.

    def _results(self, tasks: list[PhotoTask]) -> Iterator[PhotoResult]:
        bar = tqdm(total=len(tasks), desc="verify", unit="photo", disable=not self.progress)
        with bar:
            for result in self._run_tasks(tasks):
                bar.update(1)
                yield result

    def _run_tasks(self, tasks: list[PhotoTask]) -> Iterable[PhotoResult]:
        check = partial(check_photo, str(self.root.path))
        if self.workers == 1 or len(tasks) <= 1:
            yield from map(check, tasks)
            return
        chunk_size = max(1, min(16, len(tasks) // (self.workers * 8)))
        with worker_pool(self.workers) as pool:
            yield from pool.imap_unordered(check, tasks, chunksize=chunk_size)

    def _collect(self, result: PhotoResult) -> None:
        self.report.problems.extend(result.problems)
        self.report.files_checked += result.files
        self.report.bytes_checked += result.bytes
        for item in result.invalid:
            row = self.row_of.get(item)
            if row is not None:
                self.report.counts[row]["invalid"] += 1

    # The release tree: orphans, temporary leftovers and file names.

    def _check_tree(self) -> None:
        tokens = {source.token for source in self.recipe.sources}
        folders = [(self.root.path / split / part, part) for split in SPLITS for part in ("Au", "Tp", "Gt")]
        folders += [(self.root.path / "masks" / split, "masks") for split in SPLITS]
        for folder, part in folders:
            if not folder.is_dir():
                continue
            folder_relative = folder.relative_to(self.root.path).as_posix()
            for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
                relative = f"{folder_relative}/{entry.name}"
                if entry.name.startswith(TEMPORARY_PREFIX):
                    self.report.warnings.append(f"{relative}: temporary file left by an interrupted write; safe to delete")
                    continue
                if relative not in self.listed:
                    self.report.add_problem("orphan", relative, relative, "file listed in no manifest record (orphan); delete it or re-run the stage that made it")
                name_problem = release_name_problem(entry.name, part, tokens)
                if name_problem:
                    self.report.add_problem("name", relative, relative, name_problem)


def _statuses_by(catalog: Catalog, field_name: str) -> dict[str, Counter]:
    """Count the reals records' statuses per value of `field_name` (split or source)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for real in catalog.reals.values():
        counts[getattr(real, field_name)][real.status] += 1
    return counts


def release_name_problem(name: str, part: str, source_tokens: set[str]) -> str | None:
    """Return why a file name breaks the release convention for folder `part`, or None when it follows it."""
    if not name.endswith(".png"):
        return "is not a .png file; the release stores PNG only"
    stem = name[: -len(".png")]
    if part == "Gt":
        if not stem.endswith("_mask"):
            return "Gt names end in `_mask.png`"
        stem = stem[: -len("_mask")]
    if part in ("Tp", "Gt"):
        match = FORGERY_NAME.match(stem)
        if not match:
            return "name does not follow {Method}_{Kind}_{Source}_{stem}.png"
        stem = match.group("real")
    if part == "masks":
        kind, _, stem = stem.partition("_")
        if kind not in MASK_KINDS:
            return "mask names start with the kind, Stuff_ or Background_"
    source = stem.split("_", 1)[0]
    if source not in source_tokens or "_" not in stem:
        return f"source token {source!r} is not one of the recipe's ({', '.join(sorted(source_tokens))})"
    return None


def verify(root: DatasetRoot, recipe: Recipe, methods: list[str] | None = None, workers: int = 1,
           against: Path | None = None, progress: bool = False) -> VerifyReport:
    return Verifier(root, recipe, methods, workers, against, progress).run()


def report_json(report: VerifyReport) -> str:
    return json.dumps(report.to_json(), indent=2)
