"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, tiny models.

One server (tiny SD model folder + tiny adapter, 64x64, 2 steps) and one browser page serve all
tests, in order: generate from an upload, refuse bad uploads and still generate, draw a sketch,
load parameters back from a PNG made here. A second server on the packaged demo model, in another
tab, runs inpainting, the hires fields, the LoRA table and the mask brush; tests there that do not
build on the one before start from a reloaded page (`fresh_page`). With T2I_UPDATE_SCREENSHOTS=1 a
last test runs the demo model in a page of its own and refreshes docs/webui.png (slow, so opt-in).
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from test_webui import bomb_png, demo_vae, drawing  # noqa: F401 (demo_vae: a fixture)

pytest.importorskip("gradio")
playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SIZE = 64
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "webui.png"
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


# ---------------------------------------------------------------------------------------------
# Fixtures: tiny models, one server, one page
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tiny_models import save_tiny_sd, tiny_adapter

    root = tmp_path_factory.mktemp("webui")
    save_tiny_sd(root / "model")
    tiny_adapter().save_pretrained(str(root / "adapter"))
    drawing(SIZE).save(root / "square.png")
    bomb_png(root / "bomb.png")
    Image.effect_noise((800, 800), 80).convert("RGB").save(root / "big.png")  # ~1.9 MB
    return root


class SamplingMonitor:
    """Preloads the tiny model into the cache, slows each UNet call and counts overlapping ones.

    Tiny-model steps take milliseconds, too fast for any progress message to reach the page
    (a real model's take seconds); the page code is unchanged, only the test's model is slower.
    UNet calls within one generation run one after another, so `max_active > 1` would mean two
    generations ran at once.
    """

    def __init__(self, cache, model: str, seconds_per_call: float = 0.15):
        import torch

        from t2i_adapter.devices import resolve_device

        self.seconds_per_call = seconds_per_call
        self.active = self.max_active = self.calls = 0
        self._lock = threading.Lock()
        base = cache.base_model(model, dtype=torch.float32, device=str(resolve_device(None)))
        base.unet.register_forward_pre_hook(self._before)
        base.unet.register_forward_hook(self._after)

    def _before(self, module, args):
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.seconds_per_call)

    def _after(self, module, args, output):
        with self._lock:
            self.active -= 1


@pytest.fixture(scope="module")
def server(world):
    from t2i_adapter.generation.api import ModelCache
    from t2i_adapter.interfaces.webui import build_app, launch_app

    cache = ModelCache()
    monitor = SamplingMonitor(cache, str(world / "model"))
    app = build_app(
        model=str(world / "model"),
        cache=cache,
        adapters=[str(world / "adapter")],
        output_dir=world / "outputs",
        max_upload_mb=1,
        default_size=SIZE,
        default_steps=2,
    )
    _, url, _ = launch_app(app, host="127.0.0.1", port=None, prevent_thread_lock=True, quiet=True)
    assert url.startswith("http://127.0.0.1:")
    yield url, cache, monitor
    app.close()


@pytest.fixture(scope="module")
def page(server):
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        # Nothing but the local server: no fonts, no analytics, no CDN.
        context.route(
            "**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url else route.abort()
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server[0])
        page.wait_for_selector("#t2i-generate")
        yield page
        browser.close()


