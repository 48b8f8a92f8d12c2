"""`train(config) -> Path`: fit a T2I-Adapter to a frozen Stable Diffusion model.

`train()` reads as its phases, top to bottom: start (accelerator, output folder), data, models,
resume, batches, then the loop (step, logs, checkpoint, validation, evaluation) and the finish. What the
phases share travels in one `TrainingRun`; the loss itself is `objective.compute_loss`. The same
code runs in one plain process (CPU or one GPU, no environment variables) and under
`accelerate launch` on several GPUs or machines (DDP): accelerate's `Accelerator` reads the
launcher's environment and otherwise acts as a single process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from t2i_adapter.adapters.factory import new_adapter_for_unet
from t2i_adapter.adapters.kinds import SPATIAL_KINDS
from t2i_adapter.checkpoints import load_adapter
from t2i_adapter.conditions.options import parse_options
from t2i_adapter.errors import ModelMismatchError, T2IAdapterError, first_line
from t2i_adapter.generation.base_model import load_base_model, vae_scale_factor
from t2i_adapter.generation.checks import adapter_downscale_factor
from t2i_adapter.training import checkpointing
from t2i_adapter.training.cache import LatentCache, build_cache, cache_fingerprint
from t2i_adapter.training.check import DataReport, check_dataset, require_usable
from t2i_adapter.training.config import TrainConfig
from t2i_adapter.training.data import IndexedSource, StreamSource, open_dataset_with
from t2i_adapter.training.data.batches import (
    PositionDataset,
    StreamBatches,
    TrainingBatch,
    TrainingSample,
    indexed_batches,
    load_cached,
    load_indexed,
    stream_resume_point,
)
from t2i_adapter.training.data.prepared import empty_caption, load_prepared, open_prepared, prepared_index
from t2i_adapter.training.data.source import registered_preprocessor
from t2i_adapter.training.data.transforms import prepare_example
from t2i_adapter.training.distributed import (
    from_main_process,
    ranks_in_sync,
    start_accelerator,
    stop_together,
)
from t2i_adapter.training.evaluation import TrainingEvaluator
from t2i_adapter.training.logs import TrainingLog
from t2i_adapter.training.objective import FrozenParts, check_prediction_type, compute_loss
from t2i_adapter.training.optim import make_lr_scheduler, make_optimizer
from t2i_adapter.training.speed import compile_for_training, set_gradient_checkpointing
from t2i_adapter.training.validation import ValidationSet, choose_validation_set, make_validation_images

logger = logging.getLogger("t2i_adapter.training")

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STREAM_CHECK_LIMIT = 1000  # samples of a WebDataset checked up front; the rest are checked as they stream
SAVED_CONFIG = "train_config.yaml"
DATA_REPORT = "data_check.txt"
ENCODERS = ("vae", "text_encoder", "text_encoder_2")  # what cached latents make unnecessary for training


class TrainingDivergedError(T2IAdapterError):
    """The loss became NaN or infinite."""


@dataclass
class StepLog:
    """The progress bar, and every `log_every` steps one row of window means (metrics.csv, TensorBoard)."""

    log: TrainingLog
    progress: tqdm
    window_losses: list[float] = field(default_factory=list)  # losses since the last row
    window_start: float = field(default_factory=time.perf_counter)
    run_start: float = field(default_factory=time.perf_counter)


@dataclass
class TrainingRun:
    """What the phases of `train()` share."""

    config: TrainConfig
    accelerator: Accelerator
    source: IndexedSource | StreamSource
    frozen: FrozenParts
    noise_scheduler: DDPMScheduler
    timestep_sampling: str  # "uniform" or "cubic" (`auto` resolved)
    adapter: torch.nn.Module  # the only trained weights; DDP-wrapped once resumed
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0  # optimizer steps done
    samples_seen: int = 0  # global sample position: where the data order continues
    last_checkpoint: Path | None = None
    batches: Iterator[TrainingBatch] | None = None  # this process's micro-batches
    stream: StreamBatches | None = None  # the WebDataset reader, whose position checkpoints save
    validation: ValidationSet | None = None  # main process only
    evaluator: TrainingEvaluator | None = None  # main process only
    logs: StepLog | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def generates_images(self) -> bool:
        """Validation or evaluation will run the whole model: keep the encoders (on the CPU)."""
        return self.validation is not None or self.evaluator is not None

    @property
    def samples_per_step(self) -> int:
        """Samples one optimizer step consumes, over all processes."""
        config = self.config
        return config.batch_size * self.accelerator.num_processes * config.gradient_accumulation_steps


# ---------------------------------------------------------------------------------------------
# The training run
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> Path:
    """Train an adapter as `config` says; returns the output folder (`load_adapter` reads it)."""
    config = config.validate()
    accelerator = start_accelerator(config.mixed_precision)
    resume_from = prepare_output_dir(config, accelerator)
    saved = checkpointing.load_checkpoint(resume_from) if resume_from else None  # before any model loads

    # Data and models: the dataset, the frozen base model, the data check, the adapter
    source = open_data(config, accelerator)
    frozen = load_frozen_model(config, accelerator.device)
    source = check_data(config, source, frozen.base.tokenizer, accelerator)
    run = make_run(config, accelerator, source, frozen)

    # Resume: adapter weights, optimizer, schedule, step, data position, RNG states
    stream_position = resume(run, resume_from, saved)

    # Batches: from the latent cache, from the files, or from the stream
    prepare = example_preparer(config, run.source)
    if config.validation_every and run.is_main:
        run.validation = choose_validation_set(config, run.source, prepare, run.source.condition_channels)
    if config.eval_every and run.is_main:
        run.evaluator = TrainingEvaluator(config, run.source.cond_type)
    run.batches = make_batches(run, prepare, stream_position)

    # The loop: step, logs, checkpoint, validation, evaluation
    run.logs = start_logs(run)
    while run.step < config.max_steps:
        losses = accumulate_gradients(run)
        stop_if_diverged(run, losses)
        apply_update(run)
        log_step(run, losses)
        if checkpoint_due(run):
            save_checkpoint(run)
        if validation_due(run):
            validate(run)
        if evaluation_due(run):
            evaluate(run)

    finish(run)
    return run.output_dir


# ---------------------------------------------------------------------------------------------
# Start: the output folder
# ---------------------------------------------------------------------------------------------


def prepare_output_dir(config: TrainConfig, accelerator: Accelerator) -> Path | None:
    """Create the output folder and save the config; returns the checkpoint to resume from, if any."""
    output_dir = Path(config.output_dir)
    existing = checkpointing.latest_checkpoint(output_dir)
    if existing is not None and not config.resume:
        raise T2IAdapterError(
            f"{output_dir}: already holds checkpoints ({existing.name}); pass --resume to continue"
        )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        checkpointing.remove_unfinished(output_dir)
        Path(output_dir, SAVED_CONFIG).write_text(
            yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8"
        )
    accelerator.wait_for_everyone()
    return existing


# ---------------------------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------------------------


def open_data(config: TrainConfig, accelerator: Accelerator) -> IndexedSource | StreamSource:
    """The dataset (WebDataset shards: this process's share), or with `--cache-latents` on shards
    written by `data prepare --model`, their samples with the stored latents."""
    prepared = prepared_index(config.data)
    if prepared is not None:
        check_prepared_settings(config, prepared)
        if config.cache_latents:
            return open_prepared(config.data, prepared, config.condition_channels)
    source = open_dataset_with(
        config.data,
        config,
        condition_channels=config.condition_channels,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    if config.cache_latents and source.streamed:
        raise T2IAdapterError(
            f"{source.path}: --cache-latents needs a dataset that can be listed (meta file, folder, JSONL, "
            "datasets) or shards written by 'data prepare --model'; these WebDataset shards are streamed"
        )
    return source


def check_prepared_settings(config: TrainConfig, index: dict[str, Any]) -> None:
    """A prepared folder must have been made for this training: its condition, and for cached latents
    the same model, VAE, resolution and centre crop without flips."""
    made = index["settings"]
    wanted = config.cond_type
    if wanted and made.get("cond_type") and registered_name(wanted) != registered_name(made["cond_type"]):
        raise T2IAdapterError(
            f"{config.data}: prepared with '{made['cond_type']}' conditions, not '{wanted}'; "
            "train with that --cond-type or prepare again"
        )
    if not config.cache_latents:
        return
    if not made.get("model"):
        raise T2IAdapterError(
            f"{config.data}: prepared without --model, so it holds no latents; prepare again with "
            "--model, or train without --cache-latents"
        )
    for name in ("model", "vae", "resolution"):
        have, given = made.get(name), getattr(config, name)
        if not same_setting(have, given):
            shown = [value if value is not None else "(the model's own)" for value in (have, given)]
            raise T2IAdapterError(
                f"{config.data}: its latents were made with --{name} {shown[0]}, not {shown[1]}; "
                "train with the same, or prepare again"
            )
    if not config.center_crop or config.random_flip:
        raise T2IAdapterError(
            f"{config.data}: its latents are of the centre crop without flips; train with --center-crop "
            "and --no-random-flip, or without --cache-latents"
        )


def same_setting(recorded: Any, given: Any) -> bool:
    """Equal values, or two spellings (relative, absolute) of the same local folder."""
    if recorded == given:
        return True
    if isinstance(recorded, str) and isinstance(given, str) and Path(given).exists():
        return Path(recorded).resolve() == Path(given).resolve()
    return False


def registered_name(cond_type: str) -> str:
    """A condition name as the registry spells it (aliases resolved); other names as given."""
    spec = registered_preprocessor(cond_type)
    return spec.name if spec is not None else cond_type


def load_frozen_model(config: TrainConfig, device: torch.device) -> FrozenParts:
    """The base model in the training precision, on this process's device."""
    weight_dtype = WEIGHT_DTYPES[config.mixed_precision]
    base = load_base_model(config.model, dtype=weight_dtype, device=device, vae=config.vae)
    return FrozenParts(base=base, vae_config=base.vae.config, is_sdxl=base.is_sdxl, weight_dtype=weight_dtype)


def check_data(config: TrainConfig, source, tokenizer, accelerator: Accelerator):
    """Run the data check on the main process, share the verdict, and drop the bad samples."""
    verdict = None
    if accelerator.is_main_process:
        limit = STREAM_CHECK_LIMIT if source.streamed else None
        report = check_dataset(
            source, tokenizer=tokenizer, resolution=config.resolution, limit=limit, progress=config.progress
        )
        summary = report.summary(strict=config.strict)
        logger.info("%s", summary)
        Path(config.output_dir, DATA_REPORT).write_text(summary + "\n", encoding="utf-8")
        verdict = (report.good, report.is_usable, report.problems)
    good, usable, problems = from_main_process(accelerator, verdict)
    if problems and not config.strict:
        logger.warning("skipping %d bad sample(s); details in %s", len(problems), DATA_REPORT)
    report = DataReport(source.path, source.format, source.cond_type, source.computes_condition, None)
    report.good, report.problems = (good if usable else []), problems
    require_usable(report, strict=config.strict)
    return source.keep_only(good) if isinstance(source, IndexedSource) else source


def make_adapter(config: TrainConfig, frozen: FrozenParts, condition_channels: int) -> torch.nn.Module:
    """A new adapter sized for the base model (UNet levels and VAE factor), or the checkpoint to
    fine-tune, checked to fit it before step 1."""
    unet = frozen.base.unet
    downscale = adapter_downscale_factor(unet.config, vae_scale_factor(frozen.vae_config))
    if not config.adapter:
        kind = config.adapter_type or ("xl" if frozen.is_sdxl else "full")
        return new_adapter_for_unet(unet, kind, condition_channels, downscale_factor=downscale)
    adapter = load_adapter(config.adapter)
    if getattr(adapter, "adapter_kind", None) not in SPATIAL_KINDS:
        raise ModelMismatchError(
            f"{config.adapter}: only spatial adapters ({', '.join(SPATIAL_KINDS)}) can be trained"
        )
    got = getattr(adapter.config, "downscale_factor", downscale)
    if got != downscale:
        raise ModelMismatchError(
            f"{config.adapter}: the adapter's downscale factor is {got}; {config.model} needs {downscale}"
        )
    return adapter


def make_run(config: TrainConfig, accelerator: Accelerator, source, frozen: FrozenParts) -> TrainingRun:
    """The noise schedule, and the adapter (new and seeded, or the given one) with its optimizer."""
    base = frozen.base
    noise_scheduler = DDPMScheduler.from_config(base.scheduler.config)
    check_prediction_type(noise_scheduler)
    timestep_sampling = config.timestep_sampling
    if timestep_sampling == "auto":
        timestep_sampling = "cubic" if base.is_sdxl else "uniform"

    set_seed(config.seed)  # python, numpy and torch: a new adapter's initial weights follow the seed
    adapter = make_adapter(config, frozen, source.condition_channels)
    source.condition_channels = adapter.in_condition_channels
    torch.nn.Module.to(adapter, device=accelerator.device, dtype=torch.float32)  # ModelMixin.to would warn
    adapter.requires_grad_(True).train()
    set_gradient_checkpointing(
        config.gradient_checkpointing,
        frozen,
        adapter,
        batch_size=config.batch_size,
        resolution=config.resolution,
        device=accelerator.device,
        autocast=accelerator.autocast,
    )
    if config.compile:
        compile_for_training(frozen, adapter, accelerator.device)
    optimizer = make_optimizer(adapter.parameters(), config, accelerator.device)
    return TrainingRun(
        config=config,
        accelerator=accelerator,
        source=source,
        frozen=frozen,
        noise_scheduler=noise_scheduler,
        timestep_sampling=timestep_sampling,
        adapter=adapter,
        optimizer=optimizer,
        lr_scheduler=make_lr_scheduler(optimizer, config),
    )


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


def resume(run: TrainingRun, checkpoint: Path | None, saved: tuple | None) -> dict[str, Any]:
    """Continue from `checkpoint` (None: a fresh run), whose `load_checkpoint` is `saved`; wraps
    the adapter for DDP.

    Returns the saved stream positions (every process's; empty unless the data streams).
    """
    state: dict[str, Any] = {}
    if checkpoint is not None and saved is not None:
        adapter_state, state = saved
        try:
            run.adapter.load_state_dict(adapter_state)
        except RuntimeError as error:
            raise checkpointing.unusable(
                checkpoint / checkpointing.ADAPTER_FILE, f"does not fit the adapter ({first_line(error)})"
            ) from None
        logger.info("resuming from %s (step %d)", checkpoint, state["step"])
    run.adapter, run.optimizer = run.accelerator.prepare(run.adapter, run.optimizer)
    if state:
        restore_training_state(run, checkpoint, state)
    run.step = int(state.get("step", 0))
    run.samples_seen = int(state.get("samples_seen", 0))
    run.last_checkpoint = checkpoint
    return state.get("stream", {})


def restore_training_state(run: TrainingRun, checkpoint: Path, state: dict[str, Any]) -> None:
    """Optimizer, LR schedule and RNG states; a state that does not fit is one error line."""
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        run.lr_scheduler.load_state_dict(state["lr_scheduler"])
        checkpointing.restore_rng_states(state["rng"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as error:
        raise checkpointing.unusable(
            checkpoint / checkpointing.STATE_FILE,
            f"is not a usable training state ({type(error).__name__}: {first_line(error)})",
        ) from None


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def example_preparer(config: TrainConfig, source) -> Callable:
    """`prepare(example, rng=...)`: resize, crop, flip, and compute the condition when the data has none."""
    preprocessor = None
    if source.computes_condition:
        spec = registered_preprocessor(source.cond_type)
        preprocessor = partial(
            spec, **spec.check_options(parse_options(config.cond_options, what="cond_options"))
        )
    elif config.cond_options:
        raise T2IAdapterError(
            f"--cond-options: {config.data} has its own '{source.cond_type}' maps, so no preprocessor runs"
        )
    return partial(
        prepare_example,
        resolution=config.resolution,
        condition_channels=source.condition_channels,
        center_crop=config.center_crop,
        random_flip=config.random_flip,
        preprocessor=preprocessor,
    )


def make_batches(
    run: TrainingRun, prepare: Callable, stream_position: dict[str, Any]
) -> Iterator[TrainingBatch]:
    """This process's endless micro-batches, from the stream, the latent cache or the files.

    A stream's reader stays in `run.stream`: checkpoints save its position.
    """
    config, source, accelerator = run.config, run.source, run.accelerator
    if source.streamed:
        run.stream = StreamBatches(
            source=source,
            prepare=prepare,
            seed=config.seed,
            resolution=config.resolution,
            batch_size=config.batch_size,
            world_size=accelerator.num_processes,
            rank=accelerator.process_index,
            strict=config.strict,
            start=run.samples_seen,
            **stream_resume_point(stream_position, accelerator.num_processes, accelerator.process_index),
        )
        return iter(run.stream)
    if config.cache_latents:
        load = use_latent_cache(run, prepare)
    else:
        load = load_indexed(source, prepare, config.seed, config.resolution)
    return indexed_batches(
        PositionDataset(len(source), load, config.seed, config.strict),
        start=run.samples_seen,
        batch_size=config.batch_size,
        world_size=accelerator.num_processes,
        rank=accelerator.process_index,
        num_workers=config.num_workers,
    )


def use_latent_cache(run: TrainingRun, prepare: Callable) -> Callable[[int, int, int], TrainingSample]:
    """Build (main process) or reuse the cache, then free the encoders; returns the cached sample loader."""
    config, frozen = run.config, run.frozen
    if run.source.format == "prepared":  # `data prepare --model` stored them beside the samples
        frozen.empty_embeds, frozen.empty_pooled = empty_caption(config.data)
        frozen.empty_embeds = frozen.empty_embeds.to(run.accelerator.device, frozen.weight_dtype)
        _free_encoders(frozen, keep_on_cpu=run.generates_images)
        return load_prepared(run.source, config.resolution)
    cache_dir = Path(config.cache_dir or run.output_dir / "cache")
    if run.is_main:
        build_cache(
            cache_dir,
            run.source,
            prepare,
            frozen.base,
            fingerprint=cache_fingerprint(run.source, config, config.model),
            batch_size=config.batch_size,
            seed=config.seed,
            progress=config.progress,
        )
    run.accelerator.wait_for_everyone()
    cache = LatentCache(cache_dir)
    frozen.empty_embeds = cache.empty["embeds"].to(run.accelerator.device, frozen.weight_dtype)
    frozen.empty_pooled = cache.empty.get("pooled")
    _free_encoders(frozen, keep_on_cpu=run.generates_images)
    return load_cached(cache)


def _free_encoders(frozen: FrozenParts, keep_on_cpu: bool) -> None:
    """Drop (or park on the CPU, for validation) the VAE and text encoders once latents are cached."""
    base = frozen.base
    for name in ENCODERS:
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


# ---------------------------------------------------------------------------------------------
# Step
# ---------------------------------------------------------------------------------------------


def accumulate_gradients(run: TrainingRun) -> torch.Tensor:
    """Forward and backward over one step's micro-batches; returns every process's mean loss, (world,)."""
    accelerator, accumulation = run.accelerator, run.config.gradient_accumulation_steps
    step_loss = torch.zeros((), device=accelerator.device)
    for micro in range(accumulation):
        batch = next(run.batches)
        # Gradients are averaged across processes once per optimizer step, not per micro-batch.
        last_micro = micro == accumulation - 1
        sync = contextlib.nullcontext() if last_micro else accelerator.no_sync(run.adapter)
        with sync, accelerator.autocast():
            loss = compute_loss(
                batch,
                run.adapter,
                run.frozen,
                run.noise_scheduler,
                seed=run.config.seed,
                timestep_sampling=run.timestep_sampling,
                caption_dropout=run.config.caption_dropout,
                device=accelerator.device,
            )
            accelerator.backward(loss / accumulation)
        step_loss += loss.detach().float() / accumulation
    return accelerator.gather(step_loss.reshape(1))


def stop_if_diverged(run: TrainingRun, losses: torch.Tensor) -> None:
    """NaN/inf guard: every process sees every loss, so all stop together, before the update."""
    if torch.isfinite(losses).all():
        return
    kept = (
        f"the last good checkpoint is {run.last_checkpoint}"
        if run.last_checkpoint
        else "no checkpoint was saved yet"
    )
    raise TrainingDivergedError(
        f"loss is {losses.tolist()} at step {run.step + 1}: training stopped; {kept} "
        f"(try a lower --lr, or --mixed-precision no / bf16)"
    )


def apply_update(run: TrainingRun) -> None:
    """Clip, step the optimizer and the LR schedule; the step and the data position advance."""
    if run.config.max_grad_norm > 0:
        run.accelerator.clip_grad_norm_(run.adapter.parameters(), run.config.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.samples_seen += run.samples_per_step


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------


def start_logs(run: TrainingRun) -> StepLog:
    """metrics.csv and TensorBoard (rows past a resumed step are dropped) and the progress bar."""
    config = run.config
    log = TrainingLog(run.output_dir, resume_step=run.step, enabled=run.is_main)
    progress = tqdm(
        total=config.max_steps,
        initial=run.step,
        desc="training",
        disable=not (run.is_main and config.progress),
    )
    return StepLog(log=log, progress=progress, run_start=time.perf_counter() - log.seconds_before)


def log_step(run: TrainingRun, losses: torch.Tensor) -> None:
    """Progress bar every step; a metrics row every `log_every` steps and at the last one."""
    logs, config = run.logs, run.config
    mean_loss = losses.mean().item()
    lr = run.lr_scheduler.get_last_lr()[0]
    logs.window_losses.append(mean_loss)
    logs.progress.update(1)
    logs.progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
    if not config.log_every or (run.step % config.log_every != 0 and run.step != config.max_steps):
        return
    elapsed = time.perf_counter() - logs.window_start
    window = logs.window_losses
    logs.log.scalars(
        run.step,
        {
            "loss": sum(window) / len(window),
            "lr": lr,
            "samples_per_second": len(window) * run.samples_per_step / max(elapsed, 1e-9),
            "seconds": time.perf_counter() - logs.run_start,
        },
    )
    logs.window_losses, logs.window_start = [], time.perf_counter()


# ---------------------------------------------------------------------------------------------
# Checkpoint
# ---------------------------------------------------------------------------------------------


def checkpoint_due(run: TrainingRun) -> bool:
    """Every `checkpoint_every` steps, and at the end."""
    config, step = run.config, run.step
    return bool(config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.max_steps


def save_checkpoint(run: TrainingRun) -> None:
    """The main process writes the checkpoint; a failed write (disk full) stops every process."""
    accelerator = run.accelerator
    training_state: dict[str, Any] = {
        "samples_seen": run.samples_seen,
        "world_size": accelerator.num_processes,
    }
    if run.stream is not None:  # each process walks its own share: keep every position
        positions = gather_object([run.stream.position()])
        training_state["stream"] = {"world_size": accelerator.num_processes, "ranks": positions}
    training_state["ranks_in_sync"] = ranks_in_sync(accelerator, run.adapter)
    failure = None
    if run.is_main:
        try:
            run.last_checkpoint = checkpointing.save_checkpoint(
                run.output_dir,
                run.step,
                adapter=accelerator.unwrap_model(run.adapter),
                optimizer=run.optimizer,
                lr_scheduler=run.lr_scheduler,
                training_state=training_state,
                keep=run.config.keep_checkpoints,
                original_layout=run.config.save_original_layout,
            )
        except checkpointing.CheckpointError as error:
            failure = error
    stop_together(accelerator, failure, checkpointing.CheckpointError)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def validation_due(run: TrainingRun) -> bool:
    """Every `validation_every` steps, on the main process, when there is something to validate on."""
    validation = run.validation
    return (
        validation is not None and bool(validation.conditions) and run.step % run.config.validation_every == 0
    )


def validate(run: TrainingRun) -> None:
    """Images from the fixed validation prompts and conditions, to files and TensorBoard."""
    config = run.config
    images = make_validation_images(
        _validation_base(run.frozen, run.accelerator.device),
        run.accelerator.unwrap_model(run.adapter),
        run.validation,
        resolution=config.resolution,
        steps=config.validation_steps,
        folder=run.output_dir / "validation" / f"step-{run.step:08d}",
    )
    run.logs.log.images(run.step, "validation", images)
    if config.cache_latents:
        _free_encoders(run.frozen, keep_on_cpu=True)  # back out of accelerator memory


def evaluation_due(run: TrainingRun) -> bool:
    """Every `eval_every` steps, on the main process."""
    return run.evaluator is not None and run.step % run.config.eval_every == 0


def evaluate(run: TrainingRun) -> None:
    """The protocol of `t2i-adapter evaluate` on the adapter being trained; scores to TensorBoard."""
    device = run.accelerator.device
    scores = run.evaluator(
        run.step, _validation_base(run.frozen, device), run.accelerator.unwrap_model(run.adapter), device
    )
    run.logs.log.evaluation(run.step, scores)
    if run.config.cache_latents:
        _free_encoders(run.frozen, keep_on_cpu=True)  # back out of accelerator memory


def _validation_base(frozen: FrozenParts, device: torch.device):
    """The base model for validation: encoders parked on the CPU (cached latents) come back for it."""
    base = frozen.base
    for name in ENCODERS:
        module = getattr(base, name)
        if module is not None:
            module.to(device)
    return base


# ---------------------------------------------------------------------------------------------
# Finish
# ---------------------------------------------------------------------------------------------


def finish(run: TrainingRun) -> None:
    """Close the logs, publish the last checkpoint as the final adapter, and leave the process group."""
    accelerator = run.accelerator
    run.logs.progress.close()
    run.logs.log.close()
    failure = None
    if run.is_main and run.last_checkpoint is not None:
        try:
            checkpointing.publish_final_adapter(
                run.last_checkpoint, run.output_dir, original_layout=run.config.save_original_layout
            )
        except checkpointing.CheckpointError as error:
            failure = error
    stop_together(accelerator, failure, checkpointing.CheckpointError)
    # Release the DDP-wrapped adapter before the process group goes: destroying the group first
    # and the DDP reducer afterwards (when the run is freed) can hang on gloo.
    accelerator.free_memory()
    run.adapter = run.optimizer = run.batches = run.stream = None
    gc.collect()
    accelerator.end_training()
