"""Generation benchmark: this package's pipeline against diffusers' adapter pipelines, eager and compiled.

Both run on the very same components (UNet, VAE, text encoder(s), adapter, scheduler config) in
one process, alternately, with the same seed; the peer is `StableDiffusionAdapterPipeline` (SD)
or `StableDiffusionXLAdapterPipeline` (`--sdxl`). Reported per pipeline: seconds per image (wall
clock, best and median of the repeats; on CPU also the process CPU time, steadier on a shared
machine), peak memory during a generation (CUDA allocator peak; on CPU the RSS growth of a first
generation in a fresh process) and, for ours, the adapter's share of the time. With `--compile`
the UNet is compiled once (`T2IAdapterPipeline.enable_compile`: CUDA graphs on CUDA) and the
diffusers pipeline gets that same compiled UNet, so the table has eager/eager and
compiled/compiled rows from one run; the first compiled call of each (it compiles) is reported apart.

    python benchmarks/generate.py                       # tiny SD, CPU
    python benchmarks/generate.py --compile             # + both compiled
    python benchmarks/generate.py --sdxl                # tiny SDXL
    python benchmarks/generate.py --full-size --dtype float16 --device cuda --compile --memory-options
    python benchmarks/generate.py --full-size --sdxl --dtype float16 --device cuda --compile  # 1024x1024
    python benchmarks/generate.py --full-size --dtype float16 --device cuda --compile \
        --scheduler lcm --guidance 1 --steps 4          # few-step: LCM, no CFG (one UNet call a step)

`benchmarks/gpu_all.sh` runs the GPU set and `benchmarks/targets.py` judges issue 12's targets from
its JSON files. Not a test: numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: components built in code

from t2i_adapter.devices import resolve_device  # noqa: E402
from t2i_adapter.errors import T2IAdapterError, first_line  # noqa: E402
from t2i_adapter.generation.api import TORCH_DTYPES  # noqa: E402
from t2i_adapter.generation.base_model import BaseModel  # noqa: E402
from t2i_adapter.generation.pipeline import T2IAdapterPipeline  # noqa: E402
from t2i_adapter.generation.schedulers import check_scheduler_name, make_scheduler  # noqa: E402
from t2i_adapter.generation.units import AdapterUnit, describe_adapter  # noqa: E402
from tiny_models import tiny_adapter, tiny_sd_components, tiny_sdxl_components, tiny_tokenizer  # noqa: E402

PROMPT = "a photo of a red cat"
STARTED = time.perf_counter()  # the log's progress lines count from here (imports done)

# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


def _sd_vae(scaling_factor: float = 0.18215):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
        scaling_factor=scaling_factor,
    )


def _clip_text(hidden: int, layers: int, heads: int, *, projection: bool = False, act: str = "quick_gelu"):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        vocab_size=514,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        projection_dim=hidden,
        hidden_act=act,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def full_size_components(seed: int = 0) -> dict:
    """Stable Diffusion 1.5's architecture (UNet 860M, VAE, CLIP ViT-L text encoder), random weights."""
    from diffusers import T2IAdapter, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
    )
    adapter = T2IAdapter(
        in_channels=3, channels=[320, 640, 1280, 1280], num_res_blocks=2, downscale_factor=8
    )  # the released SD1.x full adapter's shape (77M parameters)
    return {
        "unet": unet.eval(),
        "vae": _sd_vae().eval(),
        "text_encoder": _clip_text(768, 12, 12),
        "tokenizer": tiny_tokenizer(),
        "scheduler": _ddim(),
        "adapter": adapter.eval(),
    }


