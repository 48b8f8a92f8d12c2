"""Text prompts -> the cross-attention context (and, for SDXL, the pooled embedding and time ids).

SD1.x/2.x: one CLIP text encoder, 77 tokens, its last hidden state is the context (SD2's
OpenCLIP encoder ends with the final layer norm, which `last_hidden_state` already includes).
SDXL (Podell et al. 2023, sec. 2.1): two encoders; the penultimate hidden states of both are
concatenated along the channel axis, and encoder 2's projected pooled output conditions the UNet
together with the six "micro-conditioning" numbers (`add_time_ids`).

Why not diffusers' `encode_prompt`: it is a method of each pipeline class (SD and SDXL differ),
while `T2IAdapterPipeline` serves both families in one class and appends the style adapter's
tokens to the context after encoding (`units.StepConditioning`), so it needs the embeddings as
plain tensors it can extend, negative half first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from t2i_adapter.errors import ModelMismatchError
from t2i_adapter.generation.base_model import BaseModel
from t2i_adapter.logs import quiet_logger

logger = logging.getLogger(__name__)


@dataclass
class PromptEmbeddings:
    """Encoded prompts; the negative side is None when classifier-free guidance is off."""

    embeds: torch.Tensor  # (N, 77, D)
    negative_embeds: torch.Tensor | None = None  # (N, 77, D)
    pooled: torch.Tensor | None = None  # (N, P), SDXL only
    negative_pooled: torch.Tensor | None = None  # (N, P), SDXL only

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    def repeat(self, times: int) -> PromptEmbeddings:
        """Each prompt `times` times in a row (images per prompt): a b -> a a b b."""
        if times == 1:
            return self

        def expand(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat_interleave(times, dim=0)

        return PromptEmbeddings(
            embeds=expand(self.embeds),
            negative_embeds=expand(self.negative_embeds),
            pooled=expand(self.pooled),
            negative_pooled=expand(self.negative_pooled),
        )

    def context(self) -> torch.Tensor:
        """The UNet context: [negative; positive] along the batch when guidance is on."""
        if self.negative_embeds is None:
            return self.embeds
        return torch.cat([self.negative_embeds, self.embeds])

    def pooled_context(self) -> torch.Tensor | None:
        if self.pooled is None:
            return None
        if self.negative_pooled is None:
            return self.pooled
        return torch.cat([self.negative_pooled, self.pooled])


def _tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids padded/truncated to the tokenizer's length, with a warning naming what was dropped."""
    max_length = tokenizer.model_max_length
    ids = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with quiet_logger(
        "transformers.tokenization_utils_base"
    ):  # transformers would add its own "longer than ... indexing errors" line
        untruncated = tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > ids.shape[-1]:
        for prompt, row in zip(prompts, untruncated, strict=True):
            # strip the start token; keep the (max_length - 2) tokens that fit between start and end
            dropped = tokenizer.batch_decode(row[None, max_length - 1 : -1], skip_special_tokens=True)[0]
            if dropped.strip():
                # one short line, however long the prompt (a 5000-word prompt made a 27 KB line)
                logger.warning(
                    "prompt '%.40s...' is longer than %d tokens; its last %d word(s) are ignored: '%.40s'%s",
                    prompt,
                    max_length,
                    len(dropped.split()),
                    dropped.strip(),
                    "..." if len(dropped.strip()) > 40 else "",
                )
    return ids


def _encode_sd(base: BaseModel, prompts: list[str]) -> torch.Tensor:
    ids = _tokenize(base.tokenizer, prompts).to(base.text_encoder.device)
    return base.text_encoder(ids)[0]  # last_hidden_state (N, 77, D)


def _encode_sdxl(base: BaseModel, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    hidden_states = []
    pooled = None
    for tokenizer, encoder in ((base.tokenizer, base.text_encoder), (base.tokenizer_2, base.text_encoder_2)):
        ids = _tokenize(tokenizer, prompts).to(encoder.device)
        output = encoder(ids, output_hidden_states=True)
        # Encoder 2 is a CLIPTextModelWithProjection: output[0] is the projected pooled embedding.
        pooled = output[0]
        hidden_states.append(output.hidden_states[-2])  # penultimate layer (N, 77, D_i)
    return torch.cat(hidden_states, dim=-1), pooled


@torch.no_grad()
def encode_prompt(
    base: BaseModel,
    prompts: list[str],
    *,
    negative_prompts: list[str] | None = None,
    do_cfg: bool = True,
    zero_empty_negative: bool | None = None,
) -> PromptEmbeddings:
    """Encode prompts (and the negative prompts for classifier-free guidance) for `base`'s UNet.

    Without negative prompts the negative side is the empty prompt; for SDXL it is all zeros
    instead (`zero_empty_negative`, default True for SDXL: what SDXL base was trained with and what
    diffusers' `force_zeros_for_empty_prompt` does).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    negative_prompts = _one_negative_per_prompt(negative_prompts, len(prompts))

    if not base.is_sdxl:
        embeds = _encode_sd(base, prompts)
        if not do_cfg:
            return PromptEmbeddings(embeds=embeds)
        negative_embeds = _encode_sd(base, negative_prompts or [""] * len(prompts))
        return PromptEmbeddings(embeds=embeds, negative_embeds=negative_embeds)

    embeds, pooled = _encode_sdxl(base, prompts)
    if not do_cfg:
        return PromptEmbeddings(embeds=embeds, pooled=pooled)
    if zero_empty_negative is None:
        zero_empty_negative = True
    if negative_prompts is None and zero_empty_negative:
        negative_embeds, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        negative_embeds, negative_pooled = _encode_sdxl(base, negative_prompts or [""] * len(prompts))
    return PromptEmbeddings(embeds, negative_embeds, pooled, negative_pooled)


def _one_negative_per_prompt(negative_prompts: str | list[str] | None, count: int) -> list[str] | None:
    """One negative prompt for each of `count` prompts (a single one is repeated); None stays None."""
    if negative_prompts is None:
        return None
    if isinstance(negative_prompts, str):
        negative_prompts = [negative_prompts]
    if len(negative_prompts) == 1 and count > 1:
        negative_prompts = negative_prompts * count
    if len(negative_prompts) != count:
        raise ValueError(f"{len(negative_prompts)} negative prompts for {count} prompts")
    return negative_prompts


def sdxl_add_time_ids(
    height: int,
    width: int,
    *,
    original_size: tuple[int, int] | None = None,
    crop_top_left: tuple[int, int] = (0, 0),
    target_size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """SDXL micro-conditioning (original size, crop corner, target size), sizes as (height, width): (1, 6)."""
    original = original_size or (height, width)
    target = target_size or (height, width)
    values = [*original, *crop_top_left, *target]
    return torch.tensor([values], dtype=dtype, device=device)


def check_time_ids_fit(base: BaseModel) -> None:
    """Raise if the UNet's added-embedding input does not match 6 time ids + the pooled size."""
    unet_config = base.unet.config
    expected = unet_config.projection_class_embeddings_input_dim
    got = 6 * unet_config.addition_time_embed_dim + base.text_encoder_2.config.projection_dim
    if expected != got:
        raise ModelMismatchError(
            f"{base.name or 'model'}: the UNet expects {expected} added-conditioning values, the text "
            f"encoder and time ids give {got}"
        )
