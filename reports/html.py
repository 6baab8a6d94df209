"""Page assembly: one self-contained HTML file (stylesheet and charts inline, no script, no URL).

Builders return HTML strings; `Page` collects sections and writes the file.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from reports.svg import Chart

Cell = Any


def css() -> str:
    return resources.files("reports").joinpath("assets/report.css").read_text()


class Pct(float):
    """A fraction shown as a percentage (still a number: right-aligned); `signed` for errors (+3.1%)."""

    def __new__(cls, v: float, signed: bool = False):
        obj = super().__new__(cls, v)
        obj.signed = signed
        return obj


def fmt(v: Cell, digits: int = 4) -> str:
    """A value as table text: numbers to `digits` significant figures with separators, None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, Pct):
        return f"{v:+.1%}" if v.signed else f"{v:.1%}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞" if v > 0 else ("-∞" if v < 0 else "–")
        if v != 0 and abs(v) < 10 ** -(digits - 1):
            return f"{v:.{digits - 1}e}"
        text = f"{v:,.{digits}g}" if abs(v) < 10 ** digits else f"{v:,.0f}"
        return text
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def slo_label(s) -> str:
    """An SLO as the planner documents write it ({metric, limit_s, percentile}) in words: ttft_p99≤500 ms."""
    if not isinstance(s, dict) or "limit_s" not in s:
        return str(s)
    pct = f"_p{s['percentile']:g}" if s.get("percentile") else ""
    return f"{s.get('metric')}{pct}≤{s['limit_s'] * 1e3:g} ms"


def _is_num(v: Cell) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], classes: Sequence[Sequence[str]] | None = None) -> str:
    """A table; numeric cells are right-aligned. `classes[i][j]` adds a CSS class to cell (i, j)."""
    rows = list(rows)
    numeric = [bool(rows) and all(_is_num(r[j]) or r[j] is None for r in rows) for j in range(len(headers))]
    head = "".join(f'<th class="num">{escape(h)}</th>' if numeric[j] else f"<th>{escape(h)}</th>"
                   for j, h in enumerate(headers))
    body = []
    for i, r in enumerate(rows):
        cells = []
        for j, v in enumerate(r):
            text = fmt(v)
            # Short cells never wrap (numbers, names, dates); long text (errors) wraps.
            cls = " ".join(c for c in ("num" if numeric[j] else "", "nw" if len(text) <= 28 else "",
                                       classes[i][j] if classes else "") if c)
            cells.append(f'<td class="{cls}">{escape(text)}</td>' if cls else f"<td>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure(chart: Chart, caption: str = "") -> str:
    """A chart with its HTML legend and caption; an empty chart is replaced by a note."""
    if chart.empty:
        return note(f"{chart.title}: no data to draw.")
    legend = "".join(f'<span><span class="key {cls}"></span>{escape(label)}</span>' for cls, label in chart.legend)
    return (f"<figure>{chart.svg()}" + (f'<div class="legend">{legend}</div>' if legend else "")
            + (f"<figcaption>{escape(caption)}</figcaption>" if caption else "") + "</figure>")


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def badge(text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{escape(text)}</span>'


def kv(pairs: Iterable[tuple[str, Cell]]) -> str:
    """A definition list of key/value pairs (run manifests, summaries)."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(fmt(v))}</dd>" for k, v in pairs)
    return f'<dl class="kv">{items}</dl>'


def flatten(d: dict, prefix: str = "") -> list[tuple[str, Cell]]:
    """Nested dicts as dotted keys (a manifest of any depth renders as one list)."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


class Page:
    def __init__(self, title: str, subtitle: str = ""):
        self.title, self.subtitle = title, subtitle
        self.parts: list[str] = []

    def section(self, heading: str, *body: str) -> None:
        self.parts.append(f"<section><h2>{escape(heading)}</h2>{''.join(body)}</section>")

    def html(self, data: dict | None = None) -> str:
        """The page; `data` (small: summaries, never per-request detail) is embedded as JSON for tools."""
        made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        embedded = ""
        if data is not None:
            # A JSON data block is inert (never executed); "</" is escaped so it cannot close the tag.
            text = json.dumps(data, default=str, separators=(",", ":")).replace("</", "<\\/")
            embedded = f'<script type="application/json" id="report-data">{text}</script>'
        return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                # No request may leave the file: forbid every fetch by policy, not only by construction.
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                "style-src 'unsafe-inline'; img-src data:\">"
                f"<title>{escape(self.title)}</title><style>{css()}</style></head><body>"
                f"<header><h1>{escape(self.title)}</h1><div class=\"sub\">{escape(self.subtitle)}</div>"
                f"<div class=\"sub\">Generated {made} by llm-deploy-planner</div></header>"
                + "".join(self.parts) + embedded + "</body></html>")

    def write(self, path: str | Path, data: dict | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(data), encoding="utf-8")
        return path
