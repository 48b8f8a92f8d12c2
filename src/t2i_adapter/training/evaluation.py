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

from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.evaluation.samples import EvalSample, Variant
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
