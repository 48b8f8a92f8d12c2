"""`t2i-adapter generate`: text + condition image(s) -> PNG(s) with every parameter embedded.

`--adapter`, `--cond`, `--cond-type`, `--adapter-weight`, `--adapter-range` (and
`--adapter-task`) repeat and pair up in order (the first `--cond` goes with the first
`--adapter`, ...); each flag after `--cond` is given for every adapter or not at all.
`--cond-option KEY=VALUE` and `--cond-model PATH_OR_ID` (the preprocessor's options, such as a
depth model's `detect_resolution`) are different: they belong to the `--adapter` given before
them on the command line, repeat for several options, and adapters without any need none.
`--from-png IMAGE` re-runs the generation recorded in a PNG made here; flags given beside it
override what the file says, and condition files that are gone are replaced by the maps
`--save-cond` wrote beside the PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from t2i_adapter.errors import T2IAdapterError

DEFAULT_OUT = "outputs"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images from a prompt and condition images",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
    )
    what = parser.add_argument_group("what to generate")
    what.add_argument("--model", help="base model: hub id, diffusers folder, .safetensors file, or 'demo'")
    what.add_argument("--prompt", help="text prompt")
    what.add_argument("--negative-prompt", help="what to steer away from (default: none)")
    what.add_argument("--from-png", metavar="IMAGE", help="re-run the generation recorded in this PNG")
    what.add_argument(
        "--model-config",
        metavar="FOLDER",
        help="single-file --model only: diffusers config folder to use instead of the shipped one",
    )
    what.add_argument(
        "--prediction-type",
        choices=("epsilon", "v_prediction"),
        help="what the model predicts, when detection (SD2.x single files) or its config is wrong",
    )
    what.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH_OR_HUB_ID[:SCALE]",
        help="a LoRA and its scale (1.0); repeat for several",
    )

    adapters = parser.add_argument_group("adapters (repeat; they pair up in order)")
    adapters.add_argument(
        "--adapter", action="append", default=[], help="adapter: hub id, folder, file, demo:<name>"
    )
    adapters.add_argument("--cond", action="append", default=[], metavar="IMAGE", help="condition image")
    adapters.add_argument(
        "--cond-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="preprocessor for the condition image (canny, sketch, color, depth, ...; 'none': already a map)",
    )
    adapters.add_argument(
        "--adapter-weight", action="append", default=[], type=float, metavar="W", help="feature weight (1.0)"
    )
    adapters.add_argument(
        "--adapter-range",
        action="append",
        default=[],
        metavar="START:END",
        help="fraction of the steps the adapter acts on (0:1; the original cond_tau T is 0:T)",
    )
    adapters.add_argument(
        "--adapter-task",
        action="append",
        default=[],
        metavar="NAME",
        help="condition name for a CoAdapter fuser (sketch, depth, color, style, ...; default: --cond-type)",
    )
    adapters.add_argument(
        "--cond-option",
        action=ForLastAdapter,
        dest="condition_options",
        default=[],
        metavar="KEY=VALUE",
        help="option of the preprocessor of the --adapter before it (not paired in order; repeat for "
        "several), e.g. --cond-option detect_resolution=384; see 't2i-adapter preprocess --list'",
    )
    adapters.add_argument(
        "--cond-model",
        action=ForLastAdapter,
        dest="condition_options",
        default=[],
        metavar="PATH_OR_ID",
        help="model (hub id or local folder) of the preprocessor of the --adapter before it, "
        "e.g. a depth model; short for --cond-option model=PATH_OR_ID",
    )
    adapters.add_argument("--fuser", help="CoAdapter fuser that mixes the adapters' features")
    adapters.add_argument(
        "--clip-vision", help="CLIP vision model for style adapters (openai/clip-vit-large-patch14)"
    )

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, help="denoising steps (50)")
    sampling.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (7.5)")
    sampling.add_argument("--seed", type=int, help="random seed (42)")
    sampling.add_argument("--num-images", type=int, help="images to generate (1)")
    sampling.add_argument(
        "--scheduler", help="ddim (default), euler, euler_a, dpm++_2m, unipc, ... or a diffusers class"
    )

    size = parser.add_argument_group("size (default: the condition's, scaled to --max-resolution pixels)")
    size.add_argument("--width", type=int, help="output width (rounded to what the model needs)")
    size.add_argument("--height", type=int, help="output height (rounded to what the model needs)")
    size.add_argument(
        "--resize-short-edge", type=int, metavar="N", help="scale the condition's short edge to N"
    )
    size.add_argument(
        "--max-resolution",
        type=int,
        metavar="PIXELS",
        help="pixel budget (default: the model's native one: 512*512 for SD1.5, 1024*1024 for SDXL)",
    )

    machine = parser.add_argument_group("machine and memory")
    machine.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    machine.add_argument("--dtype", help="float32 (default), float16/fp16, bfloat16/bf16")
    machine.add_argument("--attention-slicing", action="store_true", default=None, help="less memory, slower")
    machine.add_argument(
        "--vae-tiling", action="store_true", default=None, help="decode in tiles (large images)"
    )
    machine.add_argument(
        "--cpu-offload",
        action="store_true",
        default=None,
        help="keep models on the CPU until used (small GPUs)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help=f"a .png file name, or a folder for <seed>-<n>.png files (default: {DEFAULT_OUT}/)",
    )
    output.add_argument("--save-cond", action="store_true", help="also write each preprocessed condition map")
    parser.set_defaults(func=run)


class ForLastAdapter(argparse.Action):
    """Records `(number of --adapter seen so far, flag, value)`: the value belongs to the last one."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = [*(getattr(namespace, self.dest, None) or []), (len(namespace.adapter), option_string, values)]
        setattr(namespace, self.dest, seen)


