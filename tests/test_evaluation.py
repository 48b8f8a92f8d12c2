"""The controllability evaluation: metrics on known cases, re-extraction through the preprocessors,
CLIP/FID/KID with tiny stand-ins, the runner's picture cache, the report and the CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models
from t2i_adapter.conditions import model_loading
from t2i_adapter.conditions.registry import preprocess
from t2i_adapter.errors import InputFileError, MissingWeightsError, T2IAdapterError, UnknownNameError
from t2i_adapter.evaluation import (
    EvalSample,
    EvalSettings,
    Variant,
    baseline,
    image_quality,
    metrics,
    run_evaluation,
)
from t2i_adapter.evaluation.metrics import IGNORE_LABEL, Person, SegmentationTally
from t2i_adapter.evaluation.reextract import Reextractor
from t2i_adapter.evaluation.runner import plan_metrics


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    model_loading.free_models()
    yield
    model_loading.free_models()


def _photo(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    """Blocks of colour (edges for canny) with a little noise."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), 230, dtype=np.uint8)
    for _ in range(3):
        x, y = rng.integers(0, width - 16), rng.integers(0, height - 16)
        pixels[y : y + 16, x : x + 16] = rng.integers(0, 200, 3)
    return Image.fromarray(pixels, mode="RGB")


# ---------------------------------------------------------------------------------------------
# Metrics on known cases
# ---------------------------------------------------------------------------------------------


def test_edge_f1_is_per_pixel_by_default():
    target = np.zeros((16, 16), dtype=bool)
    target[4, 2:12] = True
    assert metrics.edge_f1(target, target) == 1.0
    assert metrics.edge_f1(np.zeros_like(target), target) == 0.0
    assert metrics.edge_f1(np.roll(target, 8, axis=0), target) == 0.0
    shifted = np.roll(target, 1, axis=0)
    assert metrics.edge_f1(shifted, target) == 0.0  # ControlNet++'s F1 has no tolerance
    assert metrics.edge_f1(shifted, target, tolerance=1) == 1.0
    half = target.copy()
    half[4, 7:12] = False  # precision 1, recall 5/10
    assert metrics.edge_f1(half, target) == pytest.approx(2 / 3)


def test_ssim_known_cases():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    assert metrics.ssim(texture, texture) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(255 - texture, texture) < -0.5  # the negative of a picture: anti-correlated
    # Two flat maps: only the luminance term is left, (2 a b + C1) / (a^2 + b^2 + C1), C1 = 0.01^2.
    dark, grey = np.full((32, 32), 64, np.uint8), np.full((32, 32), 128, np.uint8)
    a, b, c1 = 64 / 255, 128 / 255, 0.01**2
    assert metrics.ssim(dark, grey) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-4)
    colour = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    assert metrics.ssim(colour, colour) == pytest.approx(1.0, abs=1e-6)


def test_rmse_and_its_scale_and_shift_invariant_form():
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 200, (16, 16)).astype(np.float64)
    assert metrics.rmse(depth, depth) == 0.0
    assert metrics.rmse(depth + 10, depth) == pytest.approx(10.0)
    squeezed = 0.5 * depth + 20  # the same layout in another range
    assert metrics.rmse(squeezed, depth) > 20
    assert metrics.aligned_rmse(squeezed, depth) == pytest.approx(0.0, abs=1e-9)
    flipped = 255 - depth  # far and near swapped: a scale of -1 fits it too
    assert metrics.aligned_rmse(flipped, depth) == pytest.approx(0.0, abs=1e-9)
    noise = rng.normal(0, 5, depth.shape)
    assert metrics.aligned_rmse(depth + noise, depth) <= metrics.rmse(depth + noise, depth)


