"""The web UI's handlers as plain functions: condition pictures, previews, limits, PNG parameters.

The page itself (wiring, queue, upload limit, progress) is driven in a real browser in
`test_webui_browser.py`; here each handler is called directly with the values Gradio would pass.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

pytest.importorskip("gradio")

from t2i_adapter.errors import InputFileError, T2IAdapterError  # noqa: E402
from t2i_adapter.interfaces.webui import handlers  # noqa: E402
from t2i_adapter.interfaces.webui.handlers import Limits, PageInput, UnitInput  # noqa: E402


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A PNG of a few hundred bytes whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    data = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows; the rest would be decoded lazily
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def drawing(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).rectangle(
        [size // 4, size // 4, 3 * size // 4, 3 * size // 4], outline="black", width=3
    )
    return image


# ---------------------------------------------------------------------------------------------
# Condition pictures: upload or sketch
# ---------------------------------------------------------------------------------------------


def test_sketch_image_reads_the_composite_and_treats_a_blank_canvas_as_no_sketch():
    blank = {"background": None, "layers": [], "composite": Image.new("RGB", (32, 32), "white")}
    assert handlers.sketch_image(blank) is None
    assert handlers.sketch_image(None) is None
    assert handlers.sketch_image({"composite": None}) is None

    drawn = handlers.sketch_image(
        {"background": None, "layers": [], "composite": drawing(48).convert("RGBA")}
    )
    assert drawn is not None and drawn.mode == "RGB" and drawn.size == (48, 48)
    assert drawn.getpixel((12, 24)) == (0, 0, 0)  # the stroke survives


def test_source_image_loads_the_upload_or_says_what_is_missing(tmp_path):
    path = tmp_path / "cond.png"
    drawing(40).save(path)
    image = handlers.source_image("upload", str(path), None, Limits())
    assert image.size == (40, 40) and image.mode == "RGB"

    with pytest.raises(T2IAdapterError, match="unit 2: no condition image"):
        handlers.source_image("upload", None, None, Limits(), unit=2)
    with pytest.raises(T2IAdapterError, match="unit 3: the sketch is empty"):
        handlers.source_image("sketch", str(path), {"composite": Image.new("RGB", (8, 8))}, Limits(), unit=3)


def test_a_decompression_bomb_is_refused_with_one_line_naming_the_file(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 10_000
    with pytest.raises(InputFileError) as caught:
        handlers.source_image("upload", str(bomb), None, Limits())
    message = str(caught.value)
    assert message.startswith("bomb.png: ")  # the name the user knows, not Gradio's temp path
    assert "too large" in message and "\n" not in message


def test_uploads_over_the_byte_limit_and_corrupt_files_are_refused(tmp_path):
    big = tmp_path / "big.png"
    Image.effect_noise((256, 256), 64).save(big)
    with pytest.raises(InputFileError, match=r"big\.png: file is too large"):
        handlers.source_image("upload", str(big), None, Limits(max_bytes=1000))

    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"this is not an image at all")
    with pytest.raises(InputFileError, match=r"broken\.jpg: not an image"):
        handlers.source_image("upload", str(corrupt), None, Limits())


def test_preview_shows_the_picture_and_the_preprocessed_condition(tmp_path):
    path = tmp_path / "cond.png"
    drawing(64).save(path)

    picture, condition = handlers.preview_condition("upload", str(path), None, "invert", Limits())
    assert picture.size == condition.size == (64, 64)
    # `invert` turns the black outline on white into white on black (what sketch adapters read).
    assert picture.convert("L").getpixel((0, 0)) == 255
    assert condition.convert("L").getpixel((0, 0)) == 0

    sketch = {"composite": drawing(32)}
    picture, condition = handlers.preview_condition("sketch", None, sketch, "none", Limits())
    assert picture.size == (32, 32) and condition is not None

    assert handlers.preview_condition("upload", None, None, "none", Limits()) == (None, None)
    with pytest.raises(T2IAdapterError, match="unknown condition type 'nope'"):
        handlers.preview_condition("upload", str(path), None, "nope", Limits())


def test_preprocessor_options_reach_the_preview_and_bad_ones_are_named(tmp_path):
    path = tmp_path / "cond.png"
    drawing(64).save(path)
    _, plain = handlers.preview_condition("upload", str(path), None, "color", Limits())
    _, coarse = handlers.preview_condition("upload", str(path), None, "color", Limits(), "block_size=32")
    assert plain.size == coarse.size and plain.tobytes() != coarse.tobytes()
    assert handlers.parse_cond_options(" low_threshold=50,\nhigh_threshold = 150 ,") == {
        "low_threshold": "50",
        "high_threshold": "150",
    }
    with pytest.raises(T2IAdapterError, match="preprocessor option 'fifty' is not of the form KEY=VALUE"):
        handlers.parse_cond_options("fifty")
    with pytest.raises(T2IAdapterError, match="color option 'nope'"):
        handlers.preview_condition("upload", str(path), None, "color", Limits(), "nope=1")


# ---------------------------------------------------------------------------------------------
# Generation settings from the page's fields
# ---------------------------------------------------------------------------------------------


def test_check_units_names_the_unit_at_fault():
    handlers.check_units([UnitInput(enabled=True, adapter="demo:sketch"), UnitInput(enabled=False)])
    with pytest.raises(T2IAdapterError, match="unit 2: choose an adapter"):
        handlers.check_units([UnitInput(enabled=True, adapter="a"), UnitInput(enabled=True, adapter="  ")])
    # The step window's rule is AdapterSpec's; the page names the unit and says it in one line.
    with pytest.raises(T2IAdapterError, match=r"^unit 1: [^\n]*0\.8[^\n]*0\.5[^\n]*$"):
        handlers.check_units([UnitInput(enabled=True, adapter="a", start=0.8, end=0.5)])
    with pytest.raises(T2IAdapterError, match=r"^unit 2: adapter 'b': step range 0.5:0.5 .*never acts$"):
        handlers.check_units([UnitInput(enabled=True, adapter="a"), UnitInput(True, "b", start=0.5, end=0.5)])


def test_build_settings_keeps_only_enabled_units_in_order():
    units = [
        UnitInput(enabled=True, adapter=" demo:sketch ", cond_type="invert", weight=0.7, start=0.1, end=0.9),
        UnitInput(enabled=False, adapter="ignored"),
        UnitInput(
            enabled=True, adapter="demo:color", cond_type="color", cond_options="block_size=8", weight=1.2
        ),
    ]
    page = PageInput(
        prompt="a cat", negative_prompt="", steps=2, guidance_scale=5.0, seed=7,
        width=64, height=96, num_images=2, scheduler="euler", units=units,
    )  # fmt: skip
    settings = handlers.build_settings(page, model="demo", condition_paths=["/tmp/a.png", "/tmp/b.png"])
    assert [spec.adapter for spec in settings.adapters] == ["demo:sketch", "demo:color"]
    first = settings.adapters[0]
    assert (first.cond, first.cond_type, first.weight, first.start, first.end) == (
        "/tmp/a.png", "invert", 0.7, 0.1, 0.9,
    )  # fmt: skip
    assert (settings.width, settings.height, settings.num_images, settings.seed) == (64, 96, 2, 7)
    assert settings.scheduler == "euler" and settings.compile is False
    compiled = handlers.build_settings(page, model="demo", condition_paths=["a", "b"], compile=True)
    assert compiled.compile is True  # `serve --compile`
    assert settings.adapters[0].cond_options == {} and settings.adapters[1].cond_options == {
        "block_size": "8"
    }


def test_an_empty_seed_box_means_a_fresh_seed():
    common = dict(
        prompt="", negative_prompt="", steps=2, guidance_scale=1.0, width=64, height=64,
        num_images=1, scheduler=None, units=[],
    )  # fmt: skip

    def build(seed):
        return handlers.build_settings(PageInput(seed=seed, **common), model="m", condition_paths=[])

    seeds = {build(None).seed for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= seed <= handlers.MAX_SEED for seed in seeds)
    assert build(7).seed == 7


def test_random_seed_is_in_range_and_varies():
    seeds = {handlers.random_seed() for _ in range(20)}
    assert all(0 <= seed <= handlers.MAX_SEED for seed in seeds)
    assert len(seeds) > 1


def test_progress_reports_become_fractions():
    # generate(progress=...) reports {"step": steps completed (1..total), "total": total}, only so.
    calls = []
    report = handlers._progress_callback(lambda fraction, text: calls.append((fraction, text)))
    report({"step": 4, "total": 8})
    report({"step": 8, "total": 8})
    assert calls == [(pytest.approx(0.5), "sampling step 4/8"), (1.0, "sampling step 8/8")]


# ---------------------------------------------------------------------------------------------
# Parameters back from a PNG
# ---------------------------------------------------------------------------------------------


def _saved_png(path: Path, settings) -> Path:
    from t2i_adapter.io.png import save_png

    return save_png(Image.new("RGB", (16, 16)), path, settings.to_dict())


def test_parameters_from_png_fill_the_page_and_restore_conditions_made_here(tmp_path):
    from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings

    outputs = tmp_path / "outputs"
    outputs.mkdir()
    kept = outputs / "condition-1.png"
    drawing(16).save(kept)
    elsewhere = tmp_path / "secret.png"
    drawing(16).save(elsewhere)
    settings = GenerationSettings(
        model="demo", prompt="a red square", negative_prompt="blurry", steps=3, guidance_scale=4.5,
        seed=1234, width=64, height=128, num_images=2, scheduler="euler_a",
        adapters=[
            AdapterSpec("demo:sketch", cond=str(kept), cond_type="invert", weight=0.5, start=0.2, end=0.8),
            AdapterSpec("demo:color", cond=str(elsewhere), cond_type="color", cond_options={"block_size": 8}),
        ],
    )  # fmt: skip
    png = _saved_png(tmp_path / "made-here.png", settings)

    loaded = handlers.parameters_from_png(str(png), outputs)
    assert loaded.settings.to_dict() == settings.to_dict()
    first, second, third, _ = loaded.units
    assert (first.enabled, first.adapter, first.cond_type, first.weight, first.start, first.end) == (
        True, "demo:sketch", "invert", 0.5, 0.2, 0.8,
    )  # fmt: skip
    assert (second.enabled, second.adapter, second.cond_type) == (True, "demo:color", "color")
    assert (first.cond_options, second.cond_options) == ("", "block_size=8")
    assert not third.enabled
    # The page's own output is restored; a path outside it is never read on a PNG's say-so.
    assert loaded.condition_paths[0] == str(kept.resolve())
    assert loaded.condition_paths[1] is None
    assert "upload the condition image of 1 unit(s) again" in loaded.message
    assert "made with model" not in loaded.message
    other = handlers.parameters_from_png(str(png), outputs, server_model="sd15")
    assert other.message.endswith("it was made with model 'demo', this page uses 'sd15'")


def test_parameters_from_a_png_made_elsewhere_are_refused_clearly(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(InputFileError, match=r"plain\.png: has no t2i-adapter parameters"):
        handlers.parameters_from_png(str(plain), tmp_path)

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputFileError, match=r"^junk\.png: "):
        handlers.parameters_from_png(str(junk), tmp_path)


# ---------------------------------------------------------------------------------------------
# One Generate click, with generate() replaced by a recorder (the real one runs in the browser test)
# ---------------------------------------------------------------------------------------------


class FalsyProgress:
    """Like gr.Progress, which is falsy (it has a length): progress must still be reported."""

    def __init__(self):
        self.calls = []

    def __len__(self):
        return 0

    def __call__(self, fraction, desc=None):
        self.calls.append((fraction, desc))


def test_run_generation_calls_generate_and_saves_pngs_with_parameters(tmp_path, monkeypatch):
    from t2i_adapter.generation import api
    from t2i_adapter.io.png import read_png_parameters

    seen = {}

    def fake_generate(settings, *, condition_images=None, cache=None, progress=None):
        seen.update(settings=settings, condition_images=condition_images, cache=cache)
        for step in (1, 2):
            progress({"step": step, "total": 2})
        images = [
            Image.new("RGB", (settings.width, settings.height), (index * 60, 0, 0)) for index in range(2)
        ]
        return api.GenerationResult(images=images, conditions=[], settings=settings)

    monkeypatch.setattr(api, "generate", fake_generate)
    upload = tmp_path / "upload.png"
    drawing(32).save(upload)
    cache = object()
    progress = FalsyProgress()
    page = PageInput(
        prompt="p", negative_prompt="n", steps=2, guidance_scale=3.0, seed=99, width=48, height=32,
        num_images=2, scheduler="ddim",
        units=[
            UnitInput(enabled=False, adapter="unused"),
            UnitInput(enabled=True, adapter="adapter-b", upload_path=str(upload), cond_type="invert", weight=0.5),
            UnitInput(enabled=True, adapter="adapter-c", source="sketch", sketch={"composite": drawing(24)}),
        ],
    )  # fmt: skip
    output = handlers.run_generation(
        page, model="some-model", cache=cache, output_dir=tmp_path / "out", limits=Limits(), progress=progress
    )

    assert seen["cache"] is cache  # the server's cache, not a new one
    assert [image.size for image in seen["condition_images"]] == [(32, 32), (24, 24)]
    assert [spec.adapter for spec in seen["settings"].adapters] == ["adapter-b", "adapter-c"]
    assert progress.calls == [(0.5, "sampling step 1/2"), (1.0, "sampling step 2/2")]
    assert len(output.paths) == 2 and output.status.startswith(
        "2 images 48x32, seed 99, 2 steps, 2 adapter(s)"
    )
    for index, path in enumerate(output.paths):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (48, 48 - 16)
            assert image.getpixel((0, 0)) == (index * 60, 0, 0)
        parameters = read_png_parameters(path)
        assert parameters["seed"] == 99 and parameters["prompt"] == "p"
    # Each unit's picture is kept beside the outputs and named in the parameters.
    first_cond = Path(read_png_parameters(output.paths[0])["adapters"][0]["cond"])
    assert first_cond.parent == output.paths[0].parent and Image.open(first_cond).size == (32, 32)


def test_run_generation_refuses_bad_units_before_loading_anything(tmp_path, monkeypatch):
    from t2i_adapter.generation import api

    monkeypatch.setattr(api, "generate", lambda *a, **k: pytest.fail("generate must not be called"))
    fields = dict(
        prompt="", negative_prompt="", steps=2, guidance_scale=1.0, seed=0, width=64, height=64, num_images=1,
        scheduler="ddim",
    )  # fmt: skip
    common = dict(model="m", cache=None, output_dir=tmp_path, limits=Limits())
    with pytest.raises(T2IAdapterError, match="unit 1: no condition image"):
        handlers.run_generation(PageInput(units=[UnitInput(enabled=True, adapter="a")], **fields), **common)
    with pytest.raises(T2IAdapterError, match="unit 1: choose an adapter"):
        handlers.run_generation(PageInput(units=[UnitInput(enabled=True, adapter="")], **fields), **common)
    assert list(tmp_path.iterdir()) == []  # nothing written for a refused click


# ---------------------------------------------------------------------------------------------
# The page's wiring and the serve command
# ---------------------------------------------------------------------------------------------


def test_build_app_queues_generation_one_at_a_time_and_keeps_state_per_app(tmp_path):
    import gradio as gr

    from t2i_adapter.interfaces.webui import build_app

    first = build_app(
        model="m1", cache=object(), adapters=["a"], output_dir=tmp_path / "one", max_upload_mb=3
    )
    second = build_app(model="m2", cache=object(), adapters=["b"], output_dir=tmp_path / "two")
    assert isinstance(first, gr.Blocks)
    functions = {fn.name: fn for fn in first.fns.values()}
    assert functions["generate"].concurrency_limit == 1 and functions["generate"].concurrency_id == "generate"
    assert functions["generate"].queue
    assert first.t2i_upload_limit_bytes == 3 * 1024 * 1024
    assert second.t2i_upload_limit_bytes == 20 * 1024 * 1024
    assert (first.t2i_output_dir, second.t2i_output_dir) == (tmp_path / "one", tmp_path / "two")


def test_user_errors_become_one_line_page_errors():
    import gradio as gr

    from t2i_adapter.interfaces.webui.app import user_errors

    @user_errors
    def bad_file():
        raise InputFileError("x.png", "not an image")

    @user_errors
    def bug():
        raise ValueError("missing thing\nsecond line")

    with pytest.raises(gr.Error) as caught:
        bad_file()
    assert caught.value.message == "x.png: not an image"
    with pytest.raises(gr.Error) as caught:
        bug()
    assert caught.value.message == "internal error (ValueError): missing thing"


def test_serve_binds_localhost_by_default_and_passes_its_options(monkeypatch, tmp_path, capsys):
    from t2i_adapter.interfaces import webui
    from t2i_adapter.interfaces.cli.main import build_parser, main

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_upload_mb, args.model) == ("127.0.0.1", 7860, 20.0, "demo")

    class App:
        def block_thread(self):
            calls["blocked"] = True

    def launch(app, **kwargs):
        calls["launch"] = (app, kwargs)
        return None, f"http://{kwargs['host']}:{kwargs['port']}/", None

    calls = {}
    monkeypatch.setattr(webui, "build_app", lambda **kwargs: calls.setdefault("build", kwargs) and App())
    monkeypatch.setattr(webui, "launch_app", launch)
    status = main(["serve", "--model", "m", "--adapter", "a1", "--adapter", "a2", "--max-upload-mb", "5",
                   "--port", "7999", "--output-dir", str(tmp_path)])  # fmt: skip
    assert status == 0 and calls["blocked"]
    assert capsys.readouterr().out.splitlines() == ["web UI: http://127.0.0.1:7999/ (Ctrl+C stops it)"]
    build = calls["build"]
    assert (build["model"], build["adapters"], build["max_upload_mb"]) == ("m", ["a1", "a2"], 5.0)
    assert build["output_dir"] == str(tmp_path)
    launch_options = calls["launch"][1]
    assert (launch_options["host"], launch_options["port"], launch_options["quiet"]) == (
        "127.0.0.1",
        7999,
        True,
    )
    assert build["compile"] is False
    calls.clear()
    assert main(["serve", "--compile"]) == 0 and calls["build"]["compile"] is True

    assert main(["serve", "--max-upload-mb", "0"]) == 2


def test_the_demo_model_starts_with_its_adapters_and_its_scene_size(tmp_path):
    from t2i_adapter.demo.demo_run import DEMO_STEPS
    from t2i_adapter.demo.world import SCENE_SIZE
    from t2i_adapter.interfaces.webui import build_app

    def component(app, elem_id):
        return next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == elem_id)

    demo = build_app(model="demo", cache=object(), output_dir=tmp_path / "demo")
    adapter = component(demo, "t2i-unit-1-adapter")
    assert [value for _, value in adapter.choices] == ["demo:sketch", "demo:depth", "demo:color"]
    assert adapter.value == "demo:sketch"
    assert component(demo, "t2i-unit-2-adapter").value is None  # only unit 1 starts ready
    assert component(demo, "t2i-width").value == SCENE_SIZE == component(demo, "t2i-height").value
    assert component(demo, "t2i-steps").value == DEMO_STEPS

    other = build_app(model="some/hub-model", cache=object(), output_dir=tmp_path / "other")
    assert component(other, "t2i-unit-1-adapter").choices == []
    assert component(other, "t2i-width").value == 512


# ---------------------------------------------------------------------------------------------
# Canvas pictures: the same limits as uploads, checked before Gradio decodes them (issue 15)
# ---------------------------------------------------------------------------------------------


def _component(app, elem_id):
    return next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == elem_id)


@pytest.mark.parametrize("elem_id", ["t2i-unit-1-sketch", "t2i-init-editor"])
def test_a_canvas_bomb_is_refused_before_gradio_decodes_it(tmp_path, monkeypatch, elem_id):
    import gradio as gr
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData
    from PIL import Image as PILImage

    from t2i_adapter.interfaces.webui import build_app

    canvas = _component(build_app(model="m", cache=object(), output_dir=tmp_path / "out"), elem_id)
    # 12000x12000 in a few hundred bytes: under Pillow's own error limit, so only our check stops it.
    bomb = bomb_png(tmp_path / "canvas.png", 12000, 12000)
    decoded = []
    monkeypatch.setattr(PILImage.Image, "load", lambda self: decoded.append(self.size))
    with pytest.raises(gr.Error) as caught:
        canvas.preprocess(EditorData(background=None, layers=[], composite=FileData(path=str(bomb))))
    assert "image is too large: 12000x12000" in caught.value.message and "\n" not in caught.value.message
    assert caught.value.message.startswith(("sketch of unit 1: ", "mask editor: "))
    assert decoded == []  # refused from the header: no pixel was decoded

    monkeypatch.undo()
    fine = tmp_path / "fine.png"
    drawing(32).save(fine)
    value = canvas.preprocess(EditorData(background=None, layers=[], composite=FileData(path=str(fine))))
    assert value["composite"].size == (32, 32)


def test_check_canvas_file_applies_the_byte_cap_and_reads_bytes_too(tmp_path):
    big = tmp_path / "big.png"
    Image.effect_noise((128, 128), 64).save(big)
    with pytest.raises(InputFileError, match=r"^mask editor: file is too large"):
        handlers.check_canvas_file(str(big), Limits(max_bytes=1000), "mask editor")
    with pytest.raises(InputFileError, match=r"^sketch of unit 2: .*too large: 12000x12000"):
        handlers.check_canvas_file(
            bomb_png(tmp_path / "b.png", 12000, 12000).read_bytes(), Limits(), "sketch of unit 2"
        )
    handlers.check_canvas_file(big.read_bytes(), Limits(), "sketch")  # a real picture passes


# ---------------------------------------------------------------------------------------------
# img2img and inpaint: the init picture, the painted mask, LoRAs and hires fields
# ---------------------------------------------------------------------------------------------


def _layer(size, box):
    """An editor layer: transparent, with an opaque white stroke over `box`."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle(box, fill=(255, 255, 255, 255))
    return layer


