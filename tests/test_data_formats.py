"""Training data: the five formats, transforms, the sample order, and the data check.

The `write_*` builders here are also used by test_training.py: 10 small samples per format.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.interfaces.cli.main import main as cli
from t2i_adapter.training.check import check_dataset
from t2i_adapter.training.data import StreamSource, detect_format, open_dataset
from t2i_adapter.training.data.order import epoch_permutation, micro_batch_positions, record_at
from t2i_adapter.training.data.transforms import prepare_example, resize_and_crop

TAG = "edge"  # not a registered preprocessor: conditions must come from the files
SIZES = [(64, 64), (80, 64), (64, 96), (72, 72), (96, 64)]  # (width, height): odd shapes on purpose


def make_samples(count: int = 10, seed: int = 0) -> list[tuple[Image.Image, Image.Image, str]]:
    """(image, condition, caption): a coloured rectangle on grey; the condition is its outline mask."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        pixels = np.full((height, width, 3), 128, dtype=np.uint8)
        mask = np.zeros((height, width), dtype=np.uint8)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        colour = rng.integers(0, 256, 3)
        pixels[top : top + height // 3, left : left + width // 3] = colour
        mask[top : top + height // 3, left : left + width // 3] = 255
        samples.append((Image.fromarray(pixels), Image.fromarray(mask, mode="L"), f"a box number {index}"))
    return samples


def write_folder(folder: Path, count: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, (image, condition, caption) in enumerate(make_samples(count)):
        image.save(folder / f"s{index:02d}.png")
        condition.save(folder / f"s{index:02d}.{TAG}.png")
        (folder / f"s{index:02d}.txt").write_text(caption + "\nsecond line is ignored\n")
    return folder


def write_meta(root: Path, count: int = 10) -> Path:
    write_folder(root / "images", count)
    lines = ["# a comment", ""] + [f"images/s{i:02d}.png" for i in range(count)]
    (root / "meta.txt").write_text("\n".join(lines) + "\n")
    return root / "meta.txt"


def write_jsonl(root: Path, count: int = 10) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (image, condition, caption) in enumerate(make_samples(count)):
        image.save(root / "img" / f"{index}.jpg", quality=95)
        condition.save(root / "img" / f"{index}.cond.png")
        lines.append(
            json.dumps({"image": f"img/{index}.jpg", "condition": f"img/{index}.cond.png", "text": caption})
        )
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root / "data.jsonl"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(root: Path, count: int = 10, shards: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    samples = make_samples(count)
    for shard in range(shards):
        with tarfile.open(root / f"shard-{shard:04d}.tar", "w") as tar:
            for index in range(shard, count, shards):
                image, condition, caption = samples[index]
                for name, data in (
                    (f"{index:06d}.png", _png(image)),
                    (f"{index:06d}.{TAG}.png", _png(condition)),
                    (f"{index:06d}.txt", caption.encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def write_hf(root: Path, count: int = 10) -> Path:
    import datasets

    samples = make_samples(count)
    features = datasets.Features(
        {"image": datasets.Image(), "conditioning_image": datasets.Image(), "text": datasets.Value("string")}
    )
    table = {
        "image": [s[0] for s in samples],
        "conditioning_image": [s[1] for s in samples],
        "text": [s[2] for s in samples],
    }
    datasets.Dataset.from_dict(table, features=features).save_to_disk(str(root))
    return root


WRITERS = {
    "meta": lambda root: write_meta(root),
    "folder": lambda root: write_folder(root / "folder"),
    "jsonl": lambda root: write_jsonl(root),
    "webdataset": lambda root: write_shards(root / "shards"),
    "hf": lambda root: write_hf(root / "hf"),
}


def write_dataset(kind: str, root: Path) -> Path:
    return Path(WRITERS[kind](root))


def stream_examples(source: StreamSource) -> list:
    return [source.decode(raw) for shard in source.shards for raw in source.read_shard(shard)]


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_format_reads_ten_samples_with_captions_and_conditions(tmp_path, kind):
    path = write_dataset(kind, tmp_path)
    assert detect_format(str(path)) == kind
    cond_type = TAG if kind != "jsonl" else None
    source = open_dataset(path, cond_type=cond_type)
    examples = stream_examples(source) if source.streamed else [source.load(i) for i in range(len(source))]
    assert len(examples) == 10
    assert not source.computes_condition
    assert source.condition_channels == 1  # grey condition maps
    expected = {caption for _, _, caption in make_samples()}
    assert {example.caption for example in examples} == expected  # first line only
    for example in examples:
        assert example.image.mode == "RGB"
        assert example.condition is not None and example.condition.size == example.image.size


def test_folder_infers_the_tag_and_computes_conditions_for_a_preprocessor(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for index, (image, _, caption) in enumerate(make_samples(4)):
        image.save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(caption)
    source = open_dataset(folder, cond_type="canny")
    assert source.computes_condition and source.condition_channels == 1
    assert source.load(0).condition is None  # made from the cropped image at training time
    with pytest.raises(T2IAdapterError, match="pass --cond-type"):
        open_dataset(folder)
    # An unknown condition name with no files: every sample is reported, none is usable.
    report = check_dataset(open_dataset(folder, cond_type="no-such-condition"))
    assert report.usable == 0 and len(report.problems) == 4
    assert all("no-such-condition.png: no such file" in p for _, p in report.problems)
    # The tag is found from the files when there is one.
    assert open_dataset(write_folder(tmp_path / "tagged")).cond_type == TAG


def test_meta_file_without_cond_type_is_a_clear_error(tmp_path):
    with pytest.raises(T2IAdapterError, match="needs --cond-type"):
        open_dataset(write_meta(tmp_path))


def test_webdataset_order_is_seeded_and_covers_every_sample(tmp_path):
    source = open_dataset(write_shards(tmp_path / "shards"), cond_type=TAG)
    first = [raw.key for raw in source.raw_samples(epoch=0, seed=1)]
    assert sorted(first) == [f"{i:06d}" for i in range(10)]
    assert first == [raw.key for raw in source.raw_samples(epoch=0, seed=1)]
    assert first != [raw.key for raw in source.raw_samples(epoch=1, seed=1)]


# ---------------------------------------------------------------------------------------------
# Transforms and order
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("center_crop", [True, False])
def test_condition_gets_exactly_the_image_transform(center_crop):
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (90, 150, 3), dtype=np.uint8))
    for seed in range(6):
        out_image, out_condition, (top, left) = resize_and_crop(
            image, image.copy(), 64, center_crop=center_crop, random_flip=True, rng=random.Random(seed)
        )
        assert out_image.size == out_condition.size == (64, 64)
        assert top == 0 and 0 <= left <= 107 - 64  # 150x90 -> 107x64, cropped along the long side
        # Same geometry: the condition (same content, resized with its own filter) stays close.
        diff = np.abs(np.asarray(out_image, dtype=int) - np.asarray(out_condition, dtype=int)).mean()
        assert diff < 12


def test_condition_of_another_size_is_resized_to_the_image_first():
    image = Image.new("RGB", (128, 96), (10, 20, 30))
    condition = Image.new("L", (64, 48), 200)
    _, out_condition, _ = resize_and_crop(
        image, condition, 64, center_crop=True, random_flip=False, rng=random.Random(0)
    )
    assert out_condition.size == (64, 64)


def test_prepare_example_ranges_and_micro_conditioning(tmp_path):
    source = open_dataset(write_folder(tmp_path / "f"), cond_type=TAG)
    prepared = prepare_example(
        source.load(2),
        resolution=64,
        condition_channels=1,
        center_crop=True,
        random_flip=False,
        rng=random.Random(0),
    )
    assert prepared.pixels.shape == (3, 64, 64) and prepared.condition.shape == (1, 64, 64)
    assert prepared.pixels.min() >= -1.0 and prepared.pixels.max() <= 1.0
    assert prepared.condition.min() >= 0.0 and prepared.condition.max() == 1.0
    assert prepared.original_size == (96, 64)  # (height, width) of the 64x96 file
    assert prepared.crop_top_left == (16, 0)


def test_sample_order_is_a_function_of_position_only():
    assert sorted(epoch_permutation(10, 5, 0).tolist()) == list(range(10))
    assert epoch_permutation(10, 5, 0).tolist() != epoch_permutation(10, 5, 1).tolist()
    epoch, index = record_at(23, 10, 5)
    assert epoch == 2 and index == int(epoch_permutation(10, 5, 2)[3])
    # 2 processes x batch 2 cover the same positions as 1 process x batch 4
    two = micro_batch_positions(8, 0, 2, 2, 0) + micro_batch_positions(8, 0, 2, 2, 1)
    assert two == micro_batch_positions(8, 0, 4, 1, 0) == [8, 9, 10, 11]


# ---------------------------------------------------------------------------------------------
# Data check
# ---------------------------------------------------------------------------------------------


def _broken_meta(tmp_path: Path) -> Path:
    meta = write_meta(tmp_path)
    images = tmp_path / "images"
    (images / "s01.png").write_bytes(b"not a png at all")  # corrupt image
    (images / "s02.edge.png").unlink()  # missing condition
    (images / "s03.txt").unlink()  # missing caption
    Image.new("L", (32, 32)).save(images / "s04.edge.png")  # size mismatch (image is 80x64)
    (images / "s05.txt").write_text("a very long caption " * 10)  # > 77 character tokens
    with open(meta, "a") as handle:
        handle.write("images/nope.png\n")  # missing image, line 13
    return meta


def test_data_check_finds_every_problem_with_line_numbers(tmp_path):
    from tiny_models import tiny_tokenizer

    meta = _broken_meta(tmp_path)
    source = open_dataset(meta, cond_type=TAG)
    report = check_dataset(source, tokenizer=tiny_tokenizer(), resolution=64)
    problems = dict(report.problems)
    assert report.checked == 11 and report.usable == 7
    assert "not an image" in problems[f"{meta}:4"]  # s01: lines 1-2 are a comment and a blank line
    assert "no such file" in problems[f"{meta}:5"] and "s02.edge.png" in problems[f"{meta}:5"]
    assert "missing caption" in problems[f"{meta}:6"]
    assert "no such file" in problems[f"{meta}:13"]
    assert [where for where, _, _ in report.size_mismatches] == [f"{meta}:7"]
    assert [where for where, _ in report.long_captions] == [f"{meta}:8"]
    summary = report.summary()
    assert "4 with problems" in summary and "longer than 77 tokens" in summary


def test_data_check_cli_exit_status(tmp_path, capsys):
    meta = _broken_meta(tmp_path)
    assert cli(["data", "check", str(meta), "--cond-type", TAG]) == 0
    assert "verdict: usable" in capsys.readouterr().out
    assert cli(["data", "check", str(meta), "--cond-type", TAG, "--strict"]) == 2
    capsys.readouterr()
    # nothing usable: exit 2 with a summary
    (tmp_path / "empty.txt").write_text("missing/a.png\nmissing/b.png\n")
    assert cli(["data", "check", str(tmp_path / "empty.txt"), "--cond-type", TAG]) == 2
    out = capsys.readouterr().out
    assert "UNUSABLE" in out and "0 usable" in out
    assert cli(["data", "check", str(meta), "--cond-type", TAG, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["usable"] == 7


def test_data_check_jsonl_reports_bad_lines(tmp_path):
    manifest = write_jsonl(tmp_path, count=3)
    with open(manifest, "a") as handle:
        handle.write("{not json\n")
        handle.write('{"text": "no image"}\n')
        handle.write('{"image": "img/0.jpg", "text": "no condition"}\n')
    report = check_dataset(open_dataset(manifest))
    problems = dict(report.problems)
    assert report.usable == 3
    assert "not valid JSON" in problems[f"{manifest}:4"]
    assert '"image"' in problems[f"{manifest}:5"]
    assert "no condition" in problems[f"{manifest}:6"]


def test_data_check_webdataset_reports_corrupt_members(tmp_path):
    shards = write_shards(tmp_path / "shards", count=4, shards=1)
    with tarfile.open(shards / "shard-0000.tar", "a") as tar:
        info = tarfile.TarInfo("000099.png")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"junk!"))
    report = check_dataset(open_dataset(shards, cond_type=TAG))
    assert report.usable == 4 and len(report.problems) == 1
    assert report.problems[0][0].endswith("shard-0000.tar:000099")


def test_data_cli_errors_are_one_line(tmp_path, capsys):
    assert cli(["data", "check", str(tmp_path / "missing.txt")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
