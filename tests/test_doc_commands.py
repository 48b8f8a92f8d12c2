"""Every command and snippet in README.md and docs/*.md runs (issue 15): the docs cannot drift from
the CLI again.

Read from each document itself: the commands of its ```bash/```sh/```console blocks (comments
dropped, `\\` lines joined), each ```python block (run whole, as one snippet), and the inline
commands: README's `t2i-adapter ...` spans (whole examples there; in docs/ an inline
`t2i-adapter evaluate` names a command in prose) and every `python benchmarks/...` span. So a
command added to a document is run here without touching this file. Hub names become the packaged
demo model and adapters and long settings become tiny ones through `SUBSTITUTIONS`. A command that
needs a GPU, hub weights that have no demo stand-in, several processes, or minutes (a benchmark, a
web server) is only parsed, its options checked against the parser (`PARSED_ONLY`, with the
reason); what cannot even be parsed (an outline with `...`, a placeholder, a download) is listed in
`SKIPPED` with the reason. A documented command that neither runs nor is listed fails. Beside the
commands: every `--option` the documents name, prose included, is an option of some parser, and
every `t2i_adapter.*` name and source file they name exists.
"""

from __future__ import annotations

import argparse
import json
import pkgutil
import re
import runpy
import shlex
import shutil
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from ldm_layout import save_ldm_vae, save_single_file
from t2i_adapter import demo_weights
from t2i_adapter.checkpoints.save import save_adapter
from t2i_adapter.generation.base_model import load_base_model
from t2i_adapter.interfaces.cli.main import build_parser
from t2i_adapter.interfaces.cli.main import main as cli
from test_data_formats import TAG, write_folder, write_meta
from test_loras import kohya_lora
from tiny_models import perturbed_vae, save_tiny_clip, save_tiny_dpt, save_tiny_inception, tiny_adapter

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]

# (pattern, replacement), applied in this order to every command and Python snippet: hub ids -> the
# demo world, production sizes -> tiny ones. Add a row when a document names a new hub id or a
# costly flag.
SUBSTITUTIONS = [
    (r"^make demo$", "t2i-adapter demo --out outputs/demo"),  # make demo = make install + this
    (r"^t2i-adapter demo( --out \S+)?$", r"t2i-adapter demo\1 --steps 2"),
    (r"^OMP_NUM_THREADS=1 ", ""),  # torch runs one thread here already
    (r"^accelerate launch .*?-m t2i_adapter\.interfaces\.cli\.main ", "t2i-adapter "),
    (r"stable-diffusion-v1-5/stable-diffusion-v1-5(?![/\w])", "demo"),
    # an inpainting checkpoint (9-channel UNet) -> the demo model, which inpaints by latent blending
    (r"stable-diffusion-v1-5/stable-diffusion-inpainting(?![/\w])", "demo"),
    (r"TencentARC/T2I-Adapter/models/t2iadapter_canny_sd14v1\.pth", "demo:sketch"),
    (r"TencentARC/t2iadapter_(sketch|canny)_sd1[45]v[12]", "demo:sketch"),
    (r"TencentARC/t2iadapter_depth_sd1[45]v[12]", "demo:depth"),
    (r"TencentARC/t2iadapter_color_sd14v1", "demo:color"),
    # a Civitai checkpoint -> the demo model as one file in the original (LDM) layout, with its
    # configs (no SD release has its sizes); a Civitai LoRA -> a kohya-format LoRA for it
    (
        r"~/models/dreamshaper_8\.safetensors",
        "dreamshaper_8.safetensors --model-config dreamshaper_8-configs/",
    ),
    (r"~/loras/watercolor\.safetensors", "watercolor.safetensors"),
    # the fine-tuned MSE VAE (a diffusers repo, and its original-layout file in another repo) -> the
    # demo's VAE with other weights, as a folder and as that one file
    (r"stabilityai/sd-vae-ft-mse(?![-/\w])", "sd-vae-ft-mse"),
    (r"stabilityai/sd-vae-ft-mse-original/(vae-ft-mse-840000-ema-pruned\.safetensors)", r"\1"),
    # evaluation sets on the hub -> a folder of the same format
    (r"hf:limingcv/MultiGen-20M_\w+_eval:validation", "my_eval/"),
    # the picture metrics' networks (CLIP from the hub, NVIDIA's Inception file) -> tiny ones
    (r"--metric clip\b", "--metric clip --clip-model tiny-clip"),
    (r"--metric fid\b", "--metric fid --fid-model tiny-inception.pt"),
    # the depth preprocessor's model (MiDaS) is on the hub -> a tiny DPT, where a photo's depth is computed
    (
        r"(--cond photo\.png --cond-type depth|^t2i-adapter data prepare photos/ .*--cond-type depth.*$)",
        r"\1 --cond-model tiny-dpt",
    ),
    (r"--dtype float16", "--dtype float32"),  # float16 needs a GPU
    (r"(--steps |\bsteps=)\d+", r"\g<1>2"),
    (r"(--resolution |\bresolution=)\d+", r"\g<1>64"),
    (r"(--batch-size |\bbatch_size=)\d+", r"\g<1>2"),
    (r"(--max-steps |\bmax_steps=)\d+", r"\g<1>2"),
    (r"--checkpoint-every \d+", "--checkpoint-every 1"),
    (r"--images-per-cond \d+", "--images-per-cond 1 --num 2 --steps 2"),
    (r"--num \d+", "--num 2"),
    # a synopsis: every optional part given, the placeholders filled
    (r"\[(--[^\]]*)\]", r"\1"),
    (r"--scheduler NAME", "--scheduler lcm"),
    (r"--(guidance|size|repeats) [A-Z]\b", r"--\1 2"),
]

