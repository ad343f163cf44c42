"""The mixed-precision trade-off curve as an SVG picture (no plotting library needed).

One panel per budget: the budget's quantity (weights' bytes, or estimated latency
relative to float) on x, the predicted model-output error on y, one dot per search
step joined in order, the budget as a dashed line and the chosen point ringed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from html import escape
from pathlib import Path

from acekit.fileio import atomic_write

_W, _H = 420, 300  # one panel
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 40, 50


def _ticks(low: float, high: float) -> list[float]:
    span = high - low or abs(high) or 1.0
    return [low + span * i / 4 for i in range(5)]


def _panel(
    x0: float,
    title: str,
    xs: Sequence[float],
    ys: Sequence[float],
    limit: float,
    label: str,
) -> list[str]:
    """SVG elements of one panel whose left edge is at ``x0``."""
    low_x, high_x = min(*xs, limit), max(*xs, limit)
    low_y, high_y = 0.0, max(ys) * 1.05 or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(x: float) -> float:
        return x0 + _LEFT + (x - low_x) / ((high_x - low_x) or 1.0) * plot_w

    def py(y: float) -> float:
        return _TOP + plot_h - (y - low_y) / ((high_y - low_y) or 1.0) * plot_h

    parts = [
        f'<text x="{x0 + _W / 2}" y="20" text-anchor="middle" font-size="14">'
        f"{escape(title)}</text>",
        f'<rect x="{x0 + _LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#888"/>',
    ]
    for tick in _ticks(low_x, high_x):
        parts.append(
            f'<text x="{px(tick):.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle" '
            f'font-size="10">{tick:.3g}</text>'
        )
    for tick in _ticks(low_y, high_y):
        parts.append(
            f'<text x="{x0 + _LEFT - 6}" y="{py(tick) + 3:.1f}" text-anchor="end" '
            f'font-size="10">{tick:.3g}</text>'
        )
    parts += [
        f'<text x="{x0 + _LEFT + plot_w / 2}" y="{_H - 12}" text-anchor="middle" '
        f'font-size="11">{escape(label)}</text>',
        f'<text x="{x0 + 14}" y="{_TOP + plot_h / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 {x0 + 14} {_TOP + plot_h / 2})">predicted output error</text>',
        f'<line x1="{px(limit):.1f}" y1="{_TOP}" x2="{px(limit):.1f}" y2="{_TOP + plot_h}" '
        'stroke="#c33" stroke-dasharray="5,4"/>',
        f'<text x="{px(limit) + 3:.1f}" y="{_TOP + 12}" font-size="10" fill="#c33">budget</text>',
    ]
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    parts.append(f'<polyline points="{points}" fill="none" stroke="#2a6" stroke-width="1.5"/>')
    parts += [
        f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="#2a6"/>'
        for x, y in zip(xs, ys, strict=True)
    ]
    parts.append(
        f'<circle cx="{px(xs[-1]):.1f}" cy="{py(ys[-1]):.1f}" r="6" fill="none" '
        'stroke="#000" stroke-width="1.5"><title>chosen</title></circle>'
    )
    return parts


def write_curve_svg(
    path: str | os.PathLike[str],
    panels: Sequence[tuple[str, Sequence[float], float]],
    errors: Sequence[float],
) -> Path:
    """Write the curve at ``path`` atomically: ``panels`` are ``(label, xs, budget)``."""
    width = _W * len(panels)
    body: list[str] = []
    for i, (label, xs, limit) in enumerate(panels):
        title = f"Mixed precision: error against {label.split(' (')[0]}"
        body += _panel(i * _W, title, xs, errors, limit, label)
    svg = "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_H}" '
            f'viewBox="0 0 {width} {_H}" font-family="sans-serif">',
            f'<rect width="{width}" height="{_H}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )
    return atomic_write(path, lambda tmp: tmp.write_text(svg, encoding="utf-8"))
