"""The web UI's handlers as plain functions: condition pictures, previews, limits, PNG parameters.

The page itself (wiring, queue, upload limit, progress) is driven in a real browser in
`test_webui_browser.py`; here each handler is called directly with the values Gradio would pass.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

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


def test_serve_binds_localhost_by_default_and_passes_its_options(monkeypatch, tmp_path):
    from t2i_adapter.interfaces import webui
    from t2i_adapter.interfaces.cli.main import build_parser, main

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_upload_mb, args.model) == ("127.0.0.1", 7860, 20.0, "demo")

    calls = {}
    monkeypatch.setattr(webui, "build_app", lambda **kwargs: calls.setdefault("build", kwargs) and "APP")
    monkeypatch.setattr(webui, "launch_app", lambda app, **kwargs: calls.setdefault("launch", (app, kwargs)))
    status = main(["serve", "--model", "m", "--adapter", "a1", "--adapter", "a2", "--max-upload-mb", "5",
                   "--port", "7999", "--output-dir", str(tmp_path)])  # fmt: skip
    assert status == 0
    build = calls["build"]
    assert (build["model"], build["adapters"], build["max_upload_mb"]) == ("m", ["a1", "a2"], 5.0)
    assert build["output_dir"] == str(tmp_path)
    assert calls["launch"][1] == {"host": "127.0.0.1", "port": 7999}
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
