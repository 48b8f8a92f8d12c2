"""Body pose from a photo, drawn as an OpenPose skeleton (the openpose adapter's input).

Detection is top-down with maintained transformers models instead of the original CMU OpenPose
network (which no maintained library ships without torchvision): RT-DETR finds the people,
ViTPose (Xu et al. 2022) puts the 17 COCO keypoints in each box. The keypoints are mapped to
OpenPose's 18-point body layout (the neck is the shoulders' midpoint) and drawn the way the
OpenPose annotator draws them: coloured 60%-bright limb ellipses over full-colour joint dots on
black, 3 channels in [0, 1] (REFERENCE.md section 4). Hands and face are not drawn. The same
keypoints also feed `keypose`, drawn the way the original keypose adapter's mmpose data was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from t2i_adapter.conditions.model_loading import (
    DEFAULT_DETECT_RESOLUTION,
    bounded,
    load_pretrained,
    release_memory,
    restore_size,
)
from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.errors import T2IAdapterError

POSE_MODEL = "usyd-community/vitpose-base-simple"
PERSON_DETECTOR = "PekingU/rtdetr_r50vd_coco_o365"
NO_DETECTOR = "none"  # treat the whole image as one person's box

# OpenPose body order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist,
# r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear.
# The COCO index of each OpenPose point (the neck, None, is derived from both shoulders).
COCO_INDEX_OF_OPENPOSE = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
# The 17 limbs OpenPose draws (pairs of OpenPose indices), in its drawing order.
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# One colour per joint and per limb (RGB): the hue wheel OpenPose renders with.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
# The keypose adapter was trained on mmpose's COCO-17 rendering instead: thin links and small dots.
# mmpose lists its colours as BGR (head (51, 153, 255), left (0, 255, 0), right (255, 128, 0)) and
# the original pipeline swapped channels on reading, so in RGB, as the adapter saw them, the head
# is orange, the person's left side green and the right side blue.
KEYPOSE_HEAD, KEYPOSE_LEFT, KEYPOSE_RIGHT = (255, 153, 51), (0, 255, 0), (0, 128, 255)
KEYPOSE_POINT_COLORS = (KEYPOSE_HEAD,) * 5 + (KEYPOSE_LEFT, KEYPOSE_RIGHT) * 6
KEYPOSE_LINKS = (
    ((15, 13), KEYPOSE_LEFT), ((13, 11), KEYPOSE_LEFT), ((16, 14), KEYPOSE_RIGHT), ((14, 12), KEYPOSE_RIGHT),
    ((11, 12), KEYPOSE_HEAD), ((5, 11), KEYPOSE_HEAD), ((6, 12), KEYPOSE_HEAD), ((5, 6), KEYPOSE_HEAD),
    ((5, 7), KEYPOSE_LEFT), ((6, 8), KEYPOSE_RIGHT), ((7, 9), KEYPOSE_LEFT), ((8, 10), KEYPOSE_RIGHT),
    ((1, 2), KEYPOSE_HEAD), ((0, 1), KEYPOSE_HEAD), ((0, 2), KEYPOSE_HEAD), ((1, 3), KEYPOSE_HEAD),
    ((2, 4), KEYPOSE_HEAD), ((3, 5), KEYPOSE_HEAD), ((4, 6), KEYPOSE_HEAD),
)  # fmt: skip
KEYPOSE_RADIUS = KEYPOSE_THICKNESS = 2
STICK_WIDTH = 4  # half-width of a limb and radius of a joint, in pixels at detect resolution
LIMB_OPACITY = 0.6


@dataclass(frozen=True)
class BodyPose:
    """One person's keypoints in a named layout: (K, 2) pixel coordinates and (K,) confidences."""

    keypoints: np.ndarray
    scores: np.ndarray


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


