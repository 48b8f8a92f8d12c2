"""Size rounding, scheduler names, device names: the small rules generation depends on."""

from __future__ import annotations

import math

import pytest
import torch

from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import T2IAdapterError, UnknownNameError
from t2i_adapter.generation.checks import unet_feature_shapes
from t2i_adapter.generation.schedulers import SCHEDULER_ALIASES, make_scheduler
from t2i_adapter.generation.sizes import required_multiple, resolve_size, round_size, round_to_multiple
from tiny_models import tiny_scheduler, tiny_sd_components, tiny_sdxl_components


def test_required_multiple_for_real_architectures():
    assert required_multiple(8, 4, [64]) == 64  # SD1.x/2.x + released adapter (8 * 2**3)
    assert required_multiple(8, 3, [32]) == 32  # SDXL + XL adapter (16 * 2)
    assert required_multiple(8, 4, []) == 64
    assert required_multiple(8, 2, [16, 24]) == 48


def test_round_to_multiple_never_zero():
    assert round_to_multiple(67, 64) == 64
    assert round_to_multiple(97, 64) == 128
    assert round_to_multiple(3, 64) == 64


def test_resolve_size_rules():
    # the original rule: scale to max_resolution pixels, then round
    assert resolve_size(64, condition_size=(1024, 768), max_resolution=512 * 512) == (576, 448)
    assert resolve_size(64, condition_size=(1000, 500), resize_short_edge=512) == (1024, 512)
    assert resolve_size(64, condition_size=(67, 131), max_resolution=None) == (64, 128)
    assert resolve_size(64, width=300, height=301) == (320, 320)
    assert resolve_size(64, width=512, condition_size=(1000, 500)) == (512, 256)  # keeps aspect
    assert resolve_size(64, default_side=512) == (512, 512)


def test_rounding_keeps_the_aspect_ratio_of_small_pictures():
    # 100x37 (2.70) rounded side by side was 112x32 (3.5); 96x32 (3.0) is the closest the multiple allows
    assert resolve_size(16, condition_size=(100, 37), max_resolution=None) == (96, 32)
    assert resolve_size(16, width=100, height=37) == (96, 32)
    assert resolve_size(16, height=32, condition_size=(100, 37)) == (80, 32)  # 86.5 from the rounded 32

    def aspect_error(size, width, height):
        return abs(math.log(size[0] / size[1]) - math.log(width / height))

    for width in range(17, 200, 7):
        for height in range(17, 200, 11):
            chosen = round_size(width, height, 16)
            nearest = (round_to_multiple(width, 16), round_to_multiple(height, 16))
            assert aspect_error(chosen, width, height) <= aspect_error(nearest, width, height) + 1e-9
            assert all(
                side % 16 == 0 and abs(side - value) < 16
                for side, value in zip(chosen, (width, height), strict=True)
            )


def test_unet_feature_shapes_follow_the_blocks():
    sd_unet = tiny_sd_components()["unet"]
    # cross-attention block: before its downsampler; last plain block: no downsampler; then mid
    assert unet_feature_shapes(sd_unet.config, 8, 16) == [(32, 8, 16), (64, 4, 8), (64, 4, 8)]
    sdxl_unet = tiny_sdxl_components()["unet"]
    # SDXL's first plain DownBlock2D gets its map after downsampling
    assert unet_feature_shapes(sdxl_unet.config, 8, 8) == [(32, 4, 4), (64, 4, 4), (64, 2, 2), (64, 2, 2)]


@pytest.mark.parametrize("name", sorted(SCHEDULER_ALIASES))
def test_every_scheduler_alias_builds_and_sets_timesteps(name):
    scheduler = make_scheduler(name, tiny_scheduler())
    scheduler.set_timesteps(4)
    assert len(scheduler.timesteps) >= 4


def test_scheduler_by_class_name_and_unknown():
    assert (
        type(make_scheduler("UniPCMultistepScheduler", tiny_scheduler())).__name__
        == "UniPCMultistepScheduler"
    )
    with pytest.raises(UnknownNameError, match="dpm\\+\\+_2m_karras"):
        make_scheduler("karras-magic", tiny_scheduler())


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(UnknownNameError, match="cuda"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(T2IAdapterError, match="no CUDA GPU"):
            resolve_device("cuda")
