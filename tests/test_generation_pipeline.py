"""T2IAdapterPipeline on tiny components: same math as diffusers, windows, multi-adapter, style, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_adapter.errors import ModelMismatchError, T2IAdapterError, UnknownNameError
from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.generation.units import AdapterUnit
from tiny_models import (
    TINY_TEXT_DIM,
    tiny_adapter,
    tiny_clip_vision,
    tiny_sd_base_model,
    tiny_sdxl_base_model,
)

STEPS = 2


@pytest.fixture(scope="module")
def sd_base():
    return tiny_sd_base_model()


@pytest.fixture(scope="module")
def pipe(sd_base):
    return T2IAdapterPipeline(sd_base)


@pytest.fixture(scope="module")
def adapter():
    return tiny_adapter(seed=1)


@pytest.fixture(scope="module")
def condition():
    generator = torch.Generator().manual_seed(5)
    return torch.rand(1, 3, 64, 64, generator=generator)


def diffusers_pipeline(base, adapter):
    from diffusers import StableDiffusionAdapterPipeline

    pipeline = StableDiffusionAdapterPipeline(
        unet=base.unet,
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        scheduler=base.scheduler,
        adapter=adapter,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipe, units, **kwargs):
    options = {"steps": STEPS, "seed": 0, "output_type": "np", "negative_prompt": "dark"}
    options.update(kwargs)
    return pipe("a red cat", units, **options).images


# ---------------------------------------------------------------- equality with diffusers


def test_equals_diffusers_adapter_pipeline(sd_base, pipe, adapter, condition):
    reference = diffusers_pipeline(sd_base, adapter)(
        "a red cat",
        image=condition,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        negative_prompt="dark",
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        height=64,
        width=64,
        adapter_conditioning_scale=0.7,
    ).images
    ours = run(pipe, [AdapterUnit(adapter, condition, weight=0.7)])
    assert ours.shape == reference.shape == (1, 64, 64, 3)
    assert np.abs(ours - reference).max() <= 1e-3
    # and the adapter matters at all: without it the image is clearly different
    plain = run(pipe, [])
    assert np.abs(plain - reference).max() > 1e-2


def test_equals_diffusers_with_pil_condition_and_several_images(sd_base, pipe, adapter, condition):
    picture = Image.fromarray((condition[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    reference = diffusers_pipeline(sd_base, adapter)(
        "a red cat",
        image=picture,
        num_inference_steps=STEPS,
        negative_prompt="dark",
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
        height=64,
        width=64,
    ).images
    ours = run(pipe, [AdapterUnit(adapter, picture)], num_images=2, seed=3)
    assert ours.shape == (2, 64, 64, 3)
    assert np.abs(ours - reference).max() <= 1e-3
    assert np.abs(ours[0] - ours[1]).max() > 1e-3  # two different images


def test_multi_adapter_equals_diffusers_multiadapter(sd_base, pipe, adapter, condition):
    from diffusers import MultiAdapter

    second = tiny_adapter(in_channels=1, seed=7)
    edge = (condition[:, :1] > 0.5).float()
    reference = diffusers_pipeline(sd_base, MultiAdapter([adapter, second]))(
        "a red cat",
        image=[condition, edge],
        num_inference_steps=STEPS,
        negative_prompt="dark",
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        height=64,
        width=64,
        adapter_conditioning_scale=[0.6, 1.3],
    ).images
    units = [AdapterUnit(adapter, condition, weight=0.6), AdapterUnit(second, edge, weight=1.3)]
    ours = run(pipe, units)
    assert np.abs(ours - reference).max() <= 1e-3
    only_first = run(pipe, units[:1], negative_prompt="dark")
    assert np.abs(ours - only_first).max() > 1e-3


def test_sdxl_equals_diffusers():
    from diffusers import StableDiffusionXLAdapterPipeline

    base = tiny_sdxl_base_model()
    adapter = tiny_adapter(sdxl=True, seed=2)
    condition = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    reference_pipeline = StableDiffusionXLAdapterPipeline(
        unet=base.unet,
        vae=base.vae,
        text_encoder=base.text_encoder,
        text_encoder_2=base.text_encoder_2,
        tokenizer=base.tokenizer,
        tokenizer_2=base.tokenizer_2,
        scheduler=base.scheduler,
        adapter=adapter,
    )
    reference_pipeline.set_progress_bar_config(disable=True)
    reference = reference_pipeline(
        "a red cat",
        image=condition,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        height=64,
        width=64,
        adapter_conditioning_scale=0.8,
    ).images
    ours = T2IAdapterPipeline(base)(
        "a red cat",
        [AdapterUnit(adapter, condition, weight=0.8)],
        steps=STEPS,
        guidance_scale=5.0,
        seed=0,
        output_type="np",
    ).images
    assert np.abs(ours - reference).max() <= 1e-3


# ---------------------------------------------------------------- determinism and sizes


def test_same_seed_same_image_other_seed_other_image(pipe, adapter, condition):
    units = [AdapterUnit(adapter, condition)]
    first, again, other = run(pipe, units, seed=11), run(pipe, units, seed=11), run(pipe, units, seed=12)
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 1e-2


def test_odd_condition_size_is_rounded(pipe, adapter):
    picture = Image.new("RGB", (67, 131), (200, 30, 30))
    output = pipe("x", [AdapterUnit(adapter, picture)], steps=1, output_type="np")
    # tiny UNet (2 blocks) and adapter both need multiples of 16: 67 -> 64, 131 -> 128
    assert (output.width, output.height) == (64, 128)
    assert output.images.shape == (1, 128, 64, 3)
    assert output.conditions[0].shape == (1, 3, 128, 64)
    explicit = pipe("x", [AdapterUnit(adapter, picture)], steps=1, width=41, height=23, output_type="np")
    assert (explicit.width, explicit.height) == (32, 16)  # 41x23 is 1.78 wide: 32x16 (2), not 48x16 (3)
    short_edge = pipe("x", [AdapterUnit(adapter, picture)], steps=1, resize_short_edge=32, output_type="np")
    assert (short_edge.width, short_edge.height) == (32, 64)


# ---------------------------------------------------------------- windows (cond_tau)


def test_window_holding_no_step_equals_no_adapter(pipe, adapter, condition):
    plain = run(pipe, [], steps=4)
    # 4 steps sit at fractions 0, .25, .5, .75: none of them in [0.8, 1)
    never = run(pipe, [AdapterUnit(adapter, condition, start=0.8, end=1.0)], steps=4)
    assert np.array_equal(plain, never)


@pytest.mark.parametrize("start, end", [(0.0, 0.0), (0.5, 0.5), (0.8, 0.2), (-0.1, 0.5), (0.0, 1.5)])
def test_window_that_cannot_act_is_refused(adapter, condition, start, end):
    """0 <= start < end <= 1 (`settings.check_step_window`); start == end would never act."""
    with pytest.raises(T2IAdapterError, match=r"step range .* must satisfy 0 <= start < end <= 1"):
        AdapterUnit(adapter, condition, start=start, end=end, name="probe")


def test_window_changes_result_and_active_steps(pipe, adapter, condition):
    seen = []
    full = run(pipe, [AdapterUnit(adapter, condition)], steps=4)
    half = run(
        pipe,
        [AdapterUnit(adapter, condition, start=0.25, end=0.75)],
        steps=4,
        callback=lambda info: seen.append((info["step"], info["total"], info["adapters_active"])),
    )
    # `step` counts the steps completed (1..total); the window is judged at the step's start
    assert seen == [(1, 4, False), (2, 4, True), (3, 4, True), (4, 4, False)]
    assert np.abs(full - half).max() > 1e-3
    assert np.abs(run(pipe, [], steps=4) - half).max() > 1e-3


def test_features_computed_once(pipe, condition):
    adapter = tiny_adapter(seed=1)
    calls = []
    adapter.register_forward_hook(lambda *args: calls.append(1))
    run(pipe, [AdapterUnit(adapter, condition)], steps=3)
    assert len(calls) == 1


# ---------------------------------------------------------------- style tokens and fuser


def _style_adapter(context_dim=TINY_TEXT_DIM, seed=0):
    from t2i_adapter.adapters.style import StyleAdapter

    torch.manual_seed(seed)
    return StyleAdapter(width=16, context_dim=context_dim, num_heads=2, num_layers=1, num_tokens=4).eval()


def test_style_tokens_change_the_output(pipe):
    hidden_states = torch.randn(1, 257, 16, generator=torch.Generator().manual_seed(0))
    plain = run(pipe, [])
    styled = run(pipe, [AdapterUnit(_style_adapter(), hidden_states)])
    assert np.abs(plain - styled).max() > 1e-3
    assert np.array_equal(styled, run(pipe, [AdapterUnit(_style_adapter(), hidden_states)]))


def test_style_context_layout(pipe):
    """Tokens go after the positive text; the negative half repeats its own last tokens."""
    from t2i_adapter.generation.units import StepConditioning, UnitOutput

    text = torch.randn(2, 77, TINY_TEXT_DIM)
    tokens = torch.randn(1, 4, TINY_TEXT_DIM)
    unit = AdapterUnit(_style_adapter(), torch.zeros(1, 257, 16))
    conditioning = StepConditioning([unit], [UnitOutput(tokens=tokens)], text, batch_size=1, do_cfg=True)
    context = conditioning.at(0, 10).context
    assert context.shape == (2, 81, TINY_TEXT_DIM)
    assert torch.equal(context[1, 77:], tokens[0])
    assert torch.equal(context[0, 77:], text[0, -4:])
    assert torch.equal(context[:, :77], text)


def test_style_from_image_uses_clip_vision(sd_base):
    from t2i_adapter.conditions.clip_vision import StyleImageEncoder

    torch.manual_seed(0)
    vision, processor = tiny_clip_vision()
    encoder = StyleImageEncoder(model=vision, processor=processor)
    pipe = T2IAdapterPipeline(sd_base, style_encoder=encoder)
    red, blue = Image.new("RGB", (50, 40), "red"), Image.new("RGB", (50, 40), "blue")
    out_red = pipe("x", [AdapterUnit(_style_adapter(), red)], steps=1, output_type="np")
    out_blue = pipe("x", [AdapterUnit(_style_adapter(), blue)], steps=1, output_type="np")
    assert out_red.conditions[0].shape == (1, 17, 16)  # 16 patches + class token
    assert np.abs(out_red.images - out_blue.images).max() > 1e-4


def test_untrained_fuser_is_the_weighted_sum(pipe, adapter, condition):
    from t2i_adapter.adapters.fuser import CoAdapterFuser

    torch.manual_seed(0)
    fuser = CoAdapterFuser(feature_channels=(32, 64), width=32, num_heads=2, num_layers=1).eval()
    second = tiny_adapter(in_channels=1, seed=7)
    edge = (condition[:, :1] > 0.5).float()
    units = [
        AdapterUnit(adapter, condition, weight=0.6, task="depth"),
        AdapterUnit(second, edge, weight=1.3, task="sketch"),
    ]
    summed = run(pipe, units)
    fused = run(pipe, units, fuser=fuser)
    assert np.abs(summed - fused).max() <= 1e-4  # zero-initialised projections: a plain sum
    with torch.no_grad():
        for projection in fuser.spatial_ch_projs:
            projection.bias.fill_(0.5)
    assert np.abs(run(pipe, units, fuser=fuser) - summed).max() > 1e-3


# ---------------------------------------------------------------- errors before sampling


class CountingUNet:
    """Wraps the UNet to count calls (a mismatch must fail before the first one)."""

    def __init__(self, base):
        self.base = base
        self.calls = 0
        self.handle = base.unet.register_forward_pre_hook(self._count)

    def _count(self, *args):
        self.calls += 1

    def close(self):
        self.handle.remove()


def test_sdxl_adapter_on_sd_model_fails_before_sampling(sd_base, pipe, condition):
    counter = CountingUNet(sd_base)
    try:
        with pytest.raises(ModelMismatchError, match="SDXL adapter"):
            run(pipe, [AdapterUnit(tiny_adapter(sdxl=True), condition)])
        assert counter.calls == 0
    finally:
        counter.close()


def test_sd_adapter_on_sdxl_model_fails():
    pipe = T2IAdapterPipeline(tiny_sdxl_base_model())
    with pytest.raises(ModelMismatchError, match="needs an SDXL adapter"):
        pipe("x", [AdapterUnit(tiny_adapter(), torch.rand(1, 3, 64, 64))], steps=1)


def test_wrong_feature_channels_fail(pipe, condition):
    from diffusers import T2IAdapter

    wrong = T2IAdapter(in_channels=3, channels=[16, 32], num_res_blocks=1, downscale_factor=8)
    with pytest.raises(ModelMismatchError, match=r"channels \[16, 32\]"):
        run(pipe, [AdapterUnit(wrong, condition)])


def test_wrong_downscale_fails_before_sampling(sd_base, pipe, condition):
    from diffusers import T2IAdapter

    wrong = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=4)
    counter = CountingUNet(sd_base)
    try:
        with pytest.raises(ModelMismatchError, match="downscale factor"):
            run(pipe, [AdapterUnit(wrong, condition)])
        assert counter.calls == 0
    finally:
        counter.close()


def test_condition_channel_mismatch_fails(pipe, adapter):
    with pytest.raises(ModelMismatchError, match="3-channel conditions, got a 1-channel"):
        run(pipe, [AdapterUnit(adapter, torch.rand(1, 1, 64, 64))])


def test_style_token_width_mismatch_fails(pipe):
    with pytest.raises(ModelMismatchError, match="48-wide tokens"):
        run(pipe, [AdapterUnit(_style_adapter(context_dim=48), torch.zeros(1, 257, 16))])


def test_unknown_scheduler_lists_valid_names(pipe):
    with pytest.raises(UnknownNameError, match="euler_a"):
        run(pipe, [], scheduler="no-such-sampler")


def test_other_scheduler_runs(pipe, adapter, condition):
    ddim = run(pipe, [AdapterUnit(adapter, condition)])
    euler_a = run(pipe, [AdapterUnit(adapter, condition)], scheduler="euler_a")
    assert euler_a.shape == ddim.shape
    assert np.abs(euler_a - ddim).max() > 1e-3


def test_memory_options_keep_the_image(adapter, condition):
    """Attention slicing, VAE tiling and model offload change where memory goes, not the result."""
    plain = run(T2IAdapterPipeline(tiny_sd_base_model()), [AdapterUnit(adapter, condition)])
    frugal = T2IAdapterPipeline(tiny_sd_base_model())
    frugal.enable_attention_slicing(1)
    frugal.enable_vae_tiling()
    frugal.enable_model_cpu_offload("cpu")  # the same hooks as on a GPU; here CPU is the device
    assert frugal.base.vae.use_tiling
    result = run(frugal, [AdapterUnit(adapter, condition)])
    assert np.abs(result - plain).max() <= 1e-4


def test_adapter_keeps_its_dtype_beside_a_half_precision_model(condition):
    """Validation during training: an fp32 adapter being trained must not be cast to the UNet's dtype."""
    base = tiny_sd_base_model().to(dtype=torch.bfloat16)
    adapter = tiny_adapter(seed=1)
    output = T2IAdapterPipeline(base)("x", [AdapterUnit(adapter, condition)], steps=1, output_type="np")
    assert next(adapter.parameters()).dtype == torch.float32
    assert output.conditions[0].dtype == torch.float32
    assert np.isfinite(output.images).all() and output.images.shape == (1, 64, 64, 3)


