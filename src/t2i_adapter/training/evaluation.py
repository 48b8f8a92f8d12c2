"""What the evaluation needs from training: samples from any dataset format, checkpoints as variants.

`dataset_samples` reads the first N samples of a dataset the trainer reads (meta file, folder,
JSONL, WebDataset shards, Hugging Face datasets) in stored order, one condition per condition
type (several types: the dataset opened once per type, samples paired in order). A dataset
without condition files leaves the conditions to be computed from the photo at the evaluation
size. `checkpoint_variants` turns a training run's folder into one variant per checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.evaluation import EvalSettings, baseline, run_evaluation
from t2i_adapter.evaluation.report import write_report
from t2i_adapter.evaluation.runner import plan_metrics
from t2i_adapter.evaluation.samples import EvalSample, Variant
from t2i_adapter.generation.api import TORCH_DTYPES
from t2i_adapter.generation.cache import ModelCache
from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.training import checkpointing
from t2i_adapter.training.data import open_dataset
from t2i_adapter.training.data.example import Example

logger = logging.getLogger("t2i_adapter.evaluation")


def _examples(source) -> Iterator[Example]:
    """A source's examples in stored order; unreadable ones are skipped with a warning."""
    if source.streamed:
        for shard in source.shards:
            for raw in source.read_shard(shard):
                try:
                    yield source.decode(raw)
                except InputFileError as error:
                    logger.warning("skipping %s", error)
        return
    for index in range(len(source)):
        try:
            yield source.load(index)
        except InputFileError as error:
            logger.warning("skipping %s", error)


def dataset_samples(
    location: str,
    cond_types: list[str],
    num: int,
    *,
    data_format: str = "auto",
    image_column: str = "image",
    condition_column: str = "conditioning_image",
    caption_column: str = "text",
) -> list[EvalSample]:
    """The first `num` usable samples of a dataset, with one condition (or None: computed) per type."""
    streams = []
    for cond_type in cond_types:
        source = open_dataset(
            location,
            data_format=data_format,
            cond_type=cond_type,
            image_column=image_column,
            condition_column=condition_column,
            caption_column=caption_column,
        )
        streams.append(_examples(source))
    samples = []
    for examples in zip(*streams, strict=False):
        first = examples[0]
        if any(example.where != first.where for example in examples):
            raise T2IAdapterError(
                f"{location}: the condition types' samples do not pair up ({first.where} vs "
                f"{next(e.where for e in examples if e.where != first.where)})"
            )
        conditions = [example.condition for example in examples]
        samples.append(EvalSample(first.where, first.caption, conditions, image=first.image))
        if len(samples) >= num:
            break
    if not samples:
        raise InputFileError(location, "no usable samples to evaluate")
    return samples


def checkpoint_variants(name: str, *, name_runs: bool = False) -> list[Variant]:
    """A training run's folder -> one variant per checkpoint (`step N`, or `<run> step N` with
    `name_runs`); a checkpoint folder -> that checkpoint; anything else -> the adapter `name`."""
    path = Path(name).expanduser()
    checkpoints = checkpointing.list_checkpoints(path) if path.is_dir() else []
    if path.is_dir() and not checkpoints and (path / checkpointing.STATE_FILE).is_file():
        checkpoints, path = [path], path.parent.parent  # <run>/checkpoints/step-N
    if not checkpoints:
        return [Variant(label=name, adapters=(name,))]
    variants = []
    for checkpoint in checkpoints:
        step = int(checkpoint.name.rsplit("-", 1)[-1])
        label = f"{path.name} step {step}" if name_runs else f"step {step}"
        adapter = str(checkpoint / checkpointing.ADAPTER_FILE)
        variants.append(Variant(label=label, adapters=(adapter,), step=step, run=str(path)))
    return variants


# ---------------------------------------------------------------------------------------------
# During training: `train --eval-every N --eval-data ...`
# ---------------------------------------------------------------------------------------------

EVALUATION_FOLDER = "evaluation"


class TrainingEvaluator:
    """Scores the adapter being trained with the evaluation protocol, on the same samples each time.

    Samples are read and the metrics checked when training starts (a wrong metric or dataset
    fails then, not hours later). Each call generates with the trainer's own frozen base model
    and the adapter in memory, writes a full report to `<output_dir>/evaluation/step-<N>/` and
    returns the scores; the no-adapter baseline's pictures are cached there and made once.
    """

    def __init__(self, config, cond_type: str):
        if not cond_type:
            raise T2IAdapterError("--eval-every needs --cond-type: the condition type to read back and score")
        self.config = config
        self.cond_type = cond_type
        self.samples = dataset_samples(
            config.eval_data or config.data,
            [cond_type],
            config.eval_num,
            data_format="auto" if config.eval_data else config.data_format,
        )
        self.folder = Path(config.output_dir) / EVALUATION_FOLDER
        plan_metrics(self._settings(step=0))

    def _settings(self, step: int, dtype: str = "float32", device: str | None = None):
        config = self.config
        variant = Variant(f"step {step}", (f"training adapter at step {step}",), step=step)
        return EvalSettings(
            model=config.model,
            vae=config.vae,
            cond_types=[self.cond_type],
            variants=[baseline(), variant],
            metrics=list(config.eval_metrics) or None,
            steps=config.eval_steps,
            seed=config.seed,
            resolution=config.resolution,
            dtype=dtype,
            device=device,
            data=config.eval_data or config.data,
        )

    def __call__(self, step: int, base, adapter, device) -> dict[str, dict[str, float]]:
        """Scores of the adapter (`adapter`) and the baseline (`baseline`) at `step`."""
        dtype = base.unet.dtype
        dtype_name = next(name for name, value in TORCH_DTYPES.items() if value == dtype)
        settings = self._settings(step, dtype_name, str(torch.device(device)))
        cache = ModelCache()
        pipeline = T2IAdapterPipeline(base)
        cache.use_loaded(
            settings.model,
            pipeline,
            {settings.variants[1].adapters[0]: adapter},
            dtype=dtype,
            device=settings.device,
            vae=settings.vae,
        )
        was_training = adapter.training
        adapter.eval()
        try:
            with torch.random.fork_rng(devices=[]):  # the training run's random numbers stay as they were
                result = run_evaluation(settings, self.samples, out_dir=self.folder, cache=cache)
        finally:
            adapter.train(was_training)
        write_report(result, self.folder / f"step-{step:08d}")
        return {
            "adapter": result.summary[settings.variants[1].label],
            "baseline": result.summary["no adapter"],
        }
