"""diffusers -> original (LDM/SGM) key layout, to write test models as single-file checkpoints.

diffusers converts only the other way (`loaders/single_file_utils.py`), so tests that load a
single file need this inverse: a tiny pipeline saved as ONE `.safetensors`/`.ckpt` in the layout
A1111 and ComfyUI files use (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.*` / `conditioner.embedders.*`). It works on meta tensors too, so the real
models' key names and shapes can be produced without allocating them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
    "mid_block.resnets.0.": "middle_block.0.",
    "mid_block.attentions.0.": "middle_block.1.",
    "mid_block.resnets.1.": "middle_block.2.",
}


def _unet_prefixes(config: Mapping) -> dict[str, str]:
    """diffusers block prefix -> LDM prefix (`input_blocks.N.M.` / `output_blocks.N.M.`)."""
    per_block = config["layers_per_block"]
    prefixes = dict(UNET_FIXED)
    for block, up_type in enumerate(config["up_block_types"]):
        for layer in range(per_block):
            index = 1 + block * (per_block + 1) + layer
            prefixes[f"down_blocks.{block}.resnets.{layer}."] = f"input_blocks.{index}.0."
            prefixes[f"down_blocks.{block}.attentions.{layer}."] = f"input_blocks.{index}.1."
        prefixes[f"down_blocks.{block}.downsamplers.0.conv."] = (
            f"input_blocks.{(block + 1) * (per_block + 1)}.0.op."
        )
        for layer in range(per_block + 1):
            index = block * (per_block + 1) + layer
            prefixes[f"up_blocks.{block}.resnets.{layer}."] = f"output_blocks.{index}.0."
            prefixes[f"up_blocks.{block}.attentions.{layer}."] = f"output_blocks.{index}.1."
        last = block * (per_block + 1) + per_block
        slot = 2 if up_type.startswith("CrossAttn") else 1
        prefixes[f"up_blocks.{block}.upsamplers.0."] = f"output_blocks.{last}.{slot}."
    return prefixes


def _rename(key: str, prefixes: Mapping[str, str]) -> tuple[str, str, str]:
    """(matched diffusers prefix, LDM prefix, rest of the key); the longest prefix wins."""
    match = max((prefix for prefix in prefixes if key.startswith(prefix)), key=len, default=None)
    if match is None:
        raise KeyError(f"no LDM name for {key}")
    return match, prefixes[match], key[len(match) :]


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    prefixes = _unet_prefixes(config)
    converted = {}
    for key, value in state_dict.items():
        match, new_prefix, rest = _rename(key, prefixes)
        if ".resnets." in match:
            name, _, tail = rest.partition(".")
            rest = f"{RESNET_NAMES.get(name, name)}.{tail}"
        converted[new_prefix + rest] = value
    return converted


VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    blocks = len(config["block_out_channels"])
    prefixes = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for part in ("encoder", "decoder"):
        for index in range(2):
            prefixes[f"{part}.mid_block.resnets.{index}."] = f"{part}.mid.block_{index + 1}."
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
    for block in range(blocks):
        for layer in range(config["layers_per_block"] + 1):
            prefixes[f"encoder.down_blocks.{block}.resnets.{layer}."] = f"encoder.down.{block}.block.{layer}."
            ldm_block = blocks - 1 - block  # the decoder's LDM blocks count from the lowest resolution
            prefixes[f"decoder.up_blocks.{block}.resnets.{layer}."] = f"decoder.up.{ldm_block}.block.{layer}."
        prefixes[f"encoder.down_blocks.{block}.downsamplers.0.conv."] = (
            f"encoder.down.{block}.downsample.conv."
        )
        prefixes[f"decoder.up_blocks.{block}.upsamplers.0.conv."] = (
            f"decoder.up.{blocks - 1 - block}.upsample.conv."
        )
    converted = {}
    for key, value in state_dict.items():
        try:
            match, new_prefix, rest = _rename(key, prefixes)
        except KeyError:
            converted[key] = value  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
            continue
        if ".resnets." in match:
            rest = rest.replace("conv_shortcut", "nin_shortcut")
        if ".attentions." in match:
            name, _, tail = rest.rpartition(".")
            rest = f"{VAE_ATTENTION_NAMES[name]}.{tail}"
            if tail == "weight" and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # LDM's attention projections are 1x1 convs
        converted[new_prefix + rest] = value
    return converted


def clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP ViT-L in Hugging Face layout, as SD1 and SDXL files store it (`text_model.` included)."""
    return {
        key if key.startswith("text_model.") else f"text_model.{key}": value
        for key, value in state_dict.items()
    }