# ---------------------------------------------------------------- VAE precision (issue 12)
def _vae_pipeline(base, dtype):
    base.vae.to(dtype)
    return T2IAdapterPipeline(base)


def _record_decoder_dtypes(vae) -> list[torch.dtype]:
    """The dtype each decode ran its last convolution in (the hook travels into copies of the VAE)."""
    seen: list[torch.dtype] = []
    vae.decoder.conv_out.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


def _latents(seed: int = 3) -> torch.Tensor:
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sd_vae_decodes_in_its_own_dtype(dtype):
    """SD1.x's VAE says force_upcast (diffusers' default) but is fine in half precision: no upcast."""
    pipe = _vae_pipeline(tiny_sd_base_model(), dtype)
    assert pipe.base.vae.config.force_upcast
    seen = _record_decoder_dtypes(pipe.base.vae)
    image = pipe.decode(_latents(), output_type="pt")
    assert seen == [dtype]
    assert image.dtype == dtype and torch.isfinite(image).all()
    assert {p.dtype for p in pipe.base.vae.parameters()} == {dtype}


def test_sdxl_fp16_vae_decodes_in_fp32_as_before_and_stays_upcast():
    """SDXL's fp16 VAE overflows: decoded in fp32 with the same pixels as a full fp32 VAE; the
    decoder is upcast once and kept (no move per call), the encoder stays fp16."""
    pipe = _vae_pipeline(tiny_sdxl_base_model(), torch.float16)
    vae = pipe.base.vae
    reference = T2IAdapterPipeline(tiny_sdxl_base_model())
    reference.base.vae.load_state_dict(vae.state_dict())  # the fp16 weights, in fp32: today's decode
    seen = _record_decoder_dtypes(vae)
    first = pipe.decode(_latents(), output_type="pt")
    decoder = next(vae.decoder.parameters())
    second = pipe.decode(_latents(), output_type="pt")
    assert seen == [torch.float32, torch.float32]
    assert next(vae.decoder.parameters()) is decoder and decoder.dtype == torch.float32  # not moved back
    assert next(vae.encoder.parameters()).dtype == torch.float16
    assert torch.equal(first, second)
    assert torch.equal(first, reference.decode(_latents(), output_type="pt"))


