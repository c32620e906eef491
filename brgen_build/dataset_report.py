"""`brgen report dataset`: an HTML page with PNG figures that shows a dataset root to a person.

Sections: item counts per split and stage; contact sheets per method and kind (real photo, mask and
forgery side by side, for a seeded sample of forgeries); mask-area histograms per kind and source; time
per forgery per method; skipped and failed items grouped by reason. Only manifests and a few sample images
are read, so a report of 150,000 forgeries takes seconds.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from brgen_build import charts
from brgen_build.catalog import Catalog, ForgeryItem, reason_pattern
from brgen_build.files import atomic_write_bytes
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import FAILED, OK, SKIPPED
from brgen_build.recipe import SPLITS
from brgen_build.report_html import Figure, Section, Table, render_page
from brgen_build.seeding import stable_hash

logger = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600.0


def _save(image: Image.Image, path: Path, caption: str) -> Figure:
    image.save(path, format="PNG", optimize=True)
    return Figure(path, caption)


def overview_section(catalog: Catalog) -> Section:
    rows = []
    stages = [("real photos", list(catalog.reals.values())), ("masks", list(catalog.masks.values()))]
    stages += [(f"forgeries: {method}", list(items.values())) for method, items in sorted(catalog.forgeries.items())]
    for name, items in stages:
        for split in SPLITS:
            statuses = Counter(item.status for item in items if item.split == split)
            if statuses:
                rows.append([name, split, statuses[OK], statuses[SKIPPED], statuses[FAILED]])
    return Section("Items per stage and split", tables=[Table(["stage", "split", "ok", "skipped", "failed"], rows, {0, 1})])


def _example_images(root: DatasetRoot, catalog: Catalog, item: ForgeryItem) -> list[Image.Image] | None:
    real = catalog.reals.get(item.real)
    try:
        return [Image.open(root.absolute(path)) for path in (real.au.path, item.gt.path, item.tp.path)]
    except (OSError, AttributeError) as error:
        logger.warning("report: %s left out of the contact sheet: %s", item.id, error)
        return None


def contact_sheet_section(root: DatasetRoot, catalog: Catalog, out_dir: Path, examples: int, seed: int) -> Section:
    section = Section("Contact sheets", notes=[f"Up to {examples} forgeries per method and kind, chosen by a seeded hash of their names (seed {seed})."])
    groups: dict[tuple[str, str], list[ForgeryItem]] = defaultdict(list)
    for item in catalog.ok_forgeries():
        groups[(item.method, item.kind)].append(item)
    for (method, kind), items in sorted(groups.items()):
        chosen = sorted(items, key=lambda item: (stable_hash(seed, "report", item.id), item.id))[:examples]
        rows = []
        for item in chosen:
            images = _example_images(root, catalog, item)
            if images is not None:
                caption = item.id if not item.prompt else f"{item.id}: \"{item.prompt}\""
                rows.append((caption, images))
        if rows:
            sheet = charts.contact_sheet(rows, ["real photo", "mask (Gt)", "forgery"])
            caption = f"{method}, {kind} masks: {len(rows)} of {len(items)} forgeries"
            section.figures.append(_save(sheet, out_dir / f"contact-{method}-{kind}.png", caption))
    if not section.figures:
        section.notes.append("No forgery yet.")
    return section


def mask_area_section(catalog: Catalog, out_dir: Path) -> Section:
    section = Section("Mask area", notes=["Share of the image each mask covers (white = regenerated), per kind and source."])
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for mask in catalog.masks.values():
        if mask.status == OK and mask.area_ratio is not None:
            values[mask.kind][mask.source].append(float(mask.area_ratio))
    rows = []
    for kind, by_source in sorted(values.items()):
        panels = []
        for source, areas in sorted(by_source.items()):
            panels.append(charts.histogram(f"{kind} masks, {source} (n={len(areas)})", areas))
            array = np.asarray(areas)
            rows.append([kind, source, len(areas), f"{array.mean():.1%}", f"{np.median(array):.1%}", f"{array.min():.1%}", f"{array.max():.1%}"])
        section.figures.append(_save(charts.stack(panels), out_dir / f"mask-area-{kind}.png", f"{kind} mask area per source"))
    if rows:
        section.tables.append(Table(["kind", "source", "masks", "mean", "median", "min", "max"], rows, {0, 1}))
    else:
        section.notes.append("No mask yet.")
    return section


def time_section(catalog: Catalog, out_dir: Path) -> Section:
    section = Section(
        "Time per forgery",
        notes=["Wall time per forgery as the inpaint stage recorded it (a batch's time divided by its size), per method."],
    )
    rows, bars = [], []
    for method, items in sorted(catalog.forgeries.items()):
        seconds = np.asarray([item.seconds for item in items.values() if item.status == OK and item.seconds is not None])
        if seconds.size == 0:
            continue
        rows.append([method, seconds.size, f"{seconds.mean():.3f}", f"{np.median(seconds):.3f}",
                     f"{np.percentile(seconds, 95):.3f}", f"{seconds.sum() / SECONDS_PER_HOUR:.2f}"])
        bars.append((method, float(seconds.mean())))
    if rows:
        section.tables.append(Table(["method", "forgeries", "mean s", "median s", "p95 s", "total hours"], rows))
        chart = charts.bar_chart("Mean seconds per forgery", bars, "s")
        section.figures.append(_save(chart, out_dir / "time-per-forgery.png", "Mean seconds per forgery, per method"))
    else:
        section.notes.append("No forgery yet.")
    return section


def failures_section(catalog: Catalog) -> Section:
    section = Section("Skipped and failed items", notes=["Grouped by reason, with numbers and file names replaced by N and <file>."])
    rows = []
    for stage, entries in sorted(catalog.unfinished.items()):
        groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for item, status, reason in entries:
            groups[(status, reason_pattern(reason))].append((item, reason))
        for (status, pattern), members in sorted(groups.items(), key=lambda entry: -len(entry[1])):
            example_item, example_reason = members[0]
            rows.append([stage, status, len(members), pattern, f"{example_item}: {example_reason}"])
    if rows:
        section.tables.append(Table(["stage", "status", "items", "reason", "example"], rows, {0, 1, 3, 4}))
    else:
        section.notes.append("None: every item finished.")
    return section


def build_report(root: DatasetRoot, out_dir: Path | None = None, examples: int = 4, seed: int | None = None) -> Path:
    """Write `report.html` and its PNG figures into `out_dir` (default `<root>/reports/dataset`); returns the page's path."""
    recipe = root.load_recipe(None)
    seed = recipe.seed if seed is None else seed
    out_dir = Path(out_dir) if out_dir is not None else root.path / "reports" / "dataset"
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.load(root)
    sections = [
        overview_section(catalog),
        contact_sheet_section(root, catalog, out_dir, examples, seed),
        mask_area_section(catalog, out_dir),
        time_section(catalog, out_dir),
        failures_section(catalog),
    ]
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_page(f"brgen dataset report: {recipe.name}", f"{root.path}, made {made}", sections)
    path = out_dir / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
