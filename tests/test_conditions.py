"""Condition registry, weight-free preprocessors and condition -> tensor conversion."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from t2i_adapter.conditions import registry
from t2i_adapter.conditions.registry import (
    ConditionSpec,
    available_conditions,
    get_preprocessor,
    preprocess,
    register_condition,
)
from t2i_adapter.conditions.tensor import condition_to_tensor, resize_condition
from t2i_adapter.errors import T2IAdapterError, UnknownNameError

WEIGHT_FREE = ["canny", "color", "invert", "none", "scribble", "sketch", "threshold"]


def white_square(size: int = 128, box: tuple[int, int, int, int] = (32, 32, 95, 95)) -> Image.Image:
    image = Image.new("RGB", (size, size), (0, 0, 0))
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255))
    return image


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int32)


@pytest.fixture
def scratch_registry(monkeypatch):
    """An isolated copy of the registry state, so tests can register throwaway preprocessors."""
    registry._ensure_loaded()
    monkeypatch.setattr(registry, "_specs", dict(registry._specs))
    monkeypatch.setattr(registry, "_aliases", dict(registry._aliases))
    monkeypatch.setattr(registry, "_unavailable", dict(registry._unavailable))
    return registry


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_weight_free_conditions_are_registered():
    names = available_conditions()
    assert set(WEIGHT_FREE) <= set(names)
    assert names == sorted(names)
    for name in WEIGHT_FREE:
        spec = get_preprocessor(name)
        assert isinstance(spec, ConditionSpec)
        assert spec.name == name and not spec.needs_weights and spec.description
        assert spec.channels in (1, 3)


def test_channels_follow_the_reference():
    assert get_preprocessor("canny").channels == 1
    assert get_preprocessor("sketch").channels == 1
    assert get_preprocessor("color").channels == 3
    assert get_preprocessor("none").channels == 3


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as caught:
        get_preprocessor("cany")
    message = str(caught.value)
    assert "condition type" in message and "'cany'" in message
    for name in WEIGHT_FREE:
        assert name in message
    assert isinstance(caught.value, T2IAdapterError)


def test_names_are_case_and_dash_insensitive_and_aliases_resolve():
    assert get_preprocessor(" Canny ").name == "canny"
    assert get_preprocessor("binary").name == "threshold"
    assert get_preprocessor("colour").name == "color"
    assert "binary" not in available_conditions()


def test_spec_is_frozen():
    spec = get_preprocessor("canny")
    with pytest.raises(AttributeError):
        spec.channels = 3  # type: ignore[misc]


def test_unknown_option_and_bad_option_value():
    image = white_square()
    with pytest.raises(UnknownNameError, match="canny option 'sigma'.*high_threshold, low_threshold"):
        preprocess("canny", image, sigma=2)
    with pytest.raises(T2IAdapterError, match="must be an integer"):
        preprocess("canny", image, low_threshold="lots")
    with pytest.raises(T2IAdapterError, match="out of range"):
        preprocess("canny", image, low_threshold=300, high_threshold=200)
    # strings from the command line are converted to the option's type
    assert preprocess("canny", image, low_threshold="50").size == image.size


def test_register_and_normalise_output(scratch_registry):
    @register_condition("test_half", channels=1, description="returns a smaller RGB image")
    def half(image, scale: float = 0.5):
        return image.resize((int(image.width * scale), int(image.height * scale)))

    image = white_square(64)
    out = preprocess("test_half", image)
    assert out.mode == "L" and out.size == (64, 64)  # the spec converts mode and restores size
    assert "test_half" in available_conditions()
    assert get_preprocessor("test_half").options == {"scale": 0.5}
    with pytest.raises(ValueError, match="already registered"):
        register_condition("test_half", channels=1, description="again")(half)
    with pytest.raises(ValueError, match="channels"):
        register_condition("test_two", channels=2, description="bad")


def test_preprocessor_receives_rgb(scratch_registry):
    seen = []

    @register_condition("test_mode", channels=3, description="records the input mode")
    def record(image):
        seen.append(image.mode)
        return image

    for mode in ("L", "RGBA", "1", "P", "CMYK"):
        preprocess("test_mode", Image.new(mode, (4, 4)))
    assert seen == ["RGB"] * 5


def test_missing_builtin_module_is_skipped_and_broken_dependency_is_recorded(monkeypatch, scratch_registry):
    fake = "t2i_adapter.conditions._test_needs_missing_dep"
    monkeypatch.setattr(
        registry, "BUILTIN_MODULES", (*registry.BUILTIN_MODULES, "t2i_adapter.conditions._no_such_file", fake)
    )
    monkeypatch.setattr(registry, "_loaded", False)

    real_import = registry.importlib.import_module

    def import_module(name):
        if name == fake:
            raise ModuleNotFoundError("No module named 'some_optional_package'", name="some_optional_package")
        return real_import(name)

    monkeypatch.setattr(registry.importlib, "import_module", import_module)
    with pytest.warns(RuntimeWarning, match="some_optional_package"):
        names = available_conditions()
    assert set(WEIGHT_FREE) <= set(names)
    assert "some_optional_package" in registry.unavailable_modules()[fake]
    assert "t2i_adapter.conditions._no_such_file" not in registry.unavailable_modules()
    assert "t2i_adapter.conditions._no_such_file" not in sys.modules


# ---------------------------------------------------------------------------------------------
# Preprocessors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WEIGHT_FREE)
@pytest.mark.parametrize("size", [(128, 96), (1, 1), (300, 7)])
def test_output_mode_size_and_range(name, size):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    out = preprocess(name, image)
    spec = get_preprocessor(name)
    assert out.mode == ("L" if spec.channels == 1 else "RGB")
    assert out.size == size
    values = np.asarray(out)
    assert values.dtype == np.uint8


def test_canny_marks_the_square_border_only():
    edges = array(preprocess("canny", white_square()))
    assert set(np.unique(edges)) == {0, 255}
    border = np.zeros_like(edges, dtype=bool)
    border[30:99, 30:99] = True
    border[35:92, 35:92] = False
    assert edges[border].sum() > 0
    assert edges[~border].sum() == 0  # nothing far from the border
    assert (edges[32:96, 30:34].max(axis=1) == 255).mean() > 0.9  # the left side is a continuous line


def test_canny_thresholds_change_the_result():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(90, 160, (64, 64, 3), dtype=np.uint8), "RGB")
    loose = array(preprocess("canny", image, low_threshold=10, high_threshold=20))
    strict = array(preprocess("canny", image, low_threshold=400, high_threshold=900))
    assert (loose > 0).sum() > (strict > 0).sum()


def test_color_is_piecewise_constant_in_64_pixel_blocks():
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8), "RGB")
    palette = array(preprocess("color", image, block_size=64))
    assert palette.shape == (192, 256, 3)
    blocks = palette.reshape(3, 64, 4, 64, 3)
    assert (blocks == blocks[:, :1, :, :1, :]).all()
    assert len({tuple(blocks[i, 0, j, 0]) for i in range(3) for j in range(4)}) > 1


@pytest.mark.parametrize("size", [(64, 64), (512, 384), (40, 100)])
def test_color_default_block_follows_the_picture_and_keeps_several_colours(size):
    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    palette = array(preprocess("color", image))
    block = max(size) // 8  # 64 at 512 px, as the original
    assert (palette == array(preprocess("color", image, block_size=block))).all()
    assert len({tuple(pixel) for pixel in palette.reshape(-1, 3)}) >= 8
    one_colour = array(preprocess("color", image, block_size=4096))  # an explicit block still wins
    assert len({tuple(pixel) for pixel in one_colour.reshape(-1, 3)}) == 1


def test_color_of_a_flat_image_keeps_its_colour():
    palette = array(preprocess("color", Image.new("RGB", (130, 70), (10, 200, 30))))
    assert (palette == [10, 200, 30]).all()


def test_invert_inverts():
    image = Image.new("L", (4, 1))
    image.putdata([0, 1, 128, 255])
    assert array(preprocess("invert", image))[0].tolist() == [255, 254, 127, 0]


def test_threshold_is_binary_at_the_threshold():
    image = Image.new("L", (4, 1))
    image.putdata([0, 127, 128, 255])
    assert array(preprocess("threshold", image))[0].tolist() == [0, 0, 255, 255]
    assert array(preprocess("threshold", image, threshold=200))[0].tolist() == [0, 0, 0, 255]
    assert array(preprocess("binary", image, invert=True))[0].tolist() == [255, 255, 0, 0]


def test_sketch_draws_white_lines_on_black_near_edges():
    lines = array(preprocess("sketch", white_square()))
    assert set(np.unique(lines)) <= {0, 255}
    assert lines[:16, :16].max() == 0 and lines[50:78, 50:78].max() == 0  # flat areas stay black
    ring = np.zeros_like(lines, dtype=bool)
    ring[26:102, 26:102] = True
    ring[38:90, 38:90] = False
    assert lines[ring].mean() > 5
    assert lines[~ring].max() == 0
    soft = array(preprocess("sketch", white_square(), threshold=0))
    assert len(np.unique(soft)) > 2


def white_on_black_drawing() -> Image.Image:
    drawing = Image.new("RGB", (96, 96), (0, 0, 0))
    pen = ImageDraw.Draw(drawing)
    pen.ellipse((20, 20, 76, 76), outline=(255, 255, 255), width=2)
    pen.line((10, 85, 85, 10), fill=(255, 255, 255), width=2)
    return drawing


def test_sketch_passes_a_white_on_black_drawing_through_once_noted(monkeypatch, caplog):
    from t2i_adapter.conditions import basic

    monkeypatch.setattr(basic, "_noted", set())
    drawing = white_on_black_drawing()
    with caplog.at_level("WARNING"):
        first = array(preprocess("sketch", drawing))
        preprocess("sketch", drawing)
    assert np.array_equal(first, np.where(array(drawing.convert("L")) >= 128, 255, 0))
    notes = [record.getMessage() for record in caplog.records if "sketch" in record.getMessage()]
    assert len(notes) == 1 and "none" in notes[0] and "\n" not in notes[0]
    traced = array(preprocess("sketch", drawing, keep_drawings=False))
    assert (traced > 0).sum() > 1.5 * (first > 0).sum()  # XDoG draws both sides of each stroke


def test_sketch_still_traces_photos_and_filled_shapes():
    square = white_square(128, (50, 50, 77, 77))  # > 85 % black, but a filled shape, not strokes
    lines = array(preprocess("sketch", square))
    assert lines[55:72, 55:72].max() == 0  # the filled inside is not kept white


def test_scribble_handles_both_polarities():
    dark_on_light = Image.new("RGB", (64, 64), (250, 250, 250))
    ImageDraw.Draw(dark_on_light).line((5, 32, 60, 32), fill=(0, 0, 0), width=3)
    light_on_dark = Image.eval(dark_on_light, lambda v: 255 - v)
    first, second = array(preprocess("scribble", dark_on_light)), array(preprocess("scribble", light_on_dark))
    assert np.array_equal(first, second)
    assert first[32, 30] == 255 and first[5, 5] == 0


def test_none_keeps_the_image():
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB")
    assert np.array_equal(array(preprocess("none", image)), array(image))
    grey = Image.new("L", (5, 5), 99)
    assert preprocess("none", grey).mode == "RGB"
    assert condition_to_tensor(preprocess("none", grey), 1).unique().tolist() == pytest.approx([99 / 255])


# ---------------------------------------------------------------------------------------------
# Tensor conversion and resizing
# ---------------------------------------------------------------------------------------------


def test_condition_to_tensor_shapes_and_range():
    image = Image.new("RGB", (10, 6), (255, 0, 51))
    rgb = condition_to_tensor(image, 3)
    assert rgb.shape == (1, 3, 6, 10) and rgb.dtype == torch.float32
    assert rgb[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    grey = condition_to_tensor(image, 1)
    assert grey.shape == (1, 1, 6, 10)
    assert grey.min() >= 0.0 and grey.max() <= 1.0
    three_from_grey = condition_to_tensor(Image.new("L", (4, 4), 255), 3)
    assert three_from_grey.shape == (1, 3, 4, 4) and bool((three_from_grey == 1.0).all())
    with pytest.raises(ValueError):
        condition_to_tensor(image, 2)


def test_condition_to_tensor_resizes():
    tensor = condition_to_tensor(white_square(64), 1, size=(40, 24))
    assert tensor.shape == (1, 1, 24, 40)


def test_discrete_maps_keep_their_colours_when_resized():
    seg = Image.new("RGB", (30, 30), (120, 0, 200))
    ImageDraw.Draw(seg).rectangle((0, 0, 14, 29), fill=(0, 200, 80))
    resized = resize_condition(seg, 77, 51)
    assert resized.size == (77, 51)
    assert {c for _, c in resized.getcolors()} == {(120, 0, 200), (0, 200, 80)}


def test_thin_edge_lines_survive_downscaling():
    edges = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(edges).line((0, 101, 255, 101), fill=255, width=1)
    small = np.asarray(resize_condition(edges, 64, 64))
    assert small.max() > 30  # area-like filtering keeps a faint line instead of dropping it


def test_resize_condition_identity_and_bad_size():
    image = white_square(16)
    assert resize_condition(image, 16, 16) is image
    with pytest.raises(ValueError):
        resize_condition(image, 0, 5)