# ---------------------------------------------------------------------------------------------
# Arguments -> settings
# ---------------------------------------------------------------------------------------------

SCALAR_FLAGS = {
    "model": "model",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "steps": "steps",
    "guidance_scale": "guidance_scale",
    "seed": "seed",
    "num_images": "num_images",
    "scheduler": "scheduler",
    "width": "width",
    "height": "height",
    "resize_short_edge": "resize_short_edge",
    "max_resolution": "max_resolution",
    "device": "device",
    "dtype": "dtype",
    "attention_slicing": "attention_slicing",
    "vae_tiling": "vae_tiling",
    "cpu_offload": "cpu_offload",
    "fuser": "fuser",
    "clip_vision": "clip_vision",
    "model_config": "model_config",
    "prediction_type": "prediction_type",
}


def parse_range(text: str) -> tuple[float, float]:
    """`START:END` (either may be empty: `:0.5`, `0.2:`) -> (start, end) fractions."""
    parts = text.split(":")
    if len(parts) != 2:
        raise T2IAdapterError(f"--adapter-range '{text}': expected START:END, like 0:0.5")
    try:
        start = float(parts[0]) if parts[0].strip() else 0.0
        end = float(parts[1]) if parts[1].strip() else 1.0
    except ValueError:
        raise T2IAdapterError(
            f"--adapter-range '{text}': START and END must be numbers, like 0:0.5"
        ) from None
    if not 0.0 <= start <= end <= 1.0:
        raise T2IAdapterError(f"--adapter-range '{text}': need 0 <= START <= END <= 1")
    return start, end


def _paired(values: list, name: str, count: int, default):
    if not values:
        return [default] * count
    if len(values) != count:
        raise T2IAdapterError(
            f"{name} given {len(values)} times for {count} --adapter; give it once per adapter, in order, or not at all"
        )
    return values


def condition_options(args: argparse.Namespace) -> list[dict[str, str]]:
    """Each adapter's preprocessor options from `--cond-option` / `--cond-model`, as text (the
    registry converts them to each option's type and refuses unknown names)."""
    options: list[dict[str, str]] = [{} for _ in args.adapter]
    for position, flag, value in args.condition_options:  # in command-line order: the last one wins
        if position == 0:
            raise T2IAdapterError(f"{flag} {value}: put it after the --adapter whose condition it is for")
        if flag == "--cond-model":
            key, raw = "model", value
        else:
            key, sep, raw = value.partition("=")
            key = key.strip()
            if not sep or not key.isidentifier():
                raise T2IAdapterError(f"--cond-option '{value}' is not of the form KEY=VALUE")
        options[position - 1][key] = raw.strip()
    return options


def adapter_specs(args: argparse.Namespace):
    """The `AdapterSpec`s from the repeated adapter flags (empty when no --adapter)."""
    from t2i_adapter.generation.settings import AdapterSpec

    count = len(args.adapter)
    if count == 0:
        flags = ("cond", "cond_type", "adapter_weight", "adapter_range", "adapter_task")
        extra = [flag for flag in flags if getattr(args, flag)]
        if extra:
            raise T2IAdapterError(f"--{extra[0].replace('_', '-')} given without --adapter")
        return []
    if len(args.cond) != count:
        raise T2IAdapterError(
            f"{len(args.cond)} --cond for {count} --adapter; every adapter needs its condition image"
        )
    types = _paired(args.cond_type, "--cond-type", count, "none")
    weights = _paired(args.adapter_weight, "--adapter-weight", count, 1.0)
    ranges = [parse_range(text) for text in _paired(args.adapter_range, "--adapter-range", count, "0:1")]
    tasks = _paired(args.adapter_task, "--adapter-task", count, None)
    options = condition_options(args)
    return [
        AdapterSpec(
            adapter=adapter,
            cond=str(Path(cond).expanduser().absolute()),
            cond_type=cond_type,
            weight=weight,
            start=start,
            end=end,
            task=task,
            cond_options=cond_options,
        )
        for adapter, cond, cond_type, weight, (start, end), task, cond_options in zip(
            args.adapter, args.cond, types, weights, ranges, tasks, options, strict=True
        )
    ]