def upload(page, elem_id: str, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(f"#{elem_id} .upload-container")
    chooser.value.set_files(str(path))


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_function(
        "([id, value]) => document.querySelector(`#${id} input`).value === value", arg=[elem_id, option]
    )


def set_number(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input[type=number]").first
    field.fill(str(value))
    field.press("Enter")


def gallery_pngs(page, previous: set[str] = frozenset()) -> dict[str, bytes]:
    """Wait for gallery images other than `previous`, and download each one as the browser serves it;
    an error shown instead fails at once with its text (rather than waiting out the timeout)."""
    page.wait_for_function(
        """(previous) => {
            const srcs = [...document.querySelectorAll('#t2i-gallery img')].map(img => img.src);
            const fresh = srcs.length > 0 && srcs.some(src => !previous.includes(src));
            return fresh || document.querySelector('.toast-body') !== null;
        }""",
        arg=list(previous),
    )
    if page.locator(".toast-body").count():
        pytest.fail(f"the page showed an error instead of images: {error_toasts(page)}")
    sources = page.eval_on_selector_all("#t2i-gallery img", "imgs => [...new Set(imgs.map(img => img.src))]")
    return {src: page.request.get(src).body() for src in sources}


def error_toasts(page) -> str:
    return "\n".join(page.locator(".toast-body").all_inner_texts())


def wait_for_error(page, text: str) -> None:
    page.wait_for_function(
        "(text) => [...document.querySelectorAll('.toast-body')].some(t => t.innerText.includes(text))",
        arg=text,
    )


def close_toasts(page) -> None:
    for button in page.locator(".toast-close").all():
        if button.is_visible():
            button.click()


# ---------------------------------------------------------------------------------------------
# Tests (in file order; they share the page)
# ---------------------------------------------------------------------------------------------


def test_upload_preview_generate_and_download_a_png_with_parameters(page, world, tmp_path):
    from t2i_adapter.io.png import read_png_parameters

    upload(page, "t2i-unit-1-upload", world / "square.png")
    page.wait_for_selector("#t2i-unit-1-condition img")  # preview before generating
    choose(page, "t2i-unit-1-cond-type", "invert")
    page.locator("#t2i-prompt textarea").fill("a black square outline")
    set_number(page, "t2i-seed", 1234)

    # Record every progress text the page shows while sampling.
    page.evaluate(
        """() => {
            window.progressTexts = [];
            new MutationObserver(() => {
                const text = document.body.innerText;
                const match = text.match(/sampling step \\d\\/\\d/g);
                if (match) window.progressTexts.push(...match);
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.click("#t2i-generate")
    pngs = gallery_pngs(page)

    assert len(pngs) == 1
    data = next(iter(pngs.values()))
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (SIZE, SIZE)
    image.load()
    parameters = read_png_parameters(image)
    assert parameters["prompt"] == "a black square outline"
    assert parameters["seed"] == 1234 and parameters["steps"] == 2
    assert (parameters["width"], parameters["height"]) == (SIZE, SIZE)
    [spec] = parameters["adapters"]
    assert spec["adapter"] == str(world / "adapter") and spec["cond_type"] == "invert"
    assert "sampling step 1/2" in page.evaluate("window.progressTexts")  # the bar moved while sampling
    assert "1 image 64x64, seed 1234" in page.inner_text("#t2i-status")
    # The same file is offered for download in the files list.
    assert page.locator("#t2i-downloads a[download]").count() == 1

    page.screenshot(path=str(tmp_path / "webui.png"), full_page=True)
    assert Image.open(tmp_path / "webui.png").size[0] == 1400
    (world / "made-here.png").write_bytes(data)


def test_bad_uploads_show_one_clear_line_and_the_next_generation_works(page, world):
    close_toasts(page)
    page.get_by_role("tab", name="Adapter 2").click()
    upload(page, "t2i-unit-2-upload", world / "bomb.png")
    wait_for_error(page, "bomb.png: image is too large")

    page.get_by_role("tab", name="Adapter 3").click()
    upload(page, "t2i-unit-3-upload", world / "big.png")
    wait_for_error(page, "exceed the maximum allowed size of 1.0 Mb")
    messages = error_toasts(page)
    assert "Traceback" not in messages
    close_toasts(page)
    page.wait_for_selector(".toast-body", state="detached")

    # The server is still fine: a new seed, a new image.
    previous = set(page.eval_on_selector_all("#t2i-gallery img", "imgs => imgs.map(img => img.src)"))
    old_seed = page.locator("#t2i-seed input").input_value()
    page.click("#t2i-random-seed")
    page.wait_for_function("(old) => document.querySelector('#t2i-seed input').value !== old", arg=old_seed)
    new_seed = int(page.locator("#t2i-seed input").input_value())
    page.click("#t2i-generate")
    pngs = gallery_pngs(page, previous)
    image = Image.open(io.BytesIO(next(iter(pngs.values()))))
    assert image.size == (SIZE, SIZE)
    assert f"seed {new_seed}" in page.inner_text("#t2i-status")


def test_a_picture_that_previews_puts_its_unit_to_use_and_a_refused_one_does_not(page, world):
    refused = page.locator("#t2i-unit-2-enabled input[type=checkbox]")
    assert not refused.is_checked()  # the bomb of the test before was refused
    page.get_by_role("tab", name="Adapter 4").click()
    box = page.locator("#t2i-unit-4-enabled input[type=checkbox]")
    assert not box.is_checked()
    upload(page, "t2i-unit-4-upload", world / "square.png")
    page.wait_for_selector("#t2i-unit-4-condition img")
    page.wait_for_function("() => document.querySelector('#t2i-unit-4-enabled input').checked")
    box.uncheck()  # unit 4 has no adapter: later tests generate with unit 1 alone
    assert not box.is_checked()
    page.get_by_role("tab", name="Adapter 1").click()


def test_preprocessor_options_typed_in_the_page_reach_the_preprocessor(page):
    close_toasts(page)
    field = page.locator("#t2i-unit-1-cond-options textarea, #t2i-unit-1-cond-options input").first
    field.fill("nope=1")
    field.press("Enter")  # Enter previews with the options
    wait_for_error(page, "invert option 'nope'")
    assert "Traceback" not in error_toasts(page)
    close_toasts(page)
    page.wait_for_selector(".toast-body", state="detached")
    field.fill("")
    field.press("Enter")
    page.wait_for_selector("#t2i-unit-1-condition img")


def test_a_sketch_drawn_on_the_canvas_becomes_the_condition(page):
    from t2i_adapter.io.png import read_png_parameters

    close_toasts(page)
    page.get_by_role("tab", name="Adapter 1").click()
    choose(page, "t2i-unit-1-cond-type", "none")
    page.locator("#t2i-unit-1").get_by_role("tab", name="Sketch").click()
    # Dark lines on white paper: the sketch tab switches `none` to the `scribble` preprocessor.
    page.wait_for_function("() => document.querySelector('#t2i-unit-1-cond-type input').value === 'scribble'")
    page.locator("#t2i-unit-1-sketch button[aria-label=Brush]").first.click()
    canvas = page.locator("#t2i-unit-1-sketch canvas").first
    box = canvas.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x + step * box["width"] * 0.04, y + step * box["height"] * 0.03)
    page.mouse.up()
    page.click("#t2i-unit-1-preview")
    # The picture shown is now the drawing (canvas-sized), not the 64x64 upload.
    page.wait_for_function(
        """() => {
            const img = document.querySelector('#t2i-unit-1-picture img');
            return img && img.naturalWidth > 64;
        }"""
    )
    previous = set(page.eval_on_selector_all("#t2i-gallery img", "imgs => imgs.map(img => img.src)"))
    page.click("#t2i-generate")
    pngs = gallery_pngs(page, previous)
    image = Image.open(io.BytesIO(next(iter(pngs.values()))))
    assert image.size == (SIZE, SIZE)
    image.load()
    [spec] = read_png_parameters(image)["adapters"]
    assert spec["cond_type"] == "scribble"
    # The recorded condition is the drawing the server received, not the earlier 64x64 upload.
    drawn = Image.open(spec["cond"]).convert("L")
    assert drawn.size[0] > SIZE and drawn.getextrema() == (0, 255)


def test_two_users_at_once_are_queued_one_generation_at_a_time(page, server, world):
    _, _, monitor = server
    other = page.context.new_page()
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(server[0])
    other.wait_for_selector("#t2i-generate")
    upload(other, "t2i-unit-1-upload", world / "square.png")
    other.wait_for_selector("#t2i-unit-1-condition img")

    previous = set(page.eval_on_selector_all("#t2i-gallery img", "imgs => imgs.map(img => img.src)"))
    calls_before = monitor.calls
    page.click("#t2i-generate")
    other.click("#t2i-generate")
    assert gallery_pngs(page, previous) and gallery_pngs(other)
    other.close()
    assert monitor.calls - calls_before == 4  # 2 steps each, both generations ran...
    assert monitor.max_active == 1  # ...and never at the same time


def test_models_were_loaded_once_for_all_generations(server):
    _, cache, _ = server
    assert cache.loads == 2  # the base model (preloaded) and the adapter, for all generations


def test_dropping_a_png_made_here_loads_its_parameters_back(page, world):
    page.locator("#t2i-prompt textarea").fill("something else")
    set_number(page, "t2i-seed", 5)
    upload(page, "t2i-load-png", world / "made-here.png")
    page.wait_for_function(
        "() => document.querySelector('#t2i-prompt textarea').value === 'a black square outline'"
    )
    assert page.locator("#t2i-seed input").input_value() == "1234"
    assert "loaded the parameters of made-here.png" in page.inner_text("#t2i-status")


def test_the_cli_repeats_a_png_made_in_the_page_exactly(world, tmp_path):
    from PIL import ImageChops

    from t2i_adapter.interfaces.cli.main import main

    made_here = world / "made-here.png"
    assert main(["generate", "--from-png", str(made_here), "--out", str(tmp_path / "again.png")]) == 0
    again = Image.open(tmp_path / "again.png").convert("RGB")
    assert ImageChops.difference(Image.open(made_here).convert("RGB"), again).getbbox() is None


@pytest.fixture(scope="module")
def demo_page(page, world):
    """A second server, on the packaged demo model, in a new tab of the same browser."""
    from t2i_adapter.demo_weights import demo_weights_available
    from t2i_adapter.generation.api import ModelCache
    from t2i_adapter.interfaces.webui import build_app, launch_app

    if not demo_weights_available():
        pytest.skip("the demo weights are not built")
    app = build_app(model="demo", cache=ModelCache(), output_dir=world / "demo-outputs")
    _, url, _ = launch_app(app, port=None, prevent_thread_lock=True, quiet=True)
    demo = page.context.new_page()
    demo.set_default_timeout(4 * TIMEOUT_MS)
    demo.goto(url)
    demo.wait_for_selector("#t2i-generate")
    yield demo, Path(app.t2i_output_dir)
    demo.close()
    app.close()


def paint_stroke(page, elem_id: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag the brush across the editor's canvas between two points given as fractions of it."""
    page.locator(f"#{elem_id} button[aria-label=Brush]").first.click()
    box = page.locator(f"#{elem_id} canvas").first.bounding_box()
    assert box is not None

    def at(point: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + box["width"] * point[0], box["y"] + box["height"] * point[1]

    page.mouse.move(*at(start))
    page.mouse.down()
    for step in range(1, 11):
        fraction = step / 10
        page.mouse.move(
            *at((start[0] + (end[0] - start[0]) * fraction, start[1] + (end[1] - start[1]) * fraction))
        )
    page.mouse.up()


def test_a_mask_painted_on_the_init_picture_is_inpainted_with_the_demo_model(demo_page, world):
    import numpy as np
    from PIL import ImageChops, ImageFilter

    from t2i_adapter.demo.world import make_scene
    from t2i_adapter.io.png import read_png_parameters

    page, outputs = demo_page
    scene = make_scene(5)
    scene.image().save(world / "init.png")
    scene.condition("sketch").save(world / "init-sketch.png")
    upload(page, "t2i-unit-1-upload", world / "init-sketch.png")  # demo:sketch holds the composition
    page.wait_for_selector("#t2i-unit-1-condition img")
    page.locator("#t2i-mode").get_by_label("inpaint").check()
    upload(page, "t2i-init-upload", world / "init.png")
    page.wait_for_selector("#t2i-init-editor canvas")
    page.wait_for_timeout(1000)  # the picture is drawn into the editor
    paint_stroke(page, "t2i-init-editor", (0.48, 0.4), (0.52, 0.55))
    set_number(page, "t2i-mask-blur", 1)
    page.locator("#t2i-prompt textarea").fill(scene.caption)
    set_number(page, "t2i-seed", 7)
    page.click("#t2i-generate")
    [data] = gallery_pngs(page).values()

    output = Image.open(io.BytesIO(data))
    output.load()
    parameters = read_png_parameters(output)
    assert parameters["mask_blur"] == 1 and parameters["strength"] == 0.75
    init_path, mask_path = Path(parameters["init_image"]), Path(parameters["mask"])
    assert init_path.resolve().is_relative_to(outputs.resolve()) and mask_path.parent == init_path.parent
    init = Image.open(init_path).convert("RGB")
    assert ImageChops.difference(init, scene.image()).getbbox() is None  # the upload, pixel for pixel
    mask = Image.open(mask_path).convert("L")
    assert output.size == init.size == mask.size == (scene.size, scene.size)
    painted = np.asarray(mask) > 127
    assert 0.02 < painted.mean() < 0.5  # the stroke, not the whole picture

    # Kept: beyond the stroke and its blurred seam, the output is the init picture exactly.
    reach = 3 * parameters["mask_blur"] + 2
    seam = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * reach + 1))) > 0
    out, src = np.asarray(output.convert("RGB")).astype(int), np.asarray(init).astype(int)
    assert (~seam).mean() > 0.3
    assert (out[~seam] == src[~seam]).all()
    # Repainted: inside the stroke most pixels changed.
    changed = np.abs(out - src).sum(axis=2) > 0
    assert changed[painted].mean() > 0.5
    (world / "inpainted-here.png").write_bytes(data)


def test_an_inpaint_png_dropped_back_brings_its_picture_and_mask_and_repeats_exactly(
    demo_page, world, tmp_path
):
    from PIL import ImageChops

    from t2i_adapter.interfaces.cli.main import main

    page, _ = demo_page
    made = world / "inpainted-here.png"
    set_number(page, "t2i-mask-blur", 8)
    page.locator("#t2i-mode").get_by_label("txt2img").check()
    page.locator("#t2i-prompt textarea").fill("something else")
    set_number(page, "t2i-seed", 5)
    previous = set(page.eval_on_selector_all("#t2i-gallery img", "imgs => imgs.map(img => img.src)"))
    upload(page, "t2i-load-png", made)
    page.wait_for_function("() => document.querySelector('#t2i-seed input').value === '7'")
    assert page.locator("#t2i-mode input[value=inpaint]").is_checked()
    assert page.locator("#t2i-mask-blur input[type=number]").input_value() == "1"
    assert "upload the init picture again" not in page.inner_text("#t2i-status")
    page.click("#t2i-generate")
    [again] = gallery_pngs(page, previous).values()
    # The restored picture and mask reached the server as they were: the same image, pixel for pixel.
    first = Image.open(made).convert("RGB")
    assert ImageChops.difference(first, Image.open(io.BytesIO(again)).convert("RGB")).getbbox() is None
    # And the command line repeats the page's inpainting from the PNG alone.
    assert main(["generate", "--from-png", str(made), "--out", str(tmp_path / "cli.png")]) == 0
    assert ImageChops.difference(first, Image.open(tmp_path / "cli.png").convert("RGB")).getbbox() is None


def test_an_uploaded_mask_file_wins_over_the_strokes_and_keeps_the_pixels_outside_it(demo_page, world):
    import numpy as np
    from PIL import ImageDraw, ImageFilter

    from t2i_adapter.io.png import read_png_parameters

    page, _ = demo_page  # still in inpaint mode, with the picture and the painted mask dropped back
    half = Image.new("L", (32, 32), 0)  # half the picture's size: resized to it, with a note
    ImageDraw.Draw(half).rectangle([4, 4, 13, 27], fill=255)
    half.save(world / "mask-file.png")
    upload(page, "t2i-mask-upload", world / "mask-file.png")
    set_number(page, "t2i-seed", 9)
    previous = set(page.eval_on_selector_all("#t2i-gallery img", "imgs => imgs.map(img => img.src)"))
    page.click("#t2i-generate")
    [data] = gallery_pngs(page, previous).values()
    assert "the mask mask-file.png is 32x32, the init picture 64x64" in page.inner_text("#t2i-status")

    output = Image.open(io.BytesIO(data))
    output.load()
    parameters = read_png_parameters(output)
    mask = Image.open(parameters["mask"]).convert("L")
    expected = half.resize((64, 64), Image.Resampling.BILINEAR).point(lambda v: 255 if v >= 128 else 0)
    assert np.array_equal(np.asarray(mask), np.asarray(expected))  # the file's mask, not the strokes
    reach = 3 * parameters["mask_blur"] + 2
    seam = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * reach + 1))) > 0
    init = np.asarray(Image.open(parameters["init_image"]).convert("RGB")).astype(int)
    out = np.asarray(output.convert("RGB")).astype(int)
    assert (~seam).mean() > 0.3 and (out[~seam] == init[~seam]).all()
    assert (np.abs(out - init).sum(axis=2) > 0)[np.asarray(mask) > 0].mean() > 0.5


