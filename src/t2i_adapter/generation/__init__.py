"""Generation: a frozen Stable Diffusion model steered by T2I-Adapters.

- `base_model.py`: `load_base_model` (SD1.x/2.x/SDXL/demo) -> `BaseModel`;
- `prompts.py`: prompt encoding (SD and SDXL) and SDXL time ids;
- `settings.py`: `GenerationSettings`, `AdapterSpec` (what a PNG records);
- `units.py`: `AdapterUnit` (adapter + condition + weight + step window) and per-step mixing;
- `checks.py`: does an adapter fit the model (before any sampling);
- `sizes.py`, `schedulers.py`: output size rounding, schedulers by name;
- `sampling.py`: the denoising loop; `pipeline.py`: `T2IAdapterPipeline`;
- `api.py`: `generate(settings)` for the CLI and web UI; `cache.py`: `ModelCache`.
"""
