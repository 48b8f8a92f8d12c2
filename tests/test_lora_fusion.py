"""LoRAs on the compiled path: fused into the UNet's weights (same image as eager's unfused peft
layers), switched without recompiling, the original weights restored exactly, QKV fusion kept."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from t2i_adapter.generation import compiling, lora_fusion
from t2i_adapter.generation.api import ModelCache, generate
from t2i_adapter.generation.lora_fusion import FusedLoras
from t2i_adapter.generation.loras import LoraSpec, apply_loras
from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.generation.units import AdapterUnit
from test_generation_api import settings_for
from test_loras import kohya_lora
from tiny_models import save_tiny_sd, tiny_adapter, tiny_sd_base_model

# fp32 on the CPU: W0 + scale * B @ A rounded once vs x @ W0 + scale * (x @ A) @ B, through 2 steps
# and the VAE. Measured max difference on the tiny model: ~2.5e-6.
FUSED_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    save_tiny_sd(root / "model")
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    Image.new("RGB", (64, 64), "white").save(root / "cond.png")
    base = tiny_sd_base_model()
    save_file(kohya_lora(base, 1), str(root / "a.safetensors"))
    save_file(kohya_lora(base, 2), str(root / "b.safetensors"))
    return root


def lora_sets(files) -> list[list[LoraSpec]]:
    """Three switches (a scale change, a second LoRA, a swap), then none."""
    a, b = str(files / "a.safetensors"), str(files / "b.safetensors")
    return [
        [LoraSpec(a, 0.7)],
        [LoraSpec(a, 0.3), LoraSpec(b, 1.0)],
        [LoraSpec(b, -0.5)],
        [],
    ]


@pytest.fixture
def stub_compile(monkeypatch):
    """`torch.compile` as the identity: the compiled path (fusion included) without tracing."""
    monkeypatch.setattr(compiling.torch, "compile", lambda module, **options: module)


@pytest.fixture(scope="module")
def condition():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def sample(pipe, specs, condition) -> np.ndarray:
    apply_loras(pipe, specs)
    units = [AdapterUnit(tiny_adapter(seed=1), condition)]
    return pipe("a red cat", units, steps=2, seed=0, width=64, height=64, output_type="np").images


def plain_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's own parameters by their pre-LoRA names (peft's `base_layer` left out, LoRAs skipped)."""
    return {
        name.replace(".base_layer", ""): parameter.detach().clone()
        for name, parameter in module.named_parameters()
        if ".lora_" not in name
    }


def compiled_pipeline(fuse_qkv: bool = False) -> T2IAdapterPipeline:
    pipe = T2IAdapterPipeline(tiny_sd_base_model())
    if fuse_qkv:  # what `prepare_unet` does on CUDA (the CPU path leaves it off)
        pipe.base.unet.fuse_qkv_projections()
    assert pipe.enable_compile()
    return pipe


@pytest.mark.slow  # TorchDynamo traces the tiny UNet once: 5-30 s on 2 shared cores
def test_lora_changes_reuse_one_graph_of_plain_layers_and_match_eager(files, graphs, condition):
    eager, compiled = T2IAdapterPipeline(tiny_sd_base_model()), compiled_pipeline()
    plain = sample(compiled, [], condition)
    assert len(graphs) == 1
    for specs in lora_sets(files):
        expected = sample(eager, specs, condition)  # peft's unfused layers, as always
        images = sample(compiled, specs, condition)
        assert np.abs(images - expected).max() <= FUSED_TOLERANCE, specs
        assert specs == [] or np.abs(images - plain).max() > 1e-2  # the LoRAs did act
    assert len(graphs) == 1  # loading, switching, rescaling and dropping LoRAs: no recompile
    code = graphs[0].code
    assert "lora" not in code and "base_layer" not in code  # the graph runs plain layers only


def test_switching_loras_restores_the_exact_original_weights(files, stub_compile, condition):
    pipe = compiled_pipeline(fuse_qkv=True)
    unet, text_encoder = pipe.base.unet, pipe.base.text_encoder
    originals, text_originals = plain_weights(unet), plain_weights(text_encoder)
    for specs in lora_sets(files):
        sample(pipe, specs, condition)
        changed = [
            name for name, value in plain_weights(unet).items() if not torch.equal(value, originals[name])
        ]
        fused = bool(specs)
        assert bool(changed) == fused and any("to_qkv" in name for name in changed) == fused
    # after three switches and none: every weight bit-identical (subtracting deltas would drift)
    after = plain_weights(unet)
    assert after.keys() == originals.keys()
    assert [name for name in originals if not torch.equal(after[name], originals[name])] == []
    assert all(
        torch.equal(value, text_originals[name]) for name, value in plain_weights(text_encoder).items()
    )
    assert FusedLoras.of(unet).fused == {}


