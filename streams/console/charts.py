"""Small SVG charts drawn on the server: bars per day (sent and held back) and a cumulative step line."""

from __future__ import annotations

from datetime import datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT, PAD = 640, 160, 24


def bars(rows: list[tuple[str, int, int]]) -> Markup:
    """One pair of bars per (label, sent, held back), sent in blue and held back in grey."""
    if not rows:
        return Markup("")
    top = max(max(sent, held) for _, sent, held in rows) or 1
    slot = (WIDTH - 2 * PAD) / len(rows)
    shapes = []
    for index, (label, sent, held) in enumerate(rows):
        x = PAD + index * slot
        for offset, value, css in ((0.1, sent, "sent"), (0.5, held, "held")):
            height = (HEIGHT - 2 * PAD) * value / top
            shapes.append(f'<rect class="{css}" x="{x + slot * offset:.1f}" y="{HEIGHT - PAD - height:.1f}" '
                          f'width="{slot * 0.35:.1f}" height="{height:.1f}"><title>{escape(label)}: {value} '
                          f'{css}</title></rect>')
        shapes.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">{escape(label[5:])}</text>')
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{"".join(shapes)}</svg>')


def steps(points: list[tuple[datetime, int]]) -> Markup:
    """A rising line of a running total over time (customers told during a fan-out)."""
    if not points:
        return Markup("")
    start, end = points[0][0].timestamp(), points[-1][0].timestamp()
    span, top = (end - start) or 1.0, max(count for _, count in points) or 1
    coords = " ".join(f"{PAD + (WIDTH - 2 * PAD) * (moment.timestamp() - start) / span:.1f},"
                      f"{HEIGHT - PAD - (HEIGHT - 2 * PAD) * count / top:.1f}" for moment, count in points)
    label = f"{points[-1][1]} told by {points[-1][0]:%H:%M}"
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><polyline class="told" '
                  f'points="{coords}"/><text x="{WIDTH - PAD}" y="{PAD}" text-anchor="end">{escape(label)}</text></svg>')
