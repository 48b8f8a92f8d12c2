"""`train(config) -> Path`: fit a T2I-Adapter to a frozen Stable Diffusion model.

Read top to bottom: data, frozen model, data check, adapter, optimizer, resume, latent cache,
batches, then the loop itself (loss, NaN guard, clip, step, log, checkpoint, validate). The same
code runs in one plain process (CPU or one GPU, no environment variables) and under
`accelerate launch` on several GPUs or machines (DDP): accelerate's `Accelerator` reads the
launcher's environment and otherwise acts as a single process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from t2i_adapter.errors import ModelMismatchError, T2IAdapterError
from t2i_adapter.training import checkpointing
from t2i_adapter.training.cache import LatentCache, build_cache, cache_fingerprint
from t2i_adapter.training.check import check_dataset, require_usable
from t2i_adapter.training.config import TrainConfig
from t2i_adapter.training.data import IndexedSource, open_dataset
from t2i_adapter.training.data.batches import PositionDataset, StreamBatches, indexed_batches, load_indexed
from t2i_adapter.training.data.source import registered_preprocessor
from t2i_adapter.training.data.transforms import prepare_example
from t2i_adapter.training.logs import TrainingLog
from t2i_adapter.training.objective import (
    check_prediction_type,
    diffusion_target,
    draw_for_samples,
    sample_timesteps,
    scale_latents,
)
from t2i_adapter.training.optim import make_lr_scheduler, make_optimizer

logger = logging.getLogger("t2i_adapter.training")

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STREAM_CHECK_LIMIT = 1000  # samples of a WebDataset checked up front; the rest are checked as they stream
SAVED_CONFIG = "train_config.yaml"
DATA_REPORT = "data_check.txt"


class TrainingDivergedError(T2IAdapterError):
    """The loss became NaN or infinite."""


@dataclass
class FrozenParts:
    """What the loss needs from the frozen base model (the encoders are None once latents are cached)."""

    base: Any  # BaseModel; its vae / text encoders may have been freed
    vae_config: Any
    is_sdxl: bool
    weight_dtype: torch.dtype
    empty_embeds: torch.Tensor | None = None  # cached empty caption, for caption dropout
    empty_pooled: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------
# The loss of one micro-batch
# ---------------------------------------------------------------------------------------------


def _text_conditioning(batch: dict, frozen: FrozenParts, dropped: torch.Tensor, device):
    """Caption embeddings (B, 77, D) and SDXL pooled (B, P); dropped captions become the empty one."""
    if "embeds" in batch:  # cached
        keep = (~dropped).to(device)[:, None, None]
        embeds = torch.where(keep, batch["embeds"].to(device), frozen.empty_embeds.to(device))
        pooled = None
        if frozen.is_sdxl:
            pooled = torch.where(keep[:, :, 0], batch["pooled"].to(device), frozen.empty_pooled.to(device))
        return embeds.to(frozen.weight_dtype), pooled
    from t2i_adapter.generation.prompts import encode_prompt

    captions = [
        "" if drop else caption for caption, drop in zip(batch["captions"], dropped.tolist(), strict=True)
    ]
    prompts = encode_prompt(frozen.base, captions, do_cfg=False)
    return prompts.embeds, prompts.pooled


def compute_loss(
    batch: dict,
    adapter: torch.nn.Module,
    frozen: FrozenParts,
    noise_scheduler,
    *,
    seed: int,
    timestep_sampling: str,
    caption_dropout: float,
    device: torch.device,
) -> torch.Tensor:
    """L2 between the UNet's prediction (with the adapter's features) and the diffusion target."""
    dtype = frozen.weight_dtype
    if "latent_mean" in batch:  # cached posterior
        mean, std = batch["latent_mean"].to(device, dtype), batch["latent_std"].to(device, dtype)
    else:
        with torch.no_grad():
            posterior = frozen.base.vae.encode(batch["pixels"].to(device, dtype)).latent_dist
        mean, std = posterior.mean, posterior.std  # (B, 4, H/8, W/8)
    draws = draw_for_samples(batch["position"], seed, tuple(mean.shape[1:]))
    latents = scale_latents(mean, std, draws.posterior_eps.to(device, dtype), frozen.vae_config)
    noise = draws.noise.to(device, dtype)
    timesteps = sample_timesteps(
        draws.timestep_u, noise_scheduler.config.num_train_timesteps, timestep_sampling
    ).to(device)
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)

    embeds, pooled = _text_conditioning(batch, frozen, draws.dropout_u < caption_dropout, device)
    added_conditions = None
    if frozen.is_sdxl:
        added_conditions = {"text_embeds": pooled.to(dtype), "time_ids": batch["time_ids"].to(device, dtype)}

    features = adapter(batch["conditions"].to(device))  # list of (B, C_i, H_i, W_i)
    prediction = frozen.base.unet(
        noisy_latents,
        timesteps,
        encoder_hidden_states=embeds.to(dtype),
        added_cond_kwargs=added_conditions,
        down_intrablock_additional_residuals=[feature.to(dtype) for feature in features],
    ).sample
    target = diffusion_target(noise_scheduler, latents, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float())


# ---------------------------------------------------------------------------------------------
# Set-up helpers
# ---------------------------------------------------------------------------------------------


def make_adapter(config: TrainConfig, base, condition_channels: int) -> torch.nn.Module:
    """A new adapter sized for the base model's UNet, or the checkpoint to fine-tune."""
    if config.adapter:
        from t2i_adapter.checkpoints import load_adapter

        adapter = load_adapter(config.adapter)
        if getattr(adapter, "adapter_kind", None) not in ("full", "light", "xl"):
            raise ModelMismatchError(
                f"{config.adapter}: only spatial adapters (full, light, xl) can be trained"
            )
        return adapter
    from t2i_adapter.adapters.factory import new_adapter_for_unet

    kind = config.adapter_type or ("xl" if base.is_sdxl else "full")
    return new_adapter_for_unet(base.unet, kind, condition_channels)