def test_mean_iou_is_summed_over_the_set():
    target = np.zeros((4, 4), dtype=int)
    target[:, 2:] = 1  # left half class 0, right half class 1
    tally = SegmentationTally()
    tally.add(target, target)
    assert tally.mean_iou() == 1.0
    disjoint = SegmentationTally()
    disjoint.add(np.full((4, 4), 5), target)
    assert disjoint.mean_iou() == 0.0
    half = SegmentationTally()
    half.add(np.zeros((4, 4), dtype=int), target)  # everything predicted as class 0
    assert half.class_iou() == {0: 0.5, 1: 0.0}
    assert half.mean_iou() == 0.25
    ignored = target.copy()
    ignored[:, 2:] = IGNORE_LABEL  # unlabeled pixels do not count
    assert metrics.image_mean_iou(np.zeros((4, 4), dtype=int), ignored) == 1.0
    # Over the set, intersections and unions add up before dividing (not a mean of image IoUs).
    tally.add(np.zeros((4, 4), dtype=int), target)
    assert tally.class_iou()[1] == pytest.approx(8 / 16)


def _person(offset: float = 0.0) -> Person:
    points = np.stack([np.linspace(10, 90, 17), np.linspace(20, 120, 17)], axis=1)  # box 80 x 100
    return Person(keypoints=points + offset, visible=np.ones(17, dtype=bool))


def test_pck_and_oks_known_cases():
    truth = [_person()]
    assert metrics.keypoint_pck([_person()], truth) == 1.0
    assert metrics.keypoint_oks([_person()], truth) == pytest.approx(1.0)
    assert metrics.keypoint_pck([], truth) == 0.0
    assert metrics.keypoint_oks([], truth) == 0.0
    far = [_person(500.0)]
    assert metrics.keypoint_pck(far, truth) == 0.0
    assert metrics.keypoint_oks(far, truth) < 1e-6
    # A shift of (6, 8): 10 px, inside PCK@0.1 of a 100 px box; OKS from COCO's formula.
    shifted = [Person(_person().keypoints + np.array([6.0, 8.0]), np.ones(17, dtype=bool))]
    assert metrics.keypoint_pck(shifted, truth) == 1.0
    assert metrics.keypoint_pck(shifted, truth, alpha=0.09) == 0.0
    expected = np.mean(np.exp(-100.0 / (2 * 80 * 100 * (2 * metrics.COCO_KEYPOINT_SIGMAS) ** 2)))
    assert metrics.keypoint_oks(shifted, truth) == pytest.approx(expected)
    hidden = Person(_person().keypoints, np.arange(17) < 5)  # only 5 keypoints found
    assert metrics.keypoint_pck([hidden], truth) == pytest.approx(5 / 17)


def test_clip_score_known_angles():
    x, y = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert metrics.clip_score(x, x)[0] == pytest.approx(100.0)
    assert metrics.clip_score(x, y)[0] == pytest.approx(0.0)
    assert metrics.clip_score(x, -x)[0] == 0.0  # clamped, as torchmetrics does
    sixty = np.array([[0.5, math.sqrt(3) / 2]])
    assert metrics.clip_score(3 * x, sixty)[0] == pytest.approx(50.0)


def test_fid_and_kid_known_cases():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 4))
    assert image_quality.frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0])  # same covariance, means 5^0.5 apart: FID = |shift|^2
    assert image_quality.frechet_distance(real, real + shift) == pytest.approx(5.0, abs=1e-6)
    same = image_quality.kernel_distance(real, rng.normal(size=(400, 4)))
    moved = image_quality.kernel_distance(real, real + shift)
    assert abs(same) < 50 and moved > 1000
    assert image_quality.kernel_distance(real, real + shift) == moved  # seeded subsets: reproducible


# ---------------------------------------------------------------------------------------------
# Re-extraction through the preprocessors
# ---------------------------------------------------------------------------------------------


