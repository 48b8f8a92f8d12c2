"""Canvas components whose pictures are checked before Gradio decodes them.

Gradio's `Sketchpad` and `ImageEditor` decode whatever the browser sends for the canvas with
`PIL.Image.open(...).convert()`, with no pixel limit of ours: a 168 KB PNG claiming 12000x12000
pixels took the server to 1.85 GB. `checked_canvas` makes a component run the upload rule
(`handlers.check_canvas_file`: byte cap, 64-megapixel header check) on each canvas file first; a
refused one is one line in the page. (It wraps the instance's decoder rather than subclassing:
Gradio writes a `.pyi` stub next to the module of every component subclass.)
"""

from __future__ import annotations

from typing import Any, TypeVar

import gradio as gr

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.interfaces.webui.handlers import Limits, check_canvas_file

Canvas = TypeVar("Canvas", bound=gr.ImageEditor)


def checked_canvas(component: Canvas, limits: Limits, name: str) -> Canvas:
    """`component` (a `gr.Sketchpad` or `gr.ImageEditor`) with each canvas picture checked
    against `limits` before it is decoded; `name` names the canvas in the message."""
    decode = component.convert_and_format_image

    def convert_and_format_image(file: Any, flatten_on_white: bool = False) -> Any:
        if file is not None:
            try:
                check_canvas_file(file if isinstance(file, bytes | bytearray) else file.path, limits, name)
            except T2IAdapterError as error:
                raise gr.Error(str(error), print_exception=False) from None
        return decode(file, flatten_on_white)

    component.convert_and_format_image = convert_and_format_image  # type: ignore[method-assign]
    return component
