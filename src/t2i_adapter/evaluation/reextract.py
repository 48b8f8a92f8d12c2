"""Re-extraction: the condition read back from a generated picture, in the space a metric compares.

ControlNet++'s protocol (Li et al. 2024): run the same kind of model that made the condition on
the generated picture and score agreement. Here that model IS the condition's preprocessor from
the registry, with the same options (canny thresholds, the depth / segmentation / pose model), so
it loads through the preprocessors' loader (hub cache, offline mode, a one-line error naming a
missing model).

Families and what their truth and prediction are:

- `edges` (canny) and `lines` (sketch, pidinet, scribble, threshold, invert): the grey map, 0-255;
- `depth` (depth, depth_anything): the grey map min-max normalised to 0-255, near bright;
- `color`: the RGB palette map;
- `seg`: COCO-Stuff ids decoded from the palette colours (unlabeled and unknown colours ignored);
- `pose` (openpose, keypose): people's keypoints; the truth comes from the dataset's photo, since
  a drawn skeleton cannot be read back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from t2i_adapter.conditions.depth import normalise
from t2i_adapter.conditions.pose import detect_keypoints
from t2i_adapter.conditions.registry import get_preprocessor
from t2i_adapter.conditions.segmentation import decolorize
from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.evaluation.metrics import IGNORE_LABEL, Person

FAMILIES = {
    "canny": "edges",
    "sketch": "lines",
    "pidinet": "lines",
    "scribble": "lines",
    "threshold": "lines",
    "invert": "lines",
    "depth": "depth",
    "depth_anything": "depth",
    "color": "color",
    "seg": "seg",
    "openpose": "pose",
    "keypose": "pose",
}
MAP_FAMILIES = ("edges", "lines", "depth", "color")


def condition_family(cond_type: str) -> str:
    """The family of a condition type (aliases resolved); an error when nothing can re-extract it."""
    name = get_preprocessor(cond_type).name
    if name not in FAMILIES:
        readable = ", ".join(sorted(FAMILIES))
        raise T2IAdapterError(
            f"condition type '{cond_type}' cannot be read back from a picture (re-extractable: {readable}); "
            "score it with --metric clip, fid or kid"
        )
    return FAMILIES[name]


@dataclass
class Reextractor:
    """Truth from a sample's condition (or photo) and prediction from a picture, for one condition type."""

    cond_type: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = get_preprocessor(self.cond_type)
        self.family = condition_family(self.cond_type)
        self.options = self.spec.check_options(dict(self.options))

    # ------------------------------------------------------------------------------- truth
    def truth(self, condition: Image.Image, photo: Image.Image | None) -> Any:
        """What a faithful picture would give back: from the condition map (pose: from the photo)."""
        if self.family == "pose":
            if photo is None:
                raise T2IAdapterError(
                    f"scoring {self.cond_type} needs the dataset's photos: the true keypoints are "
                    "detected in them (a drawn skeleton cannot be read back)"
                )
            return self._people(photo)
        return self._from_map(condition)

    # ------------------------------------------------------------------------------- prediction
    def predict(self, picture: Image.Image, size: tuple[int, int]) -> Any:
        """The condition read back from a generated `picture`, at the truth's `size` (width, height)."""
        if picture.size != tuple(size):
            picture = picture.resize(tuple(size), Image.Resampling.BICUBIC)
        if self.family == "pose":
            return self._people(picture)
        return self._from_map(self.spec(picture, **self.options))

    # ------------------------------------------------------------------------------- helpers
    def _from_map(self, condition: Image.Image) -> np.ndarray:
        if self.family == "seg":
            ids = decolorize(condition)
            return np.where(ids <= 0, IGNORE_LABEL, ids)  # unlabeled (0) and unknown colours: no class
        if self.family == "color":
            return np.asarray(condition.convert("RGB"), dtype=np.uint8)
        grey = np.asarray(condition.convert("L"), dtype=np.uint8)
        if self.family == "depth":
            return np.rint(normalise(grey.astype(np.float32)) * 255.0).astype(np.uint8)
        return grey

    def _people(self, image: Image.Image) -> list[Person]:
        threshold = float(self.options.get("keypoint_threshold", self.spec.options["keypoint_threshold"]))
        people = detect_keypoints(image, **self.options)
        return [Person(keypoints=p.keypoints, visible=p.scores >= threshold) for p in people]
