"""Line charts drawn with Pillow: a metric against the training step, one panel per metric.

Our own few lines instead of matplotlib, which would be a large dependency for one plot.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from t2i_adapter.evaluation.grid import label_font

PANEL_WIDTH, PANEL_HEIGHT = 420, 220
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 26, 34
LINES = ((31, 119, 180), (44, 160, 44), (148, 103, 189), (140, 86, 75), (23, 190, 207))
BASELINE = (214, 39, 40)
AXIS = (60, 60, 60)
GRID = (225, 225, 225)


def _format(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def draw_panel(
    title: str, series: dict[str, Sequence[tuple[float, float]]], baseline: float | None = None
) -> Image.Image:
    """One chart: each series' (step, value) points joined by a line, `baseline` as a dashed level."""
    canvas = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = label_font(12)
    draw.text((MARGIN_LEFT, 6), title, fill=AXIS, font=font)
    series = {
        name: sorted((float(x), float(y)) for x, y in points if y == y)  # nan scores are left out
        for name, points in series.items()
    }
    everything = [point for points in series.values() for point in points]
    values = [y for _, y in everything] + (
        [baseline] if baseline is not None and baseline == baseline else []
    )
    if not everything:
        return canvas
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    first, last = min(x for x, _ in everything), max(x for x, _ in everything)
    span = last - first or 1.0
    left, right = MARGIN_LEFT, PANEL_WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, PANEL_HEIGHT - MARGIN_BOTTOM

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + (x - first) / span * (right - left) if last > first else (left + right) / 2
        return px, bottom - (y - low) / (high - low) * (bottom - top)

    _draw_axes(draw, font, (low, high), sorted({x for x, _ in everything}), to_pixel)
    if baseline is not None and baseline == baseline:
        _, by = to_pixel(first, baseline)
        for start in range(left, right, 12):
            draw.line([(start, by), (min(start + 6, right), by)], fill=BASELINE, width=2)
        draw.text((right - 80, by - 15), "no adapter", fill=BASELINE, font=font)
    _draw_series(draw, font, series, to_pixel)
    draw.text(((left + right) / 2 - 30, PANEL_HEIGHT - 16), "training step", fill=AXIS, font=font)
    return canvas


def _draw_axes(
    draw: ImageDraw.ImageDraw, font, value_range: tuple[float, float], steps: list[float], to_pixel
) -> None:
    """Three horizontal guides with their values, the axes, and each step under the x axis."""
    low, high = value_range
    left, right = MARGIN_LEFT, PANEL_WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, PANEL_HEIGHT - MARGIN_BOTTOM
    for fraction in (0.0, 0.5, 1.0):
        y = bottom - fraction * (bottom - top)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((4, y - 7), _format(low + fraction * (high - low)), fill=AXIS, font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS)
    for x in steps:
        px, _ = to_pixel(x, low)
        draw.text((px - 12, bottom + 6), f"{int(x)}", fill=AXIS, font=font)


def _draw_series(
    draw: ImageDraw.ImageDraw, font, series: dict[str, list[tuple[float, float]]], to_pixel
) -> None:
    """Each series as a coloured line with dots; names listed when there are several."""
    for number, (name, points) in enumerate(series.items()):
        color = LINES[number % len(LINES)]
        pixels = [to_pixel(x, y) for x, y in points]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for px, py in pixels:
            draw.ellipse([(px - 3, py - 3), (px + 3, py + 3)], fill=color)
        if len(series) > 1:
            draw.text((MARGIN_LEFT + 6, MARGIN_TOP + 2 + 14 * number), name, fill=color, font=font)


def stack_panels(panels: Sequence[Image.Image], columns: int = 2) -> Image.Image:
    """Panels in rows of `columns`."""
    rows = (len(panels) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * PANEL_WIDTH, max(1, rows) * PANEL_HEIGHT), (255, 255, 255))
    for index, panel in enumerate(panels):
        sheet.paste(panel, ((index % columns) * PANEL_WIDTH, (index // columns) * PANEL_HEIGHT))
    return sheet
