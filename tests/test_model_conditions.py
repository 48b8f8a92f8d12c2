"""Model-based preprocessors on tiny random networks built in code (no downloads).

Each network is saved with `save_pretrained` to a temporary folder that stands in for the hub;
a fake Hugging Face cache checks the hub path in offline mode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_adapter.conditions import model_loading
from t2i_adapter.conditions.registry import get_preprocessor, preprocess
from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import InputFileError, MissingWeightsError, T2IAdapterError

# ---------------------------------------------------------------------------------------------
# Tiny networks, saved once per test session
# ---------------------------------------------------------------------------------------------


def _photo(width: int = 70, height: int = 50, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    model_loading.free_models()
    yield
    model_loading.free_models()


@pytest.fixture(scope="session")
def tiny_dpt(tmp_path_factory) -> str:
    from tiny_models import save_tiny_dpt

    return str(save_tiny_dpt(tmp_path_factory.mktemp("tiny-dpt")))  # DPT-Hybrid-like fixed square input


@pytest.fixture(scope="session")
def tiny_depth_anything(tmp_path_factory) -> str:
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=28,
        patch_size=14,
        out_indices=[1, 2],
        reshape_hidden_states=False,
        apply_layernorm=True,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        patch_size=14,
        neck_hidden_sizes=[8, 16],
        fusion_hidden_size=16,
        head_hidden_size=8,
        reassemble_factors=[2, 1],
    )
    folder = tmp_path_factory.mktemp("tiny-depth-anything")
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    processor = DPTImageProcessor(
        size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False
    )
    processor.save_pretrained(folder)
    return str(folder)


def _fake_hub_cache(root, repo_id: str, source_folder: str) -> None:
    """Lay `source_folder` out as huggingface_hub's cache holds a downloaded snapshot of `repo_id`."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source_folder, repo / "snapshots" / commit)


# ---------------------------------------------------------------------------------------------
# Loading, caching, resolution bounds
# ---------------------------------------------------------------------------------------------


def test_bounded_shrinks_long_side_and_never_enlarges():
    big = Image.new("RGB", (1000, 400))
    small = model_loading.bounded(big, 256)
    assert small.size == (256, 102)
    tiny = Image.new("RGB", (30, 20))
    assert model_loading.bounded(tiny, 256) is tiny
    with pytest.raises(T2IAdapterError, match="detect_resolution"):
        model_loading.bounded(big, 10)


def test_missing_hub_model_is_a_clear_error_offline():
    with pytest.raises(MissingWeightsError) as info:
        preprocess("depth", _photo(), model="nobody-here/no-such-depth-model")
    message = str(info.value)
    assert "nobody-here/no-such-depth-model" in message
    assert "HF_HOME" in message and "--cond-model" in message
    assert "\n" not in message


def test_device_option_is_checked(tiny_dpt):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(T2IAdapterError, match="unknown device 'gpu0'"):
        preprocess("depth", _photo(), model=tiny_dpt, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(T2IAdapterError, match="no CUDA GPU"):
            preprocess("depth", _photo(), model=tiny_dpt, device="cuda")
    result = preprocess("depth", _photo(), model=tiny_dpt, device="cpu")
    assert model_loading.cached_keys()[0][2] == "cpu" and result.mode == "RGB"


def test_missing_local_folder_is_a_clear_error(tmp_path):
    # a missing local path is the user's missing file, as for adapters and base models (hub.locate)
    with pytest.raises(InputFileError, match="absent: no such file or folder"):
        preprocess("depth", _photo(), model=str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="not a usable depth model"):
        preprocess("depth", _photo(), model=str(tmp_path / "empty"))


def test_corrupt_weights_are_a_clear_error(tmp_path, tiny_dpt):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dpt, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InputFileError, match="not a usable depth model"):
        preprocess("depth", _photo(), model=str(broken))


def test_hub_id_resolves_from_the_cache_offline(tmp_path, tiny_dpt, monkeypatch):
    import huggingface_hub.constants

    _fake_hub_cache(tmp_path, "tiny-org/tiny-dpt", tiny_dpt)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    from_hub = np.asarray(preprocess("depth", _photo(), model="tiny-org/tiny-dpt"))
    from_disk = np.asarray(preprocess("depth", _photo(), model=tiny_dpt))
    np.testing.assert_array_equal(from_hub, from_disk)