def test_seg_colours_decode_back_to_their_ids():
    from t2i_adapter.conditions.segmentation import colorize, decolorize

    ids = np.arange(0, 183).reshape(3, 61)
    assert np.array_equal(decolorize(colorize(ids)), ids)
    odd = Image.new("RGB", (2, 2), (1, 2, 3))  # not a palette colour
    assert (decolorize(odd) == -1).all()
    truth = Reextractor("seg").truth(colorize(ids), None)
    assert (truth[0, 0] == IGNORE_LABEL) and truth[0, 1] == 1  # unlabeled is ignored


def test_canny_reads_back_with_the_preprocessors_thresholds():
    photo = _photo()
    reextractor = Reextractor("canny")
    truth = reextractor.truth(preprocess("canny", photo), photo)
    assert metrics.edge_f1(reextractor.predict(photo, photo.size) > 127, truth > 127) == 1.0
    strict = Reextractor("canny", {"low_threshold": "900", "high_threshold": "1000"})
    assert strict.options == {"low_threshold": 900, "high_threshold": 1000}
    assert strict.predict(photo, photo.size).sum() < reextractor.predict(photo, photo.size).sum()
    with pytest.raises(UnknownNameError, match="canny option"):
        Reextractor("canny", {"model": "x"})


def test_depth_reads_back_through_the_preprocessors_model(tmp_path, monkeypatch):
    folder = str(tiny_models.save_tiny_dpt(tmp_path / "dpt"))
    photo = _photo(seed=3)
    reextractor = Reextractor("depth", {"model": folder})
    truth = reextractor.truth(preprocess("depth", photo, model=folder), photo)
    assert truth.min() == 0 and truth.max() == 255  # min-max normalised to 8 bits
    predicted = reextractor.predict(photo, photo.size)
    assert metrics.rmse(predicted, truth) == 0.0
    assert metrics.rmse(reextractor.predict(_photo(seed=9), photo.size), truth) > 1.0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = Reextractor("depth", {"model": "nobody/no-such-depth-model"})
    with pytest.raises(MissingWeightsError, match="nobody/no-such-depth-model"):
        missing.predict(photo, photo.size)


def test_pose_truth_comes_from_the_photo(tmp_path):
    folder = str(tiny_models.save_tiny_vitpose(tmp_path / "vitpose"))
    photo = _photo(64, 96, seed=4)
    reextractor = Reextractor("openpose", {"model": folder, "detector": "none", "keypoint_threshold": "0"})
    truth = reextractor.truth(None, photo)
    assert len(truth) == 1 and truth[0].visible.all()
    predicted = reextractor.predict(photo, photo.size)
    assert metrics.keypoint_pck(predicted, truth) == 1.0
    assert metrics.keypoint_oks(predicted, truth) == pytest.approx(1.0)
    with pytest.raises(T2IAdapterError, match="needs the dataset's photos"):
        reextractor.truth(Image.new("RGB", (64, 96)), None)


def test_conditions_without_a_reextractor_are_a_clear_error():
    with pytest.raises(T2IAdapterError, match="cannot be read back"):
        Reextractor("none")
    settings = EvalSettings(model="m", cond_types=["none"], variants=[baseline()], metrics=["clip"])
    assert plan_metrics(settings) == [(-1, "clip")]  # picture metrics still work


def test_metrics_default_to_the_condition_type():
    def plan(cond_types, requested=None):
        settings = EvalSettings(model="m", cond_types=cond_types, variants=[baseline()], metrics=requested)
        return plan_metrics(settings)

    assert plan(["canny"]) == [(0, "f1")]
    assert plan(["xdog"]) == [(0, "ssim")]  # an alias of sketch
    assert plan(["depth"]) == [(0, "rmse"), (0, "si_rmse")]
    assert plan(["seg"]) == [(0, "miou")]
    assert plan(["pose"]) == [(0, "pck"), (0, "oks")]
    assert plan(["canny", "depth"], ["ssim", "fid"]) == [(0, "ssim"), (1, "ssim"), (-1, "fid")]
    with pytest.raises(T2IAdapterError, match="metric 'miou' does not apply"):
        plan(["canny"], ["miou"])
    with pytest.raises(UnknownNameError, match="metric"):
        plan(["canny"], ["psnr"])


