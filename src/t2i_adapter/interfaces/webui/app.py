"""The Gradio page: layout and wiring only; what each button does lives in `handlers.py`.

`build_app` makes one page bound to one base model and one `ModelCache` (passed in, so models load
once per server, and nothing is kept in module globals); `launch_app` serves it on 127.0.0.1 unless
told otherwise, with an upload limit and a queue that runs one generation at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from t2i_adapter.conditions.registry import available_conditions
from t2i_adapter.demo.demo_run import DEMO_GUIDANCE, DEMO_STEPS
from t2i_adapter.demo.world import SCENE_SIZE
from t2i_adapter.demo_weights import DEMO_CONDITIONS
from t2i_adapter.errors import T2IAdapterError, first_line
from t2i_adapter.generation.schedulers import available_schedulers
from t2i_adapter.generation.settings import HIRES_UPSCALERS, GenerationSettings
from t2i_adapter.hub import is_demo_name
from t2i_adapter.interfaces.webui import handlers
from t2i_adapter.interfaces.webui.canvas import checked_canvas
from t2i_adapter.interfaces.webui.handlers import FIELD_RANGES, MAX_UNITS, UNIT_RANGES, Limits, UnitInput

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20
DEFAULT_SIZE = 512
SIZE_STEP = 8
# The mask brush's starting size in the init picture's pixels; the editor's own "Brush Size"
# slider (under the brush tool) changes it. Gradio's "auto" sizes it to the 800 px canvas: one
# dab covered 3/4 of a 64 px picture.
MASK_BRUSH_SIZE = 12
IMAGE_FILE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"]

# System fonts only: the default theme would fetch IBM Plex from Google Fonts, and this page
# must work (and its tests must run) with no network at all.
THEME = gr.themes.Default(
    primary_hue="indigo",
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "monospace"],
)
CSS = """
#t2i-status { min-height: 1.5em; }
.t2i-unit-images img { image-rendering: pixelated; }
"""

# The `UnitInput` fields a PNG's parameters restore (`UnitComponents` has a component of each name).
RESTORED_FIELDS = ("enabled", "adapter", "cond_type", "cond_options", "weight", "start", "end")


@dataclass
class UnitComponents:
    """The components of one adapter unit, in the order `UnitInput` lists its fields."""

    enabled: gr.Checkbox
    adapter: gr.Dropdown
    source: gr.State
    source_tabs: gr.Tabs
    upload: gr.File
    sketch: gr.Sketchpad
    cond_type: gr.Dropdown
    cond_options: gr.Textbox
    preview_button: gr.Button
    picture: gr.Image
    condition: gr.Image
    weight: gr.Slider
    start: gr.Slider
    end: gr.Slider

    def read(self, values: dict) -> UnitInput:
        """This unit's values out of an event's `{component: value}` dict."""
        return UnitInput(
            enabled=bool(values[self.enabled]),
            adapter=str(values[self.adapter] or ""),
            source=values[self.source],
            upload_path=values[self.upload],
            sketch=values[self.sketch],
            cond_type=values[self.cond_type] or "none",
            cond_options=str(values[self.cond_options] or ""),
            weight=float(values[self.weight]),
            start=float(values[self.start]),
            end=float(values[self.end]),
        )

    def restored(self) -> list:
        """The components a PNG's parameters fill in, in the order `restored_values` gives them."""
        return [
            *(getattr(self, name) for name in RESTORED_FIELDS),
            self.upload,
            self.source,
            self.source_tabs,
        ]

    def inputs(self) -> set:
        return {
            self.enabled,
            self.adapter,
            self.source,
            self.upload,
            self.sketch,
            self.cond_type,
            self.cond_options,
            self.weight,
            self.start,
            self.end,
        }