def test_models_load_once_per_process_and_free(tiny_dpt):
    preprocess("depth", _photo(seed=1), model=tiny_dpt)
    preprocess("depth", _photo(seed=2), model=tiny_dpt)
    keys = model_loading.cached_keys()
    assert len(keys) == 1 and keys[0][0] == tiny_dpt
    assert model_loading.free_models() == 1
    assert model_loading.cached_keys() == []


# ---------------------------------------------------------------------------------------------
# Depth
# ---------------------------------------------------------------------------------------------


def test_depth_registry_wiring():
    spec = get_preprocessor("midas")
    assert spec.name == "depth" and spec.channels == 3 and spec.needs_weights
    assert {"model", "detect_resolution", "device"} <= set(spec.options)
    assert get_preprocessor("depth-anything").channels == 3


@pytest.mark.parametrize("name, fixture", [("depth", "tiny_dpt"), ("depth_anything", "tiny_depth_anything")])
def test_depth_is_normalised_three_equal_channels_at_input_size(name, fixture, request):
    folder = request.getfixturevalue(fixture)
    photo = _photo(70, 50)
    result = preprocess(name, photo, model=folder)
    array = np.asarray(result)
    assert result.mode == "RGB" and result.size == photo.size
    assert array[..., 0].min() == 0 and array[..., 0].max() == 255  # min-max normalised
    np.testing.assert_array_equal(array[..., 0], array[..., 1])
    np.testing.assert_array_equal(array[..., 0], array[..., 2])
    again = np.asarray(preprocess(name, photo, model=folder))
    np.testing.assert_array_equal(array, again)


def test_depth_runs_at_detect_resolution_and_returns_full_size(tiny_dpt, monkeypatch):
    from t2i_adapter.conditions import depth

    seen = []
    original = depth.estimate_depths
    monkeypatch.setattr(
        depth,
        "estimate_depths",
        lambda loaded, images: seen.extend(image.size for image in images) or original(loaded, images),
    )
    photo = _photo(900, 300)
    result = preprocess("depth", photo, model=tiny_dpt, detect_resolution=128)
    assert seen == [(128, 43)]
    assert result.size == (900, 300)


def test_metric_depth_is_inverted_so_near_is_bright(monkeypatch):
    from t2i_adapter.conditions import depth

    class MetricModel:
        config = type("Config", (), {"model_type": "zoedepth"})()

        def __call__(self, pixel_values):
            return None

    far_right = np.tile(np.linspace(1.0, 10.0, 8, dtype=np.float32), (4, 1))  # metres, growing rightwards
    monkeypatch.setattr(
        depth, "_post_process", lambda processor, outputs, sizes: [torch.from_numpy(far_right)]
    )
    loaded = model_loading.PretrainedModel(
        model=MetricModel(),
        processor=lambda images, return_tensors: {"pixel_values": torch.zeros(1, 3, 4, 8)},
        source="fake",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    result = depth.estimate_depth(loaded, Image.new("RGB", (8, 4)))
    assert result[0, 0] == 1.0 and result[0, -1] == 0.0  # near (1 m) bright, far (10 m) dark
    assert depth.normalise(np.ones((3, 3))).max() == 0.0


@pytest.mark.parametrize("name, fixture", [("depth", "tiny_dpt"), ("depth_anything", "tiny_depth_anything")])
def test_batched_depth_equals_one_image_at_a_time(name, fixture, request, monkeypatch):
    """Mixed sizes: same-shape model inputs share a batch, the rest run apart; results match per image."""
    from t2i_adapter.conditions import depth
    from t2i_adapter.conditions.registry import get_preprocessor

    model = request.getfixturevalue(fixture)
    photos = [_photo(70, 50, seed=1), _photo(90, 40, seed=2), _photo(70, 50, seed=3), _photo(40, 60, seed=4)]
    single = [np.asarray(preprocess(name, photo, model=model)) for photo in photos]
    batches = []
    original = depth.estimate_depths
    monkeypatch.setattr(
        depth,
        "estimate_depths",
        lambda loaded, images: batches.append(len(images)) or original(loaded, images),
    )
    together = [np.asarray(image) for image in get_preprocessor(name).batch(photos, model=model)]
    assert batches == [4]  # one call for the four
    for alone, batched, photo in zip(single, together, photos, strict=True):
        assert batched.shape == (photo.height, photo.width, 3)
        assert np.abs(alone.astype(int) - batched.astype(int)).max() <= 1  # float rounding of a batch


# ---------------------------------------------------------------------------------------------
# Style (CLIP vision)
# ---------------------------------------------------------------------------------------------


def test_style_preview_is_the_centre_crop_clip_encodes():
    spec = get_preprocessor("style")
    assert spec.channels == 3 and not spec.keeps_size
    wide = Image.new("RGB", (600, 200), (0, 0, 255))
    wide.paste((255, 0, 0), (200, 0, 400, 200))  # only the middle third is red
    preview = preprocess("style", wide)
    assert preview.size == (224, 224)
    array = np.asarray(preview).astype(int)
    assert (array[:, 10:-10, 0] > 200).all() and (array[:, 10:-10, 2] < 60).all()


@pytest.fixture(scope="session")
def tiny_clip_vision(tmp_path_factory) -> str:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=16,
    )
    folder = tmp_path_factory.mktemp("tiny-clip-vision")
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return str(folder)