def fresh_page(page) -> None:
    """Start a test from the page as a new visitor sees it: txt2img, no pictures, no mask, closed
    sections, default fields. The inpaint tests before leave unit 1 holding a file (its upload
    area is gone: a click on it waits out the timeout) and the page in inpaint mode with a mask
    (which refuses a hires pass), so a later test that sets only its own fields needs this."""
    page.reload()
    page.wait_for_selector("#t2i-generate")
    assert page.locator("#t2i-mode input[value=txt2img]").is_checked()


def open_section(page, elem_id: str) -> None:
    """Open an accordion if it is closed (a click on an open one would close it)."""
    label = page.locator(f"#{elem_id} button.label-wrap").first
    if "open" not in (label.get_attribute("class") or "").split():
        label.click()
    page.wait_for_function(
        "(id) => document.querySelector(`#${id} button.label-wrap`).classList.contains('open')", arg=elem_id
    )


def demo_scene(page, world, seed: int = 5):
    """The demo's scene `seed`: its sketch uploaded for unit 1 (demo:sketch) and its caption as the prompt."""
    from t2i_adapter.demo.world import make_scene

    scene = make_scene(seed)
    scene.condition("sketch").save(world / f"scene-{seed}-sketch.png")
    upload(page, "t2i-unit-1-upload", world / f"scene-{seed}-sketch.png")
    page.wait_for_selector("#t2i-unit-1-condition img")
    page.locator("#t2i-prompt textarea").fill(scene.caption)
    return scene