def test_qkv_fusion_stays_on_with_loras_and_gives_the_unfused_image(files, stub_compile, condition):
    """LoRAs act on to_q/to_k/to_v; the fused to_qkv/to_kv are recopied from them after each change,
    so the fused attention processors stay (no `unfuse_qkv_projections`) and the image is eager's."""
    eager, pipe = T2IAdapterPipeline(tiny_sd_base_model()), compiled_pipeline(fuse_qkv=True)
    unet = pipe.base.unet
    for specs in lora_sets(files)[:2]:
        expected = sample(eager, specs, condition)
        images = sample(pipe, specs, condition)
        processors = {type(processor).__name__ for processor in unet.attn_processors.values()}
        assert processors == {"FusedAttnProcessor2_0"}
        assert np.abs(images - expected).max() <= FUSED_TOLERANCE
    attention = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    parts = [getattr(attention, name).base_layer.weight for name in ("to_q", "to_k", "to_v")]
    assert torch.equal(attention.to_qkv.weight, torch.cat(parts))


def test_an_eager_pipeline_on_a_fused_unet_gets_the_original_weights(files, stub_compile, condition):
    compiled = compiled_pipeline()
    eager = T2IAdapterPipeline(compiled.base)  # the same UNet, run eagerly (peft's unfused layers)
    specs = lora_sets(files)[0]
    expected = sample(T2IAdapterPipeline(tiny_sd_base_model()), specs, condition)
    sample(compiled, specs, condition)  # fuses into the shared UNet
    assert np.array_equal(sample(eager, specs, condition), expected)  # not the LoRA twice


def test_a_cached_compiled_pipeline_without_loras_after_one_with_them_is_plain(files, stub_compile):
    cache = ModelCache()
    settings = settings_for(files, compile=True)
    plain = np.asarray(generate(settings, cache=cache).images[0])
    styled = generate(settings.replace(loras=lora_sets(files)[0]), cache=cache)
    again = np.asarray(generate(settings, cache=cache).images[0])
    assert not np.array_equal(np.asarray(styled.images[0]), plain)
    assert np.array_equal(again, plain)
    eager = np.asarray(generate(settings.replace(compile=False), cache=cache).images[0])
    assert np.abs(eager.astype(int) - plain.astype(int)).max() <= 1  # another cache entry, unfused


def test_a_layer_that_cannot_be_fused_stays_a_peft_layer(files, stub_compile, condition, monkeypatch):
    """A DoRA (or other variant) layer is no plain delta: its weight stays the original and peft
    computes it in the graph, so the image is still eager's."""
    eager, pipe = T2IAdapterPipeline(tiny_sd_base_model()), compiled_pipeline()
    specs = lora_sets(files)[0]
    apply_loras(pipe, specs)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    kept = pipe.base.unet.get_submodule(name)
    original = kept.base_layer.weight.detach().clone()
    monkeypatch.setattr(lora_fusion, "fusable", lambda layer: layer is not kept)
    expected = sample(eager, specs, condition)
    assert np.abs(sample(pipe, specs, condition) - expected).max() <= FUSED_TOLERANCE
    assert torch.equal(kept.base_layer.weight, original) and name not in FusedLoras.of(pipe.base.unet).fused
    with FusedLoras.of(pipe.base.unet).plain():
        assert pipe.base.unet.get_submodule(name) is kept
        assert pipe.base.unet.get_submodule(name.replace("to_q", "to_k")).__class__ is torch.nn.Linear


@pytest.mark.slow  # Inductor's C++ code generation for the tiny UNet: 1-3 minutes on 2 cores
@pytest.mark.skipif(
    compiling.compile_unsupported(torch.device("cpu")) is not None,
    reason=f"torch.compile cannot run here: {compiling.compile_unsupported(torch.device('cpu'))}",
)
def test_inductor_reads_the_weights_fused_after_it_compiled(files, condition):
    """The compiled code takes the weights as inputs (no constants baked in): LoRAs fused after
    compiling change its output, and match eager, with no second graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    eager, compiled = T2IAdapterPipeline(tiny_sd_base_model()), compiled_pipeline()
    plain = sample(compiled, [], condition)
    graphs = counters["stats"]["unique_graphs"]
    specs = lora_sets(files)[1]
    images = sample(compiled, specs, condition)
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()
    assert np.abs(images - sample(eager, specs, condition)).max() <= 1e-4  # Inductor's float reordering
    assert np.abs(images - plain).max() > 1e-2


def test_inductor_freezing_is_said_to_ignore_later_loras(stub_compile, monkeypatch, caplog):
    from torch._inductor import config

    for freezing in (False, True):
        monkeypatch.setattr(config, "freezing", freezing)
        with caplog.at_level(logging.WARNING, logger="t2i_adapter"):
            compiling.CompiledUNet(torch.nn.Linear(2, 2), torch.device("cpu"))
    assert [record.getMessage() for record in caplog.records] == [
        "--compile: Inductor freezing is on: LoRAs chosen after compiling will not apply"
    ]