def test_encode_style_image_gives_clip_hidden_states_once_loaded(tiny_clip_vision):
    from t2i_adapter.conditions.clip_vision import encode_style_image

    features = encode_style_image(_photo(90, 60), model=tiny_clip_vision)
    assert features.shape == (1, 1 + (32 // 16) ** 2, 32)  # ViT-L/14 at 224 px: (1, 257, 1024)
    assert torch.isfinite(features).all()
    other = encode_style_image(_photo(90, 60, seed=5), model=tiny_clip_vision)
    assert not torch.allclose(features, other)
    assert len(model_loading.cached_keys()) == 1


# ---------------------------------------------------------------------------------------------
# Pose (RT-DETR people + ViTPose keypoints, drawn as OpenPose)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_vitpose(tmp_path_factory) -> str:
    from tiny_models import save_tiny_vitpose

    return str(save_tiny_vitpose(tmp_path_factory.mktemp("tiny-vitpose")))


def _tiny_rtdetr(folder, labels: dict[int, str]) -> str:
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    torch.manual_seed(0)
    backbone = RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"],
    )
    config = RTDetrConfig(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        encoder_hidden_dim=16,
        encoder_in_channels=[16, 32, 64],
        encoder_layers=1,
        encoder_ffn_dim=16,
        encoder_attention_heads=2,
        d_model=16,
        num_queries=10,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=16,
        decoder_n_points=2,
        decoder_layers=1,
        decoder_attention_heads=2,
        num_denoising=0,
        id2label=labels,
        label2id={name: i for i, name in labels.items()},
    )
    RTDetrForObjectDetection(config).save_pretrained(folder)
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_rtdetr(tmp_path_factory) -> str:
    return _tiny_rtdetr(tmp_path_factory.mktemp("tiny-rtdetr"), {0: "person"})


def test_coco_keypoints_map_to_openpose_layout():
    from t2i_adapter.conditions.pose import BodyPose, coco_to_openpose

    keypoints = np.arange(34, dtype=np.float32).reshape(17, 2)
    scores = np.linspace(0.1, 0.9, 17, dtype=np.float32)
    body = coco_to_openpose(BodyPose(keypoints, scores))
    assert body.keypoints.shape == (18, 2)
    np.testing.assert_allclose(body.keypoints[1], (keypoints[5] + keypoints[6]) / 2)  # neck
    np.testing.assert_array_equal(body.keypoints[2], keypoints[6])  # right shoulder
    np.testing.assert_array_equal(body.keypoints[17], keypoints[3])  # left ear
    assert body.scores[1] == pytest.approx(min(scores[5], scores[6]))


def test_openpose_drawing_colours_and_threshold():
    from t2i_adapter.conditions.pose import BodyPose, draw_openpose

    keypoints = np.zeros((18, 2), dtype=np.float32)
    keypoints[1] = (20, 30)  # neck
    keypoints[2] = (60, 30)  # right shoulder, to the right
    scores = np.zeros(18, dtype=np.float32)
    scores[[1, 2]] = 0.9
    drawn = np.asarray(draw_openpose((80, 60), [BodyPose(keypoints, scores)], threshold=0.3))
    assert tuple(drawn[30, 40]) == (153, 0, 0)  # limb neck-r.shoulder: red at 60 %
    assert tuple(drawn[30, 17]) == (255, 85, 0)  # the neck dot, outside the limb, at full colour
    assert drawn[5, 5].sum() == 0 and drawn[55, 75].sum() == 0  # black background
    hidden = np.asarray(draw_openpose((80, 60), [BodyPose(keypoints, scores)], threshold=0.95))
    assert hidden.sum() == 0


def test_keypose_drawing_uses_mmpose_side_colours():
    from t2i_adapter.conditions.pose import KEYPOSE_LEFT, KEYPOSE_RIGHT, BodyPose, draw_keypose

    keypoints = np.zeros((17, 2), dtype=np.float32)
    keypoints[[5, 7]] = [(10, 10), (10, 50)]  # left shoulder -> left elbow, vertical
    keypoints[[6, 8]] = [(60, 10), (60, 50)]  # right shoulder -> right elbow
    scores = np.zeros(17, dtype=np.float32)
    scores[[5, 6, 7, 8]] = 0.9
    drawn = np.asarray(draw_keypose((80, 60), [BodyPose(keypoints, scores)], threshold=0.1))
    assert tuple(drawn[30, 10]) == KEYPOSE_LEFT and tuple(drawn[30, 60]) == KEYPOSE_RIGHT
    assert drawn[30, 35].sum() == 0


def test_openpose_registry_wiring():
    spec = get_preprocessor("pose")
    assert spec.name == "openpose" and spec.channels == 3 and spec.needs_weights
    assert {"model", "detector", "detect_resolution", "device"} <= set(spec.options)


def test_openpose_whole_image_box_with_tiny_vitpose(tiny_vitpose):
    photo = _photo(90, 120)
    shown = preprocess("openpose", photo, model=tiny_vitpose, detector="none", keypoint_threshold=0.0)
    assert shown.mode == "RGB" and shown.size == photo.size
    assert np.asarray(shown).max() > 0
    nothing = preprocess("openpose", photo, model=tiny_vitpose, detector="none", keypoint_threshold=1.0)
    assert np.asarray(nothing).max() == 0
    keypose = preprocess("keypose", photo, model=tiny_vitpose, detector="none", keypoint_threshold=0.0)
    assert keypose.size == photo.size and np.asarray(keypose).max() > 0
    assert not np.array_equal(np.asarray(keypose), np.asarray(shown))


def test_openpose_with_tiny_person_detector(tiny_vitpose, tiny_rtdetr):
    from t2i_adapter.conditions.pose import detect_people

    photo = _photo(60, 80)
    boxes = detect_people(photo, tiny_rtdetr, threshold=0.0, device=None)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) >= 1
    assert (boxes[:, 2:] >= 1).all()
    assert (boxes[:, 0] >= -1).all() and (boxes[:, 0] + boxes[:, 2] <= 61).all()
    shown = preprocess(
        "openpose",
        photo,
        model=tiny_vitpose,
        detector=tiny_rtdetr,
        person_threshold=0.0,
        keypoint_threshold=0.0,
    )
    assert shown.size == photo.size and np.asarray(shown).max() > 0


