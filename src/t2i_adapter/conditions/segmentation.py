"""Semantic segmentation from a photo, coloured with the COCO-Stuff palette the seg adapter reads.

The released seg adapter was trained on COCO-Stuff label maps rendered in colour (3 channels in
[0, 1]; REFERENCE.md section 4). Any transformers segmentation model works (`model=`): the
default is Mask2Former trained on COCO panoptic, whose 133 classes are COCO-Stuff classes, some
merged (`wall-other-merged`); each predicted class is mapped by name to its COCO-Stuff id
(1-182) and painted with that id's colour. Classes with no COCO-Stuff counterpart (e.g. from an
ADE20K model) are left unlabeled (black).

The palette follows the COCO-Stuff API's colour-map recipe (Caesar et al. 2018): Matlab's `jet`
sampled once per class, darkened to 70 % value, shuffled with seed 42 so neighbouring names get
distant colours; unlabeled is black. The API leaves thing classes black; here the same recipe
covers all 182 labels so people and objects keep their own colours (the few samples where jet
repeats itself are darkened until unique). The exact colours of the
release's training maps are not published: for an existing COCO-Stuff colour map, use the
`none` condition to feed it as it is.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from PIL import Image

from t2i_adapter.conditions.model_loading import (
    DEFAULT_DETECT_RESOLUTION,
    PretrainedModel,
    bounded,
    load_cached,
    load_pretrained,
    release_memory,
    resolve_model_folder,
    restore_size,
)
from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.errors import T2IAdapterError

SEGMENTATION_MODEL = "facebook/mask2former-swin-base-coco-panoptic"

# COCO-Stuff label names by id (0 = unlabeled). Ids 1-91 are COCO's things, including the 11 ids
# COCO defines but never annotates; 92-182 are the stuff classes.
COCO_STUFF_LABELS = (
    "unlabeled",
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk",
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
COCO_STUFF_IDS = {name: index for index, name in enumerate(COCO_STUFF_LABELS)}
# COCO-panoptic names whose stripped form is not itself a COCO-Stuff name.
_PANOPTIC_ALIASES = {
    "ceiling": "ceiling-other",
    "television": "tv",
    "sofa": "couch",
    "motorbike": "motorcycle",
}


# ---------------------------------------------------------------------------------------------
# Palette and label mapping
# ---------------------------------------------------------------------------------------------


def _jet(x: np.ndarray) -> np.ndarray:
    """Matlab's / matplotlib's `jet` colour map at positions `x` in [0, 1]: (N, 3) in [0, 1]."""
    red = np.interp(x, [0.0, 0.35, 0.66, 0.89, 1.0], [0.0, 0.0, 1.0, 1.0, 0.5])
    green = np.interp(x, [0.0, 0.125, 0.375, 0.64, 0.91, 1.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    blue = np.interp(x, [0.0, 0.11, 0.34, 0.65, 1.0], [0.5, 1.0, 1.0, 0.0, 0.0])
    return np.stack([red, green, blue], axis=1)


@cache
def coco_stuff_palette() -> np.ndarray:
    """(183, 3) uint8 RGB colour of each COCO-Stuff id; id 0 (unlabeled) is black."""
    count = len(COCO_STUFF_LABELS) - 1
    colors = _jet(np.linspace(0.0, 1.0, count)) * 0.7  # scaling RGB scales HSV value, keeps hue
    colors = colors[np.random.RandomState(42).permutation(count)]
    palette = np.rint(np.vstack([np.zeros((1, 3)), colors]) * 255).astype(np.uint8)
    # jet is flat where one channel saturates, so a few of 182 samples coincide; darken repeats
    # until every class has its own colour (the seg adapter cannot tell equal colours apart)
    seen: set[tuple[int, ...]] = set()
    for index in range(len(palette)):
        while tuple(palette[index]) in seen:
            palette[index] = np.rint(palette[index] * 0.85).astype(np.uint8)
        seen.add(tuple(palette[index]))
    palette.setflags(write=False)
    return palette


def coco_stuff_id(label: str) -> int:
    """The COCO-Stuff id of a model's class name (`wall-other-merged` -> wall-other); 0 if none."""
    name = str(label).strip().lower().replace("_", " ")
    name = name.removesuffix("-merged").removesuffix(" merged")
    name = _PANOPTIC_ALIASES.get(name, name)
    return COCO_STUFF_IDS.get(name, COCO_STUFF_IDS.get(name.replace(" ", "-"), 0))