def restored_values(unit: UnitInput, cond_path: str | None) -> list:
    """A unit's values from a PNG's parameters, for `UnitComponents.restored()`; its picture only
    when the condition file is still there."""
    values = [getattr(unit, name) for name in RESTORED_FIELDS]
    if cond_path:
        return [*values, cond_path, handlers.SOURCE_UPLOAD, gr.update(selected=handlers.SOURCE_UPLOAD)]
    return [*values, gr.update(), gr.update(), gr.update()]


@dataclass
class Outputs:
    """The right-hand column: the Generate button, what it made, and the PNG drop for parameters."""

    generate_button: gr.Button
    status: gr.Markdown
    gallery: gr.Gallery
    downloads: gr.File
    parameters_png: gr.File


@dataclass
class Page:
    """The page's components: `fields` maps `PageInput` field names to theirs."""

    fields: dict[str, Any]
    units: list[UnitComponents]
    outputs: Outputs


def user_errors(fn: Callable) -> Callable:
    """Show a user's mistake as one line in the page (gr.Error); log and summarise anything else."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except T2IAdapterError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception as error:  # a bug: keep serving, say what broke in one line
            logger.exception("web UI handler %s failed", fn.__name__)
            raise gr.Error(f"internal error ({type(error).__name__}): {first_line(error)}") from None

    return wrapper


def build_app(
    model: str = "demo",
    cache: Any = None,
    *,
    adapters: list[str] | None = None,
    output_dir: str | Path | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    default_size: int | None = None,
    default_steps: int | None = None,
    compile: bool = False,
    vae: str | None = None,
) -> gr.Blocks:
    """The web page for generating with `model` (and `vae`, the VAE box's starting value: empty,
    the model's own); models are loaded through `cache` (one per server)."""
    if cache is None:
        from t2i_adapter.generation.api import ModelCache

        cache = ModelCache()
    output_dir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="t2i-adapter-webui-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    limits = Limits(max_bytes=int(max_upload_mb * 1024 * 1024))
    adapter_choices = list(dict.fromkeys(adapters if adapters is not None else _default_adapters(model)))
    defaults = _page_defaults(model, default_size, default_steps)
    defaults["vae"] = vae or ""

    with gr.Blocks(title="T2I-Adapter", analytics_enabled=False) as app:
        gr.Markdown(
            f"## T2I-Adapter\nBase model **`{model}`**. Give each adapter unit a picture (upload or "
            f"sketch), check its condition preview, then Generate; for img2img or inpaint, choose the "
            f"mode and upload the picture to rework. Uploads up to {max_upload_mb:g} MB."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                fields, units = _inputs(defaults, adapter_choices, available_conditions(), limits)
            with gr.Column(scale=4):
                outputs = _outputs()
        _wire_previews(units, limits)
        _wire_init_picture(fields, limits)
        page = Page(fields, units, outputs)
        _wire_generation(
            page,
            functools.partial(
                handlers.run_generation,
                model=model,
                cache=cache,
                output_dir=output_dir,
                limits=limits,
                compile=compile,
            ),
        )
        _wire_parameters(
            page, functools.partial(handlers.parameters_from_png, output_dir=output_dir, server_model=model)
        )

    app.t2i_upload_limit_bytes = limits.max_bytes
    app.t2i_output_dir = output_dir
    return app


# ---------------------------------------------------------------------------------------------
# Wiring: components -> handlers
# ---------------------------------------------------------------------------------------------


def _wire_previews(units: list[UnitComponents], limits: Limits) -> None:
    """Each unit's condition preview follows its picture, preprocessor and options."""

    @user_errors
    def preview(source: str, upload_path: str | None, sketch: Any, cond_type: str, options: str):
        return handlers.preview_condition(source, upload_path, sketch, cond_type, limits, options)

    @user_errors
    def preview_and_use(source: str, upload_path: str | None, sketch: Any, cond_type: str, options: str):
        picture, condition = preview(source, upload_path, sketch, cond_type, options)
        # A picture ticks the unit's "use" box; a cleared upload leaves the box as it was.
        return picture, condition, True if upload_path else gr.skip()

    queue = {"concurrency_id": "preview", "concurrency_limit": 4}
    for unit in units:
        inputs = [unit.source, unit.upload, unit.sketch, unit.cond_type, unit.cond_options]
        outputs = [unit.picture, unit.condition]
        # A new picture that previews without error also puts its unit to use (a refused one does not).
        unit.upload.change(preview_and_use, inputs, [*outputs, unit.enabled], **queue)
        for event in (unit.cond_type.change, unit.cond_options.submit, unit.source.change):
            event(preview, inputs, outputs, **queue)
        unit.preview_button.click(preview, inputs, outputs, **queue)
        unit.sketch.change(
            preview, inputs, outputs, trigger_mode="always_last", show_progress="hidden", **queue
        )


def _wire_init_picture(fields: dict[str, Any], limits: Limits) -> None:
    """A new init picture goes into the mask editor (no mask yet); a refused one is one line."""

    @user_errors
    def show(path: str | None):
        return handlers.editor_value(handlers.uploaded_picture(path, limits))

    # Only a user's upload or clear: a picture restored from a PNG comes with its mask already.
    fields["init_upload"].upload(show, fields["init_upload"], fields["init_editor"])
    fields["init_upload"].clear(lambda: None, None, fields["init_editor"], queue=False)

    @user_errors
    def check_mask(path: str | None) -> None:
        handlers.uploaded_picture(path, limits)  # a refused mask file is one line at once

    fields["mask_upload"].upload(check_mask, fields["mask_upload"], None)


def _wire_generation(page: Page, run: Callable[..., handlers.GenerationOutput]) -> None:
    """Generate: the page's values as one `PageInput` to `run` (`handlers.run_generation`), one at a time."""

    @user_errors
    def generate(values: dict, progress=gr.Progress()):  # noqa: B008 - Gradio reads the default
        progress(0.0, "preparing (models load on first use)")
        fields = {name: values[component] for name, component in page.fields.items()}
        output = run(
            handlers.PageInput(units=[unit.read(values) for unit in page.units], **fields), progress=progress
        )
        paths = [str(path) for path in output.paths]
        captions = [(path, f"seed {output.settings.seed} #{index}") for index, path in enumerate(paths)]
        return captions, paths, output.status

    inputs = set(page.fields.values()).union(*(unit.inputs() for unit in page.units))
    outputs = [page.outputs.gallery, page.outputs.downloads, page.outputs.status]
    page.outputs.generate_button.click(
        generate, inputs, outputs, concurrency_id="generate", concurrency_limit=1
    )


def _wire_parameters(page: Page, load: Callable[[str], handlers.LoadedParameters]) -> None:
    """A PNG dropped on the page fills in its fields and units (`handlers.parameters_from_png`)."""
    targets = [
        *page.fields.values(),
        *(c for unit in page.units for c in unit.restored()),
        page.outputs.status,
    ]

    @user_errors
    def load_parameters(path: str | None):
        if not path:
            return [gr.update()] * len(targets)
        loaded = load(path)
        # A field the PNG cannot fill (a size the CLI took from the condition, a value outside the
        # page's range) is left as it is.
        values = [loaded.fields.get(name, gr.update()) for name in page.fields]
        for unit, cond_path in zip(loaded.units, loaded.condition_paths, strict=True):
            values += restored_values(unit, cond_path)
        return [*values, loaded.message]

    page.outputs.parameters_png.upload(load_parameters, page.outputs.parameters_png, targets)


def launch_app(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    max_queue: int = 32,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> tuple[Any, str, str]:
    """Serve `app`: one generation at a time (others wait in the queue), uploads capped, no share link."""
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=getattr(app, "t2i_upload_limit_bytes", DEFAULT_MAX_UPLOAD_MB * 1024 * 1024),
        allowed_paths=[str(getattr(app, "t2i_output_dir", tempfile.gettempdir()))],
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        footer_links=[],
        theme=THEME,
        css=CSS,
    )


# ---------------------------------------------------------------------------------------------
# Layout pieces
# ---------------------------------------------------------------------------------------------


def _inputs(
    defaults: dict[str, Any], adapter_choices: list[str], conditions: list[str], limits: Limits
) -> tuple[dict[str, Any], list[UnitComponents]]:
    """The left-hand column: the model section, prompts, mode and init picture, the adapter units'
    tabs, LoRAs, sampling, size and hires pass; returns the components of `PageInput`'s fields by
    name, and the units."""
    model_fields = _model_section(defaults)
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="t2i-prompt")
    negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="t2i-negative")
    image_fields = _init_picture(defaults, limits)
    with gr.Tabs():
        units = [_unit(n, adapter_choices, conditions, limits) for n in range(1, MAX_UNITS + 1)]
    image_fields.update(_loras())
    with gr.Row():
        steps = gr.Slider(
            *FIELD_RANGES["steps"], value=defaults["steps"], step=1, label="Steps", elem_id="t2i-steps"
        )
        guidance = gr.Slider(
            *FIELD_RANGES["guidance_scale"],
            value=defaults["guidance_scale"],
            step=0.5,
            label="Guidance scale",
            elem_id="t2i-guidance",
        )
    with gr.Row():
        seed = gr.Number(
            label="Seed",
            value=defaults["seed"],
            precision=0,
            minimum=FIELD_RANGES["seed"][0],
            maximum=FIELD_RANGES["seed"][1],
            elem_id="t2i-seed",
            scale=4,
        )
        dice = gr.Button("Random seed", elem_id="t2i-random-seed", scale=1)
    dice.click(handlers.random_seed, None, seed, queue=False)
    with gr.Row():
        size = {"minimum": FIELD_RANGES["width"][0], "maximum": FIELD_RANGES["width"][1], "step": SIZE_STEP}
        width = gr.Slider(value=defaults["width"], label="Width", elem_id="t2i-width", **size)
        height = gr.Slider(value=defaults["height"], label="Height", elem_id="t2i-height", **size)
        num_images = gr.Slider(
            *FIELD_RANGES["num_images"],
            value=defaults["num_images"],
            step=1,
            label="Images",
            elem_id="t2i-num-images",
        )
    scheduler, eta = _scheduler(defaults)
    fields = {"prompt": prompt, "negative_prompt": negative, "steps": steps, "guidance_scale": guidance}
    fields.update(seed=seed, width=width, height=height, num_images=num_images, scheduler=scheduler, eta=eta)
    fields.update(image_fields, **_hires(), **model_fields)
    return fields, units