def test_person_detector_without_person_class_is_an_error(tmp_path):
    from t2i_adapter.conditions.pose import detect_people

    folder = _tiny_rtdetr(tmp_path / "cars", {0: "car", 1: "truck"})
    with pytest.raises(T2IAdapterError, match="no 'person' class"):
        detect_people(_photo(), folder, threshold=0.5, device=None)


# ---------------------------------------------------------------------------------------------
# Segmentation (COCO-Stuff palette)
# ---------------------------------------------------------------------------------------------

_SEG_LABELS = {0: "person", 1: "wall-other-merged", 2: "sky-other-merged", 3: "no-such-class"}


@pytest.fixture(scope="session")
def tiny_mask2former(tmp_path_factory) -> str:
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        dim_feedforward=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        num_queries=8,
        id2label=_SEG_LABELS,
        label2id={name: i for i, name in _SEG_LABELS.items()},
    )
    folder = tmp_path_factory.mktemp("tiny-mask2former")
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 128}, size_divisor=32
    ).save_pretrained(folder)
    return str(folder)


def test_coco_stuff_palette_and_label_mapping():
    from t2i_adapter.conditions.segmentation import COCO_STUFF_LABELS, coco_stuff_id, coco_stuff_palette

    palette = coco_stuff_palette()
    assert palette.shape == (183, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == (0, 0, 0)  # unlabeled
    assert len({tuple(c) for c in palette}) == 183  # every class tells apart
    assert COCO_STUFF_LABELS[92] == "banner" and COCO_STUFF_LABELS[182] == "wood"
    assert coco_stuff_id("person") == 1
    assert coco_stuff_id("wall-other-merged") == COCO_STUFF_LABELS.index("wall-other")
    assert coco_stuff_id("ceiling-merged") == COCO_STUFF_LABELS.index("ceiling-other")
    assert coco_stuff_id("dining table") == 67
    assert coco_stuff_id("armchair") == 0  # an ADE20K class: unlabeled


def test_label_lookup_rejects_models_without_coco_classes():
    from t2i_adapter.conditions.segmentation import label_lookup

    lookup = label_lookup(_SEG_LABELS)
    assert lookup.tolist() == [1, 173, 157, 0]
    with pytest.raises(T2IAdapterError, match="COCO-Stuff"):
        label_lookup({0: "armchair", 1: "lamp"})


def test_seg_registry_wiring():
    spec = get_preprocessor("segmentation")
    assert spec.name == "seg" and spec.channels == 3 and spec.needs_weights


def test_seg_paints_only_palette_colours_at_input_size(tiny_mask2former):
    from t2i_adapter.conditions.segmentation import coco_stuff_palette

    allowed = {tuple(int(v) for v in coco_stuff_palette()[i]) for i in (0, 1, 173, 157)}
    photo = _photo(300, 140)
    result = preprocess("seg", photo, model=tiny_mask2former, detect_resolution=96)
    assert result.mode == "RGB" and result.size == photo.size
    colours = {tuple(int(v) for v in c) for c in np.asarray(result).reshape(-1, 3)}
    assert colours and colours <= allowed  # nearest-neighbour restore: no blended colours


def test_seg_colours_follow_the_predicted_classes(tiny_mask2former, monkeypatch):
    from t2i_adapter.conditions import segmentation

    classes = np.zeros((50, 70), dtype=np.int64)
    classes[:, 35:] = 2  # right half: sky
    monkeypatch.setattr(segmentation, "segment", lambda loaded, image: classes)
    result = np.asarray(preprocess("seg", _photo(70, 50), model=tiny_mask2former))
    palette = segmentation.coco_stuff_palette()
    assert tuple(result[10, 5]) == tuple(palette[1])  # person
    assert tuple(result[10, 60]) == tuple(palette[segmentation.COCO_STUFF_IDS["sky-other"]])


# ---------------------------------------------------------------------------------------------
# Learned sketch (PiDiNet)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def random_pidinet_checkpoint(tmp_path_factory) -> str:
    from t2i_adapter.conditions.edges import PiDiNet

    torch.manual_seed(0)
    state = {"module." + key: value for key, value in PiDiNet().state_dict().items()}  # as published
    path = tmp_path_factory.mktemp("pidinet") / "table5_pidinet.pth"
    torch.save({"epoch": 1, "state_dict": state}, path)
    return str(path)


@pytest.mark.parametrize("kind", ["cd", "ad", "rd"])
def test_pixel_difference_convs_ignore_flat_regions(kind):
    from t2i_adapter.conditions.edges import pixel_difference_conv

    torch.manual_seed(0)
    weight = torch.randn(2, 1, 3, 3)
    flat = torch.full((1, 1, 12, 12), 0.7)
    out = pixel_difference_conv(kind, flat, weight, None, 1, 1, 1)
    assert out.shape == (1, 2, 12, 12)
    assert out[..., 2:-2, 2:-2].abs().max() < 1e-5  # differences of a constant vanish
    plain = pixel_difference_conv("cv", flat, weight, None, 1, 1, 1)
    assert plain[..., 2:-2, 2:-2].abs().max() > 1e-3


def test_central_difference_matches_its_definition():
    from t2i_adapter.conditions.edges import pixel_difference_conv

    torch.manual_seed(1)
    weight, x = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 5, 5)
    out = pixel_difference_conv("cd", x, weight, None, 1, 1, 1)
    patch = x[0, 0, 1:4, 1:4]  # around pixel (2, 2)
    expected = (weight[0, 0] * (patch - patch[1, 1])).sum()
    assert out[0, 0, 2, 2].item() == pytest.approx(expected.item(), abs=1e-5)


