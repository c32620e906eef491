"""The quality-filter part of the dataset report, rendered from the filter stage's records.

`render_filter_section(root)` returns an HTML fragment that a larger report can embed: one `<section>`
with no scripts and with images inlined as data URIs. `render_filter_page(root)` wraps it in a page. Per
method it shows the outcomes (kept at the first attempt, kept after regeneration, dropped), a histogram of
every attempt's score per scorer with the thresholds marked, and the attempts nearest to each threshold on
either side with their thumbnails.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from dataclasses import dataclass, field

from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records

HISTOGRAM_BINS = 24
STYLE = """
.brgen-filter { font-family: system-ui, sans-serif; font-size: 14px; }
.brgen-filter table { border-collapse: collapse; margin: 0.5em 0; }
.brgen-filter td, .brgen-filter th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
.brgen-filter .examples { display: flex; flex-wrap: wrap; gap: 8px; margin: 0.3em 0 1em; }
.brgen-filter figure { margin: 0; width: 170px; font-size: 12px; overflow-wrap: anywhere; }
.brgen-filter figure img { max-width: 160px; max-height: 160px; display: block; }
.brgen-filter .kept { color: #1a7f37; } .brgen-filter .rejected { color: #cf222e; }
"""


@dataclass
class AttemptPoint:
    """One scored attempt, as the report plots it."""

    forgery: str
    attempt: int
    value: float
    passed: bool
    thumbnail: str | None


@dataclass
class MethodScores:
    """The filter records of one method, regrouped per scorer."""

    method: str
    outcomes: Counter = field(default_factory=Counter)
    attempts: int = 0
    points: dict[str, list[AttemptPoint]] = field(default_factory=dict)
    undefined: Counter = field(default_factory=Counter)
    thresholds: dict[str, dict] = field(default_factory=dict)


def collect_filter_scores(root: DatasetRoot) -> list[MethodScores]:
    """Read every `manifests/filter/<method>/` folder of a root; methods in name order."""
    base = root.manifest_dir("filter")
    if not base.is_dir():
        return []
    methods = []
    for folder in sorted(path for path in base.iterdir() if path.is_dir()):
        scores = MethodScores(folder.name)
        for record in read_records(folder).values():
            if "outcome" not in record:
                continue
            scores.outcomes[record["outcome"]] += 1
            scores.thresholds.update(record.get("thresholds") or {})
            for attempt in record.get("attempts", []):
                scores.attempts += 1
                for scorer, value in attempt["scores"].items():
                    if value is None:
                        scores.undefined[scorer] += 1
                        continue
                    passed = attempt.get("passed", not attempt.get("failed"))
                    point = AttemptPoint(record["id"], attempt["attempt"], value, passed, attempt.get("thumbnail"))
                    scores.points.setdefault(scorer, []).append(point)
        methods.append(scores)
    return methods


def nearest_examples(points: list[AttemptPoint], bound: float, keep_above: bool, count: int) -> tuple[list[AttemptPoint], list[AttemptPoint]]:
    """Return the `count` attempts nearest to `bound` on its kept side and on its rejected side, nearest first.

    `keep_above` is True for a `min` bound (values at or above it are kept) and False for a `max` bound.
    """
    ordered = sorted(points, key=lambda point: (abs(point.value - bound), point.forgery, point.attempt))
    kept = [point for point in ordered if (point.value >= bound if keep_above else point.value <= bound)]
    rejected = [point for point in ordered if (point.value < bound if keep_above else point.value > bound)]
    return kept[:count], rejected[:count]


def histogram_svg(points: list[AttemptPoint], bounds: dict, width: int = 480, height: int = 140) -> str:
    """Draw a histogram of attempt scores as inline SVG: attempts that passed every check in green, others in red."""
    values = [point.value for point in points]
    markers = [bounds[end] for end in ("min", "max") if end in bounds]
    low, high = min(values + markers), max(values + markers)
    if math.isclose(low, high):
        low, high = low - 0.5, high + 0.5
    step = (high - low) / HISTOGRAM_BINS
    passed, failed = [0] * HISTOGRAM_BINS, [0] * HISTOGRAM_BINS
    for point in points:
        index = min(int((point.value - low) / step), HISTOGRAM_BINS - 1)
        (passed if point.passed else failed)[index] += 1
    tallest = max(a + b for a, b in zip(passed, failed)) or 1
    plot_height = height - 20
    bar_width = width / HISTOGRAM_BINS

    def x_of(value: float) -> float:
        return (value - low) / (high - low) * width

    shapes = []
    for index, (good, bad) in enumerate(zip(passed, failed)):
        x = index * bar_width
        good_height = good / tallest * plot_height
        bad_height = bad / tallest * plot_height
        shapes.append(f'<rect x="{x:.1f}" y="{plot_height - good_height:.1f}" width="{bar_width - 1:.1f}" height="{good_height:.1f}" fill="#2da44e"/>')
        shapes.append(f'<rect x="{x:.1f}" y="{plot_height - good_height - bad_height:.1f}" width="{bar_width - 1:.1f}" height="{bad_height:.1f}" fill="#cf222e"/>')
    for end in ("min", "max"):
        if end in bounds:
            x = x_of(bounds[end])
            shapes.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{plot_height}" stroke="#000" stroke-dasharray="4 2"/>')
            shapes.append(f'<text x="{x + 3:.1f}" y="10" font-size="10">{end} {bounds[end]:g}</text>')
    shapes.append(f'<text x="0" y="{height - 4}" font-size="10">{low:.4g}</text>')
    shapes.append(f'<text x="{width / 2:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">tallest bar: {tallest} attempt(s)</text>')
    shapes.append(f'<text x="{width}" y="{height - 4}" font-size="10" text-anchor="end">{high:.4g}</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{"".join(shapes)}</svg>'


def _figure(root: DatasetRoot, point: AttemptPoint, scorer: str) -> str:
    caption = f"{html.escape(point.forgery)}<br>attempt {point.attempt}: {html.escape(scorer)} {point.value:.4g}"
    image = ""
    if point.thumbnail and root.absolute(point.thumbnail).is_file():
        data = base64.b64encode(root.absolute(point.thumbnail).read_bytes()).decode("ascii")
        image = f'<img alt="{html.escape(point.forgery)} attempt {point.attempt}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _method_section(root: DatasetRoot, scores: MethodScores, examples: int) -> str:
    total = sum(scores.outcomes.values())
    parts = [f"<h3>{html.escape(scores.method)}</h3>"]
    parts.append(
        "<table><tr><th>forgeries</th><th>kept at attempt 0</th><th>kept after regeneration</th><th>dropped</th><th>attempts scored</th></tr>"
        f"<tr><td>{total}</td><td>{scores.outcomes['passed']}</td><td>{scores.outcomes['regenerated']}</td>"
        f"<td>{scores.outcomes['dropped']}</td><td>{scores.attempts}</td></tr></table>"
    )
    parts.append('<p>Histograms: <span class="kept">green</span> attempts met every threshold of the method, '
                 '<span class="rejected">red</span> attempts missed at least one.</p>')
    for scorer in sorted(set(scores.points) | set(scores.undefined)):
        points = scores.points.get(scorer, [])
        bounds = scores.thresholds.get(scorer, {})
        limits = ", ".join(f"{end} {value:g}" for end, value in bounds.items()) or "no threshold for this method"
        parts.append(f"<h4>{html.escape(scorer)} ({len(points)} attempts; {limits})</h4>")
        if scores.undefined[scorer]:
            parts.append(f"<p>{scores.undefined[scorer]} attempt(s) where {html.escape(scorer)} is undefined (flat or too small region).</p>")
        if points:
            parts.append(histogram_svg(points, bounds))
        for end, value in bounds.items():
            kept, rejected = nearest_examples(points, value, keep_above=end == "min", count=examples)
            for label, css, chosen in (("kept", "kept", kept), ("rejected", "rejected", rejected)):
                if chosen:
                    parts.append(f'<p class="{css}">Nearest {label} by {end} {value:g}:</p>')
                    parts.append('<div class="examples">' + "".join(_figure(root, point, scorer) for point in chosen) + "</div>")
    return "\n".join(parts)


def render_filter_section(root: DatasetRoot, examples: int = 4) -> str:
    """Return the HTML fragment of the quality filter: one `<section class="brgen-filter">` with its own `<style>`."""
    methods = collect_filter_scores(root)
    body = [f"<style>{STYLE}</style>", "<h2>Quality filter</h2>"]
    if not methods:
        body.append("<p>No filter records: run <code>brgen filter</code> first.</p>")
    for scores in methods:
        body.append(_method_section(root, scores, examples))
    return '<section class="brgen-filter">\n' + "\n".join(body) + "\n</section>"


def render_filter_page(root: DatasetRoot, examples: int = 4) -> str:
    """Return a standalone HTML page around `render_filter_section`."""
    title = f"brgen quality filter: {html.escape(str(root.path))}"
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body>\n<h1>{title}</h1>\n{render_filter_section(root, examples)}\n</body></html>\n"
    )