def saved_condition_path(image_path: Path, index: int) -> Path:
    """Where `--save-cond` writes the condition map of adapter `index` for `image_path`."""
    return image_path.with_name(f"{image_path.stem}-cond-{index}.png")


def saved_conditions_fallback(png: Path, specs: list) -> list:
    """Recorded condition files that are gone are replaced by the maps `--save-cond` wrote beside
    the PNG (already preprocessed, so their type becomes `none`): a folder of outputs reproduces
    on another machine."""
    from dataclasses import replace

    specs = list(specs)
    for index, spec in enumerate(specs):
        saved = saved_condition_path(png, index)
        if spec.cond and not Path(spec.cond).exists() and saved.is_file():
            specs[index] = replace(spec, cond=str(saved.absolute()), cond_type="none", cond_options={})
            print(f"note: {spec.cond} is gone; using the saved condition map {saved}", file=sys.stderr)
    return specs


def _local_absolute(spec):
    """A LoRA given as a local path is recorded absolute (the PNG re-runs from any folder)."""
    path = Path(spec.path).expanduser()
    return type(spec)(str(path.absolute()), spec.scale) if path.exists() else spec


def settings_from_args(args: argparse.Namespace):
    """GenerationSettings from the flags, on top of the PNG's record with --from-png."""
    from t2i_adapter.generation.settings import GenerationSettings, LoraSpec

    given = {
        field: getattr(args, flag) for flag, field in SCALAR_FLAGS.items() if getattr(args, flag) is not None
    }
    condition_options(args)  # options before any --adapter fail here, with --from-png too
    if args.lora:
        given["loras"] = [_local_absolute(LoraSpec.parse(text)) for text in args.lora]
    if "model_config" in given:
        given["model_config"] = str(Path(given["model_config"]).expanduser().absolute())
    if args.from_png:
        from t2i_adapter.io.png import read_png_parameters

        recorded = read_png_parameters(args.from_png)
        if recorded is None:
            raise T2IAdapterError(f"{args.from_png}: has no generation parameters (not made by t2i-adapter)")
        settings = GenerationSettings.from_dict(recorded)
        if args.adapter:
            given["adapters"] = adapter_specs(args)
        elif args.cond:
            if len(args.cond) != len(settings.adapters):
                raise T2IAdapterError(
                    f"{len(args.cond)} --cond for the {len(settings.adapters)} adapters recorded in {args.from_png}"
                )
            given["adapters"] = [
                {**spec.__dict__, "cond": str(Path(cond).expanduser().absolute())}
                for spec, cond in zip(settings.adapters, args.cond, strict=True)
            ]
        else:
            given["adapters"] = saved_conditions_fallback(Path(args.from_png), settings.adapters)
        if args.resize_short_edge is not None and args.width is None and args.height is None:
            given.update(width=None, height=None)  # the recorded size would win over the short edge
        return settings.replace(**given)
    for required in ("model", "prompt"):
        if required not in given:
            raise T2IAdapterError(f"--{required} is required (or --from-png IMAGE)")
    if args.resize_short_edge is not None and (args.width is not None or args.height is not None):
        raise T2IAdapterError("give either --width/--height or --resize-short-edge, not both")
    return GenerationSettings(adapters=adapter_specs(args), **given)


# ---------------------------------------------------------------------------------------------
# Output paths
# ---------------------------------------------------------------------------------------------


def output_paths(out: str | None, seed: int, count: int) -> list[Path]:
    """`x.png` -> x.png (or x-0.png, x-1.png, ... for several); a folder -> folder/<seed>-<n>.png."""
    target = Path(out or DEFAULT_OUT).expanduser()
    if target.suffix.lower() == ".png":
        if count == 1:
            return [target]
        return [target.with_name(f"{target.stem}-{index}.png") for index in range(count)]
    if target.exists() and not target.is_dir():
        raise T2IAdapterError(f"{target}: exists and is not a folder; --out takes a .png name or a folder")
    return [target / f"{seed}-{index}.png" for index in range(count)]


@contextlib.contextmanager
def _progress_bar():
    """A sampling progress bar on stderr when it is a terminal (never in logs or pipes)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc="sampling", unit="step", leave=False, file=sys.stderr)

    def update(info: dict) -> None:
        bar.total = info["total"]
        bar.update(info["step"] - bar.n)

    try:
        yield update
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.generation.api import generate
    from t2i_adapter.io.png import save_png

    settings = settings_from_args(args)
    paths = output_paths(args.out, settings.seed, settings.num_images)
    with _progress_bar() as progress:
        result = generate(settings, progress=progress)
    parameters = result.settings.to_dict()
    for image, path in zip(result.images, paths, strict=True):
        save_png(image, path, parameters)
        print(path)
    if args.save_cond:
        for index, condition in enumerate(result.conditions):
            path = saved_condition_path(paths[0], index)
            save_png(condition, path, {"condition_of": str(paths[0]), **parameters["adapters"][index]})
            print(path)
    return 0