def test_pidinet_has_the_papers_size_and_five_outputs():
    from t2i_adapter.conditions.edges import PiDiNet

    network = PiDiNet().eval()
    assert sum(p.numel() for p in network.parameters()) == 710_149  # "PiDiNet: 710K parameters"
    with torch.no_grad():
        outputs = network(torch.rand(1, 3, 37, 53))
    assert len(outputs) == 5 and all(o.shape == (1, 1, 37, 53) for o in outputs)
    assert all(o.min() >= 0.0 and o.max() <= 1.0 for o in outputs)


def test_pidinet_sketch_is_binary_white_on_black(random_pidinet_checkpoint):
    spec = get_preprocessor("learned_sketch")
    assert spec.name == "pidinet" and spec.channels == 1 and spec.needs_weights
    photo = _photo(90, 70)
    sketch = preprocess("pidinet", photo, model=random_pidinet_checkpoint)
    values = set(np.unique(np.asarray(sketch)).tolist())
    assert sketch.mode == "L" and sketch.size == photo.size
    assert values == {0, 255}
    soft = np.asarray(preprocess("pidinet", photo, model=random_pidinet_checkpoint, binary="false"))
    assert len(np.unique(soft)) > 2


def test_pidinet_rejects_other_checkpoints(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(InputFileError, match="not a table5 PiDiNet checkpoint"):
        preprocess("pidinet", _photo(), model=str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputFileError, match="not a readable PiDiNet checkpoint"):
        preprocess("pidinet", _photo(), model=str(tmp_path / "junk.pth"))


def test_pidinet_hub_file_resolves_from_the_cache_offline(tmp_path, random_pidinet_checkpoint, monkeypatch):
    import shutil

    import huggingface_hub.constants

    folder = tmp_path / "annotators"
    folder.mkdir()
    shutil.copy(random_pidinet_checkpoint, folder / "table5_pidinet.pth")
    _fake_hub_cache(tmp_path / "hub", "tiny-org/annotators", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    photo = _photo(40, 30)
    from_hub = np.asarray(preprocess("pidinet", photo, model="tiny-org/annotators/table5_pidinet.pth"))
    from_disk = np.asarray(preprocess("pidinet", photo, model=random_pidinet_checkpoint))
    np.testing.assert_array_equal(from_hub, from_disk)


def test_pidinet_missing_hub_file_is_a_clear_error_offline():
    with pytest.raises(MissingWeightsError, match="nobody-here/annotators/table5_pidinet.pth.*--cond-model"):
        preprocess("pidinet", _photo(), model="nobody-here/annotators/table5_pidinet.pth")


def test_seg_also_takes_semantic_segmentation_models(tmp_path):
    from t2i_adapter.conditions.segmentation import coco_stuff_palette
    from tiny_models import save_tiny_segformer

    labels = {0: "grass", 1: "road", 2: "lamp"}  # lamp: no COCO-Stuff class, stays black
    save_tiny_segformer(tmp_path, labels)
    palette = coco_stuff_palette()
    allowed = {tuple(int(v) for v in palette[i]) for i in (0, 124, 149)}  # unlabeled, grass, road
    result = preprocess("seg", _photo(80, 60), model=str(tmp_path))
    colours = {tuple(int(v) for v in c) for c in np.asarray(result).reshape(-1, 3)}
    assert result.size == (80, 60) and colours and colours <= allowed
