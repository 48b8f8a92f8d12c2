"""Every command in README.md runs (issue 15): the README cannot drift from the CLI again.

The commands are read from README.md itself (its ```bash blocks, continuation lines joined, and
its inline `t2i-adapter ...` spans), so a command added to the README is run here without touching
this file. Hub names become the packaged demo model and adapters and long settings become tiny
ones through `SUBSTITUTIONS`; a command that needs a GPU, the network or several processes is
listed in `SKIPPED` with the reason. A README command that neither runs nor is skipped fails.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from t2i_adapter import demo_weights
from t2i_adapter.checkpoints.save import save_adapter
from t2i_adapter.interfaces.cli.main import main as cli
from test_data_formats import write_folder
from tiny_models import tiny_adapter

README = Path(__file__).resolve().parents[1] / "README.md"

# (pattern, replacement), applied in this order to every command: hub ids -> the demo world,
# production sizes -> tiny ones. Add a row when the README names a new hub id or a costly flag.
SUBSTITUTIONS = [
    (r"^make demo$", "t2i-adapter demo --out outputs/demo"),  # make demo = make install + this
    (r"^t2i-adapter demo( --out \S+)?$", r"t2i-adapter demo\1 --steps 2"),
    (r"stable-diffusion-v1-5/stable-diffusion-v1-5(?![/\w])", "demo"),
    # an inpainting checkpoint (9-channel UNet) -> the demo model, which inpaints by latent blending
    (r"stable-diffusion-v1-5/stable-diffusion-inpainting(?![/\w])", "demo"),
    (r"TencentARC/T2I-Adapter/models/t2iadapter_canny_sd14v1\.pth", "demo:sketch"),
    (r"TencentARC/t2iadapter_(sketch|canny)_sd1[45]v[12]", "demo:sketch"),
    (r"TencentARC/t2iadapter_depth_sd1[45]v[12]", "demo:depth"),
    (r"TencentARC/t2iadapter_color_sd14v1", "demo:color"),
    # the depth preprocessor's model is on the hub: a ready depth map, passed through
    (r"--cond photo\.png --cond-type depth", "--cond depth.png --cond-type none"),
    (r"--steps \d+", "--steps 2"),
    (r"--resolution \d+", "--resolution 64"),
    (r"--batch-size \d+", "--batch-size 2"),
    (r"--max-steps \d+", "--max-steps 2"),
    (r"--checkpoint-every \d+", "--checkpoint-every 1"),
    (r"--images-per-cond \d+", "--images-per-cond 1 --num 2 --steps 2"),
]

# pattern -> why the command is not run here (the first pattern that matches wins).
SKIPPED = {
    r"^make test": "runs this test suite",
    r"^accelerate launch": "several GPUs or processes (tests/test_training.py runs two CPU processes)",
    r"\.\.\.": "an outline with elided flags ('...'), not a command",
    r"COMMAND": "a placeholder for any command",
    r"stabilityai/stable-diffusion-xl": "SDXL from the hub (GBs); tiny SDXL models are tested offline",
    r"v1-5-pruned-emaonly": "a 4 GB single file from the hub; tests/test_single_file.py loads tiny ones",
    r"coadapter-": "the style adapter and CoAdapter fuser from the hub; no demo style adapter ships",
    r"Intel/dpt-large": "a depth model from the hub (network); tests/test_model_conditions.py uses a tiny DPT",
    r"^t2i-adapter serve": "starts a web server (tests/test_webui.py)",
    r"^t2i-adapter demo train": "rebuilds every demo weight (about 65 minutes; tests/test_demo.py runs a tiny plan)",
}


def readme_commands(text: str) -> list[str]:
    """Shell commands of the ```bash blocks (comments dropped, `\\` lines joined), then inline spans."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            command = re.sub(r"(^|\s)#.*$", "", line).strip()
            if command:
                commands.append(command)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [span.strip() for span in re.findall(r"`(t2i-adapter [^`]*)`", prose)]
    return commands


def substitute(command: str, used: set[str]) -> str:
    for pattern, replacement in SUBSTITUTIONS:
        command, count = re.subn(pattern, replacement, command)
        if count:
            used.add(pattern)
    return command


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED.items() if re.search(pattern, command)), None)


def write_inputs(root: Path, text: str, used: set[str]) -> None:
    """The files the README's commands name, made tiny: pictures, datasets, a jobs file."""
    drawing = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(drawing).ellipse((12, 12, 52, 52), outline="white", width=2)
    drawing.save(root / "drawing.png")
    photo = Image.new("RGB", (64, 64), (200, 200, 200))
    ImageDraw.Draw(photo).rectangle((16, 20, 48, 44), fill=(200, 30, 30))
    for name in ("photo.png", "palette.png", "painting.png", "room.png"):
        photo.save(root / name)
    drawing.save(root / "sofa-sketch.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 20, 48, 44), fill=255)
    mask.save(root / "sofa-mask.png")
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)), mode="L").save(
        root / "depth.png"
    )
    write_folder(root / "my_data", count=4)
    write_folder(root / "my_eval", count=2)
    # the jobs line the README shows, with the same substitutions
    line = re.search(r"`(\{\"id\".*?\})`", text, flags=re.S).group(1)
    job = json.loads(substitute(" ".join(line.split()), used))
    (root / "jobs.jsonl").write_text(json.dumps(job) + "\n")
    save_adapter(tiny_adapter(in_channels=1), root / "adapter.pth", layout="original")


def run_one(command: str, capsys) -> str | None:
    """Run one substituted command in-process; a failure as one line, else None."""
    argv = shlex.split(command)
    if argv[0] != "t2i-adapter":
        return f"{command}: not a t2i-adapter command (add it to SUBSTITUTIONS or SKIPPED)"
    status = cli(argv[1:])
    err = capsys.readouterr().err
    if status != 0:
        return f"{command}: exit {status}: {err.strip().splitlines()[-1:] or ''}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(not demo_weights.demo_weights_available(), reason="demo weights not built")
def test_every_readme_command_runs_on_the_demo_world(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    text = README.read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    used: set[str] = set()
    write_inputs(tmp_path, text, used)
    failures, ran, skipped = [], [], []
    for command in readme_commands(text):
        reason = skip_reason(command)
        if reason:
            skipped.append((command, reason))
            continue
        ran.append(command)
        failure = run_one(substitute(command, used), capsys)
        if failure:
            failures.append(failure)
    assert not failures, "README commands that fail:\n" + "\n".join(failures)
    assert len(ran) >= 10, ran
    assert Image.open(tmp_path / "cabin.png").size[0] > 0  # what --from-png cabin.png re-ran
    assert np.asarray(Image.open(tmp_path / "sweep" / "cabin-7.png")).std() > 0
    # the tables stay honest: every row is used by the README of today
    unused_skips = set(SKIPPED.values()) - {reason for _, reason in skipped}
    assert not unused_skips, f"SKIPPED rows no README command needs: {unused_skips}"
    unused = {pattern for pattern, _ in SUBSTITUTIONS} - used
    assert not unused, f"SUBSTITUTIONS rows no README command needs: {unused}"


def test_readme_commands_are_read_whole():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert "make demo" in commands
    assert not [c for c in commands if c.endswith("\\") or c.startswith("--")]
    generate = [c for c in commands if c.startswith("t2i-adapter generate --model stable")]
    assert generate and all("--prompt" in c for c in generate)
    for command in commands:
        if not skip_reason(command):
            assert shlex.split(substitute(command, set()))[0] == "t2i-adapter", command