def full_size_sdxl_components(seed: int = 0) -> dict:
    """SDXL base's architecture (UNet 2.6B, VAE, CLIP ViT-L + OpenCLIP bigG), random weights."""
    from diffusers import T2IAdapter, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128,
        cross_attention_dim=2048,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        layers_per_block=2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    adapter = T2IAdapter(
        in_channels=3,
        channels=[320, 640, 1280, 1280],
        num_res_blocks=2,
        downscale_factor=16,
        adapter_type="full_adapter_xl",
    )  # the released SDXL adapters' shape
    return {
        "unet": unet.eval(),
        "vae": _sd_vae(scaling_factor=0.13025).eval(),
        "text_encoder": _clip_text(768, 12, 12),
        "tokenizer": tiny_tokenizer(),
        "text_encoder_2": _clip_text(1280, 32, 20, projection=True, act="gelu"),
        "tokenizer_2": tiny_tokenizer(),
        "scheduler": _ddim(),
        "adapter": adapter.eval(),
    }


def tiny_components(sdxl: bool) -> dict:
    components = tiny_sdxl_components() if sdxl else tiny_sd_components()
    components["adapter"] = tiny_adapter(sdxl=sdxl, seed=1)
    return components


def components_for(args: argparse.Namespace) -> tuple[dict, str]:
    if args.full_size and args.sdxl:
        return full_size_sdxl_components(), "full-size SDXL (random)"
    if args.full_size:
        return full_size_components(), "full-size SD1.5 (random)"
    return tiny_components(args.sdxl), "tiny SDXL" if args.sdxl else "tiny SD"


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory above the level at `start`: CUDA allocator statistics, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self.peak_total = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = self._peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_total = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_total = max(self._peak, self._rss())
        self.peak_bytes = self.peak_total - self._base
        return False


# ---------------------------------------------------------------------------------------------
# The two pipelines on one set of components
# ---------------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    device: torch.device
    name: str
    ours: T2IAdapterPipeline
    reference: Any
    adapter: torch.nn.Module
    condition: torch.Tensor
    first_calls: dict[str, float] = field(default_factory=dict)  # compiled: the first call's seconds
    errors: dict[str, str] = field(default_factory=dict)  # compiled row -> why it is missing


def diffusers_peer(components: dict, adapter: torch.nn.Module, sdxl: bool) -> Any:
    from diffusers import StableDiffusionAdapterPipeline, StableDiffusionXLAdapterPipeline

    if sdxl:
        # diffusers upcasts an fp16 SDXL VAE and casts it back each call; ours upcasts its decoder
        # once and keeps it: a VAE of its own keeps them from undoing each other
        components = {**components, "vae": copy.deepcopy(components["vae"])}
        peer = StableDiffusionXLAdapterPipeline(**components, adapter=adapter)
    else:
        peer = StableDiffusionAdapterPipeline(
            **components,
            adapter=adapter,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    peer.set_progress_bar_config(disable=True)
    return peer


def build_bench(args: argparse.Namespace) -> Bench:
    device = resolve_device(args.device)
    dtype = TORCH_DTYPES[args.dtype]
    # full size: weights made on the device (random init of SDXL's 3.5B parameters takes a minute
    # of CPU); the scheduler made again outside, its tables on the CPU as diffusers makes them
    with torch.device(device) if args.full_size else contextlib.nullcontext():
        components, name = components_for(args)
    scheduler = components["scheduler"]
    components["scheduler"] = type(scheduler).from_config(scheduler.config)
    adapter = components.pop("adapter").to(device=device, dtype=dtype)
    base = BaseModel(**components, name=name)
    base.to(device=device, dtype=dtype)
    reference = diffusers_peer(components, adapter, args.sdxl)
    if args.scheduler:  # ours builds a fresh one per call from the same config (`make_scheduler`)
        reference.scheduler = make_scheduler(args.scheduler, components["scheduler"])
    generator = torch.Generator().manual_seed(0)
    condition = torch.rand(1, 3, args.size, args.size, generator=generator).to(device=device, dtype=dtype)
    return Bench(args, device, name, T2IAdapterPipeline(base), reference, adapter, condition)


def run_ours(bench: Bench) -> tuple[np.ndarray, float]:
    output = bench.ours(
        PROMPT,
        [AdapterUnit(bench.adapter, bench.condition)],
        steps=bench.args.steps,
        guidance_scale=bench.args.guidance,
        scheduler=bench.args.scheduler,
        seed=0,
        width=bench.args.size,
        height=bench.args.size,
        output_type="np",
    )
    return output.images, output.timings["adapter_seconds"]


def run_diffusers(bench: Bench) -> tuple[np.ndarray, float]:
    output = bench.reference(
        PROMPT,
        image=bench.condition,
        num_inference_steps=bench.args.steps,
        guidance_scale=bench.args.guidance,
        generator=torch.Generator("cpu").manual_seed(0),
        height=bench.args.size,
        width=bench.args.size,
        output_type="np",
    )
    return output.images, 0.0


RUNS = {"ours": run_ours, "diffusers": run_diffusers}


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def measure(run, bench: Bench) -> dict:
    """One timed generation: wall and process CPU seconds; CUDA peak memory (CPU: see `probe_memory`)."""
    cuda = bench.device.type == "cuda"
    memory = PeakMemory(bench.device) if cuda else contextlib.nullcontext()
    with memory:
        started, cpu_started = time.perf_counter(), time.process_time()
        images, adapter_seconds = run(bench)
        if cuda:
            torch.cuda.synchronize(bench.device)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    nan = float("nan")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mib": memory.peak_bytes / 2**20 if cuda else nan,
        "peak_total_mib": memory.peak_total / 2**20 if cuda else nan,
        "adapter_share": adapter_seconds / seconds,
        "images": images,
    }