# ---------------------------------------------------------------------------------------------
# CLIP score and Inception features with tiny stand-ins
# ---------------------------------------------------------------------------------------------


def test_clip_score_uses_the_transformers_clip_model(tmp_path):
    folder = str(tiny_models.save_tiny_clip(tmp_path / "clip", seed=1))
    scorer = image_quality.ClipScorer(folder)
    pictures = [Image.new("RGB", (40, 40), color) for color in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    prompts = ["a red circle", "a blue square", "green"]
    scores = scorer(pictures, prompts)
    pixels = scorer.loaded.processor(images=pictures, return_tensors="pt")["pixel_values"]
    text = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = scorer.loaded.model(pixel_values=pixels, **text)
    cosine = torch.diagonal(out.logits_per_image) / scorer.loaded.model.logit_scale.exp()
    assert scores == pytest.approx((100 * cosine.clamp(min=0)).tolist(), abs=1e-4)
    assert max(scores) > 0


def test_inception_from_a_file_or_a_clear_error(tmp_path, monkeypatch):
    path = tiny_models.save_tiny_inception(tmp_path / "inception.pt")
    network = image_quality.load_inception(str(path))
    features = network([_photo(seed=1), _photo(80, 50, seed=2)])
    assert features.shape == (2, 8) and np.isfinite(features).all()
    with pytest.raises(InputFileError, match="TorchScript"):
        image_quality.load_inception(str(tmp_path / "missing.pt"))
    (tmp_path / "broken.pt").write_bytes(b"not a network")
    with pytest.raises(InputFileError, match="not a TorchScript"):
        image_quality.load_inception(str(tmp_path / "broken.pt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="inception-2015-12-05.pt.*offline"):
        image_quality.load_inception(None)


# ---------------------------------------------------------------------------------------------
# The runner: pictures cached, every variant on the same seeds, the report
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny SD model, a 1-channel adapter, and a training run folder with two checkpoints of it."""
    from t2i_adapter.adapters.spatial import describe_spatial_adapter
    from t2i_adapter.training import checkpointing

    root = tmp_path_factory.mktemp("tiny-run")
    tiny_models.save_tiny_sd(root / "model")
    tiny_models.tiny_adapter(1).save_pretrained(root / "adapter")
    for step, seed in ((10, 1), (20, 2)):
        folder = root / "run" / checkpointing.CHECKPOINTS / f"step-{step:08d}"
        folder.mkdir(parents=True)
        adapter = describe_spatial_adapter(tiny_models.tiny_adapter(1, seed=seed))
        checkpointing.write_adapter_files(adapter, folder, original_layout=False)
        torch.save({"step": step}, folder / checkpointing.STATE_FILE)
    return root


def _sketch_samples(num: int) -> list[EvalSample]:
    photos = [_photo(seed=seed) for seed in range(num)]
    return [
        EvalSample(f"s{i}", f"picture {i}", [preprocess("sketch", photo)], image=photo)
        for i, photo in enumerate(photos)
    ]


def test_resume_reads_pictures_back_and_a_new_metric_does_not_regenerate(tiny_run, tmp_path, monkeypatch):
    from t2i_adapter.evaluation import runner

    calls = []
    original = runner.generate
    monkeypatch.setattr(runner, "generate", lambda *a, **k: calls.append(1) or original(*a, **k))
    variants = [baseline(), Variant("adapter", (str(tiny_run / "adapter"),))]
    settings = EvalSettings(
        model=str(tiny_run / "model"), cond_types=["sketch"], variants=variants, steps=2, images_per_cond=2
    )
    samples = _sketch_samples(3)
    first = run_evaluation(settings, samples, out_dir=tmp_path)
    assert len(calls) == 6 and first.generated == 12 and first.reused == 0
    assert len(first.rows) == 12 and {row["seed"] for row in first.rows} == {0, 1, 2}

    clip = str(tiny_models.save_tiny_clip(tmp_path / "clip"))
    inception = str(tiny_models.save_tiny_inception(tmp_path / "inception.pt"))
    settings.metrics, settings.clip_model, settings.fid_model = (
        ["ssim", "rmse", "clip", "fid", "kid"],
        clip,
        inception,
    )
    again = run_evaluation(settings, samples, out_dir=tmp_path)
    assert len(calls) == 6 and again.reused == 12  # nothing generated: only new scores
    for variant in ("no adapter", "adapter"):
        assert again.summary[variant]["ssim/sketch"] == pytest.approx(first.summary[variant]["ssim/sketch"])
        assert {"rmse/sketch", "clip", "fid", "kid"} <= set(again.summary[variant])
    assert again.summary["no adapter"]["fid"] != again.summary["adapter"]["fid"]

    settings.seed = 5  # other seeds: other pictures
    run_evaluation(settings, samples[:1], out_dir=tmp_path)
    assert len(calls) == 8


def test_checkpoints_of_a_run_are_compared_and_charted_by_step(tiny_run, tmp_path):
    from t2i_adapter.evaluation.report import write_report
    from t2i_adapter.training.evaluation import checkpoint_variants

    steps = checkpoint_variants(str(tiny_run / "run"))
    assert [(v.label, v.step) for v in steps] == [("step 10", 10), ("step 20", 20)]
    one = checkpoint_variants(str(tiny_run / "run" / "checkpoints" / "step-00000020"))
    assert [v.label for v in one] == ["step 20"]
    settings = EvalSettings(
        model=str(tiny_run / "model"), cond_types=["sketch"], variants=[baseline(), *steps], steps=2
    )
    result = run_evaluation(settings, _sketch_samples(2), out_dir=tmp_path)
    files = write_report(result, tmp_path)
    assert set(files) == {"report", "grid", "samples", "summary", "steps"}
    chart = Image.open(files["steps"])
    assert chart.width > 400 and chart.height >= 200
    text = files["report"].read_text()
    assert "| SSIM, sketch ↑ |" in text and "metrics_by_step.png" in text
    summary = json.loads(files["summary"].read_text())
    assert summary["steps"] == {"no adapter": None, "step 10": 10, "step 20": 20}
    with open(files["samples"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {row["variant"] for row in rows} == {"no adapter", "step 10", "step 20"}
    # the two checkpoints differ, so their pictures (same seeds) differ
    assert summary["summary"]["step 10"]["ssim/sketch"] != summary["summary"]["step 20"]["ssim/sketch"]


def test_report_sets_published_figures_beside_matching_metrics():
    from t2i_adapter.evaluation.report import _protocol_notes, table
    from t2i_adapter.evaluation.runner import EvalResult

    settings = EvalSettings(model="sd15", cond_types=["canny"], variants=[baseline()], data="my.jsonl")
    result = EvalResult(
        settings=settings,
        rows=[],
        summary={"no adapter": {"f1/canny": 0.1, "clip": 25.0}},
        class_iou={},
        metric_keys=["f1/canny", "clip"],
        resolution=512,
        base_family="sd15",
        num_samples=10,
    )
    text = table(result)
    assert "published, T2I-Adapter SD1.5" in text
    assert "| F1 (per pixel), canny ↑ | 0.100 | 0.2365 (MultiGen-20M canny eval) |" in text
    assert "| CLIP score ↑ | 25.00 |  |" in text
    notes = "\n".join(_protocol_notes(result))
    assert "1 image(s) per condition (published: 4)" in notes and "sampler ddim" in notes
    assert "20 steps" not in notes  # what matches is not listed
    result.base_family = None  # the demo model, or an unknown family: no published column
    assert "published" not in table(result) and _protocol_notes(result) == []


def test_dataset_samples_from_the_training_formats(tmp_path):
    from t2i_adapter.training.evaluation import dataset_samples

    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        _photo(80, 64, seed=index).save(folder / f"p{index}.png")
        (folder / f"p{index}.txt").write_text(f"caption {index}\n")
    computed = dataset_samples(str(folder), ["canny"], 2)
    assert [s.prompt for s in computed] == ["caption 0", "caption 1"]
    assert computed[0].conditions == [None] and computed[0].image.size == (80, 64)  # made at eval size
    for index in range(3):
        preprocess("sketch", _photo(80, 64, seed=index)).save(folder / f"p{index}.sketch.png")
    given = dataset_samples(str(folder), ["sketch"], 10)
    assert len(given) == 3 and given[2].conditions[0].mode == "L"
    lines = [
        json.dumps(
            {"image": f"photos/p{i}.png", "conditioning_image": f"photos/p{i}.sketch.png", "text": f"j{i}"}
        )
        for i in range(3)
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    from_jsonl = dataset_samples(str(tmp_path / "data.jsonl"), ["sketch"], 10)
    assert [s.prompt for s in from_jsonl] == ["j0", "j1", "j2"]
    assert np.array_equal(np.asarray(from_jsonl[1].conditions[0]), np.asarray(given[1].conditions[0]))


# ---------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metric", "psnr"], "unknown metric 'psnr'"),
        (["--metric", "miou"], "metric 'miou' does not apply"),
        (["--cond-type", "depth"], "2 --cond-type"),
    ],
)
def test_evaluate_cli_refuses_bad_metrics_in_one_line(extra, message, capsys):
    from t2i_adapter.interfaces.cli.main import main

    args = ["evaluate", "--model", "demo", "--adapter", "demo:sketch", "--cond-type", "sketch", "--num", "1"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(
    not __import__("t2i_adapter.demo_weights", fromlist=["x"]).demo_weights_available(),
    reason="demo weights not shipped",
)
def test_compare_on_the_demo_world_ranks_the_sketch_adapter_above_the_baseline(tmp_path, capsys):
    from t2i_adapter.interfaces.cli.main import main

    args = ["evaluate", "--model", "demo", "--adapter", "demo:sketch", "--cond-type", "sketch", "--compare",
            "demo:color", "--num", "6", "--steps", "10", "--metric", "shapes", "--metric", "ssim",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert list(summary) == ["no adapter", "demo:sketch", "demo:color"]
    plain, sketch = summary["no adapter"], summary["demo:sketch"]
    assert sketch["mask_iou"] >= plain["mask_iou"] + 0.3
    assert sketch["edge_f1"] >= plain["edge_f1"] + 0.3
    assert sketch["ssim/sketch"] > plain["ssim/sketch"]
    printed = capsys.readouterr().out
    assert "| object mask IoU |" in printed and f"report: {tmp_path / 'report.md'}" in printed


@pytest.mark.slow
def test_training_evaluates_every_n_steps_into_tensorboard(tiny_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from t2i_adapter.training import TrainConfig, train
    from test_data_formats import write_folder

    data = write_folder(tmp_path / "data", 4)  # no sketch files: the sketch preprocessor computes them
    config = TrainConfig(
        model=str(tiny_run / "model"), data=str(data), output_dir=str(tmp_path / "run"), cond_type="sketch",
        resolution=64, batch_size=2, lr=1e-2, lr_warmup_steps=0, max_steps=2, checkpoint_every=0,
        cache_latents=True, progress=False, eval_every=1, eval_num=2, eval_steps=2,
    )  # fmt: skip
    out = train(config)
    summaries = [
        json.loads((out / "evaluation" / f"step-{step:08d}" / "summary.json").read_text())["summary"]
        for step in (1, 2)
    ]
    assert summaries[0]["no adapter"] == summaries[1]["no adapter"]  # the baseline, generated once
    assert summaries[0]["step 1"]["ssim/sketch"] != summaries[1]["step 2"]["ssim/sketch"]  # it trained
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("eval/ssim/sketch")]
    assert logged == [
        (1, pytest.approx(summaries[0]["step 1"]["ssim/sketch"])),
        (2, pytest.approx(summaries[1]["step 2"]["ssim/sketch"])),
    ]
    assert "eval_baseline/ssim/sketch" in events.Tags()["scalars"]


def test_seg_is_scored_over_the_set_with_per_class_iou(tiny_run, tmp_path):
    from t2i_adapter.conditions.segmentation import COCO_STUFF_IDS, colorize
    from t2i_adapter.evaluation.report import write_report

    labels = {0: "person", 1: "sky-other", 2: "grass"}
    segmenter = str(tiny_models.save_tiny_segformer(tmp_path / "segformer", labels))
    ids = np.full((64, 64), COCO_STUFF_IDS["sky-other"])
    ids[:, :24] = COCO_STUFF_IDS["person"]
    ids[:8] = 0  # unlabeled: not scored
    samples = [EvalSample(f"s{i}", f"a person {i}", [colorize(ids)]) for i in range(2)]
    settings = EvalSettings(
        model=str(tiny_run / "model"), cond_types=["seg"], variants=[baseline()], steps=2,
        cond_options=[{"model": segmenter}],
    )  # fmt: skip
    result = run_evaluation(settings, samples)
    assert [key for key in result.summary["no adapter"]] == ["miou/seg"]
    per_class = result.class_iou["no adapter"]["seg"]
    assert set(per_class) <= {COCO_STUFF_IDS[name] for name in labels.values()}
    assert result.summary["no adapter"]["miou/seg"] == pytest.approx(np.mean(list(per_class.values())))
    text = write_report(result, tmp_path / "report")["report"].read_text()
    assert "Per-class IoU (seg):" in text and "| person |" in text


def test_evaluate_cli_eta_and_loras_reach_every_generation_and_the_report(tiny_run, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from t2i_adapter.evaluation import runner
    from t2i_adapter.generation.settings import LoraSpec
    from t2i_adapter.interfaces.cli.main import main
    from test_loras import kohya_lora

    save_file(kohya_lora(tiny_models.tiny_sd_base_model(), 1), str(tmp_path / "style.safetensors"))
    seen = []
    original = runner.generate

    def spy(settings, **kwargs):
        result = original(settings, **kwargs)
        seen.append((settings, np.asarray(result.images[0]).astype(np.int16)))
        return result

    monkeypatch.setattr(runner, "generate", spy)
    monkeypatch.chdir(tmp_path)  # the relative LoRA path is recorded absolute
    args = ["evaluate", "--model", str(tiny_run / "model"), "--adapter", str(tiny_run / "adapter"),
            "--cond-type", "sketch", "--no-baseline", "--num", "1", "--steps", "2", "--scheduler", "tcd",
            "--device", "cpu", "--lora", "style.safetensors:0.5"]  # fmt: skip
    for eta in ("0", "1"):
        assert main([*args, "--eta", eta, "--out", str(tmp_path / eta)]) == 0
    lora = LoraSpec(str(tmp_path / "style.safetensors"), 0.5)
    assert [(s.eta, s.loras, s.scheduler) for s, _ in seen] == [(0.0, [lora], "tcd"), (1.0, [lora], "tcd")]
    assert np.abs(seen[0][1] - seen[1][1]).mean() > 1  # TCD's gamma changes the pictures
    recorded = json.loads((tmp_path / "1" / "summary.json").read_text())["settings"]
    assert recorded["eta"] == 1.0 and recorded["loras"] == [
        {"path": str(tmp_path / "style.safetensors"), "scale": 0.5}
    ]
    report = (tmp_path / "1" / "report.md").read_text()
    assert f"tcd (eta 1, LoRA {tmp_path / 'style.safetensors'} at 0.5)" in report