OPEN_CLIP_NAMES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def open_clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face CLIP text model -> OpenCLIP names (SD2's and SDXL's bigG), q/k/v fused."""
    flat = {key.removeprefix("text_model."): value for key, value in state_dict.items()}
    converted: dict[str, torch.Tensor] = {
        "token_embedding.weight": flat.pop("embeddings.token_embedding.weight"),
        "positional_embedding": flat.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": flat.pop("final_layer_norm.weight"),
        "ln_final.bias": flat.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in flat:
        converted["text_projection"] = flat.pop("text_projection.weight").T.contiguous()
    layers = sorted({int(key.split(".")[2]) for key in flat if key.startswith("encoder.layers.")})
    for layer in layers:
        source, target = f"encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            parts = [flat.pop(f"{source}self_attn.{name}_proj.{kind}") for name in ("q", "k", "v")]
            converted[f"{target}attn.in_proj_{kind}"] = torch.cat(parts)
            for old, new in OPEN_CLIP_NAMES.items():
                converted[f"{target}{new}.{kind}"] = flat.pop(f"{source}{old}.{kind}")
    flat.pop("embeddings.position_ids", None)
    if flat:
        raise KeyError(f"no OpenCLIP name for {sorted(flat)[:3]}")
    return converted


def _prefixed(prefix: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state_dict.items()}


def single_file_state_dict(components: Mapping, *, open_clip_text: bool = False) -> dict[str, torch.Tensor]:
    """One state dict in the original layout: SD1 (or SD2 with `open_clip_text`), or SDXL when
    `components` has `text_encoder_2`."""
    unet, vae = components["unet"], components["vae"]
    state = _prefixed("model.diffusion_model.", unet_to_ldm(unet.state_dict(), unet.config))
    state.update(_prefixed("first_stage_model.", vae_to_ldm(vae.state_dict(), vae.config)))
    text = components["text_encoder"].state_dict()
    if components.get("text_encoder_2") is not None:
        state.update(_prefixed("conditioner.embedders.0.transformer.", clip_to_ldm(text)))
        text_2 = components["text_encoder_2"].state_dict()
        state.update(_prefixed("conditioner.embedders.1.model.", open_clip_to_ldm(text_2)))
    elif open_clip_text:
        state.update(_prefixed("cond_stage_model.model.", open_clip_to_ldm(text)))
    else:
        state.update(_prefixed("cond_stage_model.transformer.", clip_to_ldm(text)))
    return state


def save_single_file(components: Mapping, path: str | Path) -> Path:
    """Write `components` as one `.safetensors` (or, for `.ckpt`, a `{"state_dict": ...}` pickle)."""
    path = Path(path)
    state = {key: value.detach().contiguous() for key, value in single_file_state_dict(components).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 1}, path)
    return path


def save_ldm_vae(vae, path: str | Path, *, prefix: str = "first_stage_model.") -> Path:
    """`vae` alone as A1111/ComfyUI VAE files are: original key layout (under a checkpoint's
    `prefix`, or none), in a `.safetensors` or a `{"state_dict": ...}` `.ckpt`."""
    path = Path(path)
    state = {
        key: value.detach().contiguous() for key, value in vae_to_ldm(vae.state_dict(), vae.config).items()
    }
    state = _prefixed(prefix, state)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path