def _model_section(defaults: dict[str, Any]) -> dict[str, Any]:
    """Another VAE for the server's model (`--vae`; `serve --vae` fills it in): empty, the model's own."""
    with gr.Accordion("Model", open=True, elem_id="t2i-model-section"):
        vae = gr.Textbox(
            value=defaults["vae"],
            label="VAE (folder, file or hub id; empty: the model's own)",
            placeholder="e.g. stabilityai/sd-vae-ft-mse or vae-ft-mse-840000-ema-pruned.safetensors",
            elem_id="t2i-vae",
        )
    return {"vae": vae}


def _scheduler(defaults: dict[str, Any]) -> tuple[gr.Dropdown, gr.Textbox]:
    """The scheduler and its step noise (eta): an empty eta box leaves the scheduler's own."""
    schedulers = available_schedulers()
    with gr.Row():
        scheduler = gr.Dropdown(
            schedulers,
            value=defaults["scheduler"] if defaults["scheduler"] in schedulers else None,
            label="Scheduler",
            allow_custom_value=True,
            visible=bool(schedulers),
            elem_id="t2i-scheduler",
            scale=2,
        )
        # A text box, not gr.Number: a number box shows and sends 0 when empty, and 0 is an eta.
        eta = gr.Textbox(
            value=handlers.eta_text(defaults["eta"]),
            label="Eta: DDIM's eta, TCD's gamma",
            placeholder="0 to 1; empty: the scheduler's own",
            elem_id="t2i-eta",
            scale=2,
        )
    return scheduler, eta


