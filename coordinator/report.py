"""The run report: report.json for machines, report.html (tables and embedded plots) for people."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

COLOURS = {"green": "#2e9d4f", "yellow": "#e8b923", "red": "#d43c3c"}


def figure_png(fig: plt.Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def plot_codes_by_colour(counts: Mapping[str, int]) -> bytes:
    """Bar chart of issued codes per colour."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    names = [c for c in COLOURS if c in counts]
    bars = ax.bar(names, [counts[c] for c in names], color=[COLOURS[c] for c in names])
    ax.bar_label(bars, labels=[f"{counts[c]:,}" for c in names])
    ax.set_ylabel("codes")
    ax.set_title("Health codes by colour")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig)


def plot_exposures_per_day(per_day: pd.DataFrame) -> bytes:
    """Stacked bars of matched (subject, token) exposures per day and agency; columns day, agency, n."""
    fig, ax = plt.subplots(figsize=(7, 3))
    if not per_day.empty:
        table = per_day.pivot_table(index="day", columns="agency", values="n", aggfunc="sum", fill_value=0)
        table.sort_index().plot.bar(ax=ax, stacked=True, width=0.8)
        ax.set_xlabel("")
        ax.legend(title="", frameon=False)
    ax.set_ylabel("matched exposures")
    ax.set_title("Exposures per day (day named in the risk token)")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222}
body{margin:2rem auto;max-width:1100px;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.muted{color:#777} table{border-collapse:collapse;margin:.6rem 0}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:8px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.5rem} .figs img{max-width:100%;margin:.5rem 1rem .5rem 0}
.green{color:#2e9d4f}.yellow{color:#b8901a}.red{color:#d43c3c}
"""


def render_html(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """Render the report dict (see write_report) and PNG figures into one self-contained HTML page."""
    title = html.escape(str(report.get("title", "healthpsi run")))
    cards = "".join(
        f"<div class='card {html.escape(str(c.get('class', '')))}'><b>{html.escape(_fmt(c['value']))}</b>"
        f"{html.escape(str(c['label']))}</div>"
        for c in report.get("cards", [])
    )
    sections = []
    for section in report.get("sections", []):
        parts = [f"<h2>{html.escape(section['title'])}</h2>"]
        if section.get("text"):
            parts.append(f"<p>{html.escape(section['text'])}</p>")
        parts.append(_table(section.get("rows", [])) if "rows" in section else "")
        imgs = "".join(
            f"<img alt='{html.escape(name)}' src='data:image/png;base64,"
            f"{base64.b64encode(figures[name]).decode()}'>"
            for name in section.get("figures", [])
            if name in figures
        )
        if imgs:
            parts.append(f"<div class='figs'>{imgs}</div>")
        sections.append("".join(parts))
    subtitle = html.escape(str(report.get("subtitle", "")))
    return (
        f"<!doctype html><html lang='en'><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style><body><h1>{title}</h1><p class='muted'>{subtitle}</p>"
        f"<div class='cards'>{cards}</div>{''.join(sections)}</body></html>"
    )


def write_report(run_dir: Path, report: Mapping[str, Any], figures: Mapping[str, bytes]) -> Path:
    """Write RUN/report.json (the report dict) and RUN/report.html; return the HTML path.

    The dict holds `title`, `subtitle`, `cards` (label/value), `sections` (title, text, rows, figures)
    and any machine-readable fields the caller adds (`metrics`, `stages`, ...).
    """
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    path = run_dir / "report.html"
    path.write_text(render_html(report, figures), encoding="utf-8")
    return path
