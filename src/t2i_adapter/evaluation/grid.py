"""Labelled image grids: rows of equally sized cells under a header of column titles."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

HEADER_HEIGHT = 18
ROW_LABEL_HEIGHT = 14
BACKGROUND = (250, 250, 250)
TEXT = (20, 20, 20)


def label_font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def image_grid(
    rows: Sequence[Sequence[Image.Image | None]],
    *,
    columns: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    cell: int = 128,
    gap: int = 4,
) -> Image.Image:
    """Cells resized (nearest, so pixels stay crisp) to `cell` px; None leaves a cell empty.

    `columns` are titles above the columns; `row_labels` are captions above each row.
    """
    num_columns = max((len(row) for row in rows), default=0)
    row_height = cell + (ROW_LABEL_HEIGHT if row_labels else 0)
    top = HEADER_HEIGHT if columns else 0
    width = num_columns * (cell + gap) + gap
    height = top + len(rows) * (row_height + gap) + gap
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = label_font()
    for column, title in enumerate(columns):
        draw.text((gap + column * (cell + gap) + 2, 3), title, fill=TEXT, font=font)
    for r, row in enumerate(rows):
        y = top + gap + r * (row_height + gap)
        if row_labels:
            draw.text((gap + 2, y), row_labels[r] if r < len(row_labels) else "", fill=TEXT, font=font)
            y += ROW_LABEL_HEIGHT
        for c, image in enumerate(row):
            if image is None:
                continue
            tile = image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (gap + c * (cell + gap), y))
    return canvas