# pattern -> why the command is not run, only parsed: its options are checked against the parser
# (the first pattern that matches wins; SKIPPED is looked at first).
PARSED_ONLY = {
    r"^python benchmarks/": "a benchmark (minutes of measuring)",
    r"^accelerate launch": "several GPUs or processes (tests/test_training.py runs two CPU processes)",
    r"stabilityai/stable-diffusion-xl": "SDXL from the hub (GBs); tiny SDXL models are tested offline",
    r"v1-5-pruned-emaonly": "a 4 GB single file from the hub; tests/test_single_file.py loads tiny ones",
    r"coadapter-": "the style adapter and CoAdapter fuser from the hub; no demo style adapter ships",
    r"Intel/dpt-large": "a depth model from the hub (network); tests/test_model_conditions.py uses a tiny DPT",
    r"lcm-lora-sdv1-5": "an LCM-LoRA for SD1.5 from the hub; tests/test_fewstep.py runs lcm on the demo model",
    r"^t2i-adapter serve": "starts a web server (tests/test_webui.py)",
    r"^t2i-adapter demo train": "rebuilds every demo weight (about 65 minutes; tests/test_demo.py runs a tiny plan)",
}

# pattern -> why the command is not run at all (a Python snippet is still compiled).
SKIPPED = {
    r"^make test": "runs this test suite",
    r"\.\.\.": "an outline with parts elided ('...'), not a command",
    r"COMMAND": "a placeholder for any command",
    r"^python3 -m pip download": "downloads a wheel (network)",
    r"benchmarks/gpu_all\.sh": "the GPU benchmark run (tests/test_gpu_benchmark_script.py runs its CPU smoke path)",
}

# A path a document uses that another one makes (README trains runs/canny, evaluation.md compares
# it): made first by this command where the document does not make it itself.
MADE_ELSEWHERE = {
    "runs/canny": "t2i-adapter train --model demo --data my_data/ --cond-type canny --output-dir runs/canny "
    "--resolution 64 --batch-size 2 --max-steps 2 --checkpoint-every 1",
}

# What some documents' commands write: proof that they ran, not only exited 0.
WRITTEN = {
    "README.md": ["cabin.png", "sweep/cabin-7.png", "runs/canny/adapter.safetensors"],
    "training.md": ["runs/depth/train_config.yaml", "runs/sketch/adapter.safetensors", "prepared-latents"],
    "evaluation.md": ["eval/canny-sd15/report.md", "evaluation/report.md"],
}


# ---------------------------------------------------------------------------------------------
# Reading the documents
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    where: str  # "docs/training.md:26"
    kind: str  # "shell" or "python"
    text: str


def shell_lines(block: str) -> list[tuple[int, str]]:
    """A shell block's commands and the line each starts on (0 = the block's first): comments and
    console prompts dropped, `\\` lines joined."""
    commands, parts = [], []
    for offset, line in enumerate(block.splitlines()):
        parts.append(line.strip().removesuffix("\\").strip())
        if line.rstrip().endswith("\\"):
            continue
        command = re.sub(r"(^|\s)#.*$", "", " ".join(parts)).strip().removeprefix("$ ")
        if command:
            commands.append((offset + 1 - len(parts), command))
        parts = []
    return commands