def generated_png(page, save_as: Path | None = None) -> Image.Image:
    """Click Generate and return the one new image (its parameters loaded), saved as `save_as` too."""
    previous = set(page.eval_on_selector_all("#t2i-gallery img", "imgs => imgs.map(img => img.src)"))
    page.click("#t2i-generate")
    [data] = gallery_pngs(page, previous).values()
    if save_as is not None:
        save_as.write_bytes(data)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def number_value(page, elem_id: str) -> float:
    return float(page.locator(f"#{elem_id} input[type=number]").first.input_value())


def test_the_hires_fields_upscale_in_the_page_and_a_png_dropped_back_restores_them(demo_page, world):
    from t2i_adapter.io.png import read_png_parameters

    page, _ = demo_page
    fresh_page(page)
    open_section(page, "t2i-hires")
    demo_scene(page, world)
    set_number(page, "t2i-steps", 4)
    set_number(page, "t2i-seed", 11)
    set_number(page, "t2i-hires-scale", 2)
    set_number(page, "t2i-hires-strength", 0.4)
    set_number(page, "t2i-hires-steps", 2)
    choose(page, "t2i-hires-upscaler", "bicubic")
    image = generated_png(page, save_as=world / "hires-here.png")

    assert image.size == (128, 128)  # the demo's 64x64, upscaled by 2
    assert "1 image 128x128, seed 11" in page.inner_text("#t2i-status")
    parameters = read_png_parameters(image)
    hires = [parameters[f"hires_{name}"] for name in ("scale", "strength", "steps", "upscaler")]
    assert hires == [2, 0.4, 2, "bicubic"]
    assert parameters["eta"] is None  # the empty eta box: the scheduler's own, as before it existed

    set_number(page, "t2i-hires-scale", 1)
    set_number(page, "t2i-hires-strength", 0.7)
    set_number(page, "t2i-hires-steps", 0)
    choose(page, "t2i-hires-upscaler", "latent")
    upload(page, "t2i-load-png", world / "hires-here.png")
    page.wait_for_function("() => document.querySelector('#t2i-hires-upscaler input').value === 'bicubic'")
    restored = [number_value(page, f"t2i-hires-{name}") for name in ("scale", "strength", "steps")]
    assert restored == [2, 0.4, 2]