def test_sdxl_bf16_vae_keeps_bf16():
    """bf16 has fp32's range: even SDXL's VAE decodes in its own dtype."""
    pipe = _vae_pipeline(tiny_sdxl_base_model(), torch.bfloat16)
    seen = _record_decoder_dtypes(pipe.base.vae)
    pipe.decode(_latents(), output_type="pt")
    assert seen == [torch.bfloat16]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_overflowing_decode_is_redone_in_fp32_and_warned_once(dtype, caplog):
    pipe = _vae_pipeline(tiny_sd_base_model(), dtype)
    vae = pipe.base.vae
    seen = _record_decoder_dtypes(vae)

    def overflow(module, inputs, output):  # what an overflowing fp16 decoder gives: inf, then NaN
        return output if output.dtype == torch.float32 else torch.full_like(output, float("nan"))

    vae.decoder.conv_out.register_forward_hook(overflow)
    with caplog.at_level(logging.WARNING, logger="t2i_adapter.generation.pipeline"):
        image = pipe.decode(_latents(), output_type="pt")
        again = pipe.decode(_latents(seed=4), output_type="np")
    assert seen == [dtype, torch.float32, dtype, torch.float32]
    assert image.dtype == torch.float32 and torch.isfinite(image).all()
    assert np.isfinite(again).all()
    assert caplog.text.count("decoded again in float32") == 1
    assert {p.dtype for p in vae.parameters()} == {dtype}  # the VAE in use was not moved