def doc_snippets(path: Path) -> list[Snippet]:
    """The shell commands and Python snippets of one document, each with the line it starts on."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(ROOT).as_posix()

    def where(match: re.Match, offset: int = 0) -> str:
        return f"{name}:{text.count(chr(10), 0, match.start()) + 1 + offset}"

    snippets = []
    for block in re.finditer(r"```(bash|sh|shell|console|python)\n(.*?)```", text, flags=re.S):
        if block.group(1) == "python":
            snippets.append(Snippet(where(block, 1), "python", block.group(2)))
            continue
        for offset, command in shell_lines(block.group(2)):
            snippets.append(Snippet(where(block, 1 + offset), "shell", command))
    inline = (
        r"`((?:t2i-adapter |python benchmarks/)[^`]*)`" if path == README else r"`(python benchmarks/[^`]*)`"
    )
    prose = re.sub(r"```.*?```", lambda block: "\n" * block.group().count("\n"), text, flags=re.S)
    for span in re.finditer(inline, prose):
        snippets.append(Snippet(where(span), "shell", " ".join(span.group(1).split())))
    return snippets


def substitute(text: str, used: set[str]) -> str:
    for pattern, replacement in SUBSTITUTIONS:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        if count:
            used.add(pattern)
    return text


def reason_in(table: dict[str, str], text: str) -> str | None:
    """The reason of the first row of `table` whose pattern `text` matches."""
    return next((reason for pattern, reason in table.items() if re.search(pattern, text, flags=re.M)), None)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def write_pictures(root: Path) -> None:
    """The pictures the documents name, 64 px: a drawing, a photo, masks and a depth map."""
    drawing = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(drawing).ellipse((12, 12, 52, 52), outline="white", width=2)
    for name in ("drawing.png", "sofa-sketch.png", "my_sketch.png"):
        drawing.save(root / name)
    photo = Image.new("RGB", (64, 64), (200, 200, 200))
    ImageDraw.Draw(photo).rectangle((16, 20, 48, 44), fill=(200, 30, 30))
    for name in ("photo.png", "palette.png", "painting.png", "room.png", "portrait.png"):
        photo.save(root / name)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 20, 48, 44), fill=255)
    for name in ("sofa-mask.png", "door-mask.png", "eyes-mask.png"):
        mask.save(root / name)
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)), mode="L").save(
        root / "depth.png"
    )


def write_meta_tagged(root: Path, tag: str) -> None:
    """A meta-file dataset whose conditions are `<stem>.<tag>.png` (a depth or sketch set)."""
    write_meta(root, count=4)
    for path in (root / "images").glob(f"*.{TAG}.png"):
        path.rename(path.with_name(path.name.replace(f".{TAG}.", f".{tag}.")))


def write_inputs(root: Path) -> None:
    """The files the documents' commands name, made tiny: pictures, datasets, models, a VAE, a jobs file."""
    write_pictures(root)
    write_folder(root / "my_data", count=4)
    write_folder(root / "my_eval", count=2)
    write_meta_tagged(root / "data", "depth")
    write_meta_tagged(root / "shapes", "sketch")
    for condition in write_folder(root / "photos", count=4).glob(f"*.{TAG}.png"):
        condition.unlink()  # photos and captions: the depth maps are computed
    # the jobs line the README shows, with the same substitutions
    line = re.search(r"`(\{\"id\".*?\})`", README.read_text(encoding="utf-8"), flags=re.S).group(1)
    job = json.loads(substitute(" ".join(line.split()), set()))
    (root / "jobs.jsonl").write_text(json.dumps(job) + "\n")
    save_adapter(tiny_adapter(in_channels=1), root / "adapter.pth", layout="original")
    demo = load_base_model("demo")
    save_single_file(
        {"unet": demo.unet, "vae": demo.vae, "text_encoder": demo.text_encoder},
        root / "dreamshaper_8.safetensors",
    )
    shutil.copytree(
        demo_weights.demo_model_path(),
        root / "dreamshaper_8-configs",
        ignore=shutil.ignore_patterns("*.safetensors"),
    )
    save_file(kohya_lora(demo, seed=1), str(root / "watercolor.safetensors"))
    vae = perturbed_vae(demo.vae)
    vae.save_pretrained(root / "sd-vae-ft-mse")
    save_ldm_vae(vae, root / "vae-ft-mse-840000-ema-pruned.safetensors", prefix="")
    save_tiny_dpt(root / "tiny-dpt")
    save_tiny_clip(root / "tiny-clip")
    save_tiny_inception(root / "tiny-inception.pt")


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


class _Parsed(Exception):
    """Raised once a command's options parsed, to stop it before it does anything."""


def _parse_then_stop(parser, args=None, namespace=None):
    _PARSE_ARGS(parser, args, namespace)  # a bad option exits 2 here, with argparse's message
    raise _Parsed