def merged(runs: list[dict]) -> dict:
    return {
        "seconds": min(r["seconds"] for r in runs),
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "all_seconds": [r["seconds"] for r in runs],
        "peak_mib": max(r["peak_mib"] for r in runs),
        "peak_total_mib": max(r["peak_total_mib"] for r in runs),
        "adapter_share": statistics.median(r["adapter_share"] for r in runs),
        "images": runs[-1]["images"],
    }


def warm_up(bench: Bench, names: list[str], suffix: str) -> list[str]:
    """One untimed call each (kernels, allocator; compiled: the compile, timed apart). A compiled
    pipeline whose first call fails is left out, its error kept, so the other rows still come."""
    working = []
    for name in names:
        started = time.perf_counter()
        try:
            RUNS[name](bench)
        except Exception as error:
            if not suffix:
                raise
            traceback.print_exc()
            bench.errors[name + suffix] = f"{type(error).__name__}: {first_line(error)}"
            continue
        bench.first_calls[name + suffix] = time.perf_counter() - started
        working.append(name)
    return working


def alternate(bench: Bench, names: list[str], suffix: str = "") -> dict[str, dict]:
    """`warm_up`, then the repeats alternating so drift hits every pipeline alike. Returns row
    name -> merged runs."""
    names = warm_up(bench, names, suffix)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(bench.args.repeats):
        for name in names:
            runs[name].append(measure(RUNS[name], bench))
    return {name + suffix: merged(name_runs) for name, name_runs in runs.items()}


def compile_both(bench: Bench) -> bool:
    """Ours compiles its UNet; the diffusers pipeline gets that same compiled module."""
    if not bench.ours.enable_compile():
        return False
    bench.reference.unet = bench.ours.compiled_unet.module
    return True