def _pictures(seed: int = 6, side: int = 64) -> torch.Tensor:
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _fp32_twin(base):
    """The same SDXL model with an fp32 VAE holding `base`'s fp16 VAE weights: today's pixels."""
    twin = T2IAdapterPipeline(tiny_sdxl_base_model())
    twin.base.vae.load_state_dict(base.vae.state_dict())
    return twin


@pytest.fixture
def deepcopies(monkeypatch):
    """Every `copy.deepcopy` the pipeline makes (of the VAE: a per-call copy), counted."""
    import copy

    from t2i_adapter.generation import pipeline as pipeline_module

    made: list[type] = []

    def counting(value, memo=None):
        made.append(type(value))
        return copy.deepcopy(value, memo)

    monkeypatch.setattr(pipeline_module, "copy", type("copy", (), {"deepcopy": staticmethod(counting)}))
    return made


def test_sdxl_fp16_vae_encodes_in_fp32_in_place_once_without_a_copy(deepcopies):
    """The encoder follows the decoder's rule: upcast once, in place, and kept; no copy per call,
    the same latents as an fp32 encoder on the same weights; the decoder is left as it was."""
    pipe = _vae_pipeline(tiny_sdxl_base_model(), torch.float16)
    vae = pipe.base.vae
    expected = _fp32_twin(pipe.base).encode(_pictures())
    first = pipe.encode(_pictures())
    encoder = next(vae.encoder.parameters())
    second = pipe.encode(_pictures())
    assert deepcopies == []
    assert next(vae.encoder.parameters()) is encoder and encoder.dtype == torch.float32
    assert vae.quant_conv.weight.dtype == torch.float32
    assert {p.dtype for p in vae.decoder.parameters()} == {torch.float16}
    assert torch.equal(first, second) and torch.equal(first, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sd_vae_encodes_in_its_own_dtype(dtype):
    pipe = _vae_pipeline(tiny_sd_base_model(), dtype)
    latents = pipe.encode(_pictures())
    assert {p.dtype for p in pipe.base.vae.parameters()} == {dtype}
    assert torch.isfinite(latents).all()


def test_sdxl_fp16_img2img_and_lanczos_hires_copy_nothing_and_keep_todays_pixels(deepcopies):
    """A whole img2img + picture-space hires run (encode, decode, encode, decode) on SDXL's fp16
    VAE: the pixels of an fp32 VAE with the same weights, and no copy of the VAE on any call."""
    from t2i_adapter.generation.img2img import HiresFix, ImageToImage

    pipe = _vae_pipeline(tiny_sdxl_base_model(), torch.float16)
    twin = _fp32_twin(pipe.base)
    unit = AdapterUnit(
        tiny_adapter(sdxl=True), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    )
    picture = Image.new("RGB", (64, 64), (90, 90, 200))

    def generate(pipeline) -> np.ndarray:
        return pipeline(
            "a cat",
            [unit],
            steps=2,
            seed=1,
            output_type="np",
            img2img=ImageToImage(picture, strength=0.5),
            hires=HiresFix(1.5, strength=0.5, upscaler="lanczos"),
        ).images

    images = generate(pipe)
    assert deepcopies == []
    assert np.array_equal(images, generate(twin))
    assert np.array_equal(images, generate(pipe))  # a second call: the halves stay upcast, same pixels
    assert {p.dtype for p in pipe.base.vae.parameters()} == {torch.float32}


def test_training_encodes_with_an_encoder_a_generation_upcast():
    """Training lends its frozen model to validation pipelines, and both follow one VAE rule
    (`generation.vae`): an encoder a generation upcast (SDXL fp16, img2img) is the one the loss
    upcast already; the loss gets the same latents' distribution, in the weight dtype."""
    from types import SimpleNamespace

    from t2i_adapter.training.objective import FrozenParts, _latent_posterior

    base = tiny_sdxl_base_model().to(dtype=torch.float16)  # train --mixed-precision fp16
    frozen = FrozenParts(base=base, vae_config=base.vae.config, is_sdxl=True, weight_dtype=torch.float16)
    batch = SimpleNamespace(
        pixels=_pictures().to(torch.float16), latent_mean=None, latent_std=None, wheres=None
    )
    before_mean, before_std = _latent_posterior(batch, frozen)
    T2IAdapterPipeline(base).encode(_pictures())
    assert next(base.vae.encoder.parameters()).dtype == torch.float32
    mean, std = _latent_posterior(batch, frozen)
    assert mean.dtype == std.dtype == torch.float16
    assert torch.equal(mean, before_mean) and torch.equal(std, before_std)


@pytest.mark.parametrize(
    ("make_base", "dtype", "compiled"),
    [
        (tiny_sd_base_model, torch.float16, True),
        (tiny_sdxl_base_model, torch.bfloat16, True),
        (tiny_sdxl_base_model, torch.float16, False),  # upcast: eager, as before
    ],
)
def test_the_vae_decode_is_compiled_only_where_it_runs_in_its_own_dtype(
    monkeypatch, make_base, dtype, compiled
):
    from t2i_adapter.generation import compiling

    monkeypatch.setattr(compiling, "vae_compile_pays", lambda device: True)  # as on CUDA
    pipe = _vae_pipeline(make_base(), dtype)
    assert pipe._decode_compile_pays() is compiled