def detect_people(image: Image.Image, detector: str, threshold: float, device: str | None) -> np.ndarray:
    """Person boxes in COCO format (x, y, width, height): (P, 4); the whole image for `none`."""
    width, height = image.size
    if str(detector).lower() == NO_DETECTOR:
        return np.array([[0.0, 0.0, float(width), float(height)]], dtype=np.float32)
    # transformers' model classes take seconds to import: only when this model is loaded
    from transformers import AutoModelForObjectDetection

    loaded = load_pretrained(detector, AutoModelForObjectDetection, what="person detector", device=device)
    person_ids = {i for i, label in loaded.model.config.id2label.items() if str(label).lower() == "person"}
    if not person_ids:
        raise T2IAdapterError(f"person detector '{detector}' has no 'person' class in its labels")
    inputs = loaded.processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        outputs = loaded.model(pixel_values=inputs["pixel_values"].to(loaded.device, loaded.dtype))
        found = loaded.processor.post_process_object_detection(
            outputs, target_sizes=[(height, width)], threshold=threshold
        )[0]
    release_memory(loaded.device)
    keep = [i for i, label in enumerate(found["labels"].tolist()) if label in person_ids]
    boxes = found["boxes"][keep].float().cpu().numpy().reshape(-1, 4)  # (P, 4) x0, y0, x1, y1
    boxes[:, 2:] -= boxes[:, :2]
    return boxes[(boxes[:, 2] >= 1) & (boxes[:, 3] >= 1)]


def estimate_poses(image: Image.Image, boxes: np.ndarray, model: str, device: str | None) -> list[BodyPose]:
    """ViTPose's 17 COCO keypoints for each person box."""
    if len(boxes) == 0:
        return []
    # transformers' model classes take seconds to import: only when this model is loaded
    from transformers import VitPoseForPoseEstimation

    loaded = load_pretrained(model, VitPoseForPoseEstimation, what="pose", device=device)
    box_list = [boxes.tolist()]
    inputs = loaded.processor(image, boxes=box_list, return_tensors="pt")
    forward = {"pixel_values": inputs["pixel_values"].to(loaded.device, loaded.dtype)}
    if getattr(loaded.model.config.backbone_config, "num_experts", 1) > 1:
        # ViTPose+ has one head per training dataset; index 0 is COCO body keypoints
        forward["dataset_index"] = torch.zeros(len(boxes), dtype=torch.long, device=loaded.device)
    with torch.inference_mode():
        outputs = loaded.model(**forward)
        people = loaded.processor.post_process_pose_estimation(outputs, boxes=box_list)[0]
    release_memory(loaded.device)
    return [BodyPose(p["keypoints"].float().cpu().numpy(), p["scores"].float().cpu().numpy()) for p in people]


def coco_to_openpose(coco: BodyPose) -> BodyPose:
    """17 COCO keypoints -> OpenPose's 18 (the neck is the mean of the shoulders)."""
    keypoints, scores = coco.keypoints, coco.scores
    points = np.zeros((18, 2), dtype=np.float32)
    confidence = np.zeros(18, dtype=np.float32)
    for openpose_index, coco_index in enumerate(COCO_INDEX_OF_OPENPOSE):
        if coco_index is None:
            shoulders = [COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER]
            points[openpose_index] = keypoints[shoulders].mean(axis=0)
            confidence[openpose_index] = scores[shoulders].min()
        else:
            points[openpose_index] = keypoints[coco_index]
            confidence[openpose_index] = scores[coco_index]
    return BodyPose(keypoints=points, scores=confidence)


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def draw_openpose(size: tuple[int, int], people: list[BodyPose], threshold: float) -> Image.Image:
    """OpenPose-style skeletons on black: joints as dots, limbs as 60%-opaque ellipses; RGB."""
    width, height = size
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        visible = person.scores >= threshold
        for index in np.flatnonzero(visible):
            x, y = person.keypoints[index]
            cv2.circle(canvas, (int(x), int(y)), STICK_WIDTH, OPENPOSE_COLORS[index], thickness=-1)
    for limb, (start, end) in enumerate(OPENPOSE_LIMBS):
        layer = canvas.copy()
        drawn = False
        for person in people:
            if person.scores[start] < threshold or person.scores[end] < threshold:
                continue
            (x0, y0), (x1, y1) = person.keypoints[start], person.keypoints[end]
            length = math.hypot(x1 - x0, y1 - y0)
            angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
            centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(layer, polygon, OPENPOSE_COLORS[limb])
            drawn = True
        if drawn:
            canvas = cv2.addWeighted(canvas, 1.0 - LIMB_OPACITY, layer, LIMB_OPACITY, 0)
    return Image.fromarray(canvas, mode="RGB")