def test_editor_mask_is_white_where_any_layer_was_painted():
    assert handlers.editor_mask(None) is None
    assert handlers.editor_mask({"background": drawing(32), "layers": [], "composite": None}) is None
    blank = Image.new("RGBA", (32, 32), (255, 255, 255, 0))  # white but transparent: nothing painted
    assert handlers.editor_mask({"layers": [blank]}) is None

    half = _layer((32, 32), [0, 0, 15, 31])
    faint = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    faint.putpixel((30, 30), (0, 0, 0, 10))  # a faint black dab still marks the pixel
    mask = handlers.editor_mask({"layers": [half, faint]})
    assert mask.mode == "L" and mask.size == (32, 32)
    assert mask.getpixel((3, 3)) == 255 and mask.getpixel((30, 30)) == 255 and mask.getpixel((20, 3)) == 0
    assert sum(mask.histogram()[1:255]) == 0  # only black and white
    assert (
        handlers.editor_mask({"layers": [half]}, (64, 64)).getpixel((40, 10)) == 0
    )  # resized to the picture

    shown = handlers.editor_value(drawing(32), mask)  # a mask shown back in the editor reads the same
    assert ImageChops.difference(handlers.editor_mask(shown), mask).getbbox() is None


def _page(**changes):
    values = dict(
        prompt="p", negative_prompt="", steps=2, guidance_scale=3.0, seed=5, width=64, height=64,
        num_images=1, scheduler="ddim", units=[],
    )  # fmt: skip
    values.update(changes)
    return PageInput(**values)


