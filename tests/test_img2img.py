"""img2img, inpainting (4- and 9-channel UNets), inpainting at full resolution and the hires fix,
as phases of T2IAdapterPipeline over the one denoising loop (tiny models and the demo model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from t2i_adapter.checkpoints.load import load_adapter
from t2i_adapter.demo.world import make_scene
from t2i_adapter.errors import ModelMismatchError, T2IAdapterError
from t2i_adapter.generation.base_model import load_base_model
from t2i_adapter.generation.img2img import HiresFix, ImageToImage
from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.generation.units import AdapterUnit
from tiny_models import tiny_adapter, tiny_sd_base_model, tiny_sdxl_base_model

SIZE = 64
STEPS = 4


@pytest.fixture(scope="module")
def pipe():
    return T2IAdapterPipeline(tiny_sd_base_model())


@pytest.fixture(scope="module")
def inpaint_pipe():
    return T2IAdapterPipeline(tiny_sd_base_model(in_channels=9))


@pytest.fixture(scope="module")
def unit():
    condition = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(condition).rectangle((20, 4, 40, 60), fill="white")
    return AdapterUnit(tiny_adapter(seed=1), condition, name="tiny")


@pytest.fixture(scope="module")
def picture():
    picture = Image.new("RGB", (SIZE, SIZE), (200, 60, 40))
    ImageDraw.Draw(picture).ellipse((10, 10, 50, 50), fill=(20, 200, 90))
    return picture


@pytest.fixture(scope="module")
def mask():
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=255)
    return mask


def run(pipe, units, prompt: str = "a red cat", **kwargs) -> np.ndarray:
    """The first image as 8-bit RGB (what a PNG stores)."""
    options = {"steps": STEPS, "seed": 3, "output_type": "np"}
    options.update(kwargs)
    images = pipe(prompt, units, **options).images
    return (images[0] * 255).round().astype(np.uint8)


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a"])
def test_strength_one_without_mask_equals_text_to_image(pipe, unit, picture, scheduler):
    txt2img = run(pipe, [unit], width=SIZE, height=SIZE, scheduler=scheduler)
    img2img = run(pipe, [unit], img2img=ImageToImage(picture, strength=1.0), scheduler=scheduler)
    assert np.array_equal(txt2img, img2img)
    # below 1 the picture matters
    assert not np.array_equal(txt2img, run(pipe, [unit], img2img=ImageToImage(picture, strength=0.5)))


@pytest.mark.slow
def test_small_strength_stays_close_to_the_picture_and_the_adapter_still_steers():
    """On the demo model (its VAE is trained, so the picture survives encoding; its round trip is
    0.027 off): measured on a 2-core CPU with 10 steps, strength 0.1 stays 0.074 (mean |difference|,
    pixels in [0, 1]) from the picture against 0.29 for text-to-image, and the sketch adapter moves
    the result by 0.069."""
    pipe = T2IAdapterPipeline(load_base_model("demo"))
    scene = make_scene(5)
    picture = scene.image()
    unit = AdapterUnit(load_adapter("demo:sketch"), make_scene(11).condition("sketch"))
    options = {"steps": 10, "seed": 3, "prompt": scene.caption}
    init = np.asarray(picture).astype(np.float64) / 255

    def distance(array):
        return np.abs(array.astype(np.float64) / 255 - init).mean()

    txt2img = distance(run(pipe, [unit], width=SIZE, height=SIZE, **options))
    close = run(pipe, [unit], img2img=ImageToImage(picture, strength=0.1), **options)
    farther = run(pipe, [unit], img2img=ImageToImage(picture, strength=0.5), **options)
    assert distance(close) < 0.1 and distance(close) < 0.4 * txt2img
    assert distance(close) < distance(farther)
    without_adapter = run(pipe, [], img2img=ImageToImage(picture, strength=0.1), **options)
    assert np.abs(close.astype(float) - without_adapter).mean() / 255 > 0.01


def test_adapter_window_counts_on_the_whole_schedule(pipe, unit, picture):
    """Strength 0.5 of 4 steps runs steps 2 and 3: an adapter on 0:0.5 never acts, one on 0.5:1
    acts on both, as it would on those steps of text-to-image."""
    seen = []

    def active(info):
        seen.append((info["step"], info["total"], info["adapters_active"]))

    early = AdapterUnit(unit.adapter, unit.condition, start=0.0, end=0.5)
    late = AdapterUnit(unit.adapter, unit.condition, start=0.5, end=1.0)
    options = {"img2img": ImageToImage(picture, strength=0.5)}
    early_image = run(pipe, [early], callback=active, **options)
    assert seen == [(1, 2, False), (2, 2, False)]
    assert np.array_equal(early_image, run(pipe, [], **options))
    seen.clear()
    run(pipe, [late], callback=active, **options)
    assert seen == [(1, 2, True), (2, 2, True)]


def _kept_and_changed(output: np.ndarray, picture: Image.Image, kept: np.ndarray, repainted: np.ndarray):
    same = (output == np.asarray(picture)).all(axis=-1)
    return same[kept].all(), (~same[repainted]).mean()


def test_inpainting_keeps_every_unmasked_pixel_and_repaints_the_masked_ones(pipe, unit, picture, mask):
    white = np.asarray(mask) > 0
    hard = run(pipe, [unit], img2img=ImageToImage(picture, strength=1.0, mask=mask, mask_blur=0))
    all_kept, changed = _kept_and_changed(hard, picture, ~white, white)
    assert all_kept and changed > 0.9
    # a blurred seam: pixels farther than the blur's reach are still exact
    soft = run(pipe, [unit], img2img=ImageToImage(picture, strength=1.0, mask=mask, mask_blur=4))
    reach = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * 12 + 1))) > 0
    all_kept, changed = _kept_and_changed(soft, picture, ~reach, white)
    assert all_kept and changed > 0.9
    assert not np.array_equal(hard, soft)
    # the adapter steers the repainted part
    unsteered = run(pipe, [], img2img=ImageToImage(picture, strength=1.0, mask=mask, mask_blur=0))
    assert np.abs(hard[white].astype(float) - unsteered[white]).mean() > 1


def test_nine_channel_unet_inpaints(inpaint_pipe, unit, picture, mask):
    white = np.asarray(mask) > 0
    output = run(inpaint_pipe, [unit], img2img=ImageToImage(picture, strength=1.0, mask=mask, mask_blur=0))
    all_kept, changed = _kept_and_changed(output, picture, ~white, white)
    assert all_kept and changed > 0.9
    with pytest.raises(ModelMismatchError, match="inpainting model"):
        run(inpaint_pipe, [unit], width=SIZE, height=SIZE)
    with pytest.raises(ModelMismatchError, match="--mask"):
        run(inpaint_pipe, [unit], img2img=ImageToImage(picture, strength=0.5))


def test_inpainting_at_full_resolution_keeps_the_rest_and_repaints_the_crop(pipe, unit, picture, mask):
    white = np.asarray(mask) > 0
    options = {"strength": 0.8, "mask": mask, "mask_blur": 0, "full_res": True, "full_res_padding": 4}
    output = run(pipe, [unit], img2img=ImageToImage(picture, **options))
    assert output.shape == (SIZE, SIZE, 3)
    all_kept, changed = _kept_and_changed(output, picture, ~white, white)
    assert all_kept and changed > 0.9
    whole = run(pipe, [unit], img2img=ImageToImage(picture, **{**options, "full_res": False}))
    assert not np.array_equal(output, whole)


def test_a_mask_of_another_size_is_resized_with_a_note(pipe, unit, picture, mask, caplog):
    small = mask.resize((32, 32), Image.Resampling.NEAREST)
    with caplog.at_level("WARNING"):
        output = run(pipe, [unit], img2img=ImageToImage(picture, strength=1.0, mask=small, mask_blur=0))
    assert "resized" in caplog.text and "32x32" in caplog.text
    assert (output == np.asarray(picture)).all(axis=-1)[:16].all()  # far from the white square


def test_an_all_black_mask_is_one_error(pipe, unit, picture):
    with pytest.raises(T2IAdapterError, match="nothing to repaint"):
        run(pipe, [unit], img2img=ImageToImage(picture, mask=Image.new("L", (SIZE, SIZE), 0)))


@pytest.mark.parametrize("upscaler", ["latent", "lanczos"])
def test_hires_fix_doubles_the_size_and_repaints(pipe, unit, upscaler):
    sizes, progress = [], []
    output = pipe(
        "a red cat",
        [unit],
        width=SIZE,
        height=SIZE,
        steps=STEPS,
        seed=3,
        output_type="np",
        hires=HiresFix(2.0, strength=0.5, steps=2, upscaler=upscaler),
        callback=lambda info: (
            sizes.append(tuple(info["latents"].shape[-2:])),
            progress.append((info["step"], info["total"])),
        ),
    )
    assert output.images.shape == (1, 2 * SIZE, 2 * SIZE, 3)
    assert (output.width, output.height) == (SIZE, SIZE)  # what the settings record
    assert (output.output_width, output.output_height) == (2 * SIZE, 2 * SIZE)  # the images'
    assert sizes == [(8, 8)] * STEPS + [(16, 16)]  # strength 0.5 of 2 steps: one step at 128 px
    # one progress over both passes: 1..N with one total, the first pass's steps plus the hires pass's
    assert progress == [(step, STEPS + 1) for step in range(1, STEPS + 2)]
    first = run(pipe, [unit], width=SIZE, height=SIZE)
    plain = np.asarray(Image.fromarray(first).resize((2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS))
    assert np.abs((output.images[0] * 255).round() - plain).mean() > 1


@pytest.mark.slow
def test_sdxl_img2img_and_hires():
    pipe = T2IAdapterPipeline(tiny_sdxl_base_model())
    unit = AdapterUnit(
        tiny_adapter(sdxl=True), torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    )
    picture = Image.new("RGB", (SIZE, SIZE), (90, 90, 200))
    txt2img = run(pipe, [unit], width=SIZE, height=SIZE)
    assert np.array_equal(txt2img, run(pipe, [unit], img2img=ImageToImage(picture, strength=1.0)))
    output = pipe(
        "a cat",
        [unit],
        steps=2,
        seed=1,
        output_type="np",
        img2img=ImageToImage(picture, strength=0.5),
        hires=HiresFix(1.5, strength=0.5),
    )
    assert output.images.shape[1] > SIZE and output.images.shape[2] > SIZE