def edit_cell(page, elem_id: str, row: int, column: int, text: str) -> None:
    """Type `text` into a table cell (double-click opens its editor; Enter commits it)."""
    page.locator(f"#{elem_id} [data-testid=cell-{row}-{column}]").dblclick()
    editor = page.locator(f"#{elem_id} textarea[aria-label='Edit cell']")
    editor.fill(text)
    editor.press("Enter")
    page.wait_for_function(  # the cell's text, not its menu button's
        "([id, cell, text]) => document.querySelector(`#${id} [data-testid=${cell}] span`).innerText.trim() === text",
        arg=[elem_id, f"cell-{row}-{column}", text],
    )


@pytest.fixture(scope="module")
def demo_lora(world) -> Path:
    """A kohya LoRA for the demo model's UNet (random deltas: it visibly changes the picture)."""
    import torch
    from safetensors.torch import save_file

    from t2i_adapter.generation.api import ModelCache
    from test_loras import kohya_lora

    base = ModelCache().base_model("demo", dtype=torch.float32, device="cpu")
    path = world / "demo-style.safetensors"
    save_file(kohya_lora(base, 7, text=False), str(path))
    return path


def test_a_lora_in_the_table_changes_the_image_and_is_recorded_and_a_bad_path_is_one_line(
    demo_page, world, demo_lora
):
    import numpy as np

    from t2i_adapter.io.png import read_png_parameters

    page, _ = demo_page
    fresh_page(page)
    open_section(page, "t2i-loras-section")
    demo_scene(page, world)
    set_number(page, "t2i-steps", 4)
    set_number(page, "t2i-seed", 21)
    plain = generated_png(page)
    edit_cell(page, "t2i-loras", 0, 0, str(demo_lora))
    edit_cell(page, "t2i-loras", 0, 1, "0.8")
    styled = generated_png(page)

    assert read_png_parameters(plain)["loras"] == []
    assert read_png_parameters(styled)["loras"] == [{"path": str(demo_lora), "scale": 0.8}]
    difference = np.abs(np.asarray(plain.convert("RGB"), int) - np.asarray(styled.convert("RGB"), int))
    assert difference.mean() > 2  # out of 255: the same seed, another picture

    missing = world / "no-such-lora.safetensors"
    edit_cell(page, "t2i-loras", 0, 0, str(missing))
    page.click("#t2i-generate")
    wait_for_error(page, "no-such-lora.safetensors: no such file")
    message = error_toasts(page)  # the toast's title, its close button, then the message
    assert "Traceback" not in message
    assert message.strip().splitlines()[-1] == f"{missing}: no such file or folder (LoRA)"
    close_toasts(page)
    page.wait_for_selector(".toast-body", state="detached")