def test_mode_pictures_follow_the_mode_and_check_the_init_upload(tmp_path):
    init = tmp_path / "photo.png"
    drawing(48).save(init)
    painted = {"layers": [_layer((48, 48), [10, 10, 20, 20])]}
    assert handlers.mode_pictures(_page(init_upload=str(init), init_editor=painted), Limits()) == (None, None)

    picture, mask = handlers.mode_pictures(_page(mode="img2img", init_upload=str(init)), Limits())
    assert picture.size == (48, 48) and mask is None
    picture, mask = handlers.mode_pictures(
        _page(mode="inpaint", init_upload=str(init), init_editor=painted), Limits()
    )
    assert mask.size == picture.size and mask.getpixel((15, 15)) == 255 and mask.getpixel((30, 30)) == 0

    with pytest.raises(T2IAdapterError, match="^img2img: upload an init picture first$"):
        handlers.mode_pictures(_page(mode="img2img"), Limits())
    with pytest.raises(T2IAdapterError, match="^inpaint: paint over the part"):
        handlers.mode_pictures(
            _page(mode="inpaint", init_upload=str(init), init_editor={"layers": []}), Limits()
        )
    with pytest.raises(InputFileError, match=r"^bomb\.png: image is too large"):
        handlers.mode_pictures(
            _page(mode="img2img", init_upload=str(bomb_png(tmp_path / "bomb.png"))), Limits()
        )
    with pytest.raises(InputFileError, match=r"^photo\.png: file is too large"):
        handlers.mode_pictures(_page(mode="img2img", init_upload=str(init)), Limits(max_bytes=10))
    with pytest.raises(T2IAdapterError, match="unknown mode 'outpaint'"):
        handlers.mode_pictures(_page(mode="outpaint"), Limits())


