"""The tiny Stable-Diffusion-architecture model of the demo world: sizes, tokenizer, components.

Same classes as SD1.5 (`AutoencoderKL`, `UNet2DConditionModel`, `CLIPTextModel`, `CLIPTokenizer`,
`DDIMScheduler`), only small: 64x64 pictures, a VAE that downsamples by 4 into 16x16x4 latents,
a three-level UNet (16, 8, 4) with cross-attention on the first two levels, a two-layer text
encoder of width 64 and a BPE tokenizer whose vocabulary is exactly the caption words. The saved
folder is a standard diffusers `StableDiffusionPipeline` folder, so `load_base_model("demo")`
reads it with the code that reads SD1.5.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from t2i_adapter.demo.world import SCENE_SIZE, caption_words

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"


@dataclass
class TinyModelConfig:
    """Sizes of every component; the defaults are the shipped demo model."""

    image_size: int = SCENE_SIZE
    latent_channels: int = 4
    vae_block_out_channels: tuple[int, ...] = (16, 32, 64)  # 3 levels -> downscale 4
    vae_layers_per_block: int = 1
    unet_block_out_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers_per_block: int = 1
    unet_attention_head_dim: int = 8
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_max_length: int = 24
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    # v-prediction (Salimans & Ho, 2022): with a terminal SNR this close to zero an epsilon model
    # cannot say what the picture is at the noisiest steps (its x0 estimate divides by ~0.006),
    # which is where the layout is decided; v is well conditioned there (Lin et al., 2023).
    prediction_type: str = "v_prediction"
    extra: dict = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_scale_factor

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def tokenizer_vocab_and_merges(
    words: list[str] | None = None,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-pair vocabulary in which every caption word is one token.

    Every printable ASCII character (plain and word-final `c</w>`) is in the vocabulary, so any
    lowercase text still tokenizes. Then, word by word, merges are appended that join the pieces
    BPE leaves of that word (with the merges so far) left to right; a merge appended later never
    pre-empts an earlier one, so each word ends as one token.
    """
    words = caption_words() if words is None else words
    alphabet = [chr(code) for code in range(33, 127)]
    tokens: list[str] = [BOS_TOKEN, EOS_TOKEN]
    tokens += alphabet + [c + END_OF_WORD for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = _apply_merges(list(word[:-1]) + [word[-1] + END_OF_WORD], merges)
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append((merged, piece))
            merged = merged + piece
            if merged not in tokens:
                tokens.append(merged)
    vocab = {token: index for index, token in enumerate(tokens)}
    return vocab, merges


def _apply_merges(pieces: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly join the adjacent pair of lowest merge rank."""
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    while len(pieces) > 1:
        pairs = [
            (ranks.get((a, b), len(ranks)), i)
            for i, (a, b) in enumerate(zip(pieces, pieces[1:], strict=False))
        ]
        rank, index = min(pairs)
        if rank == len(ranks):
            break
        pieces = pieces[:index] + [pieces[index] + pieces[index + 1]] + pieces[index + 2 :]
    return pieces


def build_tokenizer(config: TinyModelConfig):
    """A `CLIPTokenizer` over the caption vocabulary, padded to `text_max_length` tokens."""
    vocab, merges = tokenizer_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=config.text_max_length,
    )


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def build_vae(config: TinyModelConfig):
    """An `AutoencoderKL` that maps (N, 3, 64, 64) in [-1, 1] to (N, 4, 16, 16) latents."""
    levels = len(config.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.vae_block_out_channels,
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=16,
        sample_size=config.image_size,
        mid_block_add_attention=False,
    )


def build_unet(config: TinyModelConfig):
    """A `UNet2DConditionModel`: cross-attention on all levels but the last (like SD1.5)."""
    levels = len(config.unet_block_out_channels)
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.unet_block_out_channels,
        layers_per_block=config.unet_layers_per_block,
        cross_attention_dim=config.text_hidden_size,
        attention_head_dim=config.unet_attention_head_dim,
        norm_num_groups=32,
    )


def build_text_encoder(config: TinyModelConfig, vocab_size: int):
    """A `CLIPTextModel` whose last hidden state is the cross-attention context."""
    vocab, _ = tokenizer_vocab_and_merges()
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=config.text_hidden_size,
        intermediate_size=config.text_hidden_size * 4,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=config.text_max_length,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
        projection_dim=config.text_hidden_size,
    )
    return CLIPTextModel(text_config)


def build_scheduler(config: TinyModelConfig):
    """DDIM over a linear beta schedule (terminal SNR near zero), sampling from the last step."""
    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",  # the first sampling step is t = 999, the pure-noise end
        prediction_type=config.prediction_type,
    )


@dataclass
class TinyModel:
    """The five components, untrained or trained."""

    config: TinyModelConfig
    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object


def build_tiny_model(config: TinyModelConfig | None = None, seed: int = 0) -> TinyModel:
    """Freshly initialised components (deterministic from `seed`)."""
    config = config or TinyModelConfig()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(config)
    return TinyModel(
        config=config,
        vae=build_vae(config),
        unet=build_unet(config),
        text_encoder=build_text_encoder(config, vocab_size=len(tokenizer)),
        tokenizer=tokenizer,
        scheduler=build_scheduler(config),
    )


def save_tiny_model(model: TinyModel, dest: str | Path, *, half: bool = True) -> Path:
    """Write a standard diffusers `StableDiffusionPipeline` folder (fp16 weights when `half`)."""
    # diffusers' pipelines make transformers warn about optional image backends on import: only here
    from diffusers import StableDiffusionPipeline

    dest = Path(dest)
    pipeline = StableDiffusionPipeline(
        vae=model.vae,
        unet=model.unet,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        scheduler=model.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if half:
        pipeline.to(torch.float16)
    pipeline.save_pretrained(str(dest), safe_serialization=True)
    if half:
        pipeline.to(torch.float32)
    (dest / "demo_config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return dest
