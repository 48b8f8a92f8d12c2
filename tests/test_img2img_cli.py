"""`generate --init-image/--mask/--hires-scale`: PNGs that `--from-png` reproduces pixel for
pixel, the API's in-memory pictures, and bad input as one `error:` line with nothing written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.generation.api import generate
from t2i_adapter.generation.settings import GenerationSettings
from t2i_adapter.interfaces.cli.main import main
from t2i_adapter.io.png import read_png_parameters
from tiny_models import save_tiny_sd, tiny_adapter


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("img2img")
    save_tiny_sd(root / "model")
    save_tiny_sd(root / "inpaint-model", in_channels=9)
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    picture = Image.new("RGB", (64, 64), (200, 60, 40))
    ImageDraw.Draw(picture).ellipse((10, 10, 50, 50), fill=(20, 200, 90))
    picture.save(root / "photo.png")
    condition = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(condition).rectangle((20, 4, 40, 60), fill="white")
    condition.save(root / "cond.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=255)
    mask.save(root / "mask.png")
    mask.resize((32, 32), Image.Resampling.NEAREST).save(root / "small-mask.png")
    (root / "not-an-image.png").write_bytes(b"hello, not a png")
    return root


def base_args(files, out, model: str = "model") -> list[str]:
    args = ["generate", "--model", str(files / model), "--prompt", "a green ball", "--steps", "2"]
    args += ["--adapter", str(files / "adapter"), "--cond", str(files / "cond.png")]
    return [*args, "--device", "cpu", "--seed", "5", "--out", str(out)]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


RUNS = {
    "img2img": ["--init-image", "{root}/photo.png", "--strength", "0.6"],
    "inpaint": ["--init-image", "{root}/photo.png", "--mask", "{root}/mask.png", "--mask-blur", "2"],
    "inpaint full res": [
        "--init-image",
        "{root}/photo.png",
        "--mask",
        "{root}/mask.png",
        "--inpaint-full-res",
        "--inpaint-full-res-padding",
        "8",
    ],
    "hires latent": ["--width", "64", "--height", "64", "--hires-scale", "2", "--hires-steps", "2"],
    "hires lanczos": [
        "--init-image",
        "{root}/photo.png",
        "--hires-scale",
        "1.5",
        "--hires-upscaler",
        "lanczos",
    ],
}


@pytest.mark.parametrize("case", sorted(RUNS))
def test_from_png_reproduces_pixel_for_pixel(files, tmp_path, capsys, case):
    out = tmp_path / "first.png"
    extra = [part.format(root=files) for part in RUNS[case]]
    assert main(base_args(files, out) + extra) == 0
    recorded = read_png_parameters(out)
    if "--init-image" in extra:
        assert recorded["init_image"] == str(files / "photo.png")
    expected_side = {"hires latent": 128, "hires lanczos": 96}.get(case, 64)
    assert Image.open(out).size == (expected_side, expected_side)
    assert (recorded["width"], recorded["height"]) == (64, 64)  # the first pass's: what --from-png needs
    size_line = SIZE_LINES.get(case)
    assert printed_size(capsys, out) == size_line
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again)]) == 0
    assert np.array_equal(pixels(out), pixels(again))
    assert printed_size(capsys, again) == size_line


SIZE_LINES = {
    "hires latent": "size: 64x64 -> 128x128 (hires x2)",
    "hires lanczos": "size: 64x64 -> 96x96 (hires x1.5)",
}


def printed_size(capsys, written) -> str | None:
    """The final-size line on stderr (None: none printed); stdout must stay the written path alone."""
    captured = capsys.readouterr()
    assert captured.out.split() == [str(written)]
    lines = [line for line in captured.err.splitlines() if line.startswith("size:")]
    assert len(lines) <= 1
    return lines[0] if lines else None


def test_from_png_uses_the_saved_init_picture_and_mask_when_the_originals_are_gone(files, tmp_path, capsys):
    moved = tmp_path / "inputs"
    moved.mkdir()
    for name in ("photo.png", "mask.png"):
        (moved / name).write_bytes((files / name).read_bytes())
    out = tmp_path / "out" / "image.png"
    args = base_args(files, out) + [
        "--init-image",
        str(moved / "photo.png"),
        "--mask",
        str(moved / "mask.png"),
    ]
    assert main([*args, "--save-cond"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[-2:] == [str(out.with_name("image-init.png")), str(out.with_name("image-mask.png"))]
    for name in ("photo.png", "mask.png"):
        (moved / name).unlink()
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again)]) == 0
    assert "using the saved copy" in capsys.readouterr().err
    assert np.array_equal(pixels(out), pixels(again))


def test_nine_channel_model_inpaints_from_the_command_line(files, tmp_path):
    out = tmp_path / "inpainted.png"
    args = base_args(files, out, "inpaint-model")
    assert main([*args, "--init-image", str(files / "photo.png"), "--mask", str(files / "mask.png")]) == 0
    assert Image.open(out).size == (64, 64)


def test_a_mask_of_another_size_is_resized_with_one_note(files, tmp_path, caplog):
    out = tmp_path / "out.png"
    extra = ["--init-image", str(files / "photo.png"), "--mask", str(files / "small-mask.png")]
    with caplog.at_level("WARNING"):
        assert main(base_args(files, out) + extra) == 0
    notes = [record.getMessage() for record in caplog.records if "small-mask.png" in record.getMessage()]
    assert len(notes) == 1 and "32x32" in notes[0] and "resized" in notes[0]


def test_the_api_takes_pictures_in_memory(files):
    picture = Image.open(files / "photo.png").convert("RGB")
    mask = Image.open(files / "mask.png").convert("L")
    settings = GenerationSettings(
        model=str(files / "model"), prompt="a green ball", steps=2, seed=5, device="cpu", mask_blur=0
    )
    from_memory = generate(settings, init_image=picture, mask_image=mask).images[0]
    from_files = generate(settings.replace(init_image=str(files / "photo.png"), mask=str(files / "mask.png")))
    assert np.array_equal(np.asarray(from_memory), np.asarray(from_files.images[0]))
    kept = np.asarray(mask) == 0
    assert (np.asarray(from_memory) == np.asarray(picture)).all(axis=-1)[kept].all()


BAD_INPUTS = {
    "strength zero": (
        ["--init-image", "{root}/photo.png", "--strength", "0"],
        "strength must be a number above 0",
    ),
    "strength above one": (["--init-image", "{root}/photo.png", "--strength", "1.5"], "up to 1"),
    "mask not a picture": (
        ["--init-image", "{root}/photo.png", "--mask", "{root}/not-an-image.png"],
        "not-an-image.png",
    ),
    "missing init picture": (["--init-image", "{root}/nope.png"], "nope.png"),
    "mask without init picture": (["--mask", "{root}/mask.png"], "--mask needs --init-image"),
    "all-black mask": (
        ["--init-image", "{root}/photo.png", "--mask", "{root}/black.png"],
        "nothing to repaint",
    ),
    "hires with mask": (
        ["--init-image", "{root}/photo.png", "--mask", "{root}/mask.png", "--hires-scale", "2"],
        "--hires-scale does not go with --mask",
    ),
    "hires scale below one": (["--hires-scale", "0.5"], "hires_scale must be a number from 1.0"),
    "inpainting model without mask": (["--model", "{root}/inpaint-model"], "inpainting model"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_output(files, tmp_path, capsys, case):
    Image.new("L", (64, 64), 0).save(files / "black.png")
    extra, expected = BAD_INPUTS[case]
    extra = [part.format(root=files) for part in extra]
    out = tmp_path / "out" / "image.png"
    args = base_args(files, out)
    if extra[0] == "--model":
        args[args.index("--model") + 1] = extra[1]
        extra = []
    code = main(args + extra)
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    assert expected in error
    assert not out.parent.exists()


def test_an_unknown_upscaler_is_refused_by_the_flag_and_in_a_record(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    with pytest.raises(SystemExit) as exit_:
        main([*base_args(files, out), "--hires-scale", "2", "--hires-upscaler", "esrgan"])
    assert exit_.value.code == 2 and "invalid choice: 'esrgan'" in capsys.readouterr().err
    with pytest.raises(T2IAdapterError, match="esrgan"):
        GenerationSettings(model="m", prompt="p", hires_scale=2, hires_upscaler="esrgan")
    assert not out.exists()
