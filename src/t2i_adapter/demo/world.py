"""The shapes world: small scenes of flat coloured circles, squares and triangles, with exact conditions.

Every scene is a pure function of its seed. Objects are rasterised into a *label map* without
anti-aliasing (0 = background, k = the k-th object drawn, later objects on top), so the picture
and every condition derived from it agree pixel for pixel:

- `image`: RGB, background white, each object one flat colour;
- `sketch`: white 1-pixel outlines of the visible object regions on black, 1 channel;
- `depth`: each object one gray level, nearer (drawn later) brighter, background black, 3 channels
  like a MiDaS map;
- `color`: the colour palette, the registered `color` preprocessor's output (bicubic down,
  nearest up, as in the original) with a block of 8 pixels instead of 64, which suits 64x64 scenes;
- `seg`: the object colours on black (a colour segmentation map), and `labels`: the label map.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from t2i_adapter.conditions.registry import preprocess
from t2i_adapter.errors import UnknownNameError

SCENE_SIZE = 64
SHAPES = ("circle", "square", "triangle")
# Saturated colours far apart in RGB, so a generated pixel is classified without ambiguity.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
    "cyan": (20, 200, 210),
}
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
COLOR_BLOCK_SIZE = 8  # the palette block for 64x64 scenes (the original's 64 would leave one colour)
MIN_OBJECT_SIZE = 16
MAX_OBJECT_SIZE = 34
MAX_OBJECTS = 3
# Depth gray levels: the nearest object is brightest; the farthest still clearly above background.
DEPTH_NEAR = 255
DEPTH_FAR = 96

CAPTION_TEMPLATES = (
    "{objects}",
    "a picture of {objects}",
    "{objects} on a white background",
)
CONDITION_TYPES = ("sketch", "depth", "color", "seg")


@dataclass(frozen=True)
class ShapeObject:
    """One object: its shape, colour name, bounding box (x0, y0, x1, y1) and depth rank."""

    shape: str
    color: str
    box: tuple[int, int, int, int]

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]

    def phrase(self) -> str:
        article = "an" if self.color[0] in "aeiou" else "a"
        return f"{article} {self.color} {self.shape}"


@dataclass
class Scene:
    """A rendered scene: objects in drawing order (first = farthest), caption, label map."""

    seed: int
    objects: list[ShapeObject]
    caption: str
    labels: np.ndarray  # (H, W) uint8, 0 = background, k = objects[k - 1]
    size: int = SCENE_SIZE
    _cache: dict[str, Image.Image] = field(default_factory=dict, repr=False)

    def image(self) -> Image.Image:
        return self._cached("image", lambda: _image_from_labels(self.labels, self.objects))

    def condition(self, cond_type: str) -> Image.Image:
        """The exact condition of this scene: `sketch`, `depth`, `color` or `seg`."""
        makers = {
            "sketch": lambda: sketch_from_labels(self.labels, order=None),
            "depth": lambda: _depth_from_labels(self.labels, len(self.objects)),
            "color": lambda: color_palette(self.image()),
            "seg": lambda: _seg_from_labels(self.labels, self.objects),
        }
        if cond_type not in makers:
            raise UnknownNameError("demo condition type", cond_type, makers)
        return self._cached(cond_type, makers[cond_type])

    def foreground_mask(self) -> np.ndarray:
        return self.labels > 0

    def _cached(self, key: str, make) -> Image.Image:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


# ---------------------------------------------------------------------------------------------
# Sampling and rasterising
# ---------------------------------------------------------------------------------------------


def make_scene(seed: int, size: int = SCENE_SIZE) -> Scene:
    """The scene for `seed`: 1 to 3 objects of distinct colours, random size, position and order."""
    rng = random.Random(seed)
    count = rng.randint(1, MAX_OBJECTS)
    colors = rng.sample(sorted(COLORS), count)
    objects = []
    for color in colors:
        shape = rng.choice(SHAPES)
        extent = rng.randint(MIN_OBJECT_SIZE * size // SCENE_SIZE, MAX_OBJECT_SIZE * size // SCENE_SIZE)
        x0 = rng.randint(1, size - extent - 1)
        y0 = rng.randint(1, size - extent - 1)
        objects.append(ShapeObject(shape, color, (x0, y0, x0 + extent, y0 + extent)))
    labels = _rasterise(objects, size)
    # An object hidden entirely behind later ones would make the caption lie: drop it.
    visible = [obj for k, obj in enumerate(objects, start=1) if (labels == k).sum() >= 12]
    if len(visible) != len(objects):
        objects = visible
        labels = _rasterise(objects, size)
    caption = make_caption(objects, rng)
    return Scene(seed=seed, objects=objects, caption=caption, labels=labels, size=size)


def make_scenes(first_seed: int, count: int, size: int = SCENE_SIZE) -> list[Scene]:
    return [make_scene(first_seed + i, size) for i in range(count)]


def make_caption(objects: list[ShapeObject], rng: random.Random) -> str:
    """`a red circle`, `a red circle and a blue square`, `a red circle, a blue square and ...`."""
    phrases = [obj.phrase() for obj in objects]
    rng.shuffle(phrases)  # caption order says nothing about depth order
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return rng.choice(CAPTION_TEMPLATES).format(objects=listed)


def _rasterise(objects: list[ShapeObject], size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for label, obj in enumerate(objects, start=1):
        x0, y0, x1, y1 = obj.box
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=label)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=label)
        elif obj.shape == "triangle":
            draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=label)
        else:
            raise ValueError(f"unknown shape {obj.shape}")
    return np.asarray(canvas, dtype=np.uint8).copy()


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------


def _image_from_labels(labels: np.ndarray, objects: list[ShapeObject]) -> Image.Image:
    palette = np.array([BACKGROUND] + [obj.rgb for obj in objects], dtype=np.uint8)
    return Image.fromarray(palette[labels], "RGB")


def sketch_from_labels(labels: np.ndarray, order: np.ndarray | None = None) -> Image.Image:
    """White 1-pixel outlines of labelled regions on black (mode L).

    A pixel is on the outline when it belongs to an object and a 4-neighbour (or the image
    border) is background or an object *behind* it, so a boundary between two objects is drawn
    once, on the nearer object's side. `order[label]` gives the depth rank of each label (higher
    = nearer); by default the label itself (later drawn = nearer).
    """
    rank = labels.astype(np.int32) if order is None else order[labels].astype(np.int32)
    padded = np.pad(rank, 1, mode="constant", constant_values=-1)
    center = padded[1:-1, 1:-1]
    edge = np.zeros(labels.shape, dtype=bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dy : 1 + dy + labels.shape[0], 1 + dx : 1 + dx + labels.shape[1]]
        edge |= neighbour < center
    edge &= labels > 0
    return Image.fromarray((edge * 255).astype(np.uint8), "L")


def _depth_from_labels(labels: np.ndarray, count: int) -> Image.Image:
    levels = np.zeros(count + 1, dtype=np.uint8)
    for k in range(1, count + 1):
        # The nearest (last drawn) object is DEPTH_NEAR; others evenly down to DEPTH_FAR.
        levels[k] = (
            DEPTH_NEAR if count == 1 else round(DEPTH_FAR + (DEPTH_NEAR - DEPTH_FAR) * (k - 1) / (count - 1))
        )
    gray = levels[labels]
    return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")


def _seg_from_labels(labels: np.ndarray, objects: list[ShapeObject]) -> Image.Image:
    palette = np.array([(0, 0, 0)] + [obj.rgb for obj in objects], dtype=np.uint8)
    return Image.fromarray(palette[labels], "RGB")


def color_palette(image: Image.Image, block_size: int = COLOR_BLOCK_SIZE) -> Image.Image:
    """The colour palette condition: the registered `color` preprocessor with a smaller block.

    The original's block of 64 would turn a 64x64 scene into one colour; 8 keeps an 8x8 palette
    (`t2i-adapter preprocess color --option block_size=8` makes the same map from any picture).
    """
    return preprocess("color", image.convert("RGB"), block_size=block_size)


# ---------------------------------------------------------------------------------------------
# Vocabulary (the tokenizer of the tiny model is built from it)
# ---------------------------------------------------------------------------------------------


def caption_words() -> list[str]:
    """Every word a caption can contain, sorted."""
    words = {"a", "an", "and", ","} | set(SHAPES) | set(COLORS)
    for template in CAPTION_TEMPLATES:
        words |= set(template.replace("{objects}", "").split())
    return sorted(words)
