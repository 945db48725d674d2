"""Small server-rendered SVG line charts for the overview page (no JavaScript, no build)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

Point = tuple[float, float]  # (epoch seconds, value)
_W, _H, _PAD = 560, 160, 36
_COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def line_chart(
    title: str, series: Mapping[str, Sequence[Point]], log_y: bool = False, unit: str = ""
) -> str:
    """An SVG with one polyline per series, time on x, min/max labels on y."""
    points = [p for s in series.values() for p in s if not (log_y and p[1] <= 0)]
    head = f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption>'
    if not points:
        return head + '<p class="empty">no data yet</p></figure>'
    xs = [x for x, _ in points]
    ys = [math.log10(y) if log_y else y for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def at(x: float, y: float) -> str:
        v = math.log10(y) if log_y else y
        px = _PAD + (x - x0) / (x1 - x0) * (_W - 2 * _PAD)
        py = _H - _PAD / 2 - (v - y0) / (y1 - y0) * (_H - _PAD)
        return f"{px:.1f},{py:.1f}"

    lines, legend = [], []
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = _COLOURS[i % len(_COLOURS)]
        shown = [p for p in sorted(pts) if not (log_y and p[1] <= 0)]
        coords = " ".join(at(x, y) for x, y in shown)
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'
        )
        lines += [f'<circle cx="{at(x, y).split(",")[0]}" cy="{at(x, y).split(",")[1]}" r="2" '
                  f'fill="{colour}"><title>{html.escape(name)}: {y:.4g}{unit}</title></circle>'
                  for x, y in shown]  # fmt: skip
        legend.append(f'<span style="color:{colour}">■ {html.escape(name)}</span>')
    top, bottom = (10**y1, 10**y0) if log_y else (y1, y0)
    axis = (
        f'<text x="2" y="12" class="tick">{top:.3g}{unit}</text>'
        f'<text x="2" y="{_H - 4}" class="tick">{bottom:.3g}{unit}</text>'
        f'<text x="{_PAD}" y="{_H - 2}" class="tick">{_stamp(x0)}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 2}" class="tick" text-anchor="end">{_stamp(x1)}</text>'
    )
    svg = (
        f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{html.escape(title)}">{axis}{"".join(lines)}</svg>'
    )
    return head + svg + f'<div class="legend">{" ".join(legend)}</div></figure>'


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%m-%d %H:%M")