def test_parse_loras_reads_the_table_rows():
    import pandas as pd

    rows = [
        ["style.safetensors", 0.8],
        ["", 1.0],
        ["  owner/repo  ", None],
        [None, None],
        ["x.safetensors", ""],
    ]
    specs = handlers.parse_loras(rows)
    assert [(spec.path, spec.scale) for spec in specs] == [
        ("style.safetensors", 0.8), ("owner/repo", 1.0), ("x.safetensors", 1.0),
    ]  # fmt: skip
    frame = pd.DataFrame([["a.safetensors", 0.0]], columns=["LoRA", "Scale"])
    assert [(spec.path, spec.scale) for spec in handlers.parse_loras(frame)] == [("a.safetensors", 0.0)]
    assert handlers.parse_loras(None) == []
    with pytest.raises(
        T2IAdapterError, match=r"^LoRA row 2 \(b\.safetensors\): scale 'heavy' is not a number$"
    ):
        handlers.parse_loras([["a", 1], ["b.safetensors", "heavy"]])


# ---------------------------------------------------------------------------------------------
# Values restored from a PNG: checked by GenerationSettings, then against the page's own ranges
# ---------------------------------------------------------------------------------------------


def _png_with(tmp_path: Path, **changes) -> Path:
    from t2i_adapter.generation.settings import GenerationSettings
    from t2i_adapter.io.png import save_png

    parameters = GenerationSettings(model="demo", prompt="p", seed=3, steps=2, width=64, height=64).to_dict()
    parameters.update(changes)
    return save_png(Image.new("RGB", (8, 8)), tmp_path / "restored.png", parameters)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"seed": 2**80}, "seed must be a whole number"),
        ({"steps": "abc"}, "steps must be a whole number"),
        ({"guidance_scale": "x"}, "guidance_scale must be a number"),
        ({"width": 100000}, "width must be a whole number"),
        ({"adapters": [{"adapter": "a", "weight": "heavy"}]}, "weight must be a number"),
    ],
)
def test_a_png_with_values_of_the_wrong_type_or_range_is_one_line(tmp_path, changes, problem):
    with pytest.raises(InputFileError) as caught:
        handlers.parameters_from_png(str(_png_with(tmp_path, **changes)), tmp_path)
    message = str(caught.value)
    assert message.startswith("restored.png: parameters cannot be used: ") and problem in message
    assert "\n" not in message and len(message) < 200