def label_lookup(id2label: dict[int, str]) -> np.ndarray:
    """Model class index -> COCO-Stuff id, as an array for fancy indexing."""
    if not id2label:
        raise T2IAdapterError("the segmentation model has no class names (id2label) to map to COCO-Stuff")
    lookup = np.zeros(max(int(k) for k in id2label) + 1, dtype=np.int64)
    for index, label in id2label.items():
        lookup[int(index)] = coco_stuff_id(label)
    if not lookup.any():
        raise T2IAdapterError(
            "none of the segmentation model's classes is a COCO-Stuff class; use a COCO or COCO-Stuff model"
        )
    return lookup


def colorize(coco_ids: np.ndarray) -> Image.Image:
    """An (H, W) map of COCO-Stuff ids painted with the COCO-Stuff palette; RGB."""
    return Image.fromarray(coco_stuff_palette()[np.clip(coco_ids, 0, len(COCO_STUFF_LABELS) - 1)], mode="RGB")


def decolorize(color_map: Image.Image) -> np.ndarray:
    """The inverse of `colorize`: (H, W) COCO-Stuff ids, -1 where a colour is not in the palette."""
    pixels = np.asarray(color_map.convert("RGB"), dtype=np.int64)  # (H, W, 3)
    codes = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    palette = coco_stuff_palette().astype(np.int64)
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]  # unique by construction
    order = np.argsort(palette_codes)
    position = np.clip(np.searchsorted(palette_codes[order], codes), 0, len(order) - 1)
    ids = order[position]
    return np.where(palette_codes[ids] == codes, ids, -1)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def load_segmentation_model(name_or_path: str, device: str | None = None) -> PretrainedModel:
    """A transformers semantic or universal (Mask2Former, MaskFormer) segmentation model, once per process."""
    model_class = load_cached(("segmentation-class", str(name_or_path)), lambda: _model_class(name_or_path))
    return load_pretrained(name_or_path, model_class, what="segmentation", device=device)


def _model_class(name_or_path: str):
    # transformers' model classes take seconds to import: only when this model is loaded
    from transformers import AutoConfig, AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation
    from transformers.models.auto.modeling_auto import MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES

    folder = resolve_model_folder(name_or_path, what="segmentation")
    try:
        model_type = AutoConfig.from_pretrained(folder).model_type
    except (OSError, ValueError) as error:
        raise T2IAdapterError(f"{name_or_path}: not a transformers segmentation model ({error})") from error
    if model_type == "oneformer":
        raise T2IAdapterError(
            "OneFormer needs task prompts; use a Mask2Former, MaskFormer or SegFormer model"
        )
    if model_type in MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES:
        return AutoModelForUniversalSegmentation
    return AutoModelForSemanticSegmentation


def segment(loaded: PretrainedModel, image: Image.Image) -> np.ndarray:
    """Per-pixel model class indices of `image` at its own size: (H, W) int64."""
    width, height = image.size
    inputs = loaded.processor(images=image, return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(loaded.device, loaded.dtype)  # (1, 3, h, w)
    with torch.inference_mode():
        outputs = loaded.model(pixel_values=pixel_values)
        classes = loaded.processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(height, width)]
        )[0]
    classes = classes.cpu().numpy().astype(np.int64)
    del outputs, pixel_values
    release_memory(loaded.device)
    return classes


# ---------------------------------------------------------------------------------------------
# Preprocessor
# ---------------------------------------------------------------------------------------------


@register_condition(
    "seg",
    channels=3,
    description=f"semantic segmentation ({SEGMENTATION_MODEL}) in COCO-Stuff colours (the seg adapter's input)",
    needs_weights=True,
    aliases=("segmentation", "coco_stuff"),
)
def seg(
    image: Image.Image,
    model: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
) -> Image.Image:
    """Semantic segmentation (Mask2Former, Cheng et al. 2022, or any model) coloured as COCO-Stuff."""
    loaded = load_segmentation_model(model or SEGMENTATION_MODEL, device=device)
    lookup = label_lookup(loaded.model.config.id2label)
    small = bounded(image, detect_resolution)
    classes = np.clip(segment(loaded, small), 0, len(lookup) - 1)
    return restore_size(colorize(lookup[classes]), image.size, Image.Resampling.NEAREST)
