"""Few-step sampling with adapters: LCM and TCD (the samplers of LCM-LoRA, TCD and Hyper-SD LoRAs),
their step limits and eta, adapter windows over 4 steps, and a LoRA + adapter through generate()."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.generation.api import ModelCache, generate
from t2i_adapter.generation.loras import LoraSpec
from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
from t2i_adapter.generation.units import AdapterUnit
from test_loras import kohya_lora
from tiny_models import save_tiny_sd, tiny_adapter, tiny_sd_base_model, tiny_sdxl_base_model


@pytest.fixture(scope="module")
def sd_base():
    return tiny_sd_base_model()


@pytest.fixture(scope="module")
def pipe(sd_base):
    return T2IAdapterPipeline(sd_base)


@pytest.fixture(scope="module")
def condition():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))


class UNetCalls:
    """Counts the UNet's forward calls and the batch each one gets (a mismatch, or CFG, shows)."""

    def __init__(self, unet):
        self.batches: list[int] = []
        self.handle = unet.register_forward_pre_hook(
            lambda module, args: self.batches.append(args[0].shape[0])
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def run(pipe, units, **kwargs):
    options = {"steps": 4, "guidance_scale": 1.0, "seed": 0, "output_type": "np"}
    options.update(kwargs)
    return pipe("a red cat", units, **options).images


def test_lcm_with_an_adapter_runs_four_unet_calls_and_the_adapter_steers_it(pipe, sd_base, condition):
    adapter = tiny_adapter(seed=1)
    steps = []
    with UNetCalls(sd_base.unet) as calls:
        steered = run(
            pipe,
            [AdapterUnit(adapter, condition)],
            scheduler="lcm",
            callback=lambda info: steps.append(
                (info["step"], int(info["timestep"]), info["adapters_active"])
            ),
        )
    # guidance 1: no classifier-free guidance, so one UNet call of batch 1 per step
    assert calls.batches == [1, 1, 1, 1]
    # LCM's 4 steps are picked from its 50-step skipping schedule, the adapter acts on each
    assert [step for step, _, _ in steps] == [1, 2, 3, 4] and all(active for *_, active in steps)
    assert steps[0][1] > steps[-1][1] > 0
    assert steered.shape == (1, 64, 64, 3) and np.isfinite(steered).all()
    plain = run(pipe, [], scheduler="lcm")
    assert np.abs(steered - plain).max() > 1e-2


def test_lcm_with_guidance_above_one_doubles_the_batch(pipe, sd_base, condition):
    with UNetCalls(sd_base.unet) as calls:
        run(pipe, [AdapterUnit(tiny_adapter(seed=1), condition)], scheduler="lcm", guidance_scale=1.5)
    assert calls.batches == [2, 2, 2, 2]


def test_tcd_runs_and_its_gamma_is_the_eta(pipe, sd_base, condition):
    units = [AdapterUnit(tiny_adapter(seed=1), condition)]
    with UNetCalls(sd_base.unet) as calls:
        default = run(pipe, units, scheduler="tcd", steps=8)
    assert len(calls.batches) == 8 and np.isfinite(default).all()
    # eta None is TCD's own gamma (0.3): the same as asking for it, unlike a deterministic eta 0
    assert np.array_equal(default, run(pipe, units, scheduler="tcd", steps=8, eta=0.3))
    assert np.abs(default - run(pipe, units, scheduler="tcd", steps=8, eta=0.0)).max() > 1e-3


def test_ddim_default_eta_is_unchanged(pipe, condition):
    units = [AdapterUnit(tiny_adapter(seed=1), condition)]
    assert np.array_equal(run(pipe, units, steps=2), run(pipe, units, steps=2, eta=0.0))


def test_eta_on_a_scheduler_without_one_fails_before_sampling(pipe, sd_base):
    with (
        UNetCalls(sd_base.unet) as calls,
        pytest.raises(T2IAdapterError, match="eta applies to .*LCMScheduler"),
    ):
        run(pipe, [], scheduler="lcm", eta=0.5)
    assert calls.batches == []


def test_lcm_step_limit_is_one_line(pipe, sd_base):
    with UNetCalls(sd_base.unet) as calls, pytest.raises(T2IAdapterError, match="at most 50 steps.*not 51"):
        run(pipe, [], scheduler="lcm", steps=51)
    assert calls.batches == []


def test_trailing_aliases_start_at_the_last_timestep(pipe):
    for name in ("ddim_trailing", "euler_trailing"):
        scheduler = pipe._scheduler(name, 4)
        assert int(scheduler.timesteps[0]) == 999, name
    assert int(pipe._scheduler("ddim", 4).timesteps[0]) < 999  # SD's leading spacing


def test_a_window_holding_none_of_four_steps_is_warned(pipe, condition, caplog):
    units = [AdapterUnit(tiny_adapter(seed=1), condition, start=0.3, end=0.45, name="sketchy")]
    with caplog.at_level(logging.WARNING, logger="t2i_adapter.generation.units"):
        run(pipe, units, scheduler="lcm")
    assert "sketchy: its step range 0.3:0.45 holds none of the 4 steps (at fractions 0, 0.25, 0.5, 0.75)" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="t2i_adapter.generation.units"):
        run(pipe, units, steps=20)  # 0.3 and 0.35, 0.4 are steps of a 20-step run
    assert "holds none" not in caplog.text


def test_sdxl_lcm_with_an_xl_adapter(condition):
    base = tiny_sdxl_base_model()
    with UNetCalls(base.unet) as calls:
        image = run(
            T2IAdapterPipeline(base),
            [AdapterUnit(tiny_adapter(sdxl=True, seed=2), condition)],
            scheduler="lcm",
        )
    assert calls.batches == [1, 1, 1, 1] and np.isfinite(image).all()


@pytest.mark.slow
def test_an_lcm_lora_with_an_adapter_through_generate(tmp_path):
    """The LCM-LoRA recipe end to end: --lora, --scheduler lcm, 4 steps, guidance 1, one adapter."""
    save_tiny_sd(tmp_path / "model")
    tiny_adapter(seed=1).save_pretrained(tmp_path / "adapter")
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "c.png"
    )
    save_file(kohya_lora(tiny_sd_base_model(), 1, text=False), str(tmp_path / "lcm.safetensors"))
    settings = GenerationSettings(
        model=str(tmp_path / "model"),
        prompt="a red ball",
        adapters=[AdapterSpec(str(tmp_path / "adapter"), str(tmp_path / "c.png"), cond_type="none")],
        loras=[LoraSpec(str(tmp_path / "lcm.safetensors"))],
        scheduler="lcm",
        steps=4,
        guidance_scale=1.0,
        max_resolution=64 * 64,
        device="cpu",
    )
    cache = ModelCache()
    seen = []
    result = generate(settings, cache=cache, progress=lambda info: seen.append(info["total"]))
    assert seen == [4, 4, 4, 4]
    pixels = np.asarray(result.images[0]).astype(np.int16)
    for changed in ({"adapters": []}, {"loras": []}):  # the adapter and the LoRA each act
        other = np.asarray(generate(settings.replace(**changed), cache=cache).images[0]).astype(np.int16)
        assert np.abs(pixels - other).mean() > 0.5, changed  # out of 255 (tiny random VAE: ~1)
    recorded = GenerationSettings.from_dict(result.settings.to_dict())
    assert (recorded.scheduler, recorded.steps, recorded.eta, recorded.loras) == (
        "lcm",
        4,
        None,
        settings.loras,
    )
    with pytest.raises(T2IAdapterError, match="eta must be a number from 0.0 to 1.0"):
        settings.replace(eta=2.0)
