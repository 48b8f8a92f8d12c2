"""The shapes world: deterministic scenes whose conditions agree exactly with the picture."""

import numpy as np
import pytest

from t2i_adapter.demo.world import (
    BACKGROUND,
    COLORS,
    SCENE_SIZE,
    SHAPES,
    caption_words,
    color_palette,
    make_scene,
    sketch_from_labels,
)
from t2i_adapter.errors import UnknownNameError


def test_same_seed_same_scene_and_conditions():
    first, second = make_scene(123), make_scene(123)
    assert first.caption == second.caption
    assert first.objects == second.objects
    assert np.array_equal(np.asarray(first.image()), np.asarray(second.image()))
    for cond_type in ("sketch", "depth", "color", "seg"):
        assert np.array_equal(np.asarray(first.condition(cond_type)), np.asarray(second.condition(cond_type)))


def test_different_seeds_differ():
    images = {make_scene(seed).image().tobytes() for seed in range(20)}
    assert len(images) == 20


def test_scene_statistics_cover_the_world():
    scenes = [make_scene(seed) for seed in range(300)]
    counts = {len(scene.objects) for scene in scenes}
    assert counts == {1, 2, 3}
    assert {obj.shape for scene in scenes for obj in scene.objects} == set(SHAPES)
    assert {obj.color for scene in scenes for obj in scene.objects} == set(COLORS)
    assert len(COLORS) >= 6
    for scene in scenes:
        assert scene.image().size == (SCENE_SIZE, SCENE_SIZE)
        for k, obj in enumerate(scene.objects, start=1):
            assert obj.color in scene.caption and obj.shape in scene.caption
            assert (scene.labels == k).sum() >= 12  # every captioned object is visible
        assert set(scene.caption.replace(",", " , ").split()) <= set(caption_words())


def test_picture_is_flat_colours_on_white():
    scene = make_scene(7)
    pixels = np.asarray(scene.image())
    assert tuple(pixels[0, 0]) == BACKGROUND
    colours = {tuple(c) for c in pixels.reshape(-1, 3)}
    assert colours == {BACKGROUND} | {obj.rgb for obj in scene.objects}


def test_condition_modes_and_values():
    scene = make_scene(11)
    sketch = scene.condition("sketch")
    depth = scene.condition("depth")
    assert sketch.mode == "L" and depth.mode == "RGB"
    assert set(np.unique(np.asarray(sketch))) <= {0, 255}
    depth_array = np.asarray(depth)
    assert np.array_equal(depth_array[..., 0], depth_array[..., 2])
    assert np.array_equal(depth_array[..., 0] > 0, scene.foreground_mask())
    seg = np.asarray(scene.condition("seg"))
    assert np.array_equal(seg.any(axis=-1), scene.foreground_mask())
    with pytest.raises(UnknownNameError):
        scene.condition("pose")


def test_nearer_objects_are_brighter_in_depth():
    scene = next(s for s in (make_scene(seed) for seed in range(100)) if len(s.objects) == 3)
    gray = np.asarray(scene.condition("depth"))[..., 0]
    levels = [int(gray[scene.labels == k][0]) for k in (1, 2, 3)]
    assert levels[0] < levels[1] < levels[2] == 255


def test_sketch_is_one_pixel_outline_of_a_square():
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[2:7, 3:8] = 1
    sketch = np.asarray(sketch_from_labels(labels)) > 0
    expected = np.zeros_like(sketch)
    expected[2:7, 3:8] = True
    expected[3:6, 4:7] = False
    assert np.array_equal(sketch, expected)


def test_sketch_draws_shared_boundary_once_on_the_nearer_object():
    labels = np.zeros((8, 12), dtype=np.uint8)
    labels[1:7, 1:6] = 1
    labels[1:7, 6:11] = 2  # object 2 (nearer) touches object 1 along column 5|6
    sketch = np.asarray(sketch_from_labels(labels)) > 0
    assert sketch[3, 6] and not sketch[3, 5]


def test_color_palette_is_blocky():
    palette = np.asarray(color_palette(make_scene(5).image(), block_size=8))
    blocks = palette.reshape(8, 8, 8, 8, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()