def draw_keypose(size: tuple[int, int], people: list[BodyPose], threshold: float) -> Image.Image:
    """mmpose-style COCO-17 skeletons on black (the keypose adapter's input); RGB."""
    width, height = size
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        points, scores = person.keypoints, person.scores
        for index in np.flatnonzero(scores >= threshold):
            x, y = points[index]
            cv2.circle(canvas, (int(x), int(y)), KEYPOSE_RADIUS, KEYPOSE_POINT_COLORS[index], thickness=-1)
        for (start, end), color in KEYPOSE_LINKS:
            if scores[start] < threshold or scores[end] < threshold:
                continue
            inside = all(0 < points[i, 0] < width and 0 < points[i, 1] < height for i in (start, end))
            if inside:  # mmpose skips links that touch the border
                p0, p1 = tuple(int(v) for v in points[start]), tuple(int(v) for v in points[end])
                cv2.line(canvas, p0, p1, color, thickness=KEYPOSE_THICKNESS)
    return Image.fromarray(canvas, mode="RGB")


# ---------------------------------------------------------------------------------------------
# Preprocessors
# ---------------------------------------------------------------------------------------------


@register_condition(
    "openpose",
    channels=3,
    description=f"OpenPose body skeleton from RT-DETR people + ViTPose keypoints ({POSE_MODEL})",
    needs_weights=True,
    aliases=("pose", "openpose_body"),
)
def openpose(
    image: Image.Image,
    model: str | None = None,
    detector: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
    person_threshold: float = 0.5,
    keypoint_threshold: float = 0.3,
) -> Image.Image:
    """Top-down pose estimation (RT-DETR + ViTPose) drawn in the OpenPose colour convention."""
    small, people = _detect_poses(
        image, model, detector, detect_resolution, device, person_threshold, keypoint_threshold
    )
    skeleton = draw_openpose(small.size, [coco_to_openpose(p) for p in people], float(keypoint_threshold))
    return restore_size(skeleton, image.size)


@register_condition(
    "keypose",
    channels=3,
    description=f"mmpose-style COCO-17 skeleton (the keypose adapter's input) from RT-DETR + ViTPose ({POSE_MODEL})",
    needs_weights=True,
    aliases=("mmpose",),
)
def keypose(
    image: Image.Image,
    model: str | None = None,
    detector: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
    person_threshold: float = 0.5,
    keypoint_threshold: float = 0.1,
) -> Image.Image:
    """Top-down pose estimation (RT-DETR + ViTPose) drawn as mmpose draws COCO keypoints."""
    small, people = _detect_poses(
        image, model, detector, detect_resolution, device, person_threshold, keypoint_threshold
    )
    return restore_size(draw_keypose(small.size, people, float(keypoint_threshold)), image.size)


def detect_keypoints(
    image: Image.Image,
    model: str | None = None,
    detector: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
    person_threshold: float = 0.5,
    keypoint_threshold: float = 0.3,
) -> list[BodyPose]:
    """The COCO-17 keypoints the pose preprocessors draw, in `image`'s own pixel coordinates."""
    small, people = _detect_poses(
        image, model, detector, detect_resolution, device, person_threshold, keypoint_threshold
    )
    scale = np.array([image.width / small.width, image.height / small.height], dtype=np.float32)
    return [BodyPose(keypoints=person.keypoints * scale, scores=person.scores) for person in people]


def _detect_poses(
    image: Image.Image,
    model: str | None,
    detector: str | None,
    detect_resolution: int,
    device: str | None,
    person_threshold: float,
    keypoint_threshold: float,
) -> tuple[Image.Image, list[BodyPose]]:
    """The photo at detect resolution and the COCO-17 pose of every person found in it."""
    for name, value in (("person_threshold", person_threshold), ("keypoint_threshold", keypoint_threshold)):
        if not 0.0 <= float(value) <= 1.0:
            raise T2IAdapterError(f"option {name}={value} is out of range [0, 1]")
    small = bounded(image, detect_resolution)
    boxes = detect_people(small, detector or PERSON_DETECTOR, float(person_threshold), device)
    return small, estimate_poses(small, boxes, model or POSE_MODEL, device)
