"""Server-rendered SVG charts for the dashboard (the CSP allows no inline scripts): codes by colour per
county, the epidemic curve, and the city's cells by risk. Every text is escaped; sizes are in SVG units
and scale with the page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from xml.sax.saxutils import escape

import pandas as pd

from crypto.codes import COLOURS

FILL = {"green": "#1f9d55", "yellow": "#e0a800", "red": "#d63031"}
QUIET = "#d9dee4"
EXPOSURE_STEPS = ((1, "#f6d365"), (3, "#f08c2e"), (10, "#d63031"))
"""Cell fill by distinct matched cell-hours there: at least the first figure gives the colour."""


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" class="chart">' + "".join(body) + "</svg>"
    )


def county_bars(counts: dict[str, dict[str, int]], name: Callable[[str], str], label: str) -> str:
    """Horizontal stacked bars: one row per county, green, yellow and red codes, the total at the end."""
    rows = [(county, by) for county, by in counts.items() if sum(by.values()) or county != "other"]
    width, left, right, row_h = 420, 96, 48, 28
    biggest = max((sum(by.values()) for _, by in rows), default=0) or 1
    span = width - left - right
    body: list[str] = []
    for i, (county, by) in enumerate(rows):
        y = 8 + i * row_h
        body.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" class="axis">{escape(name(county))}</text>'
        )
        x = float(left)
        for colour in COLOURS:
            w = span * by[colour] / biggest
            if w > 0:
                body.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="20" fill="{FILL[colour]}">'
                    f"<title>{escape(name(county))} {colour}: {by[colour]}</title></rect>"
                )
            x += w
        body.append(f'<text x="{x + 6:.1f}" y="{y + 15}" class="value">{sum(by.values()):,}</text>')
    return _svg(width, 16 + len(rows) * row_h, body, label)


def epidemic_curve(points: Sequence[dict[str, Any]], legend: tuple[str, str], label: str) -> str:
    """Cases per day: bars by onset date, a line with dots by report date, day labels every few days."""
    width, height, left, bottom, top = 420, 220, 30, 30, 26
    if not points:
        return _svg(width, 60, ['<text x="10" y="35" class="axis">—</text>'], label)
    peak = max(max(p["onset"], p["report"]) for p in points) or 1
    step = (width - left - 10) / len(points)
    plot_h = height - top - bottom

    def y(n: int) -> float:
        return top + plot_h * (1 - n / peak)

    body = [
        f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - 10}" y2="{y(0):.1f}" class="grid"/>',
        f'<text x="{left - 6}" y="{y(peak) + 4:.1f}" text-anchor="end" class="axis">{peak}</text>',
        f'<text x="{left - 6}" y="{y(0) + 4:.1f}" text-anchor="end" class="axis">0</text>',
    ]
    every = max(1, len(points) // 6)
    line = []
    for i, p in enumerate(points):
        x = left + i * step
        if p["onset"]:
            body.append(
                f'<rect x="{x + step * 0.1:.1f}" y="{y(p["onset"]):.1f}" width="{step * 0.8:.1f}" '
                f'height="{y(0) - y(p["onset"]):.1f}" fill="#8fb8e8"><title>{p["day"]} {escape(legend[0])}: '
                f"{p['onset']}</title></rect>"
            )
        cx, cy = x + step / 2, y(p["report"])
        line.append(f"{cx:.1f},{cy:.1f}")
        if p["report"]:
            body.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#d63031"><title>{p["day"]} '
                f"{escape(legend[1])}: {p['report']}</title></circle>"
            )
        if i % every == 0:
            body.append(
                f'<text x="{cx:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="axis">'
                f"{p['day'][5:]}</text>"
            )
    body.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#d63031" stroke-width="1.5"/>')
    body.append(f'<rect x="{left}" y="4" width="12" height="12" fill="#8fb8e8"/>')
    body.append(f'<text x="{left + 16}" y="14" class="axis">{escape(legend[0])}</text>')
    body.append(f'<circle cx="{left + 156}" cy="10" r="4" fill="#d63031"/>')
    body.append(f'<text x="{left + 166}" y="14" class="axis">{escape(legend[1])}</text>')
    return _svg(width, height, body, label)


def exposure_fill(exposures: int) -> str:
    """A cell's fill for its count of distinct matched cell-hours."""
    fill = QUIET
    for threshold, colour in EXPOSURE_STEPS:
        if exposures >= threshold:
            fill = colour
    return fill


def cell_map(cells: pd.DataFrame, label: str) -> str:
    """The city's cells as squares centred on their towers (x_km, y_km), north up, filled by matched
    cell-hours; the square's side is the towers' mean spacing."""
    if cells.empty:
        return _svg(320, 60, ['<text x="10" y="35" class="axis">—</text>'], label)
    xs, ys = cells["x_km"].astype(float), cells["y_km"].astype(float)
    area = max((xs.max() - xs.min()) * (ys.max() - ys.min()), 1e-6)
    side = max((area / len(cells)) ** 0.5, 0.05)
    x0, x1 = xs.min() - side / 2, xs.max() + side / 2
    y0, y1 = ys.min() - side / 2, ys.max() + side / 2
    scale = 600 / max(x1 - x0, y1 - y0)
    width, height = int((x1 - x0) * scale) + 2, int((y1 - y0) * scale) + 2
    size = side * scale * 0.9
    body = []
    # quiet cells first, so the exposed ones are drawn on top of any overlap
    for x, y, n in sorted(zip(xs, ys, cells["exposures"].astype(int), strict=True), key=lambda c: c[2]):
        px, py = (x - x0) * scale - size / 2, (y1 - y) * scale - size / 2
        title = f"<title>{n}</title>" if n else ""
        body.append(
            f'<rect x="{px:.1f}" y="{py:.1f}" width="{size:.1f}" height="{size:.1f}" '
            f'fill="{exposure_fill(n)}">{title}</rect>'
        )
    return _svg(width, height, body, label)