def test_values_the_page_cannot_show_are_left_as_they_were_and_named(tmp_path):
    png = _png_with(
        tmp_path, seed=2**40, steps=500, guidance_scale=30.0, num_images=12,
        adapters=[{"adapter": "demo:sketch", "weight": 5.0, "start": 0.1, "end": 0.9}],
    )  # fmt: skip
    loaded = handlers.parameters_from_png(str(png), tmp_path)
    # Valid settings (the CLI repeats them), but outside the page's fields: not put in the page.
    for name in ("seed", "steps", "guidance_scale", "num_images"):
        assert name not in loaded.fields
    assert loaded.fields["width"] == 64 and loaded.fields["prompt"] == "p"
    unit = loaded.units[0]
    assert (unit.weight, unit.start, unit.end) == (1.0, 0.1, 0.9)  # the weight slider's default kept
    assert f"seed {2**40} (the page takes 0 to {handlers.MAX_SEED})" in loaded.message
    assert "steps 500 (the page takes 1 to 150)" in loaded.message
    assert "unit 1 weight 5.0 (the page takes 0.0 to 2.0)" in loaded.message
    assert "t2i-adapter generate --from-png" in loaded.message and "\n" not in loaded.message

    # Every value the page takes goes back into its field as a plain JSON-able number.
    fine = handlers.parameters_from_png(str(_png_with(tmp_path, seed=handlers.MAX_SEED)), tmp_path)
    assert fine.fields["seed"] == handlers.MAX_SEED and "left as they were" not in fine.message
    assert fine.fields["mode"] == "txt2img" and fine.fields["loras"] == [["", 1.0]]