def _outputs() -> Outputs:
    """The right-hand column's components."""
    generate_button = gr.Button("Generate", variant="primary", elem_id="t2i-generate")
    status = gr.Markdown("", elem_id="t2i-status")
    gallery = gr.Gallery(
        label="Images",
        columns=2,
        object_fit="contain",
        height="auto",
        buttons=["download", "fullscreen"],
        elem_id="t2i-gallery",
    )
    downloads = gr.File(
        label="PNG files (parameters embedded)",
        file_count="multiple",
        interactive=False,
        elem_id="t2i-downloads",
    )
    with gr.Accordion("Load parameters from a PNG made here", open=True):
        parameters_png = gr.File(
            label="Drop a PNG", file_types=[".png"], type="filepath", height=120, elem_id="t2i-load-png"
        )
    return Outputs(generate_button, status, gallery, downloads, parameters_png)


def _unit(number: int, adapter_choices: list[str], conditions: list[str], limits: Limits) -> UnitComponents:
    """One adapter unit's tab: adapter, picture (upload or sketch), preprocessor, preview, weights."""
    first = number == 1
    with gr.Tab(f"Adapter {number}", id=f"unit-{number}", elem_id=f"t2i-unit-{number}"):
        with gr.Row():
            enabled = gr.Checkbox(value=first, label="Use this unit", elem_id=f"t2i-unit-{number}-enabled")
            adapter = gr.Dropdown(
                adapter_choices,
                value=adapter_choices[0] if adapter_choices and first else None,
                allow_custom_value=True,
                label="Adapter (demo name, folder or hub id)",
                elem_id=f"t2i-unit-{number}-adapter",
                scale=3,
            )
        source = gr.State(handlers.SOURCE_UPLOAD)
        with gr.Tabs(selected=handlers.SOURCE_UPLOAD) as source_tabs:
            with gr.Tab("Upload", id=handlers.SOURCE_UPLOAD) as upload_tab:
                upload = gr.File(
                    label="Condition image",
                    height=140,
                    file_types=IMAGE_FILE_TYPES,
                    type="filepath",
                    elem_id=f"t2i-unit-{number}-upload",
                )
            with gr.Tab("Sketch", id=handlers.SOURCE_SKETCH) as sketch_tab:
                sketch = checked_canvas(
                    gr.Sketchpad(
                        type="pil",
                        image_mode="RGB",
                        canvas_size=(512, 512),
                        layers=False,
                        brush=gr.Brush(colors=["#000000", "#ffffff"], default_size=6, color_mode="fixed"),
                        label="Draw",
                        elem_id=f"t2i-unit-{number}-sketch",
                    ),
                    limits,
                    f"sketch of unit {number}",
                )
        with gr.Row():
            cond_type = gr.Dropdown(
                conditions,
                value="none" if "none" in conditions else None,
                label="Preprocessor",
                elem_id=f"t2i-unit-{number}-cond-type",
                scale=3,
            )
            preview_button = gr.Button("Preview condition", elem_id=f"t2i-unit-{number}-preview", scale=1)
        cond_options = gr.Textbox(
            label="Preprocessor options (KEY=VALUE, comma-separated; Enter previews)",
            placeholder="e.g. low_threshold=50, high_threshold=150 or model=Intel/dpt-large",
            elem_id=f"t2i-unit-{number}-cond-options",
        )
        upload_tab.select(lambda: handlers.SOURCE_UPLOAD, None, source, queue=False)
        # A drawing is dark lines on white paper; adapters read white lines on black, so a sketch
        # starts with the `scribble` preprocessor unless the user already chose one.
        sketch_tab.select(
            functools.partial(_sketch_selected, scribble="scribble" in conditions),
            cond_type,
            [source, cond_type],
            queue=False,
        )
        with gr.Row(elem_classes="t2i-unit-images"):
            picture = gr.Image(
                label="Picture",
                interactive=False,
                height=192,
                buttons=["fullscreen"],
                elem_id=f"t2i-unit-{number}-picture",
            )
            condition = gr.Image(
                label="Condition (what the adapter sees)",
                interactive=False,
                height=192,
                buttons=["download", "fullscreen"],
                elem_id=f"t2i-unit-{number}-condition",
            )
        with gr.Row():
            weight = gr.Slider(
                *UNIT_RANGES["weight"],
                value=1.0,
                step=0.05,
                label="Weight",
                elem_id=f"t2i-unit-{number}-weight",
            )
            start = gr.Slider(
                *UNIT_RANGES["start"], value=0.0, step=0.05, label="Start", elem_id=f"t2i-unit-{number}-start"
            )
            end = gr.Slider(
                *UNIT_RANGES["end"], value=1.0, step=0.05, label="End", elem_id=f"t2i-unit-{number}-end"
            )
    return UnitComponents(
        enabled,
        adapter,
        source,
        source_tabs,
        upload,
        sketch,
        cond_type,
        cond_options,
        preview_button,
        picture,
        condition,
        weight,
        start,
        end,
    )


