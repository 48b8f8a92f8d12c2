"""`t2i-adapter generate`: text + condition image(s) -> PNG(s) with every parameter embedded.

Every `GenerationSettings` field is a flag (`guidance_scale` -> `--guidance-scale`) and every
`AdapterSpec` field a per-adapter flag (`weight` -> `--adapter-weight`): name, help, group and
default come from the field's metadata, as `train`'s flags come from `TrainConfig`.

The per-adapter flags pair up with the `--adapter` flags in order (the first `--cond` goes with
the first `--adapter`, ...); one given once applies to every adapter. `--cond-option KEY=VALUE`
and `--cond-model PATH_OR_ID` (the preprocessor's options) instead belong to the `--adapter`
given before them. `--from-png IMAGE` re-runs the generation recorded in a PNG made here: flags
given beside it override what the file says (per-adapter flags without `--adapter` change the
recorded adapters), and condition files that are gone are replaced by the maps `--save-cond`
wrote beside the PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from t2i_adapter.conditions.options import parse_option
from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings, LoraSpec, check_step_window
from t2i_adapter.interfaces.cli.dataclass_flags import add_field_flag, default_of, flag_of, help_of

DEFAULT_OUT = "outputs"
DESCRIPTION = (
    "Generate images from a prompt and condition images; every parameter is embedded in each PNG "
    "(re-run it with --from-png)."
)
# The help groups in the order `--help` lists them, with a line under each title; a field's
# `group` metadata says which one its flag goes in.
GROUPS = {
    "what to generate": None,
    "adapters": "Each per-adapter flag repeats and pairs up with the --adapter flags in order (the first "
    "--cond goes with the first --adapter); given once, it applies to every adapter. --cond-option and "
    "--cond-model belong to the --adapter before them.",
    "img2img and inpainting": "Rework a picture (--init-image), or only its white part (--mask); "
    "adapters act by their --adapter-range measured on the whole schedule.",
    "hires fix": "Generate, upscale by --hires-scale, then repaint at that size with the adapters.",
    "sampling": None,
    "size": "Default: the condition's size, scaled to --max-resolution pixels.",
    "machine and memory": None,
    "output": None,
}
ADAPTER_FIELDS = {field.name: field for field in fields(AdapterSpec)}
# The per-adapter flags that pair up with --adapter in order (`--adapter-range` sets start and end).
PAIRED = [
    name
    for name, field in ADAPTER_FIELDS.items()
    if "flag" in field.metadata and name not in ("adapter", "cond_options")
]
SETTINGS_FLAGS = [field.name for field in fields(GenerationSettings) if field.name != "adapters"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate images from a prompt and condition images", description=DESCRIPTION
    )
    groups = {title: parser.add_argument_group(title, line) for title, line in GROUPS.items()}
    for field in fields(GenerationSettings):
        if field.name == "adapters":
            _add_adapter_flags(groups["adapters"])
        elif field.name == "loras":  # repeated, one LoRA each: `--lora a.safetensors:0.8 --lora b`
            add_field_flag(groups[field.metadata["group"]], field, nargs=None, action="append")
        else:
            add_field_flag(groups[field.metadata["group"]], field)
    groups["what to generate"].add_argument(
        "--from-png",
        metavar="IMAGE",
        help="re-run the generation recorded in this PNG; flags given beside it override the record",
    )
    groups["what to generate"].add_argument(
        "--batch",
        metavar="JOBS.jsonl",
        help="one generation per line (JSON with the PNG's parameter fields, optional 'id'); the other "
        "flags are defaults; needs --out-dir; reruns skip lines whose PNGs exist",
    )
    groups["output"].add_argument(
        "--out",
        metavar="PATH",
        help=f"a .png file name, or a folder for <seed>-<n>.png files (default: {DEFAULT_OUT}/)",
    )
    groups["output"].add_argument(
        "--save-cond",
        action="store_true",
        help="also write each preprocessed condition map (and copies of --init-image and --mask)",
    )
    groups["output"].add_argument(
        "--out-dir", metavar="DIR", help="with --batch: the folder for <id or line>.png files"
    )
    parser.set_defaults(func=run)


def _add_adapter_flags(group: argparse._ArgumentGroup) -> None:
    """The per-adapter flags, from `AdapterSpec`'s fields (`end` has none: `--adapter-range` sets it)."""
    for name in ("adapter", *PAIRED):
        field = ADAPTER_FIELDS[name]
        options: dict[str, Any] = {"action": "append", "default": []}
        if name == "start":
            shown = f"{default_of(field):g}:{default_of(ADAPTER_FIELDS['end']):g}"
            options.update(type=str, help=help_of(field, shown))
        add_field_flag(group, field, **options)
    options_field = ADAPTER_FIELDS["cond_options"]
    attached = {"action": ForLastAdapter, "dest": "condition_options", "default": []}
    add_field_flag(
        group,
        options_field,
        help=f"{help_of(options_field)}: one per flag, for the --adapter before it (not paired in order)",
        **attached,
    )
    add_field_flag(
        group,
        options_field,
        flag="--cond-model",
        metavar="PATH_OR_ID",
        help="the preprocessor's model (hub id or local folder, e.g. a depth model) for the --adapter "
        f"before it; short for {flag_of(options_field)} model=PATH_OR_ID",
        **attached,
    )


