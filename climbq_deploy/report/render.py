"""Render the report's blocks (headings, paragraphs, images, tables) as Markdown and as one
self-contained HTML file (images inlined as base64 PNG), written atomically."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from climbq_deploy.fileio import atomic_write
from climbq_deploy.report.tables import Table


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Image:
    """A PNG in the report folder (``name`` relative to it) with its caption."""

    name: str
    caption: str


Block = Heading | Paragraph | Image | Table


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(map(_md_cell, table.columns)) + " |",
        "|" + "---|" * len(table.columns),
    ]
    lines += ["| " + " | ".join(_md_cell(c.text) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines)


def to_markdown(blocks: Sequence[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Image):
            parts.append(f"![{block.caption}]({block.name})\n\n*{block.caption}*")
        else:
            parts.append(markdown_table(block))
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
.table { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
td.missing { color: #888; font-style: italic; }
figure { margin: 1em 0 2em; } img { max-width: 100%; }
figcaption, .note { color: #444; font-size: 0.9em; }
"""


def html_table(table: Table) -> str:
    """The table in a box that scrolls sideways where it is wider than the page."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for row in table.rows:
        cells = "".join(
            f'<td class="missing">{html.escape(c.text)}</td>'
            if c.source is None and c.text.startswith(("not measured", "n/a", "no ", "none "))
            else f"<td>{html.escape(c.text)}</td>"
            for c in row
        )
        rows.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (
        f'<h3>{html.escape(table.title)}</h3>\n<div class="table"><table><thead><tr>{head}'
        f"</tr></thead><tbody>\n" + "\n".join(rows) + f"\n</tbody></table></div>{note}"
    )


def to_html(blocks: Sequence[Block], folder: Path, title: str) -> str:
    """One HTML page; each Image is read from ``folder`` and inlined as a data URI."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Image):
            data = base64.b64encode((folder / block.name).read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption} ({html.escape(block.name)})</figcaption>"
                "</figure>"
            )
        else:
            body.append(html_table(block))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_text(path: Path, content: str) -> Path:
    with atomic_write(path, "w") as handle:
        handle.write(content)
    return path