def _init_picture(defaults: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Mode (txt2img / img2img / inpaint) and, for the last two, the init picture (an upload,
    checked like a condition upload), its strength, and the mask: painted over it in an editor, or
    a mask file (checked the same way) that wins over the strokes."""
    mode = gr.Radio(list(handlers.MODES), value=handlers.MODE_TXT2IMG, label="Mode", elem_id="t2i-mode")
    with gr.Group(visible=False, elem_id="t2i-init") as group:
        with gr.Row():
            init_upload = gr.File(
                label="Init picture",
                height=140,
                file_types=IMAGE_FILE_TYPES,
                type="filepath",
                elem_id="t2i-init-upload",
            )
            strength = gr.Slider(
                *FIELD_RANGES["strength"],
                value=defaults["strength"],
                step=0.01,
                label="Strength (1: ignore the picture's content)",
                elem_id="t2i-strength",
            )
        # The picture comes only from the upload above (checked); the editor paints the mask.
        init_editor = checked_canvas(
            gr.ImageEditor(
                type="pil",
                image_mode="RGBA",  # the strokes' alpha is the mask
                sources=[],
                layers=False,
                transforms=[],
                brush=gr.Brush(
                    colors=["#ffffff", "#000000"], default_size=MASK_BRUSH_SIZE, color_mode="fixed"
                ),
                label="Inpaint mask: paint over what to repaint (either colour; brush size under the brush)",
                elem_id="t2i-init-editor",
            ),
            limits,
            "mask editor",
        )
        with gr.Row(visible=False) as mask_row:
            mask_upload = gr.File(
                label="Or a mask file (white: repaint; it wins over painted strokes)",
                height=100,
                file_types=IMAGE_FILE_TYPES,
                type="filepath",
                elem_id="t2i-mask-upload",
            )
        with gr.Row(visible=False) as inpaint_options:
            mask_blur = gr.Slider(
                *FIELD_RANGES["mask_blur"],
                value=defaults["mask_blur"],
                step=1,
                label="Mask blur",
                elem_id="t2i-mask-blur",
            )
            full_res = gr.Checkbox(
                value=defaults["inpaint_full_res"],
                label="Inpaint at full resolution",
                elem_id="t2i-inpaint-full-res",
            )
            padding = gr.Slider(
                *FIELD_RANGES["inpaint_full_res_padding"],
                value=defaults["inpaint_full_res_padding"],
                step=4,
                label="Full-resolution padding",
                elem_id="t2i-inpaint-padding",
            )
    mode.change(
        lambda chosen: (
            gr.update(visible=chosen != handlers.MODE_TXT2IMG),
            gr.update(visible=chosen == handlers.MODE_INPAINT),
            gr.update(visible=chosen == handlers.MODE_INPAINT),
        ),
        mode,
        [group, mask_row, inpaint_options],
        queue=False,
    )
    return {
        "mode": mode,
        "init_upload": init_upload,
        "init_editor": init_editor,
        "mask_upload": mask_upload,
        "strength": strength,
        "mask_blur": mask_blur,
        "inpaint_full_res": full_res,
        "inpaint_full_res_padding": padding,
    }


def _loras() -> dict[str, Any]:
    """The LoRA table: one row per LoRA (file, folder or hub id) with its scale."""
    with gr.Accordion("LoRAs", open=False, elem_id="t2i-loras-section"):
        loras = gr.Dataframe(
            value=[["", 1.0]],
            headers=["LoRA (file, folder or hub id)", "Scale"],
            datatype=["str", "number"],
            column_count=2,
            type="array",
            interactive=True,
            elem_id="t2i-loras",
        )
    return {"loras": loras}


def _hires() -> dict[str, Any]:
    """Hires fix: a second img2img pass at `scale` times the size (1: off)."""
    with gr.Accordion("Hires fix", open=False, elem_id="t2i-hires"), gr.Row():
        scale = gr.Slider(
            *FIELD_RANGES["hires_scale"],
            value=1.0,
            step=0.25,
            label="Upscale by (1: off)",
            elem_id="t2i-hires-scale",
        )
        strength = gr.Slider(
            *FIELD_RANGES["hires_strength"],
            value=0.5,
            step=0.01,
            label="Hires strength",
            elem_id="t2i-hires-strength",
        )
        steps = gr.Slider(
            *FIELD_RANGES["hires_steps"],
            value=0,
            step=1,
            label="Hires steps (0: as many as the first pass)",
            elem_id="t2i-hires-steps",
        )
        upscaler = gr.Dropdown(
            list(HIRES_UPSCALERS),
            value=HIRES_UPSCALERS[0],
            label="Upscaler",
            elem_id="t2i-hires-upscaler",
        )
    return {
        "hires_scale": scale,
        "hires_strength": strength,
        "hires_steps": steps,
        "hires_upscaler": upscaler,
    }


def _sketch_selected(cond_type: str | None, *, scribble: bool) -> tuple[str, str | None]:
    if scribble and cond_type in (None, "", "none"):
        return handlers.SOURCE_SKETCH, "scribble"
    return handlers.SOURCE_SKETCH, cond_type


def _default_adapters(model: str) -> list[str]:
    """The packaged demo adapters when serving the demo model."""
    if not is_demo_name(model):
        return []
    return [f"demo:{condition}" for condition in DEMO_CONDITIONS]


def _page_defaults(model: str, size: int | None, steps: int | None) -> dict[str, Any]:
    """Starting values of the page's fields: `GenerationSettings`' defaults, the demo's for `demo`,
    then the server's `--size` and `--steps`."""
    defaults = {field.name: field.default for field in dataclasses.fields(handlers.PageInput)}
    defaults.update({field.name: field.default for field in dataclasses.fields(GenerationSettings)})
    defaults["width"] = DEFAULT_SIZE  # the settings' None (the condition's size) is no slider value
    if is_demo_name(model):
        # The demo model knows 64x64 shapes-world scenes; `t2i-adapter demo` samples them like this.
        defaults.update(width=SCENE_SIZE, steps=DEMO_STEPS, guidance_scale=DEMO_GUIDANCE)
    defaults["width"] = size or defaults["width"]
    defaults["height"] = defaults["width"]
    defaults["steps"] = steps or defaults["steps"]
    return defaults