def _check_data(config: TrainConfig, source, tokenizer, accelerator) -> Any:
    """Run the data check on the main process, share the verdict, and drop the bad samples."""
    from accelerate.utils import broadcast_object_list

    verdict = [None]
    if accelerator.is_main_process:
        limit = STREAM_CHECK_LIMIT if source.streamed else None
        report = check_dataset(
            source, tokenizer=tokenizer, resolution=config.resolution, limit=limit, progress=config.progress
        )
        summary = report.summary()
        logger.info("%s", summary)
        Path(config.output_dir, DATA_REPORT).write_text(summary + "\n", encoding="utf-8")
        verdict = [(report.good, report.is_usable, report.problems, summary)]
    if accelerator.num_processes > 1:
        broadcast_object_list(verdict)
    good, usable, problems, summary = verdict[0]
    if problems and not config.strict:
        logger.warning("skipping %d bad sample(s); details in %s", len(problems), DATA_REPORT)
    from t2i_adapter.training.check import DataReport

    report = DataReport(source.path, source.format, source.cond_type, source.computes_condition, None)
    report.good, report.problems = (good if usable else []), problems
    require_usable(report, strict=config.strict)
    return source.keep_only(good) if isinstance(source, IndexedSource) else source


def _free_encoders(frozen: FrozenParts, keep_on_cpu: bool) -> None:
    """Drop (or park on the CPU, for validation) the VAE and text encoders once latents are cached."""
    base = frozen.base
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(base, name)
        if module is None:
            continue
        if keep_on_cpu:
            module.to("cpu")
        else:
            setattr(base, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _save_config(config: TrainConfig) -> None:
    import yaml

    Path(config.output_dir, SAVED_CONFIG).write_text(
        yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8"
    )


# ---------------------------------------------------------------------------------------------
# The training run
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> Path:
    """Train an adapter as `config` says; returns the output folder (`load_adapter` reads it)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    from t2i_adapter.generation.base_model import load_base_model

    config = config.validate()
    output_dir = Path(config.output_dir)
    # accelerate keeps its state per process; a second `train()` in the same process (the demo trains
    # several adapters) may use another precision, so start from a fresh state (the distributed
    # set-up, PartialState, is kept).
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=_distributed_without_gpu())
    except ValueError as error:  # e.g. fp16 without a GPU
        raise T2IAdapterError(f"mixed precision '{config.mixed_precision}': {error}") from None
    main = accelerator.is_main_process
    world_size, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    existing = checkpointing.latest_checkpoint(output_dir)
    if existing is not None and not config.resume:
        raise T2IAdapterError(
            f"{output_dir}: already holds checkpoints ({existing.name}); pass --resume to continue"
        )
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        checkpointing.remove_unfinished(output_dir)
        _save_config(config)
    accelerator.wait_for_everyone()

    # 1. Data and the frozen base model ---------------------------------------------------------
    source = open_dataset(
        config.data,
        data_format=config.data_format,
        cond_type=config.cond_type,
        condition_channels=config.condition_channels,
        image_column=config.image_column,
        condition_column=config.condition_column,
        caption_column=config.caption_column,
    )
    if config.cache_latents and source.streamed:
        raise T2IAdapterError(
            f"{source.path}: --cache-latents needs a dataset that can be listed (meta file, folder, JSONL, "
            "datasets); WebDataset shards are streamed"
        )
    weight_dtype = WEIGHT_DTYPES[config.mixed_precision]
    base = load_base_model(config.model, dtype=weight_dtype, device=device)
    source = _check_data(config, source, base.tokenizer, accelerator)
    noise_scheduler = DDPMScheduler.from_config(base.scheduler.config)
    check_prediction_type(noise_scheduler)
    timestep_sampling = config.timestep_sampling
    if timestep_sampling == "auto":
        timestep_sampling = "cubic" if base.is_sdxl else "uniform"
    if config.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
    frozen = FrozenParts(
        base=base, vae_config=base.vae.config, is_sdxl=base.is_sdxl, weight_dtype=weight_dtype
    )

    # 2. The adapter (the only trained weights), optimizer and schedule -----------------------
    set_seed(config.seed)  # python, numpy and torch: a new adapter's initial weights follow the seed
    adapter = make_adapter(config, base, source.condition_channels)
    source.condition_channels = adapter.in_condition_channels
    torch.nn.Module.to(adapter, device=device, dtype=torch.float32)  # ModelMixin.to would warn
    adapter.requires_grad_(True).train()
    optimizer = make_optimizer(adapter.parameters(), config, device)
    lr_scheduler = make_lr_scheduler(optimizer, config)

    # 3. Resume: adapter weights, optimizer, schedule, step, data position, RNG states --------
    state: dict[str, Any] = {}
    if config.resume and existing is not None:
        adapter_state, state = checkpointing.load_checkpoint(existing)
        adapter.load_state_dict(adapter_state)
        logger.info("resuming from %s (step %d)", existing, state["step"])
    adapter, optimizer = accelerator.prepare(adapter, optimizer)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        checkpointing.restore_rng_states(state["rng"])
    start_step = int(state.get("step", 0))
    samples_seen = int(state.get("samples_seen", 0))

    # 4. Batches: from the latent cache, from the files, or from the stream -------------------
    prepare = partial(
        prepare_example,
        resolution=config.resolution,
        condition_channels=source.condition_channels,
        center_crop=config.center_crop,
        random_flip=config.random_flip,
        preprocessor=registered_preprocessor(source.cond_type) if source.computes_condition else None,
    )
    validation = evaluator = None
    if config.validation_every and main:
        from t2i_adapter.training.validation import choose_validation_set

        validation = choose_validation_set(config, source, prepare, source.condition_channels)
    if config.eval_every and main:
        from t2i_adapter.training.evaluation import TrainingEvaluator

        evaluator = TrainingEvaluator(config, source.cond_type)
    if config.cache_latents:
        cache_dir = Path(config.cache_dir or output_dir / "cache")
        if main:
            fingerprint = cache_fingerprint(source, config, config.model)
            build_cache(
                cache_dir,
                source,
                prepare,
                base,
                fingerprint=fingerprint,
                batch_size=config.batch_size,
                seed=config.seed,
                progress=config.progress,
            )
        accelerator.wait_for_everyone()
        cache = LatentCache(cache_dir)
        frozen.empty_embeds = cache.empty["embeds"].to(device, weight_dtype)
        frozen.empty_pooled = cache.empty.get("pooled")
        _free_encoders(frozen, keep_on_cpu=validation is not None or evaluator is not None)

        def load_item(index: int, epoch: int, position: int) -> dict:
            return {"position": position, **cache.item(index)}

    elif not source.streamed:
        load_item = load_indexed(source, prepare, config.seed, config.resolution)
    if source.streamed:
        stream = StreamBatches(
            source=source,
            prepare=prepare,
            seed=config.seed,
            resolution=config.resolution,
            batch_size=config.batch_size,
            world_size=world_size,
            rank=rank,
            strict=config.strict,
            **state.get("stream", {}),
        )
        batches = iter(stream)
    else:
        dataset = PositionDataset(len(source), load_item, config.seed, config.strict)
        batches = indexed_batches(
            dataset,
            start=samples_seen,
            batch_size=config.batch_size,
            world_size=world_size,
            rank=rank,
            num_workers=config.num_workers,
        )
    samples_per_step = config.batch_size * world_size * config.gradient_accumulation_steps

    # 5. The loop ------------------------------------------------------------------------------
    log = TrainingLog(output_dir, resume_step=start_step, enabled=main)
    progress = tqdm(
        total=config.max_steps, initial=start_step, desc="training", disable=not (main and config.progress)
    )
    loss_fn = partial(
        compute_loss,
        frozen=frozen,
        noise_scheduler=noise_scheduler,
        seed=config.seed,
        timestep_sampling=timestep_sampling,
        caption_dropout=config.caption_dropout,
        device=device,
    )
    last_checkpoint = existing
    step = start_step
    window_losses: list[float] = []
    window_start = time.perf_counter()
    run_start = time.perf_counter()
    while step < config.max_steps:
        step_loss = torch.zeros((), device=device)
        for micro in range(config.gradient_accumulation_steps):
            batch = next(batches)
            last_micro = micro == config.gradient_accumulation_steps - 1
            # Gradients are averaged across processes once per optimizer step, not per micro-batch.
            sync = contextlib.nullcontext() if last_micro else accelerator.no_sync(adapter)
            with sync, accelerator.autocast():
                loss = loss_fn(batch, adapter)
                accelerator.backward(loss / config.gradient_accumulation_steps)
            step_loss += loss.detach().float() / config.gradient_accumulation_steps

        # NaN/inf guard: every process sees every loss, so all stop together, before the update.
        losses = accelerator.gather(step_loss.reshape(1))
        if not torch.isfinite(losses).all():
            kept = (
                f"the last good checkpoint is {last_checkpoint}"
                if last_checkpoint
                else "no checkpoint was saved yet"
            )
            raise TrainingDivergedError(
                f"loss is {losses.tolist()} at step {step + 1}: training stopped; {kept} "
                f"(try a lower --lr, or --mixed-precision no / bf16)"
            )
        if config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(adapter.parameters(), config.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        samples_seen += samples_per_step

        # Logs and progress
        mean_loss = losses.mean().item()
        window_losses.append(mean_loss)
        progress.update(1)
        progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        if config.log_every and (step % config.log_every == 0 or step == config.max_steps):
            elapsed = time.perf_counter() - window_start
            log.scalars(
                step,
                {
                    "loss": sum(window_losses) / len(window_losses),
                    "lr": lr_scheduler.get_last_lr()[0],
                    "samples_per_second": len(window_losses) * samples_per_step / max(elapsed, 1e-9),
                    "seconds": time.perf_counter() - run_start,
                },
            )
            window_losses, window_start = [], time.perf_counter()

        # Checkpoint (every N steps and at the end)
        if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.max_steps:
            training_state = {"samples_seen": samples_seen, "world_size": world_size}
            if source.streamed:
                training_state["stream"] = {
                    "epoch": stream.epoch,
                    "offset": stream.offset,
                    "consumed": stream.consumed,
                }
            training_state["ranks_in_sync"] = _ranks_in_sync(accelerator, adapter)
            failure = None
            if main:
                try:
                    last_checkpoint = checkpointing.save_checkpoint(
                        output_dir,
                        step,
                        adapter=accelerator.unwrap_model(adapter),
                        optimizer=optimizer,
                        lr_scheduler=lr_scheduler,
                        training_state=training_state,
                        keep=config.keep_checkpoints,
                        original_layout=config.save_original_layout,
                    )
                except checkpointing.CheckpointError as error:
                    failure = error
            _stop_together(accelerator, failure)

        # Validation images
        if validation is not None and validation.conditions and step % config.validation_every == 0:
            from t2i_adapter.training.validation import make_validation_images

            images = make_validation_images(
                _validation_base(frozen, device),
                accelerator.unwrap_model(adapter),
                validation,
                resolution=config.resolution,
                steps=config.validation_steps,
                folder=output_dir / "validation" / f"step-{step:08d}",
            )
            log.images(step, "validation", images)
            if config.cache_latents:
                _free_encoders(frozen, keep_on_cpu=True)  # back out of accelerator memory

        # Evaluation (the protocol of `t2i-adapter evaluate`)
        if evaluator is not None and step % config.eval_every == 0:
            scores = evaluator(
                step, _validation_base(frozen, device), accelerator.unwrap_model(adapter), device
            )
            log.evaluation(step, scores)
            if config.cache_latents:
                _free_encoders(frozen, keep_on_cpu=True)

    progress.close()
    log.close()
    failure = None
    if main and last_checkpoint is not None:
        try:
            checkpointing.publish_final_adapter(
                last_checkpoint, output_dir, original_layout=config.save_original_layout
            )
        except checkpointing.CheckpointError as error:
            failure = error
    _stop_together(accelerator, failure)
    # Release the DDP-wrapped adapter before the process group goes: destroying the group first
    # and the DDP reducer afterwards (when this frame's locals are freed) can hang on gloo.
    accelerator.free_memory()
    del adapter, optimizer, batches
    gc.collect()
    accelerator.end_training()
    return output_dir


def _stop_together(accelerator, failure: Exception | None) -> None:
    """Raise `failure` (from the main process) on every process, so none waits for the others forever."""
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = [str(failure) if failure is not None else None]
        broadcast_object_list(message)
        if message[0] is not None and failure is None:
            failure = checkpointing.CheckpointError(message[0])
    if failure is not None:
        raise failure


def _distributed_without_gpu() -> bool:
    """Several processes (`accelerate launch`, torchrun) on a machine without CUDA: DDP over gloo on CPUs.

    accelerate only picks its multi-CPU mode when told the run is on CPUs; without this a CPU-only
    multi-process launch would train N independent copies.
    """
    import os

    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _ranks_in_sync(accelerator, adapter) -> list[float]:
    """A checksum of the adapter's weights on every process; differing values mean DDP drifted."""
    with torch.no_grad():
        checksum = sum(
            p.double().sum() * (i + 1) for i, p in enumerate(accelerator.unwrap_model(adapter).parameters())
        )
    checksums = accelerator.gather(checksum.reshape(1).to(accelerator.device)).tolist()
    if any(value != checksums[0] for value in checksums):
        raise T2IAdapterError(
            f"the processes' adapter weights differ ({checksums}); distributed training is broken"
        )
    return checksums


def _validation_base(frozen: FrozenParts, device):
    """The base model for validation: encoders parked on the CPU (cached latents) come back for it."""
    base = frozen.base
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(base, name)
        if module is not None:
            module.to(device)
    return base