def test_build_settings_records_the_mode_loras_and_hires_fields():
    page = _page(
        mode="inpaint", strength=0.6, mask_blur=2, inpaint_full_res=True, inpaint_full_res_padding=16,
        loras=[["style.safetensors", 0.5], ["", 1.0]],
    )  # fmt: skip
    settings = handlers.build_settings(
        page, model="m", condition_paths=[], init_path="/out/init.png", mask_path="/out/mask.png"
    )
    assert (settings.init_image, settings.strength, settings.mask) == ("/out/init.png", 0.6, "/out/mask.png")
    assert (settings.mask_blur, settings.inpaint_full_res, settings.inpaint_full_res_padding) == (2, True, 16)
    assert [(spec.path, spec.scale) for spec in settings.loras] == [("style.safetensors", 0.5)]
    assert settings.hires_scale is None  # the slider's 1: no hires pass

    hires = handlers.build_settings(
        _page(hires_scale=2.0, hires_strength=0.4, hires_steps=0, hires_upscaler="latent"),
        model="m",
        condition_paths=[],
    )
    assert (hires.hires_scale, hires.hires_strength, hires.hires_steps) == (2.0, 0.4, None)
    assert hires.init_image is None and hires.mask is None and hires.inpaint_full_res is False
    assert (
        handlers.build_settings(
            _page(hires_scale=2.0, hires_steps=3), model="m", condition_paths=[]
        ).hires_steps
        == 3
    )
    with pytest.raises(T2IAdapterError, match="^inpaint: the hires fix does not go with a mask"):
        handlers.build_settings(
            _page(mode="inpaint", hires_scale=2.0),
            model="m",
            condition_paths=[],
            init_path="i",
            mask_path="m",
        )


def test_an_uploaded_mask_file_wins_over_strokes_is_checked_and_fitted_to_the_picture(tmp_path):
    init = tmp_path / "photo.png"
    drawing(48).save(init)
    painted = {"layers": [_layer((48, 48), [30, 30, 40, 40])]}
    small = tmp_path / "mask.png"
    file_mask = Image.new("L", (24, 24), 0)
    ImageDraw.Draw(file_mask).rectangle([0, 0, 11, 23], fill=200)  # light grey counts as white
    file_mask.save(small)
    notes: list[str] = []
    page = _page(mode="inpaint", init_upload=str(init), init_editor=painted, mask_upload=str(small))
    picture, mask = handlers.mode_pictures(page, Limits(), notes)
    assert mask.size == picture.size == (48, 48) and sum(mask.histogram()[1:255]) == 0
    assert mask.getpixel((5, 40)) == 255 and mask.getpixel((35, 35)) == 0  # the file, not the strokes
    assert notes == ["note: the mask mask.png is 24x24, the init picture 48x48: the mask is resized to it"]
    # Without strokes the file alone is enough; the same size needs no note.
    file_mask.resize((48, 48)).save(small)
    handlers.mode_pictures(replace(page, init_editor=None), Limits(), notes := [])
    assert notes == []

    Image.new("L", (48, 48), 100).save(small)
    with pytest.raises(InputFileError, match=r"^mask\.png: has no white pixel: nothing to repaint"):
        handlers.mode_pictures(page, Limits())
    small.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(InputFileError, match=r"^mask\.png: ") as caught:
        handlers.mode_pictures(page, Limits())
    assert "\n" not in str(caught.value)
    with pytest.raises(InputFileError, match=r"^bomb\.png: image is too large"):
        handlers.mode_pictures(replace(page, mask_upload=str(bomb_png(tmp_path / "bomb.png"))), Limits())
    Image.effect_noise((48, 48), 80).save(small)  # noise: more bytes than the drawing
    with pytest.raises(InputFileError, match=r"^mask\.png: file is too large"):
        handlers.mode_pictures(page, Limits(max_bytes=os.path.getsize(init) + 1))


def test_run_generation_inpaints_with_the_painted_mask_and_keeps_both_pictures(tmp_path, monkeypatch):
    from t2i_adapter.generation import api
    from t2i_adapter.io.png import read_png_parameters

    seen = {}

    def fake_generate(
        settings, *, condition_images=None, init_image=None, mask_image=None, cache=None, progress=None
    ):
        seen.update(settings=settings, init_image=init_image, mask_image=mask_image)
        return api.GenerationResult(images=[init_image.copy()], conditions=[], settings=settings)

    monkeypatch.setattr(api, "generate", fake_generate)
    init = tmp_path / "photo.png"
    drawing(48).save(init)
    page = _page(
        mode="inpaint", init_upload=str(init), width=48, height=48,
        init_editor={"background": None, "layers": [_layer((96, 96), [0, 0, 47, 95])], "composite": None},
    )  # fmt: skip
    output = handlers.run_generation(
        page, model="m", cache=None, output_dir=tmp_path / "out", limits=Limits()
    )

    mask = seen["mask_image"]
    assert seen["init_image"].size == mask.size == (48, 48)  # the canvas's layer fitted to the picture
    assert mask.getpixel((10, 10)) == 255 and mask.getpixel((40, 10)) == 0
    parameters = read_png_parameters(output.paths[0])
    kept_init, kept_mask = Path(parameters["init_image"]), Path(parameters["mask"])
    assert kept_init.parent == kept_mask.parent == output.paths[0].parent
    assert ImageChops.difference(Image.open(kept_mask).convert("L"), mask).getbbox() is None
    assert ImageChops.difference(Image.open(kept_init).convert("RGB"), drawing(48)).getbbox() is None

    # A PNG made here brings back the mode, the init picture and the mask painted in the editor.
    loaded = handlers.parameters_from_png(str(output.paths[0]), tmp_path / "out")
    assert loaded.fields["mode"] == "inpaint" and loaded.fields["init_upload"] == str(kept_init.resolve())
    restored = handlers.editor_mask(loaded.fields["init_editor"])
    assert ImageChops.difference(restored, mask).getbbox() is None
    assert "upload the init picture again" not in loaded.message
    # Elsewhere, the same PNG names the pictures but never makes the server read them.
    elsewhere = handlers.parameters_from_png(str(output.paths[0]), tmp_path / "other")
    assert (
        "init_upload" not in elsewhere.fields
        and "upload the init picture again and paint the mask" in elsewhere.message
    )


