"""Charts drawn as inline SVG strings, so a report needs no JavaScript library and no network.

Colours are CSS classes (`s0`..`s7` for series, `ok`/`bad`/`warn`/`muted` for meaning), styled by the
page's stylesheet: the same SVG follows light mode, dark mode and print. Every data mark carries the
class `mark` (the browser tests count them) and hover text comes from SVG <title>, not from script.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from html import escape

from reports.scale import Scale, si

Series = int | str
Point = tuple[float, float]


def _cls(series: Series) -> str:
    return f"s{series % 8}" if isinstance(series, int) else series


def _n(v: float) -> str:
    return f"{v:.1f}"


def _title(text: str | None) -> str:
    return f"<title>{escape(text)}</title>" if text else ""


class Chart:
    """Common frame: size, title for screen readers, legend entries (drawn in HTML by the page)."""

    def __init__(self, title: str, width: int, height: int):
        self.title, self.width, self.height = title, width, height
        self.legend: list[tuple[str, str]] = []      # (css class, label)
        self._body: list[str] = []

    def key(self, series: Series, label: str) -> None:
        if (_cls(series), label) not in self.legend:
            self.legend.append((_cls(series), label))

    @property
    def empty(self) -> bool:
        return not any('class="mark' in part for part in self._body)

    def svg(self) -> str:
        return (f'<svg class="chart" viewBox="0 0 {self.width} {self.height}" role="img" '
                f'aria-label="{escape(self.title)}" xmlns="http://www.w3.org/2000/svg">'
                + "".join(self._frame()) + "".join(self._body) + "</svg>")

    def _frame(self) -> list[str]:
        return []


class Plot(Chart):
    """An x-y plot with linear or log axes; marks are added in data coordinates."""

    MARGIN = (14, 18, 46, 64)         # top, right, bottom, left (pixels)

    def __init__(self, title: str, x_label: str, y_label: str, xs: Iterable[float], ys: Iterable[float], *,
                 x_log: bool = False, y_log: bool = False, x_zero: bool = False, y_zero: bool = False,
                 width: int = 720, height: int = 340, x_fmt: Callable[[float], str] = si,
                 y_fmt: Callable[[float], str] = si, pad: float = 0.0):
        super().__init__(title, width, height)
        t, r, b, l = self.MARGIN
        self.x = Scale.fit(list(xs), l, width - r, x_log, x_zero, pad)
        self.y = Scale.fit(list(ys), height - b, t, y_log, y_zero, pad)
        self.x_label, self.y_label, self.x_fmt, self.y_fmt = x_label, y_label, x_fmt, y_fmt
        self.x_tick_labels: dict[float, str] | None = None   # categorical x (e.g. CI runs)

    def _frame(self) -> list[str]:
        t, r, b, l = self.MARGIN
        w, h = self.width, self.height
        out = [f'<rect class="plotbg" x="{l}" y="{t}" width="{w - l - r}" height="{h - t - b}"/>']
        xticks = sorted(self.x_tick_labels) if self.x_tick_labels is not None else self.x.ticks()
        for v in xticks:
            px = _n(self.x(v))
            lab = self.x_tick_labels[v] if self.x_tick_labels is not None else self.x_fmt(v)
            out.append(f'<line class="grid" x1="{px}" x2="{px}" y1="{t}" y2="{h - b}"/>'
                       f'<text class="tick" x="{px}" y="{h - b + 14}" text-anchor="middle">{escape(lab)}</text>')
        for v in self.y.ticks():
            py = _n(self.y(v))
            out.append(f'<line class="grid" x1="{l}" x2="{w - r}" y1="{py}" y2="{py}"/>'
                       f'<text class="tick" x="{l - 6}" y="{py}" dy="0.32em" text-anchor="end">'
                       f'{escape(self.y_fmt(v))}</text>')
        out.append(f'<rect class="frame" x="{l}" y="{t}" width="{w - l - r}" height="{h - t - b}"/>')
        out.append(f'<text class="axislabel" x="{(l + w - r) / 2}" y="{h - 8}" text-anchor="middle">'
                   f'{escape(self.x_label)}</text>')
        out.append(f'<text class="axislabel" transform="translate(14 {(t + h - b) / 2}) rotate(-90)" '
                   f'text-anchor="middle">{escape(self.y_label)}</text>')
        return out

    def _xy(self, x: float, y: float) -> str:
        return f"{_n(self.x(x))} {_n(self.y(y))}"

    def line(self, pts: Sequence[Point], series: Series = 0, label: str | None = None, *, title: str | None = None,
             dashed: bool = False, step: bool = False) -> None:
        """A polyline; `step` draws a staircase (CDFs). Points with non-finite values are dropped."""
        pts = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        if len(pts) < 2:
            return
        d = [f"M{self._xy(*pts[0])}"]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if step:
                d.append(f"L{self._xy(x1, y0)}")
            d.append(f"L{self._xy(x1, y1)}")
        extra = " dashed" if dashed else ""
        self._body.append(f'<path class="mark line {_cls(series)}{extra}" d="{"".join(d)}">{_title(title or label)}'
                          f"</path>")
        if label:
            self.key(series, label)

    def points(self, pts: Sequence[Point], series: Series = 0, label: str | None = None, *,
               titles: Sequence[str] | None = None, r: float = 3.5, square: bool = False) -> None:
        for i, (x, y) in enumerate(pts):
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            tip = _title(titles[i] if titles else None)
            px, py = self.x(x), self.y(y)
            if square:
                self._body.append(f'<rect class="mark dot {_cls(series)}" x="{_n(px - r)}" y="{_n(py - r)}" '
                                  f'width="{_n(2 * r)}" height="{_n(2 * r)}">{tip}</rect>')
            else:
                self._body.append(f'<circle class="mark dot {_cls(series)}" cx="{_n(px)}" cy="{_n(py)}" '
                                  f'r="{r}">{tip}</circle>')
        if label:
            self.key(series, label)

    def rect(self, x0: float, x1: float, y0: float, y1: float, series: Series = 0, *,
             title: str | None = None) -> None:
        px0, px1, py0, py1 = self.x(x0), self.x(x1), self.y(y0), self.y(y1)
        w = max(abs(px1 - px0), 0.6)            # a very short span stays visible
        self._body.append(f'<rect class="mark bar {_cls(series)}" x="{_n(min(px0, px1))}" y="{_n(min(py0, py1))}" '
                          f'width="{_n(w)}" height="{_n(max(abs(py1 - py0), 0.6))}">{_title(title)}</rect>')

    def text(self, x: float, y: float, text: str, series: Series = "muted", anchor: str = "start") -> None:
        self._body.append(f'<text class="note {_cls(series)}" x="{_n(self.x(x))}" y="{_n(self.y(y))}" dy="-0.4em" '
                          f'text-anchor="{anchor}">{escape(text)}</text>')


class HBars(Chart):
    """Horizontal bars, one row per category, each row a stack of (value, series, hover text) segments."""

    def __init__(self, title: str, x_label: str, rows: Sequence[tuple[str, Sequence[tuple[float, Series, str]]]],
                 *, width: int = 720, x_fmt: Callable[[float], str] = si, row_h: int = 26):
        label_w = min(280, 16 + 6.6 * max((len(lbl) for lbl, _ in rows), default=4))
        height = 34 + 16 + row_h * max(len(rows), 1)
        super().__init__(title, width, height)
        totals = [sum(max(v, 0.0) for v, _, _ in segs) for _, segs in rows]
        negatives = [sum(min(v, 0.0) for v, _, _ in segs) for _, segs in rows]
        self.x = Scale.fit(totals + negatives, label_w, width - 18, zero=True)
        self.rows, self.x_label, self.x_fmt, self.label_w, self.row_h = rows, x_label, x_fmt, label_w, row_h
        for i, (label, segs) in enumerate(rows):
            y = 16 + i * row_h
            pos = neg = 0.0
            for v, series, tip in segs:
                if not math.isfinite(v) or v == 0:
                    continue
                a, pos, neg = (pos, pos + v, neg) if v > 0 else (neg, pos, neg + v)
                b = a + v
                x0, x1 = sorted((self.x(a), self.x(b)))
                self._body.append(f'<rect class="mark bar {_cls(series)}" x="{_n(x0)}" y="{y + 4}" '
                                  f'width="{_n(max(x1 - x0, 0.6))}" height="{row_h - 8}">{_title(tip)}</rect>')

    def _frame(self) -> list[str]:
        out = []
        bottom = 16 + self.row_h * max(len(self.rows), 1)
        for v in self.x.ticks():
            px = _n(self.x(v))
            out.append(f'<line class="grid" x1="{px}" x2="{px}" y1="16" y2="{bottom}"/>'
                       f'<text class="tick" x="{px}" y="{bottom + 14}" text-anchor="middle">{escape(self.x_fmt(v))}'
                       f"</text>")
        for i, (label, _) in enumerate(self.rows):
            y = 16 + i * self.row_h + self.row_h / 2
            out.append(f'<text class="tick" x="{self.label_w - 8}" y="{y}" dy="0.32em" text-anchor="end">'
                       f"{escape(label)}</text>")
        out.append(f'<line class="axis" x1="{_n(self.x(0))}" x2="{_n(self.x(0))}" y1="16" y2="{bottom}"/>')
        out.append(f'<text class="axislabel" x="{(self.label_w + self.width - 18) / 2}" y="{self.height - 6}" '
                   f'text-anchor="middle">{escape(self.x_label)}</text>')
        return out