def mask_coverage(image: Image.Image) -> float:
    """The fraction of the picture a generated inpaint PNG's recorded mask repaints."""
    import numpy as np

    from t2i_adapter.io.png import read_png_parameters

    return float((np.asarray(Image.open(read_png_parameters(image)["mask"]).convert("L")) > 127).mean())


def test_the_mask_brush_starts_at_12_pixels_and_its_size_slider_narrows_the_stroke(demo_page, world):
    from t2i_adapter.demo.world import make_scene

    page, _ = demo_page
    make_scene(5).image().save(world / "brush-init.png")

    def painted_with(size: str | None) -> float:
        fresh_page(page)  # no strokes, and an init upload area to click
        demo_scene(page, world)
        set_number(page, "t2i-steps", 2)
        page.locator("#t2i-mode").get_by_label("inpaint").check()
        upload(page, "t2i-init-upload", world / "brush-init.png")
        page.wait_for_selector("#t2i-init-editor canvas")
        page.wait_for_timeout(1000)  # the picture is drawn into the editor
        page.locator("#t2i-init-editor button[aria-label=Brush]").first.click()
        page.locator("#t2i-init-editor button[aria-label='Brush Size']").click()
        slider = page.locator("#t2i-init-editor input[type=range]")
        if size is None:
            assert slider.input_value() == "12"  # MASK_BRUSH_SIZE, as before
        else:
            slider.fill(size)
        page.locator("#t2i-init-editor button[aria-label='Brush Size']").click()  # close the popover
        paint_stroke(page, "t2i-init-editor", (0.48, 0.4), (0.52, 0.55))
        return mask_coverage(generated_png(page))

    default = painted_with(None)
    narrow = painted_with("3")
    assert 0 < narrow < default / 2


