"""Safe image loading, PNG parameters and atomic writes."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2i_adapter.errors import DiskFullError, InputFileError, T2IAdapterError
from t2i_adapter.io.atomic import _current_umask, atomic_folder, atomic_path, atomic_write
from t2i_adapter.io.images import load_image, load_image_from_bytes, normalize_image
from t2i_adapter.io.png import parameters_summary, read_png_parameters, save_png

# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` (1-bit grey); its data is a stub."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def noise(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


# ---------------------------------------------------------------------------------------------
# Awkward but valid images
# ---------------------------------------------------------------------------------------------


def test_plain_rgb_round_trips_exactly(tmp_path):
    original = noise(33, 17)
    loaded = load_image(write(tmp_path, "a.png", encoded(original, "PNG")))
    assert loaded.mode == "RGB" and loaded.size == (33, 17)
    assert np.array_equal(np.asarray(loaded), np.asarray(original))


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(tmp_path, fmt):
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red ink-wise
    loaded = load_image(write(tmp_path, f"cmyk.{fmt.lower()}", encoded(cmyk, fmt)))
    assert loaded.mode == "RGB" and loaded.size == (8, 6)
    red, green, blue = np.asarray(loaded)[3, 4].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_lab_tiff_is_converted_as_colour_not_reinterpreted(tmp_path):
    black = Image.new("LAB", (4, 4), (0, 128, 128))  # L*=0, neutral a*, b*
    loaded = load_image(write(tmp_path, "lab.tif", encoded(black, "TIFF")))
    assert np.asarray(loaded).max() <= 5


def test_rgba_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    loaded = load_image(write(tmp_path, "rgba.png", encoded(rgba, "PNG")))
    pixels = np.asarray(loaded)
    assert loaded.mode == "RGB"
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [10, 20, 30]


def test_background_colour_is_configurable(tmp_path):
    rgba = Image.new("RGBA", (2, 2), (255, 255, 255, 0))
    loaded = load_image(write(tmp_path, "t.png", encoded(rgba, "PNG")), background=(0, 0, 0))
    assert np.asarray(loaded).max() == 0


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    path = write(tmp_path, "depth16.png", encoded(image, "PNG"))
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path, mode="L")
    assert loaded.mode == "L"
    assert np.asarray(loaded)[0].tolist() == [0, 1, 128, 255]


def test_thirty_two_bit_integer_tiff(tmp_path):
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    loaded = load_image(write(tmp_path, "i32.tif", encoded(image, "TIFF")), mode="L")
    assert np.asarray(loaded)[0].tolist() == [0, 255]


def test_float_tiff_in_unit_range(tmp_path):
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    loaded = load_image(write(tmp_path, "f.tif", encoded(image, "TIFF")), mode="L")
    assert np.asarray(loaded)[0].tolist() == [0, 128, 255]


def test_one_bit_image(tmp_path):
    image = Image.new("1", (9, 3), 0)
    image.putpixel((2, 1), 1)
    loaded = load_image(write(tmp_path, "bw.png", encoded(image, "PNG")))
    pixels = np.asarray(loaded)
    assert loaded.mode == "RGB" and pixels[1, 2].tolist() == [255, 255, 255] and pixels[0, 0].max() == 0


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((3, 3), 1)
    data = encoded(image, "PNG", transparency=0)
    loaded = load_image(write(tmp_path, "p.png", data))
    pixels = np.asarray(loaded)
    assert pixels[0, 0].tolist() == [255, 255, 255]  # transparent index -> white
    assert pixels[3, 3].tolist() == [200, 10, 10]


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (5, 5), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    path = write(tmp_path, "anim.gif", data)
    assert getattr(Image.open(path), "n_frames", 1) == 2
    red, green, blue = np.asarray(load_image(path))[2, 2].astype(int)
    assert red > 200 and blue < 50


def test_animated_webp_gives_first_frame(tmp_path):
    from PIL import features

    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((0, 255, 0), (255, 0, 255))]
    data = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert load_image_from_bytes(data, "anim.webp").getpixel((4, 4)) == (0, 255, 0)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_image(write(tmp_path, "phone.jpg", encoded(image, "JPEG", exif=exif.tobytes())))
    assert loaded.size == (20, 40)


@pytest.mark.parametrize("size", [(1, 1), (4000, 10), (10, 4000)])
def test_tiny_and_very_wide(tmp_path, size):
    loaded = load_image(write(tmp_path, "s.png", encoded(Image.new("L", size, 77), "PNG")))
    assert loaded.size == size and loaded.mode == "RGB" and np.asarray(loaded).max() == 77


def test_grey_mode_is_kept_when_asked(tmp_path):
    loaded = load_image(
        write(tmp_path, "c.png", encoded(Image.new("RGB", (3, 3), (255, 0, 0)), "PNG")), mode="L"
    )
    assert loaded.mode == "L" and np.asarray(loaded)[0, 0] == 76  # ITU-R 601 luma of red


def test_normalize_image_on_open_images():
    assert normalize_image(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert normalize_image(Image.new("La", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert normalize_image(Image.new("HSV", (2, 2), (0, 0, 255))).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError):
        normalize_image(Image.new("RGB", (1, 1)), mode="CMYK")


def test_loaded_image_is_detached_from_the_file(tmp_path):
    path = write(tmp_path, "d.png", encoded(noise(8, 8), "PNG"))
    loaded = load_image(path)
    path.unlink()
    assert np.asarray(loaded).shape == (8, 8, 3)


# ---------------------------------------------------------------------------------------------
# Bad inputs: every one an InputFileError naming the file
# ---------------------------------------------------------------------------------------------


def assert_refused(path, fragment, **kwargs):
    with pytest.raises(InputFileError) as caught:
        load_image(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message and fragment in message
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "nope.png", "no such file")


def test_directory(tmp_path):
    assert_refused(tmp_path, "folder")


def test_empty_file(tmp_path):
    assert_refused(write(tmp_path, "empty.png", b""), "empty")


def test_text_file_named_png(tmp_path):
    assert_refused(write(tmp_path, "notes.png", b"these are my notes, not a picture\n"), "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_image(tmp_path, fmt):
    data = encoded(noise(128, 128), fmt)
    path = write(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2])
    with pytest.raises(InputFileError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_formats_outside_the_allowlist_are_refused(tmp_path):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert_refused(write(tmp_path, "drawing.eps", eps), "not an image")
    assert_refused(write(tmp_path, "x.xbm", encoded(Image.new("1", (8, 8)), "XBM")), "not an image")


def test_garbage_after_png_signature(tmp_path):
    path = write(tmp_path, "broken.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(InputFileError, match="broken.png"):
        load_image(path)


def test_huge_declared_size_is_refused_before_decoding(tmp_path):
    path = write(tmp_path, "bomb.png", png_with_declared_size(20000, 20000))
    assert path.stat().st_size < 200
    before = Image.MAX_IMAGE_PIXELS
    assert_refused(path, "too large")
    assert before == Image.MAX_IMAGE_PIXELS  # Pillow's global is left alone


def test_bomb_between_our_limit_and_pillows_warning_limit(tmp_path, recwarn):
    path = write(tmp_path, "bomb2.png", png_with_declared_size(10000, 9000))  # 90 MP
    message = assert_refused(path, "too large")
    assert "10000x9000" in message
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_pixels_is_configurable(tmp_path):
    path = write(tmp_path, "big.png", encoded(Image.new("L", (100, 100)), "PNG"))
    assert_refused(path, "too large", max_pixels=9999)
    assert load_image(path, max_pixels=10000).size == (100, 100)


def test_max_bytes(tmp_path):
    path = write(tmp_path, "n.png", encoded(noise(32, 32), "PNG"))
    assert_refused(path, "too large", max_bytes=100)


def test_bytes_errors_name_the_upload():
    for data, fragment in [
        (b"", "empty"),
        (b"hello", "not an image"),
        (png_with_declared_size(9000, 9000), "too large"),
    ]:
        with pytest.raises(InputFileError, match=f"upload.png: .*{fragment}"):
            load_image_from_bytes(data, "upload.png")


def test_errors_are_user_errors():
    assert issubclass(InputFileError, T2IAdapterError)


# ---------------------------------------------------------------------------------------------
# PNG parameters
# ---------------------------------------------------------------------------------------------


def test_png_parameters_round_trip(tmp_path):
    parameters = {
        "prompt": "a red cube, ünïcode ✓",
        "negative_prompt": "blurry",
        "seed": 1234,
        "guidance_scale": 7.5,
        "adapters": [{"adapter": "demo:sketch", "weight": 0.8, "range": [0.0, 1.0]}],
        "output": Path("out/x.png"),
    }
    image = noise(16, 8)
    path = save_png(image, tmp_path / "out.png", parameters)
    expected = dict(parameters, output="out/x.png")
    assert read_png_parameters(path) == expected
    with Image.open(path) as reopened:
        assert read_png_parameters(reopened) == expected
        assert reopened.info["parameters"].startswith("a red cube")
        assert "Negative prompt: blurry" in reopened.info["parameters"]
        assert np.array_equal(np.asarray(reopened.convert("RGB")), np.asarray(image))


def test_png_without_parameters(tmp_path):
    path = save_png(Image.new("L", (2, 2)), tmp_path / "plain.png")
    assert read_png_parameters(path) is None
    assert Image.open(path).mode == "L"


def test_read_parameters_of_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="photo.jpg: not a PNG"):
        read_png_parameters(write(tmp_path, "photo.jpg", encoded(Image.new("RGB", (4, 4)), "JPEG")))
    with pytest.raises(InputFileError, match="no such file"):
        read_png_parameters(tmp_path / "missing.png")
    with pytest.raises(InputFileError, match="junk.png"):
        read_png_parameters(write(tmp_path, "junk.png", b"junk"))


def test_summary_is_a1111_style():
    text = parameters_summary({"prompt": "cat", "steps": 20, "seed": 5, "sampler": None})
    assert text == "cat\nSteps: 20, Seed: 5"


def test_unserialisable_parameters_leave_no_file(tmp_path):
    with pytest.raises(TypeError):
        save_png(Image.new("RGB", (2, 2)), tmp_path / "x.png", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_leaves_nothing_when_new_file_fails(tmp_path):
    with pytest.raises(ValueError), atomic_write(tmp_path / "sub" / "g.bin") as handle:
        handle.write(b"x")
        raise ValueError
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_path_keeps_suffix_and_permissions(tmp_path):
    target = tmp_path / "model.safetensors"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.suffix == ".safetensors" and temp != target
        temp.write_bytes(b"abc")
        assert not target.exists()
    assert target.read_bytes() == b"abc"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()  # not mkstemp's 0o600


def test_atomic_write_to_a_folder_is_a_user_error(tmp_path):
    with pytest.raises(InputFileError, match="folder"), atomic_write(tmp_path):
        pass


def test_atomic_folder_swaps_in_a_complete_folder_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "model"
    with atomic_folder(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".model.") and not target.exists()
        (temp / "a.json").write_text("1")
    assert [p.name for p in target.iterdir()] == ["a.json"]
    with pytest.raises(RuntimeError), atomic_folder(target) as temp:
        (temp / "b.json").write_text("half")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["a.json"]  # the old folder, untouched

    real_replace = os.replace
    calls = []

    def second_rename_fails(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with (
        pytest.raises(DiskFullError, match=r"no space left on .+ while writing .+model$"),
        atomic_folder(target) as temp,
    ):
        (temp / "c.json").write_text("new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["a.json"]  # the old folder, restored
    with atomic_folder(target) as temp:
        (temp / "c.json").write_text("new")
    assert [p.name for p in target.iterdir()] == ["c.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing left beside it
