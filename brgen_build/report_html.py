"""A self-contained HTML page: inline CSS, and every figure embedded as a PNG data URI.

The page needs no network and no neighbouring file, so it can be mailed or attached to a paper review;
the PNGs are also written next to it for slides.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
figure { margin: 1rem 0; } figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
p.note { color: #555; font-size: 0.9rem; }
"""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[object]]
    # indexes of left-aligned (text) columns
    text_columns: set[int] = field(default_factory=lambda: {0})


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def _cell(value: object, tag: str, text: bool) -> str:
    css = ' class="text"' if text else ""
    return f"<{tag}{css}>{escape(str(value))}</{tag}>"


def render_table(table: Table) -> str:
    head = "".join(_cell(column, "th", index in table.text_columns) for index, column in enumerate(table.columns))
    body = "".join(
        "<tr>" + "".join(_cell(value, "td", index in table.text_columns) for index, value in enumerate(row)) + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_figure(figure: Figure) -> str:
    caption = escape(figure.caption)
    return f'<figure><img src="{data_uri(figure.path)}" alt="{caption}"><figcaption>{caption} ({escape(figure.path.name)})</figcaption></figure>'


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title><style>{STYLE}</style></head><body>"]
    parts.append(f"<h1>{escape(title)}</h1><p class=\"note\">{escape(subtitle)}</p>")
    for section in sections:
        parts.append(f"<h2>{escape(section.title)}</h2>")
        parts += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
        parts += [render_table(table) for table in section.tables]
        parts += [render_figure(figure) for figure in section.figures]
    parts.append("</body></html>")
    return "\n".join(parts)
