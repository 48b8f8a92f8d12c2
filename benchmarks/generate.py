"""Generation benchmark: this package's pipeline against diffusers' StableDiffusionAdapterPipeline.

Both run on the very same components (UNet, VAE, text encoder, adapter, scheduler config) in one
process, alternately, with the same seed; reported per pipeline: seconds per image (wall clock,
best and median of the repeats; on CPU also the process CPU time, steadier on a shared machine)
and peak memory during a generation (CUDA allocator peak; on CPU the RSS growth of a first
generation in a fresh process); for ours also the adapter's share of the time.

    python benchmarks/generate.py                 # tiny components, CPU (seconds)
    python benchmarks/generate.py --full-size     # the SD1.5 architecture, random weights (GPU)
    python benchmarks/generate.py --full-size --dtype float16 --device cuda --memory-options

Not a test: numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: components built in code

from t2i_adapter.devices import resolve_device  # noqa: E402
from t2i_adapter.generation.api import TORCH_DTYPES  # noqa: E402
from t2i_adapter.generation.base_model import BaseModel  # noqa: E402
from t2i_adapter.generation.pipeline import T2IAdapterPipeline  # noqa: E402
from t2i_adapter.generation.units import AdapterUnit, describe_adapter  # noqa: E402
from tiny_models import tiny_adapter, tiny_sd_components, tiny_tokenizer  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


def full_size_components(seed: int = 0) -> dict:
    """Stable Diffusion 1.5's architecture (UNet 860M, VAE, CLIP ViT-L text encoder), random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, T2IAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            vocab_size=514,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    adapter = T2IAdapter(
        in_channels=3, channels=[320, 640, 1280, 1280], num_res_blocks=2, downscale_factor=8
    )  # the released SD1.x full adapter's shape (77M parameters)
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tiny_tokenizer(),
        "scheduler": scheduler,
        "adapter": adapter.eval(),
    }


def tiny_components() -> dict:
    components = tiny_sd_components()
    components["adapter"] = tiny_adapter(seed=1)
    return components


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory above the level at `start`: CUDA allocator statistics, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0

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
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                self._peak = max(self._peak, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_total = torch.cuda.max_memory_allocated(self.device)
            self.peak_bytes = self.peak_total - self._base
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss())
            self.peak_total = self._peak
            self.peak_bytes = self._peak - self._base
        return False


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def run_ours(pipeline, adapter, condition, args):
    output = pipeline(
        "a photo of a red cat",
        [AdapterUnit(adapter, condition)],
        steps=args.steps,
        guidance_scale=7.5,
        seed=0,
        output_type="np",
    )
    return output.images, output.timings["adapter_seconds"]


def run_diffusers(pipeline, condition, args):
    output = pipeline(
        "a photo of a red cat",
        image=condition,
        num_inference_steps=args.steps,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(0),
        height=args.size,
        width=args.size,
        output_type="np",
    )
    return output.images, 0.0


def measure(name, run, device):
    """One timed generation: wall and process CPU seconds; CUDA peak memory (CPU: see `_probe`)."""
    memory = PeakMemory(device) if device.type == "cuda" else contextlib.nullcontext()
    with memory:
        started, cpu_started = time.perf_counter(), time.process_time()
        images, adapter_seconds = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "name": name,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mib": memory.peak_bytes / 2**20 if device.type == "cuda" else float("nan"),
        "peak_total_mib": memory.peak_total / 2**20 if device.type == "cuda" else float("nan"),
        "adapter_share": adapter_seconds / seconds,
        "images": images,
    }