class ForLastAdapter(argparse.Action):
    """Records `(number of --adapter seen so far, flag, value)`: the value belongs to the last one."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = [*(getattr(namespace, self.dest, None) or []), (len(namespace.adapter), option_string, values)]
        setattr(namespace, self.dest, seen)


# ---------------------------------------------------------------------------------------------
# Arguments -> settings
# ---------------------------------------------------------------------------------------------


def parse_range(text: str) -> tuple[float, float]:
    """`START:END` (either may be empty, for `AdapterSpec`'s default: `:0.5`, `0.2:`) -> (start, end)."""
    parts = text.split(":")
    if len(parts) != 2:
        raise T2IAdapterError(f"--adapter-range '{text}': expected START:END, like 0:0.5")
    defaults = default_of(ADAPTER_FIELDS["start"]), default_of(ADAPTER_FIELDS["end"])
    try:
        start, end = (
            float(part) if part.strip() else default for part, default in zip(parts, defaults, strict=True)
        )
    except ValueError:
        raise T2IAdapterError(
            f"--adapter-range '{text}': START and END must be numbers, like 0:0.5"
        ) from None
    check_step_window(start, end, f"--adapter-range '{text}'")
    return start, end


def _field_values(name: str, value: str | float) -> dict[str, Any]:
    """The `AdapterSpec` field(s) one per-adapter flag's value sets."""
    if name == "start":
        start, end = parse_range(str(value))
        return {"start": start, "end": end}
    if name == "cond":
        return {"cond": str(Path(str(value)).expanduser().absolute())}
    return {name: value}


def per_adapter_values(args: argparse.Namespace, count: int, adapters: str) -> list[dict[str, Any]]:
    """Each of `count` adapters' fields from the paired flags: a flag given once is for every
    adapter; given `count` times, its values pair up with the adapters in order."""
    changes: list[dict[str, Any]] = [{} for _ in range(count)]
    for name in PAIRED:
        values = getattr(args, name)
        if not values:
            continue
        if len(values) != count and (len(values) != 1 or count == 0):
            raise T2IAdapterError(
                f"{flag_of(ADAPTER_FIELDS[name])} given {len(values)} times for {adapters}; give it once "
                "(for every adapter), once per adapter in order, or not at all"
            )
        for change, value in zip(changes, values * count if len(values) == 1 else values, strict=True):
            change.update(_field_values(name, value))
    return changes


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
            key, raw = parse_option(value, what="--cond-option")
        options[position - 1][key] = raw.strip()
    return options


def adapter_specs(args: argparse.Namespace) -> list[AdapterSpec]:
    """The `AdapterSpec`s of the `--adapter` flags and their per-adapter flags (empty when no --adapter)."""
    count = len(args.adapter)
    if count == 0:
        extra = [name for name in PAIRED if getattr(args, name)]
        if extra:
            raise T2IAdapterError(f"{flag_of(ADAPTER_FIELDS[extra[0]])} given without --adapter")
        return []
    if not args.cond:
        raise T2IAdapterError(f"no --cond for {count} --adapter; every adapter needs its condition image")
    changes = per_adapter_values(args, count, f"{count} --adapter")
    return [
        AdapterSpec(adapter=adapter, cond_options=options, **change)
        for adapter, options, change in zip(args.adapter, condition_options(args), changes, strict=True)
    ]


def saved_condition_path(image_path: Path, index: int) -> Path:
    """Where `--save-cond` writes the condition map of adapter `index` for `image_path`."""
    return image_path.with_name(f"{image_path.stem}-cond-{index}.png")


def saved_conditions_fallback(png: Path, specs: list) -> list:
    """Recorded condition files that are gone are replaced by the maps `--save-cond` wrote beside
    the PNG (already preprocessed, so their type becomes `none`): a folder of outputs reproduces
    on another machine."""
    specs = list(specs)
    for index, spec in enumerate(specs):
        saved = saved_condition_path(png, index)
        if spec.cond and not Path(spec.cond).exists() and saved.is_file():
            specs[index] = replace(spec, cond=str(saved.absolute()), cond_type="none", cond_options={})
            print(f"note: {spec.cond} is gone; using the saved condition map {saved}", file=sys.stderr)
    return specs


def saved_picture_path(image_path: Path, name: str) -> Path:
    """Where `--save-cond` writes a copy of the init picture (`init`) or mask (`mask`) for `image_path`."""
    return image_path.with_name(f"{image_path.stem}-{name}.png")


def saved_pictures_fallback(png: Path, settings: GenerationSettings) -> dict[str, str]:
    """A recorded init picture or mask that is gone is replaced by the copy `--save-cond` wrote
    beside the PNG, as conditions are (`saved_conditions_fallback`)."""
    changes = {}
    for field_name, name in (("init_image", "init"), ("mask", "mask")):
        recorded = getattr(settings, field_name)
        saved = saved_picture_path(png, name)
        if recorded and not Path(recorded).exists() and saved.is_file():
            changes[field_name] = str(saved.absolute())
            print(f"note: {recorded} is gone; using the saved copy {saved}", file=sys.stderr)
    return changes


def recorded_adapters(args: argparse.Namespace, specs: list[AdapterSpec]) -> list[AdapterSpec]:
    """With --from-png and no --adapter: the recorded adapters, changed by the per-adapter flags given."""
    png = Path(args.from_png)
    if not args.cond:
        specs = saved_conditions_fallback(png, specs)
    changes = per_adapter_values(args, len(specs), f"the {len(specs)} adapters recorded in {png}")
    return [replace(spec, **change) for spec, change in zip(specs, changes, strict=True)]


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `GenerationSettings` fields given as flags (not per-adapter ones), as settings values.

    Local paths (LoRA files, a VAE, a config folder, the init picture and mask) are recorded
    absolute, so the PNG re-runs from any folder."""
    given = {name: getattr(args, name) for name in SETTINGS_FLAGS if getattr(args, name) is not None}
    if "loras" in given:
        given["loras"] = [lora_flag(text) for text in given["loras"]]
    for name in ("model_config", "init_image", "mask"):
        if given.get(name):
            given[name] = str(Path(given[name]).expanduser().absolute())
    if given.get("vae"):
        given["vae"] = local_absolute(given["vae"])
    return given


def local_absolute(name: str) -> str:
    """An existing local path made absolute (a recorded run reruns from any folder); a hub id as it is."""
    path = Path(name).expanduser()
    return str(path.absolute()) if path.exists() else name


def lora_flag(text: str) -> LoraSpec:
    """A `--lora PATH_OR_HUB_ID[:SCALE]` flag; a local path made absolute (recorded runs rerun anywhere)."""
    spec = LoraSpec.parse(text)
    path = Path(spec.path).expanduser()
    return LoraSpec(str(path.absolute()), spec.scale) if path.exists() else spec


def settings_from_png(args: argparse.Namespace, given: dict[str, Any]) -> GenerationSettings:
    """The settings recorded in --from-png, with the flags given beside it on top."""
    from t2i_adapter.io.png import read_png_parameters

    recorded = read_png_parameters(args.from_png)
    if recorded is None:
        raise T2IAdapterError(f"{args.from_png}: has no generation parameters (not made by t2i-adapter)")
    try:
        settings = GenerationSettings.from_dict(recorded)
    except T2IAdapterError as error:
        raise InputFileError(args.from_png, f"recorded parameters cannot be used: {error}") from None
    given["adapters"] = adapter_specs(args) if args.adapter else recorded_adapters(args, settings.adapters)
    given = {**saved_pictures_fallback(Path(args.from_png), settings), **given}
    if args.resize_short_edge is not None and args.width is None and args.height is None:
        given.update(width=None, height=None)  # the recorded size would win over the short edge
    return settings.replace(**given)


def settings_from_args(args: argparse.Namespace) -> GenerationSettings:
    """GenerationSettings from the flags, on top of the PNG's record with --from-png."""
    given = given_settings(args)
    condition_options(args)  # options before any --adapter fail here, with --from-png too
    if args.from_png:
        return settings_from_png(args, given)
    for required in ("model", "prompt"):
        if required not in given:
            raise T2IAdapterError(f"--{required} is required (or --from-png IMAGE)")
    if args.resize_short_edge is not None and (args.width is not None or args.height is not None):
        raise T2IAdapterError("give either --width/--height or --resize-short-edge, not both")
    return GenerationSettings(adapters=adapter_specs(args), **given)


def batch_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """The settings fields given on the command line: defaults for every line of a --batch file."""
    given = given_settings(args)
    if "loras" in given:  # plain data, like a jobs line's fields
        given["loras"] = [asdict(spec) for spec in given["loras"]]
    if args.adapter:
        given["adapters"] = [asdict(spec) for spec in adapter_specs(args)]
    return given


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
        if "compile_seconds" in info:  # --compile: this step's UNet call compiled first
            bar.set_postfix_str(f"compiled in {info['compile_seconds']:.1f} s", refresh=False)
        bar.update(info["step"] - bar.n)

    try:
        yield update
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.generation.api import generate
    from t2i_adapter.io.png import save_png

    if args.batch:
        from t2i_adapter.interfaces.cli.generate_batch import run_batch

        return run_batch(args, batch_defaults(args))
    if args.out_dir:
        raise T2IAdapterError("--out-dir goes with --batch; a single generation takes --out")
    settings = settings_from_args(args)
    paths = output_paths(args.out, settings.seed, settings.num_images)
    with _progress_bar() as progress:
        result = generate(settings, progress=progress)
    parameters = result.settings.to_dict()
    for image, path in zip(result.images, paths, strict=True):
        save_png(image, path, parameters)
        print(path)
    size_change = result.size_change()
    if size_change:  # on stderr: stdout stays one written path per line, for scripts
        print(f"size: {size_change}", file=sys.stderr)
    if args.save_cond:
        _save_inputs(result, paths[0], parameters)
    return 0


def _save_inputs(result: Any, image_path: Path, parameters: dict[str, Any]) -> None:
    """`--save-cond`: each condition map, and copies of the init picture and mask, beside the
    first image, so `--from-png` reproduces it when the originals are gone."""
    from t2i_adapter.io.images import load_image
    from t2i_adapter.io.png import save_png

    for index, condition in enumerate(result.conditions):
        path = saved_condition_path(image_path, index)
        save_png(condition, path, {"condition_of": str(image_path), **parameters["adapters"][index]})
        print(path)
    for field_name, name, mode in (("init_image", "init", "RGB"), ("mask", "mask", "L")):
        source = getattr(result.settings, field_name)
        if source:
            path = saved_picture_path(image_path, name)
            save_png(load_image(source, mode=mode), path, {f"{name}_of": str(image_path)})
            print(path)
