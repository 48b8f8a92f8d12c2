"""Train the demo adapters (sketch, depth, colour) with the project's own trainer.

The shapes world is written out once as an ordinary training folder (`<stem>.png`,
`<stem>.<cond>.png` for every condition, `<stem>.txt`) and `t2i_adapter.training.train` is run on
it once per condition, exactly as a user would train an adapter on their own data.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from t2i_adapter.adapters.factory import spatial_config_for_unet
from t2i_adapter.adapters.spatial import build_spatial_adapter
from t2i_adapter.checkpoints import save_adapter
from t2i_adapter.conditions.registry import get_preprocessor
from t2i_adapter.demo.world import SCENE_SIZE, make_scene
from t2i_adapter.training import train
from t2i_adapter.training.config import TrainConfig

# Adapter training scenes: another seed range than the base model's and the evaluation's.
ADAPTER_SEED_OFFSET = 2_000_000
DATA_CONDITIONS = ("sketch", "depth", "color", "seg")
FINAL_ADAPTER_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


@dataclass
class AdapterTrainingPlan:
    """Sizes of the adapter runs (defaults: the shipped adapters)."""

    num_scenes: int = 4000
    steps: int = 800
    batch_size: int = 24
    lr: float = 1e-3
    warmup_steps: int = 50
    timestep_sampling: str = "cubic"  # noisy steps decide the layout, which is what an adapter controls
    caption_dropout: float = 0.05
    seed: int = 0
    # A second run from the first one's weights, at a higher peak rate (the shipped adapters had it).
    refine_steps: int = 800
    refine_lr: float = 3e-3


def write_scene_folder(dest: str | Path, num_scenes: int, first_seed: int = ADAPTER_SEED_OFFSET) -> Path:
    """The world as a training folder: picture, every condition and caption per scene."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / f".complete-{first_seed}-{num_scenes}"
    if marker.exists():
        return dest
    for index in range(num_scenes):
        scene = make_scene(first_seed + index)
        stem = dest / f"scene_{index:06d}"
        scene.image().save(f"{stem}.png")
        for cond_type in DATA_CONDITIONS:
            scene.condition(cond_type).save(f"{stem}.{cond_type}.png")
        Path(f"{stem}.txt").write_text(scene.caption + "\n", encoding="utf-8")
    marker.touch()
    return dest


def initial_adapter(model: str | Path, cond_type: str, dest: str | Path, seed: int = 0) -> Path:
    """A fresh full adapter sized for the demo UNet, with the demo VAE's downscale factor.

    The trainer's own new adapter assumes SD's VAE factor of 8 (a UNet config does not say what
    the VAE does); the demo VAE downsamples by 4, so the starting point is written here and the
    trainer trains it from there (`TrainConfig.adapter`).
    """
    model = Path(model)
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    vae_config = AutoencoderKL.load_config(model / "vae")
    vae_scale_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    channels = get_preprocessor(cond_type).channels
    config = dataclasses.replace(
        spatial_config_for_unet(unet, "full", channels), downscale_factor=vae_scale_factor
    )
    torch.manual_seed(seed)
    return save_adapter(build_spatial_adapter(config), dest, layout="diffusers", overwrite=True)


def train_demo_adapter(
    cond_type: str,
    model: str | Path,
    data: str | Path,
    output_dir: str | Path,
    plan: AdapterTrainingPlan | None = None,
) -> Path:
    """One adapter through `t2i_adapter.training.train`; returns the folder of the final adapter."""
    plan = plan or AdapterTrainingPlan()
    output_dir = Path(output_dir)
    start = initial_adapter(model, cond_type, output_dir.parent / f"{output_dir.name}-init", seed=plan.seed)
    stages = [(output_dir, plan.steps, plan.lr, plan.seed)]
    if plan.refine_steps:
        stages.append(
            (
                output_dir.parent / f"{output_dir.name}-refine",
                plan.refine_steps,
                plan.refine_lr,
                plan.seed + 1,
            )
        )
    for stage_dir, steps, lr, seed in stages:
        config = TrainConfig(
            model=str(model),
            data=str(data),
            output_dir=str(stage_dir),
            data_format="folder",
            cond_type=cond_type,
            adapter=str(start),
            resolution=SCENE_SIZE,
            batch_size=plan.batch_size,
            lr=lr,
            lr_scheduler="cosine",
            lr_warmup_steps=plan.warmup_steps,
            optimizer="adamw",
            max_steps=steps,
            seed=seed,
            timestep_sampling=plan.timestep_sampling,
            caption_dropout=plan.caption_dropout,
            cache_latents=True,
            checkpoint_every=250,
            keep_checkpoints=2,
            log_every=50,
            progress=False,
        )
        start = Path(train(config))
    return start


def install_adapter(trained: str | Path, dest: str | Path) -> Path:
    """Copy the diffusers files of a trained adapter to `dest` (the shipped layout)."""
    trained, dest = Path(trained), Path(dest)
    source = trained if (trained / FINAL_ADAPTER_FILES[1]).is_file() else trained / "adapter"
    dest.mkdir(parents=True, exist_ok=True)
    for name in FINAL_ADAPTER_FILES:
        shutil.copyfile(source / name, dest / name)
    return dest


def train_demo_adapters(
    model: str | Path,
    work_dir: str | Path,
    weights_dir: str | Path,
    conditions: tuple[str, ...] = ("sketch", "depth", "color"),
    plan: AdapterTrainingPlan | None = None,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Path]:
    """Write the data folder, train each adapter, install it under `weights_dir/adapters/<cond>`."""
    plan = plan or AdapterTrainingPlan()
    work_dir = Path(work_dir)
    data = write_scene_folder(work_dir / "data", plan.num_scenes)
    installed = {}
    for cond_type in conditions:
        if echo:
            echo(f"training the {cond_type} adapter ({plan.steps} steps, batch {plan.batch_size})")
        trained = train_demo_adapter(cond_type, model, data, work_dir / "adapters" / cond_type, plan)
        installed[cond_type] = install_adapter(trained, Path(weights_dir) / "adapters" / cond_type)
    return installed
