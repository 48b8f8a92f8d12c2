"""Tiny Stable Diffusion (SD1.x-style and SDXL-style) components built in code, for tests.

Nothing is downloaded: the tokenizer is a character-level CLIP BPE tokenizer whose vocabulary is
the 256 byte symbols (plus their end-of-word forms) and the two special tokens, the networks are
randomly initialised from a fixed seed. The shapes follow the real models where it matters for
adapters:

- the VAE downsamples by 8 (four blocks), like every real Stable Diffusion VAE;
- the SD UNet ends with a `DownBlock2D` without downsampler (like SD1.5), so a full adapter with
  `downscale_factor=8` and `channels=TINY_SD_ADAPTER_CHANNELS` fits it;
- the SDXL UNet has three down blocks (plain, cross-attention, cross-attention) and text-time
  added conditioning, so an XL adapter (`full_adapter_xl`, `downscale_factor=16`) with
  `channels=TINY_SDXL_ADAPTER_CHANNELS` fits it (its 4th map goes to the mid block).

Use `save_tiny_sd(folder)` / `save_tiny_sdxl(folder)` to get a diffusers folder that
`load_base_model` reads, or `tiny_sd_base_model()` for the components in memory.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_TEXT_DIM = 32
TINY_SD_BLOCK_CHANNELS = (32, 64)
TINY_SD_ADAPTER_CHANNELS = [32, 64]
TINY_SDXL_BLOCK_CHANNELS = (32, 64, 64)
TINY_SDXL_ADAPTER_CHANNELS = [32, 64, 64, 64]
TINY_IMAGE_SIZE = 64  # pixels; a multiple of what every tiny model needs


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table (the BPE alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def tiny_tokenizer(model_max_length: int = 77):
    """A character-level CLIPTokenizer (514 tokens, no merges): same special tokens as CLIP."""
    from transformers import CLIPTokenizer

    alphabet = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for symbol in alphabet + [symbol + "</w>" for symbol in alphabet]:
        vocab[symbol] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def _text_config(hidden_size: int = TINY_TEXT_DIM, projection_dim: int = TINY_TEXT_DIM):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=514,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        hidden_act="gelu",
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=TINY_IMAGE_SIZE,
    )


def perturbed_vae(vae, *, seed: int = 5, scale: float = 0.05):
    """Another VAE for the model whose VAE is `vae` (a fine-tuned VAE's stand-in): its config, its
    weights with Gaussian noise of `scale` times each tensor's mean magnitude added, so it still
    decodes pictures, other ones; in float32."""
    from diffusers import AutoencoderKL

    generator = torch.Generator().manual_seed(seed)
    other = AutoencoderKL.from_config(vae.config)
    state = {
        key: value.float()
        + scale * value.abs().float().mean() * torch.randn(value.shape, generator=generator)
        for key, value in vae.state_dict().items()
    }
    other.load_state_dict(state)
    return other.eval()


def tiny_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd_components(seed: int = 0, in_channels: int = 4) -> dict:
    """UNet, VAE, text encoder, tokenizer, DDIM scheduler of a tiny SD1.x-shaped model
    (`in_channels=9`: an inpainting UNet, latents + mask + masked picture's latents)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=TINY_SD_BLOCK_CHANNELS,
        layers_per_block=2,
        sample_size=TINY_IMAGE_SIZE // 8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM,
        norm_num_groups=16,
        attention_head_dim=8,
    )
    torch.manual_seed(seed + 1)
    vae = tiny_vae()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tiny_tokenizer(),
        "scheduler": tiny_scheduler(),
    }


