"""Few-step sampling: seconds per image of each sampler setting on the same model and adapter.

The settings run alternately in one process (`--repeats` rounds, each setting once per round, the
same scene and seed), so a busy machine slows them alike; reported per setting: UNet calls per
image, median wall-clock and process CPU seconds per image, and the speed-ups over the first row
(CPU time is the steadier one on a shared machine).

    python benchmarks/fewstep.py                        # the demo model + demo:sketch, CPU, 64 px
    python benchmarks/fewstep.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --adapter TencentARC/t2iadapter_sketch_sd15v2 --lora latent-consistency/lcm-lora-sdv1-5 \
        --device cuda --dtype float16                   # a real LCM-LoRA (GPU; the LoRA is on for
                                                        # every row, as a user would run it)

Not a test: numbers go to docs/benchmarks.md ("Few-step sampling").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from t2i_adapter.demo.world import make_scene
from t2i_adapter.generation.api import ModelCache, generate
from t2i_adapter.generation.loras import LoraSpec
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings

# (label, scheduler, steps, guidance): the package's default, the evaluation protocol's, and the
# few-step recipes (LCM 4 steps, TCD 8, both without classifier-free guidance), plus DDIM at 4
SETTINGS = [
    ("ddim, 50 steps, guidance 7.5 (default)", "ddim", 50, 7.5),
    ("ddim, 20 steps, guidance 7.5", "ddim", 20, 7.5),
    ("ddim, 4 steps, guidance 7.5", "ddim", 4, 7.5),
    ("lcm, 4 steps, guidance 1", "lcm", 4, 1.0),
    ("tcd, 8 steps, guidance 1", "tcd", 8, 1.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--adapter", default="demo:sketch")
    parser.add_argument(
        "--lora", action="append", default=[], help="PATH_OR_HUB_ID[:SCALE], on for every row"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    scene = make_scene(7)
    cache = ModelCache()
    common = dict(
        model=args.model,
        prompt=scene.caption,
        adapters=[AdapterSpec(args.adapter, None, cond_type="none")],
        loras=[LoraSpec.parse(text) for text in args.lora],
        seed=7,
        device=args.device,
        dtype=args.dtype,
    )
    condition = [scene.condition("sketch")]
    runs = {label: [] for label, *_ in SETTINGS}
    for round_index in range(args.repeats + 1):  # round 0 warms up (loading, first-call costs)
        for label, scheduler, steps, guidance in SETTINGS:
            settings = GenerationSettings(**common, scheduler=scheduler, steps=steps, guidance_scale=guidance)
            wall, cpu = time.perf_counter(), time.process_time()
            generate(settings, condition_images=condition, cache=cache)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if round_index:
                runs[label].append((time.perf_counter() - wall, time.process_time() - cpu))

    base_wall = statistics.median(w for w, _ in runs[SETTINGS[0][0]])
    base_cpu = statistics.median(c for _, c in runs[SETTINGS[0][0]])
    print(
        f"{args.model} + {args.adapter}, {args.device}, {args.dtype}, median of {args.repeats}, torch {torch.__version__}"
    )
    print("| sampler | UNet calls (batch) | s / image | CPU s / image | speed-up (wall) | speed-up (CPU) |")
    print("|---|---|---|---|---|---|")
    for label, _, steps, guidance in SETTINGS:
        wall = statistics.median(w for w, _ in runs[label])
        cpu = statistics.median(c for _, c in runs[label])
        calls = f"{steps} x {2 if guidance > 1 else 1}"
        print(
            f"| {label} | {calls} | {wall:.3f} | {cpu:.3f} | {base_wall / wall:.1f}x | {base_cpu / cpu:.1f}x |"
        )


if __name__ == "__main__":
    main()
