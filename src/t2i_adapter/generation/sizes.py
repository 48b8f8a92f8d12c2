"""Output size: from the condition (short edge or pixel budget) or explicit, rounded to what the
base model and the adapters need, so any input size works.

A UNet with `n` down blocks halves the latent `n - 1` times and the VAE divides by its scale
factor, so the image side must be a multiple of `vae_scale_factor * 2 ** (n - 1)` (64 for SD1.x/2.x,
32 for SDXL). A spatial adapter divides by its `total_downscale_factor` (64 for SD1.x adapters,
32 for SDXL ones). The side must be a multiple of both.
"""

from __future__ import annotations

import math


def unet_multiple(vae_scale_factor: int, num_down_blocks: int) -> int:
    return vae_scale_factor * 2 ** (num_down_blocks - 1)


def required_multiple(vae_scale_factor: int, num_down_blocks: int, adapter_factors: list[int]) -> int:
    """The smallest side length every size must be a multiple of."""
    multiple = unet_multiple(vae_scale_factor, num_down_blocks)
    for factor in adapter_factors:
        multiple = math.lcm(multiple, int(factor))
    return multiple


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest multiple (like the original's `round(x / 64) * 64`), at least one multiple."""
    return max(multiple, int(round(value / multiple)) * multiple)


def round_size(width: float, height: float, multiple: int) -> tuple[int, int]:
    """Both sides to multiples, each rounded down or up: the pair whose aspect ratio is closest to
    `width / height` (then the one whose area is closest), so small pictures keep their shape."""

    def sides(value: float) -> set[int]:
        return {
            max(multiple, math.floor(value / multiple) * multiple),
            max(multiple, math.ceil(value / multiple) * multiple),
        }

    aspect = math.log(max(width, 1e-6) / max(height, 1e-6))

    def cost(size: tuple[int, int]) -> tuple[float, float]:
        aspect_error = round(abs(math.log(size[0] / size[1]) - aspect), 9)  # ties: equal up to float noise
        return aspect_error, abs(size[0] * size[1] - width * height)

    return min(((w, h) for w in sides(width) for h in sides(height)), key=cost)


def resolve_size(
    multiple: int,
    *,
    width: int | None = None,
    height: int | None = None,
    condition_size: tuple[int, int] | None = None,
    resize_short_edge: int | None = None,
    max_resolution: int | None = 512 * 512,
    default_side: int = 512,
) -> tuple[int, int]:
    """(width, height) of the output.

    Explicit `width`/`height` win (one of them alone keeps the condition's aspect ratio). Otherwise
    the condition's size is scaled so its short edge is `resize_short_edge`, or so it has
    `max_resolution` pixels (the original inference scripts' rule; None keeps its size), then
    rounded.
    """
    if width is not None and height is not None:
        return round_size(width, height, multiple)
    if condition_size is None:
        if width is None and height is None:
            return round_to_multiple(default_side, multiple), round_to_multiple(default_side, multiple)
        side = width if width is not None else height
        return round_to_multiple(side, multiple), round_to_multiple(side, multiple)
    cond_width, cond_height = condition_size
    if width is not None:  # the given side as asked, the other from it as rounded
        width = round_to_multiple(width, multiple)
        return width, round_to_multiple(width * cond_height / cond_width, multiple)
    if height is not None:
        height = round_to_multiple(height, multiple)
        return round_to_multiple(height * cond_width / cond_height, multiple), height
    if resize_short_edge is not None:
        scale = resize_short_edge / min(cond_width, cond_height)
    elif max_resolution is None:
        scale = 1.0
    else:
        scale = math.sqrt(max_resolution / (cond_width * cond_height))
    return round_size(cond_width * scale, cond_height * scale, multiple)