def tiny_sdxl_components(seed: int = 0, text_dim_2: int = TINY_TEXT_DIM) -> dict:
    """The SDXL component set: two text encoders (the second with projection), text-time UNet.

    `text_dim_2` widens the second encoder: single-file loading tells the two encoders apart by
    width, as the real ones (768 and 1280) differ."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    time_embed_dim = 8
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=TINY_SDXL_BLOCK_CHANNELS,
        layers_per_block=2,
        sample_size=TINY_IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 1, 1),
        # two text encoders concatenated: 32 + 32 (or + text_dim_2)
        cross_attention_dim=TINY_TEXT_DIM + text_dim_2,
        # 6 time ids * time_embed_dim + pooled projection of encoder 2
        projection_class_embeddings_input_dim=6 * time_embed_dim + TINY_TEXT_DIM,
        norm_num_groups=16,
    )
    torch.manual_seed(seed + 1)
    vae = tiny_vae()
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden_size=text_dim_2))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tiny_tokenizer(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer_2": tiny_tokenizer(),
        "scheduler": scheduler,
    }


def tiny_adapter(in_channels: int = 3, *, sdxl: bool = False, seed: int = 0):
    """A diffusers T2IAdapter that fits the tiny SD (or SDXL) UNet, with non-trivial random weights."""
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    if sdxl:
        adapter = T2IAdapter(
            in_channels=in_channels,
            channels=TINY_SDXL_ADAPTER_CHANNELS,
            num_res_blocks=1,
            downscale_factor=16,
            adapter_type="full_adapter_xl",
        )
    else:
        adapter = T2IAdapter(
            in_channels=in_channels,
            channels=TINY_SD_ADAPTER_CHANNELS,
            num_res_blocks=1,
            downscale_factor=8,
            adapter_type="full_adapter",
        )
    return adapter.eval()


def tiny_clip_vision():
    """A CLIP vision model (16 wide, 1 layer, 32 px, 8 px patches: 16 tokens + class) and its processor.

    Not seeded here: callers seed first, so what they draw next stays what it was.
    """
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=1,
        image_size=32,
        patch_size=8,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModel(config).eval(), processor


def save_tiny_clip_vision(folder: str | Path) -> Path:
    """`tiny_clip_vision()` written as a local folder that `--clip-vision` reads."""
    model, processor = tiny_clip_vision()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def save_tiny_dpt(folder: str | Path, *, full_size: bool = False) -> Path:
    """A random DPT depth model (+ its image processor) as a local folder `model=` reads.

    Tiny by default; `full_size` gives DPT-Large's shape (ViT-L/16 at 384 px) for benchmarks.
    """
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    if full_size:
        config, size = DPTConfig(), 384  # the defaults are DPT-Large's
    else:
        config = DPTConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=32,
            patch_size=16,
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[16, 16, 32, 32],
            fusion_hidden_size=16,
            head_hidden_size=8,
            initializer_range=0.2,  # the default 0.02 makes a tiny random DPT predict a flat map
        )
        size = 32
    DPTForDepthEstimation(config).save_pretrained(folder)
    # DPT-Hybrid MiDaS resizes to a fixed square, like this one
    DPTImageProcessor(size={"height": size, "width": size}, keep_aspect_ratio=False).save_pretrained(folder)
    return Path(folder)


def save_tiny_sd(folder: str | Path, seed: int = 0, in_channels: int = 4) -> Path:
    """Write the tiny SD model as a diffusers folder (model_index.json + components)."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        **tiny_sd_components(seed, in_channels=in_channels),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(folder))
    return Path(folder)


def save_tiny_sdxl(folder: str | Path, seed: int = 0, text_dim_2: int = TINY_TEXT_DIM) -> Path:
    """Write the tiny SDXL model as a diffusers folder."""
    from diffusers import StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline(**tiny_sdxl_components(seed, text_dim_2=text_dim_2))
    pipeline.save_pretrained(str(folder))
    return Path(folder)


def tiny_sd_base_model(seed: int = 0, in_channels: int = 4):
    """The tiny SD components as a `BaseModel`, frozen, on CPU."""
    from t2i_adapter.generation.base_model import BaseModel

    model = BaseModel(**tiny_sd_components(seed, in_channels=in_channels), name="tiny-sd")
    for module in model.frozen_modules():
        module.requires_grad_(False)
    return model


def tiny_sdxl_base_model(seed: int = 0):
    """The tiny SDXL components as a `BaseModel`, frozen, on CPU."""
    from t2i_adapter.generation.base_model import BaseModel

    model = BaseModel(**tiny_sdxl_components(seed), name="tiny-sdxl")
    for module in model.frozen_modules():
        module.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------
# Stand-ins for the evaluation's re-extraction and quality models
# ---------------------------------------------------------------------------------------------


def save_tiny_vitpose(folder: str | Path, seed: int = 0) -> Path:
    """A random ViTPose (17 COCO keypoints, 64x48 input) as a local folder."""
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    torch.manual_seed(seed)
    backbone = VitPoseBackboneConfig(
        image_size=[64, 48],
        patch_size=[16, 16],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=2,
        out_indices=[2],
    )
    config = VitPoseConfig(backbone_config=backbone, num_labels=17, scale_factor=4, use_simple_decoder=True)
    VitPoseForPoseEstimation(config).save_pretrained(folder)
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(folder)
    return Path(folder)


def save_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A random CLIP (text + vision, 16-wide projections) with tokenizer and processor, as a local folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=1,
        image_size=32,
        patch_size=8,
    )
    config = CLIPConfig(
        text_config=_text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    tiny_tokenizer().save_pretrained(folder)
    return Path(folder)


class _TinyInception(torch.nn.Module):
    """What FID's TorchScript Inception offers: `net(images 0-255, return_features=True) -> (N, 8)`."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=8, stride=8)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = torch.relu(self.conv((x.to(torch.float32) - 128.0) / 128.0))
        return features.mean(dim=(2, 3))


def save_tiny_inception(path: str | Path, seed: int = 0) -> Path:
    """A random TorchScript stand-in for NVIDIA's inception-2015-12-05.pt, saved to `path`."""
    import warnings

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_TinyInception().eval()).save(str(path))
    return Path(path)


def save_tiny_segformer(folder: str | Path, labels: dict[int, str], seed: int = 0) -> Path:
    """A random SegFormer (semantic segmentation, 32 px input) with the given class names."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(seed)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        id2label=labels,
        label2id={name: index for index, name in labels.items()},
    )
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)
