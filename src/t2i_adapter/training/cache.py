"""`--cache-latents`: encode every image and caption once, then train without the VAE and text encoders.

For each record the cache holds the VAE posterior (mean and std, so training still draws a fresh
posterior sample per step), the caption's text embeddings (and SDXL's pooled embedding and time
ids) and the condition map as 8-bit pixels. The frozen encoders then leave accelerator memory.

Augmentation is fixed per sample: the crop and flip a sample gets are drawn once (from the seed
and the record index, as in epoch 0 of an uncached run) and reused every epoch. With the default
centre crop and no flip, cached and uncached runs see the same pixels.

Files (in `cache_dir`, default `<output_dir>/cache`): `chunk-00000.safetensors`, ... with up to
`CHUNK_SIZE` samples each, `empty.safetensors` (the empty caption's embeddings, for caption
dropout) and `index.json` (written last: a cache without it is incomplete and rebuilt). A cache
whose fingerprint (model and VAE, records, resolution, crop settings, condition) differs is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from t2i_adapter.generation.prompts import encode_prompt
from t2i_adapter.training.data.batches import TrainingSample
from t2i_adapter.training.data.order import mix_seed
from t2i_adapter.training.data.source import IndexedSource
from t2i_adapter.training.objective import encode_latents

CHUNK_SIZE = 256
INDEX_FILE = "index.json"
EMPTY_FILE = "empty.safetensors"
CACHE_VERSION = 2  # 2: SDXL's fp16 VAE encodes in fp32 (version 1 cached its fp16 NaN/inf)


def cache_fingerprint(source: IndexedSource, config, model_name: str) -> str:
    """A hash of everything the cached tensors depend on."""
    parts = {
        "version": CACHE_VERSION,
        "model": model_name,
        "records": hashlib.sha256("\n".join(r.where for r in source.records).encode()).hexdigest(),
        "resolution": config.resolution,
        "center_crop": config.center_crop,
        "random_flip": config.random_flip,
        "augmentation_seed": None if config.center_crop and not config.random_flip else config.seed,
        "cond_type": source.cond_type,
        "computes_condition": source.computes_condition,
        "cond_options": sorted(config.cond_options) if source.computes_condition else [],
        "channels": source.condition_channels,
        "mixed_precision": config.mixed_precision,
    }
    if config.vae:  # absent without --vae, so caches made before the option stay valid
        parts["vae"] = config.vae
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def encode_batch(
    base, pixels: torch.Tensor, captions: list[str], wheres: list[str | None] | None = None
) -> dict[str, torch.Tensor]:
    """VAE posterior mean/std and text embeddings of one batch (what the uncached loop computes:
    `objective.encode_latents`, which names `wheres` if the VAE gives NaN/inf)."""
    mean, std = encode_latents(base, pixels, wheres)
    prompts = encode_prompt(base, captions, do_cfg=False)
    encoded = {"latent_mean": mean, "latent_std": std, "embeds": prompts.embeds}
    if prompts.pooled is not None:
        encoded["pooled"] = prompts.pooled
    return encoded


def build_cache(
    cache_dir: Path,
    source: IndexedSource,
    prepare,
    base,
    *,
    fingerprint: str,
    batch_size: int,
    seed: int,
    progress: bool,
) -> None:
    """Encode every record of `source` into `cache_dir` (skipped when a matching cache exists)."""
    if _index_matches(cache_dir, fingerprint, len(source)):
        return
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    empty = encode_prompt(base, [""], do_cfg=False)
    empty_tensors = {"embeds": empty.embeds[0]}
    if empty.pooled is not None:
        empty_tensors["pooled"] = empty.pooled[0]
    save_file(
        {k: v.float().cpu().contiguous() for k, v in empty_tensors.items()}, str(cache_dir / EMPTY_FILE)
    )

    bar = tqdm(total=len(source), desc="caching latents", disable=not progress)
    for chunk_start in range(0, len(source), CHUNK_SIZE):
        indices = range(chunk_start, min(chunk_start + CHUNK_SIZE, len(source)))
        rows: dict[str, list[torch.Tensor]] = {}
        for batch_start in range(0, len(indices), batch_size):
            batch_indices = indices[batch_start : batch_start + batch_size]
            prepared = [
                prepare(source.load(i), rng=random.Random(mix_seed(seed, 0, i))) for i in batch_indices
            ]
            pixels = torch.stack([p.pixels for p in prepared])  # (B, 3, R, R)
            encoded = encode_batch(base, pixels, [p.caption for p in prepared], [p.where for p in prepared])
            encoded["conditions"] = torch.stack(
                [(p.condition * 255).round().to(torch.uint8) for p in prepared]
            )
            encoded["time_ids"] = torch.tensor(
                [[*p.original_size, *p.crop_top_left, pixels.shape[-2], pixels.shape[-1]] for p in prepared]
            )
            for key, value in encoded.items():
                rows.setdefault(key, []).append(value.cpu())
            bar.update(len(batch_indices))
        tensors = {key: torch.cat(values).contiguous() for key, values in rows.items()}
        save_file(tensors, str(cache_dir / f"chunk-{chunk_start // CHUNK_SIZE:05d}.safetensors"))
    bar.close()
    index = {"fingerprint": fingerprint, "samples": len(source), "chunk_size": CHUNK_SIZE}
    (cache_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))


def _index_matches(cache_dir: Path, fingerprint: str, samples: int) -> bool:
    try:
        index = json.loads((cache_dir / INDEX_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return index.get("fingerprint") == fingerprint and index.get("samples") == samples


class LatentCache:
    """Read-only access to a built cache: `cache.sample(index, position)` -> one record's `TrainingSample`."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        index = json.loads((self.cache_dir / INDEX_FILE).read_text())
        self.samples = index["samples"]
        self.chunk_size = index["chunk_size"]
        self._handles: dict[int, object] = {}  # opened lazily: DataLoader workers open their own
        with safe_open(str(self.cache_dir / EMPTY_FILE), framework="pt") as handle:
            self.empty = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)

    def __len__(self) -> int:
        return self.samples

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}

    def sample(self, index: int, position: int) -> TrainingSample:
        """Record `index` as the training sample at `position`."""
        chunk, row = divmod(index, self.chunk_size)
        handle = self._handles.get(chunk)
        if handle is None:
            handle = safe_open(str(self.cache_dir / f"chunk-{chunk:05d}.safetensors"), framework="pt")
            self._handles[chunk] = handle
        tensors = {key: handle.get_slice(key)[row : row + 1][0] for key in handle.keys()}  # noqa: SIM118 (not a dict)
        return TrainingSample(
            position=position,
            condition=tensors["conditions"].float() / 255.0,  # (C, R, R) in [0, 1]
            time_ids=tensors["time_ids"],
            latent_mean=tensors["latent_mean"],
            latent_std=tensors["latent_std"],
            embeds=tensors["embeds"],
            pooled=tensors.get("pooled"),
        )