_PARSE_ARGS = argparse.ArgumentParser.parse_args


def run_command(command: str, parse_only: bool, monkeypatch) -> int:
    """Run a `t2i-adapter` command (in-process) or a `python benchmarks/X.py` script (always
    parse-only); the exit status (0 for a parse-only command whose options parsed)."""
    argv = shlex.split(command)
    if argv[0] == "t2i-adapter":
        run = partial(cli, argv[1:])
    elif argv[0] == "python" and argv[1].startswith("benchmarks/"):
        run = partial(runpy.run_path, str(ROOT / argv[1]), run_name="__main__")
    else:
        raise ValueError("not a t2i-adapter or benchmarks command (add it to SUBSTITUTIONS or SKIPPED)")
    with monkeypatch.context() as patch:
        if parse_only:
            patch.setattr(argparse.ArgumentParser, "parse_args", _parse_then_stop)
        patch.setattr(sys, "argv", argv[1:])
        try:
            status = run()
        except _Parsed:
            return 0
        except SystemExit as exit:
            return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return 1 if parse_only else status  # parse-only: it never parsed its options


def run_snippet(snippet: Snippet, monkeypatch, capsys) -> str | None:
    """Run (or parse) one substituted command, or run one Python snippet; a failure as one line, else None."""
    text = substitute(snippet.text, set())
    parse_only = reason_in(PARSED_ONLY, snippet.text) is not None
    try:
        if snippet.kind == "python":
            code = compile(text, snippet.where, "exec")
            if not parse_only:
                exec(code, {"__name__": "doc_snippet"})
            status = 0
        else:
            status = run_command(text, parse_only, monkeypatch)
    except Exception as error:  # noqa: BLE001 - reported with the snippet that raised it
        return f"{snippet.where}: {text.splitlines()[0]}: {type(error).__name__}: {error}"
    err = capsys.readouterr().err
    if status != 0:
        parsed = " (parse only)" if parse_only else ""
        return f"{snippet.where}: {text}{parsed}: exit {status}: {err.strip().splitlines()[-1:] or ''}"
    return None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    write_inputs(root)
    return root


@pytest.fixture
def no_compile(monkeypatch):
    """`torch.compile` as the identity: Inductor writes C++ for minutes on a CPU
    (tests/test_generation_compile.py compiles for real); the --compile paths still run."""
    monkeypatch.setattr(torch, "compile", lambda module, **options: module)