def probe_memory(name: str, argv: list[str] | None) -> dict:
    """On CPU, RSS only grows once per process: a first generation in a fresh process (eager only)."""
    forwarded = [
        a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--memory-options", "--compile")
    ]
    if "--json" in forwarded:
        index = forwarded.index("--json")
        del forwarded[index : index + 2]
    completed = subprocess.run(
        [sys.executable, __file__, *forwarded, "--probe", name], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_probe(bench: Bench) -> int:
    describe_adapter(bench.adapter)  # imports this package's adapter modules outside the measured window
    if bench.args.probe == "ours-memory":
        bench.ours.enable_attention_slicing()
        bench.ours.enable_vae_tiling()
    run = RUNS["diffusers" if bench.args.probe == "diffusers" else "ours"]
    with PeakMemory(bench.device) as memory:
        run(bench)
    print(json.dumps({"peak_mib": memory.peak_bytes / 2**20, "peak_total_mib": memory.peak_total / 2**20}))
    return 0


def memory_options_row(bench: Bench, argv: list[str] | None) -> dict:
    """Ours with attention slicing + VAE tiling (+ model CPU offload on CUDA), eager."""
    ours = bench.ours
    ours.enable_attention_slicing()
    ours.enable_vae_tiling()
    if bench.device.type == "cuda":
        ours.enable_model_cpu_offload(bench.device)
    row = merged([measure(run_ours, bench) for _ in range(bench.args.repeats)])
    if bench.device.type == "cpu" and not bench.args.no_memory_probe:
        row.update(probe_memory("ours-memory", argv))
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} {torch.get_num_threads()} threads"


def scheduler_name(bench: Bench) -> str:
    """`--scheduler` as given, else the model's own scheduler class."""
    return bench.args.scheduler or type(bench.ours.base.scheduler).__name__


def print_table(bench: Bench, rows: dict[str, dict]) -> None:
    args = bench.args
    print(
        f"# {bench.name}, {args.size}x{args.size}, {args.steps} steps ({scheduler_name(bench)}), "
        f"guidance {args.guidance:g}, {args.dtype}, "
        f"{bench.device.type} ({machine_name(bench.device)}), torch {torch.__version__}"
    )
    print(
        "| pipeline | s / image, best | median | CPU s / image, median | peak memory (MiB) | adapter share |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        share = "n/a" if name.startswith("diffusers") else f"{100 * row['adapter_share']:.2f}%"
        print(
            f"| {name} | {row['seconds']:.3f} | {row['median_seconds']:.3f} | {row['cpu_seconds']:.3f} | "
            f"{row['peak_mib']:.1f} (process {row['peak_total_mib']:.0f}) | {share} |"
        )
    for name, seconds in bench.first_calls.items():
        if "compiled" in name:
            print(f"first call of {name} (compiles): {seconds:.1f} s")


def ratios(bench: Bench, rows: dict[str, dict]) -> dict[str, float]:
    """Time ratios: ours/diffusers eager and compiled, compiled/eager for each, ours compiled/diffusers eager."""
    # On a CPU shared with other work, process CPU time is the steadier measure of the work done.
    key = "cpu_seconds" if bench.device.type == "cpu" else "median_seconds"
    pairs = {
        "ours/diffusers, eager": ("ours", "diffusers"),
        "ours/diffusers, compiled": ("ours, compiled", "diffusers, compiled"),
        "ours compiled/eager": ("ours, compiled", "ours"),
        "diffusers compiled/eager": ("diffusers, compiled", "diffusers"),
        "ours compiled/diffusers eager": ("ours, compiled", "diffusers"),
    }
    return {label: rows[a][key] / rows[b][key] for label, (a, b) in pairs.items() if a in rows and b in rows}


def differences(rows: dict[str, dict]) -> dict[str, float]:
    pairs = {"ours vs diffusers": ("ours", "diffusers"), "ours compiled vs eager": ("ours, compiled", "ours")}
    return {
        label: float(np.abs(rows[a]["images"] - rows[b]["images"]).max())
        for label, (a, b) in pairs.items()
        if a in rows and b in rows
    }


def summary(bench: Bench, rows: dict[str, dict]) -> dict:
    return {"ratios": ratios(bench, rows), "max_pixel_difference": differences(rows)}


def versions() -> dict[str, str]:
    import diffusers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def plain(row: dict) -> dict:
    """A row for JSON: no images, null for what was not measured (NaN: CPU peak without the probe)."""
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in row.items()
        if key != "images"
    }


