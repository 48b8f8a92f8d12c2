"""The Gradio web UI: `build_app(model=..., cache=...)` makes the page, `launch_app` serves it."""

from t2i_adapter.interfaces.webui.app import build_app, launch_app

__all__ = ["build_app", "launch_app"]
