"""Where a training step's time goes, and so the most that `--cache-latents` can ever gain.

A step of the plain loop (what diffusers' example scripts do) is: VAE encoder on the pictures,
text encoder on the captions, adapter forward, UNet forward with the adapter's features, backward
through the UNet into the adapter (the UNet is frozen, but the gradient still flows through all of
it), and the optimizer step. Caching latents and text embeddings removes the first two and
nothing else, so

    ceiling = step time / (step time - VAE encoder - text encoder)

bounds the speed-up of any caching, whatever the implementation. This script times each part on
the same batch, with the dtype and gradient checkpointing a run would use:

    python benchmarks/train_breakdown.py --full-size --resolution 512 --batch-size 1   # SD1.5 shapes
    python benchmarks/train_breakdown.py                                                # tiny SD

Not a test: numbers go to docs/benchmarks.md ("Training"), by hand.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import synchronize  # noqa: E402  (after the path set-up)


def components(full_size: bool) -> dict:
    if full_size:
        from generate import full_size_components

        return full_size_components()
    from tiny_models import tiny_adapter, tiny_sd_components

    return {**tiny_sd_components(), "adapter": tiny_adapter()}


def timed(function, repeats: int) -> float:
    """Median seconds of `repeats` calls after one untimed call (CUDA synchronised)."""
    function()
    durations = []
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        function()
        synchronize()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def checkpointing_cost(unet, step, repeats: int) -> None:
    """The training step with gradient checkpointing off and on, alternating in this process (a busy
    machine slows both alike): median wall and process CPU seconds, and on/off ratios."""
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for round_index in range(repeats + 1):  # round 0 warms up
        for on in (False, True):
            if on:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            synchronize()
            if round_index:
                runs[on].append((time.perf_counter() - wall, time.process_time() - cpu))
    medians = {on: [statistics.median(r[i] for r in runs[on]) for i in (0, 1)] for on in runs}
    print("| gradient checkpointing | s / step (wall) | CPU s / step |")
    print("|---|---|---|")
    for on in (False, True):
        print(f"| {'on' if on else 'off'} | {medians[on][0]:.3f} | {medians[on][1]:.3f} |")
    wall_ratio, cpu_ratio = (medians[True][i] / medians[False][i] for i in (0, 1))
    print(f"\non / off: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="SD1.5 architecture, random weights")
    parser.add_argument("--resolution", type=int, default=None, help="pixels (64 tiny, 512 full size)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--checkpointing-cost",
        action="store_true",
        help="only the adapter + UNet step, gradient checkpointing off and on alternately (CPU time too)",
    )
    args = parser.parse_args()
    resolution = args.resolution or (512 if args.full_size else 64)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)

    parts = components(args.full_size)
    vae, text_encoder, unet, adapter = parts["vae"], parts["text_encoder"], parts["unet"], parts["adapter"]
    for frozen in (vae, text_encoder, unet):
        frozen.to(device, dtype).requires_grad_(False).eval()
    adapter.to(device).train()  # trained in fp32, as the trainer does (autocast for the matmuls)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()  # diffusers checkpoints only in training mode; the weights stay frozen
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-5)

    batch = args.batch_size
    pixels = torch.randn(batch, 3, resolution, resolution, device=device, dtype=dtype)
    condition = torch.rand(batch, adapter.config.in_channels, resolution, resolution, device=device)
    ids = torch.randint(0, text_encoder.config.vocab_size - 2, (batch, 77), device=device)
    latent_size = resolution // 8
    latents = torch.randn(batch, 4, latent_size, latent_size, device=device, dtype=dtype)
    timesteps = torch.randint(0, 1000, (batch,), device=device)
    context = torch.randn(batch, 77, text_encoder.config.hidden_size, device=device, dtype=dtype)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)

    def vae_encode():
        with torch.no_grad():
            vae.encode(pixels).latent_dist.sample()

    def text_encode():
        with torch.no_grad():
            text_encoder(ids)[0]

    def adapter_and_unet():
        with autocast:
            features = adapter(condition)
            residuals = [f.to(dtype) for f in features]
            prediction = unet(
                latents, timesteps, context, down_intrablock_additional_residuals=residuals
            ).sample
            loss = torch.nn.functional.mse_loss(prediction.float(), latents.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if args.checkpointing_cost:
        checkpointing_cost(unet, adapter_and_unet, args.repeats)
        return
    times = {
        "VAE encoder": timed(vae_encode, args.repeats),
        "text encoder": timed(text_encode, args.repeats),
        "adapter + UNet forward and backward + step": timed(adapter_and_unet, args.repeats),
    }
    step = sum(times.values())
    cacheable = times["VAE encoder"] + times["text encoder"]
    name = "SD1.5 architecture (random weights)" if args.full_size else "tiny SD"
    print(
        f"{name}, {resolution} px, batch {batch}, {args.dtype}, gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}, {device}, torch {torch.__version__}\n"
    )
    print("| part | seconds | share of the step |")
    print("|---|---|---|")
    for part, seconds in times.items():
        print(f"| {part} | {seconds:.3f} | {seconds / step:.0%} |")
    print(
        f"\nceiling of any caching speed-up: {step:.3f} / {step - cacheable:.3f} = {step / (step - cacheable):.2f}x"
    )


if __name__ == "__main__":
    main()
