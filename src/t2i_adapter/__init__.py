"""t2i-adapter: controllable text-to-image generation with T2I-Adapters (Mou et al., 2023).

The public API, imported lazily so `import t2i_adapter` stays fast:
- `load_adapter(path_or_hub_id, kind=None)`: any adapter checkpoint -> torch module;
- `save_adapter(adapter, dest, layout="diffusers"|"original")`;
- `load_base_model(name)`: the frozen Stable Diffusion parts (hub id, folder, single file, `demo`);
- `T2IAdapterPipeline`, `generate`, `GenerationSettings`, `AdapterSpec`: generation;
- `preprocess(name, image)`, `available_conditions()`: condition preprocessors.
"""

from __future__ import annotations

from t2i_adapter.lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "load_adapter": "t2i_adapter.checkpoints.load",
        "save_adapter": "t2i_adapter.checkpoints.save",
        "load_base_model": "t2i_adapter.generation.base_model",
        "BaseModel": "t2i_adapter.generation.base_model",
        "T2IAdapterPipeline": "t2i_adapter.generation.pipeline",
        "generate": "t2i_adapter.generation.api",
        "GenerationSettings": "t2i_adapter.generation.settings",
        "AdapterSpec": "t2i_adapter.generation.settings",
        "preprocess": "t2i_adapter.conditions.registry",
        "available_conditions": "t2i_adapter.conditions.registry",
        "T2IAdapterError": "t2i_adapter.errors",
    },
)