@pytest.mark.slow
@pytest.mark.skipif(not demo_weights.demo_weights_available(), reason="demo weights not built")
@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_documented_command_runs_on_the_demo_world(
    doc, inputs, tmp_path, monkeypatch, capsys, no_compile
):
    snippets = [snippet for snippet in doc_snippets(doc) if not reason_in(SKIPPED, snippet.text)]
    if not snippets:
        pytest.skip(f"{doc.name}: nothing to run")
    torch.set_num_threads(1)
    shutil.copytree(inputs, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    text = doc.read_text(encoding="utf-8")
    for path, command in MADE_ELSEWHERE.items():
        if path in text and f"--output-dir {path}" not in text:
            assert run_command(command, False, monkeypatch) == 0, capsys.readouterr().err
    failures = [failure for snippet in snippets if (failure := run_snippet(snippet, monkeypatch, capsys))]
    assert not failures, f"{doc.name}: commands that fail:\n" + "\n".join(failures)
    for path in WRITTEN.get(doc.name, []):
        assert (tmp_path / path).exists(), f"{doc.name}: nothing wrote {path}"
    if doc == README:
        assert np.asarray(Image.open(tmp_path / "sweep" / "cabin-7.png")).std() > 0


@pytest.mark.skipif(not demo_weights.demo_weights_available(), reason="demo weights not built")
def test_the_vae_stand_ins_are_one_other_vae_that_fits_the_demo_model(inputs):
    """`--vae` in the documents really swaps the VAE: folder and file hold the same other weights."""
    own = load_base_model("demo").vae.state_dict()
    folder = load_base_model("demo", vae=str(inputs / "sd-vae-ft-mse")).vae.state_dict()
    file = load_base_model(
        "demo", vae=str(inputs / "vae-ft-mse-840000-ema-pruned.safetensors")
    ).vae.state_dict()
    assert set(folder) == set(file) == set(own)
    assert all(torch.equal(folder[key], file[key]) for key in own)
    assert not any(torch.equal(folder[key], own[key]) for key in own)


def test_a_parse_only_command_still_fails_on_a_bad_option(monkeypatch, capsys):
    assert run_command("python benchmarks/train.py --full-size --steps 2", True, monkeypatch) == 0
    assert run_command("python benchmarks/train.py --no-such-option", True, monkeypatch) == 2
    assert run_command("python benchmarks/fewstep.py --repeats many", True, monkeypatch) == 2
    assert run_command("t2i-adapter serve --model demo --adapter demo:sketch", True, monkeypatch) == 0
    assert run_command("t2i-adapter serve --no-such-option", True, monkeypatch) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The reading and the tables, without running anything
# ---------------------------------------------------------------------------------------------


def test_documents_are_read_whole():
    commands = [snippet.text for snippet in doc_snippets(README)]
    assert "make demo" in commands
    generate = [c for c in commands if c.startswith("t2i-adapter generate --model stable")]
    assert generate and all("--prompt" in c for c in generate)
    everything = [snippet for doc in DOCS for snippet in doc_snippets(doc)]
    assert {snippet.where.split(":")[0] for snippet in everything} >= {
        "README.md",
        "docs/training.md",
        "docs/evaluation.md",
        "docs/workflows.md",
        "docs/benchmarks.md",
        "docs/demo.md",
        "docs/webui.md",
    }
    for snippet in everything:
        if snippet.kind == "python":
            compile(snippet.text, snippet.where, "exec")  # a syntax error fails here, skipped or not
            continue
        assert not snippet.text.endswith("\\") and not snippet.text.startswith("--"), snippet
        if not reason_in(SKIPPED, snippet.text):
            argv = shlex.split(substitute(snippet.text, set()))
            assert argv[0] == "t2i-adapter" or argv[1].startswith("benchmarks/"), snippet


def test_commands_are_located_on_their_own_line():
    lines = (ROOT / "docs" / "training.md").read_text(encoding="utf-8").splitlines()
    snippets = doc_snippets(ROOT / "docs" / "training.md")
    assert len(snippets) > 10
    for snippet in snippets:
        first = lines[int(snippet.where.split(":")[1]) - 1]
        assert first.startswith(snippet.text[:25]), (snippet.where, first)


def test_every_table_row_is_used_by_the_documents_of_today():
    used: set[str] = set()
    reasons = set()
    for doc in DOCS:
        for snippet in doc_snippets(doc):
            reason = reason_in(SKIPPED, snippet.text) or reason_in(PARSED_ONLY, snippet.text)
            reasons.add(reason)
            if not reason_in(SKIPPED, snippet.text):
                substitute(snippet.text, used)
    unused_reasons = (set(SKIPPED.values()) | set(PARSED_ONLY.values())) - reasons
    assert not unused_reasons, f"SKIPPED or PARSED_ONLY rows no documented command needs: {unused_reasons}"
    unused = {pattern for pattern, _ in SUBSTITUTIONS} - used
    assert not unused, f"SUBSTITUTIONS rows no documented command needs: {unused}"


def known_options() -> set[str]:
    """Every option of `t2i-adapter` and its subcommands, of `accelerate launch`, and those the
    benchmarks scripts add."""
    from accelerate.commands.launch import launch_command_parser

    options = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            options.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for subparser in action.choices.values():
                    walk(subparser)

    walk(build_parser())
    walk(launch_command_parser())
    for script in (ROOT / "benchmarks").glob("*.py"):
        options.update(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text(encoding="utf-8")))
    return options


def test_every_option_the_documents_name_exists():
    """Options named in prose (`--eval-steps`, a table of flags) are checked too, against every parser."""
    known = known_options() | {"--flag", "--no-flag"}  # "boolean keys take --flag / --no-flag"
    unknown = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        commands = [substitute(s.text, set()) for s in doc_snippets(doc) if not reason_in(SKIPPED, s.text)]
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", "\n".join([prose, *commands])):
            if option not in known:
                unknown.append(f"{doc.name}: {option}")
    assert not unknown, f"options no parser has: {sorted(set(unknown))}"


def test_every_module_name_and_source_file_the_documents_name_exists():
    """`t2i_adapter.x.y` names resolve and `pkg/file.py` paths exist (in the checkout or the package)."""
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for name in sorted(set(re.findall(r"\bt2i_adapter(?:\.\w+)+", text))):
            try:
                pkgutil.resolve_name(name)
            except (ImportError, AttributeError):
                missing.append(f"{doc.name}: {name}")
        for path in sorted(set(re.findall(r"`((?:\w+/)+\w+\.py)`", text))):
            if not ((ROOT / path).exists() or (ROOT / "src" / "t2i_adapter" / path).exists()):
                missing.append(f"{doc.name}: {path}")
    assert not missing, f"names and files that do not exist: {missing}"