def test_a_vae_typed_in_the_model_section_changes_the_image_and_a_missing_one_is_one_line(
    demo_page,
    world,
    demo_vae,  # noqa: F811 (the fixture)
):
    import numpy as np

    from t2i_adapter.io.png import read_png_parameters

    page, _ = demo_page
    fresh_page(page)
    demo_scene(page, world)
    set_number(page, "t2i-steps", 4)
    set_number(page, "t2i-seed", 31)
    plain = generated_png(page)
    page.locator("#t2i-vae textarea").fill(str(demo_vae))
    other = generated_png(page, save_as=world / "vae-here.png")

    assert read_png_parameters(plain)["vae"] is None
    assert read_png_parameters(other)["vae"] == str(demo_vae)
    difference = np.abs(np.asarray(plain.convert("RGB"), int) - np.asarray(other.convert("RGB"), int))
    assert difference.mean() > 1  # the same seed, decoded by another VAE

    missing = world / "no-such-vae"
    page.locator("#t2i-vae textarea").fill(str(missing))
    page.click("#t2i-generate")
    wait_for_error(page, "no-such-vae: no such file")
    message = error_toasts(page)
    assert "Traceback" not in message
    assert message.strip().splitlines()[-1] == f"{missing}: no such file or folder (VAE)"
    close_toasts(page)
    page.wait_for_selector(".toast-body", state="detached")
    upload(page, "t2i-load-png", world / "vae-here.png")
    page.wait_for_function(
        "(vae) => document.querySelector('#t2i-vae textarea').value === vae", arg=str(demo_vae)
    )


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("T2I_UPDATE_SCREENSHOTS") != "1",
    reason="refreshes docs/webui.png with the demo model; set T2I_UPDATE_SCREENSHOTS=1",
)
def test_the_demo_model_in_the_page_for_the_docs_screenshot(tmp_path):
    from t2i_adapter.demo.demo_run import DEMO_ROWS
    from t2i_adapter.demo.world import make_scene
    from t2i_adapter.demo_weights import demo_weights_available
    from t2i_adapter.generation.api import ModelCache
    from t2i_adapter.interfaces.webui import build_app, launch_app

    if not demo_weights_available():
        pytest.skip("the demo weights are not built")
    scene_seed = next(seed for seed, conditions in DEMO_ROWS if conditions == ("sketch",))
    scene = make_scene(scene_seed)
    scene.condition("sketch").save(tmp_path / "scene-sketch.png")
    app = build_app(model="demo", cache=ModelCache(), output_dir=tmp_path / "outputs")
    _, url, _ = launch_app(app, port=None, prevent_thread_lock=True, quiet=True)
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(4 * TIMEOUT_MS)
            page.goto(url)
            page.wait_for_selector("#t2i-generate")
            assert page.locator("#t2i-unit-1-adapter input").input_value() == "demo:sketch"
            upload(page, "t2i-unit-1-upload", tmp_path / "scene-sketch.png")
            page.wait_for_selector("#t2i-unit-1-condition img")
            page.locator("#t2i-prompt textarea").fill(scene.caption)
            page.click("#t2i-generate")
            [data] = gallery_pngs(page).values()
            image = Image.open(io.BytesIO(data))
            assert image.format == "PNG" and image.size == (scene.size, scene.size)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            browser.close()
    finally:
        app.close()
