"""ModelCache: each base model, adapter and LoRA is loaded once and shared.

A compiled pipeline (`compile=True`) is its own entry: its compiled UNet lives with it, so the
second generation reuses the compiled graphs instead of compiling again.

One cache per process (the CLI makes one per run, the web server one for its lifetime). Loading
is guarded per key, so two threads asking for the same model wait for one load instead of
loading it twice; different models load in parallel. Base models are the big ones: only the
`max_base_models` most recently used stay in memory. CLIP vision encoders (style adapters) are
preprocessor models: `conditions.style.load_clip_vision` keeps them, once per process. LoRAs
live inside the base model they were loaded into (as peft adapters), so they are cached with it
and go when it goes; a generation holds its pipeline while its LoRAs are chosen and it samples,
so two generations never mix LoRAs (a compiled pipeline's LoRAs are fused into its own UNet's
weights, `lora_fusion`: the next generation re-fuses or restores them).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch

from t2i_adapter.checkpoints.load import load_adapter
from t2i_adapter.generation.base_model import BaseModel, load_base_model
from t2i_adapter.generation.loras import LoraSpec, apply_loras
from t2i_adapter.generation.pipeline import T2IAdapterPipeline


class ModelCache:
    """Thread-safe store of loaded models, keyed by name, dtype, device (and memory options)."""

    def __init__(self, max_base_models: int = 1, max_adapters: int = 16):
        self.max_base_models = max_base_models
        self.max_adapters = max_adapters
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._pipelines: OrderedDict[Hashable, T2IAdapterPipeline] = OrderedDict()
        self._adapters: OrderedDict[Hashable, torch.nn.Module] = OrderedDict()
        self._pipeline_locks: dict[int, threading.Lock] = {}
        self.loads = 0  # how many models (LoRAs included) were actually loaded (tests and logs read it)

    def _get(self, store: OrderedDict, key: Hashable, limit: int, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in store:
                store.move_to_end(key)
                return store[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in store:
                    return store[key]
            value = load()
            with self._lock:
                self.loads += 1
                store[key] = value
                while len(store) > limit:
                    store.popitem(last=False)
            return value

    def pipeline(
        self,
        model: str,
        *,
        dtype: torch.dtype,
        device: str,
        attention_slicing: bool = False,
        vae_tiling: bool = False,
        cpu_offload: bool = False,
        clip_vision: str | None = None,
        model_config: str | None = None,
        prediction_type: str | None = None,
        compile: bool = False,
        vae: str | None = None,
    ) -> T2IAdapterPipeline:
        """The pipeline over base model `model`, with the memory options applied once; `compile`: its
        UNet compiled (`T2IAdapterPipeline.enable_compile`), kept here so later generations reuse it;
        `vae`: another VAE in place of the model's (a pipeline of its own)."""
        key = _pipeline_key(
            model,
            dtype,
            device,
            attention_slicing,
            vae_tiling,
            cpu_offload,
            model_config,
            prediction_type,
            compile,
            vae,
        )

        def load() -> T2IAdapterPipeline:
            base = load_base_model(
                model,
                dtype=dtype,
                device="cpu" if cpu_offload else device,
                model_config=model_config,
                prediction_type=prediction_type,
                vae=vae,
            )
            pipeline = T2IAdapterPipeline(base)
            if attention_slicing:
                pipeline.enable_attention_slicing()
            if vae_tiling:
                pipeline.enable_vae_tiling()
            if cpu_offload:
                pipeline.enable_model_cpu_offload(device)
            if compile:
                pipeline.enable_compile()  # or one warning line, and eager
            return pipeline

        pipeline = self._get(self._pipelines, key, self.max_base_models, load)
        if clip_vision:
            pipeline.clip_vision = clip_vision
        return pipeline

    @contextlib.contextmanager
    def loras_applied(self, pipeline: T2IAdapterPipeline, loras: Sequence[LoraSpec]) -> Iterator[None]:
        """Hold `pipeline` with exactly `loras` active (each file loaded into it once) for one generation."""
        with self._lock:
            pipeline_lock = self._pipeline_locks.setdefault(id(pipeline), threading.Lock())
        with pipeline_lock:
            loaded = apply_loras(pipeline, loras)
            with self._lock:
                self.loads += len(loaded)
            yield

    def base_model(self, model: str, *, dtype: torch.dtype, device: str) -> BaseModel:
        return self.pipeline(model, dtype=dtype, device=device).base

    def adapter(self, name: str, *, dtype: torch.dtype, device: str) -> torch.nn.Module:
        """An adapter (any kind `load_adapter` reads), in eval mode on `device`."""
        key = _adapter_key(name, dtype, device)
        return self._get(
            self._adapters, key, self.max_adapters, lambda: load_adapter(name, device=device, dtype=dtype)
        )

    def use_loaded(
        self,
        model: str,
        pipeline: T2IAdapterPipeline,
        adapters: dict[str, torch.nn.Module],
        *,
        dtype,
        device,
        vae: str | None = None,
    ) -> None:
        """Serve `model` (with `vae` in place of its own, if given) and the `adapters` (name -> module)
        from memory instead of loading them: the trainer evaluates its frozen base model and the
        adapter it is training this way."""
        with self._lock:
            key = _pipeline_key(model, dtype, device, *_DEFAULT_OPTIONS[:-1], vae)
            self._pipelines[key] = pipeline
            for name, adapter in adapters.items():
                self._adapters[_adapter_key(name, dtype, str(pipeline.execution_device))] = adapter

    def clear(self) -> None:
        with self._lock:
            self._pipelines.clear()
            self._adapters.clear()
            self._pipeline_locks.clear()


# attention slicing, VAE tiling, CPU offload, model config, prediction type, compile, VAE
_DEFAULT_OPTIONS = (False, False, False, None, None, False, None)


def _pipeline_key(model: str, dtype, device, *options: Any) -> Hashable:
    """Name, dtype, device, then the memory options, single-file choices, compile and VAE (all off
    or the model's own by default)."""
    return ("pipeline", model, str(dtype), str(device), *options, *_DEFAULT_OPTIONS[len(options) :])


def _adapter_key(name: str, dtype, device) -> Hashable:
    return ("adapter", name, str(dtype), str(device))
