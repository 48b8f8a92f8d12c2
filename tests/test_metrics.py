"""Fidelity metrics on known cases: perfect agreement scores 1, nothing scores 0."""

import numpy as np
from PIL import Image

from t2i_adapter.demo.metrics import (
    color_accuracy,
    edge_f1,
    extract,
    fill_outlines,
    mask_from_condition,
    mask_iou,
    object_color_accuracy,
    prompt_colors,
    region_outlines,
)
from t2i_adapter.demo.world import make_scene


def test_mask_iou_known_cases():
    a = np.zeros((8, 8), dtype=bool)
    a[:4] = True
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros_like(a), a) == 0.0
    assert mask_iou(~a, a) == 0.0
    b = np.zeros_like(a)
    b[:2] = True
    assert mask_iou(b, a) == 0.5
    assert mask_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_edge_f1_known_cases():
    target = np.zeros((16, 16), dtype=bool)
    target[4, 2:12] = True
    assert edge_f1(target, target) == 1.0
    assert edge_f1(np.zeros_like(target), target) == 0.0
    shifted = np.roll(target, 1, axis=0)
    assert edge_f1(shifted, target, tolerance=1) == 1.0
    assert edge_f1(shifted, target, tolerance=0) == 0.0
    far = np.roll(target, 8, axis=0)
    assert edge_f1(far, target) == 0.0
    half = target.copy()
    half[4, 7:12] = False  # precision 1; recall 6/10 (the 1-px tolerance reaches one more) -> F1 0.75
    assert abs(edge_f1(half, target) - 0.75) < 1e-6


def test_color_accuracy_known_cases():
    assert color_accuracy({"red", "blue"}, {"red", "blue"}) == 1.0
    assert color_accuracy(set(), {"red"}) == 0.0
    assert color_accuracy({"red"}, {"red", "blue"}) == 0.5
    assert prompt_colors("a picture of a Red circle and an orange square") == {"red", "orange"}


def test_extraction_of_an_exact_scene_is_perfect():
    for seed in range(30):
        scene = make_scene(seed)
        found = extract(scene.image())
        assert mask_iou(found.mask, scene.foreground_mask()) == 1.0
        sketch = np.asarray(scene.condition("sketch")) > 0
        assert edge_f1(found.edges(), sketch) == 1.0
        wanted = prompt_colors(scene.caption)
        assert color_accuracy(found.colors_present(), wanted) == 1.0
        masks = [scene.labels == k for k in range(1, len(scene.objects) + 1)]
        assert object_color_accuracy(found, masks, [o.color for o in scene.objects]) == 1.0


def test_blank_picture_scores_zero():
    scene = next(s for s in (make_scene(seed) for seed in range(50)) if len(s.objects) >= 2)
    found = extract(Image.new("RGB", (64, 64), (255, 255, 255)))
    assert not found.mask.any()
    assert mask_iou(found.mask, scene.foreground_mask()) == 0.0
    assert edge_f1(found.edges(), np.asarray(scene.condition("sketch")) > 0) == 0.0
    assert color_accuracy(found.colors_present(), prompt_colors(scene.caption)) == 0.0


def test_extraction_tolerates_noise_and_other_backgrounds():
    scene = make_scene(3)
    pixels = np.asarray(scene.image()).astype(np.float32)
    pixels[scene.labels == 0] = (200, 200, 200)  # a light gray background instead of white
    noisy = np.clip(pixels + np.random.default_rng(0).normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    found = extract(Image.fromarray(noisy))
    assert mask_iou(found.mask, scene.foreground_mask()) > 0.97


def test_masks_from_conditions_match_the_scene():
    for seed in range(20):
        scene = make_scene(seed)
        truth = scene.foreground_mask()
        # Filling outlines also fills a background pocket enclosed between objects, if any.
        assert mask_iou(mask_from_condition("sketch", scene.condition("sketch")), truth) > 0.99
        assert mask_iou(mask_from_condition("depth", scene.condition("depth")), truth) == 1.0
        assert mask_iou(mask_from_condition("seg", scene.condition("seg")), truth) == 1.0


def test_fill_outlines_and_region_outlines_invert_each_other():
    labels = -np.ones((12, 12), dtype=int)
    labels[3:9, 2:10] = 0
    outline = region_outlines(labels)
    assert outline.sum() == 2 * 6 + 2 * 8 - 4
    assert np.array_equal(fill_outlines(outline), labels >= 0)