def test_the_page_restores_a_png_without_a_value_its_fields_cannot_hold(tmp_path):
    import gradio as gr

    from t2i_adapter.interfaces.webui import build_app

    app = build_app(model="demo", cache=object(), output_dir=tmp_path / "out")
    [load] = [fn for fn in app.fns.values() if fn.name == "load_parameters"]
    seed = _component(app, "t2i-seed")
    position = [block._id for block in load.outputs].index(seed._id)

    values = load.fn(str(_png_with(tmp_path, seed=2**40)))
    assert len(values) == len(load.outputs)
    assert values[position] == gr.update()  # left as it was: the box holds 0..2**32-1
    assert "seed 1099511627776" in values[-1]
    assert load.fn(str(_png_with(tmp_path, seed=77)))[position] == 77
    with pytest.raises(gr.Error, match=r"restored\.png: parameters cannot be used: seed must be"):
        load.fn(str(_png_with(tmp_path, seed=2**80)))


def test_img2img_sends_the_picture_without_a_mask_and_txt2img_sends_neither(tmp_path, monkeypatch):
    from t2i_adapter.generation import api

    calls = []

    def fake_generate(settings, *, condition_images=None, cache=None, progress=None, **pictures):
        calls.append((settings, pictures))
        return api.GenerationResult(images=[Image.new("RGB", (8, 8))], conditions=[], settings=settings)

    monkeypatch.setattr(api, "generate", fake_generate)
    init = tmp_path / "photo.png"
    drawing(40).save(init)
    painted = {"layers": [_layer((40, 40), [0, 0, 9, 9])]}
    common = dict(model="m", cache=None, output_dir=tmp_path / "out", limits=Limits())
    handlers.run_generation(
        _page(mode="img2img", init_upload=str(init), init_editor=painted, strength=0.3), **common
    )
    handlers.run_generation(_page(mode="txt2img", init_upload=str(init), init_editor=painted), **common)

    (img2img, pictures), (txt2img, none) = calls
    assert pictures["init_image"].size == (40, 40) and pictures["mask_image"] is None
    assert img2img.strength == 0.3 and img2img.init_image.endswith("init.png") and img2img.mask is None
    assert none == {} and txt2img.init_image is None and txt2img.mask is None


def test_the_hires_fields_upscale_a_demo_generation_and_its_png_restores_them(tmp_path):
    from t2i_adapter.demo_weights import demo_weights_available
    from t2i_adapter.generation.api import ModelCache

    if not demo_weights_available():
        pytest.skip("the demo weights are not built")
    page = _page(prompt="", steps=3, hires_scale=2, hires_strength=0.4, hires_steps=2, scheduler=None)
    output = handlers.run_generation(
        page, model="demo", cache=ModelCache(), output_dir=tmp_path / "out", limits=Limits()
    )
    assert Image.open(output.paths[0]).size == (128, 128)  # 64x64, upscaled by 2
    fields = handlers.parameters_from_png(str(output.paths[0]), tmp_path / "out").fields
    assert (fields["hires_scale"], fields["hires_strength"], fields["hires_steps"]) == (2, 0.4, 2)


# ---------------------------------------------------------------------------------------------
# Eta: the scheduler's step noise, empty for the scheduler's own
# ---------------------------------------------------------------------------------------------


def test_the_eta_box_reaches_the_settings_and_an_empty_one_leaves_the_schedulers_own():
    def eta(value):
        return handlers.build_settings(_page(eta=value), model="m", condition_paths=[]).eta

    assert eta("") is None and eta("  ") is None and eta(None) is None  # as before the box: same images
    assert eta("0") == 0.0 and eta(" 0.3 ") == 0.3
    with pytest.raises(T2IAdapterError, match=r"^eta must be a number from 0\.0 to 1\.0, not 2\.0$"):
        eta("2")
    with pytest.raises(T2IAdapterError, match=r"^eta 'much' is not a number \(empty: the scheduler's own\)$"):
        eta("much")


def test_the_eta_of_a_png_is_restored_and_a_png_without_one_empties_the_box(tmp_path):
    from t2i_adapter.interfaces.webui import build_app

    app = build_app(model="demo", cache=object(), output_dir=tmp_path / "out")
    [load] = [fn for fn in app.fns.values() if fn.name == "load_parameters"]
    position = [block._id for block in load.outputs].index(_component(app, "t2i-eta")._id)
    assert _component(app, "t2i-eta").value == ""  # the page starts with the scheduler's own

    assert (
        handlers.parameters_from_png(str(_png_with(tmp_path, eta=0.123456789)), tmp_path).fields["eta"]
        == "0.123456789"
    )
    assert load.fn(str(_png_with(tmp_path, eta=0.0)))[position] == "0.0"  # 0 is an eta, not empty
    assert load.fn(str(_png_with(tmp_path)))[position] == ""  # emptied, not "left as it was"