def _probe(name: str, argv: list[str] | None) -> dict:
    import subprocess

    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--memory-options"]
    if "--json" in forwarded:
        index = forwarded.index("--json")
        del forwarded[index : index + 2]
    completed = subprocess.run(
        [sys.executable, __file__, *forwarded, "--probe", name], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true", help="SD1.5 architecture with random weights")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N or mps (default: CUDA, then MPS, then CPU)"
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(TORCH_DTYPES))
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (50)")
    parser.add_argument("--size", type=int, default=None, help="image side (64 tiny, 512 full size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per pipeline, alternating (5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--memory-options",
        action="store_true",
        help="also measure ours with attention slicing + VAE tiling (and model CPU offload on CUDA)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--probe", choices=["ours", "diffusers", "ours-memory"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = TORCH_DTYPES[args.dtype]
    args.size = args.size or (512 if args.full_size else 64)

    from diffusers import StableDiffusionAdapterPipeline

    components = full_size_components() if args.full_size else tiny_components()
    adapter = components.pop("adapter").to(device=device, dtype=dtype)
    base = BaseModel(**components, name="full-size SD1.5 (random)" if args.full_size else "tiny SD")
    base.to(device=device, dtype=dtype)
    ours = T2IAdapterPipeline(base)
    reference = StableDiffusionAdapterPipeline(
        **components,
        adapter=adapter,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    reference.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    condition = torch.rand(1, 3, args.size, args.size, generator=generator).to(device=device, dtype=dtype)

    if args.probe:
        # one first generation in a fresh process: its RSS growth is the pipeline's working memory
        describe_adapter(adapter)  # imports this package's adapter modules outside the measured window
        if args.probe == "ours-memory":
            ours.enable_attention_slicing()
            ours.enable_vae_tiling()
        run = {"diffusers": lambda: run_diffusers(reference, condition, args)}.get(
            args.probe, lambda: run_ours(ours, adapter, condition, args)
        )
        with PeakMemory(device) as memory:
            run()
        print(
            json.dumps({"peak_mib": memory.peak_bytes / 2**20, "peak_total_mib": memory.peak_total / 2**20})
        )
        return 0

    # warm-up (kernels, allocator), then alternate so drift hits both alike
    run_ours(ours, adapter, condition, args)
    run_diffusers(reference, condition, args)
    results = {"ours": [], "diffusers": []}
    for _ in range(args.repeats):
        results["ours"].append(measure("ours", lambda: run_ours(ours, adapter, condition, args), device))
        results["diffusers"].append(
            measure("diffusers", lambda: run_diffusers(reference, condition, args), device)
        )

    def merged(runs):
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

    summary = {name: merged(runs) for name, runs in results.items()}
    if device.type == "cpu":
        # RSS only grows once per process, so each pipeline's peak is taken in a fresh process
        for name in ("ours", "diffusers"):
            summary[name].update(_probe(name, argv))
    difference = float(np.abs(summary["ours"]["images"] - summary["diffusers"]["images"]).max())
    rows = [("ours", summary["ours"]), ("diffusers", summary["diffusers"])]

    if args.memory_options:
        ours.enable_attention_slicing()
        ours.enable_vae_tiling()
        if device.type == "cuda":
            ours.enable_model_cpu_offload(device)
        option_runs = [
            measure("ours + memory options", lambda: run_ours(ours, adapter, condition, args), device)
            for _ in range(args.repeats)
        ]
        rows.append(("ours + memory options", merged(option_runs)))
        if device.type == "cpu":
            rows[-1][1].update(_probe("ours-memory", argv))

    machine = f"{platform.machine()} {torch.get_num_threads()} threads"
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    print(
        f"# {base.name}, {args.size}x{args.size}, {args.steps} steps, {args.dtype}, {device.type} ({machine}), "
        f"torch {torch.__version__}"
    )
    print(
        "| pipeline | s / image, best | median | CPU s / image, median | peak memory (MiB) | adapter share |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows:
        share = f"{100 * row['adapter_share']:.2f}%" if name != "diffusers" else "n/a"
        print(
            f"| {name} | {row['seconds']:.3f} | {row['median_seconds']:.3f} | {row['cpu_seconds']:.3f} | "
            f"{row['peak_mib']:.1f} (process {row['peak_total_mib']:.0f}) | {share} |"
        )
    # On a CPU shared with other work, process CPU time is the steadier measure of the work done.
    key = "cpu_seconds" if device.type == "cpu" else "median_seconds"
    ratio = summary["ours"][key] / summary["diffusers"][key]
    print(f"time ratio ours/diffusers ({key}): {ratio:.3f}; max pixel difference: {difference:.2e}")

    if args.json:
        payload = {
            "model": base.name,
            "size": args.size,
            "steps": args.steps,
            "dtype": args.dtype,
            "device": str(device),
            "machine": machine,
            "ratio": ratio,
            "max_pixel_difference": difference,
            "rows": {name: {k: v for k, v in row.items() if k != "images"} for name, row in rows},
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