def write_json(path: Path, bench: Bench, rows: dict[str, dict], complete: bool) -> None:
    """The run so far (`complete` False: more rows were still to come), rewritten after each phase,
    so a run stopped mid-way (a time limit during a compile) still leaves what it measured."""
    args = bench.args
    payload = {
        "model": bench.name,
        "size": args.size,
        "steps": args.steps,
        "dtype": args.dtype,
        "scheduler": scheduler_name(bench),
        "guidance": args.guidance,
        "repeats": args.repeats,
        "device": str(bench.device),
        "machine": machine_name(bench.device),
        "versions": versions(),
        "compile": args.compile,
        "complete": complete,
        **summary(bench, rows),
        "first_calls": bench.first_calls,
        "errors": bench.errors,
        "rows": {name: plain(row) for name, row in rows.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    temporary.replace(path)  # a reader never sees half a file


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--full-size", action="store_true", help="SD1.5 (or SDXL) architecture, random weights"
    )
    parser.add_argument("--sdxl", action="store_true", help="SDXL, against StableDiffusionXLAdapterPipeline")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: CUDA, MPS, CPU)")
    parser.add_argument("--dtype", default="float32", choices=sorted(TORCH_DTYPES))
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (50)")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="sampler for both pipelines: ddim, lcm, tcd, ... (generation/schedulers.py; default: the model's DDIM)",
    )
    parser.add_argument(
        "--guidance", type=float, default=7.5, help="guidance scale (7.5; 1 = no CFG, one UNet call per step)"
    )
    parser.add_argument("--size", type=int, default=None, help="image side (64 tiny, 512 SD1.5, 1024 SDXL)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per pipeline, alternating (5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="also both pipelines with the compiled UNet")
    parser.add_argument(
        "--memory-options",
        action="store_true",
        help="also ours with attention slicing + VAE tiling (and model CPU offload on CUDA)",
    )
    parser.add_argument(
        "--no-memory-probe",
        action="store_true",
        help="CPU: skip the fresh-process RSS measurements (peak memory left blank; faster)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here (rewritten after each phase)")
    parser.add_argument("--probe", choices=["ours", "diffusers", "ours-memory"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scheduler:
        try:
            check_scheduler_name(args.scheduler)
        except T2IAdapterError as error:
            parser.error(str(error))
    args.size = args.size or ((1024 if args.sdxl else 512) if args.full_size else 64)
    return args


def collect_rows(bench: Bench, argv: list[str] | None) -> dict[str, dict]:
    """Eager rows, then compiled, then memory options; the JSON is rewritten after each."""
    rows = alternate(bench, ["ours", "diffusers"])
    if bench.device.type == "cpu" and not bench.args.no_memory_probe:
        for name in ("ours", "diffusers"):
            rows[name].update(probe_memory(name, argv))
    save(bench, rows)
    if bench.args.compile and compile_both(bench):
        rows.update(alternate(bench, ["ours", "diffusers"], suffix=", compiled"))
        save(bench, rows)
    if bench.args.memory_options:
        if bench.ours.compiled_unet is not None:
            bench.ours = T2IAdapterPipeline(bench.ours.base)  # memory options are measured eager
        rows["ours + memory options"] = memory_options_row(bench, argv)
    return rows


def save(bench: Bench, rows: dict[str, dict], complete: bool = False) -> None:
    if bench.args.json:
        write_json(bench.args.json, bench, rows, complete)
        more = "" if complete else " (more to come)"
        print(
            f"[{time.perf_counter() - STARTED:.0f} s] {bench.args.json}: rows {', '.join(rows)}{more}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = build_bench(args)
    if args.probe:
        return run_probe(bench)
    rows = collect_rows(bench, argv)
    save(bench, rows, complete=True)
    print_table(bench, rows)
    results = summary(bench, rows)
    for label, value in results["ratios"].items():
        print(f"time ratio {label}: {value:.3f}")
    for label, value in results["max_pixel_difference"].items():
        print(f"max pixel difference {label}: {value:.2e}")
    for row, error in bench.errors.items():
        print(f"error: {row} not measured: {error}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