def test_eta_changes_a_demo_ddim_image_and_a_scheduler_without_eta_refuses_it_in_one_line(tmp_path):
    import numpy as np

    from t2i_adapter.demo_weights import demo_weights_available
    from t2i_adapter.generation.api import ModelCache
    from t2i_adapter.io.png import read_png_parameters

    if not demo_weights_available():
        pytest.skip("the demo weights are not built")
    cache = ModelCache()

    def run(**changes):
        page = _page(prompt="", steps=3, **changes)
        output = handlers.run_generation(
            page, model="demo", cache=cache, output_dir=tmp_path, limits=Limits()
        )
        return output.paths[0]

    plain, noisy = run(eta=""), run(eta="1")
    assert read_png_parameters(plain)["eta"] is None and read_png_parameters(noisy)["eta"] == 1.0
    difference = np.abs(np.asarray(Image.open(plain), int) - np.asarray(Image.open(noisy), int))
    assert difference.mean() > 1
    with pytest.raises(T2IAdapterError, match="^eta applies to .*not EulerDiscreteScheduler$"):
        run(scheduler="euler", eta="0.5")


def test_the_mask_brush_starts_at_12_pixels_of_the_picture(tmp_path):
    from t2i_adapter.interfaces.webui import build_app
    from t2i_adapter.interfaces.webui.app import MASK_BRUSH_SIZE

    editor = _component(build_app(model="demo", cache=object(), output_dir=tmp_path), "t2i-init-editor")
    # As before the size control was documented: the editor's own slider starts here.
    assert MASK_BRUSH_SIZE == 12 and editor.brush.default_size == MASK_BRUSH_SIZE
    assert editor.get_config()["brush"]["default_size"] == 12  # what the browser is sent


# ---------------------------------------------------------------------------------------------
# The VAE box: another VAE for the server's model (serve --vae fills it in)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_vae(tmp_path_factory) -> Path:
    """Another VAE for the demo model, as a folder: its own with other weights."""
    from t2i_adapter.demo_weights import demo_weights_available
    from t2i_adapter.generation.base_model import load_base_model
    from tiny_models import perturbed_vae

    if not demo_weights_available():
        pytest.skip("the demo weights are not built")
    folder = tmp_path_factory.mktemp("vae") / "demo-vae"
    perturbed_vae(load_base_model("demo").vae).save_pretrained(folder)
    return folder


def test_the_vae_box_changes_the_image_is_recorded_and_a_png_dropped_back_restores_it(tmp_path, demo_vae):
    import numpy as np

    from t2i_adapter.generation.api import ModelCache
    from t2i_adapter.interfaces.webui import build_app
    from t2i_adapter.io.png import read_png_parameters

    cache = ModelCache()

    def run(vae: str) -> Path:
        page = _page(prompt="", steps=3, vae=vae)
        return handlers.run_generation(
            page, model="demo", cache=cache, output_dir=tmp_path / "out", limits=Limits()
        ).paths[0]

    own, other = run("  "), run(str(demo_vae))
    assert read_png_parameters(own)["vae"] is None  # an empty box: the model's own
    assert read_png_parameters(other)["vae"] == str(demo_vae)
    difference = np.abs(np.asarray(Image.open(own), int) - np.asarray(Image.open(other), int))
    assert difference.mean() > 1  # the same seed and latents, decoded by another VAE

    app = build_app(model="demo", cache=object(), output_dir=tmp_path / "out", vae="server-vae")
    assert _component(app, "t2i-vae").value == "server-vae"  # serve --vae
    assert _component(build_app(model="demo", cache=object(), output_dir=tmp_path), "t2i-vae").value == ""
    [load] = [fn for fn in app.fns.values() if fn.name == "load_parameters"]
    position = [block._id for block in load.outputs].index(_component(app, "t2i-vae")._id)
    assert load.fn(str(other))[position] == str(demo_vae)
    assert load.fn(str(own))[position] == ""  # emptied: that PNG was made with the model's own


def test_a_bad_vae_is_one_line_in_the_page(tmp_path):
    import gradio as gr

    from t2i_adapter.generation.api import ModelCache
    from t2i_adapter.interfaces.webui.app import user_errors

    notes = tmp_path / "notes.safetensors"
    notes.write_text("my favourite prompts\n")
    run = user_errors(handlers.run_generation)
    common = {"model": "demo", "cache": ModelCache(), "output_dir": tmp_path / "out", "limits": Limits()}
    for vae, message in (
        (tmp_path / "no-such-vae", f"{tmp_path / 'no-such-vae'}: no such file or folder (VAE)"),
        (notes, f"{notes}: not a complete safetensors file"),
    ):
        with pytest.raises(gr.Error) as caught:
            run(_page(prompt="", vae=str(vae)), **common)
        assert caught.value.message.startswith(message), caught.value.message
        assert "\n" not in caught.value.message and "Traceback" not in caught.value.message
    assert not (tmp_path / "out").exists()  # a refused generation leaves no run folder behind


def test_serve_vae_starts_the_page_with_it_and_a_missing_one_is_one_line(monkeypatch, tmp_path, capsys):
    from t2i_adapter.interfaces import webui
    from t2i_adapter.interfaces.cli.main import main

    class App:
        def block_thread(self):
            pass

    built = []
    monkeypatch.setattr(webui, "build_app", lambda **kwargs: built.append(kwargs["vae"]) or App())
    monkeypatch.setattr(webui, "launch_app", lambda app, **kwargs: (None, "http://127.0.0.1:7860/", None))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-vae").mkdir()
    for args in (["--vae", "my-vae"], ["--vae", "stabilityai/sd-vae-ft-mse"], [], ["--vae", " "]):
        assert main(["serve", *args]) == 0
    # a local VAE is recorded absolute (the page's PNGs rerun anywhere); a hub id loads on first use
    assert built == [str(tmp_path / "my-vae"), "stabilityai/sd-vae-ft-mse", None, None]
    capsys.readouterr()
    assert main(["serve", "--vae", "./missing-vae"]) == 2
    assert capsys.readouterr().err.strip() == "error: ./missing-vae: no such file or folder (VAE)"
    assert len(built) == 4  # no page for a VAE that is not there
